"""The stacked fast path for a user's module: its forward read with torch.fx and run layer by layer for all members.

`plan` traces the module and follows one row's shapes through it. Each standard layer (Linear, Conv2d, batch
norm, dropout, pooling, Flatten, elementwise activations) runs once for the whole population: a Linear as one
batched matmul over [E, B, in], a Conv2d as one grouped convolution over a channels-last [B, E·C, H, W] layout
(member e owns channels e·C..(e+1)·C-1), pooling and activations on that layout directly. Elementwise arithmetic
between activations (a residual add, a gate's product), group and layer norm, means, sums and maxima over a row's
dimensions and concatenations run on the stacked tensors too. Any other layer or operation runs through vmap on
its own, so the module still trains
stacked wherever it can. A forward fx cannot trace (Python control flow on values), or one that computes with
sizes or parameters outside a layer, takes the generic path: vmap over the whole forward; `plan` says why.

The parameters, their initialization, the dropout masks and the batch statistics are the generic path's
(FastPopulation is a FunctionalPopulation with another forward): the same weights either way.
"""

import operator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.func import functional_call

from runner.models.functional import BatchNorm, Dropout, FunctionalPopulation
from runner.models.layers import (StackedLinear, batch_norm, dropout, grouped_batch_norm, grouped_weight,
                                  member_batch_norm)
from runner.models.layers import grouped as to_grouped

# Layers that act on each value or each channel alone: run on either layout as they are.
ELEMENTWISE = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish, nn.Tanh,
               nn.Sigmoid, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.Softplus, nn.Softsign, nn.Tanhshrink,
               nn.Identity)
POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
STACKED = (nn.Linear, nn.Conv2d, nn.Flatten, nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm, nn.Dropout,
           *ELEMENTWISE, *POOLS)
REDUCTIONS = {"mean", "sum", "amax", "amin"}  # over dimensions of each member's rows other than the batch
# Functions and tensor methods that act on each value alone (with broadcasting between equal-rank operands).
ARITHMETIC = {operator.add, operator.sub, operator.mul, operator.truediv, operator.neg, torch.add, torch.sub,
              torch.mul, torch.relu, torch.sigmoid, torch.tanh, F.relu, F.gelu, F.silu, F.leaky_relu}
METHODS = {"add", "sub", "mul", "relu", "sigmoid", "tanh", "neg"}


@dataclass(frozen=True)
class Step:
    node: fx.Node
    kind: str  # "input", "output", "layer" (stacked), "reshape", "arithmetic", "reduce", "cat", "vmap" (alone)
    name: str = ""  # a layer's qualified name in the module


def plan(template: nn.Module, input_shape: tuple[int, ...]) -> tuple[list[Step] | None, str]:
    """How the population runs `template` (torch's own layers, before runner swaps its dropout and batch norm
    in), node by node; or None and why it must take the generic path."""
    if (reads := _reads_training(template)) is not None:
        return None, f"{reads}'s forward reads self.training (a trace would keep one mode's branch)"
    try:
        graph = fx.symbolic_trace(template)
    except Exception as exc:  # noqa: BLE001 (the user's forward: anything fx cannot trace goes to vmap)
        return None, f"its forward cannot be traced ({type(exc).__name__})"
    template.eval()
    try:
        with torch.no_grad():
            _Shapes(graph).run(torch.zeros(2, *input_shape))
    except Exception as exc:  # noqa: BLE001
        return None, f"its forward cannot be followed with torch.fx ({type(exc).__name__})"
    finally:
        template.train()
    steps = []
    for node in graph.graph.nodes:
        step = _step(template, node)
        if isinstance(step, str):
            return None, step
        steps.append(step)
    if sum(s.kind == "input" for s in steps) != 1:
        return None, "its forward takes more than one input"
    alone = [s.name or getattr(s.node.target, "__name__", str(s.node.target)) for s in steps if s.kind == "vmap"]
    return steps, "stacked fast path" + (f"; vmap for {', '.join(alone)}" if alone else "")


