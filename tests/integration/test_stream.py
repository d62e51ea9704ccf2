"""Streaming ingestion: a Redis stream consumed by a detached actor, exactly once into the sink."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import ray
import redis
import yaml

from actors.naming import NAMESPACE, consumer_name
from actors.stream_consumer import CrashHook
from actors.streams import StreamError, start_stream, stop_stream
from augment_cli.main import main
from augment_core.settings import Settings
from augment_core.storage import StoragePaths
from augment_core.store import RunRecord, open_store
from devtools.fake_openai import FakeOpenAI
from pipelines.io.stream_sink import batch_files, message_ids
from pipelines.spec.errors import SpecError
from pipelines.workflows.loader import load_spec, parse_spec

DEADLINE_S = 180


@pytest.fixture
def stream_settings(settings: Settings, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("AUGMENT_REDIS_URL", redis_url)  # specs are checked against it, and the CLI reads it
    return settings.model_copy(update={"redis_url": redis_url})


@pytest.fixture
def workflow(stream_settings: Settings, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A fresh stream, group and workflow; its consumer is killed and its stream deleted after."""
    name = f"stream_{uuid.uuid4().hex[:8]}"
    info = {"name": name, "stream": f"test:{name}", "client": redis.Redis.from_url(stream_settings.redis_url),
            "folder": tmp_path}
    yield info
    try:
        ray.kill(ray.get_actor(consumer_name(name), namespace=NAMESPACE), no_restart=True)
    except ValueError:
        pass
    info["client"].delete(info["stream"])


SHOUT = {"use": "derive", "name": "shout", "params": {"column": "name_upper", "type": "string",
                                                     "expression": "upper(name)"}}


def write_spec(info: dict[str, Any], batch_size: int = 10, llm_url: str | None = None) -> Path:
    spec: dict[str, Any] = {
        "name": info["name"],
        "source": {"kind": "redis_stream", "stream": info["stream"], "group": "augment", "batch_size": batch_size,
                   "block_ms": 200},
        "schema": {"key": "id", "fields": {"id": {"required": True, "regex": "r\\d+"}, "name": {"required": True}}},
        "steps": [SHOUT],
        "sink": {"dataset": info["name"]},
    }
    if llm_url:
        spec["providers"] = {"fake": {"kind": "openai", "base_url": llm_url, "model": "m", "account": info["name"],
                                      "allow_hosts": ["127.0.0.1"]}}
        spec["steps"].append({"use": "llm", "name": "profile", "params": {
            "provider": "fake", "user": "About {{name}}", "outputs": {"summary": {}}}})
    path = info["folder"] / f"{info['name']}.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return path


def add(info: dict[str, Any], first: int, count: int) -> list[str]:
    client = info["client"]
    return [client.xadd(info["stream"], {"record": json.dumps({"id": f"r{i}", "name": f"company {i}"})}).decode()
            for i in range(first, first + count)]


def wait_for(check: Callable[[], Any], what: str, timeout: float = DEADLINE_S) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def consumed(settings: Settings, run_id: str, count: int) -> Callable[[], bool]:
    return lambda: open_store(settings).get_run(run_id).counts["in"] >= count


