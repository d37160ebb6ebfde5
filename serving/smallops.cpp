// The small per-layer ops of a decode step, fused: RMSNorm (with the residual add before it)
// and rotary position embeddings. Why: in transformers' eager Llama layer these are ~25 ATen
// calls per layer (pow, mean, add, rsqrt, mul, to; slices, neg, cat, mul, add), ~750 per
// SmolLM2 step, each a few microseconds of dispatch on 576 or 64 floats: most of a one-row
// step's time beside its matrix products. Each function here is one call.
//
// Rounding follows transformers' formulas: RMSNorm's weight * (x * rsqrt(mean(x^2) + eps))
// differs only in the order of the sum of squares (~1 ulp of the variance); rotary's
// q * cos + rotate_half(q) * sin is computed with the same two roundings of the products and
// one of the sum (no fused multiply-add: this file is compiled without contraction), so it is
// bit-identical.
#pragma GCC optimize("fp-contract=off")
#include "kernels.h"

#include <cmath>

namespace ragtune {
namespace {

// out[r] = w * (x[r] * (1 / sqrt(sum(x[r]^2) / D + eps))) for R rows of D floats.
void norm_rows(const float* x, const float* w, float eps, int64_t R, int64_t D, float* out) {
  for (int64_t r = 0; r < R; ++r) {
    const float* xr = x + r * D;
    float* o = out + r * D;
    __m256 acc = _mm256_setzero_ps();
    int64_t d = 0;
    for (; d + 8 <= D; d += 8) {
      const __m256 v = _mm256_loadu_ps(xr + d);
      acc = _mm256_add_ps(acc, _mm256_mul_ps(v, v));
    }
    float total = hsum(acc);
    for (; d < D; ++d) total += xr[d] * xr[d];
    const float scale = 1.f / std::sqrt(total / static_cast<float>(D) + eps);
    for (int64_t j = 0; j < D; ++j) o[j] = w[j] * (xr[j] * scale);
  }
}

void check_norm(const torch::Tensor& x, const torch::Tensor& weight) {
  TORCH_CHECK(x.scalar_type() == torch::kFloat32 && weight.scalar_type() == torch::kFloat32,
              "rms_norm takes float32 tensors");
  TORCH_CHECK(weight.dim() == 1 && weight.is_contiguous() && x.size(-1) == weight.size(0),
              "rms_norm: weight must be [D] for x [..., D]");
}

}  // namespace

torch::Tensor rms_norm(const torch::Tensor& x, const torch::Tensor& weight, double eps) {
  check_norm(x, weight);
  const torch::Tensor xc = x.contiguous();
  auto out = torch::empty_like(xc);
  const int64_t D = x.size(-1);
  norm_rows(xc.data_ptr<float>(), weight.data_ptr<float>(), static_cast<float>(eps),
            D ? xc.numel() / D : 0, D, out.data_ptr<float>());
  return out;
}

// (residual + x, rms_norm(residual + x)): the add that closes a sub-layer and the norm that
// opens the next, as transformers' decoder layer does them, in one call.
std::tuple<torch::Tensor, torch::Tensor> add_rms_norm(const torch::Tensor& x,
                                                      const torch::Tensor& residual,
                                                      const torch::Tensor& weight, double eps) {
  check_norm(x, weight);
  TORCH_CHECK(residual.sizes() == x.sizes() && residual.scalar_type() == torch::kFloat32,
              "add_rms_norm: residual must match x");
  const torch::Tensor xc = x.contiguous(), rc = residual.contiguous();
  auto sum = torch::empty_like(xc);
  auto out = torch::empty_like(xc);
  const float* xp = xc.data_ptr<float>();
  const float* rp = rc.data_ptr<float>();
  float* sp = sum.data_ptr<float>();
  for (int64_t i = 0; i < xc.numel(); ++i) sp[i] = rp[i] + xp[i];
  const int64_t D = x.size(-1);
  norm_rows(sp, weight.data_ptr<float>(), static_cast<float>(eps), D ? xc.numel() / D : 0, D,
            out.data_ptr<float>());
  return {sum, out};
}

namespace {

// out = x * cos + rotate_half(x) * sin for x [B, H, T, D] (unit stride in D, any other
// strides), cos/sin [B, T, D] contiguous; out contiguous [B, H, T, D].
torch::Tensor rotate(const torch::Tensor& x, const float* cp, const float* sp) {
  const int64_t B = x.size(0), H = x.size(1), T = x.size(2), D = x.size(3), half = D / 2;
  TORCH_CHECK(x.stride(3) == 1 && D % 2 == 0, "rotary: q/k need unit stride in an even D");
  auto out = torch::empty({B, H, T, D}, x.options());
  const float* xp = x.data_ptr<float>();
  float* op = out.data_ptr<float>();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t t = 0; t < T; ++t) {
        const float* xr = xp + b * x.stride(0) + h * x.stride(1) + t * x.stride(2);
        const float* c = cp + (b * T + t) * D;
        const float* s = sp + (b * T + t) * D;
        float* o = op + ((b * H + h) * T + t) * D;
        for (int64_t d = 0; d < half; ++d) o[d] = xr[d] * c[d] + (-xr[d + half]) * s[d];
        for (int64_t d = half; d < D; ++d) o[d] = xr[d] * c[d] + xr[d - half] * s[d];
      }
  return out;
}

}  // namespace

// transformers' apply_rotary_pos_emb(q, k, cos, sin) for q [B, H, T, D], k [B, Hk, T, D] and
// cos/sin [B, T, D] (broadcast over heads): the rotated q and k, contiguous.
std::tuple<torch::Tensor, torch::Tensor> rotary(const torch::Tensor& q, const torch::Tensor& k,
                                                const torch::Tensor& cos,
                                                const torch::Tensor& sin) {
  TORCH_CHECK(q.dim() == 4 && k.dim() == 4 && cos.dim() == 3 && sin.sizes() == cos.sizes(),
              "rotary: q, k [B, H, T, D] and cos, sin [B, T, D]");
  for (const auto* t : {&q, &k, &cos, &sin})
    TORCH_CHECK(t->scalar_type() == torch::kFloat32, "rotary takes float32 tensors");
  TORCH_CHECK(k.size(0) == q.size(0) && k.size(2) == q.size(2) && k.size(3) == q.size(3) &&
              cos.size(0) == q.size(0) && cos.size(1) == q.size(2) && cos.size(2) == q.size(3),
              "rotary: q, k, cos and sin shapes do not match");
  const torch::Tensor c = cos.contiguous(), s = sin.contiguous();
  return {rotate(q, c.data_ptr<float>(), s.data_ptr<float>()),
          rotate(k, c.data_ptr<float>(), s.data_ptr<float>())};
}

}  // namespace ragtune