class _Shapes(fx.Interpreter):
    """Runs the traced forward once, noting the shape of every node whose value is one tensor (`meta["shape"]`):
    torch.fx's ShapeProp without its import of sympy (a third of a second) and its printed tracebacks."""

    def run_node(self, n: fx.Node):
        result = super().run_node(n)
        if isinstance(result, torch.Tensor):
            n.meta["shape"] = tuple(result.shape)
        return result


def _reads_training(template: nn.Module) -> str | None:
    """The first of the user's own modules whose forward branches on self.training (torch's layers are leaves
    the fast path runs itself)."""
    import inspect

    for name, module in template.named_modules():
        if type(module).__module__.startswith("torch."):
            continue
        try:
            source = inspect.getsource(type(module).forward)
        except (OSError, TypeError):  # defined where its source cannot be read: trusted as the trace sees it
            continue
        if "self.training" in source:
            return name or type(module).__name__
    return None


def _step(template: nn.Module, node: fx.Node) -> Step | str:
    if node.op == "placeholder":
        return Step(node, "input")
    if node.op == "output":
        return Step(node, "output") if isinstance(node.args[0], fx.Node) else "its forward returns more than a tensor"
    if node.op == "get_attr":
        if node.target.startswith("_tensor_constant"):  # torch.fx's name for a tensor it could not trace to a layer
            return "its forward uses a tensor that is no layer's parameter (a buffer it changes, or a constant)"
        return f"its forward uses {node.target} outside a layer"
    if "shape" not in node.meta:
        return f"its forward computes with sizes or other values that are not activations ({node.name})"
    inputs = node.all_input_nodes
    if any("shape" not in n.meta for n in inputs):
        return f"{node.name} takes values that are not activations"
    if node.op == "call_module":
        layer = template.get_submodule(node.target)
        rank = len(node.args[0].meta["shape"]) if node.args and isinstance(node.args[0], fx.Node) else 0
        if type(layer) in STACKED and _stackable(layer, rank) and len(node.args) == 1 and not node.kwargs:
            return Step(node, "layer", node.target)
        return Step(node, "vmap", node.target)
    name = node.target if node.op == "call_method" else getattr(node.target, "__name__", "")
    if name in REDUCTIONS and (node.op == "call_method" or getattr(torch, name, None) is node.target):
        dims = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None)
        rank = len(node.args[0].meta["shape"])
        dims = (dims,) if isinstance(dims, int) else dims
        if (isinstance(dims, (tuple, list)) and all(isinstance(d, int) and d % rank != 0 for d in dims)
                and len(node.args) <= 2 and set(node.kwargs) <= {"dim", "keepdim"}):
            return Step(node, "reduce")
    if node.op == "call_function" and node.target is torch.cat and isinstance(node.args[0], (list, tuple)):
        dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
        rank = len(node.meta["shape"])
        if isinstance(dim, int) and dim % rank != 0 and all(isinstance(a, fx.Node) for a in node.args[0]):
            return Step(node, "cat")
    if (node.op == "call_function" and node.target in (torch.flatten, torch.transpose)
            or node.op == "call_method" and node.target in ("flatten", "transpose")) and not node.kwargs:
        rank = len(node.args[0].meta["shape"])
        dims = node.args[1:] or (0,)  # flatten's start_dim defaults to 0, which flattens the batch
        if all(isinstance(d, int) and d % rank != 0 for d in dims):
            return Step(node, "reshape")
    if (node.target in ARITHMETIC if node.op == "call_function" else
            node.op == "call_method" and node.target in METHODS):
        ranks = {len(n.meta["shape"]) for n in inputs}
        if len(ranks) == 1 and all(isinstance(a, (fx.Node, int, float)) for a in node.args):
            return Step(node, "arithmetic")
    return Step(node, "vmap")


def _stackable(layer: nn.Module, rank: int) -> bool:
    """Whether the stacked op covers this layer's settings, for inputs of `rank` dimensions per member."""
    if isinstance(layer, nn.Conv2d):
        return layer.padding_mode == "zeros"
    if isinstance(layer, nn.GroupNorm):
        return rank == 4
    if isinstance(layer, nn.Flatten):
        return layer.start_dim >= 1
    return True


