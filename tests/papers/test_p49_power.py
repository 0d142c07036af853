"""Paper 49 (POLCA): the power model, clock caps on the step model, the row's power accounting."""

import numpy as np
import pytest

from paper49 import power as P
from paper49 import row as R
from shared import servesim as S

H100 = S.DEVICES["H100-SXM"]
SERVER = S.DeviceSpec("8xH100", H100.flops * 8, H100.bandwidth * 8, H100.memory * 8, H100.tdp_w)
STEP = S.StepModel(S.LLAMA2_70B, SERVER)
POWER = P.GpuPower(tdp_w=700.0, idle_frac=0.1, u_prefill=1.0, u_decode=0.45, gamma=2.5)


def test_prefill_above_decode_above_idle():
    u_prefill = POWER.activity(STEP, 1024, 0)  # one 1,024-token prompt: compute-bound
    u_decode = POWER.activity(STEP, 8, 8 * 1024)  # 8 sequences decoding: memory-bound
    assert u_prefill == pytest.approx(1.0)
    assert POWER.u_decode < u_decode < 0.6
    p_prefill, p_decode = POWER.watts(u_prefill), POWER.watts(u_decode)
    assert p_prefill == pytest.approx(700.0) and POWER.idle_w < p_decode < p_prefill
    assert POWER.idle_w == pytest.approx(70.0)
    # a bigger decode batch is more compute-intensive: more power, still below prefill
    assert u_decode < POWER.activity(STEP, 256, 256 * 1024) < 1.0


def test_power_formula_and_cap_lower_power():
    assert POWER.watts(0.5, 0.6) == pytest.approx(70 + 630 * 0.5 * 0.6**2.5)
    f = np.array([1.0, 0.8, 0.6, 0.5])
    watts = POWER.watts(1.0, f)
    assert np.all(np.diff(watts) < 0) and watts[-1] > POWER.idle_w
    assert POWER.u_of_tdp_frac(0.95) == pytest.approx(0.85 / 0.9)
    with pytest.raises(ValueError, match="outside"):
        POWER.u_of_tdp_frac(0.05)
    with pytest.raises(ValueError, match="u_decode"):
        P.GpuPower(u_prefill=0.4, u_decode=0.5)


def test_cap_slows_prefill_by_one_over_f_and_decode_much_less():
    capped = P.capped(STEP, 0.6, beta=0.3)
    prefill = capped.seconds(4096, 4096 * 4097 // 2, 0, 0) / STEP.seconds(4096, 4096 * 4097 // 2, 0, 0)
    decode = capped.seconds(0, 0, 4, 4 * 512) / STEP.seconds(0, 0, 4, 4 * 512)
    assert prefill == pytest.approx(1 / 0.6, rel=1e-6)  # compute-bound: exactly 1/f (no overhead)
    assert decode == pytest.approx(0.6**-0.3, rel=1e-6)  # memory-bound: f**-beta
    assert STEP.device.flops == SERVER.flops  # the original is untouched
    with pytest.raises(ValueError, match="f must be in"):
        P.capped(STEP, 0.0, 0.3)


def test_capped_step_reads_the_current_cap():
    wrapper = P.CappedStep(STEP, beta=0.3)
    base = wrapper.seconds(2048, 2048 * 2049 // 2, 0, 0)
    wrapper.f = 0.5
    assert wrapper.seconds(2048, 2048 * 2049 // 2, 0, 0) == pytest.approx(2 * base)
    wrapper.f = 1.0
    assert wrapper.seconds(2048, 2048 * 2049 // 2, 0, 0) == base


def test_spread_conserves_energy_across_ticks():
    start, end = np.array([0.1, 0.9, 2.4]), np.array([0.3, 2.2, 2.5])
    watts = np.array([10.0, 5.0, 2.0])
    bins = R._spread(np.zeros(2), start, end, watts, tau=1.0)  # grows as needed
    assert bins[:3] == pytest.approx([10 * 0.2 + 5 * 0.1, 5 * 1.0, 5 * 0.2 + 2 * 0.1])
    assert bins.sum() == pytest.approx((watts * (end - start)).sum())


def test_row_energy_equals_the_per_server_simulations():
    """With unlimited power the row is its servers side by side: its energy above idle equals that
    of servesim.simulate run on each server's requests, and its TTFTs are theirs."""
    row = R.Row(STEP, S.EngineConfig(kv_tokens=STEP.kv_capacity_tokens()), POWER, tick_s=0.5)
    trace = S.Trace.synthetic(300, rate=12.0, prompt_mean=800, output_mean=60, seed=1)
    low = np.random.default_rng(0).random(len(trace)) < 0.5
    out = R.simulate_row(row, trace, low, 2, 2 * row.server_peak_w(), "unlimited", P.ControlConfig(), 0.5)
    energy, ttft = 0.0, np.full(len(trace), np.nan)
    for ids in (np.flatnonzero(low), np.flatnonzero(~low)):
        sub = S.Trace(trace.arrival_s[ids], trace.prompt[ids], trace.output[ids])
        res = S.simulate(sub, STEP, row.engine, S.Aggressive(), record_steps=True)
        u = POWER.activity(STEP, res.steps["prefill_tokens"] + res.steps["decode_seqs"], res.steps["kv_tokens"])
        energy += float((8 * (POWER.watts(u) - POWER.idle_w) * res.steps["dt"]).sum())
        ttft[ids] = res.ttft
    idle = 2 * row.server_idle_w() * len(out["watts"]) * row.tick_s
    assert out["watts"].sum() * row.tick_s == pytest.approx(energy + idle, rel=1e-9)
    np.testing.assert_allclose(out["ttft"], ttft, rtol=1e-12)
    assert out["brakes"] == 0 and np.all(out["f_low"] == 1) and np.all(out["f_high"] == 1)


def test_row_trace_rate_diurnal_and_priorities():
    base = S.Trace.synthetic(5000, rate=2.0, prompt_mean=500, output_mean=50, seed=0)
    trace, low = R.row_trace(base, 100.0, 60.0, 0.4, 1.0, 0.3, 4096, seed=0)
    expected = 100.0 * 60.0 * (0.4 + 0.6 * 0.5)  # the envelope's mean is trough + (1 - trough) / 2
    assert abs(len(trace) - expected) < 4 * np.sqrt(expected)
    mid = np.sum((trace.arrival_s > 25) & (trace.arrival_s < 35))
    edge = np.sum(trace.arrival_s < 10)
    assert mid > 1.5 * edge  # the peak is in the middle of the day
    assert abs(low.mean() - 0.3) < 0.05 and trace.prompt.max() <= 4096
    again, low2 = R.row_trace(base, 100.0, 60.0, 0.4, 1.0, 0.3, 4096, seed=0)
    assert np.array_equal(again.arrival_s, trace.arrival_s) and np.array_equal(low, low2)
