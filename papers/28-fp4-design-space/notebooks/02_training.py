# %% [markdown]
# # 28 · FP4 design space — (b) training with every GEMM operand in FP4
# Linear regression (diabetes), an MLP on digits and a tiny Llama-style LM on the corpus
# artifact, each trained from scratch in FP32 and with every Linear fake-quantised in the
# forward (X, W) and both backward GEMMs (dY, W, X) (`shared.fakequant.QuantLinear`), over the
# grid {E8M0, E4M3, UE5M3 scales} x {no H, H32} x {no TS, TS} x {RTN, SR on dY}
# (`paper28.techniques`, `paper28.tasks`). Writes the loss of every (task, config, seed).

# %% tags=["parameters"]
scale = ""      # empty: params.yaml as composed; or smoke, cpu, gpu to compose afresh
overrides = {}  # this paper's params by dotted key, e.g. {"seeds": 3}
out_dir = ""    # set by the pipeline; empty: interactive run, outputs under build/lab/p28

# %%
from shared import notebook

run = notebook.start("28", scale=scale, overrides=overrides, out_dir=out_dir)
p = run.params

# %%
import time

import pandas as pd
import torch

from paper28 import tasks

torch.set_num_threads(p.num_threads)
names = p.config_names()
seeds = [run.seed + i for i in range(p.seeds)]
builders = {
    "regression": lambda: tasks.regression(p.reg_steps, p.reg_lr, p.reg_batch, seed=run.seed),
    "mlp": lambda: tasks.mlp(p.mlp_steps, p.mlp_lr, p.mlp_batch, p.mlp_hidden, seed=run.seed),
    "lm": lambda: tasks.lm(run.artifact("corpus"), dict(attention="mha", d_model=p.lm_d_model, n_layers=p.lm_layers,
                                                        n_heads=p.lm_heads, d_ff=p.lm_d_ff),
                           p.lm_steps, p.lm_lr, p.lm_batch, p.lm_seq_len, p.lm_eval_batches, p.lm_quantize_head,
                           device=run.device),
}
tables, shapes, seconds = [], [], {}
for name in p.tasks:
    started = time.perf_counter()
    task = builders[name]()
    shapes.append(tasks.gemm_shapes(task))  # for the overhead count (notebook 03)
    tables.append(tasks.run_grid(task, names, seeds, p.block, run.device, p.e8m0_rule, run.progress))
    seconds[f"train_{name}_seconds"] = round(time.perf_counter() - started, 2)
run.save_table(pd.concat(shapes, ignore_index=True), "gemm_shapes")
table = tasks.loss_gaps(pd.concat(tables, ignore_index=True))
run.save_table(table.drop(columns="train_seconds"), "training_runs")
run.log_timings(seconds)
table.pivot_table(index="config", columns="task", values="loss_gap").round(4)
