"""Paper 27 (S-LoRA): the continuous-batching loop is exact, and the three servers agree."""

import copy
from collections import deque

import pytest
import torch

from paper27 import serving, workload
from shared import multilora, paging, zoo

pytestmark = pytest.mark.usefixtures("one_thread")

SPEC = zoo.ModelSpec(attention="mha", vocab_size=256, d_model=32, n_layers=2, n_heads=2, d_ff=64, max_seq_len=96)
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]


@pytest.fixture(scope="module")
def setup():
    base = zoo.build(SPEC, seed=0).eval()
    store = workload.make_store(base, 6, [16, 8, 4, 2], TARGETS, 8.0, seed=0, init_std=0.5)
    # a burst: requests join a running batch at different steps and leave at different steps
    reqs = workload.trace(6, 14, 300.0, 1.0, 1.0, (3, 12), (1, 9), SPEC.vocab_size, seed=1)
    return base, store, reqs


def _memory(store, pages=4000):
    return paging.UnifiedMemory(paging.PagePool(pages, SPEC.d_model, materialize=False), store, kv_per_token=4)


def _serve_slora(base, store, reqs, max_batch=5, max_wait=0):
    ml = multilora.attach(copy.deepcopy(base), store)
    with torch.inference_mode():
        return serving.serve(serving.SLoRAServer(ml, _memory(store), max_batch, max_wait), reqs)


def test_loop_tokens_equal_single_request_greedy_generate(setup):
    base, store, reqs = setup
    rows = _serve_slora(base, store, reqs)
    assert [r.req.rid for r in rows] == [r.rid for r in reqs]
    copies = serving.MergedServer.build(base, store, store.names)
    with torch.inference_mode():
        for r in rows:
            n = r.req.output_len
            ref = copies[r.req.adapter].generate(torch.tensor([r.req.prompt]), max_new_tokens=n, min_new_tokens=n,
                                                 do_sample=False)  # fmt: skip
            assert r.tokens == ref[0, r.req.prompt_len :].tolist(), r.req
    # the adapters matter: the base model alone generates something else for some request
    with torch.inference_mode():
        plain = [base.generate(torch.tensor([r.req.prompt]), max_new_tokens=r.req.output_len, min_new_tokens=r.req.output_len,
                               do_sample=False)[0, r.req.prompt_len :].tolist() for r in rows]  # fmt: skip
    assert any(p != r.tokens for p, r in zip(plain, rows))


def test_peft_and_merged_servers_generate_the_same_tokens(setup):
    base, store, reqs = setup
    ours = _serve_slora(base, store, reqs)
    assert [r.tokens for r in _serve_slora(base, store, reqs, max_wait=3)] == [r.tokens for r in ours]
    peft_model = serving.PeftServer.build(copy.deepcopy(base), store, TARGETS, 8.0)
    kv = paging.UnifiedMemory(paging.PagePool(4000, SPEC.d_model, materialize=False), adapter_sizes={}, kv_per_token=4)
    with torch.inference_mode():
        peft_rows = serving.serve(serving.PeftServer(peft_model, store, kv, 5), reqs)
        merged = serving.MergedServer(serving.MergedServer.build(base, store, store.names), _memory(store), 5, 2)
        merged_rows = serving.serve(merged, reqs)
    assert [r.tokens for r in peft_rows] == [r.tokens for r in ours] == [r.tokens for r in merged_rows]
    for rows in (ours, peft_rows, merged_rows):
        assert all(r.arrival <= f <= e for r, f, e in ((r.req, r.first_token, r.finish) for r in rows))


