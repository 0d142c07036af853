// A8W4 (DGQ) and few-token W8A8 kernels for x86 CPUs with AVX512-BW and AVX512-VNNI, compiled at first use by
// shared/qmatmul.py (torch.utils.cpp_extension.load; ops registered as torch.ops.efflab_qmm.*).
//
// Weight layout (shared/qmatmul.py): packed uint8 [N/2, K], byte (r, k) holds q[r, k] + 8 in its
// low nibble and q[r + N/2, k] + 8 in its high nibble, q in [-8, 7]; integer group scales
// gs int8 [N, K/group] with q * gs in int8; FP32 channel scales sc [N].
//
// a8w4_gemm: y[m, n] = float(sum_k a[m, k] * w8[n, k]) * sx[m] * sc[n], FP32 [M, N], where a, sx
// are the per-token symmetric int8 codes and scales of x (the same numbers as
// qmatmul.quantize_tokens) and w8 = q * gs. Each thread takes a range of byte rows; one byte row
// (two weight rows) is read from memory once, unpacked with one vpshufb per 64 weights (a
// 16-entry table (u - 8) * gs per group) into an L1 buffer, and multiplied by every token with
// vpdpbusd (u8 x s8): the activations enter as a + 128 (u8) and the 128 * sum_k w8[n, k] this
// adds is subtracted in the epilogue. Integer sums wrap mod 2^32, so the result is exact whenever
// the true int32 result fits (as for torch._int_mm).
//
// a8w4_unpack: w8 int8 [N, K] (for torch._int_mm at large M).
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <tuple>
#include <vector>

namespace {

constexpr int64_t kChunk = 64;  // bytes per zmm
constexpr int64_t kPad = 128;   // activation / buffer rows are padded with zeros to a multiple of this
constexpr int kTokens = 8;      // tokens per register block

struct Lut {  // lut[s][u] = (u - 8) * s + 128 as uint8 (w8 + 128), for every int8 group scale s
  alignas(64) uint8_t v[256][16];
  Lut() {
    for (int s = 0; s < 256; ++s)
      for (int u = 0; u < 16; ++u) v[s][u] = static_cast<uint8_t>((u - 8) * static_cast<int8_t>(s) + 128);
  }
};
const Lut kLut;

inline __m512i table(int8_t s) {
  return _mm512_broadcast_i32x4(_mm_load_si128(reinterpret_cast<const __m128i*>(kLut.v[static_cast<uint8_t>(s)])));
}

inline __mmask64 tail_mask(int64_t n) { return n >= 64 ? ~__mmask64(0) : ((__mmask64(1) << n) - 1); }

inline void nibbles(const uint8_t* p, __m512i& lo, __m512i& hi) {
  const __m512i low4 = _mm512_set1_epi8(0x0F);
  const __m512i b = _mm512_loadu_si512(p);
  lo = _mm512_and_si512(b, low4);
  hi = _mm512_and_si512(_mm512_srli_epi16(b, 4), low4);
}

// Unpack one byte row (K bytes) into two rows of w8 + 128 (u8; ``signed_out``: w8 as int8).
// ``padded``: the destinations hold a multiple of kPad bytes, the tail is written as zeros (then
// multiplied by zero activations); else the tail store is masked. Any even group size.
void unpack_row(const uint8_t* src, int64_t K, int64_t group, const int8_t* gs0, const int8_t* gs1,
                uint8_t* d0, uint8_t* d1, bool padded, bool signed_out) {
  const __m512i low4 = _mm512_set1_epi8(0x0F), flip = _mm512_set1_epi8(signed_out ? -128 : 0);
  if (group % kChunk == 0 && (!padded || K % kPad == 0)) {  // one table per group and row
    for (int64_t g = 0, k0 = 0; k0 < K; ++g) {
      const __m512i t0 = _mm512_xor_si512(table(gs0[g]), flip), t1 = _mm512_xor_si512(table(gs1[g]), flip);
      for (const int64_t end = k0 + group; k0 < end; k0 += kChunk) {
        __m512i lo, hi;
        nibbles(src + k0, lo, hi);
        _mm512_storeu_si512(d0 + k0, _mm512_shuffle_epi8(t0, lo));
        _mm512_storeu_si512(d1 + k0, _mm512_shuffle_epi8(t1, hi));
      }
    }
    return;
  }
  const int64_t Kp = padded ? (K + kPad - 1) / kPad * kPad : K;
  for (int64_t k0 = 0; k0 < Kp; k0 += kChunk) {
    const int64_t len = K - k0 < kChunk ? (K > k0 ? K - k0 : 0) : kChunk;
    const __mmask64 tail = tail_mask(len);
    const __m512i b = _mm512_maskz_loadu_epi8(tail, src + k0);
    const __m512i lo = _mm512_and_si512(b, low4);
    const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(b, 4), low4);
    __m512i w0 = _mm512_setzero_si512(), w1 = _mm512_setzero_si512();
    for (int64_t g = k0 / group; g * group < k0 + len; ++g) {  // the groups this chunk meets
      const int64_t s = g * group > k0 ? g * group - k0 : 0;
      const int64_t e = (g + 1) * group - k0 < len ? (g + 1) * group - k0 : len;
      const __mmask64 m = tail_mask(e) & ~tail_mask(s);
      w0 = _mm512_mask_shuffle_epi8(w0, m, table(gs0[g]), lo);
      w1 = _mm512_mask_shuffle_epi8(w1, m, table(gs1[g]), hi);
    }
    w0 = _mm512_xor_si512(w0, flip);
    w1 = _mm512_xor_si512(w1, flip);
    if (padded || len == kChunk) {
      _mm512_storeu_si512(d0 + k0, w0);
      _mm512_storeu_si512(d1 + k0, w1);
    } else {
      _mm512_mask_storeu_epi8(d0 + k0, tail, w0);
      _mm512_mask_storeu_epi8(d1 + k0, tail, w1);
    }
  }
}

