# %% [markdown]
# # 40 · ExpertWeave — ESFT adapters served through one weaved MoE model
# The base is the tinylm artifact's MoE model (Qwen2-MoE: routed top-k experts + a shared
# expert). For each stdlib package (a sub-corpus of the corpus artifact) we score the routed
# experts by ESFT's token selection ratio, keep per layer those whose cumulative ratio reaches p,
# and fine-tune only them (router, shared expert, attention, embeddings frozen); the in-domain
# loss before/after is measured on files of the package held out of scoring and tuning. Then one
# weaved model holds every adapter's experts in [M + N E_max] tensors (Linux demand-paged, paper40.vmem)
# and serves a mixed batch (rows of every adapter and of the base model) with batched rerouting;
# each adapter's rows are compared with its merged model (base with its experts swapped in).
# Feeds the claims weave-equals-merged*, esft-*, and the model-level latency timings.

# %% tags=["parameters"]
scale = ""      # empty: params.yaml as composed; or smoke, cpu, gpu to compose afresh
overrides = {}  # this paper's params by dotted key, e.g. {"relevance_p": 0.3}
out_dir = ""    # set by the pipeline; empty: interactive run, outputs under build/lab/p40

# %%
from shared import notebook

run = notebook.start("40", scale=scale, overrides=overrides, out_dir=out_dir)
p = run.params

# %%
import numpy as np
import pandas as pd
import torch

from paper40 import esft, weave, vmem
from shared import corpus, timing, trainer, zoo

torch.set_num_threads(p.num_threads)
corpus_dir, tinylm_dir = run.artifact("corpus"), run.artifact("tinylm")
base, spec = zoo.load(tinylm_dir / p.base_model, device=run.device)
if spec.ffn != "moe" or spec.attention == "mla":
    raise ValueError(f"base_model: {p.base_model} is {spec.attention}/{spec.ffn}; ExpertWeave needs the Qwen2-MoE model")
ft = p.finetune
blocks = esft.moe_blocks(base)
n_base = spec.n_experts
print(f"base {p.base_model}: {len(blocks)} MoE layers x {n_base} experts (top-{spec.n_experts_per_token})")

# %% [markdown]
# ## Expert relevance, selection and ESFT fine-tuning per sub-corpus

# %%
adapters, rows, usage = [], [], []
for name in run.progress(p.adapters, desc="adapters"):
    tokens, held_tokens = esft.package_split(corpus_dir, [name], p.eval_held_every)  # held-out files: never tuned on
    score = corpus.eval_batches(tokens, ft.batch_size, ft.seq_len, p.score_batches, device=run.device)
    ratio = esft.token_selection_ratio(esft.routing_counts(base, score))
    selection = esft.select_experts(ratio, p.relevance_p)
    held = corpus.eval_batches(held_tokens, ft.batch_size, ft.seq_len, p.eval_batches, device=run.device)
    loss_before = trainer.evaluate(base, held, run.device)
    batches = corpus.TokenBatches(tokens, ft.batch_size, ft.seq_len, seed=run.seed, device=run.device)
    adapter, result, tuned = esft.finetune(base, selection, batches, ft, name=name, device=run.device, seed=run.seed,
                                           progress=run.progress)
    rows.append({
        "adapter": name, "task_tokens": int(len(tokens)), "held_tokens": int(len(held_tokens)),
        "experts_per_layer": " ".join(map(str, adapter.counts)),
        "tuned_experts": sum(adapter.counts), "tuned_share": sum(adapter.counts) / (len(blocks) * n_base),
        "max_experts": max(adapter.counts), "avg_experts": float(np.mean(adapter.counts)),
        "sparsity": vmem.sparsity_of(adapter.counts),
        "frozen_unchanged": esft.frozen_unchanged(base, tuned, selection),
        "loss_before": loss_before, "loss_after": trainer.evaluate(tuned, held, run.device),
    })
    for layer, r in enumerate(ratio):
        for j, value in enumerate(r):
            usage.append({"adapter": name, "layer": layer, "expert": j, "ratio": float(value),
                          "selected": j in selection[layer]})
    adapters.append(adapter)
    del tuned
table = pd.DataFrame(rows)
run.save_table(table, "adapters")
run.save_table(pd.DataFrame(usage), "expert_usage")
table

# %% [markdown]
# ## One weaved model, one mixed batch, every adapter against its merged model

