"""Number formats (shared/numformats.py): hand-checked OCP vectors, torch's casts, SR, blocks, Hadamard."""

import ast
import dataclasses
import math
from pathlib import Path

import pytest
import torch

from shared import numformats as nf

pytestmark = pytest.mark.usefixtures("one_thread")
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def all_fp16(device="cpu"):
    """Every finite float16 value, as FP32."""
    x = torch.arange(65536, dtype=torch.int32).to(torch.int16).view(torch.float16).float()
    return x[torch.isfinite(x)].to(device)


def same(a, b):
    """Equal, NaN == NaN, -0 == +0."""
    return torch.equal(a.nan_to_num(12345.0), b.nan_to_num(12345.0))


# ----------------------------------------------------------------------------- formats as data
def test_format_constants():
    assert nf.E2M1.values().tolist() == [0, 0.5, 1, 1.5, 2, 3, 4, 6]
    assert (nf.E4M3.max, nf.E4M3.min_normal, nf.E4M3.min_subnormal) == (448, 2**-6, 2**-9)
    assert (nf.E5M2.max, nf.E5M2.min_normal, nf.E5M2.min_subnormal) == (57344, 2**-14, 2**-16)
    assert (nf.E3M2.values().max(), nf.E3M2.min_subnormal) == (28, 2**-4)
    assert (nf.E2M3.values().max(), nf.E2M3.min_subnormal) == (7.5, 2**-3)
    e8 = nf.E8M0.values()  # 2^-127 .. 2^127, 255 values (0xFF is NaN), no zero
    assert (len(e8), e8[0].item(), e8[-1].item()) == (255, 2.0**-127, 2.0**127)
    assert nf.UE5M3.values().max() == 114688 and nf.UE5M3.min_subnormal == 2**-17
    assert [f.bits for f in (nf.E4M3, nf.E2M1, nf.E3M2, nf.E8M0, nf.UE5M3, nf.INT4)] == [8, 4, 6, 8, 8, 4]
    for fmt in (nf.E4M3, nf.E5M2, nf.E3M2, nf.E2M3, nf.E2M1, nf.UE5M3):  # values() agree with the fields
        v = fmt.values()
        assert v.max() == fmt.max and v[1] == fmt.min_subnormal


# ----------------------------------------------------------------------------- hand-checked vectors
def test_e2m1_rne_hand_checked():
    x = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 7.0, 100.0, -0.25, -5.0, 0.2500001, 0.3])
    # 0.25: tie 0 | 0.5 -> 0 (even code 000); 0.75: tie 0.5 (001) | 1 (010) -> 1; 1.25: tie 1 (010) | 1.5
    # (011) -> 1; 1.75: 1.5 (011) | 2 (100) -> 2; 2.5: 2 (100) | 3 (101) -> 2; 3.5: 3 (101) | 4 (110) -> 4;
    # 5: 4 (110) | 6 (111) -> 4; 7, 100: above 6 -> saturate to 6; -0.25 -> -0; -5 -> -4;
    # 0.2500001 just above the tie -> 0.5; 0.3 -> 0.5
    want = [0, 1, 1, 2, 2, 4, 4, 6, 6, -0.0, -4, 0.5, 0.5]
    v, c = nf.quantize_codes(x, nf.E2M1)
    assert v.tolist() == want
    # codes S.EE.M: 1 = 0.010, 2 = 0.100, 6 = 0.111 (7), -0 = 1.000 (8), -4 = 1.110 (14), 0.5 = 0.001 (1)
    assert c.tolist() == [0, 2, 2, 4, 4, 6, 6, 7, 7, 8, 14, 1, 1]
    assert torch.signbit(v[9])


