// Decode-step attention of ragtune's serving extension (see kernels.h).
#include "kernels.h"

#include <cmath>

namespace ragtune {
namespace {

// Attention of one new token per row (a decode step), grouped-query: out[b, h] =
// softmax(scale * q[b, h] . k[b, h / G, t] over the columns t where mask[b, t]) . v[b, h / G].
// q: [B, H, D] contiguous; k, v: [B, Hk, T, D] with unit stride in D (the sub-batch's cache
// buffers are strided views); mask: [B, T] bool or empty (every column). Why not torch's SDPA:
// its CPU flash kernel, made for blocks of queries, took ~0.64 ms per SmolLM2 layer at 16 rows
// x 100 columns (1/5 of the step), and a bmm of 48 3x64 matrices ~0.28 ms; this is ~0.05 ms.
// exp of 8 floats (Cephes' polynomial, ~1 ulp): std::exp per score was most of the time.
// Inputs are clamped to [-87, 88]: below, results would be denormal (slow to compute, and a
// softmax weight under 1e-38 is 0 in every sum here) and 2^n would leave the exponent range.
inline __m256 exp8(__m256 x) {
  x = _mm256_max_ps(_mm256_min_ps(x, _mm256_set1_ps(88.f)), _mm256_set1_ps(-87.f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.f)));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n),
                                                       _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

// Sums of 8 vectors at once: [sum(a[0]), ..., sum(a[7])] (hadd tree, 9 instructions instead
// of a horizontal sum per vector).
inline __m256 hsum8(const __m256 a[8]) {
  const __m256 u0 = _mm256_hadd_ps(_mm256_hadd_ps(a[0], a[1]), _mm256_hadd_ps(a[2], a[3]));
  const __m256 u1 = _mm256_hadd_ps(_mm256_hadd_ps(a[4], a[5]), _mm256_hadd_ps(a[6], a[7]));
  return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
}

// One row's query heads of one key/value head. s: G * Tp scratch (Tp: T rounded up to 8).
void attend_one(const float* q, const float* k, const float* v, const bool* mask, int64_t T,
                int64_t D, int64_t G, int64_t kt, float scale, float* out, float* s) {
  const int64_t Tp = (T + 7) / 8 * 8, T8 = T / 8 * 8;
  const __m256 sc = _mm256_set1_ps(scale);
  for (int64_t g = 0; g < G; ++g) {
    const float* qg = q + g * D;
    for (int64_t t = 0; t < T8; t += 8) {  // 8 keys at a time
      __m256 acc[8];
      for (int j = 0; j < 8; ++j) acc[j] = _mm256_setzero_ps();
      for (int64_t d = 0; d < D; d += 8) {
        const __m256 x = _mm256_loadu_ps(qg + d);
        for (int j = 0; j < 8; ++j)
          acc[j] = _mm256_fmadd_ps(x, _mm256_loadu_ps(k + (t + j) * kt + d), acc[j]);
      }
      _mm256_storeu_ps(s + g * Tp + t, _mm256_mul_ps(hsum8(acc), sc));
    }
    for (int64_t t = T8; t < Tp; ++t) {  // the last few keys, and padding up to Tp
      float dot = -INFINITY;
      if (t < T) {
        __m256 acc = _mm256_setzero_ps();
        for (int64_t d = 0; d < D; d += 8)
          acc = _mm256_fmadd_ps(_mm256_loadu_ps(qg + d), _mm256_loadu_ps(k + t * kt + d), acc);
        dot = hsum(acc) * scale;
      }
      s[g * Tp + t] = dot;
    }
    if (mask)
      for (int64_t t = 0; t < T; ++t)
        if (!mask[t]) s[g * Tp + t] = -INFINITY;
  }
  for (int64_t g = 0; g < G; ++g) {
    float* sg = s + g * Tp;
    __m256 top8 = _mm256_set1_ps(-INFINITY);
    for (int64_t t = 0; t < Tp; t += 8) top8 = _mm256_max_ps(top8, _mm256_loadu_ps(sg + t));
    float top = -INFINITY;
    alignas(32) float lanes[8];
    _mm256_store_ps(lanes, top8);
    for (float lane : lanes) top = std::max(top, lane);
    if (top == -INFINITY) {  // no column at all: zeros
      for (int64_t d = 0; d < D; ++d) out[g * D + d] = 0.f;
      continue;
    }
    __m256 total8 = _mm256_setzero_ps();
    for (int64_t t = 0; t < Tp; t += 8) {
      const __m256 x = _mm256_loadu_ps(sg + t);
      const __m256 live = _mm256_cmp_ps(x, _mm256_set1_ps(-INFINITY), _CMP_NEQ_OQ);
      const __m256 e = _mm256_and_ps(exp8(_mm256_sub_ps(x, _mm256_set1_ps(top))), live);
      _mm256_storeu_ps(sg + t, e);
      total8 = _mm256_add_ps(total8, e);
    }
    const __m256 inv = _mm256_set1_ps(1.f / hsum(total8));
    for (int64_t d0 = 0; d0 < D; d0 += 64) {  // up to 8 independent accumulators over t
      const int chunks = static_cast<int>(std::min<int64_t>(8, (D - d0) / 8));
      __m256 acc[8];
      for (int c = 0; c < chunks; ++c) acc[c] = _mm256_setzero_ps();
      for (int64_t t = 0; t < T; ++t) {
        const __m256 w = _mm256_set1_ps(sg[t]);
        const float* vt = v + t * kt + d0;
        for (int c = 0; c < chunks; ++c)
          acc[c] = _mm256_fmadd_ps(w, _mm256_loadu_ps(vt + 8 * c), acc[c]);
      }
      for (int c = 0; c < chunks; ++c)
        _mm256_storeu_ps(out + g * D + d0 + 8 * c, _mm256_mul_ps(acc[c], inv));
    }
  }
}

}  // namespace

