"""Linear layers that compute in low precision (real kernels, not fake-quant): W8A8, A8W4, W8, W4.

    from shared import qmatmul
    q = qmatmul.QLinear.from_linear(linear, scheme="w8a8")            # int8 x int8 GEMM, int32 accumulation
    q = qmatmul.QLinear.from_linear(linear, scheme="a8w4", group=128)  # DGQ layout: int4 storage, int8 GEMM
    q = qmatmul.QLinear.from_linear(linear, scheme="w4", group=128)    # weight-only int4 (aten int4pack)
    q = qmatmul.QLinear.from_linear(linear, scheme="w8")               # weight-only int8 (aten int8pack)
    q.kernel, q.kernel_for(m)                  # the kernel asked for ("auto"), the one that runs for m tokens
    q(x), q.reference(x)                       # output; the dequantise-then-FP32 reference
    qmatmul.QLinear.from_a8w4_codes(codes, group_scales, channel_scales, bias)   # given DGQ codes/scales

Scales and codes come from :mod:`shared.numformats` (per-channel / per-group INT8 / INT4); this
module only stores them in the layouts the kernels want and calls the kernels.

**W8A8** (SmoothQuant-style, the papers' W8A8 baseline): weights int8, symmetric, one FP32 scale
per output channel; activations int8, symmetric, one scale per token, computed at every call;
y = (X_q W_q^T) * s_x s_w^T (+ b), the product accumulated in int32. Kernels:
``onednn`` (CPU): the weight prepacked once (at the first call) by
``torch.ops.onednn.qlinear_prepack`` and multiplied by ``onednn.qlinear_pointwise`` (x scale 1, the
per-channel weight scales applied in the kernel, the per-token scales after it) - the ops that
inductor's x86 int8 lowering calls, not the deprecated eager ``torch.ao`` modules; ``int_mm``: ``torch._int_mm`` (CPU and CUDA; on CPU it
goes to oneDNN's generic s8s8s32 GEMM, which packs the weight on every call; on CUDA it needs
M > 16 and K, N multiples of 8, so the token axis is zero-padded to a multiple of 8, at least 24);
``vnni`` (CPU, the compiled kernels below): a GEMV that streams two weight rows at a time
(prefetched into L2), flips each 64 weights to w + 128 (u8) with one xor and multiplies them by
the int8 activations with vpdpbusd, 128 * sum(a) subtracted per token - for few tokens.
``auto``: ``vnni`` up to :data:`W8A8_VNNI_MAX_M` tokens where the compiled kernels run, else
``onednn`` (CPU) / ``int_mm``. Measured as below: at M = 1 vnni 0.62 ms, oneDNN 0.83 ms,
quantize_dynamic (fbgemm) 0.80 ms; at M = 8 0.75 / 0.90 / 1.11 ms; oneDNN wins from M = 12.

**A8W4** (DGQ, Zhang et al. 2023, "Dual Grained Quantization"): int4 codes q in [-8, 7] per
weight, stored two per byte; per group of ``group`` input features an *integer* scale
s_g >= 1 relative to one FP32 scale s_c per output channel, so that q * s_g is an int8 value and
W = s_c * (q * s_g). The GEMM then runs in int8 like W8A8, with s_c as the channel scale.
Byte (n, k) holds q[n, k] + 8 in its low nibble and q[n + N/2, k] + 8 in its high nibble (so
unpacking is two contiguous passes, one per half of the rows; N must be even). Kernels:
``int8``: unpack to int8 and multiply by s_g with torch ops (four passes over an int8 buffer
shared by the layers of one shape), then the W8A8 GEMM via ``torch._int_mm``; the unpacking
touches the whole weight at every call (~5 ms for 4096 x 4096 on one core), so this path only
pays off at large M: a GEMM that unpacks int4 in its inner loop does not exist in torch;
``int4pack``: the same codes and scales run by aten's weight-only int4 kernel
(group scale s_c * s_g rounded to bf16; the activations are quantised per token to int8 as in the
``int8`` path and handed over as bf16 values, exact for |code| <= 127 up to the bf16 rounding
of code * s_x) - the fast path for small M without the compiled kernels.

Compiled kernels (``shared/csrc/a8w4_vnni.cpp``, one translation unit built by
``torch.utils.cpp_extension.load`` at the first CPU call that needs them, ~10 s, cached under
``build/torch_extensions/efflab_qmm``; flags :data:`EXT_CFLAGS`; threads by ``at::parallel_for``,
which torch's CPU build runs through OpenMP pragmas in its header, hence ``-fopenmp``: without it
every kernel ran on one thread, tested by ``torch.ops.efflab_qmm.parallel_threads``;
ops ``torch.ops.efflab_qmm.*``). They run only where /proc/cpuinfo shows :data:`EXT_CPU_FLAGS`,
:data:`EXT_ENV` is not "0" and the compile succeeded (:func:`extension_available`); otherwise one
warning says why and the kernels above run. All are exact in int32 with the ``int8`` path's FP32
epilogue, so they give the same bits as ``int8`` (tested):
``vnni``: the GEMV-like kernel: each byte row of the packed weight is read once, its nibbles
unpacked in registers into w8 + 128 (u8) by one vpshufb per 64 weights from a 16-entry table
(u - 8) * s_g + 128 of the group, multiplied by the per-token int8 activations with vpdpbusd,
and 128 * sum(a) subtracted per token; s_x * s_c in the epilogue. Up to 8 tokens share one pass
over the weight in registers; above, each byte row is unpacked into an L1 buffer first. The
packed stream is prefetched into L2 4 KiB ahead: without it, unpacking and DRAM reads hardly
overlapped (cold, M = 1: 0.49 ms vs 0.36-0.38 ms with it; the source says more).
``amx``: a tiled int8 GEMM on AMX (needs :data:`AMX_CPU_FLAGS`, :func:`amx_available`): blocks of 16
byte rows are unpacked (vpshufb) and transposed into AMX's VNNI B-tile layout in an L2 buffer,
then multiplied by every pair of 16-token activation tiles with tdpbssd.
With the compiled kernels, ``int8`` unpacks with one vectorised C++ pass (instead of four torch
ops), and the per-token activation quantisation and the FP32 epilogue of the ``int_mm`` paths run
in one C++ pass each (the same ops in the same order: bit-identical, tested).
``auto``: ``vnni`` for M <= :data:`A8W4_VNNI_MAX_M` tokens, else ``amx``; without AMX ``vnni`` up to
:data:`A8W4_VNNI_NO_AMX_MAX_M`, else ``int8``; without the compiled kernels ``int4pack`` for
M <= :data:`A8W4_INT4PACK_MAX_M`, else ``int8``. Thresholds measured on the benchmark's 2-core
Xeon (AVX512-VNNI, AMX-INT8, 480 MiB L3), 4096 x 4096, cold, 2 threads, interleaved
(benchmarks/bench_qmatmul.py, 2026-11-27): vnni 0.39-0.40 ms at M = 1 (82-84 % of the int4 floor) vs
amx 0.79, 0.63 vs 0.80 at M = 8; amx wins from M = 12 (0.85 vs 1.23 ms; 1.36 vs 4.0 at M = 64);
vnni beats int8 up to M = 16 (1.32 vs 1.45 ms) and loses at 32 (2.20 vs 1.57). Explicit ``vnni`` / ``amx`` where they cannot run
fall back like ``auto`` without them (:meth:`QLinear.kernel_for` says which runs).
:func:`a8w4_from_weight` is a plain round-to-nearest choice of the codes/scales (the DGQ paper's
grid search belongs to the paper's folder and calls :meth:`QLinear.from_a8w4_codes`).

**W8 / W4** (weight-only): int8 per output channel (``aten._weight_int8pack_mm``) or int4 per
group along K, asymmetric by default, stored packed like A8W4 (``aten._convert_weight_to_int4pack_for_cpu`` +
``_weight_int4pack_mm_for_cpu``; on CUDA ``_convert_weight_to_int4pack`` + ``_weight_int4pack_mm``;
aten's packed copy is built at the first call and kept next to ours).
Both kernels need bf16 activations (FP32 activations hit a slow path); an FP32 caller gets FP32 back.
They are GEMV kernels: their time grows about linearly with M (on the benchmark's CPU 4096 x 4096
takes ~0.5 s at M = 512, ten times bf16), so ``w8`` "auto" switches above
:data:`W8_INT8PACK_MAX_M` tokens to ``bf16``: the int8 codes (exact in bf16) times x in a bf16
GEMM, the channel scales applied to the output. ``w4`` has no such fallback: use ``a8w4`` or
``w8a8`` for prefill.
aten's int4 kernel computes w = (u - 8) * s + z with u in [0, 15]; an asymmetric code c with zero
point z0 (w = (c - z0) s) is stored as u = c, z = (8 - z0) s.

**Tolerance** (tests): :meth:`QLinear.reference` dequantises the same codes and scales, fake-quantises
the activations the same way (A8 schemes), and multiplies in FP32. The int8-activation kernels
are exact in int32, so they match to FP32 rounding (max error <= 1e-5 of max |y|); the bf16-activation
kernels (W8, W4, A8W4 via int4pack) round x, the scales and the output to bf16: <= 2e-2 of max |y|.
"""

