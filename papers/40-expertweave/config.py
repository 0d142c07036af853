"""Parameters of paper 40 (ExpertWeave). Values live in pipelines/conf/p40/*.yaml.

The base MoE model is one of the `tinylm` artifact's models (a Qwen2-MoE: routed top-k experts
plus a shared expert), trained there; this paper fine-tunes ESFT adapters on top of it.
"""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.trainer import TrainConfig
from shared.zoo import ModelSpec


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # --- (a) ESFT adapters and the weaved model (notebook 01) ---
    base_model: str = Field(min_length=1, description="name of the tinylm artifact's MoE model used as the base")
    adapters: list[str] = Field(min_length=1, description="one ESFT adapter per stdlib package (a sub-corpus of the corpus artifact)")
    relevance_p: float = Field(gt=0, le=1, description="ESFT threshold p: per layer, the experts whose cumulative token selection ratio reaches p are tuned")
    score_batches: int = Field(ge=1, description="fixed windows (batches) of task tokens that score the experts")
    finetune: TrainConfig = Field(description="training of each adapter's experts (shared.trainer.TrainConfig; weight_decay must be 0)")
    eval_batches: int = Field(ge=1, description="fixed windows of held-out task tokens for the in-domain loss before/after ESFT")
    eval_held_every: int = Field(ge=2, description="every eval_held_every-th file of a package is held out of expert scoring and ESFT; the in-domain loss is measured on those files")
    mixed_rows_per_adapter: int = Field(ge=1, description="rows of each adapter (and of the base model) in the mixed batch")
    mixed_seq_len: int = Field(ge=2, description="tokens per row of the mixed batch")
    latency_repeats: int = Field(ge=1, description="timed forwards of the base and the weaved model (median)")
    latency_warmup: int = Field(ge=0, description="untimed forwards before timing")

    # --- (b) memory (notebook 02) ---
    vmem_expert_bytes: int | None = Field(ge=1, description="bytes of one expert in the RSS measurement (None: the base model's real expert bytes)")
    vmem_adapter_slots: int | None = Field(ge=1, description="N, adapter slots reserved per layer (None: the number of adapters)")
    table1_n_base: int = Field(ge=1, description="M of the paper's base (ESFT-vanilla 16B, DeepSeek-V2-Lite: 64 routed experts)")
    table1_e_max: int = Field(ge=1, description="E_max of the paper's F_mem (the smallest feasible for Table 1: 13)")
    kv_merged1_tokens: float = Field(gt=0, description="the paper's KV capacity with one merged model on one NPU (810K tokens)")
    kv_merged2_tokens: float = Field(ge=0, description="the paper's KV capacity with two merged models (~6K tokens)")

    # --- (c) rerouting overhead of one MoE layer (notebook 03) ---
    layer_model: ModelSpec = Field(description="a one-layer MoE model whose layer is timed (random init; shared.zoo.ModelSpec, ffn='moe')")
    layer_tokens: int = Field(ge=1, description="tokens in the timed batch (the paper's claim: batch 256)")
    layer_seq_len: int = Field(ge=1, description="tokens per request of the timed batch (layer_tokens / layer_seq_len requests)")
    layer_adapters: int = Field(ge=1, description="synthetic adapters served by the timed layer")
    layer_tuned_experts: int = Field(ge=1, description="experts each synthetic adapter tunes in the layer (Table 1: 4-10 of 64)")
    layer_dtype: Literal["float32", "bfloat16"] = Field(description="weights and activations of the timed layer")
    layer_repeats: int = Field(ge=1, description="timed calls per variant (median)")
    layer_warmup: int = Field(ge=0, description="untimed calls per variant")
    num_threads: int = Field(ge=1, description="torch CPU threads for every notebook (timings included)")

    @model_validator(mode="after")
    def _check(self) -> "Params":
        if len(set(self.adapters)) != len(self.adapters):
            raise ValueError(f"adapters: packages must be distinct, got {self.adapters}")
        if self.finetune.weight_decay != 0:
            raise ValueError(f"finetune.weight_decay: must be 0 (decay would move the frozen experts), got {self.finetune.weight_decay}")
        if self.vmem_adapter_slots is not None and self.vmem_adapter_slots < len(self.adapters):
            raise ValueError(f"vmem_adapter_slots: {self.vmem_adapter_slots} < {len(self.adapters)} adapters")
        if self.kv_merged2_tokens >= self.kv_merged1_tokens:
            raise ValueError("kv_merged2_tokens: must be below kv_merged1_tokens (a second model takes room)")
        lm = self.layer_model
        if lm.ffn != "moe" or lm.attention not in ("mha", "gqa", "mqa"):
            raise ValueError(f"layer_model: a Qwen2-MoE spec (attention mha/gqa/mqa, ffn moe), got {lm.attention}/{lm.ffn}")
        if self.layer_tuned_experts > lm.n_experts:
            raise ValueError(f"layer_tuned_experts: {self.layer_tuned_experts} > layer_model.n_experts={lm.n_experts}")
        if self.layer_tokens % self.layer_seq_len:
            raise ValueError(f"layer_seq_len: must divide layer_tokens={self.layer_tokens}, got {self.layer_seq_len}")
        return self
