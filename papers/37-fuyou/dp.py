"""Data parallelism around Fuyou's out-of-core AdamW: each rank trains its shard of every batch
with its own SSD tier (:class:`paper37.offload.OffloadedAdamW`, either schedule); a chunk's
gradients are all-reduced (mean over ranks) right before the chunk's host AdamW update, so the
overlapped schedule still updates each chunk while backward works on the layers below. With
equal shards the ranks apply the update of one run on the whole batch (to float rounding).

    results = distributed.spawn(dp.worker, 2, args=(spec, seed, cfg, batches, folder))   # one machine
    torchrun --nproc-per-node 2 papers/37-fuyou/dp.py --steps 4                          # GPUs / nodes
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

if __name__ == "__main__":  # a script under torchrun: the repository root on the path, paper37 registered
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from shared.paper import import_paper

    import_paper("37")


def mean_over_ranks(tensors) -> None:
    """Each of a chunk's gradients all-reduced in place to its mean over the ranks."""
    from shared import distributed

    for t in tensors:
        distributed.all_reduce(t, op="mean")




def worker(spec, seed: int, cfg, batches, folder, *, schedule: str = "overlapped", prefetch: int = 2,
           device: str = "cpu", record_grads: bool = False) -> dict:
    """Runs in every rank: ``len(batches)`` out-of-core steps on this rank's rows of each batch,
    the SSD tier in a temporary folder of its own under ``folder``, from the zoo model ``spec`` at
    ``seed``. Returns the whole batch's losses (mean over ranks), the final parameters (flat) and,
    with ``record_grads``, step 1's gradients as the host AdamW gets them (after the all-reduce),
    chunk by chunk. One rank is the single-process reference (no all-reduce)."""
    import torch.distributed as dist

    from paper37 import offload, ssd
    from shared import zoo

    rank, world = dist.get_rank(), dist.get_world_size()
    if str(device).startswith("cuda"):
        device = f"cuda:{torch.cuda.current_device()}"
    model = zoo.build(spec, seed=seed).to(device)
    if batches[0][0].shape[0] % world:
        raise ValueError(f"train.batch_size: {batches[0][0].shape[0]} rows do not split into {world} equal shards")
    mine = [(x.chunk(world)[rank], y.chunk(world)[rank]) for x, y in batches]  # this rank's contiguous rows
    n_chunks, step_one = len(offload.chunks(model)), []

    def reduce(tensors):  # on the Adam thread, one chunk at a time, every chunk once a step
        if world > 1:
            mean_over_ranks(tensors)
        if len(step_one) < n_chunks:
            step_one.append([t.detach().cpu().clone() for t in tensors])

    with ssd.Disk.temporary(folder) as disk:
        rows, _ = offload.train(model, mine, cfg, disk, schedule=schedule, prefetch=prefetch, steps=len(batches),
                                grad_reduce=reduce if world > 1 or record_grads else None)  # fmt: skip
    losses = torch.tensor(rows["loss"].to_numpy(), dtype=torch.float64)
    dist.all_reduce(losses)
    params = torch.cat([q.detach().cpu().reshape(-1) for q in model.parameters()])
    return {"rank": rank, "world": world, "losses": (losses / world).tolist(), "params": params,
            "step_s": rows["step_s"].tolist(), "grads": step_one if record_grads else []}  # fmt: skip


def main(argv=None) -> None:
    """torchrun entry point: paper 37's model and batches from params.yaml (p37) and the corpus
    artifact; rank 0 prints one JSON line (world size, losses, step seconds)."""
    from paper37 import experiment
    from shared import distributed

    ap = argparse.ArgumentParser(description="Fuyou out-of-core AdamW, data-parallel under torchrun")
    ap.add_argument("--steps", type=int, default=4, help="optimizer steps")
    ap.add_argument("--schedule", choices=("sequential", "overlapped"), default="overlapped")
    ap.add_argument("--ssd-dir", default="", help="folder of the SSD tier (each rank a temporary folder in it); default: /tmp")
    args, p, seed, device = distributed.torchrun_args("37", ap, argv)
    spec, _, data = experiment.model_and_batches(p, args.corpus, seed, "cpu")
    batches = [data[i] for i in range(args.steps)]
    folder = args.ssd_dir or p.ssd_dir or "/tmp"
    out = distributed.run_under_torchrun(worker, (spec, seed, p.train, batches, folder),
                                         {"schedule": args.schedule, "prefetch": p.prefetch, "device": device},
                                         device=device)  # fmt: skip
    if int(os.environ["RANK"]) == 0:
        print(json.dumps({"world_size": out["world"], "schedule": args.schedule, "losses": out["losses"],
                          "step_s": out["step_s"]}))


if __name__ == "__main__":
    main()
