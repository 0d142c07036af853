"""DGQ's dual-grained weight quantiser: the two-phase grid search, the exact INT8 lift, the kernel.

    w = dgq.search(weight, x_calib, group=128)         # phase 1 per group, then phase 2 per channel
    w.w_s8()                                           # S2 * (q - z): int8 weights, one INT8 GEMM
    w.dequantize()                                     # s1 * W_s8, FP32 (== the fake-quant weight)
    layer = dgq.DGQLinear.from_weight(w, bias)         # real A8W4 kernel (shared.qmatmul) + zero-point epilogue

**The format** (Zhang et al. 2023, arXiv 2310.04836): asymmetric INT4 codes q in [0, 15] with one
zero point z per group of ``group`` input features; the group's scale S' is factorised into one
per-output-channel scale s1 and an *integer* per-group multiplier S2 >= 1, so
W_hat = s1 * S2 * (q - z), and W_s8 = S2 * (q - z) is an INT8 integer: the GEMM runs once in
INT8, Y = s_x * s1 * (X_s8 W_s8^T), instead of K / group partial GEMMs with an FP rescale each.
s1 is kept in FP16 (the paper's channel scale). With s1 on the FP16 grid (11 significant bits),
S2 <= 127 (7 bits) and |q - z| <= 15 (4 bits), every product s1 * S2 * (q - z) is exact in FP32
in any order, so the lift reproduces the dequantised weights bit for bit (tested).

**Phase 1 (per group; the fine scale).** For each clip ratio r_i = 1.02 - (i + 1) * 0.22 / n1
(n1 = 20: 1.009 .. 0.80) the group's weights are quantised asymmetrically over
[r min(W_g, 0), r max(W_g, 0)] (the range kept through 0 as :mod:`shared.numformats`' INT4_ASYM
does: the same as [min, max] for any group with weights of both signs), and the
(scale, zero) with the smallest output error ||X_g (W_g - W_hat_g)^T||^2 on the calibration
activations X_g of that group's input features is kept, per output channel and group.

**Phase 2 (per channel; the coarse scale).** For each ratio r_j = 1.02 - (j + 1) * 0.82 / n2
(n2 = 80: 1.01 .. 0.20): s8 = FP16(r_j max|W_row| / 127), S2 = clamp(round(S' / s8), 1, 127),
the codes re-rounded with the effective scale S2 * s8 from the row clipped to +-r_j max|W_row|,
and clamped to [z - floor(127 / S2), z + floor(127 / S2)] intersected with [0, 15] so that
S2 * (q - z) fits INT8; the s8 with the smallest output error of the whole row is kept.
Cost O(n1 + n2) quantisations instead of O(n1 n2) for a joint search. Output errors use a
reduced factor R of the calibration inputs (R^T R = X^T X, from a QR of X: at most K rows),
which gives the same errors as X itself at a fraction of the cost when there are many tokens.

**Zero points and shared.qmatmul.** :meth:`shared.qmatmul.QLinear.from_a8w4_codes` stores
*symmetric* int4 codes c in [-8, 7] with c * S2 in INT8 (W = s1 * S2 * c). DGQ's codes are
asymmetric, so per group we store c = q - o with an offset o: o = 8 where S2 <= 16 (then
c * S2 in [-128, 112]), o = z where S2 >= 17 (then |q - z| <= floor(127 / S2) <= 7). Then
W_s8 = S2 * c - S2 * (z - o): the second term is a per-(channel, group) integer e, and
X_s8 W_s8^T = X_s8 (S2 c)^T - G e^T with G the per-group sums of X_s8 [M, K / group] - a
GEMM K / group times smaller than the main one, exact in integers (float64 here), applied
with the same s_x * s1 epilogue. :class:`DGQLinear` does that; why here and not in qmatmul:
qmatmul's A8W4 layout is symmetric by design (its int4pack path has one zero per group that
would need the same rewrite), and the correction is DGQ's own.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from shared import numformats as nf
from shared import qmatmul

INT4_MAX = nf.INT4_ASYM.qmax  # 15: asymmetric INT4 codes q in [0, 15]
INT8_MAX = nf.INT8.qmax  # 127
SYMMETRIC_OFFSET = 8  # q - 8 in [-8, 7]: qmatmul's int4 storage
OFFSET_MAX_S2 = 16  # (q - 8) * S2 fits int8 for S2 <= 16 (-8 * 16 = -128)


def phase1_ratios(n: int = 20) -> torch.Tensor:
    """r_i = 1.02 - (i + 1) * 0.22 / n, i < n: the group clip ratios (1.009 .. 0.80 for n = 20)."""
    return torch.tensor([1.02 - (i + 1) * 0.22 / n for i in range(n)], dtype=torch.float64)


def phase2_ratios(n: int = 80) -> torch.Tensor:
    """r_j = 1.02 - (j + 1) * 0.82 / n, j < n: the channel clip ratios (1.01 .. 0.20 for n = 80)."""
    return torch.tensor([1.02 - (j + 1) * 0.82 / n for j in range(n)], dtype=torch.float64)


def check_group(k: int, group: int) -> None:
    if group < 2 or group % 2 or k % group:
        raise ValueError(f"group: must be even and divide in_features={k} (got {group})")


def reduced_inputs(x: torch.Tensor | None, k: int) -> torch.Tensor | None:
    """R [min(T, K), K] with R^T R = X^T X (so ||X d||^2 = ||R d||^2); None for None (weight MSE)."""
    if x is None:
        return None
    x = x.reshape(-1, k).float()
    if x.shape[0] <= k:
        return x
    return torch.linalg.qr(x.double(), mode="r")[1].float()


def _errors(d: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Row output errors ||R d_n||^2 of d [N, K] (R None: ||d_n||^2)."""
    if r is None:
        return d.pow(2).sum(-1)
    return (d @ r.t()).pow(2).sum(-1)


