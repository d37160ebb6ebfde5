// Block-quantized matrix products for small row counts (decode steps), the layouts GGUF ships:
//   q4: blocks of 32 weights, w = d * q + m, q in 0..15 (Q4_1); two weights per byte, the low
//       nibble of byte j is weight j of the block, the high nibble weight j + 16;
//   q8: blocks of 32 weights, w = d * q, q in -128..127 (Q8_0).
// Single rows: y[r, n] = sum_b d[n, b] * dot(q[n, b, :], x[r, b, :]) (+ m[n, b] * sum(x[r, b, :])
// for q4). Tiles of 4 or 8 rows: each block is dequantized in registers to the fp32 weights
// once and used for every row of the tile, so the packed bytes are read once per tile.
#include "kernels.h"

#include <cmath>

namespace ragtune {
namespace {

inline __m256 bytes_to_ps(__m128i eight_in_low) {
  return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(eight_in_low));
}

inline __m256 sbytes_to_ps(__m128i eight_in_low) {
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(eight_in_low));
}

// Four vectors of 8 weights (block positions 0-7, 8-15, 16-23, 24-31) of a q4 block.
inline void unpack_q4(const uint8_t* q, __m256 w[4]) {
  const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q));
  const __m128i mask = _mm_set1_epi8(0x0F);
  const __m128i lo = _mm_and_si128(raw, mask);
  const __m128i hi = _mm_and_si128(_mm_srli_epi16(raw, 4), mask);
  w[0] = bytes_to_ps(lo);
  w[1] = bytes_to_ps(_mm_srli_si128(lo, 8));
  w[2] = bytes_to_ps(hi);
  w[3] = bytes_to_ps(_mm_srli_si128(hi, 8));
}

inline void unpack_q8(const int8_t* q, __m256 w[4]) {
  const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q));
  const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q + 16));
  w[0] = sbytes_to_ps(a);
  w[1] = sbytes_to_ps(_mm_srli_si128(a, 8));
  w[2] = sbytes_to_ps(b);
  w[3] = sbytes_to_ps(_mm_srli_si128(b, 8));
}

inline __m256 block_dot(const __m256 w[4], const float* x) {
  __m256 s = _mm256_mul_ps(w[0], _mm256_loadu_ps(x));
  s = _mm256_fmadd_ps(w[1], _mm256_loadu_ps(x + 8), s);
  s = _mm256_fmadd_ps(w[2], _mm256_loadu_ps(x + 16), s);
  return _mm256_fmadd_ps(w[3], _mm256_loadu_ps(x + 24), s);
}

inline __m256 block_dot_ones(const float* x) {
  return _mm256_add_ps(_mm256_add_ps(_mm256_loadu_ps(x), _mm256_loadu_ps(x + 8)),
                       _mm256_add_ps(_mm256_loadu_ps(x + 16), _mm256_loadu_ps(x + 24)));
}

// The q4 offset term of one row and column: sum over blocks of m[b] * sum(x[block b]), with
// `sn` the column's (d, m) pairs; four chains, off the blocks' critical path.
inline float m_term(const float* sn, const float* xs, int64_t nb) {
  float part[4] = {0.f, 0.f, 0.f, 0.f};
  int64_t b = 0;
  for (; b + 4 <= nb; b += 4)
    for (int j = 0; j < 4; ++j) part[j] += sn[2 * (b + j) + 1] * xs[b + j];
  for (; b < nb; ++b) part[0] += sn[2 * b + 1] * xs[b];
  return (part[0] + part[1]) + (part[2] + part[3]);
}

