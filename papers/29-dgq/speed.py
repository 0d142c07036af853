"""(b) Speed of one GEMM structure against another on the CPU, real kernels (shared.qmatmul).

    table = speed.sweep(sizes=[4096], ms=[1, 16, 256], group=128, repeats=5, warmup=1, seed=0)

Per (K = N, M) it times, interleaved (shared.timing):

- ``dgq``: :class:`paper29.dgq.DGQLinear`: int4 storage, ONE int8 GEMM (qmatmul's A8W4 kernel,
  "auto": the kernel qmatmul picks for M is recorded), s_x * s1 epilogue, zero-point correction;
- ``dgq_lifted``: the same W_s8 prepacked as int8 and run by qmatmul's W8A8 kernel: the INT8 GEMM
  alone, what DGQ's kernel would cost if unpacking int4 inside the GEMM were free (an upper bound);
- ``groupwise_w4a8``: :class:`GroupwiseW4A8`: K / group partial int8 GEMMs, each group's weight
  prepacked once by oneDNN (``onednn.qlinear_prepack``), its (channel, group) scales applied in
  the GEMM's epilogue and the partial sums accumulated by oneDNN's ``sum`` post-op - what
  fine-grained A8W4 costs without DGQ's lift, with only the per-call work such a kernel does
  timed (codes kept unpacked as int8: the baseline does not pay for unpacking either);
- ``groupwise_w4a8_int_mm``: the same arithmetic by ``torch._int_mm`` per group plus an FP32
  ``addcmul_``: the baseline of the first runs. On the CPU ``_int_mm`` is oneDNN's generic
  s8s8s32 GEMM, which repacks the weight at every call (``shared.qmatmul``'s notes), so this
  times a per-call weight repack no real kernel does: kept for context (review, issue 5);
- ``a16w4``: :class:`DequantA16W4`: asymmetric INT4 g128 weights (qmatmul's packed w4 storage)
  dequantised to FP32 at every call, then an FP32 GEMM (the paper's A16W4 comparison);
- ``a16w4_int4pack``: qmatmul's weight-only int4 kernel (aten int4pack, bf16 activations): the
  strongest A16W4 kernel on this CPU, for context;
- ``fp32``: F.linear.
"""

from __future__ import annotations

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from paper29 import dgq
from shared import numformats as nf
from shared import qmatmul, timing

KERNELS = ("dgq", "dgq_lifted", "groupwise_w4a8", "groupwise_w4a8_int_mm", "a16w4", "a16w4_int4pack", "fp32")


