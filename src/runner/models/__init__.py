"""Models of a population: `build_model` maps a config name to its builder (stacked or generic vmap path)."""

from runner.config.schema import ModelConfig
from runner.errors import RunnerError
from runner.models import cnn_vmap, module
from runner.models.cnn import CNN
from runner.models.mlp import MLP
from runner.models.moe import MoE
from runner.models.stacked import Population

BUILDERS = {"mlp": MLP, "logreg": MLP, "cnn": CNN, "cnn_vmap": cnn_vmap.build, "moe": MoE, "module": module.build}


def build_model(cfg: ModelConfig, members: int, input_shape, d_out: int, loss: str = "mse") -> Population:
    """A population of `members` independent models of the configured kind; `input_shape` one row's shape,
    `loss` the task's loss (a mixture of experts mixes in its output space)."""
    if cfg.name not in BUILDERS:
        raise RunnerError(f"model={cfg.name!r} is not known; choose one of: {', '.join(sorted(BUILDERS))}")
    shape = (input_shape,) if isinstance(input_shape, int) else tuple(input_shape)
    model = BUILDERS[cfg.name](cfg, members, shape, d_out)
    model.loss_name = loss
    return model


__all__ = ["Population", "build_model"]
