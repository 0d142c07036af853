"""Parameters of paper 34 (scaling behaviours of RL post-training). Values live in pipelines/conf/p34/*.yaml.

The policies are the `reasoning` artifact's (pipelines/conf/reasoning/), trained once by the
pipeline; this paper RL-fine-tunes copies of them with shared.rl (the policies themselves are
never retrained). ``rl`` is a shared.rl.RLConfig: the keys not given keep its visible defaults.
"""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.rl import RLConfig


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # --- (B) GRPO on the artifact's policies of several sizes (notebook 02) ---
    sizes: list[str] = Field(min_length=2, description="policies of the reasoning artifact that are RL-trained (names, >= 2)")
    rl: RLConfig = Field(description="the RL run of every size (shared.rl.RLConfig: steps, lr, group_size, eval_every ...)")
    train_difficulty: tuple[int, int] | None = Field(description="(lo, hi) steps of the RL training problems; null: the artifact's SFT range")
    eval_difficulty: int | None = Field(ge=1, description="steps of the held-out problems whose greedy ErrRate is the test loss; null: the artifact's eval difficulty")
    test_loss: Literal["sampled", "greedy"] = Field(
        description="ErrRate = 1 - pass@1 of: sampled (mean over rl.eval_samples samples at rl.temperature) or greedy decoding")
    problem_seed: int = Field(ge=0, description="seed of the RL training pool (apart from the artifact's own seeds)")
    eval_seed: int = Field(ge=0, description="seed of the held-out evaluation problems")
    err_floor: float = Field(gt=0, lt=1, description="ErrRate floor before taking logs (a checkpoint that solves every eval problem)")

    # --- (C) data reuse at equal steps (notebook 02, second part) ---
    reuse_policy: str = Field(min_length=1, description="the policy of the data-reuse sweep")
    reuse_steps: int = Field(gt=0, description="RL steps of every reuse run (the unique pool is steps x prompts / tau)")
    reuse_taus: list[float] = Field(min_length=2, description="reuse factors tau (must include 1, the unique-data baseline)")
    reuse_seeds: int = Field(ge=1, description="RL seeds per tau (the curves and the final ErrRate are their mean)")
    claim_tau: float = Field(gt=1, description="the tau of the reuse claim (the planning notes: 16)")
    num_threads: int = Field(ge=1, description="torch CPU threads for every notebook (timings included)")

    @model_validator(mode="after")
    def _check(self) -> "Params":
        if len(set(self.sizes)) != len(self.sizes):
            raise ValueError(f"sizes: names must be distinct, got {self.sizes}")
        lo, hi = self.train_difficulty or (1, 1)
        if not 1 <= lo <= hi:
            raise ValueError(f"train_difficulty: needs 1 <= lo <= hi, got {self.train_difficulty}")
        if self.test_loss == "sampled" and not self.rl.eval_samples:
            raise ValueError("rl.eval_samples: test_loss = sampled needs >= 1 sample per eval problem, got 0")
        if 1 not in self.reuse_taus or any(t < 1 for t in self.reuse_taus):
            raise ValueError(f"reuse_taus: every tau >= 1 and tau = 1 (unique data) included, got {self.reuse_taus}")
        if self.claim_tau not in self.reuse_taus:
            raise ValueError(f"claim_tau: {self.claim_tau} must be one of reuse_taus {self.reuse_taus}")
        return self
