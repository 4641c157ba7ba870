"""hydra/launcher=population_slurm: a sweep's population groups as SLURM tasks. The fast tests need no cluster;
the slow ones run against a real single-node SLURM cluster (.ci/slurm_cluster.sh, started by `make test-slurm`
and .ci/run) and skip with the reason where it cannot start (not root, no apt, a daemon that fails)."""

import csv
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import every_number

from runner.errors import Interrupted, RunnerError
from runner.sweeps.slurm import chunks

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / ".ci" / "slurm_cluster.sh"
RUNNER = Path(sys.executable).parent / "runner"
GRID = ["optim.lr=0.01,0.1", "optim.weight_decay=0,0.001", "trainer.seeds=5", "trainer.progress=false"]
QUICK = [*GRID, "trainer.epochs=30"]
# Long enough to be stopped in the middle (about 35 ms an epoch for the 20 members here), saving every 25 epochs.
LONG = [*GRID, "trainer.epochs=900", "trainer.early_stopping.patience=100000", "trainer.checkpoint_every=25"]


# --- without a cluster ------------------------------------------------------------------------------------

def test_chunks_cut_a_group_at_the_member_cap_and_never_split_a_job():
    assert chunks([5, 5, 5, 5], None) == [[0, 1, 2, 3]]
    assert chunks([5, 5, 5, 5], 10) == [[0, 1], [2, 3]]
    assert chunks([5, 5, 5, 5], 14) == [[0, 1], [2, 3]]
    assert chunks([5, 12, 3, 3], 10) == [[0], [1], [2, 3]]  # 12 members > cap: a task of its own
    assert chunks([1, 1, 1], 1) == [[0], [1], [2]]
    with pytest.raises(RunnerError, match="max_members=0"):
        chunks([5], 0)


def test_interrupted_survives_pickling_as_submitit_hands_it_back():
    stop = pickle.loads(pickle.dumps(Interrupted(signal.SIGTERM, Path("/runs/a"), saved=True)))
    assert (stop.signum, stop.status, stop.run_dir, stop.saved) == (15, 143, Path("/runs/a"), True)
    assert str(stop) == "interrupted by SIGTERM; fit state saved in /runs/a"


def test_a_sweep_dir_may_hold_submitit_links_but_nothing_else_may_be_a_link(tmp_path):
    from runner.rundir import refuse_links

    (tmp_path / ".submitit" / "7").mkdir(parents=True)
    (tmp_path / ".submitit" / ".submission_file_x.sh").symlink_to(tmp_path / ".submitit" / "7")
    refuse_links(tmp_path)  # submitit's own link to its submission script
    (tmp_path / "0").mkdir()
    (tmp_path / "0" / "results.json").symlink_to(tmp_path / "elsewhere.json")
    with pytest.raises(RunnerError, match="is a symbolic link"):
        refuse_links(tmp_path)


def test_resources_scale_with_the_task_members():
    from omegaconf import OmegaConf

    from runner.sweeps.slurm import PopulationSlurmLauncher

    launcher = PopulationSlurmLauncher(mem_gb=2.0, mem_gb_per_member=0.5, timeout_min=10, timeout_min_per_member=1.0,
                                       cpus_per_task=1, partition="small", qos=None)
    launcher.config = OmegaConf.create({"hydra": {"job": {"name": "train"}}})
    request = launcher._resources(20)
    assert request["slurm_mem"] == f"{12 * 1024}M" and request["timeout_min"] == 30
    assert request["slurm_partition"] == "small" and "slurm_qos" not in request and request["cpus_per_task"] == 1


