"""Parameters of paper 60 (Past-Future scheduler, LightLLM). Values live in pipelines/conf/p60/*.yaml.

The simulator (shared.servesim) is the same at every scale; scales change the number of
requests, the loads, the seeds, the KV budget and whether the mixed-iteration extra runs.
"""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.servesim import DEVICES
from shared.zoo import ModelSpec

Workload = Literal["conv", "code", "sharegpt", "bimodal"]


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # --- workloads ---
    workloads: list[Workload] = Field(min_length=1, description="workloads served (workloads.WORKLOADS)")
    n_requests: int = Field(ge=50, description="requests per workload and seed")
    seeds: list[int] = Field(min_length=1, description="seeds of the request sample and the Poisson arrivals")
    loads: list[float] = Field(min_length=1, description="arrival rates as multiples of the capacity")
    heavy_load: float = Field(gt=0, description="loads >= this are 'heavy' in the claims")
    light_load: float = Field(gt=0, description="the load of the no-regression claim (one of loads)")
    sharegpt_means: tuple[float, float] = Field(description="ShareGPT-like lognormal: prompt and output mean tokens")
    sharegpt_sigma: float = Field(gt=0, description="log-space sigma of the ShareGPT-like lengths")
    bimodal: tuple[float, float, float, float] = Field(description="prompt mean, short output mean, long output mean, long share")

    # --- engine (Llama-2-7B on an A100 roofline) ---
    device: str = Field(description="a shared.servesim.DEVICES name")
    kv_tokens: int = Field(ge=0, description="KV budget in tokens; 0: what the device holds beside the weights")
    max_batch: int = Field(ge=1, description="running requests at most")
    max_new_tokens: int = Field(ge=1, description="output cap; what the conservative policy reserves")
    max_prompt: int = Field(ge=1, description="prompts clipped to this many tokens")
    mixed: bool = Field(description="main sweep: running requests decode in iterations that prefill (False: vLLM v0 / LightLLM)")
    mixed_extra: bool = Field(description="also run the roofline sweep with the other value of mixed (extra metrics, no claim)")

    # --- policies and SLA ---
    past_quantile: float = Field(gt=0, lt=1, description="PastFuture: quantile of L - g given L > g over the history")
    past_window: int = Field(ge=1, description="PastFuture: finished requests in the history")
    past_min_history: int = Field(ge=1, description="PastFuture: finishes before the history is used (conservative until then)")
    sla_ttft_factor: float = Field(gt=0, description="TTFT_i <= this x (median iteration + lone prefill of prompt_i), oracle at load 1")
    sla_tpot_factor: float = Field(gt=0, description="mean TPOT <= this x the median iteration (oracle at load 1)")
    claim_factor: float = Field(gt=1, description="PastFuture / max(aggressive, conservative) that counts as a win")

    # --- the second step model: calibrated on this CPU from a real tiny model ---
    cpu_model: ModelSpec = Field(description="tiny zoo model timed on this CPU (random init: time does not depend on weights)")
    cpu_prefill_lengths: list[int] = Field(min_length=2, description="prompt lengths timed for the fit")
    cpu_decode_points: list[tuple[int, int]] = Field(min_length=2, description="(batch, context) decode steps timed for the fit")
    cpu_heldout_prefill: list[int] = Field(min_length=1, description="held-out prompt lengths (calibration error)")
    cpu_heldout_decode: list[tuple[int, int]] = Field(min_length=1, description="held-out (batch, context) decode steps")
    cpu_repeats: int = Field(ge=1, description="timed repeats per shape (median)")
    cpu_loads: list[float] = Field(min_length=1, description="loads of the sweep with the CPU step model")
    cpu_seeds: list[int] = Field(min_length=1, description="seeds of the sweep with the CPU step model")
    num_threads: int = Field(ge=1, description="torch CPU threads (timings)")

    @model_validator(mode="after")
    def _check(self) -> "Params":
        if self.device not in DEVICES:
            raise ValueError(f"device: {self.device!r} is not one of {', '.join(DEVICES)}")
        if not any(abs(x - self.light_load) < 1e-9 for x in self.loads):
            raise ValueError(f"light_load: {self.light_load} must be one of loads {self.loads}")
        if not any(x >= self.heavy_load for x in self.loads):
            raise ValueError(f"heavy_load: no load in {self.loads} is >= {self.heavy_load}")
        if any(x <= 0 for x in self.loads + self.cpu_loads):
            raise ValueError("loads: every load must be > 0")
        if not 0 <= self.bimodal[3] <= 1:
            raise ValueError(f"bimodal: the long share must be in [0, 1], got {self.bimodal[3]}")
        return self
