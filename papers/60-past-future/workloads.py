"""Paper 60 (Past-Future scheduler): the four workloads, capacity, the per-request SLA, and the
admission policies (quantile and sampled Past-Future) that record their own accuracy.

Workloads (every one: prompt and output lengths, Poisson arrivals set later by the load):
``conv`` and ``code`` sample the Azure LLM inference traces 2023 (shared/traces, CC-BY-4.0);
``sharegpt`` is lognormal with ShareGPT's mean lengths (vLLM paper: 161 in, 338 out);
``bimodal`` mixes short and long outputs (a chat-plus-generation mix): lognormal prompts (sigma
0.5), short outputs (sigma 0.5) and long ones (sigma 0.3), so the two modes stay apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from shared import servesim as S

WORKLOADS = ("conv", "code", "sharegpt", "bimodal")


def _lognormal(rng, mean: float, sigma: float, n: int, max_len: int) -> np.ndarray:
    mu = math.log(mean) - sigma**2 / 2  # E[length] = mean
    return np.clip(np.rint(rng.lognormal(mu, sigma, n)), 1, max_len).astype(np.int64)


def build(name: str, n: int, seed: int, *, max_prompt: int, max_output: int, sharegpt=(161.0, 338.0, 1.0),
          bimodal=(256.0, 32.0, 1024.0, 0.3)) -> S.Trace:
    """``n`` requests of workload ``name`` (arrivals 0, 1, 2, ...: set the load with ``.poisson``).
    ``sharegpt`` = (prompt mean, output mean, sigma); ``bimodal`` = (prompt mean, short output mean,
    long output mean, share of long outputs). Lengths clipped to ``max_prompt`` / ``max_output``."""
    if n < 1:
        raise ValueError(f"workloads.build n must be >= 1, got {n}")
    rng = np.random.default_rng(seed)
    if name in ("conv", "code"):
        trace = S.Trace.azure(name)
        pick = rng.choice(len(trace), size=n, replace=n > len(trace))
        prompt, output = trace.prompt[pick], trace.output[pick]
    elif name == "sharegpt":
        p_mean, o_mean, sigma = sharegpt
        prompt, output = _lognormal(rng, p_mean, sigma, n, max_prompt), _lognormal(rng, o_mean, sigma, n, max_output)
    elif name == "bimodal":
        p_mean, short, long, share = bimodal
        if not 0 <= share <= 1:
            raise ValueError(f"workloads.build bimodal long share must be in [0, 1], got {share}")
        is_long = rng.random(n) < share
        prompt = _lognormal(rng, p_mean, 0.5, n, max_prompt)
        output = np.where(is_long, _lognormal(rng, long, 0.3, n, max_output), _lognormal(rng, short, 0.5, n, max_output))
    else:
        raise ValueError(f"workloads.build name={name!r} is not allowed; allowed: {', '.join(WORKLOADS)}")
    return S.Trace(np.arange(n, dtype=np.float64), prompt.clip(1, max_prompt), output.clip(1, max_output), name)


def saturated(trace: S.Trace) -> S.Trace:
    """Every request arrives at t = 0: the server is never idle (the capacity run)."""
    return S.Trace(np.zeros(len(trace)), trace.prompt, trace.output, trace.name)


def capacity_rps(result: S.Result, lo: float = 0.1, hi: float = 0.9) -> float:
    """Steady-state throughput of a saturated run: requests finished between the ``lo`` and ``hi``
    quantiles of the finish times, per second (the ramp-up and the drain left out)."""
    f = np.sort(result.finish_s)
    a, b = int(lo * (len(f) - 1)), int(hi * (len(f) - 1))
    if b <= a or f[b] <= f[a]:
        raise ValueError(f"capacity_rps: too few requests ({len(f)}) for a steady state")
    return (b - a) / float(f[b] - f[a])


@dataclass(frozen=True)
class Sla:
    """Per-request SLA: TTFT_i <= ``ttft_factor`` x (``t_iter_s`` + the lone prefill of prompt_i on
    the step model), i.e. about a + b x prompt tokens (a = factor x one iteration of waiting, b =
    factor x the prefill time per prompt token), and mean TPOT <= ``tpot_s``. The form is ours (the
    Past-Future paper's SLA values were not readable offline): a fixed TTFT bound fails long code
    prompts at any load, one that scales with the prompt does not."""

    step: S.StepModel
    ttft_factor: float
    t_iter_s: float
    tpot_s: float

    def ttft_limit(self, prompt) -> np.ndarray:
        p = np.asarray(prompt, dtype=np.float64)
        return self.ttft_factor * (self.t_iter_s + self.step.seconds(p, p * (p + 1) / 2, 0, 0))

    def meets(self, result: S.Result) -> np.ndarray:
        return (result.ttft <= self.ttft_limit(result.trace.prompt)) & (result.tpot <= self.tpot_s)

    def goodput_rps(self, result: S.Result) -> float:
        """SLA-meeting requests per second of the run's span (first arrival to last finish)."""
        span = float(result.finish_s.max() - result.trace.arrival_s.min())
        return float(self.meets(result).sum()) / span


def sla(result: S.Result, step: S.StepModel, ttft_factor: float, tpot_factor: float) -> tuple[Sla, dict[str, float]]:
    """The SLA from a reference run (``record_steps=True``): t_iter = the median iteration, TTFT_i
    <= ttft_factor x (t_iter + lone prefill of prompt_i), mean TPOT <= tpot_factor x t_iter."""
    dt, prefill = result.steps["dt"], result.steps["prefill_tokens"]
    if len(dt) == 0 or not (prefill > 0).any():
        raise ValueError("sla: the reference run needs record_steps=True and at least one prefill")
    t_prefill, t_iter = float(np.median(dt[prefill > 0])), float(np.median(dt))
    return Sla(step, ttft_factor, t_iter, tpot_factor * t_iter), {"t_prefill_s": t_prefill, "t_iter_s": t_iter}


@dataclass
class RecordingPastFuture(S.PastFuture):
    """PastFuture that, at every admission decision with a warm history, records the estimated
    future peak of the batch plus the candidate and the realised one (the same formula with the
    true remaining lengths: the batch's memory if nothing else joined). Decisions are unchanged."""

    records: list = field(default_factory=list)

    def admit(self, view, prompt, generated, true_remaining):
        if len(view.history) >= self.min_history:
            held = np.append(view.held, prompt + generated)
            est = self.estimate(np.append(view.generated, generated), view.history, view.engine.max_new_tokens)
            self.records.append((S.future_peak(held, est),
                                 S.future_peak(held, np.append(view.true_remaining, true_remaining))))
        return super().admit(view, prompt, generated, true_remaining)

    def peak_errors(self) -> np.ndarray:
        """(estimated - realised) / realised per recorded decision."""
        if not self.records:
            return np.zeros(0)
        est, real = np.asarray(self.records).T
        return (est - real) / real


@dataclass
class RecordingPastFutureSampled(S.PastFutureSampled):
    """The authors' sampled rule (shared.servesim.PastFutureSampled) that records, at every
    admission decision once ``min_history`` requests have finished, its worst sampled future peak
    and the realised one (true remaining lengths). Decisions and RNG draws are unchanged."""

    min_history: int = 20
    records: list = field(default_factory=list)

    def admit(self, view, prompt, generated, true_remaining):
        self._truth = (view, prompt + generated, true_remaining)
        return super().admit(view, prompt, generated, true_remaining)

    def peaks(self, view, prompt, generated):
        out = super().peaks(view, prompt, generated)
        if len(view.history) >= self.min_history:
            _, held, true_remaining = self._truth
            realised = S.future_peak(np.append(view.held, held), np.append(view.true_remaining, true_remaining))
            self.records.append((float(out.max()), realised))
        return out

    peak_errors = RecordingPastFuture.peak_errors
