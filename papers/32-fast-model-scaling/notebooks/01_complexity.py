# %% [markdown]
# # 32 · Fast and Accurate Model Scaling — complexity of the scaled networks
# Scales a small AnyNet (stem + stages of residual blocks) by depth, width, resolution and
# their compounds, including the paper's fast scaling dWr, to s times its flops for every s,
# and counts flops (multiply-adds), parameters and activations exactly from the real torch
# models (`shared.complexity`). Fits the exponent of s of each measure by log-log least
# squares. Feeds the claims fast-scaling-activations-sqrt-s, width-scaling-activations,
# uniform-compound-activations, depth-/resolution-scaling-activations, flops-scale-by-s and
# params-exponents. Nothing here is simulated or timed: the counts are exact.

# %% tags=["parameters"]
scale = ""      # empty: params.yaml as composed; or smoke, cpu, gpu to compose afresh
overrides = {}  # this paper's params by dotted key, e.g. {"alpha": 0.7}
out_dir = ""    # set by the pipeline; empty: interactive run, outputs under build/lab/p32

# %%
from shared import notebook

run = notebook.start("32", scale=scale, overrides=overrides, out_dir=out_dir)
p = run.params

# %%
from paper32 import scaling

base = scaling.NetConfig(p.stem_width, tuple(p.widths), tuple(p.depths), p.resolution)
table = scaling.complexity_table(base, p.strategies, p.scale_factors, p.alpha, p.width_multiple, progress=run.progress)
run.save_table(table, "complexity")
table

# %% [markdown]
# Exponent of s for each measure (fitted) next to the complexity model's ideal value
# (flops ~ s, params ~ s^(e_d+e_w), activations ~ s^(e_d+e_w/2+e_r)). `exponent_vs_flops`
# fits against the networks' measured flops instead of the nominal s.

# %%
exponents = scaling.fit_exponents(table, p.alpha)
run.save_table(exponents, "exponents")
exponents.pivot(index="strategy", columns="measure", values=["exponent", "ideal"]).round(3)

# %%
short_name = {"activations": "acts", "flops": "flops", "params": "params"}
metrics = {f"{short_name[r.measure]}_exponent_{r.strategy}": round(r.exponent, 4) + 0.0 for r in exponents.itertuples()}
metrics |= {
    f"{short_name[r.measure]}_exponent_vs_flops_{r.strategy}": round(r.exponent_vs_flops, 4) + 0.0
    for r in exponents.itertuples()
    if r.measure != "flops"
}
deviation = (exponents["exponent"] - exponents["ideal"]).abs()
for measure in ("flops", "params", "activations"):
    metrics[f"{short_name[measure]}_exponent_max_abs_dev"] = round(float(deviation[exponents["measure"] == measure].max()), 4)
run.log_metrics(metrics)
metrics
