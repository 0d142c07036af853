# %% [markdown]
# # 32 · Fast and Accurate Model Scaling — accuracy of the scaling strategies
# Trains the base network and each strategy's network at the same flops multiple s on
# scikit-learn's 8x8 digits (bilinearly upsampled to each network's input resolution, with
# Gaussian pixel noise on train and test images so accuracy does not saturate), over several
# seeds, and reports the spread of test accuracy across strategies. Feeds the claim
# similar-accuracy-across-strategies. Real training; digits stand in for ImageNet, which is
# out of reach offline.

# %% tags=["parameters"]
scale = ""      # empty: params.yaml as composed; or smoke, cpu, gpu to compose afresh
overrides = {}  # this paper's params by dotted key, e.g. {"acc_epochs": 6}
out_dir = ""    # set by the pipeline; empty: interactive run, outputs under build/lab/p32

# %%
from shared import notebook

run = notebook.start("32", scale=scale, overrides=overrides, out_dir=out_dir)
p = run.params

# %%
from paper32 import scaling
from shared import data

base = scaling.NetConfig(p.stem_width, tuple(p.widths), tuple(p.depths), p.resolution)
split = data.digits(test_fraction=p.acc_test_fraction, seed=run.seed)
settings = scaling.TrainSettings(
    epochs=p.acc_epochs,
    batch_size=p.acc_batch_size,
    lr=p.acc_lr,
    warmup_epochs=p.acc_warmup_epochs,
    weight_decay=p.acc_weight_decay,
    noise_std=p.acc_noise_std,
    test_noise_draws=p.acc_test_noise_draws,
)
table = scaling.accuracy_table(
    base,
    p.acc_strategies,
    p.acc_scale_factor,
    p.alpha,
    split,
    settings,
    seeds=[run.seed + i for i in range(p.acc_seeds)],
    device=run.device,
    width_multiple=p.width_multiple,
    progress=run.progress,
)
run.save_table(table, "accuracy")

# %%
summary = table.groupby("strategy", sort=False).agg(
    accuracy=("accuracy", "mean"), seed_std=("accuracy", "std"), flops=("flops", "first"), activations=("activations", "first")
)
scaled = summary.drop(index="base")
metrics = {f"acc_{strategy}": round(float(acc), 3) for strategy, acc in summary["accuracy"].items()}
metrics["acc_spread_points"] = round(float(scaled["accuracy"].max() - scaled["accuracy"].min()), 3)
metrics["acc_mean_gain_over_base"] = round(float(scaled["accuracy"].mean() - summary.loc["base", "accuracy"]), 3)
run.log_metrics(metrics)
summary
