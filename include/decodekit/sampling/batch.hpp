#pragma once
/// \file sampling/batch.hpp
/// Batched sampling for continuous batching: a [rows x vocab] row-major matrix (with a row
/// stride), each row with its own sampler (its params, workspace and mirostat state), sequence
/// id, step and history. Row i's result is exactly sampler.sample(row i, ctx i): the same token
/// whatever the batch composition, the row order or the number of threads (the RNG is keyed by
/// (seed, sequence, step), never by row position).
///
/// Parallelism: batch_sampler owns a persistent pool (threads - 1 workers, created once by the
/// constructor; the calling thread works too); no thread is created per call. Or pass your own
/// executor to sample_batch(): any callable `exec(n, fn)` that calls fn(i) once for every i in
/// [0, n), on any threads, and returns when all calls have returned.
///
/// Thread safety: the samplers of one call must be distinct objects (a sampler is mutable while
/// it samples); a batch_sampler runs one call at a time (calls from several threads are
/// serialised).

#include <decodekit/config.hpp>
#include <decodekit/sampling/sampler.hpp>

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <span>
#include <thread>
#include <type_traits>
#include <vector>

DECODEKIT_BEGIN_NAMESPACE

/// A read-only row-major matrix of logits: rows x cols, `stride` floats between row starts.
struct logits_matrix {
    const float* data = nullptr;
    std::size_t rows = 0;
    std::size_t cols = 0;
    std::size_t stride = 0;  ///< >= cols; 0 means cols

    /// Row i as a span of cols floats.  \pre i < rows
    std::span<const float> row(std::size_t i) const noexcept {
        DECODEKIT_ASSERT(i < rows, "logits_matrix: row out of range");
        return {data + i * (stride == 0 ? cols : stride), cols};
    }
};

/// One row of a batch: the sampler to use and the row's key and history.
struct batch_row {
    sampler* row_sampler = nullptr;  ///< distinct per row; its vocab_size() must equal cols
    sample_context ctx = {};
};

/// Samples every row serially: out[i] = rows[i].row_sampler->sample(m.row(i), rows[i].ctx).
/// \pre rows.size() == m.rows == out.size(); distinct samplers
inline void sample_batch(const logits_matrix& m, std::span<const batch_row> rows,
                         std::span<sample_result> out) noexcept {
    DECODEKIT_ASSERT(rows.size() == m.rows && out.size() == m.rows, "sample_batch: size mismatch");
    for (std::size_t i = 0; i < m.rows; ++i)
        out[i] = rows[i].row_sampler->sample(m.row(i), rows[i].ctx);
}

/// Samples every row through `exec(n, fn)` (see the file comment); same results as the serial
/// form.  \pre rows.size() == m.rows == out.size(); distinct samplers
template <class Executor>
void sample_batch(const logits_matrix& m, std::span<const batch_row> rows,
                  std::span<sample_result> out, Executor&& exec) {
    DECODEKIT_ASSERT(rows.size() == m.rows && out.size() == m.rows, "sample_batch: size mismatch");
    exec(m.rows, [&m, rows, out](std::size_t i) {
        out[i] = rows[i].row_sampler->sample(m.row(i), rows[i].ctx);
    });
}

