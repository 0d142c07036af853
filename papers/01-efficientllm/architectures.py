"""EfficientLLM axis 1, architecture pretraining: attention variants and MoE at small scale.

Every model comes from the shared ``tinylm`` artifact (shared/tinylm.py): the variants were
trained on the same corpus tokens in the same order, so their validation perplexities are
comparable. Per variant we measure (``static_table``, ``latency_table``):

- parameters (total, active per token) and weight bytes (shared.metrics.tensor_bytes);
- KV-cache size per token, twice: the paper's layout, analytically
  (shared.zoo.kv_cache_bytes_per_token at ``kv_bytes_per_value`` bytes, 2 = bf16), and what
  the installed transformers really keeps, read from the DynamicCache after a forward pass
  (``measured_kv_values_per_token``; values per token, so it does not depend on the dtype);
- validation perplexity on fixed windows of the corpus's val split;
- analytic forward FLOPs per token (shared.zoo.forward_flops_per_token);
- prefill latency and per-token decode latency with the KV cache at long contexts on random
  prompts (latency needs no quality, so contexts may exceed the trained length); memory: the
  bytes decoding must hold (weights + the real cache at that context, exact) and the growth
  of the process's memory during prefill (peak and time-averaged RSS, AMU; activations
  included); energy per decoded token (NVML on a GPU, otherwise shared.metrics' labelled
  estimate); compute utilisation (PCU: achieved FLOP/s over the measured device peak).

Decoding is measured from one prefill per (model, context): after each round of
``decode_tokens`` steps the cache is cropped back to the prompt, so rounds can be interleaved
over the models (a slow phase of a shared machine hits all of them) without paying for the
prefill again (NSA and MLA prefill at 4k tokens take tens of seconds on a CPU here).

``claim_metrics`` turns the tables into the numbers of claims.yaml.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from shared import metrics, zoo
from shared.timing import pinned_threads, synchronize
from shared.progress import silent

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
KV_PROBE_TOKENS = 16  # tokens of the forward pass whose cache is measured


# ------------------------------------------------------------------------------ models
def model_dirs(tinylm_dir: str | Path, names: Sequence[str], key: str = "p01") -> dict[str, Path]:
    """{name: folder} of tinylm models, or one line naming the missing one and what exists."""
    root = Path(tinylm_dir)
    have = sorted(p.name for p in root.iterdir() if (p / zoo.SPEC_FILE).exists()) if root.exists() else []
    out = {}
    for name in names:
        if name not in have:
            raise ValueError(f"{key}: model {name!r} is not in the tinylm artifact ({root}); it has: {', '.join(have) or 'nothing'}")
        out[name] = root / name
    return out


def load_spec(folder: str | Path) -> zoo.ModelSpec:
    return zoo.ModelSpec.model_validate_json((Path(folder) / zoo.SPEC_FILE).read_text())


def check_roles(specs: dict[str, zoo.ModelSpec], attention_variants, latency_variants, baseline, moe_model, dense_active) -> None:
    """The claims need: an mha baseline, gqa/mqa/mla among the attention variants (dense),
    mqa and the baseline timed, an MoE and a dense model to compare it with. One line if not."""
    kinds = {name: (specs[name].attention, specs[name].ffn) for name in attention_variants}
    if kinds[baseline] != ("mha", "dense"):
        raise ValueError(f"p01.baseline: {baseline!r} is {kinds[baseline]}, expected a dense mha model")
    for attention in ("gqa", "mqa", "mla"):
        if (attention, "dense") not in kinds.values():
            raise ValueError(f"p01.attention_variants: needs a dense {attention} model (the KV claims), got {kinds}")
    mqa = next(name for name, kind in kinds.items() if kind == ("mqa", "dense"))
    missing = {baseline, mqa} - set(latency_variants)
    if missing:
        raise ValueError(f"p01.latency_variants: must include {sorted(missing)} (the MQA latency claims), got {list(latency_variants)}")
    if specs[moe_model].ffn != "moe" or specs[dense_active].ffn != "dense":
        raise ValueError(f"p01.moe_model / moe_dense_equal_active: need an MoE and a dense model, got {moe_model!r}, {dense_active!r}")


def dense_equal_total(spec: zoo.ModelSpec) -> zoo.ModelSpec:
    """The compute-equivalent of a dense model with the MoE's total parameters: every routed
    expert active for every token (one FFN as wide as all experts; router included)."""
    if spec.ffn != "moe":
        raise ValueError(f"spec: dense_equal_total needs an MoE spec, got ffn={spec.ffn!r}")
    return spec.model_copy(update={"n_experts_per_token": spec.n_experts})


# --------------------------------------------------------------------------- KV cache
def cache_tensors(cache) -> list[torch.Tensor]:
    """Every tensor a transformers cache holds (DynamicCache: keys and values per layer)."""
    layers = getattr(cache, "layers", None)
    if layers is None:
        raise TypeError(f"cache: {type(cache).__name__} has no .layers; expected a transformers DynamicCache")
    out = []
    for layer in layers:
        out.extend(v for v in vars(layer).values() if isinstance(v, torch.Tensor) and v.numel() > 1)
    return out


@torch.inference_mode()
def measured_kv_values_per_token(model, n_tokens: int = KV_PROBE_TOKENS, seed: int = 0) -> float:
    """Values the model's KV cache holds per token of context (all layers), read from the real
    cache after one forward pass over ``n_tokens`` random tokens."""
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, model.config.vocab_size, (1, n_tokens), generator=generator).to(device)
    cache = model(input_ids=ids, use_cache=True).cache
    values = sum(t.numel() for t in cache_tensors(cache))
    if cache.get_seq_length() != n_tokens:
        raise RuntimeError(f"cache: holds {cache.get_seq_length()} tokens after a forward over {n_tokens}")
    return values / n_tokens


# ------------------------------------------------------------------------ static table
def static_table(
    folders: dict[str, Path],
    val_batches: list,
    *,
    device: str,
    dtype: str,
    kv_bytes_per_value: int,
    context_len: int,
    progress: Callable | None = None,
) -> pd.DataFrame:
    """One row per model: sizes, KV cache (paper layout and measured), validation loss and
    perplexity, analytic FLOPs per token at ``context_len``."""
    rows = []
    for name, folder in (progress or silent)(list(folders.items()), desc="architectures", total=len(folders)):
        model, spec = zoo.load(folder, device=device, dtype=DTYPES[dtype])
        counts = zoo.param_counts(spec)
        kv_values = measured_kv_values_per_token(model)
        ppl = metrics.perplexity(model, val_batches, device)
        rows.append(
            {
                "variant": name,
                "attention": spec.attention,
                "ffn": spec.ffn,
                "params_total": counts["total"],
                "params_active": counts["active"],
                "params_counted": int(metrics.model_size_report(model)["parameters"]),
                "weight_bytes": metrics.tensor_bytes(model),
                "kv_bytes_per_token_paper": zoo.kv_cache_bytes_per_token(spec, kv_bytes_per_value, "paper"),
                "kv_bytes_per_token_transformers": zoo.kv_cache_bytes_per_token(spec, kv_bytes_per_value, "transformers"),
                "kv_values_per_token_measured": kv_values,
                "kv_bytes_per_token_measured": kv_values * kv_bytes_per_value,
                "val_loss": math.log(ppl),
                "val_ppl": ppl,
                "flops_per_token": zoo.forward_flops_per_token(spec, context_len),
            }
        )
        del model
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------ latency
def _step(model, ids: torch.Tensor, cache):
    """One greedy forward with the cache; returns (cache, next token)."""
    out = model(input_ids=ids, cache=cache, use_cache=True, logits_to_keep=1)
    return out.cache, out.logits[:, -1].argmax(-1, keepdim=True)


def load_models(folders: dict[str, Path], device: str, dtype: str) -> dict[str, tuple]:
    """{name: (model, spec)} of tinylm folders, in ``dtype`` on ``device``."""
    return {name: zoo.load(folder, device=device, dtype=DTYPES[dtype]) for name, folder in folders.items()}


@torch.inference_mode()
def latency_table(
    models: dict[str, tuple],
    contexts: Sequence[int],
    *,
    decode_tokens: int,
    repeats: int,
    warmup: int,
    device: str,
    dtype: str,
    num_threads: int,
    interval_s: float,
    seed: int,
    progress: Callable | None = None,
) -> pd.DataFrame:
    """One row per (model, context) of ``models`` ({name: (model, spec)}; the spec gives the
    analytic FLOPs): prefill seconds (one run), per-token decode seconds (median of ``repeats``
    interleaved rounds of ``decode_tokens`` steps after ``warmup`` rounds), memory growth during
    the prefill (peak and time-averaged RSS, or CUDA allocated), decode energy per token and its
    source, PCU of prefill and decode against the device's peak in ``dtype``."""
    rows = []
    with pinned_threads(num_threads if device == "cpu" else None):
        peak, peak_source = metrics.device_peak_flops(device, DTYPES[dtype])  # at the thread count timed
        for context in contexts:
            states = {}
            for name, (model, spec) in (progress or silent)(list(models.items()), desc=f"prefill {context}", total=len(models)):
                generator = torch.Generator().manual_seed(seed + context)
                ids = torch.randint(0, spec.vocab_size, (1, context), generator=generator).to(device)
                with metrics.MemorySampler(device, interval_s) as memory:
                    synchronize(device)
                    start = time.perf_counter()
                    cache, token = _step(model, ids, None)
                    synchronize(device)
                    prefill_s = time.perf_counter() - start
                states[name] = {"cache": cache, "token": token, "prefill_s": prefill_s, "memory": memory, "decode": [], "energy": [],
                                "cache_bytes": sum(t.numel() * t.element_size() for t in cache_tensors(cache)),
                                "weight_bytes": metrics.tensor_bytes(model)}  # fmt: skip
            names = list(models)
            for round_index in range(warmup + repeats):
                shift = round_index % len(names)
                for name in names[shift:] + names[:shift]:  # rotate the start each round
                    model, state = models[name][0], states[name]
                    cache, token = state["cache"], state["token"]
                    with metrics.Energy(device) as energy:
                        synchronize(device)
                        start = time.perf_counter()
                        for _ in range(decode_tokens):
                            cache, token = _step(model, token, cache)
                        synchronize(device)
                        seconds = time.perf_counter() - start
                    cache.crop(-decode_tokens)  # back to the prompt: the next round decodes the same positions
                    if round_index >= warmup:
                        state["decode"].append(seconds / decode_tokens)
                        state["energy"].append((energy.joules / decode_tokens, energy.watts, energy.source))
            for name, state in states.items():
                spec = models[name][1]
                decode_s = float(np.median(state["decode"]))
                memory = state["memory"]
                prefill_flops = context * zoo.forward_flops_per_token(spec, context)
                decode_flops = zoo.forward_flops_per_token(spec, context)
                rows.append(
                    {
                        "variant": name,
                        "context": context,
                        "prefill_s": state["prefill_s"],
                        "decode_s_per_token": decode_s,
                        "decode_iqr_s": float(np.subtract(*np.percentile(state["decode"], [75, 25]))),
                        "decode_tokens_per_s": 1.0 / decode_s,  # IT (Eq. 6) at batch 1
                        "cache_bytes": state["cache_bytes"],
                        "decode_state_bytes": state["weight_bytes"] + state["cache_bytes"],
                        "prefill_peak_growth_bytes": memory.peak_bytes - memory.start_bytes,
                        "prefill_amu_growth_bytes": memory.avg_bytes - memory.start_bytes,
                        "memory_source": memory.peak_source,
                        "decode_energy_j_per_token": float(np.median([e[0] for e in state["energy"]])),
                        "decode_power_w": float(np.median([e[1] for e in state["energy"]])),
                        "energy_source": state["energy"][0][2],
                        "pcu_prefill": prefill_flops / state["prefill_s"] / peak,
                        "pcu_decode": decode_flops / decode_s / peak,
                        "peak_flops_per_s": peak,
                        "peak_source": peak_source,
                    }
                )
            del states
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------- claims
def _first(table: pd.DataFrame, attention: str, ffn: str = "dense") -> pd.Series:
    rows = table[(table["attention"] == attention) & (table["ffn"] == ffn)]
    if rows.empty:
        raise ValueError(f"attention_variants: no {attention}/{ffn} model among {list(table['variant'])}")
    return rows.iloc[0]


