"""Read a partner's native extract exactly as its sharing policy declares it.

CSV is read with every column as text (leading zeros of BSNs survive; the policy's parsers decide what a value
means), in the policy's separator, quote character and encoding. Parquet is read with its own types. Either way
the frame gets a ``__row`` column: the 1-based data row number that every report uses (the header is not a row).
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

_ENCODINGS = {"utf-8": "utf-8", "latin-1": "latin-1", "cp1252": "cp1252"}


@dataclass(frozen=True, slots=True)
class RawExtract:
    """A native extract as read: the frame (with ``__row``), where it came from and its content digest."""

    path: Path
    frame: pl.DataFrame
    sha256: str

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
    return RawExtract(path=path, frame=frame.with_row_index(ROW, offset=1), sha256=digest)


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
    except pl.exceptions.PolarsError as exc:
        where = _line_of(str(exc)) or _first_malformed_line(raw, fmt.separator, fmt.quote)
        raise InputError(
            f"{path}: {where}the file cannot be read as CSV with separator {fmt.separator!r} and quote {fmt.quote!r}",
            hint="check the separator and quote character in the sharing policy",
        ) from None
    if len(frame.columns) == 1 and fmt.separator not in frame.columns[0] and len(policy.source_columns) > 1:
        raise InputError(
            f"{path}: the header has one column; the file is probably not separated by {fmt.separator!r}",
            hint="check input.separator in the sharing policy",
        )
    return frame


def _first_malformed_line(raw: bytes, separator: str, quote: str) -> str:
    """Locate the first structurally broken record after polars refused the file (error path only).

    polars does not say where a ragged row or a stray quote is, so the standard library's strict CSV reader walks
    the file once and reports, by line number (never by content), the first record that: has another number of
    fields than the header, is rejected by the reader (a quoted field never closed is reported where it opens),
    or has a quote inside a field that is not quoted.
    """
    text = raw.decode("utf-8", errors="replace")
    lines = text.splitlines()
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=separator, quotechar=quote, strict=True)
    start = 1
    try:
        header = next(reader)
        while True:
            start = reader.line_num + 1
            fields = next(reader)
            if not fields:
                continue
            if len(fields) != len(header) or reader.line_num != start:
                return f"line {start}: "
            raw_fields = lines[start - 1].split(separator)
            if not any(f.startswith(quote) for f in raw_fields) and any(quote in f for f in raw_fields):
                return f"line {start}: "
    except StopIteration:
        return ""
    except csv.Error:
        return f"line {start}: "


def _line_of(message: str) -> str:
    # polars names the line in its message; pass on only the number, never the offending text.
    match = re.search(r"line (\d+)", message)
    return f"line {match.group(1)}: " if match else ""


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
