"""Hydra's own plugin test suites (hydra.test_utils.launcher_common_tests) against every runner launcher and sweeper,
applied as Hydra's joblib and submitit plugins apply them: plain Hydra apps from hydra.test_utils, not runner's.

The default run applies the launcher and batched-sweeper suites to population, runner_grid (with Hydra's basic
launcher) and population_slurm in its `cluster=debug` mode (submitit's executor in this process, the submit path
without SLURM); the rest is slow (`make test-slow`): the suites that start a process per job or per test
(runner_submitit_local, population_slurm with cluster=local, every integration suite) and runner_grid under the
population launcher. runner_submitit_slurm needs a SLURM cluster that answers (slow, skipped without);
runner_optuna has no Hydra suite (LauncherTestSuite and BatchedSweeperTestSuite sweep a grid) and refuses an app
that is not runner's.
"""

import shutil

import pytest
from hydra.core.plugins import Plugins
from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper
from hydra.test_utils.launcher_common_tests import (
    BatchedSweeperTestSuite,
    IntegrationTestSuite,
    LauncherTestSuite,
)

try:
    import hydra_plugins.hydra_submitit_launcher  # noqa: F401

    HAS_SUBMITIT = True
except ImportError:
    HAS_SUBMITIT = False
needs_submitit = pytest.mark.skipif(not HAS_SUBMITIT, reason="the sweeps extra (hydra-submitit-launcher) is absent")
slow = pytest.mark.slow

