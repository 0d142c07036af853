"""Parameters of paper 37 (Fuyou, SSD-tier out-of-core fine-tuning). Values live in pipelines/conf/p37/*.yaml."""

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.trainer import TrainConfig
from shared.zoo import ModelSpec


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # --- the model and its training (every notebook) ---
    model: ModelSpec = Field(description="the trained model (random init; shared.zoo.ModelSpec; vocab_size is replaced by the corpus tokenizer's)")
    train: TrainConfig = Field(description="optimizer and batches (shared.trainer.TrainConfig; grad_clip must be 0; steps: the exactness run)")

    # --- the SSD tier ---
    ssd_dir: str = Field(description="folder for the chunk files ('' = a temporary folder under the run's output folder; a real NVMe mount on a server)")
    throttle: bool = Field(description="emulate a slow disk (sleep to latency + bytes / bandwidth); false: the real device's speed, one point")
    latency_ms: float = Field(ge=0, description="emulated latency per transfer (ms)")
    bandwidth_factors: list[float] = Field(min_length=1, description="emulated bandwidths, as multiples of the balance bandwidth at which I/O + Adam of a step equals its backward")
    prefetch: int = Field(ge=1, description="chunks the overlapped schedule reads ahead (Fuyou's prefetch window)")

    # --- timing ---
    profile_steps: int = Field(ge=2, description="steps of the lockstep profile (in memory + everything swapped; the first a warm-up) behind the balance bandwidth and the plan choice")
    timed_steps: int = Field(ge=1, description="timed steps per measured point (median)")
    warmup_steps: int = Field(ge=0, description="untimed steps before them")

    # --- the swap plan (notebook 02) ---
    resident_budget: float = Field(ge=0, le=1, description="memory for optimizer state kept in memory, as a fraction of all of it")
    plan_factor: float = Field(gt=0, description="the bandwidth (multiple of the balance bandwidth) of the swap-plan comparison")
    num_threads: int = Field(ge=1, description="torch CPU threads for every notebook (timings included)")

    # --- data parallelism (notebook 01; paper37.dp, the README's torchrun mode) ---
    dp_ranks: int = Field(ge=2, description="processes of the data-parallel check (gloo on CPU), each on train.batch_size / dp_ranks rows")
    dp_steps: int = Field(ge=1, description="optimizer steps of the data-parallel check")
    dp_layers: int = Field(ge=1, description="depth of the data-parallel check's model (model's width, fewer layers; on the CPU at every scale)")

    @model_validator(mode="after")
    def _check(self) -> "Params":
        if self.train.grad_clip != 0:
            raise ValueError(f"train.grad_clip: must be 0 (a global norm needs every gradient before the first update), got {self.train.grad_clip}")
        if any(f <= 0 for f in self.bandwidth_factors):
            raise ValueError(f"bandwidth_factors: every factor must be > 0, got {self.bandwidth_factors}")
        if self.model.attention not in ("mha", "gqa", "mqa") or self.model.ffn != "dense":
            raise ValueError(f"model: a dense Llama (mha/gqa/mqa) is chunked per layer here, got {self.model.attention}/{self.model.ffn}")
        if self.train.batch_size % self.dp_ranks:
            raise ValueError(f"dp_ranks: train.batch_size={self.train.batch_size} does not split into {self.dp_ranks} equal shards")
        return self
