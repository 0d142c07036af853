"""Paper 29 (DGQ): the two-phase search, the exact INT8 lift, the real kernel, the baselines."""

import pytest
import torch

from paper29 import dgq, methods, speed
from shared import numformats as nf
from shared import qmatmul

pytestmark = pytest.mark.usefixtures("one_thread")


def _layer(n=64, k=256, seed=0, outlier=True):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, k, generator=g) * 0.02
    w[3, 5] = 0.2  # one large weight: its row's coarse scale is wide
    x = torch.randn(96, k, generator=g)
    if outlier:
        x[:, 7] *= 30
    return w, x


def test_grids_are_the_papers():
    r1, r2 = dgq.phase1_ratios(), dgq.phase2_ratios()
    assert len(r1) == 20 and len(r2) == 80
    assert r1[0].item() == pytest.approx(1.009) and r1[-1].item() == pytest.approx(0.80)
    assert r2[0].item() == pytest.approx(1.00975) and r2[-1].item() == pytest.approx(0.20)


def test_lift_is_int8_and_bit_exact():
    w, x = _layer()
    d = dgq.search(w, x, group=64)
    ws8 = d.w_s8()
    assert ws8.min() >= -128 and ws8.max() <= 127
    assert d.codes.max() <= 15 and d.zeros.max() <= 15 and d.multipliers.min() >= 1
    assert torch.equal(d.channel_scales, d.channel_scales.half().float())  # FP16 channel scales
    assert torch.equal(d.dequantize(), d.fine_dequantize())  # s1 * (S2 (q - z)) == (s1 S2) (q - z), bit for bit


def test_phase1_clips_the_range_and_lowers_the_output_error():
    # one group per row dominated by a single large weight: clipping it trades that weight's error for
    # a finer grid on the others, which lowers the output error when the input channel is ordinary
    torch.manual_seed(0)
    w = torch.randn(8, 64) * 0.02
    w[:, 5] = 0.5
    x = torch.randn(256, 64)
    full_scale, _ = dgq.phase1(w, x, group=64, n_ratios=1)  # one ratio: r = 0.80
    scale, zero = dgq.phase1(w, x, group=64)  # r = 1.009 .. 0.80

    def err(s, z):
        q = (torch.round(w / s) + z).clamp(0, 15)
        return float(((x @ (w - (q - z) * s).t()) ** 2).sum())

    rtn_scale = (w.amax(1, keepdim=True) - w.amin(1, keepdim=True).clamp(max=0)) / 15
    assert (scale < rtn_scale).all()  # every row clipped below its min/max range
    assert not torch.equal(scale, full_scale)  # the ratio matters (before the fix every ratio gave the same scale)
    assert err(scale, zero) < err(rtn_scale, torch.round(-w.amin(1, keepdim=True).clamp(max=0) / rtn_scale))


def test_search_beats_round_to_nearest_per_channel_and_is_deterministic():
    w, x = _layer()
    d = dgq.search(w, x, group=64)

    def err(wh):
        return float(((x @ (w - wh).t()) ** 2).sum())

    assert err(d.dequantize()) < err(nf.fake_quant(w, nf.per_channel(nf.INT4_ASYM, axis=0)))
    assert torch.equal(dgq.search(w, x, group=64).codes, d.codes)


def test_reduced_inputs_give_the_same_errors():
    w, x = _layer()
    d = torch.randn_like(w)
    r = dgq.reduced_inputs(x, w.shape[1])  # more tokens than K? no: 96 < 256 -> X itself
    assert torch.allclose(dgq._errors(d, r), ((x @ d.t()) ** 2).sum(0), rtol=1e-4)
    xl = torch.randn(600, 32)
    dl = torch.randn(8, 32)
    rl = dgq.reduced_inputs(xl, 32)
    assert rl.shape == (32, 32)
    assert torch.allclose(dgq._errors(dl, rl), ((xl @ dl.t()) ** 2).sum(0), rtol=1e-3)


