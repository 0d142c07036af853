"""RL post-training of the reasoning policies (issue 9): the GRPO family with ScaleRL's design choices.

A step is one generation batch and ``minibatches`` optimizer updates on it:

1. draw ``prompts_per_step`` problems from a :class:`PromptPool` (a fixed unique pool reused
   ``reuse`` times, optionally dropping prompts the policy already solves: ScaleRL's
   no-positive-resampling);
2. sample ``group_size`` completions of each with the *behaviour* policy, a stale copy of the
   policy ``lag`` updates old (``lag = 0``: the policy itself; ``lag = k``: PipelineRL-k style,
   generations by weights k updates behind the trainer) -- :func:`shared.reasoning.sample`;
3. reward = ``reasoning.check`` (1 / 0); group-relative advantages (:func:`group_advantages`:
   reward - group mean, normalised by nothing, the group's std (GRPO) or the batch's std
   (ScaleRL)); zero-variance filtering drops the groups whose rewards are all equal;
4. ``minibatches`` optimizer updates (1 by default; k: PPO-off-policy-k, each on a disjoint
   chunk of the step's prompts) on :func:`policy_loss`: the per-token objective of
   ``algorithm`` aggregated by ``loss_aggregation`` (:func:`aggregate`):

   ====== ===========================================================================
   grpo   PPO clipped surrogate, symmetric clip ``1 +- eps_low``
   dapo   the same with DAPO's asymmetric clip ``[1 - eps_low, 1 + eps_high]`` (0.2 / 0.28)
   cispo  truncated-IS REINFORCE: ``-sg(min(ratio, cispo_eps_max)) * A * log pi`` (every
          token keeps a gradient; the IS weight is truncated and detached)
   gspo   the clipped surrogate on the *sequence* ratio ``exp(mean_t log ratio)`` (GSPO;
          its own tiny clip ``gspo_eps_low/high``)
   ====== ===========================================================================

   ``ratio = pi_theta / pi_behaviour`` per token. On-policy (``lag = 0``, ``minibatches = 1``)
   it is exactly 1, no clip is active and all four objectives give the same REINFORCE
   gradient (tested): the algorithms differ only off-policy, as in ScaleRL (PipelineRL-8).

Compute is counted in FLOPs (:func:`forward_flops`, from ``zoo.forward_flops_per_token``):
generation = the sampler's ``Cost.flops`` (every generated token at its context, prompts
included), training = 3 x the forward FLOPs of every trained sequence (the tokens fed: prompt +
completion but its last token; the 6N rule), recomputing the behaviour log-probabilities
(``lag > 0`` or ``minibatches > 1``, before any update) = 1 x forward. Evaluation is not
training compute. :func:`train` returns an :class:`RLHistory` (one row per step, cumulative).

torch and pandas are imported where used (``import shared.rl`` stays cheap).
"""

from __future__ import annotations

import functools
import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.config import ParamError, validate_section
from shared.progress import bar as progress_bar

if TYPE_CHECKING:
    import pandas as pd
    import torch

    from shared.zoo import ModelSpec

ALGORITHMS = ("grpo", "dapo", "cispo", "gspo")
AGGREGATIONS = ("token", "sequence", "prompt")
NORMALISATIONS = ("none", "group", "batch")
STD_EPS = 1e-6  # added to a standard deviation before dividing by it
HISTORY_COLUMNS = [
    "step", "flops", "flops_gen", "flops_train", "gen_tokens", "train_tokens", "samples", "unique_prompts",
    "train_reward", "kept_groups", "active_prompts", "loss", "ratio_mean", "clip_frac", "eval_greedy",
    "eval_sampled", "seconds",
]


