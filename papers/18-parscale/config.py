"""Parameters of paper 18 (ParScale, the parallel scaling law). Values live in pipelines/conf/p18/*.yaml.

The tiny-LM grid itself (sizes, P values, prefix length, tokens) is the `parscale_grid`
artifact's config (pipelines/conf/parscale_grid/), trained once by shared.lmgrid; this paper
only reads it.
"""

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.zoo import ModelSpec

Starts = Annotated[int, Field(ge=1)] | Literal["grid"]  # a count of random starts (>= 1) or the law's grid


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # --- (a) refit of the 48 published points (notebook 01) ---
    fit_starts: Starts = Field(description="starting points of every fit: 'grid' (the law's grid) or a number of random starts")
    holdout_sizes: list[str] = Field(min_length=1, description="size labels held out of the extrapolation fit (the largest models)")
    bootstrap: int = Field(ge=0, description="bootstrap resamples for the CI of k (0: none)")

    # --- (b) our tiny LMs (notebook 02) ---
    grid_fit_starts: Starts = Field(description="starting points of the fit on our runs")

    # --- (c) batch-1 inference cost (notebook 03) ---
    cost_model: ModelSpec = Field(description="base model of the cost comparison (random init; shared.zoo.ModelSpec)")
    cost_streams: list[int] = Field(min_length=1, description="P values compared with their equal-loss wider models")
    cost_claim_streams: int = Field(ge=2, description="the P of the memory/latency claims (the paper: 8)")
    cost_prefix_len: int = Field(ge=1, description="prefix tokens per layer and stream (the paper: 48)")
    cost_k_source: Literal["stack", "pile"] = Field(description="k of the equal-loss model: the published refit of this dataset")
    cost_prompt_len: int = Field(ge=1, description="prompt tokens (cost_analysis.py: 64)")
    cost_new_tokens: int = Field(ge=2, description="generated tokens (cost_analysis.py: 64)")
    cost_repeats: int = Field(ge=1, description="timed generations per model (median)")
    cost_warmup: int = Field(ge=0, description="untimed generations per model")
    cost_dtype: Literal["float32", "bfloat16"] = Field(description="weights and cache dtype of the cost models")
    num_threads: int = Field(ge=1, description="torch CPU threads for every notebook (timings included)")

    @model_validator(mode="after")
    def _check(self) -> "Params":
        if any(p < 2 for p in self.cost_streams):
            raise ValueError(f"cost_streams: every P must be >= 2 (P = 1 is the base), got {self.cost_streams}")
        if self.cost_claim_streams not in self.cost_streams:
            raise ValueError(f"cost_claim_streams: {self.cost_claim_streams} must be one of cost_streams {self.cost_streams}")
        if self.cost_model.attention not in ("mha", "gqa", "mqa") or self.cost_model.ffn != "dense":
            raise ValueError(f"cost_model: ParScale wraps dense mha/gqa/mqa models here, got {self.cost_model.attention}/{self.cost_model.ffn}")
        return self
