"""Paper 43 (P/D-Serve): disaggregated prefill/decode serving on shared.servesim.

**Pools.** ``n_p`` prefill instances run prefill-only iterations (a request's trace output is 1:
its prefill yields the first token and it leaves); ``n_d`` decode instances receive each request
at prefill-finish + transfer time with its prompt's KV already cached and one token generated,
and decode the rest. A decode instance is servesim's engine with one change
(:class:`_DecodeEngine`): a request admitted for the first time costs no prefill, it joins the
decode batch at once (a request preempted on the decode side recomputes there, as servesim
does). Aggregated serving is servesim's engine as it is on the same total instances (prefill-only
iterations, ``mixed=False``, as the paper's aggregated baseline; ``mixed=True`` as an extra).

**Gateways** for the prefill pool (:class:`RejectRetry`, :class:`StaleReports`): the gateway
either asks prefill instances in turn and each rejects when its queue holds more than a bound of
prompt tokens (P/D-Serve's on-demand forwarding; a request every instance rejects waits at the
gateway and is offered again whenever an instance finishes an iteration), or it routes to the
fewest requests by queue-length reports refreshed every Δ s (plus what it sent since the last
report).

**P/D ratio** (:func:`matched_ratio`): throughput matching, n_p / n_d = E[T_prefill] /
(E[L_out] · t_iter / B) with B the decode batch that meets the TPOT target.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from dataclasses import dataclass, replace

import numpy as np

from shared import servesim as S


# ---------------------------------------------------------------- KV transfer
@dataclass(frozen=True)
class Transfer:
    """α-β transfer time of one request's KV cache: ``ops · alpha_s + bytes / beta_Bps``."""

    alpha_s: float  # seconds per copy operation
    beta_Bps: float  # bytes per second
    block_tokens: int = 16
    contiguous: bool = True  # False: one operation per block per layer

    def seconds(self, tokens: np.ndarray, shape: S.ModelShape) -> np.ndarray:
        tokens = np.asarray(tokens, dtype=np.float64)
        ops = np.ones_like(tokens) if self.contiguous else np.ceil(tokens / self.block_tokens) * shape.n_layers
        return ops * self.alpha_s + tokens * shape.kv_bytes_per_token / self.beta_Bps


