"""Parameters of paper 47 (CO2: local updates + asynchronous all-reduce overlapped with compute).
Values live in pipelines/conf/p47/*.yaml."""

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.zoo import ModelSpec


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # --- the run (both notebooks) ---
    model: ModelSpec = Field(description="the tiny Llama every rank trains (shared.zoo.ModelSpec, random init)")
    world_size: int = Field(ge=2, le=8, description="worker processes (gloo ranks), each with a disjoint data shard")
    steps: int = Field(ge=1, description="inner steps per run (each rank: one batch per step)")
    batch_size: int = Field(ge=1, description="sequences per rank and step")
    seq_len: int = Field(ge=2, description="tokens per sequence")
    lr: float = Field(gt=0, description="peak inner learning rate (AdamW), cosine decay to 0.1x")
    warmup_steps: int = Field(ge=0, description="linear warm-up steps of the inner learning rate")
    eval_every: int = Field(ge=1, description="snapshot the global model every this many steps (a multiple of tau)")
    eval_batches: int = Field(ge=1, description="fixed validation batches, split over the ranks")
    num_threads: int = Field(ge=1, description="torch threads per rank")

    # --- the algorithms (notebook 01) ---
    tau: int = Field(ge=1, description="local steps per round (local, slowmo, co2)")
    outer_momentum: float = Field(ge=0, lt=1, description="beta of slowmo and co2")
    outer_lr: float = Field(gt=0, description="alpha of slowmo and co2")
    gap_penalty: float = Field(gt=0, description="co2's staleness-gap penalty lambda (1: none)")
    clip: float = Field(gt=0, description="co2's outer-momentum clipping phi (.inf: none)")
    co2_reference: Literal["live", "current", "own"] = Field(
        description="co2's outer update (co2.co2_round): live = the stale average replaces the rank's launched "
        "copy, the round's local progress kept, outer step on that (the paper's/released data flow); current = "
        "current anchor - stale average (resets to it: loses progress); own = the arrived round's anchor - its average")
    ratios: list[float] = Field(min_length=1, description="T_allreduce / T_compute(one step) of the emulated links")
    claim_ratio: float = Field(gt=0, description="the ratio of the time-to-target claims (one of ratios)")
    target_fraction: float = Field(gt=0, le=1, description="target loss = DDP's val loss at this fraction of its run")
    latency_s: float = Field(ge=0, description="link latency alpha per message (s)")
    calibration_steps: int = Field(ge=2, description="timed steps that measure T_compute before the sweep")

    # --- the ablation (notebook 02): unshaped link, longer rounds ---
    ablation_tau: int = Field(ge=1, description="tau of the ablation (the notes: 16)")
    ablation_steps: int = Field(ge=1, description="inner steps of each ablation run (a multiple of ablation_tau)")
    ablation_penalty: float = Field(gt=0, description="lambda of the penalised variant")
    ablation_clip: float = Field(gt=0, description="phi of the clipped variant")

    @model_validator(mode="after")
    def _check(self) -> "Params":
        if self.steps % self.tau or self.eval_every % self.tau:
            raise ValueError(f"tau: steps={self.steps} and eval_every={self.eval_every} must be multiples of tau={self.tau}")
        if self.ablation_steps % self.ablation_tau:
            raise ValueError(f"ablation_steps: {self.ablation_steps} must be a multiple of ablation_tau={self.ablation_tau}")
        if self.claim_ratio not in self.ratios:
            raise ValueError(f"claim_ratio: {self.claim_ratio} must be one of ratios {self.ratios}")
        if any(not (r > 0) for r in self.ratios):
            raise ValueError(f"ratios: every ratio must be > 0 (.inf: unshaped), got {self.ratios}")
        if self.warmup_steps >= self.steps:
            raise ValueError(f"warmup_steps: must be < steps={self.steps}, got {self.warmup_steps}")
        if not math.isfinite(self.gap_penalty):
            raise ValueError("gap_penalty: must be finite")
        return self