from __future__ import annotations

import logging
import os
import platform
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from shared import numformats as nf

SCHEMES = ("w8a8", "a8w4", "w8", "w4")
KERNELS = {"w8a8": ("auto", "onednn", "int_mm", "vnni"), "a8w4": ("auto", "vnni", "amx", "int8", "int4pack"),
           "w8": ("auto", "int8pack", "bf16"), "w4": ("auto", "int4pack")}  # fmt: skip
W8A8_VNNI_MAX_M = 8  # w8a8 "auto" with the compiled kernels: "vnni" up to this many tokens, "onednn" above
A8W4_SCALE_MAX = 16  # largest integer group scale of a8w4_from_weight: 7 * 16 = 112 fits int8
A8W4_INT4PACK_MAX_M = 8  # a8w4 "auto" without the compiled kernel: aten's int4 kernel up to this many tokens, the int8 GEMM above
A8W4_VNNI_MAX_M = 8  # a8w4 "auto" with the compiled kernels: "vnni" up to this many tokens, "amx" above (module doc)
A8W4_VNNI_NO_AMX_MAX_M = 16  # the same without AMX: "vnni" up to this many tokens, "int8" above
EXT_ENV = "EFFLAB_QMATMUL_EXT"  # "0": never compile or use shared/csrc (the fallback kernels run)
EXT_SOURCE = Path(__file__).resolve().parent / "csrc" / "a8w4_vnni.cpp"
DATA_FILES = ("csrc/a8w4_vnni.cpp",)  # read besides Python: pipelines.dvcgen makes it a dependency of the papers using this
# -fopenmp: torch's CPU build runs at::parallel_for through OpenMP pragmas in the header, which a
# compile without it drops: the kernels then ran on one thread whatever torch.get_num_threads() said
EXT_CFLAGS = ("-O3", "-fopenmp", "-mavx512f", "-mavx512bw", "-mavx512dq", "-mavx512vl", "-mavx512vnni", "-mamx-tile",
              "-mamx-int8")  # fmt: skip
