"""Paper 37 (Fuyou): the throttled SSD tier, out-of-core AdamW bit-identical to the in-memory
trainer under both schedules, the cost model's schedule replay and plan search, config errors."""

import copy
import re
import time

import numpy as np
import pytest
import torch
import yaml

from paper37 import config, costmodel, offload, ssd
from shared import trainer, zoo
from shared.paths import CONF

pytestmark = pytest.mark.usefixtures("one_thread")

SPEC = zoo.ModelSpec(attention="gqa", vocab_size=256, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=128,
                     max_seq_len=32)


def batches(n: int = 4, b: int = 2, t: int = 16):
    g = torch.Generator().manual_seed(1)
    out = []
    for _ in range(n):
        x = torch.randint(0, SPEC.vocab_size, (b, t + 1), generator=g)
        out.append((x[:, :-1], x[:, 1:]))
    return out


CFG = trainer.TrainConfig(steps=3, batch_size=2, seq_len=16, lr=1e-2, warmup_steps=1, weight_decay=0.1, grad_clip=0.0)


def test_disk_roundtrip_throttle_and_cleanup(tmp_path):
    with ssd.Disk.temporary(tmp_path, bandwidth_mb_s=10.0, latency_ms=5.0) as disk:
        values = np.arange(25_000, dtype=np.float32)  # 100 kB: 5 ms + 10 ms emulated
        disk.create(3, values)
        start = time.perf_counter()
        back = disk.read(3)
        assert time.perf_counter() - start >= 0.015 - 1e-4  # slept to the emulated time
        np.testing.assert_array_equal(back, values)
        disk.write(3, back * 2)
        np.testing.assert_array_equal(np.fromfile(disk.path(3), dtype=np.float32), values * 2)
        assert [t.op for t in disk.trace] == ["read", "write"] and disk.trace[0].nbytes == 100_000
        assert disk.emulated_seconds(100_000) == pytest.approx(0.015)
        root = disk.root
    assert not root.exists()
    assert ssd.Disk(tmp_path / "x").emulated_seconds(10**9) == 0.0  # no throttle
    with pytest.raises(ValueError, match="bandwidth_mb_s: must be > 0"):
        ssd.Disk(tmp_path, bandwidth_mb_s=0)


def test_chunks_follow_backward_order():
    model = zoo.build(SPEC, seed=0)
    names = [c.name for c in offload.chunks(model)]
    assert names == ["head", "layer001", "layer000", "embed"]
    assert sum(c.numel for c in offload.chunks(model)) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("schedule", offload.SCHEDULES)
def test_out_of_core_updates_equal_the_in_memory_trainer_bit_for_bit(tmp_path, schedule):
    model = zoo.build(SPEC, seed=0)
    data = batches()
    reference = copy.deepcopy(model)
    trainer.train(reference, data, CFG, device="cpu", progress=lambda it, **kw: it)
    with ssd.Disk.temporary(tmp_path, bandwidth_mb_s=200.0, latency_ms=0.1) as disk:
        rows, opt = offload.train(model, data, CFG, disk, schedule=schedule, resident=[1], prefetch=1)
        for a, b in zip(model.parameters(), reference.parameters()):
            assert torch.equal(a, b)
        # the master copy on disk (and in memory for the resident chunk) is the model's weights
        for c in opt.chunks:
            master = torch.from_numpy(opt.state(c.index)[: c.numel])
            assert torch.equal(master, torch.cat([p.detach().reshape(-1) for p in c.params]))
        assert {t.op for t in disk.trace} == {"read", "write"} and 1 not in {t.chunk for t in disk.trace}
    assert len(rows) == CFG.steps and rows["loss"].notna().all()


def test_overlapped_step_hands_chunks_to_the_worker_during_backward(tmp_path):
    model = zoo.build(SPEC, seed=0)
    with ssd.Disk.temporary(tmp_path, bandwidth_mb_s=50.0) as disk:
        opt = offload.OffloadedAdamW(model, CFG, disk, prefetch=1)
        x, y = batches(1)[0]
        opt.step(x, y, 1e-3, "overlapped")
        ready = opt.ready_s
        assert ready == sorted(ready)  # gradients complete in chunk order
        reads = [t.chunk for t in disk.trace if t.op == "read"]
        assert reads == [0, 1, 2, 3]  # prefetched in backward order
        opt.close()


def test_errors_name_the_key(tmp_path):
    model = zoo.build(SPEC, seed=0)
    with pytest.raises(ValueError, match="grad_clip: the overlapped update cannot clip"):
        offload.OffloadedAdamW(model, CFG.model_copy(update={"grad_clip": 1.0}), ssd.Disk(tmp_path))
    with pytest.raises(ValueError, match=re.escape("resident: no chunks [9]")):
        offload.OffloadedAdamW(model, CFG, ssd.Disk(tmp_path), resident=[9])
    with pytest.raises(ValueError, match="schedule: 'eager' is not one of"):
        costmodel.predict(PROF, DISK, "eager")


PROF = costmodel.Profile(forward_s=0.05, backward_s=0.1, ready_s=(0.01, 0.04, 0.07, 0.1), adam_s=(0.001,) * 4,
                         state_bytes=(1000, 2_000_000, 2_000_000, 3_000_000), real_bytes_per_s=1e10)