def test_e4m3_e5m2_hand_checked():
    x = torch.tensor([448.0, 2.0**-9, 2.0**-10, 1.5 * 2**-10, 17.0, 19.0, 500.0, -1e9])
    # 448 = 1.110 x 2^8 -> code 0.1111.110 = 0x7E; 2^-9 = smallest subnormal 0.0000.001; 2^-10: tie 0 | 2^-9
    # -> 0; 1.5 x 2^-10 -> 2^-9; 17 (step 2 in [16, 32)): tie 16 (1.000) | 18 (1.001) -> 16; 19: tie 18
    # (1.001) | 20 (1.010) -> 20; 500, -1e9: saturate to +-448 (OCP MX conversion rule)
    v, c = nf.quantize_codes(x, nf.E4M3)
    assert v.tolist() == [448, 2**-9, 0, 2**-9, 16, 20, 448, -448]
    assert c.tolist() == [0x7E, 0x01, 0x00, 0x01, 0x58, 0x5A, 0x7E, 0xFE]
    # E5M2: 57344 = 1.11 x 2^15 -> 0.11110.11 = 0x7B; 61440 is the tie 57344 | 65536 -> saturating: 57344,
    # IEEE (saturate=False): ties to even = 2^16 = overflow -> inf (0x7C)
    y = torch.tensor([57344.0, 61440.0, 2.0**-16, 3 * 2.0**-17])
    assert nf.quantize(y, nf.E5M2).tolist() == [57344, 57344, 2**-16, 2**-15]  # 3x2^-17: tie 2^-16 | 2^-15 -> even
    ieee = dataclasses.replace(nf.E5M2, saturate=False)
    v, c = nf.quantize_codes(y[:2], ieee)
    assert v.tolist() == [57344, math.inf] and c.tolist() == [0x7B, 0x7C]


def test_mxfp4_ocp_scale_hand_checked():
    x = torch.zeros(3, 32)
    x[0, :4] = torch.tensor([7.9, 0.3, -2.6, 1.1])
    x[1, :3] = torch.tensor([0.01, 0.003, -0.0001])
    q = nf.quantize_blocks(x.reshape(-1), nf.MXFP4)
    # block 0: amax 7.9, floor(log2 7.9) = 2, emax(E2M1) = 2 -> X = 2^0 = 1 (E8M0 code 127);
    #   7.9 -> 6 (saturates: the spec's X), 0.3 -> 0.5, -2.6 -> -3, 1.1 -> 1
    # block 1: amax 0.01, floor(log2 0.01) = -7 -> X = 2^-9 (code 118); 0.01 / X = 5.12 -> 6 (above the
    #   midpoint 5 of 4 | 6) -> 6 x 2^-9;
    #   0.003 / X = 1.536 -> 1.5 -> 1.5 x 2^-9; -0.0001 / X = -0.0512 -> -0
    # block 2: all zero -> the smallest scale 2^-127 (code 0), elements 0
    assert q.scales.tolist() == [1.0, 2.0**-9, 2.0**-127]
    assert nf.encode(q.scales, nf.E8M0).tolist() == [127, 118, 0]
    v = q.values.reshape(3, 32)
    assert v[0, :4].tolist() == [6, 0.5, -3, 1]
    assert v[1, :3].tolist() == [6 * 2**-9, 1.5 * 2**-9, -0.0]
    assert v[2].abs().sum() == 0 and v[0, 4:].abs().sum() == 0
    assert q.codes.reshape(3, 32)[0, :4].tolist() == [0b0111, 0b0001, 0b1101, 0b0010]


def test_mxfp8_ocp_scale_hand_checked():
    x = torch.zeros(32)
    x[:3] = torch.tensor([1000.0, 300.0, -0.01])
    q = nf.quantize_blocks(x, nf.MXFP8_E4M3)
    # amax 1000: floor(log2 1000) = 9, emax(E4M3) = 8 -> X = 2; 1000/2 = 500 -> saturates to 448 -> 896;
    # 300/2 = 150, step 16 in [128, 256): 144 | 160 -> 144 -> 288; -0.01/2 = -0.005 (subnormal step 2^-9:
    # 2.56 steps) -> -3 x 2^-9 -> x 2 = -0.01171875
    assert q.scales.tolist() == [2.0]
    assert q.values[:3].tolist() == [896, 288, -3 * 2**-8]
    # E5M2 elements: emax 15 -> X = 2^(9 - 15) = 2^-6; 1000 x 64 = 64000 -> saturates 57344 -> 896
    assert nf.quantize_blocks(x, nf.MXFP8_E5M2).values[0].item() == 896


