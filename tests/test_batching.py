"""The generic vmap path's batching rules (models/batching.py): under vmap, conv2d, pooling and group norm run as
one grouped channels-last op, and give torch's own rules' values and gradients, whatever the settings."""

import pytest
import torch
import torch.nn.functional as F
from torch.func import vmap

from runner.models import batching
from runner.models.batching import Layers

E, B = 3, 4
SHARED = torch.randn(4, 4, 2, 2)  # a weight every member shares (not batched): torch's rule runs it

AFTER_CONV = {
    "max pool": lambda y: F.max_pool2d(y, 2),
    "max pool, odd settings": lambda y: F.max_pool2d(y, (2, 3), stride=(1, 2), padding=1, ceil_mode=True),
    "max pool with indices": lambda y: F.max_pool2d(y, 2, return_indices=True)[0],
    "avg pool": lambda y: F.avg_pool2d(y, 3, 2, 1, True, False),
    "avg pool, divisor": lambda y: F.avg_pool2d(y, 2, divisor_override=3),
    "adaptive avg pool, then view": lambda y: F.adaptive_avg_pool2d(y, 1).view(B, -1),
    "adaptive max pool": lambda y: F.adaptive_max_pool2d(y, (2, 3)),
    "view of the conv's output": lambda y: y.view(y.size(0), -1),
    "group norm": lambda y: F.group_norm(y, 2),
    "group norm, weight only": lambda y: F.group_norm(y, 4, torch.linspace(0.5, 1.5, 8)),
    "strided conv with groups": lambda y: F.conv2d(y, SHARED, stride=2, groups=2),
    "conv padding='same', dilated": lambda y: F.conv2d(y, SHARED.repeat(1, 2, 1, 1), padding="same", dilation=2),
    "layout-sensitive ops": lambda y: F.pixel_shuffle(F.interpolate(F.instance_norm(y), scale_factor=2), 2),
    "unfold": lambda y: F.unfold(y, 2),
}


def forward(op, with_layers: bool):
    def one(x, w, b, scale):
        def run():
            y = torch.relu(F.conv2d(x, w, b, padding=1))
            return op(y * scale.view(-1, 1, 1))  # a per-member scale: the next op's input depends on the member

        if not with_layers:
            return run()
        with Layers():
            return run()

    return one


@pytest.mark.parametrize("name", list(AFTER_CONV))
def test_each_rule_gives_torchs_values_and_gradients(name):
    torch.manual_seed(0)
    args = [torch.randn(E, B, 4, 6, 6), torch.randn(E, 8, 4, 3, 3), torch.randn(E, 8), torch.rand(E, 8) + 0.5]
    results = []
    for with_layers in (False, True):
        leaves = [a.clone().requires_grad_() for a in args]
        out = vmap(forward(AFTER_CONV[name], with_layers))(*leaves)
        (out * torch.linspace(-1, 1, out.numel()).view(out.shape)).sum().backward()
        results.append((out, [leaf.grad for leaf in leaves]))
    (ref, ref_grads), (got, got_grads) = results
    assert got.shape == ref.shape
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)  # float32 sums in another order
    for g, r in zip(got_grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-4)


def test_the_rules_run_grouped_in_channels_last():
    """The conv's output reaches the pool as one [B, E·C, H, W] channels-last tensor: the rule ran, not torch's."""
    seen = []
    original = batching.grouped

    def spy(x, dim, members):
        out = original(x, dim, members)
        seen.append((tuple(out.shape), out.is_contiguous(memory_format=torch.channels_last)))
        return out

    batching.grouped = spy
    try:
        vmap(forward(AFTER_CONV["max pool"], True))(torch.randn(E, B, 4, 6, 6), torch.randn(E, 8, 4, 3, 3),
                                                     torch.randn(E, 8), torch.ones(E, 8))
    finally:
        batching.grouped = original
    assert seen == [((B, E * 4, 6, 6), True), ((B, E * 8, 6, 6), True)]


def test_images_without_a_batch_and_shared_weights_take_torchs_rule():
    x, w = torch.randn(E, 4, 6, 6), torch.randn(E, 8, 4, 3, 3)  # each member's input is one [C, H, W] image

    def one(x, w):
        with Layers():
            return F.max_pool2d(F.conv2d(x, w, padding=1), 2) + F.conv2d(x, SHARED.repeat(2, 1, 1, 1)).mean()

    ref = vmap(lambda x, w: F.max_pool2d(F.conv2d(x, w, padding=1), 2) + F.conv2d(x, SHARED.repeat(2, 1, 1, 1)).mean())
    torch.testing.assert_close(vmap(one)(x, w), ref(x, w))


def test_outside_vmap_each_function_is_the_op_itself():
    x, w = torch.randn(B, 4, 6, 6), torch.randn(8, 4, 3, 3)
    with Layers():
        got = F.avg_pool2d(F.max_pool2d(F.conv2d(x, w, padding=1), 2), 3, 1, 1)
    torch.testing.assert_close(got, F.avg_pool2d(F.max_pool2d(F.conv2d(x, w, padding=1), 2), 3, 1, 1))


def test_a_single_channel_goes_in_with_channels_last_strides_so_the_convolution_answers_channels_last():
    """One member's grey image is one channel, where both layouts are the same memory and torch keeps channels-first
    strides: the grouped layout restrides it, so the conv after it answers channels-last (the layout every later
    batch norm and ReLU of the fast path takes its backward in), with the same values."""
    from runner.models.layers import grouped

    x = torch.randn(1, B, 1, 6, 6)
    flat = grouped(x, 0, 1)
    assert torch.equal(flat, x[0]) and flat.stride() == (36, 1, 6, 1)
    weight = torch.randn(8, 1, 3, 3).contiguous(memory_format=torch.channels_last)
    plain = F.conv2d(x[0].contiguous(memory_format=torch.channels_last), weight, padding=1)
    out = F.conv2d(flat, weight, padding=1)
    assert not plain.is_contiguous(memory_format=torch.channels_last)  # what torch does without the restride
    assert out.is_contiguous(memory_format=torch.channels_last) and not out.is_contiguous()
    torch.testing.assert_close(out, plain)
