"""Batch-1 inference cost of P streams against the parameter-scaled model of equal predicted loss.

The paper's comparison (Fig. 4, cost_analysis.py): take a base model, give it P streams, and
compare its memory and latency increase over the base with those of a wider model whose
parameter count N (1 + k ln P) the law says reaches the same loss. The authors estimate both
with llm-analysis on an A100 (input 64 tokens, output 64, batch 1); we run the models.

Per model (random initialisation: the cost does not depend on the weights):

- memory = bytes of the weights (``shared.metrics.tensor_bytes``: prefixes and aggregation
  MLP included) + bytes of the KV cache after the whole generation (``shared.parscale.kv_cache_bytes``
  of the real cache: P streams hold P caches and the prefixes). Exact counts of real
  tensors; activations at batch 1 are small and left out (llm-analysis adds them);
- ``peak_growth_bytes``: the measured high-water mark of one generation over its start
  (CPU: process RSS; CUDA: allocator peak), ``shared.metrics.MemorySampler`` — noisy on a CPU;
- latency: ``shared.metrics.prefill_decode_latency`` at batch 1 (P streams decode as batch P).

The "increase" of a model is its value minus the base model's; the ratio of the parameter-
scaled model's increase to ParScale's is the paper's "x less memory/latency increase".
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from shared import metrics, parscale, timing, zoo

from . import law


def _generate(model, ids: torch.Tensor, new_tokens: int):
    """Greedy prefill + (new_tokens - 1) cached decode steps; returns the final cache."""
    out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
    cache, token = out.cache, out.logits[:, -1].argmax(-1, keepdim=True)
    for _ in range(new_tokens - 1):
        out = model(input_ids=token, cache=cache, use_cache=True, logits_to_keep=1)
        cache, token = out.cache, out.logits[:, -1].argmax(-1, keepdim=True)
    return cache


def measure(model, spec, *, prompt_len: int, new_tokens: int, repeats: int, warmup: int, device: str, seed: int) -> dict:
    """Memory (exact bytes and measured peak growth) and batch-1 latency of one model."""
    ids = torch.randint(0, spec.vocab_size, (1, prompt_len), generator=torch.Generator().manual_seed(seed)).to(device)
    with torch.inference_mode():
        _generate(model, ids, 2)  # warm the kernels before measuring the peak
        timing.synchronize(device)
        with metrics.MemorySampler(device) as memory:
            cache = _generate(model, ids, new_tokens)
            timing.synchronize(device)
    latency = metrics.prefill_decode_latency(model, 1, prompt_len, new_tokens, device, repeats=repeats, warmup=warmup, seed=seed)
    weights, kv = metrics.tensor_bytes(model), parscale.kv_cache_bytes(cache)
    return {
        "weight_bytes": weights, "kv_cache_bytes": kv, "memory_bytes": weights + kv,
        "peak_growth_bytes": float(memory.peak_bytes - memory.start_bytes),
        "prefill_s": latency["prefill_s"], "decode_s_per_token": latency["decode_s_per_token"], "total_s": latency["total_s"],
    }  # fmt: skip


def cost_table(spec, streams: list[int], prefix_len: int, k: float, *, prompt_len: int, new_tokens: int, repeats: int,
               warmup: int, device: str, dtype: str, seed: int, progress=None) -> pd.DataFrame:
    """One row per model: the base (P = 1), each P-stream model and its equal-loss wider model."""
    torch_dtype = getattr(torch, dtype)
    base_n = zoo.param_counts(spec)["non_embedding"]
    jobs = [("base", 1, spec)]
    for P in streams:
        n_p = base_n + parscale.extra_params_for(spec, P, prefix_len)  # the law's N counts ParScale's own parameters
        jobs.append(("parscale", P, spec))
        jobs.append(("param-scaled", P, law.widen(spec, n_p * law.multiplier(k, P))))
    rows = []
    for kind, P, s in (progress or (lambda it, **kw: it))(jobs, desc="inference cost", total=len(jobs)):
        model = zoo.build(s, seed=seed)
        if kind == "parscale":
            model = parscale.wrap(model, streams=P, prefix_len=prefix_len, seed=seed)
        model = model.to(device=device, dtype=torch_dtype).eval()
        n = zoo.param_counts(s)["non_embedding"] + (parscale.extra_params_for(s, P, prefix_len) if kind == "parscale" else 0)
        row = measure(model, s, prompt_len=prompt_len, new_tokens=new_tokens, repeats=repeats, warmup=warmup,
                      device=device, seed=seed)
        rows.append({"kind": kind, "P": P, "d_model": s.d_model, "d_ff": s.d_ff, "nonembedding_params": n,
                     "total_params": sum(p.numel() for p in model.parameters()), **row})
        del model
    return pd.DataFrame(rows)


def increases(table: pd.DataFrame) -> pd.DataFrame:
    """Per P: memory and latency increase over the base of ParScale and of parameter scaling, and their ratios."""
    base = table[table["kind"] == "base"].iloc[0]
    rows = []
    for P in sorted(table.loc[table["kind"] == "parscale", "P"].unique()):
        par = table[(table["kind"] == "parscale") & (table["P"] == P)].iloc[0]
        wide = table[(table["kind"] == "param-scaled") & (table["P"] == P)].iloc[0]
        row = {"P": int(P)}
        for col in ("memory_bytes", "peak_growth_bytes", "total_s", "decode_s_per_token"):
            d_par, d_wide = par[col] - base[col], wide[col] - base[col]
            row[f"{col}_increase_parscale"] = d_par
            row[f"{col}_increase_param"] = d_wide
            row[f"{col}_ratio"] = d_wide / d_par if d_par > 0 else np.nan
        row["memory_increase_parscale_rel"] = (par["memory_bytes"] - base["memory_bytes"]) / base["memory_bytes"]
        row["memory_increase_param_rel"] = (wide["memory_bytes"] - base["memory_bytes"]) / base["memory_bytes"]
        rows.append(row)
    return pd.DataFrame(rows)


def ledger_timings(values: dict[str, float], digits: int = 5) -> dict[str, float | None]:
    """Timings for ``run.log_timings``, rounded. A NaN (a ratio whose denominator, ParScale's
    own increase over the base, was <= 0: within timing noise) is logged as None with a
    printed warning, so the run says the value is missing and why instead of dropping the
    key (which would also leave an earlier run's value in an interactive timings.json)."""
    out: dict[str, float | None] = {}
    for key, value in values.items():
        value = float(value)
        if np.isfinite(value):
            out[key] = round(value, digits)
        else:
            print(f"warning: {key} is {value} (ParScale's increase over the base is <= 0, within timing noise): "
                  "logged as None, the ledger shows it as missing")
            out[key] = None
    return out
