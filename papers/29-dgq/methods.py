"""(a) Quality: DGQ and the baselines as fake-quantised linear layers of a real model.

    cal = methods.capture_inputs(model, lambda: model(**batch), mask)   # {linear name: X [T, K]}
    qmodel, layers = methods.quantize_model(model, "dgq", cal, settings)
    methods.layer_errors(model, layers, eval_inputs)                    # per-layer relative output MSE

A method is (weight quantiser, activation quantiser, smoothing). Every baseline's quantiser is
:mod:`shared.numformats`' (asymmetric INT4 per group or per channel, symmetric INT8 per channel,
per-token INT8/INT4 activations: one scale per row of the 2-D [tokens, K] input), round to
nearest; DGQ's weights come from :func:`paper29.dgq.search` on the layer's calibration inputs.

Smoothing (activations divided per input channel by s, weight columns multiplied by s, before
either is quantised; X W^T is unchanged):

- ``percentile`` (DGQ's percentile clipping): a_j = max |X[:, j]| over the calibration tokens;
  the baseline b is the k-th largest a_j with k = floor(K (100 - p) / 100 + 1.5) (p = 99.5:
  the top 0.5 % of channels); s_j = max(1, a_j / b): only outlier channels are scaled, down to b;
- ``smoothquant``: s_j = a_j^alpha / max|W[:, j]|^(1 - alpha) (SmoothQuant, alpha = 0.5);
- ``none``.

Here the division by s runs inside the layer (a simulation); in a deployment it is folded
into the preceding LayerNorm (q/k/v, FFN-in) or the previous linear.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from paper29 import dgq
from shared import numformats as nf

WEIGHTS = ("none", "group4", "channel4", "channel8", "dgq")
ACTS = ("none", "int8", "int4")
SMOOTHS = ("none", "percentile", "smoothquant")


@dataclass(frozen=True)
class Method:
    weight: str
    act: str
    smooth: str


METHODS = {
    "fp32": Method("none", "none", "none"),
    "a16w4_g128": Method("group4", "none", "none"),  # weight-only INT4 g128: the quality reference
    "w4a8_channel": Method("channel4", "int8", "percentile"),  # prior A8W4: per-channel INT4
    "w4a8_channel_noclip": Method("channel4", "int8", "smoothquant"),
    "w4a8_g128": Method("group4", "int8", "percentile"),  # group-wise W4A8 (fake: no single INT8 GEMM)
    "w4a8_g128_noclip": Method("group4", "int8", "smoothquant"),
    "w8a8": Method("channel8", "int8", "percentile"),
    "w4a4": Method("group4", "int4", "percentile"),
    "dgq": Method("dgq", "int8", "percentile"),
    "dgq_noclip": Method("dgq", "int8", "smoothquant"),  # SmoothQuant instead of percentile clipping
    "dgq_nosmooth": Method("dgq", "int8", "none"),  # DGQ without percentile clipping (no smoothing at all)
}


@dataclass(frozen=True)
class Settings:
    group: int = 128  # INT4 group along the input features
    n1: int = 20  # DGQ phase-1 grid
    n2: int = 80  # DGQ phase-2 grid
    percentile: float = 99.5  # percentile smoothing: the baseline channel
    alpha: float = 0.5  # SmoothQuant's migration strength


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"methods: {name!r} is not a method; allowed: {', '.join(METHODS)}")
    return METHODS[name]


def weight_scheme(kind: str, group: int) -> nf.Scheme | None:
    return {"none": None, "group4": nf.per_group(nf.INT4_ASYM, group), "channel4": nf.per_channel(nf.INT4_ASYM, axis=0),
            "channel8": nf.per_channel(nf.INT8, axis=0)}[kind]  # fmt: skip


def act_scheme(kind: str) -> nf.Scheme | None:
    return {"none": None, "int8": nf.per_channel(nf.INT8, axis=0), "int4": nf.per_channel(nf.INT4, axis=0)}[kind]


def smoothing(kind: str, x: torch.Tensor, w: torch.Tensor, s: Settings) -> torch.Tensor | None:
    """Per-input-channel smoothing factors [K] (None for ``none``); see the module docstring."""
    if kind == "none":
        return None
    a = x.abs().amax(0).float()
    if kind == "percentile":
        k = int(a.numel() * (100 - s.percentile) / 100 + 1.5)
        base = a.sort(descending=True).values[min(k, a.numel()) - 1]
        if base < 1e-4:
            return torch.ones_like(a)
        return (a / base).clamp(min=1.0)
    if kind == "smoothquant":
        wmax = w.abs().amax(0).float()
        return (a.clamp(min=1e-5).pow(s.alpha) / wmax.clamp(min=1e-5).pow(1 - s.alpha)).clamp(min=1e-5)
    raise ValueError(f"smooth: {kind!r} is not an option; allowed: {', '.join(SMOOTHS)}")


class FakeQuantLinear(nn.Module):
    """y = Q_a(x / s) W_hat^T + b: a quantised weight (smoothing folded into its columns), per-token
    fake-quantised activations. ``dgq_weight`` keeps DGQ's codes for the exactness checks."""

    def __init__(self, weight: torch.Tensor, bias, smooth, act: nf.Scheme | None, dgq_weight=None):
        super().__init__()
        self.register_buffer("weight", weight.detach().float())
        self.register_buffer("bias", None if bias is None else bias.detach().float().clone())
        self.register_buffer("smooth", None if smooth is None else smooth.float())
        self.act = act
        self.dgq_weight = dgq_weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.smooth is not None:
            x = x / self.smooth
        if self.act is not None:
            x = nf.fake_quant(x.reshape(-1, x.shape[-1]), self.act).reshape(x.shape)
        return F.linear(x, self.weight, self.bias)