def test_nvfp4_two_level_hand_checked():
    x = torch.zeros(3, 16)
    x[0, :3] = torch.tensor([12.0, 5.0, 1.0])
    x[1, :2] = torch.tensor([10.0, 3.0])
    x[2, :2] = torch.tensor([672.0, 100.0])
    q = nf.quantize_blocks(x.reshape(-1), nf.NVFP4)
    # tensor scale t = amax / (6 x 448) = 672 / 2688 = 0.25 (FP32)
    # block 0: s = E4M3(12 / 6 / 0.25 = 8) = 8, t s = 2: 12/2 = 6; 5/2 = 2.5 tie 2 | 3 -> 2 -> 4; 1/2 = .5 -> 1
    # block 1: 10 / 6 / 0.25 = 6.667, E4M3 step 0.5 in [4, 8): 6.5 | 7 -> 6.5, t s = 1.625:
    #   10 / 1.625 = 6.15 -> 6 -> 9.75; 3 / 1.625 = 1.85 -> 2 -> 3.25
    # block 2: s = 672 / 6 / 0.25 = 448 (E4M3 max), t s = 112: 672 -> 6 -> 672; 100/112 = 0.89 -> 1 -> 112
    assert q.tensor_scale.item() == 0.25
    assert q.scales.tolist() == [8.0, 6.5, 448.0]
    v = q.values.reshape(3, 16)
    assert v[0, :3].tolist() == [12, 4, 1] and v[1, :2].tolist() == [9.75, 3.25] and v[2, :2].tolist() == [672, 112]


def test_integer_hand_checked():
    x = torch.tensor([127.0, -3.5, 2.5, 0.4, -127.0])
    q = nf.quantize_blocks(x, nf.per_tensor(nf.INT8))
    # amax 127 -> s = 1; -3.5 -> -4, 2.5 -> 2 (half to even); 0.4 -> 0
    assert q.scales.tolist() == [1.0] and q.codes.tolist() == [127, -4, 2, 0, -127] and q.codes.dtype == torch.int8
    q = nf.quantize_blocks(torch.tensor([-1.0, 0.0, 2.0, 0.5]), nf.per_tensor(nf.INT4_ASYM))
    # range [-1, 2], s = 3/15 = 0.2, z = round(1/0.2) = 5; codes: 0, 5, 15, 0.5/0.2 + 5 = 7.5 -> 8 (even)
    assert q.codes.tolist() == [0, 5, 15, 8] and q.zero_points.tolist() == [5]
    assert torch.allclose(q.values, torch.tensor([-1.0, 0.0, 2.0, 0.6]))
    # percentile clipping: |x| = 1..100, p = 90 -> amax = the 90th value = 90, s = 90/127; 100 clips to 90
    x = torch.arange(1.0, 101.0)
    q = nf.quantize_blocks(x, nf.per_tensor(nf.INT8, clip_percentile=90))
    assert torch.allclose(q.scales, torch.tensor([90 / 127])) and torch.isclose(q.values[-1], torch.tensor(90.0))
    assert q.in_range[:90].all() and not q.in_range[90:].any()


# ----------------------------------------------------------------------------- against torch
def test_e4m3_equals_torch_cast_on_every_fp16():
    x = all_fp16()
    ref = x.to(torch.float8_e4m3fn)  # torch's CPU cast saturates, as the OCP MX rule
    v, c = nf.quantize_codes(x, nf.E4M3)
    assert same(v, ref.float()) and torch.equal(c, ref.view(torch.uint8))
    codes = torch.arange(256).to(torch.uint8)
    assert same(nf.decode(codes, nf.E4M3), codes.view(torch.float8_e4m3fn).float())


def test_e5m2_equals_torch_cast_on_every_fp16():
    x = all_fp16()
    ref = x.to(torch.float8_e5m2)  # IEEE overflow to inf
    inr = x.abs() <= nf.E5M2.max
    v, c = nf.quantize_codes(x, nf.E5M2)
    assert torch.equal(v[inr], ref.float()[inr]) and torch.equal(c[inr], ref.view(torch.uint8)[inr])
    assert (v[~inr].abs() == nf.E5M2.max).all()  # ours saturates
    v, c = nf.quantize_codes(x, dataclasses.replace(nf.E5M2, saturate=False))
    assert same(v, ref.float()) and torch.equal(c, ref.view(torch.uint8))
    codes = torch.arange(256).to(torch.uint8)
    assert same(nf.decode(codes, nf.E5M2), codes.view(torch.float8_e5m2).float())


def test_e8m0_equals_torch_cast_on_every_normal_bf16():
    x = torch.arange(32768, dtype=torch.int32).to(torch.int16).view(torch.bfloat16).float()
    # in range: torch rounds FP32 subnormals up by their bit pattern (1.01 x 2^-127 -> 2^-126, not 2^-127),
    # and overflows to NaN at 1.5 x 2^127 and above where ours saturates to 2^127
    x = x[torch.isfinite(x) & (x >= 2.0**-126) & (x < 1.5 * 2.0**127)]
    ref = x.to(torch.float8_e8m0fnu)
    v, c = nf.quantize_codes(x, nf.E8M0)
    assert torch.equal(v, ref.float()) and torch.equal(c, ref.view(torch.uint8))


