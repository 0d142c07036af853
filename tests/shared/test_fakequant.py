"""Fake quantisation (shared/fakequant.py): STE / clipped STE gradients, FakeQuant, QuantLinear == nn.Linear."""

import pytest
import torch
from torch import nn

from shared import fakequant, numformats as nf

pytestmark = pytest.mark.usefixtures("one_thread")


def test_ste_gradient_is_identity():
    x = torch.randn(4, 64, generator=torch.Generator().manual_seed(0), requires_grad=True)
    g = torch.randn(4, 64, generator=torch.Generator().manual_seed(1))
    y = fakequant.quant_ste(x, nf.MXFP4)
    assert torch.equal(y, nf.fake_quant(x.detach(), nf.MXFP4))
    y.backward(g)
    assert torch.equal(x.grad, g)


def test_clipped_ste_zero_outside_the_clip_range():
    x = torch.arange(1.0, 101.0, requires_grad=True)
    y = fakequant.quant_ste(x, nf.per_tensor(nf.INT8, clip_percentile=90), gradient="clipped")
    y.sum().backward()
    assert x.grad[:90].eq(1).all() and x.grad[90:].eq(0).all()  # 91..100 clip to 90
    # asymmetric: the clamped codes are those outside [lo, hi]
    x = torch.tensor([-4.0, -1.0, 0.0, 1.0, 10.0], requires_grad=True)
    y = fakequant.quant_ste(x, nf.per_tensor(nf.INT4_ASYM, clip_percentile=80), gradient="clipped")
    y.sum().backward()
    assert x.grad.tolist() == [1, 1, 1, 1, 0]


def test_fakequant_module_as_weight_parametrization():
    lin = nn.Linear(64, 8)
    torch.nn.utils.parametrize.register_parametrization(lin, "weight", fakequant.FakeQuant(nf.MXFP4))
    w = lin.parametrizations.weight.original
    assert torch.equal(lin.weight, nf.fake_quant(w.detach(), nf.MXFP4))
    lin(torch.ones(2, 64)).sum().backward()
    assert torch.equal(w.grad, torch.full_like(w, 2.0))  # STE: d(sum x W^T)/dW = sum of inputs
    assert fakequant.FakeQuant(None)(w) is w


@pytest.mark.parametrize("bias", [True, False])
def test_quantlinear_without_formats_is_nn_linear_exactly(bias):
    torch.manual_seed(0)
    ref = nn.Linear(48, 24, bias=bias)
    q = fakequant.QuantLinear(48, 24, bias=bias)
    q.load_state_dict(ref.state_dict())
    x = torch.randn(3, 5, 48)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = ref(xa), q(xb)
    assert torch.equal(ya, yb)
    g = torch.randn_like(ya)
    ya.backward(g)
    yb.backward(g)
    assert torch.equal(xa.grad, xb.grad) and torch.equal(ref.weight.grad, q.weight.grad)
    if bias:
        assert torch.equal(ref.bias.grad, q.bias.grad)
    # a Hadamard block alone changes nothing either: only quantised GEMMs are rotated
    h = fakequant.QuantLinear.from_linear(ref, hadamard=16)
    assert torch.equal(h(x), ref(x))


def test_quantlinear_forward_quant_ste_backward():
    torch.manual_seed(0)
    lin = fakequant.QuantLinear(64, 32, x=nf.MXFP4, w=nf.MXFP4)
    x = torch.randn(8, 64, requires_grad=True)
    y = lin(x)
    xq, wq = nf.fake_quant(x.detach(), nf.MXFP4), nf.fake_quant(lin.weight.detach(), nf.MXFP4)
    assert torch.equal(y, torch.nn.functional.linear(xq, wq, lin.bias))
    g = torch.randn_like(y)
    y.backward(g)
    assert torch.equal(x.grad, g @ wq)  # STE: the gradient of the fake-quant forward
    assert torch.equal(lin.weight.grad, g.t() @ xq)


def test_quantlinear_backward_operands_quantised_along_contraction():
    torch.manual_seed(0)
    sr = nf.MXFP4.with_(rounding="stochastic")
    lin = fakequant.QuantLinear(64, 32, x=nf.MXFP8_E4M3, w=nf.MXFP8_E4M3, grad=nf.MXFP8_E4M3,
                                x_bwd=nf.MXFP8_E4M3, w_bwd=nf.MXFP8_E4M3)
    x = torch.randn(64, 64, requires_grad=True)
    y = lin(x)
    g = torch.randn_like(y)
    y.backward(g)
    E = nf.MXFP8_E4M3
    gx = nf.fake_quant(g, E) @ nf.fake_quant(lin.weight.detach(), E.with_(axis=0))
    gw = nf.fake_quant(g, E.with_(axis=0)).t() @ nf.fake_quant(x.detach(), E.with_(axis=0))
    assert torch.equal(x.grad, gx) and torch.equal(lin.weight.grad, gw)
    # FP4 with Hadamard and stochastic gradients: close to the exact gradients, seeded
    gen = torch.Generator().manual_seed(0)
    lin4 = fakequant.QuantLinear.from_linear(nn.Linear(64, 32), x=nf.MXFP4, w=nf.MXFP4, grad=sr,
                                             x_bwd=nf.MXFP4, w_bwd=nf.MXFP4, hadamard=32, generator=gen)
    x.grad = None
    lin4(x).backward(g)
    exact = g @ lin4.weight.detach()
    assert ((x.grad - exact).norm() / exact.norm()) < 0.4


def test_swap_linears_and_errors():
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Sequential(nn.Linear(8, 4)))
    fakequant.swap_linears(model, skip=("2.0",), x=nf.per_tensor(nf.INT8))
    assert type(model[0]) is fakequant.QuantLinear and type(model[2][0]) is nn.Linear
    with pytest.raises(ValueError, match="^gradient: 'ste2'"):
        fakequant.quant_ste(torch.ones(2), nf.MXFP4, gradient="ste2")
    with pytest.raises(ValueError, match="^hadamard: must be a power of two"):
        fakequant.QuantLinear(8, 8, hadamard=12)
    with pytest.raises(ValueError, match="^gradient: 'clipped' is not defined through a Hadamard"):
        fakequant.QuantLinear(8, 8, hadamard=8, gradient="clipped")
