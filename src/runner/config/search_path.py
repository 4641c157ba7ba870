"""Puts the user's `--config-dir` ahead of runner's shipped configs on Hydra's search path.

Hydra's own `--config-dir` goes after the app's configs, so a `trainer/default.yaml` there is never read;
`runner train` takes the flag off the command line and names the folder in RUNNER_CONFIG_DIR instead.
"""

import os

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin

from runner.config.compose import USER_CONFIG_DIR


class UserConfigDir(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        folder = os.environ.get(USER_CONFIG_DIR)
        if folder:
            search_path.prepend(provider="runner-config-dir", path=f"file://{folder}")