def test_debug_cluster_gives_the_population_launchers_numbers(tmp_path, monkeypatch, capsys):
    """The whole submit path (plan, group, pickle the task, train it, collect) in this process: submitit's debug
    executor, where no SLURM is installed; the same numbers as hydra/launcher=population."""
    from runner.commands.cli import main

    monkeypatch.setattr(sys, "argv", sys.argv[:])
    quick = ["optim.lr=0.01,0.1", "trainer.seeds=2", "trainer.epochs=4", "trainer.progress=false"]
    assert main(["train", "-m", *quick, "hydra/launcher=population", f"hydra.sweep.dir={tmp_path / 'local'}"]) == 0
    assert main(["train", "-m", *quick, "hydra/launcher=population_slurm", "hydra.launcher.cluster=debug",
                 f"hydra.sweep.dir={tmp_path / 'debug'}"]) == 0
    capsys.readouterr()
    assert_same_numbers(numbers(tmp_path / "debug"), numbers(tmp_path / "local"))


# --- helpers ----------------------------------------------------------------------------------------------


def numbers(sweep_dir: Path) -> dict[str, dict]:
    return {p.name: every_number(json.loads((p / "results.json").read_text())) for p in sorted(sweep_dir.iterdir())
            if (p / "results.json").is_file()}


def assert_same_numbers(got: dict, want: dict, tol: float = 1e-6) -> None:
    assert sorted(got) == sorted(want) and want
    for job in want:
        assert got[job].keys() == want[job].keys(), job
        for key, value in want[job].items():
            if isinstance(value, float):
                assert abs(got[job][key] - value) <= tol, (job, key, got[job][key], value)
            else:
                assert got[job][key] == value, (job, key)


def statuses(sweep_dir: Path) -> dict[str, str]:
    """summary.csv's status of every job it lists, by run name."""
    with open(sweep_dir / "summary.csv", newline="") as f:
        return {row["run"]: row["status"] for row in csv.DictReader(f)}


def train(env, sweep_dir: Path, *args, launcher="population_slurm", timeout=600, background=False):
    command = [str(RUNNER), "train", "-m", *args, f"hydra/launcher={launcher}", f"hydra.sweep.dir={sweep_dir}"]
    if background:
        return subprocess.Popen(command, env=env, cwd=sweep_dir.parent, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
    return subprocess.run(command, env=env, cwd=sweep_dir.parent, capture_output=True, text=True, timeout=timeout)


def slurm_jobs(output: str) -> list[str]:
    """The SLURM job ids the launcher printed ('SLURM job 12: jobs 0-3 (20 members)')."""
    return [line.split()[2].rstrip(":") for line in output.splitlines() if line.startswith("SLURM job ")]


def task_logs(sweep_dir: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in sorted((sweep_dir / ".submitit").glob("*/*_log.out")))


def wait_until(condition, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if (value := condition()):
            return value
        time.sleep(0.5)
    raise AssertionError(f"{what} did not happen in {timeout_s}s")


def running_pid(sweep_dir: Path) -> int | None:
    """The pid of the task training job 0, once its status.json says running."""
    try:
        record = json.loads((sweep_dir / "0" / "status.json").read_text())
    except (OSError, ValueError):
        return None
    return record.get("pid") if record.get("status") == "running" else None


def saved_epoch(sweep_dir: Path) -> int:
    import torch

    (state,) = (sweep_dir / "0" / "checkpoints").glob("group_*_state.pt")
    return int(torch.load(state, weights_only=True)["epoch"])


# --- on the cluster ---------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def cluster():
    """The environment that reaches the local cluster (SLURM_CONF); started here if it is not up, and then
    stopped at the end."""
    if os.name != "posix" or os.geteuid() != 0:
        pytest.skip("the SLURM tests start a cluster's daemons as root; run them as root (make test-slurm)")
    if shutil.which("slurmctld") is None and shutil.which("apt-get") is None:
        pytest.skip("SLURM is not installed and there is no apt-get to install it")
    was_up = subprocess.run([str(SCRIPT), "status"], capture_output=True).returncode == 0
    started = subprocess.run([str(SCRIPT), "start"], capture_output=True, text=True, timeout=900)
    if started.returncode != 0:
        pytest.skip(f"the SLURM cluster cannot start here: {(started.stderr.strip().splitlines() or ['?'])[-1]}")
    conf = subprocess.run([str(SCRIPT), "env"], capture_output=True, text=True).stdout.split("=", 1)[1].strip()
    yield {**os.environ, "SLURM_CONF": conf, "COLUMNS": "200"}
    if not was_up:
        subprocess.run([str(SCRIPT), "stop"], capture_output=True)


def sacct_states(env, ids: list[str]) -> list[str]:
    """What SLURM's accounting says of each job, once they all ended (a task writes its result just before)."""

    def ended():
        out = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "State", "-j", ",".join(ids)], env=env,
                             capture_output=True, text=True, check=True).stdout
        states = [line.split()[0] for line in out.splitlines() if line.strip()]
        return states if not {"PENDING", "RUNNING", "COMPLETING"} & set(states) else None

    return wait_until(ended, 60, "the tasks' end")


