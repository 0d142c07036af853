"""Fake quantisation in training and inference: straight-through gradients, modules, QuantLinear.

    from shared import fakequant, numformats as nf
    xq = fakequant.quant_ste(x, nf.MXFP4)                      # forward: quantise; backward: identity (STE)
    xq = fakequant.quant_ste(x, nf.per_tensor(nf.INT8, clip_percentile=99.9), gradient="clipped")
    act = fakequant.FakeQuant(nf.per_group(nf.INT4_ASYM, 64))  # activations, KV cache: k, v = act(k), act(v)
    torch.nn.utils.parametrize.register_parametrization(linear, "weight", fakequant.FakeQuant(nf.MXFP4))
    lin = fakequant.QuantLinear.from_linear(linear, x=nf.MXFP4, w=nf.MXFP4,        # forward GEMM operands
                                            grad=nf.MXFP4.with_(rounding="stochastic"),  # dY in both
                                            x_bwd=nf.MXFP4, w_bwd=nf.MXFP4,         # backward GEMMs
                                            hadamard=32)
    fakequant.swap_linears(model, x=..., w=...)                # every nn.Linear -> QuantLinear, in place

**Gradients.** ``ste``: the straight-through estimator, d x_hat / d x = 1. ``clipped``: 1 where the
element did not clip (|x / scale| <= max element; for asymmetric integers: the code before
clamping lies in [0, 2^b - 1]), 0 outside, the clip range of PACT/LSQ-style QAT.

**QuantLinear** simulates quantised training as the FP4-training papers do (a QuantLinear with
every format None is nn.Linear, forward and backward, bit for bit). The forward GEMM
y = Q_x(x) Q_w(W)^T + b quantises both operands along the contraction axis (in_features), so MX
blocks run along K as real MX GEMMs need. The backward GEMMs are
dX = Q_grad(dY) Q_w_bwd(W) (contraction over out_features: dY's blocks along its last axis, W's
along axis 0) and dW = Q_grad(dY)^T Q_x_bwd(X) (contraction over tokens: both along axis 0).
A backward operand whose format is None is the forward's quantised operand (the exact STE
gradient of the fake-quant forward); with a format it is re-quantised from the saved
high-precision tensor. ``grad`` with ``rounding="stochastic"`` is stochastic rounding of the
gradients. ``hadamard=B`` rotates both operands of each quantised GEMM along its contraction
axis by the orthonormal block-diagonal Hadamard of size B (``numformats.hadamard``; over the
token axis the block shrinks to the largest power of two dividing the token count), which leaves
the exact product unchanged: (X H)(W H)^T = X W^T. A forward operand that was rotated is
rotated back before it serves the backward GEMMs. The clipped STE is not defined through a
rotation, so ``gradient="clipped"`` with ``hadamard`` is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from shared import numformats as nf

GRADIENTS = ("ste", "clipped")


def _check_gradient(gradient: str) -> None:
    if gradient not in GRADIENTS:
        raise ValueError(f"gradient: {gradient!r} is not an option; allowed: {', '.join(GRADIENTS)}")


# ----------------------------------------------------------------------------- STE
class _QuantSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scheme, gradient, generator):
        q = nf.quantize_blocks(x, scheme, generator, full=gradient == "clipped")
        if gradient == "clipped":
            ctx.save_for_backward(q.in_range)
        ctx.clipped = gradient == "clipped"
        return q.values

    @staticmethod
    def backward(ctx, g):
        if ctx.clipped:
            (in_range,) = ctx.saved_tensors
            g = g * in_range
        return g, None, None, None


def quant_ste(x: torch.Tensor, scheme: nf.Scheme | None, gradient: str = "ste",
              generator: torch.Generator | None = None) -> torch.Tensor:
    """Fake-quantised x with a straight-through (``ste``) or clipped straight-through gradient."""
    _check_gradient(gradient)
    return x if scheme is None else _QuantSTE.apply(x, scheme, gradient, generator)


class FakeQuant(nn.Module):
    """quant_ste as a module: for activations, the KV cache, or a weight parametrization."""

    def __init__(self, scheme: nf.Scheme | None, gradient: str = "ste", generator: torch.Generator | None = None):
        super().__init__()
        _check_gradient(gradient)
        self.scheme, self.gradient, self.generator = scheme, gradient, generator

    def forward(self, x):
        return quant_ste(x, self.scheme, self.gradient, self.generator)

    def extra_repr(self):
        return f"scheme={self.scheme}, gradient={self.gradient!r}"


# ----------------------------------------------------------------------------- QuantLinear
@dataclass(frozen=True)
class LinearQuant:
    """The formats of a QuantLinear's GEMM operands (None: not quantised)."""

    x: nf.Scheme | None = None  # forward: the input
    w: nf.Scheme | None = None  # forward: the weight
    grad: nf.Scheme | None = None  # backward: dY, in both backward GEMMs
    x_bwd: nf.Scheme | None = None  # backward: the saved input, in dW = dY^T X
    w_bwd: nf.Scheme | None = None  # backward: the weight, in dX = dY W
    hadamard: int | None = None  # block size of the Hadamard rotation of quantised GEMM operands
    gradient: str = "ste"  # ste | clipped (forward quantisers)

    def __post_init__(self):
        _check_gradient(self.gradient)
        if self.hadamard is not None and (self.hadamard < 1 or self.hadamard & (self.hadamard - 1)):
            raise ValueError(f"hadamard: must be a power of two (got {self.hadamard})")
        if self.hadamard and self.gradient == "clipped":
            raise ValueError("gradient: 'clipped' is not defined through a Hadamard rotation; use 'ste'")


