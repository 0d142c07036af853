"""Efficiency metrics: memory, compute utilization, latency, throughput, energy, compression.

EfficientLLM (Yuan et al. 2025, arXiv 2505.13840, §5.1) measures every technique with six
metrics; the resource-efficiency survey (Bai et al. 2024, arXiv 2401.00625) groups the same
quantities by resource (computation, memory, energy, ...) and adds compression ratio,
fidelity and Pareto optimality. This module measures them on whatever machine it runs on and
labels every number that is not a direct measurement.

The paper's definitions and how we read them. The equations were transcribed from secondary
sources that quote §5.1 (a detailed summary of the paper and a re-implementation that
copies its formulas), not from the PDF, which was not available offline; check before
quoting them as the paper's own typography.

    Eq. 1  AMU = (1/T) ∫ Memory_Used(t) dt
           Time-averaged memory. The paper's tables give GB, not a fraction of capacity, so
           we report bytes: this process's RSS on CPU, torch's allocated memory on CUDA,
           sampled by `MemorySampler` and averaged over time (trapezoid rule).
    Eq. 2  PCU = (1/T) ∫ Actual_GPU_Utilization(t) / Peak_GPU_Utilization dt
           The paper reads the GPU's utilization counter. We read it as FLOP utilization:
           achieved FLOP/s over the device's peak FLOP/s (`compute_utilization`), with the
           FLOPs counted analytically (shared.zoo.forward_flops_per_token) and cross-checked
           with torch's FlopCounterMode (`count_flops`). NVML's "utilization" is the fraction
           of time any kernel runs (100% for a GPU busy with tiny kernels) and does not exist
           on a CPU; the FLOP ratio means the same thing on both.
    Eq. 3  AL = Σ_i (Computation_Time_i + Communication_Time_i) / N
           Mean seconds per iteration or request; one process has no communication time.
           `measure` reports the mean (AL) and the median with its IQR (robust to a
           descheduled outlier on a shared machine).
    Eq. 4  TT = Σ_i (Tokens_i / Params) / Σ_i Time_i       pretraining, tokens/param/s
    Eq. 5  ST = Σ_i (Samples_i / Params) / Σ_i Time_i      fine-tuning, samples/param/s
    Eq. 6  IT = Σ_i Generated_Tokens_i / Σ_i Time_i        inference, tokens/s
           Taken literally: per-parameter normalisation in TT and ST, none in IT.
    Eq. 7  E = ∫ P(t) dt                                    energy of the run, joules
    Eq. 8  AEC = E / T                                      average power, watts (the tables give W)
           E from a hardware counter (NVML total-energy on a GPU, RAPL on an Intel CPU) when
           one is readable, else from an explicit power model labelled "estimate".
    Eq. 9  MCR = (Size_original / Size_compressed) × (Performance_compressed / Performance_original)
           Size reduction discounted by performance retention. For a lower-is-better
           performance (perplexity, loss) we invert the retention ratio, so MCR still
           falls when quality drops (`compression_rate(..., higher_is_better=False)`).

What is measured and what is estimated is always in the result: `peak_source` of a FLOP
peak ("measured: ..." or "table: ..."), `source` of an energy reading ("NVML ...", "RAPL ...",
or "estimate ..."), `peak_source` of a memory peak (exact VmHWM or sampled).

The harness must not change what it measures: the memory sampler is one thread that wakes
every `interval_s` to read one counter, and `measure` keeps the FLOP-peak GEMM and all
bookkeeping outside the timed calls (benchmarks/bench_metrics_overhead.py: < 2%).
"""

from __future__ import annotations

import math
import numbers
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import psutil
import torch

from shared.progress import silent
from shared.timing import synchronize

# ---------------------------------------------------------------------------------------
# Defaults, all in one place
# ---------------------------------------------------------------------------------------
# Memory sampler period. Each sample wakes a thread that needs the GIL for a few us; on an
# idle machine that is nothing, but on an oversubscribed one a wake-up can cost the measured
# thread its core for a scheduler slice: in one run with 3x more runnable processes than
# cores, 10 ms added 3.5% to a 0.12 s forward, 50 ms was within noise (bench_metrics_overhead).
# The peak does not depend on it (the kernel's high-water mark is exact); the average of a
# window shorter than ~0.5 s gets few samples: pass a smaller interval_s for those.
SAMPLE_INTERVAL_S = 0.05
GEMM_N = 2048  # the CPU (or unknown GPU) FLOP peak is measured with an N x N x N matmul ...
GEMM_REPEATS = 5  # ... best of this many, after one warm-up
RAPL_ROOT = Path("/sys/class/powercap")  # Linux powercap sysfs (tests point it at a fake tree)

# The energy model used when no power counter is readable (see `estimate_energy_j`):
#   P = idle + (tdp - idle) * utilisation, per logical CPU visible to this process.
# This machine's CPU has AMX, i.e. a 4th-generation Xeon; a Xeon Platinum 8480+ is 350 W for
# 112 threads (3.1 W each), a Xeon Gold 6430 270 W for 64 (4.2 W): 3.5 W per thread, idle ~30%.
CPU_TDP_W_PER_THREAD = 3.5
CPU_IDLE_W_PER_THREAD = 1.0
GPU_DEFAULT_TDP_W = 700.0  # an unknown GPU without NVML: assume an H100 SXM-class board

