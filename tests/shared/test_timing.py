import time

import pytest
import torch

from shared import timing


class FakeClock:
    """A perf_counter that only moves when a timed function says so: exact, load-free timings."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def work(self, seconds):
        return lambda: setattr(self, "now", self.now + seconds)


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(timing.time, "perf_counter", fake)
    return fake


def test_durations_are_measured_and_ordered(clock):
    results = timing.benchmark({"short": clock.work(0.002), "long": clock.work(0.012)}, repeats=5, warmup=1)
    short, long = results["short"], results["long"]
    assert short.median_s == pytest.approx(0.002) and long.median_s == pytest.approx(0.012)
    assert short.q25_s <= short.median_s <= short.q75_s
    assert short.iqr_s == pytest.approx(0.0, abs=1e-12)
    assert len(short.samples_s) == 5


def test_real_sleeps_are_never_measured_shorter_than_they_are():
    # the real clock, lower bounds only: a busy machine can only make a sleep look longer
    result = timing.benchmark({"s": lambda: time.sleep(0.002)}, repeats=3, warmup=0)["s"]
    assert result.median_s >= 0.002


def test_calls_are_interleaved_with_rotating_start_and_warmup_discarded():
    calls: list[str] = []
    fns = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    results = timing.benchmark(fns, repeats=3, warmup=2, number=2)
    # 2 warm-up + 3 timed rounds; each round calls every function `number` times,
    # starting one further along each round
    expected_rounds = [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"], ["a", "b", "c"], ["b", "c", "a"]]
    expected = [name for order in expected_rounds for name in order for _ in range(2)]
    assert calls == expected
    assert all(len(r.samples_s) == 3 for r in results.values())
    assert list(results) == ["a", "b", "c"]


def test_threads_are_pinned_during_the_run_and_restored():
    before = torch.get_num_threads()
    seen: list[int] = []
    timing.benchmark({"f": lambda: seen.append(torch.get_num_threads())}, repeats=2, warmup=0, num_threads=1)
    assert seen == [1, 1]
    assert torch.get_num_threads() == before


def test_number_divides_the_time_per_call(clock):
    # one sample = mean over `number` calls, so 3 ms of work stays 3 ms per call
    result = timing.benchmark({"s": clock.work(0.003)}, repeats=2, warmup=0, number=3)["s"]
    assert result.median_s == pytest.approx(0.003)


def test_row_and_bad_arguments():
    row = timing.benchmark({"f": lambda: None}, repeats=2, warmup=0)["f"].as_row()
    assert set(row) == {"name", "median_s", "q25_s", "q75_s", "iqr_s", "n_samples"}
    assert row["n_samples"] == 2
    with pytest.raises(ValueError):
        timing.benchmark({"f": lambda: None}, repeats=0)
    with pytest.raises(ValueError):
        timing.benchmark({}, repeats=1)
    with pytest.raises(ValueError, match="num_threads"):
        timing.benchmark({"f": lambda: None}, repeats=1, num_threads=0)


@pytest.mark.gpu
def test_cuda_work_is_synchronized():
    # without synchronize we would time only the kernel launch (microseconds)
    a = torch.randn(4096, 4096, device="cuda")
    result = timing.benchmark({"mm": lambda: a @ a}, repeats=3, warmup=1, device="cuda")["mm"]
    assert result.median_s > 1e-4  # 137 GFLOP take well over 0.1 ms on any GPU
