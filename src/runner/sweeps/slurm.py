"""`hydra/launcher=population_slurm`: a sweep's population groups as SLURM tasks (one job array), each trained on
its compute node exactly as the local population launcher trains it; a cancelled or killed task is a status.

On the submitting machine: every job is composed, the finished ones are skipped, the rest are planned and
grouped (runner.sweeps.population), and a group larger than `max_members` is cut into several tasks. Each task
carries only configs; on its node it re-plans its jobs (data and device are resolved there), trains each group
as one population with the group's fit state (so the same command continues it), and writes each job's run
folder. Whatever a task could not write (killed, cancelled before it started, refused), the submitter writes
into status.json from what SLURM says, so the sweep's summary lists every job.

Another Hydra app's jobs (its task function is not runner's) go out one task per job, and each job's return, its
exception included, reaches the sweeper as Hydra's submitit launcher delivers it.
"""

import logging
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, setup_globals
from omegaconf import OmegaConf

from runner import rundir
from runner.config.compose import task_config
from runner.errors import Interrupted, RunnerError
from runner.sweeps.launcher import PopulationLauncher, _finished_return, _Job, _plan

log = logging.getLogger(__name__)


@dataclass
class PopulationSlurmConf:
    """hydra.launcher.* for hydra/launcher=population_slurm, small defaults that fit a small partition (a GPU task:
    gpus_per_node=1 trainer.device=cuda); every key: hydra.launcher.KEY=VALUE. Example:
    runner train -m hydra/launcher=population_slurm optim.lr=0.01,0.001 optim.weight_decay=0,1e-4 trainer.seeds=5"""

    _target_: str = "hydra_plugins.runner_population_launcher.population_slurm_launcher.PopulationSlurmLauncher"
    cluster: str = "slurm"  # slurm; local or debug: submitit's executors on this machine (the same path, no SLURM)
    submitit_folder: str = "${hydra.sweep.dir}/.submitit/%j"
    max_members: Optional[int] = None  # members per task: a larger group goes out as several tasks (null: no cap)
    partition: Optional[str] = None
    account: Optional[str] = None
    qos: Optional[str] = None
    timeout_min: int = 60
    cpus_per_task: int = 1
    mem_gb: float = 2.0
    gpus_per_node: int = 0
    timeout_min_per_member: float = 0.0  # added per member of the task: resources that scale with the group
    mem_gb_per_member: float = 0.0
    array_parallelism: int = 64
    signal_delay_s: int = 60  # SIGUSR2 this long before the time limit: the task saves its fit state and stops
    max_requeues: int = 2  # a task stopped that way is requeued (scontrol requeue) and continues its fit state
    setup: List[str] = field(default_factory=list)  # shell lines run before the task (module load, source venv)
    additional_parameters: Dict[str, Any] = field(default_factory=dict)  # more sbatch options, {name: value}


def chunks(members: list[int], cap: Optional[int]) -> list[list[int]]:
    """Positions of a group's jobs cut into consecutive tasks of at most `cap` members each (a job with more
    members than `cap` is a task of its own; a job is never split). cap None: one task."""
    if cap is not None and cap < 1:
        raise RunnerError(f"hydra.launcher.max_members={cap}: give at least 1 (members per SLURM task), or null")
    out: list[list[int]] = []
    size = 0
    for i, m in enumerate(members):
        if out and (cap is None or size + m <= cap):
            out[-1].append(i)
            size += m
        else:
            out.append([i])
            size = m
    return out