class FastPopulation(FunctionalPopulation):
    """E copies of the user's module, run node by node: standard layers stacked, the rest through vmap."""

    def __init__(self, template: nn.Module, members: int, d_out: int, steps: list[Step], make=None):
        super().__init__(template, members, d_out, make)  # swaps runner's dropout and batch norm in, by the same names
        self.steps = steps
        canonical = {id(p): name for name, p in template.named_parameters()}
        self.tied = {name: canonical[id(p)] for name, p in template.named_parameters(remove_duplicate=False)
                     if canonical[id(p)] != name}  # a parameter's other names -> the name its slot has
        self.layers = {s.name: template.get_submodule(s.name) for s in steps if s.kind in ("layer", "vmap") and s.name}
        # A ReLU whose only user is a max-pool runs after it: the same values (max commutes with a non-decreasing
        # function), 4x fewer of them to activate. ReLU node -> that pool's node.
        self.pool_after = {}
        for s in steps:
            if s.kind == "layer" and type(self.layers[s.name]) is nn.ReLU and len(s.node.users) == 1:
                (user,) = s.node.users
                if user.op == "call_module" and type(self.layers.get(user.target)) is nn.MaxPool2d:
                    self.pool_after[s.node] = user
        # The values each step reads for the last time, dropped after it as eager PyTorch drops them: a value the
        # backward does not keep (a residual sum, say) is freed before the next layer's, not at the forward's end.
        last = {n: i for i, s in enumerate(steps) for n in s.node.all_input_nodes}
        self.last_reads: list[list[fx.Node]] = [[] for _ in steps]
        for n, i in last.items():
            self.last_reads[i].append(n)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: [E, B, ...] -> [E, B, d_out]."""
        self.set_modes()
        E = x.shape[0]
        env: dict[fx.Node, tuple[torch.Tensor, bool]] = {}  # node -> (value, grouped: [B, E·C, H, W] layout)
        pooled = {}  # a max-pool's node -> its value before the ReLU that precedes it in the module
        for step, done in zip(self.steps, self.last_reads):
            node = step.node
            if step.kind == "input":
                env[node] = (x, False)
            elif step.kind == "output":
                value, grouped = env[node.args[0]]
                return _members(value, E) if grouped else value
            elif node in pooled:  # the max-pool ran in its ReLU's place: now the ReLU
                env[node] = (torch.relu(pooled.pop(node)), True)
            elif node in self.pool_after:
                pool = self.pool_after[node]
                pooled[pool] = self.layers[pool.target](self._layout(env[node.args[0]], True, E))
                env[node] = (None, True)  # read by nothing but that pool
            elif step.kind == "layer":
                layer = self.layers[step.name]
                wants = _wants(layer)
                value, grouped = env[node.args[0]]
                if wants is not None and wants != grouped:
                    value, grouped = self._layout((value, grouped), wants, E), wants
                env[node] = (self._layer(step, value, E, mask), grouped)
            elif step.kind == "reshape":  # flatten or transpose of each member's non-batch dimensions
                value = self._layout(env[node.args[0]], False, E)
                dims = [d % (value.dim() - 1) + 1 for d in node.args[1:]]
                env[node] = (getattr(value, getattr(node.target, "__name__", node.target))(*dims), False)
            elif step.kind == "arithmetic":
                env[node] = self._arithmetic(node, env, E)
            elif step.kind == "reduce":
                env[node] = self._reduce(node, env, E)
            elif step.kind == "cat":
                dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
                parts = [self._layout(env[n], False, E) for n in node.args[0]]
                env[node] = (torch.cat(parts, dim % (parts[0].dim() - 1) + 1), False)
            else:
                env[node] = (self._alone(step, env, E, mask), False)
            for n in done:
                del env[n]
        raise AssertionError("the graph has no output")

    def _layout(self, value: tuple[torch.Tensor, bool], grouped: bool, E: int) -> torch.Tensor:
        tensor, now = value
        if now == grouped:
            return tensor
        return to_grouped(tensor) if grouped else _members(tensor, E)

    def _arithmetic(self, node: fx.Node, env: dict, E: int) -> tuple[torch.Tensor, bool]:
        """Elementwise: on the grouped layout when every operand has it and the same shape, else on [E, B, ...]."""
        operands = node.all_input_nodes
        grouped = all(env[n][1] for n in operands) and len({tuple(env[n][0].shape) for n in operands}) == 1
        values = {n: self._layout(env[n], grouped, E) for n in operands}
        args = fx.node.map_arg(node.args, lambda n: values[n])
        kwargs = fx.node.map_arg(node.kwargs, lambda n: values[n])
        if node.op == "call_method":
            return getattr(args[0], node.target)(*args[1:], **kwargs), grouped
        return node.target(*args, **kwargs), grouped

    def _reduce(self, node: fx.Node, env: dict, E: int) -> tuple[torch.Tensor, bool]:
        """A mean, sum, max or min over each member's non-batch dimensions: over pixels on the grouped layout."""
        value, grouped = env[node.args[0]]
        rank = value.dim() if grouped else value.dim() - 1  # of each member's value
        dims = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None)
        dims = sorted({d % rank for d in ((dims,) if isinstance(dims, int) else dims)})
        keepdim = node.kwargs.get("keepdim", False)
        reduce = getattr(torch, node.target if node.op == "call_method" else node.target.__name__)
        if grouped and min(dims) >= 2:  # pixels: the same dimensions of [B, E·C, H, W]
            return reduce(value, dims, keepdim=keepdim), True
        value = self._layout((value, grouped), False, E)
        return reduce(value, [d + 1 for d in dims], keepdim=keepdim), False

    def _alone(self, step: Step, env: dict, E: int, mask: torch.Tensor | None) -> torch.Tensor:
        """One node through vmap over the members, on [E, B, ...] values."""
        node = step.node
        operands = node.all_input_nodes
        values = [self._layout(env[n], False, E).contiguous() for n in operands]  # vmap: no channels-last strides
        if node.op == "call_module":
            prefix = step.name + "."
            params = {name.removeprefix("norm:")[len(prefix):]: self.view(name) for name in self.slots
                      if name.removeprefix("norm:").startswith(prefix)}
        else:
            params = {}

        def run(p, *tensors):
            given = dict(zip(operands, tensors))
            args = fx.node.map_arg(node.args, lambda n: given[n])
            kwargs = fx.node.map_arg(node.kwargs, lambda n: given[n])
            if node.op == "call_module":
                return functional_call(self.layers[step.name], p, args, kwargs)
            if node.op == "call_method":
                return getattr(args[0], node.target)(*args[1:], **kwargs)
            return node.target(*args, **kwargs)

        return self.run_members(run, params, values, mask)

    def _param(self, step: Step, name: str, norm: bool = False) -> torch.Tensor | None:
        """A layer's parameter for every member, [E, *shape]; a tied one (layer b's weight set to layer a's) is its
        first owner's slot, which both layers then train, as in the module alone."""
        full = f"{step.name}.{name}"
        key = ("norm:" if norm else "") + self.tied.get(full, full)
        return self.view(key) if key in self.slots else None

    def _layer(self, step: Step, x: torch.Tensor, E: int, mask: torch.Tensor | None) -> torch.Tensor:
        layer = self.layers[step.name]
        if isinstance(layer, nn.Linear):
            weight, bias = self._param(step, "weight"), self._param(step, "bias")
            if x.dim() == 3 and x.is_contiguous():  # [E, B, in] as it is: no view to take and undo
                return StackedLinear.apply(x, weight, bias)
            shape = x.shape
            flat = x.reshape(E, -1, shape[-1])
            return StackedLinear.apply(flat, weight, bias).view(*shape[:-1], weight.shape[1])
        if isinstance(layer, nn.Conv2d):
            weight, bias = self._param(step, "weight"), self._param(step, "bias")
            return F.conv2d(x, grouped_weight(weight), None if bias is None else bias.reshape(-1), layer.stride,
                            layer.padding, layer.dilation, groups=E * layer.groups)
        if isinstance(layer, BatchNorm):
            return self._norm(step, x, E, mask)
        if isinstance(layer, nn.GroupNorm):  # each member's channels are its own E·groups groups' share
            x = F.group_norm(x, E * layer.num_groups, eps=layer.eps)
            scale, shift = self._param(step, "weight", norm=True), self._param(step, "bias", norm=True)
            return x if scale is None else x * scale.reshape(1, -1, 1, 1) + shift.reshape(1, -1, 1, 1)
        if isinstance(layer, nn.LayerNorm):
            shape = tuple(layer.normalized_shape)
            x = F.layer_norm(x, shape, eps=layer.eps)
            view = (E,) + (1,) * (x.dim() - 1 - len(shape)) + shape
            scale, shift = self._param(step, "weight", norm=True), self._param(step, "bias", norm=True)
            x = x if scale is None else x * scale.reshape(view)
            return x if shift is None else x + shift.reshape(view)
        if isinstance(layer, Dropout):
            active = layer.p > 0 and (self.training or self.sampling)
            return dropout(x, layer.p, self.noise, layer.stream) if active else x
        if isinstance(layer, nn.Flatten):
            end = layer.end_dim + 1 if layer.end_dim >= 0 else layer.end_dim
            return x.flatten(layer.start_dim + 1, end)
        return layer(x)  # elementwise or pooling: each value or channel alone

    def _norm(self, step: Step, x: torch.Tensor, E: int, mask: torch.Tensor | None) -> torch.Tensor:
        layer = self.layers[step.name]
        mean_run, var_run = self.stat(layer.stat_name + ".mean"), self.stat(layer.stat_name + ".var")  # [E, 1, C]
        scale, shift = self._param(step, "weight", norm=True), self._param(step, "bias", norm=True)
        updating = self.updating
        if not self.training or self.real_rows is not None:  # torch's fused batch norm, on each member's real rows
            settings = (mean_run, var_run, scale, shift, updating, self.training, layer.momentum, layer.eps)
            # images already [B, E·C, H, W]; else [E, B, C, *rest]
            return member_batch_norm(x, E, self.real_rows, *settings, first=layer.spatial != 2)
        # A training pass outside the training loop (batch statistics for averaged weights): padding masked out.
        if layer.spatial == 2:  # [B, E·C, H, W]: statistics over the member's rows and pixels
            out = grouped_batch_norm(x, E, mask, mean_run, var_run, updating, self.training, layer.momentum,
                                     layer.eps)
            shape = (1, x.shape[1], 1, 1)
        else:  # [E, B, C, *rest], statistics over the member's rows (and any trailing positions)
            rest = x.dim() - 3
            shape = (E, 1, x.shape[2]) + (1,) * rest
            weight = None if mask is None else mask.view(*mask.shape, *([1] * (rest + 1)))
            out = batch_norm(x, weight, (1, *range(3, x.dim())), mean_run.view(shape), var_run.view(shape),
                             None if updating is None else updating.view(E, *([1] * (rest + 2))), self.training,
                             layer.momentum, layer.eps)
        return out if scale is None else out * scale.reshape(shape) + shift.reshape(shape)


def _wants(layer: nn.Module) -> bool | None:
    """The layout a layer runs on: True grouped [B, E·C, H, W], False [E, B, ...], None either."""
    if isinstance(layer, (nn.Conv2d, nn.GroupNorm, *POOLS)) or (isinstance(layer, BatchNorm) and layer.spatial == 2):
        return True
    return None if isinstance(layer, ELEMENTWISE) else False


def _members(x: torch.Tensor, E: int) -> torch.Tensor:
    """[B, E·C, ...] -> [E, B, C, ...]."""
    B = x.shape[0]
    return x.reshape(B, E, x.shape[1] // E, *x.shape[2:]).transpose(0, 1)
