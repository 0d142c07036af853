"""Paper 06's max-margin student solver against liblinear.

Both minimise |w|^2/2 + C·sum (1 - y w·x)_+^2 without a bias on the perceptron
teacher-student data (ours: semi-smooth Newton with an exact line search and a penalty
continuation, numpy; peer: scikit-learn's LinearSVC, liblinear's primal trust-region
Newton solver in C, the strongest CPU peer for this objective). One BLAS thread each,
interleaved rounds; the record also reports how far the two solutions are apart.
"""

from __future__ import annotations

import warnings

import numpy as np
from threadpoolctl import threadpool_limits

from shared.paper import import_paper
from shared.timing import benchmark

C = 1e6
CASES = [(100, 8.0), (256, 4.0), (256, 16.0)]  # (N, alpha = P / N)


def run() -> list[dict]:
    import_paper("06")
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.svm import LinearSVC

    from paper06 import pruning

    records = []
    for n_dim, alpha in CASES:
        rng = np.random.default_rng(0)
        x, y = pruning.teacher_student_data(n_dim, pruning.n_examples(alpha, n_dim), rng)
        peer = LinearSVC(C=C, loss="squared_hinge", dual=False, fit_intercept=False, tol=1e-10, max_iter=10_000)

        def ours():
            return pruning.max_margin_numpy(x, y, c=C)[0]

        def liblinear():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                return peer.fit(x, y).coef_.ravel()

        with threadpool_limits(limits=1):
            stats = benchmark({"ours": ours, "liblinear": liblinear}, repeats=5, warmup=1)
            w_ours, w_peer = ours(), liblinear()
        cosine = float(w_ours @ w_peer / (np.linalg.norm(w_ours) * np.linalg.norm(w_peer)))
        # The achieved geometric margin min_mu y w.x / |w|: the larger, the closer to the
        # max-margin solution both solvers are after (liblinear may stop at max_iter).
        margin = {k: float(np.min(y * (x @ w)) / np.linalg.norm(w)) for k, w in (("ours", w_ours), ("peer", w_peer))}
        records.append(
            {
                "name": (
                    f"max-margin student N={n_dim} P={int(alpha * n_dim)} "
                    f"(cosine {cosine:.6f}; margin ours {margin['ours']:.5f}, peer {margin['peer']:.5f})"
                ),
                "ours": stats["ours"].median_s,
                "peer": "sklearn LinearSVC (liblinear, primal Newton)",
                "peer_value": stats["liblinear"].median_s,
                "unit": "s",
                "lower_is_better": True,
            }
        )
    return records
