"""Batching rules for the generic vmap path: under vmap, 2-D convolution, pooling and group norm run as one
grouped channels-last op for all members, as the stacked fast path runs them, and attention as one call with the
members as one more batch dimension, instead of torch's default rules.

torch's own rules run a batched conv2d as a grouped convolution in NCHW and pool in NCHW, which oneDNN does
several times slower than channels-last on a CPU; and a tensor's layout cannot be asked for inside vmap. Each
rule here is the `vmap` staticmethod of an autograd.Function (torch's hook for a custom batching rule): it gets
the members' tensors unbatched, lays them out as [B, E·C, H, W] channels-last (member e owns channels
e·C..(e+1)·C-1) and returns the result in that layout, batched at dimension 1, so the next convolution or pool
takes it without a copy. The ops inside are ordinary ones, recorded by autograd as they run: the backward is
theirs. `Layers` is the torch-function mode that sends the user's forward to these rules. It also runs
`Tensor.view` as `reshape`, so a view of a channels-last activation (`x.view(x.size(0), -1)`) still works, and
gives an op that asks for its input's layout (which vmap cannot answer) a contiguous copy. Every value is the
one torch's own rules give; only the memory layout differs.
"""

import inspect

import torch
import torch.nn.functional as F
from torch.func import vmap
from torch.overrides import TorchFunctionMode

from runner.models.layers import grouped, grouped_weight

def batched(y: torch.Tensor, members: int) -> tuple[torch.Tensor, int]:
    """[B, E·C, H, W] -> (its view [B, E, C, H, W], batched at dimension 1)."""
    return y.view(y.shape[0], members, -1, *y.shape[2:]), 1


def members_of(t: torch.Tensor | None, dim: int | None, members: int) -> torch.Tensor | None:
    """A parameter batched at `dim` (None: shared by all members) as [E, ...]."""
    if t is None:
        return None
    return t.unsqueeze(0).expand(members, *t.shape) if dim is None else t.movedim(dim, 0)


def _default(op, in_dims, *args):
    """torch's own rule, on contiguous tensors, for what a grouped rule does not cover (images without a batch)."""
    return vmap(op, in_dims=in_dims)(*_contiguous(args)), 0


class _Rule(torch.autograd.Function):
    """A function that only runs under vmap: outside it, the op itself."""

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass


class Conv2d(_Rule):
    @staticmethod
    def forward(x, weight, bias, stride, padding, dilation, groups):
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    def vmap(info, in_dims, x, weight, bias, stride, padding, dilation, groups):
        x_dim, w_dim, b_dim = in_dims[:3]
        if x.dim() - (x_dim is not None) != 4:
            return _default(lambda x, w, b: F.conv2d(x, w, b, stride, padding, dilation, groups), in_dims[:3],
                            x, weight, bias)
        E = info.batch_size
        weight = grouped_weight(members_of(weight, w_dim, E))
        bias = None if bias is None else members_of(bias, b_dim, E).reshape(-1)
        return batched(F.conv2d(grouped(x, x_dim, E), weight, bias, stride, padding, dilation, groups * E), E)


class Attention(_Rule):
    """scaled_dot_product_attention, which has no batching rule in torch (vmap then runs it member by member): its
    leading dimensions are batch dimensions, so the members are one more. Dropout inside it draws from torch's
    generator, not each member's stream: with dropout_p > 0 it is left to torch's rule."""

    @staticmethod
    def forward(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa):
        return F.scaled_dot_product_attention(query, key, value, attn_mask, dropout_p, is_causal, scale=scale,
                                              enable_gqa=enable_gqa)

    @staticmethod
    def vmap(info, in_dims, query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa):
        def attention(q, k, v, mask):
            return F.scaled_dot_product_attention(q, k, v, mask, dropout_p, is_causal, scale=scale,
                                                  enable_gqa=enable_gqa)

        if dropout_p > 0:
            return _default(attention, in_dims[:4], query, key, value, attn_mask)
        E = info.batch_size
        q, k, v = (members_of(t, d, E) for t, d in zip((query, key, value), in_dims[:3]))
        if attn_mask is not None and in_dims[3] is not None:  # a member's own mask: aligned to q's dimensions
            attn_mask = members_of(attn_mask, in_dims[3], E)
            attn_mask = attn_mask.view(E, *[1] * (q.dim() - attn_mask.dim()), *attn_mask.shape[1:])
        return attention(q, k, v, attn_mask), 0


