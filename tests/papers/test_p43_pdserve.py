"""Paper 43 (P/D-Serve): transfer fit, P/D ratio, gateway logic, disaggregated pipeline invariants."""

import math
from collections import deque
from types import SimpleNamespace

import numpy as np
import pytest

from paper43 import kvcopy
from paper43 import pdserve as D
from shared import servesim as S

pytestmark = pytest.mark.usefixtures("one_thread")

STEP = S.StepModel(S.LLAMA2_7B, S.DEVICES["A100-80GB"])
KV = STEP.kv_capacity_tokens()


def test_alpha_beta_fit_recovers_synthetic_timings():
    alpha, beta = 3e-6, 8e9
    tokens = np.array([64, 256, 1024, 4096] * 2)
    contiguous = np.array([False] * 4 + [True] * 4)
    ops = np.array([kvcopy.copy_ops(t, 16, 8, c) for t, c in zip(tokens, contiguous)])
    nbytes = np.array([kvcopy.kv_bytes(t, 8, 8, 64, 2) for t in tokens])
    seconds = alpha * ops + nbytes / beta
    a, b = kvcopy.fit_alpha_beta(ops, nbytes, seconds * (1 + 0.01 * np.cos(np.arange(8))))
    assert abs(a / alpha - 1) < 0.05 and abs(b / beta - 1) < 0.05
    assert kvcopy.copy_ops(512, 16, 8, False) == 256 and kvcopy.copy_ops(17, 16, 8, False) == 16
    assert kvcopy.kv_bytes(512, 8, 8, 64, 2) == 2 * 8 * 8 * 64 * 512 * 2
    with pytest.raises(ValueError, match="at least two timings"):
        kvcopy.fit_alpha_beta([1], [1], [1.0])


def test_measured_copies_move_the_same_bytes():
    t = kvcopy.measure([20, 32], n_layers=2, heads=2, head_dim=8, block_tokens=16, dtype="float16", repeats=1)
    assert list(t["tokens"]) == [32, 32, 32, 32]  # rounded up to whole blocks
    assert t.groupby("tokens")["bytes"].nunique().eq(1).all()
    assert set(t.loc[t["layout"] == "blockwise", "ops"]) == {4} and set(t.loc[t["layout"] == "contiguous", "ops"]) == {1}
    with pytest.raises(ValueError, match="dtype='int8' is not allowed"):
        kvcopy.measure([16, 32], n_layers=1, heads=1, head_dim=1, block_tokens=16, dtype="int8", repeats=1)


def test_transfer_model():
    tx = D.Transfer(1e-5, 1e10, block_tokens=16, contiguous=False)
    shape = S.LLAMA2_7B
    assert math.isclose(float(tx.seconds(32, shape)), 2 * 32 * 1e-5 + 32 * shape.kv_bytes_per_token / 1e10)
    contiguous = D.Transfer(1e-5, 1e10)
    assert math.isclose(float(contiguous.seconds(32, shape)), 1e-5 + 32 * shape.kv_bytes_per_token / 1e10)


def test_ratio_formula_and_split():
    # prefill 0.1 s per request; 100 output tokens at 20 ms per iteration shared by 10 -> 0.2 s per request
    assert math.isclose(D.matched_ratio(0.1, 100, 0.02, 10), 0.5)
    assert D.split(9, 0.5) == (3, 6) and D.split(4, 100.0) == (3, 1) and D.split(4, 1e-3) == (1, 3)
    with pytest.raises(ValueError, match="every argument must be > 0"):
        D.matched_ratio(0.1, 0, 0.02, 10)
    assert D.allocate(8, [3.0, 1.0]) == [5, 3] and sum(D.allocate(9, [1, 1, 1])) == 9
    with pytest.raises(ValueError, match="cannot give 2 groups 2 each"):
        D.allocate(3, [1, 1])
    cfg = S.EngineConfig(kv_tokens=KV)
    b, t = D.decode_batch(STEP, cfg, 1000.0, 0.03)
    assert t <= 0.03 and float(STEP.seconds(0, 0, b + 1, (b + 1) * 1000.0)) > 0.03


def _fake(queue_prompts):
    prompt = np.array(queue_prompts + [100], dtype=np.int64)
    return SimpleNamespace(queue=deque(range(len(queue_prompts))), trace=SimpleNamespace(prompt=prompt),
                           outstanding=lambda n=len(queue_prompts): n)


def test_reject_retry_gateway_on_a_tiny_case():
    busy, idle, medium = _fake([900, 900]), _fake([]), _fake([500])
    trace = SimpleNamespace(prompt=np.array([400]))
    gw = D.RejectRetry(bound_tokens=1000)
    assert not gw.accepts(busy, 400) and gw.accepts(idle, 5000) and gw.accepts(medium, 400)
    assert gw.pick(0, 0.0, [busy, medium, idle], trace) == 1 and gw.rejections == 1
    assert gw.pick(0, 0.0, [busy, medium, idle], trace) == 2  # the rotation starts after the last taker
    assert D.RejectRetry(bound_tokens=100).pick(0, 0.0, [busy, medium], trace) is None  # all reject: wait


def test_stale_reports_herd_until_refreshed():
    engines = [_fake([1, 1]), _fake([])]
    gw = D.StaleReports(interval_s=1.0)
    trace = SimpleNamespace(prompt=np.array([1]))
    assert [gw.pick(0, t, engines, trace) for t in (0.0, 0.1, 0.2, 0.3)] == [1, 1, 0, 1]


def _trace(n=120, rate=30.0, seed=0):
    trace, _ = D.mixed_trace(n, rate, seed, 0.5, 4096, 512)
    return trace


