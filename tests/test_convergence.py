"""The under-training notice: most members' best validation epoch in the last 5% of trainer.epochs."""

import json

import pytest

from runner.evaluate.convergence import under_training


def test_the_last_5_percent_of_200_epochs_is_the_last_10():
    # 0-based best epochs: 190 is the 191st epoch, the first of the last 10
    late = under_training([199, 198, 190, 120], 200)
    assert late["members"] == 3 and late["of"] == 4 and late["last_epochs"] == 10
    assert late["mean_best_epoch"] == pytest.approx((200 + 199 + 191 + 121) / 4)
    assert late["change"] == ["trainer.epochs", "optim.lr"]
    assert "trainer.epochs=200" in late["message"] and "optim.lr" in late["message"]
    assert under_training([189, 189, 199, 199], 200) is None  # half is not most
    assert under_training([199, 189, 120], 200) is None


def test_a_few_epochs_count_the_last_one_and_members_without_validation_do_not_count():
    assert under_training([4, 4, 3], 5)["last_epochs"] == 1  # 5% of 5 epochs rounds up to one
    assert under_training([3, 3, 4], 5) is None
    assert under_training([-1, -1, 4], 5)["of"] == 1  # no validation: no best epoch
    assert under_training([-1, -1], 5) is None


def _run(tmp_path, train, name, *overrides):
    run = tmp_path / name
    status, out, _ = train(*overrides, "trainer.progress=false", "eval.baselines=[]", "plots=false",
                           f"hydra.run.dir={run}")
    assert status == 0
    return json.loads((run / "results.json").read_text()), " ".join(out.split())  # as one line, unwrapped


def test_five_epochs_say_so_on_the_console_and_in_results_json(tmp_path, train):
    results, out = _run(tmp_path, train, "short", "trainer.epochs=5", "trainer.seeds=3")
    late = results["under_training"]
    assert late["epochs"] == 5 and late["members"] > late["of"] / 2
    assert "notice:" in out and "trainer.epochs=5" in out and "optim.lr" in out
    assert out.count("still improving") == 1


def test_a_converged_run_says_nothing(tmp_path, train):
    # A large step size and patience 3: every member stops well before epoch 100 with its best behind it.
    results, out = _run(tmp_path, train, "converged", "trainer.epochs=100", "trainer.early_stopping.patience=3",
                        "optim.lr=0.05", "trainer.seeds=2")
    assert results["epochs"]["mean_trained"] < 95
    assert "under_training" not in results and "still improving" not in out
