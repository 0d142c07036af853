"""The Kinetics cost model (Sadhukhan et al. 2025, arXiv 2506.05333, Sec. 3): test-time cost in eFLOPs.

    eFLOPs = C_comp + I * C_mem,   I = peak FLOP/s / memory bandwidth (B200: 562.5 FLOPs per byte)

For one query with a prompt of c tokens and N trials of L generated tokens each, on a model with P
parameters, layers x query heads x head dim = q_dim and layers x KV heads x head dim = kv_dim
(both summed over layers):

- compute, FLOPs: N [2 P L + 2 q_dim (2c + L) L]; the second term is QK^T and PV over a context that
  grows from c to c + L (the sum of (c + t) over the L steps is (2c + L) L / 2, four FLOPs per
  element of q_dim and context token);
- memory, bytes: 2 kv_dim (2c + N L) L: every step reads the K and V (2 bytes each in bf16) of the
  prompt once for all N trials (a shared prefix) and of each trial's own generated tokens. The
  weights' bytes are left out (amortised over a batch), as in the authors' code.

Block top-k sparse attention (block size b, k blocks, plus `local` recent tokens; budget B = local + b k)
attends to at most B tokens a step, and scores one summary key per block to choose them:

- attended tokens over a generation: B L - (max(0, B - c))^2 / 2 (the first steps see fewer than B);
- compute: N [2 P L + 4 q_dim attended + ((2c + L) // b) L q_dim] (the last term: scoring the block summaries);
- memory: 4 kv_dim * attended * N + ((2c + N L) // b) L kv_dim (the block summaries).

These are the forms of the authors' `cost_model/utils.py` (the floor divisions included, so the
published tables reproduce to rounding); the code here is ours. Costs are returned in FLOPs and
bytes; `Cost.eflops(I)` combines them, and `Cost.tera()` gives the units of the published tables
(TFLOPs and TeFLOPs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import betaln

DATA = Path(__file__).parent / "data"
E_FLOPS_B200 = 562.5  # B200: 2.25 PFLOP/s (bf16 dense) / 4 TB/s HBM, the paper's I


@dataclass(frozen=True)
class ModelConfig:
    """The numbers of a model the cost model needs."""

    name: str
    params: float  # parameter count P
    layers: int
    heads: int
    kv_heads: int
    head_dim: int

    @property
    def q_dim(self) -> int:
        """query heads x head dim, summed over layers"""
        return self.heads * self.head_dim * self.layers

    @property
    def kv_dim(self) -> int:
        """KV heads x head dim, summed over layers (K or V values cached per token)"""
        return self.kv_heads * self.head_dim * self.layers


@dataclass(frozen=True)
class Cost:
    compute_flops: float
    memory_bytes: float

    def eflops(self, intensity: float = E_FLOPS_B200) -> float:
        return self.compute_flops + intensity * self.memory_bytes

    def memory_eflops(self, intensity: float = E_FLOPS_B200) -> float:
        return intensity * self.memory_bytes

    def tera(self, intensity: float = E_FLOPS_B200) -> tuple[float, float]:
        """(compute TFLOPs, memory TeFLOPs): the columns compute_cost, memory_cost of the published tables."""
        return self.compute_flops * 1e-12, self.memory_bytes * intensity * 1e-12


def qwen3_configs(path: Path = DATA / "qwen3_configs.csv") -> dict[str, ModelConfig]:
    """The six Qwen3 dense models, smallest first (P: the counts the authors' cost model uses)."""
    table = pd.read_csv(path, comment="#")
    return {
        r.model: ModelConfig(r.model, r.params_billion * 1e9, int(r.layers), int(r.heads), int(r.kv_heads), int(r.head_dim))
        for r in table.itertuples()
    }


def reference_accuracy(benchmark: str, path: Path = DATA / "litesys_reference_accuracy.csv") -> pd.Series:
    """pass@1 (a fraction) of each Qwen3 model on ``benchmark`` (LiteSys, the authors' engine), by model name."""
    table = pd.read_csv(path, comment="#")
    rows = table[table["benchmark"] == benchmark]
    if rows.empty:
        raise ValueError(f"benchmark: {benchmark!r} is not in {path.name}; have {sorted(table['benchmark'].unique())}")
    return rows.set_index("model")["litesys_acc"] / 100.0


def reference_rows(path: Path = DATA / "kinetics_aime24_rows.csv") -> pd.DataFrame:
    """The transcribed rows of the published cost tables, generation_length parsed into a list of ints."""
    rows = pd.read_csv(path, comment="#")
    rows["generation_length"] = rows["generation_length"].map(lambda s: [int(x) for x in s.split()])
    return rows


def _check(prompt_len: int, trials: int) -> None:
    if prompt_len < 0 or trials < 1:
        raise ValueError(f"need prompt_len >= 0 and trials >= 1, got {prompt_len}, {trials}")


def dense_cost(cfg: ModelConfig, prompt_len: int, gen_len: int, trials: int = 1) -> Cost:
    """Cost of ``trials`` generations of ``gen_len`` tokens after a shared prompt, dense attention."""
    _check(prompt_len, trials)
    c, n = prompt_len, gen_len
    compute = trials * (2 * cfg.params * n + 2 * cfg.q_dim * (2 * c + n) * n)
    memory = 2 * cfg.kv_dim * (2 * c + trials * n) * n
    return Cost(compute, memory)


def attended_tokens(prompt_len: int, gen_len: int, budget: int, published: bool = False) -> float:
    """Context tokens attended over a generation when a step sees at most ``budget`` tokens: the
    first steps, while the context is shorter than the budget, see fewer (the authors' closed form,
    B L - (B - c)^2 / 2). ``published=True``: B L + (B - c)^2 / 2, the sign with which the published
    block top-k tables were computed (they reproduce only with it; the `utils.py` of the same commit
    has the minus sign, which is the right count)."""
    short = 0.5 * max(0, budget - prompt_len) ** 2
    return budget * gen_len + (short if published else -short)


def block_topk_cost(
    cfg: ModelConfig, prompt_len: int, gen_len: int, trials: int = 1, *, block: int, topk: int, local: int = 0,
    published: bool = False,
) -> Cost:
    """Cost with block top-k attention: ``local`` recent tokens plus the ``topk`` best blocks of
    ``block`` tokens, chosen by scoring one summary key per block (the search). ``published``: see
    `attended_tokens`."""
    _check(prompt_len, trials)
    if block < 1 or topk < 1 or local < 0:
        raise ValueError(f"need block >= 1, topk >= 1, local >= 0; got {block}, {topk}, {local}")
    c, n = prompt_len, gen_len
    attended = attended_tokens(c, n, local + block * topk, published)
    search_compute = (2 * c + n) // block * n * cfg.q_dim  # one summary per block, every step
    compute = trials * (2 * cfg.params * n + 4 * attended * cfg.q_dim + search_compute)
    search_memory = (2 * c + trials * n) // block * n * cfg.kv_dim
    memory = 4 * attended * cfg.kv_dim * trials + search_memory
    return Cost(compute, memory)


def expected_cost(cost_fn, cfg: ModelConfig, prompt_len: int, gen_lens, trials: int = 1, **kw) -> Cost:
    """Mean cost over sampled generation lengths (the published tables average over the 32 samples)."""
    costs = [cost_fn(cfg, prompt_len, int(n), trials, **kw) for n in gen_lens]
    return Cost(float(np.mean([x.compute_flops for x in costs])), float(np.mean([x.memory_bytes for x in costs])))


def prompt_len_from_compute(cfg: ModelConfig, gen_lens, compute_tflops: float) -> float:
    """Solve the dense trial-1 compute cost for the prompt length c (not published in the tables):
    mean compute = 2 P m1 + 2 q_dim m2 + 4 q_dim c m1, m1, m2 the mean of L and of L^2."""
    lengths = np.asarray(gen_lens, dtype=float)
    m1, m2 = lengths.mean(), (lengths**2).mean()
    return (compute_tflops * 1e12 - 2 * cfg.params * m1 - 2 * cfg.q_dim * m2) / (4 * cfg.q_dim * m1)


def recompute_reference(
    rows: pd.DataFrame, configs: dict[str, ModelConfig], intensity: float = E_FLOPS_B200, published: bool = True
) -> pd.DataFrame:
    """Recompute every transcribed row with our formulas. The prompt length of each query is solved
    from the dense model's trial-1 compute (the same tokenizer and template for every Qwen3 size).
    ``published``: the block top-k rows with the tables' sign of the short-context term (`attended_tokens`).
    Adds prompt_len, our_compute_cost, our_memory_cost and their relative errors."""
    dense1 = rows[(rows["attention"] == "dense") & (rows["trial"] == 1)]
    prompt = {
        int(r.query_id): round(prompt_len_from_compute(configs[r.model], r.generation_length, r.compute_cost))
        for r in dense1.itertuples()
    }
    out = []
    for r in rows.itertuples():
        cfg, c = configs[r.model], prompt[int(r.query_id)]
        if r.attention == "dense":
            cost = expected_cost(dense_cost, cfg, c, r.generation_length, int(r.trial))
        else:
            kw = {"block": int(r.block_size), "topk": int(r.block_topk), "local": int(r.local), "published": published}
            cost = expected_cost(block_topk_cost, cfg, c, r.generation_length, int(r.trial), **kw)
        comp, mem = cost.tera(intensity)
        out.append({"prompt_len": c, "our_compute_cost": comp, "our_memory_cost": mem})
    res = pd.concat([rows.drop(columns="generation_length").reset_index(drop=True), pd.DataFrame(out)], axis=1)
    res["compute_rel_err"] = (res["our_compute_cost"] / res["compute_cost"] - 1).abs()
    res["memory_rel_err"] = (res["our_memory_cost"] / res["memory_cost"] - 1).abs()
    return res


def cost_breakdown(cfg: ModelConfig, prompt_len: int, gen_lens, trials: int = 1, intensity: float = E_FLOPS_B200) -> dict:
    """eFLOPs of a dense best-of-``trials`` split into parameter compute (2 P per token), attention
    compute and KV memory access (I x bytes)."""
    cost = expected_cost(dense_cost, cfg, prompt_len, gen_lens, trials)
    param = trials * 2 * cfg.params * float(np.mean(gen_lens))
    total = cost.eflops(intensity)
    return {
        "model": cfg.name, "trials": trials, "param_compute": param, "attention_compute": cost.compute_flops - param,
        "kv_memory": cost.memory_eflops(intensity), "total_eflops": total,
        "memory_over_compute": cost.memory_eflops(intensity) / cost.compute_flops,
        "attention_share": 1 - param / total,
    }  # fmt: skip


# ---------------------------------------------------------------- accuracy vs cost frontiers


def coverage(pass1: float, trials, kappa: float = math.inf) -> np.ndarray:
    """Expected coverage (pass@N: some of N samples is right) of a benchmark whose per-problem solve
    rates follow a Beta distribution with mean ``pass1`` and concentration ``kappa`` (alpha + beta):
    1 - E[(1 - p)^N] = 1 - B(alpha, beta + N) / B(alpha, beta). kappa = inf: every problem has the
    same rate, 1 - (1 - pass1)^N; a small kappa: problems are mostly always or never solved, so
    more samples help less."""
    trials = np.asarray(trials, dtype=float)
    if not 0 <= pass1 <= 1 or kappa <= 0:
        raise ValueError(f"need pass1 in [0, 1] and kappa > 0, got {pass1}, {kappa}")
    if pass1 in (0.0, 1.0):
        return np.full_like(trials, pass1)
    if math.isinf(kappa):
        return 1 - (1 - pass1) ** trials
    a, b = pass1 * kappa, (1 - pass1) * kappa
    return 1 - np.exp(betaln(a, b + trials) - betaln(a, b))


def config_table(
    configs: dict[str, ModelConfig], pass1: pd.Series, prompt_len: int, gen_lens, trials, *,
    kappa: float, intensity: float = E_FLOPS_B200,
) -> pd.DataFrame:  # fmt: skip
    """One row per (model, N): coverage, FLOPs (compute only) and eFLOPs per query, dense attention."""
    rows = []
    for name, acc in pass1.items():
        cfg = configs[name]
        cov = coverage(float(acc), trials, kappa)
        for n, cv in zip(trials, cov):
            cost = expected_cost(dense_cost, cfg, prompt_len, gen_lens, int(n))
            rows.append({
                "model": name, "params_b": cfg.params / 1e9, "trials": int(n), "coverage": float(cv),
                "flops": cost.compute_flops, "eflops": cost.eflops(intensity),
            })  # fmt: skip
    return pd.DataFrame(rows)


def pareto(table: pd.DataFrame, cost: str) -> pd.DataFrame:
    """The rows no other row beats on both ``cost`` (lower) and coverage (higher), by cost."""
    from shared.metrics import pareto_front

    front = table[pareto_front(table, minimize=[cost], maximize=["coverage"])]
    return front.sort_values(cost).reset_index(drop=True)


def cheapest(table: pd.DataFrame, target: float, cost: str) -> pd.Series | None:
    """The cheapest row (by ``cost``) whose coverage reaches ``target``; None if none does."""
    ok = table[table["coverage"] >= target]
    return None if ok.empty else ok.loc[ok[cost].idxmin()]


def choices(table: pd.DataFrame, targets) -> pd.DataFrame:
    """For each coverage target: the model and N the FLOPs-only rule picks, the one eFLOPs picks,
    and how much more the FLOPs pick costs in eFLOPs (the paper's 'up to 3x' comparison)."""
    rows = []
    for target in targets:
        by_flops, by_efl = cheapest(table, target, "flops"), cheapest(table, target, "eflops")
        if by_flops is None or by_efl is None:
            continue
        rows.append({
            "target": float(target),
            "flops_model": by_flops["model"], "flops_params_b": by_flops["params_b"], "flops_trials": by_flops["trials"],
            "eflops_model": by_efl["model"], "eflops_params_b": by_efl["params_b"], "eflops_trials": by_efl["trials"],
            "eflops_of_flops_choice": by_flops["eflops"], "eflops_of_eflops_choice": by_efl["eflops"],
            "excess": by_flops["eflops"] / by_efl["eflops"],
        })  # fmt: skip
    return pd.DataFrame(rows)


def summarise(picks: pd.DataFrame, floor: float) -> dict:
    """The claims' numbers from ``choices``: is the eFLOPs pick never smaller (share of targets) and
    sometimes larger; the largest excess cost of the FLOPs pick; the smallest model either rule picks
    for targets >= ``floor`` (the threshold)."""
    if picks.empty:
        raise ValueError("picks: no coverage target is reachable by any model")
    high = picks[picks["target"] >= floor]
    return {
        "n_targets": len(picks),
        "eflops_not_smaller_share": float((picks["eflops_params_b"] >= picks["flops_params_b"]).mean()),
        "eflops_larger_count": int((picks["eflops_params_b"] > picks["flops_params_b"]).sum()),
        "max_excess": float(picks["excess"].max()),
        "eflops_threshold_b": float(high["eflops_params_b"].min()) if len(high) else None,
        "flops_threshold_b": float(high["flops_params_b"].min()) if len(high) else None,
    }


def compare_rules(
    configs: dict[str, ModelConfig], pass1: pd.Series, prompt_len: int, gen_lens, trials, targets, *,
    kappa: float, floor: float, intensity: float = E_FLOPS_B200,
) -> tuple[pd.DataFrame, pd.DataFrame, dict]:  # fmt: skip
    """config_table -> choices -> summarise in one call: (configs, picks per target, summary)."""
    table = config_table(configs, pass1, prompt_len, gen_lens, trials, kappa=kappa, intensity=intensity)
    picks = choices(table, targets)
    return table, picks, summarise(picks, floor)
