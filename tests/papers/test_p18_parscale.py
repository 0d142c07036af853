"""Paper 18 (ParScale): the published refit, our-runs analysis, equal-loss widening, cost table."""

import json
import math
import re

import pandas as pd
import pytest
import torch
import yaml

from paper18 import config, cost, law
from shared import zoo
from shared.paths import CONF

pytestmark = pytest.mark.usefixtures("one_thread")


def test_published_points_are_the_48_runs():
    points = law.published_points()
    assert len(points) == 48 and set(points["P"]) == {1, 2, 4, 8}
    assert points.groupby("dataset").size().to_dict() == {"pile": 24, "stack": 24}
    # N grows with P (prefixes and aggregation counted), loss falls with P at every size
    for _, g in points.groupby(["dataset", "size_label"]):
        g = g.sort_values("P")
        assert g["N"].is_monotonic_increasing and g["loss"].is_monotonic_decreasing


def test_refit_recovers_the_papers_k_and_r2():
    points = law.published_points()
    stack = points[points["dataset"] == "stack"]
    fitted = law.fit_law(stack, starts=8)
    assert abs(fitted.values["k"] - 0.39) < 0.01 and fitted.r2 > 0.997


def test_multiplier():
    assert law.multiplier(0.39, 1) == 1.0
    assert math.isclose(law.multiplier(0.39, 8), 1 + 0.39 * math.log(8))


def test_our_runs_analysis_on_a_synthetic_grid():
    truth = {"a": 10.0, "k": 0.4, "alpha": 0.3, "E": 2.0}
    rows = []
    for model, n in (("s", 1e5), ("m", 3e5), ("l", 1e6)):
        for P in (1, 2, 4, 8):
            loss = (math.exp(truth["a"]) / (n * (truth["k"] * math.log(P) + 1))) ** truth["alpha"] + truth["E"]
            rows.append({"model": model, "streams": P, "nonembedding_params": n, "val_loss": loss})
    points = law.runs_points(pd.DataFrame(rows))
    gains = law.gains_by_model(points)
    assert gains["monotone"].all() and (gains.loc[gains["P"] == 4, "gain_vs_p1"] > 0).all()
    fitted = law.fit_law(points, starts=16)
    assert abs(fitted.values["k"] - 0.4) < 0.02
    with pytest.raises(ValueError, match="runs: missing columns"):
        law.runs_points(pd.DataFrame(rows).drop(columns="val_loss"))


def test_a_non_monotone_model_is_flagged():
    points = pd.DataFrame({"model": ["a"] * 3, "P": [1.0, 2.0, 4.0], "N": [1.0] * 3, "loss": [3.0, 3.1, 2.9]})
    assert not law.gains_by_model(points)["monotone"].any()


def test_widen_hits_the_target_parameter_count():
    spec = zoo.ModelSpec(attention="gqa", vocab_size=1000, d_model=128, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=352,
                         max_seq_len=64)
    n = zoo.param_counts(spec)["non_embedding"]
    wide = law.widen(spec, 1.8 * n)
    assert wide.n_layers == spec.n_layers and wide.d_model > spec.d_model
    assert abs(zoo.param_counts(wide)["non_embedding"] / n - 1.8) < 0.1
    # the widest searched model (8 x d_model) is reached exactly, not refused
    widest_spec = zoo.ModelSpec(**(spec.model_dump() | {"d_model": 8 * 128, "d_ff": 8 * 352}))
    widest = zoo.param_counts(widest_spec)["non_embedding"]
    assert law.widen(spec, widest).d_model == 8 * 128
    # beyond it: one clear error, not the widest model in silence
    target = 1.01 * widest
    message = (f"widen: target {target:.4g} non-embedding parameters is beyond the search range "
               f"{n:.4g} to {widest:.4g} (d_model 128 to 1024)")
    with pytest.raises(ValueError, match=re.escape(message)):
        law.widen(spec, target)


def test_cost_table_and_increases():
    spec = zoo.ModelSpec(attention="gqa", vocab_size=256, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=64,
                         max_seq_len=64)
    table = cost.cost_table(spec, [2], 4, 0.39, prompt_len=6, new_tokens=3, repeats=1, warmup=0, device="cpu",
                            dtype="float32", seed=0)
    assert list(table["kind"]) == ["base", "parscale", "param-scaled"]
    base, par = table.iloc[0], table.iloc[1]
    # P streams: one set of weights (+ prefixes, MLP), P KV caches (+ the prefix in each)
    per_token = zoo.kv_cache_bytes_per_token(spec, bytes_per_value=4)
    assert base["kv_cache_bytes"] == per_token * (6 + 3 - 1)
    assert par["kv_cache_bytes"] == 2 * per_token * (4 + 6 + 3 - 1)
    inc = cost.increases(table)
    assert inc.loc[0, "memory_bytes_increase_parscale"] == par["memory_bytes"] - base["memory_bytes"]
    assert torch.get_num_threads() == 1


def test_a_nan_timing_is_logged_as_missing_with_a_warning(capsys, tmp_path):
    out = cost.ledger_timings({"cost_latency_increase_ratio": float("nan"), "cost_latency_increase_param_s": 0.0025134})
    assert out == {"cost_latency_increase_ratio": None, "cost_latency_increase_param_s": 0.00251}
    assert "warning: cost_latency_increase_ratio is nan" in capsys.readouterr().out
    # the key stays in timings.json as null (an earlier value is overwritten, not kept)
    from shared import notebook

    path = tmp_path / "timings.json"
    path.write_text('{"cost_latency_increase_ratio": 0.5}')
    notebook._merge_json(path, out)
    assert json.loads(path.read_text())["cost_latency_increase_ratio"] is None
    assert cost.ledger_timings({"x": 1.0}) == {"x": 1.0} and "warning" not in capsys.readouterr().out


def test_every_scale_validates_and_a_bad_value_names_its_key():
    base = yaml.safe_load((CONF / "p18" / "base.yaml").read_text())
    for scale in ("smoke", "cpu", "gpu"):
        over = yaml.safe_load((CONF / "p18" / f"{scale}.yaml").read_text())
        over.pop("defaults")
        config.Params(**{**base, **over})
    with pytest.raises(ValueError, match="cost_claim_streams"):
        config.Params(**{**base, "cost_claim_streams": 16})
    for key in ("fit_starts", "grid_fit_starts"):
        with pytest.raises(ValueError, match=key):
            config.Params(**{**base, key: 0})  # a count of starts must be >= 1