def _group_errors(d: torch.Tensor, rg: torch.Tensor, group: int) -> torch.Tensor:
    """Per (row, group) output errors ||R_g d_ng||^2 of d [N, K], rg [G, r, group] (None: ||d_ng||^2)."""
    n = d.shape[0]
    if rg is None:
        return d.reshape(n, -1, group).pow(2).sum(-1)
    e = torch.einsum("ngk,grk->ngr", d.reshape(n, -1, group), rg)
    return e.pow(2).sum(-1)


@dataclass(frozen=True)
class DGQWeight:
    """A dual-grained quantised weight: W_hat = s1 * S2 * (q - z), per group of ``group`` inputs."""

    codes: torch.Tensor  # uint8 [N, K] in [0, 15]
    zeros: torch.Tensor  # uint8 [N, G] in [0, 15]
    multipliers: torch.Tensor  # int16 [N, G]: S2 in [1, 127]
    channel_scales: torch.Tensor  # FP32 [N], values on the FP16 grid: s1
    group: int

    def _expand(self, t: torch.Tensor) -> torch.Tensor:
        return t.repeat_interleave(self.group, dim=1)

    def w_s8(self) -> torch.Tensor:
        """S2 * (q - z) as int32 [N, K] (lies in [-127, 127] by construction)."""
        q = self.codes.to(torch.int32) - self._expand(self.zeros.to(torch.int32))
        return q * self._expand(self.multipliers.to(torch.int32))

    def dequantize(self) -> torch.Tensor:
        """s1 * W_s8, FP32 [N, K]."""
        return self.channel_scales[:, None] * self.w_s8().float()

    def fine_dequantize(self) -> torch.Tensor:
        """(s1 * S2) * (q - z): the group-wise (fine-grained) reading of the same numbers, FP32."""
        s = self._expand(self.channel_scales[:, None] * self.multipliers.float())
        return s * (self.codes.float() - self._expand(self.zeros.float()))

    def qmatmul_codes(self):
        """(codes int8 [N, K] in [-8, 7], group scales int8 [N, G], channel scales FP32 [N], zero
        correction int32 [N, G]) with s1 * (S2 * codes - e) == W_hat: see the module docstring."""
        s2 = self.multipliers.to(torch.int32)
        z = self.zeros.to(torch.int32)
        offset = torch.where(s2 <= OFFSET_MAX_S2, torch.full_like(z, SYMMETRIC_OFFSET), z)
        codes = (self.codes.to(torch.int32) - self._expand(offset)).to(torch.int8)
        return codes, s2.to(torch.int8), self.channel_scales, s2 * (z - offset)


