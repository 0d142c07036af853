"""A real overlap experiment (not a model): a compute-bound stream (square GEMMs) and a
memory-bound stream (GEMV over a "KV cache" larger than the caches it should stream from) run

* ``sequential_1``: one after the other on one thread (one core each, as when overlapped),
* ``sequential_all``: one after the other, each with all ``threads`` cores (how an engine that
  executes operations in turn gives every operation the whole device: the fair baseline),
* ``concurrent``: at the same time, each on its own thread with one core (the partitioned device).

Python threads run torch operations with the GIL released; ``torch.set_num_threads(1)`` keeps
each operation on its calling thread. On CUDA the two streams are two CUDA streams instead.
NanoFlow's claim transposed: when one stream is memory-bound, partitioning the device between
the two beats giving each the whole device in turn (``concurrent / sequential_all < 1``).
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from dataclasses import dataclass
from typing import Callable

import torch


@dataclass
class Stream:
    name: str
    step: Callable[[], None]
    reps: int = 1


def gemm_stream(n: int, device: str = "cpu", seed: int = 0) -> Stream:
    """Compute-bound: C = A B with n x n float32 matrices (2 n^3 FLOPs, 12 n^2 bytes a step)."""
    g = torch.Generator().manual_seed(seed)
    a, b = (torch.randn(n, n, generator=g).to(device) for _ in range(2))
    c = torch.empty(n, n, device=device)
    return Stream("gemm", lambda: torch.mm(a, b, out=c))


def gemv_stream(megabytes: float, width: int = 1024, device: str = "cpu", seed: int = 1) -> Stream:
    """Memory-bound: o = K q over a float32 K of ``megabytes`` (2 FLOPs per 4 bytes read)."""
    rows = max(1, int(megabytes * 2**20 / (4 * width)))
    g = torch.Generator().manual_seed(seed)
    kv, q = torch.randn(rows, width, generator=g).to(device), torch.randn(width, generator=g).to(device)
    out = torch.empty(rows, device=device)
    return Stream("gemv", lambda: torch.mv(kv, q, out=out))


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_steps(stream: Stream, reps: int, device: str = "cpu") -> float:
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        stream.step()
    _sync(device)
    return time.perf_counter() - t0


def calibrate(stream: Stream, target_s: float, device: str = "cpu") -> Stream:
    """Set ``reps`` so that the stream alone on one thread lasts about ``target_s`` seconds."""
    stream.step()  # warm-up
    one = min(time_steps(stream, 1, device) for _ in range(3))
    stream.reps = max(1, round(target_s / max(one, 1e-9)))
    return stream


def _run(stream: Stream, t0: float, log: list, chunks: int, device: str) -> None:
    """Run the stream's reps, logging (stream, start, end) of ``chunks`` groups of reps."""
    bounds = [round(i * stream.reps / chunks) for i in range(chunks + 1)]
    for lo, hi in zip(bounds, bounds[1:]):
        if hi > lo:
            start = time.perf_counter() - t0
            for _ in range(hi - lo):
                stream.step()
            _sync(device)
            log.append((stream.name, start, time.perf_counter() - t0))


def sequential(streams: list[Stream], threads: int, device: str = "cpu", chunks: int = 10):
    """Seconds of the streams one after the other, torch on ``threads`` threads; and the timeline."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        log: list = []
        _sync(device)
        t0 = time.perf_counter()
        for s in streams:
            _run(s, t0, log, chunks, device)
        return time.perf_counter() - t0, log
    finally:
        torch.set_num_threads(before)


def concurrent(streams: list[Stream], device: str = "cpu", chunks: int = 10):
    """Seconds of the streams at the same time, one Python thread (one torch thread, or one CUDA
    stream) each, started together; and the timeline."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    log: list = []
    barrier = threading.Barrier(len(streams) + 1)
    cuda = [torch.cuda.Stream() for _ in streams] if device.startswith("cuda") else [None] * len(streams)

    def work(s, cs):
        barrier.wait()
        if cs is None:
            _run(s, t0, log, chunks, device)
        else:
            with torch.cuda.stream(cs):
                _run(s, t0, log, chunks, device)

    try:
        workers = [threading.Thread(target=work, args=(s, cs)) for s, cs in zip(streams, cuda)]
        for w in workers:
            w.start()
        _sync(device)
        t0 = time.perf_counter()
        barrier.wait()
        for w in workers:
            w.join()
        _sync(device)
        return time.perf_counter() - t0, log
    finally:
        torch.set_num_threads(before)


def experiment(streams: list[Stream], threads: int, repeats: int, device: str = "cpu", chunks: int = 10) -> dict:
    """The three modes interleaved ``repeats`` times; medians, ratios, the load average around it,
    and the timelines of the last repeat."""
    load_before = os.getloadavg()[0]
    times: dict[str, list[float]] = {"sequential_1": [], "sequential_all": [], "concurrent": []}
    timelines: dict[str, list] = {}
    for _ in range(repeats):
        for mode, fn in (("sequential_1", lambda: sequential(streams, 1, device, chunks)),
                         ("sequential_all", lambda: sequential(streams, threads, device, chunks)),
                         ("concurrent", lambda: concurrent(streams, device, chunks))):
            seconds, log = fn()
            times[mode].append(seconds)
            timelines[mode] = log
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"seconds": med, "all": times, "timelines": timelines,
            "overlap_ratio": med["concurrent"] / med["sequential_all"],
            "overlap_ratio_vs_1": med["concurrent"] / med["sequential_1"],
            "load_before": load_before, "load_after": os.getloadavg()[0]}
