"""Installing runner changes no other Hydra app: a plain Hydra app (written here, run as a process with this
environment's python) gives the same `--cfg hydra` and the same sweep with runner's plugins visible as with them
hidden, and runner's own app still reads Hydra's names as runner's plugins.

hydra-optuna-sweeper cannot be installed next to runner's sweeps extra (its 1.3.0 pins optuna < 3 and would
downgrade optuna 5), so "with it installed" uses a stand-in package that registers what the stock plugin registers
under Hydra's names: `hydra/sweeper=optuna` and the `hydra/sweeper/sampler` group.
"""

import subprocess
import sys
from pathlib import Path

import pytest

import hydra_plugins.runner_population_launcher as runner_plugins
from runner.commands.cli import main

RUNNER_PLUGINS = str(Path(runner_plugins.__file__).parent.parent)  # runner's folder of hydra_plugins

APP = '''
import os
import hydra
from hydra.core.hydra_config import HydraConfig


@hydra.main(version_base=None, config_path=".", config_name="config")
def app(cfg):
    with open(os.path.join(HydraConfig.get().runtime.output_dir, "result.txt"), "w") as f:
        f.write(f"{cfg.x}-{cfg.y}")
    return cfg.x


if __name__ == "__main__":
    app()
'''

WITHOUT_RUNNER = f'''
import runpy
import sys

import hydra_plugins

hydra_plugins.__path__ = [p for p in hydra_plugins.__path__ if p != {RUNNER_PLUGINS!r}]
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
'''

STAND_IN = '''
"""A stand-in for hydra-optuna-sweeper's entries: its sweeper as `optuna`, its sampler group."""
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from hydra.core.config_store import ConfigStore
from hydra.plugins.sweeper import Sweeper


@dataclass
class TPESamplerConfig:
    _target_: str = "optuna.samplers.TPESampler"
    seed: Optional[int] = None


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    defaults: Any = field(default_factory=lambda: [{"sampler": "tpe"}])
    sampler: Any = None
    direction: str = "minimize"
    n_trials: int = 20
    params: Optional[Dict[str, str]] = None


class OptunaSweeper(Sweeper):
    def __init__(self, **kwargs):
        pass

    def setup(self, **kwargs):
        pass

    def sweep(self, arguments):
        print("stand-in optuna sweeper")


ConfigStore.instance().store(group="hydra/sweeper", name="optuna", node=OptunaSweeperConf, provider="optuna_sweeper")
ConfigStore.instance().store(group="hydra/sweeper/sampler", name="tpe", node=TPESamplerConfig,
                             provider="optuna_sweeper")
ConfigStore.instance().store(group="hydra/sweeper/sampler", name="random", node=TPESamplerConfig,
                             provider="optuna_sweeper")
'''


@pytest.fixture(params=["without-optuna-plugin", "with-optuna-plugin-stand-in"])
def plain_app(request, tmp_path):
    """run(*args, runner=True|False): the plain app's process, with runner's plugins visible or hidden;
    (exit status, stdout, stderr)."""
    (tmp_path / "app.py").write_text(APP)
    (tmp_path / "config.yaml").write_text("x: 1\ny: a\n")
    (tmp_path / "without_runner.py").write_text(WITHOUT_RUNNER)
    extra = ""
    if request.param == "with-optuna-plugin-stand-in":
        package = tmp_path / "stand_in" / "hydra_plugins" / "hydra_optuna_sweeper"
        package.mkdir(parents=True)
        (package / "__init__.py").write_text("")
        (package / "optuna_sweeper.py").write_text(STAND_IN)
        extra = str(tmp_path / "stand_in")

    def run(*args, runner=True):
        command = [sys.executable, *([] if runner else ["without_runner.py"]), "app.py", *args]
        env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": extra, "HYDRA_FULL_ERROR": "0"}
        done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=120)
        return done.returncode, done.stdout, done.stderr

    run.with_stand_in = bool(extra)
    run.where = tmp_path
    return run


def _sweep_results(sweep_dir: Path) -> dict:
    return {job.name: ((job / ".hydra" / "overrides.yaml").read_text(), (job / "result.txt").read_text())
            for job in sorted(sweep_dir.iterdir()) if job.is_dir()}


def test_a_plain_app_gets_hydras_config_and_sweep_whether_runner_is_installed_or_not(plain_app):
    with_runner, without = plain_app("--cfg", "hydra"), plain_app("--cfg", "hydra", runner=False)
    assert with_runner[0] == 0, with_runner[2]
    assert with_runner == without
    assert "_target_: hydra._internal.core_plugins.basic_sweeper.BasicSweeper" in with_runner[1]
    assert "_target_: hydra._internal.core_plugins.basic_launcher.BasicLauncher" in with_runner[1]

    sweeps = {}
    for runner in (True, False):
        where = plain_app.where / f"sweep_{runner}"
        status, out, err = plain_app("-m", "x=1,2", "y=a,b", f"hydra.sweep.dir={where}", runner=runner)
        assert status == 0, err
        sweeps[runner] = _sweep_results(where)
    assert sweeps[True] == sweeps[False]
    assert [result for _, result in sweeps[True].values()] == ["1-a", "1-b", "2-a", "2-b"]