# Dense peak TFLOP/s (no 2:4 sparsity: the datasheets' "with sparsity" figure halved) and
# board power, from NVIDIA's datasheets. A name matches an entry when it contains every
# keyword (upper-case); the first match wins, so the more specific entries come first.
GPU_SPECS: list[tuple[tuple[str, ...], str, dict[str, float], float]] = [
    (("GH200",), "GH200 (H100 SXM compute)", {"bf16": 989.4, "fp16": 989.4, "tf32": 494.7, "fp32": 66.9}, 1000.0),
    (("H200", "NVL"), "H200 NVL", {"bf16": 835.5, "fp16": 835.5, "tf32": 417.5, "fp32": 60.0}, 600.0),
    (("H200",), "H200 SXM", {"bf16": 989.4, "fp16": 989.4, "tf32": 494.7, "fp32": 66.9}, 700.0),
    (("H100", "NVL"), "H100 NVL", {"bf16": 835.5, "fp16": 835.5, "tf32": 417.5, "fp32": 60.0}, 400.0),
    (("H100", "PCIE"), "H100 PCIe", {"bf16": 756.5, "fp16": 756.5, "tf32": 378.0, "fp32": 51.2}, 350.0),
    (("H100",), "H100 SXM", {"bf16": 989.4, "fp16": 989.4, "tf32": 494.7, "fp32": 66.9}, 700.0),
    (("A100", "SXM"), "A100 SXM", {"bf16": 312.0, "fp16": 312.0, "tf32": 156.0, "fp32": 19.5}, 400.0),
    (("A100",), "A100 PCIe", {"bf16": 312.0, "fp16": 312.0, "tf32": 156.0, "fp32": 19.5}, 300.0),
]
_DTYPE_KEYS = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}


def _device(device) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device: {str(device)!r} is not supported; allowed: cpu, cuda, cuda:N")
    return dev


# ---------------------------------------------------------------------------------------
# Memory (Eq. 1, AMU): a sampler thread, and the bytes a model's tensors really occupy
# ---------------------------------------------------------------------------------------
def time_average(values: Sequence[float], times: Sequence[float]) -> float:
    """(1/T) ∫ v(t) dt by the trapezoid rule over samples (Eq. 1's time average)."""
    values, times = np.asarray(values, dtype=float), np.asarray(times, dtype=float)
    if len(values) == 0 or len(values) != len(times):
        raise ValueError(f"values/times: need equal, non-zero lengths, got {len(values)} and {len(times)}")
    span = times[-1] - times[0]
    return float(values.mean()) if span <= 0 else float(np.trapezoid(values, times) / span)


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_statm: tuple[int, int] | None = None  # (pid, fd of /proc/self/statm), reopened after a fork


def _rss_bytes() -> int:
    """This process's RSS: one pread of /proc/self/statm (a few microseconds with the GIL
    held, a third of psutil's time), psutil where there is no /proc."""
    global _statm
    try:
        if _statm is None or _statm[0] != os.getpid():
            _statm = (os.getpid(), os.open("/proc/self/statm", os.O_RDONLY))
        return int(os.pread(_statm[1], 128, 0).split()[1]) * _PAGE
    except (OSError, AttributeError):
        return psutil.Process().memory_info().rss


