"""Editing a workflows folder with every version kept in the store (pipelines/workflows/editing.py):
checked like `augment run`, numbered, written to the folder and kept; nobody's save overwritten
unseen; hand edits imported or flagged. And the editor page's views (ui/workflows.py)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from augment_core.store import MetadataStore
from augment_core.workflow_history import FOLDER_AUTHOR, WorkflowHistory, WorkflowVersion
from pipelines.workflows.editing import EditError, declared, import_folder, save, with_version
from tests.conftest import SAMPLE_CSV
from ui.workflows import diff_view, spec_state

SPEC = f"""\
# a comment that must survive
name: tidy
version: 1
source: {{kind: csv, path: {SAMPLE_CSV}}}
schema:
  key: org_id
  fields:
    org_id: {{type: string, required: true}}
    name: {{type: string}}
steps:
  - use: clean_company_name
    params: {{column: name}}
sink: {{dataset: tidy}}
"""


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "tidy.yaml").write_text(SPEC, encoding="utf-8")
    (tmp_path / "broken.yaml").write_text("name: broken\nsteps: [{use: nope}]\n", encoding="utf-8")
    return tmp_path


@pytest.fixture
def history(tmp_path: Path) -> WorkflowHistory:
    """A store of its own: the session's keeps other tests' versions of `tidy`."""
    return WorkflowHistory(MetadataStore(f"sqlite:///{tmp_path / 'store' / 'metadata.db'}"))


def test_the_folder_is_imported_as_found_and_broken_files_are_listed_with_their_errors(
        folder: Path, history: WorkflowHistory) -> None:
    listed = {s.file: s for s in import_folder(history, folder)}
    assert listed["tidy.yaml"].errors == () and spec_state(listed["tidy.yaml"]) == "ok"
    assert listed["broken.yaml"].errors and spec_state(listed["broken.yaml"]).endswith("error(s)")
    kept = history.versions("tidy")
    assert [(v.version, v.author, v.text) for v in kept] == [(1, FOLDER_AUTHOR, SPEC)]
    import_folder(history, folder)
    assert len(history.versions("tidy")) == 1  # the same text is kept once


def test_a_save_is_checked_numbered_written_and_kept(folder: Path, history: WorkflowHistory) -> None:
    import_folder(history, folder)
    edited = SPEC.replace("column: name", "column: name, lowercase: true")
    with pytest.raises(EditError) as refused:  # an unknown param, reported by path as the CLI would
        save(history, folder, "tidy.yaml", edited, "ana (session)", based_on=1)
    assert any(e.startswith("steps[0].params.lowercase") for e in refused.value.errors), refused.value.errors
    assert (folder / "tidy.yaml").read_text() == SPEC and history.latest_number("tidy") == 1

    fixed = SPEC.replace("dataset: tidy", "dataset: tidy_v2")
    saved = save(history, folder, "tidy.yaml", fixed, "ana (session)", based_on=1)
    assert saved.version == 2 and saved.author == "ana (session)"
    assert (folder / "tidy.yaml").read_text() == saved.text == fixed.replace("version: 1", "version: 2")
    assert saved.text.startswith("# a comment that must survive")
    assert diff_view(history.versions("tidy"), 2).count("\n-") == 2  # the version and the dataset lines


def test_a_save_based_on_an_older_version_is_refused_with_who_saved_since(
        folder: Path, history: WorkflowHistory) -> None:
    import_folder(history, folder)
    save(history, folder, "tidy.yaml", SPEC.replace("tidy}", "tidy_b}"), "bo (session)", based_on=1)
    with pytest.raises(EditError) as refused:
        save(history, folder, "tidy.yaml", SPEC.replace("tidy}", "tidy_a}"), "ana (session)", based_on=1)
    assert "version 2 was saved meanwhile by bo (session)" in refused.value.errors[0]
    assert "tidy_b" in (folder / "tidy.yaml").read_text()


def test_renaming_and_files_outside_the_folder_are_refused(folder: Path, history: WorkflowHistory) -> None:
    with pytest.raises(EditError, match="keep the name"):
        save(history, folder, "tidy.yaml", SPEC.replace("name: tidy", "name: other"), "ana", based_on=None)
    for bad in ("../tidy.yaml", "tidy.txt", "sub/tidy.yaml"):
        with pytest.raises(EditError, match="not a .yaml file name"):
            save(history, folder, bad, SPEC, "ana", based_on=None)


def test_a_hand_edit_without_a_new_number_is_flagged_and_a_save_numbers_it(
        folder: Path, history: WorkflowHistory) -> None:
    import_folder(history, folder)
    (folder / "tidy.yaml").write_text(SPEC.replace("tidy}", "tidy_hand}"), encoding="utf-8")
    tidy = next(s for s in import_folder(history, folder) if s.file == "tidy.yaml")
    assert "changed outside augment without a new version number" in tidy.drift
    assert spec_state(tidy) == "⚠ changed outside augment"
    saved = save(history, folder, "tidy.yaml", (folder / "tidy.yaml").read_text(), "ana", based_on=1)
    assert saved.version == 2 and "tidy_hand" in saved.text


def test_the_version_line_is_set_or_added_and_declared_reads_it() -> None:
    assert with_version("name: a\nversion: 3\nx: 1\n", 4) == "name: a\nversion: 4\nx: 1\n"
    assert with_version("name: a\nx: 1\n", 2) == "name: a\nversion: 2\nx: 1\n"
    assert declared("name: a\nversion: 7\n") == ("a", 7) and declared("name: a\n") == ("a", 1)
    assert declared("[not, a, mapping]") == (None, None) and declared("name: [") == (None, None)


def test_the_first_version_has_no_diff() -> None:
    first = WorkflowVersion(workflow="w", version=1, file="w.yaml", text="a", sha256="x", author="me",
                            created_at=dt.datetime.now(dt.timezone.utc))
    assert diff_view([first], 1) == "(version 1 is the first kept)" and diff_view([first], 9) == ""