class PopulationSlurmLauncher(PopulationLauncher):
    """The population launcher whose groups train as SLURM tasks (a job array), one task per group or chunk."""

    def __init__(self, **params: Any) -> None:
        super().__init__()
        self.params = {k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
                       for k, v in params.items()}

    def launch(self, job_overrides, initial_job_idx: int) -> list[JobReturn]:
        """Every job composed here, then sent out as tasks (another app's too: one task per job)."""
        if self.runner_app:
            return super().launch(job_overrides, initial_job_idx)
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        log.info(f"Launching {len(job_overrides)} jobs on {self.params.get('cluster') or 'slurm'}")
        jobs = [self._compose(initial_job_idx + i, overrides) for i, overrides in enumerate(job_overrides)]
        returns = self._train(jobs)
        return [returns[job.num] for job in jobs]

    def _train(self, todo: list[_Job]) -> dict[int, JobReturn]:
        """Plan and group `todo` here, submit one task per group (or chunk of one), wait, and return every job's
        return, from the task or, where the task gave none, from what SLURM and the job's folder say."""
        from runner.sweeps.population import groups

        if not todo:
            return {}
        keys = [_plan(job) if self.runner_app else None for job in todo]
        tasks: list[list[_Job]] = []
        for members in groups(keys):
            group = [todo[i] for i in members]
            if keys[members[0]] is None:  # runs alone (or fails alone, with its own error)
                tasks.append(group)
                continue
            sizes = [len(job.study.members) for job in group]
            tasks += [[group[i] for i in part] for part in chunks(sizes, self.params.get("max_members"))]
        submitted = self._submit(tasks)
        returns: dict[int, JobReturn] = {}
        for jobs, (slurm_job, error) in zip(tasks, submitted):
            returns.update(self._collect(jobs, slurm_job, error))
        return returns

    def _submit(self, tasks: list[list[_Job]]) -> list[tuple[Any, Optional[str]]]:
        """One job array per distinct resource request; returns each task's submitit job (or None and the
        reason SLURM refused it)."""
        import submitit

        from runner.console import console
        from runner.sweeps.population import job_numbers

        if (self.params.get("cluster") or "slurm") == "slurm" and shutil.which("sbatch") is None:
            raise RunnerError("hydra/launcher=population_slurm: no sbatch on PATH; submit from a SLURM login node, "
                              "or train here with hydra/launcher=population (or hydra.launcher.cluster=local)")
        folder = self.params.get("submitit_folder") or str(Path(str(self.config.hydra.sweep.dir)) / ".submitit/%j")
        executor = submitit.AutoExecutor(folder=folder, cluster=self.params.get("cluster") or "slurm")
        by_request: dict[tuple, list[int]] = {}
        for t, jobs in enumerate(tasks):
            members = sum(len(job.study.members) if job.study is not None else 1 for job in jobs)
            by_request.setdefault(tuple(sorted(self._resources(members).items())), []).append(t)
        out: list[tuple[Any, Optional[str]]] = [(None, None)] * len(tasks)
        state = Singleton.get_state()
        argv = list(sys.argv)
        for request, positions in by_request.items():
            executor.update_parameters(**dict(request))
            try:
                with executor.batch():
                    pending = [executor.submit(self._task, [_payload(job) for job in tasks[t]], argv, state)
                               for t in positions]
                for t, slurm_job in zip(positions, pending):
                    out[t] = (slurm_job, None)
                    members = sum(len(job.study.members) if job.study is not None else 1 for job in tasks[t])
                    console.print(f"SLURM job {slurm_job.job_id}: {job_numbers([j.num for j in tasks[t]])} "
                                  f"({members} member{'s' * (members > 1)})")
            except (submitit.core.utils.FailedJobError, submitit.core.utils.FailedSubmissionError, OSError) as exc:
                # sbatch refused the array (or is not there): every job of it fails with SLURM's line
                line = _slurm_says(exc)
                for t in positions:
                    out[t] = (None, f"SLURM refused the task: {line}; ask for what the partition has "
                                    "(hydra.launcher.cpus_per_task, mem_gb, timeout_min, partition)")
        return out

    def _resources(self, members: int) -> dict[str, Any]:
        """submitit's parameters for a task of `members` members."""
        p = self.params
        timeout = int(round(p.get("timeout_min", 60) + p.get("timeout_min_per_member", 0.0) * members))
        mem_gb = p.get("mem_gb", 2.0) + p.get("mem_gb_per_member", 0.0) * members
        out: dict[str, Any] = {"timeout_min": max(timeout, 1), "cpus_per_task": p.get("cpus_per_task", 1),
                               "nodes": 1, "tasks_per_node": 1, "name": str(self.config.hydra.job.name)}
        if (p.get("cluster") or "slurm") != "slurm":
            return out
        out.update(slurm_mem=f"{max(int(mem_gb * 1024), 1)}M", slurm_array_parallelism=p.get("array_parallelism", 64),
                   slurm_signal_delay_s=p.get("signal_delay_s", 60))
        if p.get("gpus_per_node"):
            out["gpus_per_node"] = p["gpus_per_node"]
        for key in ("partition", "account", "qos"):
            if p.get(key):
                out[f"slurm_{key}"] = p[key]
        if p.get("setup"):
            out["slurm_setup"] = tuple(p["setup"])
        if p.get("additional_parameters"):
            out["slurm_additional_parameters"] = tuple(sorted(p["additional_parameters"].items()))
        return out

    def _task(self, jobs: list[_Job], argv: list[str], singleton_state: dict) -> dict[int, JobReturn]:
        """On the compute node: re-plan the task's jobs, train each group as one population with its fit state,
        write each job's folder; a stop signal marks the jobs not yet finished `interrupted`."""
        from runner.sweeps.population import groups

        Singleton.set_state(singleton_state)
        setup_globals()
        sys.argv = argv  # the resume line a job's status.json gives is the submitting command
        previous = _stop_on_signals()
        returns: dict[int, JobReturn] = {}
        try:
            keys = [_plan(job) if self.runner_app else None for job in jobs]
            for number, members in enumerate(groups(keys), 1):
                group = [jobs[i] for i in members]
                if keys[members[0]] is None:  # the ordinary run, which also records its own error
                    ret = self._run(group[0], self.task_function)
                    returns[group[0].num] = ret
                    if ret.status == JobStatus.FAILED and isinstance(ret._return_value, Interrupted):
                        raise ret._return_value
                    continue
                _say_resume(group)
                returns.update(self._run_group(number, group))  # a group of one too: it keeps its fit state
        except (Interrupted, KeyboardInterrupt) as stop:
            if not self.runner_app:
                raise

            line = str(Interrupted.of(stop))
            for job in jobs:
                if job.num not in returns and not rundir.is_finished(job.run_dir):
                    job.run_dir.mkdir(parents=True, exist_ok=True)
                    if (rundir.read_status(job.run_dir) or {}).get("status") != "interrupted":
                        rundir.fail(job.run_dir, line, "interrupted", resume=_again(argv),
                                    job=_overrides(job))
            if getattr(stop, "signum", None) == signal.SIGUSR2 and _requeue(self.params.get("max_requeues", 0)):
                raise SystemExit(-1) from None  # no result: the submitter waits for the requeued run
        finally:
            for signum, handler in previous.items():  # cluster=debug runs the task in the submitting process
                signal.signal(signum, handler)
        for ret in returns.values():
            if ret.status == JobStatus.FAILED and self.runner_app:
                # runner's record is status.json; a failed return would stop Hydra's sweeper. Another app's
                # failure reaches the sweeper as Hydra's own launchers deliver it: FAILED, with its exception.
                ret.status, ret.return_value = JobStatus.COMPLETED, None
            ret.hydra_cfg = None  # the submitter has it
        return returns

    def _collect(self, jobs: list[_Job], slurm_job: Any, refused: Optional[str]) -> dict[int, JobReturn]:
        """Wait for a task; each of its jobs' return, and status.json made true where the task could not."""
        result: dict[int, JobReturn] = {}
        line = refused
        if slurm_job is not None:
            never = _wait(slurm_job, slurm=(self.params.get("cluster") or "slurm") == "slurm")
            if never:
                refused = line = (f"SLURM will never start job {slurm_job.job_id} (pending: {never}); ask for what "
                                  "the partition has (hydra.launcher.cpus_per_task, mem_gb, timeout_min, partition)")
            else:
                try:
                    result = slurm_job.result()
                except Exception as exc:  # noqa: BLE001 (killed, cancelled, out of memory, node lost: SLURM's word)
                    if not self.runner_app:
                        raise  # as Hydra's submitit launcher: the task's failure is the sweep's
                    state = _state(slurm_job)
                    line = f"SLURM job {slurm_job.job_id} ended {state} before its jobs finished ({_slurm_says(exc)})"
        returns: dict[int, JobReturn] = {}
        for job in jobs:
            if job.num in result:
                ret = result[job.num]
                ret.hydra_cfg = job.config
                returns[job.num] = ret
                continue
            if not self.runner_app:
                raise RunnerError(f"job {job.num} gave no result: {line or 'the task gave none'}")
            if rundir.is_finished(job.run_dir):
                returns[job.num] = _finished_return(job)
                continue
            record = rundir.read_status(job.run_dir) or {}
            if record.get("status") in (None, "running") or line:
                job.run_dir.mkdir(parents=True, exist_ok=True)
                stopped = line or "the SLURM task gave no result"
                kind = "failed" if refused else "interrupted"
                if record.get("status") in ("interrupted", "failed") and not refused:
                    kind = record["status"]
                    stopped = record.get("error") or stopped
                rundir.fail(job.run_dir, stopped, kind, resume=None if refused else _again(sys.argv),
                            job=_overrides(job), slurm_job=None if slurm_job is None else str(slurm_job.job_id))
            returns[job.num] = _not_finished_return(job)
        return returns