DISK = costmodel.DiskModel(bandwidth_mb_s=100.0, latency_ms=0.0, real_bytes_per_s=1e10)


def test_cost_model_schedules():
    seq = costmodel.predict(PROF, DISK, "sequential")
    io = 2 * sum(PROF.state_bytes) / 100e6
    assert seq == pytest.approx(0.15 + 0.004 + io)
    over = costmodel.predict(PROF, DISK, "overlapped", prefetch=2)
    assert over < seq and over >= max(io, 0.15)  # never beats the disk or the compute
    # everything resident: no I/O, the last Adam after backward ends the step
    assert costmodel.predict(PROF, DISK, "overlapped", resident=range(4)) == pytest.approx(0.151)
    # an infinitely fast disk: overlapped = compute + the last chunk's Adam
    fast = costmodel.DiskModel(None, 0.0, 1e15)
    assert costmodel.predict(PROF, fast, "overlapped") == pytest.approx(0.151, rel=1e-6)


def test_best_plan_respects_the_budget_and_beats_the_heuristics():
    budget = 3_001_000
    plan, t = costmodel.best_plan(PROF, DISK, budget)
    assert sum(PROF.state_bytes[k] for k in plan) <= budget
    for other in costmodel.plans_within(PROF, budget):
        assert t <= costmodel.predict(PROF, DISK, "overlapped", other) * (1 + costmodel.TIE)
    assert costmodel.best_plan(PROF, DISK, 0)[0] == ()
    assert costmodel.fill_in_order(PROF, budget, range(4)) == (0, 1)


def test_config_rejects_clipping_and_base_keys_match():
    base = yaml.safe_load((CONF / "p37" / "base.yaml").read_text())
    assert set(base) == set(config.Params.model_fields)
    config.Params(**base)
    with pytest.raises(ValueError, match="train.grad_clip: must be 0"):
        config.Params(**(base | {"train": base["train"] | {"grad_clip": 1.0}}))
    with pytest.raises(ValueError, match="bandwidth_factors: every factor must be > 0"):
        config.Params(**(base | {"bandwidth_factors": [1.0, 0.0]}))


def test_lockstep_runs_every_setup_on_the_same_batches(tmp_path):
    model = zoo.build(SPEC, seed=0)
    setups = [{"schedule": "sequential", "resident": range(4)}, {"schedule": "overlapped", "bandwidth_mb_s": 500.0}]
    memory, swapped = offload.lockstep(model, batches(), CFG, tmp_path, setups, steps=3)
    assert memory["loss"].tolist() == swapped["loss"].tolist()  # bit-identical updates, step by step
    assert len(memory["ready_s"].iloc[0]) == 4 and len(swapped["adam_s"].iloc[0]) == 4
    assert not list(tmp_path.iterdir())  # every temporary tier deleted
    prof = costmodel.from_rows(memory.iloc[1:], swapped.iloc[1:], PROF.state_bytes, 1e10)
    assert prof.forward_s > 0 and prof.overlap_backward_extra_s >= 0


@pytest.mark.parametrize("schedule", ["overlapped", "sequential"])
def test_data_parallel_on_two_ranks_equals_one_run_on_the_full_batch(tmp_path, monkeypatch, schedule):
    from paper37 import dp
    from shared import distributed

    data = batches(n=3, b=4)  # 4 rows: 2 per rank
    single = zoo.build(SPEC, seed=0)
    with ssd.Disk.temporary(tmp_path) as disk:
        rows, _ = offload.train(single, data, CFG, disk, schedule=schedule)
    args, kwargs = (SPEC, 0, CFG, data, tmp_path), {"schedule": schedule, "record_grads": True}
    # the worker as one rank is the single run, bit for bit (recording step 1's gradients changes nothing)
    one = distributed.spawn(dp.worker, 1, args=args, kwargs=kwargs)[0]
    assert torch.equal(one["params"], torch.cat([q.detach().reshape(-1) for q in single.parameters()]))
    assert one["losses"] == rows["loss"].tolist() and len(one["grads"]) == len(offload.chunks(single))
    results = distributed.spawn(dp.worker, 2, args=args, kwargs=kwargs)
    m = distributed.dp_agreement(results, one, distributed.adamw_stable_mask(SPEC, 0, data[0]))
    assert [r["world"] for r in results] == [2, 2] and m["ranks_agree"]
    assert 0 < m["grad_max_rel_err"] <= 1e-5  # the all-reduced mean of the rows: fp32 summation order only
    assert m["max_abs_diff_outside_eps"] <= m["max_abs_diff_vs_single"] <= 1e-5
    assert m["loss_max_abs_diff"] <= 1e-6
    # the old behaviour (no all-reduce): each rank follows its own rows and the replicas drift apart
    monkeypatch.setattr(dp, "mean_over_ranks", lambda tensors: None)
    alone = distributed.dp_agreement(distributed.spawn(dp.worker, 2, args=args, kwargs=kwargs), one)
    assert not alone["ranks_agree"] and alone["max_abs_diff_vs_single"] > 1e-4 and alone["grad_max_rel_err"] > 1e-2


def test_data_parallel_errors_name_the_key():
    from paper37 import dp

    from shared import distributed

    with pytest.raises(RuntimeError, match="train.batch_size: 3 rows do not split into 2"):
        distributed.spawn(dp.worker, 2, args=(SPEC, 0, CFG, batches(n=1, b=3), "/tmp"))