# ---------------------------------------------------------------- the decode engine
class _DecodeEngine(S.Engine):
    """servesim's engine for requests that arrive prefilled (see the module docstring). The change
    is in :meth:`iterate` only; every request starts with one generated token."""

    def __init__(self, trace, step, cfg, policy):
        super().__init__(trace, step, cfg, policy, False)
        self.generated[:] = 1

    def iterate(self):
        tr = self.trace
        self._grow_or_preempt()
        new_ids, new_blocks = self._admit()
        if len(new_ids) == 0 and len(self.run_ids) == 0:
            return False
        redo = new_ids[self.preempted[new_ids] > 0]  # preempted here: recompute prompt + generated
        joined = new_ids[self.preempted[new_ids] == 0]  # arrived with their KV: decode at once
        decoding = np.concatenate([self.run_ids, joined])
        ptok = tr.prompt[redo] + self.generated[redo]
        dctx = tr.prompt[decoding] + self.generated[decoding]
        dt = float(self.step.seconds(ptok.sum(), (ptok * (ptok + 1) // 2).sum(), len(decoding), dctx.sum()))
        self.t += dt
        first = joined[np.isnan(self.admitted[joined])]
        self.admitted[first] = self.t - dt
        self.first[first] = self.t
        self.generated[new_ids] += 1
        self.generated[self.run_ids] += 1
        self.run_ids = np.concatenate([self.run_ids, new_ids])
        self.run_blocks = np.concatenate([self.run_blocks, new_blocks])
        self._retire()
        return True


# ---------------------------------------------------------------- gateways
@dataclass
class LeastOutstanding:
    """Fresh state, fewest queued + running requests (servesim's router; the decode pool's)."""

    def pick(self, i, t, engines, trace):
        return min(range(len(engines)), key=lambda j: (engines[j].outstanding(), j))


@dataclass
class StaleReports:
    """Fewest requests by the instances' queue-length reports, refreshed every ``interval_s``,
    plus the requests the gateway itself sent since the last report."""

    interval_s: float
    _next: float = -math.inf
    _reported: np.ndarray | None = None

    def pick(self, i, t, engines, trace):
        if t >= self._next:
            self._reported = np.array([e.outstanding() for e in engines], dtype=np.float64)
            self._next = (math.floor(t / self.interval_s) + 1) * self.interval_s
        k = int(np.argmin(self._reported))
        self._reported[k] += 1
        return k


def queued_tokens(engine) -> int:
    """Prompt tokens waiting in an instance's queue (what it knows of its own backlog)."""
    return int(engine.trace.prompt[list(engine.queue)].sum()) if engine.queue else 0


@dataclass
class RejectRetry:
    """On-demand forwarding: offer the request to the instances in turn (from a rotating start);
    an instance rejects when its queued prompt tokens plus this prompt exceed ``bound_tokens``
    (an empty queue always accepts). None when all reject: the request waits at the gateway."""

    bound_tokens: int
    _start: int = 0
    rejections: int = 0

    def accepts(self, engine, prompt: int) -> bool:
        return not engine.queue or queued_tokens(engine) + prompt <= self.bound_tokens

    def pick(self, i, t, engines, trace):
        n = len(engines)
        for s in range(n):
            k = (self._start + s) % n
            if self.accepts(engines[k], int(trace.prompt[i])):
                self._start = (k + 1) % n
                return k
            self.rejections += 1
        return None


# ---------------------------------------------------------------- one pool
def run_pool(trace: S.Trace, engines: list, gateway) -> np.ndarray:
    """Serve ``trace`` on ``engines`` (servesim engines built over this trace), each request sent
    by ``gateway.pick(i, t, engines, trace)`` at its arrival, or later if it returns None (then it
    waits, FIFO, and is offered again at the start of every iteration of any instance). Returns
    the instance of each request; the engines hold the times."""
    owner = np.full(len(trace), -1)
    waiting: deque[int] = deque()
    heap: list[tuple[float, int]] = []  # (next iteration time, instance) of busy instances
    nxt, n = 0, len(trace)

    def dispatch(t):
        while waiting:
            k = gateway.pick(waiting[0], t, engines, trace)
            if k is None:
                return
            e = engines[k]
            if e.idle:
                e.t = max(e.t, t)
                heapq.heappush(heap, (e.t, k))
            e.queue.append(waiting.popleft())
            owner[e.queue[-1]] = k

    while nxt < n or heap:
        if nxt < n and (not heap or trace.arrival_s[nxt] <= heap[0][0]):
            waiting.append(nxt)
            nxt += 1
            dispatch(trace.arrival_s[nxt - 1])
            continue
        t, k = heapq.heappop(heap)
        dispatch(t)
        e = engines[k]
        horizon = min(trace.arrival_s[nxt] if nxt < n else math.inf, heap[0][0] if heap else math.inf)
        if (not waiting and e.fast_forward(horizon)) or e.iterate():
            if not e.idle:
                heapq.heappush(heap, (e.t, k))
        elif not e.idle:  # blocked on admission with nothing running: wait for the next event
            if nxt >= n and not heap:
                raise RuntimeError(f"run_pool: instance {k}'s queue head can never be admitted")
            e.t = max(e.t, min(trace.arrival_s[nxt] if nxt < n else math.inf, heap[0][0] if heap else math.inf))
            heapq.heappush(heap, (e.t, k))
        if not heap and waiting and nxt >= n:
            raise RuntimeError("run_pool: requests wait at the gateway but no instance is busy")
    return owner


def _merged(engines, owner, field):
    out = np.full(len(owner), np.nan)
    for k, e in enumerate(engines):
        mine = owner == k
        out[mine] = getattr(e, field)[mine]
    return out


# ---------------------------------------------------------------- disaggregated serving
@dataclass
class Disaggregated:
    """What a disaggregated run returns: a servesim Result over the whole trace (first token at
    prefill end, finish at decode end) and the per-request times of each phase."""

    result: S.Result
    prefill_end_s: np.ndarray
    decode_arrival_s: np.ndarray  # NaN for one-token outputs (done at prefill)
    decode_start_s: np.ndarray  # start of the first decode iteration; NaN as above
    prefill_owner: np.ndarray
    decode_owner: np.ndarray  # -1 as above
    rejections: int = 0


def prefill_only(trace: S.Trace) -> S.Trace:
    return S.Trace(trace.arrival_s, trace.prompt, np.ones(len(trace), dtype=np.int64), trace.name)


def simulate_disaggregated(trace: S.Trace, step: S.StepModel, n_p: int, n_d: int, prefill_cfg: S.EngineConfig,
                           decode_cfg: S.EngineConfig, transfer: Transfer, gateway=None) -> Disaggregated:
    """``n_p`` prefill and ``n_d`` decode instances of one step model (see the module docstring).
    ``gateway`` routes the prefill pool (default: fresh least-outstanding); the decode pool is
    least-outstanding on fresh state."""
    if n_p < 1 or n_d < 1:
        raise ValueError(f"simulate_disaggregated: n_p and n_d must be >= 1, got {n_p}, {n_d}")
    output = np.minimum(trace.output, decode_cfg.max_new_tokens)
    pre = prefill_only(trace)
    p_engines = [S.Engine(pre, step, prefill_cfg, S.Aggressive(), False) for _ in range(n_p)]
    gateway = gateway or LeastOutstanding()
    p_owner = run_pool(pre, p_engines, gateway)
    prefill_end = _merged(p_engines, p_owner, "finish")
    admitted = _merged(p_engines, p_owner, "admitted")
    pre_preempt = sum(e.preempted for e in p_engines)

    more = np.flatnonzero(output > 1)
    arrive = prefill_end[more] + transfer.seconds(trace.prompt[more], step.shape)
    order = np.argsort(arrive, kind="stable")
    ids = more[order]
    dtrace = S.Trace(arrive[order], trace.prompt[ids], output[ids], trace.name)
    d_engines = [_DecodeEngine(dtrace, step, decode_cfg, S.Aggressive()) for _ in range(n_d)]
    d_owner_local = run_pool(dtrace, d_engines, LeastOutstanding())

    n = len(trace)
    finish = prefill_end.copy()
    decode_arrival, decode_start = np.full(n, np.nan), np.full(n, np.nan)
    decode_owner = np.full(n, -1)
    finish[ids] = _merged(d_engines, d_owner_local, "finish")
    decode_start[ids] = _merged(d_engines, d_owner_local, "admitted")
    decode_arrival[ids] = dtrace.arrival_s
    decode_owner[ids] = d_owner_local
    preempted = pre_preempt.copy()
    preempted[ids] += sum(e.preempted for e in d_engines)
    result = S.Result(S.Trace(trace.arrival_s, trace.prompt, output, trace.name), prefill_end, finish,
                      preempted, admitted)
    return Disaggregated(result, prefill_end, decode_arrival, decode_start, p_owner, decode_owner,
                         getattr(gateway, "rejections", 0))


def simulate_aggregated(trace: S.Trace, step: S.StepModel, n: int, cfg: S.EngineConfig) -> S.Result:
    """``n`` instances of servesim's engine as it is (``cfg.mixed`` decides whether running requests
    decode in iterations that prefill), least-outstanding routing
    on fresh state (servesim's ``simulate_cluster`` router; here through :func:`run_pool` so that
    the result is over the whole trace in its order)."""
    engines = [S.Engine(trace, step, cfg, S.Aggressive(), False) for _ in range(n)]
    owner = run_pool(trace, engines, LeastOutstanding())
    output = np.minimum(trace.output, cfg.max_new_tokens)
    preempted = sum(e.preempted for e in engines)
    return S.Result(S.Trace(trace.arrival_s, trace.prompt, output, trace.name), _merged(engines, owner, "first"),
                    _merged(engines, owner, "finish"), preempted, _merged(engines, owner, "admitted"))


# ---------------------------------------------------------------- P/D ratio
def decode_batch(step: S.StepModel, cfg: S.EngineConfig, mean_context: float, tpot_s: float) -> tuple[int, float]:
    """The largest decode batch B (<= max_batch, its KV within kv_tokens) whose iteration at
    ``mean_context`` tokens per sequence takes <= ``tpot_s``; returns (B, its iteration seconds).
    At least 1."""
    b = np.arange(1, cfg.max_batch + 1)
    t = step.seconds(0, 0, b, b * mean_context)
    ok = (t <= tpot_s) & (b * (mean_context + cfg.block_size) <= cfg.kv_tokens)
    best = int(b[ok].max()) if ok.any() else 1
    return best, float(t[best - 1])


def matched_ratio(mean_prefill_s: float, mean_output: float, t_iter_s: float, batch: int) -> float:
    """Throughput matching: n_p / n_d = (λ E[T_prefill]) / (λ E[L_out] t_iter / B); λ cancels."""
    if min(mean_prefill_s, mean_output, t_iter_s, batch) <= 0:
        raise ValueError("matched_ratio: every argument must be > 0, got "
                         f"{mean_prefill_s}, {mean_output}, {t_iter_s}, {batch}")
    return mean_prefill_s / (mean_output * t_iter_s / batch)


def split(n_total: int, ratio: float) -> tuple[int, int]:
    """(n_p, n_d) with n_p + n_d = n_total nearest to n_p / n_d = ratio, each >= 1."""
    if n_total < 2:
        raise ValueError(f"split: need at least 2 instances, got {n_total}")
    n_p = min(max(int(round(n_total * ratio / (1 + ratio))), 1), n_total - 1)
    return n_p, n_total - n_p


@dataclass(frozen=True)
class Demand:
    """Instance-seconds one request of a scenario costs: prefill and decode (at batch B)."""

    prefill_s: float
    decode_s: float
    ratio: float
    batch: int
    t_iter_s: float

    @property
    def total_s(self) -> float:
        return self.prefill_s + self.decode_s


def demand(trace: S.Trace, step: S.StepModel, cfg: S.EngineConfig, tpot_s: float) -> Demand:
    """Per-request prefill seconds (alone on an instance) and decode instance-seconds at the batch
    meeting ``tpot_s``; the throughput-matched ratio of this workload."""
    p = trace.prompt.astype(np.float64)
    prefill_s = float(np.mean(step.seconds(p, p * (p + 1) / 2, 0, 0)))
    out = np.minimum(trace.output, cfg.max_new_tokens).astype(np.float64)
    mean_out = float(np.mean(out - 1)) or 1.0
    b, t_iter = decode_batch(step, cfg, float(np.mean(p + out / 2)), tpot_s)
    return Demand(prefill_s, mean_out * t_iter / b, matched_ratio(prefill_s, mean_out, t_iter, b), b, t_iter)


def allocate(n_total: int, weights) -> list[int]:
    """Instances per group proportional to ``weights`` (largest remainder), each group >= 2."""
    w = np.asarray(weights, dtype=np.float64)
    if n_total < 2 * len(w):
        raise ValueError(f"allocate: {n_total} instances cannot give {len(w)} groups 2 each")
    share = 2 + (n_total - 2 * len(w)) * w / w.sum()
    base = np.floor(share).astype(int)
    for k in np.argsort(-(share - base), kind="stable")[: n_total - base.sum()]:
        base[k] += 1
    return base.tolist()


# ---------------------------------------------------------------- links
def link(gbps: float, alpha_s: float, block_tokens: int = 16, contiguous: bool = True) -> Transfer:
    """A network link of ``gbps`` gigabits per second (RoCE 200 Gb/s: 200) with ``alpha_s`` seconds
    per transfer operation, as the α-β :class:`Transfer` of the simulated pools."""
    if gbps <= 0 or alpha_s < 0:
        raise ValueError(f"link: gbps must be > 0 and alpha_s >= 0, got {gbps}, {alpha_s}")
    return Transfer(alpha_s, gbps * 1e9 / 8, block_tokens, contiguous)


# ---------------------------------------------------------------- throughput at SLO
CONFIGS = ("global", "per-scenario", "aggregated", "aggregated-mixed")


@dataclass(frozen=True)
class Setup:
    """Everything a configuration needs besides the trace: step model, instance count, the
    per-scenario splits {"code": (n_p, n_d), "conv": ...}, engine configs, the link and the SLO.
    ``agg_cfg`` is the aggregated baseline's engine (``mixed=False``: prefill-only iterations);
    the "aggregated-mixed" configuration runs it with ``mixed=True``."""

    step: S.StepModel
    n_instances: int
    splits: dict
    pre_cfg: S.EngineConfig
    dec_cfg: S.EngineConfig
    agg_cfg: S.EngineConfig
    transfer: Transfer
    slo: S.SLO


def serve(config: str, n_p: int, trace: S.Trace, is_code: np.ndarray, setup: Setup) -> tuple[np.ndarray, int]:
    """Serve ``trace`` with one configuration of :data:`CONFIGS`; returns (meets the SLO, per
    request; preemptions). ``n_p``: the prefill instances of "global" (ignored otherwise)."""
    u = setup
    if config == "global":
        r = simulate_disaggregated(trace, u.step, n_p, u.n_instances - n_p, u.pre_cfg, u.dec_cfg, u.transfer).result
        return r.meets(u.slo), int(r.preemptions.sum())
    if config == "per-scenario":
        ok, preempt = np.zeros(len(trace), bool), 0
        for kind, mask in (("code", is_code), ("conv", ~is_code)):
            if not mask.any():
                continue
            k_p, k_d = u.splits[kind]
            r = simulate_disaggregated(subset(trace, mask), u.step, k_p, k_d, u.pre_cfg, u.dec_cfg, u.transfer).result
            ok[mask], preempt = r.meets(u.slo), preempt + int(r.preemptions.sum())
        return ok, preempt
    if config in ("aggregated", "aggregated-mixed"):
        cfg = replace(u.agg_cfg, mixed=config == "aggregated-mixed")
        r = simulate_aggregated(trace, u.step, u.n_instances, cfg)
        return r.meets(u.slo), int(r.preemptions.sum())
    raise ValueError(f"serve: config={config!r} is not allowed; allowed: {', '.join(CONFIGS)}")


def max_rate(attainment_at, lo: float, hi: float, target: float, steps: int) -> tuple[float, list]:
    """Bisection for the highest rate with ``attainment_at(rate) >= target`` in [lo, hi] (attainment
    falls with the rate). Returns (rate, [(rate, attainment), ...]); 0 if even ``lo`` fails."""
    probes = []
    a_lo = attainment_at(lo)
    probes.append((lo, a_lo))
    if a_lo < target:
        return 0.0, probes
    a_hi = attainment_at(hi)
    probes.append((hi, a_hi))
    if a_hi >= target:
        return hi, probes
    for _ in range(steps):
        mid = math.sqrt(lo * hi)
        a = attainment_at(mid)
        probes.append((mid, a))
        lo, hi = (mid, hi) if a >= target else (lo, mid)
    return lo, probes


# ---------------------------------------------------------------- workloads
def mixed_trace(n: int, rate: float, seed: int, code_share: float, max_prompt: int,
                max_output: int) -> tuple[S.Trace, np.ndarray]:
    """``n`` requests sampled from the Azure code and conv traces (a ``code_share`` of code), with
    Poisson arrivals at ``rate`` requests/s. Returns the trace and which requests are code."""
    rng = np.random.default_rng(seed)
    is_code = rng.random(n) < code_share
    prompt, output = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64)
    for kind, mask in (("code", is_code), ("conv", ~is_code)):
        tr = S.Trace.azure(kind)
        pick = rng.choice(len(tr), size=int(mask.sum()), replace=True)
        prompt[mask], output[mask] = tr.prompt[pick], tr.output[pick]
    arrivals = np.cumsum(rng.exponential(1.0 / rate, n))
    return S.Trace(arrivals, prompt.clip(1, max_prompt), output.clip(1, max_output), "azure-code+conv"), is_code


def subset(trace: S.Trace, mask: np.ndarray) -> S.Trace:
    return S.Trace(trace.arrival_s[mask], trace.prompt[mask], trace.output[mask], trace.name)
