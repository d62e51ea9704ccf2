"""Deterministic generator of realistic, deliberately messy organisation records.

Stdlib only. ``organisations(n, seed)`` always returns the same rows for the same
arguments. About ``dirty_fraction`` of the rows carry exactly one defect each
(see ``DEFECTS``), spread evenly through the output and assigned round-robin.

    python bench/synth.py --rows 300 --out configs/data/organisations.csv
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import re
import sys
import unicodedata
from pathlib import Path

COLUMNS = ["org_id", "name", "website", "email", "phone", "country", "employees", "description"]

# Defect kinds, in round-robin order. The first three and the last two fail
# validation; garbage website/country/phone pass it and are left for augmenters.
DEFECTS = ["missing_name", "bad_email", "bad_employees", "garbage_website",
           "garbage_country", "garbage_phone", "duplicate_org_id", "long_name"]

EN_LEADS = ["Acme", "Summit", "Northwind", "Bluewater", "Redwood", "Granite", "Pioneer", "Silverline",
            "Evergreen", "Harbor", "Keystone", "Lighthouse", "Ironbridge", "Meridian", "Orchard",
            "Copperfield", "Falcon", "Beacon", "Crescent", "Riverstone", "Oakridge", "Brightwater"]
EN_IND = {"Analytics": "data analytics", "Logistics": "freight and warehousing", "Foods": "packaged foods",
          "Software": "business software", "Robotics": "industrial automation", "Health": "outpatient care",
          "Energy": "renewable power", "Capital": "investment management", "Labs": "contract research",
          "Media": "digital publishing", "Biotech": "drug discovery", "Design": "product design",
          "Engineering": "structural engineering", "Consulting": "management consulting",
          "Freight": "road haulage", "Textiles": "technical fabrics"}
LONG_WORDS = ["International", "Consolidated", "Holdings", "Group", "Advanced", "Integrated", "Global",
              "Strategic", "Industrial", "Technologies", "Solutions", "Services", "Partners", "Worldwide",
              "Enterprises", "Systems", "Resources", "Management", "Development", "Research"]


def _c(names, tld, suffixes, cities, phones, leads=(), ind=None, areas=(), weight=3, mail=()):
    """Bundle one country's vocabulary (local leads/industries fall back to English)."""
    return {"names": names, "tld": tld, "suffixes": suffixes, "cities": cities, "phones": phones,
            "leads": list(leads) or EN_LEADS, "ind": ind or EN_IND, "areas": list(areas),
            "weight": weight, "mail": ["info", "sales", "contact", *mail]}


