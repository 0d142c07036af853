"""Parameters of paper 08 (SCALE: selective resource allocation). Values live in pipelines/conf/p08/*.yaml.

The policies and the PRM are the `reasoning` artifact's (pipelines/conf/reasoning/), trained
once by the pipeline and shared by papers 08, 10, 13, 20, 24 and 34; this paper only allocates
test-time compute with them.
"""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    policy: str = Field(min_length=1, description="policy of the reasoning artifact that solves the steps (its name, e.g. large)")
    problems: int = Field(ge=1, description="evaluation problems; every method solves all of them")
    difficulty: int = Field(ge=1, le=26, description="steps (sub-problems) per problem")
    problem_seed: int = Field(ge=0, description="seed of the evaluation problems (apart from the artifact's own)")
    assessor_problems: int = Field(ge=1, description="held-out problems whose gold-context greedy steps fit the difficulty scorers")
    assessor_seed: int = Field(ge=0, description="seed of the held-out assessor problems (!= problem_seed)")
    k: int = Field(ge=2, le=64, description="System 2: sampled candidates per step (the notes: self-consistency k = 8)")
    temperature: float = Field(gt=0, le=4, description="System 2 sampling temperature")
    select: Literal["prm", "majority"] = Field(description="System 2 picks the candidate the PRM scores highest, or the most frequent")
    signals: list[Literal["regressor", "entropy"]] = Field(min_length=1, description="difficulty scorers swept (each gets every tau)")
    signal: Literal["regressor", "entropy"] = Field(description="the scorer the claims are checked on")
    taus: list[float] = Field(min_length=2, description="thresholds swept: System 2 when the score in [0, 1] > tau")
    default_tau: float = Field(ge=0, le=1, description="the paper's default threshold (0.5): the operating point when no tau reaches System 2's accuracy")
    random_fractions: list[float] = Field(min_length=1, description="System-2 shares of random allocation (0 and 1 are uniform S1 / S2)")
    tolerance: float = Field(ge=0, le=0.2, description="accuracy slack against uniform System 2 (the notes: 1 point)")
    token_budget: float = Field(gt=0, le=1, description="token share of uniform System 2 the claims allow (the notes: 0.67)")
    num_threads: int = Field(ge=1, description="torch CPU threads for every notebook (timings included)")

    @model_validator(mode="after")
    def _check(self) -> "Params":
        if self.signal not in self.signals:
            raise ValueError(f"signal: {self.signal!r} must be one of signals {self.signals}")
        if len(set(self.signals)) != len(self.signals):
            raise ValueError(f"signals: duplicates in {self.signals}")
        if any(not 0 <= t <= 1 for t in self.taus) or len(set(self.taus)) != len(self.taus):
            raise ValueError(f"taus: distinct values in [0, 1], got {self.taus}")
        if any(not 0 < f < 1 for f in self.random_fractions) or len(set(self.random_fractions)) != len(self.random_fractions):
            raise ValueError(f"random_fractions: distinct values in (0, 1), got {self.random_fractions}")
        if self.assessor_seed == self.problem_seed:
            raise ValueError(f"assessor_seed: must differ from problem_seed ({self.problem_seed}): the scorer is fitted on held-out problems")
        return self
