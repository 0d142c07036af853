"""Parameters of paper 19 (COMET, W4A4KV4 with FMPQ). Values live in pipelines/conf/p19/*.yaml."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# the named schemes of paper19.fmpq.SCHEMES (a test keeps the two in step)
SchemeName = Literal["fp32", "w8a8", "w4a4", "w4a4_g", "w4a4_fmpq", "comet"]
MINILM_NEEDED = ("fp32", "w8a8", "w4a4", "w4a4_g", "w4a4_fmpq", "comet")  # what the minilm-* metrics compare


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # --- quantisation (every notebook) ---
    group: int = Field(ge=2, le=1024, description="tiny LM: channels per activation / weight group (the paper: 128)")
    kv_group: int = Field(ge=2, le=1024, description="tiny LM: head dims per KV-cache scale (capped at head_dim)")
    outlier_factor: float = Field(gt=1, description="a channel is an outlier when its calibration amax > this x the median")
    int8_fractions: list[float] = Field(min_length=2, description="fixed shares of INT8 groups swept (0 = all INT4, 1 = all INT8)")

    # --- (a) tiny LM perplexity (notebook 01) ---
    tinylm_model: str = Field(min_length=1, description="tinylm artifact model quantised")
    seq_len: int = Field(ge=8, description="tokens per evaluation / calibration window")
    batch_size: int = Field(ge=1, description="windows per batch")
    calib_batches: int = Field(ge=1, description="calibration batches (train split)")
    eval_batches: int = Field(ge=1, description="evaluation batches (val split)")

    # --- (b) MiniLM embeddings (notebook 02) ---
    minilm_pairs: int = Field(ge=16, description="(docstring summary, code) pairs embedded")
    minilm_calib_texts: int = Field(ge=1, description="other docstring summaries for calibration")
    minilm_max_length: int = Field(ge=16, description="MiniLM tokens per text (truncation)")
    minilm_batch_size: int = Field(ge=1, description="texts per MiniLM forward")
    minilm_schemes: list[SchemeName] = Field(min_length=6, description="named schemes run on MiniLM (all six: the minilm metrics compare them)")
    minilm_sweep: bool = Field(description="also run COMET at every int8_fractions share on MiniLM")
    minilm_group: int = Field(ge=2, le=384, description="MiniLM: channels per activation / weight group")
    minilm_kv_group: int = Field(ge=2, le=32, description="MiniLM: head dims per K/V scale (head_dim 32)")
    recall_k: int = Field(ge=1, description="k of code-search recall@k and of the neighbour agreement")

    # --- (c) memory (notebook 03) ---
    paper_group: int = Field(ge=2, description="group of the paper's W4 weights and KV4 cache (128)")
    kv_context: int = Field(ge=1, description="tokens per sequence in the W4+KV4 bytes ratio")
    kv_batch: int = Field(ge=1, description="sequences in the W4+KV4 bytes ratio")
    num_threads: int = Field(ge=1, description="torch CPU threads for every notebook")

    @model_validator(mode="after")
    def _check(self) -> "Params":
        for f in self.int8_fractions:
            if not 0 <= f <= 1:
                raise ValueError(f"int8_fractions: every value must be in [0, 1] (got {f})")
        missing = [s for s in MINILM_NEEDED if s not in self.minilm_schemes]
        if missing:
            raise ValueError(f"minilm_schemes: must include {', '.join(missing)} (the minilm metrics compare them)")
        if self.minilm_pairs < self.recall_k:
            raise ValueError(f"recall_k: must be <= minilm_pairs={self.minilm_pairs} (got {self.recall_k})")
        return self
