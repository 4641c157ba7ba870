"""The CSV files runner writes for people (predictions, metrics, reports, summaries, predict's output): cells a
spreadsheet would run as formulas are written as text, and read back as they were.

OWASP's rule for CSV injection: a cell beginning with `=`, `+`, `-`, `@`, a tab or a carriage return is written
with a single quote before it (`=cmd|' /C calc'!A0` becomes `'=cmd|' /C calc'!A0`), so a spreadsheet shows it
as text. Plain numbers (`-1.5`, `+3e-4`) are not formulas and stay numbers; numeric columns are never touched.
A cell that begins with quotes before such a start gets one more, so that `unescape` gives every cell back
exactly.
"""

import re
from pathlib import Path

from runner.rundir.folder import write_atomic

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|[+-]?(inf|nan)", re.IGNORECASE)


def _escaped(text: str) -> bool:
    """Whether `text` is written with a quote before it."""
    if text.startswith("'"):
        return _escaped(text[1:])
    return text.startswith(FORMULA_START) and not _NUMBER.fullmatch(text)


def cell(value):
    """`value` as a spreadsheet-safe cell: text that would start a formula, quoted; anything else as it is."""
    return "'" + value if isinstance(value, str) and _escaped(value) else value


def unescape(value):
    """A cell as `cell` wrote it, back to what it was."""
    return value[1:] if isinstance(value, str) and value.startswith("'") and _escaped(value[1:]) else value


def safe_frame(frame):
    """A copy of the DataFrame `frame` with its header and text cells made safe by `cell`."""
    out = frame.rename(columns=cell)
    for name in out.columns:
        if out[name].dtype == object or str(out[name].dtype) in ("string", "str", "category"):
            out[name] = out[name].map(cell)
    return out


def read_frame(frame):
    """A DataFrame read back from a file `write_csv` wrote (pd.read_csv), its cells and header unescaped."""
    out = frame.rename(columns=unescape)
    for name in out.columns:
        if out[name].dtype == object or str(out[name].dtype) in ("string", "str"):
            out[name] = out[name].map(unescape)
    return out


def write_csv(path: Path, frame, durable: bool = False) -> None:
    """`frame` (a DataFrame) as CSV at `path`, made safe by `safe_frame`, written atomically (write_atomic)."""
    safe = safe_frame(frame)
    write_atomic(path, lambda file: safe.to_csv(file, index=False), durable=durable)
