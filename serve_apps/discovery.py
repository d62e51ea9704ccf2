"""The shell's directory of panels, found at run time among the cluster's Serve applications.

Every application is asked for its manifest through a handle (`PanelApp.manifest`); those that
answer one are panels. Nothing is compiled into the shell, so deploying, redeploying or removing a
panel application changes the navigation and nothing else. A panel whose application is failing,
deploying or gone, or does not answer within `timeout_s`, is listed as unavailable with the reason
(a panel seen once and since removed, for `forget_after_s`), never taking the shell or the other
panels down with it. Answers are cached for `ttl_s`: every page's bar asks every few seconds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from ray import serve
from ray.serve.exceptions import RayServeException

from augment_core.identity import Role
from serve_apps.gateway.panels import PanelManifest

log = logging.getLogger(__name__)

# What the directory needs of Serve, replaceable in unit tests.
StatusReader = Callable[[], dict[str, tuple[str, str, float]]]  # app -> (status, message, deployed at)
ManifestReader = Callable[[str], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class PanelEntry:
    name: str
    title: str
    path: str
    role: Role
    version: str
    available: bool
    reason: str  # why not available; "" when it is
    deployed_at: float
    views: dict[str, str] = field(default_factory=dict)  # view name -> query on the panel's path

    def as_json(self, prefix: str) -> dict[str, Any]:
        return {"name": self.name, "title": self.title, "url": prefix + self.path, "role": self.role.value,
                "version": self.version, "available": self.available, "reason": self.reason,
                "deployed_at": self.deployed_at}

    def view_url(self, prefix: str, view: str) -> str | None:
        query = self.views.get(view)
        return f"{prefix}{self.path}/{query}" if query is not None else None


def serve_status() -> dict[str, tuple[str, str, float]]:
    return {name: (getattr(app.status, "value", str(app.status)), app.message, app.last_deployed_time_s)
            for name, app in serve.status().applications.items()}


async def serve_manifest(app_name: str) -> dict[str, Any]:
    return dict(await serve.get_app_handle(app_name).manifest.remote())


def _not_a_panel(exc: BaseException) -> bool:
    """The application's ingress has no `manifest` method (the API, anything not ours)."""
    return isinstance(exc, RayServeException) and "does not exist" in str(exc) and "manifest" in str(exc)


class PanelDirectory:
    def __init__(self, own_app: str, *, read_status: StatusReader = serve_status,
                 read_manifest: ManifestReader = serve_manifest, timeout_s: float = 2.0, ttl_s: float = 3.0,
                 forget_after_s: float = 600.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.own_app = own_app
        self.read_status, self.read_manifest = read_status, read_manifest
        self.timeout_s, self.ttl_s, self.forget_after_s, self.clock = timeout_s, ttl_s, forget_after_s, clock
        self._known: dict[str, tuple[PanelManifest, float]] = {}  # app -> (last manifest, when seen)
        self._not_panels: dict[str, float] = {}  # app -> the deploy time it was asked at
        self._entries: list[PanelEntry] = []
        self._problem = ""
        self._read_at = float("-inf")
        self._lock = asyncio.Lock()

    async def panels(self) -> tuple[list[PanelEntry], str]:
        """Every panel, sorted by path, and what went wrong reading Serve's status ("" if nothing)."""
        async with self._lock:  # one discovery at a time; the others wait for its answer
            if self.clock() - self._read_at >= self.ttl_s:
                await self._discover()
                self._read_at = self.clock()
            return self._entries, self._problem

    async def _discover(self) -> None:
        try:
            status = await asyncio.to_thread(self.read_status)
        except Exception as exc:  # the controller is down or restarting: keep the last list, say why
            log.warning("reading Serve's status failed: %s: %s", type(exc).__name__, exc)
            self._problem = f"Serve's status cannot be read right now ({type(exc).__name__}); the list may be stale"
            return
        self._problem = ""
        names = [n for n in status if n != self.own_app and self._not_panels.get(n) != status[n][2]]
        answers = await asyncio.gather(*(self._ask(n) for n in names), return_exceptions=True)
        now = self.clock()
        entries: dict[str, PanelEntry] = {}
        for name, answer in zip(names, answers, strict=True):
            app_status, message, deployed_at = status[name]
            if isinstance(answer, PanelManifest):
                self._known[name] = (answer, now)
                healthy = app_status == "RUNNING" and answer.health == "ok"
                reason = "" if healthy else (
                    answer.health if answer.health != "ok" else _status_reason(app_status, message))
                entries[name] = _entry(answer, healthy, reason, deployed_at)
            elif _not_a_panel(answer):
                self._not_panels[name] = deployed_at
            elif name in self._known:
                reason = _status_reason(app_status, message) if app_status != "RUNNING" else _error_reason(answer)
                entries[name] = _entry(self._known[name][0], False, reason, deployed_at)
            else:
                log.info("application %r gave no manifest: %s", name, _error_reason(answer))
        for name, (manifest, seen) in list(self._known.items()):
            if name in entries:
                continue
            if name not in status and now - seen < self.forget_after_s:
                entries[name] = _entry(manifest, False, "not deployed (its application was removed)", 0.0)
            else:  # long gone, or redeployed as something that is not a panel
                del self._known[name]
        self._entries = sorted(entries.values(), key=lambda e: (e.path, e.name))

    async def _ask(self, name: str) -> PanelManifest:
        answer = await asyncio.wait_for(self.read_manifest(name), self.timeout_s)
        try:
            return PanelManifest.model_validate(answer)
        except ValidationError as exc:
            raise ValueError(f"its manifest is malformed: {exc.errors()[0]['msg']}") from None


def _entry(manifest: PanelManifest, available: bool, reason: str, deployed_at: float) -> PanelEntry:
    return PanelEntry(name=manifest.name, title=manifest.title, path=manifest.path, role=manifest.role,
                      version=manifest.version, available=available, reason=reason, deployed_at=deployed_at,
                      views=dict(manifest.views))


def _status_reason(status: str, message: str) -> str:
    first_line = message.strip().splitlines()[0][:200] if message.strip() else ""
    return f"its application is {status}" + (f": {first_line}" if first_line else "")


def _error_reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "it did not answer in time"
    return f"it failed to answer ({type(exc).__name__})"
