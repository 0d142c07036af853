"""Paper 46 (NanoFlow): the cost model's arithmetic, the pipeline model, the search, the overlap harness."""

import math

import pytest
import yaml

from paper46 import config, costmodel as C, overlap as O, pipeline as P
from shared import servesim as S
from shared.distributed import Link
from shared.paths import CONF

pytestmark = pytest.mark.usefixtures("one_thread")

A100 = S.DEVICES["A100-80GB"]
NVLINK = Link(300e9, 0.0)
GEMV = P.Interference(((0.1, 0.25), (0.2, 0.4), (0.3, 0.5), (0.4, 0.6), (0.5, 0.7), (0.6, 0.8), (0.7, 0.85), (0.8, 0.9), (0.9, 0.95)), "gemv")
NET = P.Interference(((0.1, 0.4), (0.2, 0.6), (0.3, 0.7), (0.4, 0.8), (0.5, 0.9)), "net")
CURVES = {"compute": P.Interference(), "memory": GEMV, "network": NET}


def test_optimal_bound_by_hand():
    m = C.MODELS["llama2-70b"]
    assert C.optimal_throughput(m, A100) == pytest.approx(8 * 312e12 / (2 * 69.0e9))  # 18,087 tok/s
    assert 17.8e3 * 0.95 <= C.optimal_throughput(m, A100) <= 17.8e3 * 1.05
    mix = C.MODELS["mixtral-8x7b"]  # MoE: compute counts the active parameters
    assert C.optimal_throughput(mix, A100) == pytest.approx(8 * 312e12 / (2 * 12.9e9))


def test_iteration_costs_by_hand():
    m, w = C.MODELS["llama2-70b"], C.Workload(1024, 512, 2048)
    prefill, pairs, decode, context = w.mix()
    assert decode == pytest.approx(2048 / 3) and prefill == pytest.approx(2048 * 2 / 3)
    assert pairs == pytest.approx(prefill * 1025 / 2) and context == pytest.approx(decode * 1280)
    c = C.iteration_costs(m, w, A100, NVLINK)
    flops = 2 * 69.0e9 * 2048 + 4 * 80 * 8192 * (pairs + context)
    assert c["t_comp"] == pytest.approx(flops / (8 * 312e12))
    kv_per_token = 2 * 80 * 1024 * 2
    assert c["t_weights"] == pytest.approx(69.0e9 * 2 / (8 * 2.039e12))
    assert c["t_kv"] == pytest.approx(kv_per_token * (context + 2048) / (8 * 2.039e12))
    # two ring all-reduces per layer of 2048 x 8192 bf16 activations: 2 (8-1)/8 of the bytes each
    assert c["t_net"] == pytest.approx(80 * 2 * 2 * 7 / 8 * 2048 * 8192 * 2 / 300e9)
    assert C.bound_by(c) == "compute" and c["kv_fits"]
    assert C.bound_by({"t_comp": 1, "t_mem": 3, "t_net": 2}) == "memory"


def test_fitting_batch_caps_by_kv_memory():
    m = C.MODELS["llama3-8b"]  # one A100: 2048 dense tokens of 1024/512 do not fit
    fit = C.fitting_batch(m, C.Workload(1024, 512, 2048), A100, step=128)
    assert fit.dense_batch % 128 == 0 and fit.dense_batch < 2048
    assert C.iteration_costs(m, fit, A100, NVLINK)["kv_fits"]
    bigger = C.Workload(1024, 512, fit.dense_batch + 128)
    assert not C.iteration_costs(m, bigger, A100, NVLINK)["kv_fits"]


def test_interference_curve():
    assert GEMV(0.1) == 0.25 and GEMV(0.15) == pytest.approx(0.325) and GEMV(1.0) == 1.0
    assert GEMV(0.05) == pytest.approx(0.125)  # linear to (0, 0)
    assert P.Interference()(0.3) == pytest.approx(0.3)
    assert P.share_needed(GEMV, 0.4) == pytest.approx(0.2, abs=1e-9)
    with pytest.raises(ValueError, match="R must increase"):
        P.Interference(((0.5, 0.5), (0.2, 0.6)), "bad")


def test_simulate_flow_shop_by_hand():
    # two jobs of (compute 2, memory 1): the second job's compute waits for the first
    chains = [[("compute", 2.0), ("memory", 1.0)]] * 2
    for rule in P.RULES:
        span, sched = P.simulate(chains, rule, record=True)
        assert span == pytest.approx(5.0)
        assert len(sched) == 4 and (sched["end"] >= sched["start"]).all()
    assert P.simulate([[("compute", 1.0), ("network", 2.0), ("compute", 1.0)]]) == pytest.approx(4.0)
    with pytest.raises(ValueError, match="rule"):
        P.simulate(chains, "random")


