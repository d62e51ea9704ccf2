"""The deterministic augmenters, called the way a worker calls them: build, setup, apply."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from pipelines.augmenters.base import Augmenter
from pipelines.augmenters.lookup import ReferenceTableError
from pipelines.augmenters.normalize_url import NormalizeUrl
from pipelines.augmenters.registry import augmenters, build_step, register
from pipelines.engine.chain import output_schema
from pipelines.spec.errors import SpecError
from pipelines.spec.workflow import StepSpec
from pipelines.workflows.loader import parse_spec

NAMES = ["normalize_url", "normalize_email", "normalize_phone", "normalize_country",
         "clean_company_name", "text_stats", "lookup", "derive"]


def make(use: str, **params: Any) -> Augmenter:
    step = build_step(StepSpec(use=use, params=params), "s")
    step.setup()
    return step


def run(use: str, params: dict[str, Any], **columns: list[Any] | pa.Array) -> pa.Table:
    return make(use, **params).apply(pa.table(columns))


def added(table: pa.Table, *columns: str) -> list[tuple[Any, ...]]:
    return list(zip(*(table[c].to_pylist() for c in columns)))


# --- registry and spec --------------------------------------------------------------------


def test_every_augmenter_is_registered_with_declared_columns_and_strict_params() -> None:
    known = augmenters()
    assert set(NAMES) <= set(known)
    for name in NAMES:
        cls = known[name]
        assert cls.name == name
        assert "Reads:" in cls.__doc__ and "Adds:" in cls.__doc__, name
        assert cls.Params.model_config["extra"] == "forbid", name
        assert all(f.description for f in cls.Params.model_fields.values()), name


def test_registering_a_taken_name_raises() -> None:
    with pytest.raises(ValueError, match="'normalize_url' is already registered by NormalizeUrl"):
        register("normalize_url")(type("Impostor", (NormalizeUrl,), {}))
    assert augmenters()["normalize_url"] is NormalizeUrl
    assert register("normalize_url")(NormalizeUrl) is NormalizeUrl  # re-registering itself is fine


def spec_with(steps: list[dict[str, Any]]) -> dict[str, Any]:
    fields = {"name": {}, "website": {}, "email": {}, "phone": {}, "country": {}, "bio": {},
              "employees": {"type": "integer"}}
    return {"name": "companies", "source": {"kind": "csv", "path": "in.csv"},
            "schema": {"fields": fields, "key": "name"}, "steps": steps, "sink": {"dataset": "companies"}}


def test_a_spec_using_every_augmenter_parses_and_declares_its_columns(tmp_path: Path) -> None:
    (tmp_path / "sizes.csv").write_text("employees,band\n10,small\n", encoding="utf-8")
    spec = parse_spec(spec_with([
        {"use": "normalize_url", "params": {"column": "website", "prefix": "site"}},
        {"use": "normalize_email", "params": {"column": "email"}},
        {"use": "normalize_country", "params": {"column": "country"}},
        {"use": "normalize_phone", "params": {"column": "phone", "region_column": "country_code"}},
        {"use": "clean_company_name", "params": {"column": "name"}},
        {"use": "text_stats", "params": {"column": "bio"}},
        {"use": "lookup", "params": {"reference": "sizes.csv", "column": "employees", "columns": ["band"]}},
        {"use": "derive", "params": {"column": "label", "expression": "concat(name_clean, ' (', site_domain, ')')"}},
    ]), base_dir=tmp_path)
    assert spec.steps[6].params["reference"] == str(tmp_path / "sizes.csv")  # resolved against the spec
    schema = output_schema(spec)
    assert schema.field("site_domain").type == pa.string()
    assert schema.field("email_valid").type == pa.bool_()
    assert schema.field("phone_e164").type == pa.string()
    assert schema.field("bio_words").type == pa.int64()
    assert schema.names[-2:] == ["band", "label"]


@pytest.mark.parametrize(("step", "error"), [
    ({"use": "normalize_url", "params": {}}, "steps[0].params.column: Field required"),
    ({"use": "normalize_url", "params": {"column": "website", "colour": 1}}, "steps[0].params.colour: unknown key"),
    ({"use": "normalize_url", "params": {"column": "web site"}}, "steps[0].params.column: String should match"),
    ({"use": "normalize_url", "params": {"column": "website", "prefix": ""}},
     "steps[0].params.prefix: String should match"),
    ({"use": "normalize_url", "params": {"column": "nope"}}, "steps[0].params.column: 'nope' is not a field"),
    ({"use": "normalize_email", "params": {"column": "employees"}}, "steps[0].params.column: 'employees' is int64"),
    ({"use": "normalize_phone", "params": {"column": "phone", "default_region": "XX"}},
     "steps[0].params.default_region: 'XX' is not an ISO alpha-2 region that phonenumbers supports"),
    ({"use": "normalize_phone", "params": {"column": "phone", "region_column": "cc"}},
     "steps[0].params.region_column: 'cc' is not a field"),
    ({"use": "lookup", "params": {"reference": "x.csv", "column": "name", "columns": []}},
     "steps[0].params.columns: List should have at least 1 item"),
    ({"use": "lookup", "params": {"reference": "x.csv", "column": "name", "columns": ["Full Name"]}},
     "steps[0].params: 'Full Name' is not a valid column name to add; set a prefix"),
    ({"use": "derive", "params": {"column": "x", "expression": "open('x')"}},
     "steps[0].params.expression: function 'open' is not allowed (allowed: abs, coalesce"),
    ({"use": "derive", "params": {"column": "x", "expression": "upper(nope)"}},
     "steps[0].params.expression: 'nope' is not a field"),
    ({"use": "derive", "params": {"column": "x", "expression": "1", "type": "date"}},
     "steps[0].params.type: Input should be 'string', 'integer', 'float' or 'boolean'"),
    ({"use": "text_stats", "params": {"column": "name", "prefix": "name"}, "name": "stats"}, None),
])
def test_bad_params_are_reported_by_path(step: dict[str, Any], error: str | None) -> None:
    if error is None:
        parse_spec(spec_with([step]))
        return
    with pytest.raises(SpecError) as caught:
        parse_spec(spec_with([step]))
    assert any(e.startswith(error) for e in caught.value.errors), caught.value.errors


def test_an_added_column_that_exists_is_an_error_unless_overwrite() -> None:
    steps = [{"use": "text_stats", "params": {"column": "bio"}}, {"use": "text_stats", "params": {"column": "bio"}}]
    with pytest.raises(SpecError, match=r"steps\[1\]: adds 'bio_chars', which already exists"):
        parse_spec(spec_with(steps))
    step = make("text_stats", column="bio")
    with pytest.raises(RuntimeError, match="would overwrite 'bio_chars'"):
        step.apply(pa.table({"bio": ["x"], "bio_chars": [9]}))


# --- normalize_url ------------------------------------------------------------------------


def test_normalize_url_typical_values() -> None:
    values = ["Acme.com", "https://WWW.Acme.com/", "http://shop.acme.com.au:80/a/b/?x=1#top",
              "https://acme.com:8443/", "//acme.co.uk/x/", "bücher.de/Über", "https://user:pw@acme.com"]
    table = run("normalize_url", {"column": "w"}, w=values)
    assert added(table, "w_url", "w_host", "w_domain", "w_valid") == [
        ("https://acme.com", "acme.com", "acme.com", True),
        ("https://www.acme.com", "acme.com", "acme.com", True),
        ("http://shop.acme.com.au/a/b/?x=1", "shop.acme.com.au", "acme.com.au", True),
        ("https://acme.com:8443", "acme.com", "acme.com", True),
        ("https://acme.co.uk/x/", "acme.co.uk", "acme.co.uk", True),
        ("https://bücher.de/Über", "bücher.de", "bücher.de", True),
        ("https://acme.com", "acme.com", "acme.com", True),  # credentials never travel on
    ]
    assert table["w"].to_pylist() == values  # the input is untouched


def test_normalize_url_ip_hosts_are_valid_without_a_domain() -> None:
    table = run("normalize_url", {"column": "w"}, w=["http://127.0.0.1:8080/x", "http://[::1]/"])
    assert added(table, "w_url", "w_host", "w_domain", "w_valid") == [
        ("http://127.0.0.1:8080/x", "127.0.0.1", None, True),
        ("http://[::1]", "::1", None, True),
    ]


def test_normalize_url_garbage_is_invalid_and_blank_is_null() -> None:
    garbage = ["not a url", "http://", "localhost", "12", "ftp://acme.com", "x@acme.com", "acme.com:99999",
               "http://-bad-.com", "http://[::1"]
    table = run("normalize_url", {"column": "w", "prefix": "site"}, w=[*garbage, None, "", "   "])
    assert added(table, "site_url", "site_host", "site_domain", "site_valid") == (
        [(None, None, None, False)] * len(garbage) + [(None, None, None, None)] * 3
    )
    assert table.schema.names == ["w", "site_url", "site_host", "site_domain", "site_valid"]
    assert [table.schema.field(c).type for c in table.schema.names[1:]] == [pa.string()] * 3 + [pa.bool_()]


def test_normalize_url_never_fetches_the_suffix_list(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipelines.augmenters import normalize_url

    def no_network(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("network access")

    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    normalize_url._extract.cache_clear()
    table = run("normalize_url", {"column": "w"}, w=["https://shop.example.co.uk"])
    assert table["w_domain"].to_pylist() == ["example.co.uk"]


# --- normalize_email ----------------------------------------------------------------------


def test_normalize_email() -> None:
    values = ["John.Doe@Example.COM", "  josé@EXÄMPLE.de ", "用户@例子.广告", "not an email", "a@b", "a@localhost",
              "Jo <jo@acme.com>", None, "", " "]
    table = run("normalize_email", {"column": "e", "prefix": "mail"}, e=values)
    assert added(table, "mail_normalized", "mail_domain", "mail_valid") == [
        ("john.doe@example.com", "example.com", True),
        ("josé@exämple.de", "exämple.de", True),
        ("用户@例子.广告", "例子.广告", True),
        *[(None, None, False)] * 4,
        *[(None, None, None)] * 3,
    ]
    assert [table.schema.field(c).type for c in ("mail_normalized", "mail_domain", "mail_valid")] == [
        pa.string(), pa.string(), pa.bool_()]


def test_each_distinct_value_is_parsed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipelines.augmenters.normalize_email import NormalizeEmail

    seen: list[str] = []
    original = NormalizeEmail.parse

    def counting(self: NormalizeEmail, value: str) -> Any:
        seen.append(value)
        return original(self, value)

    monkeypatch.setattr(NormalizeEmail, "parse", counting)
    table = run("normalize_email", {"column": "e"}, e=["a@acme.com", " a@acme.com", "a@acme.com", None, "b@acme.com"])
    assert sorted(seen) == ["a@acme.com", "b@acme.com"]
    assert table["e_valid"].to_pylist() == [True, True, True, None, True]


# --- normalize_phone ----------------------------------------------------------------------


def test_normalize_phone_with_a_default_region() -> None:
    values = ["0033 1 42 68 53 00", "01 42 68 53 00", "+1 650-253-0000", "+44 20 7946 0958", "12", "abc", None, " "]
    table = run("normalize_phone", {"column": "p", "default_region": "fr"}, p=values)
    assert added(table, "p_e164", "p_valid", "p_region") == [
        ("+33142685300", True, "FR"),
        ("+33142685300", True, "FR"),
        ("+16502530000", True, "US"),
        ("+442079460958", True, "GB"),
        (None, False, None),
        (None, False, None),
        (None, None, None),
        (None, None, None),
    ]
    assert [table.schema.field(c).type for c in ("p_e164", "p_valid", "p_region")] == [
        pa.string(), pa.bool_(), pa.string()]


def test_normalize_phone_region_per_record() -> None:
    step = make("normalize_phone", column="p", region_column="cc", default_region="GB")
    assert step.reads() == [("column", "p"), ("region_column", "cc")]
    table = step.apply(pa.table({
        "p": ["01 42 68 53 00", "(650) 253-0000", "020 7946 0958", "020 7946 0958", "０３−１２３４−５６７８"],
        "cc": ["FR", "us", None, "XX", "JP"],  # null or unknown: the default region
    }))
    assert added(table, "p_e164", "p_region") == [
        ("+33142685300", "FR"), ("+16502530000", "US"), ("+442079460958", "GB"), ("+442079460958", "GB"),
        ("+81312345678", "JP"),
    ]
    assert table.column_names == ["p", "cc", "p_e164", "p_valid", "p_region"]


def test_normalize_phone_without_any_region() -> None:
    table = run("normalize_phone", {"column": "p"}, p=["0033 1 42 68 53 00", "01 42 68 53 00", "+33 1 42 68 53 00"])
    assert added(table, "p_e164", "p_valid") == [("+33142685300", True), (None, False), ("+33142685300", True)]


# --- normalize_country --------------------------------------------------------------------


@pytest.mark.parametrize(("value", "code", "name"), [
    ("DE", "DE", "Germany"), ("deu", "DE", "Germany"), (" germany ", "DE", "Germany"),
    ("Deutschland", "DE", "Germany"), ("U.S.A.", "US", "United States"), ("united states", "US", "United States"),
    ("United States of America", "US", "United States"), ("UK", "GB", "United Kingdom"),
    ("Great Britain", "GB", "United Kingdom"), ("England", "GB", "United Kingdom"), ("Holland", "NL", "Netherlands"),
    ("the Netherlands", "NL", "Netherlands"), ("South Korea", "KR", "South Korea"),
    ("Korea, Republic of", "KR", "South Korea"), ("Russia", "RU", "Russian Federation"),
    ("Côte d’Ivoire", "CI", "Côte d'Ivoire"), ("cote d'ivoire", "CI", "Côte d'Ivoire"), ("Turkey", "TR", "Türkiye"),
    ("Viet Nam", "VN", "Vietnam"), ("NA", "NA", "Namibia"),
])
def test_normalize_country_recognises(value: str, code: str, name: str) -> None:
    table = run("normalize_country", {"column": "c"}, c=[value])
    assert added(table, "c_code", "c_name", "c_valid") == [(code, name, True)]


def test_normalize_country_unknown_and_blank() -> None:
    values = ["Atlantis", "123", "日本", "Korea", None, "", "  "]  # "Korea" is ambiguous: unknown beats wrong
    table = run("normalize_country", {"column": "c", "prefix": "hq"}, c=values)
    assert added(table, "hq_code", "hq_name", "hq_valid") == [(None, None, False)] * 4 + [(None, None, None)] * 3
    assert [table.schema.field(c).type for c in ("hq_code", "hq_name", "hq_valid")] == [
        pa.string(), pa.string(), pa.bool_()]


# --- clean_company_name -------------------------------------------------------------------


def test_clean_company_name() -> None:
    values = ["Daddy & Sons, Ltd.", "ACME WIDGETS LTD", "IBM CORP", "acme widgets inc", "  Foo   Bar  GmbH & Co. KG ",
              "BANK OF AMERICA CORP", "Midori Textiles Co., Ltd.", "AT&T INC.", "SOCIÉTÉ GÉNÉRALE S.A.", "Acme.",
              "McDonald's Corporation", "トヨタ自動車株式会社", "Ромашка ООО", "ΑΘΗΝΑ ΑΕ", "GmbH", "-", None, "", "  "]
    table = run("clean_company_name", {"column": "n"}, n=values)
    assert added(table, "n_clean", "n_legal_suffix") == [
        ("Daddy & Sons", "Ltd."),
        ("Acme Widgets", "LTD"),
        ("IBM", "CORP"),
        ("Acme Widgets", "inc"),
        ("Foo Bar", "GmbH & Co. KG"),
        ("Bank of America", "CORP"),
        ("Midori Textiles", "Co., Ltd."),
        ("AT&T", "INC."),
        ("Société Générale", "S.A."),
        ("Acme", None),
        ("McDonald's", "Corporation"),
        ("トヨタ自動車株式会社", None),  # other scripts are left as written
        ("Ромашка", "ООО"),
        ("ΑΘΗΝΑ ΑΕ", None),
        ("GmbH", None),  # nothing but a legal form: kept whole
        (None, None),
        (None, None),
        (None, None),
        (None, None),
    ]
    assert table.schema.field("n_clean").type == pa.string()
    assert table.schema.field("n_legal_suffix").type == pa.string()


# --- text_stats ---------------------------------------------------------------------------


def test_text_stats() -> None:
    values = ["Hello world. How are you?", "  Pi is 3.14, roughly!  ", "Don't stop — state-of-the-art.",
              "東京は日本の首都です。とても大きい！", "Ünïcödé wörds here", None, "", "   ", "..."]
    table = run("text_stats", {"column": "t", "prefix": "text"}, t=values)
    assert added(table, "text_chars", "text_words", "text_sentences") == [
        (25, 5, 2), (20, 4, 1), (30, 3, 1), (18, 2, 2), (18, 3, 1), (None, None, None), (0, 0, 0), (0, 0, 0),
        (3, 0, 0),
    ]
    assert [table.schema.field(c).type for c in ("text_chars", "text_words", "text_sentences")] == [pa.int64()] * 3


def test_text_stats_on_a_large_string_column() -> None:
    table = run("text_stats", {"column": "t"}, t=pa.array(["one two", None], pa.large_string()))
    assert added(table, "t_chars", "t_words") == [(7, 2), (None, None)]


# --- lookup -------------------------------------------------------------------------------


@pytest.fixture
def reference(tmp_path: Path) -> Path:
    path = tmp_path / "countries.csv"
    # "NA" is Namibia, not a null; " 007 " keeps its zeros; a blank key is never matched.
    rows = ["code,name,region", "NA,Namibia,Africa", "FR,France,Europe", " 007 ,Bond,", "de,Germany,Europe",
            ",Nobody,X"]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_lookup_brings_columns_and_misses_are_null(reference: Path) -> None:
    params = {"reference": str(reference), "column": "cc", "reference_key": "code", "columns": ["name", "region"],
              "prefix": "ref_"}
    table = run("lookup", params, cc=["FR", " FR ", "fr", "NA", "007", "XX", None, "", "de"])
    assert added(table, "ref_name", "ref_region") == [
        ("France", "Europe"), ("France", "Europe"), (None, None), ("Namibia", "Africa"), ("Bond", None),
        (None, None), (None, None), (None, None), ("Germany", "Europe"),
    ]
    assert table.schema.field("ref_name").type == pa.string()


def test_lookup_case_insensitive_and_non_string_keys(tmp_path: Path) -> None:
    path = tmp_path / "sizes.parquet"
    pq.write_table(pa.table({"employees": [10, 200], "band": ["small", "large"], "score": [1.5, None]}), path)
    params = {"reference": str(path), "column": "employees", "columns": ["band", "score"], "case_insensitive": True}
    table = run("lookup", params, employees=pa.array([10, 200, 7, None], pa.int64()))
    assert added(table, "band", "score") == [("small", "1.5"), ("large", None), (None, None), (None, None)]
    assert table.schema.field("score").type == pa.string()


def test_lookup_loads_on_first_batch_without_setup(reference: Path) -> None:
    params = {"reference": str(reference), "column": "code", "columns": ["name"]}
    step = build_step(StepSpec(use="lookup", params=params), "s")
    assert step.apply(pa.table({"code": ["de", "DE"]}))["name"].to_pylist() == ["Germany", None]


@pytest.mark.parametrize(("content", "params", "error"), [
    (None, {}, "file not found"),
    ("code,name\nFR,France\nFR,Frankreich\n", {}, "key 'code' is not unique, e.g. ['FR']"),
    ("code,name\nfr,France\nFR,Frankreich\n", {"case_insensitive": True}, "key 'code' is not unique, e.g. ['fr']"),
    ("code,name\nFR,France\n", {"columns": ["name", "capital"]}, "no column(s) ['capital']"),
    ("iso,name\nFR,France\n", {}, "no column(s) ['code']"),
])
def test_lookup_reference_problems_are_clear_errors(
    tmp_path: Path, content: str | None, params: dict[str, Any], error: str
) -> None:
    path = tmp_path / "ref.csv"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    params = {"reference": str(path), "column": "code", "columns": ["name"], **params}
    step = build_step(StepSpec(use="lookup", params=params), "s")
    with pytest.raises(ReferenceTableError) as caught:
        step.setup()
    assert str(caught.value).startswith(f"reference {path}: {error}")


def test_lookup_rejects_an_unknown_format(tmp_path: Path) -> None:
    params = {"reference": str(tmp_path / "x.xlsx"), "column": "c", "columns": ["n"]}
    step = build_step(StepSpec(use="lookup", params=params), "s")
    with pytest.raises(ReferenceTableError, match="unsupported format"):
        step.setup()


def test_lookup_params_are_checked() -> None:
    with pytest.raises(ValidationError, match="columns lists a column more than once"):
        build_step(StepSpec(use="lookup", params={"reference": "r.csv", "column": "c", "columns": ["n", "n"]}), "s")
