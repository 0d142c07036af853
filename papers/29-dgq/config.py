"""Parameters of paper 29 (DGQ, Dual Grained Quantization). Values live in pipelines/conf/p29/*.yaml."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from paper29 import methods as qm

Method = Literal[tuple(qm.METHODS)]


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # --- DGQ and the smoothing (every notebook) ---
    group: int = Field(ge=2, description="INT4 group along the input features on MiniLM (the paper: 128)")
    n1: int = Field(ge=1, description="DGQ phase-1 grid: group clip ratios 1.02 - (i+1) 0.22 / n1 (the paper: 20)")
    n2: int = Field(ge=1, description="DGQ phase-2 grid: channel clip ratios 1.02 - (j+1) 0.82 / n2 (the paper: 80)")
    percentile: float = Field(gt=50, lt=100, description="percentile smoothing: channels above this percentile of channel maxima are scaled down to it")
    alpha: float = Field(gt=0, lt=1, description="SmoothQuant migration strength of the 'noclip' variants")
    methods: list[Method] = Field(min_length=1, description="methods of the quality study (paper29.methods.METHODS)")

    # --- (a) MiniLM (notebook 01) ---
    minilm_layers: list[int] | Literal["all"] = Field(description="encoder layers whose linears are quantised ('all': 6 layers, 36 linears)")
    calib_texts: int = Field(ge=1, description="docstring summaries (train split) whose activations calibrate every method")
    calib_tokens: int = Field(ge=8, description="at most this many calibration tokens per layer (a seeded subset)")
    eval_texts: int = Field(ge=12, description="docstring summaries (val split) for layer errors, embeddings and retrieval")
    max_length: int = Field(ge=8, description="MiniLM tokens per text (truncation)")
    top_k: int = Field(ge=1, description="retrieval agreement: nearest neighbours compared")

    # --- (a) the tiny LM (notebook 01) ---
    lm_model: str = Field(min_length=1, description="tinylm artifact model quantised")
    lm_group: int = Field(ge=2, description="INT4 group on the tiny LM (must divide d_model and d_ff)")
    lm_methods: list[Method] = Field(min_length=1, description="methods of the perplexity study")
    lm_seq_len: int = Field(ge=8, description="tokens per sequence (calibration and evaluation)")
    lm_batch: int = Field(ge=1, description="sequences per batch")
    lm_calib_batches: int = Field(ge=1, description="train-split batches whose activations calibrate")
    lm_eval_batches: int = Field(ge=1, description="validation batches of the perplexity")

    # --- (b) speed (notebook 02) ---
    speed_sizes: list[int] = Field(min_length=1, description="K = N of the timed layers; the claims use the largest")
    speed_ms: list[int] = Field(min_length=1, description="tokens M per call")
    speed_group: int = Field(ge=2, description="INT4 group of the timed layers")
    speed_repeats: int = Field(ge=1, description="timed rounds per kernel (median)")
    speed_warmup: int = Field(ge=0, description="untimed rounds")
    num_threads: int = Field(ge=1, description="torch CPU threads for every notebook (timings included)")

    @model_validator(mode="after")
    def _check(self) -> "Params":
        if "fp32" in self.methods or "fp32" in self.lm_methods:
            raise ValueError("methods: fp32 is the reference and always runs; do not list it")
        if "dgq" not in self.methods:
            raise ValueError(f"methods: must include dgq (the lift and kernel claims read its layers; got {self.methods})")
        for key in ("group", "lm_group", "speed_group"):
            if getattr(self, key) % 2:
                raise ValueError(f"{key}: must be even (got {getattr(self, key)})")
        if self.minilm_layers != "all" and any(not 0 <= i <= 5 for i in self.minilm_layers):
            raise ValueError(f"minilm_layers: MiniLM has layers 0..5 (got {self.minilm_layers})")
        if any(s % self.speed_group for s in self.speed_sizes):
            raise ValueError(f"speed_sizes: every size must be a multiple of speed_group={self.speed_group} (got {self.speed_sizes})")
        if self.top_k >= self.eval_texts:
            raise ValueError(f"top_k: must be below eval_texts={self.eval_texts} (got {self.top_k})")
        return self
