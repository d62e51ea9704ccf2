"""normalize_phone: a phone number in E.164 form, with the region it belongs to.

Most numbers are written with digits, spaces and `+ ( ) - . /` only. For those, phonenumbers'
`parse` reads nothing but the digits and whether a `+` comes before them (its text stages only
find the number, drop the punctuation and look for extensions, which need other characters), so
`_canonical` reduces the value to that and `_parse_digits` runs the rest of `parse` on it, step by
step with phonenumbers' own helpers (its national-prefix stripping with each region's patterns
compiled once, its length verdict asked once per region and length). `_judge` answers `is_valid_number` and
`region_code_for_number` with each region's number-type patterns joined into one pattern per
number length. Any other value, and the rare turns `_parse_digits` does not take, go through
phonenumbers as before (`_parse_library`); tests/unit/augmenters/test_fast_paths.py checks both
paths against the plain library calls.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

import pandas as pd
import phonenumbers
import pyarrow as pa
from phonenumbers import COUNTRY_CODE_TO_REGION_CODE, REGION_CODE_FOR_NON_GEO_ENTITY, PhoneMetadata
from phonenumbers import phonenumberutil as _util
from pydantic import Field, field_validator

from pipelines.augmenters.base import Augmenter, blank_to_none, map_distinct, string_values, values_of
from pipelines.augmenters.registry import register
from pipelines.augmenters.single_column import ColumnParams
from pipelines.spec.base import IDENTIFIER

_OUTPUTS = {"e164": pa.string(), "valid": pa.bool_(), "region": pa.string()}  # in _parse's order
Parsed = tuple[str | None, bool | None, str | None]
_INVALID: Parsed = (None, False, None)
_NULL: Parsed = (None, None, None)


def _region(value: str | None) -> str | None:
    """An ISO alpha-2 code phonenumbers knows, upper-cased, or None."""
    code = (value or "").strip().upper()
    return code if code in phonenumbers.SUPPORTED_REGIONS else None


class NormalizePhoneParams(ColumnParams):
    default_region: str | None = Field(
        default=None,
        description="ISO 3166-1 alpha-2 region for numbers written without a country code, e.g. FR.",
    )
    region_column: str | None = Field(
        default=None,
        pattern=IDENTIFIER,
        description="Column with a per-record ISO alpha-2 region; default_region where it is null or unknown.",
    )

    @field_validator("default_region")
    @classmethod
    def _supported(cls, value: str | None) -> str | None:
        if value is not None and _region(value) is None:
            raise ValueError(f"{value!r} is not an ISO alpha-2 region that phonenumbers supports")
        return _region(value)


@register("normalize_phone")
class NormalizePhone(Augmenter):
    """Parses phone numbers with phonenumbers, in the record's region (from `region_column`, else
    `default_region`). Without any region, a leading "00" is read as the international prefix.

    Reads: `column` (string), `region_column` (string, optional).
    Adds: `{prefix}_e164`, `{prefix}_valid` (bool), `{prefix}_region` (the number's region).
    """

    Params = NormalizePhoneParams
    params: NormalizePhoneParams

    def reads(self) -> list[tuple[str, str]]:
        region = [("region_column", self.params.region_column)] if self.params.region_column else []
        return [("column", self.params.column), *region]

    def adds(self) -> dict[str, pa.DataType]:
        return {self.params.output(suffix): arrow_type for suffix, arrow_type in _OUTPUTS.items()}

    def process_batch(self, batch: pd.DataFrame) -> dict[str, Sequence[Any]]:
        region = self.params.region_column
        return self.outputs_of(values_of(batch[self.params.column]), values_of(batch[region]) if region else None)

    def process_arrow(self, batch: pa.Table) -> dict[str, Sequence[Any]] | None:
        numbers = string_values(batch.column(self.params.column))
        region = self.params.region_column
        regions = string_values(batch.column(region)) if region else None
        if numbers is None or (region and regions is None):
            return None
        return self.outputs_of(numbers, regions)

    def process_values(self, columns: Mapping[str, list[Any]],
                       types: Mapping[str, pa.DataType]) -> dict[str, Sequence[Any]] | None:
        region = self.params.region_column
        if not all(pa.types.is_string(types[c]) or pa.types.is_large_string(types[c])
                   for c in (self.params.column, region) if c):
            return None
        return self.outputs_of(columns[self.params.column], columns[region] if region else None)

    def outputs_of(self, column: list[Any], region_column: list[Any] | None) -> dict[str, Sequence[Any]]:
        """The added columns for the numbers' values and, given a region column, its values."""
        numbers = [blank_to_none(v) for v in column]
        if region_column is not None:
            meaning = {r: _region(r) or self.params.default_region for r in set(region_column)}
            regions = [meaning[r] for r in region_column]
        else:
            regions = [self.params.default_region] * len(numbers)
        keys = [None if n is None else (n, r) for n, r in zip(numbers, regions)]
        parsed = map_distinct(keys, lambda key: _parse(*key))
        rows = [row or _NULL for row in parsed]
        return {self.params.output(suffix): [row[i] for row in rows] for i, suffix in enumerate(_OUTPUTS)}


def _parse(value: str, region: str | None) -> Parsed:
    """(E.164, valid, region) of one number; a number that parses but cannot exist is invalid."""
    if region is None and value.startswith("00"):
        value = "+" + value[2:]  # "00" is the international prefix almost everywhere
    canonical = _canonical(value)
    if canonical is not None:
        parsed = _parse_digits(*canonical, region)
        if parsed is not None:
            return parsed
    return _parse_library(value, region)


def _parse_library(value: str, region: str | None) -> Parsed:
    """`_parse` by phonenumbers' own parse, for any value (after the "00" rule)."""
    try:
        number = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException:
        return _INVALID
    valid, number_region = _judge(number.country_code, phonenumbers.national_significant_number(number))
    if not valid:
        return _INVALID
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164), True, number_region


