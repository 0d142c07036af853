"""A small, careful wall-clock benchmark for comparing several callables.

What makes a comparison fair on a shared, noisy machine:

- warm-up: the first calls pay for lazy initialisation, allocator growth, kernel selection
  (cuDNN autotuning, oneDNN primitive caches); they are run and thrown away;
- interleaving: the callables are timed round-robin (A B C, B C A, C A B, ...), so that a
  slow phase of the machine (another process, thermal throttling) hits all of them alike
  instead of whichever happened to run during it; the start rotates so none is always first;
- robust statistics: the median and the interquartile range (IQR) of the samples, which one
  descheduled outlier does not move;
- a fixed number of CPU threads (``torch.set_num_threads``) for the whole measurement,
  restored afterwards;
- on CUDA, ``torch.cuda.synchronize()`` before starting and before stopping the clock: kernels
  run asynchronously, and without it we would time only their launch.

Example::

    results = timing.benchmark({"small": f, "large": g}, repeats=20, warmup=3, num_threads=2)
    results["small"].median_s
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Timing:
    name: str
    median_s: float  # median seconds per call
    q25_s: float  # 25th percentile
    q75_s: float  # 75th percentile
    samples_s: tuple[float, ...]  # every timed sample, seconds per call, in the order taken

    @property
    def iqr_s(self) -> float:
        return self.q75_s - self.q25_s

    def as_row(self) -> dict[str, float | str | int]:
        """A flat record for a results table (no raw samples)."""
        return {
            "name": self.name,
            "median_s": self.median_s,
            "q25_s": self.q25_s,
            "q75_s": self.q75_s,
            "iqr_s": self.iqr_s,
            "n_samples": len(self.samples_s),
        }


@contextmanager
def pinned_threads(num_threads: int | None) -> Iterator[None]:
    """Run the body with ``torch.set_num_threads(num_threads)``; None leaves it as is."""
    previous = torch.get_num_threads()
    if num_threads is not None:
        if num_threads < 1:
            raise ValueError(f"num_threads: must be >= 1, got {num_threads}")
        torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def synchronize(device) -> None:
    """Wait for queued CUDA work on ``device`` (a name or torch.device); a no-op on the CPU.
    Every wall-clock measurement in the project brackets its call with this."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_once(fn: Callable[[], object], number: int, device: str) -> float:
    """Seconds per call, averaged over ``number`` back-to-back calls."""
    synchronize(device)
    start = time.perf_counter()
    for _ in range(number):
        fn()
    synchronize(device)
    return (time.perf_counter() - start) / number


def benchmark(
    fns: Mapping[str, Callable[[], object]],
    *,
    repeats: int,
    warmup: int = 1,
    number: int = 1,
    num_threads: int | None = None,
    device: str = "cpu",
    progress: Callable | None = None,
) -> dict[str, Timing]:
    """Time each callable ``repeats`` times, interleaved round-robin, after ``warmup``
    untimed rounds. One sample is the mean of ``number`` back-to-back calls (use
    ``number`` > 1 for calls so short that the clock's resolution matters).

    ``progress`` is an optional tqdm-like wrapper, ``progress(iterable, desc=..., total=...)``.
    Returns {name: Timing}, in the order of ``fns``.
    """
    if not fns:
        raise ValueError("fns: need at least one callable to time")
    if repeats < 1 or warmup < 0 or number < 1:
        raise ValueError(f"need repeats >= 1, warmup >= 0, number >= 1; got {repeats}, {warmup}, {number}")
    names = list(fns)
    samples: dict[str, list[float]] = {name: [] for name in names}
    rounds = range(warmup + repeats)
    if progress is not None:
        rounds = progress(rounds, desc="timing rounds", total=warmup + repeats)
    with pinned_threads(num_threads):
        for round_index in rounds:
            shift = round_index % len(names)
            for name in names[shift:] + names[:shift]:  # rotate the start each round
                seconds = _time_once(fns[name], number, device)
                if round_index >= warmup:
                    samples[name].append(seconds)
    results = {}
    for name in names:
        q25, median, q75 = np.percentile(samples[name], [25, 50, 75])
        results[name] = Timing(name, float(median), float(q25), float(q75), tuple(samples[name]))
    return results
