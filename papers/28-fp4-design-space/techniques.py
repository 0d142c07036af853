"""(b) The technique grid of the training study, and its quantisation of every Linear.

A technique configuration is named ``<scale>[-h<B>][-ts]-<rtn|sr>``, e.g. ``e8m0-rtn`` (plain
MXFP4), ``e4m3-h32-ts-sr`` (Hadamard 32 + tensor scaling + stochastic rounding of gradients,
E4M3 scales); ``fp32`` is the unquantised baseline. The full grid is
{e8m0, e4m3, ue5m3} x {no H, H<B>} x {no TS, TS} x {RTN, SR}: 24 configurations.

Every operand of every quantised GEMM is E2M1 with one scale per ``block`` elements along the
GEMM's contraction axis (shared.fakequant.QuantLinear): forward X and W; backward dY (in both
backward GEMMs), W (in dX = dY W) and X (in dW = dY^T X), re-quantised from the
high-precision copies along their own contraction axes. Forward operands and backward W / X
round to nearest; ``sr`` rounds dY stochastically (unbiased). ``h<B>`` rotates both operands of
every GEMM by a block Hadamard of size B first (no random signs).
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

import torch

from shared import fakequant
from shared import numformats as nf

SCALE_FORMATS = {"e8m0": nf.E8M0, "e4m3": nf.E4M3, "ue5m3": nf.UE5M3}
BASELINE = "fp32"
PLAIN = "e8m0-rtn"  # plain MXFP4: E8M0, round to nearest, no Hadamard, no tensor scaling
_NAME = re.compile(r"^(e8m0|e4m3|ue5m3)(?:-h(\d+))?(-ts)?-(rtn|sr)$")


@dataclass(frozen=True)
class Technique:
    scale: str  # e8m0 | e4m3 | ue5m3
    hadamard: int = 0  # block of the Hadamard rotation; 0: none
    tensor_scale: bool = False
    sr: bool = False  # stochastic rounding of the gradient operand dY

    @property
    def name(self) -> str:
        h = f"-h{self.hadamard}" if self.hadamard else ""
        return f"{self.scale}{h}{'-ts' if self.tensor_scale else ''}-{'sr' if self.sr else 'rtn'}"

    def scheme(self, block: int, e8m0_rule: str = "ocp") -> nf.Scheme:
        fmt = SCALE_FORMATS[self.scale]
        rule = e8m0_rule if fmt == nf.E8M0 else "nearest"
        return nf.mx(nf.E2M1, fmt, block=block, tensor_scale=self.tensor_scale, scale_rule=rule)

    def linear_quant(self, block: int, e8m0_rule: str = "ocp") -> dict:
        """Keyword arguments of fakequant.swap_linears / QuantLinear for this technique."""
        s = self.scheme(block, e8m0_rule)
        grad = s.with_(rounding="stochastic") if self.sr else s
        return dict(x=s, w=s, grad=grad, x_bwd=s, w_bwd=s, hadamard=self.hadamard or None)


def parse(name: str) -> Technique | None:
    """A Technique from its name; None for ``fp32``. A bad name fails in one line."""
    if name == BASELINE:
        return None
    m = _NAME.match(name)
    if not m:
        raise ValueError(f"configs: {name!r} is not a technique name; use fp32 or <e8m0|e4m3|ue5m3>[-h<B>][-ts]-<rtn|sr>")
    h = int(m.group(2) or 0)
    if h and h & (h - 1):
        raise ValueError(f"configs: {name!r}: the Hadamard block must be a power of two")
    return Technique(m.group(1), h, bool(m.group(3)), m.group(4) == "sr")


def full_grid(hadamard: int) -> list[str]:
    """fp32 and all 24 technique names (Hadamard block ``hadamard``)."""
    names = [BASELINE]
    for scale, h, ts, sr in itertools.product(SCALE_FORMATS, (0, hadamard), (False, True), (False, True)):
        names.append(Technique(scale, h, ts, sr).name)
    return names


def quantize_model(model: torch.nn.Module, technique: Technique | None, block: int, seed: int,
                   skip: tuple[str, ...] = (), e8m0_rule: str = "ocp", device: str = "cpu") -> torch.nn.Module:
    """Every nn.Linear of ``model`` (but names containing ``skip``) -> QuantLinear, in place.
    Stochastic rounding draws from one generator seeded with ``seed``."""
    if technique is None:
        return model
    gen = torch.Generator(device=device).manual_seed(seed)
    return fakequant.swap_linears(model, skip=skip, generator=gen, **technique.linear_quant(block, e8m0_rule))