def phase1(w: torch.Tensor, x: torch.Tensor | None, group: int, n_ratios: int = 20):
    """The fine (group) scales S' [N, G] and zero points z [N, G] of the search (see the docstring)."""
    n, k = w.shape
    check_group(k, group)
    w = w.detach().float()
    rg = None
    if x is not None:
        xg = x.reshape(-1, k // group, group).float().transpose(0, 1)  # [G, T, g]
        rg = xg if xg.shape[1] <= group else torch.linalg.qr(xg.double(), mode="r")[1].float()
    # the clipped asymmetric INT4 grid of each group: range r * [min(w, 0), max(w, 0)] (zero kept in the
    # range, as numformats' INT4_ASYM does), s = range / 15, z = round(-lo / s); r < 1 clips the extremes
    wg = w.view(n, k // group, group)
    lo0, hi0 = wg.amin(-1).clamp(max=0), wg.amax(-1).clamp(min=0)
    best = torch.full((n, k // group), torch.inf)
    scale = torch.zeros(n, k // group)
    zero = torch.zeros(n, k // group)
    for r in phase1_ratios(n_ratios).tolist():
        s = ((hi0 - lo0) * r / INT4_MAX).clamp(min=torch.finfo(torch.float32).tiny)
        z = torch.round(-lo0 * r / s)
        q = (torch.round(wg / s[..., None]) + z[..., None]).clamp(0, INT4_MAX)
        err = _group_errors(w - ((q - z[..., None]) * s[..., None]).view(n, k), rg, group)
        better = err < best
        best = torch.where(better, err, best)
        scale = torch.where(better, s, scale)
        zero = torch.where(better, z, zero)
    return scale, zero


def _phase2_quant(w: torch.Tensor, fine: torch.Tensor, zero: torch.Tensor, amax: torch.Tensor, r: float, group: int):
    """Codes q [N, K], S2 [N, G], s1 [N] and W_hat [N, K] for one channel clip ratio r (all rows)."""
    n, k = w.shape
    s1 = (amax * r / INT8_MAX).half().float()
    s1 = torch.where(s1 > 0, s1, torch.ones_like(s1))
    s2 = torch.round(fine / s1[:, None]).clamp(1, INT8_MAX)
    span = torch.floor(INT8_MAX / s2)
    z = zero[..., None]
    lo, hi = (z - span[..., None]).clamp(min=0), (z + span[..., None]).clamp(max=INT4_MAX)
    eff = (s1[:, None] * s2)[..., None]  # [N, G, 1]
    m = (amax * r)[:, None, None]
    wc = torch.maximum(torch.minimum(w.view(n, -1, group), m), -m)
    q = torch.minimum(torch.maximum(torch.round(wc / eff) + z, lo), hi)
    return q.view(n, k), s2, s1, (eff * (q - z)).view(n, k)


def search(w: torch.Tensor, x: torch.Tensor | None = None, group: int = 128, n1: int = 20, n2: int = 80) -> DGQWeight:
    """DGQ's two-phase grid search for a weight [N, K] on calibration inputs x [T, K] (None: plain
    weight MSE instead of the output error). See the module docstring."""
    w = w.detach().float()
    n, k = w.shape
    if n1 < 1 or n2 < 1:
        raise ValueError(f"n1, n2: grid sizes must be >= 1 (got {n1}, {n2})")
    fine, zero = phase1(w, x, group, n1)
    r = reduced_inputs(x, k)
    amax = w.abs().amax(1)
    ratios = phase2_ratios(n2).tolist()
    best = torch.full((n,), torch.inf)
    best_i = torch.zeros(n, dtype=torch.long)
    for i, ratio in enumerate(ratios):
        err = _errors(w - _phase2_quant(w, fine, zero, amax, ratio, group)[3], r)
        better = err < best
        best = torch.where(better, err, best)
        best_i = torch.where(better, torch.full_like(best_i, i), best_i)
    q, s2, s1 = torch.zeros_like(w), torch.zeros_like(fine), torch.zeros(n)
    for i in best_i.unique().tolist():  # each row with its own best ratio, the same arithmetic as the scan
        rows = best_i == i
        q[rows], s2[rows], s1[rows], _ = _phase2_quant(w[rows], fine[rows], zero[rows], amax[rows], ratios[i], group)
    return DGQWeight(codes=q.to(torch.uint8), zeros=zero.to(torch.uint8), multipliers=s2.to(torch.int16),
                     channel_scales=s1, group=group)


# ----------------------------------------------------------------------------- the real kernel
class DGQLinear(nn.Module):
    """y = x W_hat^T + b with DGQ's weights, computed by shared.qmatmul's A8W4 kernel (int4 storage,
    one int8 GEMM, s_x * s1 epilogue) plus the zero-point correction G e^T (module docstring).
    ``smooth`` (optional, [K]): activations are divided by it first (SmoothQuant-style smoothing
    whose factors were multiplied into the weight columns before the search)."""

    def __init__(self, weight: DGQWeight, bias: torch.Tensor | None = None, kernel: str = "auto",
                 smooth: torch.Tensor | None = None):
        super().__init__()
        codes, s2, s1, corr = weight.qmatmul_codes()
        self.group = weight.group
        self.inner = qmatmul.QLinear.from_a8w4_codes(codes, s2, s1, bias=bias, kernel=kernel)
        self.register_buffer("correction", corr.double().t().contiguous())  # [G, N], integers
        self.has_correction = bool(corr.any())
        self.register_buffer("smooth", None if smooth is None else smooth.detach().float().clone())

    @property
    def in_features(self) -> int:
        return self.inner.in_features

    @property
    def out_features(self) -> int:
        return self.inner.out_features

    def dequantized_weight(self) -> torch.Tensor:
        """W_hat from the stored codes: qmatmul's s1 * S2 * c minus s1 * e (exact, see the docstring)."""
        w = self.inner.dequantized_weight()
        if self.has_correction:
            e = self.correction.t().float().repeat_interleave(self.group, 1)
            w = w - self.inner.scales[:, None] * e
        return w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.smooth is not None:
            x = x / self.smooth
        y = self.inner(x)
        if self.has_correction:
            x2 = x.reshape(-1, self.in_features)
            a, sx = qmatmul.quantize_tokens(x2)
            sums = a.view(a.shape[0], -1, self.group).sum(-1, dtype=torch.int32).double()  # G [M, K / group]
            corr = (sums @ self.correction).float() * sx * self.inner.scales
            y = y - corr.reshape(y.shape).to(y.dtype)
        return y

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        """Per-token INT8 activations (fake-quantised) times W_hat in FP32."""
        if self.smooth is not None:
            x = x / self.smooth
        x2 = x.reshape(-1, self.in_features).float()
        xq = nf.fake_quant(x2, qmatmul.INT8_SYM)
        y = F.linear(xq, self.dequantized_weight(), self.inner.bias)
        return y.reshape(*x.shape[:-1], self.out_features)
