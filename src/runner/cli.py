"""The `runner` command: dispatches subcommands; imports nothing heavy so `runner --help` is instant."""

import sys

USAGE = """\
usage: runner <command> [arguments]

An experiment runner for small models on small data.

commands:
  train [overrides]   train a stacked population of models (a Hydra app:
                      -m to sweep, --cfg job for the resolved config,
                      --help for the config groups and options)
  report DIR...       compare finished runs or multirun directories in one
                      table, best first (--format table|md|csv|json,
                      --metric NAME, --help)

examples:
  runner train                                   heart + mlp + adam + holdout
  runner train model=logreg optim=sgd optim.lr=0.1
  runner train trainer.seeds=5                   5 seeds as one stacked population
  runner train -m optim=sgd,adam,adamw           a sweep (ends with its comparison table)
  runner report outputs/multirun/DATE/TIME       compare a sweep's runs again
"""


def main(argv: list[str] | None = None) -> int:
    """Run the `runner` command line; returns the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0
    command, rest = argv[0], argv[1:]
    if command == "train":
        from runner.app import train_command

        return train_command(rest)
    if command == "report":
        from runner.evaluate.report_command import report_command

        return report_command(rest)
    print(f"error: unknown command {command!r}; choose one of: train, report (see runner --help)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
