"""A population of sampled configurations: each seed its own draws of sample.*, the same on every split, recorded,
and trained with them."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from runner.config.schema import Config, SampleConfig
from runner.data.splits import Member
from runner.engine.hyper import member_values
from runner.sampling import draw, member_configs, record

RANGES = SampleConfig(lr=[1e-4, 1e-1], weight_decay=[1e-5, 1e-1], label_smoothing=[0.0, 0.2], seed=3)


def test_draws_are_log_uniform_in_range_seeded_and_the_same_for_a_seed_whatever_the_population():
    cfg = Config(sample=RANGES)
    values = [draw(cfg, s) for s in range(400)]
    lr = np.log10([v["lr"] for v in values])
    assert lr.min() >= -4 and lr.max() <= -1 and abs(lr.mean() - -2.5) < 0.1  # uniform in log10: mean -2.5
    smoothing = np.array([v["label_smoothing"] for v in values])
    assert smoothing.min() >= 0 and smoothing.max() <= 0.2 and abs(smoothing.mean() - 0.1) < 0.01
    other = Config(sample=SampleConfig(**{**vars(RANGES), "seed": 4}))
    assert draw(cfg, 7) == values[7] and draw(other, 7) != values[7]
    assert "label_smoothing" not in draw(cfg, 7, regression=True) and draw(cfg, 7, True)["lr"] == values[7]["lr"]
    u = np.random.default_rng([3, 7]).random(3)  # the stream (sample.seed, trainer seed), one number per key
    assert values[7]["lr"] == pytest.approx(math.exp(math.log(1e-4) + u[0] * (math.log(1e-1) - math.log(1e-4))))


def test_each_member_reads_its_seeds_draws_on_every_split():
    cfg = Config(sample=RANGES)
    members = [Member(index=2 * f + s, fold=f, repeat=0, seed=s, train=np.arange(3), val=np.arange(0),
                      test=np.arange(0)) for f in range(3) for s in range(2)]
    own = member_values(cfg, member_configs(cfg, members), len(members))
    for m in members:
        for key, value in draw(cfg, m.seed).items():
            assert own[key][m.index] == value
    assert member_configs(Config(), members) is None  # nothing sampled: the shared config


def test_a_sampled_run_trains_each_seed_with_its_draws_and_records_them(tmp_path, train):
    run = tmp_path / "run"
    status, _, _ = train("eval=kfold", "eval.k=2", "trainer.seeds=3", "trainer.epochs=2", "sample.lr=[1e-3,1e-1]",
                         "sample.seed=5", "trainer.progress=false", "plots=false", f"hydra.run.dir={run}")
    assert status == 0
    results = json.loads((run / "results.json").read_text())
    cfg = Config(sample=SampleConfig(lr=[1e-3, 1e-1], seed=5))
    assert results["sampled"] == record(cfg, [0, 1, 2])
    history = pd.read_csv(run / "metrics.csv")
    splits = {s["member"]: s["seed"] for s in json.loads((run / "split_indices.json").read_text())}
    for member, part in history.groupby("member"):  # a constant schedule: the member's lr is its seed's draw
        assert part["lr"].to_numpy() == pytest.approx(draw(cfg, splits[member])["lr"])


@pytest.mark.parametrize("override,needle", [
    ("sample.lr=[0,0.1]", "sample.lr=[0.0, 0.1] is not valid: use [low, high] with 0 < low <= high"),
    ("sample.label_smoothing=[0.1,1.5]", "sample.label_smoothing=[0.1, 1.5] is not valid"),
])
def test_bad_ranges_are_one_line_errors(tmp_path, train, override, needle):
    status, _, err = train(override, "trainer.progress=false", f"hydra.run.dir={tmp_path}/run")
    assert status == 2 and needle in err and "Traceback" not in err
