"""The augmenter registry: a decorator registers each class under its spec name.

Modules in pipelines/augmenters/ are discovered, not listed by hand.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable

import pipelines.augmenters as package
from pipelines.augmenters.base import Augmenter
from pipelines.spec.workflow import StepSpec, WorkflowSpec

_REGISTRY: dict[str, type[Augmenter]] = {}
_discovered = False


def register(name: str) -> Callable[[type[Augmenter]], type[Augmenter]]:
    """Class decorator: make an augmenter available as `use: <name>` in specs."""

    def decorate(cls: type[Augmenter]) -> type[Augmenter]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"augmenter {name!r} is already registered by {_REGISTRY[name].__qualname__}")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def augmenters() -> dict[str, type[Augmenter]]:
    global _discovered
    if not _discovered:
        for module in pkgutil.iter_modules(package.__path__):
            if module.name != "base":
                importlib.import_module(f"{package.__name__}.{module.name}")
        _discovered = True
    return dict(_REGISTRY)


def build_step(step: StepSpec, step_name: str) -> Augmenter:
    """An augmenter instance for a spec step (params validated; raises on bad params)."""
    cls = augmenters()[step.use]
    return cls(cls.Params.model_validate(step.params), step_name, step.overwrite)


def build_chain(spec: WorkflowSpec) -> list[Augmenter]:
    return [build_step(step, name) for step, name in zip(spec.steps, spec.step_names())]


