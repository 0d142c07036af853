"""Paper 27 (S-LoRA): the synthetic trace, the adapters, the paper's jsonl and the parameters."""

import numpy as np
import pytest
import yaml

from paper27 import config, workload
from shared.paths import CONF


def test_trace_statistics():
    reqs = workload.trace(10, 4000, 5.0, 2.0, 1.0, (8, 16), (3, 5), 100, seed=0)
    gaps = np.diff([0.0] + [r.arrival for r in reqs])
    assert abs(gaps.mean() - 1 / 5.0) < 0.02 and abs(gaps.std() / gaps.mean() - 2.0) < 0.2  # Gamma: mean 1/rate, cv
    assert {r.prompt_len for r in reqs} == set(range(8, 17)) and {r.output_len for r in reqs} == {3, 4, 5}
    assert all(0 <= t < 100 for r in reqs for t in r.prompt)
    counts = np.bincount([int(r.adapter.split("_")[1]) for r in reqs], minlength=10)
    assert counts.min() > 300  # the authors' generator: uniform at alpha = 1
    zipf = workload.trace(10, 4000, 5.0, 1.0, 1.0, (8, 16), (3, 5), 100, seed=0, popularity="zipf")
    z = np.bincount([int(r.adapter.split("_")[1]) for r in zipf], minlength=10)
    assert z[0] > 3 * z[9]
    assert workload.trace(3, 20, 1.0, 1.0, 1.0, (2, 4), (2, 4), 50, seed=3) == workload.trace(3, 20, 1.0, 1.0, 1.0, (2, 4), (2, 4), 50, seed=3)
    with pytest.raises(ValueError, match="popularity: 'slora' or 'zipf'"):
        workload.trace(3, 5, 1.0, 1.0, 1.0, (2, 4), (2, 4), 50, popularity="flat")


def test_adapter_ranks_cycle():
    assert workload.adapter_ranks(6, [64, 32, 16, 8]) == [64, 32, 16, 8, 64, 32]


def test_paper_results_match_table3():
    df = workload.paper_results()
    s1 = df[(df["setting"] == "S1") & (df["system"] == "slora")].sort_values("n_adapters")
    assert s1["n_adapters"].tolist() == [5, 100, 1000, 2000]
    assert [round(v, 2) for v in s1["throughput"]] == [8.05, 7.99, 7.64, 7.61]
    peft = df[(df["setting"] == "S1") & (df["system"] == "peft")]
    assert [round(v, 2) for v in peft["throughput"]] == [0.88, 0.25]
    s4peft = df[(df["setting"] == "S4") & (df["system"] == "peft")]
    assert len(s4peft) == 1  # the n = 100 run of that file is a note, not a JSON line


def _params(scale):
    p = yaml.safe_load((CONF / "p27" / "base.yaml").read_text())
    if scale != "base":
        p |= {k: v for k, v in yaml.safe_load((CONF / "p27" / f"{scale}.yaml").read_text()).items() if k != "defaults"}
    return p


@pytest.mark.parametrize("scale", ["base", "smoke", "gpu"])
def test_every_scale_validates(scale):
    config.Params(**_params(scale))


@pytest.mark.parametrize("scale", ["base", "smoke", "gpu"])
def test_ranks_stay_small_against_the_hidden_size(scale):
    # the paper's regime: the LoRA add-on a few per cent of the adapted projections (S2: 64 / 4096)
    p = config.Params(**_params(scale))
    assert max(p.lora_ranks) / p.model.d_model <= 1 / 16
    assert max(p.lora_ranks) // min(p.lora_ranks) >= 4  # still a mix of ranks


def test_bad_values_fail_naming_the_key():
    p = _params("base")
    with pytest.raises(ValueError, match="peft_claim_n: 7 must be one of n_adapters"):
        config.Params(**(p | {"peft_claim_n": 7}))
    with pytest.raises(ValueError, match="n_adapters: increasing distinct values"):
        config.Params(**(p | {"n_adapters": [5, 1]}))
    with pytest.raises(ValueError, match="model.attention: pages are d_model vectors"):
        config.Params(**(p | {"model": p["model"] | {"attention": "gqa", "n_kv_heads": 2}}))
    with pytest.raises(ValueError, match="lora_ranks: each in"):
        config.Params(**(p | {"lora_ranks": [512]}))
    with pytest.raises(ValueError, match=r"req_rates\.1\s+Input should be greater than 0"):
        config.Params(**(p | {"req_rates": [10.0, -1.0]}))


def test_the_store_of_n_is_the_first_n_adapters_of_the_largest_store():
    import torch

    from shared import zoo

    spec = zoo.ModelSpec(attention="mha", vocab_size=64, d_model=16, n_layers=1, n_heads=2, d_ff=32, max_seq_len=32)
    base = zoo.build(spec, seed=0).to(torch.bfloat16)
    targets = ["q_proj", "v_proj"]
    big = workload.make_store(base, 7, [4, 2, 1], targets, 8.0, seed=3)
    sub = workload.first_adapters(big, 3)
    assert sub.names == big.names[:3] == ["lora_0", "lora_1", "lora_2"]
    small = workload.make_store(base, 3, [4, 2, 1], targets, 8.0, seed=3)  # the same seed: the same adapters
    for name in sub.names:
        for module, w in sub[name].items():
            assert w.A.dtype == torch.bfloat16  # adapters in the model's dtype
            assert w.A.data_ptr() == big[name][module].A.data_ptr()  # shared, not copied
            assert torch.equal(w.A, small[name][module].A) and torch.equal(w.B, small[name][module].B)
    with pytest.raises(ValueError, match=r"n_adapters: need 1 <= n <= 7"):
        workload.first_adapters(big, 8)
