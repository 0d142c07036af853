"""Paper 49 (POLCA): a row of inference servers under one power budget, served by
shared.servesim's engine and steered by the power controller (power.py).

**The row.** ``n_servers`` servers of ``gpus`` GPUs; each serves one tensor-parallel model
instance (one servesim engine whose device is the server's GPUs together). The budget is sized
for ``n0`` servers at provisioned peak: ``n0 * (gpus * TDP + other_w)``. Oversubscription +x%
deploys ``round(n0 * (1 + x))`` servers under the same budget, and they serve x% more load (the
per-server request rate is the same): that is what extra servers are for.

**Requests.** The Azure LLM inference traces 2023, conversation and code, superimposed on one
clock (both start at t = 0), the whole hour compressed onto the simulated duration (bursts kept,
shortened), superimposed copies if the rate needs more, thinned to the row's peak rate times a
diurnal envelope (trough .. 1 .. trough over ``cycles`` compressed days) so the row sees valleys
and peaks. A share ``low_share`` of requests is low priority (seeded); they go to the low-priority
servers (the same share of the row), the rest to the high-priority ones, round-robin in arrival
order within each pool.

**Why not simulate_cluster.** The controller couples the servers: a cap decided from the whole
row's power in one tick changes the step time of every server in the next. Servers therefore
advance one control tick at a time, all of them, then the controller runs. Round-robin routing
decided at arrival keeps each server's arrivals known in advance, so within a tick each server
runs servesim's own engine loop (continuous batching, paged KV, decode runs fast-forwarded up to
its next arrival) without waiting for the others; ``simulate_cluster``'s least-outstanding
router needs every server in lockstep at every arrival, which with dozens of servers and
arrivals every few ms is one Python step per iteration. Per-server ``simulate`` cannot take a
cap that depends on the other servers. We drive servesim's ``Engine`` directly (the loop body of
``simulate``, bounded by the tick); the public hook that would replace this is in the README.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from shared import servesim as S

from .power import CappedStep, ControlConfig, Controller, GpuPower


# ---------------------------------------------------------------- requests
def azure_superimposed() -> S.Trace:
    """conv and code on one clock (each from its own first request), merged in time order."""
    conv, code = S.Trace.azure("conv"), S.Trace.azure("code")
    t = np.concatenate([conv.arrival_s, code.arrival_s])
    order = np.argsort(t, kind="stable")
    return S.Trace(t[order], np.concatenate([conv.prompt, code.prompt])[order],
                   np.concatenate([conv.output, code.output])[order], "azure-conv+code")


def diurnal(t, duration_s: float, trough: float, cycles: float):
    """The envelope in [trough, 1]: trough at t = 0, peaks at the middle of each cycle."""
    return trough + (1 - trough) * 0.5 * (1 - np.cos(2 * np.pi * cycles * np.asarray(t) / duration_s))


def row_trace(base: S.Trace, peak_rate: float, duration_s: float, trough: float, cycles: float, low_share: float,
              max_prompt: int, seed: int) -> tuple[S.Trace, np.ndarray]:
    """The row's requests over ``duration_s``: the whole of ``base`` compressed onto [0, duration_s)
    (its bursts kept, shortened), as many copies superimposed (each shifted by a random offset,
    circularly) as the peak rate needs, then thinned to ``peak_rate`` x the diurnal envelope; and
    the low-priority mask."""
    if not peak_rate > 0:
        raise ValueError(f"row_trace: peak_rate must be > 0 requests/s, got {peak_rate}")
    rng = np.random.default_rng(seed)
    t0 = (base.arrival_s - base.arrival_s[0]) * (duration_s / (base.arrival_s[-1] - base.arrival_s[0] + 1e-9))
    reps = max(1, math.ceil(peak_rate * duration_s / len(base)))
    t = np.concatenate([(t0 + (rng.random() * duration_s if r else 0.0)) % duration_s for r in range(reps)])
    prompt, output = np.tile(base.prompt, reps), np.tile(base.output, reps)
    keep = rng.random(len(t)) < peak_rate * duration_s / len(t) * diurnal(t, duration_s, trough, cycles)
    order = np.argsort(t[keep], kind="stable")
    trace = S.Trace(t[keep][order], prompt[keep][order].clip(1, max_prompt), output[keep][order],
                    f"{base.name}@{peak_rate:g}")
    return trace, rng.random(len(trace)) < low_share


# ---------------------------------------------------------------- the row
@dataclass(frozen=True)
class Row:
    step: S.StepModel  # one server's model instance (its device: the server's GPUs together)
    engine: S.EngineConfig
    power: GpuPower
    gpus: int = 8
    other_w: float = 0.0  # non-GPU power of a server (W), constant
    beta: float = 0.3  # memory-time exponent of the clock (power.capped)
    tick_s: float = 1.0  # telemetry and control period

    def server_peak_w(self) -> float:
        return self.gpus * self.power.tdp_w + self.other_w

    def server_idle_w(self) -> float:
        return self.gpus * self.power.idle_w + self.other_w


def _advance(e, arrivals, ids, pos: int, until: float) -> int:
    """servesim.simulate's loop for one engine, stopped before any iteration starting at or after
    ``until``; returns the index of the engine's next arrival."""
    n = len(ids)
    while True:
        if e.idle:
            if pos >= n or arrivals[pos] >= until:
                return pos
            e.t = max(e.t, arrivals[pos])
        if e.t >= until:
            return pos
        while pos < n and arrivals[pos] <= e.t:
            e.queue.append(int(ids[pos]))
            pos += 1
        if e.fast_forward(min(arrivals[pos] if pos < n else math.inf, until)):
            continue
        if not e.iterate():
            if pos >= n:
                raise RuntimeError("simulate_row: a queue head can never be admitted")
            e.t = max(e.t, arrivals[pos])


