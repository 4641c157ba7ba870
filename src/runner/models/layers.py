"""Layer functions shared by the stacked models: per-member dropout and batch norm over each member's real rows."""

import math
from contextlib import contextmanager

import torch

BN_MOMENTUM = 0.1  # torch's BatchNorm default
# Set by `batch_statistics`: the momentum every batch norm uses instead of its own (None: its own).
_momentum_override: list[float | None] = [None]


@contextmanager
def batch_statistics():
    """Within: every batch norm's running statistics become the last batch's own (momentum 1, whatever each
    layer's momentum is), for a pass that averages them itself (engine.averaging.recompute_batch_norm, as
    torch.optim.swa_utils.update_bn sets each layer's momentum to None)."""
    _momentum_override[0] = 1.0
    try:
        yield
    finally:
        _momentum_override[0] = None


def grouped(x: torch.Tensor, dim: int | None = 0, members: int | None = None) -> torch.Tensor:
    """The members' tensors [.., B, C, ...] stacked at `dim` (None: one tensor all `members` share) as the grouped
    layout [B, E·C, ...], member e owning channels e·C..(e+1)·C-1; images [B, E·C, H, W] channels last, where
    oneDNN's grouped convolution and pooling are fastest."""
    x = x.unsqueeze(1).expand(-1, members, *x.shape[1:]) if dim is None else x.movedim(dim, 1)
    x = x.reshape(x.shape[0], -1, *x.shape[3:])
    return channels_last(x) if x.dim() == 4 else x


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """x [B, C, H, W] channels last, in its strides too: with one channel both layouts are the same memory, and
    torch keeps the channels-first strides, so a convolution would answer in channels-first (a ResNet-18 layout on
    grey images, one member: its stem's batch norm and ReLU then took their backward across layouts, 3-4x slower)."""
    x = x.contiguous(memory_format=torch.channels_last)
    return x.as_strided(x.shape, (x.stride(0), 1, x.stride(2), x.stride(3))) if x.shape[1] == 1 else x


def grouped_weight(weight: torch.Tensor) -> torch.Tensor:
    """The members' conv kernels [E, C_out, C_in, kh, kw] as one grouped convolution's [E·C_out, C_in, kh, kw]."""
    return weight.reshape(-1, *weight.shape[2:]).contiguous(memory_format=torch.channels_last)


class StackedLinear(torch.autograd.Function):
    """The members' Linear layers at once: x [E, B, in], weight [E, out, in], bias [E, out] or None -> [E, B, out].
    Its backward computes each gradient as torch's own Linear does for a member alone (grad_weight = g^T x), so the
    weight's gradient arrives in the weight's own layout: autograd's bmm backward would hand it over transposed, to
    be copied once more before it reaches the population's [E, P] gradient."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        transposed = weight.transpose(1, 2)
        return torch.bmm(x, transposed) if bias is None else torch.baddbmm(bias.unsqueeze(1), x, transposed)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        wants_x, wants_weight, wants_bias = ctx.needs_input_grad
        return (torch.bmm(grad, weight) if wants_x else None,
                torch.bmm(grad.transpose(1, 2), x) if wants_weight else None,
                grad.sum(1) if ctx.has_bias and wants_bias else None)


def dropout(x: torch.Tensor, p: float, noise, stream: int) -> torch.Tensor:
    """Inverted dropout of x [E, B, ...] with each member's own masks (zero with probability p, scale 1/(1-p))."""
    return x * noise.dropout_scale(tuple(x.shape[1:]), stream, p)


