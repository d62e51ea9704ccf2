"""A valid base spec to mutate, and writing one to a file: shared by the spec and CLI tests."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from pipelines.augmenters.registry import augmenters

BASE: dict[str, Any] = {
    "name": "orgs",
    "source": {"kind": "csv", "path": "orgs.csv"},
    "schema": {
        "key": "org_id",
        "fields": {
            "org_id": {"type": "string", "required": True},
            "website": {"type": "string"},
            "email": {"type": "string"},
            "description": {"type": "string"},
            "employees": {"type": "integer", "min": 1},
        },
    },
    "steps": [
        {"use": "normalize_url", "params": {"column": "website"}},
        {"use": "normalize_email", "params": {"column": "email"}},
    ],
    "sink": {"dataset": "orgs_out"},
}


def spec_data() -> dict[str, Any]:
    return copy.deepcopy(BASE)


def write_spec(folder: Path, data: dict[str, Any], name: str = "spec.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def known_list() -> str:
    return ", ".join(sorted(augmenters()))
