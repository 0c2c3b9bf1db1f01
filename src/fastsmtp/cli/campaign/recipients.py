"""The recipient list: a UTF-8 CSV with an ``email`` column, streamed and validated.

The list is read twice, never held in memory: :func:`validate_recipients` streams it once
and collects every problem with its line number (nothing is sent when there is any), then
:func:`unique_rows` streams it again as the source of the messages.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TextIO

from ..._syntax import HEADER_UNSAFE, mailbox_error
from .errors import CampaignInputError
from .template import MessageTemplate

__all__ = ["Recipients", "address_key", "read_recipients", "validate_recipients", "unique_rows"]


def address_key(address: str) -> str:
    """The journal key of an address: one recipient however its case is written."""
    return address.casefold()


@dataclass
class Recipients:
    """What the validation pass learned about a recipient list.

    Attributes:
        path: The CSV file.
        columns: Its column names (stripped).
        email_column: The column holding addresses.
        total: Unique valid recipients.
        duplicates: Lines skipped because their address came earlier.
    """

    path: str
    columns: list[str]
    email_column: str
    total: int = 0
    duplicates: int = 0


def _not_utf8(path: str) -> CampaignInputError:
    """The error for a file that is not UTF-8, naming its first bad line.

    Text is decoded in chunks ahead of the CSV parser, so the parser's position does not
    say where the bad byte is: the file is scanned again, line by line, to find it.
    """
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, 1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                return CampaignInputError(f"{path}: line {number}: not UTF-8 text "
                                          f"(byte {raw[exc.start]:#04x} at column {exc.start + 1})")
    return CampaignInputError(f"{path}: not UTF-8 text")


def _open_csv(path: str) -> tuple[TextIO, Any, list[str], str]:
    try:
        fh = open(path, encoding="utf-8-sig", newline="")  # noqa: SIM115 - returned
    except OSError as exc:
        raise CampaignInputError(f"cannot read {path}: {exc.strerror}") from None
    reader = csv.reader(fh)
    try:
        header = next(reader)
    except StopIteration:
        fh.close()
        raise CampaignInputError(f"{path}: the file is empty (expected a header line)") from None
    except UnicodeDecodeError:
        fh.close()
        raise _not_utf8(path) from None
    except csv.Error as exc:
        fh.close()
        raise CampaignInputError(f"{path}: line 1: {exc}") from None
    columns = [c.strip() for c in header]
    lowered = [c.casefold() for c in columns]
    if "email" not in lowered:
        fh.close()
        raise CampaignInputError(
            f"{path}: no 'email' column in the header line "
            f"(columns: {', '.join(columns) or 'none'})"
        )
    return fh, reader, columns, columns[lowered.index("email")]


def read_recipients(path: str) -> Iterator[tuple[int, dict[str, str | None]]]:
    """Stream ``(line number, row)`` for every data row of a CSV recipient list.

    The line number is where the row starts in the file (a quoted field may span lines).
    A row shorter than the header has ``None`` for its missing columns; the address is
    also available as ``row["email"]`` whatever the case of its column name.

    Raises:
        CampaignInputError: No header or no ``email`` column; text that is not UTF-8.
    """
    fh, reader, columns, email_column = _open_csv(path)
    width = len(columns)
    with fh:
        start = reader.line_num + 1
        try:
            for record in reader:
                if record:  # blank lines are not rows
                    row: dict[str, str | None] = dict(zip(columns, record))
                    if len(record) < width:
                        for name in columns[len(record):]:
                            row[name] = None
                    row["email"] = (row[email_column] or "").strip() \
                        if row[email_column] is not None else None
                    yield start, row
                start = reader.line_num + 1
        except UnicodeDecodeError:
            raise _not_utf8(path) from None
        except csv.Error as exc:
            raise CampaignInputError(f"{path}: line {reader.line_num}: {exc}") from None


def validate_recipients(path: str, template: MessageTemplate) -> Recipients:
    """The validation pass: stream the whole list and collect every problem.

    Raises:
        CampaignInputError: With one ``problems`` line per bad row (all of them).
    """
    fh, _, columns, email_column = _open_csv(path)
    fh.close()
    info = Recipients(path, columns, email_column)
    available = set(columns) | {"email"}
    missing = [f for f in template.fields if f not in available]
    if missing:
        raise CampaignInputError(
            f"{path}: line 1: the template uses {', '.join('{' + f + '}' for f in missing)} "
            f"but the CSV has no such column (columns: {', '.join(columns)})"
        )
    problems: list[str] = []
    seen: set[str] = set()
    header_fields = template.header_fields
    for line, row in read_recipients(path):
        address = row["email"]
        bad = False
        for name in template.fields:
            if row.get(name) is None:
                problems.append(f"line {line}: no value for the template field {{{name}}} "
                                f"(the row has fewer columns than the header)")
                bad = True
        for name in header_fields:
            value = row.get(name)
            if value is not None and HEADER_UNSAFE.search(value):
                problems.append(f"line {line}: the value of {{{name}}} contains a line break "
                                f"or control character and {{{name}}} is used in a header "
                                "(refused: header injection)")
                bad = True
        if address is None:
            continue  # already reported above if used; else the missing email is next
        reason = mailbox_error(address)
        if reason is not None:
            problems.append(f"line {line}: invalid address {address!r} ({reason})")
            continue
        if bad:
            continue
        key = address_key(address)
        if key in seen:
            info.duplicates += 1
            continue
        seen.add(key)
        info.total += 1
    if problems:
        raise CampaignInputError(f"{path}: {len(problems)} problem(s); nothing was sent", problems)
    return info


def unique_rows(path: str) -> Iterator[tuple[int, str, dict[str, str | None]]]:
    """``(line, key, row)`` of each first occurrence of an address (input already valid)."""
    seen: set[str] = set()
    for line, row in read_recipients(path):
        key = address_key(row["email"] or "")
        if key in seen:
            continue
        seen.add(key)
        yield line, key, row
