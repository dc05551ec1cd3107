"""Phone numbers and contact CSV files, pure (no I/O beyond the text handed in).

A number is kept in one canonical form: formatting (spaces, dashes, dots, parentheses) removed, an
optional leading ``+``, then 6 to 15 digits not starting with 0 (E.164 allows 15). Anything else is
refused with the reason: a letter, ``${...}``, a comma or a CR/LF never reaches a dial string.
"""

from __future__ import annotations

import csv
import io
import re

from pydantic import BaseModel, Field

_FORMATTING = re.compile(r"[ \t\-.()/]")  # not CR/LF: a line break in a number is an error
_CANONICAL = re.compile(r"^\+?[1-9][0-9]{5,14}$")
_VARIABLE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")


class InvalidNumber(ValueError):
    """A number that cannot be dialled safely."""


def normalize_number(raw: str) -> str:
    """The canonical form of ``raw``, or ``InvalidNumber`` saying why not."""
    text = _FORMATTING.sub("", raw or "")
    if text.startswith("00"):
        text = "+" + text[2:]  # international prefix written the European way
    if not text:
        raise InvalidNumber("empty number")
    if not _CANONICAL.match(text):
        digits = len(text.lstrip("+"))
        if not text.lstrip("+").isdigit():
            raise InvalidNumber(f"not a phone number: {raw!r}")
        raise InvalidNumber(f"{raw!r}: {digits} digits (6 to 15, not starting with 0)")
    return text


class ContactRow(BaseModel):
    line: int
    number: str
    variables: dict[str, str] = Field(default_factory=dict)


class RowError(BaseModel):
    line: int
    error: str


class CsvLoad(BaseModel):
    rows: list[ContactRow] = Field(default_factory=list)
    errors: list[RowError] = Field(default_factory=list)


def parse_contacts_csv(text: str, number_column: str = "number") -> CsvLoad:
    """Rows of a CSV with a header line; ``number_column`` holds the number, every other column becomes
    a contact variable. A bad row is reported with its line number (1 = the header) and skipped."""
    reader = csv.DictReader(io.StringIO(text))
    result = CsvLoad()
    header = reader.fieldnames or []
    if number_column not in header:
        result.errors.append(RowError(line=1, error=f"no {number_column!r} column in the header {header}"))
        return result
    bad_names = [name for name in header if name != number_column and not _VARIABLE_NAME.match(name or "")]
    if bad_names:
        result.errors.append(RowError(line=1, error=f"column names must be identifiers: {bad_names}"))
        return result
    seen: dict[str, int] = {}
    for record in reader:
        line = reader.line_num
        if None in record:
            result.errors.append(RowError(line=line, error="more fields than the header"))
            continue
        try:
            number = normalize_number(record.get(number_column) or "")
        except InvalidNumber as exc:
            result.errors.append(RowError(line=line, error=str(exc)))
            continue
        if number in seen:
            result.errors.append(RowError(line=line, error=f"{number} already on line {seen[number]}"))
            continue
        variables = {k: v or "" for k, v in record.items() if k != number_column}
        unsafe = [k for k, v in variables.items() if any(c in v for c in "\r\n\x00{}")]
        if unsafe:
            result.errors.append(RowError(line=line, error=f"control characters or braces in {unsafe}"))
            continue
        seen[number] = line
        result.rows.append(ContactRow(line=line, number=number, variables=variables))
    return result
