"""How many members step together, and a population's fit in groups of that many.

Stacking is a speed-up, never a slow-down: for the user's own module (whose cost per member runner cannot know
in advance: an LSTM in turn, a ResNet through vmap) a few training steps of the whole population on its path and
of one member run as PyTorch runs it alone are timed before the fit, as cudnn.benchmark times its kernels, and
where one at a time is faster, the members train one after another. The groups train in turn, or side by side
in worker processes (engine/workers.py), each as its own fit, so each member trains exactly as it would in the
whole population (stacked equals alone), and memory holds a group's activations, not the population's.
"""

import copy
import math
import os
import time
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from runner.config.schema import Config, name_of
from runner.engine.averaging import Averaged
from runner.engine.loop import FitResult, fit
from runner.engine.rows import PopulationData
from runner.engine.workers import side_by_side
from runner.models.fast import FastPopulation
from runner.models.functional import FunctionalPopulation
from runner.models.looped import LoopPopulation, in_turn
from runner.models.stacked import Step
from runner.rundir.layout import fit_state_part, fit_state_parts

REPEATS = 5  # timed steps per way, after one to warm up; the fastest counts (the others waited on the machine)
# Timing stops after two timed steps each where one way is already this many times the decision's margin faster:
# further steps only lower each way's fastest, and a clear winner stays the winner (the rtdl ResNet's 5 members:
# 0.55 ms a member stacked against 1.6 ms in turn).
CLEAR = 2.0
# ... or once the timing has taken this long: a step long enough to fill it varies little against its own length,
# and each further round costs the fit a step of every way (a ResNet-18 layout's three ways: 0.6 s a round).
PROBE_SECONDS = 1.0
# Rows per member in a timed step: the training batch up to this many. A module whose compute grows with its rows
# (attention) loses its stacking gain at a full batch that 16 rows still showed (an FT-Transformer's 15 members: 2x
# per member step at 16 rows, 1.13x over the whole fit at 32); the memory budget holds the timed group's activations.
PROBE_ROWS = 64
# Rows per member in the forward that counts one member's activations (scaled to the batch).
COUNT_ROWS = 16
# The group stacks only where its timed step is at least this much faster per member than one member's in turn: a
# margin for the timing's noise, as one member at a time needs one member's memory. (Timed on 16 rows, the probe
# left out the activations and memory traffic of a full batch and needed 0.75: a ResNet-18 layout whose probe was
# a tie trained 2-3x slower stacked. On the batch, an FT-Transformer's probe at 0.84 trained 1.2x faster stacked.)
STACKED_WINS = 0.9
MEMORY_SHARE = 0.5  # trainer.memory_gb=null: a stacked group's activations may use this share of the free memory
# On the CPU (trainer.memory_gb=null) a stacked group may also add at most this share to the memory the process
# needs to train one member at a time: the machine's RAM is everyone's, and a stacked conv net gains little time on
# a CPU (on a GPU, whose memory is the fit's own and where stacking gains most, half its free memory bounds alone).
CPU_GROWTH = 0.5
# A training step's peak memory per byte its forward saves for backward: the backward's gradients of activations
# and the allocator's slack come on top (measured on the ResNet-18 layout: 1.3x in bytes allocated, 1.8x in the
# process's resident memory)
PEAK_PER_SAVED = 2.0
# A pass without gradients (validation, scoring) takes as many rows per member as keep its activations within this
# (a conv net's activations are tens of times its inputs: a chunk sized by inputs alone held 4 GB on a ResNet-18)
PASS_BYTES = 256 * 2**20
OPTIMIZER_COPIES = 4  # a member's parameters, gradient and two moments (Adam), float32


