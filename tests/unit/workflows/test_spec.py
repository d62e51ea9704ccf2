"""The workflow spec as a user meets it: every problem reported as 'path: reason', all at once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipelines.augmenters.registry import augmenters
from pipelines.spec.errors import SpecError
from pipelines.spec.workflow import FileSource
from pipelines.workflows.loader import load_spec, parse_spec, preflight
from tests.unit.workflows.specs import known_list, spec_data, write_spec


def errors_of(data: Any) -> list[str]:
    with pytest.raises(SpecError) as info:
        parse_spec(data, "test.yaml")
    assert info.value.source == "test.yaml"
    return info.value.errors


# the valid base ----------------------------------------------------------------------------------
def test_base_spec_is_valid_and_defaults_are_filled() -> None:
    spec = parse_spec(spec_data())
    assert spec.name == "orgs"
    assert spec.version == 1
    assert spec.schema_.key == ["org_id"]  # a single key is read as a list of one
    assert spec.schema_.unique_key is True
    assert spec.source.delimiter == ","
    assert spec.step_names() == ["normalize_url_0", "normalize_email_1"]
    assert spec.sink.export_csv is False
    assert spec.source.path == "orgs.csv"  # no base_dir: left as written


# unknown keys --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ((), "colour: unknown key"),
        (("source",), "source.colour: unknown key"),
        (("schema",), "schema.colour: unknown key"),
        (("schema", "fields", "website"), "schema.fields.website.colour: unknown key"),
        (("steps", 0), "steps[0].colour: unknown key"),
        (("sink",), "sink.colour: unknown key"),
    ],
)
def test_unknown_key_is_reported_at_its_path(where: tuple[Any, ...], expected: str) -> None:
    data = spec_data()
    target = data
    for part in where:
        target = target[part]
    target["colour"] = "blue"
    assert errors_of(data) == [expected]


def test_unknown_param_of_an_augmenter_is_reported_under_params() -> None:
    data = spec_data()
    data["steps"][1]["params"] = {"column": "email", "colour": "blue"}
    assert errors_of(data) == ["steps[1].params.colour: unknown key"]


# missing keys and bad types ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (("name",), "name: Field required"),
        (("source",), "source: Field required"),
        (("schema",), "schema: Field required"),
        (("sink",), "sink: Field required"),
        (("source", "path"), "source.path: Field required"),
        (("schema", "fields"), "schema.fields: Field required"),
        (("steps", 0, "use"), "steps[0].use: Field required"),
        (("steps", 1, "params"), "steps[1].params.column: Field required"),
        (("sink", "dataset"), "sink.dataset: Field required"),
    ],
)
def test_missing_required_key(path: tuple[Any, ...], expected: str) -> None:
    data = spec_data()
    target = data
    for part in path[:-1]:
        target = target[part]
    del target[path[-1]]
    assert errors_of(data) == [expected]


def test_missing_source_kind_is_reported_on_source() -> None:
    data = spec_data()
    del data["source"]["kind"]
    assert errors_of(data) == ["source: Unable to extract tag using discriminator 'kind'"]


def test_unknown_source_kind_lists_the_kinds() -> None:
    data = spec_data()
    data["source"]["kind"] = "xls"
    (error,) = errors_of(data)
    assert error.startswith("source: ")
    assert "'xls'" in error and "'csv', 'jsonl', 'parquet', 'postgres'" in error


def test_postgres_source_has_its_own_keys() -> None:
    data = spec_data()
    data["source"]["kind"] = "postgres"  # still has `path`, lacks `query`
    assert errors_of(data) == ["source.query: Field required", "source.path: unknown key"]
    data["source"] = {"kind": "postgres", "query": "select 1", "dsn_env": "my-dsn"}
    assert errors_of(data) == ["source.dsn_env: String should match pattern '^[A-Z_][A-Z0-9_]*$'"]
    data["source"]["dsn_env"] = "ORGS_DSN"
    assert parse_spec(data).source.dsn_env == "ORGS_DSN"


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d.update(version="two"),
         "version: Input should be a valid integer, unable to parse string as an integer"),
        (lambda d: d.update(version=0), "version: Input should be greater than or equal to 1"),
        (lambda d: d.update(steps={"use": "normalize_url"}), "steps: Input should be a valid list"),
        (lambda d: d["schema"]["fields"]["website"].update(type="text"),
         "schema.fields.website.type: Input should be 'string', 'integer', 'float', 'boolean', 'date' or 'datetime'"),
        (lambda d: d["schema"]["fields"]["website"].update(required="maybe"),
         "schema.fields.website.required: Input should be a valid boolean, unable to interpret input"),
        (lambda d: d["schema"].update(fields={}),
         "schema.fields: Dictionary should have at least 1 item after validation, not 0"),
        (lambda d: d["schema"]["fields"]["employees"].update(enum=[]),
         "schema.fields.employees.enum: List should have at least 1 item after validation, not 0"),
        (lambda d: d["source"].update(delimiter=";;"), "source.delimiter: String should have at most 1 character"),
        (lambda d: d["steps"][0].update(overwrite="sometimes"),
         "steps[0].overwrite: Input should be a valid boolean, unable to interpret input"),
        (lambda d: d.update(name="my workflow"), "name: String should match pattern '^[A-Za-z][A-Za-z0-9_]{0,62}$'"),
        (lambda d: d["sink"].update(dataset="orgs-out"),
         "sink.dataset: String should match pattern '^[A-Za-z][A-Za-z0-9_]{0,62}$'"),
        (lambda d: d["steps"][0].update(name="1st"),
         "steps[0].name: String should match pattern '^[A-Za-z][A-Za-z0-9_]{0,62}$'"),
        (lambda d: d["schema"]["fields"]["website"].update(max_length=0),
         "schema.fields.website.max_length: Input should be greater than or equal to 1"),
    ],
)
def test_bad_value_is_reported_at_its_path(mutate: Any, expected: str) -> None:
    data = spec_data()
    mutate(data)
    assert errors_of(data) == [expected]


@pytest.mark.parametrize("data", [["a", "b"], "just text", 42])
def test_spec_that_is_not_a_mapping(data: Any) -> None:
    assert errors_of(data) == [f"(top level): expected a mapping, got {type(data).__name__}"]


# field constraints --------------------------------------------------------------------------------
def test_invalid_regex_names_the_field() -> None:
    data = spec_data()
    data["schema"]["fields"]["org_id"]["regex"] = "ORG-(\\d+"
    (error,) = errors_of(data)
    assert error.startswith("schema.fields.org_id.regex: invalid regular expression: ")
    assert "missing )" in error


def test_min_greater_than_max() -> None:
    data = spec_data()
    data["schema"]["fields"]["employees"].update(min=10, max=5)
    assert errors_of(data) == ["schema.fields.employees: min (10) is greater than max (5)"]


def test_min_length_greater_than_max_length() -> None:
    data = spec_data()
    data["schema"]["fields"]["email"].update(min_length=10, max_length=5)
    assert errors_of(data) == ["schema.fields.email: min_length (10) is greater than max_length (5)"]


@pytest.mark.parametrize("constraint", [{"regex": "\\d+"}, {"min_length": 1}, {"max_length": 3}])
def test_string_constraints_on_an_integer_field(constraint: dict[str, Any]) -> None:
    data = spec_data()
    data["schema"]["fields"]["employees"].update(constraint)
    assert errors_of(data) == [
        "schema.fields.employees: regex/min_length/max_length apply to string fields, not integer"
    ]


@pytest.mark.parametrize("field_type", ["string", "boolean", "date", "datetime"])
def test_min_max_on_a_non_numeric_field(field_type: str) -> None:
    data = spec_data()
    data["schema"]["fields"]["extra"] = {"type": field_type, "max": 3}
    assert errors_of(data) == [f"schema.fields.extra: min/max apply to integer and float fields, not {field_type}"]


def test_enum_of_a_string_field_holds_text_even_when_yaml_reads_numbers() -> None:
    data = spec_data()
    data["schema"]["fields"]["code"] = {"type": "string", "enum": [1, 2.5, "x"]}
    assert parse_spec(data).schema_.fields["code"].enum == ["1", "2.5", "x"]


def test_enum_of_a_number_field_must_hold_numbers() -> None:
    data = spec_data()
    data["schema"]["fields"]["employees"]["enum"] = ["1", "2"]
    assert errors_of(data) == ["schema.fields.employees: enum values of a integer field must be numbers"]


def test_enum_on_a_date_field_is_refused() -> None:
    data = spec_data()
    data["schema"]["fields"]["day"] = {"type": "date", "enum": ["2024-01-01"]}
    assert errors_of(data) == ["schema.fields.day: enum applies to string, integer and float fields, not date"]


def test_key_field_not_in_schema() -> None:
    data = spec_data()
    data["schema"]["key"] = ["org_id", "vat_number"]
    assert errors_of(data) == ["schema: key field(s) ['vat_number'] are not fields of the schema"]


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("record_uuid", "field name 'record_uuid' is reserved"),
        ("1st_name", "field name '1st_name' must start with a letter and hold only letters, digits and _"),
        ("_private", "field name '_private' must start with a letter and hold only letters, digits and _"),
        ("first name", "field name 'first name' must start with a letter and hold only letters, digits and _"),
        ("a" * 64, f"field name {'a' * 64!r} must start with a letter and hold only letters, digits and _"),
    ],
)
def test_reserved_or_invalid_field_name(name: str, reason: str) -> None:
    data = spec_data()
    data["schema"]["fields"][name] = {"type": "string"}
    assert errors_of(data) == [f"schema.fields: {reason}"]


# steps against the registry and the chain of columns ---------------------------------------------
def test_the_augmenters_the_tests_use_are_registered() -> None:
    assert {"normalize_url", "normalize_email", "text_stats", "lookup"} <= set(augmenters())


def test_unknown_augmenter_lists_the_known_ones() -> None:
    data = spec_data()
    data["steps"][1] = {"use": "nope"}
    assert errors_of(data) == [f"steps[1].use: unknown augmenter 'nope' (known: {known_list()})"]


def test_step_reading_a_column_that_does_not_exist() -> None:
    data = spec_data()
    data["steps"].append({"use": "text_stats", "params": {"column": "url"}})
    assert errors_of(data) == [
        "steps[2].params.column: 'url' is not a field of the schema or a column added by an earlier step"
    ]


def test_step_may_read_a_column_added_by_an_earlier_step_but_not_a_later_one() -> None:
    data = spec_data()
    data["steps"].append({"use": "text_stats", "params": {"column": "website_host"}})
    assert parse_spec(data).step_names()[-1] == "text_stats_2"

    data = spec_data()
    data["steps"].insert(0, {"use": "text_stats", "params": {"column": "website_host"}})
    assert errors_of(data) == [
        "steps[0].params.column: 'website_host' is not a field of the schema or a column added by an earlier step"
    ]


def test_step_reading_a_non_string_column_when_it_reads_strings() -> None:
    data = spec_data()
    data["steps"].append({"use": "normalize_email", "params": {"column": "employees", "prefix": "e"}})
    assert errors_of(data) == ["steps[2].params.column: 'employees' is int64, normalize_email reads strings"]


def test_record_uuid_is_a_readable_column() -> None:
    data = spec_data()
    data["steps"].append({"use": "text_stats", "params": {"column": "record_uuid"}})
    parse_spec(data)


def test_step_adding_an_existing_column_needs_overwrite() -> None:
    data = spec_data()
    data["steps"].append({"use": "normalize_url", "params": {"column": "website"}})
    assert errors_of(data) == [
        f"steps[2]: adds 'website_{suffix}', which already exists (set overwrite: true to replace it)"
        for suffix in ("url", "host", "domain", "valid")
    ]
    data["steps"][2]["overwrite"] = True
    parse_spec(data)


def test_step_adding_a_column_that_is_a_schema_field_needs_overwrite() -> None:
    data = spec_data()
    data["schema"]["fields"]["email_domain"] = {"type": "string"}
    assert errors_of(data) == [
        "steps[1]: adds 'email_domain', which already exists (set overwrite: true to replace it)"
    ]


def test_a_prefix_avoids_the_clash() -> None:
    data = spec_data()
    data["steps"].append({"use": "normalize_url", "params": {"column": "website", "prefix": "site"}})
    parse_spec(data)


def test_duplicate_step_names() -> None:
    data = spec_data()
    data["steps"][0]["name"] = "clean"
    data["steps"][1]["name"] = "clean"
    assert errors_of(data) == ["steps[1].name: duplicate step name 'clean'"]


def test_explicit_name_clashing_with_a_default_name() -> None:
    data = spec_data()
    data["steps"][1]["name"] = "normalize_url_0"
    assert errors_of(data) == ["steps[1].name: duplicate step name 'normalize_url_0'"]


# several errors at once ----------------------------------------------------------------------------
def test_structural_errors_are_all_reported() -> None:
    data = spec_data()
    data["colour"] = "blue"
    data["steps"][0]["colour"] = "red"
    data["schema"]["fields"]["employees"]["type"] = "number"
    data["sink"]["dataset"] = "bad name"
    errors = errors_of(data)
    assert sorted(errors) == sorted([
        "colour: unknown key",
        "steps[0].colour: unknown key",
        "schema.fields.employees.type: Input should be 'string', 'integer', 'float', 'boolean', 'date' or 'datetime'",
        "sink.dataset: String should match pattern '^[A-Za-z][A-Za-z0-9_]{0,62}$'",
    ])


def test_structural_and_param_errors_are_reported_in_one_round() -> None:
    data = spec_data()
    data["sink"]["dataset"] = "bad name"
    data["steps"] = [
        {"use": "normalize_url", "params": {"column": "website", "colour": 1}},
        {"use": "nope"},
        {"use": "text_stats", "params": {"column": "description"}, "colour": "red"},
    ]
    assert errors_of(data) == [
        "steps[2].colour: unknown key",
        "sink.dataset: String should match pattern '^[A-Za-z][A-Za-z0-9_]{0,62}$'",
        "steps[0].params.colour: unknown key",
        f"steps[1].use: unknown augmenter 'nope' (known: {known_list()})",
    ]


def test_step_errors_are_all_reported_in_step_order() -> None:
    data = spec_data()
    data["steps"] = [
        {"use": "nope"},
        {"use": "normalize_email", "params": {"column": "mail"}},
        {"use": "normalize_url", "params": {"column": "website", "colour": 1}},
        {"use": "text_stats", "name": "stats", "params": {"column": "description"}},
        {"use": "text_stats", "name": "stats", "params": {"column": "description", "prefix": "d"}},
    ]
    assert errors_of(data) == [
        f"steps[0].use: unknown augmenter 'nope' (known: {known_list()})",
        "steps[1].params.column: 'mail' is not a field of the schema or a column added by an earlier step",
        "steps[2].params.colour: unknown key",
        "steps[4].name: duplicate step name 'stats'",
    ]


def test_spec_error_text_counts_and_lists_the_errors() -> None:
    data = spec_data()
    data["steps"] = [{"use": "nope"}, {"use": "text_stats", "params": {"column": "url"}}]
    with pytest.raises(SpecError) as info:
        parse_spec(data, "wf.yaml")
    lines = str(info.value).splitlines()
    assert lines[0] == "wf.yaml: 2 error(s)"
    assert lines[1:] == [f"  {e}" for e in info.value.errors]


# YAML files ------------------------------------------------------------------------------------------
def test_yaml_syntax_error_gives_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: orgs\nsource:\n  kind: csv\n   path: a.csv\n", encoding="utf-8")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert info.value.source == str(path)
    assert info.value.errors == ["line 4, column 8: invalid YAML: mapping values are not allowed here"]


def test_yaml_unclosed_list_gives_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: orgs\nsteps: [a, b\nsink: {}\n", encoding="utf-8")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert info.value.errors == ["line 3, column 5: invalid YAML: expected ',' or ']', but got ':'"]


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "missing.yaml"
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert info.value.errors == ["(file): cannot read: No such file or directory"]


def test_folder_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as info:
        load_spec(tmp_path)
    assert info.value.errors == ["(file): cannot read: Is a directory"]


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: café\n".encode("latin-1"))
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert info.value.errors == ["(file): not valid UTF-8 (invalid continuation byte at byte 9)"]


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing yet\n", encoding="utf-8")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert info.value.errors == ["(top level): the spec is empty"]


YAML_WITH_ON_KEYS = """\
name: orgs
on: push
source: {kind: csv, path: orgs.csv}
schema:
  fields:
    org_id: {}
    off: {}
