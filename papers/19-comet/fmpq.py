"""COMET's FMPQ (fine-grained mixed-precision activation quantisation), W4 weights and a KV4
cache, as fake quantisation on a HF model (a quality study: no INT4 GEMM runs here).

    stats = fmpq.calibrate(model, run_batch, batches)           # per-Linear channel amax of the inputs
    plan = fmpq.plan(stats["layers.0.mlp.down_proj"], group=32, outlier_factor=8.0)
    plan.perm, plan.n_int8, plan.int8_fraction                   # outlier channels first; leading groups in INT8
    fmpq.quantize_model(model, stats, fmpq.SCHEMES["comet"], group=32, ...)  # every Linear swapped, in place

**FMPQ** (paper: Sec. on FMPQ; the planning notes' reading): an activation [tokens, K] is cut
into groups of ``group`` consecutive channels, one scale per (token, group). Outlier channels
(large calibration amax) are scattered over K; a static channel permutation, sorted by
calibration amax descending, gathers them into the first groups, which stay INT8 (W4A8);
every other group is INT4 (W4A4). The weight's input channels take the same permutation
offline, so x P (W P)^T = x W^T and the GEMM's result is unchanged by the reordering. Which
groups are INT8: the ``outlier_factor`` rule marks a channel as an outlier when its
calibration amax exceeds ``outlier_factor`` x the median channel amax; the INT8 groups are the
ceil(outliers / group) leading ones. A fixed ``int8_fraction`` instead keeps round(f x groups).

**Weights**: symmetric INT4, one FP16 scale per ``group`` input channels (in the permuted order
where the activations are permuted, as the kernel stores them). **KV cache**: INT4 per
(token, head, group of ``kv_group`` head dims), asymmetric with an FP16 scale and an INT4 zero
point, applied to K (after RoPE) and V as the attention reads them from the cache: a
registered transformers attention function fake-quantises them, then runs SDPA.

**Bits accounting** (:func:`activation_bits`): element bits of each group plus its scale's bits
over ``group`` (FP16 scales: 16/group).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from shared import numformats as nf

FP16 = nf.FloatFormat("fp16", 5, 10, 15, 65504.0, specials="ieee")  # scales as the GPU kernels keep them
KV_ATTENTION = "p19_kv_quant"  # the registered attention implementation (SDPA after K/V fake quant)


# ----------------------------------------------------------------------------- schemes
@dataclass(frozen=True)
class Scheme:
    """One quantisation configuration of a whole model."""

    name: str
    w_bits: int | None = None  # None: FP32 weights
    w_group: bool = True  # per-group weight scales (False: per output channel)
    a_bits: int | None = None  # None: FP32 activations
    a_group: bool = True  # per (token, group) scales (False: per token)
    fmpq: bool = False  # permute channels, INT8 for the outlier groups
    int8_fraction: float | None = None  # fmpq: fixed share of INT8 groups (None: the outlier rule)
    kv_bits: int | None = None  # None: FP32 KV cache


SCHEMES = {
    "fp32": Scheme("fp32"),
    "w8a8": Scheme("w8a8", w_bits=8, w_group=False, a_bits=8, a_group=False),
    "w4a4": Scheme("w4a4", w_bits=4, a_bits=4, a_group=False),  # uniform: one INT4 scale per token
    "w4a4_g": Scheme("w4a4_g", w_bits=4, a_bits=4),  # per-group INT4, no INT8 groups
    "w4a4_fmpq": Scheme("w4a4_fmpq", w_bits=4, a_bits=4, fmpq=True),
    "comet": Scheme("comet", w_bits=4, a_bits=4, fmpq=True, kv_bits=4),  # W4A4KV4 with FMPQ
}


def sweep_scheme(fraction: float) -> Scheme:
    """COMET (W4 + FMPQ + KV4) with a fixed share of INT8 groups."""
    if not 0 <= fraction <= 1:
        raise ValueError(f"int8_fractions: every value must be in [0, 1] (got {fraction})")
    return Scheme(f"comet_f{fraction:g}", w_bits=4, a_bits=4, fmpq=True, int8_fraction=fraction, kv_bits=4)


def _int(bits: int) -> nf.IntFormat:
    return {8: nf.INT8, 4: nf.INT4}[bits]


# ----------------------------------------------------------------------------- permutation and groups
def outlier_permutation(amax: torch.Tensor) -> torch.Tensor:
    """Channel order with the largest calibration amax first (stable: ties keep their order)."""
    return torch.sort(amax, descending=True, stable=True).indices


def invert(perm: torch.Tensor) -> torch.Tensor:
    """The inverse permutation: x[..., perm][..., invert(perm)] == x."""
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(len(perm), device=perm.device)
    return inv


def n_groups(channels: int, group: int) -> int:
    return math.ceil(channels / group)


def int8_groups(amax: torch.Tensor, group: int, outlier_factor: float | None = None,
                fraction: float | None = None) -> int:
    """How many leading groups (after :func:`outlier_permutation`) stay INT8: by a fixed
    ``fraction`` of the groups, or ceil(outlier channels / group) with an outlier a channel
    whose amax exceeds ``outlier_factor`` x the median channel amax."""
    g = n_groups(len(amax), group)
    if fraction is not None:
        return int(round(fraction * g))
    if outlier_factor is None:
        raise ValueError("outlier_factor: needed when no int8 fraction is given")
    outliers = int((amax > outlier_factor * amax.median()).sum())
    return min(g, math.ceil(outliers / group))


@dataclass(frozen=True)
class Plan:
    """FMPQ of one Linear's input: the channel permutation and the INT8 group count."""

    perm: torch.Tensor
    n_int8: int
    group: int

    @property
    def groups(self) -> int:
        return n_groups(len(self.perm), self.group)

    @property
    def int8_channels(self) -> int:
        return min(len(self.perm), self.n_int8 * self.group)

    @property
    def int8_fraction(self) -> float:
        return self.n_int8 / self.groups