def test_qmatmul_codes_and_zero_point_epilogue_are_exact():
    w, x = _layer()
    d = dgq.search(w, x, group=64)
    codes, s2, s1, corr = d.qmatmul_codes()
    assert codes.min() >= -8 and codes.max() <= 7
    prod = codes.to(torch.int32).view(codes.shape[0], -1, 64) * s2.to(torch.int32)[..., None]
    assert prod.min() >= -128 and prod.max() <= 127
    assert torch.equal(prod.view_as(codes) - corr.repeat_interleave(64, 1), d.w_s8())
    bias = torch.randn(w.shape[0])
    layer = dgq.DGQLinear(d, bias, kernel="int8")
    assert torch.equal(layer.dequantized_weight(), d.dequantize())
    y, ref = layer(x), layer.reference(x)
    assert (y - ref).abs().max() <= 1e-5 * ref.abs().max()


def test_large_multipliers_use_the_zero_as_offset():
    # a row whose group scales are large against its channel scale: S2 > 16 -> stored relative to z
    d = dgq.DGQWeight(codes=torch.tensor([[0, 10, 3, 9]], dtype=torch.uint8), zeros=torch.tensor([[4, 10]], dtype=torch.uint8),
                      multipliers=torch.tensor([[20, 3]], dtype=torch.int16), channel_scales=torch.tensor([0.5]), group=2)
    codes, s2, _, corr = d.qmatmul_codes()
    assert codes.tolist() == [[-4, 6, -5, 1]]  # group 0: q - z (S2 = 20); group 1: q - 8 (S2 = 3)
    assert corr.tolist() == [[0, 3 * (10 - 8)]]
    assert torch.equal((codes.to(torch.int32) * s2.to(torch.int32).repeat_interleave(2, 1)) - corr.repeat_interleave(2, 1), d.w_s8())


def test_group_must_divide_in_features():
    with pytest.raises(ValueError, match="group: must be even and divide in_features=100"):
        dgq.search(torch.randn(4, 100), None, group=64)


def test_baselines_use_numformats_and_smoothing_keeps_the_product():
    w, x = _layer()
    lin = torch.nn.Linear(256, 64)
    with torch.no_grad():
        lin.weight.copy_(w)
    s = methods.Settings(group=64)
    sm = methods.smoothing("percentile", x, w, s)
    assert sm[7] > 1 and (sm >= 1).all() and (sm > 1).sum() <= 2
    fp = methods.quantize_linear(lin, methods.Method("none", "none", "percentile"), x, s)
    assert torch.allclose(fp(x), lin(x), rtol=1e-4, atol=1e-4)  # smoothing alone changes nothing
    g = methods.quantize_linear(lin, methods.METHODS["a16w4_g128"], x, s)
    assert torch.equal(g.weight, nf.fake_quant(w, nf.per_group(nf.INT4_ASYM, 64)))
    with pytest.raises(ValueError, match="methods: 'w3a3' is not a method"):
        methods.get_method("w3a3")


def test_retrieval_agreement_and_cosine():
    e = torch.nn.functional.normalize(torch.randn(20, 8, generator=torch.Generator().manual_seed(0)), dim=-1)
    assert methods.topk_agreement(e, e, 5) == 1.0 and methods.cosine(e, e) == pytest.approx(1.0)
    assert methods.topk_agreement(e, e.flip(0), 5) < 1.0


def test_groupwise_and_a16w4_kernels_match_their_references():
    torch.manual_seed(0)
    mods = speed.build(256, 128 + 128, 128, seed=0, n1=2, n2=4)
    x = torch.randn(16, 256)
    for name in ("groupwise_w4a8", "groupwise_w4a8_int_mm"):
        gw = mods[name]
        ref = torch.nn.functional.linear(nf.fake_quant(x, qmatmul.INT8_SYM), gw.dequantized_weight(), gw.bias)
        assert (gw(x) - ref).abs().max() <= 1e-5 * ref.abs().max(), name
    a16 = mods["a16w4"]
    assert torch.allclose(a16(x), torch.nn.functional.linear(x, a16.q.dequantized_weight(), a16.q.bias))
    lifted, d = mods["dgq_lifted"], mods["dgq"]
    assert (lifted(x) - d(x)).abs().max() <= 1e-4 * d(x).abs().max()