def _torch_floatx_helper():
    """torch's private FP4/FP6 rounding helper (copied from torchao into common_quantized.py), loaded
    without importing that module (it needs test-only packages)."""
    path = Path(torch.__file__).parent / "testing/_internal/common_quantized.py"
    if not path.exists():
        return None
    tree = ast.parse(path.read_text())
    names = {"_n_ones", "_f32_to_floatx_unpacked", "EBITS_F32", "MBITS_F32", "F32_EXP_BIAS"}

    def wanted(node):
        if isinstance(node, ast.FunctionDef):
            return node.name in names
        targets = node.targets[0].elts if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Tuple) \
            else getattr(node, "targets", [])
        return any(isinstance(t, ast.Name) and t.id in names for t in targets)

    keep = [n for n in tree.body if wanted(n)]
    ns = {"torch": torch, "Tensor": torch.Tensor}
    exec(compile(ast.Module(keep, []), str(path), "exec"), ns)  # noqa: S102
    return ns.get("_f32_to_floatx_unpacked")


@pytest.mark.parametrize("fmt", [nf.E2M1, nf.E3M2, nf.E2M3], ids=lambda f: f.name)
def test_fp4_fp6_equal_torch_helper_on_every_fp16(fmt):
    helper = _torch_floatx_helper()
    if helper is None:
        pytest.skip("torch's floatx helper is not in this torch")
    x = all_fp16()
    v, c = nf.quantize_codes(x, fmt)
    ref = helper(x, fmt.ebits, fmt.mbits)  # saturating RNE, codes in the low bits
    assert torch.equal(c, ref) and same(v, nf.decode(ref, fmt))


@pytest.mark.parametrize("device", DEVICES)
def test_blocks_match_elementwise_reference(device):
    """An MX block equals, element by element, quantize(v / X) * X with the hand formula for X."""
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(64, 96, generator=g, device=device) * torch.logspace(-4, 4, 96, device=device)
    for scheme in (nf.MXFP4, nf.MXFP6_E3M2, nf.MXFP6_E2M3, nf.MXFP8_E4M3, nf.MXFP8_E5M2):
        q = nf.quantize_blocks(x, scheme)
        blocks = x.reshape(64, 3, 32)
        X = 2.0 ** (torch.floor(torch.log2(blocks.abs().amax(-1, keepdim=True))) - scheme.element.emax)
        ref = nf.quantize(blocks / X, scheme.element) * X
        assert torch.equal(q.values, ref.reshape(64, 96)), scheme.element.name
        assert torch.equal(q.scales, X.reshape(64, 3))


# ----------------------------------------------------------------------------- stochastic rounding
@pytest.mark.parametrize("fmt", [nf.E2M1, nf.E4M3, nf.INT4], ids=lambda f: f.name)
def test_stochastic_rounding_unbiased(fmt):
    small = [0.1, 0.7, 2.3, 4.9, -5.5, 5.99]  # inside +-6 (E2M1) / +-7 (INT4)
    points = torch.tensor(small if fmt.max < 10 else [0.003, 1.3, 300.0, -77.7])
    n = 100_000
    x = points.repeat(n, 1)
    g = torch.Generator().manual_seed(0)
    q = nf.quantize(x, fmt, rounding="stochastic", generator=g)
    mean, se = q.mean(0), q.std(0) / math.sqrt(n)
    assert (mean - points).abs().le(4 * se + 1e-7).all(), (mean, points, se)
    lo, hi = nf.quantize(points, fmt, rounding="down"), nf.quantize(points, fmt, rounding="up")
    assert ((q == lo) | (q == hi)).all()  # every sample is one of the two grid neighbours
    assert ((q == lo).any(0) & (q == hi).any(0) | (lo == hi)).all()  # ... and both occur


