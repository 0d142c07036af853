# %% [markdown]
# # 24 · ETS — tree search with KV sharing: REBASE, beam search, DVTS, ETS
# The artifact's policy writes one step at a time; the artifact's PRM scores every step. Each
# method grows a tree per problem within a width budget W (`paper24.search`, after the
# authors' `rebase.py`): REBASE (softmax allocation, T = 0.2), beam search (keep sqrt W), DVTS
# (sqrt W independent subtrees), ETS (REBASE + an integer program per depth that penalises
# retained nodes and rewards covering distinct intermediate values), and ETS without the
# coverage term (lambda_s = 0). Per method: accuracy (weighted majority vote of the leaves),
# KV size as the repo counts it (tokens of the frontier and its unique ancestors, summed over
# depths), model calls, and a memory-bound time proxy. Feeds every claim.

# %% tags=["parameters"]
scale = ""      # empty: params.yaml as composed; or smoke, cpu, gpu to compose afresh
overrides = {}  # this paper's params by dotted key, e.g. {"problems": 50}
out_dir = ""    # set by the pipeline; empty: interactive run, outputs under build/lab/p24

# %%
from shared import notebook

run = notebook.start("24", scale=scale, overrides=overrides, out_dir=out_dir)
p = run.params

# %%
import torch

from paper24 import search
from shared import reasoning

torch.set_num_threads(p.num_threads)
folder = run.artifact("reasoning")
policy = reasoning.load_policy(folder, p.policy, device=run.device)
verifiers = {"prm": lambda: reasoning.load_prm(folder, device=run.device), "oracle": reasoning.OracleVerifier,
             "noisy_oracle": lambda: search.NoisyOracle(p.verifier_noise, seed=run.seed)}
verifier = verifiers[p.verifier]()
problems = reasoning.load_task(folder).generate(p.problems, p.difficulty, seed=p.problem_seed)
print(f"policy {policy.name}: {policy.params:,} non-embedding parameters; {len(problems)} problems of {p.difficulty} steps")

# %%
summary, per_depth, seconds = search.compare(
    policy, verifier, problems, p.widths, p.lambda_s, concurrency=p.concurrency, progress=run.progress,
    temperature=p.temperature, softmax_temperature=p.softmax_temperature, lambda_c=p.lambda_c,
    extra_steps=p.extra_steps, seed=run.seed)
run.save_table(summary, "methods")
run.save_table(per_depth, "kv_per_depth")
summary.round(3)

# %%
metrics = {f"w{r.width}_{r.method}_{k}": round(float(getattr(r, k)), 4)
           for r in summary.itertuples() for k in ("accuracy", "kv_tokens", "model_calls", "tokens", "time_proxy_mb", "kept_share")}
metrics |= search.claim_metrics(summary, p.claim_width)
metrics["claim_width"] = p.claim_width

# %% [markdown]
# The accuracy claims' second regime: the same problems searched by a weaker policy (config `weak`),
# where the methods need not all solve everything (with the large policy they all score 1.00 at cpu).

# %%
if p.weak is None:
    weak_metrics = search.weak_metrics(None, None)
else:
    weak_policy = reasoning.load_policy(folder, p.weak.policy, device=run.device)
    weak_summary, _, weak_seconds = search.compare(
        weak_policy, verifier, problems, p.weak.widths, p.lambda_s, concurrency=p.concurrency, progress=run.progress,
        temperature=p.temperature, softmax_temperature=p.softmax_temperature, lambda_c=p.lambda_c,
        extra_steps=p.extra_steps, seed=run.seed)
    run.save_table(weak_summary.assign(policy=weak_policy.name), "methods_weak_policy")
    weak_metrics = search.weak_metrics(weak_summary, p.weak.claim_width)
    seconds |= {f"weak_{k}": v for k, v in weak_seconds.items()}
    print(f"weak policy {weak_policy.name}:\n{weak_summary.round(3).to_string()}")
metrics |= weak_metrics
run.log_metrics(metrics)
run.log_timings({f"search_seconds_{k}": round(v, 3) for k, v in seconds.items()})
{k: v for k, v in metrics.items() if not k.startswith("w")}
