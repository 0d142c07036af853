"""The quality study: every scheme (and the INT8-share sweep) on the tiny LM (perplexity) and on
the pretrained MiniLM (embedding cosine to FP32, code-search recall@k, neighbour agreement).

    table = study.tinylm_table(load, batches_calib, batches_eval, schemes, group=16, ...)
    table = study.minilm_table(texts_calib, queries, docs, schemes, group=32, ...)

Each row: the scheme, its mean activation bits (FP16 scales counted; FP32 = 32), the share of
INT8 groups, and the quality numbers. Calibration statistics come from the FP32 model once.
"""

from __future__ import annotations

import copy
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch

from paper19 import fmpq
from shared import metrics, zoo
from shared.progress import silent


def schemes(fractions: Sequence[float], names: Sequence[str] | None = None) -> list[fmpq.Scheme]:
    """The named schemes (all, or ``names`` in fmpq.SCHEMES order), then COMET at each fixed INT8 share."""
    unknown = sorted(set(names or ()) - set(fmpq.SCHEMES))
    if unknown:
        raise ValueError(f"minilm_schemes: unknown scheme(s) {unknown}; allowed: {', '.join(fmpq.SCHEMES)}")
    named = [s for n, s in fmpq.SCHEMES.items() if names is None or n in names]
    return named + [fmpq.sweep_scheme(f) for f in fractions]


def code_search_pairs(df: pd.DataFrame, n_pairs: int, n_calib: int, seed: int) -> tuple[pd.DataFrame, list[str]]:
    """A seeded draw of ``n_pairs`` (summary, code) rows with unique summaries and codes, and
    the summaries and codes of ``n_calib`` other rows as calibration texts."""
    df = df.drop_duplicates("summary").drop_duplicates("code")
    if len(df) < n_pairs + n_calib:
        raise ValueError(f"minilm_pairs: {n_pairs} + minilm_calib_texts {n_calib} asked, the corpus has {len(df)} unique pairs")
    pick = np.random.default_rng(seed).permutation(len(df))[: n_pairs + n_calib]
    calib = df.iloc[pick[n_pairs:]]
    return df.iloc[pick[:n_pairs]], [t for a, b in zip(calib["summary"], calib["code"]) for t in (a, b)]


def act_bits(s: fmpq.Scheme, plans: dict, stats: dict, group: int) -> float:
    """Mean stored bits per activation element over the Linear inputs (channel-weighted), FP16
    scales counted: per token one scale over K channels, per group one per ``group``."""
    if s.a_bits is None:
        return 32.0
    if s.fmpq:
        return fmpq.mean_activation_bits(plans, stats)
    per = [(s.a_bits + 16 * (fmpq.n_groups(len(a), group) if s.a_group else 1) / len(a), len(a)) for a in stats.values()]
    return sum(b * n for b, n in per) / sum(n for _, n in per)


def _row(s: fmpq.Scheme, plans: dict, stats: dict, group: int) -> dict:
    share = fmpq.int8_group_share(plans) if plans else (1.0 if s.a_bits == 8 else 0.0)
    return {"scheme": s.name, "w_bits": s.w_bits or 32, "kv_bits": s.kv_bits or 32,
            "act_bits": act_bits(s, plans, stats, group), "int8_group_share": share, "fixed_fraction": s.int8_fraction}


def tinylm_table(model, calib: list, evals: list, schemes_: Sequence[fmpq.Scheme], group: int, kv_group: int,
                 outlier_factor: float, progress: Callable | None = None) -> pd.DataFrame:
    """Validation perplexity of the tiny LM under every scheme (the output head stays FP32)."""
    skip = ("lm_head",)
    stats = fmpq.calibrate(model, lambda m, b: m(b[0]), calib, skip)
    head_dim = model.config.head_dim
    rows = []
    for s in (progress or silent)(list(schemes_), desc="tinylm schemes"):
        m = copy.deepcopy(model)
        plans = fmpq.quantize_model(m, stats, s, group, outlier_factor, min(kv_group, head_dim), skip)
        rows.append({**_row(s, plans, stats, group), "val_ppl": metrics.perplexity(m, evals)})
    fmpq.set_kv_quant(model, None)
    return pd.DataFrame(rows)


@torch.inference_mode()
def recall_at_k(queries: torch.Tensor, docs: torch.Tensor, k: int) -> float:
    """Share of queries whose own document (row i) is among the k most similar."""
    top = (queries @ docs.T).topk(k, dim=1).indices
    return float((top == torch.arange(len(queries))[:, None]).any(1).float().mean())


def neighbour_agreement(a: torch.Tensor, b: torch.Tensor, k: int) -> float:
    """Mean overlap |top-k(a) & top-k(b)| / k of each query's documents under two embeddings
    of the same texts (a, b: (queries, docs) pairs)."""
    ta = (a[0] @ a[1].T).topk(k, dim=1).indices
    tb = (b[0] @ b[1].T).topk(k, dim=1).indices
    same = (ta[:, :, None] == tb[:, None, :]).any(2).float().sum(1) / k
    return float(same.mean())


def minilm_table(model, tokenizer, calib_texts: Sequence[str], queries: Sequence[str], docs: Sequence[str],
                 schemes_: Sequence[fmpq.Scheme], group: int, kv_group: int, outlier_factor: float,
                 max_length: int, batch_size: int, k: int, progress: Callable | None = None) -> pd.DataFrame:
    """MiniLM under every scheme: cosine of each text's embedding to FP32's, code-search recall@k
    (summary -> code), and top-k neighbour agreement with FP32."""
    skip = ("pooler",)

    def run(m, texts):
        return zoo.sentence_embed(m, tokenizer, list(texts), max_length=max_length, batch_size=batch_size)

    def fwd(m, batch):
        return run(m, batch)

    stats = fmpq.calibrate(model, fwd, [list(calib_texts[i:i + batch_size]) for i in range(0, len(calib_texts), batch_size)], skip)
    ref_q, ref_d = run(model, queries), run(model, docs)
    rows = []
    for s in (progress or silent)(list(schemes_), desc="minilm schemes"):
        if s == fmpq.SCHEMES["fp32"]:  # nothing quantised: the reference itself
            plans, q, d = {}, ref_q, ref_d
        else:
            m = copy.deepcopy(model)
            plans = fmpq.quantize_model(m, stats, s, group, outlier_factor, kv_group, skip)
            q, d = run(m, queries), run(m, docs)
        cos = float(torch.cat([(q * ref_q).sum(1), (d * ref_d).sum(1)]).mean())
        rows.append({**_row(s, plans, stats, group), "cosine_to_fp32": cos, f"recall_at_{k}": recall_at_k(q, d, k),
                     "neighbour_agreement": neighbour_agreement((q, d), (ref_q, ref_d), k)})
    fmpq.set_kv_quant(model, None)
    return pd.DataFrame(rows)


def int8_groups_vs_group_scales(values, lower_is_better: bool) -> tuple[float, float | None]:
    """FMPQ's INT8 groups isolated from its per-(token, group) scales, from one quality number per
    scheme (``values[name]`` for w4a4, w4a4_g, w4a4_fmpq): (the gain of W4 + FMPQ over per-group W4A4
    with no INT8 group, > 0 where the INT8 groups help; that gain as a share of FMPQ's whole gain over
    uniform W4A4, None where FMPQ gains nothing over it)."""
    sign = -1.0 if lower_is_better else 1.0
    int8 = sign * (float(values["w4a4_fmpq"]) - float(values["w4a4_g"]))
    total = sign * (float(values["w4a4_fmpq"]) - float(values["w4a4"]))
    return int8, (int8 / total if total > 0 else None)