// Per-token symmetric int8 of x FP32 [M, K]: s = amax / 127, code = round_half_even(x / s)
// (x / inf = 0 for an all-zero token) - the ops of qmatmul.quantize_tokens - into a [M, Kp]
// (zero pad), scales sx [M] and code sums asum [M].
void quantize_tokens(const float* x, int64_t M, int64_t K, int64_t Kp, int8_t* a, float* sx, int32_t* asum) {
  at::parallel_for(0, M, 16, [&](int64_t b, int64_t e) {
    for (int64_t m = b; m < e; ++m) {
      const float* xr = x + m * K;
      __m512 amax = _mm512_setzero_ps();
      int64_t k = 0;
      for (; k + 16 <= K; k += 16) amax = _mm512_max_ps(amax, _mm512_abs_ps(_mm512_loadu_ps(xr + k)));
      float am = _mm512_reduce_max_ps(amax);
      for (; k < K; ++k) am = std::max(am, std::fabs(xr[k]));
      const float s = am / 127.0f;
      sx[m] = s;
      const __m512 sv = _mm512_set1_ps(s == 0.0f ? __builtin_inff() : s);
      const __m512 lo = _mm512_set1_ps(-127.0f), hi = _mm512_set1_ps(127.0f);
      __m512i sum = _mm512_setzero_si512();
      int8_t* ar = a + m * Kp;
      for (k = 0; k < K; k += 16) {
        const __mmask16 t = K - k >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (K - k)) - 1);
        __m512 q = _mm512_div_ps(_mm512_maskz_loadu_ps(t, xr + k), sv);
        q = _mm512_roundscale_ps(q, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        q = _mm512_min_ps(_mm512_max_ps(q, lo), hi);
        const __m512i c = _mm512_maskz_mov_epi32(t, _mm512_cvtps_epi32(q));
        sum = _mm512_add_epi32(sum, c);
        _mm512_mask_cvtepi32_storeu_epi8(ar + k, t, c);
      }
      asum[m] = _mm512_reduce_add_epi32(sum);
      std::memset(ar + K, 0, Kp - K);
    }
  });
}

// The U chains of each of T tokens x two rows, summed into int32 dot products.
template <int T, int U>
inline void reduce_acc(__m512i (&acc0)[U][T], __m512i (&acc1)[U][T], int32_t* out0, int32_t* out1) {
  for (int t = 0; t < T; ++t) {
    for (int u = 1; u < U; ++u) {
      acc0[0][t] = _mm512_add_epi32(acc0[0][t], acc0[u][t]);
      acc1[0][t] = _mm512_add_epi32(acc1[0][t], acc1[u][t]);
    }
    out0[t] = _mm512_reduce_add_epi32(acc0[0][t]);
    out1[t] = _mm512_reduce_add_epi32(acc1[0][t]);
  }
}

// T tokens x two rows, U independent accumulator chains (latency): the (w8 + 128) x a dot
// products over the whole row; w0/w1 yield the two rows' u8 vectors of the 64 weights at k.
template <int T, int U, class Weights>
inline void dot_rows(const int8_t* a, int64_t Kp, int64_t K, Weights weights, int32_t* out0, int32_t* out1) {
  __m512i acc0[U][T], acc1[U][T];
  for (int u = 0; u < U; ++u)
    for (int t = 0; t < T; ++t) acc0[u][t] = acc1[u][t] = _mm512_setzero_si512();
  for (int64_t k = 0; k < K; k += U * kChunk) {
    for (int u = 0; u < U; ++u) {
      __m512i v0, v1;
      weights(k + u * kChunk, v0, v1);
      for (int t = 0; t < T; ++t) {
        const __m512i x = _mm512_loadu_si512(a + t * Kp + k + u * kChunk);
        acc0[u][t] = _mm512_dpbusd_epi32(acc0[u][t], v0, x);
        acc1[u][t] = _mm512_dpbusd_epi32(acc1[u][t], v1, x);
      }
    }
  }
  reduce_acc<T, U>(acc0, acc1, out0, out1);
}

