"""clean_company_name on real-world names: a cleaner never makes a value wrong. A legal form goes
only as whole words at the end; brackets stay balanced; punctuation that is part of the name stays;
a bare `Co` (a county) and a name that is only a legal form are kept; other scripts are untouched."""

from __future__ import annotations

import pytest

from pipelines.augmenters.clean_company_name import CleanCompanyName
from pipelines.augmenters.single_column import ColumnParams

NAMES = [  # (input, clean, legal suffix removed)
    # companies with legal forms, in many countries
    ("Daddy & Sons, Ltd.", "Daddy & Sons", "Ltd."),
    ("Toyota Motor Corporation", "Toyota Motor", "Corporation"),
    ("Samsung Electronics Co., Ltd.", "Samsung Electronics", "Co., Ltd."),
    ("Alibaba Group Holding Limited", "Alibaba Group Holding", "Limited"),
    ("Tata Consultancy Services Ltd.", "Tata Consultancy Services", "Ltd."),
    ("Banco Santander, S.A.", "Banco Santander", "S.A."),
    ("Telefónica, S.A.", "Telefónica", "S.A."),
    ("Nestlé S.A.", "Nestlé", "S.A."),
    ("L'Oréal SA", "L'Oréal", "SA"),
    ("H&M Hennes & Mauritz AB", "H&M Hennes & Mauritz", "AB"),
    ("Maersk A/S", "Maersk", "A/S"),
    ("Equinor ASA", "Equinor", "ASA"),
    ("Nokia Oyj", "Nokia", "Oyj"),
    ("Deutsche Bahn AG", "Deutsche Bahn", "AG"),
    ("Foo Bar GmbH & Co. KG", "Foo Bar", "GmbH & Co. KG"),
    ("ASML Holding N.V.", "ASML Holding", "N.V."),
    ("Eni S.p.A.", "Eni", "S.p.A."),
    ("Marks and Spencer Group plc", "Marks and Spencer Group", "plc"),
    ("Rolls-Royce Holdings plc", "Rolls-Royce Holdings", "plc"),
    ("Grupo Bimbo, S.A.B. de C.V.", "Grupo Bimbo", "S.A.B. de C.V."),
    ("Airbus SE", "Airbus", "SE"),
    ("E.ON SE", "E.ON", "SE"),
    ("J. Crew Group, Inc.", "J. Crew Group", "Inc."),
    ("7-Eleven, Inc.", "7-Eleven", "Inc."),
    ("Yum! Brands, Inc.", "Yum! Brands", "Inc."),
    ("eBay Inc.", "eBay", "Inc."),
    ("U.S.A. Tools Inc.", "U.S.A. Tools", "Inc."),
    ("3M Company", "3M", "Company"),
    ("Procter & Gamble Co.", "Procter & Gamble", "Co."),
    ("Sears, Roebuck and Co.", "Sears, Roebuck", "and Co."),
    ("Chevron Phillips Chemical Company LLC", "Chevron Phillips Chemical", "Company LLC"),
    ("acme pty ltd", "Acme", "pty ltd"),
    ("ACME WIDGETS LTD", "Acme Widgets", "LTD"),
    ("BANK OF AMERICA CORP", "Bank of America", "CORP"),
    ("AT&T INC.", "AT&T", "INC."),
    ("Ромашка ООО", "Ромашка", "ООО"),
    # brackets stay balanced; a legal form inside them or before them is not at the end
    ("Minto (New)", "Minto (New)", None),
    ("Bank of China (Hong Kong) Ltd", "Bank of China (Hong Kong)", "Ltd"),
    ("ACME (EUROPE) LTD", "Acme (Europe)", "LTD"),
    ("ABC Holdings Ltd (UK)", "ABC Holdings Ltd (UK)", None),
    ("Acme (Pty) Ltd", "Acme (Pty)", "Ltd"),
    # punctuation that is part of the name
    ("Yahoo!", "Yahoo!", None),
    ("Toys \"R\" Us", "Toys \"R\" Us", None),
    ("Acme Sr.", "Acme Sr.", None),
    ("St. Jude Medical", "St. Jude Medical", None),
    ("U.S. Steel", "U.S. Steel", None),
    ("Dr. Oetker", "Dr. Oetker", None),
    ("Acme.", "Acme", None),  # a stray final dot
    # places, agencies and airports: no legal form to remove
    ("Orange Co", "Orange Co", None),  # a county
    ("Los Angeles Co", "Los Angeles Co", None),
    ("Heathrow Airport Limited", "Heathrow Airport", "Limited"),
    ("London Stansted Airport", "London Stansted Airport", None),
    ("Federal Aviation Administration", "Federal Aviation Administration", None),
    ("Port Authority of New York and New Jersey", "Port Authority of New York and New Jersey", None),
    ("Agence France-Presse", "Agence France-Presse", None),
    ("Air New Zealand", "Air New Zealand", None),
    ("Emirates", "Emirates", None),
    # words of a name that look like short legal forms
    ("AB InBev", "AB InBev", None),
    ("Jolie Ab", "Jolie Ab", None),
    ("Villa Sa", "Villa Sa", None),
    # nothing but a legal form, or an article and one: kept whole
    ("GmbH", "GmbH", None),
    ("Inc.", "Inc.", None),
    ("The Company", "The Company", None),
    # other scripts are left as written
    ("トヨタ自動車株式会社", "トヨタ自動車株式会社", None),
    ("株式会社ソニー", "株式会社ソニー", None),
    ("ΑΘΗΝΑ ΑΕ", "ΑΘΗΝΑ ΑΕ", None),
    ("ООО «Ромашка»", "ООО «Ромашка»", None),
]


@pytest.mark.parametrize(("name", "clean", "suffix"), NAMES, ids=[n for n, _, _ in NAMES])
def test_real_world_names(name: str, clean: str, suffix: str | None) -> None:
    step = CleanCompanyName(ColumnParams(column="n"), "clean")
    assert step.parse(name) == {"clean": clean, "legal_suffix": suffix}


def test_the_table_covers_at_least_fifty_names() -> None:
    assert len(NAMES) >= 50


@pytest.mark.parametrize(("name", "clean", "suffix"), NAMES, ids=[n for n, _, _ in NAMES])
def test_brackets_stay_balanced(name: str, clean: str, suffix: str | None) -> None:
    for opening, closing in ("()", "[]", "{}", "«»"):
        assert clean.count(opening) == clean.count(closing) or name.count(opening) != name.count(closing)
