"""The RL loop: advantages, filters, the four objectives, aggregation, the prompt pool, FLOPs, learning."""

import math

import pytest
import torch

from shared import config, rl, zoo
from shared.rl import RLConfig

pytestmark = pytest.mark.usefixtures("one_thread")

REWARDS = torch.tensor([[1.0, 0, 0, 1], [1, 1, 1, 1], [0, 0, 0, 1]])


# --- advantages and filters ------------------------------------------------------------------


def test_advantages_on_a_hand_example():
    none = rl.group_advantages(REWARDS, "none")
    assert none.tolist() == [[0.5, -0.5, -0.5, 0.5], [0, 0, 0, 0], [-0.25, -0.25, -0.25, 0.75]]
    group = rl.group_advantages(REWARDS, "group")
    s = math.sqrt(3 / 16)  # population std of (0, 0, 0, 1)
    assert torch.allclose(group, torch.tensor([[1, -1, -1, 1], [0, 0, 0, 0], [-0.25 / s, -0.25 / s, -0.25 / s, 0.75 / s]]), atol=1e-5)
    keep = rl.zero_variance_mask(REWARDS)
    batch = rl.group_advantages(REWARDS, "batch", keep=keep)
    std = math.sqrt((4 * 0.25 + 3 * 0.0625 + 0.5625) / 8)  # the centred rewards of the two kept groups
    assert torch.allclose(batch, torch.tensor([[0.5, -0.5, -0.5, 0.5], [0, 0, 0, 0], [-0.25, -0.25, -0.25, 0.75]]) / std,
                          atol=1e-5)
    with pytest.raises(ValueError, match="^advantage_norm: one of none, group, batch, got 'prompt'$"):
        rl.group_advantages(REWARDS, "prompt")


def test_zero_variance_filter_drops_exactly_the_constant_groups():
    r = torch.tensor([[0.0, 0, 0], [1, 1, 1], [0, 1, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0.25]])
    assert rl.zero_variance_mask(r).tolist() == [False, False, True, False, True]
    adv = rl.group_advantages(r, "batch", keep=rl.zero_variance_mask(r))
    assert (adv[[0, 1, 3]] == 0).all() and (adv[[2, 4]] != 0).any(dim=1).all()


# --- objectives --------------------------------------------------------------------------------


def _grad(cfg, ratios, adv, agg="token", mask=None, groups=None):
    """d loss / d logp for tokens with these ratios (old logp fixed), one sequence per row."""
    ratios = torch.as_tensor(ratios, dtype=torch.float64)
    if ratios.dim() == 1:
        ratios = ratios[:, None]
    old = torch.zeros_like(ratios)
    logp = ratios.log().clone().requires_grad_(True)
    mask = torch.ones_like(ratios) if mask is None else mask
    groups = torch.arange(len(ratios)) if groups is None else groups
    loss, stats = rl.policy_loss(logp, old, torch.as_tensor(adv, dtype=torch.float64), mask, groups,
                                 cfg.model_copy(update={"loss_aggregation": agg}))
    loss.backward()
    return logp.grad, loss, stats


RATIOS = [0.7, 0.78, 0.85, 1.0, 1.15, 1.25, 1.3, 5.0]


def test_dapo_clip_is_asymmetric_and_the_gradient_vanishes_outside_it():
    dapo = RLConfig(algorithm="dapo")
    for a in (1.0, -1.0):
        g, _, stats = _grad(dapo, RATIOS, [a] * len(RATIOS))
        zero = [(a > 0 and r > 1.28) or (a < 0 and r < 0.8) for r in RATIOS]
        assert [bool(v == 0) for v in g.flatten()] == zero
        assert stats["clip_frac"] == pytest.approx(sum(zero) / len(zero))
        nonzero = ~torch.tensor(zero)
        # inside the clip: d/dlogp of -ratio * A = -ratio * A / n (token mean)
        expect = -torch.tensor(RATIOS, dtype=torch.float64) * a / len(RATIOS)
        assert torch.allclose(g.flatten()[nonzero], expect[nonzero])
    # grpo clips symmetrically at 1 +- eps_low: the ratio 1.25 with A > 0 is clipped there, not under dapo
    g_grpo, _, _ = _grad(RLConfig(algorithm="grpo"), [1.25], [1.0])
    g_dapo, _, _ = _grad(dapo, [1.25], [1.0])
    assert g_grpo.item() == 0 and g_dapo.item() != 0


