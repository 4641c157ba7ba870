"""runner's Optuna sweeper against hydra-optuna-sweeper, string by string: each search-space override gives the
distribution the stock plugin makes of it (its create_optuna_distribution_from_override, in Optuna 3's classes:
IntUniform -> IntDistribution, LogUniform -> FloatDistribution(log=True), DiscreteUniform(q) -> step=q), or one
line that names the stock plugin's behaviour. The stock options likewise: read with its meaning, or refused."""

import warnings

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus

from runner.errors import RunnerError
from runner.sweeps.search import distribution, search_space

optuna = pytest.importorskip("optuna")
d = optuna.distributions


def _stock(make):
    """A stock distribution as Optuna builds it (it moves `high` onto the step, with a warning)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return make()


def _read(text: str):
    return distribution(OverridesParser.create().parse_overrides([text])[0])


@pytest.mark.parametrize("text, stock", [
    ("x=interval(1, 5)", d.FloatDistribution(1.0, 5.0)),
    ("x=int(interval(1, 5))", d.IntDistribution(1, 5)),  # runner read it as floats before
    ("x=tag(log, interval(1e-4, 1e-1))", d.FloatDistribution(1e-4, 1e-1, log=True)),
    ("x=tag(log, int(interval(1, 5)))", d.IntDistribution(1, 5, log=True)),  # runner: floats before
    ("x=interval(2, 2)", d.FloatDistribution(2.0, 2.0)),
    ("x=choice(16, 32, 64)", d.CategoricalDistribution([16, 32, 64])),
    ("x=choice(0.0, 0.9)", d.CategoricalDistribution([0.0, 0.9])),
    ("x=sgd,adam", d.CategoricalDistribution(["sgd", "adam"])),
    ("x=choice(true, false)", d.CategoricalDistribution([True, False])),
    ("x=range(1, 6, 2)", _stock(lambda: d.IntDistribution(1, 6, step=2))),
    ("x=range(0, 9, 2)", _stock(lambda: d.IntDistribution(0, 9, step=2))),
    ("x=range(0.1, 0.55, 0.1)", _stock(lambda: d.FloatDistribution(0.1, 0.55, step=0.1))),
])
def test_a_search_space_string_gives_the_stock_plugins_distribution(text, stock):
    assert _read(text) == stock


def test_shuffle_range_is_categorical_over_the_range_as_in_the_stock_plugin():
    for _ in range(20):  # runner drew IntDistribution(2, 1) from a shuffled order before: 2 of 6 runs raised
        got = _read("x=shuffle(range(1, 3))")
        assert isinstance(got, d.CategoricalDistribution) and sorted(got.choices) == [1, 2]


@pytest.mark.parametrize("text, says", [
    ("x=range(1, 5)", "x=range(1, 5): hydra-optuna-sweeper samples 1 to 5, its stop included, where Hydra's range "
                      "stops before 5; write x=int(interval(1, 4)) (1 to 4 in both)"),
    ("x=range(0, 10, 2)", "x=range(0, 10, 2): hydra-optuna-sweeper samples 0 to 10, its stop included, where "
                          "Hydra's range stops before 10; write x=range(0, 9, 2) (0 to 8 in both)"),
    ("x=range(0.1, 0.5, 0.1)", "x=range(0.1, 0.5, 0.1): hydra-optuna-sweeper samples 0.1 to 0.5, its stop included, "
                               "where Hydra's range stops before 0.5; write x=range(0.1, 0.45, 0.1) (0.1 to 0.4 in "
                               "both)"),
    ("x=range(5, 1, -1)", "x=range(5, 1, -1): hydra-optuna-sweeper fails on a range that counts down; write "
                          "x=int(interval(2, 5)) (2 to 5 in both)"),
    ("x=glob(*)", "x=glob(*): hydra-optuna-sweeper cannot search Glob either"),
    ("x=interval(2, 1)", "x=interval(2, 1): needs start <= end"),
])
def test_a_difference_from_the_stock_plugin_is_refused_in_one_line(text, says):
    with pytest.raises(RunnerError) as refused:
        _read(text)
    assert str(refused.value).startswith(says) and "\n" not in str(refused.value)


def test_the_written_alternative_reads_the_same_in_both():
    assert _read("x=int(interval(1, 4))") == d.IntDistribution(1, 4)
    assert _read("x=range(0, 9, 2)") == _stock(lambda: d.IntDistribution(0, 8, step=2))


def test_a_choice_of_lists_which_the_stock_plugin_refuses_is_chosen_as_override_text():
    assert _read("x=choice([8], [16])") == d.CategoricalDistribution(["[8]", "[16]"])


def test_a_key_fixed_and_searched_is_fixed_as_in_the_stock_plugin_or_refused_where_the_order_would_differ():
    parse = OverridesParser.create().parse_overrides
    space = search_space(parse(["x=interval(0, 1)", "x=0.5", "y=choice(1, 2)"]))
    assert space.fixed == ["x=0.5"] and list(space.distributions) == ["y"]
    with pytest.raises(RunnerError, match=r"^x is fixed \(x=0.5\) and then searched \(x=interval\(0, 1\)\); "
                                          "hydra-optuna-sweeper keeps the fixed value: give one of them$"):
        search_space(parse(["x=0.5", "x=interval(0, 1)"]))


def test_chosen_values_go_back_as_overrides_hydra_reads_as_those_values():
    space = search_space(OverridesParser.create().parse_overrides(["x=choice(true, 1, 0.5, a)"]))
    assert [space.overrides({"x": v}) for v in (True, 1, 0.5, "a")] == [["x=true"], ["x=1"], ["x=0.5"], ["x=a"]]


def _sweeper(**options):
    from runner.sweeps.optuna import OptunaSweeper

    return OptunaSweeper(sampler=options.pop("sampler", "tpe"), seed=0, n_trials=2, n_jobs=1, params={}, **options)


@pytest.mark.parametrize("options, says", [
    ({"sampler": {"_target_": "optuna.samplers.TPESampler", "seed": 1}},
     "hydra.sweeper.sampler as an Optuna sampler (_target_ and arguments, hydra-optuna-sweeper's "
     "hydra/sweeper/sampler group) is not read here"),
    ({"custom_search_space": "app.extend"}, "hydra.sweeper.custom_search_space=app.extend: hydra-optuna-sweeper "
                                            "calls it with (config, trial)"),
    ({"search_space": {"x": {"type": "float", "low": 0, "high": 1}}},
     "hydra.sweeper.search_space is hydra-optuna-sweeper's deprecated form"),
    ({"max_failure_rate": 1.5}, "hydra.sweeper.max_failure_rate=1.5 must be a share between 0 and 1"),
])
def test_a_stock_option_runner_does_not_read_with_its_meaning_is_refused_in_one_line(options, says):
    with pytest.raises(RunnerError) as refused:
        _sweeper(**options)._refuse_differences()
    assert str(refused.value).startswith(says) and "\n" not in str(refused.value)


@pytest.mark.parametrize("direction, refused", [
    (None, None), ("maximize", None), (["maximize"], None),
    ("minimize", "hydra.sweeper.direction=minimize: runner's objective is val/accuracy, which is to maximize "
                 "(hydra-optuna-sweeper would minimize whatever the app returns)"),
    (["maximize", "minimize"], "hydra.sweeper.direction=['maximize', 'minimize']: hydra-optuna-sweeper optimizes "
                               "several objectives at once"),
])
def test_direction_may_only_say_what_the_selection_metric_says(direction, refused):
    sweeper = _sweeper(direction=direction)
    if refused is None:
        sweeper._refuse_direction("accuracy")
    else:
        with pytest.raises(RunnerError) as error:
            sweeper._refuse_direction("accuracy")
        assert str(error.value).startswith(refused)


def test_max_failure_rate_stops_the_search_after_a_batch_with_more_failures_as_in_the_stock_plugin(tmp_path):
    def ret(value, status=JobStatus.COMPLETED):
        out = JobReturn(status=status)
        out._return_value = value
        return out

    study = optuna.create_study()
    batch = [ret(0.8), ret(None), ret(RuntimeError("boom"), JobStatus.FAILED)]
    _sweeper(max_failure_rate=1.0)._stop_on_failures(batch, study, tmp_path)  # 2 of 3 <= 1.0: goes on
    _sweeper()._stop_on_failures(batch, study, tmp_path)  # null: runner's own rule, failed trials never stop it
    with pytest.raises(RunnerError, match=r"^2 of 3 trials of the batch failed, more than "
                                          r"hydra.sweeper.max_failure_rate=0.5 allows"):
        _sweeper(max_failure_rate=0.5)._stop_on_failures(batch, study, tmp_path)
    assert (tmp_path / "trials.csv").is_file()


def test_storage_and_study_name_are_the_studys_as_in_the_stock_plugin(tmp_path):
    from runner.sweeps.search import open_study

    url = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    study = open_study(tmp_path / "sweep", "accuracy", "tpe", 0, storage=url, study_name="mine")
    assert study.study_name == "mine" and (tmp_path / "elsewhere.db").is_file()
    assert not (tmp_path / "sweep" / "optuna.db").exists()
    assert open_study(tmp_path / "sweep", "accuracy", "tpe", 0).study_name == "runner"  # the defaults: runner's
    assert (tmp_path / "sweep" / "optuna.db").is_file()


def test_the_stock_sampler_group_on_runners_command_line_is_one_line(capsys, monkeypatch, tmp_path):
    import sys

    from runner.commands.cli import main

    monkeypatch.setattr(sys, "argv", sys.argv[:])
    status = main(["train", "-m", "hparams_search=heart_optuna", "hydra/sweeper/sampler=random",
                   f"hydra.sweep.dir={tmp_path / 's'}"])
    err = capsys.readouterr().err
    assert status == 2 and err.startswith("error: hydra/sweeper/sampler=random: hydra.sweeper.sampler as an Optuna "
                                          "sampler") and err.count("\n") == 1
