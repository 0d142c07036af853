"""Many LoRA adapters in one batch (shared/multilora.py) against peft's mixed batch and merging.

A 4-layer d=512 Llama from the zoo with rank-8 LoRA (alpha 16) on q_proj and v_proj; every
request of a batch uses one of ``n`` adapters (assigned round-robin, so min(n, requests) are
distinct, then shuffled: the batch arrives unordered). Two batches, fp32, one thread:

- prefill: 32 requests x 64 tokens, one forward (n = 1, 8, 32, 64, 256, 1000);
- decode: 64 requests x 1 new token over a 64-token KV cache (n = 1, 8, 32, 64, 256, 1000: at
  most 64 distinct in the batch, the rest only loaded); the cache is cropped back after each
  timed step so every step sees the same context.

Timed, interleaved (shared.timing.benchmark): the base model alone (the floor), ours
(``multilora.attach``; a new plan every call, i.e. sorting and, in decode, the per-request
weight gather paid at every step; decode also reports ours with the plan held over steps, as a
serving loop does while its batch is unchanged), peft's mixed batch (``model(..., adapter_names=...)``, every adapter
loaded into one PeftModel), and merge-and-switch (per distinct adapter: add s*B@A into the
base weights, run that adapter's requests as a sub-batch with their own cache, subtract it
again; what a server of merged models does when requests of many adapters arrive together).
Each record names the overheads over the base model; the issue's goals are <= +15% (prefill,
32 adapters), <= +25% (prefill, 1000), <= +50% (decode, 64). A last record compares the memory
of serving every adapter at once: the base model plus the adapters in host memory (ours) against
one merged copy of the model per adapter. The curves (overhead vs number of adapters) are drawn
to benchmarks/figures/multilora_overhead.png.

No compiled path: the add-on is already within a few per cent of the base model (it is ~2r/d of
the adapted layers' FLOPs), so a compiler could win at most those per cent, and torch.compile
on CPU breaks the graph at every layer's plan lookup.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch

from shared import multilora, zoo
from shared.timing import benchmark

SPEC = dict(attention="mha", vocab_size=4096, d_model=512, n_layers=4, n_heads=8, d_ff=1376, max_seq_len=256)
RANK, ALPHA, TARGETS = 8, 16, ("q_proj", "v_proj")
PREFILL = dict(kind="prefill", requests=32, tokens=64, context=0)
DECODE = dict(kind="decode", requests=64, tokens=1, context=64)
ADAPTERS = (1, 8, 32, 64, 256, 1000)
CASES = [dict(PREFILL, adapters=n) for n in ADAPTERS] + [dict(DECODE, adapters=n) for n in ADAPTERS]
FIGURE = Path(__file__).resolve().parent / "figures" / "multilora_overhead"
REPEATS, WARMUP, THREADS = 7, 1, 1


def _models(n_adapters: int, seed: int = 0):
    """(base model, our attached model, peft model), same base weights, same adapters."""
    from peft import LoraConfig, get_peft_model
    from peft.tuners.lora import LoraLayer

    spec = zoo.ModelSpec(**SPEC)
    config = LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=list(TARGETS), init_lora_weights=False)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        peft_model = get_peft_model(zoo.build(spec, seed=seed), config, adapter_name="ad0")
        # add_adapter re-injects through the whole model each time and grows superlinearly (200
        # adapters ~14 s, 400 ~2 min here); each LoRA layer's own update_layer does the same per layer
        layers = [m for m in peft_model.modules() if isinstance(m, LoraLayer)]
        for i in range(1, n_adapters):
            peft_model.peft_config[f"ad{i}"] = config
            for layer in layers:
                layer.update_layer(f"ad{i}", RANK, ALPHA, config)
    peft_model.eval()
    store = multilora.AdapterStore.from_peft(peft_model)
    ours = zoo.build(spec, seed=seed)
    ml = multilora.attach(ours, store)
    return zoo.build(spec, seed=seed), ml, peft_model, store


def _case(case: dict, repeats: int) -> dict:
    base, ml, peft_model, store = _models(case["adapters"])
    rng = random.Random(0)
    pool = rng.sample(store.names, min(case["requests"], len(store)))  # the adapters this batch uses
    names = [pool[i % len(pool)] for i in range(case["requests"])]
    rng.shuffle(names)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, SPEC["vocab_size"], (case["requests"], case["tokens"]), generator=gen)
    context = torch.randint(0, SPEC["vocab_size"], (case["requests"], case["context"]), generator=gen)
    kv = bool(case["context"])
    groups = {a: torch.tensor([i for i, n in enumerate(names) if n == a]) for a in dict.fromkeys(names)}
    linears = {name: layer.base for name, layer in ml.layers.items()}  # merge-and-switch edits these in place

    def prefilled(model, rows=None, **kw):
        """A KV cache holding the context of ``rows`` (all requests by default)."""
        from transformers import DynamicCache

        if not case["context"]:
            return None  # prefill: no cache is read, none is kept
        cache = DynamicCache()
        model(context if rows is None else context[rows], cache=cache, use_cache=True, **kw)
        return cache

    # decode: one cache per contestant (per group for merge-and-switch), cropped back after each step
    with torch.inference_mode():
        caches = {"base": prefilled(base), "peft": prefilled(peft_model, adapter_names=names)}
        with ml.batch(names):
            caches["ours"] = prefilled(ml.model)
        group_caches = {}
        for a, rows in groups.items():
            _merge(linears, store[a], +1)
            group_caches[a] = prefilled(ml.model, rows)
            _merge(linears, store[a], -1)

    def step(fn, *caches_used):
        caches_used = [c for c in caches_used if c is not None]

        def call():
            with torch.inference_mode():
                out = fn()
            for c in caches_used:  # back to the context alone (transformers 5: a negative crop removes tokens)
                c.crop(-case["tokens"])
            return out

        return call

    def merge_and_switch():
        for a, rows in groups.items():
            _merge(linears, store[a], +1)
            ml.model(ids[rows], cache=group_caches[a], use_cache=kv)
            _merge(linears, store[a], -1)

    def ours():
        with ml.batch(names):
            return ml.model(ids, cache=caches["ours"], use_cache=kv).logits

    def peft():
        return peft_model(ids, cache=caches["peft"], use_cache=kv, adapter_names=names).logits

    # a serving loop keeps one plan while its batch's requests stay (and pays the bmm gather once)
    with ml.batch(names) as held:
        pass

    def ours_held_plan():
        with ml.batch(held):
            ml.model(ids, cache=caches["ours"], use_cache=kv)

    with torch.inference_mode():  # the timed batch itself: ours against peft, before any merge touches weights
        max_diff = (step(ours, caches["ours"])() - step(peft, caches["peft"])()).abs().max().item()

    fns = {
        "base": step(lambda: base(ids, cache=caches["base"], use_cache=kv), caches["base"]),
        "ours": step(ours, caches["ours"]),
        "peft": step(peft, caches["peft"]),
        "merge": step(merge_and_switch, *group_caches.values()),
    }
    if kv:
        fns["ours_held_plan"] = step(ours_held_plan, caches["ours"])
    stats = benchmark(fns, repeats=repeats, warmup=WARMUP, num_threads=THREADS)
    return {k: v.median_s for k, v in stats.items()} | {"distinct": len(groups), "max_diff": max_diff}


def _merge(linears: dict, adapter: dict, sign: int) -> None:
    for module, w in adapter.items():
        linears[module].weight.data.addmm_(w.B, w.A, alpha=sign * w.scale)


def run(cases: list[dict] = CASES, repeats: int = REPEATS) -> list[dict]:
    records = []
    for case in cases:
        t = _case(case, repeats)
        over = {k: 100 * (t[k] / t["base"] - 1) for k in ("ours", "ours_held_plan", "peft", "merge") if k in t}
        shape = f"{case['requests']}x{case['tokens']}" + (f" over {case['context']} cached" if case["context"] else "")
        held = f" (plan held over steps {over['ours_held_plan']:+.0f}%)" if "ours_held_plan" in over else ""
        name = (
            f"multi-LoRA {case['kind']} {shape}, {case['adapters']} adapters ({t['distinct']} in batch), "
            f"over base: ours {over['ours']:+.0f}%{held}, peft {over['peft']:+.0f}%, merge {over['merge']:+.0f}%; "
            f"max |ours - peft| {t['max_diff']:.1e}"
        )
        common = dict(ours=t["ours"], unit="s", lower_is_better=True, kind=case["kind"], adapters=case["adapters"],
                      overhead_pct={k: round(v, 2) for k, v in over.items()})  # fmt: skip
        records.append(dict(name=name, peer="peft mixed batch (adapter_names=)", peer_value=t["peft"], **common))
        records.append(dict(name=name, peer="merge-and-switch per adapter", peer_value=t["merge"], **common))
        records.append(dict(name=name, peer="base model alone (no LoRA; the floor)", peer_value=t["base"], **common))
    records.append(_memory_record(max(c["adapters"] for c in cases)))
    plot(records)
    return records


def _memory_record(n_adapters: int) -> dict:
    """Bytes to serve ``n_adapters`` at once: base + adapters in host memory vs merged copies."""
    base, _, _, store = _models(1)
    model_bytes = sum(t.numel() * t.element_size() for t in base.state_dict().values())
    adapter_bytes = sum(w.A.numel() * w.A.element_size() + w.B.numel() * w.B.element_size() for w in store[store.names[0]].values())
    ours, merged = model_bytes + n_adapters * adapter_bytes, n_adapters * model_bytes
    return dict(
        name=f"memory to serve {n_adapters} rank-{RANK} adapters at once: base + adapters {ours / 2**20:.0f} MiB, "
        f"merged copies {merged / 2**30:.1f} GiB",
        ours=ours, peer="one merged model copy per adapter", peer_value=merged, unit="bytes", lower_is_better=True,
    )  # fmt: skip


def plot(records: list[dict]) -> None:
    """The overhead curves from this benchmark's records (results.json's, too):
    ``python -c "import json; from benchmarks import bench_multilora as b; b.plot(json.load(open('benchmarks/results.json'))['records'])"``"""
    import pandas as pd
    import seaborn as sns
    from matplotlib import pyplot as plt

    from shared import plotting

    plotting.theme()
    seen, curves = set(), []
    for r in records:  # three records (peers) per case carry the same overheads
        if r.get("benchmark", "multilora") == "multilora" and "kind" in r and (r["kind"], r["adapters"]) not in seen:
            seen.add((r["kind"], r["adapters"]))
            curves += [dict(kind=r["kind"], adapters=r["adapters"], method=k, overhead_pct=v) for k, v in r["overhead_pct"].items()]
    df = pd.DataFrame(curves)
    labels = {"ours": "ours (new plan per step)", "ours_held_plan": "ours (plan held)", "peft": "peft mixed batch",
              "merge": "merge-and-switch"}  # fmt: skip
    df["method"] = df["method"].map(labels)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), sharey=False)
    for ax, kind, goal in zip(axes, ("prefill", "decode"), ({32: 15, 1000: 25}, {64: 50})):
        sns.lineplot(df[df["kind"] == kind], x="adapters", y="overhead_pct", hue="method", hue_order=list(labels.values()),
                     marker="o", ax=ax)  # fmt: skip
        ax.scatter(list(goal), list(goal.values()), marker="_", s=300, color="black", zorder=5, label="goal (issue)")
        ax.set(xscale="log", title=f"{kind}", xlabel="adapters loaded", ylabel="overhead over base model (%)")
        ax.set_yscale("symlog", linthresh=20)  # linear within +-20% (timing noise is a few %), log beyond
        top = df[df["kind"] == kind]["overhead_pct"].max()
        ax.set_yticks([t for t in (-10, 0, 10, 20, 50, 100, 200, 500, 1000) if t <= max(top * 1.5, 50)])
        ax.yaxis.set_major_formatter("{x:+.0f}")
        ax.legend(fontsize=7)
    fig.suptitle("Many LoRA adapters in one batch: cost over the base model (1 thread, fp32, d=512 Llama)", fontsize=9)
    plotting.save(fig, FIGURE)