def _payload(job: _Job) -> _Job:
    """The job as it travels: its config and folder, not its planned data."""
    return _Job(job.num, job.config, job.run_dir)


def _overrides(job: _Job) -> list[str]:
    return list(OmegaConf.to_container(job.config.hydra.overrides.task))


def _again(argv: list[str]) -> str:
    return f"runner train {' '.join(argv[1:])}"


def _say_resume(group: list[_Job]) -> None:
    """On the task's log: the epoch a group continues from, when its fit state is there."""
    from runner.sweeps.population import state_file

    state = state_file(group[0].run_dir, [_overrides(job) for job in group])
    if state.is_file():
        import torch

        epoch = int(torch.load(state, weights_only=True, map_location="cpu")["epoch"])
        print(f"continuing the group's fit from epoch {epoch + 1} ({state})", flush=True)


def _stop_on_signals() -> dict:
    """A task's SIGTERM (scancel, the time limit) stops it through Interrupted, as a local run stops. SIGUSR2
    (submitit's warning, signal_delay_s before the limit) stops only training, whose own handler saves the fit
    state first; while the task plans or writes its jobs' folders it finishes that (a SIGTERM still stops it).
    Returns the handlers it replaced."""
    def stop(signum, frame):
        raise Interrupted(signum)

    def warned(signum, frame):
        print("SIGUSR2: the time limit is near; the task goes on (SIGTERM stops it)", flush=True)

    return {signal.SIGTERM: signal.signal(signal.SIGTERM, stop), signal.SIGUSR2: signal.signal(signal.SIGUSR2, warned)}


