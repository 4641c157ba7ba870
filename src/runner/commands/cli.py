"""The `runner` command: dispatches subcommands; imports nothing heavy so `runner --help` is instant."""

import os
import sys

USAGE = """\
usage: runner <command> [arguments]

An experiment runner for small models on small data.

commands:
  train [overrides]   train a stacked population of models (a Hydra app:
                      -m to sweep, --cfg job for the resolved config,
                      --help for the config groups and options)
  resume DIR          continue an interrupted `runner train` run in DIR
                      from its saved fit state (same result as unbroken;
                      --config-dir X: the one it was trained with)
  predict DIR --data F  predictions of a finished run's members for new rows
                      (--out FILE, --checkpoint best|last|refit|avg_NAME)
  report DIR...       compare finished runs or multirun directories in one
                      table, best first (--format table|md|csv|json,
                      --metric NAME, --help)

examples:
  runner train                                   heart + mlp + adam + holdout
  runner train model=logreg optim=sgd optim.lr=0.1
  runner train trainer.seeds=5                   5 seeds as one stacked population
  runner train -m optim=sgd,adam,adamw           a sweep: compatible jobs train as one
                                                 population; ends with summary.md/csv
  runner train -m hparams_search=heart_optuna    Optuna search (pip install 'stackrunner[sweeps]')
  runner report outputs/multirun/DATE/TIME       compare a sweep's runs again
  eval "$(runner train -sc install=bash)"        TAB completion of commands and overrides
"""


def main(argv: list[str] | None = None) -> int:
    """Run the `runner` command line; returns the exit status."""
    from_process_start = argv is None  # the process is this command, so its start-up is the run's too
    # OpenMP reads this once, when torch loads it: idle workers sleep instead of spinning, so a thread
    # that lands on a core someone else is using costs that core little (nothing has imported torch yet).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0
    if argv[0] == "--version" or argv[:2] == ["train", "--version"]:
        print(f"runner {version()}")
        return 0
    if argv[0] in ("-sc", "--shell-completion"):  # the completion script of `runner train -sc install=bash`
        return _complete(argv, from_process_start)
    if from_process_start and argv[0] in ("train", "resume"):
        _stop_while_starting(True)
    try:
        return _dispatch(argv[0], argv[1:], from_process_start)
    except BrokenPipeError:
        # The reader of our output closed it (`runner predict ... | head`): stop as `cat` does, without a word.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return _done(128 + 13, from_process_start)  # 13: SIGPIPE


COMMANDS = ("train", "resume", "predict", "report")


def _complete(argv: list[str], from_process_start: bool) -> int:
    """Shell completion's query (`runner -sc query=bash`, COMP_LINE set): the subcommands while the first word is
    typed, `runner train`'s overrides (Hydra's completion) after `train`, nothing after another subcommand (the
    script then completes file names)."""
    if not any(arg.startswith("query=") for arg in argv):  # install=bash, uninstall=bash: `runner train`'s script
        return _dispatch("train", argv, from_process_start)
    words = os.environ.get("COMP_LINE", "").split()
    typing_first = len(words) < 2 or (len(words) == 2 and not os.environ.get("COMP_LINE", "").endswith(" "))
    if typing_first:
        print(" ".join(COMMANDS))
        return 0
    if words[1] != "train":
        return 0
    return _dispatch("train", argv, from_process_start)


DISTRIBUTION = "stackrunner"  # the name pip knows runner by (`runner` on PyPI is another project)


def _stop_while_starting(on: bool) -> None:
    """While the command imports (a second or more, before it has written anything or installed its own
    handlers): SIGTERM and SIGUSR2 end the process at once with one true line and 128 + the signal, not a silent
    kill; an exception raised there instead could leave a library half imported for code that goes on. `on`
    False: the defaults back, where this process installed them."""
    import signal

    def stop(signum, frame):
        os.write(2, f"interrupted by {signal.Signals(signum).name} before training started; nothing was written\n"
                 .encode())
        os._exit(128 + signum)

    if on or _starting:
        for signum in (signal.SIGTERM, signal.SIGUSR2):
            signal.signal(signum, stop if on else signal.SIG_DFL)
        _starting[:] = [True] if on else []


_starting: list[bool] = []


def version() -> str:
    """runner's installed version, from its distribution's metadata."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed(DISTRIBUTION)
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def _dispatch(command: str, rest: list[str], from_process_start: bool) -> int:
    if command == "train":
        from runner.rundir import timing

        clock = timing.start_process_clock(from_process_start)
        from runner.commands.train import train_command

        clock.lap("imports")
        status = train_command(rest)  # its own handlers replace the starting ones, and give them back
        _stop_while_starting(False)
        return _done(status, from_process_start)
    if command == "resume":
        from runner.commands.resume import resume_command

        status = resume_command(rest)
        _stop_while_starting(False)
        return _done(status, from_process_start)
    if command == "predict":
        from runner.commands.predict import predict_command

        return _done(predict_command(rest), from_process_start)
    if command == "report":
        from runner.commands.report import report_command

        return _done(report_command(rest), from_process_start)
    print(f"error: unknown command {command!r}; choose one of: train, resume, predict, report (see runner --help)",
          file=sys.stderr)
    return 2


def _done(status: int, end_process: bool) -> int:
    """`status`; when this command is the whole process, end it now, skipping the interpreter's teardown.

    Every file is written and closed by now. Tearing down an interpreter that imported torch (freeing
    its objects, deregistering its operators) takes 0.3-0.8 s, up to a fifth of a default run, and
    nothing a user can see depends on it; mypy ends its process the same way for the same reason.
    """
    if end_process:
        import logging

        logging.shutdown()  # flushes Hydra's train.log
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    return status


if __name__ == "__main__":
    sys.exit(main())
