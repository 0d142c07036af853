"""Parameters of paper 27 (S-LoRA: serving thousands of concurrent LoRA adapters). Values live in
pipelines/conf/p27/*.yaml."""

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.zoo import ModelSpec

Range = tuple[int, int]


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # --- the base model and the adapters ---
    model: ModelSpec = Field(description="base model (random init: throughput does not depend on the weights)")
    dtype: Literal["float32", "bfloat16"] = Field(description="weights, adapters and KV dtype")
    lora_targets: list[str] = Field(min_length=1, description="adapted linears (names in every layer), the paper: q, k, v, o")
    lora_ranks: list[int] = Field(min_length=1, description="adapter k has rank lora_ranks[k % len] (S2: 64, 32, 16, 8)")
    lora_alpha: float = Field(gt=0, description="LoRA alpha (scale alpha / r)")
    lora_init_std: float = Field(gt=0, description="std of the random B matrices (A ~ N(0, 1/in))")

    # --- the workload (S-LoRA's synthetic trace) ---
    n_adapters: list[int] = Field(min_length=2, description="numbers of adapters N swept (the first is the reference)")
    req_rates: list[Annotated[float, Field(gt=0)]] = Field(min_length=1, description="arrival rates (req/s of measured time); the first feeds the claims")
    n_requests: int = Field(ge=4, description="requests per trace")
    cv: float = Field(gt=0, description="coefficient of variation of the Gamma inter-arrivals (1: Poisson)")
    alpha: float = Field(gt=0, description="power-law exponent of adapter popularity")
    popularity: Literal["slora", "zipf"] = Field(description="'slora': the authors' generator (uniform at alpha 1); 'zipf'")
    input_range: Range = Field(description="prompt lengths, uniform, inclusive (the paper: 8..512)")
    output_range: Range = Field(description="output lengths, uniform, inclusive (the paper: 8..512)")
    slo_s: float = Field(gt=0, description="first-token latency SLO (s of measured time) for the attainment")

    # --- the servers ---
    max_batch: int = Field(ge=1, description="most running requests of a server")
    max_wait_tokens: int = Field(ge=0, description="decode steps of a running batch between admissions of new requests (S-LoRA's router: 10)")
    device_memory_models: float = Field(gt=1, description="device memory M in units of the base model's weight bytes")
    repeats: int = Field(ge=1, description="runs of every (server, N, rate); the best throughput is kept (a loaded machine only slows runs down)")
    servers: list[Literal["slora", "peft", "merged"]] = Field(min_length=1, description="servers compared")
    reference_n: int = Field(ge=1, description="N the flatness/collapse ratios divide by (the paper's smallest: 5)")
    peft_claim_n: int = Field(ge=2, description="N of the PEFT collapse / S-LoRA over PEFT claims (the paper: 100)")
    merged_claim_n: int = Field(ge=1, description="N of the S-LoRA over merged-copies claim (the paper: 5)")

    # --- unified paging vs separate pools ---
    paging_n_adapters: int = Field(ge=1, description="adapters of the paging comparison (ranks as lora_ranks)")
    paging_requests: int = Field(ge=1, description="requests offered to each memory until the first that does not fit")
    paging_budget_models: float = Field(gt=0, description="the budget M of pages, in units of the base model's weights")
    separate_adapter_fraction: float = Field(gt=0, lt=1, description="separate pools: share of M reserved as max-rank adapter slots")
    separate_fractions: list[float] = Field(min_length=1, description="the split sweep of the separate pools (figure)")

    num_threads: int = Field(ge=1, description="torch CPU threads")

    @model_validator(mode="after")
    def _check(self) -> "Params":
        if self.n_adapters != sorted(set(self.n_adapters)) or self.n_adapters[0] < 1:
            raise ValueError(f"n_adapters: increasing distinct values >= 1 needed, got {self.n_adapters}")
        for key in ("reference_n", "peft_claim_n", "merged_claim_n"):
            if getattr(self, key) not in self.n_adapters:
                raise ValueError(f"{key}: {getattr(self, key)} must be one of n_adapters {self.n_adapters}")
        for key in ("input_range", "output_range"):
            lo, hi = getattr(self, key)
            if not 1 <= lo <= hi:
                raise ValueError(f"{key}: need 1 <= low <= high, got {[lo, hi]}")
        if any(r < 1 for r in self.lora_ranks) or max(self.lora_ranks) > self.model.d_model:
            raise ValueError(f"lora_ranks: each in [1, d_model={self.model.d_model}], got {self.lora_ranks}")
        if self.model.attention != "mha":
            raise ValueError(f"model.attention: pages are d_model vectors; use mha (K/V as wide as the hidden size), got {self.model.attention}")
        if self.input_range[1] + self.output_range[1] > self.model.max_seq_len:
            raise ValueError(f"model.max_seq_len: {self.model.max_seq_len} < longest request {self.input_range[1] + self.output_range[1]}")
        if any(not 0 < f < 1 for f in self.separate_fractions):
            raise ValueError(f"separate_fractions: each in (0, 1), got {self.separate_fractions}")
        return self
