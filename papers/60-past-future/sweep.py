"""Paper 60: goodput vs load for the four admission policies, and the claims' summaries.

For one (workload, seed): capacity = the oracle's steady-state throughput with every request
queued at t = 0; the SLA comes from the oracle at load 1.0 (workloads.sla, a TTFT bound per
request that scales with its prompt); then every policy serves the same requests with Poisson
arrivals at load x capacity. ``pastfuture`` is the planning notes' quantile estimate,
``pastfuture_sampled`` the authors' sampled rule (shared.servesim.PastFutureSampled).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from shared import servesim as S

from . import workloads as W

POLICIES = ("aggressive", "conservative", "pastfuture", "pastfuture_sampled", "oracle")
RECORDING = ("pastfuture", "pastfuture_sampled")  # policies that record their peak estimates


def policy(name: str, quantile: float, window: int, min_history: int, seed: int = 0):
    if name == "aggressive":
        return S.Aggressive()
    if name == "conservative":
        return S.Conservative()
    if name == "pastfuture":
        return W.RecordingPastFuture(quantile=quantile, window=window, min_history=min_history)
    if name == "pastfuture_sampled":
        return W.RecordingPastFutureSampled(seed=seed, min_history=min_history)
    if name == "oracle":
        return S.Oracle()
    raise ValueError(f"policy name={name!r} is not allowed; allowed: {', '.join(POLICIES)}")


def run_block(trace: S.Trace, step: S.StepModel, engine: S.EngineConfig, loads, seed: int, *, ttft_factor: float,
              tpot_factor: float, quantile: float = 0.9, window: int = 1000, min_history: int = 20,
              policies=POLICIES) -> tuple[list[dict], dict[str, np.ndarray]]:
    """Rows (one per load and policy) and, per recording policy, its peak-estimate errors over all loads."""
    capacity = W.capacity_rps(S.simulate(W.saturated(trace), step, engine, S.Oracle()))
    reference = S.simulate(trace.poisson(capacity, seed=seed), step, engine, S.Oracle(), record_steps=True)
    slo, times = W.sla(reference, step, ttft_factor, tpot_factor)
    rows, errors = [], {name: [] for name in policies if name in RECORDING}
    for load in loads:
        arrivals = trace.poisson(load * capacity, seed=seed)
        for name in policies:
            pol = policy(name, quantile, window, min_history, seed)
            result = S.simulate(arrivals, step, engine, pol)
            summary = result.summary()
            ok = slo.meets(result)
            wait = result.queueing
            rows.append({"workload": trace.name, "seed": seed, "load": float(load), "policy": name,
                         "mixed": engine.mixed, "capacity_rps": capacity, "rate_rps": load * capacity,
                         "goodput_rps": slo.goodput_rps(result), "slo_attainment": float(ok.mean()),
                         "throughput_rps": summary["throughput_rps"], "preemptions": summary["preemptions"],
                         "queue_mean_s": float(wait.mean()), "queue_p90_s": float(np.percentile(wait, 90)),
                         "ttft_p50_s": summary["ttft_p50_s"], "tpot_mean_s": summary["tpot_mean_s"],
                         "slo_ttft_median_s": float(np.median(slo.ttft_limit(trace.prompt))),
                         "slo_tpot_s": slo.tpot_s, **times})
            if name in errors:
                errors[name].append(pol.peak_errors())
    return rows, {k: np.concatenate(v) if v else np.zeros(0) for k, v in errors.items()}


def by_policy(table: pd.DataFrame, value: str = "goodput_rps") -> pd.DataFrame:
    """Mean over seeds, one column per policy, indexed by (workload, load)."""
    return table.groupby(["workload", "load", "policy"])[value].mean().unstack("policy")


UNBOUNDED = 999.0  # a ratio over zero (metrics.json holds finite numbers only)


def ratio(a, b):
    """a / b elementwise, with 0 / 0 = 1 and x / 0 = UNBOUNDED for x > 0."""
    index = a.index if isinstance(a, pd.Series) else None
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(b > 0, a / b, np.where(a > 0, UNBOUNDED, 1.0))
    return pd.Series(out, index=index) if index is not None else (out if out.ndim else float(out))


def summarise(table: pd.DataFrame, heavy: float, light: float, factor: float = 1.5, pf: str = "pastfuture",
              prefix: str = "pf") -> dict[str, float]:
    """The numbers the claims check (see claims.yaml) for Past-Future variant ``pf`` (keys start
    with ``prefix``); goodput and counts averaged over seeds. The light-load spread is over every policy."""
    g = by_policy(table)
    vs_base = ratio(g[pf], g[["aggressive", "conservative"]].max(axis=1))
    vs_oracle = ratio(g[pf], g["oracle"])
    heavy_rows = g.index.get_level_values("load") >= heavy - 1e-9
    best_vs_base = vs_base[heavy_rows].groupby(level="workload").max()
    pre = by_policy(table, "preemptions")[heavy_rows].sum()
    queue = by_policy(table, "queue_mean_s")[heavy_rows].mean()
    at_light = g[np.isclose(g.index.get_level_values("load"), light)]
    spread = (ratio(at_light.max(axis=1), at_light.min(axis=1)) - 1).max() if len(at_light) else np.nan
    out = {
        f"{prefix}_vs_baselines_max": float(best_vs_base.max()),
        f"{prefix}_vs_baselines_workloads_over_factor": int((best_vs_base >= factor).sum()),
        f"{prefix}_vs_oracle_min_heavy": float(vs_oracle[heavy_rows].min()),
        f"{prefix}_preemptions_vs_aggressive_heavy": float(pre[pf] / pre["aggressive"]) if pre["aggressive"] else 0.0,
        f"{prefix}_queue_vs_conservative_heavy": float(ratio(queue[pf], queue["conservative"])),
        "light_load_goodput_spread": float(spread),
    }
    for w, v in best_vs_base.items():
        out[f"{prefix}_vs_baselines_{w}"] = float(v)
    return out


def engine_for(p, step: S.StepModel) -> S.EngineConfig:
    """The engine of params ``p`` (config.Params): KV budget (0: the device's), batch and output caps,
    ``mixed`` (False: an iteration that prefills decodes nothing, as vLLM v0 and LightLLM)."""
    kv = p.kv_tokens or step.kv_capacity_tokens()
    if p.max_prompt + p.max_new_tokens > kv:
        raise ValueError(f"kv_tokens: {kv} cannot hold one request of max_prompt + max_new_tokens = "
                         f"{p.max_prompt + p.max_new_tokens} tokens")
    return S.EngineConfig(kv_tokens=kv, max_batch=p.max_batch, max_new_tokens=p.max_new_tokens, mixed=p.mixed)


def run_all(p, step: S.StepModel, engine: S.EngineConfig, loads, seeds, progress=lambda it, **kw: it,
            policies=POLICIES):
    """Every workload x seed of params ``p``: the table of rows and, per recording policy, all its peak errors."""
    rows, errors = [], {}
    blocks = [(w, s) for w in p.workloads for s in seeds]
    for w, s in progress(blocks, desc="workload x seed"):
        trace = W.build(w, p.n_requests, s, max_prompt=p.max_prompt, max_output=p.max_new_tokens,
                        sharegpt=(*p.sharegpt_means, p.sharegpt_sigma), bimodal=tuple(p.bimodal))
        r, e = run_block(trace, step, engine, loads, s, ttft_factor=p.sla_ttft_factor, tpot_factor=p.sla_tpot_factor,
                         quantile=p.past_quantile, window=p.past_window, min_history=p.past_min_history,
                         policies=policies)
        rows += r
        for k, v in e.items():
            errors.setdefault(k, []).append(v)
    return pd.DataFrame(rows), {k: np.concatenate(v) for k, v in errors.items()}
