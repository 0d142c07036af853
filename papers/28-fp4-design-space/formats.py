"""(a) The format study: E2M1 block quantisation error against the tensor's magnitude.

    schemes = formats.study_schemes(block=32)          # name -> numformats.Scheme
    table = formats.sweep({"gaussian": x, ...}, schemes, exponents=range(-6, 7))
    formats.summary(table, tolerance=1.1)               # the claims' numbers

Every scheme has E2M1 elements and one scale per ``block`` consecutive elements along the last
axis; they differ in the scale format and in tensor scaling (TS, an FP32 second-level scale
t = amax / (6 max_scale) divided out first, :mod:`shared.numformats`):

- ``e8m0``: MXFP4, power-of-two scales (the OCP rule by default: 2^(floor(log2 amax) - 2));
- ``e4m3_ts`` / ``e4m3``: FP8 E4M3 scales s = Q(amax / 6) (round to nearest), with / without TS;
- ``ue5m3`` / ``ue5m3_ts``: the 8-bit unsigned UE5M3 scale (definition assumed in numformats).

Each tensor is scaled to unit RMS and multiplied by 10^k (in FP32) before quantisation, so
k is its magnitude (its natural RMS is reported separately); the error is the relative MSE
``mean((Q(x) - x)^2) / mean(x^2)`` (1 / SNR; SNR in dB is -10 log10 of it), so a scheme that
is scale invariant gives the same number at every k.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

from shared import numformats as nf

SCHEMES = ("e8m0", "e4m3_ts", "e4m3", "ue5m3", "ue5m3_ts")
REFERENCE = "e4m3_ts"  # the scale-invariant reference of the ratios


def study_schemes(block: int = nf.MX_BLOCK, e8m0_rule: str = "ocp") -> dict[str, nf.Scheme]:
    """The schemes of the study (see the module docstring), one scale per ``block`` elements."""
    return {
        "e8m0": nf.mx(nf.E2M1, nf.E8M0, block=block, scale_rule=e8m0_rule),
        "e4m3_ts": nf.mx(nf.E2M1, nf.E4M3, block=block, tensor_scale=True),
        "e4m3": nf.mx(nf.E2M1, nf.E4M3, block=block),
        "ue5m3": nf.mx(nf.E2M1, nf.UE5M3, block=block),
        "ue5m3_ts": nf.mx(nf.E2M1, nf.UE5M3, block=block, tensor_scale=True),
    }


def synthetic(n: int, dof: float, seed: int, width: int = 256) -> dict[str, torch.Tensor]:
    """A standard Gaussian and a Student-t(dof) tensor of ``n`` elements, shaped [n / width, width]."""
    if n % width:
        raise ValueError(f"n_synthetic: must be a multiple of {width} (got {n})")
    rng = np.random.default_rng(seed)
    g = rng.standard_normal(n).astype(np.float32)
    t = rng.standard_t(dof, n).astype(np.float32)
    return {"gaussian": torch.from_numpy(g).reshape(-1, width), "student_t": torch.from_numpy(t).reshape(-1, width)}


def relative_mse(x: torch.Tensor, scheme: nf.Scheme) -> float:
    """mean((Q(x) - x)^2) / mean(x^2), in float64."""
    q = nf.fake_quant(x, scheme).double()
    xd = x.double()
    return float(((q - xd) ** 2).mean() / (xd**2).mean())


def sweep(tensors: dict[str, torch.Tensor], schemes: dict[str, nf.Scheme], exponents) -> pd.DataFrame:
    """One row per (tensor, scheme, k): rel_mse and snr_db of Q(x 10^k), x first scaled to unit
    RMS, so k is the tensor's magnitude (RMS = 10^k) whatever its natural scale."""
    rows = []
    for name, x in tensors.items():
        x = x.float() / x.float().pow(2).mean().sqrt()
        for k in exponents:
            xk = x * 10.0**k
            for sname, scheme in schemes.items():
                err = relative_mse(xk, scheme)
                rows.append({"tensor": name, "scheme": sname, "k": int(k), "rel_mse": err,
                             "snr_db": -10 * math.log10(err) if err > 0 else math.inf})
    return pd.DataFrame(rows)


