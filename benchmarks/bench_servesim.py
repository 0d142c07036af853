"""Simulation speed of shared.servesim against Vidur's, the best-known peer, measured on this machine.

Vidur cannot run offline (its profiling CSVs are not in the wheel or the repository), so the peer
value is the number measured here earlier with a synthetic attention profile
(../shared/research/perf_anchors.md §4): 10,000 Azure conv requests, vLLM scheduler, a Llama-2-7B
on A100 profile, QPS 4: 16 s of simulation, ~600 requests/s (Sarathi: 19 s, ~525/s). We run the
same workload: the Azure conv trace's first 10,000 requests, Poisson arrivals at 4 requests/s,
Llama-2-7B on an A100-80GB roofline, and each admission policy; the metrics are the same family
Vidur reports (TTFT, TPOT, end-to-end latency per request, preemptions). One thread, the median
of 3 runs, wall-clock of ``simulate`` (the trace already loaded).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from shared import servesim as S

VIDUR_REQ_PER_S = 10_000 / 16.0  # perf_anchors.md §4, vLLM scheduler, measured on this machine
N_REQUESTS, QPS, REPEATS = 10_000, 4.0, 3


def run() -> list[dict]:
    torch.set_num_threads(1)
    trace = S.Trace.azure("conv").head(N_REQUESTS).poisson(QPS, seed=0)
    step = S.StepModel(S.LLAMA2_7B, S.DEVICES["A100-80GB"])
    engine = S.EngineConfig(kv_tokens=step.kv_capacity_tokens(), max_batch=256)
    records = []
    for policy in (S.Aggressive(), S.Conservative(), S.PastFuture(), S.Oracle()):
        seconds = []
        for _ in range(REPEATS):
            start = time.perf_counter()
            result = S.simulate(trace, step, engine, policy)
            seconds.append(time.perf_counter() - start)
        rate = N_REQUESTS / float(np.median(seconds))
        summary = result.summary()
        records.append({
            "name": f"servesim requests simulated per wall second, {type(policy).__name__} admission, "
                    f"{N_REQUESTS} Azure conv requests at {QPS:g} req/s, Llama-2-7B / A100 roofline, 1 thread",
            "ours": rate,
            "peer": "Vidur 0.0.26, vLLM scheduler, same trace and rate (published run on this machine, perf_anchors §4)",
            "peer_value": VIDUR_REQ_PER_S,
            "unit": "requests/s",
            "lower_is_better": False,
            "requests_per_minute": rate * 60,
            "simulated_s": summary["makespan_s"],
            "ttft_p90_s": summary["ttft_p90_s"],
            "tpot_p99_s": summary["tpot_p99_s"],
            "preemptions": summary["preemptions"],
        })
    return records