def simulate_row(row: Row, trace: S.Trace, low: np.ndarray, n_servers: int, budget_w: float, policy: str,
                 control: ControlConfig, low_share: float) -> dict:
    """Serve ``trace`` on ``n_servers`` under ``budget_w`` with the controller ``policy``. Returns
    per-request TTFT and priority, per-tick row power (W), clocks and the controller's counts."""
    n_low = int(round(n_servers * low_share)) if low.any() else 0
    if low.any() and not 0 < n_low < n_servers:
        raise ValueError(f"simulate_row: {n_servers} servers cannot hold a low-priority pool of share {low_share}")
    pools = [np.flatnonzero(low), np.flatnonzero(~low)]
    servers = [list(range(n_low)), list(range(n_low, n_servers))]
    owner = np.full(len(trace), -1)
    for ids, mine in zip(pools, servers):
        owner[ids] = np.asarray(mine)[np.arange(len(ids)) % len(mine)]
    steps = [CappedStep(row.step, row.beta) for _ in range(n_servers)]
    engines = [S.Engine(trace, steps[k], row.engine, S.Aggressive(), True) for k in range(n_servers)]
    mine = [np.flatnonzero(owner == k) for k in range(n_servers)]
    arrivals = [trace.arrival_s[m] for m in mine]
    pos, seen = [0] * n_servers, [0] * n_servers
    ctl = Controller(policy, control)
    tau, g = row.tick_s, row.gpus
    extra = np.zeros(1024)  # energy above idle per tick, whole row (J)
    ticks, f_lo, f_hi = [], [], []
    f_low = f_high = 1.0
    b = 0
    while any(p < len(m) for p, m in zip(pos, mine)) or not all(e.idle for e in engines):
        until = (b + 1) * tau
        for k, e in enumerate(engines):
            steps[k].f = f_low if k < n_low else f_high
            pos[k] = _advance(e, arrivals[k], mine[k], pos[k], until)
            log = e.log
            if len(log["t"]) > seen[k]:  # the new iterations' energy above idle, spread over ticks
                sl = slice(seen[k], len(log["t"]))
                t0, dt = np.asarray(log["t"][sl]), np.asarray(log["dt"][sl])
                tokens = np.asarray(log["prefill_tokens"][sl]) + np.asarray(log["decode_seqs"][sl])
                u = row.power.activity(row.step, tokens, np.asarray(log["kv_tokens"][sl]))
                above = g * (row.power.watts(u, steps[k].f) - row.power.idle_w)
                extra = _spread(extra, t0, t0 + dt, above, tau)
                seen[k] = len(log["t"])
        watts = n_servers * row.server_idle_w() + extra[b] / tau
        ticks.append(watts)
        f_lo.append(f_low)
        f_hi.append(f_high)
        f_low, f_high = ctl.step(until, watts / budget_w)
        b += 1
    first = np.full(len(trace), np.nan)
    for k, e in enumerate(engines):
        first[mine[k]] = e.first[mine[k]]
    return {"ttft": first - trace.arrival_s, "low": low, "watts": np.asarray(ticks), "f_low": np.asarray(f_lo),
            "f_high": np.asarray(f_hi), "brakes": ctl.brakes, "violations": ctl.violations, "budget_w": budget_w}


