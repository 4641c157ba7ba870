"""hydra/launcher=runner_submitit_slurm and runner_submitit_local (in runner's app also under the plugin's names
submitit_slurm and submitit_local, and runner's `slurm` preset): each sweep job its own task, through
Hydra's submitit plugin, with runner's fault handling. A task that was killed, cancelled, timed out or refused is a
true status in its job's run folder (status.json: interrupted, with what SLURM said and the command that
continues it) and a line in the sweep's summary, not a crash of the sweep that leaves the other jobs unreported.

The plugin's own launch submits the jobs; only the wait for each job's result is runner's: it asks SLURM every
few seconds (submitit alone backs off to every 10 minutes) and turns a job that gave no result into its record.
"""

import sys
from pathlib import Path
from typing import Any, Sequence

from hydra.core.utils import JobReturn
from omegaconf import open_dict

from runner import rundir
from runner.sweeps import slurm
from runner.sweeps.launcher import _Job

try:
    from hydra_plugins.hydra_submitit_launcher import config as plugin_config
    from hydra_plugins.hydra_submitit_launcher import submitit_launcher as plugin
except ImportError:  # the sweeps extra is not installed: hydra/launcher=submitit_* is not offered at all
    plugin = None


class _Ended:
    """A job that gave no result: its submitit job and what stopped it."""

    def __init__(self, job: Any, exc: BaseException):
        self.job, self.exc = job, exc


class FaultTolerant:
    """Mixed into the plugin's launchers (in hydra_plugins.runner_population_launcher.submitit_jobs, from the classes
    of each plugin scan): a job without a result becomes its record, the sweep goes on."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        import submitit

        original = submitit.Job.results
        on_slurm = self._EXECUTOR == "slurm"

        def results(job):
            slurm._wait(job, slurm=on_slurm)
            try:
                return original(job)
            except Exception as exc:  # noqa: BLE001 (killed, cancelled, timed out, out of memory: SLURM's word)
                return [_Ended(job, exc)]

        submitit.Job.results = results  # for this launch only: the plugin's own loop over its jobs
        try:
            returns = list(super().launch(job_overrides, initial_job_idx))
        finally:
            submitit.Job.results = original
        return [self._record(ret.job, ret.exc, list(overrides), initial_job_idx + i) if isinstance(ret, _Ended)
                else ret for i, (ret, overrides) in enumerate(zip(returns, job_overrides))]

    def _record(self, job: Any, exc: BaseException, overrides: list[str], num: int) -> JobReturn:
        """status.json made true for a job whose task ended without a result; its return as for a failed job."""
        config = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        with open_dict(config):
            config.hydra.job.num = num
        run_dir = Path(str(config.hydra.sweep.dir)) / str(config.hydra.sweep.subdir)
        from submitit.core.utils import UncompletedJobError

        says = "it left no result: killed, cancelled or lost" if isinstance(exc, UncompletedJobError) \
            else slurm._slurm_says(exc)
        task = "SLURM job" if self._EXECUTOR == "slurm" else "submitit task"
        line = f"{task} {job.job_id} ended {slurm._state(job)} before the run finished ({says})"
        record = rundir.read_status(run_dir) or {}
        if record.get("status") in (None, "running"):
            run_dir.mkdir(parents=True, exist_ok=True)
            rundir.fail(run_dir, line, "interrupted", resume=slurm._again(sys.argv), job=overrides,
                        slurm_job=str(job.job_id))
        return slurm._not_finished_return(_Job(num, config, run_dir))

