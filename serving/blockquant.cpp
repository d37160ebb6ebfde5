// Block-quantized matrix products for small row counts (decode steps), the layouts GGUF ships:
//   q4: blocks of 32 weights, w = d * q + m, q in 0..15 (Q4_1); two weights per byte, the low
//       nibble of byte j is weight j of the block, the high nibble weight j + 16;
//   q8: blocks of 32 weights, w = d * q, q in -128..127 (Q8_0).
// Single rows: y[r, n] = sum_b d[n, b] * dot(q[n, b, :], x[r, b, :]) (+ m[n, b] * sum(x[r, b, :])
// for q4). Tiles of 4 or 8 rows: each block is dequantized in registers to the fp32 weights
// once and used for every row of the tile, so the packed bytes are read once per tile.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace {

constexpr int kBlock = 32;
// Products below this many multiply-adds run on the caller alone (splitting SmolLM2's
// smallest, 192x576 for one row, over two threads gained nothing).
constexpr int64_t kParallelMinMacs = 100000;

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

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

bool use_avx512 = __builtin_cpu_supports("avx512f");

// Helper threads that spin between the ~200 small products of a decode step, then sleep.
// Why not OpenMP (at::parallel_for): called from the engine's worker thread, libgomp runs a
// second team beside the main thread's, counts more threads than cores and cuts its spin
// wait to ~100 iterations, so every region paid a futex wake-up; a 1-row SmolLM2 step took
// 45 ms on two threads vs 22 ms on the main thread. These helpers wait on an epoch counter.
class Pool {
 public:
  explicit Pool(int helpers) {
    for (int i = 0; i < helpers; ++i) threads_.emplace_back([this, i] { loop(i + 1); });
  }
  ~Pool() {
    stop_.store(true);
    { std::lock_guard<std::mutex> lock(mutex_); }
    wake_.notify_all();
    for (auto& t : threads_) t.join();
  }
  int size() const { return static_cast<int>(threads_.size()) + 1; }

  // Run part(0..size-1), part 0 on the caller; returns when all parts are done. A second
  // caller while the pool is busy runs every part itself (correct, just not parallel).
  void run(const std::function<void(int)>& part) {
    if (threads_.empty() || busy_.test_and_set(std::memory_order_acquire)) {
      for (int i = 0; i < size(); ++i) part(i);
      return;
    }
    part_ = &part;
    pending_.store(static_cast<int>(threads_.size()), std::memory_order_relaxed);
    epoch_.fetch_add(1, std::memory_order_seq_cst);
    if (sleepers_.load(std::memory_order_seq_cst) > 0) {
      { std::lock_guard<std::mutex> lock(mutex_); }
      wake_.notify_all();
    }
    part(0);
    // Spin briefly, then yield: on a busy machine a helper may be descheduled, and a caller
    // spinning through its time slice would keep the core from the very thread it waits for.
    for (int spins = 0; pending_.load(std::memory_order_acquire) > 0; ++spins) {
      if (spins < 4096) _mm_pause();
      else std::this_thread::yield();
    }
    busy_.clear(std::memory_order_release);
  }

 private:
  void loop(int index) {
    uint64_t seen = 0;
    while (!stop_.load(std::memory_order_relaxed)) {
      auto started = std::chrono::steady_clock::now();
      int spins = 0;
      while (epoch_.load(std::memory_order_acquire) == seen && !stop_.load()) {
        _mm_pause();
        if (++spins % 1024) continue;
        std::this_thread::yield();  // let other runnable threads have the core between checks
        if (std::chrono::steady_clock::now() - started < std::chrono::milliseconds(3)) continue;
        std::unique_lock<std::mutex> lock(mutex_);
        sleepers_.fetch_add(1, std::memory_order_seq_cst);
        wake_.wait(lock, [&] { return epoch_.load(std::memory_order_seq_cst) != seen ||
                                      stop_.load(); });
        sleepers_.fetch_sub(1, std::memory_order_seq_cst);
        started = std::chrono::steady_clock::now();
      }
      if (stop_.load()) return;
      seen = epoch_.load(std::memory_order_acquire);
      (*part_)(index);
      pending_.fetch_sub(1, std::memory_order_acq_rel);
    }
  }

  std::vector<std::thread> threads_;
  std::atomic<uint64_t> epoch_{0};
  std::atomic<int> pending_{0};
  std::atomic<int> sleepers_{0};
  std::atomic<bool> stop_{false};
  std::atomic_flag busy_ = ATOMIC_FLAG_INIT;
  const std::function<void(int)>* part_ = nullptr;
  std::mutex mutex_;
  std::condition_variable wake_;
};

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
  const int parts = pool && at::get_num_threads() == 1 ? pool->size() : 1;
  if (parts == 1 || tasks * G * T * D < kParallelMinMacs) {
    run(0, tasks);
  } else {
    const int64_t per = (tasks + parts - 1) / parts;
    pool->run([&](int i) { run(std::min(tasks, i * per), std::min(tasks, (i + 1) * per)); });
  }
  return out;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.def("matmul", &matmul, "y = x @ dequant(q, d, m).T for block-quantized weights");
  module.def("decode_attention", &decode_attention,
             "softmax(scale * q.k) . v of one query per row, grouped-query, masked columns");
  module.def("set_threads", &set_threads, "threads (caller included) that split each product");
  module.def("isa", [] { return use_avx512 ? "avx512" : "avx2"; }, "the vector code in use");
  module.def("set_isa", [](const std::string& isa) {
    TORCH_CHECK(isa == "avx2" || (isa == "avx512" && __builtin_cpu_supports("avx512f")),
                "unsupported here: ", isa);
    use_avx512 = isa == "avx512";
  }, "choose the vector code (avx512 only where the CPU has it); for tests and benchmarks");
}