def local_numbers(tmp_path_factory, name: str, args: list[str]) -> dict:
    """A grid's numbers from the population launcher on this machine, to compare the cluster's with."""
    where = tmp_path_factory.mktemp("local") / name
    done = train(os.environ.copy(), where, *args, launcher="population")
    assert done.returncode == 0, done.stdout + done.stderr
    return numbers(where)


@pytest.fixture(scope="module")
def local_quick(tmp_path_factory):
    return local_numbers(tmp_path_factory, "quick", QUICK)


@pytest.mark.slow
def test_a_grid_goes_out_as_one_task_per_group_with_the_local_numbers(cluster, local_quick, tmp_path):
    where = tmp_path / "sweep"
    done = train(cluster, where, *QUICK)
    assert done.returncode == 0, done.stdout + done.stderr
    ids = slurm_jobs(done.stdout)
    assert len(ids) == 1 and "jobs 0-3 (20 members)" in done.stdout  # 4 jobs x 5 seeds: one task
    assert sacct_states(cluster, ids) == ["COMPLETED"]
    assert_same_numbers(numbers(where), local_quick)
    assert set(statuses(where).values()) == {"ok"} and len(statuses(where)) == 4

    again = train(cluster, where, *QUICK)  # finished: nothing is submitted
    assert again.returncode == 0 and slurm_jobs(again.stdout) == [], again.stdout + again.stderr
    assert_same_numbers(numbers(where), local_quick)


@pytest.mark.slow
def test_a_member_cap_splits_the_group_into_tasks_with_the_same_numbers(cluster, local_quick, tmp_path):
    where = tmp_path / "sweep"
    done = train(cluster, where, *QUICK, "hydra.launcher.max_members=10")
    assert done.returncode == 0, done.stdout + done.stderr
    ids = slurm_jobs(done.stdout)
    assert len(ids) == 2 and "jobs 0, 1 (10 members)" in done.stdout and "jobs 2, 3 (10 members)" in done.stdout
    assert sacct_states(cluster, ids) == ["COMPLETED", "COMPLETED"]
    assert_same_numbers(numbers(where), local_quick)


@pytest.mark.slow
def test_a_bad_value_fails_that_job_alone(cluster, local_quick, tmp_path):
    where = tmp_path / "sweep"
    done = train(cluster, where, "optim.lr=0.01,0.1,-1", "optim.weight_decay=0", "trainer.seeds=5",
                 "trainer.progress=false", "trainer.epochs=30")
    assert done.returncode != 0
    assert statuses(where) == {"0": "ok", "1": "ok", "2": "failed"}, done.stdout + done.stderr
    error = json.loads((where / "2" / "status.json").read_text())["error"]
    assert "optim.lr" in error
    assert_same_numbers(numbers(where), {"0": local_quick["0"], "1": local_quick["2"]})  # wd=0 jobs of the grid


