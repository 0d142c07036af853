"""Paper 28 (FP4 design space), part (b): the technique grid, the tasks, the overhead count."""

import math

import pandas as pd
import pytest
import torch
import yaml

from paper28 import config, overhead, tasks, techniques
from shared import fakequant
from shared import numformats as nf
from shared.paths import CONF

pytestmark = pytest.mark.usefixtures("one_thread")


def test_names_round_trip_and_the_full_grid():
    grid = techniques.full_grid(32)
    assert len(grid) == 25 and grid[0] == "fp32" and len(set(grid)) == 25
    for name in grid[1:]:
        assert techniques.parse(name).name == name
    t = techniques.parse("e4m3-h32-ts-sr")
    assert (t.scale, t.hadamard, t.tensor_scale, t.sr) == ("e4m3", 32, True, True)
    assert techniques.parse("fp32") is None
    for bad in ("e5m2-rtn", "e4m3-ts", "e4m3-h24-rtn"):
        with pytest.raises(ValueError, match="configs"):
            techniques.parse(bad)


def test_linear_quant_quantises_every_operand_and_rounds_only_dy_stochastically():
    kw = techniques.parse("ue5m3-h16-ts-sr").linear_quant(block=32)
    assert kw["hadamard"] == 16
    for key in ("x", "w", "x_bwd", "w_bwd"):
        s = kw[key]
        assert (s.element, s.scale_format, s.group, s.tensor_scale, s.rounding) == (nf.E2M1, nf.UE5M3, 32, True, "nearest")
    assert kw["grad"].rounding == "stochastic"
    plain = techniques.parse("e8m0-rtn").linear_quant(block=32)
    assert plain["hadamard"] is None and plain["grad"].scale_rule == "ocp" and plain["grad"].rounding == "nearest"


def test_quantize_model_swaps_linears_but_skipped_ones_and_sr_is_seeded():
    def model():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(32, 32), torch.nn.GELU(), torch.nn.Linear(32, 4))

    m = techniques.quantize_model(model(), techniques.parse("e4m3-sr"), 32, seed=1, skip=("2",))
    assert isinstance(m[0], fakequant.QuantLinear) and type(m[2]) is torch.nn.Linear
    assert techniques.quantize_model(model(), None, 32, seed=1)[0].__class__ is torch.nn.Linear
    x = torch.randn(8, 32, generator=torch.Generator().manual_seed(0))

    def grads(seed):
        mm = techniques.quantize_model(model(), techniques.parse("e4m3-sr"), 32, seed=seed)
        mm(x).square().sum().backward()
        return mm[0].weight.grad

    assert torch.equal(grads(3), grads(3)) and not torch.equal(grads(3), grads(4))


def test_overhead_counts_by_hand():
    shapes = [(64, 32, 16)]  # M, K, N
    e = overhead.operand_elements(shapes)
    assert e == {"elements": 2 * 64 * 32 + 2 * 16 * 32 + 2 * 64 * 16, "grad_elements": 2 * 64 * 16,
                 "gemm_flops": 6 * 64 * 32 * 16}
    assert overhead.overhead_ops(techniques.parse("e8m0-rtn"), shapes, 32)["total"] == 0
    ops = overhead.overhead_ops(techniques.parse("e4m3-h32-ts-sr"), shapes, 32, rng_ops=3.0)
    assert ops["hadamard"] == 5 * e["elements"]  # log2(32) additions per element
    assert ops["ts"] == 2 * e["elements"] and ops["scale"] == 4 * e["elements"] / 32
    assert ops["sr"] == (3.0 + 1.0) * e["grad_elements"]
    assert ops["total"] == ops["hadamard"] + ops["ts"] + ops["scale"] + ops["sr"]
    table = overhead.overhead_table(["e8m0-rtn", "e4m3-h32-ts-sr"], shapes, 32, 3.0)
    assert math.isclose(table["overhead"].iloc[1], ops["total"] / e["gemm_flops"])


def test_gemm_shapes_of_a_model():
    m = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Linear(16, 4))
    assert overhead.gemm_shapes(m, torch.zeros(2, 3, 8)) == [(6, 8, 16), (6, 16, 4)]
    assert overhead.gemm_shapes(m, torch.zeros(5, 8), skip=("1",)) == [(5, 8, 16)]


def _gaps(values):
    rows = [{"task": "t", "config": c, "seed": s, "loss_gap": g} for (c, s), g in values.items()]
    return pd.DataFrame(rows)


