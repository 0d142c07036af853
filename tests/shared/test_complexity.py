import pytest
import torch
from torch import nn

from shared import complexity


def test_single_conv_by_hand():
    # 3 -> 8 channels, 3x3 kernel, "same" padding, on a 5x5 image:
    # every one of the 8*5*5 outputs is a dot product of 3*3*3 multiply-adds.
    conv = nn.Conv2d(3, 8, kernel_size=3, padding=1)
    cx = complexity.count(conv, (1, 3, 5, 5))
    assert cx.flops == 8 * 5 * 5 * (3 * 3 * 3)  # 5400 multiply-adds (bias is free)
    assert cx.params == 8 * 3 * 3 * 3 + 8  # weights + bias
    assert cx.activations == 8 * 5 * 5


def test_strided_and_grouped_conv():
    # stride 2 on 7x7 with padding 1 gives a 4x4 output
    conv = nn.Conv2d(4, 6, kernel_size=3, stride=2, padding=1, bias=False)
    cx = complexity.count(conv, (1, 4, 7, 7))
    assert cx.activations == 6 * 4 * 4
    assert cx.flops == 6 * 4 * 4 * (4 * 3 * 3)
    grouped = nn.Conv2d(4, 6, kernel_size=3, stride=2, padding=1, groups=2, bias=False)
    assert complexity.count(grouped, (1, 4, 7, 7)).flops == cx.flops // 2  # each output sees half the inputs


def test_linear_and_batch():
    lin = nn.Linear(10, 5)
    cx = complexity.count(lin, (3, 10))
    assert (cx.flops, cx.params, cx.activations) == (3 * 10 * 5, 10 * 5 + 5, 3 * 5)
    # flops and activations are per forward pass: they grow with the batch, params don't
    cx1 = complexity.count(lin, (1, 10))
    assert (cx.flops, cx.activations, cx.params) == (3 * cx1.flops, 3 * cx1.activations, cx1.params)


def test_only_weighted_layers_count():
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, bias=False),  # 4*8*8 outputs, 9 MACs each
        nn.BatchNorm2d(4),  # 8 params, no flops, no activations
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 2, bias=False),
    )
    cx = complexity.count(model, (1, 1, 8, 8))
    assert cx.flops == 4 * 8 * 8 * 9 + 4 * 2
    assert cx.params == 4 * 9 + 2 * 4 + 4 * 2
    assert cx.activations == 4 * 8 * 8 + 2
    convs_only = complexity.count(model, (1, 1, 8, 8), layer_types=(nn.Conv2d,))
    assert convs_only.activations == 4 * 8 * 8


class _TwiceShared(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(6, 6, bias=False)

    def forward(self, x):
        return self.lin(self.lin(x))


def test_shared_layer_counts_each_call_but_params_once():
    cx = complexity.count(_TwiceShared(), (1, 6))
    assert cx.flops == 2 * 36
    assert cx.activations == 2 * 6
    assert cx.params == 36


def test_meta_device_matches_cpu_and_state_is_restored():
    def build():
        return nn.Sequential(nn.Conv2d(2, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Conv2d(8, 8, 3, stride=2))

    cpu_model = build().train()
    with torch.device("meta"):
        meta_model = build()
    shape = (2, 2, 9, 9)
    assert complexity.count(meta_model, shape) == complexity.count(cpu_model, shape)
    # counting leaves the model as it was: training mode, no hooks, BN statistics untouched
    assert cpu_model.training
    assert all(not m._forward_hooks for m in cpu_model.modules())
    assert torch.equal(cpu_model[1].running_mean, torch.zeros(8))


def test_bad_shape_is_a_clear_error():
    with pytest.raises(ValueError, match="input_shape"):
        complexity.count(nn.Linear(3, 3), (3,))