def quantize_linear(linear: nn.Linear, method: Method, x: torch.Tensor, s: Settings) -> FakeQuantLinear:
    """One layer under ``method``, calibrated on its inputs x [T, K]."""
    w = linear.weight.detach().float()
    sm = smoothing(method.smooth, x, w, s)
    ws = w if sm is None else w * sm[None, :]
    dw = None
    if method.weight == "dgq":
        dw = dgq.search(ws, x if sm is None else x / sm, s.group, s.n1, s.n2)
        wq = dw.dequantize()
    else:
        wq = nf.fake_quant(ws, weight_scheme(method.weight, s.group))
    return FakeQuantLinear(wq, linear.bias, sm, act_scheme(method.act), dw)


def target_linears(model: nn.Module, prefixes: tuple[str, ...] | None = None) -> dict[str, nn.Linear]:
    """Every nn.Linear of the model except the output head / pooler (kept FP32, as DGQ does);
    with ``prefixes``, only those whose name starts with one of them (e.g. "encoder.layer.0.")."""
    return {n: m for n, m in model.named_modules() if type(m) is nn.Linear and not n.endswith(("pooler.dense", "lm_head"))
            and (prefixes is None or n.startswith(tuple(prefixes)))}  # fmt: skip


@torch.no_grad()
def capture_inputs(model: nn.Module, run, mask: torch.Tensor | None = None, max_tokens: int | None = None,
                   seed: int = 0, prefixes: tuple[str, ...] | None = None) -> dict[str, torch.Tensor]:
    """{linear name: its inputs [T, K]} over one call of ``run()`` for the target linears (``prefixes``:
    see :func:`target_linears`); padding rows dropped with the [B, L] ``mask``; at most ``max_tokens``
    rows, a seeded random subset (the same rows for every layer)."""
    store: dict[str, torch.Tensor] = {}
    hooks = []
    for name, mod in target_linears(model, prefixes).items():
        def hook(_m, args, _out, name=name):
            x = args[0].detach().float()
            x = x[mask.bool()] if mask is not None else x.reshape(-1, x.shape[-1])
            store[name] = x
        hooks.append(mod.register_forward_hook(hook))
    try:
        run()
    finally:
        for h in hooks:
            h.remove()
    if max_tokens is not None:
        t = next(iter(store.values())).shape[0]
        if t > max_tokens:
            idx = torch.randperm(t, generator=torch.Generator().manual_seed(seed))[:max_tokens].sort().values
            store = {k: v[idx] for k, v in store.items()}
    return store


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def quantize_model(model: nn.Module, name: str, calib: dict[str, torch.Tensor], s: Settings, progress=None):
    """A deep copy of ``model`` with every linear that has calibration inputs in ``calib`` quantised
    by method ``name`` (the others stay FP32); and the {linear name: FakeQuantLinear} (empty for fp32)."""
    method = get_method(name)
    out = copy.deepcopy(model)
    if method == METHODS["fp32"]:
        return out, {}
    layers = {}
    items = [(n, m) for n, m in target_linears(out).items() if n in calib]
    for lname, lin in (progress or (lambda it, **_: it))(items, desc=name):
        layers[lname] = quantize_linear(lin, method, calib[lname], s)
        _set(out, lname, layers[lname])
    return out, layers


