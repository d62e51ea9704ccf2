"""Getting a cluster's named, detached actor, and starting it when there is none: the one way the
cluster-wide keepers (reaper, alert watcher, provider limiters, key quotas) are reached."""

from __future__ import annotations

from typing import Any, cast

from ray.actor import ActorHandle

from actors.naming import NAMESPACE


def ensure_detached(actor_class: Any, name: str, *args: Any) -> ActorHandle:
    """The actor called `name` in augment's namespace, started from `actor_class` with `args` if
    there is none (`get_if_exists`: two callers at once get the same one). Detached: it outlives
    the process that started it, as long as the cluster."""
    handle = actor_class.options(name=name, namespace=NAMESPACE, lifetime="detached", get_if_exists=True).remote(*args)
    return cast(ActorHandle, handle)