def test_cispo_truncates_and_detaches_the_importance_weight():
    cfg = RLConfig(algorithm="cispo", cispo_eps_max=2.0)
    for a in (1.0, -0.5):
        g, loss, stats = _grad(cfg, RATIOS, [a] * len(RATIOS))
        w = torch.tensor(RATIOS, dtype=torch.float64).clamp(max=2.0)
        # REINFORCE with a constant weight: d/dlogp of -w * A * logp = -w * A (/ n tokens)
        assert torch.allclose(g.flatten(), -w * a / len(RATIOS))
        assert (g != 0).all(), "every token keeps a gradient, also where the weight is truncated"
        assert loss.item() == pytest.approx(float(-(w * a * torch.tensor(RATIOS).log()).mean()), rel=1e-6)
        assert stats["clip_frac"] == pytest.approx(1 / len(RATIOS))


def test_gspo_gives_the_sequence_level_ratio_and_its_gradient():
    cfg = RLConfig(algorithm="gspo", gspo_eps_low=0.5, gspo_eps_high=0.5, loss_aggregation="sequence")
    torch.manual_seed(0)
    logp0 = (torch.rand(2, 4, dtype=torch.float64) * -2)
    old = logp0 + torch.randn(2, 4, dtype=torch.float64) * 0.05
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.float64)
    adv = torch.tensor([1.0, -2.0], dtype=torch.float64)
    logp = logp0.clone().requires_grad_(True)
    loss, _ = rl.policy_loss(logp, old, adv, mask, torch.arange(2), cfg)
    loss.backward()
    ref = logp0.clone().requires_grad_(True)
    s = torch.exp(((ref - old) * mask).sum(1) / mask.sum(1))  # inside the clip: the loss is -mean_i s_i A_i
    (-(s * adv).mean()).backward()
    assert torch.allclose(logp.grad, ref.grad) and loss.item() == pytest.approx(float(-(s * adv).mean()))


@pytest.mark.parametrize("algorithm", rl.ALGORITHMS)
def test_on_policy_the_ratio_is_one_and_every_objective_is_reinforce(algorithm):
    torch.manual_seed(1)
    logp0 = torch.rand(4, 5, dtype=torch.float64).log()
    logp = logp0.clone().requires_grad_(True)
    mask = torch.ones(4, 5, dtype=torch.float64)
    adv = torch.tensor([1.0, -1.0, 0.5, 0.0], dtype=torch.float64)
    loss, stats = rl.policy_loss(logp, logp.detach(), adv, mask, torch.tensor([0, 0, 1, 1]),
                                 RLConfig(algorithm=algorithm))
    loss.backward()
    assert stats == {"ratio_mean": 1.0, "clip_frac": 0.0}
    assert torch.allclose(logp.grad, -adv[:, None].expand(4, 5) / 20)  # grad of -mean(A log pi)


def test_aggregations_differ_on_unequal_lengths_and_agree_on_equal_ones():
    per_token = torch.tensor([[1.0, 2, 3, 4], [5, 6, 0, 0], [7, 0, 0, 0], [8, 9, 10, 11]])
    groups = torch.tensor([0, 0, 1, 1])
    ragged = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 1]])
    got = {how: rl.aggregate(per_token, ragged, groups, how).item() for how in rl.AGGREGATIONS}
    assert got["token"] == pytest.approx(66 / 11)
    assert got["sequence"] == pytest.approx((10 / 4 + 11 / 2 + 7 + 38 / 4) / 4)
    assert got["prompt"] == pytest.approx((21 / 6 + 45 / 5) / 2)
    assert len({round(v, 6) for v in got.values()}) == 3
    full = torch.ones(4, 4)
    same = [rl.aggregate(per_token, full, groups, how).item() for how in rl.AGGREGATIONS]
    assert same == pytest.approx([per_token.mean().item()] * 3)
    # equal lengths, unequal groups: token = sequence (every sequence weighs the same), prompt differs
    uneven = torch.tensor([0, 0, 0, 1])
    t, s, p = (rl.aggregate(per_token, full, uneven, how).item() for how in rl.AGGREGATIONS)
    assert t == pytest.approx(s) and p != pytest.approx(t)
    with pytest.raises(ValueError, match="^loss_aggregation: one of token, sequence, prompt, got 'batch'$"):
        rl.aggregate(per_token, full, groups, "batch")


# --- data pool ------------------------------------------------------------------------------------


