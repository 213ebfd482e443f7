"""Read a partner's native extract exactly as its sharing policy declares it.

CSV is read with every column as text (leading zeros of BSNs survive; the policy's parsers decide what a value
means), in the policy's separator, quote character and encoding. Parquet is read with its own types.

Either way the frame gets a ``__row`` column: where the operator finds each record, the one numbering every
message and the quarantine report use. In a CSV file that is its **line** as an editor or a spreadsheet numbers
it (the header is line 1, so the first record is line 2; a quoted field holding a line break moves the records
after it down); in a Parquet file, which has no lines, its 1-based **row**. ``RawExtract.position`` says which.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from kansrijk.errors import InputError
from kansrijk.policy.sharing import SharingPolicy

ROW = "__row"

_UNSAFE = re.compile(r"[^A-Za-z0-9_ .-]|^[-.]")
_ENCODINGS = {"utf-8": "utf-8", "latin-1": "latin-1", "cp1252": "cp1252"}


@dataclass(frozen=True, slots=True)
class RawExtract:
    """A native extract as read: the frame (with ``__row``), where it came from and its content digest;
    ``position`` names what ``__row`` counts (``"line"`` for CSV, ``"row"`` for Parquet); ``unexpected`` lists
    the columns the sharing policy does not name at all (left out of the bundle like every unmapped column)."""

    path: Path
    frame: pl.DataFrame
    sha256: str
    position: str = "row"
    unexpected: tuple[str, ...] = ()

    @property
    def rows(self) -> int:
        return self.frame.height


def read_extract(path: Path, policy: SharingPolicy) -> RawExtract:
    """Read ``path`` per ``policy.input``; ``InputError`` names the file and what to change when it cannot."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: extract file not found") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read the extract ({exc.strerror})") from None
    if not raw.lstrip(b"\xef\xbb\xbf").strip():
        what = "is empty (0 bytes)" if not raw else "holds only blank lines"
        raise InputError(
            f"{path}: the extract file {what}; there is no header and no data",
            hint="export the extract again from the source system (an interrupted export or a wrong query leaves "
            "an empty file)",
        )
    digest = hashlib.sha256(raw).hexdigest()
    frame = _read_parquet(path, raw) if policy.input.format == "parquet" else _read_csv(path, raw, policy)
    missing = [c for c in policy.source_columns if c not in frame.columns]
    if missing:
        raise InputError(
            f"{path}: columns {missing} named by the sharing policy are missing from the extract",
            hint="check that the extract and the policy belong to the same partner and format version",
        )
    if ROW in frame.columns:
        raise InputError(f"{path}: the extract has a column named {ROW!r}, which kansrijk reserves")
    named = {*policy.source_columns, *policy.never_share, *policy.dropped}
    # for the operator's note only: a header is the partner's own text, but a hostile one (a spreadsheet formula)
    # is not repeated as it is
    unexpected = tuple(_UNSAFE.sub("?", c)[:48] for c in frame.columns if c not in named)
    if policy.input.format == "parquet":
        return RawExtract(path, frame.with_row_index(ROW, offset=1), digest, "row", unexpected)
    return RawExtract(path, _with_lines(frame, raw, policy.input.quote), digest, "line", unexpected)


def _with_lines(frame: pl.DataFrame, raw: bytes, quote: str) -> pl.DataFrame:
    """``frame`` with ``__row`` = the line each record starts on (header line 1). Without line breaks inside
    quoted fields that is the record's index + 2 (polars keeps blank lines as empty records, so they count); with
    them, every break inside an earlier record moves the line down by one."""
    header_breaks = sum(c.count("\n") for c in frame.columns)
    first = 2 + header_breaks
    plain = header_breaks + frame.height + int(raw.endswith(b"\n"))  # the line breaks of a file without any in a field
    if quote.encode() not in raw or raw.count(b"\n") == plain:
        return frame.with_row_index(ROW, offset=first)
    breaks = pl.sum_horizontal(
        pl.col(c).str.count_matches("\n", literal=True).fill_null(0) for c, t in frame.schema.items() if t == pl.String
    )
    return frame.with_columns(
        (pl.int_range(pl.len(), dtype=pl.Int64) + first + breaks.cum_sum().shift(1, fill_value=0)).alias(ROW)
    ).select(ROW, *frame.columns)