def test_extrapolated_iteration_equals_full_simulation():
    m, w = C.MODELS["llama2-70b"], C.Workload(1024, 512, 2048)
    costs = C.iteration_costs(m, w, A100, NVLINK)
    speed = {"compute": 0.8, "memory": GEMV(0.1), "network": NET(0.1)}
    layer = P.layer_chain(m, costs, w, P.Efficiency(), NVLINK, 2, speed)
    for rule in P.RULES:
        full = P.simulate([layer * 80] * 2, rule)
        assert P.iteration_seconds(layer, 2, 80, 8, rule) == pytest.approx(full, rel=1e-6)


def test_sequential_is_the_sum_of_operations():
    m, w = C.MODELS["llama2-70b"], C.Workload(1024, 512, 2048)
    costs = C.iteration_costs(m, w, A100, NVLINK)
    eff = P.Efficiency(1.0, 0.0, 1.0, 1.0)  # the ideal roofline
    layer = P.layer_chain(m, costs, w, eff, NVLINK, 1, dict.fromkeys(P.RESOURCES, 1.0))
    assert P.iteration_seconds(layer, 1, 80) == pytest.approx(costs["t_comp"] + costs["t_kv"] + costs["t_net"])


def test_search_returns_the_best_of_a_tiny_grid():
    m, w = C.MODELS["llama2-70b"], C.Workload(1024, 512, 2048)
    costs = C.iteration_costs(m, w, A100, NVLINK)
    eff = P.Efficiency()
    table = P.search(m, costs, w, eff, NVLINK, CURVES, [1, 2], 1 / 3, sim_layers=4)
    assert len(table) == 1 + 1  # k = 1 sequential, k = 2 at the only split (1/3, 1/3, 1/3)
    # brute force over the same grid
    brute = []
    for k, sh in [(1, P.SEQUENTIAL), (2, P.Shares(1 / 3, 1 / 3, 1 / 3))]:
        speed = {r: CURVES[r](getattr(sh, r)) for r in P.RESOURCES}
        layer = P.layer_chain(m, costs, w, eff, NVLINK, k, speed)
        brute.append(min(P.iteration_seconds(layer, k, 80, 4, rule) for rule in P.RULES))
    assert table["seconds"].iloc[0] == pytest.approx(min(brute))
    top = P.best(table)
    assert top["speedup"] == pytest.approx(brute[0] / min(brute))
    assert len(P.share_grid(0.1)) == 36 and all(abs(s.compute + s.memory + s.network - 1) < 1e-9 for s in P.share_grid(0.1))
    with pytest.raises(ValueError, match="k = 1"):
        P.best(table[table["k"] == 2])


def test_overlap_bound():
    # at T = 2.5: compute needs R = 1.75/2.5 = 0.7, memory P = 0.4 -> R = 0.2, network P = 0.4 -> R = 0.1: sum 1
    times = {"compute": 1.75, "memory": 1.0, "network": 1.0}
    t = P.overlap_bound(times, CURVES)
    shares = sum(P.share_needed(CURVES[r], v / t) for r, v in times.items())
    assert shares == pytest.approx(1.0, abs=1e-6) and max(times.values()) <= t <= sum(times.values())
    assert t == pytest.approx(2.5, rel=1e-6)


def test_overlap_harness_runs_and_logs():
    streams = [O.gemm_stream(32), O.gemv_stream(0.25)]
    for s in streams:
        s.reps = 3
    res = O.experiment(streams, threads=1, repeats=1)
    assert set(res["seconds"]) == {"sequential_1", "sequential_all", "concurrent"}
    assert res["overlap_ratio"] > 0 and {name for name, *_ in res["timelines"]["concurrent"]} == {"gemm", "gemv"}
    assert O.calibrate(O.gemm_stream(16), 0.001).reps >= 1


def test_params_match_config_and_reject_bad_values():
    base = yaml.safe_load((CONF / "p46" / "base.yaml").read_text())
    assert set(base) == set(config.Params.model_fields)
    params = config.Params(**base)
    assert params.models[0] == "llama2-70b"
    with pytest.raises(ValueError, match="models"):
        config.Params(**{**base, "models": ["gpt-5"]})
    with pytest.raises(ValueError, match="nano_counts"):
        config.Params(**{**base, "nano_counts": [2, 4]})
    with pytest.raises(ValueError, match="gemv_interference"):
        config.Params(**{**base, "gemv_interference": [[0.5, 0.5], [0.2, 0.6]]})
    assert math.isclose(sum(1 for _ in P.share_grid(params.share_step)), 171)