def test_pool_reuses_each_prompt_tau_times_and_is_deterministic():
    steps, per_step, tau = 40, 4, 4
    size = rl.pool_size(steps, per_step, tau)
    assert size == 40
    pool = rl.PromptPool(size, per_step, seed=3)
    draws = [pool.draw() for _ in range(steps)]
    assert all(len(set(d)) == per_step for d in draws)
    counts = torch.bincount(torch.tensor(draws).flatten(), minlength=size)
    assert counts.tolist() == [tau] * size
    again = rl.PromptPool(size, per_step, seed=3)
    assert [again.draw() for _ in range(steps)] == draws
    assert [rl.PromptPool(size, per_step, seed=4).draw() for _ in range(1)] != draws[:1]


def test_no_positive_resampling_retires_solved_prompts_for_good():
    pool = rl.PromptPool(10, 2, seed=0, retire_at=0.9)
    first = pool.draw()
    pool.update(first, [1.0, 0.5])
    later = [i for _ in range(20) for i in pool.draw()]
    assert first[0] not in later and first[1] in later and pool.active == 9
    with pytest.raises(ValueError, match="needs at least prompts_per_step=4 prompts, got 3"):
        rl.PromptPool(3, 4)


# --- config ----------------------------------------------------------------------------------------


def test_config_errors_are_one_line_naming_the_field():
    with pytest.raises(config.ParamError, match=r"^rl\.algorithm: Input should be 'grpo', 'dapo', 'cispo' or 'gspo'"):
        rl.rl_config(algorithm="ppo2")
    with pytest.raises(config.ParamError, match=r"^rl\.group_size: Input should be greater than or equal to 2 \(got 1\)$"):
        rl.rl_config({"group_size": 1})
    with pytest.raises(config.ParamError, match=r"^p10\.rl\.lagg: unknown key; allowed: algorithm, "):
        rl.rl_config({"lagg": 2}, prefix="p10.rl")
    with pytest.raises(config.ParamError, match=r"^rl: eps_high: dapo clips higher above than below"):
        rl.rl_config(algorithm="dapo", eps_high=0.1)
    assert RLConfig(steps=10, prompts_per_step=8, reuse=4).pool_size == 20


# --- compute -------------------------------------------------------------------------------------


def test_flops_accounting_equals_the_zoo_counts():
    spec = zoo.ModelSpec(attention="gqa", vocab_size=40, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=64,
                         max_seq_len=128)
    for n in (0, 1, 7, 300):
        assert rl.forward_flops(spec, n) == sum(zoo.forward_flops_per_token(spec, t) for t in range(1, n + 1))
    assert rl.train_flops(spec, [5, 9]) == 3 * (rl.forward_flops(spec, 5) + rl.forward_flops(spec, 9))


# --- the loop ----------------------------------------------------------------------------------------


def _tiny_policy():
    from shared import reasoning

    spec = zoo.ModelSpec(attention="gqa", vocab_size=reasoning.VOCAB_SIZE, d_model=32, n_layers=2, n_heads=4,
                         n_kv_heads=2, d_ff=64, max_seq_len=64)
    return reasoning.as_policy(zoo.build(spec, seed=0), spec)


def starts_with_a_digit(problem, text):  # trivially learnable: ~10/46 of an untrained policy's completions
    return float(text[:1].isdigit())


QUIET = dict(progress=lambda it, **kw: it, reward=starts_with_a_digit)
LOOP = dict(lr=1e-2, max_new_tokens=3, group_size=8, prompts_per_step=8, eval_problems=8)


@pytest.fixture(scope="module")
def problems():
    from shared import reasoning

    return reasoning.generate(200, 1, seed=0)


def test_a_few_steps_learn_a_trivial_reward_on_policy_with_ratio_one(problems):
    policy = _tiny_policy()
    before = {k: v.clone() for k, v in policy.model.state_dict().items()}
    h = rl.train(policy, problems, RLConfig(steps=12, eval_every=6, **LOOP), eval_problems=problems[-8:], seed=0, **QUIET)
    t = h.table
    assert list(t.columns) == rl.HISTORY_COLUMNS and t["step"].tolist() == list(range(13))
    r = t["train_reward"].tolist()[1:]
    assert sum(r[-3:]) / 3 > sum(r[:3]) / 3 + 0.4, r
    assert (t["ratio_mean"][1:] == 1.0).all() and (t["clip_frac"][1:] == 0.0).all(), "lag 0: on-policy, ratio 1"
    assert t["samples"].iloc[-1] == 12 * 64 and t["unique_prompts"].iloc[-1] == 12 * 8, "reuse 1: fresh prompts"
    assert t["flops"].is_monotonic_increasing and t["flops"].iloc[-1] > 0
    assert h.evals["step"].tolist() == [0, 6, 12]
    assert all(torch.equal(before[k], v) for k, v in policy.model.state_dict().items()), "the input is untouched"