# --- the digits of a plainly written number ---------------------------------------------------------

# Digits, ASCII space and ( ) - . / in any order, and at most one "+" before every digit: text that
# phonenumbers' parse reads exactly as the digits alone, "+" first if there is one. The value is
# its own number (nothing before or after it to drop but that punctuation), a possible number (3
# digits or more, with that punctuation in between), without an extension (every extension form
# needs a letter, "#", "~", "," or ";"), and its normalisation keeps just the digits.
_PLAIN = re.compile(r"[ ().\-/]*(\+?)[0-9 ().\-/]*")
_PUNCTUATION = str.maketrans("", "", " ().-/+")
_MAX_INPUT = _util._MAX_INPUT_STRING_LENGTH
_MIN_NSN, _MAX_NSN = _util._MIN_LENGTH_FOR_NSN, _util._MAX_LENGTH_FOR_NSN
_NOT_STRIPPED = (_util.ValidationResult.TOO_SHORT, _util.ValidationResult.IS_POSSIBLE_LOCAL_ONLY,
                 _util.ValidationResult.INVALID_LENGTH)


def _canonical(value: str) -> tuple[bool, str] | None:
    """(a "+" first, the digits) of a plainly written number, or None for any other text."""
    match = _PLAIN.fullmatch(value)
    if match is None or len(value) > _MAX_INPUT:
        return None
    digits = value.translate(_PUNCTUATION)
    return (bool(match.group(1)), digits) if len(digits) >= 3 else None


def _extract_country_code(digits: str) -> tuple[int, str]:
    """phonenumbers' `_extract_country_code` for ASCII digits."""
    if digits[:1] != "0":
        for size in range(1, min(len(digits), 3) + 1):
            code = int(digits[:size])
            if code in COUNTRY_CODE_TO_REGION_CODE:
                return code, digits[size:]
    return 0, digits


_idd_patterns: dict[str, re.Pattern[str]] = {}


