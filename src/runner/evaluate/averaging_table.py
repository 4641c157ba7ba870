"""The weight-averaging table: the restored-best model and each averaging, side by side, from results.json."""

from rich.table import Table

from runner.evaluate.stats import fmt_interval

LABELS = {"restored_best": "restored best", "last": "last-k mean", "best": "best-k mean", "ema": "EMA", "swa": "SWA",
          "soup": "uniform soup", "greedy_soup": "greedy soup"}


def _epochs(entry: dict) -> str:
    """How many epoch checkpoints went into each member's average, and their range."""
    lists = list(entry.get("epochs", {}).values())
    if not lists:
        return ""
    counts = [len(e) for e in lists]
    lo, hi = min(min(e) for e in lists), max(max(e) for e in lists)
    count = str(counts[0]) if min(counts) == max(counts) else f"{min(counts)}-{max(counts)}"
    return f"{count} (epoch {lo})" if lo == hi else f"{count} (epochs {lo}-{hi})"


def _columns(results: dict) -> list[str]:
    selection = results.get("selection", {}).get("metric", "accuracy")
    first = next(iter(results["averaging"].values()))
    tests = list(first.get("test", {}))
    return [f"val/{selection}"] * (f"val/{selection}" in first.get("val", {})) + tests


def averaging_markdown(results: dict) -> str:
    """A Markdown section for report.md ('' when no averaging was asked for)."""
    entries = results.get("averaging") or {}
    if not entries:
        return ""
    cols = _columns(results)
    lines = ["", f"**Weight averaging** within each member (mean [95% interval] over {results.get('over', 'members')}; "
             "epochs per member's average, 0-based)", "",
             "| weights | epochs | " + " | ".join(cols) + " |", "|---" * (len(cols) + 2) + "|"]
    for name, entry in entries.items():
        cells = [fmt_interval(entry.get(c.split("/")[0], {}).get(c)) for c in cols]
        lines.append(f"| {LABELS.get(name, name)} | {_epochs(entry)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def averaging_table(results: dict) -> Table:
    """The same for the terminal: the selection metric on validation and test."""
    selection = results.get("selection", {}).get("metric", "accuracy")
    from rich import box

    table = Table(title=f"weight averaging within each member: {selection}, mean [95% interval]", box=box.SIMPLE_HEAD,
                  title_justify="left")
    for col in ("weights", "epochs", "validation", "test"):
        table.add_column(col, justify="left" if col in ("weights", "epochs") else "right", no_wrap=True)
    for name, entry in results["averaging"].items():
        table.add_row(LABELS.get(name, name), _epochs(entry),
                      fmt_interval(entry.get("val", {}).get(f"val/{selection}"), compact=True),
                      fmt_interval(entry.get("test", {}).get(f"test/{selection}"), compact=True))
    return table
