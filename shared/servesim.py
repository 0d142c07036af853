"""An iteration-level LLM serving simulator: traces, a roofline step-time model, continuous
batching over a paged KV cache with preemption, pluggable admission and routing.

    trace = servesim.Trace.azure("conv").head(2000).poisson(rate=8.0, seed=0)
    step = servesim.StepModel(servesim.LLAMA2_7B, servesim.DEVICES["A100-80GB"])
    engine = servesim.EngineConfig(kv_tokens=step.kv_capacity_tokens(), max_batch=256)
    result = servesim.simulate(trace, step, engine, servesim.PastFuture())
    result.summary(slo=servesim.SLO(ttft_s=2.0, tpot_s=0.2))   # TTFT/TPOT/E2E percentiles, goodput, ...

**What one iteration is** (vLLM's scheduler with whole-prompt prefill, which LightLLM shares):
the admission policy picks queued requests, FCFS, while it lets them in; each admitted request
is prefilled (its prompt plus any tokens generated before a preemption: recompute) and yields
its first token; every request already running decodes one token in the same iteration
(``EngineConfig.mixed``; False gives vLLM v0's prefill-only iterations). Before the iteration,
every running request that crosses a block boundary takes a new KV block; when the pool is
out, the most recently admitted request is preempted (its blocks freed, back to the head of
the queue, recomputed later). The iteration lasts ``StepModel.seconds`` of its batch.

**Step time** (:class:`StepModel`) is a roofline of the batch: FLOPs (2 per parameter per token,
plus attention's 4·L·d per (query, key) pair) over the device's dense peak × ``mfu``, against bytes
(the weights once, plus the KV cache read and written) over its bandwidth × ``mbu``, combined by
``max`` (GPU: the two overlap) or ``sum`` (a CPU, which overlaps them poorly), plus a fixed
``overhead_s`` per iteration; optionally prefill FLOPs at their own ``prefill_mfu``. :func:`fit_step_model`
calibrates ``mfu``/``mbu``/``overhead_s`` (and ``prefill_mfu``)
against measured step times (:func:`measure_step_times` runs a real model on this machine).

**Speed.** The running batch lives in numpy arrays and each iteration updates it in a few vector
operations; only admission loops over the candidates it admits. Requests per wall second are in
``benchmarks/bench_servesim.py``.

Admission policies (:class:`Aggressive`, :class:`Conservative`, :class:`PastFuture`,
:class:`PastFutureSampled`, :class:`Oracle`) see the batch through :class:`View` and return how
many queue heads to admit; write your own the same way. Routers for several instances:
:func:`simulate_cluster`; your own loop: :class:`Engine`.

**PastFutureSampled: the authors' sampled rule.** :class:`PastFuture` is a deterministic reading
(a quantile of the history); :class:`PastFutureSampled` is the rule as the authors' LightLLM code
runs it (``PastFutureQueue`` in LightLLM, ``req_queue.py`` of the paper's artifact
WuSiYu/lightllm-ae; read, not copied). Its window holds the last 40 finished output lengths and
starts as 20 copies of ``max_new_tokens`` (so before 40 finishes it mixes the cap with what
finished). At the first candidate of an admission round it draws min(5, ⌊200/n⌋ + 1) sampled
futures of the n running requests: a request that generated g tokens takes a uniform point on the
piecewise-linear curve through the knots g, the window's lengths > g (sorted) and max_new_tokens,
rounded (half to even, as Python's ``round``), clipped to [g, max_new]; its remaining output is
that minus g (0 allowed, as in the source). Each candidate adds a length drawn uniformly from the
window to every list; it is admitted iff the worst list's :func:`future_peak` is below 0.95 ×
``kv_tokens``, and an admitted candidate's samples stay for the round's next candidates. One
deliberate difference: the artifact's (held, remaining) tuples count the KV as prompt + output −
1 at the end (its cache never holds the last token); here they count what this engine holds
(prompt + generated, as :class:`PastFuture`), so the two rules compare like for like. The RNG
(``numpy.random.default_rng(seed)``) restarts when an :class:`Engine` starts with the policy: the
same seed gives the same run, and reusing one instance across runs changes nothing.

**Utilisation and cost.** Every engine integrates, over its iterations, the busy seconds, the KV
blocks held × seconds (blocks after the iteration's growth and admission, the iteration's whole
duration; :meth:`Engine.fast_forward` sums the same per-step values in closed form) and the FLOPs
the step model counts (:meth:`StepModel.flops`: 2 per parameter per token plus 4·L·d per (query,
key) pair; linear, so a run of decode steps is one call). :attr:`Result.usage` carries them and
:meth:`Result.summary` adds, over the result's span s (first arrival to last finish, idle time
included, as ``throughput_rps``): ``busy_fraction`` = busy / s; ``kv_utilisation`` = block-seconds
/ (blocks × s), the time-weighted mean of used / capacity; ``achieved_flops`` = FLOPs / s;
``compute_utilisation`` = FLOPs / (peak × s) and ``compute_utilisation_busy`` = FLOPs / (peak ×
busy), the run's MFU; and, when the :class:`DeviceSpec` has a price, ``device_hours`` = s / 3600,
``cost_usd`` = device_hours × ``usd_per_hour`` and ``usd_per_mtok`` = cost per 10⁶ output tokens.
Each device in :data:`DEVICES` names its price's source (``price_source``); prices vary by cloud
and date, so papers that rest on them take them as parameters. A step object without ``flops``
(a paper's wrapper) gives no compute keys; a device without a price, no cost keys; a
:class:`Result` built by hand (``usage={}``), none of them.

**Real mode.** :class:`RealStep` wraps a real transformers causal LM (the tiny ``shared.zoo``
model on this CPU) and goes where a :class:`StepModel` goes: the same :class:`Engine`, scheduler
and KV-block accounting decide every iteration, and the iteration then really runs. Each admitted
request is prefilled by its own forward (its prompt, deterministic random ids per request, plus
the tokens it generated before a preemption: recompute), and all running requests decode in one
batched forward over their KV caches, left-padded to the longest with an attention mask and true
positions (greedy tokens identical to an unbatched decode). The iteration lasts what its forward
passes measure (``clock="thread_cpu"``, the thread's CPU time, steady on a shared machine; or
``"wall"``); cache bookkeeping is not timed. Preempted and finished requests drop their caches.
Real mode never fast-forwards. ``tests/shared/test_servesim.py`` runs a dozen requests both ways:
the same iterations, admissions, preemptions and token counts as the simulation with the step
model calibrated here, and latencies within a loose factor (measured: real ≈ 1.5× simulated).
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import numpy as np

TRACES = Path(__file__).parent / "traces"  # the Azure LLM inference traces 2023 (CC-BY-4.0), see SOURCE.md
DATA_FILES = ("traces",)  # read besides Python: pipelines.dvcgen makes them a dependency of the papers using this


# ---------------------------------------------------------------- requests
@dataclass(frozen=True)
class Trace:
    """Requests: arrival times (s, sorted), prompt and output lengths (tokens, output >= 1)."""

    arrival_s: np.ndarray
    prompt: np.ndarray
    output: np.ndarray
    name: str = "trace"

    def __post_init__(self):
        n = len(self.arrival_s)
        if not (len(self.prompt) == len(self.output) == n):
            raise ValueError(f"Trace {self.name}: arrival_s, prompt, output must have one length, "
                             f"got {n}, {len(self.prompt)}, {len(self.output)}")
        if n and (np.any(np.diff(self.arrival_s) < 0) or self.prompt.min() < 1 or self.output.min() < 1):
            raise ValueError(f"Trace {self.name}: arrivals must be sorted and prompt/output lengths >= 1")

    def __len__(self) -> int:
        return len(self.arrival_s)

    @classmethod
    def azure(cls, kind: str = "conv") -> Trace:
        """The Azure LLM inference trace 2023 (Splitwise, ISCA'24): ``conv`` (19,366 requests) or ``code`` (8,819)."""
        if kind not in ("conv", "code"):
            raise ValueError(f"Trace.azure kind={kind!r} is not allowed; allowed: conv, code")
        import pandas as pd

        frame = pd.read_csv(TRACES / f"AzureLLMInferenceTrace_{kind}.csv", parse_dates=["TIMESTAMP"])
        t = (frame["TIMESTAMP"] - frame["TIMESTAMP"].iloc[0]).dt.total_seconds().to_numpy()
        order = np.argsort(t, kind="stable")
        return cls(t[order], frame["ContextTokens"].to_numpy(np.int64)[order].clip(1),
                   frame["GeneratedTokens"].to_numpy(np.int64)[order].clip(1), f"azure-{kind}")

    @classmethod
    def synthetic(cls, n: int, rate: float, prompt_mean: float, output_mean: float, sigma: float = 1.0,
                  max_len: int = 8192, seed: int = 0) -> Trace:
        """Poisson arrivals at ``rate`` req/s; lognormal prompt and output lengths with the given means."""
        rng = np.random.default_rng(seed)

        def lengths(mean):
            mu = math.log(mean) - sigma**2 / 2  # so that E[length] = mean
            return np.clip(np.rint(rng.lognormal(mu, sigma, n)), 1, max_len).astype(np.int64)

        return cls(np.cumsum(rng.exponential(1.0 / rate, n)), lengths(prompt_mean), lengths(output_mean),
                   f"lognormal-p{prompt_mean:g}-o{output_mean:g}")

    def head(self, n: int) -> Trace:
        return Trace(self.arrival_s[:n], self.prompt[:n], self.output[:n], self.name)

    def poisson(self, rate: float, seed: int = 0) -> Trace:
        """The same lengths with Poisson arrivals at ``rate`` requests/s."""
        if not rate > 0:
            raise ValueError(f"Trace.poisson rate must be > 0 requests/s, got {rate}")
        t = np.cumsum(np.random.default_rng(seed).exponential(1.0 / rate, len(self)))
        return Trace(t, self.prompt, self.output, self.name)

    def with_rate(self, rate: float) -> Trace:
        """The trace's own arrival pattern (bursts kept), time-scaled to a mean of ``rate`` requests/s."""
        span = self.arrival_s[-1] - self.arrival_s[0]
        factor = (len(self) - 1) / span / rate if span > 0 else 1.0
        return Trace((self.arrival_s - self.arrival_s[0]) * factor, self.prompt, self.output, self.name)

    def clipped(self, max_prompt: int, max_output: int) -> Trace:
        return Trace(self.arrival_s, self.prompt.clip(1, max_prompt), self.output.clip(1, max_output), self.name)


# ---------------------------------------------------------------- hardware and models
@dataclass(frozen=True)
class DeviceSpec:
    """A device for the roofline: dense bf16 FLOP/s, memory bandwidth (B/s), memory (B), board power (W),
    and its rental price (USD per device-hour; 0 = unknown) with where that price comes from."""

    name: str
    flops: float
    bandwidth: float
    memory: float
    tdp_w: float = 0.0
    usd_per_hour: float = 0.0
    price_source: str = ""


# NVIDIA datasheets, dense bf16 tensor throughput (the "with sparsity" figures halved). Prices are
# on-demand USD per GPU-hour; they change over time and between clouds, so every price names its
# source (papers that depend on prices make them parameters, e.g. paper 35).
_AWS = "AWS EC2 on-demand list price, us-east-1, Linux, per instance / GPUs (as listed 2024; not re-checked offline)"
DEVICES = {
    "H100-SXM": DeviceSpec("H100-SXM", 989.4e12, 3.35e12, 80e9, 700.0, 55.04 / 8,
                           f"{_AWS}: p5.48xlarge 8 x H100 at $55.04/h"),
    "A100-80GB": DeviceSpec("A100-80GB", 312e12, 2.039e12, 80e9, 400.0, 3.67,
                            "Melange authors, melange-release melange/config/example.json (A100-80GB $3.67/h)"),
    "L4": DeviceSpec("L4", 121e12, 300e9, 24e9, 72.0, 0.8048, f"{_AWS}: g6.xlarge 1 x L4 at $0.8048/h"),
    "T4": DeviceSpec("T4", 65e12, 320e9, 16e9, 70.0, 0.526,  # fp16 tensor (T4 has no bf16)
                     f"{_AWS}: g4dn.xlarge 1 x T4 at $0.526/h"),
}


@dataclass(frozen=True)
class ModelShape:
    """What the roofline needs of a decoder: parameters, layers, width, and the K/V width per layer."""

    name: str
    n_params: float
    n_layers: int
    d_model: int
    kv_dim: int  # n_kv_heads * head_dim
    bytes_per_param: float = 2.0
    bytes_per_kv: float = 2.0

    @property
    def kv_bytes_per_token(self) -> float:
        return 2 * self.n_layers * self.kv_dim * self.bytes_per_kv

    @classmethod
    def of(cls, model, name: str = "model", bytes_per_param: float | None = None) -> ModelShape:
        """The shape of a transformers causal LM (its config and its real parameter count)."""
        cfg = model.config
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        kv_heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
        p = next(model.parameters())
        size = bytes_per_param or p.element_size()
        return cls(name, float(sum(t.numel() for t in model.parameters())), cfg.num_hidden_layers,
                   cfg.hidden_size, kv_heads * head_dim, size, size)


LLAMA2_7B = ModelShape("Llama-2-7B", 6.74e9, 32, 4096, 4096)
LLAMA2_13B = ModelShape("Llama-2-13B", 13.0e9, 40, 5120, 5120)
LLAMA2_70B = ModelShape("Llama-2-70B", 69.0e9, 80, 8192, 1024)  # GQA: 8 KV heads of 128


def _flops(shape: ModelShape, prefill_tokens, prefill_pairs, decode_seqs, decode_context):
    """2 FLOPs per parameter per token, plus attention's 4·L·d per (query, key) pair: linear in
    every argument, so the FLOPs of several iterations are those of their summed arguments.
    Numbers or numpy arrays (broadcast)."""
    return (2.0 * shape.n_params * (prefill_tokens + decode_seqs)
            + 4.0 * shape.n_layers * shape.d_model * (prefill_pairs + decode_context))


@dataclass(frozen=True)
class StepModel:
    """Seconds of one iteration from its batch (see the module docstring)."""

    shape: ModelShape
    device: DeviceSpec
    mfu: float = 0.6  # achieved fraction of peak FLOP/s
    mbu: float = 0.8  # achieved fraction of peak bandwidth
    overhead_s: float = 0.0  # per iteration: scheduling, launches
    combine: str = "max"  # "max": compute and memory overlap (GPU); "sum": they do not (CPU)
    memory_fraction: float = 0.9  # of device memory usable for weights + KV cache
    prefill_mfu: float | None = None  # prefill FLOPs' own fraction of peak (None: mfu); CPU GEMMs over many
    # tokens run far closer to peak than decode's skinny ones, which one shared mfu cannot fit

    def __post_init__(self):
        if self.combine not in ("max", "sum"):
            raise ValueError(f"StepModel.combine={self.combine!r} is not allowed; allowed: max, sum")
        if not (0 < self.mfu <= 1 and 0 < self.mbu <= 1):
            raise ValueError(f"StepModel.mfu and mbu must be in (0, 1], got {self.mfu}, {self.mbu}")
        if self.prefill_mfu is not None and not 0 < self.prefill_mfu <= 1:
            raise ValueError(f"StepModel.prefill_mfu must be in (0, 1] or None, got {self.prefill_mfu}")

    def seconds(self, prefill_tokens, prefill_pairs, decode_seqs, decode_context):
        """One iteration: ``prefill_tokens`` prompt tokens with ``prefill_pairs`` causal (query, key) pairs
        (sum of T(T+1)/2), ``decode_seqs`` sequences decoding one token over ``decode_context`` cached tokens
        in total. Scalars or numpy arrays (broadcast)."""
        s, d = self.shape, self.device
        prefill_tokens = np.asarray(prefill_tokens, dtype=np.float64)
        tokens = prefill_tokens + decode_seqs
        flops = self.flops(prefill_tokens, np.asarray(prefill_pairs, dtype=np.float64), decode_seqs, decode_context)
        nbytes = s.n_params * s.bytes_per_param + s.kv_bytes_per_token * (np.asarray(decode_context) + tokens)
        compute, memory = flops / (d.flops * self.mfu), nbytes / (d.bandwidth * self.mbu)
        if self.prefill_mfu is not None:
            prefill = _flops(s, prefill_tokens, np.asarray(prefill_pairs, dtype=np.float64), 0, 0)
            compute = compute + prefill / d.flops * (1 / self.prefill_mfu - 1 / self.mfu)
        busy = np.maximum(compute, memory) if self.combine == "max" else compute + memory
        return self.overhead_s + busy

    def flops(self, prefill_tokens, prefill_pairs, decode_seqs, decode_context):
        """The FLOPs the roofline counts for an iteration (arguments as :meth:`seconds`)."""
        return _flops(self.shape, prefill_tokens, prefill_pairs, decode_seqs, decode_context)

    def kv_capacity_tokens(self) -> int:
        """KV tokens that fit beside the weights in ``memory_fraction`` of the device."""
        free = self.device.memory * self.memory_fraction - self.shape.n_params * self.shape.bytes_per_param
        if free <= 0:
            raise ValueError(f"{self.shape.name} ({self.shape.n_params * self.shape.bytes_per_param / 1e9:.1f} GB) "
                             f"does not fit on {self.device.name} ({self.device.memory / 1e9:.0f} GB)")
        return int(free // self.shape.kv_bytes_per_token)


# ---------------------------------------------------------------- the engine
@dataclass(frozen=True)
class EngineConfig:
    kv_tokens: int  # KV-cache capacity in tokens (blocks * block_size)
    block_size: int = 16  # tokens per KV block (vLLM's default)
    max_batch: int = 256  # running requests at most
    max_prefill_tokens: int = 8192  # prompt tokens admitted per iteration at most (one prompt always fits)
    mixed: bool = True  # running requests decode in the same iteration as new prefills
    max_new_tokens: int = 2048  # what a conservative scheduler reserves per request (outputs are clipped to it)

    def __post_init__(self):
        for key in ("kv_tokens", "block_size", "max_batch", "max_prefill_tokens", "max_new_tokens"):
            if getattr(self, key) < 1:
                raise ValueError(f"EngineConfig.{key} must be >= 1, got {getattr(self, key)}")

    @property
    def blocks(self) -> int:
        return self.kv_tokens // self.block_size


@dataclass
class View:
    """What an admission policy sees. Arrays are of the running batch (``held`` = tokens in the KV
    cache, ``generated`` = output tokens so far), ``cand_*`` of the candidate at the queue head."""

    engine: EngineConfig
    free_blocks: int
    held: np.ndarray
    generated: np.ndarray
    true_remaining: np.ndarray  # for the oracle only
    history: deque  # output lengths of finished requests, newest last


class Admission(Protocol):
    def admit(self, view: View, prompt: int, generated: int, true_remaining: int) -> bool: ...


def _blocks(tokens, block_size):
    return -(-np.asarray(tokens) // block_size)


@dataclass
class Aggressive:
    """vLLM-like: admit while the prompt's blocks fit in what is free now; overflow preempts later."""

    watermark: float = 0.01  # fraction of blocks kept free (vLLM's watermark)
    changes_only_at_finish = True  # a refused head stays refused until a request finishes (free only shrinks)

    def admit(self, view, prompt, generated, true_remaining):
        need = int(_blocks(prompt + generated, view.engine.block_size))
        return need <= view.free_blocks - self.watermark * view.engine.blocks


@dataclass
class Conservative:
    """Reserve every request's maximum: prompt + max_new_tokens for all, admitted and running."""

    changes_only_at_finish = True  # the reservations change only when a request joins or leaves

    def admit(self, view, prompt, generated, true_remaining):
        e = view.engine
        reserved = len(view.held) * e.max_new_tokens + (view.held - view.generated).sum()
        return reserved + prompt + e.max_new_tokens <= e.kv_tokens


def future_peak(held: np.ndarray, remaining: np.ndarray) -> float:
    """LightLLM's peak KV tokens of a batch over its future: with requests sorted by remaining
    output l descending, request k finishes at step l_k, when the k+1 longest are still running:
    ``max_k (k+1)·l_k + sum_{j<=k} h_j`` (h = tokens held now)."""
    if len(held) == 0:
        return 0.0
    order = np.argsort(-remaining, kind="stable")
    l, h = remaining[order].astype(np.float64), held[order].astype(np.float64)
    return float(np.max(np.arange(1, len(l) + 1) * l + np.cumsum(h)))


@dataclass
class PastFuture:
    """LightLLM's Past-Future admission: remaining outputs estimated from the history of finished
    requests (the ``quantile`` of L - g given L > g, over the last ``window``), admit iff the batch's
    future peak fits. Before ``min_history`` finishes, it reserves ``max_new_tokens`` (conservative)."""

    quantile: float = 0.9
    window: int = 1000
    min_history: int = 20

    def estimate(self, generated: np.ndarray, history: deque, max_new: int) -> np.ndarray:
        if len(history) < self.min_history:
            return np.maximum(max_new - generated, 1).astype(np.float64)
        past = np.sort(np.fromiter(history, dtype=np.float64))
        n = len(past)
        # the quantile of the finished lengths above g: positions idx..n-1 of the sorted history,
        # linearly interpolated as numpy's default quantile does
        idx = np.searchsorted(past, generated, side="right")
        pos = idx + self.quantile * np.maximum(n - idx - 1, 0)
        lo = np.minimum(np.floor(pos).astype(np.int64), n - 1)
        hi = np.minimum(lo + 1, n - 1)
        q = past[lo] + (pos - lo) * (past[hi] - past[lo])
        q = np.where(idx < n, q, generated + 1.0)  # longer than anything seen: one more token
        return np.maximum(q - generated, 1.0)

    def admit(self, view, prompt, generated, true_remaining):
        e = view.engine
        gens = np.append(view.generated, generated)
        held = np.append(view.held, prompt + generated)
        rem = self.estimate(gens, view.history, e.max_new_tokens)
        return future_peak(held, rem) <= _token_capacity(e, len(held))


@dataclass
class Oracle:
    """The future-peak rule with the true remaining lengths (an upper bound for PastFuture)."""

    def admit(self, view, prompt, generated, true_remaining):
        held = np.append(view.held, prompt + generated)
        rem = np.append(view.true_remaining, true_remaining)
        return future_peak(held, rem) <= _token_capacity(view.engine, len(held))


def _peaks(held: np.ndarray, remaining: np.ndarray) -> np.ndarray:
    """:func:`future_peak` of each row of ``remaining`` (lists x requests) over the same ``held``."""
    order = np.argsort(-remaining, axis=1, kind="stable")
    l = np.take_along_axis(remaining, order, axis=1).astype(np.float64)
    h = np.cumsum(held.astype(np.float64)[order], axis=1)
    return np.max(np.arange(1, remaining.shape[1] + 1) * l + h, axis=1)


@dataclass
class PastFutureSampled:
    """The authors' sampled Past-Future rule (LightLLM's ``FuturePastReqQueue`` / ``PastFutureQueue``
    as in the paper's artifact; see the module docstring). Deterministic per ``seed``: the RNG is
    reset whenever an :class:`Engine` starts with this policy."""

    seed: int = 0
    window: int = 40  # finished output lengths kept (the artifact's WINDOW_SIZE)
    prior_copies: int = 20  # copies of max_new_tokens in the window before any finish (WINDOW_SIZE // 2)
    max_lists: int = 5  # sampled futures of the batch at most (MAXIMUM_LISTS)
    min_samples: int = 200  # lists = min(max_lists, min_samples // batch + 1) (MINIMUM_SAMPLES)
    reserved: float = 0.05  # capacity fraction kept free: admit iff worst peak < (1 - reserved) x kv_tokens

    def __post_init__(self):
        for key in ("window", "max_lists", "min_samples"):
            if getattr(self, key) < 1:
                raise ValueError(f"PastFutureSampled.{key} must be >= 1, got {getattr(self, key)}")
        if not 0 <= self.prior_copies <= self.window:
            raise ValueError(f"PastFutureSampled.prior_copies must be in [0, window={self.window}], "
                             f"got {self.prior_copies}")
        if not 0 <= self.reserved < 1:
            raise ValueError(f"PastFutureSampled.reserved must be in [0, 1), got {self.reserved}")
        self.reset()

    def reset(self):
        """A fresh RNG stream from ``seed`` (the engine calls this when it starts)."""
        self._rng = np.random.default_rng(self.seed)
        self._view = None  # the View of the admission round in progress
        self._held = self._remaining = self._past = None

    def past(self, history, max_new: int) -> np.ndarray:
        """The window: the last ``window`` finished lengths, topped up with ``max_new`` copies while
        fewer than ``window`` finished (the artifact's deque seeded with ``prior_copies`` of them)."""
        done = np.fromiter(history, dtype=np.int64)[-self.window:]
        prior = min(self.prior_copies, self.window - len(done))
        return np.concatenate([np.full(prior, max_new, dtype=np.int64), done])

    def sample_running(self, generated: np.ndarray, past: np.ndarray, max_new: int, lists: int) -> np.ndarray:
        """``lists`` x n sampled remaining outputs of running requests that generated ``generated``:
        a uniform point on the piecewise-linear curve through the knots g, the sorted window's
        lengths > g, and max_new_tokens (when above the last), rounded half to even as Python's
        ``round``; the final length clipped to [g, max_new], remaining = final - g (may be 0)."""
        g = np.asarray(generated, dtype=np.int64)
        srt = np.sort(past)
        m = len(srt)
        idx = np.searchsorted(srt, g, side="right")
        last = np.where(idx < m, srt[-1], g)
        segments = (m - idx) + (last < max_new)
        knots = np.append(srt, max_new)  # knot j >= 1 of a request is knots[idx + j - 1]
        p = self._rng.random((lists, len(g))) * segments
        pos = np.minimum(np.floor(p).astype(np.int64), np.maximum(segments - 1, 0))
        left = np.where(pos == 0, g, knots[np.clip(idx + pos - 1, 0, m)])
        right = np.where(segments > 0, knots[np.minimum(idx + pos, m)], g)
        final = np.minimum(max_new, np.maximum(g, np.rint(left + (right - left) * (p - pos))))
        return final - g

    def peaks(self, view: View, prompt: int, generated: int) -> np.ndarray:
        """The sampled futures' peak KV tokens with the candidate in the batch, one per list (the
        round's running-batch samples are drawn once, at its first candidate, and kept as
        candidates join, as LightLLM does)."""
        e = view.engine
        if self._view is not view or self._held is None or len(self._held) != len(view.held):
            n = len(view.held)
            lists = min(self.max_lists, self.min_samples // n + 1) if n else 1
            self._view, self._past = view, self.past(view.history, e.max_new_tokens)
            self._held = np.asarray(view.held, dtype=np.int64)
            self._remaining = self.sample_running(view.generated, self._past, e.max_new_tokens, lists)
        lists = self._remaining.shape[0]
        final = self._past[self._rng.integers(len(self._past), size=lists)]  # unconditioned, as LightLLM
        cand = (np.minimum(e.max_new_tokens, np.maximum(generated, final)) - generated)[:, None]
        self._cand = cand
        return _peaks(np.append(self._held, prompt + generated), np.hstack([self._remaining, cand]))

    def admit(self, view, prompt, generated, true_remaining):
        ok = bool(self.peaks(view, prompt, generated).max() < (1 - self.reserved) * view.engine.kv_tokens)
        if ok:  # the candidate joins the round's sampled futures
            self._held = np.append(self._held, prompt + generated)
            self._remaining = np.hstack([self._remaining, self._cand])
        return ok


def _token_capacity(engine: EngineConfig, n_requests: int) -> int:
    """KV tokens a batch of ``n_requests`` can surely hold: each request may waste up to one block
    (the partly filled last block, and the block taken ahead for the next token)."""
    return engine.kv_tokens - engine.block_size * n_requests


# ---------------------------------------------------------------- results
@dataclass(frozen=True)
class SLO:
    ttft_s: float = math.inf
    tpot_s: float = math.inf  # mean time per output token after the first
    e2e_s: float = math.inf


@dataclass
class Result:
    trace: Trace
    first_token_s: np.ndarray  # absolute times
    finish_s: np.ndarray
    preemptions: np.ndarray  # per request
    admitted_s: np.ndarray | None = None  # when the first admission's iteration started (queueing = this - arrival)
    steps: dict = field(default_factory=dict)  # per iteration (record_steps=True): t, dt, prefill, decode, kv
    usage: dict = field(default_factory=dict)  # the engine's integrals (module docstring); {} = not known

    @property
    def ttft(self) -> np.ndarray:
        return self.first_token_s - self.trace.arrival_s

    @property
    def tpot(self) -> np.ndarray:
        n = np.maximum(self.trace.output - 1, 1)
        return (self.finish_s - self.first_token_s) / n

    @property
    def queueing(self) -> np.ndarray:
        """Seconds from arrival to the start of the iteration that first admitted the request."""
        return self.admitted_s - self.trace.arrival_s

    @property
    def e2e(self) -> np.ndarray:
        return self.finish_s - self.trace.arrival_s

    def meets(self, slo: SLO) -> np.ndarray:
        return (self.ttft <= slo.ttft_s) & (self.tpot <= slo.tpot_s) & (self.e2e <= slo.e2e_s)

    def summary(self, slo: SLO | None = None) -> dict[str, float]:
        span = float(self.finish_s.max() - self.trace.arrival_s.min())
        out = {"requests": len(self.trace), "makespan_s": span,
               "throughput_rps": len(self.trace) / span, "tokens_per_s": float(self.trace.output.sum()) / span,
               "preemptions": int(self.preemptions.sum())}
        for name, values in (("ttft", self.ttft), ("tpot", self.tpot), ("e2e", self.e2e)):
            for q in (50, 90, 99):
                out[f"{name}_p{q}_s"] = float(np.percentile(values, q))
            out[f"{name}_mean_s"] = float(values.mean())
        if slo is not None:
            ok = self.meets(slo)
            out["slo_attainment"] = float(ok.mean())
            out["goodput_rps"] = float(ok.sum()) / span
        out.update(utilisation(self.usage, span, float(self.trace.output.sum())))
        return out


def utilisation(usage: dict, span_s: float, output_tokens: float) -> dict[str, float]:
    """Memory and compute utilisation and cost over ``span_s`` seconds of one device (see the module
    docstring); only the keys ``usage`` allows (a step object without FLOPs, a device without price)."""
    if not usage or span_s <= 0:
        return {}
    out = {"busy_fraction": usage["busy_s"] / span_s,
           "kv_utilisation": usage["kv_block_s"] / (usage["blocks"] * span_s)}
    if usage.get("flops") is not None and usage.get("peak_flops"):
        out["achieved_flops"] = usage["flops"] / span_s
        out["compute_utilisation"] = usage["flops"] / (usage["peak_flops"] * span_s)
        if usage["busy_s"] > 0:
            out["compute_utilisation_busy"] = usage["flops"] / (usage["peak_flops"] * usage["busy_s"])
    if usage.get("usd_per_hour"):
        out["device_hours"] = span_s / 3600.0
        out["cost_usd"] = out["device_hours"] * usage["usd_per_hour"]
        out["usd_per_mtok"] = out["cost_usd"] / output_tokens * 1e6
    return out


# ---------------------------------------------------------------- the simulation
class Engine:
    """One instance's state and loop body, public so that papers can drive instances themselves
    (a row whose power cap couples its servers, a decode pool fed by prefill instances): queue
    request indices on ``queue`` once they have arrived, set ``t``, then call :meth:`fast_forward`
    (bulk decode until ``until_t``) or :meth:`iterate` (one iteration) and finally :meth:`result`.
    :func:`simulate` is exactly that loop for one instance."""

    def __init__(self, trace: Trace, step: StepModel, cfg: EngineConfig, policy: Admission, record_steps: bool):
        self.trace, self.step, self.cfg, self.policy = trace, step, cfg, policy
        self.output = np.minimum(trace.output, cfg.max_new_tokens)
        n = len(trace)
        self.first = np.full(n, np.nan)
        self.admitted = np.full(n, np.nan)
        self.finish = np.full(n, np.nan)
        self.preempted = np.zeros(n, dtype=np.int64)
        self.generated = np.zeros(n, dtype=np.int64)  # survives preemption (recompute re-prefills it)
        self.queue: deque[int] = deque()
        self.run_ids = np.zeros(0, dtype=np.int64)  # running requests, in admission order
        self.run_blocks = np.zeros(0, dtype=np.int64)
        self.free = cfg.blocks
        self.history: deque = deque(maxlen=getattr(policy, "window", 1000))
        if hasattr(policy, "reset"):  # stateful policies (a seeded RNG) start afresh with every engine
            policy.reset()
        self.t = 0.0
        self.head_refused = False  # the last admission admitted nothing and left a queue
        self.log = ({k: [] for k in ("t", "dt", "prefill_tokens", "decode_seqs", "kv_tokens", "kv_blocks")}
                    if record_steps else None)
        device = getattr(step, "device", None)
        self.usage = {"busy_s": 0.0, "kv_block_s": 0.0, "blocks": cfg.blocks,
                      "flops": 0.0 if hasattr(step, "flops") else None,
                      "peak_flops": getattr(device, "flops", 0.0), "usd_per_hour": getattr(device, "usd_per_hour", 0.0)}
        self._back = (-np.arange(1, cfg.max_new_tokens + 1)) % cfg.block_size  # residue crossing a block at step j

    @property
    def idle(self) -> bool:
        return not self.queue and len(self.run_ids) == 0

    def outstanding(self) -> int:
        return len(self.queue) + len(self.run_ids)

    def _grow_or_preempt(self):
        """Blocks for this iteration's decode tokens; preempt the newest requests until they fit."""
        bs = self.cfg.block_size
        while len(self.run_ids):
            held = self.trace.prompt[self.run_ids] + self.generated[self.run_ids]
            need = _blocks(held + 1, bs) - self.run_blocks
            if need.sum() <= self.free:
                self.free -= int(need.sum())
                self.run_blocks += need
                return
            victim = self.run_ids[-1]  # the most recently admitted (vLLM's recompute preemption)
            self.free += int(self.run_blocks[-1])
            self.run_ids, self.run_blocks = self.run_ids[:-1], self.run_blocks[:-1]
            self.preempted[victim] += 1
            self.queue.appendleft(int(victim))

    def _admit(self) -> np.ndarray:
        cfg, tr = self.cfg, self.trace
        admitted, budget = [], cfg.max_prefill_tokens
        held = tr.prompt[self.run_ids] + self.generated[self.run_ids]
        view = View(cfg, self.free, held, self.generated[self.run_ids],
                    self.output[self.run_ids] - self.generated[self.run_ids], self.history)
        while self.queue and len(self.run_ids) + len(admitted) < cfg.max_batch:
            i = self.queue[0]
            tokens = int(tr.prompt[i] + self.generated[i])
            need = int(_blocks(tokens + 1, cfg.block_size))
            if (admitted and tokens > budget) or need > view.free_blocks:
                break
            if not self.policy.admit(view, int(tr.prompt[i]), int(self.generated[i]),
                                     int(self.output[i] - self.generated[i])):
                break
            self.queue.popleft()
            admitted.append(i)
            budget -= tokens
            view.free_blocks -= need
            view.held = np.append(view.held, tokens)
            view.generated = np.append(view.generated, self.generated[i])
            view.true_remaining = np.append(view.true_remaining, self.output[i] - self.generated[i])
        self.head_refused = bool(self.queue) and not admitted
        ids = np.asarray(admitted, dtype=np.int64)
        blocks = _blocks(tr.prompt[ids] + self.generated[ids] + 1, cfg.block_size).astype(np.int64)
        self.free -= int(blocks.sum())
        return ids, blocks

    def iterate(self):
        """One iteration starting at ``self.t`` (the caller has queued what has arrived)."""
        tr = self.trace
        self._grow_or_preempt()
        new_ids, new_blocks = self._admit()
        # vLLM v0 (mixed=False): an iteration with prefills decodes nothing
        decoding = self.run_ids if self.cfg.mixed or len(new_ids) == 0 else self.run_ids[:0]
        if len(new_ids) == 0 and len(decoding) == 0:
            return False
        ptok = tr.prompt[new_ids] + self.generated[new_ids]
        dctx = tr.prompt[decoding] + self.generated[decoding]
        batch = (ptok.sum(), (ptok * (ptok + 1) // 2).sum(), len(decoding), dctx.sum())
        if getattr(self.step, "real", False):  # real mode: run the iteration on the model, time it
            dt = float(self.step.run(self, new_ids, decoding))
        else:
            dt = float(self.step.seconds(*batch))
        self.t += dt
        used = self.cfg.blocks - self.free
        self._account(dt, used * dt, *batch)
        if self.log is not None:
            for key, value in zip(self.log, (self.t - dt, dt, int(ptok.sum()), len(decoding), int(dctx.sum()), used)):
                self.log[key].append(value)
        # the prefill yields a token; the first one of a request is its first token
        fresh = new_ids[self.generated[new_ids] == 0]
        self.first[fresh] = self.t
        self.admitted[fresh] = self.t - dt
        self.generated[new_ids] += 1
        self.generated[decoding] += 1
        self.run_ids = np.concatenate([self.run_ids, new_ids])
        self.run_blocks = np.concatenate([self.run_blocks, new_blocks])
        self._retire()
        return True

    def fast_forward(self, until_t: float) -> bool:
        """Decode-only iterations in one vector step while nothing else can happen: nothing can be
        admitted, no request finishes before the last of them, none starts at or after ``until_t`` (the
        next arrival), and the free blocks cover the batch's growth. The same times and tokens as
        that many :meth:`iterate` calls. False if not even one such step is possible. A queue is
        allowed when the policy's refusal of its head can only change at a finish."""
        waiting_is_static = self.head_refused and getattr(self.policy, "changes_only_at_finish", False)
        if (getattr(self.step, "real", False) or (self.queue and not waiting_is_static) or len(self.run_ids) == 0
                or self.t >= until_t):
            return False
        ids, tr, cfg = self.run_ids, self.trace, self.cfg
        held = tr.prompt[ids] + self.generated[ids]
        k = int((self.output[ids] - self.generated[ids]).min())  # the first finish ends the run
        ctx = held.sum() + len(ids) * np.arange(k)  # cached tokens decoded over, per step
        dts = self.step.seconds(0, 0, len(ids), ctx)
        starts = self.t + np.concatenate([[0.0], np.cumsum(dts)[:-1]])
        k = int(np.searchsorted(starts, until_t, side="left"))  # steps starting before the arrival
        need = _blocks(held + k, cfg.block_size) - self.run_blocks
        if k < 1 or need.sum() > self.free:
            return False
        self.free -= int(need.sum())
        self.run_blocks += need
        # blocks held in step j: sum_i ceil((h_i + j + 1) / bs), one more for each i with (h_i + j) % bs == 0
        bs, ctx, dts, t0 = cfg.block_size, ctx[:k], dts[:k], self.t
        used0 = int(((held + bs) // bs).sum())
        more = np.cumsum(np.bincount(held % bs, minlength=bs)[self._back[:k - 1]])  # crossings by step 1..k-1
        self.t = float(starts[k - 1] + dts[k - 1])
        n = len(ids)
        self._account(self.t - t0, used0 * (self.t - t0) + float(more @ dts[1:]),
                      0, 0, k * n, float(held.sum()) * k + n * k * (k - 1) / 2)
        if self.log is not None:
            used = used0 + np.concatenate([[0], more])
            for key, value in zip(self.log, (starts[:k], dts, np.zeros(k, int), np.full(k, n), ctx, used)):
                self.log[key].extend(np.asarray(value).tolist())
        self.generated[ids] += k
        self._retire()
        return True

    def _account(self, busy_s: float, kv_block_s: float, prefill_tokens, prefill_pairs, decode_seqs, decode_context):
        """Add iterations to :attr:`usage`: busy seconds, KV block-seconds, FLOPs (the step's
        ``seconds`` arguments summed over the iterations: FLOPs are linear in them)."""
        u = self.usage
        u["busy_s"] += busy_s
        u["kv_block_s"] += kv_block_s
        if u["flops"] is not None:
            u["flops"] += float(self.step.flops(float(prefill_tokens), float(prefill_pairs), float(decode_seqs),
                                                float(decode_context)))

    def _retire(self):
        done = self.generated[self.run_ids] >= self.output[self.run_ids]
        if done.any():
            self.head_refused = False  # a finish can change the admission decision: ask again
            finished = self.run_ids[done]
            self.finish[finished] = self.t
            self.free += int(self.run_blocks[done].sum())
            self.history.extend(self.output[finished].tolist())
            self.run_ids, self.run_blocks = self.run_ids[~done], self.run_blocks[~done]

    def result(self) -> Result:
        steps = {k: np.asarray(v) for k, v in self.log.items()} if self.log is not None else {}
        trace = replace(self.trace, output=self.output)
        return Result(trace, self.first, self.finish, self.preempted, self.admitted, steps, dict(self.usage))


def simulate(trace: Trace, step: StepModel, engine: EngineConfig, policy: Admission,
             record_steps: bool = False, fast: bool = True) -> Result:
    """Serve ``trace`` on one instance; every request finishes (a prompt that can never fit raises).
    ``fast=False`` runs every iteration one by one (the reference :meth:`Engine.fast_forward` must equal)."""
    too_long = np.flatnonzero(_blocks(trace.prompt + 1, engine.block_size) > engine.blocks)
    if len(too_long):
        raise ValueError(f"simulate: request {too_long[0]} has a {trace.prompt[too_long[0]]}-token prompt, "
                         f"more than the engine's kv_tokens={engine.kv_tokens}")
    e = Engine(trace, step, engine, policy, record_steps)
    arrivals, n, nxt = trace.arrival_s, len(trace), 0
    while nxt < n or not e.idle:
        if e.idle:
            e.t = max(e.t, arrivals[nxt])
        while nxt < n and arrivals[nxt] <= e.t:
            e.queue.append(nxt)
            nxt += 1
        if fast and e.fast_forward(arrivals[nxt] if nxt < n else math.inf):
            continue
        if not e.iterate():  # nothing admissible now: wait for the next arrival
            if nxt >= n:
                raise RuntimeError("simulate: the queue head can never be admitted by the policy")
            e.t = max(e.t, arrivals[nxt])
    return e.result()


ROUTERS = ("round_robin", "least_outstanding")


def simulate_cluster(trace: Trace, instances: list[tuple[StepModel, EngineConfig, Admission]],
                     router: str = "least_outstanding") -> list[Result]:
    """Serve ``trace`` on several instances (each its own device, engine and policy). A router assigns
    every request at its arrival: ``round_robin`` or ``least_outstanding`` (fewest queued + running,
    ties to the lowest index). Returns one Result per instance over the requests it served."""
    if router not in ROUTERS:
        raise ValueError(f"simulate_cluster router={router!r} is not allowed; allowed: {', '.join(ROUTERS)}")
    engines = [Engine(trace, s, c, p, False) for s, c, p in instances]
    owner = np.full(len(trace), -1)
    heap = []  # (time of the engine's next iteration, engine index) for busy engines
    nxt, n = 0, len(trace)
    while nxt < n or heap:
        t_next = heap[0][0] if heap else math.inf
        if nxt < n and trace.arrival_s[nxt] <= t_next:  # route the arrival first
            t = trace.arrival_s[nxt]
            k = nxt % len(engines) if router == "round_robin" else min(
                range(len(engines)), key=lambda j: (engines[j].outstanding(), j))
            e = engines[k]
            was_idle = e.idle
            e.queue.append(nxt)
            owner[nxt] = k
            nxt += 1
            if was_idle:
                e.t = max(e.t, t)
                heapq.heappush(heap, (e.t, k))
            continue
        _, k = heapq.heappop(heap)
        e = engines[k]
        t_arrival = trace.arrival_s[nxt] if nxt < n else math.inf
        if (e.fast_forward(min(t_arrival, heap[0][0] if heap else math.inf)) or e.iterate()) and not e.idle:
            heapq.heappush(heap, (e.t, k))
        elif not e.idle:  # blocked on admission with nothing running: wait for more arrivals
            if nxt >= n:
                raise RuntimeError(f"simulate_cluster: instance {k}'s queue head can never be admitted")
            e.t = max(e.t, trace.arrival_s[nxt])
            heapq.heappush(heap, (e.t, k))
    results = []
    for k, e in enumerate(engines):
        mine = np.flatnonzero(owner == k)
        r = e.result()
        results.append(Result(Trace(trace.arrival_s[mine], trace.prompt[mine], r.trace.output[mine], trace.name),
                              r.first_token_s[mine], r.finish_s[mine], r.preemptions[mine], r.admitted_s[mine],
                              usage=r.usage))
    return results


# ---------------------------------------------------------------- calibration on a real model
def measure_step_times(model, prefill_lengths, decode_points, repeats: int = 5, device: str = "cpu",
                       clock: str = "wall"):
    """Real step times of a transformers causal LM: prefill of one prompt of each length T, and one
    decode step of B sequences over a cache of ``ctx`` tokens each, for each (B, ctx). Every shape
    runs once per round, ``repeats`` rounds after a warm-up round (interleaved, so a slow phase of
    the machine hits all shapes alike), and each keeps its fastest sample (other processes only
    ever add time). ``clock="thread_cpu"`` times the calling thread's CPU time instead of the wall
    clock: with one torch thread on a CPU that is the step's own time on a busy machine too.
    Returns rows (prefill_tokens, prefill_pairs, decode_seqs, decode_context, seconds)."""
    import time

    import torch

    from shared.metrics import cache_interface
    from shared.timing import synchronize

    if clock not in ("wall", "thread_cpu") or (clock == "thread_cpu" and not str(device).startswith("cpu")):
        raise ValueError(f"measure_step_times clock={clock!r} is not allowed on {device}; allowed: wall, "
                         "thread_cpu (cpu only)")
    now = time.perf_counter if clock == "wall" else time.thread_time
    vocab = model.config.vocab_size
    gen = torch.Generator().manual_seed(0)
    name, kwargs = cache_interface(model)  # "cache" or "past_key_values", by transformers version
    shapes, calls = [], []
    model.eval()
    with torch.inference_mode():
        for t in prefill_lengths:
            ids = torch.randint(0, vocab, (1, t), generator=gen).to(device)
            shapes.append((t, t * (t + 1) // 2, 0, 0))
            calls.append(lambda ids=ids: model(input_ids=ids, use_cache=True, **kwargs))
        for b, ctx in decode_points:
            ids = torch.randint(0, vocab, (b, ctx), generator=gen).to(device)
            cache = getattr(model(input_ids=ids, use_cache=True), name)
            step_ids = torch.randint(0, vocab, (b, 1), generator=gen).to(device)

            def decode_once(cache=cache, step_ids=step_ids):
                model(input_ids=step_ids, use_cache=True, **{name: cache}, **kwargs)
                cache.crop(-1)  # drop the token just added: every round decodes over ctx cached tokens

            shapes.append((0, 0, b, b * ctx))
            calls.append(decode_once)
        best = np.full(len(calls), np.inf)
        for round_ in range(repeats + 1):
            for i, call in enumerate(calls):
                synchronize(device)
                start = now()
                call()
                synchronize(device)
                if round_:  # round 0 warms up
                    best[i] = min(best[i], now() - start)
    return np.column_stack([np.asarray(shapes, dtype=np.float64), best])


def fit_step_model(shape: ModelShape, device: DeviceSpec, rows: np.ndarray, combine: str = "sum",
                   prefill_mfu: bool = True) -> StepModel:
    """Calibrate ``mfu``, ``mbu`` and ``overhead_s`` (and ``prefill_mfu`` when ``prefill_mfu`` and the
    rows hold both prefill and decode steps) to measured rows (from :func:`measure_step_times`) by
    least squares on relative errors."""
    from scipy.optimize import least_squares

    own_prefill = bool(prefill_mfu and (rows[:, 0] > 0).any() and (rows[:, 2] > 0).any())

    def model(theta):
        mfu, mbu, overhead = 1 / (1 + np.exp(-theta[0])), 1 / (1 + np.exp(-theta[1])), np.exp(theta[2])
        pf = 1 / (1 + np.exp(-theta[3])) if own_prefill else None
        return StepModel(shape, device, mfu, mbu, overhead, combine, prefill_mfu=pf)

    def residuals(theta):
        return model(theta).seconds(rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3]) / rows[:, 4] - 1

    starts = ([-2, -1, np.log(rows[:, 4].min() / 2)], [-4, -3, np.log(rows[:, 4].min() / 10)])
    best = min((least_squares(residuals, x0 + [x0[0]] * own_prefill) for x0 in starts), key=lambda r: r.cost)
    return model(best.x)


class RealStep:
    """Real mode: the engine's iterations run on a real transformers causal LM (``model``) instead
    of the step model; an iteration's duration is what its forward passes measure (see the module
    docstring). Pass it where a :class:`StepModel` goes: ``simulate(trace, RealStep(model), ...)``.
    Token ids are greedy; request lengths stay the trace's (no EOS)."""

    real = True

    def __init__(self, model, shape: ModelShape | None = None, device: DeviceSpec | None = None,
                 clock: str = "thread_cpu", seed: int = 0):
        import time

        from shared.metrics import cache_interface

        if clock not in ("wall", "thread_cpu"):
            raise ValueError(f"RealStep clock={clock!r} is not allowed; allowed: wall, thread_cpu")
        self.model, self.seed = model.eval(), seed
        self.shape = shape or ModelShape.of(model, "model")
        self.device = device  # for utilisation and cost only (None: not reported)
        self.now = time.perf_counter if clock == "wall" else time.thread_time
        self.cache_name, self.kwargs = cache_interface(model)
        self.dev = next(model.parameters()).device
        self.kv: dict[int, list] = {}  # request -> per layer (keys, values), [1, heads, tokens, dim]
        self.out: dict[int, list[int]] = {}  # request -> generated token ids
        self.forwards = 0

    def flops(self, prefill_tokens, prefill_pairs, decode_seqs, decode_context):
        return _flops(self.shape, prefill_tokens, prefill_pairs, decode_seqs, decode_context)

    def prompt_ids(self, i: int, length: int):
        import torch

        ids = np.random.default_rng((self.seed, i)).integers(0, self.model.config.vocab_size, length)
        return torch.as_tensor(ids, dtype=torch.long, device=self.dev)

    def run(self, engine: Engine, new_ids: np.ndarray, decoding: np.ndarray) -> float:
        """One iteration: prefill each of ``new_ids`` (its prompt plus the tokens it generated before
        a preemption) and decode ``decoding`` in one batched forward over their left-padded caches.
        Returns the seconds the forward passes took (``clock``); cache bookkeeping is not timed."""
        import torch
        import torch.nn.functional as F
        from transformers import DynamicCache

        live = set(engine.run_ids.tolist()) | set(new_ids.tolist())
        for i in [i for i in self.kv if i not in live]:  # finished or preempted: KV freed
            del self.kv[i]
        name, elapsed = self.cache_name, 0.0
        with torch.inference_mode():
            for i in new_ids.tolist():
                self.out.setdefault(i, [])
                g = int(engine.generated[i])
                ids = torch.cat([self.prompt_ids(i, int(engine.trace.prompt[i])),
                                 torch.as_tensor(self.out[i][:g], dtype=torch.long, device=self.dev)])[None]
                start = self.now()
                res = self.model(input_ids=ids, use_cache=True, **self.kwargs)
                elapsed += self.now() - start
                self.kv[i] = [(layer.keys, layer.values) for layer in getattr(res, name).layers]
                self.out[i].append(int(res.logits[0, -1].argmax()))
            if len(decoding):
                ids = decoding.tolist()
                lens = [self.kv[i][0][0].shape[2] for i in ids]
                top = max(lens)
                data = [tuple(torch.cat([F.pad(self.kv[i][layer][part], (0, 0, top - n, 0)) for i, n in zip(ids, lens)])
                              for part in (0, 1)) for layer in range(len(self.kv[ids[0]]))]
                mask = torch.zeros(len(ids), top + 1, dtype=torch.long, device=self.dev)
                for b, n in enumerate(lens):
                    mask[b, top - n:] = 1
                tokens = torch.as_tensor([[self.out[i][-1]] for i in ids], device=self.dev)
                start = self.now()
                res = self.model(input_ids=tokens, attention_mask=mask, use_cache=True,
                                 position_ids=torch.as_tensor(lens, device=self.dev)[:, None],
                                 **{name: DynamicCache(data, config=self.model.config)}, **self.kwargs)
                elapsed += self.now() - start
                layers = getattr(res, name).layers
                nxt = res.logits[:, -1].argmax(-1).tolist()
                for b, i in enumerate(ids):
                    self.kv[i] = [(torch.cat([k, layer.keys[b:b + 1, :, -1:]], 2),
                                   torch.cat([v, layer.values[b:b + 1, :, -1:]], 2))
                                  for (k, v), layer in zip(self.kv[i], layers)]
                    self.out[i].append(nxt[b])
        self.forwards += len(new_ids) + (len(decoding) > 0)
        return elapsed


def cpu_device(flops: float | None = None, bandwidth: float = 28e9, memory: float = 24e9) -> DeviceSpec:
    """This machine as a roofline device: FLOP/s measured by a GEMM (shared.metrics) unless given."""
    if flops is None:
        from shared import metrics

        flops, _source = metrics.device_peak_flops("cpu")
    return DeviceSpec("cpu", float(flops), bandwidth, memory)