@pytest.mark.slow
def test_a_request_the_partition_cannot_meet_is_one_line_naming_slurms_words(cluster, tmp_path):
    where = tmp_path / "sweep"
    done = train(cluster, where, *QUICK, "hydra.launcher.cpus_per_task=512")
    assert done.returncode != 0
    assert statuses(where) == {str(i): "failed" for i in range(4)}
    error = json.loads((where / "0" / "status.json").read_text())["error"]
    # sbatch refuses it (EnforcePartLimits) or accepts it to pend forever (PartitionConfig): either is the line
    assert error.startswith(("SLURM refused the task: ", "SLURM will never start job ")) and "cpus_per_task" in error
    assert "Traceback" not in done.stderr


@pytest.fixture(scope="module")
def local_long(tmp_path_factory):
    return local_numbers(tmp_path_factory, "long", LONG)


def stop_in_the_middle(cluster, where: Path, stop) -> subprocess.CompletedProcess:
    """Start the long sweep, wait until its task trains and has saved a fit state, `stop(pid, job_id)` it;
    the finished submitting process."""
    proc = train(cluster, where, *LONG, background=True)
    pid = wait_until(lambda: running_pid(where), 120, "the task's start")
    wait_until(lambda: list((where / "0" / "checkpoints").glob("group_*_state.pt")), 120, "a saved fit state")
    job = subprocess.run(["squeue", "-h", "-o", "%i"], env=cluster, capture_output=True, text=True).stdout.split()[0]
    stop(pid, job)
    out, _ = proc.communicate(timeout=180)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, "")


def resume_and_check(cluster, where: Path, local_long) -> None:
    """The same command again continues the group from its saved epoch and ends with the local numbers."""
    epoch = saved_epoch(where)
    assert 0 < epoch < 899
    done = train(cluster, where, *LONG)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"continuing the group's fit from epoch {epoch + 1} " in task_logs(where)
    assert_same_numbers(numbers(where), local_long)
    again = train(cluster, where, *LONG)
    assert again.returncode == 0 and slurm_jobs(again.stdout) == []


@pytest.mark.slow
def test_scancel_leaves_the_jobs_interrupted_and_the_same_command_resumes(cluster, local_long, tmp_path):
    where = tmp_path / "sweep"
    done = stop_in_the_middle(cluster, where, lambda pid, job: subprocess.run(["scancel", job], env=cluster))
    assert done.returncode != 0
    assert statuses(where) == {str(i): "interrupted" for i in range(4)}, done.stdout
    record = json.loads((where / "3" / "status.json").read_text())
    assert record["error"].startswith("interrupted by SIGTERM; fit state saved")
    assert record["resume"].startswith("runner train -m ")
    resume_and_check(cluster, where, local_long)


@pytest.mark.slow
def test_kill_9_of_the_task_leaves_a_true_status_and_the_same_command_resumes(cluster, local_long, tmp_path):
    where = tmp_path / "sweep"
    done = stop_in_the_middle(cluster, where, lambda pid, job: os.kill(pid, signal.SIGKILL))
    assert done.returncode != 0
    assert set(statuses(where).values()) <= {"interrupted", "failed"} and len(statuses(where)) == 4, done.stdout
    record = json.loads((where / "0" / "status.json").read_text())
    assert "SLURM job" in record["error"] and "FAILED" in record["error"]
    resume_and_check(cluster, where, local_long)


@pytest.mark.slow
def test_a_time_limit_shorter_than_the_fit_requeues_the_task_and_loses_no_training(cluster, tmp_path):
    """timeout_min=1 on a fit of about 10 minutes (far longer than two limits on any machine), one requeue allowed: the first run saves its fit state on
    submitit's SIGUSR2 and is requeued, the requeued run continues from that epoch, and when it too runs out the
    jobs end interrupted with a later fit state, which the same command continues."""
    import re

    where = tmp_path / "sweep"
    limit = [*GRID, "trainer.epochs=20000", "trainer.early_stopping.patience=100000", "trainer.checkpoint_every=50",
             "hydra.launcher.timeout_min=1", "hydra.launcher.signal_delay_s=20", "hydra.launcher.max_requeues=1"]
    first = train(cluster, where, *limit)
    assert first.returncode != 0
    assert statuses(where) == {str(i): "interrupted" for i in range(4)}, first.stdout
    continued = re.search(r"continuing the group's fit from epoch (\d+) ", task_logs(where))
    assert continued, task_logs(where)  # the requeued run's log (SLURM rewrote the first run's)
    epoch = saved_epoch(where)
    assert epoch + 1 > int(continued.group(1)) > 1  # it trained on from where the first run stopped
    assert sacct_states(cluster, slurm_jobs(first.stdout))[0] in ("TIMEOUT", "COMPLETED", "FAILED")


