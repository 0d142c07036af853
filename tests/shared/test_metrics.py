import math
import threading
import time
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from shared import metrics

# ----------------------------------------------------------------------------- memory


def _allocate_and_hold(n_bytes: int, hold_s: float) -> None:
    block = np.ones(n_bytes // 8)  # np.ones writes every page: it is resident
    time.sleep(hold_s)
    del block


def test_sampler_sees_a_200_mb_allocation_and_average_is_below_peak():
    with metrics.MemorySampler(interval_s=0.005) as mem:
        time.sleep(0.05)
        _allocate_and_hold(200_000_000, 0.1)
        time.sleep(0.05)
    assert mem.peak_bytes - mem.start_bytes >= 150e6
    assert mem.start_bytes <= mem.avg_bytes < mem.peak_bytes
    assert mem.n_samples >= 10


def test_sampled_peak_alone_sees_it_too(monkeypatch):
    # without the kernel's exact high-water mark, the samples must catch the block
    monkeypatch.setattr(metrics, "_rss_peak_reset", lambda: False)
    with metrics.MemorySampler(interval_s=0.005) as mem:
        _allocate_and_hold(200_000_000, 0.1)
    assert mem.peak_source.startswith("sampled")
    assert mem.peak_bytes - mem.start_bytes >= 150e6


def test_nested_samplers_keep_exact_peaks_and_share_one_thread():
    # a 10 s interval: no background sample lands, so only the kernel's high-water mark,
    # handed over before the inner sampler resets it, can show the outer one the block
    with metrics.MemorySampler(interval_s=10) as outer:
        _allocate_and_hold(200_000_000, 0.0)
        with metrics.MemorySampler(interval_s=10) as inner:
            pass
    if not outer.peak_source.startswith("VmHWM"):
        pytest.skip("no resettable VmHWM on this kernel")
    assert outer.peak_bytes - outer.start_bytes >= 150e6
    assert inner.peak_bytes - inner.start_bytes < 150e6
    assert outer.n_samples == inner.n_samples == 2  # entry and exit only
    sampling = [t for t in threading.enumerate() if t.name == "MemorySampler"]
    assert sampling == [metrics._thread] and not metrics._active


def test_time_average_is_the_trapezoid_rule():
    # 0 for 1 s, then a ramp 0 -> 10 over 1 s: area 5 over 2 s
    assert metrics.time_average([0, 0, 10], [0.0, 1.0, 2.0]) == pytest.approx(2.5)
    assert metrics.time_average([7], [3.0]) == 7
    with pytest.raises(ValueError, match="values/times"):
        metrics.time_average([1, 2], [0.0])


# ----------------------------------------------------------------------------- sizes


def test_tensor_bytes_of_fp32_linear_and_tied_weights():
    assert metrics.tensor_bytes(torch.nn.Linear(256, 512)) == 4 * (256 * 512 + 512)
    assert metrics.tensor_bytes(torch.nn.Linear(256, 512, bias=False).half()) == 2 * 256 * 512
    emb = torch.nn.Embedding(100, 16)
    head = torch.nn.Linear(16, 100, bias=False)
    head.weight = emb.weight  # tied: one storage
    report = metrics.model_size_report(torch.nn.ModuleList([emb, head]))
    assert report["total_bytes"] == 4 * 100 * 16 and report["parameters"] == 1600
    assert report["bits_per_parameter"] == 32
    bn = torch.nn.BatchNorm1d(8)  # running mean/var (fp32) + num_batches_tracked (int64)
    assert metrics.model_size_report(bn)["buffer_bytes"] == 4 * 8 * 2 + 8


@pytest.fixture(scope="module")
def bnb():
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import bitsandbytes
    except Exception as exc:  # pragma: no cover
        pytest.skip(f"bitsandbytes does not import: {exc}")
    return bitsandbytes


def test_bitsandbytes_int8_counts_int8_weight_and_row_scales(bnb):
    fp32 = torch.nn.Linear(512, 1024, bias=False)
    int8 = bnb.nn.Linear8bitLt(512, 1024, bias=False, has_fp16_weights=False)
    int8.load_state_dict(fp32.state_dict())
    int8 = int8.to("cpu")  # quantizes
    expected = 512 * 1024 + 4 * 1024  # int8 weight + fp32 scale per output row
    assert metrics.tensor_bytes(int8) == expected
    assert metrics.tensor_bytes(int8) / metrics.tensor_bytes(fp32) == pytest.approx(0.25, abs=0.01)
    int8(torch.randn(2, 512))  # after a forward the scales move to module.state: same bytes
    assert metrics.tensor_bytes(int8) == expected


def test_bitsandbytes_nf4_counts_packed_weight_and_quant_state(bnb):
    fp32 = torch.nn.Linear(512, 1024, bias=False)
    nf4 = bnb.nn.Linear4bit(512, 1024, bias=False, quant_type="nf4", compute_dtype=torch.float32)
    nf4.load_state_dict(fp32.state_dict())
    nf4 = nf4.to("cpu")
    report = metrics.model_size_report(nf4)
    assert report["parameters"] == 512 * 1024  # logical, not packed
    assert report["parameter_bytes"] == 512 * 1024 // 2  # two 4-bit values per byte
    assert report["quant_bytes"] > 512 * 1024 // 64  # at least one absmax byte per 64-block
    ratio = report["total_bytes"] / metrics.tensor_bytes(fp32)
    assert 1 / 8 < ratio < 0.14


def test_dynamic_int8_linear_weight_bytes_at_most_030_of_fp32():
    # the survey-proxy criterion of paper 05: int8-dynamic Linear weight bytes <= 0.3x fp32
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torch.ao.quantization import quantize_dynamic

        fp32 = torch.nn.Sequential(torch.nn.Linear(512, 1024))
        q = quantize_dynamic(fp32, {torch.nn.Linear}, dtype=torch.qint8)
        report = metrics.model_size_report(q)
    assert report["parameters"] == 512 * 1024 + 1024
    assert report["quant_bytes"] == 512 * 1024 + 4 * 1024
    assert report["total_bytes"] / metrics.tensor_bytes(fp32) <= 0.3


def test_dynamic_int8_bytes_count_every_layer_of_a_deep_model():
    # torch.ao unpacks weights into temporaries; were they freed during the walk, a later
    # layer's temporary could reuse an address and be skipped as "already counted".
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torch.ao.quantization import quantize_dynamic

        fp32 = torch.nn.Sequential(*[torch.nn.Linear(256, 256) for _ in range(12)])
        q = quantize_dynamic(fp32, {torch.nn.Linear}, dtype=torch.qint8)
        sizes = {metrics.model_size_report(q)["quant_bytes"] for _ in range(3)}
    assert sizes == {12 * (256 * 256 + 4 * 256)}


# ----------------------------------------------------------------------------- compute


def test_count_flops_of_a_linear_is_two_b_in_out():
    layer, x = torch.nn.Linear(256, 512), torch.randn(8, 256)
    assert metrics.count_flops(lambda: layer(x)) == 2 * 8 * 256 * 512


def test_count_flops_of_attention_is_four_b_h_t_t_d():
    q = torch.randn(2, 4, 64, 16)  # the CPU flash kernel alone would count 0
    attention = lambda: torch.nn.functional.scaled_dot_product_attention(q, q, q, is_causal=True)  # noqa: E731
    assert metrics.count_flops(attention) == 4 * 2 * 4 * 64 * 64 * 16


def test_compute_utilization_is_achieved_over_peak(monkeypatch):
    monkeypatch.setattr(metrics, "device_peak_flops", lambda device, dtype: (1e11, "fake"))
    assert metrics.compute_utilization(2e10, 0.5, "cpu") == pytest.approx(0.4)  # 4e10 / 1e11
    with pytest.raises(ValueError, match="seconds"):
        metrics.compute_utilization(1e9, 0.0)


def test_gpu_peaks_come_from_the_table_and_cpu_peak_is_measured_once(monkeypatch):
    h100, source = metrics._table_peak("NVIDIA H100 80GB HBM3", torch.bfloat16)
    assert h100 == pytest.approx(989.4e12) and "H100 SXM" in source and "dense" in source
    assert metrics._table_peak("NVIDIA H100 PCIe", torch.bfloat16)[0] == pytest.approx(756.5e12)
    assert metrics._table_peak("NVIDIA H200", torch.float32)[0] == pytest.approx(66.9e12)
    assert metrics._table_peak("NVIDIA A100-SXM4-80GB", torch.bfloat16)[0] == pytest.approx(312e12)
    assert metrics._table_peak("NVIDIA GeForce GTX 1080", torch.bfloat16) is None
    monkeypatch.setattr(metrics, "_MEASURED_PEAKS", {})
    peak, source = metrics.device_peak_flops("cpu", torch.float32, n=256)
    assert peak > 1e8 and source.startswith("measured: 256^3 GEMM peak on this CPU")
    assert metrics.device_peak_flops("cpu", torch.float32, n=256) == (peak, source)  # cached
    with pytest.raises(ValueError, match="device"):
        metrics.device_peak_flops("tpu")


# ----------------------------------------------------------------------------- energy


def test_energy_estimate_formula():
    assert metrics.estimate_energy_j(10.0, 0.5, tdp_w=100.0, idle_w=20.0) == pytest.approx(600.0)
    assert metrics.estimate_energy_j(2.0, 0.0, tdp_w=100.0, idle_w=20.0) == pytest.approx(40.0)
    with pytest.raises(ValueError, match="utilisation"):
        metrics.estimate_energy_j(1.0, 1.5, tdp_w=100.0, idle_w=20.0)


def test_energy_without_a_power_counter_is_a_labelled_estimate(monkeypatch, tmp_path):
    monkeypatch.setattr(metrics, "RAPL_ROOT", tmp_path)  # an empty powercap tree
    with metrics.Energy("cpu") as energy:
        end = time.perf_counter() + 0.05
        while time.perf_counter() < end:  # busy: utilisation well above 0
            pass
    assert energy.source.startswith("estimate (no power counter readable)")
    cpus = len(metrics.os.sched_getaffinity(0))
    idle, tdp = metrics.CPU_IDLE_W_PER_THREAD * cpus, metrics.CPU_TDP_W_PER_THREAD * cpus
    assert 0 < energy.utilisation <= 1
    assert energy.watts == pytest.approx(idle + (tdp - idle) * energy.utilisation)
    assert energy.joules == pytest.approx(energy.watts * energy.seconds)


def _rapl_zone(root, name, energy_uj, max_uj):
    zone = root / name
    zone.mkdir()
    (zone / "energy_uj").write_text(f"{energy_uj}\n")
    (zone / "max_energy_range_uj").write_text(f"{max_uj}\n")
    return zone / "energy_uj"


def test_rapl_sums_packages_skips_subzones_and_handles_wraparound(monkeypatch, tmp_path):
    package0 = _rapl_zone(tmp_path, "intel-rapl:0", 999_000_000, 1_000_000_000)  # near the top
    package1 = _rapl_zone(tmp_path, "intel-rapl:1", 5_000_000, 1_000_000_000)
    cores0 = _rapl_zone(tmp_path, "intel-rapl:0:0", 1_000, 1_000_000_000)  # inside package 0
    monkeypatch.setattr(metrics, "RAPL_ROOT", tmp_path)
    with metrics.Energy("cpu") as energy:
        package0.write_text("2000000\n")  # wrapped: 1.0 J to the top + 2.0 J after it
        package1.write_text("9500000\n")  # + 4.5 J
        cores0.write_text("900000000\n")  # would add 899 J if it were counted
    assert energy.source.startswith("RAPL")
    assert energy.joules == pytest.approx(7.5)
    assert energy.watts == pytest.approx(7.5 / energy.seconds)


def test_unreadable_rapl_falls_back_to_the_estimate(monkeypatch, tmp_path):
    zone = tmp_path / "intel-rapl:0"
    zone.mkdir()  # no energy_uj file: as unreadable as a root-only one
    (zone / "max_energy_range_uj").write_text("1000\n")
    monkeypatch.setattr(metrics, "RAPL_ROOT", tmp_path)
    with metrics.Energy("cpu") as energy:
        pass
    assert energy.source.startswith("estimate")


# ----------------------------------------------------------------------------- measure


def test_measure_reports_time_memory_energy_and_utilization(monkeypatch, tmp_path):
    monkeypatch.setattr(metrics, "RAPL_ROOT", tmp_path)
    monkeypatch.setattr(metrics, "device_peak_flops", lambda device, dtype: (1e12, "fake peak"))
    calls = []
    m = metrics.measure(lambda: (calls.append(1), time.sleep(0.01)), repeats=4, warmup=2, flops=1e9)
    assert len(calls) == 6
    assert 0.01 <= m.seconds_q25 <= m.seconds_median <= m.seconds_q75
    assert m.utilization == pytest.approx(1e9 / m.seconds_median / 1e12)
    assert m.memory_peak_bytes >= m.memory_avg_bytes > 0
    assert m.energy_j > 0 and m.energy_source.startswith("estimate")
    row = m.as_row()
    assert row["seconds_iqr"] == pytest.approx(m.seconds_q75 - m.seconds_q25)
    assert row["peak_source"] == "fake peak" and row["repeats"] == 4
    bare = metrics.measure(lambda: None, repeats=1, warmup=0, sample_memory=False)
    assert math.isnan(bare.memory_peak_bytes) and math.isnan(bare.utilization)
    with pytest.raises(ValueError, match="repeats"):
        metrics.measure(lambda: None, repeats=0)


# ----------------------------------------------------------------------------- latency, throughput


@pytest.fixture(scope="module")
def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=256, hidden_size=128, intermediate_size=384, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
    )  # fmt: skip
    return LlamaForCausalLM(config).eval()


