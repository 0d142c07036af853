"""Low-precision linear layers (shared/qmatmul.py): kernels against the dequantise-then-FP32 reference,
int4 packing, DGQ scales, activation quantisation bit for bit, errors naming the argument."""

import os

import pytest
import torch

from shared import numformats as nf
from shared import qmatmul
from shared.timing import pinned_threads

pytestmark = pytest.mark.usefixtures("one_thread")
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
TOL = {"onednn": 1e-5, "int_mm": 1e-5, "int8": 1e-5, "vnni": 1e-5, "amx": 1e-5, "int4pack": 2e-2, "int8pack": 2e-2, "bf16": 2e-2}  # of max |y|
CASES = [(s, k) for s in qmatmul.SCHEMES for k in qmatmul.KERNELS[s] if k != "auto"]


def _linear(k=256, n=96, seed=0):
    torch.manual_seed(seed)
    lin = torch.nn.Linear(k, n)
    lin.weight.data[3, :64] *= 20  # an outlier channel / group: scales must differ per row and group
    return lin


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("scheme,kernel", CASES)
@pytest.mark.parametrize("m", [1, 5, 40])
def test_kernel_matches_reference(scheme, kernel, m, device):
    if kernel == "onednn" and (device != "cpu" or not qmatmul.has_onednn_qlinear()):
        pytest.skip("oneDNN qlinear is CPU-only")
    if kernel in ("vnni", "amx") and device != "cpu":
        pytest.skip("the compiled A8W4 kernels are CPU-only")
    lin = _linear()
    q = qmatmul.QLinear.from_linear(lin, scheme=scheme, group=64, kernel=kernel).to(device)
    x = torch.randn(m, 2, 256, device=device)  # leading dims are flattened into tokens
    try:
        y = q(x)
    except NotImplementedError as e:  # an aten op this build lacks on this backend (CUDA untested here)
        pytest.skip(f"{scheme}/{kernel} on {device}: {str(e).splitlines()[0]}")
    ref = q.reference(x)
    assert y.dtype == torch.float32 and y.shape == (m, 2, 96)
    assert (y - ref).abs().max() <= TOL[kernel] * ref.abs().max()
    # the reference is the same codes and scales: it approximates the float layer within the format's error
    exact = lin.to(device)(x)
    budget = 0.02 if scheme in ("w8a8", "w8") else 0.15
    assert (ref - exact).norm() <= budget * exact.norm()


def test_auto_kernel_is_visible():
    lin = _linear()
    small = "vnni" if qmatmul.extension_available() else "int4pack"
    assert qmatmul.QLinear.from_linear(lin, "a8w4", group=64).kernel_for(1) == small
    large = "amx" if qmatmul.amx_available() else "int8"
    assert qmatmul.QLinear.from_linear(lin, "a8w4", group=64).kernel_for(512) == large
    assert qmatmul.QLinear.from_linear(lin, "a8w4", group=64).kernel_for(1, "cuda") == "int4pack"
    assert qmatmul.QLinear.from_linear(lin, "w4", group=64).kernel_for(1) == "int4pack"
    assert qmatmul.QLinear.from_linear(lin, "w8").kernel_for(1) == "int8pack"
    assert qmatmul.QLinear.from_linear(lin, "w8").kernel_for(64) == "bf16"
    w8a8 = qmatmul.QLinear.from_linear(lin, "w8a8")
    big = "onednn" if qmatmul.has_onednn_qlinear() else "int_mm"
    assert w8a8.kernel_for(qmatmul.W8A8_VNNI_MAX_M) == ("vnni" if qmatmul.extension_available() else big)
    assert w8a8.kernel_for(qmatmul.W8A8_VNNI_MAX_M + 1) == big
    assert w8a8.kernel_for(8, "cuda") == "int_mm"
    assert "kernel=auto" in repr(w8a8)


@pytest.mark.parametrize("scheme", qmatmul.SCHEMES)
def test_bias_and_bf16_input(scheme):
    lin = _linear()
    q = qmatmul.QLinear.from_linear(lin, scheme, group=64)
    x = torch.randn(4, 256)
    assert q(x.bfloat16()).dtype == torch.bfloat16
    nobias = qmatmul.QLinear.from_linear(torch.nn.Linear(256, 96, bias=False), scheme, group=64)
    assert nobias.bias is None and nobias(x).shape == (4, 96)
    ref_no_bias = q.reference(x) - lin.bias.detach()
    assert torch.allclose(q(x) - lin.bias.detach(), ref_no_bias, atol=0.05 * ref_no_bias.abs().max().item())