EXT_LDFLAGS = ("-fopenmp",)
EXT_CPU_FLAGS = ("avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512_vnni")  # /proc/cpuinfo names
AMX_CPU_FLAGS = ("amx_tile", "amx_int8")  # and the kernel must grant the tile state (arch_prctl)
W8_INT8PACK_MAX_M = 32  # w8 "auto": aten's int8pack kernel up to this many tokens, the bf16 GEMM above
INT8_SYM = nf.per_channel(nf.INT8, axis=0)  # one scale per row: weights per output channel, activations per token
CUDA_INT_MM_MIN_M = 24  # torch._int_mm on CUDA: M > 16 and a multiple of 8


def has_onednn_qlinear() -> bool:
    """torch.ops.onednn.qlinear_prepack / qlinear_pointwise exist (x86 CPU builds)."""
    return hasattr(torch.ops.onednn, "qlinear_prepack") and hasattr(torch.ops.onednn, "qlinear_pointwise")


# ----------------------------------------------------------------------------- the compiled kernel
_EXT: dict = {}  # "ok": whether torch.ops.efflab_qmm is usable, "why": the reason when not


def _cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _load_extension() -> None:
    from torch.utils import cpp_extension

    from shared.paths import BUILD

    build = BUILD / "torch_extensions" / "efflab_qmm"
    build.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    cpp_extension.load(name="efflab_qmm", sources=[str(EXT_SOURCE)], extra_cflags=list(EXT_CFLAGS),
                       extra_ldflags=list(EXT_LDFLAGS), build_directory=str(build), is_python_module=False, verbose=False)  # fmt: skip
    logging.getLogger(__name__).info("loaded %s (%.1f s; built in %s with %s)", EXT_SOURCE.name,
                                     time.perf_counter() - start, build, " ".join(EXT_CFLAGS))  # fmt: skip


