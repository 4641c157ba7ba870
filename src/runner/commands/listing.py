"""What Hydra answers without running a job, made fast and named for runner: `--help` builds the config repository
once, and `-sc` (shell completion) registers and completes the `runner` command."""

import os
import re
import sys
from contextlib import contextmanager
from typing import Any, Iterator


def complete_as_runner() -> None:
    """Hydra's shell completion for `runner train`: its script registers the `runner` command (Hydra names it by
    argv[0]) and calls `runner -sc query=...`, which `runner` hands here; a query sees the line without `train`."""
    sys.argv[0] = "runner"
    line = os.environ.get("COMP_LINE")
    if line is not None:
        found = re.match(r"(\s*\S+\s+)train(\s+|$)", line)
        if found:
            cut = len(found.group(0)) - len(found.group(1))
            os.environ["COMP_LINE"] = found.group(1) + line[len(found.group(0)):]
            point = os.environ.get("COMP_POINT", "")
            if point.isdigit():
                os.environ["COMP_POINT"] = str(max(int(point) - cut, len(found.group(1))))


# Flags whose answer lists config groups and their options (help, shell completion).
LISTING_FLAGS = ("--help", "-h", "--shell-completion", "-sc")


@contextmanager
def one_config_repository(listing: bool) -> Iterator[None]:
    """While Hydra lists config groups (`listing`): one config repository for every listing call.

    Hydra builds (deep-copies) a fresh repository for each group it lists, 115 of them for `--help`, which
    took 1.8 s idle (0.6 s built once). With the same overrides the repository is the same: one serves all.
    """
    if not listing:
        yield
        return
    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    build = ConfigLoaderImpl._parse_overrides_and_create_caching_repo
    built: dict[tuple, Any] = {}

    def build_once(loader, config_name, overrides):
        key = (id(loader), config_name, tuple(overrides))
        if key not in built:
            built[key] = build(loader, config_name, overrides)
        return built[key]

    ConfigLoaderImpl._parse_overrides_and_create_caching_repo = build_once
    try:
        yield
    finally:
        ConfigLoaderImpl._parse_overrides_and_create_caching_repo = build