def _slurm_answers() -> bool:
    """Whether a SLURM cluster answers here (sbatch installed is not enough: its daemons may be down)."""
    import subprocess

    if shutil.which("sinfo") is None:
        return False
    try:
        return subprocess.run(["sinfo"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


# launcher_name, overrides: as Hydra's plugins parametrize their LauncherTestSuite
LAUNCHERS = [
    pytest.param("population", [], id="population"),
    pytest.param("population_slurm", ["hydra.launcher.cluster=debug"], id="population_slurm-debug",
                 marks=needs_submitit),
    pytest.param("population_slurm", ["hydra.launcher.cluster=local"], id="population_slurm-local",
                 marks=[needs_submitit, slow]),
    pytest.param("runner_submitit_local", ["hydra.launcher.timeout_min=3"], id="runner_submitit_local",
                 marks=[needs_submitit, slow]),
    pytest.param("runner_submitit_slurm", [], id="runner_submitit_slurm",
                 marks=[slow, pytest.mark.skipif(not _slurm_answers(), reason="needs a SLURM cluster that answers "
                                                 "sinfo (SLURM_CONF set: eval \"$(.ci/slurm_cluster.sh env)\")")]),
    pytest.param("basic", ["hydra/sweeper=runner_grid"], id="runner_grid-basic"),
    pytest.param("population", ["hydra/sweeper=runner_grid"], id="runner_grid-population", marks=slow),
]

# launcher_name, overrides for the batched sweeper suite: the sweeper in overrides, as Hydra's basic sweeper's test
BATCHED = [
    pytest.param("basic", ["hydra/sweeper=runner_grid", "hydra.sweeper.max_batch_size=2"], id="runner_grid-basic"),
    pytest.param("population", ["hydra/sweeper=runner_grid", "hydra.sweeper.max_batch_size=2"],
                 id="runner_grid-population", marks=slow),
    pytest.param("population", ["hydra/sweeper=basic", "hydra.sweeper.max_batch_size=2"], id="population"),
    pytest.param("population_slurm", ["hydra/sweeper=runner_grid", "hydra.sweeper.max_batch_size=2",
                                      "hydra.launcher.cluster=debug"], id="population_slurm-debug",
                 marks=needs_submitit),
    pytest.param("runner_submitit_local", ["hydra/sweeper=runner_grid", "hydra.sweeper.max_batch_size=2",
                                           "hydra.launcher.timeout_min=3"], id="runner_submitit_local",
                 marks=[needs_submitit, slow]),
]


def _integration(launcher=None, sweeper=None, launcher_cfg=None, marks=(), id=None):
    """The joblib plugin's task_launcher_cfg, in the `override` form that Hydra 1.3 requires of a primary config
    (its older `{"hydra/launcher": "joblib"}` form fails there with "appears more than once", for Hydra's basic
    launcher too)."""
    defaults = [{"override hydra/launcher": launcher}] if launcher else []
    defaults += [{"override hydra/sweeper": sweeper}] if sweeper else []
    defaults += [{"override hydra/hydra_logging": "hydra_debug"}, {"override hydra/job_logging": "disabled"}]
    cfg = {"defaults": defaults, **({"hydra": {"launcher": launcher_cfg}} if launcher_cfg else {})}
    return pytest.param(cfg, ["-m"], marks=marks, id=id)


INTEGRATION = [
    _integration("population", id="population", marks=slow),  # a process per test: 16 s
    _integration(sweeper="runner_grid", id="runner_grid", marks=slow),
    _integration("population_slurm", launcher_cfg={"cluster": "debug"}, id="population_slurm-debug",
                 marks=[needs_submitit, slow]),
    _integration("runner_submitit_local", launcher_cfg={"timeout_min": 3}, id="runner_submitit_local",
                 marks=[needs_submitit, slow]),
]


@pytest.fixture(autouse=True)
def hydras_version_base_unset():
    """Hydra's suites assume a fresh process, where no version base is set (Hydra 1.1's defaults: a job runs in its
    own folder); other tests' Hydra compose API (initialize_config_dir(version_base="1.3")) leaves it set."""
    from hydra.core.singleton import Singleton
    from hydra.version import VersionBase

    held = Singleton._instances.pop(VersionBase, None)
    yield
    Singleton._instances.pop(VersionBase, None)
    if held is not None:
        Singleton._instances[VersionBase] = held


def test_every_runner_plugin_is_discovered_under_its_own_name():
    launchers = {p.__module__ + "." + p.__name__ for p in Plugins.instance().discover(Launcher)}
    sweepers = {p.__module__ + "." + p.__name__ for p in Plugins.instance().discover(Sweeper)}
    here = "hydra_plugins.runner_population_launcher."
    assert {here + "population_launcher.PopulationLauncher",
            here + "population_slurm_launcher.PopulationSlurmLauncher"} <= launchers
    assert {here + "grid_sweeper.GridSweeper", "hydra_plugins.runner_optuna_sweeper.optuna_sweeper.OptunaSweeper"} <= (
        sweepers)


@pytest.mark.parametrize("launcher_name, overrides", LAUNCHERS)
class TestRunnerLaunchers(LauncherTestSuite):
    """Hydra's launcher suite on each runner launcher (and on runner_grid with two launchers)."""


@pytest.mark.parametrize("launcher_name, overrides", BATCHED)
class TestRunnerBatchedSweeper(BatchedSweeperTestSuite):
    """Hydra's batched sweeper suite on runner_grid, and on the population launchers under batches."""


@pytest.mark.parametrize("task_launcher_cfg, extra_flags", INTEGRATION)
class TestRunnerIntegration(IntegrationTestSuite):
    """Hydra's integration suite: plain apps run as processes with each runner plugin chosen in their config."""


class Boom(Exception):
    """The plain app's own failure."""


def _fails(cfg):
    raise Boom(f"job with a={cfg.a}")


@pytest.mark.usefixtures("hydra_restore_singletons")
@pytest.mark.parametrize("launcher, overrides", [
    ("basic", []), ("population", []),
    pytest.param("population_slurm", ["hydra.launcher.cluster=debug"], marks=needs_submitit),
])
def test_a_plain_apps_failing_job_reaches_the_sweeper_as_hydras_launchers_deliver_it(
        hydra_sweep_runner, tmpdir, monkeypatch, launcher, overrides):
    """A FAILED JobReturn holding the job's exception: Hydra's basic sweeper raises it (under population_slurm it
    was turned into COMPLETED with a return of None)."""
    from hydra.core.utils import JobStatus

    from runner.sweeps.launcher import PopulationLauncher
    from runner.sweeps.slurm import PopulationSlurmLauncher

    seen = []
    if launcher != "basic":
        cls = PopulationSlurmLauncher if launcher == "population_slurm" else PopulationLauncher
        original = cls.launch

        def launch(self, *args, **kwargs):
            seen.extend(original(self, *args, **kwargs))
            return seen

        monkeypatch.setattr(cls, "launch", launch)
    sweep = hydra_sweep_runner(calling_file=None, calling_module="hydra.test_utils.a_module",
                               task_function=_fails, config_path="configs", config_name="compose.yaml",
                               overrides=[f"hydra/launcher={launcher}", *overrides, "+a=1,2"], temp_dir=tmpdir)
    with pytest.raises(Boom, match="job with a=1"):
        with sweep:
            pass
    if launcher != "basic":
        assert [r.status for r in seen] == [JobStatus.FAILED, JobStatus.FAILED]
        assert [str(r._return_value) for r in seen] == ["job with a=1", "job with a=2"]