@pytest.mark.parametrize("args", [
    ["hydra/launcher=submitit_local", "--cfg", "hydra", "-p", "hydra.launcher"],
    ["hydra/sweeper=optuna", "--cfg", "hydra", "-p", "hydra.sweeper"],
    ["hydra/sweeper=optuna", "hydra/sweeper/sampler=random", "--cfg", "hydra", "-p", "hydra.sweeper"],
])
def test_hydras_names_in_a_plain_app_are_hydras_and_its_plugins(plain_app, args):
    """With runner installed, Hydra's names mean what they mean without it: the submitit plugin's launcher, the
    (stand-in) stock optuna sweeper with its sampler group, or Hydra's own error where no plugin provides them."""
    if args[0] == "hydra/launcher=submitit_local":
        pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    with_runner, without = plain_app(*args), plain_app(*args, runner=False)
    if with_runner[0] == 0:
        assert with_runner == without
    else:  # the same error; its list of the options available includes runner's own names
        assert with_runner[:2] == without[:2] and with_runner[2].splitlines()[0] == without[2].splitlines()[0]
    if args[0] == "hydra/launcher=submitit_local":
        assert "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher" in with_runner[1]
    elif plain_app.with_stand_in:
        assert with_runner[0] == 0 and "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper" in (
            with_runner[1])
    else:
        assert with_runner[0] != 0 and "Could not find 'hydra/sweeper/optuna'" in with_runner[2]


def test_runner_optuna_refuses_a_plain_app_in_one_line(plain_app):
    status, out, err = plain_app("-m", "hydra/sweeper=runner_optuna", "x=interval(0,1)")
    assert status == 1
    assert "hydra/sweeper=runner_optuna searches runner's app only (runner train)" in err


@pytest.mark.parametrize("args, target", [
    ([], "hydra_plugins.runner_population_launcher.grid_sweeper.GridSweeper"),
    (["hydra/sweeper=optuna"], "hydra_plugins.runner_optuna_sweeper.optuna_sweeper.OptunaSweeper"),
    (["hparams_search=heart_optuna"], "hydra_plugins.runner_optuna_sweeper.optuna_sweeper.OptunaSweeper"),
    (["hydra/sweeper=basic"], "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"),
])
def test_runners_app_selects_its_own_sweepers_and_reads_the_old_names_as_them(capsys, monkeypatch, args, target):
    monkeypatch.setattr(sys, "argv", sys.argv[:])
    assert main(["train", *args, "--cfg", "hydra", "-p", "hydra.sweeper._target_"]) == 0
    assert capsys.readouterr().out.strip() == target


@pytest.mark.parametrize("args, target", [
    ([], "hydra_plugins.runner_population_launcher.population_launcher.PopulationLauncher"),
    (["hydra/launcher=submitit_local"], "hydra_plugins.runner_population_launcher.submitit_jobs.LocalLauncher"),
    (["hydra/launcher=submitit_slurm"], "hydra_plugins.runner_population_launcher.submitit_jobs.SlurmLauncher"),
    (["hydra/launcher=slurm"], "hydra_plugins.runner_population_launcher.submitit_jobs.SlurmLauncher"),
    (["hydra/launcher=population_slurm"],
     "hydra_plugins.runner_population_launcher.population_slurm_launcher.PopulationSlurmLauncher"),
])
def test_runners_app_reads_the_submitit_names_as_its_own_launchers(capsys, monkeypatch, args, target):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    monkeypatch.setattr(sys, "argv", sys.argv[:])
    assert main(["train", *args, "--cfg", "hydra", "-p", "hydra.launcher._target_"]) == 0
    assert capsys.readouterr().out.strip() == target


def test_runners_config_entries_come_back_after_hydra_wipes_the_config_store(hydra_restore_singletons):
    """hydra_restore_singletons empties the ConfigStore; Hydra's next plugin scan runs runner's hydra_plugins
    modules again, which store the entries again."""
    from hydra.core.config_store import ConfigStore
    from hydra.core.plugins import Plugins
    from hydra.core.singleton import Singleton

    Singleton._instances.clear()  # what the fixture restores after the first test of a session
    Plugins.instance()
    repo = ConfigStore.instance().repo["hydra"]
    assert {"population.yaml", "population_slurm.yaml"} <= set(repo["launcher"])
    assert {"runner_grid.yaml", "runner_optuna.yaml"} <= set(repo["sweeper"])
    assert repo["sweeper"]["basic.yaml"].provider == "hydra"


def test_runner_train_in_process_leaves_hydras_version_base_as_it_was(capsys, monkeypatch):
    """runner's @hydra.main(version_base="1.3") would set Hydra's process-wide version base for every app in the
    process (another app's jobs then run in the launch folder, not in their own); runner sets it for its run only."""
    from hydra.core.singleton import Singleton
    from hydra.version import VersionBase

    monkeypatch.setattr(sys, "argv", sys.argv[:])
    monkeypatch.delitem(Singleton._instances, VersionBase, raising=False)
    import runner.commands.train  # noqa: F401 (its decorator ran at import)

    assert VersionBase not in Singleton._instances
    assert main(["train", "--cfg", "job"]) == 0 and "dataset:" in capsys.readouterr().out
    assert VersionBase not in Singleton._instances


def test_hydras_name_in_a_users_config_file_says_to_write_runners_own(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "argv", sys.argv[:])
    (tmp_path / "hparams_search").mkdir()
    (tmp_path / "hparams_search" / "mine.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /hydra/sweeper: optuna\n")
    assert main(["train", "--config-dir", str(tmp_path), "hparams_search=mine", "--cfg", "hydra"]) == 2
    assert capsys.readouterr().err == (
        "error: hydra/sweeper=optuna is Hydra's name for another plugin; in a config file write runner's own, "
        "runner_optuna (runner train reads optuna as runner_optuna on its command line only)\n")
