"""Data parallelism around the Horizon engine: each rank streams its shard of the batch through
its own :class:`paper21.horizon.HorizonEngine`; every stage's gradients are all-reduced (mean
over ranks) on the device as they are produced, before the host AdamW steps the stage. With
equal shards the mean of the shards' mean losses is the batch's mean loss, so the ranks apply
the update of one engine on the whole batch (to float rounding).

    results = distributed.spawn(dp.worker, 2, args=(spec, seed, cfg, batches))   # one machine
    torchrun --nproc-per-node 2 papers/21-horizon-lm/dp.py --steps 5              # GPUs / nodes

Backend: gloo on CPU, nccl on CUDA (``shared.distributed``); each rank's engine uses its own
device (``cuda:LOCAL_RANK``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

if __name__ == "__main__":  # a script under torchrun: the repository root on the path, paper21 registered
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from shared.paper import import_paper

    import_paper("21")


def shard(t: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    """Rows ``rank``-th of ``world`` equal contiguous parts of ``t``."""
    if t.shape[0] % world:
        raise ValueError(f"batch_size: {t.shape[0]} rows do not split into {world} equal shards")
    return t.chunk(world)[rank]


def reduce_mean(tensors) -> None:
    """One all-reduce for a stage: its gradients packed into one flat buffer (a DDP-style bucket),
    averaged over the ranks, and copied back in place."""
    from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

    from shared import distributed

    bucket = distributed.all_reduce(_flatten_dense_tensors(tensors), op="mean")
    for t, reduced in zip(tensors, _unflatten_dense_tensors(bucket, tensors)):
        t.copy_(reduced)




def worker(spec, seed: int, cfg, batches, *, device: str = "cpu", checkpoints: str = "host", overlap: bool = True,
           record_grads: bool = False) -> dict:  # fmt: skip
    """Runs in every rank: ``len(batches)`` steps of the engine on this rank's shard of each batch,
    from the zoo model ``spec`` at ``seed`` (the same start on every rank). Returns the losses of
    the whole batch (mean over ranks), the rank's final parameters (one flat fp32 vector) and, with
    ``record_grads``, step 1's gradients as the host optimizer gets them (after the all-reduce),
    stage by stage. One rank is the single-process reference (no all-reduce)."""
    import torch.distributed as dist

    from paper21 import horizon
    from shared import zoo

    rank, world = dist.get_rank(), dist.get_world_size()
    if str(device).startswith("cuda"):
        device = f"cuda:{torch.cuda.current_device()}"
    model = zoo.build(spec, seed=seed)
    losses, step_one = [], []

    def reduce(tensors):
        if world > 1:
            reduce_mean(tensors)
        if not losses:  # still in step 1
            step_one.append([t.detach().cpu().clone() for t in tensors])

    engine = horizon.HorizonEngine(model, cfg, device=device, checkpoints=checkpoints, overlap=overlap,
                                   grad_reduce=reduce if world > 1 or record_grads else None)  # fmt: skip
    try:
        for step, (x, y) in enumerate(batches):
            loss = torch.tensor([engine.step(shard(x, rank, world), shard(y, rank, world), step)], dtype=torch.float64)
            dist.all_reduce(loss)
            losses.append(float(loss) / world)
    finally:
        engine.close()
    params = torch.cat([q.detach().reshape(-1) for q in model.parameters()])
    return {"rank": rank, "world": world, "losses": losses, "params": params, "times": dict(engine.times),
            "grads": step_one if record_grads else []}  # fmt: skip


def main(argv=None) -> None:
    """torchrun entry point: paper 21's model and batches from params.yaml (p21) and the corpus
    artifact; rank 0 prints one JSON line (world size, losses, step seconds per phase)."""
    from paper21 import experiment
    from shared import distributed

    ap = argparse.ArgumentParser(description="Horizon-LM engine, data-parallel under torchrun")
    ap.add_argument("--steps", type=int, default=5, help="optimizer steps")
    args, p, seed, device = distributed.torchrun_args("21", ap, argv)
    data = experiment.corpus_batches(args.corpus, p, seed=seed)
    batches = [data[i] for i in range(args.steps)]
    out = distributed.run_under_torchrun(worker, (p.model, seed, experiment.train_config(p, args.steps), batches),
                                         {"device": device, "checkpoints": p.checkpoints}, device=device)  # fmt: skip
    if int(os.environ["RANK"]) == 0:
        print(json.dumps({"world_size": out["world"], "losses": out["losses"], "seconds": out["times"]}))


if __name__ == "__main__":
    main()