def plan(amax: torch.Tensor, group: int, outlier_factor: float | None = None, fraction: float | None = None) -> Plan:
    """The FMPQ plan of an input whose calibration channel amax is ``amax``."""
    perm = outlier_permutation(amax)
    return Plan(perm, int8_groups(amax, group, outlier_factor, fraction), group)


def activation_bits(channels: int, n_int8: int, group: int, scale_bits: int = 16) -> float:
    """Average stored bits per activation element: INT8 for the first n_int8 groups, INT4 for
    the rest, plus one ``scale_bits`` scale per (token, group)."""
    g = n_groups(channels, group)
    if not 0 <= n_int8 <= g:
        raise ValueError(f"n_int8: must be in [0, {g}] (got {n_int8})")
    c8 = min(channels, n_int8 * group)
    return (8 * c8 + 4 * (channels - c8)) / channels + scale_bits * g / channels


# ----------------------------------------------------------------------------- quantisers
def fmpq_quant(x: torch.Tensor, p: Plan) -> torch.Tensor:
    """x [..., K] fake-quantised by FMPQ: permuted, the leading INT8 groups and the INT4 rest
    quantised per (token, group), permuted back."""
    xp = x[..., p.perm]
    c8 = p.int8_channels
    parts = []
    if c8:
        parts.append(nf.fake_quant(xp[..., :c8], nf.per_group(nf.INT8, p.group, scale_format=FP16)))
    if c8 < xp.shape[-1]:
        parts.append(nf.fake_quant(xp[..., c8:], nf.per_group(nf.INT4, p.group, scale_format=FP16)))
    return torch.cat(parts, -1)[..., invert(p.perm)]


def act_quant(x: torch.Tensor, bits: int, group: int | None) -> torch.Tensor:
    """Per-token (group None) or per-(token, group) symmetric INT quantisation, FP16 scales."""
    if group is None:
        x2 = x.reshape(-1, x.shape[-1])
        return nf.fake_quant(x2, nf.per_channel(_int(bits), axis=0, scale_format=FP16)).reshape(x.shape)
    return nf.fake_quant(x, nf.per_group(_int(bits), group, scale_format=FP16))