def _parse_digits(plus: bool, digits: str, region: str | None) -> Parsed | None:
    """`_parse` of a number written as these digits, "+" first or not, read as phonenumbers'
    `parse(("+" if plus else "") + digits, region)` reads it, step by step; None where parse would
    retry after an unknown country code (left to the library)."""
    metadata = None if region is None else PhoneMetadata.metadata_for_region(region, None)
    code: int | None
    if plus:
        code, national = _extract_country_code(digits)
        if code == 0:
            return None  # parse retries without the "+": rare, the library's turn
    elif metadata is None:
        return _INVALID  # no region and no "+": no country code to read
    else:
        idd = metadata.international_prefix or "NonMatch"
        pattern = _idd_patterns.get(idd)
        if pattern is None:
            pattern = _idd_patterns[idd] = re.compile(idd)
        stripped, rest = _util._parse_prefix_as_idd(pattern, digits)
        if stripped:
            if len(rest) <= _MIN_NSN:
                return _INVALID
            code, national = _extract_country_code(rest)
            if code == 0:
                return _INVALID
        else:
            code, national = 0, digits
            own = str(metadata.country_code)
            if digits.startswith(own):
                general = metadata.general_desc
                potential = _without_national_prefix(digits[len(own):], metadata)
                if (not _util._match_national_number(digits, general, False)
                        and _util._match_national_number(potential, general, False)) \
                        or _length_verdict(digits, metadata) == _util.ValidationResult.TOO_LONG:
                    code, national = metadata.country_code, potential
    if code:
        number_region = phonenumbers.region_code_for_country_code(code)
        if number_region != region:
            metadata = PhoneMetadata.metadata_for_region_or_calling_code(code, number_region)
    elif metadata is not None:
        code = metadata.country_code  # none read from the number: the region's
    if metadata is None:
        return None  # where parse would fail its own assertion: the library's turn
    if len(national) < _MIN_NSN:
        return _INVALID
    potential = _without_national_prefix(national, metadata)
    if _length_verdict(potential, metadata) not in _NOT_STRIPPED:
        national = potential
    if not _MIN_NSN <= len(national) <= _MAX_NSN:
        return _INVALID
    nsn = _significant(national)
    valid, its_region = _judge(code, nsn)
    return (f"+{code}{nsn}", True, its_region) if valid else _INVALID


class _Parsing:
    """What `_parse_digits` asks of a region's metadata, answered as phonenumbers answers it: the
    number left by `_maybe_strip_national_prefix_carrier_code`, with the region's patterns compiled
    once (the library looks each up in its pattern cache on every call), and the verdict of
    `_test_number_length`, which reads nothing of the number but its length: once per length."""

    def __init__(self, metadata: Any) -> None:
        self.metadata = metadata  # held: see _for_metadata
        prefix = metadata.national_prefix_for_parsing
        self.prefix = re.compile(prefix) if prefix else None
        general = metadata.general_desc
        pattern = None if general is None else general.national_number_pattern
        self.general = re.compile(pattern) if pattern else None
        self.transform = metadata.national_prefix_transform_rule
        self.lengths: dict[int, Any] = {}  # length -> verdict

    def viable(self, number: str) -> bool:
        """`_match_national_number(number, general_desc, False)`."""
        return self.general is not None and self.general.fullmatch(number) is not None

    def strip(self, number: str) -> str:
        """The number `_maybe_strip_national_prefix_carrier_code` returns, step by step as it does."""
        if not number or self.prefix is None:
            return number
        match = self.prefix.match(number)
        if not match:
            return number
        viable = self.viable(number)
        groups = match.groups()
        if not self.transform or groups[len(groups) - 1] is None:
            rest = number[match.end():]
            return number if viable and not self.viable(rest) else rest
        transformed = self.prefix.sub(self.transform, number, count=1)
        return number if viable and not self.viable(transformed) else transformed

    def length_verdict(self, number: str) -> Any:
        """`_test_number_length(number, metadata)`."""
        verdict = self.lengths.get(len(number))
        if verdict is None:
            verdict = self.lengths[len(number)] = _util._test_number_length(number, self.metadata)
        return verdict


class _OfMetadata(Protocol):
    metadata: Any


Made = TypeVar("Made", bound=_OfMetadata)


def _for_metadata(cache: dict[int, Made], metadata: Any, make: Callable[[Any], Made]) -> Made:
    """What `make` makes of a region's metadata, made once: kept by the metadata's id, and checked
    against the metadata the made object holds, so that a reused id never finds another's."""
    made = cache.get(id(metadata))
    if made is None or made.metadata is not metadata:
        made = cache[id(metadata)] = make(metadata)
    return made


_parsings: dict[int, _Parsing] = {}


def _without_national_prefix(number: str, metadata: Any) -> str:
    """phonenumbers' `_maybe_strip_national_prefix_carrier_code(number, metadata)[1]`."""
    return _for_metadata(_parsings, metadata, _Parsing).strip(number)


def _length_verdict(number: str, metadata: Any) -> Any:
    """phonenumbers' `_test_number_length(number, metadata)`."""
    return _for_metadata(_parsings, metadata, _Parsing).length_verdict(number)


def _significant(national: str) -> str:
    """The national significant number of a parsed number whose national digits are these: its
    national number, an int, after its "Italian" leading zeros, as phonenumbers writes it."""
    if len(national) > 1 and national[0] == "0":
        zeros = 1
        while zeros < len(national) - 1 and national[zeros] == "0":
            zeros += 1
        return "0" * zeros + str(int(national))
    return str(int(national))


