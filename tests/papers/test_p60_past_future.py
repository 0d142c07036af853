"""Paper 60 (Past-Future scheduler): workload builders, capacity, SLA, queueing delay, the
recorded peak-estimate accuracy, the claims' summary, and the config."""

import numpy as np
import pandas as pd
import pytest
import yaml

from paper60 import config, sweep
from paper60 import workloads as W
from shared import servesim as S
from shared.paths import CONF

STEP = S.StepModel(S.LLAMA2_7B, S.DEVICES["A100-80GB"])
ENGINE = S.EngineConfig(kv_tokens=8000, max_batch=64, max_new_tokens=600)


def test_workloads_have_their_shapes():
    kw = {"max_prompt": 3000, "max_output": 600}
    conv, code = W.build("conv", 800, 0, **kw), W.build("code", 800, 0, **kw)
    assert np.median(code.prompt) > np.median(conv.prompt) and np.median(code.output) < np.median(conv.output)
    share = W.build("sharegpt", 4000, 0, **kw)
    assert abs(share.prompt.mean() / 161 - 1) < 0.15 and share.output.max() <= 600 and share.prompt.min() >= 1
    bi = W.build("bimodal", 4000, 0, bimodal=(256, 32, 500, 0.25), **kw)
    assert abs((bi.output > 200).mean() - 0.25) < 0.03  # the two modes are apart
    assert np.array_equal(W.build("conv", 50, 3, **kw).output, W.build("conv", 50, 3, **kw).output)  # seeded
    with pytest.raises(ValueError, match="name='chat'"):
        W.build("chat", 10, 0, **kw)


def test_capacity_is_the_steady_finish_rate():
    n = 101
    trace = S.Trace(np.zeros(n), np.ones(n, int), np.ones(n, int))
    result = S.Result(trace, np.arange(n) * 0.5, 2.0 + np.arange(n) * 0.25, np.zeros(n, int))
    assert W.capacity_rps(result) == pytest.approx(4.0)
    with pytest.raises(ValueError, match="too few requests"):
        W.capacity_rps(S.Result(trace.head(2), np.zeros(2), np.zeros(2), np.zeros(2, int)))


def test_sla_from_the_step_log_and_queueing_delay():
    # conservative with room for one request at a time: the second waits for the first to finish
    engine = S.EngineConfig(kv_tokens=1000, max_batch=8, max_new_tokens=600)
    trace = S.Trace(np.array([0.0, 0.0]), np.array([100, 100]), np.array([20, 20]))
    result = S.simulate(trace, STEP, engine, S.Conservative(), record_steps=True)
    wait = result.queueing
    assert wait[0] == 0 and wait[1] == pytest.approx(result.finish_s[0])
    slo, times = W.sla(result, STEP, 5.0, 1.5)
    dt, prefill = result.steps["dt"], result.steps["prefill_tokens"]
    assert times["t_prefill_s"] == np.median(dt[prefill > 0]) and times["t_iter_s"] == np.median(dt)
    assert slo.tpot_s == 1.5 * np.median(dt) and slo.t_iter_s == np.median(dt)


def test_ttft_bound_scales_with_the_prompt():
    sla = W.Sla(STEP, 5.0, t_iter_s=0.02, tpot_s=0.05)
    lone = lambda p: float(STEP.seconds(p, p * (p + 1) / 2, 0, 0))  # noqa: E731
    assert sla.ttft_limit([100])[0] == pytest.approx(5 * (0.02 + lone(100)))
    short, long = sla.ttft_limit([100, 4000])
    assert long - short == pytest.approx(5 * (lone(4000) - lone(100))) and long > 3 * short
    # a 4,000-token prompt served alone meets its bound; under the old fixed bound (5 x a
    # 100-token prefill iteration) it would fail at any load
    trace = S.Trace(np.array([0.0, 0.0]), np.array([100, 4000]), np.array([11, 11]))
    first = np.array([lone(100) + 0.01, lone(4000) + 0.01])
    result = S.Result(trace, first, first + 10 * 0.04, np.zeros(2, int))
    assert sla.meets(result).tolist() == [True, True] and 5 * lone(100) < result.ttft[1]
    assert sla.goodput_rps(result) == pytest.approx(2 / float(result.finish_s.max()))
    slow = S.Result(trace, first, first + 10 * 0.06, np.zeros(2, int))  # TPOT 60 ms > 50 ms
    assert sla.meets(slow).tolist() == [False, False]


def test_engine_runs_prefill_only_iterations_by_default():
    base = yaml.safe_load((CONF / "p60" / "base.yaml").read_text())
    engine = sweep.engine_for(config.Params(**base), STEP)
    assert engine.mixed is False  # the paper's systems (vLLM v0, LightLLM) stall decodes for a prefill
    assert sweep.engine_for(config.Params(**{**base, "mixed": True}), STEP).mixed is True


