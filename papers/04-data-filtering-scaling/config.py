"""Parameters of paper 04 (scaling laws for data filtering). Values live in pipelines/conf/p04/*.yaml."""

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Noise = Annotated[float, Field(ge=0.0, lt=0.5)]


class Grid(BaseModel):
    """A 1-D search grid: ``count`` values from ``low`` to ``high`` (log-spaced if ``log``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    low: float = Field(description="first value")
    high: float = Field(description="last value")
    count: int = Field(ge=1, le=400, description="number of values")
    log: bool = Field(default=False, description="log-spaced (low and high must then be > 0)")

    @model_validator(mode="after")
    def _order(self) -> "Grid":
        if self.high < self.low:
            raise ValueError(f"high ({self.high}) must be >= low ({self.low})")
        if self.log and self.low <= 0:
            raise ValueError(f"a log grid needs low > 0, got {self.low}")
        return self

    def values(self):
        import numpy as np

        return np.geomspace(self.low, self.high, self.count) if self.log else np.linspace(self.low, self.high, self.count)


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # --- teacher-student simulation (notebook 01) ---
    n_dim: int = Field(ge=2, description="input dimension of teacher and student")
    bucket_size: int = Field(ge=10, description="examples per quality bucket")
    noises: list[Noise] = Field(min_length=2, description="label-noise fraction of each bucket, cleanest first")
    n_seeds: int = Field(ge=1, description="independent teachers/data draws (seeds run.seed, run.seed+1, ...)")
    lr0: float = Field(gt=0.0, description="SGD step size lr0 / sqrt(t)")
    first_n: int = Field(ge=1, description="smallest samples seen recorded (within the first epoch)")
    budget_octaves: int = Field(ge=1, le=14, description="budgets: bucket_size * 2^j for j = 0..budget_octaves")
    per_octave: int = Field(ge=1, le=16, description="recorded points per doubling of samples seen")

    # --- the law fit (notebooks 01, 02) ---
    bucket_unit: float = Field(gt=0.0, description="samples of one bucket in the law's units (the paper's 12.8M)")
    a_grid: Grid = Field(description="shared a: grid of the search")
    d_grid: Grid = Field(description="shared d (irreducible error): grid of the search")
    b_grid: Grid = Field(description="per-bucket utility b (< 0): grid of the search")
    tau_grid: Grid = Field(description="per-bucket half-life tau (epochs): grid of the search")
    refine: bool = Field(description="refine each bucket's (b, tau) with scaling.fit from its grid optimum")
    tau_scaling: Literal["repo", "none"] = Field(
        description="pool prediction: 'repo' multiplies tau by the pool's bucket count (authors' estimate_best_pool.py)"
    )

    # --- scikit-learn digits (notebook 02) ---
    digits_n_seeds: int = Field(ge=1, description="splits / bucket draws of the digits experiment")
    digits_bucket_size: int = Field(ge=10, description="training images per bucket (buckets x size <= 1,347)")
    digits_noises: list[Noise] = Field(min_length=2, description="fraction of labels replaced by another class")
    digits_test_fraction: float = Field(gt=0.0, lt=1.0, description="clean held-out share of the 1,797 images")
    digits_lr0: float = Field(gt=0.0, description="SGD step size lr0 / sqrt(t) of the softmax student")
    digits_budget_octaves: int = Field(ge=1, le=14, description="budgets: digits_bucket_size * 2^j, j = 0..this")

    # --- published parameters (notebook 03) ---
    published_key: str = Field(description="row of data/parameter_values.jsonl to compare with")
    published_budgets: list[float] = Field(min_length=2, description="samples seen of the authors' best-pool estimate")

    @field_validator("noises", "digits_noises")
    @classmethod
    def _rising(cls, v: list[float]) -> list[float]:
        if any(b <= a for a, b in zip(v, v[1:])):
            raise ValueError(f"noise must rise strictly from bucket to bucket (cleanest first), got {v}")
        return v

    @model_validator(mode="after")
    def _sizes(self) -> "Params":
        if self.first_n > self.bucket_size:
            raise ValueError(f"first_n ({self.first_n}) must be <= bucket_size ({self.bucket_size})")
        if self.digits_bucket_size * len(self.digits_noises) > 1347:
            raise ValueError("digits_bucket_size x len(digits_noises) must be <= 1347 (digits training images at 25% test)")
        return self