def ratios(table: pd.DataFrame, reference: str = REFERENCE) -> pd.DataFrame:
    """rel_mse of every scheme over the reference's at the same (tensor, k): columns are schemes."""
    wide = table.pivot_table(index=["tensor", "k"], columns="scheme", values="rel_mse")
    return wide.div(wide[reference], axis=0)


def decades_within(r: pd.Series, tolerance: float) -> int:
    """Number of k at which the ratio is <= tolerance for every tensor (r indexed by tensor, k)."""
    ok = (r <= tolerance).groupby(level="k").all()
    return int(ok.sum())


def summary(table: pd.DataFrame, tolerance: float, gaussian: str = "gaussian") -> dict[str, float]:
    """The format claims' metrics (prefix ``fmt_``), from a :func:`sweep` table with every scheme."""
    r = ratios(table)
    ks = sorted(table["k"].unique())
    extremes = [ks[0], ks[-1]]
    at = r.index.get_level_values("k")
    ue5, e4 = decades_within(r["ue5m3"], tolerance), decades_within(r["e4m3"], tolerance)
    return {
        "fmt_ue5m3_vs_e4m3ts_max_ratio": float(r["ue5m3"].max()),
        "fmt_ue5m3_vs_e4m3ts_max_ratio_k0": float(r["ue5m3"][at == 0].max()),
        "fmt_ue5m3_decades": ue5,
        "fmt_e4m3_decades": e4,
        "fmt_ue5m3_extra_decades": ue5 - e4,
        "fmt_e4m3_nots_min_ratio_extremes": float(r["e4m3"][np.isin(at, extremes)].min()),
        "fmt_e8m0_vs_e4m3ts_gaussian": float(r["e8m0"].xs(gaussian, level="tensor").median()),
        "fmt_ue5m3ts_vs_e4m3ts_max_ratio": float(r["ue5m3_ts"].max()),
    }


def minilm_tensors(texts: list[str], layer: int) -> dict[str, torch.Tensor]:
    """Real tensors of the pretrained MiniLM (shared.zoo.minilm): the FFN input weight of
    ``layer`` and the hidden states entering it (activations on ``texts``, padding dropped)."""
    from shared import zoo

    model, tok = zoo.minilm()
    n_layers = len(model.encoder.layer)
    if not 0 <= layer < n_layers:
        raise ValueError(f"minilm_layer: must be in [0, {n_layers - 1}] (got {layer})")
    enc = tok(texts, padding=True, truncation=True, max_length=128, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**enc, output_hidden_states=True).hidden_states[layer]
    acts = hidden[enc["attention_mask"].bool()]  # [tokens, 384]
    weight = model.encoder.layer[layer].intermediate.dense.weight.detach().clone()  # [1536, 384]
    return {"minilm_weight": weight, "minilm_activation": acts}


def output_gradients(model, x: torch.Tensor, y: torch.Tensor, module) -> torch.Tensor:
    """dY of ``module`` (a Linear of ``model``) for the cross-entropy of one batch: the
    gradient operand of its backward GEMMs, [tokens, out_features]."""
    import torch.nn.functional as F

    grabbed = []
    handle = module.register_full_backward_hook(lambda m, gin, gout: grabbed.append(gout[0].detach()))
    try:
        model.zero_grad(set_to_none=True)
        logits = model(input_ids=x).logits
        F.cross_entropy(logits.flatten(0, 1).float(), y.flatten()).backward()
    finally:
        handle.remove()
    model.zero_grad(set_to_none=True)
    return grabbed[0].reshape(-1, grabbed[0].shape[-1])