def test_prefill_and_decode_use_the_kv_cache(tiny_llama, one_thread):
    r = metrics.prefill_decode_latency(tiny_llama, batch_size=1, prompt_len=512, new_tokens=6, repeats=2)
    assert all(math.isfinite(r[k]) and r[k] > 0 for k in ("prefill_s", "decode_s_per_token", "total_s"))
    assert r["cache_len"] == 512 + 6 - 1  # every decode step appended one position
    # one token against a 512-long cache costs a fraction of recomputing 512 positions
    assert r["decode_s_per_token"] < r["prefill_s"] / 3
    with pytest.raises(ValueError, match="new_tokens >= 2"):
        metrics.prefill_decode_latency(tiny_llama, 1, 8, 1)


def test_throughput_table(tiny_llama):
    df = metrics.throughput(tiny_llama, [1, 2], prompt_len=16, new_tokens=4, repeats=1, warmup=0)
    assert list(df["batch_size"]) == [1, 2]
    assert np.allclose(df["tokens_per_s"], df["batch_size"] * 4 / df["total_s"])
    assert np.allclose(df["decode_tokens_per_s"], df["batch_size"] / df["decode_s_per_token"])
    assert (df["cache_len"] == 16 + 3).all()


def test_throughput_formulas_eqs_3_to_6():
    assert metrics.average_latency([1.0, 3.0], [0.5, 0.5]) == pytest.approx(2.5)
    assert metrics.token_throughput([1000, 3000], [1.0, 1.0], n_params=100) == pytest.approx(20.0)
    assert metrics.inference_throughput([10, 30], [1.0, 3.0]) == pytest.approx(10.0)