def _rss_peak_reset() -> bool:
    """Reset this process's peak RSS (VmHWM) so that it covers only what follows.
    Linux >= 4.0 (`echo 5 > /proc/self/clear_refs`); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _rss_peak() -> int | None:
    """VmHWM of this process in bytes (the kernel's exact peak RSS), or None."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


# One sampling thread per process, shared by every active MemorySampler and blocked (no
# wake-ups at all) while none is active. A thread per measurement would cost a start and a
# join, each a scheduler round trip: microseconds on an idle machine, milliseconds on a
# busy one (a first version measured +7.5% on a 0.15 s forward in bench_metrics_overhead).
_lock = threading.Lock()
_active: list[MemorySampler] = []
_wake = threading.Event()
_thread: threading.Thread | None = None


def _reset_after_fork() -> None:
    """A forked child has no sampling thread, and the lock may have been held at the fork."""
    global _lock, _active, _wake, _thread
    _lock, _active, _wake, _thread = threading.Lock(), [], threading.Event(), None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def _sampling_loop() -> None:
    while True:
        with _lock:
            due = min((s._next for s in _active), default=None)
        if due is None:
            _wake.wait()  # idle until a sampler starts
        elif (delay := due - time.perf_counter()) > 0:
            _wake.wait(delay)  # Event.wait releases the GIL; returns early when a sampler starts
        _wake.clear()  # a start between wait() and here is not lost: _active is reread above
        now = time.perf_counter()
        with _lock:  # under the lock: no sample lands in a sampler after its exit
            for sampler in _active:
                if sampler._next <= now:
                    sampler.times.append(now)
                    sampler.values.append(sampler._read())
                    sampler._next = now + sampler.interval_s


class MemorySampler:
    """Peak and time-averaged memory (AMU, Eq. 1) of the code inside ``with``.

    CPU: this process's resident set size (RSS), read every ``interval_s`` by a background
    thread (one per process, shared). The peak is the kernel's own high-water mark (VmHWM,
    reset on entry) where Linux allows it, so a spike shorter than the interval is not
    missed; otherwise the largest sample (``peak_source`` says which).
    CUDA: ``torch.cuda.max_memory_allocated`` / ``max_memory_reserved`` (reset on entry) for
    the peaks, and ``memory_allocated`` samples for the average.
    Samples are also taken on entry and exit, so even a call shorter than the interval gets
    a (two-point) average.

    After the block: ``peak_bytes``, ``avg_bytes`` (AMU), ``start_bytes``, ``n_samples``,
    ``peak_source``, and on CUDA ``reserved_peak_bytes``. Values are whole-process (or
    whole-allocator) numbers, as the paper's AMU is: subtract ``start_bytes`` for the growth.
    Samplers may nest: an inner one hands the high-water mark so far to the outer ones
    before it resets it, so every peak stays exact.
    """

    def __init__(self, device="cpu", interval_s: float = SAMPLE_INTERVAL_S):
        if not interval_s > 0:
            raise ValueError(f"interval_s: must be > 0 seconds, got {interval_s!r}")
        self.device = _device(device)
        self.interval_s = float(interval_s)
        self.reserved_peak_bytes: int | None = None

    def _read(self) -> int:
        if self.device.type == "cuda":
            return torch.cuda.memory_allocated(self.device)
        return _rss_bytes()

    def __enter__(self) -> MemorySampler:
        global _thread
        self._peak_before_reset, self._reserved_before_reset = 0, 0
        if self.device.type == "cuda":
            if _active:
                allocated, reserved = torch.cuda.max_memory_allocated(self.device), torch.cuda.max_memory_reserved(self.device)
                self._hand_over_peak(allocated, reserved)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._exact_peak = True
        else:
            if _active:
                self._hand_over_peak(_rss_peak() or 0)
            self._exact_peak = _rss_peak_reset()
        now = time.perf_counter()
        self.times, self.values = [now], [self._read()]
        with _lock:
            self._next = now + self.interval_s
            _active.append(self)
            if _thread is None:  # first use in this process
                _thread = threading.Thread(target=_sampling_loop, name="MemorySampler", daemon=True)
                _thread.start()
        _wake.set()
        return self

    def _hand_over_peak(self, peak: int, reserved: int = 0) -> None:
        """The peaks since the last reset, to the samplers still running (nesting)."""
        with _lock:
            for outer in _active:
                if outer.device == self.device:
                    outer._peak_before_reset = max(outer._peak_before_reset, peak)
                    outer._reserved_before_reset = max(outer._reserved_before_reset, reserved)

    def __exit__(self, *exc) -> None:
        with _lock:
            if self in _active:  # not in a child forked inside the block
                _active.remove(self)
        self.times.append(time.perf_counter())
        self.values.append(self._read())
        sampled_peak = max(max(self.values), self._peak_before_reset)
        if self.device.type == "cuda":
            self.peak_bytes = max(sampled_peak, torch.cuda.max_memory_allocated(self.device))
            self.reserved_peak_bytes = max(self._reserved_before_reset, torch.cuda.max_memory_reserved(self.device))
            self.peak_source = "torch.cuda.max_memory_allocated"
        else:
            exact = _rss_peak() if self._exact_peak else None
            self.peak_bytes = max(sampled_peak, exact or 0)
            self.peak_source = "VmHWM (exact RSS peak)" if exact else f"sampled RSS every {self.interval_s:g} s"
        self.start_bytes = self.values[0]
        self.avg_bytes = time_average(self.values, self.times)
        self.n_samples = len(self.values)


def _quant_state_tensors(obj, depth: int = 0) -> Iterable[torch.Tensor]:
    """Tensors inside a bitsandbytes QuantState (absmax, code, offset, nested state2)."""
    if depth > 3 or obj is None:
        return
    for value in vars(obj).values():
        if isinstance(value, torch.Tensor):
            yield value
        elif hasattr(value, "absmax"):  # a nested QuantState (double quantization)
            yield from _quant_state_tensors(value, depth + 1)


def _extra_tensors(module: torch.nn.Module) -> Iterable[torch.Tensor]:
    """Storage a module holds outside parameters() and buffers():

    - bitsandbytes Linear8bitLt: the int8 weight's row scales ``SCB`` live on the parameter
      (``weight.SCB``) until the first forward, then on ``module.state``;
    - bitsandbytes Linear4bit: the packed uint8 weight is the parameter; its quantization
      state (``weight.quant_state``: absmax per block, the 16-value code, nested absmax) is not;
    - torch.ao dynamic-quantized Linear: the qint8 weight and bias are packed, not parameters
      (counted as the unpacked qint8 tensor and fp32 bias).
    """
    for param in module.parameters(recurse=False):
        for value in vars(param).values():
            if isinstance(value, torch.Tensor):
                yield value
            elif hasattr(value, "absmax"):
                yield from _quant_state_tensors(value)
    state = getattr(module, "state", None)
    if state is not None and hasattr(state, "SCB"):  # bitsandbytes MatmulLtState
        yield from (v for v in vars(state).values() if isinstance(v, torch.Tensor))
    packed = getattr(module, "_packed_params", None)
    if packed is not None and hasattr(packed, "_weight_bias"):
        weight, bias = packed._weight_bias()
        yield weight
        if weight.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
            yield weight.q_per_channel_scales()
            yield weight.q_per_channel_zero_points()
        if bias is not None:
            yield bias


def _logical_numel(param: torch.Tensor) -> int:
    """Elements of the weight a parameter stands for (a packed 4-bit weight holds two per byte)."""
    state = getattr(param, "quant_state", None)
    return math.prod(state.shape) if state is not None and getattr(state, "shape", None) else param.numel()


def model_size_report(model: torch.nn.Module) -> dict[str, float | int | str]:
    """Bytes a model's tensors really occupy, by kind, and its parameter count.

    Counted from storage, once per storage (tied embeddings, views and bitsandbytes'
    aliases of the same bytes count once): ``parameter_bytes``, ``buffer_bytes``, and
    ``quant_bytes``, what quantized layers keep outside both (bitsandbytes scales and
    quantization state, torch.ao packed weights; see `_extra_tensors`). A meta tensor
    counts numel x element size. ``parameters`` is the logical count (a 4-bit weight of
    shape [o, i] counts o*i, not its o*i/2 packed bytes); ``bits_per_parameter`` is
    8 * total_bytes / parameters.
    """
    seen: set = set()
    alive: list[torch.Tensor] = []  # torch.ao unpacks into temporaries: keep them, or freed addresses recur
    sizes = {"parameter_bytes": 0, "buffer_bytes": 0, "quant_bytes": 0}
    by_dtype: dict[str, int] = {}

    def add(kind: str, t: torch.Tensor) -> None:
        alive.append(t)
        if t.device.type == "meta":
            key, nbytes = ("meta", id(t)), t.numel() * t.element_size()
        else:
            storage = t.untyped_storage()
            key, nbytes = (str(t.device), storage.data_ptr()), storage.nbytes()
        if key in seen:
            return
        seen.add(key)
        sizes[kind] += nbytes
        name = str(t.dtype).removeprefix("torch.")
        by_dtype[name] = by_dtype.get(name, 0) + nbytes

    n_params = 0
    for param in model.parameters():  # unique parameters
        n_params += _logical_numel(param)
        add("parameter_bytes", param)
    for buffer in model.buffers():
        add("buffer_bytes", buffer)
    for module in model.modules():
        packed = getattr(module, "_packed_params", None)
        if packed is not None and hasattr(packed, "_weight_bias"):  # parameters in all but name
            n_params += sum(t.numel() for t in packed._weight_bias() if t is not None)
        for tensor in _extra_tensors(module):
            add("quant_bytes", tensor)
    total = sum(sizes.values())
    return {
        "parameters": n_params,
        **sizes,
        "total_bytes": total,
        "bits_per_parameter": 8 * total / n_params if n_params else float("nan"),
        "bytes_by_dtype": ", ".join(f"{k}:{v}" for k, v in sorted(by_dtype.items())),
    }


def tensor_bytes(model: torch.nn.Module) -> int:
    """Total bytes of a model's parameters, buffers and quantization state (`model_size_report`)."""
    return int(model_size_report(model)["total_bytes"])


# ---------------------------------------------------------------------------------------
# Compute (Eq. 2, PCU): achieved FLOP/s over the device's peak
# ---------------------------------------------------------------------------------------
_MEASURED_PEAKS: dict[tuple, tuple[float, str]] = {}  # per process: the GEMM runs once per key


def _table_peak(name: str, dtype: torch.dtype) -> tuple[float, str] | None:
    """Dense peak FLOP/s of a known GPU (by torch's device name) from `GPU_SPECS`, or None."""
    key = _DTYPE_KEYS.get(dtype)
    if key is None:
        return None
    if key == "fp32" and torch.get_float32_matmul_precision() != "highest":
        key = "tf32"  # fp32 matmuls run on TF32 tensor cores
    upper = name.upper()
    for keywords, label, peaks, _tdp in GPU_SPECS:
        if all(k in upper for k in keywords):
            return peaks[key] * 1e12, f"table: NVIDIA {label} datasheet, {key} dense"
    return None


def _gpu_tdp(name: str) -> tuple[float, str]:
    upper = name.upper()
    for keywords, label, _peaks, tdp in GPU_SPECS:
        if all(k in upper for k in keywords):
            return tdp, f"{label} board power {tdp:g} W"
    return GPU_DEFAULT_TDP_W, f"unknown GPU, {GPU_DEFAULT_TDP_W:g} W assumed"


def _measured_peak(dev: torch.device, dtype: torch.dtype, n: int) -> tuple[float, str]:
    threads = torch.get_num_threads()
    key = (str(dev), dtype, n, threads if dev.type == "cpu" else None)
    if key not in _MEASURED_PEAKS:
        generator = torch.Generator(device=dev).manual_seed(0)
        a = torch.randn(n, n, generator=generator, device=dev).to(dtype)
        b = torch.randn(n, n, generator=generator, device=dev).to(dtype)
        best = math.inf
        for i in range(GEMM_REPEATS + 1):
            synchronize(dev)
            start = time.perf_counter()
            torch.mm(a, b)
            synchronize(dev)
            if i > 0:  # the first one warms up
                best = min(best, time.perf_counter() - start)
        dtype_name = str(dtype).removeprefix("torch.")
        if dev.type == "cpu":
            where = f"this CPU ({threads} threads, {dtype_name})"
        else:
            where = f"{torch.cuda.get_device_name(dev)} ({dtype_name})"
        _MEASURED_PEAKS[key] = (2 * n**3 / best, f"measured: {n}^3 GEMM peak on {where}")
    return _MEASURED_PEAKS[key]


def device_peak_flops(device="cpu", dtype: torch.dtype = torch.float32, *, n: int = GEMM_N) -> tuple[float, str]:
    """(peak FLOP/s, source) of ``device`` for matmuls in ``dtype``.

    CUDA: the dense datasheet peak of a known GPU (`GPU_SPECS`: H100 SXM/PCIe/NVL, H200,
    GH200, A100). CPU or an unknown GPU: measured, the best of `GEMM_REPEATS` n^3 matmuls
    with the current torch thread count, cached per process. A measured peak is what this
    machine reaches on a large GEMM, not the vendor's theoretical peak, so utilization
    against it reads "fraction of the best achievable GEMM rate".
    """
    dev = _device(device)
    if dev.type == "cuda":
        hit = _table_peak(torch.cuda.get_device_name(dev), dtype)
        if hit is not None:
            return hit
    return _measured_peak(dev, dtype, n)


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call of ``fn`` by torch.utils.flop_counter (2 per multiply-add; matmuls,
    convolutions and attention only). The cross-check of an analytic count.

    scaled_dot_product_attention runs on its math backend here: the counter has no entry
    for the CPU flash kernel, and would count attention as 0 FLOPs. The math backend is
    plain matmuls, counted in full (4·B·H·T_q·T_k·D, a causal mask included, as a dense
    kernel computes it).
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    with sdpa_kernel([SDPBackend.MATH]), FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def compute_utilization(flops: float, seconds: float, device="cpu", dtype: torch.dtype = torch.float32) -> float:
    """PCU (Eq. 2, read as FLOP utilization): (flops / seconds) / peak FLOP/s of ``device``."""
    if not seconds > 0 or not flops >= 0:
        raise ValueError(f"flops/seconds: need flops >= 0 and seconds > 0, got {flops!r}, {seconds!r}")
    peak, _source = device_peak_flops(device, dtype)
    return flops / seconds / peak


# ---------------------------------------------------------------------------------------
# Energy (Eqs. 7-8, AEC): NVML, RAPL, or an explicit model labelled "estimate"
# ---------------------------------------------------------------------------------------
def estimate_energy_j(seconds: float, utilisation: float, tdp_w: float, idle_w: float) -> float:
    """E = (idle_w + (tdp_w - idle_w) * utilisation) * seconds: a linear power model."""
    if seconds < 0 or not 0 <= utilisation <= 1 or not 0 <= idle_w <= tdp_w:
        raise ValueError(
            f"estimate: need seconds >= 0, utilisation in [0, 1], 0 <= idle_w <= tdp_w; "
            f"got {seconds!r}, {utilisation!r}, {idle_w!r}, {tdp_w!r}"
        )
    return (idle_w + (tdp_w - idle_w) * utilisation) * seconds


def _rapl_zones(root: Path) -> list[tuple[Path, int]]:
    """Readable RAPL package domains: (energy_uj file, counter range). Subzones
    (intel-rapl:0:0 cores, :0:1 uncore, :0:2 dram) are skipped: cores and uncore are
    already inside their package, so adding them would count twice."""
    zones = []
    for folder in sorted(root.glob("intel-rapl:*")):
        if not re.fullmatch(r"intel-rapl:\d+", folder.name):
            continue
        try:
            int((folder / "energy_uj").read_text())  # root-only on many kernels (CVE-2020-8694)
            zones.append((folder / "energy_uj", int((folder / "max_energy_range_uj").read_text())))
        except (OSError, ValueError):
            continue
    return zones


_NVML_READERS: dict[str, Callable[[], float] | None] = {}


def _nvml_energy_reader(dev: torch.device) -> Callable[[], float] | None:
    """Joules from NVML's total-energy counter of this GPU (Volta and later), or None."""
    if str(dev) not in _NVML_READERS:
        _NVML_READERS[str(dev)] = _open_nvml(dev)
    return _NVML_READERS[str(dev)]


def _open_nvml(dev: torch.device) -> Callable[[], float] | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        try:  # by UUID: right whatever CUDA_VISIBLE_DEVICES renumbers
            uuid = str(torch.cuda.get_device_properties(index).uuid)
            handle = pynvml.nvmlDeviceGetHandleByUUID(uuid if uuid.startswith("GPU-") else f"GPU-{uuid}")
        except Exception:
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)  # raises where unsupported
    except Exception:
        return None
    return lambda: pynvml.nvmlDeviceGetTotalEnergyConsumption(handle) / 1000.0  # mJ -> J