def test_int4_pack_unpack_exact():
    codes = torch.randint(-8, 8, (12, 256), dtype=torch.int8)
    packed = qmatmul.pack_int4(codes)
    assert packed.dtype == torch.uint8 and packed.shape == (6, 256)
    assert torch.equal(qmatmul.unpack_int4(packed), codes)
    every = torch.arange(-8, 8, dtype=torch.int8)  # every pair of codes, both ways round
    pairs = torch.stack((every.repeat_interleave(16), every.repeat(16)))
    assert torch.equal(qmatmul.unpack_int4(qmatmul.pack_int4(pairs)), pairs)
    # the layout: byte (n, k) holds q[n, k] + 8 (low nibble) and q[n + N/2, k] + 8 (high)
    one = torch.tensor([[-8, 7], [0, -1]], dtype=torch.int8)
    assert qmatmul.pack_int4(one).tolist() == [[0 | (8 << 4), 15 | (7 << 4)]]
    with pytest.raises(ValueError, match="codes: int4 codes must lie in"):
        qmatmul.pack_int4(torch.full((2, 4), 8, dtype=torch.int8))
    with pytest.raises(ValueError, match="codes: out_features must be even"):
        qmatmul.pack_int4(torch.zeros(3, 4, dtype=torch.int8))


def test_quantize_tokens_is_numformats_per_token_int8():
    x = torch.randn(9, 300) * torch.logspace(-3, 2, 9)[:, None]
    x[4] = 0  # an all-zero token: scale 0, codes 0
    codes, s = qmatmul.quantize_tokens(x)
    q = nf.quantize_blocks(x, nf.per_channel(nf.INT8, axis=0))
    assert torch.equal(codes, q.codes) and torch.equal(s[:, 0], q.scales)


def test_a8w4_dual_grained_scales():
    w = _linear().weight.detach()
    codes, sg, sc = qmatmul.a8w4_from_weight(w, group=64)
    assert codes.abs().max() <= 7 and sg.min() >= 1 and sg.max() <= qmatmul.A8W4_SCALE_MAX
    assert (codes.view(96, -1, 64).int() * sg[..., None].int()).abs().max() <= 127  # the GEMM operand is int8
    assert sg[3, 0] == qmatmul.A8W4_SCALE_MAX  # the outlier group sets its row's coarse scale
    # no group clips: the effective scale is at least the plain per-group INT4 scale
    s = nf.quantize_blocks(w, nf.per_group(nf.INT4, 64), full=False).scales
    assert (sc[:, None] * sg.float() >= s * (1 - 1e-6)).all()
    q = qmatmul.QLinear.from_a8w4_codes(codes, sg, sc)
    assert torch.equal(q.dequantized_weight(), sc[:, None] * (codes.view(96, -1, 64).float() * sg[..., None]).view(96, 256))


def test_a8w4_given_codes_roundtrip_and_errors():
    codes = torch.randint(-8, 8, (16, 128), dtype=torch.int8)
    sg = torch.randint(1, 16, (16, 2), dtype=torch.int8)
    sc = torch.rand(16)
    q = qmatmul.QLinear.from_a8w4_codes(codes, sg, sc, kernel="int8")
    assert q.group == 64 and torch.equal(q._int8_weight(), (codes.view(16, 2, 64) * sg[..., None]).view(16, 128))
    with pytest.raises(ValueError, match="group_scales: codes x group scale must fit int8"):
        qmatmul.QLinear.from_a8w4_codes(codes, torch.full((16, 2), 17), sc)
    with pytest.raises(ValueError, match="group_scales: must be integers"):
        qmatmul.QLinear.from_a8w4_codes(codes, sg.float() + 0.5, sc)
    with pytest.raises(ValueError, match=r"group_scales: must be \[16"):
        qmatmul.QLinear.from_a8w4_codes(codes, torch.ones(16, 3), sc)
    with pytest.raises(ValueError, match="channel_scales: must have shape"):
        qmatmul.QLinear.from_a8w4_codes(codes, sg, torch.ones(8))


