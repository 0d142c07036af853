"""The compute overhead of each stabilisation technique, counted per training step, and the
loss-gap / overhead Pareto front.

The paper makes the cost of each technique explicit in its quantisation-gradient framework;
its exact accounting (the body of arXiv 2509.17791) was not readable here, so we count the
extra operations the way the planning notes describe them, relative to plain
MXFP4 (E8M0 scales, round to nearest, no rotation, no tensor scaling), for every operand of
every quantised GEMM of one training step:

- tensor scaling (TS): a global amax reduction over the operand plus one multiply per
  element (x / t): ``TS_OPS`` = 2 operations per element;
- an FP8 scale (E4M3, UE5M3) instead of E8M0: amax / 6 rounded to the 8-bit float grid per
  block, and the scale applied by a multiply instead of an exponent add: ``FP8_SCALE_OPS`` = 4
  operations per block, i.e. 4 / B per element;
- a block Hadamard of size B: the fast Walsh-Hadamard transform, B log2 B additions per block,
  i.e. log2 B per element (the 1/sqrt(B) folds into the scale), on both operands of every GEMM;
- stochastic rounding (SR) of dY: one random number (``rng_ops`` operation-equivalents) and
  one addition per element of dY, in both backward GEMMs.

A Linear of a step with M tokens, K inputs and N outputs has three GEMMs of 2MNK FLOPs each
(forward, dX, dW) and six quantised operands: X (M K) and W (N K) forward, dY (M N) and W in
dX, dY and X in dW. The overhead of a technique is its extra operations over the step's GEMM
FLOPs (a fraction: 0.01 = 1 %).
"""

from __future__ import annotations

import math

import pandas as pd
import torch
from torch import nn

from paper28 import techniques
from shared import metrics

TS_OPS = 2.0  # per element: the global amax (a compare) and the multiply by 1/t
FP8_SCALE_OPS = 4.0  # per block: divide by 6, round to the 8-bit grid, encode, and the multiply when applied
SR_ADD_OPS = 1.0  # per element of dY: floor(v + u), besides the random number itself


