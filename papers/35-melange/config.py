"""Parameters of paper 35 (Mélange: GPU-type selection as cost-aware bin packing). Values live in
pipelines/conf/p35/*.yaml.

The profiles come from the serving simulator (shared.servesim) on datasheet rooflines of four GPU
types (paper35.gpus), the allocation from an ILP (paper35.solver); a second, measured profile table
comes from a tiny decoder timed on this CPU at several thread counts and dtypes.
"""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from paper35.gpus import GPUS
from paper35.profile import check_edges
from shared.zoo import ModelSpec

Model = Literal["llama2-7b", "llama2-70b"]
Workload = Literal["short", "long", "mixed", "conv", "code"]
Dtype = Literal["float32", "bfloat16"]
LengthSpec = tuple[float, float, float]  # prompt mean, output mean, lognormal sigma


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # --- GPU types and profiles (notebook 01) ---
    models: list[Model] = Field(min_length=1, description="model shapes served (paper35.gpus.MODELS)")
    gpus: list[str] = Field(min_length=2, description="GPU types (paper35.gpus.GPUS)")
    prices: dict[str, float] = Field(description="USD per GPU-hour of every GPU type (sources: paper35.gpus.PRICES)")
    max_tp: int = Field(ge=1, description="largest tensor-parallel replica (GPUs of one type)")
    min_kv_tokens: int = Field(ge=1, description="a replica must hold this many KV tokens beside the weights (sets its TP size)")
    mfu: float = Field(gt=0, le=1, description="achieved fraction of peak FLOP/s (every GPU)")
    mbu: float = Field(gt=0, le=1, description="achieved fraction of peak bandwidth (every GPU)")
    overhead_ms: float = Field(ge=0, description="fixed time per iteration (scheduling, launches)")
    input_edges: list[int] = Field(description="input-length bucket edges, tokens: buckets (e_k, e_k+1]")
    output_edges: list[int] = Field(description="output-length bucket edges, tokens")
    slos_ms: list[float] = Field(min_length=2, description="mean TPOT SLOs, ms (the paper: 40 and 120)")
    requests_per_slot: int = Field(ge=1, description="a profile run serves max(min_requests, this x max batch) requests")
    min_requests: int = Field(ge=10, description="fewest requests of one profile run")
    max_batch: int = Field(ge=1, description="largest max batch tried by the profiler")
    batch_growth: float = Field(gt=1, description="the profiler's max batch grows by this factor per run")

    # --- workloads and allocation (notebook 02) ---
    workloads: list[Workload] = Field(min_length=1, description="workloads (paper35.workloads.WORKLOADS)")
    short: LengthSpec = Field(description="Arena-like lognormal: prompt mean, output mean, sigma")
    long: LengthSpec = Field(description="PubMed-like lognormal: prompt mean, output mean, sigma")
    mixed_long_share: float = Field(ge=0, le=1, description="share of long requests in 'mixed'")
    n_samples: int = Field(ge=100, description="lengths drawn per workload for its bucket shares")
    rates: list[float] = Field(min_length=2, description="total request rates, req/s")
    slice_factor: int = Field(ge=1, description="slices per bucket in the ILP (Mélange's slice_factor)")
    low_rate: float = Field(gt=0, description="rates <= this are 'low' in the savings claim")

    # --- measured devices on this CPU (notebook 03) ---
    cpu_model: ModelSpec = Field(description="tiny decoder timed on this CPU (random init: time does not depend on weights)")
    cpu_threads: list[int] = Field(min_length=1, description="torch thread counts, one 'device' each")
    cpu_dtypes: list[Dtype] = Field(min_length=1, description="dtypes, one 'device' each (x threads)")
    cpu_prices: dict[str, float] = Field(description="SYNTHETIC price per hour of each CPU device '<threads>t-<dtype>'")
    cpu_prefill_lengths: list[int] = Field(min_length=2, description="prompt lengths timed for the step-model fit")
    cpu_decode_points: list[tuple[int, int]] = Field(min_length=2, description="(batch, context) decode steps timed")
    cpu_repeats: int = Field(ge=1, description="timed rounds per shape, after a warm-up (the fastest is kept)")
    cpu_input_edges: list[int] = Field(description="input bucket edges of the CPU workload")
    cpu_output_edges: list[int] = Field(description="output bucket edges of the CPU workload")
    cpu_slos_ms: list[float] = Field(min_length=2, description="TPOT SLOs of the CPU devices, ms")
    cpu_short: LengthSpec = Field(description="CPU workload, short requests: prompt mean, output mean, sigma")
    cpu_long: LengthSpec = Field(description="CPU workload, long requests")
    cpu_rates: list[float] = Field(min_length=1, description="request rates of the CPU allocation, req/s")
    cpu_kv_tokens: int = Field(ge=64, description="KV budget of a CPU device, tokens")
    num_threads: int = Field(ge=1, description="torch threads outside the CPU-device measurements")

    @model_validator(mode="after")
    def _check(self) -> "Params":
        for g in self.gpus:
            if g not in GPUS:
                raise ValueError(f"gpus: {g!r} is not one of {', '.join(GPUS)}")
            if g not in self.prices:
                raise ValueError(f"prices: no price for gpu {g!r}")
        for name in ("prices", "cpu_prices"):
            bad = {k: v for k, v in getattr(self, name).items() if v <= 0}
            if bad:
                raise ValueError(f"{name}: every price must be > 0, got {bad}")
        for name in ("input_edges", "output_edges", "cpu_input_edges", "cpu_output_edges"):
            check_edges(name, getattr(self, name))
        if any(r <= 0 for r in self.rates + self.cpu_rates):
            raise ValueError("rates: every rate must be > 0")
        if self.low_rate < min(self.rates):
            raise ValueError(f"low_rate: {self.low_rate} is below every rate {self.rates}")
        for t in self.cpu_threads:
            for d in self.cpu_dtypes:
                if f"{t}t-{d}" not in self.cpu_prices:
                    raise ValueError(f"cpu_prices: no price for CPU device '{t}t-{d}'")
        return self
