"""`runner report DIR...`: the command line of the comparison (arguments, formats, one table per dataset)."""

import argparse
import sys

from runner.errors import RunnerError
from runner.evaluate.compare import compare_by_data
from runner.evaluate.compare_views import FORMATS, print_comparison


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, like every other user error
        raise RunnerError(message)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="runner report",
        description="Compare finished runs and Hydra multiruns in one table: one row per run, the overrides "
                    "that differ between them, each metric as mean ± 1.96·SE, best first.",
        epilog="Order: by the validation score when the runs report one, else by test (for information only). "
               "★ best; each other run paired with it on the same test units (folds or rows; Holm-adjusted): "
               "≈ not distinguishable, worse, ▲ better on test; · not paired (other splits). "
               "Example: runner report outputs/multirun/2026-01-31/12-00-00-000000",
    )
    parser.add_argument("dirs", nargs="+", metavar="DIR",
                        help="a run directory, a multirun directory, or any folder to search for results.json")
    parser.add_argument("--format", default="table", metavar="{table,md,csv,json}",
                        help="table (default, for the terminal), md (Markdown), csv or json (a list of rows)")
    parser.add_argument("--metric", default=None, metavar="NAME",
                        help="the metric to order by, e.g. accuracy or rmse (default: the runs' selection metric)")
    return parser


def report_command(args: list[str]) -> int:
    """Run `runner report DIR... [--format ...] [--metric ...]`; returns the exit status (2 for a user error)."""
    try:
        try:
            ns = _parser().parse_args(args)
        except SystemExit as done:  # --help printed the usage
            return int(done.code or 0)
        if ns.format not in FORMATS:
            raise RunnerError(f"unknown --format {ns.format!r}; choose one of: {', '.join(FORMATS)}")
        comparisons = compare_by_data(ns.dirs, ns.metric)
        if len(comparisons) > 1 and ns.format in ("csv", "json"):
            raise RunnerError(f"these runs are on {len(comparisons)} different datasets, targets, tasks or test splits ("
                              f"{'; '.join(c.data for c in comparisons)}), which one {ns.format} table cannot keep "
                              "apart; use --format table or md (a table per group), or report each separately")
        for i, c in enumerate(comparisons):
            if i:
                print()  # tables of different datasets apart
            print_comparison(c, ns.format)
    except RunnerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
