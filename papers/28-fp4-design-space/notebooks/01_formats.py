# %% [markdown]
# # 28 · FP4 design space — (a) scale formats across tensor magnitudes
# E2M1 elements with one scale per block of 32, the scale in E8M0 (MXFP4), E4M3 with and
# without tensor scaling (TS), or UE5M3 (with and without TS), on a Gaussian, a Student-t(3),
# real MiniLM weights and activations, and real output gradients dY of a trained tiny LM; each
# tensor is multiplied by 10^k, k = -6..6, to probe the range of the scale format
# (`paper28.formats`). Feeds the fmt-* claims.

# %% tags=["parameters"]
scale = ""      # empty: params.yaml as composed; or smoke, cpu, gpu to compose afresh
overrides = {}  # this paper's params by dotted key, e.g. {"n_synthetic": 65536}
out_dir = ""    # set by the pipeline; empty: interactive run, outputs under build/lab/p28

# %%
from shared import notebook

run = notebook.start("28", scale=scale, overrides=overrides, out_dir=out_dir)
p = run.params

# %%
import time

import torch

from paper28 import formats
from shared import corpus, zoo

torch.set_num_threads(p.num_threads)
started = time.perf_counter()
corpus_dir, tinylm_dir = run.artifact("corpus"), run.artifact("tinylm")
tensors = formats.synthetic(p.n_synthetic, p.t_dof, seed=run.seed)
texts = corpus.load_docstrings(corpus_dir)["summary"].head(p.minilm_texts).tolist()
tensors.update(formats.minilm_tensors(texts, p.minilm_layer))
lm, spec = zoo.load(tinylm_dir / p.grad_model)
x, y = corpus.eval_batches(corpus.load_tokens(corpus_dir, "val"), p.grad_batch, min(spec.max_seq_len, 128), 1)[0]
tensors["lm_grad_dy"] = formats.output_gradients(lm, x, y, lm.model.layers[0].mlp.down_proj)
natural_rms = {name: float(t.float().pow(2).mean().sqrt()) for name, t in tensors.items()}  # before unit scaling
run.log_metrics({f"fmt_natural_rms_{name}": float(f"{v:.4g}") for name, v in natural_rms.items()})
{name: (tuple(t.shape), f"rms {natural_rms[name]:.3g}") for name, t in tensors.items()}

# %%
schemes = formats.study_schemes(p.block, p.e8m0_rule)
table = formats.sweep(tensors, schemes, p.exponents)
run.save_table(table, "format_sweep")
summary = formats.summary(table, p.fmt_tolerance)
run.log_metrics({k: round(v, 4) if isinstance(v, float) else v for k, v in summary.items()})
run.log_timings({"formats_seconds": round(time.perf_counter() - started, 2)})
formats.ratios(table).round(3)

# %% [markdown]
# Relative MSE (1 / SNR) against the magnitude 10^k: tensor scaling makes E4M3 scale
# invariant (E4M3+TS and UE5M3+TS coincide: same mantissa, both scales at the top of their range); without it E4M3 underflows or saturates outside its ~2^18 range; UE5M3's wider
# range (assumed definition: bias 15, 2^-17..2^16.8) covers more decades without TS.

# %%
import matplotlib.pyplot as plt
import seaborn as sns

names = list(tensors)
fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.4), sharey=True)
for ax, name in zip(axes, names):
    sns.lineplot(data=table[table["tensor"] == name], x="k", y="rel_mse", hue="scheme", marker="o", ax=ax,
                 legend=name == names[-1])
    ax.set(yscale="log", title=name, xlabel="k (tensor RMS = 10^k)", ylabel="relative MSE")
axes[-1].legend(fontsize=7)
fig.tight_layout()
run.save_figure(fig, "fig1_formats")