class GroupwiseW4A8(nn.Module):
    """Group-wise W4A8: Y = s_x * sum_g (X_s8[:, g] @ C_g^T) * S'_g, one int8 GEMM per group of
    input features, its int32 result scaled per (channel, group). C = q - z (asymmetric INT4 codes
    minus their zero point, int8), S' the group scales (numformats INT4_ASYM, g).

    ``kernel="onednn"`` (the baseline; CPU with ``torch.ops.onednn``): every group's C_g prepacked
    once at construction, S'_g applied in the GEMM's epilogue, the partial sums accumulated in place
    by the ``sum`` post-op: per call only the activations' quantisation, the K / g GEMMs and s_x.
    ``kernel="int_mm"``: ``torch._int_mm`` per group plus an FP32 ``addcmul_`` (repacks every
    group's weight inside oneDNN at every call on the CPU: the first runs' baseline)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, group: int, kernel: str = "onednn"):
        super().__init__()
        n, k = weight.shape
        dgq.check_group(k, group)
        if kernel not in ("onednn", "int_mm"):
            raise ValueError(f"kernel: {kernel!r} is not an option; allowed: onednn, int_mm")
        if kernel == "onednn" and not qmatmul.has_onednn_qlinear():
            raise ValueError("kernel: 'onednn' needs torch.ops.onednn (x86 CPU builds); use 'int_mm'")
        q = nf.quantize_blocks(weight.detach().float(), nf.per_group(nf.INT4_ASYM, group))
        c = q.codes.to(torch.int16) - q.zero_points.to(torch.int16).repeat_interleave(group, 1)
        self.group, self.kernel = group, kernel
        self.register_buffer("codes_t", c.to(torch.int8).view(n, k // group, group).permute(1, 2, 0).contiguous())  # [G, g, N]
        self.register_buffer("scales", q.scales.t().contiguous())  # [G, N]
        self.register_buffer("bias", None if bias is None else bias.detach().float().clone())
        self._packed = []
        if kernel == "onednn":  # construction work, not timed: a real kernel stores its weights packed
            self._packed = [torch.ops.onednn.qlinear_prepack(ct.t().contiguous(), None) for ct in self.codes_t]
            self._zp = torch.zeros(n, dtype=torch.long)

    def dequantized_weight(self) -> torch.Tensor:
        g, gs, n = self.codes_t.shape
        return (self.codes_t.float() * self.scales[:, None, :]).permute(2, 0, 1).reshape(n, g * gs)

    def _onednn(self, a: torch.Tensor) -> torch.Tensor:
        op = torch.ops.onednn.qlinear_pointwise
        parts = a.view(a.shape[0], -1, self.group).transpose(0, 1).contiguous()  # [G, M, g]: one pass over X_s8
        acc = op(parts[0], 1.0, 0, self._packed[0], self.scales[0], self._zp, None, 1.0, 0, torch.float32, "none", [None], "")
        for i in range(1, len(self._packed)):  # acc += (X_g C_g^T) * S'_g, in the GEMM's epilogue
            acc = op.binary(parts[i], 1.0, 0, self._packed[i], self.scales[i], self._zp, acc, None, 1.0, 0, torch.float32,
                            1.0, 0, "sum", 1.0, "none", [None], "")  # fmt: skip
        return acc

    def _int_mm(self, a: torch.Tensor) -> torch.Tensor:
        acc = torch.zeros(a.shape[0], self.codes_t.shape[2])
        for i in range(self.codes_t.shape[0]):
            part = torch._int_mm(a[:, i * self.group : (i + 1) * self.group], self.codes_t[i])
            acc.addcmul_(part.float(), self.scales[i])
        return acc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x2 = x.reshape(-1, x.shape[-1])
        a, sx = qmatmul.quantize_tokens(x2)
        y = (self._onednn(a) if self.kernel == "onednn" else self._int_mm(a)) * sx
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], -1)


class DequantA16W4(nn.Module):
    """A16W4 by dequantise-then-GEMM: qmatmul's packed asymmetric INT4 g-group weights turned back
    into FP32 at every call (:meth:`shared.qmatmul.QLinear.dequantized_weight`), then F.linear.
    Only the packed int4 codes, the group scales and zeros are kept; a call unpacks the nibbles and
    applies scale and zero (no re-quantisation from a float weight): the per-call work of an
    A16W4 layer that dequantises into a full-precision buffer before its GEMM (unfused, FP32)."""

    def __init__(self, linear: nn.Linear, group: int):
        super().__init__()
        self.q = qmatmul.QLinear.from_linear(linear, scheme="w4", group=group)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.q.dequantized_weight(), self.q.bias)


def build(k: int, n: int, group: int, seed: int, n1: int = 20, n2: int = 80) -> dict[str, nn.Module]:
    """The kernels of one K x N layer (Gaussian weights, std 0.02); DGQ on weight MSE (no inputs)."""
    g = torch.Generator().manual_seed(seed)
    lin = nn.Linear(k, n)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(n, k, generator=g) * 0.02)
        lin.bias.copy_(torch.randn(n, generator=g) * 0.02)
    w = dgq.search(lin.weight, None, group, n1, n2)
    lifted = qmatmul.QLinear.from_linear(lin, scheme="w8a8")
    lifted.codes = w.w_s8().to(torch.int8)
    lifted.scales = w.channel_scales.clone()
    return {
        "dgq": dgq.DGQLinear(w, lin.bias),
        "dgq_lifted": lifted,
        "groupwise_w4a8": GroupwiseW4A8(lin.weight, lin.bias, group,
                                        kernel="onednn" if qmatmul.has_onednn_qlinear() else "int_mm"),
        "groupwise_w4a8_int_mm": GroupwiseW4A8(lin.weight, lin.bias, group, kernel="int_mm"),
        "a16w4": DequantA16W4(lin, group),
        "a16w4_int4pack": qmatmul.QLinear.from_linear(lin, scheme="w4", group=group),
        "fp32": lin,
    }


@torch.no_grad()
def sweep(sizes: list[int], ms: list[int], group: int, repeats: int, warmup: int, seed: int,
          kernels: tuple[str, ...] = KERNELS, progress=None) -> pd.DataFrame:
    """Median seconds per call of every kernel at every (K = N, M); one row per (size, m, kernel)."""
    rows = []
    for size in sizes:
        mods = build(size, size, group, seed)
        for m in ms:
            x = torch.randn(m, size, generator=torch.Generator().manual_seed(seed + m))
            fns = {name: (lambda mod=mods[name]: mod(x)) for name in kernels}
            res = timing.benchmark(fns, repeats=repeats, warmup=warmup, progress=progress)
            for name, t in res.items():
                kernel = mods["dgq"].inner.kernel_for(m) if name == "dgq" else ""
                rows.append({"size": size, "m": m, "kernel": name, "backend": kernel, **t.as_row()})
    return pd.DataFrame(rows)


def ratios(table: pd.DataFrame) -> pd.DataFrame:
    """Per (size, m): time of every kernel over DGQ's (> 1: DGQ faster)."""
    wide = table.pivot_table(index=["size", "m"], columns="kernel", values="median_s")
    return wide.div(wide["dgq"], axis=0)