def test_errors_name_the_argument():
    lin = _linear()
    with pytest.raises(ValueError, match="scheme: 'w2' is not an option"):
        qmatmul.QLinear.from_linear(lin, "w2")
    with pytest.raises(ValueError, match="kernel: 'int4pack' is not a kernel of scheme 'w8a8'"):
        qmatmul.QLinear.from_linear(lin, "w8a8", kernel="int4pack")
    with pytest.raises(ValueError, match="group: must be even and divide in_features=256"):
        qmatmul.QLinear.from_linear(lin, "w4", group=100)
    with pytest.raises(ValueError, match="group: must be even"):
        qmatmul.QLinear.from_linear(lin, "a8w4", group=3)
    with pytest.raises(ValueError, match="scale_max: must be in"):
        qmatmul.a8w4_from_weight(lin.weight, 64, scale_max=40)
    with pytest.raises(ValueError, match="x: last dimension must be in_features=256"):
        qmatmul.QLinear.from_linear(lin, "w8")(torch.randn(2, 255))


def test_state_dict_roundtrip():
    lin = _linear()
    q = qmatmul.QLinear.from_linear(lin, "a8w4", group=64)
    x = torch.randn(3, 256)
    y = q(x)
    q2 = qmatmul.QLinear.from_a8w4_codes(torch.zeros(96, 256, dtype=torch.int8), torch.ones(96, 4), torch.ones(96), lin.bias)
    q2.load_state_dict(q.state_dict())
    assert torch.equal(q2(x), y)


@pytest.fixture
def extension():
    if not qmatmul.extension_available():
        pytest.skip(f"the compiled kernels are off here ({qmatmul._EXT['why']})")


