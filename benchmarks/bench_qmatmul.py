"""Low-precision linear layers (shared/qmatmul.py) against the peers, cold, on the CPU.

One 4096 x 4096 weight (no bias), batch sizes M = 1, 8, 64, 512 tokens, 2 threads. Every
contestant holds enough distinct copies of its layer that they exceed :data:`COLD_FACTOR` x the
last-level cache (read from sysfs; the anchors' box had 32 MiB, a big Xeon has hundreds), and one
timed sample runs x through each copy in turn, so every weight comes from DRAM: the time per
layer is the sample / copies. Contestants are timed interleaved (shared.timing.benchmark):

- ours, each kernel: ``w8a8`` (per-token int8 activations x per-channel int8 weights, int32
  accumulation) by oneDNN's prepacked qlinear and by ``torch._int_mm``; ``a8w4`` (DGQ: int4
  storage, integer group scales folded into int8) by the compiled kernels of shared/csrc
  (``vnni``: AVX512-VNNI, the weight streamed once and unpacked in registers; ``amx``: unpacked into
  AMX tiles, tdpbssd), by the int8 GEMM (unpacking every call, then ``torch._int_mm``) and by
  aten's int4 kernel (where the compiled kernels cannot run, ``vnni``/``amx`` fall back as
  ``QLinear.kernel_for`` says; each record names the kernel that ran); weight-only ``w8`` (``_weight_int8pack_mm``, and its large-M kernel: the
  codes in a bf16 GEMM) and ``w4`` g128 asymmetric (``_weight_int4pack_mm_for_cpu``), all with
  bf16 activations; FP32 in, FP32 out;
- peers: FP32 ``F.linear``; bf16 ``F.linear`` (bf16 weights, x cast to bf16); bitsandbytes
  ``Linear4bit`` NF4 with bf16 compute (eval mode, so its fused AVX512-BF16 kernel runs where
  the CPU has it); ``torch.ao.quantization.quantize_dynamic`` int8 (fbgemm; deprecated);
- the floor: weight bytes per layer / the memory bandwidth measured in the same run: the larger
  of a 256 MiB ``copy_`` (read + write bytes) and a 256 MiB ``sum`` (read only, as weights are
  streamed); the anchors' 28 GB/s with ``measure_bw=False``.

Each record is one (kernel, M): ours against the fastest peer at that M, with every peer's time,
the floor, the fraction of the floor reached (floor / time) and the relative error of the kernel's
output against FP32 on the same x. The issue's goals: A8W4 >= 80 % of the int4 floor at M = 1
and faster than bf16 at M >= 64; each low-precision path at least as fast as the best peer.
The figure (time per layer vs M, log-log, floors as lines) goes to
benchmarks/figures/qmatmul_roofline.png.

    python -m benchmarks.run qmatmul                 # the full run (writes results.json)
    python -c "from benchmarks import bench_qmatmul as b; b.run(repeats=3, threads=1, cold_factor=1.1)"

Cost: on a box with a 480 MiB L3 each contestant holds ~600 MiB (33 int8 / 65 int4 copies), ~8 GB
in all; the 1-thread, 3-repeat run above took 7 min (the GEMV kernels at M = 512 dominate).
A reduced run of the A8W4 kernels against bf16 only (``only=``):

    python -c "from benchmarks import bench_qmatmul as b; b.run(ms=(1, 8, 64, 512), repeats=3, only=('a8w4 vnni', 'a8w4 amx', 'a8w4 int8 GEMM', 'a8w4 int4pack'), peers=('bf16 F.linear',))"
"""

from __future__ import annotations

import copy
import math
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from shared import qmatmul
from shared.timing import benchmark, pinned_threads

N = K = 4096
MS = (1, 8, 64, 512)
GROUP = 128
THREADS, REPEATS, WARMUP = 2, 5, 1
COLD_FACTOR = 1.25  # each contestant's copies hold this many times the last-level cache
FALLBACK_L3 = 32 * 2**20  # the anchors' box, when sysfs does not say
ANCHOR_BW = 28e9  # bytes/s, ../shared/research/perf_anchors.md §2.3
FIGURE = Path(__file__).resolve().parent / "figures" / "qmatmul_roofline"
OURS = {  # name: (scheme, kernel, floor)
    "w8a8 onednn": ("w8a8", "onednn", "int8"),
    "w8a8 int_mm": ("w8a8", "int_mm", "int8"),
    "w8a8 vnni": ("w8a8", "vnni", "int8"),
    "a8w4 vnni": ("a8w4", "vnni", "int4"),
    "a8w4 amx": ("a8w4", "amx", "int4"),
    "a8w4 int8 GEMM": ("a8w4", "int8", "int4"),
    "a8w4 int4pack": ("a8w4", "int4pack", "int4"),
    "w8 int8pack": ("w8", "int8pack", "int8"),
    "w8 bf16 GEMM": ("w8", "bf16", "int8"),
    "w4 int4pack": ("w4", "int4pack", "int4"),
}
PEERS = ("fp32 F.linear", "bf16 F.linear", "bnb NF4 (bf16 compute)", "quantize_dynamic int8")
BYTES_PER_WEIGHT = {  # scales included (see perf_anchors §2.3)
    "fp32": 4.0, "bf16": 2.0, "int8": 1 + 4 / K,  # FP32 scale per output channel
    "int4": 0.5 + 1 / GROUP + 4 / K,  # DGQ: int8 group scale, FP32 channel scale (w4 g128: 0.5 + 4/128, ~the same)
}  # fmt: skip