// One output column n for rows [r0, r0 + T): T compile-time so the accumulators are registers.
// `sn` holds the column's block scales as fp16: (d, m) pairs for q4, d alone for q8.
template <int T, bool Q4>
void column(const float* x, int64_t K, int64_t r0, const uint8_t* qn, const float* sn,
            const float* xs, int64_t nb, float* y, int64_t N, int64_t n) {
  __m256 acc[T];
  float macc[T];
  for (int t = 0; t < T; ++t) { acc[t] = _mm256_setzero_ps(); macc[t] = 0.f; }
  __m256 w[4];
  for (int64_t b = 0; b < nb; ++b) {
    if (Q4) unpack_q4(qn + b * 16, w);
    else unpack_q8(reinterpret_cast<const int8_t*>(qn) + b * kBlock, w);
    const __m256 d = _mm256_set1_ps(sn[Q4 ? 2 * b : b]);
    for (int t = 0; t < T; ++t)
      acc[t] = _mm256_fmadd_ps(block_dot(w, x + (r0 + t) * K + b * kBlock), d, acc[t]);
  }
  if (Q4)
    for (int t = 0; t < T; ++t) macc[t] = m_term(sn, xs + (r0 + t) * nb, nb);
  for (int t = 0; t < T; ++t) y[(r0 + t) * N + n] = hsum(acc[t]) + macc[t];
}

// The same for tiles of T >= 4 rows: the block is dequantized in registers (d*q + m, the very
// fp32 weights: a multiply then an add, as transformers' dequantizer rounds them), so each row
// costs 4 FMAs per block, the count of a dense fp32 product, and the unpacking is shared by T.
template <int T, bool Q4>
void column_dense(const float* x, int64_t K, int64_t r0, const uint8_t* qn, const float* sn,
                  int64_t nb, float* y, int64_t N, int64_t n) {
  __m256 acc[T];
  for (int t = 0; t < T; ++t) acc[t] = _mm256_setzero_ps();
  __m256 w[4];
  for (int64_t b = 0; b < nb; ++b) {
    if (Q4) unpack_q4(qn + b * 16, w);
    else unpack_q8(reinterpret_cast<const int8_t*>(qn) + b * kBlock, w);
    const __m256 d = _mm256_set1_ps(sn[Q4 ? 2 * b : b]);
    if (Q4) {
      const __m256 m = _mm256_set1_ps(sn[2 * b + 1]);
      for (int k = 0; k < 4; ++k) w[k] = _mm256_add_ps(_mm256_mul_ps(w[k], d), m);
    } else {
      for (int k = 0; k < 4; ++k) w[k] = _mm256_mul_ps(w[k], d);
    }
    for (int t = 0; t < T; ++t) {
      const float* xp = x + (r0 + t) * K + b * kBlock;
      acc[t] = _mm256_fmadd_ps(w[0], _mm256_loadu_ps(xp), acc[t]);
      acc[t] = _mm256_fmadd_ps(w[1], _mm256_loadu_ps(xp + 8), acc[t]);
      acc[t] = _mm256_fmadd_ps(w[2], _mm256_loadu_ps(xp + 16), acc[t]);
      acc[t] = _mm256_fmadd_ps(w[3], _mm256_loadu_ps(xp + 24), acc[t]);
    }
  }
  for (int t = 0; t < T; ++t) y[(r0 + t) * N + n] = hsum(acc[t]);
}

// AVX-512F versions of the same two loops (16 floats a vector: a block is two vectors), chosen
// at run time where the CPU has it: about half the instructions per block of the AVX2 ones.
#define RT_AVX512 __attribute__((target("avx512f,avx2,fma,f16c")))

RT_AVX512 inline void unpack512(const uint8_t* q, bool q4, __m512 w[2]) {
  if (q4) {
    const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q));
    const __m128i mask = _mm_set1_epi8(0x0F);
    w[0] = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(raw, mask)));
    w[1] = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16(raw, 4), mask)));
  } else {
    const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q));
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q + 16));
    w[0] = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(a));
    w[1] = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(b));
  }
}