struct Job {
  const uint8_t* packed;
  const int8_t* gs;
  int64_t K, Kp, G, group, half;
};

// From the unpacked (L1) buffer of one byte row: any group, any K.
template <int T>
void dot_buffer(const Job& j, const uint8_t* w, const int8_t* a, int32_t* d0, int32_t* d1) {
  const uint8_t* w1 = w + j.Kp;
  dot_rows<T, (T <= 4 ? 2 : 1)>(a, j.Kp, j.Kp, [&](int64_t k, __m512i& v0, __m512i& v1) {
    v0 = _mm512_loadu_si512(w + k);
    v1 = _mm512_loadu_si512(w1 + k);
  }, d0, d1);
}

// Straight from the packed row (group a power of two and a multiple of 64 * U): unpacked in
// registers, one table per row and 64 * U weights (an L1 broadcast load); the packed stream is
// prefetched into L2 kPrefetch bytes ahead. Without it the unpacking and the DRAM reads hardly
// overlapped (cold 4096 x 4096, M = 1, 2 threads: 0.49 ms, the pure read 0.32 ms, the hot kernel 0.16 ms);
// into L2 4 KiB ahead: 0.36-0.38 ms. Into L1 (any distance 1-8 KiB) it stayed at ~0.46-0.49 ms.
constexpr int64_t kPrefetch = 4096;
template <int T, int U>
void dot_packed(const Job& j, int64_t r, const int8_t* a, int32_t* out0, int32_t* out1) {
  const uint8_t* src = j.packed + r * j.K;
  const int8_t* g0 = j.gs + r * j.G;
  const int8_t* g1 = j.gs + (r + j.half) * j.G;
  const int shift = __builtin_ctzll(static_cast<uint64_t>(j.group));
  const __m512i low4 = _mm512_set1_epi8(0x0F);
  __m512i acc0[U][T], acc1[U][T];
  for (int u = 0; u < U; ++u)
    for (int t = 0; t < T; ++t) acc0[u][t] = acc1[u][t] = _mm512_setzero_si512();
  for (int64_t k = 0; k < j.K; k += U * kChunk) {
    const int64_t g = k >> shift;
    const __m512i t0 = table(g0[g]), t1 = table(g1[g]);
    for (int u = 0; u < U; ++u) {
      const uint8_t* p = src + k + u * kChunk;
      _mm_prefetch(reinterpret_cast<const char*>(p + kPrefetch), _MM_HINT_T1);
      const __m512i b = _mm512_loadu_si512(p);
      const __m512i v0 = _mm512_shuffle_epi8(t0, _mm512_and_si512(b, low4));
      const __m512i v1 = _mm512_shuffle_epi8(t1, _mm512_and_si512(_mm512_srli_epi16(b, 4), low4));
      for (int t = 0; t < T; ++t) {
        const __m512i x = _mm512_loadu_si512(a + t * j.Kp + k + u * kChunk);
        acc0[u][t] = _mm512_dpbusd_epi32(acc0[u][t], v0, x);
        acc1[u][t] = _mm512_dpbusd_epi32(acc1[u][t], v1, x);
      }
    }
  }
  reduce_acc<T, U>(acc0, acc1, out0, out1);
}

using BufFn = void (*)(const Job&, const uint8_t*, const int8_t*, int32_t*, int32_t*);
constexpr BufFn kBuf[kTokens + 1] = {nullptr, dot_buffer<1>, dot_buffer<2>, dot_buffer<3>, dot_buffer<4>,
                                     dot_buffer<5>, dot_buffer<6>, dot_buffer<7>, dot_buffer<8>};
using PackedFn = void (*)(const Job&, int64_t, const int8_t*, int32_t*, int32_t*);
constexpr PackedFn kPacked[kTokens + 1] = {nullptr, dot_packed<1, 2>, dot_packed<2, 2>, dot_packed<3, 2>,
                                           dot_packed<4, 2>, dot_packed<5, 1>, dot_packed<6, 1>,
                                           dot_packed<7, 1>, dot_packed<8, 1>};

void check(const at::Tensor& packed, const at::Tensor& gs) {
  TORCH_CHECK(packed.dim() == 2 && packed.scalar_type() == at::kByte && packed.is_contiguous() && packed.is_cpu(),
              "packed: must be a contiguous CPU uint8 [N/2, K] tensor");
  TORCH_CHECK(gs.dim() == 2 && gs.scalar_type() == at::kChar && gs.is_contiguous() && gs.size(0) == 2 * packed.size(0) &&
                  gs.size(1) > 0 && packed.size(1) % gs.size(1) == 0 && (packed.size(1) / gs.size(1)) % 2 == 0,
              "group_scales: must be a contiguous int8 [N, K/group] tensor, group even");
}