def test_kvbatch_join_and_retire_keep_rows_aligned():
    b = serving.KVBatch()
    mk = lambda L, n: serving.Row(workload.Request(L, "lora_0", tuple(range(1, L + 1)), n, 0.0))  # noqa: E731
    model = zoo.build(SPEC, seed=0).eval()
    with torch.inference_mode():
        b.join(serving.KVBatch.prefill(model, [mk(3, 1), mk(7, 3)]))
        assert b.mask.tolist() == [[0, 0, 0, 0, 1, 1, 1], [1] * 7]
        done = b.retire()  # the 1-token request is done after its prefill; padding columns are trimmed
        assert [r.req.rid for r in done] == [3] and b.mask.shape == (1, 7) and b.kv[0][0].shape[2] == 7
        b.join(serving.KVBatch.prefill(model, [mk(2, 2)]))
        assert b.mask.sum(1).tolist() == [7, 2] and b.kv[1][1].shape[:3] == (2, SPEC.n_heads, 7)
        b.decode(model)
        assert b.mask.shape == (2, 8) and [len(r.tokens) for r in b.rows] == [2, 2]


def test_admission_respects_the_pool_and_reports_a_request_that_never_fits(setup):
    base, store, reqs = setup
    ml = multilora.attach(zoo.build(SPEC, seed=0).eval(), store)
    server = serving.SLoRAServer(ml, _memory(store, pages=60), 8)
    with pytest.raises(paging.PoolFull, match=r"serve: request \d+ .* can never fit the memory budget"):
        serving.serve(server, reqs)
    small = serving.SLoRAServer(ml, _memory(store, pages=600), 8)
    waiting = deque(reqs)
    new = small.admit(waiting)
    assert len(new) + len(waiting) == len(reqs) and 0 < len(new) < 8  # the pool, not max_batch, stopped it

    def pages(prefix):  # KV of prompt + output (4 pages a token) + each distinct adapter once
        sizes = {a: paging.adapter_pages(store[a], SPEC.d_model) for a in {r.adapter for r in prefix}}
        return sum(4 * (r.prompt_len + r.output_len) for r in prefix) + sum(sizes.values())

    # FCFS: the admitted requests are the longest prefix of the queue that fits; the next would not
    assert [r.rid for r in new] == [r.rid for r in reqs[: len(new)]]
    assert pages(new) == small.memory.pool.n_used <= 600 < pages(reqs[: len(new) + 1])


def test_merged_copies_are_oom_beyond_capacity(setup):
    base, store, reqs = setup
    one = serving.model_bytes(base)
    assert serving.merged_capacity(5.5 * one, one) == 5
    status, rows, info = serving.run_one("merged", base, SPEC, store, reqs, TARGETS, 8.0, 4, 5.5 * one)
    assert status == "OOM" and rows is None and info["capacity"] == 5  # 6 adapters > 5 copies
    status, rows, _ = serving.run_one("slora", base, SPEC, store, reqs, TARGETS, 8.0, 4, 5.5 * one)
    assert status == "ok" and len(rows) == len(reqs)
    with pytest.raises(ValueError, match="servers: unknown server 'vllm'"):
        serving.run_one("vllm", base, SPEC, store, reqs, TARGETS, 8.0, 4, 5.5 * one)


def test_summary():
    rows = []
    for i, (a, f, e) in enumerate([(0.0, 0.5, 1.0), (1.0, 3.0, 4.0)]):
        r = serving.Row(workload.Request(i, "lora_0", (1,), 1, a), [1], f, e)
        rows.append(r)
    s = serving.summary(rows, slo_s=1.0)
    assert s["throughput"] == 2 / 4.0 and s["avg_latency"] == 2.0 and s["avg_first_token_latency"] == 1.25
    assert s["slo_attainment"] == 0.5


def test_a_running_batch_admits_only_every_max_wait_decode_steps(setup):
    base, store, _ = setup
    ml = multilora.attach(zoo.build(SPEC, seed=0).eval(), store)
    server = serving.SLoRAServer(ml, _memory(store), 8, max_wait=3)
    reqs = [workload.Request(i, f"lora_{i}", (1, 2, 3), 20, 0.0) for i in range(4)]
    waiting, out, admitted = deque(reqs[:1]), [], []
    with torch.inference_mode():
        server.step(server.admit(waiting), out)
        waiting.extend(reqs[1:])
        for _ in range(5):
            new = server.admit(waiting)
            admitted.append(len(new))
            server.step(new, out)
    assert admitted == [0, 0, 0, 3, 0] and server.running() == 4