# ----------------------------------------------------------------------------- the config
class RLConfig(BaseModel):
    """Every knob of an RL run, with its default (the defaults are ScaleRL's recipe where it has one)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    algorithm: Literal["grpo", "dapo", "cispo", "gspo"] = Field(
        "cispo", description="per-token objective: grpo (PPO clip 1 +- eps_low), dapo (clip [1-eps_low, 1+eps_high]), "
        "cispo (truncated-IS REINFORCE, ScaleRL's choice), gspo (sequence-level ratio)")
    loss_aggregation: Literal["token", "sequence", "prompt"] = Field(
        "prompt", description="token: mean over every trained token of the batch (DAPO); sequence: mean over "
        "sequences of their token mean (GRPO's sample average); prompt: mean over prompts of the token mean of "
        "their group (ScaleRL)")
    advantage_norm: Literal["none", "group", "batch"] = Field(
        "batch", description="reward - group mean, divided by: nothing (Dr. GRPO), the group's std (GRPO), the "
        "std of all advantages of the kept groups of the batch (ScaleRL)")
    zero_variance_filter: bool = Field(True, description="drop groups whose rewards are all equal (zero advantage) "
                                       "from the loss and from the training compute")
    no_positive_resampling: float | None = Field(
        None, gt=0, le=1, description="retire a prompt for good once its group pass rate reaches this (ScaleRL: "
        "0.9); None: never")
    group_size: int = Field(8, ge=2, description="completions sampled per prompt (GRPO group)")
    prompts_per_step: int = Field(8, gt=0, description="prompts per RL step (batch = prompts_per_step x group_size)")
    steps: int = Field(30, gt=0, description="RL steps (one generation batch and `minibatches` updates each)")
    reuse: float = Field(1.0, ge=1, description="data reuse factor tau: the unique pool holds "
                         "steps x prompts_per_step / reuse prompts (paper 34's data-reuse experiment)")
    lr: float = Field(1e-4, gt=0, description="AdamW learning rate (constant)")
    weight_decay: float = Field(0.0, ge=0, description="AdamW decoupled weight decay")
    grad_clip: float = Field(1.0, ge=0, description="max global gradient norm; 0: no clipping")
    eps_low: float = Field(0.2, gt=0, lt=1, description="clip below at 1 - eps_low (grpo, dapo); grpo clips "
                           "symmetrically at 1 +- eps_low")
    eps_high: float = Field(0.28, gt=0, description="dapo: clip above at 1 + eps_high (DAPO's clip-higher)")
    cispo_eps_max: float = Field(4.0, gt=0, description="cispo: the importance weight is truncated at this")
    gspo_eps_low: float = Field(3e-4, gt=0, lt=1, description="gspo: clip of the sequence ratio below, 1 - this")
    gspo_eps_high: float = Field(4e-4, gt=0, description="gspo: clip of the sequence ratio above, 1 + this")
    lag: int = Field(0, ge=0, description="behaviour policy = the policy this many optimizer updates ago (0: "
                     "on-policy; PipelineRL-k: k; ScaleRL uses 8)")
    minibatches: int = Field(1, gt=0, description="optimizer updates per step over disjoint chunks of its prompts, "
                             "all on the step's generations (PPO-off-policy-k: k); 1: one update per step")
    max_new_tokens: int | None = Field(None, gt=0, description="generation budget per completion (longer ones are "
                                       "cut); None: reasoning.default_max_new_tokens (the hardest gold solution "
                                       "of the batch + 2 steps)")
    temperature: float = Field(1.0, gt=0, description="sampling temperature of training generations (the "
                               "log-probabilities are of this tempered distribution)")
    eval_every: int = Field(5, ge=0, description="evaluate before step 1, every this many steps and at the end; "
                            "0: only before and at the end")
    eval_problems: int = Field(64, gt=0, description="held-out problems evaluated (the first of the list given)")
    eval_samples: int = Field(0, ge=0, description="sampled pass@1 over this many samples per eval problem at "
                              "temperature; 0: greedy pass@1 only")

    @model_validator(mode="after")
    def _check(self) -> RLConfig:
        if self.algorithm == "dapo" and self.eps_high < self.eps_low:
            raise ValueError(f"eps_high: dapo clips higher above than below, needs >= eps_low={self.eps_low}, "
                             f"got {self.eps_high}")
        if self.minibatches > self.prompts_per_step:
            raise ValueError(f"minibatches: at most prompts_per_step={self.prompts_per_step} (a chunk is >= 1 prompt), "
                             f"got {self.minibatches}")
        return self

    @property
    def pool_size(self) -> int:
        """Unique prompts of the data pool: steps x prompts_per_step / reuse (at least one step's worth)."""
        return pool_size(self.steps, self.prompts_per_step, self.reuse)


def rl_config(values: dict[str, Any] | None = None, prefix: str = "rl", **kw) -> RLConfig:
    """RLConfig from a dict (e.g. a paper's params section); a bad value fails in one line naming the key."""
    return validate_section(RLConfig, {**(values or {}), **kw}, prefix)


def pool_size(steps: int, prompts_per_step: int, reuse: float) -> int:
    return max(prompts_per_step, math.ceil(steps * prompts_per_step / reuse - 1e-9))


# ----------------------------------------------------------------------------- advantages
def group_advantages(rewards: torch.Tensor, norm: str = "batch", keep: torch.Tensor | None = None) -> torch.Tensor:
    """Advantages of a [prompts, group] reward table: reward - group mean, then normalised.

    ``norm``: ``none``; ``group`` divides by each group's std (population std, + STD_EPS);
    ``batch`` divides by the std of the centred rewards of the kept groups (``keep``: bool per
    prompt, default all). Dropped groups get advantage 0.
    """
    import torch

    if norm not in NORMALISATIONS:
        raise ValueError(f"advantage_norm: one of {', '.join(NORMALISATIONS)}, got {norm!r}")
    r = rewards.float()
    adv = r - r.mean(dim=1, keepdim=True)
    keep = torch.ones(r.shape[0], dtype=torch.bool) if keep is None else keep.bool()
    if norm == "group":
        adv = adv / (r.std(dim=1, correction=0, keepdim=True) + STD_EPS)
    elif norm == "batch" and keep.any():
        adv = adv / (adv[keep].std(correction=0) + STD_EPS)
    return torch.where(keep[:, None], adv, torch.zeros_like(adv))


def zero_variance_mask(rewards: torch.Tensor) -> torch.Tensor:
    """True for the groups (rows) whose rewards are not all equal: the ones with a learning signal."""
    return (rewards != rewards[:, :1]).any(dim=1)


class PromptPool:
    """The unique prompts of a run, served ``per_step`` at a time in seeded epochs.

    Each epoch is a fresh permutation of the active prompts; a run of S steps over a pool of
    S x per_step / tau prompts sees each about tau times. With ``retire_at`` (ScaleRL's
    no-positive-resampling), :meth:`update` retires a prompt for good once its pass rate
    reaches it; when fewer than ``per_step`` remain active, the retired ones come back (the
    pool never starves; ``revived`` counts it).
    """

    def __init__(self, size: int, per_step: int, seed: int = 0, retire_at: float | None = None):
        if size < per_step:
            raise ValueError(f"pool size: needs at least prompts_per_step={per_step} prompts, got {size}")
        self.size, self.per_step, self.seed, self.retire_at = size, per_step, seed, retire_at
        self.retired: set[int] = set()
        self.seen: set[int] = set()
        self.revived = 0
        self._epoch, self._queue = 0, deque()

    def _refill(self) -> None:
        import torch

        active = [i for i in range(self.size) if i not in self.retired]
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self._epoch)
        self._queue += [active[j] for j in torch.randperm(len(active), generator=gen).tolist()]
        self._epoch += 1

    def draw(self) -> list[int]:
        """The next ``per_step`` prompt indices (distinct within a step)."""
        if self.size - len(self.retired) < self.per_step:
            self.retired.clear()
            self.revived += 1
        out: list[int] = []
        deferred: list[int] = []  # a prompt already in this step (epoch boundary) waits for the next step
        while len(out) < self.per_step:
            if not self._queue:
                self._refill()
            i = self._queue.popleft()
            if i in out:
                deferred.append(i)
            elif i not in self.retired:
                out.append(i)
        self._queue.extendleft(reversed(deferred))
        self.seen.update(out)
        return out

    def update(self, indices: Sequence[int], pass_rates: Sequence[float]) -> None:
        if self.retire_at is None:
            return
        self.retired.update(i for i, p in zip(indices, pass_rates) if p >= self.retire_at)

    @property
    def active(self) -> int:
        return self.size - len(self.retired)