class GroupNorm(_Rule):
    @staticmethod
    def forward(x, num_groups, weight, bias, eps):
        return F.group_norm(x, num_groups, weight, bias, eps)

    @staticmethod
    def vmap(info, in_dims, x, num_groups, weight, bias, eps):
        x_dim, w_dim, b_dim = in_dims[0], in_dims[2], in_dims[3]
        if x.dim() - (x_dim is not None) != 4:
            return _default(lambda x, w, b: F.group_norm(x, num_groups, w, b, eps), (x_dim, w_dim, b_dim),
                            x, weight, bias)
        E = info.batch_size  # each member's groups are E·groups groups of one [B, E·C, H, W] image
        x = grouped(x, x_dim, E)
        weight = None if weight is None else members_of(weight, w_dim, E).reshape(-1)
        bias = None if bias is None else members_of(bias, b_dim, E).reshape(-1)
        return batched(F.group_norm(x, num_groups * E, weight, bias, eps), E)


def pooling(op) -> type[_Rule]:
    """The grouped rule for a pooling op(images, *settings): every member's channels pooled in one call."""

    class Pool(_Rule):
        @staticmethod
        def forward(x, *settings):
            return op(x, *settings)

        @staticmethod
        def vmap(info, in_dims, x, *settings):
            if x.dim() - (in_dims[0] is not None) != 4:
                return _default(lambda x: op(x, *settings), in_dims[:1], x)
            return batched(op(grouped(x, in_dims[0], info.batch_size), *settings), info.batch_size)

    Pool.__name__ = Pool.__qualname__ = op.__name__
    return Pool


# torch's functions -> (the rule, their parameters as torch documents them)
RULES = {
    F.scaled_dot_product_attention: (Attention, inspect.signature(
        lambda query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False:
        None)),
    F.conv2d: (Conv2d, inspect.signature(lambda input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1:
                                         None)),
    F.max_pool2d: (pooling(F.max_pool2d), inspect.signature(
        lambda input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False: None)),
    F.avg_pool2d: (pooling(F.avg_pool2d), inspect.signature(
        lambda input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
        divisor_override=None: None)),
    F.group_norm: (GroupNorm, inspect.signature(lambda input, num_groups, weight=None, bias=None, eps=1e-5: None)),
    F.adaptive_avg_pool2d: (pooling(F.adaptive_avg_pool2d), inspect.signature(lambda input, output_size: None)),
    F.adaptive_max_pool2d: (pooling(F.adaptive_max_pool2d),
                            inspect.signature(lambda input, output_size, return_indices=False: None)),
}
# Functions that asked for a layout vmap cannot report (group_norm, for one): their tensors go in contiguous.
_CONTIGUOUS_FIRST: set = set()
_LAYOUT_QUERY = "querying is_contiguous inside of vmap"


class Layers(TorchFunctionMode):
    """While active (inside vmap), the functions in RULES take the grouped rules above, and a view by shape is a
    reshape (the same values; a copy only where the layout has no view)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in RULES:
            rule, signature = RULES[func]
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            given = dict(bound.arguments)
            if given.pop("return_indices", False):
                return func(*args, **kwargs)
            if given.get("stride", 0) in (None, []):  # pooling's stride defaults to its kernel
                given["stride"] = given["kernel_size"]
            return rule.apply(*given.values())
        if func is F.multi_head_attention_forward and not kwargs.get("need_weights", True):
            # Its attention without weights is scaled_dot_product_attention, called where this mode cannot see it
            # (inside a function the mode handles, the mode is off): with weights, it is ops vmap batches.
            return func(*args, **{**kwargs, "need_weights": True})[0], None
        if func is torch.Tensor.view and args[1:] and not isinstance(args[1], torch.dtype) and not kwargs:
            return args[0].reshape(*args[1:])
        if func in _CONTIGUOUS_FIRST:
            return func(*_contiguous(args), **_contiguous(kwargs))
        try:
            return func(*args, **kwargs)
        except RuntimeError as exc:
            if _LAYOUT_QUERY not in str(exc):
                raise
            _CONTIGUOUS_FIRST.add(func)
            return func(*_contiguous(args), **_contiguous(kwargs))


def _contiguous(tree):
    return torch.utils._pytree.tree_map_only(torch.Tensor, lambda t: t.contiguous(), tree)