def test_merged_copies_in_bfloat16_merge_fp32_adapters_and_serve(setup):
    base32, store32, reqs = setup
    base = copy.deepcopy(base32).to(torch.bfloat16)
    # float32 adapters into bf16 weights (the gpu scale's warm-up crashed on this): merged in float32, cast
    copies = serving.MergedServer.build(base, store32, store32.names[:2])
    name, w = next(iter(store32["lora_1"].items()))
    want = (base.get_submodule(name).weight.float() + w.scale * (w.B @ w.A)).to(torch.bfloat16)
    got = copies["lora_1"].get_submodule(name).weight
    assert got.dtype == torch.bfloat16 and torch.equal(got, want)
    assert torch.equal(base.get_submodule(name).weight, base32.get_submodule(name).weight.to(torch.bfloat16))  # base untouched
    store = workload.make_store(base, 2, [16, 8], TARGETS, 8.0, seed=0, init_std=0.5)  # the notebook's: bf16 adapters
    one = serving.model_bytes(base)
    few = [r for r in reqs if r.adapter in store][:4]
    for name in ("merged", "slora"):
        status, rows, _ = serving.run_one(name, base, SPEC, store, few, TARGETS, 8.0, 4, 5.5 * one, device="cpu")
        assert status == "ok" and [len(r.tokens) for r in rows] == [r.output_len for r in few]


def test_merged_copies_route_independently():
    # each copy has its own router counter: a copy with an empty batch takes its request at once,
    # while another copy's running batch waits max_wait decode steps
    model = zoo.build(SPEC, seed=0).eval()
    store = workload.make_store(model, 2, [4], TARGETS, 8.0, seed=0)
    server = serving.MergedServer(serving.MergedServer.build(model, store, store.names), _memory(store), 8, max_wait=3)
    a, b = (workload.Request(i, f"lora_{i % 2}", (1, 2, 3), 20, 0.0) for i in range(2))
    c = workload.Request(2, "lora_0", (4, 5), 20, 0.0)
    out = []
    with torch.inference_mode():
        server.step(server.admit(deque([a])), out)  # copy 0 starts
        waiting = deque([c, b])
        new = server.admit(waiting)  # copy 0 has not waited 3 steps: c stays; copy 1 is idle: b starts
        assert [r.rid for r in new] == [1] and [r.rid for r in waiting] == [2]
        server.step(new, out)  # copy 0 decodes while copy 1 prefills
        assert server.decodes_since_prefill == {"lora_0": 1, "lora_1": 0}
        assert [len(r.tokens) for r in server.batches["lora_0"].rows] == [2]


def test_peft_swap_refuses_an_adapter_that_does_not_fill_its_slot(setup):
    base, store, _ = setup
    peft_model = serving.PeftServer.build(copy.deepcopy(base), store, TARGETS, 8.0)
    kv = paging.UnifiedMemory(paging.PagePool(100, SPEC.d_model, materialize=False), adapter_sizes={}, kv_per_token=4)
    server = serving.PeftServer(peft_model, store, kv, 4)
    odd = multilora.AdapterStore()
    weights = dict(store["lora_0"])  # rank 16 everywhere ...
    odd.add("mixed", weights | {"model.layers.0.self_attn.q_proj": store["lora_1"]["model.layers.0.self_attn.q_proj"]})
    odd.add("partial", {k: v for k, v in weights.items() if "q_proj" in k})
    server.store = odd
    with pytest.raises(ValueError, match=r"peft server: adapter 'mixed' has ranks \[8, 16\] on 8 modules"):
        server._swap("mixed")
    with pytest.raises(ValueError, match=r"peft server: adapter 'partial' has ranks \[16\] on 2 modules; .* all 8 target"):
        server._swap("partial")


def test_clock_counts_the_work_inside_a_timed_call():
    clock = serving.Clock()
    stamps = []

    def work():
        stamps.append(clock.now())
        sum(range(200_000))
        stamps.append(clock.now())

    clock.timed(work)
    assert stamps[0] < stamps[1] <= clock.t == clock.busy and clock.now() == clock.t
