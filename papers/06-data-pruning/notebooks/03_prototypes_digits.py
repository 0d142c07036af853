# %% [markdown]
# # 06 · Beyond neural scaling laws — the self-supervised prototype metric on digits
# **Real training** on scikit-learn's 8x8 digits (1,347 training images): embed without
# labels (PCA, unit-normalised), k-means, and call the distance to the nearest centroid
# an example's difficulty — the paper's prototype metric with PCA standing in for SwAV.
# Keep the hardest or easiest fraction, or a random one, or prune by two supervised
# metrics; train multinomial logistic regression on what is kept; test on held-out images.
#
# **Expected direction, stated before running (from the theory):** 1,347 images is a
# small data set, and at f = 0.1 (about 135 images, ~13 per class) it is data-scarce, where
# the theory says keep the *easy* examples — so prototype-easy >= random >= prototype-hard
# there. The metric is also imperfect (hard = far from every prototype includes outliers
# and ambiguous digits), which by notebook 02 also hurts keep-hard at small f. At mild
# pruning (f = 0.6-0.8) the prototype metric should be about as good as the supervised
# ones, and dropping 20% should cost (almost) nothing.
# Feeds claims digits-prototype-keep-easy-when-scarce, digits-prototype-keep-hard-loses-when-scarce,
# digits-prototype-comparable-to-supervised, digits-mild-pruning-lossless.

# %% tags=["parameters"]
scale = ""      # empty: params.yaml as composed; or smoke, cpu, gpu to compose afresh
overrides = {}  # this paper's params by dotted key, e.g. {"n_dim": 200}
out_dir = ""    # set by the pipeline; empty: interactive run, outputs under build/lab/p06

# %%
from shared import notebook

run = notebook.start("06", scale=scale, overrides=overrides, out_dir=out_dir)
p = run.params  # validated Params from config.py

# %%
import time

import numpy as np

from paper06 import prototypes
from shared import data

seeds = [run.seed + i for i in range(p.digits_n_seeds)]
started = time.perf_counter()
curves = prototypes.pruning_curves(
    lambda seed: data.digits(p.digits_test_fraction, seed),
    p.digits_keep_fractions,
    seeds,
    embedding_dim=p.digits_embedding_dim,
    n_clusters=p.digits_clusters,
    logreg_c=p.digits_logreg_c,
    progress=run.progress,
)
digits_s = time.perf_counter() - started
mean = prototypes.mean_curves(curves)
run.save_table(curves, "digits_runs")
run.save_table(mean, "digits_curves")
mean.pivot_table(index="keep_fraction", columns="arm", values="accuracy").round(4)

# %% [markdown]
# ## A small initial data set
# In the theory the regime is set by the *initial* data size, not by the kept size: the
# full digits set pruned to 10% is still "abundant" data, pruned. So also start from a
# small initial set (a random `digits_small_train_fraction` of the training images),
# compute the metrics on it alone and prune it. Predicted before running: keep-easy >= random.

# %%
started = time.perf_counter()
small = prototypes.pruning_curves(
    lambda seed: data.digits(p.digits_test_fraction, seed),
    [p.digits_small_keep_fraction, 1.0],
    seeds,
    embedding_dim=p.digits_embedding_dim,
    n_clusters=p.digits_clusters,
    logreg_c=p.digits_logreg_c,
    arms=[("random", None), ("prototype", "hard"), ("prototype", "easy")],
    train_fraction=p.digits_small_train_fraction,
    progress=run.progress,
)
digits_small_s = time.perf_counter() - started
small_mean = prototypes.mean_curves(small)
run.save_table(small_mean, "digits_small_initial_set")
small_mean.pivot_table(index="keep_fraction", columns="arm", values="accuracy").round(4)

# %%
acc = lambda arm, f: prototypes.arm_accuracy(mean, arm, f)  # noqa: E731
small_acc = lambda arm: prototypes.arm_accuracy(small_mean, arm, p.digits_small_keep_fraction)  # noqa: E731
scarce, mild = p.digits_scarce_keep_fraction, p.digits_mild_keep_fractions
supervised = ("supervised_prototype_hard", "el2n_hard")
metrics = {
    "digits_acc_full": acc("random", 1.0),
    "digits_easy_minus_random_scarce": acc("prototype_easy", scarce) - acc("random", scarce),
    "digits_hard_minus_random_scarce": acc("prototype_hard", scarce) - acc("random", scarce),
    "digits_ssl_minus_best_supervised_mild": float(
        np.mean([acc("prototype_hard", f) - max(acc(arm, f) for arm in supervised) for f in mild])
    ),
    "digits_full_minus_prototype_hard_mild": acc("random", 1.0) - acc("prototype_hard", max(mild)),
    "digits_small_easy_minus_random": small_acc("prototype_easy") - small_acc("random"),
    "digits_small_hard_minus_random": small_acc("prototype_hard") - small_acc("random"),
    "digits_small_acc_initial": prototypes.arm_accuracy(small_mean, "random", 1.0),
    "digits_min_classes_kept_scarce_easy": float(
        curves[(curves["arm"] == "prototype_easy") & np.isclose(curves["keep_fraction"], scarce)]["classes_kept"].min()
    ),
    "digits_min_classes_kept_scarce_hard": float(
        curves[(curves["arm"] == "prototype_hard") & np.isclose(curves["keep_fraction"], scarce)]["classes_kept"].min()
    ),
}
run.log_metrics(metrics)
run.log_timings({"digits_s": digits_s, "digits_small_s": digits_small_s})
{k: round(v, 4) for k, v in metrics.items()}