@pytest.mark.slow
def test_bench_the_8_job_grid_one_task_per_job_vs_one_per_group(cluster, tmp_path, capsys):
    """lr x weight decay x width, 5 seeds each, on the local cluster: `hydra/launcher=submitit_slurm` (one task
    per job) against population_slurm (one task per group: the two widths); the same numbers, printed as a
    bench row (wall time and SLURM tasks)."""
    grid = ["optim.lr=0.01,0.1", "optim.weight_decay=0,0.001", "model.hidden=[16],[32]", "trainer.seeds=5",
            "trainer.epochs=100", "trainer.progress=false"]
    rows = {}
    for launcher, extra in (("submitit_slurm", ["hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1"]),
                            ("population_slurm", [])):
        where = tmp_path / launcher
        start = time.perf_counter()
        done = train(cluster, where, *grid, *extra, launcher=launcher)
        wall_s = time.perf_counter() - start
        assert done.returncode == 0, done.stdout + done.stderr
        tasks = len(list((where / ".submitit").glob("*/*_submitted.pkl")))
        rows[launcher] = (wall_s, tasks, numbers(where))
    assert_same_numbers(rows["population_slurm"][2], rows["submitit_slurm"][2])
    assert rows["submitit_slurm"][1] == 8 and rows["population_slurm"][1] == 2
    with capsys.disabled():
        print("\n8-job grid (lr x wd x width, 5 seeds, 100 epochs) on the local SLURM cluster:")
        for launcher, (wall_s, tasks, _) in rows.items():
            print(f"  {launcher:17s} {tasks} SLURM tasks  {wall_s:6.1f} s")


# --- one task per job: Hydra's submitit launchers with runner's fault handling --------------------------------

@pytest.mark.slow
def test_a_killed_job_of_a_one_task_per_job_sweep_is_a_status_and_the_summary_lists_every_job(tmp_path):
    """hydra/launcher=submitit_local (submitit_slurm and the slurm preset take the same path): kill -9 of one
    job's process leaves that job interrupted with what happened and how to go on, the other job finishes, the
    summary lists both, and the exit status is 1, where the plugin alone crashed the whole sweep."""
    where = tmp_path / "sweep"
    where.parent.mkdir(exist_ok=True)
    run = train(dict(os.environ), where, "optim.lr=0.01,0.02", "trainer.epochs=20000",
                "trainer.early_stopping.patience=null", "trainer.progress=false", launcher="submitit_local",
                background=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # until job 0 trains (its status.json names its process)
        record = json.loads((where / "0" / "status.json").read_text()) if (where / "0" / "status.json").is_file() \
            else {}
        if record.get("status") == "running" and record.get("pid"):
            break
        time.sleep(0.5)
    else:
        run.kill()
        pytest.fail("job 0 never started")
    os.kill(record["pid"], signal.SIGKILL)
    out, _ = run.communicate(timeout=300)
    assert run.returncode == 1, out
    killed = json.loads((where / "0" / "status.json").read_text())
    assert killed["status"] == "interrupted" and "left no result: killed, cancelled or lost" in killed["error"]
    assert killed["resume"].startswith("runner train -m ") and killed["job"][0] == "optim.lr=0.01"
    assert statuses(where) == {"0": "interrupted", "1": "ok"}, out
    assert "error: job 0 interrupted: submitit task" in out