@pytest.mark.parametrize("gateway", [None, D.RejectRetry(2048), D.StaleReports(0.5)])
def test_disaggregated_conserves_requests_and_orders_times(gateway):
    trace = _trace()
    cfg = S.EngineConfig(kv_tokens=KV, max_new_tokens=512)
    dcfg = S.EngineConfig(kv_tokens=KV, max_new_tokens=512, max_prefill_tokens=KV)
    d = D.simulate_disaggregated(trace, STEP, 2, 2, cfg, dcfg, D.Transfer(5e-6, 5e9), gateway)
    r = d.result
    assert len(r.trace) == len(trace) and np.isfinite(r.finish_s).all() and np.isfinite(r.first_token_s).all()
    assert (d.prefill_owner >= 0).all()
    two = trace.output > 1
    assert (d.decode_owner[two] >= 0).all() and (d.decode_owner[~two] == -1).all()
    assert (r.first_token_s > trace.arrival_s).all()
    assert (d.prefill_end_s[two] < d.decode_arrival_s[two]).all()  # the transfer takes time
    assert (d.decode_arrival_s[two] <= d.decode_start_s[two]).all()
    assert (d.decode_start_s[two] < r.finish_s[two]).all()
    assert np.array_equal(r.finish_s[~two], d.prefill_end_s[~two])


def test_decode_engine_skips_the_prefill():
    """One request alone: prefill on the prefill side, then output-1 decode iterations, no second prefill."""
    trace = S.Trace(np.array([0.0]), np.array([1000]), np.array([11]))
    cfg = S.EngineConfig(kv_tokens=KV)
    d = D.simulate_disaggregated(trace, STEP, 1, 1, cfg, S.EngineConfig(kv_tokens=KV, max_prefill_tokens=KV),
                                 D.Transfer(0.0, 1e30), None)
    prefill = float(STEP.seconds(1000, 1000 * 1001 // 2, 0, 0))
    decode = sum(float(STEP.seconds(0, 0, 1, 1000 + g)) for g in range(1, 11))
    assert math.isclose(d.prefill_end_s[0], prefill) and math.isclose(d.result.finish_s[0], prefill + decode)


def test_aggregated_matches_servesim_cluster():
    trace = _trace(80)
    cfg = S.EngineConfig(kv_tokens=KV, max_new_tokens=512)
    ours = D.simulate_aggregated(trace, STEP, 3, cfg)
    ref = S.simulate_cluster(trace, [(STEP, cfg, S.Aggressive())] * 3, "least_outstanding")
    assert math.isclose(float(ours.finish_s.max()), max(float(r.finish_s.max()) for r in ref))
    assert sorted(ours.finish_s.tolist()) == pytest.approx(sorted(np.concatenate([r.finish_s for r in ref]).tolist()))


def test_link_is_a_fixed_sourced_parameter():
    tx = D.link(200, 2e-6)  # 200 Gb/s = 25 GB/s
    assert tx.beta_Bps == 25e9 and tx.contiguous
    assert math.isclose(float(tx.seconds(1024, S.LLAMA2_7B)), 2e-6 + 1024 * S.LLAMA2_7B.kv_bytes_per_token / 25e9)
    with pytest.raises(ValueError, match="gbps must be > 0"):
        D.link(0, 1e-6)


def test_max_rate_bisects_to_the_target():
    rate, probes = D.max_rate(lambda r: 1.0 if r <= 3.7 else 0.5, 1.0, 10.0, 0.9, 30)
    assert rate == pytest.approx(3.7, rel=1e-6) and rate <= 3.7 and len(probes) == 32
    assert D.max_rate(lambda r: 0.0, 1.0, 10.0, 0.9, 5)[0] == 0.0
    assert D.max_rate(lambda r: 1.0, 1.0, 10.0, 0.9, 5) == (10.0, [(1.0, 1.0), (10.0, 1.0)])


def test_aggregated_baseline_stalls_decodes_for_prefills():
    """The paper's aggregated baseline runs prefill-only iterations: with a steady stream of long
    prompts, a running request's decodes wait, so its TPOT is worse than with mixed iterations."""
    n = 30
    trace = S.Trace(np.arange(n) * 0.05, np.full(n, 3000), np.full(n, 40))
    cfg = S.EngineConfig(kv_tokens=KV, max_new_tokens=512)
    setup = D.Setup(STEP, 2, {"code": (1, 1), "conv": (1, 1)}, cfg, cfg, cfg, D.link(200, 0.0), S.SLO(tpot_s=0.03))
    is_code = np.zeros(n, bool)
    stalled = D.simulate_aggregated(trace, STEP, 2, S.EngineConfig(kv_tokens=KV, max_new_tokens=512, mixed=False))
    mixed = D.simulate_aggregated(trace, STEP, 2, cfg)
    assert stalled.tpot.mean() > mixed.tpot.mean()
    ok, _ = D.serve("aggregated", 0, trace, is_code, setup)  # setup.agg_cfg is mixed=True here:
    np.testing.assert_array_equal(ok, stalled.meets(setup.slo))  # "aggregated" forces mixed=False
    ok_mixed, _ = D.serve("aggregated-mixed", 0, trace, is_code, setup)
    np.testing.assert_array_equal(ok_mixed, mixed.meets(setup.slo))
    g1, _ = D.serve("global", 1, trace, is_code, setup)
    g2, _ = D.serve("global", 1, trace, is_code, setup)
    np.testing.assert_array_equal(g1, g2)  # deterministic: no measured timing in the simulated pools
    with pytest.raises(ValueError, match="config='mixed'"):
        D.serve("mixed", 0, trace, is_code, setup)