def _requeue(limit: int) -> bool:
    """Put this SLURM task back in the queue (it continues from the fit state it just saved), at most `limit`
    times; False outside SLURM, past the limit, or where the cluster refuses (JobRequeue=0)."""
    import os
    import subprocess

    job = os.environ.get("SLURM_JOB_ID")
    if job is None or int(os.environ.get("SLURM_RESTART_COUNT", "0")) >= limit:
        return False
    if "SLURM_ARRAY_JOB_ID" in os.environ:
        job = f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the requeue stops this run: no result may be written now
    try:
        done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return False
    print(f"requeued SLURM job {job}" if done.returncode == 0 else f"not requeued: {done.stderr.strip()}", flush=True)
    return done.returncode == 0


# squeue's reasons for a pending job that no wait will start (its request exceeds what the partition allows).
NEVER = ("PartitionConfig", "PartitionNodeLimit", "PartitionTimeLimit", "BadConstraints", "InvalidAccount",
         "InvalidQOS", "QOSMaxCpuPerJobLimit", "QOSMaxMemoryPerJob", "AssocMaxCpuPerJobLimit", "MaxCpuPerAccount")


def _wait(slurm_job: Any, poll_s: float = 1.0, slurm: bool = True) -> Optional[str]:
    """Until the task wrote its result or SLURM says it ended (asked every few seconds: submitit alone asks
    less and less often, up to every 10 minutes, so a killed task would be noticed late). A task that SLURM
    will never start is cancelled: returns squeue's reason (None otherwise)."""
    last = 0.0
    while True:
        if slurm_job.paths.result_pickle.exists():
            return None
        force = time.monotonic() - last > 3 * poll_s
        if force:
            last = time.monotonic()
        if slurm_job.done(force_check=force):
            return None
        if force and slurm and (reason := _pending_reason(str(slurm_job.job_id))) in NEVER:
            slurm_job.cancel(check=False)
            return reason
        time.sleep(poll_s)


def _pending_reason(job_id: str) -> Optional[str]:
    """squeue's reason while the job is pending (None: not pending, or squeue cannot say)."""
    import subprocess

    try:
        out = subprocess.run(["squeue", "-h", "-t", "PENDING", "-j", job_id, "-o", "%r"], capture_output=True,
                             text=True, timeout=30).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return None
    return out[0] if out else None


def _state(slurm_job: Any) -> str:
    try:
        return str(slurm_job.state)
    except Exception:  # noqa: BLE001 (sacct unreachable: the state is unknown, the record still written)
        return "UNKNOWN"


def _slurm_says(exc: BaseException) -> str:
    """The line of an exception from submitit that says what SLURM said (sbatch's error, the job's state)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in lines:
        if "error:" in line.lower():
            return line[:300]
    return (lines[0] if lines else type(exc).__name__)[:300]


def _not_finished_return(job: _Job) -> JobReturn:
    """A job the task did not finish: no objective, as run_task returns for a failed job (its status.json is the
    record, which the summary reads and the exit status follows)."""
    ret = JobReturn(overrides=_overrides(job), cfg=task_config(job.config), hydra_cfg=job.config,
                    working_dir=str(job.run_dir), task_name=job.config.hydra.job.name, status=JobStatus.COMPLETED)
    ret.return_value = None
    return ret