def test_recording_sampled_policy_decides_as_the_shared_one():
    trace = S.Trace.synthetic(300, rate=40.0, prompt_mean=200, output_mean=80, sigma=0.8, max_len=600, seed=1)
    rec = W.RecordingPastFutureSampled(seed=3, min_history=5)
    a = S.simulate(trace, STEP, ENGINE, rec)
    b = S.simulate(trace, STEP, ENGINE, S.PastFutureSampled(seed=3))
    np.testing.assert_array_equal(a.finish_s, b.finish_s)
    err = rec.peak_errors()
    assert len(err) > 0 and np.isfinite(err).all() and (err > -1).all()
    assert isinstance(sweep.policy("pastfuture_sampled", 0.9, 1000, 20, seed=3), W.RecordingPastFutureSampled)


def test_recording_past_future_decides_as_past_future_and_is_exact_on_constant_lengths():
    trace = S.Trace.synthetic(300, rate=40.0, prompt_mean=200, output_mean=80, sigma=0.8, max_len=600, seed=1)
    rec = W.RecordingPastFuture(min_history=5)
    a = S.simulate(trace, STEP, ENGINE, rec)
    b = S.simulate(trace, STEP, ENGINE, S.PastFuture(min_history=5))
    np.testing.assert_array_equal(a.finish_s, b.finish_s)
    assert len(rec.records) > 0 and (rec.peak_errors() > -1).all()
    # every output 50 tokens: the history's conditional quantile is the truth, the estimate exact
    same = S.Trace(trace.arrival_s, trace.prompt, np.full(len(trace), 50))
    exact = W.RecordingPastFuture(min_history=5)
    S.simulate(same, STEP, ENGINE, exact)
    assert len(exact.records) > 0 and np.abs(exact.peak_errors()).max() == 0


def test_summary_of_a_hand_table():
    rows = []
    for w, goods in (("a", {"aggressive": 1.0, "conservative": 0.5, "pastfuture": 2.0, "pastfuture_sampled": 3.0,
                            "oracle": 2.0}),
                     ("b", {"aggressive": 1.0, "conservative": 1.0, "pastfuture": 1.2, "pastfuture_sampled": 0.9,
                            "oracle": 1.5})):
        for load, scale_by in ((0.5, None), (1.0, 1.0)):
            for pol, g in goods.items():
                rows.append({"workload": w, "seed": 0, "load": load, "policy": pol,
                             "goodput_rps": 1.0 if scale_by is None else g, "preemptions": 10 if pol == "aggressive" else 1,
                             "queue_mean_s": 4.0 if pol == "conservative" else 1.0})
    s = sweep.summarise(pd.DataFrame(rows), heavy=0.9, light=0.5)
    assert s["pf_vs_baselines_max"] == 2.0 and s["pf_vs_baselines_workloads_over_factor"] == 1
    assert s["pf_vs_oracle_min_heavy"] == pytest.approx(0.8) and s["pf_preemptions_vs_aggressive_heavy"] == 0.1
    assert s["pf_queue_vs_conservative_heavy"] == 0.25 and s["light_load_goodput_spread"] == 0.0
    t = sweep.summarise(pd.DataFrame(rows), heavy=0.9, light=0.5, pf="pastfuture_sampled", prefix="pfs")
    assert t["pfs_vs_baselines_max"] == 3.0 and t["pfs_vs_baselines_b"] == pytest.approx(0.9)
    assert t["pfs_vs_oracle_min_heavy"] == pytest.approx(0.6) and not any(k.startswith("pf_") for k in t)


def test_every_scale_validates_and_a_bad_value_names_its_key():
    base = yaml.safe_load((CONF / "p60" / "base.yaml").read_text())
    for scale in ("smoke", "cpu", "gpu"):
        over = yaml.safe_load((CONF / "p60" / f"{scale}.yaml").read_text())
        over.pop("defaults")
        config.Params(**{**base, **over})
    for key, value in (("light_load", 0.6), ("device", "B200"), ("past_quantile", 1.0), ("workloads", ["chat"])):
        with pytest.raises(ValueError, match=key):
            config.Params(**{**base, key: value})
    with pytest.raises(ValueError, match="kv_tokens: 1000"):
        sweep.engine_for(config.Params(**{**base, "kv_tokens": 1000}), STEP)


def test_ratios_over_zero_stay_finite():
    assert sweep.ratio(0.0, 0.0) == 1.0 and sweep.ratio(2.0, 0.0) == sweep.UNBOUNDED and sweep.ratio(1.0, 4.0) == 0.25
    s = sweep.ratio(pd.Series([1.0, 0.0], index=["x", "y"]), pd.Series([0.0, 0.0], index=["x", "y"]))
    assert list(s.index) == ["x", "y"] and list(s) == [sweep.UNBOUNDED, 1.0]
