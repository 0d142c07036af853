from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # the task: zero-shot code search on the corpus's docstring dataset
    pool_size: int = Field(ge=8, description="(docstring summary, code) pairs in the retrieval pool")
    max_seq_len: int = Field(ge=8, le=512, description="tokens per text at evaluation (longer code is truncated)")
    embed_batch_size: int = Field(gt=0, description="texts per forward pass when embedding the pool")
    num_threads: int = Field(gt=0, description="torch CPU threads for the whole notebook (timings included)")
    dtype: Literal["float32", "bfloat16"] = Field(
        description="storage and compute dtype of the float models (baseline, pruned, student)"
    )

    # (a) int8: torch's dynamic quantization (CPU kernels) and bitsandbytes LLM.int8
    int8_dynamic_qscheme: Literal["per_channel", "per_tensor"] = Field(
        description="weight scales of torch's dynamic int8 Linear: one per output row, or one per matrix"
    )
    bnb_threshold: float = Field(ge=0.0, description="LLM.int8 outlier threshold (bitsandbytes default 6.0)")

    # (b) unstructured magnitude pruning
    prune_amount: float = Field(gt=0.0, lt=1.0, description="fraction of the encoder's Linear weights zeroed (global L1)")
    csr_sparsities: list[float] = Field(min_length=2, description="sparsity levels of the CSR storage sweep")

    # (c) distilled student
    student_layers: list[int] = Field(min_length=1, description="teacher layers (0-5) copied into the student, in order")
    distill_texts: int = Field(gt=0, description="corpus texts (summaries and code) the student is distilled on")
    distill_steps: int = Field(ge=0, description="optimizer steps")
    distill_batch_size: int = Field(gt=0)
    distill_max_seq_len: int = Field(ge=8, le=512, description="tokens per text while distilling")
    distill_lr: float = Field(gt=0.0, description="peak AdamW learning rate (linear warm-up, then linear decay)")
    distill_warmup_fraction: float = Field(ge=0.0, lt=1.0)
    distill_cosine_weight: float = Field(ge=0.0, description="loss = MSE(embeddings) + this x (1 - cosine)")
    distill_freeze_embeddings: bool = Field(description="keep the (teacher's) word embeddings fixed")

    # measurements
    latency_batch_size: int = Field(gt=0, description="texts per timed forward pass (same batch for every model)")
    latency_repeats: int = Field(gt=0, description="timed rounds, interleaved over the models (median and IQR)")
    latency_warmup: int = Field(ge=0, description="untimed rounds first")
    carbon_intensity_g_per_kwh: float = Field(ge=0.0, description="grid carbon intensity for the CO2eq estimate")

    # the same harness on a language model of the shared tinylm artifact (read, never retrained here)
    lm_model: str = Field(min_length=1, description="a model name of params.yaml tinylm.models, e.g. gqa")
    lm_eval_batches: int = Field(gt=0, description="fixed validation windows (tinylm's batch size and seq_len) for perplexity")

    # network communication: bytes a gloo all-reduce sends between ranks over localhost TCP
    comm_world_size: int = Field(ge=2, le=8, description="ranks in the all-reduce (one thread each, gloo)")
    comm_numel: int = Field(gt=0, description="float32 elements all-reduced (at least comm_world_size)")
    comm_timeout_s: float = Field(gt=0.0, description="give up on the all-reduce after this long")

    @model_validator(mode="after")
    def _check(self) -> "Params":
        bad = [i for i in self.student_layers if not 0 <= i < 6]
        if bad or len(set(self.student_layers)) != len(self.student_layers):
            raise ValueError(f"student_layers: distinct indices of MiniLM's 6 layers (0-5), got {self.student_layers}")
        if len(self.student_layers) >= 6:
            raise ValueError(f"student_layers: a student has fewer than 6 layers, got {self.student_layers}")
        if not all(0.0 <= s < 1.0 for s in self.csr_sparsities):
            raise ValueError(f"csr_sparsities: each in [0, 1), got {self.csr_sparsities}")
        if self.distill_texts < self.distill_batch_size:
            raise ValueError(f"distill_texts: at least distill_batch_size ({self.distill_batch_size}), got {self.distill_texts}")
        return self
