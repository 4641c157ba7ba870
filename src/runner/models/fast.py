"""The stacked fast path for a user's module built from standard layers: one batched op per layer for all members.

`plan` traces the module with torch.fx. When its forward is a chain of standard layers (Linear, Conv2d, batch
norm, dropout, pooling, Flatten, elementwise activations; nested Sequentials are flattened by the trace), each
layer runs once for the whole population: a Linear as one batched matmul over [E, B, in], a Conv2d as one grouped
convolution over a [B, E·C, H, W] layout (member e owns channels e·C..(e+1)·C-1), pooling and activations on
that layout directly. Anything else (a residual add, a custom op, control flow on values) takes the generic vmap
path, and `plan` says why. The parameters, their initialization, the dropout masks and the batch statistics are
the generic path's (FastPopulation is a FunctionalPopulation with another forward): the same weights either way.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn

from runner.models.functional import BatchNorm, Dropout, FunctionalPopulation
from runner.models.layers import batch_norm, dropout

# Layers that act on each value or each channel alone: run on either layout as they are.
ELEMENTWISE = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish, nn.Tanh,
               nn.Sigmoid, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.Softplus, nn.Softsign, nn.Tanhshrink,
               nn.Identity)
POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
CHANNELS_LAST = torch.channels_last
SUPPORTED = (nn.Linear, nn.Conv2d, nn.Flatten, BatchNorm, Dropout, *ELEMENTWISE, *POOLS)


@dataclass(frozen=True)
class Step:
    name: str  # the layer's qualified name in the module ('' for a call to torch.flatten)
    layer: nn.Module


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, (BatchNorm, Dropout)) or super().is_leaf_module(m, qualname)


def plan(template: nn.Module) -> tuple[list[Step] | None, str]:
    """The chain of layers the module's forward is, or None and why it must take the generic path."""
    try:
        graph = _Tracer().trace(template)
    except Exception as exc:  # noqa: BLE001 (the user's forward: anything fx cannot trace goes to vmap)
        return None, f"its forward cannot be traced ({type(exc).__name__})"
    steps, previous = [], None
    for node in graph.nodes:
        if node.op == "placeholder":
            if previous is not None:
                return None, "its forward takes more than one input"
            previous = node
            continue
        if node.op == "output":
            if node.args[0] is not previous:
                return None, "its forward returns something other than the last layer's output"
            break
        if len(node.users) > 1:
            return None, f"{node.target}'s output is used {len(node.users)} times (a branch or residual connection)"
        if node.kwargs or node.args[:1] != (previous,) or previous is None:
            return None, f"its forward is not a chain of layers (at {node.name})"
        step = _step(template, node)
        if isinstance(step, str):
            return None, step
        steps.append(step)
        previous = node
    return _pool_first(steps), "a chain of standard layers"


def _pool_first(steps: list[Step]) -> list[Step]:
    """ReLU then max-pool as max-pool then ReLU: the same values (max commutes with a non-decreasing function),
    4x fewer of them to activate."""
    steps = list(steps)
    for i in range(len(steps) - 1):
        if type(steps[i].layer) is nn.ReLU and type(steps[i + 1].layer) is nn.MaxPool2d:
            steps[i], steps[i + 1] = steps[i + 1], steps[i]
    return steps


def _step(template: nn.Module, node: fx.Node) -> Step | str:
    if node.op == "call_function" and node.target is torch.flatten and len(node.args) <= 2:
        start = node.args[1] if len(node.args) > 1 else 0
        return Step("", nn.Flatten(start, -1)) if isinstance(start, int) and start >= 1 else "it flattens the batch"
    if node.op != "call_module":
        return f"its forward calls {node.target if node.op == 'call_method' else getattr(node.target, '__name__', node.target)}"
    layer = template.get_submodule(node.target)
    if type(layer) not in SUPPORTED:  # exactly these: a subclass may have a forward of its own
        return f"{node.target} is {type(layer).__name__}"
    if isinstance(layer, nn.Conv2d) and layer.padding_mode != "zeros":
        return f"{node.target} pads with padding_mode={layer.padding_mode!r}"
    if isinstance(layer, nn.Flatten) and layer.start_dim < 1:
        return f"{node.target} flattens the batch"
    return Step(node.target, layer)