/// A persistent pool for batched sampling (see the file comment).
class batch_sampler {
public:
    /// Starts threads - 1 workers (threads 0 or 1: everything runs on the calling thread).
    explicit batch_sampler(std::size_t threads = 1) : threads_(threads == 0 ? 1 : threads) {
        workers_.reserve(threads_ - 1);
        for (std::size_t w = 1; w < threads_; ++w) workers_.emplace_back([this] { work_loop(); });
    }
    batch_sampler(const batch_sampler&) = delete;
    batch_sampler& operator=(const batch_sampler&) = delete;
    ~batch_sampler() {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            stop_ = true;
        }
        wake_.notify_all();
        for (std::thread& t : workers_) t.join();
    }

    /// Number of threads a call uses (the caller included).
    std::size_t threads() const noexcept { return threads_; }

    /// out[i] = rows[i].row_sampler->sample(m.row(i), rows[i].ctx), rows spread over the pool.
    /// \pre rows.size() == m.rows == out.size(); distinct samplers
    void sample(const logits_matrix& m, std::span<const batch_row> rows,
                std::span<sample_result> out) {
        DECODEKIT_ASSERT(rows.size() == m.rows && out.size() == m.rows,
                         "batch_sampler: size mismatch");
        parallel_for(m.rows, [&m, rows, out](std::size_t i) {
            out[i] = rows[i].row_sampler->sample(m.row(i), rows[i].ctx);
        });
    }

    /// Calls fn(i) for every i in [0, n) on the pool; returns when all are done. Usable as the
    /// executor of sample_batch(): `sample_batch(m, rows, out, pool)`.
    template <class F>
    void parallel_for(std::size_t n, F&& fn) {
        if (n == 0) return;
        if (threads_ == 1 || n == 1) {
            for (std::size_t i = 0; i < n; ++i) fn(i);
            return;
        }
        std::lock_guard<std::mutex> call_lock(call_mutex_);
        auto thunk = [](void* f, std::size_t i) {
            (*static_cast<std::remove_reference_t<F>*>(f))(i);
        };
        {
            std::lock_guard<std::mutex> lock(mutex_);
            job_fn_ = thunk;
            job_ctx_ = const_cast<void*>(static_cast<const void*>(&fn));
            job_n_ = n;
            next_.store(0, std::memory_order_relaxed);
            pending_ = n;
            ++generation_;
        }
        wake_.notify_all();
        run_items();
        std::unique_lock<std::mutex> lock(mutex_);
        done_.wait(lock, [this] { return pending_ == 0 && busy_ == 0; });
    }
    template <class F>
    void operator()(std::size_t n, F&& fn) {
        parallel_for(n, static_cast<F&&>(fn));
    }

private:
    std::size_t threads_;
    std::vector<std::thread> workers_;
    std::mutex call_mutex_;  // one call at a time
    std::mutex mutex_;
    std::condition_variable wake_, done_;
    bool stop_ = false;
    std::uint64_t generation_ = 0;
    void (*job_fn_)(void*, std::size_t) = nullptr;
    void* job_ctx_ = nullptr;
    std::size_t job_n_ = 0;
    std::atomic<std::size_t> next_{0};
    std::size_t pending_ = 0;  // items not finished (guarded by mutex_)
    std::size_t busy_ = 0;     // workers inside run_items (guarded by mutex_)

    // Claims items of the current job until none is left; reports how many it finished. The job
    // fields are only read while the job is live: the caller sets them before publishing the
    // generation and cannot return (nor set up the next job) while this thread is busy_.
    void run_items() {
        void (*const fn)(void*, std::size_t) = job_fn_;
        void* const ctx = job_ctx_;
        const std::size_t n = job_n_;
        std::size_t finished = 0;
        for (;;) {
            const std::size_t i = next_.fetch_add(1, std::memory_order_relaxed);
            if (i >= n) break;
            fn(ctx, i);
            ++finished;
        }
        if (finished > 0) {
            std::lock_guard<std::mutex> lock(mutex_);
            pending_ -= finished;
            if (pending_ == 0) done_.notify_all();
        }
    }

    void work_loop() {
        std::uint64_t seen = 0;
        std::unique_lock<std::mutex> lock(mutex_);
        for (;;) {
            wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
            if (stop_) return;
            seen = generation_;
            // Join only a live job (items not all finished): then the caller is still inside
            // parallel_for and waits for busy_ == 0 before returning, so the job fields and next_
            // stay those of this generation while we run. A worker that wakes late, after the
            // caller finished the job alone (pending_ == 0), must not touch the job: the caller
            // may already have returned and be setting up the next one.
            if (pending_ == 0) continue;
            ++busy_;
            lock.unlock();
            run_items();
            lock.lock();
            --busy_;
            if (busy_ == 0 && pending_ == 0) done_.notify_all();
        }
    }
};

DECODEKIT_END_NAMESPACE