def gemm_shapes(model: nn.Module, example, skip: tuple[str, ...] = ()) -> list[tuple[int, int, int]]:
    """(M, K, N) of every nn.Linear (or QuantLinear) forward of ``model(example)`` (names with a
    ``skip`` part excluded), found by forward hooks: M = rows of the flattened input."""
    shapes, handles = [], []
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Linear) and not any(s in name for s in skip):
            handles.append(mod.register_forward_hook(
                lambda m, inp, out: shapes.append((inp[0].numel() // m.in_features, m.in_features, m.out_features))))
    try:
        with torch.no_grad():
            model(**example) if isinstance(example, dict) else model(example)
    finally:
        for h in handles:
            h.remove()
    return shapes


def operand_elements(shapes) -> dict[str, float]:
    """Elements of all quantised operands of one step, the gradient operands alone, GEMM FLOPs."""
    total = grads = flops = 0.0
    for m, k, n in shapes:
        total += 2 * m * k + 2 * n * k + 2 * m * n  # X twice, W twice, dY twice
        grads += 2 * m * n
        flops += 3 * 2 * m * n * k
    return {"elements": total, "grad_elements": grads, "gemm_flops": flops}


def overhead_ops(tech: techniques.Technique | None, shapes, block: int, rng_ops: float = 1.0) -> dict[str, float]:
    """Extra operations of ``tech`` over plain MXFP4 for one step, by technique, and in total."""
    out = {"ts": 0.0, "scale": 0.0, "hadamard": 0.0, "sr": 0.0}
    if tech is not None:
        e = operand_elements(shapes)
        if tech.tensor_scale:
            out["ts"] = TS_OPS * e["elements"]
        if tech.scale != "e8m0":
            out["scale"] = FP8_SCALE_OPS * e["elements"] / block
        if tech.hadamard:
            out["hadamard"] = math.log2(tech.hadamard) * e["elements"]
        if tech.sr:
            out["sr"] = (rng_ops + SR_ADD_OPS) * e["grad_elements"]
    out["total"] = sum(out.values())
    return out


def overhead_table(names: list[str], shapes, block: int, rng_ops: float = 1.0) -> pd.DataFrame:
    """One row per config: extra ops by technique and the overhead fraction of the GEMM FLOPs."""
    flops = operand_elements(shapes)["gemm_flops"]
    rows = []
    for name in names:
        ops = overhead_ops(techniques.parse(name), shapes, block, rng_ops)
        rows.append({"config": name, **{f"ops_{k}": v for k, v in ops.items()}, "overhead": ops["total"] / flops})
    return pd.DataFrame(rows)


def pareto(gaps: pd.DataFrame, over: pd.DataFrame) -> pd.DataFrame:
    """Mean loss gap per config (over seeds) joined with its overhead, and the Pareto flag
    (minimise both); fp32 is left out (it is the reference, not a quantised option), and a
    config that diverged in any seed (NaN gap) is off the front."""
    g = gaps[gaps["config"] != techniques.BASELINE].groupby("config", sort=False)["loss_gap"].agg(
        loss_gap=lambda v: v.mean(skipna=False), loss_gap_std="std", seeds="size").reset_index()
    df = g.merge(over[["config", "overhead"]], on="config", how="left")
    finite = df["loss_gap"].map(math.isfinite)  # a run that diverged (NaN) is never on the front
    df["pareto"] = False
    if finite.any():
        df.loc[finite, "pareto"] = metrics.pareto_front(df[finite], minimize=["overhead", "loss_gap"]).to_numpy()
    return df


def _mean_gap(gaps: pd.DataFrame, names) -> float | None:
    g = gaps[gaps["config"].isin(list(names))]["loss_gap"]
    return float(g.mean()) if len(g) else None


def _paired(gaps: pd.DataFrame, pairs: list[tuple[str, str]]) -> pd.Series:
    """gap(a) - gap(b) per seed, over the pairs (a, b) both run."""
    wide = gaps.pivot_table(index="seed", columns="config", values="loss_gap")
    diffs = [wide[a] - wide[b] for a, b in pairs if a in wide and b in wide]
    return pd.concat(diffs) if diffs else pd.Series(dtype=float)


def claim_metrics(gaps: pd.DataFrame, table: pd.DataFrame, task: str, hadamard: int) -> dict[str, float | None]:
    """The training claims' numbers for one task (prefix ``<task>_``); None where the grid lacks
    the configurations a number needs or a run diverged (logged as null: "not run")."""
    best = techniques.Technique("e4m3", hadamard, True, True).name
    by = table.set_index("config")
    plain = float(by.loc[techniques.PLAIN, "loss_gap"]) if techniques.PLAIN in by.index else None
    hts = float(by.loc[best, "loss_gap"]) if best in by.index else None
    techs = {n: techniques.parse(n) for n in table["config"]}
    sr_pairs = [(n, t.name.replace("-sr", "-rtn")) for n, t in techs.items() if t.sr]
    ue_pairs = [(n, techniques.Technique("e8m0", t.hadamard, False, t.sr).name)
                for n, t in techs.items() if t.scale == "ue5m3" and not t.tensor_scale]
    ue, e8 = _mean_gap(gaps, [a for a, _ in ue_pairs]), _mean_gap(gaps, [b for _, b in ue_pairs])
    sr = _paired(gaps, sr_pairs)
    r = lambda v: None if v is None or not math.isfinite(v) else round(v, 6)  # noqa: E731  (NaN: diverged)
    return {
        f"{task}_gap_plain_mxfp4": r(plain),
        f"{task}_gap_h_ts_sr": r(hts),
        f"{task}_gap_ratio_h_ts_sr": r(hts / plain) if plain is not None and hts is not None and plain > 0 else None,
        f"{task}_h_ts_sr_on_pareto": float(by.loc[best, "pareto"]) if best in by.index else None,
        f"{task}_sr_minus_rtn_gap": r(float(sr.mean())) if len(sr) else None,
        f"{task}_sr_better_share": r(float((sr < 0).mean())) if len(sr) else None,
        f"{task}_ue5m3_vs_e8m0_gap_ratio": r(ue / e8) if ue is not None and e8 and e8 > 0 else None,
        f"{task}_e4m3_nots_gap": r(_mean_gap(gaps, [n for n, t in techs.items() if t.scale == "e4m3" and not t.tensor_scale])),
    }
