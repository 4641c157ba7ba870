"""Where Hydra discovers runner's search-path plugin for --config-dir: it takes plugins only from classes defined in
hydra_plugins, so this names runner.config.search_path.UserConfigDir here and adds nothing."""

from runner.config import search_path


class UserConfigDir(search_path.UserConfigDir):
    pass