def consumer_gone(name: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            ray.get_actor(consumer_name(name), namespace=NAMESPACE)
            return False
        except ValueError:
            return True
    return check


def sink_ids(settings: Settings, run: RunRecord) -> tuple[list[str], list[str]]:
    """Message ids of every record in the run's output folder and in its quarantine."""
    paths = StoragePaths(settings)
    found = []
    for key in ("path", "quarantine_path"):
        fs, folder = paths.filesystem(run.output[key])
        found.append([i for path, _, _ in batch_files(fs, folder) for i in message_ids(fs, path)])
    return found[0], found[1]


def test_records_are_augmented_and_malformed_messages_quarantined_while_the_consumer_carries_on(
        ray_cluster, stream_settings: Settings, workflow: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    spec_path = write_spec(workflow, batch_size=5)
    client, stream = workflow["client"], workflow["stream"]
    good = add(workflow, 0, 12)
    bad = [
        client.xadd(stream, {"record": "{not json"}).decode(),
        client.xadd(stream, {"other": "x"}).decode(),
        client.xadd(stream, {"record": "[1, 2]"}).decode(),
        client.xadd(stream, {"record": json.dumps({"id": "bad-id", "name": "x"})}).decode(),
        client.xadd(stream, {"record": b"\xff\xfe"}).decode(),
    ]
    assert main(["stream", "start", str(spec_path)]) == 0
    started = capsys.readouterr().out
    run_id = started.split("run ", 1)[1].split(":", 1)[0]
    assert "running" in started and stream in started

    with pytest.raises(StreamError, match="already consuming"):
        start_stream(stream_settings, load_spec(spec_path), str(spec_path))
    wait_for(consumed(stream_settings, run_id, len(good) + len(bad)), "the first messages")
    later = add(workflow, 100, 7)  # after the malformed ones: the consumer is still alive
    wait_for(consumed(stream_settings, run_id, len(good) + len(bad) + len(later)), "the later messages")
    assert main(["stream", "status", workflow["name"]]) == 0
    assert "consumer     running on this cluster" in capsys.readouterr().out
    assert main(["cancel", run_id]) == 1  # a stream's run has no coordinator: cancel says what to do
    assert f"stop it with `augment stream stop {workflow['name']}`" in capsys.readouterr().err

    assert main(["stream", "stop", workflow["name"]]) == 0
    run = open_store(stream_settings).get_run(run_id)
    assert run.status == "succeeded", run.error
    assert run.counts["in"] == 24 and run.counts["valid"] == 19 and run.counts["quarantined"] == 5
    assert run.counts["augmented"] == 19 and {s.state for s in run.steps} == {"succeeded"}
    valid_ids, quarantined_ids = sink_ids(stream_settings, run)
    assert sorted(valid_ids) == sorted(good + later) and sorted(quarantined_ids) == sorted(bad)

    [version] = open_store(stream_settings).list_dataset_versions(workflow["name"])
    assert (version.version, version.row_count, version.path, version.run_id) == (1, 19, run.output["path"], run_id)
    rows = pq.read_table(version.path).to_pylist()
    assert {r["id"]: r["name_upper"] for r in rows}["r101"] == "COMPANY 101"
    reasons = {r["source"].rsplit("#", 1)[1]: r for r in pq.read_table(run.output["quarantine_path"]).to_pylist()}
    assert "field 'record' is not JSON" in reasons[bad[0]]["reason"]
    assert "message has no field 'record' (fields: other)" in reasons[bad[1]]["reason"]
    assert "expected a JSON object, got list" in reasons[bad[2]]["reason"]
    assert reasons[bad[3]]["field"] == "id" and "does not match" in reasons[bad[3]]["reason"]
    assert "not valid UTF-8" in reasons[bad[4]]["reason"]
    assert json.loads(reasons[bad[0]]["record"]) == {"record": "{not json"}  # the message itself is kept
    assert client.xpending(stream, "augment")["pending"] == 0


def test_a_killed_consumer_restarts_and_every_message_lands_exactly_once(
        ray_cluster, stream_settings: Settings, workflow: dict[str, Any]) -> None:
    spec_path = write_spec(workflow, batch_size=10)
    spec = load_spec(spec_path)
    ids = add(workflow, 0, 300)
    first = start_stream(stream_settings, spec, str(spec_path))
    assert first.status == "running"
    wait_for(consumed(stream_settings, first.id, 40), "some micro-batches")
    ray.kill(ray.get_actor(consumer_name(workflow["name"]), namespace=NAMESPACE), no_restart=True)
    wait_for(consumer_gone(workflow["name"]), "the killed consumer to go")
    ids += add(workflow, 1000, 50)

    second = start_stream(stream_settings, spec, str(spec_path))
    assert second.status == "running" and second.output["path"] == first.output["path"]  # the open folder
    wait_for(consumed(stream_settings, second.id, len(ids)), "every message")
    run = stop_stream(stream_settings, workflow["name"])
    assert run.id == second.id and run.status == "succeeded", run.error

    valid_ids, quarantined_ids = sink_ids(stream_settings, run)
    assert quarantined_ids == [] and len(valid_ids) == len(set(valid_ids)) == len(ids)
    assert set(valid_ids) == set(ids)
    assert run.counts["in"] == run.counts["valid"] == len(ids) and run.counts["quarantined"] == 0
    killed = open_store(stream_settings).get_run(first.id)
    assert killed.status == "failed" and "consumer lost" in (killed.error or "")
    [version] = open_store(stream_settings).list_dataset_versions(workflow["name"])
    assert version.row_count == len(ids) == pq.read_table(version.path).num_rows
    assert workflow["client"].xpending(workflow["stream"], "augment")["pending"] == 0


@pytest.mark.parametrize("point", ["before_write", "between_files", "after_write"])
def test_a_crash_around_the_write_neither_loses_nor_duplicates(
        ray_cluster, stream_settings: Settings, workflow: dict[str, Any], point: str) -> None:
    spec_path = write_spec(workflow, batch_size=5)
    spec = load_spec(spec_path)
    ids = add(workflow, 0, 7)
    ids.append(workflow["client"].xadd(workflow["stream"], {"record": "{broken"}).decode())  # in batch 2
    ids += add(workflow, 50, 12)
    first = start_stream(stream_settings, spec, str(spec_path), crash=CrashHook(point, batch=2))
    wait_for(consumer_gone(workflow["name"]), "the consumer to crash")
    assert workflow["client"].xpending(workflow["stream"], "augment")["pending"] == 5  # batch 2, never acked

    second = start_stream(stream_settings, spec, str(spec_path))
    wait_for(consumed(stream_settings, second.id, len(ids)), "every message")
    run = stop_stream(stream_settings, workflow["name"])
    assert run.status == "succeeded", run.error
    valid_ids, quarantined_ids = sink_ids(stream_settings, run)
    assert len(valid_ids) == len(set(valid_ids)) == len(ids) - 1 and quarantined_ids == [ids[7]]
    assert set(valid_ids) | set(quarantined_ids) == set(ids)
    assert (run.counts["in"], run.counts["valid"], run.counts["quarantined"]) == (len(ids), len(ids) - 1, 1)
    # What the crashed consumer had written was kept, not processed again.
    rewritten = {"before_write": 5, "between_files": 4, "after_write": 0}[point]
    validate = next(s for s in run.steps if s.name == "validate")
    assert validate.rows == len(ids) - 10 + rewritten  # batch 1 was done and acked; batch 2 pending
    assert open_store(stream_settings).get_run(first.id).status == "failed"


def test_a_stream_spec_needs_redis_and_its_own_commands(
        ray_cluster, stream_settings: Settings, workflow: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    spec_path = write_spec(workflow)
    assert main(["run", str(spec_path)]) == 2
    assert "a redis_stream source never ends: start its consumer with `augment stream start`" in capsys.readouterr().err
    assert main(["stream", "stop", workflow["name"]]) == 1
    assert f"workflow {workflow['name']} has no stream consumer on this cluster" in capsys.readouterr().err

    bad = yaml.safe_load(spec_path.read_text())
    bad["source"] |= {"batch_size": 0, "colour": "red"}
    with pytest.raises(SpecError) as rejected:
        parse_spec(bad)
    assert sorted(rejected.value.errors) == [
        "source.batch_size: Input should be greater than or equal to 1", "source.colour: unknown key"]

    spec = load_spec(spec_path)
    monkeypatch.delenv("AUGMENT_REDIS_URL")
    assert main(["validate", str(spec_path)]) == 2
    assert "source: the redis_stream source reads" in capsys.readouterr().err
    with pytest.raises(StreamError, match="AUGMENT_REDIS_URL is not set"):
        start_stream(stream_settings.model_copy(update={"redis_url": None}), spec, str(spec_path))


def test_a_model_step_augments_the_stream_and_its_failed_calls_are_counted(
        ray_cluster, stream_settings: Settings, workflow: dict[str, Any]) -> None:
    with FakeOpenAI() as fake:
        spec_path = write_spec(workflow, batch_size=4, llm_url=fake.base_url)
        ids = add(workflow, 0, 6)
        refused = workflow["client"].xadd(workflow["stream"], {"record": json.dumps({"id": "r9", "name": "x #400"})})
        run = start_stream(stream_settings, load_spec(spec_path), str(spec_path))
        wait_for(consumed(stream_settings, run.id, len(ids) + 1), "every message")
        run = stop_stream(stream_settings, workflow["name"])
    assert run.status == "succeeded", run.error
    assert (run.counts["valid"], run.counts["augmented"], run.counts["failed"]) == (7, 6, 1)
    rows = {r["id"]: r for r in pq.read_table(run.output["path"]).to_pylist()}
    assert rows["r9"]["profile_status"] == "error" and rows["r9"]["profile_error"]
    assert all(rows[f"r{i}"]["profile_status"] == "ok" and rows[f"r{i}"]["summary"] for i in range(6))
    assert refused.decode() in sink_ids(stream_settings, run)[0]
    assert run.cost["steps"]["profile"]["calls"] >= 7
