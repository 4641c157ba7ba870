"""A composed config checked before anything heavy is imported: its keys, its values, and the data it names."""

from omegaconf import DictConfig, OmegaConf

from runner.config.checks import check_task, validate
from runner.config.compose import unknown_key, unknown_keys
from runner.config.schema import Config
from runner.errors import RunnerError


def checked_config(cfg: DictConfig, clock=None) -> Config:
    """The composed config as a checked Config: no unknown keys, valid values, and readable data that suits
    them. Imports nothing heavy (no torch), so a bad config answers at once. `clock` (a timing.Stopwatch) books
    the checks to `config` and reading the data to `data`."""
    unknown = unknown_keys(OmegaConf.to_container(cfg, resolve=False))
    if unknown:
        raise RunnerError(unknown_key(unknown[0]))
    config: Config = OmegaConf.to_object(cfg)  # type: ignore[assignment]
    validate(config)
    if clock is not None:
        clock.lap("config")
    from runner.data.loading import load_dataset  # pandas: not for a config that fails its checks

    dataset = load_dataset(config.dataset)
    if clock is not None:
        clock.lap("data")
    check_task(config, dataset.task, dataset.classes)
    return config