def test_same_seed_same_history_and_the_flops_are_the_zoo_counts(problems):
    from shared import reasoning

    policy = _tiny_policy()
    cfg = RLConfig(steps=1, zero_variance_filter=False, eval_every=0, **LOOP)
    h = rl.train(policy, problems, cfg, seed=5, **QUIET)
    again = rl.train(policy, problems, cfg, seed=5, **QUIET)
    assert h.table.drop(columns="seconds").equals(again.table.drop(columns="seconds"))
    # step 1 by hand: the pool's first draw, the sampler's own cost, 3 x forward of every fed token
    drawn = [problems[i] for i in rl.PromptPool(cfg.pool_size, 8, seed=5).draw()]
    s = reasoning.sample(policy, drawn, n=8, temperature=1.0, max_new_tokens=3, seed=5 * 1_000_003 + 1)
    fed = [len(reasoning.prompt_ids(p)) + len(ids) - 1 for p, row in zip(drawn, s.token_ids) for ids in row]
    row = h.table.iloc[1]
    assert row["flops_gen"] == s.cost.flops and row["gen_tokens"] == s.cost.tokens
    assert row["flops_train"] == 3 * sum(sum(zoo.forward_flops_per_token(policy.spec, c) for c in range(1, n + 1))
                                         for n in fed)
    assert row["flops"] == row["flops_gen"] + row["flops_train"] and row["train_tokens"] == s.cost.tokens


def test_a_stale_behaviour_policy_makes_the_ratio_move_and_costs_a_recompute(problems):
    h = rl.train(_tiny_policy(), problems, RLConfig(steps=4, lag=2, reuse=4, eval_every=0, **LOOP), seed=0, **QUIET)
    ratio = h.table["ratio_mean"].tolist()[1:]
    assert ratio[0] == pytest.approx(1.0, abs=1e-6), "step 1: behaviour = initial = current weights"
    assert all(x != 1.0 for x in ratio[1:]) and max(abs(x - 1) for x in ratio) > 0.01, ratio
    assert h.table["unique_prompts"].iloc[-1] == RLConfig(steps=4, reuse=4).pool_size == 8
    with pytest.raises(config.ParamError, match=r"^problems_pool: needs pool_size = .* = 240 problems, got 200$"):
        rl.train(_tiny_policy(), problems, RLConfig(steps=30, **LOOP), **QUIET)


def test_ppo_off_policy_minibatches_go_off_policy_within_a_step_and_pay_one_recompute(problems):
    cfg = RLConfig(steps=1, zero_variance_filter=False, eval_every=0, **LOOP)
    one = rl.train(_tiny_policy(), problems, cfg, **QUIET).table.iloc[1]
    two = rl.train(_tiny_policy(), problems, cfg.model_copy(update={"minibatches": 2}), **QUIET).table.iloc[1]
    assert two["flops_gen"] == one["flops_gen"] and two["train_tokens"] == one["train_tokens"]
    assert two["flops_train"] * 3 == one["flops_train"] * 4, "3 x forward to train + 1 x to recompute the old log-probs"
    assert one["ratio_mean"] == 1.0 and two["ratio_mean"] != pytest.approx(1.0, abs=1e-5)
    with pytest.raises(config.ParamError, match=r"^rl: minibatches: at most prompts_per_step=8"):
        rl.rl_config(minibatches=9)


def test_teacher_forced_logprobs_equal_the_samplers_own(problems):
    from shared import reasoning

    policy = _tiny_policy()
    drawn = problems[:3]
    s = reasoning.sample(policy, drawn, n=2, temperature=1.0, max_new_tokens=6, seed=0, return_logprobs=True)
    prompts = [reasoning.prompt_ids(p) for p in drawn for _ in range(2)]
    completions = [c for row in s.token_ids for c in row]
    with torch.no_grad():
        logp, mask = rl.sequence_logprobs(policy.model, prompts, completions)
    ref = [lp for row in s.logprobs for lp in row]
    assert mask.sum(1).tolist() == [len(c) for c in completions]
    for b, row in enumerate(ref):
        assert logp[b, : len(row)].tolist() == pytest.approx(row, abs=1e-4)
    with torch.no_grad():  # tempered: the log-probabilities of softmax(logits / T), what the sampler drew from
        hot, _ = rl.sequence_logprobs(policy.model, prompts, completions, temperature=2.0)
    assert not torch.allclose(hot, logp)
