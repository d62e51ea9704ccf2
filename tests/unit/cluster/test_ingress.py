"""AUGMENT_SERVE_INGRESS: which front door `augment cluster up` gives Serve."""

from __future__ import annotations

import pytest

from augment_core.settings import Settings
from cluster import local

HAPROXY_SWITCHES = ("RAY_SERVE_ENABLE_HA_PROXY", "RAY_SERVE_ENABLE_DIRECT_INGRESS")


@pytest.fixture(autouse=True)
def no_inherited_switches(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in HAPROXY_SWITCHES:
        monkeypatch.delenv(name, raising=False)


def test_haproxy_is_the_default_and_rays_python_proxy_a_choice(settings: Settings) -> None:
    assert Settings().serve_ingress == "haproxy"
    proxy = settings.model_copy(update={"serve_ingress": "proxy"})
    assert not any(name in local.cluster_env(proxy) for name in HAPROXY_SWITCHES)


def test_haproxy_turns_on_direct_ingress_with_files_and_ports_of_its_own_cluster(settings: Settings) -> None:
    haproxy = settings.model_copy(update={"serve_ingress": "haproxy"})
    mine = local.cluster_env(haproxy, local.LocalCluster())
    other = local.cluster_env(haproxy, local.LocalCluster(dashboard_port=8365, gcs_port=6480))
    assert all(mine[name] == "1" for name in HAPROXY_SWITCHES)
    # No cloud load balancer to wait for: a stopping replica is gone in seconds, not Ray's 30.
    assert float(mine["RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"]) <= 5
    # Ray's defaults are one per machine: two clusters here must not share a socket, file or port.
    for name in ("RAY_SERVE_HAPROXY_SOCKET_PATH", "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC",
                 "RAY_SERVE_HAPROXY_SERVER_STATE_FILE", "RAY_SERVE_HAPROXY_STATS_PORT",
                 "RAY_SERVE_HAPROXY_METRICS_PORT"):
        assert mine[name] != other[name], name
    assert mine["RAY_SERVE_HAPROXY_SOCKET_PATH"] != "/tmp/haproxy-serve/admin.sock"


def test_an_unknown_ingress_is_refused() -> None:
    with pytest.raises(ValueError, match="serve_ingress"):
        Settings(serve_ingress="nginx")
