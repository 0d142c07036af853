"""Parameters of paper 21 (Horizon-LM, CPU-master / device-template training). Values live in
pipelines/conf/p21/*.yaml."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.zoo import ModelSpec


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model: ModelSpec = Field(description="the zoo Llama trained (random init); n_layers: depth of the exactness and throughput runs")
    depths: list[int] = Field(min_length=2, description="layer counts of the device-memory sweep (same width as model)")
    batch_size: int = Field(ge=1, description="sequences per batch")
    seq_len: int = Field(ge=2, description="tokens per sequence")
    lr: float = Field(gt=0, description="peak AdamW learning rate (cosine schedule, shared.trainer)")
    grad_clip: float = Field(ge=0, description="global gradient-norm clip; 0: the paper's per-layer optimizer steps overlapped with backward")
    checkpoints: Literal["host", "device"] = Field(description="where the layer-boundary checkpoints live (host: device memory flat in depth)")
    exact_steps: int = Field(ge=1, description="steps of the engine-vs-standard-trainer trajectory (notebook 01)")
    exact_tolerance: float = Field(gt=0, description="max relative gradient error still called equal (fp32)")
    memory_steps: int = Field(ge=2, description="steps per depth of the memory sweep (>= 2: the optimizer state exists in the peak)")
    throughput_steps: int = Field(ge=1, description="timed steps per trainer (notebook 03)")
    throughput_warmup: int = Field(ge=0, description="untimed steps per trainer before the timed ones")
    host_ram_tb: float = Field(gt=0, description="host RAM of the headline projection (the paper: 1.5 TB next to one H200)")
    num_threads: int = Field(ge=1, description="torch CPU threads for every notebook (timings included)")
    dp_ranks: int = Field(ge=2, description="processes of the data-parallel check (gloo on CPU; paper21.dp)")
    dp_steps: int = Field(ge=1, description="optimizer steps of the data-parallel check")
    dp_layers: int = Field(ge=1, description="depth of the data-parallel check's model (model's width, fewer layers)")

    @model_validator(mode="after")
    def _check(self) -> "Params":
        if self.model.attention not in ("mha", "gqa", "mqa") or self.model.ffn != "dense":
            raise ValueError(f"model: the engine streams Llama decoder layers (dense mha/gqa/mqa), got {self.model.attention}/{self.model.ffn}")
        if any(d < 1 for d in self.depths) or sorted(set(self.depths)) != self.depths:
            raise ValueError(f"depths: distinct positive layer counts in increasing order, got {self.depths}")
        if self.seq_len > self.model.max_seq_len:
            raise ValueError(f"seq_len: {self.seq_len} exceeds model.max_seq_len={self.model.max_seq_len}")
        if self.batch_size % self.dp_ranks:
            raise ValueError(f"dp_ranks: batch_size={self.batch_size} does not split into {self.dp_ranks} equal shards")
        return self