# ----------------------------------------------------------------------------- losses
def aggregate(per_token: torch.Tensor, mask: torch.Tensor, groups: torch.Tensor, how: str) -> torch.Tensor:
    """Reduce a [B, T] per-token loss over its ``mask`` to a scalar.

    ``token``: sum / number of tokens of the batch; ``sequence``: mean over sequences of their
    token mean; ``prompt``: mean over prompts (``groups``: [B] prompt index) of the token mean
    over all the tokens of the prompt's group. Equal lengths: all three agree.
    """
    import torch

    m = mask.to(per_token.dtype)
    summed = (per_token * m).sum(dim=1)
    count = m.sum(dim=1)
    if how == "token":
        return summed.sum() / count.sum().clamp(min=1)
    if how == "sequence":
        return (summed / count.clamp(min=1)).mean()
    if how == "prompt":
        _, g = torch.unique(groups, return_inverse=True)
        n = int(g.max()) + 1
        g_sum = torch.zeros(n, dtype=summed.dtype, device=summed.device).index_add(0, g, summed)
        g_count = torch.zeros(n, dtype=count.dtype, device=count.device).index_add(0, g, count)
        return (g_sum / g_count.clamp(min=1)).mean()
    raise ValueError(f"loss_aggregation: one of {', '.join(AGGREGATIONS)}, got {how!r}")


