"""Parameters of paper 10 (ScaleRL, The Art of Scaling RL Compute). Values live in pipelines/conf/p10/*.yaml.

The RL loop and its knobs are shared.rl's (RLConfig); this paper picks one of the reasoning
artifact's policies, a task difficulty, the common RL settings (``rl``) and the recipes compared
(``recipes``: RLConfig overrides on top of ``rl``), then fits the sigmoid law to every run.
"""

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.config import ParamError
from shared.rl import RLConfig, rl_config


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # --- the RL runs (notebook 01) ---
    policy: str = Field(min_length=1, description="the reasoning artifact's policy fine-tuned by RL (a copy; small/medium/large)")
    difficulty: int | list[int] = Field(description="steps per problem of the training pool and the held-out set: n or [lo, hi]")
    pool_seed: int = Field(ge=0, description="seed of the training problems (the held-out set uses pool_seed + 1)")
    rl: dict[str, Any] = Field(description="shared.rl.RLConfig values common to every recipe (the rest: RLConfig defaults)")
    recipes: dict[str, dict[str, Any]] = Field(min_length=2, description="recipe name -> RLConfig overrides on top of rl")
    baseline: str = Field(description="the DAPO-style baseline recipe (the asymptote comparison)")
    scalerl: str = Field(description="the ScaleRL-style recipe (extrapolation and seed-spread claims)")
    details: str = Field(description="ScaleRL's loss with the baseline's details (aggregation, normalisation, filters, "
                         "off-policy scheme): compared with scalerl (details) and with baseline (loss type)")
    spread_seeds: list[int] = Field(description="extra seeds of the scalerl recipe (the spread of its fitted A); [] for none")
    seed: int = Field(ge=0, description="RL seed of every recipe's main run")

    # --- the fits (notebook 02) ---
    fit_start: float = Field(ge=0, lt=1, description="fits skip evaluations below this fraction of the run's final compute "
                             "(the early noisy regime, the paper's first ~1.5k GPU-h)")
    fit_end: float = Field(gt=0, lt=1, description="the extrapolation fit uses evaluations up to this fraction of the final compute")
    final_window: float = Field(gt=0, lt=1, description="'final' performance: mean of the evaluations at >= this fraction of the final compute")
    fit_starts: int = Field(ge=1, description="starting points per fit (B x C_mid grid, best least-squares kept)")
    num_threads: int = Field(ge=1, description="torch CPU threads for every notebook (timings included)")

    @model_validator(mode="after")
    def _check(self) -> "Params":
        for key in ("baseline", "scalerl", "details"):
            if getattr(self, key) not in self.recipes:
                raise ValueError(f"{key}: {getattr(self, key)!r} is not one of recipes {sorted(self.recipes)}")
        lo, hi = (self.difficulty, self.difficulty) if isinstance(self.difficulty, int) else tuple(self.difficulty + [0])[:2]
        if isinstance(self.difficulty, list) and (len(self.difficulty) != 2 or not 1 <= lo <= hi):
            raise ValueError(f"difficulty: an int >= 1 or [lo, hi] with 1 <= lo <= hi, got {self.difficulty}")
        if lo < 1:
            raise ValueError(f"difficulty: must be >= 1, got {self.difficulty}")
        if self.fit_start >= self.fit_end:
            raise ValueError(f"fit_start: must be below fit_end={self.fit_end}, got {self.fit_start}")
        for name in self.recipes:
            try:
                self.recipe(name)
            except ParamError as err:
                raise ValueError(str(err)) from None
        return self

    def recipe(self, name: str) -> RLConfig:
        """The full RLConfig of one recipe (rl + its overrides); a bad value fails naming recipes.<name>.<key>."""
        return rl_config({**self.rl, **self.recipes[name]}, prefix=f"recipes.{name}")
