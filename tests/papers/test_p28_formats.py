"""Paper 28 (FP4 design space), part (a): the scale-format study."""

import math

import pandas as pd
import pytest
import torch

from paper28 import formats
from shared import numformats as nf

pytestmark = pytest.mark.usefixtures("one_thread")


def test_schemes_differ_only_in_scale_format_and_tensor_scaling():
    s = formats.study_schemes(block=16)
    assert set(s) == set(formats.SCHEMES)
    assert {v.element for v in s.values()} == {nf.E2M1} and {v.group for v in s.values()} == {16}
    assert s["e8m0"].scale_rule == "ocp" and s["e4m3"].scale_rule == "nearest"
    assert s["e4m3_ts"].tensor_scale and not s["e4m3"].tensor_scale and s["ue5m3"].scale_format == nf.UE5M3


def test_relative_mse_by_hand():
    # one block of 4 with FP32 scale 1: E2M1 rounds 1.2 -> 1, 2.6 -> 3 (5 = 4 or 6: ties to even -> 4)
    x = torch.tensor([[6.0, 1.2, 2.6, 5.0]])
    scheme = nf.Scheme(nf.E2M1, group=4)  # scale = amax / 6 = 1
    err = ((1.2 - 1) ** 2 + (2.6 - 3) ** 2 + 1.0) / (36 + 1.2**2 + 2.6**2 + 25)
    assert math.isclose(formats.relative_mse(x, scheme), err, rel_tol=1e-6)


def test_tensor_scaling_makes_e4m3_scale_invariant_and_the_range_shows_without_it():
    tensors = formats.synthetic(4096, 3.0, seed=0)
    table = formats.sweep(tensors, formats.study_schemes(), [-6, 0, 6])
    wide = table.pivot_table(index=["tensor", "k"], columns="scheme", values="rel_mse")
    ts = wide["e4m3_ts"].unstack("k")
    assert (ts.max(axis=1) / ts.min(axis=1) < 1.01).all()  # the same error at every magnitude
    r = formats.ratios(table)
    assert (r.xs(-6, level="k")["e4m3"] > 10).all() and (r.xs(6, level="k")["e4m3"] > 10).all()
    assert (r.xs(0, level="k")["ue5m3"] < 1.1).all()
    # 10^-6 on a unit-RMS tensor: E4M3's smallest scale 2^-9 underflows every block -> all zeros
    assert math.isclose(wide.loc[("gaussian", -6), "e4m3"], 1.0)


def test_summary_counts_decades_over_every_tensor():
    rows = []
    for tensor, bad in (("a", {-2}), ("b", {2})):
        for k in (-2, -1, 0, 1, 2):
            for scheme in formats.SCHEMES:
                err = 1.0 if (scheme != formats.REFERENCE and k in bad) else 0.01
                rows.append({"tensor": tensor, "scheme": scheme, "k": k, "rel_mse": err, "snr_db": 0.0})
    table = pd.DataFrame(rows).replace({"tensor": {"a": "gaussian"}})
    s = formats.summary(table, tolerance=1.1)
    assert s["fmt_ue5m3_decades"] == 3 and s["fmt_ue5m3_extra_decades"] == 0  # k = -2 and 2 each fail somewhere
    assert s["fmt_e4m3_nots_min_ratio_extremes"] == 1.0  # each extreme fails on one tensor only
    assert s["fmt_ue5m3_vs_e4m3ts_max_ratio"] == 100.0 and s["fmt_ue5m3_vs_e4m3ts_max_ratio_k0"] == 1.0


def test_output_gradients_are_dy_of_the_module():
    torch.manual_seed(0)
    lin = torch.nn.Linear(4, 3)

    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.lin = torch.nn.Embedding(5, 4), lin

        def forward(self, input_ids):
            return type("Out", (), {"logits": torch.nn.functional.pad(self.lin(self.emb(input_ids)), (0, 2))})()

    x = torch.tensor([[0, 1, 2]])
    y = torch.tensor([[1, 2, 3]])
    m = M()
    dy = formats.output_gradients(m, x, y, lin)
    out = lin(m.emb(x)).detach().requires_grad_()
    torch.nn.functional.cross_entropy(torch.nn.functional.pad(out, (0, 2)).flatten(0, 1), y.flatten()).backward()
    assert dy.shape == (3, 3) and torch.allclose(dy, out.grad.reshape(3, 3))


def test_synthetic_needs_a_multiple_of_the_width():
    with pytest.raises(ValueError, match="n_synthetic"):
        formats.synthetic(1000, 3.0, seed=0)