@pytest.mark.skipif(not qmatmul.has_onednn_qlinear(), reason="needs torch.ops.onednn (x86)")
def test_groupwise_baseline_does_only_per_call_work(monkeypatch):
    # the timed group-wise W4A8 prepacks its weights at construction: a call neither repacks them
    # (torch._int_mm repacks inside oneDNN at every call on the CPU) nor re-quantises a float weight
    torch.manual_seed(0)
    w, b, x = torch.randn(64, 256) * 0.02, torch.randn(64), torch.randn(5, 256)
    gw = speed.GroupwiseW4A8(w, b, 128)
    ref = speed.GroupwiseW4A8(w, b, 128, kernel="int_mm")(x)

    def forbidden(*_a, **_k):
        raise AssertionError("per-call weight work")

    monkeypatch.setattr(torch, "_int_mm", forbidden)
    monkeypatch.setattr(speed.nf, "quantize_blocks", forbidden)
    monkeypatch.setattr(torch.ops.onednn, "qlinear_prepack", forbidden, raising=False)
    y = gw(x)
    assert (y - ref).abs().max() <= 1e-5 * ref.abs().max()
    with pytest.raises(ValueError, match="kernel: 'cutlass' is not an option"):
        speed.GroupwiseW4A8(w, b, 128, kernel="cutlass")


def test_a16w4_baseline_keeps_only_the_packed_int4_weight():
    # dequantise-then-GEMM: a call unpacks the stored int4 codes (half a byte per weight) and applies
    # scales and zeros; no full-size weight is kept, so none can be reused between calls
    lin = torch.nn.Linear(256, 64)
    a16 = speed.DequantA16W4(lin, 128)
    full = [n for n, t in a16.named_buffers() if t.numel() >= lin.weight.numel()]
    assert full == [] and a16.q.packed.dtype == torch.uint8 and a16.q.packed.numel() == lin.weight.numel() // 2
    assert not any(p.numel() >= lin.weight.numel() for p in a16.parameters())


def test_params_reject_bad_values_in_one_line():
    import yaml

    from paper29.config import Params
    from shared.paths import ROOT

    base = yaml.safe_load((ROOT / "pipelines/conf/p29/base.yaml").read_text())
    Params(**base)
    with pytest.raises(ValueError, match="speed_sizes: every size must be a multiple of speed_group=128"):
        Params(**{**base, "speed_sizes": [1000]})
    with pytest.raises(ValueError, match="methods: fp32 is the reference"):
        Params(**{**base, "methods": ["fp32", "dgq"]})
    with pytest.raises(ValueError, match="methods: must include dgq"):
        Params(**{**base, "methods": ["w8a8"]})


class _Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(1)
        self.a, self.b = torch.nn.Linear(128, 64), torch.nn.Linear(64, 128)
        with torch.no_grad():
            for lin in (self.a, self.b):
                lin.weight.copy_(torch.randn(lin.weight.shape, generator=g) * 0.05)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


def test_only_calibrated_linears_are_quantised_and_the_lift_report_holds():
    model = _Tiny()
    x = torch.randn(40, 128, generator=torch.Generator().manual_seed(2))
    calib = methods.capture_inputs(model, lambda: model(x), prefixes=("a",))
    assert list(calib) == ["a"] and calib["a"].shape == (40, 128)
    s = methods.Settings(group=32, n1=4, n2=8)
    qmodel, layers = methods.quantize_model(model, "dgq", calib, s)
    assert list(layers) == ["a"] and type(qmodel.b) is torch.nn.Linear  # b stays FP32
    rep = methods.lift_report(layers, calib)
    assert rep["lift_in_range_frac"] == 1.0 and rep["lift_bit_mismatches"] == 0
    assert rep["dgq_kernel_max_rel_err"] <= 1e-5 and 1 <= rep["dgq_s2_max"] <= 127
    w = layers["a"].dgq_weight
    w.channel_scales[0] += 1e-3  # s1 off the FP16 grid: the two readings and the kernel's storage disagree
    assert methods.lift_report(layers, calib)["lift_bit_mismatches"] > 0
    with pytest.raises(ValueError, match="methods: 'dgq' must be listed"):
        methods.lift_report({}, calib)


