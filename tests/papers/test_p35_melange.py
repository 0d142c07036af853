"""Paper 35 (Mélange): the ILP (hand-solvable instances, the authors' example), Mélange <= every
single type, the profiler's SLO search, TP instances, workload buckets, config errors."""

import json
from pathlib import Path

import numpy as np
import pytest

from paper35 import gpus, profile, solver, workloads

pytestmark = pytest.mark.usefixtures("one_thread")
DATA = Path(__file__).resolve().parents[2] / "papers" / "35-melange" / "data"


def test_hand_solvable_instance():
    # two buckets, two types: cheap type A serves only bucket 0 (2 req/s each), B serves both (10 req/s)
    names, costs = ["A", "B"], np.array([1.0, 3.0])
    tputs = np.array([[2.0, 0.0], [10.0, 10.0]])
    a = solver.solve(np.array([4.0, 5.0]), tputs, costs, names)
    # options: B for all (0.9 of a B -> 1 B = 3), or 2 A + 1 B (5) -> the optimum is one B
    assert a.cost == 3.0 and a.counts == {"A": 0, "B": 1}
    # bucket 0 at 2 req/s and bucket 1 at 9.9: 1 A + 1 B = 4 < 2 B = 6 (B alone would need 1.19 B)
    a = solver.solve(np.array([2.0, 9.9]), tputs, costs, names)
    assert a.cost == 4.0 and a.counts == {"A": 1, "B": 1} and list(a.assignment) == [0, 1]
    only_a = solver.solve(np.array([2.0, 9.9]), tputs, costs, names, allowed=["A"])
    assert not only_a.feasible and only_a.cost == float("inf")


def test_authors_example_config():
    cfg = json.loads((DATA / "example.json").read_text())
    names = list(cfg["gpu_info"])
    costs = np.array([cfg["gpu_info"][n]["cost"] for n in names])
    tputs = np.array([np.ravel(cfg["gpu_info"][n]["tputs"]) for n in names], dtype=float)
    rates = np.ravel(cfg["workload_distribution"]) * cfg["total_request_rate"]
    a = solver.solve(rates, tputs, costs, names, cfg["slice_factor"])
    # by hand: 3 A10G for bucket (0,0) (6 / 2), the rest on one A100 (0.15 + 0.375 + 0.3 = 0.825)
    assert a.counts == {"A10G": 3, "A100-80GB": 1} and abs(a.cost - 6.70) < 1e-9
    best, singles = solver.best_single(rates, tputs, costs, names, 1)
    assert best == "A100-80GB" and abs(singles[best].cost - 7.34) < 1e-9 and a.cost <= singles[best].cost


def test_melange_never_worse_than_any_single_type():
    rng = np.random.default_rng(0)
    names = ["a", "b", "c"]
    for _ in range(20):
        tputs = rng.uniform(0.5, 20, size=(3, 4)) * (rng.random((3, 4)) > 0.2)
        tputs[2] = rng.uniform(0.5, 20, size=4)  # one type serves everything: always feasible
        rates, costs = rng.uniform(0, 10, size=4), rng.uniform(0.5, 8, size=3)
        mel = solver.solve(rates, tputs, costs, names, slice_factor=2)
        best, singles = solver.best_single(rates, tputs, costs, names, slice_factor=2)
        assert mel.feasible and mel.cost <= singles[best].cost + 1e-9
        # the capacity constraint holds: each type's load fits its replicas
        s_bucket = np.repeat(np.flatnonzero(rates > 0), 2)
        load = np.zeros(3)
        for s, j in enumerate(mel.assignment):
            load[j] += rates[s_bucket[s]] / 2 / tputs[j, s_bucket[s]]
        assert all(load[j] <= mel.counts[n] + 1e-6 for j, n in enumerate(names))


