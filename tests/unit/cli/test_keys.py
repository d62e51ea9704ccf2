"""`augment keys create --daily-spend-usd` and the caps `keys list` shows."""

from __future__ import annotations

import json
import uuid

import pytest

from augment_cli.main import main
from augment_core.audit import list_entries
from augment_core.identity import Identity, Role
from augment_core.settings import Settings
from augment_core.store import open_store


def test_a_key_carries_its_own_daily_spend_cap(augment_env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    user = f"cli-{uuid.uuid4().hex[:8]}"
    Identity(open_store(Settings())).create_user(user, Role.operator, None)
    assert main(["keys", "create", user, "crm", "--daily-spend-usd", "2.5", "--rate", "7"]) == 0
    secret = capsys.readouterr().out.strip()
    assert main(["keys", "list", "--user", user]) == 0
    listed = capsys.readouterr().out
    assert "USD/day" in listed and " 2.5 " in listed and " 7 " in listed
    assert main(["keys", "list", "--user", user, "--json"]) == 0
    [key] = json.loads(capsys.readouterr().out)
    assert key["daily_spend_usd"] == 2.5 and key["rate_per_minute"] == 7
    assert Identity(open_store(Settings())).resolve_key(secret).daily_spend_usd == 2.5  # type: ignore[union-attr]
    [entry] = list_entries(open_store(Settings()), action="key.create", limit=1)
    assert entry.detail == f"for {user}: crm, 7/min, 2.5 USD/day" and secret not in entry.detail


@pytest.mark.parametrize("value", ["-1", "nan", "inf", "lots"])
def test_a_bad_daily_spend_is_a_usage_error(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["keys", "create", "ana", "crm", "--daily-spend-usd", value])
    assert exit_.value.code == 2 and "--daily-spend-usd" in capsys.readouterr().err