# %%
weaved = weave.WeavedModel(base, adapters, storage="virtual" if run.device == "cpu" else "dense")
val = corpus.load_tokens(corpus_dir, "val")
n_rows = p.mixed_rows_per_adapter * (len(adapters) + 1)
ids = corpus.eval_batches(val, n_rows, p.mixed_seq_len, 1, device=run.device)[0][0]
aid = torch.arange(-1, len(adapters)).repeat_interleave(p.mixed_rows_per_adapter).to(run.device)
aid = aid[torch.randperm(n_rows, generator=torch.Generator().manual_seed(run.seed))]  # interleaved rows
references = [esft.merged(base, a) for a in adapters] + [base]
same_batch = weave.max_logit_diff(weaved, references, ids, aid)
own_rows = weave.max_logit_diff(weaved, references, ids, aid, own_rows=True)
with torch.no_grad():
    mixed = weaved.logits(ids, aid)
    base_logits = base(input_ids=ids).logits
    agree = float(np.mean([
        (mixed[aid == i].argmax(-1) == references[i](input_ids=ids).logits[aid == i].argmax(-1))
        .float().mean().item() for i in range(-1, len(adapters))]))
    effect = [float((mixed[aid == i] - base_logits[aid == i]).abs().max()) for i in range(len(adapters))]
    noise = float((base(input_ids=ids[aid == -1]).logits - base_logits[aid == -1]).abs().max())
check = pd.DataFrame({"rows_of": p.adapters + ["base"], "max_diff_same_batch": same_batch,
                      "max_diff_own_rows": own_rows, "max_diff_vs_base": effect + [0.0]})
run.save_table(check, "weave_vs_merged")
mem = weaved.memory()
run.log_metrics({
    "n_adapters": len(adapters),
    "e_max_ours": weaved.e_max,
    "max_logit_diff_vs_merged": max(same_batch),
    "max_logit_diff_vs_merged_own_rows": max(own_rows),
    "batch_noise_floor_base": noise,
    "argmax_agreement_vs_merged": round(agree, 6),
    "min_adapter_effect": round(min(effect), 6),
    "frozen_experts_unchanged": int(table["frozen_unchanged"].all()),  # 1: yes
    "esft_tuned_share_mean": round(float(table["tuned_share"].mean()), 4),
    "esft_loss_gain_min": round(float((table["loss_before"] - table["loss_after"]).min()), 4),
    "esft_loss_improved_share": float((table["loss_after"] < table["loss_before"]).mean()),
    "ours_sparsity_mean": round(float(table["sparsity"].mean()), 4),
    "ours_f_mem": round(vmem.f_mem(n_base, weaved.e_max, table["avg_experts"].tolist()), 4),
    "weave_reserved_bytes": mem["reserved_bytes"],
    "weave_used_bytes": mem["used_bytes"],
})
check

# %% [markdown]
# ## Latency: the weaved model on the mixed batch vs the base model on the same batch

# %%
with torch.no_grad():
    timed = timing.benchmark({
        "base": lambda: base(input_ids=ids),
        "weaved_base_rows": lambda: weaved.logits(ids, torch.full_like(aid, -1)),
        "weaved_mixed": lambda: weaved.logits(ids, aid),
    }, repeats=p.latency_repeats, warmup=p.latency_warmup, num_threads=p.num_threads, device=run.device)
t = {k: v.median_s for k, v in timed.items()}
run.log_timings({
    "model_base_s": t["base"], "model_weaved_mixed_s": t["weaved_mixed"],
    "model_latency_increase": t["weaved_mixed"] / t["base"] - 1,
    "model_latency_increase_base_rows": t["weaved_base_rows"] / t["base"] - 1,
})
t

# %%
import matplotlib.pyplot as plt
import seaborn as sns

use = pd.DataFrame(usage)
fig, axes = plt.subplots(1, len(blocks), figsize=(3.2 * len(blocks) + 1, 0.45 * len(adapters) + 1.8), squeeze=False)
for layer, ax in enumerate(axes[0]):
    grid = use[use["layer"] == layer].pivot(index="adapter", columns="expert", values="ratio").loc[p.adapters]
    chosen = use[use["layer"] == layer].pivot(index="adapter", columns="expert", values="selected").loc[p.adapters]
    sns.heatmap(grid, ax=ax, cmap="viridis", vmin=0, cbar=layer == len(blocks) - 1,
                annot=chosen.replace({True: "x", False: ""}).values, fmt="", annot_kws={"color": "white"})
    ax.set(title=f"MoE layer {layer}", xlabel="expert", ylabel="adapter" if layer == 0 else "")
fig.suptitle(f"token selection ratio per expert (x: tuned by ESFT, p = {p.relevance_p}); "
             f"sparsity S_i mean {table['sparsity'].mean():.2f}")
fig.tight_layout()
run.save_figure(fig, "fig1_expert_usage")