def test_solver_errors():
    with pytest.raises(ValueError, match="solve: tputs must be"):
        solver.solve(np.ones(2), np.ones((3, 2)), np.ones(2), ["a", "b"])
    with pytest.raises(ValueError, match="slice_factor must be >= 1"):
        solver.solve(np.ones(2), np.ones((2, 2)), np.ones(2), ["a", "b"], slice_factor=0)


def test_profile_meets_the_slo_and_tighter_slo_gives_less():
    step = gpus.instance("A100", "llama2-7b")
    sweep = profile.batch_sweep(step, (0, 64, 0, 64), 0.12, min_requests=20, growth=2.0)
    assert sweep["tpot_s"].is_monotonic_increasing or sweep["tpot_s"].iloc[-1] > 0.04
    loose, tight = profile.max_throughput(sweep, 0.12), profile.max_throughput(sweep, 0.04)
    assert loose >= tight > 0
    assert profile.max_throughput(sweep, 1e-6) == 0.0  # no batch meets an impossible SLO
    # a bucket longer than the KV cache is not profiled
    assert profile.batch_sweep(gpus.instance("L4", "llama2-7b"), (0, 20000, 0, 64), 0.12).empty


def test_tp_instances():
    assert gpus.min_tp("A100", "llama2-7b", 8192) == 1
    assert gpus.min_tp("A100", "llama2-70b", 8192) == 2 and gpus.min_tp("L4", "llama2-70b", 8192) == 8
    two = gpus.instance("H100", "llama2-70b", 2)
    assert two.device.memory == 2 * gpus.GPUS["H100"].memory
    # TP adds communication on top of the aggregate roofline
    base = gpus.S.StepModel(two.shape, two.device, two.mfu, two.mbu)
    assert two.seconds(0, 0, 8, 8000) > base.seconds(0, 0, 8, 8000)
    with pytest.raises(ValueError, match="instance: gpu='V100' is not one of"):
        gpus.instance("V100", "llama2-7b")


def test_bucket_shares():
    shares = workloads.bucket_shares(np.array([10, 100, 5000]), np.array([5, 300, 9]), [0, 64, 1024], [0, 64, 512])
    assert np.allclose(shares, [1 / 3, 0, 1 / 3, 1 / 3])  # 5000 is clipped into the last input bucket
    short = workloads.sample("short", 2000, 0, (70, 215, 1.0), (3000, 250, 0.4))
    long = workloads.sample("long", 2000, 0, (70, 215, 1.0), (3000, 250, 0.4))
    assert short[0].mean() < 100 < 2500 < long[0].mean()
    with pytest.raises(ValueError, match="workloads.sample name='x' is not allowed"):
        workloads.sample("x", 10, 0, (1, 1, 1), (1, 1, 1))
    with pytest.raises(ValueError, match="input_edges: need >= 2 strictly increasing"):
        profile.buckets([0, 10, 5], [0, 4])


def test_config_errors():
    from paper35 import config
    from shared.config import ParamError, validate_section
    from shared.paths import CONF
    import yaml

    base = yaml.safe_load((CONF / "p35" / "base.yaml").read_text())
    assert set(base) == set(config.Params.model_fields)
    config.Params(**base)
    with pytest.raises(ValueError, match="prices: no price for gpu 'L4'"):
        config.Params(**(base | {"prices": {"A10G": 1.0, "A100": 3.0, "H100": 7.0}}))
    with pytest.raises(ValueError, match="cpu_prices: no price for CPU device"):
        config.Params(**(base | {"cpu_prices": {"1t-float32": 1.0}}))
    with pytest.raises(ValueError, match="cpu_input_edges: need >= 2 strictly increasing"):
        config.Params(**(base | {"cpu_input_edges": [0, 5, 5]}))
    with pytest.raises(ValueError, match="cpu_prices: every price must be > 0"):
        config.Params(**(base | {"cpu_prices": base["cpu_prices"] | {"1t-float32": 0.0}}))
    with pytest.raises(ParamError):
        validate_section(config.Params, base | {"low_rate": 0.1}, "p35")
