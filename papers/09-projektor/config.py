"""Parameters of paper 09 (Projektor). Values live in pipelines/conf/p09/*.yaml."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # --- the sources (scikit-learn digits) ---
    val_size: int = Field(ge=100, le=800, description="clean validation images (the target distribution), held out of every source")
    label_noise: float = Field(ge=0.0, lt=1.0, description="share of flipped labels in the label_noise source")
    rotation_deg: float = Field(ge=0.0, le=180.0, description="rotation of every image of the rotated source, degrees")
    clean_classes: int = Field(ge=2, le=10, description="the clean source holds only the digits 0 .. clean_classes-1")
    revealed: int = Field(ge=10, description="pilot samples each source reveals before the purchase")

    # --- the learner ---
    logreg_c: float = Field(gt=0.0, description="inverse L2 strength of the logistic-regression learner")

    # --- Projektor ---
    n0: int = Field(ge=5, description="smaller pilot size (stage 1 fitted here and at n1)")
    n1: int = Field(ge=10, description="larger pilot size; at most `revealed`")
    targets: list[int] = Field(min_length=1, description="undisclosed sizes the performance is projected to")
    claim_target: int = Field(ge=1, description="the target size the claims are checked at (one of targets)")
    pilot_steps: int = Field(ge=1, le=10, description="pilot mixtures: the simplex grid with this many steps per side")
    pilot_repeats: int = Field(ge=1, description="independent pilot draws trained per (mixture, size)")
    ot_draws: int = Field(ge=1, description="pilot draws whose OT distance is averaged when predicting a mixture")
    label_cost: float = Field(ge=0.0, description="OT ground cost of a label mismatch (pixel cost scaled to median 1)")
    target: Literal["log_error", "accuracy"] = Field(description="quantity regressed in stage 1 and projected in stage 2")

    # --- baselines ---
    power_law_sizes: list[int] = Field(min_length=3, description="pilot sizes of the per-mixture power-law fits (revealed data only)")

    # --- evaluation and selection ---
    eval_steps: int = Field(ge=1, le=10, description="evaluation mixtures: the simplex grid with this many steps per side")
    truth_seeds: int = Field(ge=1, description="trainings at each target size per evaluation mixture (the ground truth)")
    select_steps: int = Field(ge=1, description="projected-gradient iterations of the mixture selection")
    select_lr: float = Field(gt=0.0, le=1.0, description="first step length on the simplex (normalised gradient)")
    select_decay: float = Field(gt=0.0, le=1.0, description="step length decay per iteration")
    mixing_grid_steps: int = Field(ge=1, le=100, description="grid on which the mixing law's best mixture is searched")

    @model_validator(mode="after")
    def _consistent(self) -> "Params":
        if not self.n0 < self.n1:
            raise ValueError(f"n0 < n1 required, got n0={self.n0}, n1={self.n1}")
        if self.n1 > self.revealed:
            raise ValueError(f"n1={self.n1} cannot exceed revealed={self.revealed} (pilots use revealed samples only)")
        if max(self.power_law_sizes) > self.revealed:
            raise ValueError(f"power_law_sizes must be <= revealed={self.revealed}, got {self.power_law_sizes}")
        if len(set(self.power_law_sizes)) < 3:
            raise ValueError(f"power_law_sizes: at least 3 distinct sizes (a 3-parameter law), got {self.power_law_sizes}")
        if any(t <= self.n1 for t in self.targets):
            raise ValueError(f"targets must exceed n1={self.n1} (they are projections), got {self.targets}")
        if self.claim_target not in self.targets:
            raise ValueError(f"claim_target={self.claim_target} must be one of targets {self.targets}")
        if {self.n0, self.n1} - set(self.power_law_sizes):
            raise ValueError(f"power_law_sizes must include n0 and n1 (last-value and projection read them), got {self.power_law_sizes}")
        return self
