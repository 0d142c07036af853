"""shared.numformats' rounding against Graphcore's gfloat (a test-only
oracle; skipped where gfloat is not installed): E2M1, E4M3 and UE5M3 (our assumed definition
built as a gfloat FormatInfo: unsigned, 5 exponent bits, bias 15, subnormals, one NaN code)."""

import dataclasses

import numpy as np
import pytest
import torch

from shared import numformats as nf

gfloat = pytest.importorskip("gfloat")
from gfloat import formats as gf  # noqa: E402

UE5M3_GF = dataclasses.replace(gf.format_info_ocp_e4m3, name="ue5m3", k=8, precision=4, bias=15, is_signed=False)


def _values(lo: float, hi: float) -> np.ndarray:
    rng = np.random.default_rng(0)
    mags = np.exp(rng.uniform(np.log(lo), np.log(hi), 20000)).astype(np.float32)
    grid = np.concatenate([mags, np.float32([0.0, lo, hi])])
    return grid


@pytest.mark.parametrize("ours, theirs, lo, hi, signed", [
    (nf.E2M1, gf.format_info_ocp_e2m1, 1e-2, 6.0, True),
    (nf.E4M3, gf.format_info_ocp_e4m3, 1e-4, 448.0, True),
    (nf.UE5M3, UE5M3_GF, 1e-7, 114688.0, False),
])
def test_round_to_nearest_even_matches_gfloat(ours, theirs, lo, hi, signed):
    v = _values(lo, hi)
    if signed:
        v = np.concatenate([v, -v])
    expected = gfloat.round_ndarray(theirs, v.astype(np.float64), sat=True)
    got = nf.quantize(torch.from_numpy(v), ours).double().numpy()
    np.testing.assert_array_equal(got, expected)


def test_ue5m3_range_is_the_assumed_one():
    top = gfloat.round_ndarray(UE5M3_GF, np.array([1e9]), sat=True)[0]
    tiny = gfloat.round_ndarray(UE5M3_GF, np.array([2.0**-17]), sat=True)[0]
    assert top == nf.UE5M3.max == 114688.0 and tiny == nf.UE5M3.min_subnormal == 2.0**-17