def batch_norm(x: torch.Tensor, weight: torch.Tensor | None, dims: tuple[int, ...], running_mean: torch.Tensor,
               running_var: torch.Tensor, updating: torch.Tensor | None, training: bool,
               momentum: float = BN_MOMENTUM, eps: float = 1e-5) -> torch.Tensor:
    """Normalize x by statistics over `dims`, counting only rows with weight 1 (padding has 0), as torch's
    BatchNorm does for each member alone; running statistics (shaped like the reduced x) update in place
    where `updating` (broadcastable to them) is true. Returns the normalized x, before the affine part."""
    if not training:
        return (x - running_mean) / torch.sqrt(running_var + eps)
    w = torch.ones((), device=x.device) if weight is None else weight
    per_row = math.prod(x.shape[d] for d in dims if w.dim() == 0 or w.shape[d] == 1)
    n = (w.sum(dims, keepdim=True) if w.dim() else torch.ones((), device=x.device)) * per_row
    mean = (x * w).sum(dims, keepdim=True) / n.clamp(min=1)
    var = ((x - mean) ** 2 * w).sum(dims, keepdim=True) / n.clamp(min=1)
    if _momentum_override[0] is not None:
        momentum = _momentum_override[0]
    with torch.no_grad():
        keep = n > 1
        if updating is not None:
            keep = keep & updating
        unbiased = var * n / (n - 1).clamp(min=1)
        running_mean.copy_(torch.where(keep, (1 - momentum) * running_mean + momentum * mean, running_mean))
        running_var.copy_(torch.where(keep, (1 - momentum) * running_var + momentum * unbiased, running_var))
    return (x - mean) / torch.sqrt(var + eps)


class _ContiguousGrad(torch.autograd.Function):
    """The identity, whose gradient leaves in one layout (channels-last for images): a gradient in another layout
    is summed in another order by the layer before, and float32 rounding would then differ by population."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return _layout(grad)


def _layout(grad: torch.Tensor) -> torch.Tensor:
    """A gradient in the one layout each layer's takes: channels-last for images, else contiguous."""
    return grad.contiguous(memory_format=torch.channels_last if grad.dim() == 4 else torch.contiguous_format)


def member_layout(x: torch.Tensor) -> torch.Tensor:
    """[E, B, C, *rest] as the channels-first [B, E·C, *rest] that `member_batch_norm` takes."""
    return _ContiguousGrad.apply(x).transpose(0, 1).reshape(x.shape[1], -1, *x.shape[3:])


def _from_members(x: torch.Tensor) -> torch.Tensor:
    """[E, B, C, *rest] as [B, E·C, *rest], contiguous (a copy)."""
    return x.transpose(0, 1).reshape(x.shape[1], -1, *x.shape[3:])


def _to_members(x: torch.Tensor, members: int) -> torch.Tensor:
    """[B, E·C, *rest] as a view [E, B, C, *rest]."""
    return x.view(x.shape[0], members, -1, *x.shape[2:]).transpose(0, 1)


class _WholeBatchNorm(torch.autograd.Function):
    """torch's fused batch norm (native_batch_norm and its backward) of every member's whole batch in one node:
    x [E, B, C, *rest] with `first` (moved to the channels-first [B, E·C, *rest] and back inside), else already
    [B, E·C, H, W]. The values, and the layouts each gradient leaves in, are those of F.batch_norm between
    `member_layout` and `_ContiguousGrad`; as one node it saves their five autograd nodes and copies' dispatch
    (measured: a third of a batch norm layer's time in the model zoo's rtdl ResNet step)."""

    @staticmethod
    def forward(ctx, x, weight, bias, mean, var, first, members, momentum, eps):
        flat = _from_members(x) if first else x
        out, save_mean, save_invstd = torch.native_batch_norm(flat, weight, bias, mean, var, True, momentum, eps)
        ctx.save_for_backward(flat, weight, save_mean, save_invstd)
        ctx.first, ctx.members, ctx.eps = first, members, eps
        return _to_members(out, members) if first else out

    @staticmethod
    def backward(ctx, grad):
        flat, weight, save_mean, save_invstd = ctx.saved_tensors
        wants = ctx.needs_input_grad
        grad = _from_members(grad) if ctx.first else _layout(grad)
        gx, gw, gb = torch.ops.aten.native_batch_norm_backward(
            grad, flat, weight, None, None, save_mean, save_invstd, True, ctx.eps, [wants[0], wants[1], wants[2]])
        if gx is not None:
            gx = _layout(_to_members(gx, ctx.members)) if ctx.first else gx
        return gx, gw, gb, None, None, None, None, None, None