def test_stochastic_rounding_blocks_unbiased_and_seeded():
    x = torch.randn(4, 32, generator=torch.Generator().manual_seed(1))
    xs = x.repeat(20_000, 1, 1)
    sr = nf.mx(nf.E2M1, scale_rule="ceil", rounding="stochastic")  # ceil: no element clips, SR is unbiased
    q = nf.quantize_blocks(xs, sr, torch.Generator().manual_seed(2)).values
    se = q.std(0) / math.sqrt(xs.shape[0])
    assert ((q.mean(0) - x).abs() <= 4 * se + 1e-6).all()
    a = nf.fake_quant(x, nf.MXFP4.with_(rounding="stochastic"), torch.Generator().manual_seed(3))
    b = nf.fake_quant(x, nf.MXFP4.with_(rounding="stochastic"), torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


# ----------------------------------------------------------------------------- granularities
def test_granularities_and_padding():
    x = torch.randn(6, 10, generator=torch.Generator().manual_seed(0))
    # per channel along axis 0 (one scale per row) == per tensor on each row
    q = nf.quantize_blocks(x, nf.per_channel(nf.INT8, axis=0))
    assert q.scales.shape == (6,)
    for i in range(6):
        assert torch.equal(q.values[i], nf.fake_quant(x[i], nf.per_tensor(nf.INT8)))
    # per channel along axis 1 == per channel along axis 0 of the transpose
    assert torch.equal(nf.fake_quant(x, nf.per_channel(nf.INT8, axis=1)),
                       nf.fake_quant(x.T.contiguous(), nf.per_channel(nf.INT8, axis=0)).T)
    # groups of 4 along the last axis: 10 = 4 + 4 + 2, the last group zero-padded (padding dropped again)
    q = nf.quantize_blocks(x, nf.per_group(nf.INT4, 4))
    assert q.scales.shape == (6, 3) and q.values.shape == x.shape
    assert torch.equal(q.values[:, 8:], nf.fake_quant(x[:, 8:], nf.per_group(nf.INT4, 2)))
    # groups along axis 0 == groups along the last axis of the transpose
    assert torch.equal(nf.fake_quant(x, nf.per_group(nf.E2M1, 4, axis=0, scale_format=nf.E8M0, scale_rule="ocp")),
                       nf.fake_quant(x.T, nf.per_group(nf.E2M1, 4, scale_format=nf.E8M0, scale_rule="ocp")).T)
    # dtype is kept; bf16 in, bf16 out
    assert nf.fake_quant(x.bfloat16(), nf.MXFP4).dtype == torch.bfloat16


def test_scale_formats_and_rules():
    x = torch.randn(8, 64, generator=torch.Generator().manual_seed(0)) * 1e-3
    e4 = nf.mx(nf.E2M1, nf.E4M3, block=16)
    rel = lambda s: ((nf.fake_quant(x, s) - x).norm() / x.norm()).item()  # noqa: E731
    assert rel(e4) > 0.9  # amax/6 ~ 4e-4 < 2^-10 (half E4M3's smallest subnormal): most scales round to 0
    assert rel(e4.with_(tensor_scale=True)) < 0.2  # tensor scaling rescues it
    assert rel(nf.mx(nf.E2M1, nf.UE5M3, block=16)) < 0.2  # UE5M3 reaches 2^-17 by itself
    # ceil never saturates an element: |x| / s <= 6 everywhere
    q = nf.quantize_blocks(x, nf.mx(nf.E2M1, nf.E8M0, scale_rule="ceil"))
    assert q.in_range.all()
    assert set(nf.encode(q.scales, nf.E8M0).unique().tolist()) <= set(range(255))


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="^granularity: 'row'"):
        nf.Scheme(nf.INT8, granularity="row")
    with pytest.raises(ValueError, match="^format: 'fp5'"):
        nf.get_format("fp5")
    with pytest.raises(ValueError, match="^rounding: 'up'"):
        nf.Scheme(nf.INT8, rounding="up")
    with pytest.raises(ValueError, match="^rounding: 'sr'"):
        nf.quantize(torch.ones(2), nf.E2M1, rounding="sr")
    with pytest.raises(ValueError, match="^clip_percentile"):
        nf.per_tensor(nf.INT8, clip_percentile=0)
    with pytest.raises(ValueError, match="^scale_rule: 'ocp' needs a float"):
        nf.Scheme(nf.INT8, scale_rule="ocp")
    with pytest.raises(ValueError, match="^block: must be a power of two"):
        nf.hadamard(torch.ones(12), block=8)
    with pytest.raises(ValueError, match="^axis: 2"):
        nf.fake_quant(torch.ones(3, 4), nf.per_group(nf.INT8, 2, axis=2))