steps:
  - use: lookup
    params: {reference: ref.csv, on: org_id, columns: [region]}
sink: {dataset: orgs_out}
"""


def test_unquoted_on_off_keys_read_as_booleans_get_a_clear_message(tmp_path: Path) -> None:
    path = tmp_path / "on.yaml"
    path.write_text(YAML_WITH_ON_KEYS, encoding="utf-8")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    hint = "(YAML reads unquoted on/off/yes/no as booleans: quote it)"
    assert sorted(info.value.errors) == sorted([
        f"(top level): key True is not a string {hint}",
        f"schema.fields: key False is not a string {hint}",
        f"steps[0].params: key True is not a string {hint}",
    ])


def test_quoted_off_key_is_an_ordinary_field_name(tmp_path: Path) -> None:
    text = YAML_WITH_ON_KEYS.replace("on: push\n", "").replace("    off:", '    "off":')
    text = text.replace("on: org_id", "column: org_id")
    path = tmp_path / "on.yaml"
    path.write_text(text, encoding="utf-8")
    spec = load_spec(path)
    assert list(spec.schema_.fields) == ["org_id", "off"]


# paths -------------------------------------------------------------------------------------------------
def test_relative_paths_resolve_against_the_spec_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = spec_data()
    data["source"]["path"] = "../data/orgs.csv"
    data["schema"]["fields"]["country"] = {"type": "string"}
    data["steps"].append(
        {"use": "lookup", "params": {"reference": "ref/regions.csv", "column": "country", "columns": ["region"]}}
    )
    path = write_spec(tmp_path / "workflows", data)
    monkeypatch.chdir(tmp_path.parent)  # the working directory must not matter
    spec = load_spec(path)
    assert spec.source.path == str(tmp_path / "data" / "orgs.csv")
    assert spec.steps[2].params["reference"] == str(tmp_path / "workflows" / "ref" / "regions.csv")


def test_absolute_and_remote_paths_are_kept(tmp_path: Path) -> None:
    data = spec_data()
    data["source"]["path"] = "s3://bucket/orgs/"
    data["schema"]["fields"]["country"] = {"type": "string"}
    data["steps"].append(
        {"use": "lookup", "params": {"reference": "/srv/ref/regions.csv", "column": "country", "columns": ["region"]}}
    )
    spec = load_spec(write_spec(tmp_path, data))
    assert spec.source.path == "s3://bucket/orgs/"
    assert spec.steps[2].params["reference"] == "/srv/ref/regions.csv"


def test_preflight_reports_missing_local_files(tmp_path: Path) -> None:
    data = spec_data()
    data["schema"]["fields"]["country"] = {"type": "string"}
    data["steps"].append(
        {"use": "lookup", "params": {"reference": "regions.csv", "column": "country", "columns": ["region"]}}
    )
    spec = load_spec(write_spec(tmp_path, data))
    with pytest.raises(SpecError) as info:
        preflight(spec, "spec.yaml")
    assert info.value.errors == [
        f"source.path: no such file or folder: {tmp_path / 'orgs.csv'}",
        f"steps[2].params.reference: no such file: {tmp_path / 'regions.csv'}",
    ]
    (tmp_path / "orgs.csv").write_text("org_id\n", encoding="utf-8")
    (tmp_path / "regions.csv").write_text("country,region\n", encoding="utf-8")
    preflight(spec, "spec.yaml")


def test_preflight_accepts_a_folder_and_skips_remote_and_database_sources(tmp_path: Path) -> None:
    data = spec_data()
    data["source"]["path"] = "inputs"
    (tmp_path / "inputs").mkdir()
    preflight(load_spec(write_spec(tmp_path, data)))

    data["source"]["path"] = "s3://bucket/missing.csv"
    preflight(load_spec(write_spec(tmp_path, data)))

    data["source"] = {"kind": "postgres", "query": "select * from orgs"}
    spec = load_spec(write_spec(tmp_path, data))
    assert not isinstance(spec.source, FileSource)
    preflight(spec)