def summary(table: pd.DataFrame) -> dict:
    """The timings the claims read, at the largest K = N of ``table`` (from :func:`sweep`): group-wise
    W4A8 (prepacked, ``groupwise_prepacked``; and the first runs' ``_int_mm`` baseline that repacks
    its weight at every call, ``groupwise_int_mm``) over DGQ and over the lifted INT8 GEMM (the
    smallest ratio over M >= 16; absent when no such M ran), A16W4 / aten int4 / FP32 over DGQ
    (over every M); and every ratio per (size, M)."""
    r = ratios(table)
    big = int(table["size"].max())
    at = r.xs(big, level="size")
    many = at[at.index >= 16]
    out = {"speed_size": big}
    for kernel, key in (("groupwise_w4a8", "groupwise_prepacked"), ("groupwise_w4a8_int_mm", "groupwise_int_mm")):
        if len(many) and kernel in many:
            out[f"speed_{key}_over_dgq_min_m16"] = round(float(many[kernel].min()), 3)
            out[f"speed_{key}_over_lifted_min_m16"] = round(float((many[kernel] / many["dgq_lifted"]).min()), 3)
    out |= {
        "speed_a16w4_over_dgq_min": round(float(at["a16w4"].min()), 3),
        "speed_a16w4_over_dgq_max": round(float(at["a16w4"].max()), 3),
        "speed_int4pack_over_dgq_min": round(float(at["a16w4_int4pack"].min()), 3),
        "speed_fp32_over_dgq_max": round(float(at["fp32"].max()), 3),
    }
    for (size, m), row in r.iterrows():
        for k in ("groupwise_w4a8", "groupwise_w4a8_int_mm", "a16w4", "a16w4_int4pack", "dgq_lifted", "fp32"):
            if k in row:
                out[f"speed_{k}_over_dgq_k{size}_m{m}"] = round(float(row[k]), 3)
    return out
