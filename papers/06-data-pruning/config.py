"""Parameters of paper 06 (data pruning). Values live in pipelines/conf/p06/*.yaml."""

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Fraction = Annotated[float, Field(gt=0.0, le=1.0)]


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # --- perceptron teacher-student (notebooks 01, 02) ---
    n_dim: int = Field(ge=3, description="input dimension N of teacher and student")
    alpha_totals: list[float] = Field(min_length=1, description="total examples per dimension, P_tot / N")
    keep_fractions: list[float] = Field(min_length=1, description="fractions f of the data kept by pruning")
    strategies: list[Literal["hard", "easy", "random"]] = Field(min_length=1, description="which examples are kept")
    n_seeds: int = Field(ge=1, description="independent data draws per cell")
    backend: Literal["numpy", "torch"] = Field(description="student solver: numpy on CPU, or torch on run.device")
    hinge_c: float = Field(ge=10.0, description="squared-hinge penalty of the max-margin solver")
    theory_nodes: int = Field(ge=4, le=64, description="Gauss-Legendre nodes per panel in the replica integrals")
    theory_dense_points: int = Field(ge=2, description="keep fractions per alpha_total for the theory lines")
    frontier_points: int = Field(ge=2, description="alpha_prune values on the theory frontier")
    frontier_alpha_total_max: float = Field(gt=1.0, description="theory envelope also over alpha_total up to this")
    abundant_alpha_total: float = Field(gt=0.0, description="claim cell: data-abundant total size")
    abundant_keep_fraction: Fraction
    scarce_alpha_total: float = Field(gt=0.0, description="claim cell: data-scarce total size")
    scarce_keep_fraction: Fraction
    frontier_min_alpha_prune: float = Field(gt=0.0, description="frontier claim: smallest alpha_prune checked")
    frontier_max_keep_fraction: Fraction
    slope_alpha_prune_range: tuple[float, float] = Field(description="alpha_prune range of the log-log slope fits")

    # --- imperfect metric: probe at angle theta to the teacher (notebook 02) ---
    theta_alpha_total: float = Field(gt=0.0, description="total size of the theta experiment")
    thetas_deg: list[float] = Field(min_length=1, description="probe angles to the teacher, degrees")
    theta_keep_fractions: list[float] = Field(min_length=1, description="keep fractions of the theta experiment")
    theta_claim_deg: float = Field(ge=0.0, lt=90.0)
    theta_claim_keep_fraction: Fraction

    # --- self-supervised prototypes on digits (notebook 03) ---
    digits_test_fraction: float = Field(gt=0.0, lt=1.0)
    digits_keep_fractions: list[float] = Field(min_length=1)
    digits_n_seeds: int = Field(ge=1, description="train/test splits (and k-means, random subsets) per arm")
    digits_embedding_dim: int = Field(ge=1, le=64, description="PCA dimensions of the label-free embedding")
    digits_clusters: int = Field(ge=2, description="k of the k-means prototypes")
    digits_logreg_c: float = Field(gt=0.0, description="inverse L2 strength of the logistic classifier")
    digits_scarce_keep_fraction: Fraction
    digits_mild_keep_fractions: list[float] = Field(min_length=1)
    digits_small_train_fraction: Fraction  # a small initial data set: this share of the training images
    digits_small_keep_fraction: Fraction

    @field_validator("keep_fractions", "theta_keep_fractions", "digits_keep_fractions", "digits_mild_keep_fractions")
    @classmethod
    def _fractions(cls, v: list[float]) -> list[float]:
        if any(not 0.0 < f <= 1.0 for f in v):
            raise ValueError(f"every keep fraction must be in (0, 1], got {v}")
        return v

    @field_validator("alpha_totals")
    @classmethod
    def _positive(cls, v: list[float]) -> list[float]:
        if any(a <= 0.0 for a in v):
            raise ValueError(f"every alpha_total must be > 0, got {v}")
        return v

    @field_validator("thetas_deg")
    @classmethod
    def _angles(cls, v: list[float]) -> list[float]:
        if any(not 0.0 <= t < 90.0 for t in v):
            raise ValueError(f"every probe angle must be in [0, 90) degrees, got {v}")
        return v

    @model_validator(mode="after")
    def _claim_cells_on_grid(self) -> "Params":
        def on(value: float, grid: list[float], name: str) -> None:
            if not any(abs(value - g) < 1e-9 for g in grid):
                raise ValueError(f"{name}={value} must be one of {grid}")

        on(self.abundant_alpha_total, self.alpha_totals, "abundant_alpha_total")
        on(self.scarce_alpha_total, self.alpha_totals, "scarce_alpha_total")
        on(self.abundant_keep_fraction, self.keep_fractions, "abundant_keep_fraction")
        on(self.scarce_keep_fraction, self.keep_fractions, "scarce_keep_fraction")
        if 1.0 not in self.keep_fractions:
            raise ValueError("keep_fractions must include 1.0 (the unpruned baseline)")
        if not {"hard", "easy", "random"} <= set(self.strategies):
            raise ValueError("strategies must include hard, easy and random (the claims compare them)")
        on(self.theta_claim_deg, self.thetas_deg, "theta_claim_deg")
        if 0.0 not in self.thetas_deg:
            raise ValueError("thetas_deg must include 0 (the perfect metric)")
        on(self.theta_claim_keep_fraction, self.theta_keep_fractions, "theta_claim_keep_fraction")
        on(self.digits_scarce_keep_fraction, self.digits_keep_fractions, "digits_scarce_keep_fraction")
        for f in self.digits_mild_keep_fractions:
            on(f, self.digits_keep_fractions, "digits_mild_keep_fractions")
        if 1.0 not in self.digits_keep_fractions:
            raise ValueError("digits_keep_fractions must include 1.0 (the unpruned baseline)")
        lo, hi = self.slope_alpha_prune_range
        if not 0.0 < lo < hi:
            raise ValueError(f"slope_alpha_prune_range must be 0 < lo < hi, got {self.slope_alpha_prune_range}")
        return self
