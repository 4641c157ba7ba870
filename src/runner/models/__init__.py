"""Models built from stacked parameters; `build_model` maps a config name to its builder."""

from runner.config import ModelConfig
from runner.errors import RunnerError
from runner.models.mlp import MLP
from runner.models.stacked import Population

BUILDERS = {"mlp": MLP, "logreg": MLP}


def build_model(cfg: ModelConfig, members: int, d_in: int, d_out: int) -> Population:
    """A population of `members` independent models of the configured kind."""
    if cfg.name not in BUILDERS:
        raise RunnerError(f"model={cfg.name!r} is not known; choose one of: {', '.join(sorted(BUILDERS))}")
    return BUILDERS[cfg.name](cfg, members, d_in, d_out)


__all__ = ["Population", "build_model"]
