"""s3:// sources and storage, against an S3-compatible server on loopback (moto)."""

from __future__ import annotations

import socket

import boto3
import pyarrow.parquet as pq
import pytest
import yaml
from moto.server import ThreadedMotoServer

from augment_core.storage import filesystem_for
from tests.conftest import ROOT, SAMPLE_CSV, SAMPLE_SPEC
from tests.integration.conftest import run_spec

BUCKET = "augment-test"


@pytest.fixture(scope="module")
def s3_endpoint():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    client.upload_file(str(SAMPLE_CSV), BUCKET, "input/organisations.csv")
    yield endpoint
    server.stop()


def test_a_run_reads_from_and_writes_to_s3(ray_cluster, settings, s3_endpoint, tmp_path):
    s3_settings = settings.model_copy(
        update={"storage_root": f"s3://{BUCKET}/augment", "s3_endpoint_url": s3_endpoint}
    )
    data = yaml.safe_load(SAMPLE_SPEC.read_text())
    data["source"]["path"] = f"s3://{BUCKET}/input/organisations.csv"
    for step in data["steps"]:
        if "reference" in step["params"]:
            step["params"]["reference"] = str(ROOT / "configs" / "data" / "country_regions.csv")
    spec = tmp_path / "s3.yaml"
    spec.write_text(yaml.safe_dump(data, sort_keys=False))

    run = run_spec(s3_settings, spec)
    assert run.status == "succeeded", run.error
    assert (run.counts["in"], run.counts["valid"], run.counts["quarantined"]) == (300, 277, 23)
    assert run.output["path"].startswith(f"s3://{BUCKET}/augment/datasets/organisations_enriched/")

    fs, path = filesystem_for(run.output["path"], s3_endpoint)
    assert pq.read_table(path, filesystem=fs).num_rows == 277
    fs, path = filesystem_for(run.output["quarantine_path"], s3_endpoint)
    assert pq.read_table(path, filesystem=fs).num_rows == 23
    fs, path = filesystem_for(run.output["csv_path"], s3_endpoint)
    with fs.open_input_stream(path) as stream:
        assert stream.read().decode("utf-8").count("\n") == 278


def test_an_unreadable_s3_source_fails_the_run_with_the_reason(ray_cluster, settings, s3_endpoint, tmp_path):
    s3_settings = settings.model_copy(update={"s3_endpoint_url": s3_endpoint})
    data = yaml.safe_load(SAMPLE_SPEC.read_text())
    data["source"]["path"] = f"s3://{BUCKET}/input/missing.csv"
    data["steps"] = []
    spec = tmp_path / "missing.yaml"
    spec.write_text(yaml.safe_dump(data, sort_keys=False))
    run = run_spec(s3_settings, spec)
    assert run.status == "failed"
    assert "missing.csv" in run.error