def _read_parquet(path: Path, raw: bytes) -> pl.DataFrame:
    try:
        return pl.read_parquet(raw)
    except Exception:  # polars raises several error types for broken files
        raise InputError(
            f"{path}: not a readable Parquet file", hint="the sharing policy declares format = 'parquet'"
        ) from None


def _read_csv(path: Path, raw: bytes, policy: SharingPolicy) -> pl.DataFrame:
    fmt = policy.input
    encoding = _ENCODINGS[fmt.encoding]
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    if encoding == "utf-8":
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = raw.count(b"\n", 0, exc.start) + 1
            raise InputError(
                f"{path}: line {line}: not valid UTF-8 (the policy declares encoding = 'utf-8')",
                hint="if the partner writes ISO-8859-1, set encoding = 'latin-1' in the sharing policy",
            ) from None
    else:
        raw = raw.decode(encoding).encode("utf-8")
    try:
        frame = pl.read_csv(
            raw,
            separator=fmt.separator,
            quote_char=fmt.quote,
            infer_schema=False,
            missing_utf8_is_empty_string=False,
        )
    except pl.exceptions.PolarsError:
        raise _csv_error(path, raw, fmt.separator, fmt.quote) from None
    if len(frame.columns) == 1 and fmt.separator not in frame.columns[0] and len(policy.source_columns) > 1:
        raise InputError(
            f"{path}: the header has one column; the file is probably not separated by {fmt.separator!r}",
            hint="check input.separator in the sharing policy",
        )
    return frame


def _csv_error(path: Path, raw: bytes, separator: str, quote: str) -> InputError:
    """What is wrong where, after polars refused the file (error path only), as an ``InputError`` that names
    the line and the problem, and gives the advice for that problem (not a generic one).

    polars does not say where a ragged row or a stray quote is, so the standard library's strict CSV reader walks
    the file once and reports, by line number (never by content), the first record that: has another number of
    fields than the header (the separator), is rejected by the reader or runs on over several lines (a quoted
    field never closed, reported where it opens), or has a quote inside a field that is not quoted."""
    text = raw.decode("utf-8", errors="replace")
    lines = text.splitlines()
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=separator, quotechar=quote, strict=True)
    start = 1
    unclosed = InputError(
        f"{path}: line {{line}}: a quoted field opens on this line and is not closed (quote character {quote!r})",
        hint=f"close the quote in the source, or, if {quote!r} is not the quote character, fix input.quote in the "
        "sharing policy",
    )
    try:
        header = next(reader)
        while True:
            start = reader.line_num + 1
            fields = next(reader)
            if not fields:
                continue
            if reader.line_num != start and any(quote in f for f in lines[start - 1].split(separator)):
                return _at(unclosed, start)
            if len(fields) != len(header):
                return InputError(
                    f"{path}: line {start}: has {len(fields)} fields, the header has {len(header)} "
                    f"(separator {separator!r})",
                    hint="remove the surplus or add the missing field in the source; if the whole file looks like "
                    "this, check input.separator in the sharing policy",
                )
            raw_fields = lines[start - 1].split(separator)
            if not any(f.startswith(quote) for f in raw_fields) and any(quote in f for f in raw_fields):
                return InputError(
                    f"{path}: line {start}: a quote character ({quote}) inside a field that is not quoted",
                    hint=f"quote that field and double the quote inside it ({quote}{quote}), or remove it",
                )
    except StopIteration:
        pass
    except csv.Error:
        return _at(unclosed, start)
    return InputError(
        f"{path}: the file cannot be read as CSV with separator {separator!r} and quote {quote!r}",
        hint="check input.separator and input.quote in the sharing policy against the file",
    )


def _at(error: InputError, line: int) -> InputError:
    return InputError(error.message.replace("{line}", str(line)), hint=error.hint)


def reference_year_from_filename(path: Path, policy: SharingPolicy) -> int | None:
    """The year the policy's ``year_from_filename`` pattern finds in the file name, or None."""
    pattern = policy.input.year_from_filename
    if pattern is None:
        return None
    match = re.search(pattern, Path(path).name)
    if match is None:
        raise InputError(
            f"{path}: the file name does not match the policy's year_from_filename pattern {pattern!r}",
            hint="rename the file as the partner delivers it, or pass --year",
        )
    return int(match.group(1))
