"""The names of augment's actors on a cluster: one namespace, one name per run, stream and account."""

NAMESPACE = "augment"


def run_actor_name(run_id: str) -> str:
    """The run's coordinator."""
    return f"run-{run_id}"


def consumer_name(workflow: str) -> str:
    """The stream consumer of a workflow (at most one per cluster)."""
    return f"stream-{workflow}"


def limiter_name(account: str) -> str:
    """The rate limiter of a provider account (detached, shared by every run and replica)."""
    return f"limiter-{account}"


KEY_QUOTAS = "key-quotas"  # per-caller request rates and open streams of the gateway (detached, one per cluster)


def reaper_name(store_key: str) -> str:
    """The reaper of one metadata store (detached, one per store and cluster; see actors/reaper.py)."""
    return f"reaper-{store_key}"


def alert_watcher_name(store_key: str) -> str:
    """The alert watcher of one metadata store (detached, one per store and cluster; see actors/alert_watcher.py)."""
    return f"alerts-{store_key}"
