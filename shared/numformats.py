"""Low-precision number formats as data, and quantisers over them: elements, scales, blocks.

    x_hat = numformats.quantize(x, numformats.E4M3)                 # round onto the FP8 grid (RNE, saturating)
    x_hat, codes = numformats.quantize_codes(x, numformats.E2M1)    # ... and the 4-bit codes
    numformats.decode(codes, numformats.E2M1)                        # codes -> values
    q = numformats.quantize_blocks(w, numformats.MXFP4)             # MX: E2M1 elements, E8M0 scale per 32
    q.values, q.codes, q.scales                                      # dequantised, element codes, block scales
    numformats.fake_quant(w, numformats.per_group(numformats.INT4, 128))   # INT4, one FP32 scale per 128
    numformats.fake_quant(x, numformats.per_channel(numformats.INT8, axis=0, clip_percentile=99.9))
    numformats.hadamard(x, block=32, signs=numformats.random_signs(32, g))  # orthonormal rotation
    numformats.bits_per_element(numformats.MXFP4)                    # 4 + 8/32 = 4.25

**Element formats** are frozen dataclasses. A :class:`FloatFormat` is (sign, exponent bits,
mantissa bits, bias, largest finite value, special values, saturation): the OCP 8-bit floats
E4M3 ("fn": no infinities, S.1111.111 is NaN, max 448) and E5M2 (IEEE-like, max 57344), the OCP
MX elements FP6 E3M2 (max 28) / E2M3 (max 7.5) and FP4 E2M1 (±{0, .5, 1, 1.5, 2, 3, 4, 6}), and
the scale formats E8M0 (2^-127..2^127, no zero, no sign, 0xFF is NaN), E4M3 (NVFP4's block
scale: 8 bits, sign 0) and UE5M3. An :class:`IntFormat` is INT8/INT4, symmetric (codes in
[-(2^(b-1)-1), 2^(b-1)-1], zero point 0) or asymmetric (codes in [0, 2^b-1] and a zero point).

**UE5M3.** The FP4-design-space paper (Hu, Luschi, Balanca, arXiv 2509.17791) says in its
abstract (read with the search tool) that "UE5M3 as a scaling factor" offers "a good compromise
between range and precision"; the project's notes on the paper call it an 8-bit unsigned format
with a 5-bit exponent and a 3-bit mantissa. The body of the paper, with the exact definition,
was not reachable, so we ASSUME the E4M3-fn convention moved to 5 exponent bits: bias 15,
subnormals, no infinities, the all-ones code 0xFF is NaN. Then the largest value is
2^16 x 1.75 = 114688, the smallest normal 2^-14, the smallest subnormal 2^-17: ~2^33.8 of range
at E4M3's precision (E4M3: 2^-9..448, ~2^17.8). Change :data:`UE5M3` if the paper's definition
differs (with every code finite the max would be 2^16 x 1.875 = 122880).

**Rounding onto a float grid** (:func:`quantize`), vectorised in FP32 (other dtypes are cast to
FP32 first and the result back to x's dtype; float64 inputs are thus rounded twice): for |x| in the binade
[2^e, 2^(e+1)) (2^e read off x's FP32 exponent bits, clamped below at the format's smallest
normal, which makes the subnormals come out by themselves) the grid step is 2^(e - mbits);
|x| / step is rounded (``nearest``: round-half-to-even, as IEEE and the OCP specs;
``stochastic``: floor(|x|/step + u), u ~ U[0, 1), so E[q(x)] = x for |x| <= max, up to the FP32
rounding of that sum, ~2^-20 of a step) and multiplied back; both are exact (powers of two).
Values beyond the largest finite value saturate to it (the OCP MX spec v1.0 rule for
conversions to MX elements; ``dataclasses.replace(fmt, saturate=False)`` gives IEEE overflow
instead: inf for E5M2, NaN for E4M3). NaN stays NaN. E8M0 has no zero: it clamps at 2^-127.
Tested (tests/shared/test_numformats.py) against torch's casts on every finite fp16 value:
``float8_e4m3fn`` (torch's CPU cast saturates too: equal everywhere), ``float8_e5m2`` (IEEE
overflow: equal to ``saturate=False`` everywhere, to ours in range), on every normal bf16 in range
against ``float8_e8m0fnu`` (torch rounds FP32 subnormals by their bit pattern instead), and
FP4/FP6 against torch's private ``_f32_to_floatx_unpacked`` (torchao's) on every fp16 value.

**Scaled quantisation** (:func:`quantize_blocks`): a :class:`Scheme` says the element format,
the granularity (``tensor``; ``channel``: one scale per index of ``axis``; ``group``: one scale per
``group`` consecutive elements along ``axis``, the axis zero-padded at its end to a multiple of
``group``, the padding dropped again on return), the scale format (None: FP32 scales), how the
block scale is chosen from the block's amax, an optional FP32 second-level tensor scale, optional
percentile clipping (amax := the p-th percentile of |x| in the block, nearest rank; asymmetric
integers clip x to its (100-p)-th and p-th percentiles; a padded last group counts its zero
padding), and the rounding of the elements. Scale rules:

- ``ocp`` (the OCP MX spec v1.0's conversion): X = 2^(floor(log2 amax) - emax_elem), i.e. the
  scale format rounds amax / 2^emax_elem DOWN; elements = quantize(v / X), saturating. Elements
  of the largest binade may clip (MXFP4: amax = 7.9 X -> 6 X); that is the rule. A NaN in a
  block makes its scale NaN (E8M0 0xFF) and the whole block NaN; an all-zero block gets 2^-127.
- ``nearest``: s = Q_scale(amax / max_elem), round to nearest (NVFP4; the FP4 paper's s = Q(amax/6)).
- ``ceil``: s = Q_scale(amax / max_elem) rounded UP, so no element saturates (torchao's RCEIL).

With ``tensor_scale`` an FP32 t = amax_tensor / (max_elem * max_scale) is divided out first, so
the block scales use the scale format's full range: x_hat = t * s * R(x / (t s)) (NVFP4's
second level; the FP4 paper's "tensor scaling"). A scale that underflows to 0 zeroes its block.
Integer elements: symmetric s = amax / qmax, codes = clamp(round(x / s)); asymmetric over
[min(x, 0), max(x, 0)]: s = (hi - lo) / (2^b - 1), z = round(-lo / s), codes = clamp(round(x/s) + z).

**Hadamard** (:func:`hadamard`): the normalised fast Walsh-Hadamard transform along an axis, in
log2(n) vectorised butterfly stages, blockwise (block-diagonal H) when the block is smaller than
the axis, optionally after a random ±1 diagonal: x -> (x * signs) H / sqrt(n), orthogonal, so
(X R)(W R)^T = X W^T. ``inverse=True`` undoes it.

Fake-quant autograd functions and modules (STE, clipped STE, QuantLinear) are in
:mod:`shared.fakequant`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F

ROUNDINGS = ("nearest", "stochastic")  # of a Scheme's elements
ELEMENT_ROUNDINGS = ROUNDINGS + ("up", "down")  # quantize(): also toward +-inf in magnitude (ceil, floor)
GRANULARITIES = ("tensor", "channel", "group")
SCALE_RULES = ("ocp", "nearest", "ceil")
MX_BLOCK = 32  # OCP MX v1.0: 32 elements share one E8M0 scale
NV_BLOCK = 16  # NVFP4: 16 elements share one E4M3 scale
FP32_BITS = 32  # bits of an unquantised (FP32) scale or zero point


# ----------------------------------------------------------------------------- element formats
@dataclass(frozen=True)
class FloatFormat:
    """A sign/exponent/mantissa format. Value of a normal code: 2^(E - bias) * (1 + M / 2^mbits)."""

    name: str
    ebits: int
    mbits: int
    bias: int
    max: float  # largest finite value
    signed: bool = True
    specials: Literal["none", "fn", "ieee"] = "none"  # none: every code finite; fn: all-ones code is
    # NaN, no inf (E4M3, E8M0); ieee: exponent all ones is inf (M = 0) or NaN (E5M2)
    subnormals: bool = True  # False: exponent code 0 is 2^-bias, no zero (E8M0)
    saturate: bool = True  # out-of-range values clamp to +-max (OCP MX rule); False: IEEE overflow

    @property
    def bits(self) -> int:
        return int(self.signed) + self.ebits + self.mbits

    @property
    def emin(self) -> int:
        """Exponent of the smallest normal value."""
        return 1 - self.bias if self.subnormals else -self.bias

    @property
    def emax(self) -> int:
        """Exponent of the largest finite value (the OCP spec's emax_elem)."""
        return math.floor(math.log2(self.max))

    @property
    def min_normal(self) -> float:
        return 2.0**self.emin

    @property
    def min_subnormal(self) -> float:
        return 2.0 ** (self.emin - self.mbits) if self.subnormals else 2.0**self.emin

    @property
    def nan_code(self) -> int | None:
        return None if self.specials == "none" else (1 << (self.ebits + self.mbits)) - 1

    def values(self) -> torch.Tensor:
        """Every finite non-negative value of the format, ascending (FP32)."""
        v = decode(torch.arange(1 << (self.ebits + self.mbits)), self)
        return v[torch.isfinite(v)].unique()


@dataclass(frozen=True)
class IntFormat:
    """b-bit integers: symmetric codes in [-(2^(b-1)-1), 2^(b-1)-1], asymmetric in [0, 2^b-1] + a zero point."""

    name: str
    bits: int
    symmetric: bool = True

    @property
    def qmin(self) -> int:
        return -(2 ** (self.bits - 1) - 1) if self.symmetric else 0

    @property
    def qmax(self) -> int:
        return 2 ** (self.bits - 1) - 1 if self.symmetric else 2**self.bits - 1

    @property
    def max(self) -> float:
        return float(self.qmax)


Format = FloatFormat | IntFormat

E4M3 = FloatFormat("e4m3", 4, 3, 7, 448.0, specials="fn")  # OCP FP8 E4M3 ("fn"), torch.float8_e4m3fn
E5M2 = FloatFormat("e5m2", 5, 2, 15, 57344.0, specials="ieee")  # OCP FP8 E5M2, torch.float8_e5m2
E3M2 = FloatFormat("e3m2", 3, 2, 3, 28.0)  # OCP MX FP6
E2M3 = FloatFormat("e2m3", 2, 3, 1, 7.5)  # OCP MX FP6
E2M1 = FloatFormat("e2m1", 2, 1, 1, 6.0)  # OCP MX FP4: +-{0, .5, 1, 1.5, 2, 3, 4, 6}
E8M0 = FloatFormat("e8m0", 8, 0, 127, 2.0**127, signed=False, specials="fn", subnormals=False)  # MX scale
UE5M3 = FloatFormat("ue5m3", 5, 3, 15, 2.0**16 * 1.75, signed=False, specials="fn")  # assumed, see docstring
INT8 = IntFormat("int8", 8)
INT4 = IntFormat("int4", 4)
INT8_ASYM = IntFormat("int8_asym", 8, symmetric=False)
INT4_ASYM = IntFormat("int4_asym", 4, symmetric=False)
FORMATS = {f.name: f for f in (E4M3, E5M2, E3M2, E2M3, E2M1, E8M0, UE5M3, INT8, INT4, INT8_ASYM, INT4_ASYM)}


def get_format(name: str | Format) -> Format:
    """A format by name (``"e2m1"``, ``"int4_asym"``, ...) or the format itself."""
    if isinstance(name, (FloatFormat, IntFormat)):
        return name
    if name not in FORMATS:
        raise ValueError(f"format: {name!r} is not a format; known: {', '.join(FORMATS)}")
    return FORMATS[name]


# ----------------------------------------------------------------------------- element rounding
def _check_rounding(rounding: str) -> None:
    if rounding not in ELEMENT_ROUNDINGS:
        raise ValueError(f"rounding: {rounding!r} is not an option; allowed: {', '.join(ELEMENT_ROUNDINGS)}")


def _round(v: torch.Tensor, rounding: str, generator: torch.Generator | None) -> torch.Tensor:
    """Round v (in units of the grid step) to an integer: half to even, stochastic, ceil or floor."""
    if rounding == "nearest":
        return torch.round(v)  # half to even
    if rounding == "stochastic":
        return torch.floor(v + torch.rand(v.shape, generator=generator, device=v.device, dtype=v.dtype))
    return torch.ceil(v) if rounding == "up" else torch.floor(v)


def _binade(a: torch.Tensor) -> torch.Tensor:
    """2^floor(log2 a) for FP32 a >= 0 (its exponent bits alone); 0 for 0 and FP32 subnormals, inf for inf/NaN."""
    return (a.view(torch.int32) & 0x7F800000).view(torch.float32)


def _float_round(x: torch.Tensor, fmt: FloatFormat, rounding: str, generator) -> torch.Tensor:
    """x (FP32) rounded onto fmt's grid, sign kept, saturated or overflowed as fmt says; NaN stays NaN."""
    a = x.abs()
    if fmt.saturate:
        a = a.clamp(max=fmt.max)  # clamp-then-round == round-then-clamp: max is on the grid
    step = _binade(a).clamp(min=fmt.min_normal) * 2.0**-fmt.mbits  # exact powers of two
    q = _round(a / step, rounding, generator) * step  # inf / NaN: NaN
    if not fmt.subnormals:
        q = q.clamp(min=fmt.min_normal)  # no zero code (E8M0)
    if not fmt.saturate:  # (saturating: a <= max and max is on the grid, so q <= max already)
        overflow = torch.isinf(a) | (q > fmt.max)
        q = torch.where(overflow, torch.full_like(q, math.inf if fmt.specials == "ieee" else math.nan), q)
    return torch.copysign(q, x) if fmt.signed else q


def _int_round(x: torch.Tensor, fmt: IntFormat, rounding: str, generator) -> torch.Tensor:
    """x (FP32, in units of the scale, zero point added) rounded to an integer code, clamped."""
    if rounding in ("up", "down"):  # of the magnitude, as for floats
        return torch.copysign(_round(x.abs(), rounding, generator), x).clamp(fmt.qmin, fmt.qmax)
    return _round(x, rounding, generator).clamp(fmt.qmin, fmt.qmax)  # floor(x + u): unbiased for either sign


def quantize(x: torch.Tensor, fmt: Format | str, rounding: str = "nearest",
             generator: torch.Generator | None = None) -> torch.Tensor:
    """x rounded onto the element format's own grid (no scale), in x's dtype (fake-quant).
    rounding: nearest (half to even), stochastic (unbiased), up / down (of the magnitude)."""
    return quantize_codes(x, fmt, rounding, generator)[0]


def quantize_codes(x: torch.Tensor, fmt: Format | str, rounding: str = "nearest",
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(values in x's dtype, codes): float formats give their bit patterns (uint8, low bits),
    integer formats their integer codes (int8 for symmetric, uint8 for asymmetric)."""
    fmt = get_format(fmt)
    _check_rounding(rounding)
    xf = x.float()
    if isinstance(fmt, IntFormat):
        q = _int_round(xf, fmt, rounding, generator)
        return q.to(x.dtype), q.to(torch.int8 if fmt.symmetric else torch.uint8)
    q = _float_round(xf, fmt, rounding, generator)
    return q.to(x.dtype), encode(q, fmt)


def encode(q: torch.Tensor, fmt: FloatFormat) -> torch.Tensor:
    """Bit patterns (uint8) of values already on fmt's grid (as :func:`quantize` returns them)."""
    a = q.float().abs()
    bits = a.view(torch.int32)
    e = ((bits >> 23) & 0xFF) - 127  # FP32 exponent; -127 for 0 and FP32 subnormals (E8M0's 2^-127)
    code = ((e + fmt.bias) << fmt.mbits) | ((bits >> (23 - fmt.mbits)) & ((1 << fmt.mbits) - 1))
    if fmt.subnormals:
        code = torch.where(a < fmt.min_normal, (a * 2.0 ** (fmt.mbits - fmt.emin)).to(torch.int32), code)
    if fmt.specials == "ieee":
        code = torch.where(torch.isinf(a), ((1 << fmt.ebits) - 1) << fmt.mbits, code)
    if fmt.nan_code is not None:
        code = torch.where(torch.isnan(a), fmt.nan_code, code)
    if fmt.signed:
        code = code | (torch.signbit(q).to(torch.int32) << (fmt.ebits + fmt.mbits))
    return code.to(torch.uint8)


def decode(codes: torch.Tensor, fmt: Format | str) -> torch.Tensor:
    """Values (FP32) of codes: bit patterns for float formats, integer codes for integer formats."""
    fmt = get_format(fmt)
    if isinstance(fmt, IntFormat):
        return codes.float()
    c = codes.to(torch.int32)
    nbits = fmt.ebits + fmt.mbits
    mant = (c & ((1 << fmt.mbits) - 1)).float()
    field = (c >> fmt.mbits) & ((1 << fmt.ebits) - 1)
    sub = (field == 0) & fmt.subnormals
    e = torch.where(sub, torch.full_like(field, fmt.emin), field - fmt.bias)
    v = torch.ldexp(torch.where(sub, mant, mant + (1 << fmt.mbits)), e - fmt.mbits)
    magnitude = c & ((1 << nbits) - 1)
    if fmt.specials == "fn":
        v = torch.where(magnitude == fmt.nan_code, torch.full_like(v, math.nan), v)
    elif fmt.specials == "ieee":
        top = field == (1 << fmt.ebits) - 1
        v = torch.where(top, torch.where(mant == 0, math.inf, math.nan), v)
    if fmt.signed:
        v = torch.where(((c >> nbits) & 1).bool(), -v, v)
    return v


# ----------------------------------------------------------------------------- schemes
@dataclass(frozen=True)
class Scheme:
    """How a tensor is quantised: element format, granularity, scale format and rule, rounding."""

    element: Format
    granularity: Literal["tensor", "channel", "group"] = "group"
    group: int = MX_BLOCK  # elements per scale (granularity="group")
    axis: int = -1  # group: the axis the groups run along; channel: the axis that keeps one scale per index
    scale_format: FloatFormat | None = None  # None: FP32 scales
    scale_rule: Literal["ocp", "nearest", "ceil"] = "nearest"
    tensor_scale: bool = False  # an FP32 second-level scale (NVFP4; the FP4 paper's tensor scaling)
    clip_percentile: float | None = None  # amax := this percentile of |x| per block (None: the max)
    rounding: Literal["nearest", "stochastic"] = "nearest"  # of the elements

    def __post_init__(self):
        object.__setattr__(self, "element", get_format(self.element))
        if isinstance(self.scale_format, str):
            object.__setattr__(self, "scale_format", get_format(self.scale_format))
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"granularity: {self.granularity!r} is not an option; allowed: {', '.join(GRANULARITIES)}")
        if self.group < 1:
            raise ValueError(f"group: must be >= 1 (got {self.group})")
        if self.scale_rule not in SCALE_RULES:
            raise ValueError(f"scale_rule: {self.scale_rule!r} is not an option; allowed: {', '.join(SCALE_RULES)}")
        if self.scale_rule == "ocp" and not isinstance(self.element, FloatFormat):
            raise ValueError(f"scale_rule: 'ocp' needs a float element format (got {self.element.name})")
        if self.scale_format is not None and not isinstance(self.scale_format, FloatFormat):
            raise ValueError(f"scale_format: must be a float format or None (got {self.scale_format})")
        if self.clip_percentile is not None and not 0 < self.clip_percentile <= 100:
            raise ValueError(f"clip_percentile: must be in (0, 100] (got {self.clip_percentile})")
        if self.rounding not in ROUNDINGS:
            raise ValueError(f"rounding: {self.rounding!r} is not an option; allowed: {', '.join(ROUNDINGS)}")

    def with_(self, **changes) -> Scheme:
        return replace(self, **changes)


def per_tensor(element: Format | str, **kw) -> Scheme:
    return Scheme(get_format(element), granularity="tensor", **kw)


def per_channel(element: Format | str, axis: int = 0, **kw) -> Scheme:
    """One scale per index of ``axis`` (a weight [out, in]: axis=0 is per output channel)."""
    return Scheme(get_format(element), granularity="channel", axis=axis, **kw)


def per_group(element: Format | str, group: int, axis: int = -1, **kw) -> Scheme:
    """One scale per ``group`` consecutive elements along ``axis``."""
    return Scheme(get_format(element), granularity="group", group=group, axis=axis, **kw)


def mx(element: Format | str, scale_format: FloatFormat | str = E8M0, block: int = MX_BLOCK, **kw) -> Scheme:
    """A microscaling block format: ``block`` elements along the last axis share one scale.
    E8M0 scales follow the OCP rule by default; other scale formats round amax/max_elem to nearest."""
    scale_format = get_format(scale_format)
    kw.setdefault("scale_rule", "ocp" if scale_format == E8M0 else "nearest")
    return Scheme(get_format(element), granularity="group", group=block, scale_format=scale_format, **kw)


MXFP8_E4M3 = mx(E4M3)
MXFP8_E5M2 = mx(E5M2)
MXFP6_E3M2 = mx(E3M2)
MXFP6_E2M3 = mx(E2M3)
MXFP4 = mx(E2M1)
NVFP4 = mx(E2M1, E4M3, block=NV_BLOCK, tensor_scale=True)  # scales are positive: E4M3's sign bit is 0
SCHEMES = {"mxfp8_e4m3": MXFP8_E4M3, "mxfp8_e5m2": MXFP8_E5M2, "mxfp6_e3m2": MXFP6_E3M2,
           "mxfp6_e2m3": MXFP6_E2M3, "mxfp4": MXFP4, "nvfp4": NVFP4}


# ----------------------------------------------------------------------------- blocks
def _blocks(x: torch.Tensor, s: Scheme):
    """x as [n_blocks, block_len] (the scheme's layout) and a function mapping it back to x's shape."""
    if s.granularity == "tensor":
        return x.reshape(1, -1), (lambda b: b.reshape(x.shape)), (1,)
    if not -x.dim() <= s.axis < x.dim():
        raise ValueError(f"axis: {s.axis} is out of range for a tensor of {x.dim()} dims")
    if s.granularity == "channel":
        xt = x.movedim(s.axis, 0)
        return xt.reshape(xt.shape[0], -1), (lambda b: b.reshape(xt.shape).movedim(0, s.axis)), (xt.shape[0],)
    xt = x.movedim(s.axis, -1)
    n = xt.shape[-1]
    pad = (-n) % s.group
    xp = F.pad(xt, (0, pad)) if pad else xt
    grid = (*xp.shape[:-1], xp.shape[-1] // s.group)
    return xp.reshape(-1, s.group), (lambda b: b.reshape(xp.shape)[..., :n].movedim(-1, s.axis)), grid


def _percentile(v: torch.Tensor, p: float) -> torch.Tensor:
    """The p-th percentile (nearest rank) of each row of v, keepdim."""
    k = max(1, math.ceil(p / 100 * v.shape[-1]))
    return v.kthvalue(k, dim=-1, keepdim=True).values


class Quantized(NamedTuple):
    values: torch.Tensor  # dequantised, x's shape and dtype
    codes: torch.Tensor | None  # element codes, x's shape (uint8 bit patterns / int8 / uint8 integers)
    scales: torch.Tensor  # block scales (FP32 values, on the scale format's grid), shaped as the block grid
    zero_points: torch.Tensor | None  # asymmetric integers: per block
    tensor_scale: torch.Tensor | None  # the FP32 second-level scale
    in_range: torch.Tensor | None  # bool, x's shape: the element did not clip (for the clipped STE)


def _scale_round(v: torch.Tensor, fmt: FloatFormat | None, how: str) -> torch.Tensor:
    if fmt is None:
        return v
    return _float_round(v, fmt, {"ocp": "down", "nearest": "nearest", "ceil": "up"}[how], None)


def quantize_blocks(x: torch.Tensor, scheme: Scheme, generator: torch.Generator | None = None,
                    full: bool = True) -> Quantized:
    """Quantise x with a scale per block (see the module docstring); all blocks at once.
    ``full=False`` skips the element codes and the in-range mask (None in the result): faster."""
    s = scheme
    el = s.element
    xb, back, grid = _blocks(x.float(), s)
    mag = xb.abs()
    t = None
    if s.tensor_scale:
        top = (el.max * s.scale_format.max) if s.scale_format is not None else el.max
        t = mag.amax() / top
        t = torch.where(t > 0, t, torch.ones_like(t))
        xb = xb / t
        mag = xb.abs()
    z = None
    if isinstance(el, IntFormat) and not el.symmetric:
        lo, hi = xb.amin(-1, keepdim=True).clamp(max=0), xb.amax(-1, keepdim=True).clamp(min=0)
        if s.clip_percentile is not None:  # x's (100 - p)-th and p-th percentiles
            lo = _percentile(xb, 100 - s.clip_percentile).clamp(max=0)
            hi = _percentile(xb, s.clip_percentile).clamp(min=0)
        scale = _scale_round((hi - lo) / el.qmax, s.scale_format, s.scale_rule)
        safe = torch.where(scale == 0, torch.ones_like(scale), scale)  # a zero block: codes = z
        z = torch.round(-lo / safe).clamp(0, el.qmax)
        u = xb / safe + z
        codes = _int_round(u, el, s.rounding, generator)
        in_range = ((u >= 0) & (u <= el.qmax)) if full else None
        deq = (codes - z) * scale
    else:
        amax = mag.amax(-1, keepdim=True) if s.clip_percentile is None else _percentile(mag, s.clip_percentile)
        if s.scale_rule == "ocp":  # X = 2^(floor(log2 amax) - emax_elem)
            scale = _scale_round(amax / 2.0**el.emax, s.scale_format, "ocp")
        else:
            scale = _scale_round(amax / el.max, s.scale_format, s.scale_rule)
        u = xb / torch.where(scale == 0, math.inf, scale)  # a zero scale zeroes its block, a NaN one NaNs it
        in_range = (u.abs() <= el.max) if full else None
        if isinstance(el, IntFormat):
            codes = _int_round(u, el, s.rounding, generator)
            deq = codes * scale
        else:
            q = _float_round(u, el, s.rounding, generator)
            codes, deq = encode(q, el) if full else None, q * scale
    if t is not None:
        deq = deq * t
    if isinstance(el, IntFormat):
        codes = codes.to(torch.int8 if el.symmetric else torch.uint8)
    return Quantized(
        values=back(deq).to(x.dtype),
        codes=back(codes) if full else None,
        scales=scale.reshape(grid),
        zero_points=None if z is None else z.reshape(grid),
        tensor_scale=t,
        in_range=back(in_range) if full else None,
    )


def fake_quant(x: torch.Tensor, scheme: Scheme | None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Dequantised x under the scheme (x itself for None). No gradient: see shared.fakequant."""
    return x if scheme is None else quantize_blocks(x, scheme, generator, full=False).values


# ----------------------------------------------------------------------------- Hadamard
def random_signs(n: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """A random ±1 vector (FP32), the diagonal of a randomised Hadamard rotation."""
    return torch.randint(0, 2, (n,), generator=generator, device=device).float() * 2 - 1


def hadamard(x: torch.Tensor, block: int | None = None, signs: torch.Tensor | None = None,
             axis: int = -1, inverse: bool = False) -> torch.Tensor:
    """x rotated along ``axis`` by the orthonormal block-diagonal Hadamard matrix (block: a power
    of two dividing the axis; None: the largest power of two that divides it), after multiplying
    by ``signs`` (length = the axis). ``inverse`` applies the transpose."""
    n = x.shape[axis]
    if block is None:
        block = n & -n  # largest power of two dividing n
    if block < 1 or block & (block - 1) or n % block:
        raise ValueError(f"block: must be a power of two dividing the axis length {n} (got {block})")
    if signs is not None and signs.shape != (n,):
        raise ValueError(f"signs: must have shape ({n},) (got {tuple(signs.shape)})")
    y = x.movedim(axis, -1)
    if signs is not None and not inverse:
        y = y * signs.to(device=y.device, dtype=y.dtype)
    shape = y.shape
    y = y.reshape(-1, n // block, block)
    h = 1
    while h < block:  # butterflies: pairs (i, i + h) inside each 2h-chunk
        y = y.reshape(y.shape[0], -1, 2, h)
        a, b = y[:, :, 0], y[:, :, 1]
        y = torch.stack((a + b, a - b), dim=2)
        h *= 2
    y = (y.reshape(shape) / math.sqrt(block))
    if signs is not None and inverse:
        y = y * signs.to(device=y.device, dtype=y.dtype)
    return y.movedim(-1, axis)


# ----------------------------------------------------------------------------- cost
def bits_per_element(scheme: Scheme | Format, numel: int | None = None, channel_len: int | None = None) -> float:
    """Storage bits per element, scale overhead included (MXFP4: 4 + 8/32 = 4.25). A zero point
    costs the element width (asymmetric integers); an FP32 tensor scale costs 32/numel when
    ``numel`` is given; per-channel needs ``channel_len`` (elements that share one scale)."""
    if isinstance(scheme, (FloatFormat, IntFormat, str)):
        return float(get_format(scheme).bits)
    el = scheme.element
    per_scale = {"group": scheme.group, "channel": channel_len, "tensor": numel}[scheme.granularity]
    if per_scale is None:
        arg = "channel_len" if scheme.granularity == "channel" else "numel"
        raise ValueError(f"{arg}: needed for granularity={scheme.granularity!r}")
    scale_bits = FP32_BITS if scheme.scale_format is None else scheme.scale_format.bits
    if isinstance(el, IntFormat) and not el.symmetric:
        scale_bits += el.bits
    bits = el.bits + scale_bits / per_scale
    if scheme.tensor_scale and numel:
        bits += FP32_BITS / numel
    return bits