class Energy:
    """Energy (Eq. 7) and average power (AEC, Eq. 8) of the code inside ``with``.

    Sources, first available wins (``source`` says which):
    - CUDA: NVML's total-energy counter of the GPU (pynvml, if importable); the board only,
      and updated by the driver every few tens of ms: measure windows of a second or more;
    - CPU: RAPL package counters under `RAPL_ROOT` (all packages, DRAM not included),
      with counter wrap-around handled (one wrap per reading; a package counter wraps
      every few minutes to hours);
    - otherwise `estimate_energy_j` with utilisation = this process's CPU time over
      (wall time x visible CPUs) and `CPU_TDP_W_PER_THREAD` / `CPU_IDLE_W_PER_THREAD` per
      visible CPU (CUDA without NVML: the GPU's board power from `GPU_SPECS` at full
      utilisation, an upper bound). Labelled "estimate (no power counter readable)".

    After the block: ``joules``, ``seconds``, ``watts`` (AEC), ``source``.
    """

    def __init__(self, device="cpu"):
        self.device = _device(device)

    def __enter__(self) -> Energy:
        dev = self.device
        self._nvml = _nvml_energy_reader(dev) if dev.type == "cuda" else None
        self._rapl = _rapl_zones(RAPL_ROOT) if self._nvml is None and dev.type == "cpu" else []
        synchronize(dev)
        self._cpu0 = time.process_time()  # user + system seconds of every thread of this process
        if self._nvml is not None:
            self._start = [self._nvml()]
        elif self._rapl:
            self._start = [int(path.read_text()) for path, _range in self._rapl]
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        synchronize(self.device)
        self.seconds = time.perf_counter() - self._t0
        if self._nvml is not None:
            self.joules = self._nvml() - self._start[0]
            self.source = "NVML total energy counter (GPU board)"
        elif self._rapl:
            micro = 0
            for (path, wrap), start in zip(self._rapl, self._start):
                end = int(path.read_text())
                micro += end - start if end >= start else end + wrap - start
            self.joules = micro / 1e6
            self.source = f"RAPL energy_uj ({len(self._rapl)} package domain(s), DRAM not included)"
        else:
            self.joules, self.source = self._estimate()
        self.watts = self.joules / self.seconds if self.seconds > 0 else float("nan")

    def _estimate(self) -> tuple[float, str]:
        if self.device.type == "cuda":
            tdp, what = _gpu_tdp(torch.cuda.get_device_name(self.device))
            joules = estimate_energy_j(self.seconds, 1.0, tdp_w=tdp, idle_w=tdp)
            return joules, f"estimate (no power counter readable): {what} x time, full utilisation assumed"
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        cpu_seconds = time.process_time() - self._cpu0
        self.utilisation = min(1.0, max(0.0, cpu_seconds / (self.seconds * cpus))) if self.seconds > 0 else 0.0
        tdp, idle = CPU_TDP_W_PER_THREAD * cpus, CPU_IDLE_W_PER_THREAD * cpus
        joules = estimate_energy_j(self.seconds, self.utilisation, tdp, idle)
        return joules, (
            f"estimate (no power counter readable): ({idle:g} W + ({tdp:g} - {idle:g}) W x "
            f"{self.utilisation:.2f} utilisation) x time, {cpus} CPUs"
        )