def _quant(t, scheme, axis, generator, mask):
    """(quantised t, blocks along ``axis`` for group schemes; its in-range mask if ``mask``)."""
    if scheme is None:
        return t, None
    q = nf.quantize_blocks(t, scheme.with_(axis=axis) if scheme.granularity == "group" else scheme, generator, mask)
    return q.values, q.in_range


def _gemm_operands(a, b, qa, qb, axis_a, axis_b, block, generator, mask=False):
    """Both operands of one GEMM, rotated along the contraction axis if block and either is
    quantised, then quantised along it. Returns (a, b, rotation block or 0, masks)."""
    if not (qa or qb):
        return a, b, 0, (None, None)
    blk = 0
    if block:
        n = a.shape[axis_a]
        blk = min(block, n & -n)
        a, b = nf.hadamard(a, blk, axis=axis_a), nf.hadamard(b, blk, axis=axis_b)
    a, ma = _quant(a, qa, axis_a, generator, mask)
    b, mb = _quant(b, qb, axis_b, generator, mask)
    return a, b, blk, (ma, mb)


class _QuantLinearFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, cfg: LinearQuant, generator):
        x2 = x.reshape(-1, x.shape[-1])
        xq, wq, blk, (mx, mw) = _gemm_operands(x2, weight, cfg.x, cfg.w, -1, -1, cfg.hadamard, generator,
                                               mask=cfg.gradient == "clipped")
        y = torch.nn.functional.linear(xq, wq, bias)
        if blk:  # the backward's default operands are the forward's, rotated back
            xq, wq = nf.hadamard(xq, blk, inverse=True), nf.hadamard(wq, blk, inverse=True)
        ctx.save_for_backward(x2 if cfg.x_bwd else xq, weight if cfg.w_bwd else wq,
                              *(m for m in (mx, mw) if m is not None))
        ctx.cfg, ctx.generator, ctx.has_bias = cfg, generator, bias is not None
        ctx.masks = (mx is not None, mw is not None)
        ctx.x_shape = x.shape
        return y.reshape(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx, g):
        cfg, gen = ctx.cfg, ctx.generator
        xs, ws, *masks = ctx.saved_tensors
        g2 = g.reshape(-1, g.shape[-1])
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            ga, wb, _, _ = _gemm_operands(g2, ws, cfg.grad, cfg.w_bwd, -1, 0, cfg.hadamard, gen)
            gx = ga.mm(wb)
        if ctx.needs_input_grad[1]:
            gc, xb, _, _ = _gemm_operands(g2, xs, cfg.grad, cfg.x_bwd, 0, 0, cfg.hadamard, gen)
            gw = gc.t().mm(xb)
        if cfg.gradient == "clipped":
            it = iter(masks)
            mx = next(it) if ctx.masks[0] else None
            mw = next(it) if ctx.masks[1] else None
            if gx is not None and mx is not None:
                gx = gx * mx
            if gw is not None and mw is not None:
                gw = gw * mw
        if ctx.has_bias and ctx.needs_input_grad[2]:
            gb = g2.sum(0)
        if gx is not None:
            gx = gx.reshape(ctx.x_shape)
        return gx, gw, gb, None, None


class QuantLinear(nn.Linear):
    """nn.Linear whose forward (and optionally backward) GEMM operands are fake-quantised."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, device=None, dtype=None,
                 generator: torch.Generator | None = None, **quant):
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        self.quant = LinearQuant(**quant)
        self.generator = generator

    @classmethod
    def from_linear(cls, linear: nn.Linear, **quant) -> QuantLinear:
        """A QuantLinear sharing ``linear``'s parameters."""
        q = cls(linear.in_features, linear.out_features, linear.bias is not None,
                device=linear.weight.device, dtype=linear.weight.dtype, **quant)
        q.weight, q.bias = linear.weight, linear.bias
        return q

    def forward(self, x):
        return _QuantLinearFn.apply(x, self.weight, self.bias, self.quant, self.generator)

    def extra_repr(self):
        return f"{super().extra_repr()}, quant={self.quant}"


def swap_linears(model: nn.Module, skip: tuple[str, ...] = (), **quant) -> nn.Module:
    """Replace every nn.Linear of ``model`` (in place; names containing any of ``skip`` are
    kept) by a QuantLinear sharing its parameters. Returns the model."""
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            if type(child) is nn.Linear and not any(s in full for s in skip):
                setattr(module, child_name, QuantLinear.from_linear(child, **quant))
    return model