// Every kernel's inputs: x FP32 [M, K] and channel scales sc FP32 [N] checked, x quantised per
// token into a [rows, stride] (stride = Kp + extra bytes, rows = M rounded up to row_multiple; the
// padding zero), its scales sx and code sums asum.
struct Tokens {
  int64_t M, Kp, stride, rows;
  std::vector<int8_t> a;
  std::vector<float> sx;
  std::vector<int32_t> asum;
  Tokens(const at::Tensor& x, const at::Tensor& sc, int64_t N, int64_t K, int64_t extra = 0, int64_t row_multiple = 1)
      : M(x.dim() == 2 ? x.size(0) : 0), Kp((K + kPad - 1) / kPad * kPad), stride(Kp + extra),
        rows((M + row_multiple - 1) / row_multiple * row_multiple) {
    TORCH_CHECK(sc.dim() == 1 && sc.scalar_type() == at::kFloat && sc.is_contiguous() && sc.size(0) == N,
                "channel_scales: must be a contiguous FP32 [N] tensor");
    TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kFloat && x.is_contiguous() && x.size(1) == K,
                "x: must be a contiguous FP32 [M, in_features] tensor");
    a.resize(static_cast<size_t>(rows * stride));  // value-initialised: the padding rows are zero
    sx.resize(static_cast<size_t>(M));
    asum.resize(static_cast<size_t>(M));
    if (M > 0) quantize_tokens(x.data_ptr<float>(), M, K, stride, a.data(), sx.data(), asum.data());
  }
  // y[m, n] from the (w + 128) x a dot product d: minus 128 * sum(a), then the FP32 ops of the
  // int8 path (acc.float() * sx * sc), in its order
  float out(int32_t d, int64_t m, float sc) const {
    const uint32_t c = 128u * static_cast<uint32_t>(asum[m]);
    return static_cast<float>(static_cast<int32_t>(static_cast<uint32_t>(d) - c)) * sx[m] * sc;
  }
};

at::Tensor a8w4_gemm(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& gs, const at::Tensor& sc) {
  check(packed, gs);
  const int64_t half = packed.size(0), K = packed.size(1), N = 2 * half, G = gs.size(1);
  const Tokens tk(x, sc, N, K);
  const int64_t M = tk.M, Kp = tk.Kp;
  at::Tensor y = at::empty({M, N}, x.options());
  if (M == 0 || N == 0) return y;
  const int8_t* a = tk.a.data();
  const Job j{packed.data_ptr<uint8_t>(), gs.data_ptr<int8_t>(), K, Kp, G, K / G, half};
  const bool pow2 = (j.group & (j.group - 1)) == 0;
  const int fused_u = M > kTokens || !pow2 || j.group % kChunk ? 0 : (j.group % (2 * kChunk) == 0 && M <= 4 ? 2 : 1);
  const float* s = sc.data_ptr<float>();
  float* out = y.data_ptr<float>();
  at::parallel_for(0, half, std::max<int64_t>(1, 16384 / K), [&](int64_t rb, int64_t re) {
    std::vector<uint8_t> w(fused_u ? 0 : static_cast<size_t>(2 * Kp));
    int32_t d0[kTokens], d1[kTokens];
    for (int64_t r = rb; r < re; ++r) {
      const int64_t n0 = r, n1 = r + half;
      if (!fused_u) unpack_row(j.packed + r * K, K, j.group, j.gs + n0 * G, j.gs + n1 * G, w.data(), w.data() + Kp, true, false);
      for (int64_t m0 = 0; m0 < M; m0 += kTokens) {
        const int T = static_cast<int>(std::min<int64_t>(kTokens, M - m0));
        const int8_t* am = a + m0 * Kp;
        if (fused_u == 1 && T > 4) kPacked[T](j, r, am, d0, d1);
        else if (fused_u == 1) (T == 1 ? dot_packed<1, 1> : T == 2 ? dot_packed<2, 1> : T == 3 ? dot_packed<3, 1> : dot_packed<4, 1>)(j, r, am, d0, d1);
        else if (fused_u == 2) kPacked[T](j, r, am, d0, d1);
        else kBuf[T](j, w.data(), am, d0, d1);
        for (int t = 0; t < T; ++t) {
          out[(m0 + t) * N + n0] = tk.out(d0[t], m0 + t, s[n0]);
          out[(m0 + t) * N + n1] = tk.out(d1[t], m0 + t, s[n1]);
        }
      }
    }
  });
  return y;
}

