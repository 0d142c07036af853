"""Parameters of paper 54 (DistZO2, with ZO2 and MeZO underneath). Values live in pipelines/conf/p54/*.yaml."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.zoo import ModelSpec

Strategy = Literal["serial", "pertp", "ddp", "2d"]


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    eps: float = Field(gt=0, description="MeZO perturbation scale epsilon (the paper: 1e-3)")
    num_threads: int = Field(ge=1, description="torch CPU threads in the notebook and in every rank")

    # --- (a) memory: inference vs MeZO vs AdamW (notebook 01) ---
    mem_model: ModelSpec = Field(description="random-init model whose peak memory is measured (shared.zoo.ModelSpec)")
    mem_batch: int = Field(ge=1, description="sequences per step in the memory measurement")
    mem_seq: int = Field(ge=2, description="tokens per sequence in the memory measurement")

    # --- (b) convergence: MeZO vs AdamW fine-tune of a pretrained tinylm model, held-out text (notebook 01) ---
    conv_model: str = Field(min_length=1, description="tinylm artifact model fine-tuned with MeZO")
    conv_steps: int = Field(ge=1, description="MeZO steps of the fine-tune")
    conv_batch: int = Field(ge=1, description="sequences per MeZO step")
    conv_seq: int = Field(ge=2, description="tokens per sequence (<= the tinylm's max_seq_len)")
    conv_sweep_lrs: list[float] = Field(min_length=1, description="MeZO learning rates tried before the run; the best on the TRAIN split is used")
    conv_sweep_steps: int = Field(ge=1, description="MeZO steps per learning rate of the sweep (from the pretrained weights)")
    conv_fo_lr: float = Field(gt=0, description="AdamW learning rate of the first-order reference fine-tune (same data, same steps)")
    conv_eval_every: int = Field(ge=1, description="steps between evaluations of the held-out loss")
    conv_eval_batches: int = Field(ge=1, description="fixed evaluation batches of the held-out loss")

    # --- (c) ZO2 offload (notebook 02) ---
    off_model: ModelSpec = Field(description="random-init model of the offload timing (decoder layers streamed)")
    off_batch: int = Field(ge=1, description="sequences per step")
    off_seq: int = Field(ge=2, description="tokens per sequence")
    off_steps: int = Field(ge=2, description="timed steps per configuration (after off_warmup)")
    off_warmup: int = Field(ge=0, description="untimed steps per configuration")
    off_pool: int = Field(ge=2, description="decoder-layer buffers in the device pool (compute, prefetch, write-back)")
    off_copy_ratios: list[float] = Field(min_length=1, description="emulated link: T_copy(block) / T_compute(block) values")
    off_check_steps: int = Field(ge=1, description="steps of the offloaded-vs-serial parameter comparison")

    # --- (d) DistZO2 on real processes (notebook 03) ---
    dist_model: ModelSpec = Field(description="random-init model trained by every strategy")
    dist_batch: int = Field(ge=1, description="sequences per step (the concatenated batch; split over DDP shards)")
    dist_seq: int = Field(ge=2, description="tokens per sequence")
    dist_steps: int = Field(ge=2, description="steps per strategy (the first is untimed)")
    dist_lr: float = Field(gt=0, description="MeZO learning rate of the strategy runs")
    dist_strategies: list[Strategy] = Field(min_length=2, description="strategies run; serial is the reference")
    dist_link_latency_us: float = Field(ge=0, description="emulated network latency per all-reduce step (microseconds)")
    dist_link_gbps: float = Field(gt=0, description="emulated network bandwidth (Gbit/s) for the exchange and the first-order DDP model")

    @model_validator(mode="after")
    def _check(self) -> "Params":
        if "serial" not in self.dist_strategies:
            raise ValueError(f"dist_strategies: must include serial (the reference), got {self.dist_strategies}")
        for key in ("dist_batch",):
            if getattr(self, key) % 2:
                raise ValueError(f"{key}: must be even (DDP splits it into 2 shards), got {getattr(self, key)}")
        if any(r <= 0 for r in self.conv_sweep_lrs):
            raise ValueError(f"conv_sweep_lrs: every learning rate must be > 0, got {self.conv_sweep_lrs}")
        if any(r <= 0 for r in self.off_copy_ratios):
            raise ValueError(f"off_copy_ratios: every ratio must be > 0, got {self.off_copy_ratios}")
        for key in ("mem_model", "off_model", "dist_model"):
            if getattr(self, key).attention not in ("mha", "gqa", "mqa") or getattr(self, key).ffn != "dense":
                raise ValueError(f"{key}: a dense Llama (mha/gqa/mqa) is needed, got {getattr(self, key).attention}")
        return self
