"""The cost model of a step and the choice of the swap plan (which chunks' optimizer state
stays in memory), after Fuyou's profiling + cost-model design.

Fuyou profiles one step with everything swapped, records per-layer compute times, sizes
and link bandwidths, and picks the plan whose predicted iteration time is the lowest under
the memory limits; the paper applies it to how much *activation* to swap (its exact
equations are not reproduced here: the planning notes mark them unverified). We apply the
same idea to the optimizer-state tier we build: a profiled step in memory gives the forward
time F, the moment each chunk's gradient is complete in backward (r_k) and each chunk's
Adam time (a_k); a transfer of b bytes costs d(b) = max(latency + b / bandwidth, b / real
rate), the throttle's rule. Then

- sequential: T = F + B + sum_k (a_k + 2 d_k [k swapped])
- overlapped: a replay of the schedule of ``offload`` with those durations (forward and
  backward stretched by the slow-down profiled with every chunk swapped, scaled by the share
  of state that is swapped: on a CPU box the disk and Adam threads share the cores with the
  model's compute, which a GPU does not): one disk queue
  (FIFO: the first ``prefetch`` reads at t = 0, then per chunk the next read and the
  write-back after its Adam), one Adam worker taking chunks at F + r_k; T = the last of
  backward's end, the last Adam and the last transfer.

``best_plan`` searches the resident sets that fit a memory budget (every subset for up to
``EXHAUSTIVE`` chunks, else greedily) for the lowest predicted overlapped time.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from . import offload

EXHAUSTIVE = 14  # chunks up to which every resident subset is evaluated
TIE = 0.005  # predicted times this close count as a tie


@dataclass(frozen=True)
class Profile:
    forward_s: float
    backward_s: float
    ready_s: tuple[float, ...]  # per chunk (backward order): gradient complete, from backward start
    adam_s: tuple[float, ...]  # per chunk: the AdamW update
    state_bytes: tuple[int, ...]  # per chunk: master + m + v
    real_bytes_per_s: float  # unthrottled file transfer rate
    overlap_forward_extra_s: float = 0.0  # forward slow-down when the disk and Adam threads run beside it
    overlap_backward_extra_s: float = 0.0  # (measured with everything swapped, unthrottled; 0 on a free machine)


@dataclass(frozen=True)
class DiskModel:
    bandwidth_mb_s: float | None
    latency_ms: float
    real_bytes_per_s: float

    def seconds(self, nbytes: int) -> float:
        real = nbytes / self.real_bytes_per_s
        if self.bandwidth_mb_s is None:
            return real
        return max(self.latency_ms / 1e3 + nbytes / (self.bandwidth_mb_s * 1e6), real)


PROFILE_SETUPS = [  # Fuyou profiles with everything swapped; we also need the in-memory baseline
    {"schedule": "sequential", "resident": "all"},  # compute, per-chunk readiness and Adam, no I/O
    {"schedule": "overlapped"},  # everything swapped to the unthrottled disk: the threads' slow-down
]


def profile_setups(n_chunks: int) -> list[dict]:
    return [s | {"resident": range(n_chunks)} if s.get("resident") == "all" else dict(s) for s in PROFILE_SETUPS]


def profile(model, batches, cfg, disk_folder, real_bytes_per_s: float, steps: int = 3, start: int = 0) -> Profile:
    """Profile ``steps`` steps (the first a warm-up) of copies of ``model`` in lockstep: in memory
    (all state resident) and overlapped with everything swapped to an unthrottled disk (as Fuyou
    profiles a step with everything swapped): how much the disk and Adam threads slow the
    forward and backward down on this machine's cores."""
    if steps < 2:
        raise ValueError(f"steps: profiling needs >= 2 steps (the first is a warm-up), got {steps}")
    n = len(offload.chunks(model))
    memory, swapped = offload.lockstep(model, batches, cfg, disk_folder, profile_setups(n), steps=steps, start=start)
    return from_rows(memory.iloc[1:], swapped.iloc[1:], tuple(c.state_bytes for c in offload.chunks(model)),
                     real_bytes_per_s)


def from_rows(memory, swapped, state_bytes, real_bytes_per_s: float) -> Profile:
    """A profile from lockstep rows (warm-up dropped): medians."""
    forward, backward = float(memory["forward_s"].median()), float(memory["backward_s"].median())
    return Profile(
        forward_s=forward,
        backward_s=backward,
        ready_s=tuple(np.median(np.array(memory["ready_s"].tolist()), axis=0).tolist()),
        adam_s=tuple(np.median(np.array(memory["adam_s"].tolist()), axis=0).tolist()),
        state_bytes=tuple(state_bytes),
        real_bytes_per_s=real_bytes_per_s,
        overlap_forward_extra_s=max(0.0, float(swapped["forward_s"].median()) - forward),
        overlap_backward_extra_s=max(0.0, float(swapped["backward_s"].median()) - backward),
    )


