"""configs/serve.yaml under a prefix, and the checks that stop a bad config before the cluster sees it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from augment_core.serve_routes import SHELL_IMPORT_PATH
from serve_apps import deploy
from serve_apps.shell import ShellArgs, render_page
from tests.conftest import ROOT

SERVE_YAML = ROOT / "configs" / "serve.yaml"


def routes(config: dict) -> dict[str, str]:
    return {app["name"]: app["route_prefix"] for app in config["applications"]}


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        (None, {"api": "/api", "runs": "/ui/runs", "workflows": "/ui/workflows", "review": "/ui/review",
                "data": "/ui/data", "admin": "/ui/admin",
                "shell": "/"}),
        ("/augment", {"api": "/augment/api", "runs": "/augment/ui/runs", "workflows": "/augment/ui/workflows",
                      "review": "/augment/ui/review", "data": "/augment/ui/data", "admin": "/augment/ui/admin",
                      "shell": "/augment"}),
        ("augment/", {"api": "/augment/api", "runs": "/augment/ui/runs", "workflows": "/augment/ui/workflows",
                      "review": "/augment/ui/review", "data": "/augment/ui/data", "admin": "/augment/ui/admin",
                      "shell": "/augment"}),
        ("/", {"api": "/api", "runs": "/ui/runs", "workflows": "/ui/workflows", "review": "/ui/review",
                "data": "/ui/data", "admin": "/ui/admin", "shell": "/"}),
    ],
)
def test_every_route_goes_under_the_prefix(prefix: str | None, expected: dict[str, str]) -> None:
    config = deploy.load_config(SERVE_YAML, prefix=prefix, port=8123)
    assert routes(config) == expected
    shell = next(app for app in config["applications"] if app["import_path"] == SHELL_IMPORT_PATH)
    assert shell["args"] == {"prefix": expected["shell"].rstrip("/")}
    runs = next(app for app in config["applications"] if app["name"] == "runs")
    assert runs["args"]["prefix"] == expected["shell"].rstrip("/") and runs["args"]["route"] == "/ui/runs"
    assert config["http_options"] == {"host": "127.0.0.1", "port": 8123}


def test_the_shell_page_links_below_the_prefix_and_names_no_panel() -> None:
    """The panels come from /panels.json at run time, drawn by the navigation script."""
    config = deploy.load_config(SERVE_YAML, prefix="/augment")
    shell = next(app for app in config["applications"] if app["name"] == "shell")
    page = render_page(ShellArgs.model_validate(shell["args"]))
    assert 'href="/augment/api/v1/health"' in page
    assert '"/augment"' in page and 'id="panels"' in page and "ui/runs" not in page


def test_replicas_ask_for_fractions_of_a_cpu_and_panels_run_two_sticky_replicas() -> None:
    config = deploy.load_config(SERVE_YAML)
    for app in config["applications"]:
        for deployment in app["deployments"]:
            assert 0 < deployment["ray_actor_options"]["num_cpus"] < 1
            if app["route_prefix"].startswith("/ui/"):
                assert deployment["num_replicas"] == 2 and deployment["max_ongoing_requests"] >= 100


def test_unknown_keys_and_bad_values_are_reported_by_path(tmp_path: Path) -> None:
    data = yaml.safe_load(SERVE_YAML.read_text())
    data["http_option"] = {}
    data["applications"][0]["deployments"][0]["num_replica"] = 2
    data["applications"][1]["deployments"][0]["ray_actor_options"]["num_cpu"] = 1
    data["applications"][2]["deployments"][0]["max_ongoing_requests"] = -1
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(deploy.ServeConfigError) as caught:
        deploy.load_config(path)
    errors = caught.value.errors
    assert "http_option: unknown key" in errors
    assert "applications[0].deployments[0].num_replica: unknown key" in errors
    assert "applications[1].deployments[0].ray_actor_options.num_cpu: unknown key" in errors
    assert any(e.startswith("applications[2].deployments[0].max_ongoing_requests:") for e in errors)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- just a list", "expected a mapping"),
        ("applications: [{name: a, import_path: 'x:y', route_prefix: api}]", "is not a route"),
        ("applications: [", "invalid YAML"),
    ],
)
def test_bad_files_are_rejected_clearly(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "serve.yaml"
    path.write_text(text)
    with pytest.raises(deploy.ServeConfigError, match=message):
        deploy.load_config(path)


def test_a_bad_prefix_and_a_missing_file_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(deploy.ServeConfigError, match="must be a route"):
        deploy.load_config(SERVE_YAML, prefix="/a b")
    with pytest.raises(deploy.ServeConfigError, match="cannot read"):
        deploy.load_config(tmp_path / "missing.yaml")


def test_an_unreachable_dashboard_is_a_deploy_error() -> None:
    with pytest.raises(deploy.DeployError, match="cannot reach the Ray dashboard"):
        deploy.deploy("http://127.0.0.1:9", deploy.load_config(SERVE_YAML), timeout_s=5)


def test_under_rays_python_proxy_panels_keep_one_replica() -> None:
    """Only HAProxy hashes the session cookie onto a replica; the API and the shell keep no Gradio state."""
    config = deploy.load_config(SERVE_YAML)
    before = {app["name"]: app["deployments"][0].copy() for app in config["applications"]}
    assert deploy.single_replica_panels(config) == ["runs", "workflows", "review", "data", "admin"]
    after = {app["name"]: app["deployments"][0] for app in config["applications"]}
    assert after["runs"]["num_replicas"] == after["workflows"]["num_replicas"] == after["admin"]["num_replicas"] == 1
    assert after["api"] == before["api"] and after["shell"] == before["shell"]
    deploy.validate_config(config)