@dataclass
class Stacking:
    """How many members step together, and what chose it: seconds per member-step of each way timed, and where
    memory bounds it, a stacked member's estimated bytes against the budget."""

    at_once: int
    bound: str = ""  # what kept it below the population: "trainer.stack", "time" (in turn was faster), "memory"
    seconds: dict[str, float] = field(default_factory=dict)
    member_bytes: float | None = None  # one stacked member's activations (full batch) and optimizer state
    budget_bytes: float | None = None
    row_bytes: float | None = None  # one member's activations for one training row
    in_turn: bool = True  # one member at a time runs in turn, as PyTorch runs it; False: on the stacked fast path

    def rows_per_pass(self, batch: int) -> int | None:
        """Rows per member in a pass without gradients that keeps a group's activations within PASS_BYTES (at least
        a training batch); None where nothing was measured."""
        if self.row_bytes is None:
            return None
        return max(batch, int(PASS_BYTES // (self.at_once * self.row_bytes)))

    def record(self) -> dict:
        """What results.json keeps."""
        out = {"members_at_once": self.at_once, "seconds_per_member_step": self.seconds}
        if self.at_once == 1 and not self.in_turn:
            out["one_at_a_time"] = "stacked fast path"
        if self.member_bytes is not None:
            out.update(member_mib=round(self.member_bytes / 2**20, 3), budget_mib=round(self.budget_bytes / 2**20, 3))
        return out


def members_at_once(model, cfg: Config, data: PopulationData, batch: int, threads_free: bool = False) -> Stacking:
    """How many members step together: the whole population unless trainer.stack names a number; for the user's
    module, as many as the memory budget holds (trainer.memory_gb; by default half the free memory and, on the
    CPU, CPU_GROWTH more than one member at a time needs), or one member at a time in turn (as PyTorch runs it
    alone) where that was measured faster than such a stacked group on the population's own path. On the fast
    path, where the group does not clearly win, one member alone is timed there too (its channels-last
    convolutions can beat the module's own): the faster of the two ways of one at a time, each one member's
    memory, is what a stacked group must beat. A population whose members run in turn inside each step
    (models/looped.py) computes the same per member either way, and together its members share the step's other
    work: it steps as many together as the budget holds, untimed. With `threads_free` (a large step runner gave
    several CPU threads), `fewer_threads` then times the way chosen on those threads and on one."""
    E = model.n_members
    if cfg.trainer.stack != "auto":
        at_once = min(int(cfg.trainer.stack), E)
        return Stacking(at_once, "trainer.stack" if at_once < E else "")
    if E == 1 or name_of(cfg.model.name) != "module":
        return Stacking(E)
    x = _probe_inputs(data, min(batch, PROBE_ROWS))
    stacked = copy.deepcopy(model)
    row = _activation_bytes(stacked, x[:, :COUNT_ROWS]) / x[:, :COUNT_ROWS].shape[1]
    member = PEAK_PER_SAVED * row * batch + OPTIMIZER_COPIES * model.size * 4
    budget = _budget_bytes(cfg, model.flat.device, member)
    fits = min(E, max(1, int(budget // member)))
    if isinstance(model, LoopPopulation):  # members in turn either way: together they share the step's own work
        return Stacking(fits, "" if fits == E else "memory", {}, member, budget, row)
    alone = in_turn(model)
    group, turn = _seconds_per_member([stacked, alone], [x[:fits], x[:1]], decided)
    seconds = {f"{fits} stacked": group, "1 in turn": turn}
    one = math.inf
    if fits > 1 and isinstance(model, FastPopulation) and not decided(group, turn):  # then one member stacked
        one, again = _seconds_per_member([stacked, alone], [x[:1], x[:1]])  # (the stacked probe, down to one)
        turn = seconds["1 in turn"] = min(turn, again)
        seconds["1 stacked"] = one
    at_once = fits if group <= STACKED_WINS * min(one, turn) else 1
    bound = "" if at_once == E else "memory" if at_once == fits else "time"
    alone_in_turn = at_once > 1 or turn <= one
    if threads_free:  # the way chosen: one member in turn (its probe, down to one), or stacked
        seconds.update(fewer_threads(alone if at_once == 1 and alone_in_turn else copy.deepcopy(model), x[:at_once]))
    return Stacking(at_once, bound, seconds, member, budget, row, in_turn=alone_in_turn)


def fewer_threads(probe, x: torch.Tensor) -> dict[str, float]:
    """The way chosen (`probe`'s first members on x [size, rows, ...]) one training step at a time on the CPU threads
    torch was given and on one, taking turns, after one each to warm up; torch then keeps one thread where that was
    no slower (threads wait on each other at every op, and a machine's second core is not always a whole one: a
    ResNet-18 layout's 5 folds took 66-72 s on one thread and 83-87 s on two in one hour, 66-69 and 52-57 s in
    another). The way chosen, not one member of it, whose smaller ops gain less from threads: timing one member
    first would save a ResNet-18 layout 2 s where a group of 3 is chosen (1.1 s against 3.1 s), at the risk of
    keeping one thread for a group that two would train faster. Seconds per member step of each, for the record."""
    many = torch.get_num_threads()
    on_many, on_one = _seconds_per_member([probe, probe], [x, x], threads=[many, 1])
    torch.set_num_threads(1 if on_one <= on_many else many)
    return {f"{many} threads": on_many, "1 thread": on_one}


def decided(stacked: float, *alone: float) -> bool:
    """Whether seconds per member step stacked and one at a time (the ways timed) are CLEAR times past the margin:
    stacked against the fastest alone, or, with one way alone, also the other way round."""
    if stacked <= STACKED_WINS * min(alone) / CLEAR:
        return True
    return len(alone) == 1 and stacked >= CLEAR * STACKED_WINS * alone[0]


def _activation_bytes(probe, x: torch.Tensor) -> float:
    """Bytes one member's training forward on x's rows keeps for its backward (the tensors autograd saves, each
    storage once), per member."""
    seen: dict[tuple[int, int], int] = {}

    def pack(t: torch.Tensor):
        seen[(t.untyped_storage().data_ptr(), t.storage_offset())] = t.numel() * t.element_size()
        return t

    probe.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        probe(x, step=Step(real_rows=np.full(x.shape[0], x.shape[1])))
    return sum(seen.values()) / x.shape[0]


def _budget_bytes(cfg: Config, device: torch.device, member: float) -> float:
    """trainer.memory_gb, or MEMORY_SHARE of the memory free now (the GPU's, or the machine's available RAM); on
    the CPU at most CPU_GROWTH more than the process would hold training one `member` (bytes) at a time."""
    if cfg.trainer.memory_gb is not None:
        return cfg.trainer.memory_gb * 2**30
    if device.type == "cuda":
        return MEMORY_SHARE * torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            available = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):  # not Linux: free pages as the OS counts them
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    try:
        with open("/proc/self/statm") as f:
            resident = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, IndexError, ValueError):  # not Linux: the free-memory share alone
        return MEMORY_SHARE * available
    return min(MEMORY_SHARE * available, (1 + CPU_GROWTH) * (resident + member) - resident)


def _probe_inputs(data: PopulationData, rows: int) -> torch.Tensor:
    """Each member's first `rows` training rows, preprocessed as training gathers them: [E, rows, ...] (real rows:
    a module may embed integer codes or branch on its inputs' values)."""
    idx = torch.stack([torch.as_tensor(np.resize(train, rows)) for train in data.train])
    return data.inputs.x(idx.to(data.inputs.X.device))


def _seconds_per_member(probes: list, inputs: list[torch.Tensor], clear=None,
                        threads: list[int] | None = None) -> list[float]:
    """Each probe's training forward and backward on its inputs [size, rows, ...] (for the first `size` members of
    the probe, a copy which it changes), per member: the fastest of REPEATS steps after one to warm up, the probes
    taking turns step by step, so a busy machine slows each alike; two where `clear(*fastest so far)` says the
    timings already decide or the timing has taken PROBE_SECONDS. `threads`: torch's CPU threads for each probe's
    steps (the same probe may be timed on several counts)."""
    for probe, x in zip(probes, inputs):
        if len(x) < probe.n_members:
            probe.select(torch.arange(probe.n_members, device=probe.flat.device) < len(x))
        probe.train()
    seconds = [[] for _ in probes]
    began = time.perf_counter()
    for _ in range(REPEATS + 1):
        for i, (probe, x, times) in enumerate(zip(probes, inputs, seconds)):
            if threads is not None:
                torch.set_num_threads(threads[i])
            start = time.perf_counter()
            probe.flat.grad = None
            probe(x, step=Step(real_rows=np.full(len(x), x.shape[1]))).float().sum().backward()  # every row real
            if probe.flat.is_cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        fastest = [min(times[1:], default=0.0) / len(x) for times, x in zip(seconds, inputs)]
        if len(seconds[0]) >= 3 and (time.perf_counter() - began > PROBE_SECONDS or clear is not None and
                                     clear(*fastest)):
            break
    return fastest


def fit_in_groups(model, data: PopulationData, cfg: Config, loss: str, size: int, on_epoch=None,
                  epoch_budget: np.ndarray | None = None, checkpoint=None, member_cfgs=None,
                  alone_in_turn: bool = True, workers: int = 1) -> FitResult:
    """`fit` of the population in consecutive groups of at most `size` members; the result is the whole
    population's, as if all had stepped together. With `workers` > 1 the groups are at most E / workers members
    and train side by side, a share of them in each worker process (engine/workers.py); else one after another.
    Each group keeps its fit state in a file of its own, named by its members (a resumed fit takes the groups
    its files name, whatever the machine's cores and timings say now). Groups of one run in turn, as PyTorch runs
    the module alone, unless `alone_in_turn` is False (the stacked path measured faster)."""
    E = model.n_members
    groups = _saved_groups(checkpoint, E)
    if groups is None:
        size = min(size, -(-E // workers))
        groups = [list(range(start, min(start + size, E))) for start in range(0, E, size)]
    if len(groups) == 1:
        return fit(model, data, cfg, loss, on_epoch, epoch_budget, checkpoint, member_cfgs)
    if max(map(len, groups)) == 1 and alone_in_turn and isinstance(model, FunctionalPopulation):
        model = in_turn(model)  # as PyTorch runs it alone
    path = checkpoint.path if checkpoint is not None else None

    def train(g: int, report) -> FitResult:
        group = groups[g]
        keep = torch.zeros(E, dtype=torch.bool, device=model.flat.device)
        keep[group] = True
        part = copy.deepcopy(model)
        part.select(keep)
        part_data = PopulationData(data.inputs.select(keep), [data.train[i] for i in group],
                                   [data.val[i] for i in group], [data.seeds[i] for i in group])
        if checkpoint is not None:  # the same object: a stop signal sets its flag whichever group is training
            checkpoint.path = fit_state_part(path, group[0], len(group))
        try:
            return fit(part, part_data, cfg, loss, report, None if epoch_budget is None else epoch_budget[group],
                       checkpoint, None if member_cfgs is None else [member_cfgs[i] for i in group])
        finally:
            if checkpoint is not None:
                checkpoint.path = path

    quiet = on_epoch or (lambda epoch, active: None)
    workers = min(workers, len(groups))
    if workers > 1:
        shares = [list(range(w, len(groups), workers)) for w in range(workers)]
        done = side_by_side(shares, train, quiet, [len(g) for g in groups], cfg.trainer.epochs, checkpoint)
        return _joined([done[g] for g in range(len(groups))])
    return _joined([train(g, quiet) for g in range(len(groups))])


def _saved_groups(checkpoint, E: int) -> list[list[int]] | None:
    """On resume, the groups of members the saved fit states are for: one group where the whole population's state
    is there, else the groups the part files name, where they cover the population; None: choose afresh."""
    if checkpoint is None or not checkpoint.resume:
        return None
    if checkpoint.path.exists():
        return [list(range(E))]
    parts = fit_state_parts(checkpoint.path)
    firsts = sorted(parts)
    if not firsts or firsts[0] != 0 or any(a + parts[a] != b for a, b in zip(firsts, firsts[1:])) or \
            firsts[-1] + parts[firsts[-1]] != E:
        return None
    return [list(range(first, first + parts[first])) for first in firsts]


def _joined(results: list[FitResult]) -> FitResult:
    """The groups' results as one population's: members in order, histories padded with NaN to the longest."""
    epochs = max(len(next(iter(r.history.values()))) for r in results)

    def padded(values: np.ndarray) -> np.ndarray:
        out = np.full((epochs, values.shape[1]), np.nan)
        out[: len(values)] = values
        return out

    first = results[0]
    return replace(
        first,
        history={k: np.concatenate([padded(r.history[k]) for r in results], axis=1) for k in first.history},
        epochs_run=np.concatenate([r.epochs_run for r in results]),
        best_epoch=np.concatenate([r.best_epoch for r in results]),
        best=torch.cat([r.best for r in results]), last=torch.cat([r.last for r in results]),
        best_stats=torch.cat([r.best_stats for r in results]), last_stats=torch.cat([r.last_stats for r in results]),
        diverged_epoch=np.concatenate([r.diverged_epoch for r in results]),
        nonfinite_at_start=np.concatenate([r.nonfinite_at_start for r in results]),
        averages={name: Averaged(torch.cat([r.averages[name].flat for r in results]),
                                 torch.cat([r.averages[name].stats for r in results]),
                                 [e for r in results for e in r.averages[name].epochs])
                  for name in first.averages},
    )