def test_pareto_and_claim_metrics():
    gaps = _gaps({("fp32", 0): 0.0, ("e8m0-rtn", 0): 0.4, ("e8m0-sr", 0): 0.2, ("e4m3-h32-ts-rtn", 0): 0.3,
                  ("e4m3-h32-ts-sr", 0): 0.1, ("ue5m3-rtn", 0): 0.2, ("ue5m3-sr", 0): 0.2, ("e4m3-rtn", 0): 2.0})
    names = sorted(set(gaps["config"]) - {"fp32"})
    over = overhead.overhead_table(names, [(64, 64, 64)], 32)
    front = overhead.pareto(gaps, over)
    assert "fp32" not in set(front["config"])
    on = dict(zip(front["config"], front["pareto"]))
    assert on["e8m0-rtn"] and on["e4m3-h32-ts-sr"] and not on["e4m3-h32-ts-rtn"] and not on["e4m3-rtn"]
    m = overhead.claim_metrics(gaps, front, "t", 32)
    assert m["t_gap_ratio_h_ts_sr"] == 0.25 and m["t_h_ts_sr_on_pareto"] == 1.0
    # SR - RTN pairs: e8m0 -0.2, e4m3-h32-ts -0.2, ue5m3 0.0 -> mean -0.1333, better in 2 of 3
    assert math.isclose(m["t_sr_minus_rtn_gap"], -0.133333, abs_tol=1e-6)
    assert math.isclose(m["t_sr_better_share"], 0.666667, abs_tol=1e-6)
    assert math.isclose(m["t_ue5m3_vs_e8m0_gap_ratio"], 0.2 / 0.3, abs_tol=1e-6) and m["t_e4m3_nots_gap"] == 2.0
    partial = gaps[gaps["config"].isin(["fp32", "ue5m3-rtn"])]
    m = overhead.claim_metrics(partial, overhead.pareto(partial, over), "t", 32)
    assert m["t_gap_ratio_h_ts_sr"] is None and m["t_sr_minus_rtn_gap"] is None and m["t_ue5m3_vs_e8m0_gap_ratio"] is None


def test_a_tiny_grid_trains_and_the_gap_is_against_fp32_of_the_same_seed():
    task = tasks.regression(steps=3, lr=0.05, batch=512)
    table = tasks.loss_gaps(tasks.run_grid(task, ["e8m0-rtn"], [0, 1], block=32))
    assert list(table["config"]) == ["fp32", "fp32", "e8m0-rtn", "e8m0-rtn"]
    assert (table.loc[table["config"] == "fp32", "loss_gap"] == 0).all()
    assert table["loss_gap"].iloc[2] != 0  # the quantised run differs (the Linear was reached)
    again = tasks.loss_gaps(tasks.run_grid(task, ["e8m0-rtn"], [0, 1], block=32))
    assert table.drop(columns="train_seconds").equals(again.drop(columns="train_seconds"))
    assert list(tasks.gemm_shapes(task).itertuples(index=False, name=None)) == [("regression", 331, 10, 1)]


def test_every_scale_validates_and_a_bad_value_names_its_key():
    base = yaml.safe_load((CONF / "p28" / "base.yaml").read_text())
    assert set(base) == set(config.Params.model_fields)
    for scale in ("smoke", "cpu", "gpu"):
        over = yaml.safe_load((CONF / "p28" / f"{scale}.yaml").read_text())
        over.pop("defaults")
        config.Params(**{**base, **over})
    assert len(config.Params(**base).config_names()) == 25
    for key, value in (("hadamard", 24), ("n_synthetic", 1000), ("lm_heads", 3), ("block", 1), ("t_dof", 2)):
        with pytest.raises(ValueError, match=key):
            config.Params(**{**base, key: value})
    with pytest.raises(ValueError, match="configs"):
        config.Params(**{**base, "configs": ["e4m3-rtn", "nvfp4"]})


def test_a_diverged_config_is_off_the_front():
    gaps = _gaps({("e8m0-rtn", 0): 0.4, ("e4m3-rtn", 0): float("nan"), ("ue5m3-rtn", 0): 0.1})
    over = overhead.overhead_table(["e8m0-rtn", "e4m3-rtn", "ue5m3-rtn"], [(64, 64, 64)], 32)
    on = dict(zip(*overhead.pareto(gaps, over)[["config", "pareto"]].T.values))
    assert on == {"e8m0-rtn": True, "e4m3-rtn": False, "ue5m3-rtn": True}


def test_a_diverging_run_is_a_nan_row(monkeypatch):
    def boom(*a, **k):
        raise FloatingPointError("train: loss is nan at step 3")

    monkeypatch.setattr(tasks.trainer, "train", boom)
    row = tasks.run_one(tasks.regression(steps=2, lr=0.05, batch=512), "e8m0-rtn", 0, 32)
    assert math.isnan(row["val_loss"]) and row["config"] == "e8m0-rtn"


def test_nan_in_one_seed_makes_the_config_nan():
    gaps = _gaps({("e8m0-rtn", 0): 0.4, ("e8m0-rtn", 1): float("nan"), ("ue5m3-rtn", 0): 0.1, ("ue5m3-rtn", 1): 0.3})
    front = overhead.pareto(gaps, overhead.overhead_table(["e8m0-rtn", "ue5m3-rtn"], [(64, 64, 64)], 32))
    row = front.set_index("config")
    assert math.isnan(row.loc["e8m0-rtn", "loss_gap"]) and not row.loc["e8m0-rtn", "pareto"]
    assert math.isclose(row.loc["ue5m3-rtn", "loss_gap"], 0.2) and row.loc["ue5m3-rtn", "seeds"] == 2