def weight_quant(w: torch.Tensor, bits: int, group: int | None, perm: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric INT weights [out, in]: per output channel (group None) or per ``group`` input
    channels, the groups taken in ``perm`` order (the kernel's layout), FP16 scales."""
    if group is None:
        return nf.fake_quant(w, nf.per_channel(_int(bits), axis=0, scale_format=FP16))
    wp = w if perm is None else w[:, perm]
    q = nf.fake_quant(wp, nf.per_group(_int(bits), group, scale_format=FP16))
    return q if perm is None else q[:, invert(perm)]


def kv_scheme(bits: int, group: int) -> nf.Scheme:
    """KV cache: asymmetric INT per group of head dims, FP16 scale, INT zero point."""
    fmt = {4: nf.INT4_ASYM, 8: nf.INT8_ASYM}[bits]
    return nf.per_group(fmt, group, scale_format=FP16)


# ----------------------------------------------------------------------------- model surgery
def linear_names(model: nn.Module, skip: tuple[str, ...]) -> list[str]:
    return [n for n, m in model.named_modules() if type(m) is nn.Linear and not any(s in n for s in skip)]


@torch.inference_mode()
def calibrate(model: nn.Module, forward, batches, skip: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """Per-Linear channel amax of its input over ``batches`` (``forward(model, batch)`` runs one)."""
    stats: dict[str, torch.Tensor] = {}
    hooks = []
    for name in linear_names(model, skip):
        def hook(_m, args, name=name):
            a = args[0].detach().abs().reshape(-1, args[0].shape[-1]).amax(0).float()
            stats[name] = a if name not in stats else torch.maximum(stats[name], a)
        hooks.append(model.get_submodule(name).register_forward_pre_hook(hook))
    try:
        for b in batches:
            forward(model, b)
    finally:
        for h in hooks:
            h.remove()
    return stats


class QLinear(nn.Module):
    """A Linear with fake-quantised weight (precomputed) and input (on the fly)."""

    def __init__(self, linear: nn.Linear, scheme: Scheme, group: int, plan_: Plan | None):
        super().__init__()
        self.scheme, self.group, self.plan = scheme, group, plan_
        w = linear.weight.detach()
        if scheme.w_bits is not None:
            w = weight_quant(w, scheme.w_bits, group if scheme.w_group else None, plan_.perm if plan_ else None)
        self.register_buffer("weight", w)
        self.bias = linear.bias

    def forward(self, x):
        s = self.scheme
        if self.plan is not None:
            x = fmpq_quant(x, self.plan)
        elif s.a_bits is not None:
            x = act_quant(x, s.a_bits, self.group if s.a_group else None)
        return F.linear(x, self.weight, self.bias)


def quantize_model(model: nn.Module, stats: dict[str, torch.Tensor], scheme: Scheme, group: int,
                   outlier_factor: float, kv_group: int, skip: tuple[str, ...] = ()) -> dict[str, Plan]:
    """Swap every calibrated Linear for a QLinear under ``scheme`` (in place) and set the KV
    quantiser of every attention module; returns the FMPQ plans by Linear name."""
    plans: dict[str, Plan] = {}
    for name in linear_names(model, skip):
        if name not in stats:
            raise KeyError(f"{name}: no calibration statistics")
        p = None
        if scheme.fmpq:
            p = plan(stats[name], group, outlier_factor, scheme.int8_fraction)
            plans[name] = p
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child,
                QLinear(model.get_submodule(name), scheme, group, p))
    set_kv_quant(model, kv_scheme(scheme.kv_bits, kv_group) if scheme.kv_bits else None)
    return plans


def mean_activation_bits(plans: dict[str, Plan], stats: dict[str, torch.Tensor], scale_bits: int = 16) -> float:
    """Channel-weighted average activation bits over the model's Linear inputs."""
    total = sum(len(stats[n]) for n in plans)
    return sum(activation_bits(len(stats[n]), p.n_int8, p.group, scale_bits) * len(stats[n])
               for n, p in plans.items()) / total


def int8_group_share(plans: dict[str, Plan]) -> float:
    """INT8 groups / all groups over every FMPQ Linear."""
    return sum(p.n_int8 for p in plans.values()) / sum(p.groups for p in plans.values())


# ----------------------------------------------------------------------------- KV cache
def _kv_attention(module, query, key, value, attention_mask, **kwargs):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    scheme = getattr(module, "p19_kv_scheme", None)
    if scheme is not None:  # [batch, kv heads, tokens, head_dim]: groups along head_dim
        key, value = nf.fake_quant(key, scheme), nf.fake_quant(value, scheme)
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


def register_kv_attention() -> str:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(KV_ATTENTION, _kv_attention)
    AttentionMaskInterface.register(KV_ATTENTION, sdpa_mask)  # the masks SDPA gets (padding included)
    return KV_ATTENTION


def set_kv_quant(model: nn.Module, scheme: nf.Scheme | None) -> int:
    """Route the model's attention through the KV-quantising SDPA; ``scheme`` None leaves K/V
    exact. Returns the number of attention modules reached."""
    register_kv_attention()
    model.config._attn_implementation = KV_ATTENTION
    count = 0
    for m in model.modules():
        if hasattr(m, "config") and m is not model and type(m).__name__.endswith(("Attention", "SelfAttention")):
            m.config._attn_implementation = KV_ATTENTION
            m.p19_kv_scheme = scheme
            count += 1
    return count