# ---------------------------------------------------------------------------------------
# One measurement: time, memory, energy, utilization of a callable
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Measurement:
    seconds_median: float  # per call
    seconds_q25: float
    seconds_q75: float
    seconds_mean: float  # AL, Eq. 3
    repeats: int
    memory_peak_bytes: float  # NaN when not sampled
    memory_avg_bytes: float  # AMU, Eq. 1 (NaN when not sampled)
    memory_source: str
    energy_j: float  # per call (Eq. 7)
    power_w: float  # AEC, Eq. 8
    energy_source: str
    flops: float  # per call, as given (NaN when not given)
    achieved_flops_per_s: float
    peak_flops_per_s: float
    peak_source: str
    utilization: float  # PCU, Eq. 2 (FLOP reading)

    @property
    def seconds_iqr(self) -> float:
        return self.seconds_q75 - self.seconds_q25

    def as_row(self) -> dict[str, float | int | str]:
        """A flat record for a results table."""
        return {**asdict(self), "seconds_iqr": self.seconds_iqr}


def measure(
    fn: Callable[[], object],
    *,
    repeats: int = 5,
    warmup: int = 1,
    device="cpu",
    flops: float | None = None,
    dtype: torch.dtype = torch.float32,
    sample_memory: bool = True,
    interval_s: float = SAMPLE_INTERVAL_S,
) -> Measurement:
    """Time ``fn`` ``repeats`` times after ``warmup`` untimed calls, under one memory
    sampler and one energy meter; ``flops`` (per call, e.g. from
    shared.zoo.forward_flops_per_token x tokens) gives achieved FLOP/s and utilization
    against `device_peak_flops(device, dtype)`. The FLOP peak (a GEMM on CPU, once per
    process) is found before the timed calls; CUDA is synchronised around each call.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats/warmup: need repeats >= 1 and warmup >= 0, got {repeats}, {warmup}")
    if flops is not None and not flops >= 0:
        raise ValueError(f"flops: must be >= 0 per call, got {flops!r}")
    dev = _device(device)
    for _ in range(warmup):
        fn()
    peak, peak_source = device_peak_flops(dev, dtype) if flops is not None else (float("nan"), "")
    samples = []
    sampler = MemorySampler(dev, interval_s) if sample_memory else nullcontext()
    with Energy(dev) as energy, sampler as memory:
        for _ in range(repeats):
            synchronize(dev)
            start = time.perf_counter()
            fn()
            synchronize(dev)
            samples.append(time.perf_counter() - start)
    q25, median, q75 = (float(v) for v in np.percentile(samples, [25, 50, 75]))
    achieved = flops / median if flops is not None else float("nan")
    return Measurement(
        seconds_median=median,
        seconds_q25=q25,
        seconds_q75=q75,
        seconds_mean=float(np.mean(samples)),
        repeats=repeats,
        memory_peak_bytes=float(memory.peak_bytes) if sample_memory else float("nan"),
        memory_avg_bytes=float(memory.avg_bytes) if sample_memory else float("nan"),
        memory_source=memory.peak_source if sample_memory else "not sampled",
        energy_j=energy.joules / repeats,
        power_w=energy.watts,
        energy_source=energy.source,
        flops=float(flops) if flops is not None else float("nan"),
        achieved_flops_per_s=achieved,
        peak_flops_per_s=peak,
        peak_source=peak_source,
        utilization=achieved / peak if flops is not None else float("nan"),
    )


# ---------------------------------------------------------------------------------------
# Latency and throughput (Eqs. 3-6)
# ---------------------------------------------------------------------------------------
def average_latency(seconds: Sequence[float], communication: Sequence[float] | None = None) -> float:
    """AL (Eq. 3): mean of computation (+ communication) seconds per iteration or request."""
    seconds = np.asarray(seconds, dtype=float)
    comm = np.zeros_like(seconds) if communication is None else np.asarray(communication, dtype=float)
    if seconds.size == 0 or comm.shape != seconds.shape:
        raise ValueError(f"seconds/communication: need equal, non-zero lengths, got {seconds.size} and {comm.size}")
    return float((seconds + comm).mean())


def token_throughput(tokens: Sequence[float], seconds: Sequence[float], n_params: int) -> float:
    """TT (Eq. 4): Σ (tokens_i / params) / Σ time_i, tokens per parameter per second.
    ST (Eq. 5) is the same with samples in place of tokens."""
    if n_params <= 0 or sum(seconds) <= 0:
        raise ValueError(f"n_params/seconds: need n_params > 0 and a positive total time, got {n_params}, {sum(seconds)}")
    return float(sum(t / n_params for t in tokens) / sum(seconds))


sample_throughput = token_throughput  # ST (Eq. 5): pass samples per iteration as `tokens`


def inference_throughput(generated_tokens: Sequence[float], seconds: Sequence[float]) -> float:
    """IT (Eq. 6): Σ generated tokens / Σ time, tokens/s."""
    if sum(seconds) <= 0:
        raise ValueError(f"seconds: need a positive total time, got {sum(seconds)}")
    return float(sum(generated_tokens) / sum(seconds))


def _cache_length(past) -> int:
    if hasattr(past, "get_seq_length"):
        return int(past.get_seq_length())
    return int(past[0][0].shape[-2])  # legacy tuple of (key, value) per layer


def cache_interface(model) -> tuple[str, dict]:
    """The KV-cache argument's name (transformers >= 5.x: ``cache``; before: ``past_key_values``,
    also the name of the output field) and extra keywords for a greedy step."""
    import inspect

    params = inspect.signature(model.forward).parameters
    name = "cache" if "cache" in params else "past_key_values"
    # Only the last position's logits are needed; transformers >= 4.50 takes logits_to_keep.
    return name, ({"logits_to_keep": 1} if "logits_to_keep" in params else {})


def _generate_once(model, ids: torch.Tensor, new_tokens: int, dev: torch.device):
    """Prefill ``ids`` then greedy-decode ``new_tokens - 1`` more tokens with the KV cache,
    one model call per token (no generate(): no logits processors, stopping criteria or
    streaming overhead). Returns (prefill_s, decode_s_per_token, cache_length)."""
    name, kwargs = cache_interface(model)
    synchronize(dev)
    t0 = time.perf_counter()
    out = model(input_ids=ids, use_cache=True, **kwargs)
    cache, token = getattr(out, name), out.logits[:, -1].argmax(-1, keepdim=True)
    synchronize(dev)
    t1 = time.perf_counter()
    for _ in range(new_tokens - 1):
        out = model(input_ids=token, use_cache=True, **{name: cache}, **kwargs)
        cache, token = getattr(out, name), out.logits[:, -1].argmax(-1, keepdim=True)
    synchronize(dev)
    t2 = time.perf_counter()
    return t1 - t0, (t2 - t1) / (new_tokens - 1), _cache_length(cache)


def prefill_decode_latency(
    model,
    batch_size: int,
    prompt_len: int,
    new_tokens: int,
    device="cpu",
    *,
    repeats: int = 3,
    warmup: int = 1,
    seed: int = 0,
) -> dict[str, float | int]:
    """Prefill time and per-token decode time of a causal LM (transformers interface:
    ``model(input_ids, cache=..., use_cache=True).logits``; ``past_key_values=`` in older
    transformers), medians of ``repeats`` runs on random prompts (seeded) of
    ``batch_size`` x ``prompt_len``.

    Generating N = ``new_tokens`` tokens is one prefill (its last logits give token 1) and
    N - 1 decode steps, each one token against the KV cache; so the prefill time is the
    time to first token and ``decode_s_per_token`` the time per output token after it.
    ``cache_len`` (prompt_len + N - 1) shows the decode steps extended the cache.
    """
    if min(batch_size, prompt_len) < 1 or new_tokens < 2 or repeats < 1 or warmup < 0:
        raise ValueError(
            f"need batch_size, prompt_len >= 1, new_tokens >= 2, repeats >= 1, warmup >= 0; "
            f"got {batch_size}, {prompt_len}, {new_tokens}, {repeats}, {warmup}"
        )
    dev = _device(device)
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, model.config.vocab_size, (batch_size, prompt_len), generator=generator).to(dev)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            runs = [_generate_once(model, ids, new_tokens, dev) for _ in range(warmup + repeats)][warmup:]
    finally:
        model.train(was_training)
    prefill_s = float(np.median([r[0] for r in runs]))
    decode_s = float(np.median([r[1] for r in runs]))
    return {
        "batch_size": batch_size,
        "prompt_len": prompt_len,
        "new_tokens": new_tokens,
        "prefill_s": prefill_s,
        "decode_s_per_token": decode_s,
        "total_s": prefill_s + decode_s * (new_tokens - 1),
        "cache_len": runs[-1][2],
    }


def throughput(
    model,
    batch_sizes: Sequence[int],
    prompt_len: int,
    new_tokens: int,
    device="cpu",
    *,
    repeats: int = 3,
    warmup: int = 1,
    seed: int = 0,
    progress: Callable | None = None,
):
    """Generation throughput over batch sizes: a tidy DataFrame, one row per batch size,
    with `prefill_decode_latency`'s columns plus
    ``tokens_per_s`` = batch x new_tokens / (prefill + decode time)  (IT, Eq. 6),
    ``decode_tokens_per_s`` = batch / per-token decode time, and
    ``prefill_tokens_per_s`` = batch x prompt_len / prefill time.
    """
    import pandas as pd

    if not batch_sizes:
        raise ValueError("batch_sizes: need at least one batch size")
    rows = []
    for batch in (progress or silent)(list(batch_sizes), desc="throughput", total=len(batch_sizes)):
        row = prefill_decode_latency(model, batch, prompt_len, new_tokens, device, repeats=repeats, warmup=warmup, seed=seed)
        row["tokens_per_s"] = inference_throughput([batch * new_tokens], [row["total_s"]])
        row["decode_tokens_per_s"] = batch / row["decode_s_per_token"]
        row["prefill_tokens_per_s"] = batch * prompt_len / row["prefill_s"]
        rows.append(row)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------
# Quality: perplexity, accuracy, fidelity (the survey's "loyalty")
# ---------------------------------------------------------------------------------------
def _logits(model, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    return out.logits if hasattr(out, "logits") else out


def _eval_batches(batches, device, progress, desc):
    dev = _device(device)
    for x, y in (progress or silent)(batches, desc=desc, total=len(batches) if hasattr(batches, "__len__") else None):
        yield x.to(dev), y.to(dev)


@torch.inference_mode()
def perplexity(model, batches: Iterable, device="cpu", progress: Callable | None = None) -> float:
    """exp(mean next-token cross-entropy) over every target token of ``batches`` of (x, y)
    (y already shifted, as shared.corpus.eval_batches gives them; -100 is ignored)."""
    total, count = 0.0, 0
    for x, y in _eval_batches(batches, device, progress, "perplexity"):
        logits = _logits(model, x).float()
        total += torch.nn.functional.cross_entropy(logits.flatten(0, -2), y.flatten(), reduction="sum").item()
        count += int((y != -100).sum())
    if count == 0:
        raise ValueError("batches: no target tokens to evaluate")
    return math.exp(total / count)


@torch.inference_mode()
def accuracy(model, batches: Iterable, device="cpu", progress: Callable | None = None) -> float:
    """Fraction of targets equal to the argmax of the logits (classes or next tokens; -100 ignored)."""
    hits, count = 0, 0
    for x, y in _eval_batches(batches, device, progress, "accuracy"):
        keep = y != -100
        hits += int(((_logits(model, x).argmax(-1) == y) & keep).sum())
        count += int(keep.sum())
    if count == 0:
        raise ValueError("batches: no targets to evaluate")
    return hits / count


@torch.inference_mode()
def agreement(model_a, model_b, batches: Iterable, device="cpu", progress: Callable | None = None) -> float:
    """Top-1 agreement of two models (fidelity of a compressed model to its original), over
    every position of ``batches`` of (x, y) (y only marks ignored positions, -100)."""
    same, count = 0, 0
    for x, y in _eval_batches(batches, device, progress, "agreement"):
        keep = y != -100
        same += int(((_logits(model_a, x).argmax(-1) == _logits(model_b, x).argmax(-1)) & keep).sum())
        count += int(keep.sum())
    if count == 0:
        raise ValueError("batches: no positions to compare")
    return same / count


# ---------------------------------------------------------------------------------------
# Compression (Eq. 9) and the Pareto front
# ---------------------------------------------------------------------------------------
def compression_rate(
    size_original: float,
    size_compressed: float,
    perf_original: float,
    perf_compressed: float,
    *,
    higher_is_better: bool = True,
) -> float:
    """MCR (Eq. 9) = (size_original / size_compressed) x retention, where retention is
    perf_compressed / perf_original for a higher-is-better score (accuracy) and
    perf_original / perf_compressed for a lower-is-better one (perplexity, loss).
    Sizes in any one unit (bytes of `tensor_bytes`, parameters, bits per weight)."""
    values = {"size_original": size_original, "size_compressed": size_compressed,
              "perf_original": perf_original, "perf_compressed": perf_compressed}  # fmt: skip
    for name, value in values.items():
        if isinstance(value, bool) or not (isinstance(value, numbers.Real) and math.isfinite(value) and value > 0):
            raise ValueError(f"{name}: must be a finite number > 0, got {value!r}")
    retention = perf_compressed / perf_original if higher_is_better else perf_original / perf_compressed
    return size_original / size_compressed * retention


def pareto_front(df, minimize: Sequence[str] = (), maximize: Sequence[str] = ()):
    """Boolean Series (df's index): True where no other row is at least as good in every
    objective and strictly better in one. Equal rows do not dominate each other."""
    import pandas as pd

    columns = [*minimize, *maximize]
    if not columns:
        raise ValueError("minimize/maximize: name at least one column")
    for col in columns:
        if col not in df.columns:
            raise ValueError(f"{col}: not a column; allowed: {', '.join(map(str, df.columns))}")
    values = df[columns].to_numpy(dtype=float) * np.array([1.0] * len(minimize) + [-1.0] * len(maximize))
    if np.isnan(values).any():
        raise ValueError(f"{', '.join(columns)}: NaN in an objective; drop or fill those rows first")
    no_worse = (values[:, None, :] <= values[None, :, :]).all(-1)  # [i, j]: i is no worse than j everywhere
    better = (values[:, None, :] < values[None, :, :]).any(-1)  # i is strictly better than j somewhere
    dominated = (no_worse & better).any(0)  # j is dominated by some i
    return pd.Series(~dominated, index=df.index, name="pareto")