template <int T, bool Q4>
RT_AVX512 void column512(const float* x, int64_t K, int64_t r0, const uint8_t* qn,
                         const float* sn, const float* xs, int64_t nb, float* y, int64_t N,
                         int64_t n) {
  __m512 acc[T];
  float macc[T];
  for (int t = 0; t < T; ++t) { acc[t] = _mm512_setzero_ps(); macc[t] = 0.f; }
  __m512 w[2];
  for (int64_t b = 0; b < nb; ++b) {
    unpack512(qn + b * (Q4 ? 16 : kBlock), Q4, w);
    const __m512 d = _mm512_set1_ps(sn[Q4 ? 2 * b : b]);
    for (int t = 0; t < T; ++t) {
      const float* xp = x + (r0 + t) * K + b * kBlock;
      __m512 s = _mm512_mul_ps(w[0], _mm512_loadu_ps(xp));
      s = _mm512_fmadd_ps(w[1], _mm512_loadu_ps(xp + 16), s);
      acc[t] = _mm512_fmadd_ps(s, d, acc[t]);
    }
  }
  if (Q4)
    for (int t = 0; t < T; ++t) macc[t] = m_term(sn, xs + (r0 + t) * nb, nb);
  for (int t = 0; t < T; ++t) y[(r0 + t) * N + n] = _mm512_reduce_add_ps(acc[t]) + macc[t];
}

// Blocks [b0, b1) of a column for a tile of T rows; the first chunk (b0 == 0) writes y, later
// chunks add to it, so a long K is taken in chunks whose x tile stays in L1.
template <int T, bool Q4>
RT_AVX512 void column_dense512(const float* x, int64_t K, int64_t r0, const uint8_t* qn,
                               const float* sn, int64_t b0, int64_t b1, float* y, int64_t N,
                               int64_t n) {
  __m512 acc[T];
  for (int t = 0; t < T; ++t) acc[t] = _mm512_setzero_ps();
  __m512 w[2];
  for (int64_t b = b0; b < b1; ++b) {
    unpack512(qn + b * (Q4 ? 16 : kBlock), Q4, w);
    const __m512 d = _mm512_set1_ps(sn[Q4 ? 2 * b : b]);
    if (Q4) {
      const __m512 m = _mm512_set1_ps(sn[2 * b + 1]);
      w[0] = _mm512_add_ps(_mm512_mul_ps(w[0], d), m);
      w[1] = _mm512_add_ps(_mm512_mul_ps(w[1], d), m);
    } else {
      w[0] = _mm512_mul_ps(w[0], d);
      w[1] = _mm512_mul_ps(w[1], d);
    }
    for (int t = 0; t < T; ++t) {
      const float* xp = x + (r0 + t) * K + b * kBlock;
      acc[t] = _mm512_fmadd_ps(w[0], _mm512_loadu_ps(xp), acc[t]);
      acc[t] = _mm512_fmadd_ps(w[1], _mm512_loadu_ps(xp + 16), acc[t]);
    }
  }
  for (int t = 0; t < T; ++t) {
    const float sum = _mm512_reduce_add_ps(acc[t]);
    y[(r0 + t) * N + n] = b0 == 0 ? sum : y[(r0 + t) * N + n] + sum;
  }
}

// The fp16 scales of one column as fp32 (8 at a time): converted once per column, not once per
// block and row tile (the conversions and broadcasts were a third of a single row's work).
inline void scales_to_float(const uint16_t* sn, int64_t count, float* out) {
  int64_t i = 0;
  for (; i + 8 <= count; i += 8)
    _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128(
        reinterpret_cast<const __m128i*>(sn + i))));
  for (; i < count; ++i) out[i] = _cvtsh_ss(sn[i]);
}