def extension_available(refresh: bool = False) -> bool:
    """Whether the compiled A8W4 kernels (shared/csrc/a8w4_vnni.cpp, ops ``torch.ops.efflab_qmm``)
    run here: an x86 CPU with :data:`EXT_CPU_FLAGS`, :data:`EXT_ENV` not "0", and a compile that
    succeeded (at the first call, ~10 s, cached under build/torch_extensions/). When not, one
    warning says why and a8w4 runs the fallback kernels. ``refresh``: decide again (tests)."""
    if refresh:
        _EXT.clear()
    if "ok" not in _EXT:
        missing = [f for f in EXT_CPU_FLAGS if f not in _cpu_flags()]
        if os.environ.get(EXT_ENV, "1") == "0":
            why = f"{EXT_ENV}=0"
        elif platform.machine().lower() not in ("x86_64", "amd64") or missing:
            why = f"the CPU lacks {', '.join(missing) or 'x86-64'}"
        else:
            try:
                _load_extension()
                why = None
            except Exception as e:  # no compiler, headers, ninja ...: the fallback kernels still work
                why = f"compiling {EXT_SOURCE.name} failed: {str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__}"
        _EXT.update(ok=why is None, why=why)
        if why:
            warnings.warn(f"shared.qmatmul: the compiled kernels are off ({why}); a8w4 runs the int4pack / int8 kernels, "
                          "w8a8 oneDNN / _int_mm", RuntimeWarning, stacklevel=2)  # fmt: skip
    return _EXT["ok"]


def amx_available() -> bool:
    """The compiled kernels are on, the CPU has :data:`AMX_CPU_FLAGS` and Linux grants the AMX tile state."""
    if "amx" not in _EXT:
        _EXT["amx"] = (extension_available() and all(f in _cpu_flags() for f in AMX_CPU_FLAGS)
                       and bool(torch.ops.efflab_qmm.amx_ok()))  # fmt: skip
    return _EXT["amx"]


