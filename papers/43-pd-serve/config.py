"""Parameters of paper 43 (P/D-Serve, disaggregated prefill/decode). Values live in pipelines/conf/p43/*.yaml."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # --- (a) KV transfer, measured on this machine (notebook 01) ---
    kv_layers: int = Field(ge=1, description="layers of the copied KV cache (planning notes: 8)")
    kv_heads: int = Field(ge=1, description="K/V heads per layer (planning notes: 8)")
    kv_head_dim: int = Field(ge=1, description="dims per head (planning notes: 64)")
    kv_dtype: Literal["float16", "bfloat16", "float32"] = Field(description="dtype of the copied cache")
    kv_block_tokens: int = Field(ge=1, description="tokens per KV block (vLLM: 16)")
    kv_tokens: list[int] = Field(min_length=2, description="request sizes (tokens) timed, for the alpha-beta fit")
    kv_claim_tokens: int = Field(ge=1, description="the size of the contiguous/blockwise claim (notes: 512)")
    kv_repeats: int = Field(ge=1, description="timed rounds per size (median)")

    # --- (b) serving simulation (notebooks 02, 03) ---
    device: Literal["H100-SXM", "A100-80GB", "L4", "T4"] = Field(description="servesim device of every instance")
    max_prompt: int = Field(ge=1, description="prompt tokens clipped to this")
    max_output: int = Field(ge=1, description="output tokens clipped to this")
    n_requests: int = Field(ge=10, description="requests per simulated run")
    code_share: float = Field(ge=0, le=1, description="share of Azure code requests in the mixed workload (rest: conv)")
    seeds: list[int] = Field(min_length=1, description="request samples + Poisson arrivals")
    n_instances: int = Field(ge=4, description="total instances (prefill + decode, or aggregated)")
    rate_bounds: tuple[float, float] = Field(description="bisection range of the arrival rate, x the throughput-matched capacity")
    rate_steps: int = Field(ge=1, description="bisection steps of max_rate (resolution (hi/lo)^(1/2^steps))")
    slo_target: float = Field(gt=0, le=1, description="throughput at SLO: the highest rate whose SLO attainment >= this")
    ttft_slo_s: float = Field(gt=0, description="TTFT SLO (s); also the gateway's TTFT timeout")
    tpot_slo_s: float = Field(gt=0, description="strict mean-TPOT SLO (s), also the target of the decode batch")
    transfer_layout: Literal["contiguous", "blockwise"] = Field(description="KV transfer of the simulated pools")
    link_gbps: float = Field(gt=0, description="simulated P->D link (Gb/s): one RoCE NIC per device")
    link_alpha_s: float = Field(ge=0, description="simulated link: seconds per transfer operation")

    # --- (c) gateway (notebook 03) ---
    gateway_prefill_instances: int = Field(ge=2, description="prefill instances behind the gateway")
    gateway_load: float = Field(gt=0, description="arrival rate / prefill capacity (notes: 0.85)")
    gateway_intervals_s: list[float] = Field(min_length=1, description="queue-report refresh intervals Δ (s)")
    gateway_claim_interval_s: float = Field(gt=0, description="the Δ of the claim (notes: 1 s)")
    reject_bound_tokens: int = Field(ge=0, description="a prefill instance rejects when queued prompt tokens + this one exceed it")
    gateway_requests: int = Field(ge=10, description="requests per gateway run")
    num_threads: int = Field(ge=1, description="torch CPU threads (copies)")

    @model_validator(mode="after")
    def _check(self) -> "Params":
        if self.gateway_claim_interval_s not in self.gateway_intervals_s:
            raise ValueError(f"gateway_claim_interval_s: {self.gateway_claim_interval_s} must be one of "
                             f"gateway_intervals_s {self.gateway_intervals_s}")
        if self.kv_claim_tokens not in self.kv_tokens:
            raise ValueError(f"kv_claim_tokens: {self.kv_claim_tokens} must be one of kv_tokens {self.kv_tokens}")
        if not 0 < self.rate_bounds[0] < self.rate_bounds[1]:
            raise ValueError(f"rate_bounds: need 0 < lo < hi, got {list(self.rate_bounds)}")
        return self
