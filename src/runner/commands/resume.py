"""`runner resume DIR`: `runner train` again with the folder's own overrides, from its saved fit state."""

import sys
from pathlib import Path

from runner.errors import RunnerError
from runner.rundir.saved import saved_overrides


def resume_command(args: list[str]) -> int:
    """`runner resume DIR`: run `runner train` again with DIR's own config overrides, from DIR's saved fit state.

    The folder is data: only its overrides of runner's own config keys are taken (never `hydra.*`, which could
    name code to run or files to write), each one named where it is left out."""
    config_dir = args[1:] if len(args) == 3 and args[1] in ("--config-dir", "-cd") else \
        args[1:] if len(args) == 2 and args[1].startswith("--config-dir=") else []
    if len(args) != 1 + len(config_dir) or args[0].startswith("-"):
        print("usage: runner resume RUN_DIR [--config-dir DIR]   (the directory an interrupted `runner train` "
              "printed; the --config-dir it was trained with)", file=sys.stderr)
        return 0 if args and args[0] in ("-h", "--help") else 2
    from runner.commands.train import train_command

    run_dir = Path(args[0])
    try:
        kept, ignored = saved_overrides(run_dir)
    except RunnerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if ignored:
        print(f"ignored in {run_dir / '.hydra' / 'overrides.yaml'} (runner resumes only its own config keys): "
              f"{' '.join(ignored)}", file=sys.stderr)
    return train_command([*config_dir, *kept, f"hydra.run.dir={_quoted(str(run_dir))}", "trainer.resume=true"])


def _quoted(value: str) -> str:
    """`value` as one Hydra override value: quoted where Hydra's grammar would read it otherwise."""
    if all(c.isalnum() or c in "/._-" for c in value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
