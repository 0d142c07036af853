"""Parameters of paper 17 (Farseer). Values live in pipelines/conf/p17/*.yaml."""

import math
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Starts = Annotated[int, Field(ge=1)] | Literal["grid"]  # a count of starts (>= 1) or the law's grid


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # --- fitting (both notebooks) ---
    farseer_starts: int = Field(ge=0, le=10_000, description="Sobol starts of the Farseer fit, beside its piecewise estimate")
    chinchilla_starts: Starts = Field(description="Sobol starts of the Chinchilla fit, or 'grid' (Hoffmann's 4,500)")
    bootstrap_n: int = Field(ge=2, le=10_000, description="bootstrap resamples of the all-data fits (CIs)")
    bootstrap_starts: int = Field(ge=1, le=9, description="each resample starts from this many of the fit's best optima")
    piecewise_ratio: float = Field(gt=1.0, le=16.0, description="lambda of the differences L(N, D) - L(N, lambda D)")
    piecewise_rounds: int = Field(ge=1, le=10, description="rounds of the differential piecewise fit")

    # --- 01: the published Farseer grid ---
    unit: float = Field(gt=0, description="N and D are passed to the laws in this unit (1e9: billions)")
    holdout_sizes: int = Field(ge=1, le=10, description="largest model sizes held out for the extrapolation test")
    bound_max_n: list[float] = Field(min_length=1, description="fit on N <= each bound, predict the largest model")
    prediction_min_n: float = Field(gt=0, description="predictions reported for every model with N >= this")
    budget_exponents: tuple[float, float, float] = Field(description="log10 C from, to, step of the D/N curve")
    dn_budgets: tuple[float, float] = Field(description="the two budgets (FLOPs) the D/N claims compare")

    # --- 02: our tiny-LM grid (artifact scaling_grid) ---
    tiny_n_column: Literal["params", "nonembedding_params"] = Field(description="which parameter count is N")
    tiny_unit: float = Field(gt=0, description="tiny-LM N and D are passed to the laws in this unit (1e6)")
    tiny_holdout_sizes: int = Field(ge=1, le=5, description="largest tiny models held out")
    tiny_budget_span: tuple[float, float] = Field(
        description="D/N curve from (min 6ND of the grid) x 10^first to (max 6ND) x 10^second")
    tiny_budget_points: int = Field(ge=3, le=200, description="budgets on the tiny-LM D/N curve")

    @model_validator(mode="after")
    def _consistent(self) -> "Params":
        lo, hi, step = self.budget_exponents
        if not (lo < hi and step > 0):
            raise ValueError(f"budget_exponents: need from < to and step > 0, got {self.budget_exponents}")
        grid = [lo + i * step for i in range(int(round((hi - lo) / step)) + 1)]
        for c in self.dn_budgets:
            if not any(abs(math.log10(c) - g) < 1e-9 for g in grid):
                raise ValueError(f"dn_budgets: {c:g} is not on the budget grid 10^{grid}")
        if self.dn_budgets[0] >= self.dn_budgets[1]:
            raise ValueError(f"dn_budgets: the first must be the smaller, got {self.dn_budgets}")
        if sorted(self.bound_max_n) != list(self.bound_max_n):
            raise ValueError(f"bound_max_n: list the bounds in increasing order, got {self.bound_max_n}")
        return self

    @property
    def budgets(self) -> list[float]:
        lo, hi, step = self.budget_exponents
        return [10 ** (lo + i * step) for i in range(int(round((hi - lo) / step)) + 1)]