// Row tiles of 16, 8 and 4 on the AVX-512 code; with 16 rows or more and a long K, K is taken in
// chunks of 16 blocks, so the tile's x chunk (16 rows x 512 floats, 32 KB) stays in L1 while
// every column passes over it. Measured in one process against the unchunked code (two
// threads, SmolLM2 layer 0): 16 rows of down_proj (K = 1536) 301 us against 340, gate_proj
// 298 against 313; 8 rows lost 18% with chunks, so they keep whole columns.
template <bool Q4>
RT_AVX512 void tiles512(const float* x, int64_t R, int64_t K, const uint8_t* q,
                        int64_t qstride, const uint16_t* s, float* y, int64_t n0, int64_t n1,
                        int64_t N) {
  const int64_t nb = K / kBlock, per = Q4 ? 2 : 1;
  const int64_t chunk = K <= 768 || R < 16 ? nb : 16;
  std::vector<float> scales(chunk * per);
  for (int64_t b0 = 0; b0 < nb; b0 += chunk) {
    const int64_t b1 = std::min(nb, b0 + chunk);
    float* sn = scales.data() - b0 * per;  // indexed by block, as the column code expects
    for (int64_t n = n0; n < n1; ++n) {
      const uint8_t* qn = q + n * qstride;
      scales_to_float(s + (n * nb + b0) * per, (b1 - b0) * per, scales.data());
      int64_t r = 0;
      for (; r + 16 <= R; r += 16) column_dense512<16, Q4>(x, K, r, qn, sn, b0, b1, y, N, n);
      for (; r + 8 <= R; r += 8) column_dense512<8, Q4>(x, K, r, qn, sn, b0, b1, y, N, n);
      for (; r + 4 <= R; r += 4) column_dense512<4, Q4>(x, K, r, qn, sn, b0, b1, y, N, n);
    }
  }
}

// Columns [n0, n1) of y for every row: row tiles (above on AVX-512; 8 and 4 rows on AVX2), then
// single rows. The wide functions are called, never inlined, from here.
template <bool Q4, bool Wide>
void columns(const float* x, int64_t R, int64_t K, const uint8_t* q, int64_t qstride,
             const uint16_t* s, const float* xs, float* y, int64_t n0, int64_t n1, int64_t N) {
  const int64_t nb = K / kBlock, per = nb * (Q4 ? 2 : 1);
  const int64_t tiled = Wide ? R / 4 * 4 : 0;
  if (tiled) tiles512<Q4>(x, tiled, K, q, qstride, s, y, n0, n1, N);
  std::vector<float> scales(per);
  float* sn = scales.data();
  if (tiled == R) return;
  for (int64_t n = n0; n < n1; ++n) {
    const uint8_t* qn = q + n * qstride;
    scales_to_float(s + n * per, per, sn);
    int64_t r = tiled;
    if constexpr (Wide) {
      for (; r < R; ++r) column512<1, Q4>(x, K, r, qn, sn, xs, nb, y, N, n);
    } else {
      for (; r + 8 <= R; r += 8) column_dense<8, Q4>(x, K, r, qn, sn, nb, y, N, n);
      for (; r + 4 <= R; r += 4) column_dense<4, Q4>(x, K, r, qn, sn, nb, y, N, n);
      for (; r < R; ++r) column<1, Q4>(x, K, r, qn, sn, xs, nb, y, N, n);
    }
  }
}

}  // namespace

bool use_avx512 = __builtin_cpu_supports("avx512f");
std::unique_ptr<Pool> pool;

void set_threads(int64_t threads) {
  pool.reset();
  pool = std::make_unique<Pool>(static_cast<int>(std::max<int64_t>(threads, 1)) - 1);
}