# Phone templates: "N" = digit 2-9, "#" = any digit, "{a}" = an area code from `areas`.
COUNTRIES = {
    "US": _c(["United States", "USA", "US", "U.S.A.", "United States of America"], ".com",
             ["Inc.", "inc", "Inc", "LLC", "Corp.", "Corporation", "Co."],
             ["San Francisco", "New York", "Chicago", "Boston", "Seattle", "Austin", "Denver", "Atlanta"],
             ["+1 ({a}) N##-####", "({a}) N##-####", "{a}-N##-####", "+1 {a} N## ####", "1-{a}-N##-####",
              "{a}.N##.####"], areas=["415", "212", "312", "617", "206", "512", "303", "404", "646"],
             weight=30, mail=("hello", "support")),
    "CA": _c(["Canada", "CA"], ".ca", ["Inc.", "Ltd.", "Corp."],
             ["Toronto", "Vancouver", "Montreal", "Ottawa", "Calgary"],
             ["+1 ({a}) N##-####", "({a}) N##-####", "{a}-N##-####", "+1 {a} N## ####"],
             areas=["416", "604", "514", "613", "403"], weight=5),
    "GB": _c(["United Kingdom", "UK", "GB"], ".co.uk", ["Ltd", "Limited", "Ltd.", "PLC", "LLP"],
             ["London", "Manchester", "Birmingham", "Leeds", "Bristol"],
             ["020 7### ####", "+44 20 7### ####", "+44 (0)20 3### ####", "020 8### ####", "0161 2## ####",
              "+44 161 8## ####", "0121 4## ####", "0113 2## ####"], weight=12, mail=("enquiries", "office")),
    "AU": _c(["Australia", "AU"], ".com.au", ["Pty Ltd", "Pty. Ltd.", "PTY LTD", "Limited"],
             ["Sydney", "Melbourne", "Brisbane", "Perth"],
             ["(02) 9### ####", "+61 2 9### ####", "02 8### ####", "(03) 9### ####", "+61 3 9### ####",
              "(07) 3### ####", "+61 8 92## ####"], weight=5),
    "DE": _c(["Germany", "DE", "Deutschland", " germany ", "germany"], ".de", ["GmbH", "AG", "GmbH & Co. KG"],
             ["Berlin", "Munich", "Hamburg", "Frankfurt", "Cologne"],
             ["+49 30 N######", "030 N#######", "+49 (0)89 N######", "089 N######", "040 N#######",
              "+49 40 N######", "+49 69 N#######", "0221 N######"],
             ["Müller", "Schäfer", "Weiß", "Becker", "Krüger", "Hoffmann", "Schröder", "Bäcker"],
             {"Maschinenbau": "industrial machinery", "Logistik": "freight and warehousing",
              "Feinkost": "delicatessen foods", "Elektrotechnik": "electrical equipment",
              "Software": "business software", "Werkzeugbau": "precision tooling"}, weight=10,
             mail=("kontakt", "vertrieb")),
    "FR": _c(["France", "FR", "france"], ".fr", ["SAS", "S.A.", "SARL", "SA"],
             ["Paris", "Lyon", "Marseille", "Toulouse", "Bordeaux"],
             ["+33 1 N# ## ## ##", "01 N# ## ## ##", "0033 1 N# ## ## ##", "04 N# ## ## ##",
              "+33 4 N# ## ## ##", "05.6#.##.##.##"],
             ["Lefèvre", "Dubois", "Beaumont", "Moreau", "Girard", "Bélanger"],
             {"Conseil": "management consulting", "Logistique": "freight and warehousing",
              "Vins": "wine production", "Informatique": "IT services",
              "Aéronautique": "aerospace components"},
             weight=7, mail=("bonjour",)),
    "NL": _c(["Netherlands", "NL", "the Netherlands"], ".nl", ["B.V.", "BV", "N.V."],
             ["Amsterdam", "Rotterdam", "Utrecht", "Eindhoven"],
             ["+31 20 N## ####", "020 N## ####", "020-N######", "+31 10 N## ####", "010 N## ####",
              "+31 30 N## ####"],
             ["Van der Berg", "De Vries", "Janssen", "Bakker", "Visser", "Dijkstra"],
             {"Logistiek": "freight and warehousing", "Techniek": "technical installations",
              "Bouw": "construction", "Handel": "wholesale trade", "Software": "business software"},
             weight=4),
    "IT": _c(["Italy", "IT"], ".it", ["S.p.A.", "S.r.l.", "SpA"], ["Milan", "Rome", "Turin", "Bologna"],
             ["+39 06 4#######", "06 5### ####", "02 N### ####", "+39 02 N#######", "0039 06 3#######",
              "011 N######"],
             ["Rossi", "Bianchi", "Ferrari", "Esposito", "Romano", "Ricci", "Colombo"],
             {"Meccanica": "precision mechanics", "Alimentari": "packaged foods", "Tessile": "textiles",
              "Costruzioni": "construction", "Moda": "fashion", "Informatica": "IT services"}, weight=4),
    "ES": _c(["Spain", "ES"], ".es", ["S.L.", "S.A.", "SL"], ["Madrid", "Barcelona", "Valencia", "Seville"],
             ["+34 91 ### ## ##", "91 ### ## ##", "0034 93 ### ## ##", "+34 93 ### ####", "93 ### ## ##",
              "+34 954 ## ## ##"],
             ["García", "Núñez", "Fernández", "López", "Martínez", "Ibáñez"],
             {"Construcciones": "construction", "Alimentación": "packaged foods", "Logística": "freight",
              "Energía": "renewable power", "Consultores": "management consulting"}, weight=4),
    "FI": _c(["Finland", "FI"], ".fi", ["Oy", "Oyj", "Oy Ab"], ["Helsinki", "Espoo", "Tampere", "Turku"],
             ["+358 9 2## ####", "09 6## ####", "(09) 4######", "+358 9 8## ####", "+358 2 N## ####"],
             ["Mäkinen", "Järvi", "Virtanen", "Kallio", "Nieminen", "Häkkinen"],
             {"Teknologia": "engineering software", "Design": "product design", "Logistiikka": "freight",
              "Puu": "timber products", "Energia": "renewable power"}, weight=2),
    "SE": _c(["Sweden", "SE"], ".se", ["AB", "Aktiebolag"], ["Stockholm", "Gothenburg", "Malmö", "Uppsala"],
             ["08-N## ### ##", "+46 8 N## ### ##", "031-N## ## ##", "+46 31 N## ## ##"],
             ["Åkesson", "Björk", "Lindqvist", "Ström", "Sjöberg", "Nyström"],
             {"Design": "product design", "Bygg": "construction", "Teknik": "technical services",
              "Logistik": "freight and warehousing", "Fastigheter": "commercial property"}, weight=3),
    "JP": _c(["Japan", "JP"], ".co.jp", ["KK", "K.K.", "Co., Ltd."], ["Tokyo", "Osaka", "Nagoya", "Yokohama"],
             ["03-N###-####", "+81 3-N###-####", "+81 3 N### ####", "06-N###-####", "+81 6 N### ####",
              "(03) N###-####"],
             ["Sakura", "Fuji", "Hoshi", "Midori", "Yamato", "Kawasemi"], weight=4),
    "BR": _c(["Brazil", "BR"], ".com.br", ["Ltda.", "S.A.", "LTDA"],
             ["São Paulo", "Rio de Janeiro", "Belo Horizonte", "Curitiba"],
             ["(11) 3###-####", "+55 11 3###-####", "+55 (11) 2###-####", "(21) 2###-####",
              "+55 21 3###-####"],
             ["Conceição", "Oliveira", "Araújo", "Souza", "Pereira", "Guimarães"],
             {"Alimentos": "packaged foods", "Logística": "freight and warehousing",
              "Tecnologia": "IT services", "Construções": "construction", "Agro": "agribusiness"},
             weight=4, mail=("contato",)),
    "IN": _c(["India", "IN"], ".in", ["Pvt Ltd", "Private Limited", "Ltd"],
             ["Mumbai", "Delhi", "Bengaluru", "Pune", "Chennai"],
             ["+91 22 2### ####", "022 2### ####", "+91 11 4### ####", "011-2###-####", "+91 80 4### ####",
              "080 2### ####", "+91 98### #####"],
             ["Sharma", "Patel", "Reddy", "Iyer", "Kapoor", "Mehta"],
             {"Infotech": "IT services", "Textiles": "technical fabrics", "Pharma": "generic medicines",
              "Logistics": "freight and warehousing", "Exports": "export trading"}, weight=5),
}
JP_KANJI = [("東京テック", "tokyotech"), ("大阪精機", "osakaseiki"), ("名古屋物流", "nagoya-butsuryu"),
            ("京都電子", "kyoto-denshi"), ("横浜フーズ", "yokohamafoods"), ("さくらソフト", "sakurasoft")]
