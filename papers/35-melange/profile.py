"""Paper 35 (Mélange): GPU profiles, the maximum throughput of a replica per request-size bucket
under a TPOT SLO, found by simulating it (shared.servesim), as Mélange's profiler finds it by
benchmarking vLLM at increasing load.

For one bucket (input lengths in (lo_in, hi_in], outputs in (lo_out, hi_out]) and one replica:
``n`` requests with lengths drawn uniformly in the bucket all arrive at t = 0 (a saturated server),
served by continuous batching with at most ``b`` running requests. The steady-state throughput
(requests finished between the 10th and 90th percentile of the finish times, per second) and the
mean TPOT of those requests are recorded; ``b`` grows geometrically until the TPOT passes the
loosest SLO or the batch stops growing (KV memory binds), then each SLO takes the largest
throughput whose TPOT meets it. One simulation per ``b`` serves every SLO.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from shared import servesim as S


def bucket_lengths(lo: int, hi: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` lengths uniform in (lo, hi]."""
    return rng.integers(lo + 1, hi + 1, size=n)


def _steady(result: S.Result, lo: float = 0.1, hi: float = 0.9):
    """(throughput req/s, mean TPOT s) of the requests finishing between the lo and hi quantiles."""
    f = result.finish_s
    order = np.argsort(f, kind="stable")
    a, b = int(lo * (len(f) - 1)), int(hi * (len(f) - 1))
    span = float(f[order[b]] - f[order[a]])
    if b <= a or span <= 0:
        return len(f) / float(f.max()), float(np.mean(result.tpot))
    return (b - a) / span, float(np.mean(result.tpot[order[a:b + 1]]))


def batch_sweep(step: S.StepModel, bucket: tuple[int, int, int, int], slo_max_s: float, *, requests_per_slot: int = 3,
                min_requests: int = 40, max_batch: int = 512, growth: float = 1.5, seed: int = 0,
                max_prefill_tokens: int = 8192) -> pd.DataFrame:
    """Saturated runs at increasing max batch ``b`` (1, then x ``growth``) until the mean TPOT passes
    ``slo_max_s`` or ``max_batch``. Rows: b, throughput_rps, tpot_s, preemptions. Empty if the
    bucket's longest request does not fit the replica's KV cache."""
    lo_in, hi_in, lo_out, hi_out = bucket
    kv = step.kv_capacity_tokens()
    if hi_in + hi_out + 16 > kv:
        return pd.DataFrame(columns=["b", "throughput_rps", "tpot_s", "preemptions"])
    rows, b = [], 1
    while True:
        n = max(min_requests, requests_per_slot * b)
        rng = np.random.default_rng(seed)
        trace = S.Trace(np.zeros(n), bucket_lengths(lo_in, hi_in, n, rng), bucket_lengths(lo_out, hi_out, n, rng))
        engine = S.EngineConfig(kv_tokens=kv, max_batch=b, max_new_tokens=hi_out,
                                max_prefill_tokens=max(max_prefill_tokens, hi_in))
        result = S.simulate(trace, step, engine, S.Aggressive())
        tput, tpot = _steady(result)
        rows.append({"b": b, "throughput_rps": tput, "tpot_s": tpot, "preemptions": int(result.preemptions.sum())})
        if tpot > slo_max_s or b >= max_batch or (len(rows) > 1 and tput <= rows[-2]["throughput_rps"] * 1.01):
            break
        b = min(max_batch, max(b + 1, int(round(b * growth))))
    return pd.DataFrame(rows)


def max_throughput(sweep: pd.DataFrame, slo_s: float) -> float:
    """Largest throughput of the sweep whose mean TPOT meets ``slo_s`` (0: none does)."""
    ok = sweep[sweep["tpot_s"] <= slo_s]
    return float(ok["throughput_rps"].max()) if len(ok) else 0.0


def check_edges(name: str, edges: list[int]) -> None:
    """One-line error naming the key unless ``edges`` are >= 2 strictly increasing values >= 0."""
    if len(edges) < 2 or edges[0] < 0 or any(b <= a for a, b in zip(edges, edges[1:])):
        raise ValueError(f"{name}: need >= 2 strictly increasing edges >= 0, got {edges}")


def buckets(input_edges: list[int], output_edges: list[int]) -> list[tuple[int, int, int, int]]:
    """(lo_in, hi_in, lo_out, hi_out) for every pair of consecutive edges, input-major."""
    check_edges("input_edges", input_edges)
    check_edges("output_edges", output_edges)
    return [(a, b, c, d) for a, b in zip(input_edges, input_edges[1:]) for c, d in zip(output_edges, output_edges[1:])]


def profile(instances: dict[str, S.StepModel], bucket_list, slos_s: list[float], progress=lambda it, **k: it,
            **sweep_kwargs) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Profile every instance on every bucket. Returns (table, sweeps): table rows instance, bucket
    index and bounds, slo_ms, max_throughput_rps (0: cannot meet the SLO or does not fit);
    sweeps: every simulated point."""
    table, sweeps = [], []
    jobs = [(name, i, bk) for name in instances for i, bk in enumerate(bucket_list)]
    for name, i, bk in progress(jobs, desc="profiles"):
        sweep = batch_sweep(instances[name], bk, max(slos_s), **sweep_kwargs)
        sweeps.append(sweep.assign(instance=name, bucket=i))
        for slo in slos_s:
            table.append({"instance": name, "bucket": i, "in_lo": bk[0], "in_hi": bk[1], "out_lo": bk[2],
                          "out_hi": bk[3], "slo_ms": round(slo * 1e3, 3), "max_throughput_rps": max_throughput(sweep, slo)})
    return pd.DataFrame(table), pd.concat(sweeps, ignore_index=True)