def _spread(bins: np.ndarray, start, end, watts, tau: float) -> np.ndarray:
    """Add ``watts`` x overlap of each [start, end) with each tick [i tau, (i+1) tau) to ``bins``."""
    last = int(end.max() // tau) + 2
    if last > len(bins):
        bins = np.concatenate([bins, np.zeros(max(last, 2 * len(bins)) - len(bins))])
    i0, i1 = (start // tau).astype(np.int64), (end // tau).astype(np.int64)
    one = i0 == i1
    np.add.at(bins, i0[one], watts[one] * (end[one] - start[one]))
    for a, z, w, i, j in zip(start[~one], end[~one], watts[~one], i0[~one], i1[~one]):
        for m in range(i, j + 1):
            bins[m] += w * max(0.0, min(z, (m + 1) * tau) - max(a, m * tau))
    return bins


# ---------------------------------------------------------------- experiments
def servers_for(n0: int, oversub: float) -> int:
    return int(round(n0 * (1 + oversub)))


def run_point(row: Row, base: S.Trace, n0: int, oversub: float, policy: str, control: ControlConfig, *,
              rate_per_server: float, duration_s: float, trough: float, cycles: float, low_share: float,
              max_prompt: int, seed: int) -> dict:
    """One (oversubscription, policy) point: the row's trace at this size, served under the budget of n0."""
    n = servers_for(n0, oversub)
    trace, low = row_trace(base, rate_per_server * n, duration_s, trough, cycles, low_share, max_prompt, seed)
    out = simulate_row(row, trace, low, n, n0 * row.server_peak_w(), policy, control, low_share)
    return out | {"n_servers": n, "oversub": oversub, "policy": policy, "requests": len(trace)}


def summarise(out: dict, reference: dict | None) -> dict:
    """A row of the results table; TTFT increases are against ``reference`` (the same row and
    requests with unlimited power)."""
    ttft, low, w = out["ttft"], out["low"], out["watts"] / out["budget_w"]
    row = {"oversub_pct": round(100 * out["oversub"]), "policy": out["policy"], "n_servers": out["n_servers"],
           "requests": out["requests"], "brakes": out["brakes"], "violations": out["violations"],
           "power_peak_frac": float(w.max()), "power_mean_frac": float(w.mean()),
           "capped_low_share": float(np.mean(out["f_low"] < 1)), "capped_high_share": float(np.mean(out["f_high"] < 1)),
           "hp_ttft_p50_s": float(np.percentile(ttft[~low], 50)),
           "hp_ttft_p99_s": float(np.percentile(ttft[~low], 99)),
           "lp_ttft_p99_s": float(np.percentile(ttft[low], 99)) if low.any() else math.nan}
    if reference is not None:
        for key in ("hp_ttft_p50_s", "hp_ttft_p99_s", "lp_ttft_p99_s"):
            ref = summarise(reference, None)[key]
            row[key.replace("_s", "_increase")] = row[key] / ref - 1
    return row


def max_oversub(table: pd.DataFrame, policy: str, limit: float = math.inf, column: str = "hp_ttft_p99_increase") -> float:
    """The largest oversubscription (%) of the grid up to which ``policy`` has no brake event and
    ``column`` (the high-priority p99 TTFT increase; training: its slowdown) <= ``limit`` at every
    grid point (0 if none); with the default limit, the brake-free oversubscription."""
    best = 0.0
    for _, r in table[table["policy"] == policy].sort_values("oversub_pct").iterrows():
        if r["brakes"] > 0 or r[column] > limit:
            break
        best = float(r["oversub_pct"])
    return best


# ---------------------------------------------------------------- from the paper's Params
MODELS = {"llama2-7b": S.LLAMA2_7B, "llama2-13b": S.LLAMA2_13B, "llama2-70b": S.LLAMA2_70B}


def row_from(p, **power_overrides) -> Row:
    """The row of ``p`` (config.Params): one instance per server on its GPUs together."""
    gpu = S.DEVICES[p.gpu]
    server = S.DeviceSpec(f"{p.gpus_per_server}x{gpu.name}", gpu.flops * p.gpus_per_server,
                          gpu.bandwidth * p.gpus_per_server, gpu.memory * p.gpus_per_server, gpu.tdp_w)
    step = S.StepModel(MODELS[p.model], server, mfu=p.mfu, mbu=p.mbu, overhead_s=p.overhead_s)
    engine = S.EngineConfig(kv_tokens=step.kv_capacity_tokens(), max_batch=p.max_batch)
    power = GpuPower(**{"tdp_w": gpu.tdp_w, "idle_frac": p.idle_frac, "u_prefill": p.u_prefill,
                        "u_decode": p.u_decode, "gamma": p.gamma} | power_overrides)
    return Row(step, engine, power, p.gpus_per_server, p.other_w, p.beta, p.tick_s)


def control_from(p) -> ControlConfig:
    window = max(1, int(round(p.budget_window_s / p.tick_s)))
    return ControlConfig(p.t1, p.t2, p.hysteresis, p.f_low, p.f_all, p.polca_delay_s, p.capping_delay_s, p.brake_f,
                         p.brake_s, window)


def sweep(row: Row, base: S.Trace, p, grid, policies, control: ControlConfig, seed: int,
          progress=lambda it, **_: it, reference: dict | None = None) -> tuple[pd.DataFrame, dict]:
    """Every (oversubscription, policy) of the grid; TTFT increases against ``unlimited`` at the same
    point (run first, or taken from ``reference`` {oversub: out}). Returns the table and the raw
    outputs by (oversub, policy)."""
    kw = dict(rate_per_server=p.rate_per_server, duration_s=p.duration_s, trough=p.trough, cycles=p.cycles,
              low_share=p.low_share, max_prompt=p.max_prompt, seed=seed)
    rows, outs = [], {}
    reference = dict(reference or {})
    for x, policy in progress([(x, pol) for x in grid for pol in policies], desc="row simulations"):
        if x not in reference:
            reference[x] = run_point(row, base, p.n0_servers, x, "unlimited", control, **kw)
            outs[(x, "unlimited")] = reference[x]
            if policy != "unlimited":
                rows.append(summarise(reference[x], reference[x]))
        out = reference[x] if policy == "unlimited" else run_point(row, base, p.n0_servers, x, policy, control, **kw)
        outs[(x, policy)] = out
        rows.append(summarise(out, reference[x]))
    return pd.DataFrame(rows).drop_duplicates(["oversub_pct", "policy"]), outs