FR_SPECIAL = [("Société Générale d'Études", "sge-etudes"), ("Compagnie Française d'Équipements", "cfe")]
ADJS = ["leading", "family-owned", "fast-growing", "independent", "specialist", "mid-sized", "venture-backed"]
CUSTOMERS = ["retailers", "hospitals", "manufacturers", "public-sector clients", "small businesses",
             "utilities"]
GARBAGE = {"garbage_website": ["not a url", "http://", "www.", "htp:/broken", "see brochure"],
           "garbage_country": ["Atlantis", "Narnia", "Wakanda", "Middle Earth", "Planet Mars"],
           "garbage_phone": ["call us", "12", "ask for Bob", "000", "phone on request"],
           "bad_employees": ["lots", "-5", "unknown", "-120", "many"]}


def _slug(text: str) -> str:
    """ASCII-fold and strip ``text`` into a domain label."""
    ascii_ = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "", ascii_.lower())


def _phone(rng: random.Random, spec: dict, international: bool = False) -> str:
    """Fill a random phone template for the country (only "+" forms if ``international``)."""
    templates = [t for t in spec["phones"] if t.startswith("+") or not international]
    out = rng.choice(templates).replace("{a}", rng.choice(spec["areas"] or [""]))
    return "".join(str(rng.randint(2, 9)) if ch == "N" else str(rng.randint(0, 9)) if ch == "#" else ch
                   for ch in out)


