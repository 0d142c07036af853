"""Parameters of paper 20 (Scaling over Scaling / TTSPM). Values live in pipelines/conf/p20/*.yaml.

The policies and the PRM are the `reasoning` artifact's (pipelines/conf/reasoning/), trained
once by the pipeline and shared by papers 08, 10, 13, 20, 24 and 34; this paper only samples
from them.
"""

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    policy: str = Field(min_length=1, description="policy of the reasoning artifact that is scaled (its name, e.g. medium)")
    problems: int = Field(ge=2, description="problems of the parallel experiment (a per-problem p each)")
    difficulty: tuple[int, int] = Field(description="(lo, hi) steps per problem, drawn uniformly: graded difficulty, a spread of p")
    problem_seed: int = Field(ge=0, description="seed of the problems (apart from the artifact's own seeds)")
    temperature: float = Field(gt=0, description="sampling temperature of every candidate and revision")
    pilot_samples: int = Field(ge=1, description="pilot samples per problem that estimate p (the planning notes: 8)")
    fresh_samples: int = Field(ge=2, description="fresh samples per problem that measure Hit@N and N* (the planning notes: 64)")
    epsilon: float = Field(gt=0, lt=1, description="tolerance of the saturation point: the next unit gains at most this")
    selection_ns: list[int] = Field(description="N of best-of-N (PRM) and majority vote on the fresh samples (empty: none)")
    seq_problems: int = Field(ge=1, description="problems of the sequential (revision) experiment")
    seq_replicas: int = Field(ge=1, description="independent revision trajectories per problem (per-problem rates)")
    seq_rounds: int = Field(ge=1, description="revision rounds after the first attempt")
    seq_mae_attempts: int = Field(ge=2, description="attempts 1..this that the sequential MAE averages over (<= seq_rounds + 1)")
    seq_verifier: Literal["oracle", "prm"] = Field(
        description="what triggers a rethink: oracle (exact: the paper's absorbing correct state) or the artifact's PRM")
    seq_threshold: float = Field(gt=0, le=1, description="revise: an attempt scored below this is rethought")
    num_threads: int = Field(ge=1, description="torch CPU threads for every notebook")

    @model_validator(mode="after")
    def _check(self) -> "Params":
        lo, hi = self.difficulty
        if not 1 <= lo <= hi:
            raise ValueError(f"difficulty: needs 1 <= lo <= hi, got {self.difficulty}")
        if any(n < 1 or n > self.fresh_samples for n in self.selection_ns):
            raise ValueError(f"selection_ns: every N must be in [1, fresh_samples={self.fresh_samples}], got {self.selection_ns}")
        if self.seq_mae_attempts > self.seq_rounds + 1:
            raise ValueError(f"seq_mae_attempts: {self.seq_mae_attempts} is more than the seq_rounds + 1 = {self.seq_rounds + 1} attempts run")
        # the largest saturation point over p is about 1 / (e eps) (at p = e eps); the observed one
        # needs fresh samples beyond it, or it is censored at the budget
        need = math.ceil(1 / (math.e * self.epsilon)) + 2
        if self.fresh_samples < need:
            raise ValueError(f"fresh_samples: {self.fresh_samples} censors saturation points at epsilon={self.epsilon}; "
                             f"need >= {need} (1/(e*epsilon) + 2)")
        return self