# odd shapes: K a multiple of the group but not of 64 / 128, groups below one vector, N not a multiple of 16
@pytest.mark.parametrize("k,n,group", [(256, 96, 128), (192, 34, 32), (260, 10, 2), (320, 50, 64), (384, 18, 384)])
@pytest.mark.parametrize("m", [1, 3, 17, 64])
def test_vnni_equals_int8_path_bit_for_bit(extension, k, n, group, m):
    torch.manual_seed(k + n + m)
    codes = torch.randint(-8, 8, (n, k), dtype=torch.int8)
    sg = torch.randint(1, 17, (n, k // group), dtype=torch.int8)
    sg[0, 0] = 16  # -8 x 16 = -128: the int8 edge
    q = qmatmul.QLinear.from_a8w4_codes(codes, sg, torch.rand(n) + 0.1, bias=torch.randn(n), kernel="vnni")
    x = torch.randn(m, k) * torch.logspace(-2, 2, m)[:, None]
    x[0] = 0  # an all-zero token
    y = q(x)
    q.kernel = "int8"  # the same int32 products and FP32 epilogue through torch._int_mm
    assert torch.equal(y, q(x))
    if qmatmul.amx_available():
        q.kernel = "amx"
        assert torch.equal(y, q(x))
    ref = q.reference(x)
    assert (y - ref).abs().max() <= TOL["vnni"] * ref.abs().max()
    w8 = torch.empty(n, k, dtype=torch.int8)
    torch.ops.efflab_qmm.a8w4_unpack(q.packed, q.group_scales, w8)
    assert torch.equal(w8, q._int8_weight())


# odd N (the last row pairs with itself), K not a multiple of 64, int8 edges, > 8 tokens (two blocks)
@pytest.mark.parametrize("k,n", [(256, 96), (200, 33), (64, 1), (1000, 7)])
@pytest.mark.parametrize("m", [1, 8, 11])
def test_w8a8_vnni_equals_int_mm_bit_for_bit(extension, k, n, m):
    torch.manual_seed(k + n + m)
    lin = torch.nn.Linear(k, n)
    q = qmatmul.QLinear.from_linear(lin, "w8a8", kernel="vnni")
    q.codes[0, :2] = torch.tensor([-128, 127], dtype=torch.int8)
    x = torch.randn(m, k) * torch.logspace(-2, 2, m)[:, None]
    x[0] = 0  # an all-zero token
    y = q(x)
    q.kernel = "int_mm"
    assert torch.equal(y, q(x))


def test_compiled_kernels_use_torchs_threads(extension):
    # at::parallel_for is OpenMP in the header: compiled without -fopenmp it silently ran on one thread
    with pinned_threads(2):
        assert torch.ops.efflab_qmm.parallel_threads(64) == min(2, os.cpu_count() or 1)
    with pinned_threads(1):
        assert torch.ops.efflab_qmm.parallel_threads(64) == 1


@pytest.mark.parametrize("m", [1, 5, 40])
def test_threaded_kernels_equal_the_int8_path(extension, m):
    # enough byte rows (N/2 = 512 at K = 256) that parallel_for splits them between the threads
    torch.manual_seed(m)
    n, k, group = 1024, 256, 64
    codes = torch.randint(-8, 8, (n, k), dtype=torch.int8)
    q = qmatmul.QLinear.from_a8w4_codes(codes, torch.randint(1, 17, (n, k // group), dtype=torch.int8),
                                        torch.rand(n) + 0.1, kernel="vnni")  # fmt: skip
    x = torch.randn(m, k)
    with pinned_threads(2):
        y = q(x)
        q.kernel = "int8"
        assert torch.equal(y, q(x))
        if qmatmul.amx_available():
            q.kernel = "amx"
            assert torch.equal(y, q(x))
        w8a8 = qmatmul.QLinear.from_linear(torch.nn.Linear(k, n), "w8a8", kernel="vnni")
        y = w8a8(x)
        w8a8.kernel = "int_mm"
        assert torch.equal(y, w8a8(x))


def test_vnni_kernel_errors(extension):
    q = qmatmul.QLinear.from_linear(_linear(), "a8w4", group=64, kernel="vnni")
    assert q.kernel_for(1) == q.kernel_for(512) == "vnni"
    with pytest.raises(RuntimeError, match="x: must be a contiguous FP32"):
        torch.ops.efflab_qmm.a8w4_gemm(torch.randn(2, 255), q.packed, q.group_scales, q.scales)
    with pytest.raises(RuntimeError, match="group_scales: must be a contiguous int8"):
        torch.ops.efflab_qmm.a8w4_gemm(torch.randn(2, 256), q.packed, q.group_scales.float(), q.scales)
    with pytest.raises(RuntimeError, match="out: must be a contiguous int8"):
        torch.ops.efflab_qmm.a8w4_unpack(q.packed, q.group_scales, torch.empty(96, 255, dtype=torch.int8))


def test_fallback_when_extension_disabled(monkeypatch):
    lin = _linear()
    q = qmatmul.QLinear.from_linear(lin, "a8w4", group=64, kernel="vnni")
    x = torch.randn(3, 256)
    compiled = qmatmul.quantize_tokens(x * torch.logspace(-3, 3, 256))
    monkeypatch.setenv(qmatmul.EXT_ENV, "0")
    try:
        with pytest.warns(RuntimeWarning, match=f"compiled kernels are off \\({qmatmul.EXT_ENV}=0\\)"):
            assert not qmatmul.extension_available(refresh=True)
        plain = qmatmul.quantize_tokens(x * torch.logspace(-3, 3, 256))  # torch ops: the same numbers
        assert torch.equal(plain[0], compiled[0]) and torch.equal(plain[1], compiled[1])
        auto = qmatmul.QLinear.from_linear(lin, "a8w4", group=64)
        assert auto.kernel_for(1) == q.kernel_for(1) == "int4pack" and q.kernel_for(64) == auto.kernel_for(64) == "int8"
        assert qmatmul.QLinear.from_linear(lin, "a8w4", group=64, kernel="amx").kernel_for(64) == "int8"
        big = "onednn" if qmatmul.has_onednn_qlinear() else "int_mm"
        assert qmatmul.QLinear.from_linear(lin, "w8a8", kernel="vnni").kernel_for(1) == big
        assert qmatmul.QLinear.from_linear(lin, "w8a8").kernel_for(1) == big
        ref = q.reference(x)
        assert (q(x) - ref).abs().max() <= TOL["int4pack"] * ref.abs().max()
        x40 = torch.randn(40, 256)
        ref40 = q.reference(x40)
        assert (q(x40) - ref40).abs().max() <= TOL["int8"] * ref40.abs().max()
    finally:
        monkeypatch.undo()
        qmatmul.extension_available(refresh=True)