def member_batch_norm(x: torch.Tensor, members: int, rows, running_mean: torch.Tensor, running_var: torch.Tensor,
                      weight: torch.Tensor | None, bias: torch.Tensor | None, updating: torch.Tensor | None,
                      training: bool, momentum: float = BN_MOMENTUM, eps: float = 1e-5,
                      first: bool = False) -> torch.Tensor:
    """torch's own fused batch norm for every member at once, on the channels-first layout [B, E·C, *positions]
    (member e owns channels e·C..(e+1)·C-1), or with `first` on [E, B, C, *rest], affine part included;
    `running_*` are the members' [E, 1, C] statistics, `weight`/`bias` their [E, C] scale and shift. In training
    `rows` [E] (on the host) says how many real rows lead each member's batch: where every member's batch is whole,
    one call normalizes them all; otherwise each member runs on its real rows alone, exactly as PyTorch would
    train it alone (its padding rows give 0). Running statistics update as torch updates them, where `updating`
    [E] allows. The output has the input's layout."""
    B, EC = (x.shape[1], members * x.shape[2]) if first else x.shape[:2]
    C = EC // members
    mean, var = torch.stack([running_mean, running_var]).view(2, EC)  # contiguous copies, updated in place
    scale = None if weight is None else weight.reshape(EC)
    shift = None if bias is None else bias.reshape(EC)
    if _momentum_override[0] is not None:
        momentum = _momentum_override[0]
    if training and int(rows.min()) == B:
        out = _WholeBatchNorm.apply(x, scale, shift, mean, var, first, members, momentum, eps)
    else:
        out = _member_batch_norm(member_layout(x) if first else x, members, rows, mean, var, scale, shift, training,
                                 momentum, eps)
        out = _to_members(out, members) if first else out
    if training:
        with torch.no_grad():
            new_mean, new_var = mean.view(members, 1, C), var.view(members, 1, C)
            if updating is not None:
                chosen = updating.view(members, 1, 1)
                new_mean = torch.where(chosen, new_mean, running_mean)
                new_var = torch.where(chosen, new_var, running_var)
            running_mean.copy_(new_mean)
            running_var.copy_(new_var)
    return out


def _member_batch_norm(x: torch.Tensor, members: int, rows, mean: torch.Tensor, var: torch.Tensor,
                       scale: torch.Tensor | None, shift: torch.Tensor | None, training: bool, momentum: float,
                       eps: float) -> torch.Tensor:
    """`member_batch_norm` on [B, E·C, *positions] outside training, or in training with padded batches (each
    member on its real rows alone); `mean`/`var` the [E·C] running statistics, updated in place."""
    B, EC = x.shape[:2]
    C = EC // members
    if not training:
        return _ContiguousGrad.apply(torch.nn.functional.batch_norm(x, mean, var, scale, shift, False, momentum, eps))
    per_row = math.prod(x.shape[2:])
    parts = []
    for e, r in enumerate(int(r) for r in rows):
        own = slice(e * C, (e + 1) * C)
        if r * per_row > 1:  # torch needs two values per channel; with fewer the member's output is 0
            alone = x[:r, own].contiguous(memory_format=torch.channels_last if x.dim() == 4 else
                                          torch.contiguous_format)  # laid out as the member's alone
            part = torch.nn.functional.batch_norm(alone, mean[own], var[own], None if scale is None else
                                                  scale[own], None if shift is None else shift[own], True,
                                                  momentum, eps)
            part = _ContiguousGrad.apply(part)
            part = torch.cat([part, part.new_zeros(B - r, *part.shape[1:])]) if r < B else part
        else:
            part = x.new_zeros(B, C, *x.shape[2:])
            part = part if shift is None else part + shift[own].view(C, *[1] * (x.dim() - 2))
        parts.append(part)
    return torch.cat(parts, 1)


def grouped_batch_norm(x: torch.Tensor, members: int, mask: torch.Tensor | None, running_mean: torch.Tensor,
                       running_var: torch.Tensor, updating: torch.Tensor | None, training: bool,
                       momentum: float = BN_MOMENTUM, eps: float = 1e-5) -> torch.Tensor:
    """`batch_norm` of images in the grouped layout [B, E·C, H, W]: per member and channel, over that member's real
    rows (`mask` [E, B]) and every pixel; `running_*` are the members' [E, 1, C] statistics, `updating` [E]."""
    B, EC, H, W = x.shape
    E, C = members, EC // members
    weight = None if mask is None else mask.T.reshape(B, E, 1, 1)
    return batch_norm(x.reshape(B, E, C, H * W), weight, (0, 3), running_mean.view(1, E, C, 1),
                      running_var.view(1, E, C, 1), None if updating is None else updating.view(1, E, 1, 1),
                      training, momentum, eps).reshape(B, EC, H, W)