# ----------------------------------------------------------------------------- Hadamard
@pytest.mark.parametrize("n", [1, 2, 4, 16, 64, 256])
def test_hadamard_orthonormal(n):
    H = nf.hadamard(torch.eye(n, dtype=torch.float64))
    assert torch.allclose(H @ H.T, torch.eye(n, dtype=torch.float64), atol=1e-12)
    i = torch.arange(n)
    sylvester = (-1.0) ** torch.tensor([[bin(a & b).count("1") for b in i.tolist()] for a in i.tolist()])
    assert torch.allclose(H, sylvester.double() / math.sqrt(n))


def test_hadamard_blockwise_signs_inverse_and_product():
    g = torch.Generator().manual_seed(0)
    n = 96  # not a power of two: block-diagonal with blocks of 32
    s = nf.random_signs(n, g)
    R = nf.hadamard(torch.eye(n, dtype=torch.float64), block=32, signs=s.double())
    assert torch.allclose(R @ R.T, torch.eye(n, dtype=torch.float64), atol=1e-12)
    assert R[:32, 32:].abs().sum() == 0  # block diagonal
    x, w = torch.randn(5, n, generator=g, dtype=torch.float64), torch.randn(7, n, generator=g, dtype=torch.float64)
    xr = nf.hadamard(x, signs=s)
    assert torch.allclose(nf.hadamard(xr, signs=s, inverse=True), x, atol=1e-12)
    assert torch.allclose(xr @ nf.hadamard(w, signs=s).T, x @ w.T, atol=1e-10)
    assert torch.allclose(nf.hadamard(x.T, signs=s, axis=0).T, xr, atol=1e-12)


def test_hadamard_spreads_an_outlier():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, generator=g)
    x[3] = 100.0
    ratio = lambda v: (v.abs().max() / v.pow(2).mean().sqrt()).item()  # noqa: E731
    y = nf.hadamard(x, signs=nf.random_signs(256, g))
    assert ratio(x) > 10 and ratio(y) < 4
    # and the quantisation error of the rotated vector is lower: per-tensor INT4, and MXFP4 with a
    # rotation inside each 32-block (a 256-rotation would spread the outlier over every block)
    err = lambda v, s: (nf.fake_quant(v, s) - v).norm().item()  # noqa: E731
    assert err(y, nf.per_tensor(nf.INT4)) < 0.5 * err(x, nf.per_tensor(nf.INT4))
    # heavy tails (Student-t, 3 degrees of freedom) in MXFP4 blocks: a rotation inside each 32-block helps
    t = torch.randn(64, 256, generator=g) / (torch.randn(3, 64, 256, generator=g).pow(2).mean(0)).sqrt()
    r = nf.hadamard(t, block=32, signs=nf.random_signs(256, g))
    assert err(r, nf.MXFP4) < 0.9 * err(t, nf.MXFP4)


# ----------------------------------------------------------------------------- cost
def test_bits_per_element():
    assert nf.bits_per_element(nf.MXFP4) == 4.25
    assert nf.bits_per_element(nf.MXFP8_E4M3) == 8.25
    assert nf.bits_per_element(nf.MXFP6_E3M2) == 6.25
    assert nf.bits_per_element(nf.NVFP4) == 4.5
    assert nf.bits_per_element(nf.NVFP4, numel=1024) == 4.5 + 32 / 1024
    assert nf.bits_per_element(nf.per_group(nf.INT4, 128)) == 4.25
    assert nf.bits_per_element(nf.per_group(nf.INT4_ASYM, 128)) == 4 + 36 / 128
    assert nf.bits_per_element(nf.per_channel(nf.INT8), channel_len=512) == 8 + 32 / 512
    assert nf.bits_per_element(nf.E4M3) == 8
    with pytest.raises(ValueError, match="^channel_len"):
        nf.bits_per_element(nf.per_channel(nf.INT8))


def test_nan_poisons_only_its_block():
    x = torch.ones(64)
    x[40] = math.nan
    q = nf.quantize_blocks(x, nf.MXFP4)
    assert q.values[:32].eq(1).all() and q.values[32:].isnan().all()  # the block's scale is NaN (E8M0 0xFF)
    assert nf.encode(q.scales, nf.E8M0).tolist() == [127 - 2, 0xFF]  # amax 1: X = 2^(0 - 2)
    assert nf.quantize(torch.tensor([math.nan]), nf.E4M3).isnan().all()