// ----------------------------------------------------------------------------- W8A8, few tokens
// w8a8_gemv: the same y as a8w4_gemm for plain int8 weights w [N, K] (W8A8, per-channel scales):
// rows r and r + ceil(N/2) are streamed together (two prefetched streams), each 64 weights
// flipped to w + 128 (u8) by one xor, and the 128 * sum(a) this adds is subtracted per token.
// For few tokens (oneDNN's prepacked GEMM is faster from M ~ 12 on: qmatmul.W8A8_VNNI_MAX_M).
template <int T, int U>
void dot_int8_rows(const int8_t* w0, const int8_t* w1, int64_t K, const int8_t* a, int64_t Kp, int32_t* out0,
                   int32_t* out1) {
  const __m512i flip = _mm512_set1_epi8(-128);
  dot_rows<T, U>(a, Kp, Kp, [&](int64_t k, __m512i& v0, __m512i& v1) {
    _mm_prefetch(reinterpret_cast<const char*>(w0 + k + kPrefetch), _MM_HINT_T1);
    _mm_prefetch(reinterpret_cast<const char*>(w1 + k + kPrefetch), _MM_HINT_T1);
    if (k + kChunk <= K) {
      v0 = _mm512_loadu_si512(w0 + k);
      v1 = _mm512_loadu_si512(w1 + k);
    } else {  // the row's tail (or past it: zeros, times the zero padding of a)
      const __mmask64 t = tail_mask(K > k ? K - k : 0);
      v0 = _mm512_maskz_loadu_epi8(t, w0 + k);
      v1 = _mm512_maskz_loadu_epi8(t, w1 + k);
    }
    v0 = _mm512_xor_si512(v0, flip);
    v1 = _mm512_xor_si512(v1, flip);
  }, out0, out1);
}

using Int8Fn = void (*)(const int8_t*, const int8_t*, int64_t, const int8_t*, int64_t, int32_t*, int32_t*);
constexpr Int8Fn kInt8[kTokens + 1] = {nullptr, dot_int8_rows<1, 2>, dot_int8_rows<2, 2>, dot_int8_rows<3, 2>,
                                       dot_int8_rows<4, 2>, dot_int8_rows<5, 1>, dot_int8_rows<6, 1>,
                                       dot_int8_rows<7, 1>, dot_int8_rows<8, 1>};

at::Tensor w8a8_gemv(const at::Tensor& x, const at::Tensor& w, const at::Tensor& sc) {
  TORCH_CHECK(w.dim() == 2 && w.scalar_type() == at::kChar && w.is_contiguous() && w.is_cpu(),
              "weight: must be a contiguous CPU int8 [N, K] tensor");
  const int64_t N = w.size(0), K = w.size(1), half = (N + 1) / 2;
  const Tokens tk(x, sc, N, K);
  const int64_t M = tk.M, Kp = tk.Kp;
  at::Tensor y = at::empty({M, N}, x.options());
  if (M == 0 || N == 0) return y;
  const int8_t* wp = w.data_ptr<int8_t>();
  const float* s = sc.data_ptr<float>();
  float* out = y.data_ptr<float>();
  at::parallel_for(0, half, std::max<int64_t>(1, 16384 / std::max<int64_t>(K, 1)), [&](int64_t rb, int64_t re) {
    int32_t d0[kTokens], d1[kTokens];
    for (int64_t r = rb; r < re; ++r) {
      const int64_t n0 = r, n1 = r + half < N ? r + half : r;  // odd N: the last row pairs with itself
      for (int64_t m0 = 0; m0 < M; m0 += kTokens) {
        const int T = static_cast<int>(std::min<int64_t>(kTokens, M - m0));
        kInt8[T](wp + n0 * K, wp + n1 * K, K, tk.a.data() + m0 * Kp, Kp, d0, d1);
        for (int t = 0; t < T; ++t) {
          out[(m0 + t) * N + n0] = tk.out(d0[t], m0 + t, s[n0]);
          if (n1 != n0) out[(m0 + t) * N + n1] = tk.out(d1[t], m0 + t, s[n1]);
        }
      }
    }
  });
  return y;
}

// Per-token int8 codes and scales of x, as qmatmul.quantize_tokens: (codes int8 [M, K], scales FP32 [M, 1]).
std::tuple<at::Tensor, at::Tensor> quantize_rows(const at::Tensor& x) {
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kFloat && x.is_contiguous() && x.is_cpu(),
              "x: must be a contiguous FP32 CPU [M, K] tensor");
  const int64_t M = x.size(0), K = x.size(1);
  at::Tensor codes = at::empty({M, K}, x.options().dtype(at::kChar));
  at::Tensor sx = at::empty({M, 1}, x.options());
  std::vector<int32_t> asum(static_cast<size_t>(M));
  if (M > 0 && K > 0) quantize_tokens(x.data_ptr<float>(), M, K, K, codes.data_ptr<int8_t>(), sx.data_ptr<float>(), asum.data());
  return {codes, sx};
}