def last_level_cache() -> int:
    """Bytes of the largest CPU cache sysfs reports (the L3), else :data:`FALLBACK_L3`."""
    sizes = []
    for f in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        text = f.read_text().strip().upper()
        mult = {"K": 2**10, "M": 2**20, "G": 2**30}.get(text[-1], 1)
        sizes.append(int(text.rstrip("KMG")) * mult)
    return max(sizes, default=FALLBACK_L3)


def bandwidth(threads: int, mib: int = 256, repeats: int = 5) -> dict[str, float]:
    """Bytes/s of a large tensor copy (read + write bytes) and of a sum (read only; what streaming
    weights needs), medians of ``repeats``."""
    src = torch.ones(mib * 2**20 // 4)
    dst = torch.empty_like(src)
    t = benchmark({"copy": lambda: dst.copy_(src), "read": src.sum}, repeats=repeats, warmup=1, num_threads=threads)
    return {"copy": 2 * src.nbytes / t["copy"].median_s, "read": src.nbytes / t["read"].median_s}


def _layer_bytes(name: str) -> float:
    return N * K * BYTES_PER_WEIGHT[_floor_format(name)]


def _floor_format(name: str) -> str:
    if name in OURS:
        return OURS[name][2]
    return {"fp32 F.linear": "fp32", "bf16 F.linear": "bf16", "bnb NF4 (bf16 compute)": "int4",
            "quantize_dynamic int8": "int8"}[name]  # fmt: skip


def _contestants(weight: torch.Tensor, copies: dict[str, int]) -> dict:
    """name -> (list of ``copies[name]`` distinct layers, forward(layer, x) -> FP32), for the names in ``copies``."""
    linear = torch.nn.Linear(K, N, bias=False)
    linear.weight.data.copy_(weight)
    out = {}
    for name, (scheme, kernel, _) in OURS.items():
        if name in copies:
            q = qmatmul.QLinear.from_linear(linear, scheme=scheme, group=GROUP, kernel=kernel)
            out[name] = ([copy.deepcopy(q) for _ in range(copies[name])], lambda layer, x: layer(x))
    if "fp32 F.linear" in copies:
        out["fp32 F.linear"] = ([weight.clone() for _ in range(copies["fp32 F.linear"])], lambda w, x: F.linear(x, w))
    if "bf16 F.linear" in copies:
        wb = weight.to(torch.bfloat16)
        out["bf16 F.linear"] = ([wb.clone() for _ in range(copies["bf16 F.linear"])],
                                lambda w, x: F.linear(x.to(torch.bfloat16), w).float())  # fmt: skip
    if "bnb NF4 (bf16 compute)" in copies:
        out.update(_bnb_nf4(weight, copies["bnb NF4 (bf16 compute)"]))
    if "quantize_dynamic int8" in copies:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.ao.quantization is deprecated: it is the peer, not ours
            qd = torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(linear), {torch.nn.Linear}, dtype=torch.qint8)
            out["quantize_dynamic int8"] = ([copy.deepcopy(qd) for _ in range(copies["quantize_dynamic int8"])],
                                            lambda m, x: m(x))  # fmt: skip
    return out


def _bnb_nf4(weight: torch.Tensor, copies: int) -> dict:
    import bitsandbytes as bnb

    nf4 = bnb.nn.Linear4bit(K, N, bias=False, compute_dtype=torch.bfloat16, quant_type="nf4")
    nf4.weight = bnb.nn.Params4bit(weight.clone(), requires_grad=False, quant_type="nf4")
    nf4 = nf4.to("cpu").eval()
    return {"bnb NF4 (bf16 compute)": ([copy.deepcopy(nf4) for _ in range(copies)],
                                       lambda m, x: m(x.to(torch.bfloat16)).float())}  # fmt: skip