# ----------------------------------------------------------------------------- activations
def quantize_tokens(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token symmetric int8: (codes int8 [M, K], scales FP32 [M, 1]) of a 2-D x.
    The same numbers as ``numformats.quantize_blocks(x, per_channel(INT8, axis=0))`` (tested bit
    for bit), in three passes instead of the general quantiser's dozen: it runs at every call."""
    x = x.float()
    if x.device.type == "cpu" and x.dim() == 2 and extension_available():  # the same ops, one vectorised pass
        return torch.ops.efflab_qmm.quantize_rows(x.contiguous())
    s = x.abs().amax(-1, keepdim=True) / nf.INT8.qmax
    codes = torch.round(x / torch.where(s == 0, torch.inf, s)).clamp_(nf.INT8.qmin, nf.INT8.qmax)
    return codes.to(torch.int8), s


# ----------------------------------------------------------------------------- int4 packing
def pack_int4(codes: torch.Tensor) -> torch.Tensor:
    """int8 codes [N, K] in [-8, 7] -> uint8 [N/2, K]: byte (n, k) = (q[n, k] + 8) | (q[n + N/2, k] + 8) << 4."""
    n, k = codes.shape
    if n % 2:
        raise ValueError(f"codes: out_features must be even to pack two int4 rows per byte row (got {n})")
    if codes.min() < -8 or codes.max() > 7:
        raise ValueError(f"codes: int4 codes must lie in [-8, 7] (got [{codes.min().item()}, {codes.max().item()}])")
    u = (codes.to(torch.int16) + 8).to(torch.uint8)
    return (u[: n // 2] | (u[n // 2 :] << 4)).contiguous()


def unpack_int4(packed: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 [N/2, K] -> int8 codes [N, K] in [-8, 7] (the inverse of :func:`pack_int4`): three
    contiguous passes (low nibbles, high nibbles, -8)."""
    half, k = packed.shape
    if out is None:
        out = torch.empty(2 * half, k, dtype=torch.int8, device=packed.device)
    o = out.view(torch.uint8)
    torch.bitwise_and(packed, 0x0F, out=o[:half])
    torch.bitwise_right_shift(packed, 4, out=o[half:])
    return out.sub_(8)


def _check_group(k: int, group: int) -> None:
    if group < 2 or group % 2 or k % group:
        raise ValueError(f"group: must be even and divide in_features={k} (got {group})")


# ----------------------------------------------------------------------------- DGQ scales
def a8w4_from_weight(w: torch.Tensor, group: int = 128, scale_max: int = A8W4_SCALE_MAX):
    """Round-to-nearest A8W4 codes and dual-grained scales of a weight [N, K]:
    (codes int8 [N, K] in [-7, 7], group scales int8 [N, K/group] in [1, scale_max], channel scales FP32 [N]).
    The per-group INT4 scale s (numformats, symmetric, amax/7) is expressed as s_c * s_g with
    s_c = max_groups(s) / scale_max and s_g = ceil(s / s_c) (>= s: no code clips), then the codes
    are re-rounded with the group's effective scale s_c * s_g."""
    _check_group(w.shape[1], group)
    if not 1 <= scale_max <= 127 // nf.INT4.qmax:
        raise ValueError(f"scale_max: must be in [1, {127 // nf.INT4.qmax}] so that codes x scale fit int8 (got {scale_max})")
    w = w.detach().float()
    s = nf.quantize_blocks(w, nf.per_group(nf.INT4, group), full=False).scales  # [N, K/g]
    s_c = s.amax(1) / scale_max
    s_c = torch.where(s_c > 0, s_c, torch.ones_like(s_c))
    s_g = torch.ceil(s / s_c[:, None] - 1e-6).clamp(1, scale_max)  # 1e-6: an exact multiple stays put
    eff = (s_c[:, None] * s_g).repeat_interleave(group, 1)
    codes = nf.quantize_codes(w / eff, nf.INT4)[1]
    return codes, s_g.to(torch.int8), s_c


# ----------------------------------------------------------------------------- the module
class QLinear(nn.Module):
    """y = x W^T + b with W stored in low precision and multiplied by a real low-precision kernel.
    Build with :meth:`from_linear` (or :meth:`from_a8w4_codes`); ``kernel`` says which kernel runs
    ("auto" resolves per call; :meth:`kernel_for` tells which for M tokens)."""

    def __init__(self, scheme: str, in_features: int, out_features: int, group: int | None,
                 kernel: str, bias: torch.Tensor | None):
        super().__init__()
        if scheme not in SCHEMES:
            raise ValueError(f"scheme: {scheme!r} is not an option; allowed: {', '.join(SCHEMES)}")
        if kernel not in KERNELS[scheme]:
            raise ValueError(f"kernel: {kernel!r} is not a kernel of scheme {scheme!r}; allowed: {', '.join(KERNELS[scheme])}")
        self.scheme, self.in_features, self.out_features, self.group, self.kernel = scheme, in_features, out_features, group, kernel
        self.register_buffer("bias", None if bias is None else bias.detach().float().clone())
        self._packed = {}  # kernel-specific prepacked weights (not state: rebuilt from the buffers)

    def extra_repr(self) -> str:
        g = f", group={self.group}" if self.group else ""
        return f"{self.in_features}, {self.out_features}, scheme={self.scheme}{g}, kernel={self.kernel}"

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_linear(cls, linear: nn.Linear, scheme: str = "w8a8", group: int = 128, kernel: str = "auto",
                    symmetric: bool = False) -> QLinear:
        """Quantise ``linear`` (round to nearest). ``group``: along in_features (a8w4, w4);
        ``symmetric``: w4 with symmetric INT4 codes instead of asymmetric (scale + zero point)."""
        w = linear.weight.detach().float()
        n, k = w.shape
        if scheme == "a8w4":
            return cls.from_a8w4_codes(*a8w4_from_weight(w, group), bias=linear.bias, kernel=kernel)
        if scheme == "w4":
            _check_group(k, group)
            q = nf.quantize_blocks(w, nf.per_group(nf.INT4 if symmetric else nf.INT4_ASYM, group))
            if symmetric:  # c in [-7, 7], w = c s: u = c + 8, z = 0
                u, zero = q.codes.to(torch.int16) + 8, torch.zeros_like(q.scales)
            else:
                u, zero = q.codes.to(torch.int16), (8 - q.zero_points) * q.scales
            m = cls("w4", k, n, group, kernel, linear.bias)
            m.register_buffer("packed", pack_int4((u - 8).to(torch.int8)))  # u - 8 in [-8, 7], [N/2, K]
            m.register_buffer("scales", q.scales)  # [N, K/g]
            m.register_buffer("zeros", zero)  # [N, K/g]: w = (u - 8) * scale + zero
            return m
        if scheme in ("w8a8", "w8"):
            q = nf.quantize_blocks(w, INT8_SYM)
            m = cls(scheme, k, n, None, kernel, linear.bias)
            m.register_buffer("codes", q.codes)  # int8 [N, K]
            m.register_buffer("scales", q.scales)  # FP32 [N]
            return m
        raise ValueError(f"scheme: {scheme!r} is not an option; allowed: {', '.join(SCHEMES)}")

    @classmethod
    def from_a8w4_codes(cls, codes: torch.Tensor, group_scales: torch.Tensor, channel_scales: torch.Tensor,
                        bias: torch.Tensor | None = None, kernel: str = "auto") -> QLinear:
        """A8W4 from given DGQ codes [N, K] in [-8, 7], integer group scales [N, K/g] (g = K / their
        columns) and FP32 channel scales [N]: W = channel_scale * codes * group_scale."""
        if codes.dim() != 2:
            raise ValueError(f"codes: must be 2-D [out_features, in_features] (got shape {tuple(codes.shape)})")
        n, k = codes.shape
        if group_scales.dim() != 2 or group_scales.shape[0] != n or group_scales.shape[1] < 1 or k % group_scales.shape[1]:
            raise ValueError(f"group_scales: must be [{n}, in_features / group] (got shape {tuple(group_scales.shape)})")
        if channel_scales.shape != (n,):
            raise ValueError(f"channel_scales: must have shape ({n},) (got {tuple(channel_scales.shape)})")
        if group_scales.is_floating_point() and not torch.equal(group_scales, group_scales.round()):
            raise ValueError("group_scales: must be integers (DGQ folds them into int8 weights)")
        group = k // group_scales.shape[1]
        sg = group_scales.to(torch.int32)
        prod = codes.to(torch.int32).view(n, -1, group) * sg[..., None]
        if prod.min() < -128 or prod.max() > 127:
            raise ValueError(f"group_scales: codes x group scale must fit int8 [-128, 127] (got [{prod.min().item()}, {prod.max().item()}])")
        m = cls("a8w4", k, n, group, kernel, bias)
        m.register_buffer("packed", pack_int4(codes))  # uint8 [N/2, K]
        m.register_buffer("group_scales", group_scales.to(torch.int8).contiguous())  # [N, K/g]
        m.register_buffer("scales", channel_scales.detach().float().clone())  # FP32 [N]
        return m

    # ------------------------------------------------------------------ reference
    def dequantized_weight(self) -> torch.Tensor:
        """W (FP32 [N, K]) from the stored codes and scales."""
        if self.scheme in ("w8a8", "w8"):
            return self.codes.float() * self.scales[:, None]
        if self.scheme == "w4":
            g = self.group
            return (unpack_int4(self.packed).float().view(self.out_features, -1, g) * self.scales[..., None]
                    + self.zeros[..., None]).view(self.out_features, -1)  # fmt: skip
        w8 = self._int8_weight()
        return w8.float() * self.scales[:, None]

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        """Dequantise-then-FP32-matmul of the same codes and scales (A8 schemes: per-token int8 activations)."""
        x2 = x.reshape(-1, self.in_features).float()
        if self.scheme in ("w8a8", "a8w4"):
            q = nf.quantize_blocks(x2, INT8_SYM, full=False)
            x2 = q.values
        y = F.linear(x2, self.dequantized_weight(), self.bias)
        return y.reshape(*x.shape[:-1], self.out_features)

    # ------------------------------------------------------------------ kernels
    def kernel_for(self, m: int, device: torch.device | str = "cpu") -> str:
        """The kernel that runs for ``m`` tokens on ``device`` (a8w4 "vnni" where the compiled
        kernel is off: what "auto" runs without it)."""
        cpu = torch.device(device).type == "cpu"
        if self.kernel == "vnni" and cpu and not extension_available():
            if self.scheme == "w8a8":
                return "onednn" if has_onednn_qlinear() else "int_mm"
            return "int4pack" if m <= A8W4_INT4PACK_MAX_M else "int8"
        if self.kernel == "amx" and cpu and not amx_available():
            return "int8"
        if self.kernel != "auto":
            return self.kernel
        if self.scheme == "w8a8":
            if cpu and m <= W8A8_VNNI_MAX_M and extension_available():
                return "vnni"
            return "onednn" if cpu and has_onednn_qlinear() else "int_mm"
        if self.scheme == "a8w4":
            if cpu and extension_available():
                if amx_available():
                    return "vnni" if m <= A8W4_VNNI_MAX_M else "amx"
                return "vnni" if m <= A8W4_VNNI_NO_AMX_MAX_M else "int8"
            return "int4pack" if m <= A8W4_INT4PACK_MAX_M else "int8"
        if self.scheme == "w8":
            return "int8pack" if m <= W8_INT8PACK_MAX_M else "bf16"
        return KERNELS[self.scheme][1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"x: last dimension must be in_features={self.in_features} (got shape {tuple(x.shape)})")
        x2 = x.reshape(-1, self.in_features)
        kernel = self.kernel_for(x2.shape[0], x.device)
        y = getattr(self, f"_{self.scheme}_{kernel}")(x2)
        if self.bias is not None:
            y = y + self.bias
        return y.to(x.dtype).reshape(*x.shape[:-1], self.out_features)

    def _prepacked(self, key: str, build):
        if key not in self._packed:
            self._packed[key] = build()
        return self._packed[key]

    def _int8_gemm(self, x2: torch.Tensor, w8: torch.Tensor, kernel: str) -> torch.Tensor:
        """(per-token int8 x) @ w8^T * s_x * s_w, FP32 [M, N]; w8 int8 [N, K]."""
        a, sx = quantize_tokens(x2)
        if kernel == "onednn":
            packed = self._prepacked("onednn", lambda: torch.ops.onednn.qlinear_prepack(w8, None))
            zp = self._prepacked("onednn_zp", lambda: torch.zeros(self.out_features, dtype=torch.long))
            acc = torch.ops.onednn.qlinear_pointwise(a, 1.0, 0, packed, self.scales, zp, None, 1.0, 0,
                                                     torch.float32, "none", [None], "")  # fmt: skip
            return acc * sx
        acc = _int_mm(a, w8.t())
        if acc.device.type == "cpu" and extension_available():  # acc.float() * sx * scales in one pass
            return torch.ops.efflab_qmm.scale_int32(acc, sx, self.scales)
        return acc.float() * sx * self.scales

    def _w8a8_onednn(self, x2):
        if x2.device.type != "cpu" or not has_onednn_qlinear():
            raise ValueError(f"kernel: 'onednn' needs torch.ops.onednn on the CPU (x is on {x2.device})")
        return self._int8_gemm(x2, self.codes, "onednn")

    def _w8a8_int_mm(self, x2):
        return self._int8_gemm(x2, self.codes, "int_mm")

    def _w8a8_vnni(self, x2):
        if x2.device.type != "cpu":
            raise ValueError(f"kernel: 'vnni' is a CPU kernel (x is on {x2.device})")
        return torch.ops.efflab_qmm.w8a8_gemv(x2.float().contiguous(), self.codes, self.scales)

    def _int8_weight(self, out: torch.Tensor | None = None) -> torch.Tensor:
        """A8W4: the int8 weight codes * group scales [N, K], unpacked from the int4 storage (into ``out``)."""
        w = unpack_int4(self.packed, out).view(self.out_features, -1, self.group)
        return w.mul_(self.group_scales[..., None]).view(self.out_features, -1)

    def _a8w4_int8(self, x2):
        w8 = _scratch((self.out_features, self.in_features), torch.int8, x2.device)
        if x2.device.type == "cpu" and extension_available():  # one vectorised pass instead of four
            torch.ops.efflab_qmm.a8w4_unpack(self.packed, self.group_scales, w8)
        else:
            self._int8_weight(w8)
        return self._int8_gemm(x2, w8, "int_mm")

    def _a8w4_vnni(self, x2):
        if x2.device.type != "cpu":
            raise ValueError(f"kernel: 'vnni' is a CPU kernel (x is on {x2.device})")
        return torch.ops.efflab_qmm.a8w4_gemm(x2.float().contiguous(), self.packed, self.group_scales, self.scales)

    def _a8w4_amx(self, x2):
        if x2.device.type != "cpu":
            raise ValueError(f"kernel: 'amx' is a CPU kernel (x is on {x2.device})")
        return torch.ops.efflab_qmm.a8w4_amx(x2.float().contiguous(), self.packed, self.group_scales, self.scales)

    def _a8w4_int4pack(self, x2):
        def build():  # group scale s_c * s_g, zero 0: w = (u - 8) * s
            u = unpack_int4(self.packed).to(torch.int32) + 8
            s = self.scales[:, None] * self.group_scales.float()
            return _int4pack(u, s, torch.zeros_like(s), self.group)

        a, sx = quantize_tokens(x2)  # the same int8 activations as the int8 path, given to the kernel in bf16
        return _int4pack_mm(a.float() * sx, self._prepacked("int4pack", build), self.group)

    def _w8_int8pack(self, x2):
        s = self._prepacked("bf16_scales", lambda: self.scales.to(torch.bfloat16))
        return torch.ops.aten._weight_int8pack_mm(x2.to(torch.bfloat16), self.codes, s).float()

    def _w8_bf16(self, x2):  # int8 codes are exact in bf16; the channel scale applies to the output
        w = _scratch((self.out_features, self.in_features), torch.bfloat16, x2.device).copy_(self.codes)
        return F.linear(x2.to(torch.bfloat16), w).float() * self.scales

    def _w4_int4pack(self, x2):
        packed = self._prepacked("int4pack", lambda: _int4pack(unpack_int4(self.packed).to(torch.int32) + 8, self.scales,
                                                               self.zeros, self.group))  # fmt: skip
        return _int4pack_mm(x2, packed, self.group)

    def _apply(self, fn, recurse=True):  # .to(device) / .cuda(): repack for the new device
        self._packed = {}
        return super()._apply(fn, recurse)

    def _load_from_state_dict(self, *args, **kwargs):  # new codes: repack
        self._packed = {}
        return super()._load_from_state_dict(*args, **kwargs)


_SCRATCH: dict = {}


def _scratch(shape: tuple[int, int], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """One buffer per (shape, dtype, device), shared by every layer of that shape: the unpacked
    weight lives only during its GEMM, and a fresh allocation of that size per call costs page
    faults (4096 x 4096: int8 -> bf16 into a new tensor 30 ms, into this buffer 5 ms, one core).
    Not safe for forward calls from several Python threads at once."""
    key = (shape, dtype, torch.device(device))
    if key not in _SCRATCH:
        _SCRATCH[key] = torch.empty(shape, dtype=dtype, device=device)
    return _SCRATCH[key]


def _int_mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """torch._int_mm (int8 [M, K] @ int8 [K, N] -> int32), the token axis padded where CUDA needs it."""
    m = a.shape[0]
    if a.device.type == "cuda" and (m < CUDA_INT_MM_MIN_M or m % 8):
        a = F.pad(a, (0, 0, 0, max(CUDA_INT_MM_MIN_M, -(-m // 8) * 8) - m))
        return torch._int_mm(a, b.contiguous())[:m]
    return torch._int_mm(a, b)


def _int4pack(u: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, group: int) -> tuple:
    """aten's int4 layout of codes u int32 [N, K] in [0, 15] with w = (u - 8) * scale + zero per group."""
    n, k = u.shape
    sz = torch.stack((scales, zeros), -1).transpose(0, 1).contiguous().to(torch.bfloat16)  # [K/g, N, 2]
    if u.device.type == "cuda":
        u8 = u.to(torch.uint8)
        packed = torch.ops.aten._convert_weight_to_int4pack((u8[:, ::2] << 4 | u8[:, 1::2]).contiguous(), 8)
    else:
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(u.contiguous(), 1)
    return packed, sz


def _int4pack_mm(x2: torch.Tensor, packed: tuple, group: int) -> torch.Tensor:
    w, sz = packed
    xb = x2.to(torch.bfloat16)
    if x2.device.type == "cuda":
        return torch.ops.aten._weight_int4pack_mm(xb, w, group, sz).float()
    return torch.ops.aten._weight_int4pack_mm_for_cpu(xb, w, group, sz).float()

