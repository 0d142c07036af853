"""Run one algorithm of paper 47 under torchrun, across GPUs or nodes (the same worker as the notebooks).

    torchrun --nproc-per-node 4 papers/47-co2/launch.py --algo co2 --ratio 3          # one node, 4 GPUs (or CPU ranks)
    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 \\
        papers/47-co2/launch.py --algo co2 --ratio 0                                # two nodes, the real network

Parameters come from params.yaml (``p47``, composed by ``python -m pipelines.params scale=...``);
``--ratio 0`` leaves the link unshaped (real nodes: the network is the link). Rank 0 prints a JSON
line with the run's final loss, wall-clock and exposed communication.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def main(argv=None) -> None:
    from shared import distributed
    from shared.corpus import load_tokens
    from shared.paper import import_paper

    import_paper("47")
    from paper47 import co2

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--algo", choices=co2.KINDS, default="co2")
    ap.add_argument("--ratio", type=float, default=3.0, help="T_allreduce / T_compute of the emulated link; 0: unshaped")
    args, p, seed, device = distributed.torchrun_args("47", ap, argv)
    spec = co2.spec_from_params(p, seed)
    algo = {a.kind: a for a in co2.algos_from_params(p)}[args.algo]
    ratio = args.ratio if args.ratio > 0 else math.inf
    train, val = load_tokens(args.corpus, "train"), load_tokens(args.corpus, "val")
    out = distributed.run_under_torchrun(co2.sweep_worker, ([algo], [ratio], spec, train, val, p.latency_s,
                                                            p.calibration_steps, device), device=device)
    if int(os.environ["RANK"]) == 0:
        r = out["runs"][0]
        print(json.dumps({"algo": r["algo"], "ratio": r["ratio"], "world_size": out["world_size"],
                          "final_val_loss": r["curve"][-1]["val_loss"], "wall_s": r["wall_s"],
                          "exposed_s": r["exposed_s"], "step_s": out["step_s"]}))


if __name__ == "__main__":
    main()
