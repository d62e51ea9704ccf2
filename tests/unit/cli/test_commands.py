"""The command line as a user meets it: subcommands, help, usage errors and exit codes, and the
validate command's output (the spec's own errors are tested in workflows/test_spec.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from augment_cli.main import build_parser, main
from tests.conftest import SAMPLE_SPEC
from tests.unit.workflows.specs import known_list, spec_data, write_spec

SUBCOMMANDS = ["run", "validate", "runs", "status", "cluster", "serve", "preview", "datasets", "diff", "cancel",
               "review", "promote", "import", "stream", "events", "resume", "users", "keys", "audit", "gc"]


def test_cli_validate_the_sample_spec(augment_env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(SAMPLE_SPEC)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out.startswith(f"{SAMPLE_SPEC}: ok — workflow organisations v1, 8 fields, ")
    assert out.rstrip().endswith("sink organisations_enriched")


def test_cli_validate_a_good_spec(
    tmp_path: Path, augment_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_spec(tmp_path, spec_data())
    assert main(["validate", str(path)]) == 0
    out, err = capsys.readouterr()
    assert (out, err) == (f"{path}: ok — workflow orgs v1, 5 fields, 2 step(s), sink orgs_out\n", "")


def test_cli_validate_a_bad_spec_exits_2_with_every_error_on_stderr(
    tmp_path: Path, augment_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    data = spec_data()
    data["steps"] = [
        {"use": "normalize_url", "params": {"column": "website"}},
        {"use": "nope"},
        {"use": "text_stats", "params": {"column": "url"}},
    ]
    path = write_spec(tmp_path, data)
    assert main(["validate", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        f"augment: spec rejected: {path}: 2 error(s)",
        f"  steps[1].use: unknown augmenter 'nope' (known: {known_list()})",
        "  steps[2].params.column: 'url' is not a field of the schema or a column added by an earlier step",
    ]


def test_cli_validate_a_missing_file_exits_2(
    tmp_path: Path, augment_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "nope.yaml"
    assert main(["validate", str(path)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"augment: spec rejected: {path}: 1 error(s)",
        "  (file): cannot read: No such file or directory",
    ]


def test_cli_has_the_expected_subcommands() -> None:
    parser = build_parser()
    (subparsers,) = [a for a in parser._actions if a.dest == "command"]
    assert sorted(subparsers.choices) == sorted(SUBCOMMANDS)


@pytest.mark.parametrize("argv", [["--help"], *([cmd, "--help"] for cmd in SUBCOMMANDS)])
def test_cli_help_exits_0(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: augment")


@pytest.mark.parametrize(
    ("argv", "complaint"),
    [
        ([], "the following arguments are required: COMMAND"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["validate"], "the following arguments are required: spec"),
        (["status"], "the following arguments are required: run_id"),
        (["cluster", "sideways"], "invalid choice: 'sideways'"),
        (["runs", "--limit", "many"], "invalid int value: 'many'"),
        (["runs", "--limit", "0"], "argument --limit: 0 is below 1"),
        (["validate", "a.yaml", "--colour"], "unrecognized arguments: --colour"),
        (["run", "--run-id", "2026", "a.yaml"], "argument --run-id: '2026' is not a run id"),
    ],
)
def test_cli_usage_errors_exit_2(argv: list[str], complaint: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: augment")
    assert complaint in err


def test_cli_unexpected_failure_is_one_line_and_exit_1(
    augment_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AUGMENT_DATABASE_URL", "postgresql://nobody:s3cr3t@127.0.0.1:9/none")
    assert main(["runs"]) == 1
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1
    assert err.startswith("augment runs: OperationalError: ") and "Traceback" not in err and "s3cr3t" not in err


def test_installed_console_script_maps_spec_errors_to_exit_2(tmp_path: Path, augment_env: dict[str, str]) -> None:
    script = Path(sys.executable).parent / "augment"
    assert script.exists(), f"console script not installed at {script}"
    data = spec_data()
    data["colour"] = "blue"
    path = write_spec(tmp_path, data)
    result = subprocess.run([str(script), "validate", str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [f"augment: spec rejected: {path}: 1 error(s)", "  colour: unknown key"]