# ----------------------------------------------------------------------------- quality


class UniformLM(torch.nn.Module):
    """Zero logits: every next token equally likely, so perplexity = vocabulary size."""

    def __init__(self, vocab):
        super().__init__()
        self.vocab = vocab

    def forward(self, x):
        return torch.zeros(*x.shape, self.vocab)


def test_perplexity_of_a_uniform_model_is_the_vocabulary_size():
    batches = [(torch.zeros(2, 5, dtype=torch.long), torch.randint(0, 50, (2, 5))) for _ in range(3)]
    assert metrics.perplexity(UniformLM(50), batches) == pytest.approx(50.0)


def test_accuracy_and_agreement():
    x = torch.zeros(1, 4, dtype=torch.long)
    y = torch.tensor([[0, 0, 1, -100]])  # the last position is ignored
    assert metrics.accuracy(UniformLM(3), [(x, y)]) == pytest.approx(2 / 3)  # argmax of zeros is 0
    shifted = lambda inp: torch.nn.functional.one_hot(torch.tensor([[0, 1, 0, 1]]), 3).float()  # noqa: E731
    assert metrics.agreement(UniformLM(3), shifted, [(x, y)]) == pytest.approx(2 / 3)


# ----------------------------------------------------------------------------- compression, Pareto


def test_compression_rate_eq_9():
    assert metrics.compression_rate(16.0, 4.0, 0.50, 0.48) == pytest.approx(4 * 0.96)
    # perplexity is lower-is-better: 10 -> 12 keeps 10/12 of the quality
    assert metrics.compression_rate(16.0, 4.0, 10.0, 12.0, higher_is_better=False) == pytest.approx(4 * 10 / 12)
    assert metrics.compression_rate(1.0, 1.0, 0.5, 0.5) == 1.0
    with pytest.raises(ValueError, match="size_compressed"):
        metrics.compression_rate(16.0, 0.0, 0.5, 0.5)
    # numpy scalars (what a DataFrame hands back) are numbers too; booleans are not
    assert metrics.compression_rate(np.int64(16), np.float32(4.0), 0.5, 0.5) == pytest.approx(4.0)
    with pytest.raises(ValueError, match="perf_original"):
        metrics.compression_rate(16.0, 4.0, True, 0.5)


def test_pareto_front_on_a_hand_made_fixture():
    df = pd.DataFrame(
        {
            "name": ["a", "b", "c", "d", "e", "f"],
            "latency": [1.0, 2.0, 3.0, 2.5, 1.0, 4.0],
            "accuracy": [0.5, 0.7, 0.9, 0.6, 0.5, 0.9],
        },
        index=[10, 11, 12, 13, 14, 15],
    )
    # a=e (equal, neither dominates), b, c on the front; d by b; f by c (slower, same accuracy)
    front = metrics.pareto_front(df, minimize=["latency"], maximize=["accuracy"])
    assert front.index.equals(df.index)
    assert list(df.loc[front, "name"]) == ["a", "b", "c", "e"]
    assert metrics.pareto_front(df, minimize=["latency"]).tolist() == [True, False, False, False, True, False]
    with pytest.raises(ValueError, match="energy: not a column"):
        metrics.pareto_front(df, minimize=["energy"])