def rank_of(values: pd.Series, key) -> int:
    """1-based rank of ``values[key]`` among ``values`` (ascending; ties share the better rank)."""
    return int((values < values[key]).sum()) + 1


def best_on_all(table: pd.DataFrame, columns: Sequence[str]) -> list[str]:
    """Variants that are best (lowest, ties allowed) on every one of ``columns``."""
    best = np.ones(len(table), dtype=bool)
    for column in columns:
        best &= (table[column] <= table[column].min()).to_numpy()
    return list(table.loc[best, "variant"])


def claim_metrics(
    static: pd.DataFrame,
    latency: pd.DataFrame,
    *,
    attention_variants: Sequence[str],
    baseline: str,
    moe_model: str,
    moe_dense_equal_active: str,
    moe_spec: zoo.ModelSpec,
    context_len: int,
) -> tuple[dict, dict, pd.DataFrame]:
    """(metrics, timings, summary): the deterministic claim numbers, the wall-clock ones, and
    the per-variant summary table at the longest context."""
    table = static.set_index("variant", drop=False)
    attn = table.loc[list(attention_variants)]
    base = table.loc[baseline]
    m: dict[str, float | int] = {}

    # KV cache: measured ratios against MHA, over the ratios the definitions predict.
    mqa, gqa, mla = _first(attn, "mqa"), _first(attn, "gqa"), _first(attn, "mla")
    for label, row in (("mqa", mqa), ("gqa", gqa), ("mla", mla)):
        m[f"kv_ratio_{label}_vs_mha"] = row.kv_values_per_token_measured / base.kv_values_per_token_measured
    m["kv_ratio_mqa_over_expected"] = m["kv_ratio_mqa_vs_mha"] / (mqa.kv_bytes_per_token_paper / base.kv_bytes_per_token_paper)
    m["kv_ratio_gqa_over_expected"] = m["kv_ratio_gqa_vs_mha"] / (gqa.kv_bytes_per_token_paper / base.kv_bytes_per_token_paper)
    m["kv_ratio_mla_cache_over_latent_layout"] = mla.kv_bytes_per_token_measured / mla.kv_bytes_per_token_paper
    m["kv_ratio_mla_paper_vs_mha"] = mla.kv_bytes_per_token_paper / base.kv_bytes_per_token_paper

    # quality
    m["mla_ppl_rank"] = rank_of(attn["val_ppl"], mla.variant)
    for row in table.itertuples():
        m[f"val_ppl_{row.variant}"] = row.val_ppl

    # MoE: FLOPs against the dense of equal total params; quality and bytes against equal active.
    moe, dense = table.loc[moe_model], table.loc[moe_dense_equal_active]
    m["moe_flops_ratio_vs_dense_equal_total"] = zoo.forward_flops_per_token(moe_spec, context_len) / zoo.forward_flops_per_token(
        dense_equal_total(moe_spec), context_len
    )
    m["moe_flops_ratio_vs_dense_active"] = moe.flops_per_token / dense.flops_per_token
    m["moe_ppl_ratio_vs_dense_active"] = moe.val_ppl / dense.val_ppl
    m["moe_weight_bytes_ratio_vs_dense_active"] = moe.weight_bytes / dense.weight_bytes
    m["moe_active_params_ratio_vs_dense_active"] = moe.params_active / dense.params_active

    # trade-offs at the longest context
    longest = latency[latency["context"] == latency["context"].max()].set_index("variant")
    summary = table.join(longest, how="left")
    summary["kv_x_decode"] = summary["kv_bytes_per_token_measured"] * summary["decode_s_per_token"]
    complete = summary.dropna(subset=["decode_s_per_token"])
    objectives = ["val_ppl", "kv_bytes_per_token_measured", "params_total", "decode_s_per_token"]
    front = metrics.pareto_front(complete, minimize=["kv_bytes_per_token_measured", "decode_s_per_token"])
    summary["pareto_kv_latency"] = front.reindex(summary.index).fillna(False).astype(bool)

    t: dict[str, float | int] = {"n_variants_best_on_all": len(best_on_all(complete, objectives))}  # latency: a timing
    timed_attn = complete.loc[[v for v in attention_variants if v in complete.index]]
    if mqa.variant in timed_attn.index and baseline in timed_attn.index:
        t["mqa_memory_latency_rank"] = rank_of(timed_attn["kv_x_decode"], mqa.variant)
        t["mqa_decode_ratio_vs_mha"] = timed_attn.loc[mqa.variant, "decode_s_per_token"] / timed_attn.loc[baseline, "decode_s_per_token"]
        t["mqa_on_kv_latency_pareto_front"] = int(bool(summary.loc[mqa.variant, "pareto_kv_latency"]))
    for row in latency.itertuples():
        t[f"decode_ms_{row.variant}_ctx{row.context}"] = 1e3 * row.decode_s_per_token
        t[f"prefill_s_{row.variant}_ctx{row.context}"] = row.prefill_s
    return m, t, summary.reset_index(drop=True)