def predict(prof: Profile, disk: DiskModel, schedule: str, resident=(), prefetch: int = 2) -> float:
    """Predicted seconds of one step (see the module docstring)."""
    resident = set(resident)
    n = len(prof.state_bytes)
    d = [disk.seconds(b) for b in prof.state_bytes]
    if schedule == "sequential":
        return prof.forward_s + prof.backward_s + sum(prof.adam_s[k] + (0 if k in resident else 2 * d[k]) for k in range(n))
    if schedule != "overlapped":
        raise ValueError(f"schedule: {schedule!r} is not one of {offload.SCHEDULES}")
    swapped = [k for k in range(n) if k not in resident]
    share = sum(prof.state_bytes[k] for k in swapped) / sum(prof.state_bytes)  # contention grows with the traffic
    forward = prof.forward_s + share * prof.overlap_forward_extra_s
    stretch = (prof.backward_s + share * prof.overlap_backward_extra_s) / prof.backward_s
    disk_free = 0.0
    read_done: dict[int, float] = {}
    next_read = 0

    def transfer(submitted: float, k: int) -> float:
        nonlocal disk_free
        disk_free = max(disk_free, submitted) + d[k]
        return disk_free

    def request(at: float) -> None:
        nonlocal next_read
        k = swapped[next_read]
        read_done[k] = transfer(at, k)
        next_read += 1

    for _ in range(min(prefetch, len(swapped))):
        request(0.0)
    cpu_free = 0.0
    for k in sorted(range(n), key=lambda j: prof.ready_s[j]):
        begin = max(forward + stretch * prof.ready_s[k], cpu_free)
        if k in resident:
            cpu_free = begin + prof.adam_s[k]
            continue
        while k not in read_done:
            request(begin)
        cpu_free = max(begin, read_done[k]) + prof.adam_s[k]
        if next_read < len(swapped):
            request(cpu_free)
        transfer(cpu_free, k)
    return max(forward + stretch * prof.backward_s, cpu_free, disk_free)


def plans_within(prof: Profile, budget_bytes: float):
    """Every resident set (a tuple of chunk indices) whose state fits ``budget_bytes``."""
    n = len(prof.state_bytes)
    for r in range(n + 1):
        for subset in itertools.combinations(range(n), r):
            if sum(prof.state_bytes[k] for k in subset) <= budget_bytes:
                yield subset


def best_plan(prof: Profile, disk: DiskModel, budget_bytes: float, prefetch: int = 2) -> tuple[tuple[int, ...], float]:
    """The resident set with the lowest predicted overlapped step time, and that time."""
    if budget_bytes < 0:
        raise ValueError(f"budget_bytes: must be >= 0, got {budget_bytes}")
    score = lambda plan: predict(prof, disk, "overlapped", plan, prefetch)  # noqa: E731
    if len(prof.state_bytes) <= EXHAUSTIVE:
        scored = [(score(plan), plan) for plan in plans_within(prof, budget_bytes)]
        best = min(t for t, _ in scored)
        # near-ties (within TIE): keep the chunks updated last in memory; their I/O is the tail
        # after backward that nothing can hide
        near = [(t, plan) for t, plan in scored if t <= best * (1 + TIE)]
        t, plan = max(near, key=lambda item: (sorted(item[1], reverse=True), -item[0]))
        return plan, t
    plan: tuple[int, ...] = ()  # greedy: add the chunk that saves the most predicted time per byte
    while True:
        used = sum(prof.state_bytes[k] for k in plan)
        options = [k for k in range(len(prof.state_bytes)) if k not in plan and used + prof.state_bytes[k] <= budget_bytes]
        base = score(plan)
        gains = [((base - score(tuple(sorted(plan + (k,))))) / prof.state_bytes[k], k) for k in options]
        gains = [g for g in gains if g[0] > 0]
        if not gains:
            return plan, base
        plan = tuple(sorted(plan + (max(gains)[1],)))


def fill_in_order(prof: Profile, budget_bytes: float, order) -> tuple[int, ...]:
    """A heuristic plan: keep chunks in ``order`` while they fit the budget."""
    plan, used = [], 0
    for k in order:
        if used + prof.state_bytes[k] <= budget_bytes:
            plan.append(k)
            used += prof.state_bytes[k]
    return tuple(sorted(plan))
