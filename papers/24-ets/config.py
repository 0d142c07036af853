"""Parameters of paper 24 (ETS: Efficient Tree Search). Values live in pipelines/conf/p24/*.yaml.

The policies and the PRM are the `reasoning` artifact's (pipelines/conf/reasoning/), trained
once by the pipeline and shared by papers 08, 10, 13, 20, 24 and 34; this paper only searches
with them.
"""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class WeakSearch(BaseModel):
    """A second search with a weaker policy, where accuracy can separate the methods: added after the
    cpu run in which every method solved every problem with the large policy (README)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    policy: str = Field(min_length=1, description="policy of the reasoning artifact that searches (e.g. small)")
    widths: list[int] = Field(min_length=1, description="search widths W (each needs a lambda_s value)")
    claim_width: int = Field(ge=1, description="the width its accuracy claims are checked at")


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    policy: str = Field(min_length=1, description="policy of the reasoning artifact that searches (its name, e.g. large)")
    verifier: Literal["prm", "noisy_oracle", "oracle"] = Field(
        description="prm: the artifact's trained PRM; noisy_oracle: the exact step checker with flipped labels; oracle: exact")
    verifier_noise: float = Field(ge=0, lt=0.5, description="noisy_oracle: probability that a step or answer label is flipped")
    problems: int = Field(ge=1, description="evaluation problems, searched by every method at every width")
    difficulty: int = Field(ge=1, description="steps per problem")
    problem_seed: int = Field(ge=0, description="seed of the evaluation problems (apart from the artifact's own)")
    widths: list[int] = Field(min_length=1, description="search widths W (leaves budget per problem)")
    claim_width: int = Field(ge=1, description="the width the claims are checked at (the planning notes: 64)")
    temperature: float = Field(gt=0, description="policy sampling temperature (the repo: 1.0)")
    softmax_temperature: float = Field(gt=0, description="T of REBASE's softmax allocation (the repo: 0.2)")
    lambda_c: float = Field(ge=0, description="ETS cost weight on retained nodes (the repo: 1.0)")
    lambda_s: dict[int, float] = Field(min_length=1, description="ETS coverage weight per width (the repo: 1.5 / 1.4 / 1.45 at W = 16 / 64 / 256)")
    extra_steps: int = Field(ge=0, description="depth limit past the gold solution's steps (+1 for the answer)")
    concurrency: int = Field(ge=1, description="searches sharing a decode batch in the time proxy (weights read once per batch)")
    num_threads: int = Field(ge=1, description="torch CPU threads for every notebook (timings included)")
    weak: WeakSearch | None = Field(description="the weak-policy search of the weak_* accuracy claims; null: not run")

    @model_validator(mode="after")
    def _check(self) -> "Params":
        if any(w < 2 for w in self.widths):
            raise ValueError(f"widths: every width must be >= 2 (a tree needs a choice), got {self.widths}")
        if self.claim_width not in self.widths:
            raise ValueError(f"claim_width: {self.claim_width} must be one of widths {self.widths}")
        if self.weak is not None and self.weak.claim_width not in self.weak.widths:
            raise ValueError(f"weak.claim_width: {self.weak.claim_width} must be one of weak.widths {self.weak.widths}")
        if self.weak is not None and any(w < 2 for w in self.weak.widths):
            raise ValueError(f"weak.widths: every width must be >= 2, got {self.weak.widths}")
        missing = [w for w in self.widths + (self.weak.widths if self.weak else []) if w not in self.lambda_s]
        if missing:
            raise ValueError(f"lambda_s: needs a value for every width, missing {missing}")
        if any(v < 0 for v in self.lambda_s.values()):
            raise ValueError(f"lambda_s: values must be >= 0, got {self.lambda_s}")
        return self
