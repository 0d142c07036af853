"""Paper 49 (POLCA): the GPU power model, frequency caps on the step model, the row's power
controller (POLCA's two thresholds, a slow power-capping baseline, the power brake) and the
training power profile.

**Power of one GPU** in an iteration (the planning notes' model; every constant a parameter):

    P = P_idle + (TDP - P_idle) * u * f**gamma

``f`` is the locked core clock as a fraction of the maximum, ``gamma`` (~2.5) the exponent of
dynamic power in the clock (voltage falls with it). ``u`` is the iteration's activity: a purely
memory-bound iteration has ``u_decode`` (~0.45), a compute-bound one ``u_prefill`` (~1.0, the
board at TDP), and in between ``u = u_decode + (u_prefill - u_decode) * min(1, compute_s / memory_s)``
with compute and memory seconds of the uncapped roofline of its batch (shared.servesim's
StepModel: 2 FLOPs per parameter per token against the weights and KV bytes). So a prefill of a
few hundred tokens runs at TDP, a small decode batch near ``u_decode``, a large decode batch in
between, and an idle GPU at ``P_idle``.

**Frequency caps slow the step**: compute time scales as 1/f and memory time as f**-beta
(beta ~0.3: HBM keeps its clock, only the SMs issuing loads slow down), i.e. a capped copy of the
StepModel whose device has ``flops * f`` and ``bandwidth * f**beta``. Prefill (compute-bound)
slows ~1/f, decode (memory-bound) much less. :class:`CappedStep` is the wrapper the engine calls:
it reads its current cap ``f`` and delegates to the capped copy.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field, replace

import numpy as np

from shared import servesim as S


# ---------------------------------------------------------------- power of a GPU
@dataclass(frozen=True)
class GpuPower:
    tdp_w: float = 700.0  # H100-SXM board power
    idle_frac: float = 0.1  # idle power as a fraction of TDP
    u_prefill: float = 1.0  # activity of a compute-bound iteration
    u_decode: float = 0.45  # activity of a memory-bound iteration
    gamma: float = 2.5  # dynamic power ~ f**gamma

    def __post_init__(self):
        if not (0 <= self.idle_frac < 1 and 0 < self.u_decode <= self.u_prefill <= 1 and self.gamma > 0):
            raise ValueError(f"GpuPower: need 0 <= idle_frac < 1, 0 < u_decode <= u_prefill <= 1, gamma > 0; got {self}")

    @property
    def idle_w(self) -> float:
        return self.idle_frac * self.tdp_w

    def watts(self, u, f=1.0):
        """Power (W) of a GPU at activity ``u`` and clock fraction ``f`` (scalars or arrays)."""
        return self.idle_w + (self.tdp_w - self.idle_w) * np.asarray(u) * np.asarray(f, dtype=np.float64) ** self.gamma

    def activity(self, step: S.StepModel, tokens, decode_context):
        """``u`` of iterations with ``tokens`` (prefill + decode) over ``decode_context`` cached tokens."""
        s, d = step.shape, step.device
        tokens = np.asarray(tokens, dtype=np.float64)
        compute = 2.0 * s.n_params * tokens / (d.flops * step.mfu)
        memory = (s.n_params * s.bytes_per_param + s.kv_bytes_per_token * (np.asarray(decode_context) + tokens)) / (
            d.bandwidth * step.mbu)
        share = np.minimum(1.0, compute / memory)
        return self.u_decode + (self.u_prefill - self.u_decode) * share

    def u_of_tdp_frac(self, frac: float) -> float:
        """The activity at which an uncapped GPU draws ``frac`` x TDP (training phases are given so)."""
        u = (frac - self.idle_frac) / (1 - self.idle_frac)
        if not 0 <= u <= 1:
            raise ValueError(f"GpuPower: {frac} x TDP is outside [idle_frac={self.idle_frac}, 1]")
        return u


def capped(step: S.StepModel, f: float, beta: float) -> S.StepModel:
    """``step`` with the core clock at ``f`` x max: FLOP/s x f, effective bandwidth x f**beta."""
    if not 0 < f <= 1:
        raise ValueError(f"capped: the clock fraction f must be in (0, 1], got {f}")
    d = step.device
    return replace(step, device=replace(d, name=f"{d.name}@{f:g}", flops=d.flops * f, bandwidth=d.bandwidth * f**beta))


class CappedStep:
    """The step model one server's engine calls: it reads the server's current cap ``f`` (set by the
    row's controller between control ticks) and times the batch on the capped copy."""

    def __init__(self, step: S.StepModel, beta: float):
        self.base, self.beta, self.f = step, beta, 1.0
        self._copies: dict[float, S.StepModel] = {1.0: step}

    def seconds(self, prefill_tokens, prefill_pairs, decode_seqs, decode_context):
        model = self._copies.get(self.f)
        if model is None:
            model = self._copies[self.f] = capped(self.base, self.f, self.beta)
        return model.seconds(prefill_tokens, prefill_pairs, decode_seqs, decode_context)


# ---------------------------------------------------------------- the row's controller
POLICIES = ("unlimited", "none", "polca", "capping")


@dataclass(frozen=True)
class ControlConfig:
    """Thresholds as fractions of the row's budget. POLCA: above ``t1`` lock low-priority servers
    to ``f_low``; above ``t2`` lock every server to ``f_all``; release a level only when the power
    is ``hysteresis`` below its threshold. ``capping``: one threshold ``t2``, every server to
    ``f_all``, acting ``capping_delay_s`` after its decision (slow out-of-band power capping). The
    brake (every policy but ``unlimited``): the row's power averaged over the last
    ``budget_window`` ticks (the PDU's reading the budget is enforced on) above the budget drops
    every server to ``brake_f`` for ``brake_s``. The thresholds act on every tick's reading."""

    t1: float = 0.85
    t2: float = 0.95
    hysteresis: float = 0.05
    f_low: float = 0.7
    f_all: float = 0.6
    polca_delay_s: float = 0.0
    capping_delay_s: float = 3.0
    brake_f: float = 0.5
    brake_s: float = 10.0
    budget_window: int = 1  # ticks averaged for the budget check

    def __post_init__(self):
        if not (0 < self.t1 <= self.t2 <= 1):
            raise ValueError(f"ControlConfig: need 0 < t1 <= t2 <= 1, got t1={self.t1}, t2={self.t2}")
        for key in ("f_low", "f_all", "brake_f"):
            if not 0 < getattr(self, key) <= 1:
                raise ValueError(f"ControlConfig.{key} must be in (0, 1], got {getattr(self, key)}")
        if min(self.hysteresis, self.polca_delay_s, self.capping_delay_s, self.brake_s) < 0:
            raise ValueError("ControlConfig: hysteresis, delays and brake_s must be >= 0")
        if self.budget_window < 1:
            raise ValueError(f"ControlConfig.budget_window must be >= 1 tick, got {self.budget_window}")


@dataclass
class Controller:
    """The state machine, stepped once per control tick with the row power of the tick just
    measured (as a fraction of the budget). ``level``: 0 uncapped, 1 low priority capped, 2 all
    capped; decisions take effect after the policy's delay; the brake acts at once."""

    policy: str
    cfg: ControlConfig = field(default_factory=ControlConfig)
    level: int = 0  # decided
    applied: int = 0  # in effect
    brake_until: float = -math.inf
    brakes: int = 0  # brake engagements
    violations: int = 0  # ticks whose budget reading (window mean) is above the budget
    pending: deque = field(default_factory=deque)  # (time it takes effect, level)
    recent: deque = field(default_factory=deque)  # the last budget_window readings

    def __post_init__(self):
        if self.policy not in POLICIES:
            raise ValueError(f"Controller policy={self.policy!r} is not allowed; allowed: {', '.join(POLICIES)}")

    def decide(self, frac: float) -> int:
        """The level the thresholds ask for at power ``frac`` x budget, given the current level."""
        c = self.cfg
        if self.policy == "polca":
            up = 2 if frac > c.t2 else 1 if frac > c.t1 else 0
            keep = 2 if frac >= c.t2 - c.hysteresis else 1 if frac >= c.t1 - c.hysteresis else 0
        elif self.policy == "capping":
            up = 2 if frac > c.t2 else 0
            keep = 2 if frac >= c.t2 - c.hysteresis else 0
        else:
            return 0
        return max(up, min(self.level, keep))

    def step(self, t: float, frac: float) -> tuple[float, float]:
        """Measured ``frac`` at the end of a tick ending at ``t``: returns the clock fractions
        (low-priority servers, high-priority servers) for the next tick."""
        c = self.cfg
        self.recent.append(frac)
        if len(self.recent) > c.budget_window:
            self.recent.popleft()
        if sum(self.recent) / len(self.recent) > 1.0:
            self.violations += 1
            if self.policy != "unlimited" and t >= self.brake_until:
                self.brakes += 1
                self.brake_until = t + c.brake_s
        new = self.decide(frac)
        if new != self.level:
            self.level = new
            delay = c.capping_delay_s if self.policy == "capping" else c.polca_delay_s
            self.pending.append((t + delay, new))
        while self.pending and self.pending[0][0] <= t + 1e-12:
            self.applied = self.pending.popleft()[1]
        f_low = c.f_all if self.applied == 2 else c.f_low if self.applied == 1 else 1.0
        f_high = c.f_all if self.applied == 2 else 1.0
        if t < self.brake_until:
            f_low, f_high = min(f_low, c.brake_f), min(f_high, c.brake_f)
        return f_low, f_high


def replay(policy: str, fracs, tick_s: float = 1.0, cfg: ControlConfig | None = None):
    """The controller over a hand-made power series (fractions of the budget, one per tick, no
    feedback): per tick the (f_low, f_high) it sets for the next tick, and the controller."""
    ctl = Controller(policy, cfg or ControlConfig())
    out = [ctl.step((i + 1) * tick_s, float(x)) for i, x in enumerate(fracs)]
    return np.asarray(out), ctl


# ---------------------------------------------------------------- training
@dataclass(frozen=True)
class TrainingProfile:
    """A synchronous training job: a compute phase at ``compute_frac`` x TDP (slows ~1/f under a
    cap) alternating with a communication phase at ``comm_frac`` x TDP (unaffected by the clock),
    ``compute_share`` of each ``period_s``."""

    compute_frac: float = 0.95
    comm_frac: float = 0.6
    period_s: float = 2.0
    compute_share: float = 0.7


def training_row(n_servers: int, gpus: int, power: GpuPower, profile: TrainingProfile, ctl: Controller,
                 budget_w: float, other_w: float, duration_s: float, tick_s: float, dt_s: float, n_jobs: int = 1,
                 seed: int = 0) -> dict:
    """Servers split into ``n_jobs`` synchronous jobs (random phase offsets), stepped every ``dt_s``;
    the controller sees each tick's mean row power. Returns the row power per tick (W), the work
    done (training iterations, fractional, summed over servers), brakes and violations."""
    if tick_s < dt_s or not math.isclose(tick_s / dt_s, round(tick_s / dt_s)):
        raise ValueError(f"training_row: tick_s={tick_s} must be a multiple of dt_s={dt_s}")
    rng = np.random.default_rng(seed)
    job = np.arange(n_servers) % n_jobs
    phase = rng.random(n_jobs)[job] * profile.period_s  # progress in "uncapped seconds" of the period
    u_c, u_m = power.u_of_tdp_frac(profile.compute_frac), power.u_of_tdp_frac(profile.comm_frac)
    low = np.zeros(n_servers, dtype=bool)  # training is one priority class: only T2 (and the brake) touch it
    steps, per_tick = int(round(duration_s / dt_s)), int(round(tick_s / dt_s))
    f = np.ones(n_servers)
    start, watts, acc = phase.copy(), [], 0.0
    for i in range(steps):
        in_compute = (phase % profile.period_s) < profile.compute_share * profile.period_s
        u = np.where(in_compute, u_c, u_m)
        acc += float((gpus * power.watts(u, f) + other_w).sum())  # the cap lowers both phases' power
        phase = phase + dt_s * np.where(in_compute, f, 1.0)
        if (i + 1) % per_tick == 0:
            mean_w = acc / per_tick
            watts.append(mean_w)
            acc = 0.0
            f_low, f_high = ctl.step((i + 1) * dt_s, mean_w / budget_w)
            f = np.where(low, f_low, f_high)
    return {"watts": np.asarray(watts), "work": float((phase - start).sum() / profile.period_s),
            "brakes": ctl.brakes, "violations": ctl.violations}