@torch.no_grad()
def layer_errors(model: nn.Module, layers: dict[str, FakeQuantLinear], inputs: dict[str, torch.Tensor]) -> dict[str, float]:
    """Per layer: ||Y_q - Y||^2 / ||Y||^2 on the layer's own FP32 inputs (no error propagation)."""
    ref = target_linears(model)
    out = {}
    for name, q in layers.items():
        x = inputs[name]
        y = ref[name](x).double()
        out[name] = float((q(x).double() - y).pow(2).sum() / y.pow(2).sum())
    return out


@torch.no_grad()
def lift_report(layers: dict[str, FakeQuantLinear], inputs: dict[str, torch.Tensor]) -> dict:
    """The exact INT8 lift on every DGQ layer: the fraction of W_s8 = S2 (q - z) entries inside INT8;
    the number of weights where s1 * W_s8 differs, in any bit, from the group-wise reading
    (s1 S2)(q - z) or from the weight the real kernel's storage decodes to (0: bit-exact); the real kernel (:class:`paper29.dgq.DGQLinear`, qmatmul's int8
    A8W4 path + zero-point epilogue) against the fake-quant layer on ``inputs`` (max error relative
    to the largest output); the largest multiplier S2."""
    in_range = total = s2_max = mismatches = 0
    kernel_err = 0.0
    for name, q in layers.items():
        w = q.dgq_weight
        ws8 = w.w_s8()
        in_range += int(((ws8 >= nf.INT8.qmin) & (ws8 <= nf.INT8.qmax)).sum())
        total += ws8.numel()
        s2_max = max(s2_max, int(w.multipliers.max()))
        real = dgq.DGQLinear(w, q.bias, kernel="int8", smooth=q.smooth)
        lifted = w.dequantize()
        mismatches += int((lifted != w.fine_dequantize()).sum()) + int((real.dequantized_weight() != lifted).sum())
        y_ref = q(inputs[name])
        kernel_err = max(kernel_err, float((real(inputs[name]) - y_ref).abs().max() / y_ref.abs().max()))
    if not total:
        raise ValueError("methods: 'dgq' must be listed for the lift checks (no DGQ layer was quantised)")
    return {"lift_in_range_frac": in_range / total, "lift_bit_mismatches": mismatches,
            "dgq_kernel_max_rel_err": float(f"{kernel_err:.3g}"), "dgq_s2_max": s2_max}