torch::Tensor decode_attention(const torch::Tensor& query, const torch::Tensor& key,
                               const torch::Tensor& value, const torch::Tensor& mask,
                               double scale) {
  TORCH_CHECK(query.dim() == 3 && query.is_contiguous() && query.scalar_type() == torch::kFloat32,
              "q must be contiguous float32 [B, H, D]");
  TORCH_CHECK(key.dim() == 4 && value.sizes() == key.sizes() && key.scalar_type() == torch::kFloat32 &&
              value.scalar_type() == torch::kFloat32, "k, v must be float32 [B, Hk, T, D]");
  TORCH_CHECK(key.stride(3) == 1 && value.stride(3) == 1 && key.strides() == value.strides(),
              "k and v need unit stride in D and the same strides");
  const int64_t B = query.size(0), H = query.size(1), D = query.size(2);
  const int64_t Hk = key.size(1), T = key.size(2), G = H / Hk;
  TORCH_CHECK(key.size(0) == B && key.size(3) == D && H % Hk == 0 && D % 8 == 0 && T > 0,
              "q, k, v shapes do not match (D must be a multiple of 8)");
  const bool masked = mask.numel() > 0;
  TORCH_CHECK(!masked || (mask.scalar_type() == torch::kBool && mask.is_contiguous() &&
              mask.size(0) == B && mask.size(1) == T), "mask must be contiguous bool [B, T]");
  auto out = torch::empty({B, H, D}, query.options());
  const float* qp = query.data_ptr<float>();
  const float* kp = key.data_ptr<float>();
  const float* vp = value.data_ptr<float>();
  const bool* mp = masked ? mask.data_ptr<bool>() : nullptr;
  float* op = out.data_ptr<float>();
  const int64_t kb = key.stride(0), kh = key.stride(1), kt = key.stride(2);
  const float sc = static_cast<float>(scale);
  auto run = [&](int64_t i0, int64_t i1) {
    std::vector<float> s(G * ((T + 7) / 8 * 8));
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t b = i / Hk, h = i % Hk;
      attend_one(qp + (b * H + h * G) * D, kp + b * kb + h * kh, vp + b * kb + h * kh,
                 mp ? mp + b * T : nullptr, T, D, G, kt, sc, op + (b * H + h * G) * D, s.data());
    }
  };
  const int64_t tasks = B * Hk;
  split(tasks, tasks * G * T * D, 1, run);
  return out;
}

}  // namespace ragtune