class FastPopulation(FunctionalPopulation):
    """E copies of a chain-of-layers module, each layer one batched op over the members."""

    def __init__(self, template: nn.Module, members: int, d_out: int, steps: list[Step]):
        super().__init__(template, members, d_out)
        self.steps = steps

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: [E, B, ...] -> [E, B, d_out]."""
        E, B = x.shape[:2]
        grouped = False  # False: [E, B, *row]; True: [B, E·C, H, W]
        for step in self.steps:
            layer = step.layer
            wants = (True if isinstance(layer, (nn.Conv2d, *POOLS)) or (isinstance(layer, BatchNorm) and layer.spatial == 2)
                     else None if isinstance(layer, ELEMENTWISE) else False)
            if wants is not None and wants != grouped:
                x = _grouped(x) if wants else _members(x, E)
                grouped = wants
            x = self._run(step, x, E, mask)
        return _members(x, E) if grouped else x

    def _param(self, step: Step, name: str, norm: bool = False) -> torch.Tensor | None:
        key = ("norm:" if norm else "") + f"{step.name}.{name}"
        return self.view(key) if key in self.slots else None

    def _run(self, step: Step, x: torch.Tensor, E: int, mask: torch.Tensor | None) -> torch.Tensor:
        layer = step.layer
        if isinstance(layer, nn.Linear):
            weight, bias = self._param(step, "weight"), self._param(step, "bias")
            shape = x.shape
            flat = x.reshape(E, -1, shape[-1])
            out = (torch.bmm(flat, weight.transpose(1, 2)) if bias is None
                   else torch.baddbmm(bias.unsqueeze(1), flat, weight.transpose(1, 2)))
            return out.view(*shape[:-1], weight.shape[1])
        if isinstance(layer, nn.Conv2d):
            weight, bias = self._param(step, "weight"), self._param(step, "bias")
            weight = weight.reshape(-1, *weight.shape[2:]).contiguous(memory_format=CHANNELS_LAST)
            return F.conv2d(x, weight, None if bias is None else bias.reshape(-1), layer.stride, layer.padding,
                            layer.dilation, groups=E * layer.groups)
        if isinstance(layer, BatchNorm):
            return self._norm(step, x, E, mask)
        if isinstance(layer, Dropout):
            active = layer.p > 0 and (self.training or self.sampling)
            return dropout(x, layer.p, self.noise, layer.stream) if active else x
        if isinstance(layer, nn.Flatten):
            end = layer.end_dim + 1 if layer.end_dim >= 0 else layer.end_dim
            return x.flatten(layer.start_dim + 1, end)
        return layer(x)  # elementwise or pooling: each value or channel alone

    def _norm(self, step: Step, x: torch.Tensor, E: int, mask: torch.Tensor | None) -> torch.Tensor:
        layer = step.layer
        mean_run, var_run = self.stat(layer.stat_name + ".mean"), self.stat(layer.stat_name + ".var")  # [E, 1, C]
        updating = None if self.updating is None else self.updating
        if layer.spatial == 2:  # [B, E·C, H, W] -> [B, E, C, H·W], statistics over the member's rows and pixels
            B, EC, H, W = x.shape
            C = EC // E
            xs = x.reshape(B, E, C, H * W)
            weight = None if mask is None else mask.T.reshape(B, E, 1, 1)
            out = batch_norm(xs, weight, (0, 3), mean_run.view(1, E, C, 1), var_run.view(1, E, C, 1),
                             None if updating is None else updating.view(1, E, 1, 1), self.training,
                             layer.momentum, layer.eps).reshape(B, EC, H, W)
            shape = (1, EC, 1, 1)
        else:  # [E, B, C, *rest], statistics over the member's rows (and any trailing positions)
            rest = x.dim() - 3
            view = (E, 1, x.shape[2]) + (1,) * rest
            weight = None if mask is None else mask.view(*mask.shape, *([1] * (rest + 1)))
            out = batch_norm(x, weight, (1, *range(3, x.dim())), mean_run.view(view), var_run.view(view),
                             None if updating is None else updating.view(E, *([1] * (rest + 2))), self.training,
                             layer.momentum, layer.eps)
            shape = view
        scale, shift = self._param(step, "weight", norm=True), self._param(step, "bias", norm=True)
        return out if scale is None else out * scale.reshape(shape) + shift.reshape(shape)


def _grouped(x: torch.Tensor) -> torch.Tensor:
    """[E, B, C, H, W] -> [B, E·C, H, W]."""
    E, B = x.shape[:2]
    # channels last: oneDNN's grouped convolution and pooling are fastest in that layout (as model=cnn).
    return x.transpose(0, 1).reshape(B, E * x.shape[2], *x.shape[3:]).contiguous(memory_format=CHANNELS_LAST)


def _members(x: torch.Tensor, E: int) -> torch.Tensor:
    """[B, E·C, ...] -> [E, B, C, ...]."""
    B = x.shape[0]
    return x.reshape(B, E, x.shape[1] // E, *x.shape[2:]).transpose(0, 1)