# --- validity and region ----------------------------------------------------------------------------

# The number types phonenumbers' _number_type_helper tries after the general description; a number
# is of a known type (valid) when it matches the general description and any of them. Mobile counts
# only where its pattern differs from fixed line's.
_TYPES = ("premium_rate", "toll_free", "shared_cost", "voip", "personal_number", "pager", "uan", "voicemail",
          "fixed_line")


class _Types:
    """`_number_type_helper(nsn, metadata) != UNKNOWN` for one region's metadata, with one pattern
    per number length: the general description as a lookahead, then the types whose possible
    lengths allow that length, as alternatives."""

    def __init__(self, metadata: Any) -> None:
        self.metadata = metadata  # held: see _for_metadata
        self.descs = [getattr(metadata, name) for name in _TYPES]
        if not metadata.same_mobile_and_fixed_line_pattern:
            self.descs.append(metadata.mobile)
        self.by_length: dict[int, re.Pattern[str] | None] = {}

    def known(self, nsn: str) -> bool:
        size = len(nsn)
        if size not in self.by_length:
            self.by_length[size] = self._pattern(size)
        pattern = self.by_length[size]
        return pattern is not None and pattern.fullmatch(nsn) is not None

    def _pattern(self, size: int) -> re.Pattern[str] | None:
        general = self.metadata.general_desc
        if not _fits(general, size):
            return None
        types = [desc.national_number_pattern for desc in self.descs if _fits(desc, size)]
        if not types:
            return None
        alternatives = "|".join(f"(?:{pattern})" for pattern in types)
        return re.compile(f"(?=(?:{general.national_number_pattern})\\Z)(?:{alternatives})")


def _fits(desc: Any, size: int) -> bool:
    """Whether phonenumbers' `_is_number_matching_desc` would try the desc's pattern on a number
    of this length (and then the pattern decides)."""
    return desc is not None and bool(desc.national_number_pattern) \
        and (not desc.possible_length or size in desc.possible_length)


_types: dict[int, _Types] = {}


def _known(nsn: str, metadata: Any) -> bool:
    return _for_metadata(_types, metadata, _Types).known(nsn)


_regions: dict[int, list[tuple[str, Any, re.Pattern[str] | None]]] = {}  # code -> its regions
_region_metadata: dict[tuple[int | None, str], Any] = {}  # (code, region) -> metadata, when they agree


def _judge(code: int | None, nsn: str) -> tuple[bool, str | None]:
    """(phonenumbers' is_valid_number, its region_code_for_number) of the number with this country
    code and national significant number."""
    region, known_in = _region_of(code, nsn)
    if region is None:
        return False, None
    key = (code, region)
    if key not in _region_metadata:
        metadata = PhoneMetadata.metadata_for_region_or_calling_code(code, region.upper())  # type: ignore[arg-type]
        agrees = metadata is not None and (region == REGION_CODE_FOR_NON_GEO_ENTITY
                                           or code == phonenumbers.country_code_for_valid_region(region))
        _region_metadata[key] = metadata if agrees else None
    metadata = _region_metadata[key]
    if metadata is None:
        return False, region
    # Where the region was told by the number being of a known type in it, that is the answer.
    return (True if known_in is metadata else _known(nsn, metadata)), region


def _region_of(code: int | None, nsn: str) -> tuple[str | None, Any]:
    """phonenumbers' region_code_for_number, and the metadata of that region when it was told by
    the number being of a known type there (None when told otherwise)."""
    regions = COUNTRY_CODE_TO_REGION_CODE.get(code)  # type: ignore[arg-type]
    if regions is None:
        return None, None
    if len(regions) == 1:
        return regions[0], None
    candidates = _regions.get(code)  # type: ignore[arg-type]
    if candidates is None:
        candidates = []
        for region in regions:
            metadata = PhoneMetadata.metadata_for_region(region.upper(), None)
            if metadata is not None:
                leading = None if metadata.leading_digits is None else re.compile(metadata.leading_digits)
                candidates.append((region, metadata, leading))
        _regions[code] = candidates  # type: ignore[index]
    for region, metadata, leading in candidates:
        if leading is not None:
            if leading.match(nsn):
                return region, None
        elif _known(nsn, metadata):
            return region, metadata
    return None, None