// acc int32 [M, N] -> FP32 acc * sx[m] * sc[n] (the same ops, in the same order, as
// acc.float() * sx * sc in torch), in place: the result is acc's storage viewed as FP32 - one
// pass and no new [M, N] buffer (a fresh large allocation costs page faults at every call).
at::Tensor scale_int32(const at::Tensor& acc, const at::Tensor& sx, const at::Tensor& sc) {
  TORCH_CHECK(acc.dim() == 2 && acc.scalar_type() == at::kInt && acc.is_contiguous() && acc.is_cpu(),
              "acc: must be a contiguous int32 CPU [M, N] tensor");
  const int64_t M = acc.size(0), N = acc.size(1);
  TORCH_CHECK(sx.scalar_type() == at::kFloat && sx.is_contiguous() && sx.numel() == M, "sx: must be FP32 with M values");
  TORCH_CHECK(sc.scalar_type() == at::kFloat && sc.is_contiguous() && sc.numel() == N, "sc: must be FP32 with N values");
  const int32_t* a = acc.data_ptr<int32_t>();
  const float* px = sx.data_ptr<float>();
  const float* pc = sc.data_ptr<float>();
  float* o = reinterpret_cast<float*>(acc.data_ptr<int32_t>());
  at::parallel_for(0, M, std::max<int64_t>(1, 16384 / std::max<int64_t>(N, 1)), [&](int64_t b, int64_t e) {
    for (int64_t m = b; m < e; ++m) {
      const __m512 s = _mm512_set1_ps(px[m]);
      for (int64_t n = 0; n < N; n += 16) {
        const __mmask16 t = N - n >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (N - n)) - 1);
        const __m512 v = _mm512_cvtepi32_ps(_mm512_maskz_loadu_epi32(t, a + m * N + n));
        _mm512_mask_storeu_ps(o + m * N + n, t, _mm512_mul_ps(_mm512_mul_ps(v, s), _mm512_maskz_loadu_ps(t, pc + n)));
      }
    }
  });
  return acc.view(at::kFloat);
}

void a8w4_unpack(const at::Tensor& packed, const at::Tensor& gs, const at::Tensor& out) {
  check(packed, gs);
  const int64_t half = packed.size(0), K = packed.size(1), G = gs.size(1), group = K / G;
  TORCH_CHECK(out.scalar_type() == at::kChar && out.is_contiguous() && out.dim() == 2 && out.size(0) == 2 * half &&
                  out.size(1) == K,
              "out: must be a contiguous int8 [N, K] tensor");
  const uint8_t* pk = packed.data_ptr<uint8_t>();
  const int8_t* g = gs.data_ptr<int8_t>();
  uint8_t* o = reinterpret_cast<uint8_t*>(out.data_ptr<int8_t>());
  at::parallel_for(0, half, std::max<int64_t>(1, 16384 / K), [&](int64_t rb, int64_t re) {
    for (int64_t r = rb; r < re; ++r)
      unpack_row(pk + r * K, K, group, g + r * G, g + (r + half) * G, o + r * K, o + (r + half) * K, false, true);
  });
}

// ----------------------------------------------------------------------------- AMX (M large)
// y = A W8^T with A the activation codes [Mp, Kp] (zero pad) as AMX A tiles (16 tokens x 64 k,
// row-major, as stored) and W8 as B tiles in the VNNI layout (row kk of a tile = the 4 bytes
// k = 4kk..4kk+3 of 16 output rows): each block of 16 byte rows (32 output rows) is unpacked with
// vpshufb and transposed (16 x 16 dwords) into an L2 buffer once, then multiplied by every pair of
// 16-token blocks with tdpbssd (s8 x s8 -> s32; 4 accumulator tiles).
struct TileConfig {
  uint8_t palette = 1, start_row = 0, reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

bool amx_permission() {  // Linux: a process must ask for the AMX tile state once
  static const bool ok = syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XTILEDATA */) == 0;
  return ok;
}