def _time(contestants: dict, weight: torch.Tensor, ms, repeats: int, threads: int, progress=None) -> tuple[dict, dict]:
    """({(name, m): seconds per layer}, {(name, m): relative error vs FP32 on the same x})."""
    times, errors = {}, {}
    gen = torch.Generator().manual_seed(0)
    for m in ms:
        x = torch.randn(m, K, generator=gen)
        fns = {}
        with torch.inference_mode(), pinned_threads(threads):
            exact = F.linear(x, weight)
            for name, (layers, fwd) in contestants.items():
                y = fwd(layers[0], x)
                errors[name, m] = ((y.float() - exact).norm() / exact.norm()).item()
                fns[name] = (lambda layers=layers, fwd=fwd: [fwd(layer, x) for layer in layers])
        with torch.inference_mode():
            stats = benchmark(fns, repeats=repeats, warmup=WARMUP, num_threads=threads, progress=progress)
        for name, (layers, _) in contestants.items():
            times[name, m] = stats[name].median_s / len(layers)
    return times, errors


def run(ms=MS, repeats: int = REPEATS, threads: int = THREADS, cold_factor: float = COLD_FACTOR,
        measure_bw: bool = True, only=None, peers=PEERS) -> list[dict]:
    """``only``: a subset of :data:`OURS` (default all); ``peers``: a subset of :data:`PEERS`."""
    for arg, given, allowed in (("only", only or (), OURS), ("peers", peers, PEERS)):
        if not given and arg == "peers" or any(n not in allowed for n in given):
            raise ValueError(f"{arg}: must be names from {', '.join(allowed)} (got {given})")
    ours = {n: OURS[n] for n in (only or OURS)}
    torch.manual_seed(0)
    weight = torch.randn(N, K) * K**-0.5
    cache = last_level_cache()
    names = list(ours) + list(peers)
    copies = {n: max(1, math.ceil(cold_factor * cache / _layer_bytes(n))) for n in names}
    bws = bandwidth(threads) if measure_bw else {"copy": ANCHOR_BW, "read": ANCHOR_BW}
    bw = max(bws.values())
    contestants = _contestants(weight, copies)
    ran = {(n, m): contestants[n][0][0].kernel_for(m) for n in ours for m in ms}  # after a fallback: not the one asked for
    times, errors = _time(contestants, weight, ms, repeats, threads)
    floors = {f: N * K * b / bw for f, b in BYTES_PER_WEIGHT.items()}
    records, rows = [], []
    for (name, m), t in times.items():
        rows.append(dict(contestant=name, m=m, ms_per_layer=1e3 * t))
    for name, (scheme, kernel, fmt) in ours.items():
        for m in ms:
            peer_t = {p: times[p, m] for p in peers}
            best = min(peer_t, key=peer_t.get)
            ours_s = times[name, m]
            floor = floors[fmt]
            records.append(dict(
                name=f"{N}x{K} linear, M={m}, threads={threads}, cold: ours {name} ({fmt}) vs best peer {best}; "
                     f"{100 * floor / ours_s:.0f}% of the {fmt} floor; rel. err {errors[name, m]:.3f}",
                ours=ours_s, peer=best, peer_value=peer_t[best], unit="s", lower_is_better=True,
                scheme=scheme, kernel=kernel, kernel_ran=ran[name, m], m=m, threads=threads, copies=copies[name],
                floor_s=floor, floor_format=fmt, floor_fraction=floor / ours_s, bandwidth_Bps=bw, copy_Bps=bws["copy"], read_Bps=bws["read"],
                speedup_vs_fp32=times["fp32 F.linear", m] / ours_s if "fp32 F.linear" in peers else None,
                faster_than_bf16=ours_s < times["bf16 F.linear", m] if "bf16 F.linear" in peers else None,
                rel_err_vs_fp32=errors[name, m], peers_s=peer_t,
                peer_rel_err={p: errors[p, m] for p in peers},
            ))  # fmt: skip
    if only is None and tuple(peers) == PEERS:  # a reduced run leaves the full run's figure alone
        _plot(rows, floors, ms, threads, bw, list(ours) + list(peers))
    return records


def _plot(rows: list[dict], floors: dict, ms, threads: int, bw: float, order: list[str]) -> None:
    import pandas as pd
    import seaborn as sns
    from matplotlib import pyplot as plt

    from shared import plotting

    plotting.theme()
    df = pd.DataFrame(rows)
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    dashes = {n: "" if n in OURS else (3, 2) for n in order}
    sns.lineplot(df, x="m", y="ms_per_layer", hue="contestant", hue_order=order, style="contestant",
                 style_order=order, dashes=dashes, markers=True, ax=ax)  # fmt: skip
    for fmt, t in floors.items():
        ax.axhline(1e3 * t, color="grey", lw=0.8, ls=":")
        ax.text(min(ms), 1e3 * t, f" {fmt} floor", va="bottom", fontsize=7, color="grey")
    ax.set(xscale="log", yscale="log", xlabel="tokens M", ylabel="ms per layer (cold)",
           title=f"{N}x{K} linear on the CPU, threads={threads}; floors = weight bytes / {bw / 1e9:.0f} GB/s")  # fmt: skip
    ax.legend(fontsize=7, ncol=2)
    plotting.save(fig, FIGURE)