def clipped_surrogate(ratio: torch.Tensor, adv: torch.Tensor, low: float, high: float) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's per-token loss -min(ratio A, clip(ratio, 1-low, 1+high) A), and where the clip is active."""
    import torch

    clipped = ratio.clamp(1 - low, 1 + high)
    loss = -torch.minimum(ratio * adv, clipped * adv)
    active = ((adv > 0) & (ratio > 1 + high)) | ((adv < 0) & (ratio < 1 - low))
    return loss, active


def token_losses(logp: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor, mask: torch.Tensor,
                 cfg: RLConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-token losses [B, T] of ``cfg.algorithm``; also the ratio and where the clip/truncation bites.

    ``logp``: the trained policy's log-probabilities of the sampled tokens (with grad);
    ``old_logp``: the behaviour policy's; ``adv``: [B] per-sequence advantages; ``mask``: [B, T].
    """
    import torch

    a = adv[:, None].to(logp.dtype)
    log_ratio = (logp - old_logp) * mask
    if cfg.algorithm == "gspo":
        n = mask.sum(dim=1, keepdim=True).clamp(min=1)
        seq_ratio = torch.exp(log_ratio.sum(dim=1, keepdim=True) / n)  # GSPO: length-normalised sequence ratio
        # per token: sg(s_i) * pi/sg(pi): the value of s_i, the gradient s_i * grad log pi(y_t) / |y_i| once
        # aggregated per sequence, i.e. exactly the sequence-level objective's gradient
        ratio = seq_ratio.detach() * torch.exp(logp - logp.detach())
        loss, active = clipped_surrogate(ratio, a, cfg.gspo_eps_low, cfg.gspo_eps_high)
        return loss, ratio.detach().expand_as(logp), active
    ratio = torch.exp(log_ratio)
    if cfg.algorithm == "cispo":
        weight = ratio.clamp(max=cfg.cispo_eps_max).detach()
        return -weight * a * logp, ratio.detach(), ratio.detach() > cfg.cispo_eps_max
    high = cfg.eps_high if cfg.algorithm == "dapo" else cfg.eps_low
    loss, active = clipped_surrogate(ratio, a, cfg.eps_low, high)
    return loss, ratio.detach(), active


def policy_loss(logp: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor, mask: torch.Tensor,
                groups: torch.Tensor, cfg: RLConfig) -> tuple[torch.Tensor, dict[str, float]]:
    """The scalar loss of one batch and its statistics (ratio_mean, clip_frac over the masked tokens)."""
    per_token, ratio, active = token_losses(logp, old_logp, adv, mask, cfg)
    loss = aggregate(per_token, mask, groups, cfg.loss_aggregation)
    m = mask.bool()
    n = max(1, int(m.sum()))
    return loss, {"ratio_mean": float(ratio[m].sum()) / n, "clip_frac": float(active[m].sum()) / n}


# ----------------------------------------------------------------------------- compute
@functools.lru_cache(maxsize=64)
def _prefix_flops(spec: ModelSpec, length: int) -> tuple[int, ...]:
    from shared import zoo

    out, total = [0], 0
    for t in range(1, length + 1):
        total += zoo.forward_flops_per_token(spec, t)
        out.append(total)
    return tuple(out)


def forward_flops(spec: ModelSpec, length: int) -> int:
    """FLOPs of a causal forward over ``length`` tokens: token t attends to its t-token context."""
    if length < 0:
        raise ValueError(f"length: must be >= 0, got {length}")
    table = _prefix_flops(spec, max(256, 1 << max(0, length - 1).bit_length()))
    return table[length]


def train_flops(spec: ModelSpec, lengths: Sequence[int]) -> int:
    """Training FLOPs of sequences of these fed lengths: 3 x forward (forward + backward, the 6N rule)."""
    return 3 * sum(forward_flops(spec, n) for n in lengths)


# ----------------------------------------------------------------------------- the loop
@dataclass
class RLHistory:
    """One row per step (``table``, columns HISTORY_COLUMNS; cumulative flops/tokens/samples), the trained policy."""

    table: pd.DataFrame
    policy: Any  # the trained copy (the policy passed in is left untouched)
    cfg: RLConfig
    seed: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def evals(self) -> pd.DataFrame:
        """The rows with an evaluation (step 0 = before training)."""
        return self.table[self.table["eval_greedy"].notna()].reset_index(drop=True)


def sequence_logprobs(model, prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]],
                      temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probabilities [B, T] of each completion's tokens after its prompt, teacher-forced, and their mask.

    One right-padded batch: causal attention never lets a real token see the padding after it,
    so no attention mask is needed and positions are the natural ones. The log-probabilities
    are of ``softmax(logits / temperature)``, the distribution the sampler drew from.
    """
    import torch

    lengths = [len(p) + len(c) - 1 for p, c in zip(prompts, completions)]  # the last token is never fed
    width = max(lengths)
    t_max = max(1, max(len(c) for c in completions))
    ids = torch.zeros(len(prompts), width, dtype=torch.long)
    target = torch.zeros(len(prompts), t_max, dtype=torch.long)
    mask = torch.zeros(len(prompts), t_max)
    index = torch.zeros(len(prompts), t_max, dtype=torch.long)  # the position whose logits predict token t
    for b, (p, c) in enumerate(zip(prompts, completions)):
        ids[b, : lengths[b]] = torch.tensor([*p, *c][: lengths[b]], dtype=torch.long)
        n = len(c)
        target[b, :n] = torch.tensor(c, dtype=torch.long)
        mask[b, :n] = 1
        index[b, :n] = torch.arange(len(p) - 1, len(p) - 1 + n)
    device = next(model.parameters()).device
    logits = model(input_ids=ids.to(device)).logits.float()
    logits = logits.gather(1, index.to(device)[:, :, None].expand(-1, -1, logits.shape[-1]))
    if temperature != 1.0:
        logits = logits / temperature
    logp = torch.log_softmax(logits, dim=-1).gather(2, target.to(device)[:, :, None])[:, :, 0]
    mask = mask.to(device)
    return logp * mask, mask


def evaluate(policy, problems: Sequence, cfg: RLConfig, seed: int = 0) -> tuple[float, float]:
    """Greedy pass@1 and sampled pass@1 (mean over cfg.eval_samples samples; NaN when 0) on ``problems``."""
    from shared import reasoning

    greedy = reasoning.sample(policy, problems, n=1, temperature=0, max_new_tokens=cfg.max_new_tokens, seed=seed)
    g = sum(reasoning.check(p, t[0]) for p, t in zip(problems, greedy.texts)) / len(problems)
    if not cfg.eval_samples:
        return g, float("nan")
    sampled = reasoning.sample(policy, problems, n=cfg.eval_samples, temperature=cfg.temperature,
                               max_new_tokens=cfg.max_new_tokens, seed=seed)
    s = sum(reasoning.check(p, t) for p, ts in zip(problems, sampled.texts) for t in ts)
    return g, s / (len(problems) * cfg.eval_samples)


def train(policy, problems_pool: Sequence, cfg: RLConfig, eval_problems: Sequence = (), seed: int = 0,
          progress: Callable | None = None, reward: Callable[[Any, str], float] | None = None) -> RLHistory:
    """RL-train a copy of ``policy`` (a reasoning.Policy) for cfg.steps steps; see the module docstring.

    The unique pool is the first ``cfg.pool_size`` problems of ``problems_pool``; ``eval_problems``:
    held-out problems (the first cfg.eval_problems are used; empty: no evaluation); ``reward``:
    (problem, completion) -> float, default reasoning.check. Same seed, same history
    (except the ``seconds`` column).
    """
    import copy
    import dataclasses
    import time

    import pandas as pd
    import torch

    from shared import reasoning

    if len(problems_pool) < cfg.pool_size:
        raise ParamError(f"problems_pool: needs pool_size = steps x prompts_per_step / reuse = {cfg.pool_size} "
                         f"problems, got {len(problems_pool)}")
    reward = reward or (lambda problem, text: float(reasoning.check(problem, text)))
    progress = progress or progress_bar
    evals = list(eval_problems)[: cfg.eval_problems]
    if evals and len(evals) < cfg.eval_problems:
        raise ParamError(f"eval_problems: needs cfg.eval_problems = {cfg.eval_problems} problems (or none), "
                         f"got {len(evals)}")
    torch.manual_seed(seed)
    model = copy.deepcopy(policy.model).train()
    trained = dataclasses.replace(policy, model=model)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    stale = copy.deepcopy(model).eval() if cfg.lag else None  # the behaviour policy: the weights `lag` updates ago
    snapshots = deque([_state(model)], maxlen=cfg.lag + 1)  # snapshots[0]: the weights `lag` updates ago
    pool = PromptPool(cfg.pool_size, cfg.prompts_per_step, seed=seed, retire_at=cfg.no_positive_resampling)
    totals = dict(flops_gen=0, flops_train=0, gen_tokens=0, train_tokens=0, samples=0)
    rows: list[dict[str, Any]] = []
    seconds = 0.0

    def evaluation() -> tuple[float, float]:
        if not evals:
            return float("nan"), float("nan")
        with torch.no_grad():
            return evaluate(trained, evals, cfg, seed=seed * 7919 + 17)

    greedy, sampled = evaluation()
    rows.append(dict(step=0, flops=0, **totals, unique_prompts=0, train_reward=float("nan"), kept_groups=0,
                     active_prompts=pool.active, loss=float("nan"), ratio_mean=float("nan"), clip_frac=float("nan"),
                     eval_greedy=greedy, eval_sampled=sampled, seconds=0.0))
    for step in progress(range(1, cfg.steps + 1), desc=f"rl {cfg.algorithm}", total=cfg.steps):
        t0 = time.perf_counter()
        idx = pool.draw()
        problems = [problems_pool[i] for i in idx]
        if stale is not None:
            stale.load_state_dict(snapshots[0])
        behaviour = trained if stale is None else dataclasses.replace(policy, model=stale)
        samples = reasoning.sample(behaviour, problems, n=cfg.group_size, temperature=cfg.temperature,
                                   max_new_tokens=cfg.max_new_tokens, seed=seed * 1_000_003 + step)
        rewards = torch.tensor([[reward(p, t) for t in texts] for p, texts in zip(problems, samples.texts)])
        pool.update(idx, rewards.mean(dim=1).tolist())
        keep = zero_variance_mask(rewards) if cfg.zero_variance_filter else torch.ones(len(idx), dtype=torch.bool)
        adv = group_advantages(rewards, cfg.advantage_norm, keep=keep)
        totals["flops_gen"] += int(samples.cost.flops)
        totals["gen_tokens"] += int(samples.cost.tokens)
        totals["samples"] += len(idx) * cfg.group_size
        kept = [i for i in range(len(idx)) if keep[i]]
        batch = [(reasoning.prompt_ids(problems[i]), list(samples.token_ids[i][j]), float(adv[i, j]), i)
                 for i in kept for j in range(cfg.group_size)]
        stats = _update(model, stale, opt, batch, cfg, policy.spec, snapshots, totals)
        seconds += time.perf_counter() - t0
        greedy, sampled = evaluation() if step == cfg.steps or (cfg.eval_every and step % cfg.eval_every == 0) \
            else (float("nan"), float("nan"))
        rows.append(dict(step=step, flops=totals["flops_gen"] + totals["flops_train"], **totals,
                         unique_prompts=len(pool.seen), train_reward=float(rewards.mean()), kept_groups=len(kept),
                         active_prompts=pool.active, **stats, eval_greedy=greedy, eval_sampled=sampled,
                         seconds=seconds))
    model.eval()
    table = pd.DataFrame(rows, columns=HISTORY_COLUMNS)
    return RLHistory(table=table, policy=trained, cfg=cfg, seed=seed, extra={"pool_revived": pool.revived})


def _state(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _update(model, stale, opt, batch: list, cfg: RLConfig, spec: ModelSpec, snapshots: deque,
            totals: dict[str, int]) -> dict[str, float]:
    """The optimizer update(s) of one step on ``batch`` = [(prompt ids, completion ids, advantage, prompt)];
    ``cfg.minibatches`` updates over disjoint chunks of the prompts (PPO-off-policy-k). Returns the mean stats."""
    import torch

    nan = float("nan")
    if not batch:  # every group filtered out: no update (the step still spent its generation)
        return {"loss": nan, "ratio_mean": nan, "clip_frac": nan}
    prompts, completions, adv, groups = (list(x) for x in zip(*batch))
    lengths = [len(p) + len(c) - 1 for p, c in zip(prompts, completions)]  # tokens fed to the trainer
    old_all = None
    if stale is not None or cfg.minibatches > 1:  # the behaviour log-probs, before any update
        with torch.no_grad():
            old_all, _ = sequence_logprobs(stale if stale is not None else model, prompts, completions,
                                           cfg.temperature)
        totals["flops_train"] += sum(forward_flops(spec, n) for n in lengths)
    keys = sorted(set(groups))
    chunks = [c for c in (keys[k::cfg.minibatches] for k in range(cfg.minibatches)) if c]
    out: list[dict[str, float]] = []
    for chunk in chunks:
        rows = [b for b in range(len(batch)) if groups[b] in chunk]
        logp, mask = sequence_logprobs(model, [prompts[b] for b in rows], [completions[b] for b in rows],
                                       cfg.temperature)
        old = logp.detach() if old_all is None else old_all[rows, : logp.shape[1]]
        loss, stats = policy_loss(logp, old, torch.tensor([adv[b] for b in rows], device=logp.device), mask,
                                  torch.tensor([groups[b] for b in rows], device=logp.device), cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        totals["flops_train"] += train_flops(spec, [lengths[b] for b in rows])
        totals["train_tokens"] += int(mask.sum())
        out.append({"loss": loss.item(), **stats})
        if cfg.lag:
            snapshots.append(_state(model))
    return {k: sum(o[k] for o in out) / len(out) for k in out[0]}
