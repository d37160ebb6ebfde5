// Shared by the CPU kernels of ragtune's serving extension (blockquant.cpp: block-quantized
// products and the module's bindings; attention.cpp: decode-step attention; smallops.cpp:
// RMSNorm and rotary embeddings): the helper-thread pool, the horizontal sum, split sizes.
#pragma once

#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <tuple>
#include <vector>

namespace ragtune {

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

extern std::unique_ptr<Pool> pool;

// Run fn(i0, i1) over [0, tasks): split in equal parts over the pool when the calling thread
// runs torch with one intra-op thread (see Pool) and `work` (multiply-adds) is worth it.
template <typename Fn>
void split(int64_t tasks, int64_t work, int64_t align, Fn fn) {
  const int parts = pool && at::get_num_threads() == 1 ? pool->size() : 1;
  if (parts == 1 || work < kParallelMinMacs) {
    fn(int64_t{0}, tasks);
    return;
  }
  const int64_t per = ((tasks + parts - 1) / parts + align - 1) / align * align;
  pool->run([&](int i) { fn(std::min(tasks, i * per), std::min(tasks, (i + 1) * per)); });
}

torch::Tensor decode_attention(const torch::Tensor& query, const torch::Tensor& key,
                               const torch::Tensor& value, const torch::Tensor& mask,
                               double scale);
torch::Tensor rms_norm(const torch::Tensor& x, const torch::Tensor& weight, double eps);
std::tuple<torch::Tensor, torch::Tensor> add_rms_norm(const torch::Tensor& x,
                                                      const torch::Tensor& residual,
                                                      const torch::Tensor& weight, double eps);
std::tuple<torch::Tensor, torch::Tensor> rotary(const torch::Tensor& q, const torch::Tensor& k,
                                                const torch::Tensor& cos,
                                                const torch::Tensor& sin);

}  // namespace ragtune
