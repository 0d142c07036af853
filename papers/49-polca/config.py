"""Parameters of paper 49 (POLCA, power oversubscription of LLM inference clusters). Values live in
pipelines/conf/p49/*.yaml.

The simulator (shared.servesim) and the power model (power.py) are the same at every scale;
scales change the row's size, the simulated time, the oversubscription grid and the
sensitivity grid. The paper's thresholds and clocks were not readable offline: they are the
planning notes' values, swept where it matters.
"""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.servesim import DEVICES

Frac = Field(gt=0, le=1)

class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # --- servers and model ---
    model: Literal["llama2-7b", "llama2-13b", "llama2-70b"] = Field(description="model each server serves (one tensor-parallel instance)")
    gpu: str = Field(description="a shared.servesim.DEVICES name; its TDP is the power model's TDP")
    gpus_per_server: int = Field(ge=1, description="GPUs per server (the instance's tensor-parallel degree)")
    mfu: float = Field(gt=0, le=1, description="achieved fraction of peak FLOP/s of the server's instance")
    mbu: float = Field(gt=0, le=1, description="achieved fraction of peak bandwidth")
    overhead_s: float = Field(ge=0, description="fixed seconds per iteration")
    max_batch: int = Field(ge=1, description="running requests per server at most")
    max_prompt: int = Field(ge=1, description="prompts clipped to this many tokens")

    # --- power model (power.GpuPower) ---
    idle_frac: float = Field(ge=0, lt=1, description="idle GPU power / TDP")
    u_prefill: float = Field(gt=0, le=1, description="activity of a compute-bound (prefill) iteration")
    u_decode: float = Field(gt=0, le=1, description="activity of a memory-bound (decode) iteration")
    gamma: float = Field(gt=0, description="dynamic power ~ f**gamma")
    beta: float = Field(ge=0, le=1, description="memory-bound time ~ f**-beta under a clock cap (compute-bound: 1/f)")
    other_w: float = Field(ge=0, description="non-GPU power of a server (W), constant, in the budget and the draw")

    # --- control (power.ControlConfig) ---
    t1: float = Field(gt=0, le=1, description="POLCA: above t1 x budget, cap low-priority servers")
    t2: float = Field(gt=0, le=1, description="POLCA: above t2 x budget, cap every server; capping baseline's threshold")
    hysteresis: float = Field(ge=0, lt=1, description="uncap only hysteresis x budget below a threshold")
    f_low: float = Field(gt=0, le=1, description="clock fraction of low-priority servers above t1")
    f_all: float = Field(gt=0, le=1, description="clock fraction of every server above t2")
    polca_delay_s: float = Field(ge=0, description="POLCA's actuation delay (in-band frequency locking: fast)")
    capping_delay_s: float = Field(ge=0, description="the power-capping baseline's actuation delay")
    brake_f: float = Field(gt=0, le=1, description="clock fraction of the power brake")
    brake_s: float = Field(gt=0, description="how long the brake holds")
    tick_s: float = Field(gt=0, description="telemetry and control period")
    budget_window_s: float = Field(gt=0, description="the budget is checked on the row power averaged over this window")

    # --- workload ---
    n0_servers: int = Field(ge=2, description="servers the budget is provisioned for (at peak)")
    rate_per_server: float = Field(gt=0, description="requests/s per server at the diurnal peak")
    duration_s: float = Field(gt=0, description="simulated seconds of arrivals (one compressed day per cycle)")
    trough: float = Field(gt=0, le=1, description="diurnal envelope's minimum (fraction of the peak rate)")
    cycles: float = Field(gt=0, description="diurnal cycles over duration_s")
    low_share: float = Field(gt=0, lt=1, description="share of requests (and servers) of low priority")

    # --- sweeps and criteria ---
    oversub_grid: list[float] = Field(min_length=1, description="oversubscription fractions swept (0.25 = +25% servers)")
    claim_oversub: float = Field(ge=0, description="the oversubscription of the per-point claims (one of oversub_grid)")
    max_hp_increase: float = Field(ge=0, description="allowed high-priority p99 TTFT increase over unlimited power")
    sensitivity_u_decode: list[float] = Field(min_length=1, description="u_decode values of the sensitivity table")
    sensitivity_gamma: list[float] = Field(min_length=1, description="gamma values of the sensitivity table")
    sensitivity_oversub: float = Field(ge=0, description="oversubscription POLCA must sustain in each sensitivity cell")

    # --- training profile ---
    train_compute_frac: float = Field(gt=0, le=1, description="compute phase power / TDP")
    train_comm_frac: float = Field(gt=0, le=1, description="communication phase power / TDP")
    train_period_s: float = Field(gt=0, description="one training iteration (compute + communication)")
    train_compute_share: float = Field(gt=0, lt=1, description="compute share of an iteration")
    train_jobs: int = Field(ge=1, description="synchronous jobs in the row (random phase offsets)")
    train_duration_s: float = Field(gt=0, description="simulated seconds of training")
    train_dt_s: float = Field(gt=0, description="time step of the training simulation (divides tick_s)")
    train_oversub_grid: list[float] = Field(min_length=1, description="oversubscription fractions for training")
    train_max_slowdown: float = Field(ge=0, description="allowed training throughput loss")

    num_threads: int = Field(ge=1, description="torch CPU threads (nothing here uses torch; kept for the runner)")

    @model_validator(mode="after")
    def _check(self) -> "Params":
        if self.gpu not in DEVICES:
            raise ValueError(f"gpu: {self.gpu!r} is not a servesim device; allowed: {', '.join(DEVICES)}")
        if not self.t1 <= self.t2:
            raise ValueError(f"t1: must be <= t2, got t1={self.t1}, t2={self.t2}")
        if self.u_decode > self.u_prefill:
            raise ValueError(f"u_decode: must be <= u_prefill ({self.u_prefill}), got {self.u_decode}")
        if self.claim_oversub not in self.oversub_grid:
            raise ValueError(f"claim_oversub: {self.claim_oversub} must be one of oversub_grid {self.oversub_grid}")
        if any(x < 0 for x in self.oversub_grid + self.train_oversub_grid):
            raise ValueError("oversub_grid: oversubscription fractions must be >= 0")
        ratio = self.tick_s / self.train_dt_s
        if abs(ratio - round(ratio)) > 1e-9:
            raise ValueError(f"train_dt_s: must divide tick_s={self.tick_s}, got {self.train_dt_s}")
        return self