def test_quality_metrics_ratios():
    import pandas as pd

    table = pd.DataFrame({"method": ["w4a8_channel", "w4a8_g128", "dgq", "dgq_noclip", "dgq_nosmooth"],
                          "layer_rel_mse": [0.04, 0.012, 0.01, 0.02, 0.008], "cosine": [0.95, 0.97, 0.975, 0.96, 0.98],
                          "topk_agreement": [0.7, 0.8, 0.82, 0.75, 0.83]})  # fmt: skip
    m = methods.quality_metrics(table, 10)
    assert m["mse_ratio_dgq_g128"] == pytest.approx(0.8333, abs=1e-4) and m["mse_ratio_dgq_channel"] == 0.25
    assert m["cos_dgq_minus_channel"] == pytest.approx(0.025) and m["mse_ratio_dgq_clip_noclip"] == 0.5
    assert m["mse_ratio_dgq_clip_nosmooth"] == 1.25 and m["cos_dgq_clip_minus_nosmooth"] == pytest.approx(-0.005)
    assert m["top10_dgq"] == 0.82
    assert "mse_ratio_dgq_clip_noclip" not in methods.quality_metrics(table.iloc[:3], 10)
    assert "mse_ratio_dgq_clip_nosmooth" not in methods.quality_metrics(table.iloc[:4], 10)
    assert methods.METHODS["dgq_nosmooth"] == methods.Method("dgq", "int8", "none")  # same DGQ, no smoothing
    ppl = pd.DataFrame({"method": ["fp32", "w4a8_channel", "dgq"], "perplexity": [10.0, 12.5, 11.0]})
    pm = methods.perplexity_metrics(ppl)
    assert pm == {"ppl_fp32": 10.0, "ppl_w4a8_channel": 12.5, "ppl_dgq": 11.0, "ppl_ratio_dgq_channel": 0.88, "ppl_ratio_dgq_fp32": 1.1}


def test_speed_summary_reads_the_largest_size():
    import pandas as pd

    rows = []
    for size, m, base in [(256, 16, 1.0), (512, 1, 2.0), (512, 16, 4.0), (512, 64, 8.0)]:
        for k, f in {"dgq": 1, "dgq_lifted": 0.5, "groupwise_w4a8": 3, "groupwise_w4a8_int_mm": 5, "a16w4": 2,
                     "a16w4_int4pack": 1.5, "fp32": 4}.items():  # fmt: skip
            rows.append({"size": size, "m": m, "kernel": k, "median_s": base * f * (1 + (k == "groupwise_w4a8") * (m == 64))})
    out = speed.summary(pd.DataFrame(rows))
    assert out["speed_size"] == 512
    assert out["speed_groupwise_prepacked_over_dgq_min_m16"] == 3.0  # M = 16 and 64 only (M = 1 excluded): min(3, 6)
    assert out["speed_groupwise_prepacked_over_lifted_min_m16"] == 6.0
    assert out["speed_groupwise_int_mm_over_dgq_min_m16"] == 5.0 and out["speed_groupwise_int_mm_over_lifted_min_m16"] == 10.0
    assert out["speed_a16w4_over_dgq_min"] == 2.0 and out["speed_fp32_over_dgq_max"] == 4.0
    assert out["speed_groupwise_w4a8_over_dgq_k256_m16"] == 3.0
    only_m1 = speed.summary(pd.DataFrame([r for r in rows if r["m"] == 1]))
    assert "speed_groupwise_prepacked_over_dgq_min_m16" not in only_m1