// y = x @ W.T for W packed as `q` [N, K/2] uint8 (q4) or [N, K] int8 (q8) with fp16 block
// scales `scales` [N, K/32, 2] (q4: d, m) or [N, K/32, 1] (q8: d).
// x: [..., K] float32 (made contiguous here); y: [..., N]. The product is split over the
// helper threads only when the calling thread runs torch with one intra-op thread (see Pool).
torch::Tensor matmul(const torch::Tensor& input, const torch::Tensor& q,
                     const torch::Tensor& scales) {
  TORCH_CHECK(input.dim() >= 1 && input.scalar_type() == torch::kFloat32,
              "x must be a float32 [..., in] tensor");
  const torch::Tensor x = input.reshape({-1, input.size(-1)}).contiguous();
  TORCH_CHECK(scales.scalar_type() == torch::kFloat16 && scales.is_contiguous() &&
              scales.dim() == 3, "scales must be contiguous float16 [out, in/32, 1 or 2]");
  const int64_t R = x.size(0), K = x.size(1), N = q.size(0), nb = K / kBlock;
  const bool q4 = scales.size(2) == 2;
  TORCH_CHECK(K % kBlock == 0, "in_features must be a multiple of 32");
  TORCH_CHECK(scales.size(0) == N && scales.size(1) == nb, "scales do not match the weight");
  TORCH_CHECK(q.is_contiguous() && q.size(1) == (q4 ? K / 2 : K), "codes do not match x");
  auto y = torch::empty({R, N}, x.options());
  const float* xp = x.data_ptr<float>();
  std::vector<float> xs;  // q4: each row's block sums, for the m * sum(x) term
  if (q4) {
    xs.resize(R * nb);
    for (int64_t i = 0; i < R * nb; ++i) xs[i] = hsum(block_dot_ones(xp + i * kBlock));
  }
  const uint8_t* qp = static_cast<const uint8_t*>(q.data_ptr());
  const uint16_t* sp = reinterpret_cast<const uint16_t*>(scales.data_ptr());
  float* yp = y.data_ptr<float>();
  const int64_t qstride = q.size(1);
  const bool wide = use_avx512;
  auto run = [&](int64_t n0, int64_t n1) {
    if (wide && q4) columns<true, true>(xp, R, K, qp, qstride, sp, xs.data(), yp, n0, n1, N);
    else if (wide) columns<false, true>(xp, R, K, qp, qstride, sp, nullptr, yp, n0, n1, N);
    else if (q4) columns<true, false>(xp, R, K, qp, qstride, sp, xs.data(), yp, n0, n1, N);
    else columns<false, false>(xp, R, K, qp, qstride, sp, nullptr, yp, n0, n1, N);
  };
  const int parts = pool && at::get_num_threads() == 1 ? pool->size() : 1;
  if (parts == 1 || R * N * K < kParallelMinMacs) {
    run(0, N);
  } else {
    const int64_t per = (N / parts + 7) / 8 * 8;  // whole groups of 8 columns per part
    pool->run([&](int i) { run(std::min(N, i * per), std::min(N, (i + 1) * per)); });
  }
  auto shape = input.sizes().vec();
  shape.back() = N;
  return y.view(shape);
}

}  // namespace ragtune

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  using namespace ragtune;
  module.def("matmul", &matmul, "y = x @ dequant(q, d, m).T for block-quantized weights");
  module.def("decode_attention", &decode_attention,
             "softmax(scale * q.k) . v of one query per row, grouped-query, masked columns");
  module.def("rms_norm", &rms_norm, "weight * x / sqrt(mean(x^2) + eps), transformers' RMSNorm");
  module.def("add_rms_norm", &add_rms_norm, "(residual + x, rms_norm(residual + x))");
  module.def("rotary", &rotary, "transformers' apply_rotary_pos_emb(q, k, cos, sin)");
  module.def("set_threads", &set_threads, "threads (caller included) that split each product");
  module.def("isa", [] { return use_avx512 ? "avx512" : "avx2"; }, "the vector code in use");
  module.def("set_isa", [](const std::string& isa) {
    TORCH_CHECK(isa == "avx2" || (isa == "avx512" && __builtin_cpu_supports("avx512f")),
                "unsupported here: ", isa);
    use_avx512 = isa == "avx512";
  }, "choose the vector code (avx512 only where the CPU has it); for tests and benchmarks");
}