def quality_metrics(table, top_k: int) -> dict:
    """Flat metrics of the quality table (one row per method: layer_rel_mse, cosine, topk_agreement)
    and the ratios the claims read: DGQ's MSE over group-wise and per-channel W4A8's, its cosine
    gain over per-channel W4A8; DGQ with percentile clipping over DGQ with SmoothQuant smoothing
    (``mse_ratio_dgq_clip_noclip``: "noclip" is SmoothQuant, the name of the first runs) and over
    DGQ without any smoothing (``mse_ratio_dgq_clip_nosmooth``: with vs without percentile clipping),
    each when both ran."""
    t = table.set_index("method")
    m = {}
    for name, row in t.iterrows():
        m[f"mse_{name}"] = float(f"{row['layer_rel_mse']:.4g}")
        m[f"cos_{name}"] = round(float(row["cosine"]), 5)
        m[f"top{top_k}_{name}"] = round(float(row["topk_agreement"]), 4)
    mse, cos = t["layer_rel_mse"], t["cosine"]
    if {"dgq", "w4a8_g128"} <= set(t.index):
        m["mse_ratio_dgq_g128"] = round(float(mse["dgq"] / mse["w4a8_g128"]), 4)
    if {"dgq", "w4a8_channel"} <= set(t.index):
        m["mse_ratio_dgq_channel"] = round(float(mse["dgq"] / mse["w4a8_channel"]), 4)
        m["cos_dgq_minus_channel"] = round(float(cos["dgq"] - cos["w4a8_channel"]), 5)
    for other, key in (("dgq_noclip", "noclip"), ("dgq_nosmooth", "nosmooth")):
        if {"dgq", other} <= set(t.index):
            m[f"mse_ratio_dgq_clip_{key}"] = round(float(mse["dgq"] / mse[other]), 4)
            m[f"cos_dgq_clip_minus_{key}"] = round(float(cos["dgq"] - cos[other]), 5)
    return m


def perplexity_metrics(table) -> dict:
    """ppl_<method> of the perplexity table (one row per method, fp32 included) and DGQ's ratios to
    per-channel W4A8, group-wise W4A8, FP32 and DGQ without smoothing (those that ran)."""
    t = table.set_index("method")["perplexity"]
    m = {f"ppl_{k}": round(float(v), 3) for k, v in t.items()}
    for other, key in (("w4a8_channel", "channel"), ("w4a8_g128", "g128"), ("fp32", "fp32"), ("dgq_nosmooth", "nosmooth")):
        if {"dgq", other} <= set(t.index):
            m[f"ppl_ratio_dgq_{key}"] = round(float(t["dgq"] / t[other]), 4)
    return m


# ----------------------------------------------------------------------------- MiniLM
def encode(tokenizer, texts: list[str], max_length: int = 128):
    return tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")


@torch.no_grad()
def embed(model: nn.Module, enc, batch: int = 64) -> torch.Tensor:
    """Mean-pooled, L2-normalised sentence embeddings (sentence-transformers' all-MiniLM-L6-v2 recipe)."""
    outs = []
    for i in range(0, enc["input_ids"].shape[0], batch):
        part = {k: v[i : i + batch] for k, v in enc.items()}
        h = model(**part).last_hidden_state
        m = part["attention_mask"].unsqueeze(-1).float()
        outs.append(F.normalize((h * m).sum(1) / m.sum(1), dim=-1))
    return torch.cat(outs)


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean cosine similarity of matching rows."""
    return float(F.cosine_similarity(a.double(), b.double(), dim=-1).mean())


def topk_agreement(ref: torch.Tensor, other: torch.Tensor, k: int = 10) -> float:
    """Mean |top-k(ref) & top-k(other)| / k over queries: each row retrieves its k nearest other rows."""
    def top(e):
        sim = e.double() @ e.double().t()
        sim.fill_diagonal_(-torch.inf)
        return sim.topk(k, dim=-1).indices

    a, b = top(ref), top(other)
    hits = (a.unsqueeze(-1) == b.unsqueeze(-2)).any(-1).sum(-1).double()
    return float((hits / k).mean())
