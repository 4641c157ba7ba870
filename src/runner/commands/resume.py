"""`runner resume DIR`: `runner train` again with the folder's own overrides, from its saved fit state."""

import sys
from pathlib import Path

from runner.commands.train import train_command
from runner.errors import RunnerError
from runner.rundir.saved import saved_overrides


USAGE = ("usage: runner resume RUN_DIR [--config-dir DIR] [model.target=... dataset.loader=...]   (the directory an "
         "interrupted `runner train` printed; the --config-dir and your own code it was trained with)")
# Keys that name code to import: taken from the user's command line, never from the folder.
CODE_KEYS = ("model.target", "dataset.loader")


def _given(args: list[str]) -> list[str]:
    """What the user may add to a resume: the --config-dir and the code keys it was trained with."""
    out, words = [], iter(args)
    for word in words:
        if word in ("--config-dir", "-cd"):
            folder = next(words, None)
            if folder is None:
                raise RunnerError(f"{word} needs a folder")
            out += [word, folder]
        elif word.startswith("--config-dir=") or word.partition("=")[0] in CODE_KEYS:
            out.append(word)
        else:
            raise RunnerError(f"runner resume takes only a --config-dir and {', '.join(CODE_KEYS)}, not {word!r}")
    return out


def _config_dirs(given: list[str]) -> tuple[Path, ...]:
    """The --config-dir folders on this command line: where a saved group value may name an option too."""
    pairs = zip(given, given[1:])
    return (*(Path(b) for a, b in pairs if a in ("--config-dir", "-cd")),
            *(Path(w.partition("=")[2]) for w in given if w.startswith("--config-dir=")))


def resume_command(args: list[str]) -> int:
    """`runner resume DIR`: run `runner train` again with DIR's own config overrides, from DIR's saved fit state.

    The folder is data: only its overrides of runner's own config keys are taken (never `hydra.*`, which could
    name code to run or files to write), each one named where it is left out."""
    if not args or args[0].startswith("-"):
        print(USAGE, file=sys.stderr)
        return 0 if args and args[0] in ("-h", "--help") else 2
    try:
        given = _given(args[1:])
    except RunnerError as exc:
        print(f"error: {exc}\n{USAGE}", file=sys.stderr)
        return 2
    run_dir = Path(args[0])
    try:
        kept, ignored = saved_overrides(run_dir, _config_dirs(given))
    except RunnerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    code = [o for o in kept if o.partition("=")[0].lstrip("+~") in CODE_KEYS]
    named = [o for o in given if o.partition("=")[0] in CODE_KEYS]
    if code and not named:
        print(f"error: {run_dir} trains your own code ({' '.join(code)}); runner imports no code a run folder "
              f"names, so name it yourself: runner resume {run_dir} {' '.join(c.lstrip('+~') for c in code)}",
              file=sys.stderr)
        return 2
    kept = [o for o in kept if o not in code]
    if ignored:
        print(f"ignored in {run_dir / '.hydra' / 'overrides.yaml'} (runner resumes only its own config keys, and a "
              "group only by an option's name): "
              f"{' '.join(ignored)}", file=sys.stderr)
    return train_command([*given, *kept, f"hydra.run.dir={_quoted(str(run_dir))}", "trainer.resume=true"])


def _quoted(value: str) -> str:
    """`value` as one Hydra override value: quoted where Hydra's grammar would read it otherwise."""
    if all(c.isalnum() or c in "/._-" for c in value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
