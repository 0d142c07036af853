"""NanoFlow's nano-batch pipeline (Sec. 4) as a model: split the dense batch into ``k``
nano-batches, give the compute-, memory- and network-bound operations each a share of the
device's SMs, and let the operations of different nano-batches run at the same time.

Per layer and nano-batch the chain of operations is (their data dependencies)

    QKV GEMM -> decode attention -> O GEMM -> collective -> FFN GEMMs -> collective
    compute     memory              compute   network       compute      network

with times from the cost model (:mod:`paper46.costmodel`) at achievable efficiencies
(:class:`Efficiency`). An operation holding a fraction R of the SMs runs at a fraction P(R)
of its full-device speed: NanoFlow's measured interference curves for decode attention (GEMV)
and for collectives (:class:`Interference`), and P = R for GEMMs. The shares are fixed for the
whole iteration (NanoFlow's search may change them per pipeline stage); a GEMM on M tokens runs
at ``gemm * M / (M + gemm_m_half)`` of peak, so small nano-batches cost GEMM efficiency; a
collective keeps its per-message latency however small its nano-batch.

:func:`simulate` schedules the k chains on the three partitions (each operation starts once
its predecessor is done and its partition is free; two ordering rules, the better one is kept). All layers are
alike, so a few layers are simulated and the steady-state period per layer extrapolates to the
model's depth (:func:`iteration_seconds`; exact once the schedule is periodic, tested).
``k = 1`` is sequential execution: every operation alone on the whole device, one after another.
:func:`search` tries every k and share on a grid and keeps the fastest, as NanoFlow's
auto-search does (over a richer space).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product

import numpy as np
import pandas as pd

from shared.distributed import Link

from .costmodel import ServedModel, Workload, collective_seconds

RESOURCES = ("compute", "memory", "network")


@dataclass(frozen=True)
class Interference:
    """P(R): the performance fraction of an operation holding a fraction R of the SMs, linear
    between measured (R, P) points and the ends (0, 0), (1, 1). No points: P = R."""

    points: tuple[tuple[float, float], ...] = ()
    name: str = ""

    def __post_init__(self):
        r = [x for x, _ in self.points]
        p = [y for _, y in self.points]
        if any(not 0 < x < 1 for x in r) or any(not 0 < y <= 1 for y in p):
            raise ValueError(f"Interference {self.name}: every R must be in (0, 1) and P in (0, 1], got {list(self.points)}")
        if np.any(np.diff(r) <= 0) or np.any(np.diff(p) < 0):
            raise ValueError(f"Interference {self.name}: R must increase and P must not decrease, got {list(self.points)}")

    def __call__(self, r: float) -> float:
        if not 0 < r <= 1:
            raise ValueError(f"Interference {self.name}: share R must be in (0, 1], got {r}")
        xs = [0.0, *(x for x, _ in self.points), 1.0]
        ys = [0.0, *(y for _, y in self.points), 1.0]
        return float(np.interp(r, xs, ys))


@dataclass(frozen=True)
class Efficiency:
    """Achieved fractions of peak: GEMMs (at large M), decode attention's bandwidth, the link's."""

    gemm: float = 0.8
    gemm_m_half: float = 64.0
    memory: float = 0.8
    network: float = 0.8

    def __post_init__(self):
        for key in ("gemm", "memory", "network"):
            if not 0 < getattr(self, key) <= 1:
                raise ValueError(f"Efficiency.{key} must be in (0, 1], got {getattr(self, key)}")
        if self.gemm_m_half < 0:
            raise ValueError(f"Efficiency.gemm_m_half must be >= 0, got {self.gemm_m_half}")

    def gemm_at(self, m: float) -> float:
        return self.gemm * m / (m + self.gemm_m_half)


@dataclass(frozen=True)
class Shares:
    """Fractions of the SMs held by the compute, memory and network partitions (sum <= 1)."""

    compute: float = 1.0
    memory: float = 1.0
    network: float = 1.0

    def __post_init__(self):
        vals = (self.compute, self.memory, self.network)
        if any(not 0 < v <= 1 for v in vals):
            raise ValueError(f"Shares: every share must be in (0, 1], got {vals}")


SEQUENTIAL = Shares()  # k = 1: every operation has the whole device in turn


def layer_chain(model: ServedModel, costs: dict[str, float], work: Workload, eff: Efficiency, link: Link,
                k: int, speed: dict[str, float]) -> list[tuple[str, float]]:
    """The operations of one layer of one of ``k`` nano-batches: (resource, seconds) at ``speed``
    (the P of each partition). ``costs`` from costmodel.iteration_costs at mfu = mbu = 1."""
    s, layers = model.shape, model.shape.n_layers
    per_layer = model.active_params / layers
    f_qkv = s.d_model * (s.d_model + 2 * s.kv_dim) / per_layer
    f_o = s.d_model * s.d_model / per_layer
    m = work.dense_batch / k
    gemm = costs["t_comp"] / layers / k / eff.gemm_at(m) / speed["compute"]
    attention = costs["t_kv"] / layers / k / eff.memory / speed["memory"]
    slow = Link(link.bandwidth * eff.network, link.latency_s)
    collective = collective_seconds(model, m, slow) / speed["network"]
    return [("compute", gemm * f_qkv), ("memory", attention), ("compute", gemm * f_o),
            ("network", collective), ("compute", gemm * (1 - f_qkv - f_o)), ("network", collective)]


def simulate(chains: list[list[tuple[str, float]]], rule: str = "greedy", record: bool = False):
    """Schedule job chains on one machine per resource; every operation starts once its
    predecessor in the chain is done and its machine is free. ``rule`` orders each machine:
    ``greedy`` starts, again and again, the operation that can start earliest (ties: the lower
    job); ``round_robin`` keeps one order on every machine, by position in the chain, then job
    (a static pipeline, as NanoFlow's). Returns the makespan (and, if ``record``, the schedule:
    rows of job, step, resource, start, end)."""
    if rule not in ("greedy", "round_robin"):
        raise ValueError(f"simulate rule={rule!r} is not allowed; allowed: greedy, round_robin")
    free = dict.fromkeys(RESOURCES, 0.0)
    ready = [0.0] * len(chains)
    rows = []

    def place(j, pos):
        resource, seconds = chains[j][pos]
        start = max(ready[j], free[resource])
        free[resource] = ready[j] = start + seconds
        if record:
            rows.append((j, pos, resource, start, start + seconds))

    if rule == "round_robin":
        for pos in range(max(len(c) for c in chains)):
            for j in range(len(chains)):
                if pos < len(chains[j]):
                    place(j, pos)
    else:
        pos = [0] * len(chains)
        for _ in range(sum(len(c) for c in chains)):
            _, j = min((max(ready[j], free[chains[j][pos[j]][0]]), j) for j in range(len(chains)) if pos[j] < len(chains[j]))
            place(j, pos[j])
            pos[j] += 1
    makespan = max(ready)
    return (makespan, pd.DataFrame(rows, columns=["nano_batch", "step", "resource", "start", "end"])) if record else makespan


def iteration_seconds(layer: list[tuple[str, float]], k: int, layers: int, sim_layers: int = 6,
                      rule: str = "greedy") -> float:
    """One iteration of ``layers`` identical layers for ``k`` nano-batches: simulated for at most
    ``sim_layers`` layers, the rest at the steady-state period per layer."""
    if layers <= sim_layers:
        return simulate([layer * layers] * k, rule)
    half = max(1, sim_layers // 2)
    short, long = simulate([layer * half] * k, rule), simulate([layer * sim_layers] * k, rule)
    return long + (layers - sim_layers) * (long - short) / (sim_layers - half)


RULES = ("greedy", "round_robin")


def share_grid(step: float) -> list[Shares]:
    """Every (compute, memory, network) split of the SMs in multiples of ``step`` (each >= step, sum 1)."""
    n = int(round(1 / step))
    if n < 3 or abs(n * step - 1) > 1e-9:
        raise ValueError(f"share_step: 1 / share_step must be a whole number >= 3, got {step}")
    return [Shares(round((n - a - b) * step, 10), round(a * step, 10), round(b * step, 10))
            for a, b in product(range(1, n), repeat=2) if a + b < n]


def search(model: ServedModel, costs: dict[str, float], work: Workload, eff: Efficiency, link: Link,
           curves: dict[str, Interference], counts: list[int], step: float, sim_layers: int = 6) -> pd.DataFrame:
    """Iteration seconds of every nano-batch count and share split (k = 1: sequential only),
    each with the better of the two scheduling rules, fastest first. ``curves``: the Interference of each resource."""
    rows = []
    for k in counts:
        for sh in [SEQUENTIAL] if k == 1 else share_grid(step):
            speed = {r: curves[r](getattr(sh, r)) for r in RESOURCES}
            layer = layer_chain(model, costs, work, eff, link, k, speed)
            times = {rule: iteration_seconds(layer, k, model.shape.n_layers, sim_layers, rule) for rule in RULES}
            rule = min(times, key=times.get)
            rows.append({"k": k, "r_compute": sh.compute, "r_memory": sh.memory, "r_network": sh.network,
                         **{f"p_{r}": speed[r] for r in RESOURCES}, "rule": rule, "seconds": times[rule]})
    return pd.DataFrame(rows).sort_values(["seconds", "k"], kind="stable").reset_index(drop=True)


def best(table: pd.DataFrame) -> dict:
    """The fastest row of :func:`search` and the sequential one, with the speedup."""
    top = table.iloc[0].to_dict()
    seq = table[table["k"] == 1]
    if seq.empty:
        raise ValueError("search table: it has no k = 1 (sequential) row; put 1 in nano_counts")
    return {**top, "sequential_seconds": float(seq["seconds"].iloc[0]),
            "speedup": float(seq["seconds"].iloc[0] / top["seconds"])}


def share_needed(curve: Interference, p: float) -> float:
    """The smallest SM share R with P(R) >= p (inverse of the curve; inf if p > 1)."""
    if p > 1:
        return float("inf")
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if curve(max(mid, 1e-12)) >= p else (mid, hi)
    return hi


def overlap_bound(times: dict[str, float], curves: dict[str, Interference]) -> float:
    """The shortest iteration any overlapped schedule could reach: the least T such that every
    resource's full-device time t_r fits in T at a share R_r with P_r(R_r) >= t_r / T and the shares
    sum to at most 1 (perfect pipelining, no nano-batch losses). Bisection on T."""
    lo, hi = max(times.values()), sum(times.values())
    for _ in range(60):
        mid = (lo + hi) / 2
        need = sum(share_needed(curves[r], t / mid) for r, t in times.items() if t > 0)
        lo, hi = (lo, mid) if need <= 1 else (mid, hi)
    return hi