def _row(rng: random.Random, idx: int) -> tuple[dict[str, str], dict, str, str]:
    """One clean organisation, plus its country spec, short name (no suffix) and legal suffix."""
    code = rng.choices(list(COUNTRIES), weights=[c["weight"] for c in COUNTRIES.values()])[0]
    spec = COUNTRIES[code]
    suffix = rng.choice(spec["suffixes"])
    if code == "JP" and rng.random() < 0.35:
        short, slug = rng.choice(JP_KANJI)
        name, suffix, service = f"{short}株式会社", "株式会社", rng.choice(list(EN_IND.values()))
    elif code == "FR" and rng.random() < 0.3:
        short, slug = rng.choice(FR_SPECIAL)
        name, service = f"{short} {suffix}", "engineering studies"
    else:
        ind_pool = spec["ind"] if rng.random() < 0.8 else EN_IND
        industry = rng.choice(list(ind_pool))
        short, service = f"{rng.choice(spec['leads'])} {industry}", ind_pool[industry]
        slug = _slug(short) if rng.random() < 0.7 else "-".join(_slug(w) for w in short.split())
        name = f"{short} {suffix}"
    domain = slug + (".com" if rng.random() < 0.15 else spec["tld"])
    roll = rng.random()
    if roll < 0.07:
        name = name.upper()
    elif roll < 0.15:
        name = rng.choice([f"  {name}", f"{name}  ", name.replace(" ", "  ", 1), f" {name} "])
    website = rng.choice([f"https://www.{domain}", domain, f"www.{domain}", f"http://{domain}/",
                          f"https://{domain}", f"http://shop.{domain}/path?x=1", f"WWW.{domain.upper()}",
                          f"https://www.{domain}/", f"https://www.{domain}/en/about-us"])
    local = rng.choice(spec["mail"])
    email = f"{local}@{domain}"
    roll = rng.random()
    if roll < 0.15:
        email = f"{local.capitalize()}@{domain.capitalize()}" + rng.choice(["", " "])
    elif roll < 0.25:
        email = rng.choice([f"{email} ", f" {email}", email.upper()])
    employees = max(1, min(int(10 ** rng.uniform(0, 5.4)), 250_000))
    city = rng.choice(spec["cities"])
    adj = rng.choice(ADJS)
    article = "an" if adj[0] in "aeiou" else "a"
    customers = rng.choice(CUSTOMERS)
    sentences = [rng.choice([f"{short} is {article} {adj} provider of {service} based in {city}.",
                             f"Headquartered in {city}, {short} specialises in {service}.",
                             f"{short} delivers {service} to {customers} from its base in {city}."])]
    staff = f"The company employs around {employees:,} people." if employees >= 20 else "It is a small team."
    extra = [f"Founded in {rng.randint(1890, 2021)}, it serves {rng.choice(CUSTOMERS)} across the region.",
             staff, rng.choice(["It is privately held.", "Its shares are publicly traded.",
                                "It recently expanded into neighbouring markets."])]
    sentences += rng.sample(extra, rng.randint(0, 2))
    row = {"org_id": f"ORG-{idx + 1:05d}", "name": name, "website": website, "email": email,
           "phone": _phone(rng, spec), "country": rng.choice(spec["names"]),
           "employees": str(employees), "description": " ".join(sentences)}
    return row, spec, short, suffix


def generate(n: int, seed: int = 7, dirty_fraction: float = 0.12
             ) -> tuple[list[dict[str, str]], dict[int, str]]:
    """Rows plus a map of 0-based row index -> defect kind for the dirty rows."""
    rng = random.Random(seed)
    k = min(n, round(n * dirty_fraction))
    step = n / k if k else 0
    dirty = {min(n - 1, int((i + rng.random()) * step)): DEFECTS[i % len(DEFECTS)] for i in range(k)}
    rows: list[dict[str, str]] = []
    clean_ids: list[str] = []
    for idx in range(n):
        row, spec, short, suffix = _row(rng, idx)
        kind = dirty.get(idx)
        if kind == "duplicate_org_id" and not clean_ids:
            kind = dirty[idx] = "missing_name"
        if kind == "missing_name":
            row["name"] = ""
        elif kind == "bad_email":
            row["email"] = row["email"].strip().replace("@", rng.choice([".", " at ", ""]))
        elif kind == "duplicate_org_id":
            row["org_id"] = rng.choice(clean_ids)
        elif kind == "long_name":
            words, name = rng.sample(LONG_WORDS, len(LONG_WORDS)), short
            while len(name) <= 200:
                name = f"{name} {words.pop()}"
            row["name"] = f"{name} {suffix}"
        elif kind:
            row[kind.split("_")[1]] = rng.choice(GARBAGE[kind])
            if kind == "garbage_country":  # keep the phone parsable without a country
                row["phone"] = _phone(rng, spec, international=True)
        else:
            clean_ids.append(row["org_id"])
        rows.append(row)
    return rows, dirty


def organisations(n: int, seed: int = 7, dirty_fraction: float = 0.12) -> list[dict[str, str]]:
    """``n`` deterministic organisation records (all values strings, columns as ``COLUMNS``)."""
    return generate(n, seed, dirty_fraction)[0]


def write(rows: list[dict[str, str]], out: Path, fmt: str) -> None:
    """Write rows as CSV (header + string cells) or JSON Lines."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8", newline="") as fh:
        if fmt == "jsonl":
            fh.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        else:
            writer = csv.DictWriter(fh, fieldnames=COLUMNS, lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; prints the defect summary (1-based data row numbers)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--dirty-fraction", type=float, default=0.12)
    ap.add_argument("--format", choices=["csv", "jsonl"], default="csv")
    args = ap.parse_args(argv)
    rows, dirty = generate(args.rows, args.seed, args.dirty_fraction)
    write(rows, args.out, args.format)
    print(f"wrote {len(rows)} rows to {args.out} ({len(dirty)} with defects)")
    for kind in DEFECTS:
        nums = [i + 1 for i, d in sorted(dirty.items()) if d == kind]
        print(f"  {kind:<17} {len(nums):>3}  rows {nums}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
