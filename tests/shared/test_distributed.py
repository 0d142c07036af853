"""shared.distributed: real gloo process groups, rank-ordered results, failures that name the rank,
and the emulated link's timing contract (never faster than the α-β model; overlap hides it)."""

import math
import time

import pytest
import torch
import torch.distributed as dist

from shared import distributed
from shared.distributed import Link


def _sum_of_ranks(scale):
    t = torch.tensor([float(dist.get_rank() + 1)])
    distributed.all_reduce(t)
    m = torch.tensor([float(dist.get_rank())])
    distributed.all_reduce(m, op="mean")
    return dist.get_rank(), t.item() * scale, m.item()


def _returns_a_tensor():
    return torch.full((3,), float(dist.get_rank()))


def _fails_on_rank_one():
    if dist.get_rank() == 1:
        raise ValueError("boom on purpose")
    return "fine"


def _shaped_timing(bandwidth, nbytes, compute_s):
    link = Link(bandwidth=bandwidth)
    t = torch.zeros(nbytes // 4)
    start = time.perf_counter()
    distributed.all_reduce(t, link=link)
    blocking = time.perf_counter() - start
    pending = distributed.all_reduce(t, link=link, async_op=True)
    time.sleep(compute_s)  # "compute" while the link works
    pending.wait()
    return blocking, pending.exposed_s, link.all_reduce_seconds(nbytes, dist.get_world_size())


def test_spawn_all_reduce_in_rank_order():
    out = distributed.spawn(_sum_of_ranks, world_size=3, args=(10.0,))
    assert [r[0] for r in out] == [0, 1, 2]
    assert all(r[1] == 60.0 for r in out)  # (1 + 2 + 3) * 10
    assert all(r[2] == pytest.approx(1.0) for r in out)  # mean of 0, 1, 2


def test_spawn_returns_tensors():
    out = distributed.spawn(_returns_a_tensor, world_size=2, timeout_s=30)
    assert [t.tolist() for t in out] == [[0.0] * 3, [1.0] * 3]


def test_spawn_failure_names_the_rank_and_the_error():
    with pytest.raises(RuntimeError, match=r"rank 1 failed: ValueError: boom on purpose"):
        distributed.spawn(_fails_on_rank_one, world_size=2)


def test_shaped_all_reduce_obeys_the_link_model_and_overlap_hides_it():
    # 2 ranks, 400 kB at 4 MB/s: ring model = 2*1/2 * 4e5 / 4e6 = 0.1 s
    (blocking, exposed, modelled), _ = distributed.spawn(_shaped_timing, world_size=2, args=(4e6, 400_000, 0.3))
    assert modelled == pytest.approx(0.1)
    assert blocking >= modelled  # never faster than the emulated link
    assert exposed < modelled  # 0.3 s of compute covered the 0.1 s transfer


def test_link_formulas_and_errors():
    link = Link(bandwidth=1e9, latency_s=1e-5)
    assert link.all_reduce_seconds(8e6, 4) == pytest.approx(6 * 1e-5 + 1.5 * 8e6 / 1e9)
    assert link.all_gather_seconds(1e6, 4) == pytest.approx(3 * (1e-5 + 1e-3))
    assert link.all_reduce_seconds(8e6, 1) == 0.0
    assert not Link().shaped and Link().all_reduce_seconds(1e9, 8) == 0.0 and math.isinf(Link().bandwidth)
    with pytest.raises(ValueError, match="Link.bandwidth"):
        Link(bandwidth=0)
    with pytest.raises(ValueError, match="world_size"):
        distributed.spawn(_fails_on_rank_one, world_size=0)
    with pytest.raises(ValueError, match="needs one GPU per rank: world_size=64"):
        distributed.spawn(_fails_on_rank_one, world_size=64, backend="nccl")
    with pytest.raises(ValueError, match="op='avg'"):
        distributed.all_reduce(torch.zeros(1), op="avg")


def test_run_under_torchrun_needs_its_environment(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(RuntimeError, match="RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT not set"):
        distributed.run_under_torchrun(_sum_of_ranks, (1.0,))


def test_torchrun_args_parses_the_shared_arguments_and_loads_the_papers_params(tmp_path):
    import argparse

    import yaml

    from shared import config

    tree = config.compose(["scale=smoke", "seed=7", "p18.num_threads=2"])
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tree))
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=5)
    threads = torch.get_num_threads()
    try:
        args, p, seed, device = distributed.torchrun_args(
            "18", parser, ["--steps", "3", "--params", str(tmp_path / "params.yaml"), "--corpus", "/c"])
        assert torch.get_num_threads() == 2  # the paper's num_threads applied
    finally:
        torch.set_num_threads(threads)
    assert (args.steps, args.corpus, seed, p.num_threads) == (3, "/c", 7, 2)
    assert device == ("cuda" if torch.cuda.is_available() else "cpu")
    tree["p18"]["num_threads"] = 0  # an invalid value: the error names the key
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(tree))
    with pytest.raises(config.ParamError, match="num_threads"):
        distributed.torchrun_args("18", argparse.ArgumentParser(), ["--params", str(tmp_path / "bad.yaml")])
    with pytest.raises(config.ParamError, match="missing"):
        distributed.torchrun_args("18", argparse.ArgumentParser(), ["--params", str(tmp_path / "none.yaml")])


def test_dp_agreement_measures_the_ranks_against_the_single_run():
    single = {"params": torch.tensor([1.0, 2.0, 3.0, 4.0]), "losses": [2.0, 1.5], "grads": [[torch.tensor([1.0, -2.0])]]}
    same = {"params": single["params"].clone(), "losses": [2.0, 1.5], "grads": [[torch.tensor([1.0, -2.0])]]}
    drift = {"params": torch.tensor([1.0, 2.0, 3.0 + 2e-5, 4.0 - 1e-3]), "losses": [2.0, 1.6],
             "grads": [[torch.tensor([1.0, -2.1])]]}
    exact = distributed.dp_agreement([same, same], single)
    assert exact["max_abs_diff_vs_single"] == 0 and exact["ranks_agree"] and exact["grad_max_rel_err"] == 0
    assert exact["ranks"] == 2 and exact["n_params"] == 4 and exact["elements_over_1e-5"] == 0
    stable = torch.tensor([True, True, True, False])  # the last element is in AdamW's eps regime
    got = distributed.dp_agreement([same, drift], single, stable)  # rank 1 drifts: the max over ranks
    assert got["max_abs_diff_vs_single"] == pytest.approx(1e-3, rel=1e-3)
    assert got["max_abs_diff_outside_eps"] == pytest.approx(2e-5, rel=1e-2) and got["eps_regime_elements"] == 1
    assert got["elements_over_1e-5"] == 2 and not got["ranks_agree"]
    assert got["grad_max_rel_err"] == 0  # step 1's gradients are compared on rank 0 (all-reduced: all equal)
    assert distributed.dp_agreement([drift], single)["grad_max_rel_err"] == pytest.approx(0.05)
    assert distributed.dp_agreement([drift], single)["loss_max_abs_diff"] == pytest.approx(0.1)
    assert distributed.dp_agreement([same], {**single, "grads": []})["grad_max_rel_err"] is None
