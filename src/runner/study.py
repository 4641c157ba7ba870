"""The setup that `runner train` and the benchmark share: config -> data -> population plan -> preprocessing -> model."""

from dataclasses import dataclass

import numpy as np

from runner.config.checks import check_task, validate
from runner.config.schema import Config, name_of
from runner.data.dataset import Dataset
from runner.data.loading import load_dataset
from runner.data.preprocess import Preprocessed, input_width
from runner.data.splits import Member, describe_plan, population_plan
from runner.engine import losses
from runner.engine.device import configure_threads, resolve_device
from runner.engine.inputs import MemberInputs, batch_rows
from runner.engine.rows import PopulationData
from runner.errors import RunnerError
from runner.models import Population, build_model, module


@dataclass
class Study:
    """One configured experiment, planned: its dataset, loss, members and where they train."""

    cfg: Config
    dataset: Dataset
    loss: str
    members: list[Member]
    over: str  # what a ± over these members is over ("10 folds x 5 seeds")
    device: object  # torch.device

    @property
    def input_shape(self) -> tuple[int, ...]:
        ds = self.dataset
        return tuple(ds.images.shape[1:]) if ds.images is not None else (input_width(ds),)

    @property
    def outputs(self) -> int:
        return losses.output_size(self.loss, len(self.dataset.classes))


def plan(cfg: Config) -> Study:
    """Check the config, load the data and plan every member's rows."""
    validate(cfg)
    dataset = load_dataset(cfg.dataset)
    check_task(cfg, dataset.task, dataset.classes)
    dataset.codes = _codes(cfg, dataset)
    loss = losses.resolve_loss(name_of(cfg.loss.name), dataset.task)
    seeds = [cfg.trainer.seed + i for i in range(cfg.trainer.seeds)]
    members = population_plan(dataset.y, dataset.task, cfg.eval, seeds, cfg.ensemble.bagging)
    return Study(cfg, dataset, loss, members, describe_plan(members, cfg.eval),
                 resolve_device(name_of(cfg.trainer.device)))


def _codes(cfg: Config, dataset: Dataset) -> bool:
    """Whether the table's categorical columns go in as integer codes (dataset.encoding; auto: for a module class
    that takes cat_cardinalities), and that class's cat_cardinalities set in model.args (it is recorded with the
    run, so predict and resume rebuild the same embeddings)."""
    wanted = name_of(cfg.dataset.encoding)
    if wanted == "codes" and cfg.model.name != "module":
        raise RunnerError(f"dataset.encoding=codes gives integer codes for embedding layers, and "
                          f"model={cfg.model.name} "
                          "takes numbers: use dataset.encoding=onehot, or model=module with a class that embeds codes")
    takes = cfg.model.name == "module" and module.takes(cfg.model, module.CARDINALITIES)
    codes = bool(dataset.categorical) and (wanted == "codes" or wanted == "auto" and takes)
    blended = [f"aug.{k}={getattr(cfg.aug, k)}" for k in ("noise", "mixup") if getattr(cfg.aug, k)]
    if codes and blended:
        raise RunnerError(f"{' and '.join(blended)} would blend the integer codes of the categorical columns "
                          "(dataset.encoding gives codes to this model): drop it, or set dataset.encoding=onehot")
    if takes and module.CARDINALITIES not in (cfg.model.args or {}):
        cfg.model.args = {**(cfg.model.args or {}), module.CARDINALITIES: dataset.cardinalities if codes else []}
    return codes


def population(study: Study, members: list[Member], pre: Preprocessed) -> tuple[Population, PopulationData]:
    """A freshly initialized population for `members` and its data on the study's device."""
    cfg = study.cfg
    E = len(members)
    model = build_model(cfg.model, E, study.input_shape, study.outputs, study.loss).to(study.device)
    model.initialize([m.seed for m in members], name_of(cfg.model.init), pre.used)
    batch = batch_rows(cfg.trainer.batch_size, [m.train for m in members])
    configure_threads(cfg.trainer.threads, study.device, model.macs_per_step(batch))
    inputs = MemberInputs.from_preprocessed(pre, study.device, row_weights(cfg, study.dataset))
    data = PopulationData(inputs, [m.train for m in members], [m.val for m in members], [m.seed for m in members])
    return model, data


def row_weights(cfg: Config, dataset: Dataset) -> np.ndarray | None:
    """[n] training weight of each row: loss.class_weights of its class times its sample weight; None: all 1."""
    if dataset.weights is None and cfg.loss.class_weights is None:
        return None
    w = np.ones(len(dataset.y)) if dataset.weights is None else dataset.weights.copy()
    if cfg.loss.class_weights is not None:
        w = w * np.asarray(cfg.loss.class_weights, dtype=float)[dataset.y]
    return w


__all__ = ["Study", "plan", "population", "row_weights"]
