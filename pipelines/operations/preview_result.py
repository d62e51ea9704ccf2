"""What `augment preview` finds: the requests a run would send and what they may cost. Plain data,
no Ray, so the CLI's printer and the workflow editor's page can read it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class StepEstimate:
    step: str
    provider: str
    model: str | None
    requests: int = 0
    unbuildable: int = 0
    tokens_in: int = 0
    tokens_out_max: int = 0
    cost_max_usd: float = 0.0


@dataclass
class Preview:
    rows_in: int = 0
    valid: int = 0
    samples: list[dict[str, Any]] = field(default_factory=list)  # {"record": i, "step": s, "request": ...}
    steps: list[StepEstimate] = field(default_factory=list)

    @property
    def cost_max_usd(self) -> float:
        return sum(s.cost_max_usd for s in self.steps)