inline void transpose16(__m512i r[16]) {  // 16 x 16 dwords, in registers
  __m512i t[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {
    r[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
    r[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
    r[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
    r[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
  }
  for (int i = 0; i < 16; i += 8)
    for (int j = 0; j < 4; ++j) {
      t[i + j] = _mm512_shuffle_i32x4(r[i + j], r[i + j + 4], 0x88);
      t[i + j + 4] = _mm512_shuffle_i32x4(r[i + j], r[i + j + 4], 0xDD);
    }
  for (int j = 0; j < 8; ++j) {
    r[j] = _mm512_shuffle_i32x4(t[j], t[j + 8], 0x88);
    r[j + 8] = _mm512_shuffle_i32x4(t[j], t[j + 8], 0xDD);
  }
}

// 64 k of one byte row -> two int8 vectors (rows r and r + N/2), any even group.
inline void unpack64(const uint8_t* src, int64_t k0, int64_t K, int64_t group, const int8_t* gs0, const int8_t* gs1,
                     __m512i& w0, __m512i& w1) {
  const __m512i low4 = _mm512_set1_epi8(0x0F), flip = _mm512_set1_epi8(-128);
  const int64_t len = K - k0 < kChunk ? K - k0 : kChunk;
  const __m512i b = _mm512_maskz_loadu_epi8(tail_mask(len), src + k0);
  const __m512i lo = _mm512_and_si512(b, low4), hi = _mm512_and_si512(_mm512_srli_epi16(b, 4), low4);
  if (group % kChunk == 0) {
    w0 = _mm512_shuffle_epi8(table(gs0[k0 / group]), lo);
    w1 = _mm512_shuffle_epi8(table(gs1[k0 / group]), hi);
  } else {
    w0 = w1 = _mm512_setzero_si512();
    for (int64_t g = k0 / group; g * group < k0 + len; ++g) {
      const int64_t s = g * group > k0 ? g * group - k0 : 0;
      const int64_t e = (g + 1) * group - k0 < len ? (g + 1) * group - k0 : len;
      const __mmask64 m = tail_mask(e) & ~tail_mask(s);
      w0 = _mm512_mask_shuffle_epi8(w0, m, table(gs0[g]), lo);
      w1 = _mm512_mask_shuffle_epi8(w1, m, table(gs1[g]), hi);
    }
  }
  w0 = _mm512_xor_si512(w0, flip);  // the table holds w8 + 128
  w1 = _mm512_xor_si512(w1, flip);
}

inline void epilogue16(const int32_t* c, int rows, int64_t m0, int64_t n0, int cols, const float* sx, const float* sc,
                       float* y, int64_t N) {
  const __mmask16 t = cols >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << cols) - 1);
  const __m512 s = _mm512_maskz_loadu_ps(t, sc + n0);
  for (int i = 0; i < rows; ++i) {
    const __m512 v = _mm512_cvtepi32_ps(_mm512_loadu_si512(c + 16 * i));
    _mm512_mask_storeu_ps(y + (m0 + i) * N + n0, t, _mm512_mul_ps(_mm512_mul_ps(v, _mm512_set1_ps(sx[m0 + i])), s));
  }
}

constexpr int64_t kSuper = 4;  // byte-row blocks unpacked together: each 32-token A slice is reused 4 times from L2

// One thread's share of a8w4_amx (super-blocks sb..se). Every value is a parameter, not a reference
// captured by the parallel_for lambda: OpenMP makes that closure escape, so after each vector store
// (which may alias anything) the compiler reloaded the captured values - 20 % slower on one thread
// (4096 x 4096, M = 16: 1.55 vs 1.27 ms cold) until this function took them by value.
static void amx_supers(int64_t sb, int64_t se, const uint8_t* pk, const int8_t* g, const float* s, float* out,
                       const int8_t* abase, const float* sxp, int64_t K, int64_t Ks, int64_t KC, int64_t half, int64_t G,
                       int64_t group, int64_t blocks, int64_t Mp, int64_t M, int64_t N, int64_t bsize) {
  TileConfig cfg;
  for (int i = 0; i < 8; ++i) cfg.colsb[i] = 64, cfg.rows[i] = 16;
  _tile_loadconfig(&cfg);
  int8_t* buf = static_cast<int8_t*>(aligned_alloc(64, static_cast<size_t>(kSuper * bsize + 4 * 1024)));
  int32_t* c = reinterpret_cast<int32_t*>(buf + kSuper * bsize);
  for (int64_t sup = sb; sup < se; ++sup) {
    const int64_t b0 = sup * kSuper, nb = std::min(kSuper, blocks - b0);
    for (int64_t bi = 0; bi < nb; ++bi) {
      const int64_t r0 = (b0 + bi) * 16;
      const int rows = static_cast<int>(std::min<int64_t>(16, half - r0));
      int8_t* blo = buf + bi * bsize;
      int8_t* bhi = blo + KC * 1024;
      for (int64_t kc = 0; kc < KC; ++kc) {
        __m512i lo[16], hi[16];
        for (int i = 0; i < 16; ++i) {
          const int64_t r = r0 + std::min(i, rows - 1);  // past the last row: a copy, never written out
          if (kc * kChunk < K) unpack64(pk + r * K, kc * kChunk, K, group, g + r * G, g + (r + half) * G, lo[i], hi[i]);
          else lo[i] = hi[i] = _mm512_setzero_si512();
        }
        transpose16(lo);
        transpose16(hi);
        for (int i = 0; i < 16; ++i) {
          _mm512_store_si512(blo + kc * 1024 + 64 * i, lo[i]);
          _mm512_store_si512(bhi + kc * 1024 + 64 * i, hi[i]);
        }
      }
    }
    asm volatile("" ::: "memory");  // the tile loads read the buffer
    for (int64_t mb = 0; mb < Mp; mb += 32) {
      const bool pair = mb + 32 <= Mp;
      const int8_t* a0 = abase + mb * Ks;
      const int8_t* a1 = a0 + 16 * Ks;
      const int rows0 = static_cast<int>(std::min<int64_t>(16, M - mb));
      const int rows1 = static_cast<int>(std::min<int64_t>(16, M - mb - 16));
      for (int64_t bi = 0; bi < nb; ++bi) {
        const int64_t r0 = (b0 + bi) * 16;
        const int rows = static_cast<int>(std::min<int64_t>(16, half - r0));
        const int8_t* blo = buf + bi * bsize;
        const int8_t* bhi = blo + KC * 1024;
        _tile_zero(0); _tile_zero(1);
        if (pair) {
          _tile_zero(2); _tile_zero(3);
          for (int64_t kc = 0; kc < KC; ++kc) {
            _tile_loadd(4, a0 + kc * kChunk, Ks);
            _tile_loadd(5, a1 + kc * kChunk, Ks);
            _tile_loadd(6, blo + kc * 1024, 64);
            _tile_loadd(7, bhi + kc * 1024, 64);
            _tile_dpbssd(0, 4, 6);
            _tile_dpbssd(1, 4, 7);
            _tile_dpbssd(2, 5, 6);
            _tile_dpbssd(3, 5, 7);
          }
          _tile_stored(2, c + 512, 64); _tile_stored(3, c + 768, 64);
        } else {
          for (int64_t kc = 0; kc < KC; ++kc) {
            _tile_loadd(4, a0 + kc * kChunk, Ks);
            _tile_loadd(6, blo + kc * 1024, 64);
            _tile_loadd(7, bhi + kc * 1024, 64);
            _tile_dpbssd(0, 4, 6);
            _tile_dpbssd(1, 4, 7);
          }
        }
        _tile_stored(0, c, 64); _tile_stored(1, c + 256, 64);
        epilogue16(c, rows0, mb, r0, rows, sxp, s, out, N);
        epilogue16(c + 256, rows0, mb, half + r0, rows, sxp, s, out, N);
        if (pair && rows1 > 0) {
          epilogue16(c + 512, rows1, mb + 16, r0, rows, sxp, s, out, N);
          epilogue16(c + 768, rows1, mb + 16, half + r0, rows, sxp, s, out, N);
        }
      }
    }
  }
  free(buf);
  _tile_release();
}

at::Tensor a8w4_amx(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& gs, const at::Tensor& sc) {
  check(packed, gs);
  TORCH_CHECK(amx_permission(), "AMX: the kernel refused the tile state (arch_prctl)");
  const int64_t half = packed.size(0), K = packed.size(1), N = 2 * half, G = gs.size(1), group = K / G;
  // activation rows padded to Kp + 64 bytes (a stride of a multiple of 4 KiB would put a tile's 16 rows
  // in one L1 set), and to a multiple of 16 rows (whole A tiles)
  const Tokens tk(x, sc, N, K, kChunk, 16);
  const int64_t M = tk.M, Ks = tk.stride, Mp = tk.rows, KC = tk.Kp / kChunk;
  at::Tensor y = at::empty({M, N}, x.options());
  if (M == 0 || N == 0) return y;
  const uint8_t* pk = packed.data_ptr<uint8_t>();
  const int8_t* g = gs.data_ptr<int8_t>();
  const float* s = sc.data_ptr<float>();
  float* out = y.data_ptr<float>();
  const int64_t blocks = (half + 15) / 16, supers = (blocks + kSuper - 1) / kSuper;
  const int64_t bsize = 2 * KC * 1024;  // one block's B tiles: low rows, then high rows
  at::parallel_for(0, supers, 1, [&](int64_t sb, int64_t se) {
    amx_supers(sb, se, pk, g, s, out, tk.a.data(), tk.sx.data(), K, Ks, KC, half, G, group, blocks, Mp, M, N, bsize);
  });
  return y;
}

bool has_amx() { return amx_permission(); }

// How many threads at::parallel_for ran the n items on, as this translation unit compiles it
// (a test: without -fopenmp the OpenMP pragma in ATen's header is dropped and it says 1).
int64_t parallel_threads(int64_t n) {
  std::vector<int> seen(static_cast<size_t>(std::max(at::get_num_threads(), 1)), 0);
  at::parallel_for(0, n, 1, [&](int64_t, int64_t) {
    const int t = at::get_thread_num();
    if (t >= 0 && t < static_cast<int>(seen.size())) seen[static_cast<size_t>(t)] = 1;
  });
  return std::count(seen.begin(), seen.end(), 1);
}

}  // namespace

TORCH_LIBRARY(efflab_qmm, m) {
  m.def("a8w4_gemm(Tensor x, Tensor packed, Tensor group_scales, Tensor channel_scales) -> Tensor", &a8w4_gemm);
  m.def("a8w4_amx(Tensor x, Tensor packed, Tensor group_scales, Tensor channel_scales) -> Tensor", &a8w4_amx);
  m.def("amx_ok() -> bool", &has_amx);
  m.def("parallel_threads(int n) -> int", &parallel_threads);
  m.def("w8a8_gemv(Tensor x, Tensor weight, Tensor channel_scales) -> Tensor", &w8a8_gemv);
  m.def("quantize_rows(Tensor x) -> (Tensor, Tensor)", &quantize_rows);
  m.def("scale_int32(Tensor(a!) acc, Tensor sx, Tensor sc) -> Tensor(a!)", &scale_int32);
  m.def("a8w4_unpack(Tensor packed, Tensor group_scales, Tensor(a!) out) -> ()", &a8w4_unpack);
}
