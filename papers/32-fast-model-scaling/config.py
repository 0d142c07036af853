from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Strategy = Literal["d", "w", "r", "dw", "dr", "wr", "dwr", "dWr"]


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # the base network (AnyNet: stem, stages of residual blocks, head)
    stem_width: int = Field(ge=8, description="channels of the stem conv")
    widths: list[int] = Field(min_length=1, description="channels of each stage (>= 32 keeps rounding small)")
    depths: list[int] = Field(min_length=1, description="residual blocks of each stage")
    resolution: int = Field(ge=4, description="input image side of the base network, pixels")
    width_multiple: int = Field(ge=1, description="scaled widths round to a multiple of this")
    alpha: float = Field(ge=0.0, le=1.0, description="width share of the fast strategy dWr")

    # 01 complexity: flops, params, activations of every strategy at every s
    strategies: list[Strategy] = Field(min_length=1)
    scale_factors: list[float] = Field(min_length=2, description="flops multiples s")

    # 02 runtime: wall-clock forward pass and training step
    runtime_strategies: list[Strategy] = Field(min_length=1)
    runtime_scale_factors: list[float] = Field(min_length=1)
    runtime_batch_size: int = Field(gt=0)
    runtime_repeats: int = Field(gt=0, description="timed rounds (median and IQR over them)")
    runtime_warmup: int = Field(ge=0, description="untimed rounds first")
    runtime_num_threads: int = Field(gt=0, description="torch threads while timing")
    runtime_dtype: Literal["float32", "bfloat16"]

    # 03 accuracy on digits, all strategies at one s
    acc_strategies: list[Strategy] = Field(min_length=2)
    acc_scale_factor: float = Field(gt=0)
    acc_seeds: int = Field(gt=0, description="training seeds per network (run.seed, run.seed+1, ...)")
    acc_epochs: int = Field(gt=0)
    acc_batch_size: int = Field(gt=0)
    acc_lr: float = Field(gt=0, description="peak SGD learning rate")
    acc_warmup_epochs: float = Field(ge=0, description="linear learning-rate warm-up")
    acc_weight_decay: float = Field(ge=0)
    acc_noise_std: float = Field(ge=0, description="Gaussian pixel noise (pixels in [0, 1])")
    acc_test_noise_draws: int = Field(gt=0, description="noisy copies of the test set")
    acc_test_fraction: float = Field(gt=0, lt=1)

    @model_validator(mode="after")
    def _check(self) -> "Params":
        if len(self.widths) != len(self.depths):
            raise ValueError(f"widths and depths: need one entry per stage, got {self.widths} and {self.depths}")
        if min(self.widths) < 8 or min(self.depths) < 1:
            raise ValueError("widths must be >= 8 and depths >= 1")
        for name in ("scale_factors", "runtime_scale_factors"):
            values = getattr(self, name)
            if min(values) <= 0:
                raise ValueError(f"{name}: flops multiples must be > 0, got {values}")
        if len(set(self.scale_factors)) < 2:
            raise ValueError("scale_factors: need two distinct values to fit an exponent")
        return self
