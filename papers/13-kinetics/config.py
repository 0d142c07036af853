"""Parameters of paper 13 (Kinetics: test-time cost with memory access). Values live in pipelines/conf/p13/*.yaml."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Model = Literal["Qwen3-0.6B", "Qwen3-1.7B", "Qwen3-4B", "Qwen3-8B", "Qwen3-14B", "Qwen3-32B"]


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # --- (a) the cost model on Qwen3 configs and the reference accuracies (notebook 01) ---
    intensity: float = Field(gt=0, description="I: FLOPs per byte of memory access in eFLOPs (B200: 562.5, the paper)")
    benchmark: Literal["AIME24", "AIME25", "LiveCodeBench_v5_167"] = Field(description="reference accuracies of the frontier")
    trials: list[int] = Field(min_length=1, description="best-of-N sample counts of the frontier (the paper: 1..32)")
    coverage_kappa: float = Field(gt=0, description="Beta concentration of per-problem solve rates (coverage from pass@1)")
    kappa_sensitivity: list[float] = Field(min_length=1, description="kappas over which the size shift is re-checked")
    target_min: float = Field(gt=0, lt=1, description="lowest coverage target of the comparison")
    target_max: float = Field(gt=0, lt=1, description="highest coverage target")
    target_count: int = Field(ge=2, description="coverage targets, evenly spaced")
    threshold_floor: float = Field(gt=0, lt=1, description="targets >= this define the threshold (smallest model picked)")
    sparse_model: Model = Field(description="model of the block top-k cost ratio")
    sparse_block: int = Field(ge=1, description="block top-k: tokens per block")
    sparse_topk: int = Field(ge=1, description="block top-k: blocks attended")
    sparse_gen_len: int = Field(ge=1, description="generated tokens of the cost-ratio comparison")

    # --- (b) measured decode latency, dense vs block top-k (notebook 02) ---
    decode_layers: int = Field(ge=1, description="layers of the random-init decoder")
    decode_d_model: int = Field(ge=8, description="hidden size")
    decode_heads: int = Field(ge=1, description="query heads")
    decode_kv_heads: int = Field(ge=1, description="KV heads (GQA)")
    decode_d_ff: int = Field(ge=1, description="SwiGLU hidden size")
    decode_contexts: list[int] = Field(min_length=3, description="context lengths (tokens already in the KV cache)")
    decode_block: int = Field(ge=1, description="block top-k: tokens per block (the paper's 32)")
    decode_topk: int = Field(ge=1, description="block top-k: blocks attended (plus the current one)")
    decode_steps: int = Field(ge=1, description="tokens decoded per timed call")
    decode_repeats: int = Field(ge=1, description="timed calls per (kind, context), median")
    decode_warmup: int = Field(ge=0, description="untimed rounds")
    decode_dtype: Literal["float32", "bfloat16"] = Field(description="weights and cache dtype")

    # --- (c) our reasoning policies: accuracy vs cost (notebook 03) ---
    ours_method: Literal["majority_vote", "best_of_n"] = Field(description="test-time procedure")
    ours_n: list[int] = Field(min_length=1, description="samples per problem")
    ours_problems: int = Field(ge=1, description="evaluation problems")
    ours_difficulty: int = Field(ge=1, description="steps per problem")
    ours_max_new_tokens: int = Field(ge=1, description="generation cap per sample")
    ours_temperature: float = Field(ge=0, description="sampling temperature")
    ours_targets: int = Field(ge=2, description="accuracy targets of the size comparison")

    num_threads: int = Field(ge=1, description="torch CPU threads for every notebook (timings included)")

    @model_validator(mode="after")
    def _check(self) -> "Params":
        if self.target_min >= self.target_max:
            raise ValueError(f"target_min: must be below target_max, got {self.target_min} >= {self.target_max}")
        if self.decode_heads % self.decode_kv_heads or self.decode_d_model % self.decode_heads:
            raise ValueError(f"decode_heads: must divide decode_d_model and be a multiple of decode_kv_heads, got {self.decode_heads}")
        if min(self.decode_contexts) < self.decode_block * (self.decode_topk + 1):
            raise ValueError(f"decode_contexts: every context must hold more than decode_topk + 1 blocks, got {self.decode_contexts}")
        if any(n < 1 for n in self.trials + self.ours_n):
            raise ValueError(f"trials: every N must be >= 1, got {self.trials} / {self.ours_n}")
        return self
