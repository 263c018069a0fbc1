#pragma once
/// \file sampling/batch.hpp
/// Batched sampling for continuous batching: a [rows x vocab] row-major matrix (with a row
/// stride), each row with its own sampler (its params and state; the row works in the workspace
/// of the thread that runs it), sequence id, step and history. Row i's result is exactly
/// sampler.sample(row i, ctx i): the same token whatever the batch composition, the row order or
/// the number of threads (the RNG is keyed by (seed, sequence, step), never by row position).
///
/// Parallelism: batch_sampler owns a persistent pool (threads - 1 workers, created once by the
/// constructor; the calling thread works too); no thread is created per call. Or pass your own
/// executor to sample_batch(): any callable `exec(n, fn)` that calls fn(i) once for every i in
/// [0, n), on any threads, and returns when all calls have returned.
///
/// Sizes are checked in every build type (a mismatch is a returned batch_status and no row is
/// sampled; never a read or write out of bounds): rows.size() must equal the matrix rows and
/// out.size() must be at least that; the matrix must be consistent (stride >= cols, data set) and,
/// when built from a span (logits_matrix::view), the span must hold every row.
///
/// Thread safety: the samplers of one call must be distinct objects (a sampler is mutable while
/// it samples): the same sampler twice in one call is reported (batch_status::duplicate_sampler)
/// before anything is sampled; a batch_sampler runs one call at a time (calls from several
/// threads are serialised).

#include <decodekit/config.hpp>
#include <decodekit/sampling/sampler.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <mutex>
#include <span>
#include <thread>
#include <type_traits>
#include <vector>

DECODEKIT_BEGIN_NAMESPACE

namespace detail {
struct batch_access_tag;
/// batch.hpp's access to a sampler's batch mark (one sampler in two rows of one call is
/// reported before anything is sampled).
template <>
struct sampler_access<batch_access_tag> {
    /// A fresh call id (never 0).
    static std::uint64_t next_call() noexcept {
        static std::atomic<std::uint64_t> counter{0};
        return counter.fetch_add(1, std::memory_order_relaxed) + 1;
    }
    /// Marks `s` as used by `call`; false when it already was (a duplicate row).
    static bool claim(sampler& s, std::uint64_t call) noexcept {
        if (s.batch_call_ == call) return false;
        s.batch_call_ = call;
        return true;
    }
};
using sampler_batch_access = sampler_access<batch_access_tag>;
}  // namespace detail

/// A read-only row-major matrix of logits: rows x cols, `stride` floats between row starts.
/// Build it from a span with view() so that its extent can be checked; the aggregate form
/// {data, rows, cols, stride} is the caller's promise that data holds every row.
struct logits_matrix {
    const float* data = nullptr;
    std::size_t rows = 0;
    std::size_t cols = 0;
    std::size_t stride = 0;  ///< >= cols; 0 means cols
    /// Floats readable from data (set by view()); 0: unknown, the caller vouches for the rows.
    std::size_t extent = 0;

    /// The matrix over `values` (row-major, `stride` floats between rows, 0 = cols).
    static logits_matrix view(std::span<const float> values, std::size_t rows, std::size_t cols,
                              std::size_t stride = 0) noexcept {
        return {values.data(), rows, cols, stride, values.size()};
    }
    /// Floats between row starts.
    std::size_t row_stride() const noexcept { return stride == 0 ? cols : stride; }
    /// True when the view is consistent: stride >= cols, data set when it has rows, and (when the
    /// extent is known) every row inside it. O(1), overflow-safe.
    bool valid() const noexcept {
        if (rows == 0) return true;
        if (row_stride() < cols || (data == nullptr && cols > 0)) return false;
        if (extent == 0) return true;
        const std::size_t s = row_stride();
        if (rows - 1 > (std::numeric_limits<std::size_t>::max() - cols) / (s == 0 ? 1 : s))
            return false;
        return (rows - 1) * s + cols <= extent;
    }
    /// Row i as a span of cols floats (empty when i >= rows).
    std::span<const float> row(std::size_t i) const noexcept {
        if (i >= rows) return {};
        return {data + i * row_stride(), cols};
    }
};

/// One row of a batch: the sampler to use and the row's key and history.
struct batch_row {
    sampler* row_sampler = nullptr;  ///< distinct per row; its vocab_size() must equal cols
    sample_context ctx = {};
};

/// Outcome of a batched call (per-row outcomes are in each sample_result::status).
enum class batch_status : std::uint8_t {
    ok,                 ///< every row was sampled (each row's own status says how it went)
    size_mismatch,      ///< rows.size() != m.rows or out.size() < m.rows: nothing sampled
    bad_matrix,         ///< !m.valid() (stride < cols, null data, rows past the span)
    null_sampler,       ///< a row has no sampler: nothing sampled
    duplicate_sampler,  ///< one sampler in two rows of the call: nothing sampled
};

namespace detail {
/// Checks a batched call before anything runs; on failure marks min(out, rows) results bad_input.
inline batch_status check_batch(const logits_matrix& m, std::span<const batch_row> rows,
                                std::span<sample_result> out) noexcept {
    batch_status st = batch_status::ok;
    if (rows.size() != m.rows || out.size() < m.rows)
        st = batch_status::size_mismatch;
    else if (!m.valid())
        st = batch_status::bad_matrix;
    else {
        const std::uint64_t call = sampler_batch_access::next_call();
        for (const batch_row& r : rows) {
            if (r.row_sampler == nullptr) {
                st = batch_status::null_sampler;
                break;
            }
            if (!sampler_batch_access::claim(*r.row_sampler, call)) {
                st = batch_status::duplicate_sampler;
                break;
            }
        }
    }
    if (st != batch_status::ok)
        for (std::size_t i = 0; i < out.size() && i < m.rows; ++i) {
            out[i] = sample_result{};
            out[i].status = sample_status::bad_input;
        }
    return st;
}
}  // namespace detail

/// Samples every row serially: out[i] = rows[i].row_sampler->sample(m.row(i), rows[i].ctx).
/// Sizes, the matrix and distinct samplers are checked first (see batch_status).
inline batch_status sample_batch(const logits_matrix& m, std::span<const batch_row> rows,
                                 std::span<sample_result> out) noexcept {
    if (const batch_status st = detail::check_batch(m, rows, out); st != batch_status::ok)
        return st;
    for (std::size_t i = 0; i < m.rows; ++i)
        out[i] = rows[i].row_sampler->sample(m.row(i), rows[i].ctx);
    return batch_status::ok;
}

/// Samples every row through `exec(n, fn)` (see the file comment); same results and checks as
/// the serial form.
template <class Executor>
batch_status sample_batch(const logits_matrix& m, std::span<const batch_row> rows,
                          std::span<sample_result> out, Executor&& exec) {
    if (const batch_status st = detail::check_batch(m, rows, out); st != batch_status::ok)
        return st;
    exec(m.rows, [&m, rows, out](std::size_t i) {
        out[i] = rows[i].row_sampler->sample(m.row(i), rows[i].ctx);
    });
    return batch_status::ok;
}

namespace detail {
/// One polite spin-wait step: a CPU pause hint (x86, ARM), else a yield.
inline void cpu_relax() noexcept {
#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
    __builtin_ia32_pause();
#elif (defined(__GNUC__) || defined(__clang__)) && defined(__aarch64__)
    asm volatile("yield");
#else
    std::this_thread::yield();
#endif
}
/// Spins until ready() or `budget` has elapsed (pause hints first, then yields so that an
/// oversubscribed machine still runs the thread being waited for); returns ready().
template <class Ready>
bool spin_until(Ready&& ready, std::chrono::microseconds budget) noexcept {
    if (ready()) return true;
    if (budget.count() <= 0) return false;
    const auto deadline = std::chrono::steady_clock::now() + budget;
    for (unsigned i = 1;; ++i) {
        if (i < 64)
            cpu_relax();
        else
            std::this_thread::yield();
        if (ready()) return true;
        if ((i & 15) == 0 && std::chrono::steady_clock::now() >= deadline) return ready();
    }
}
}  // namespace detail

/// A persistent pool for batched sampling (see the file comment).
///
/// Call protocol (one call = one job): the caller publishes the job (function, item count) and
/// takes items itself at once; workers claim items from one shared atomic counter (dynamic load
/// balance: a late or slow thread just takes fewer rows). Between calls an idle worker polls
/// for the next job for `idle_spin` before sleeping on a condition variable, so back-to-back
/// calls (one per decoding step) cost no wake-up; the caller likewise polls for the last items
/// of the other threads before sleeping. Cost per call with polling workers: a few atomic
/// operations and one uncontended mutex lock; a sleeping worker adds one wake-up (tens of us
/// on a virtual machine), of which the caller loses only the part it could not fill with rows.
class batch_sampler {
public:
    /// How long an idle worker polls for the next call by default (then it sleeps).
    static constexpr std::chrono::microseconds default_idle_spin{200};

    /// Starts threads - 1 workers (threads 0 or 1: everything runs on the calling thread).
    /// `idle_spin`: how long a worker polls for the next call after one ends, and the caller
    /// for the other threads' last items, before sleeping (0: sleep at once; longer: less
    /// wake-up latency for calls further apart, more CPU spent polling).
    explicit batch_sampler(std::size_t threads = 1,
                           std::chrono::microseconds idle_spin = default_idle_spin)
        : threads_(threads == 0 ? 1 : threads), spin_(idle_spin) {
        workers_.reserve(threads_ - 1);
        for (std::size_t w = 1; w < threads_; ++w) workers_.emplace_back([this] { work_loop(); });
    }
    batch_sampler(const batch_sampler&) = delete;
    batch_sampler& operator=(const batch_sampler&) = delete;
    ~batch_sampler() {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            stop_.store(true);
        }
        wake_.notify_all();
        for (std::thread& t : workers_) t.join();
    }

    /// Number of threads a call uses (the caller included).
    std::size_t threads() const noexcept { return threads_; }

    /// out[i] = rows[i].row_sampler->sample(m.row(i), rows[i].ctx), rows spread over the pool.
    /// Sizes, the matrix and distinct samplers are checked first (see batch_status).
    batch_status sample(const logits_matrix& m, std::span<const batch_row> rows,
                        std::span<sample_result> out) {
        if (const batch_status st = detail::check_batch(m, rows, out); st != batch_status::ok)
            return st;
        parallel_for(m.rows, [&m, rows, out](std::size_t i) {
            out[i] = rows[i].row_sampler->sample(m.row(i), rows[i].ctx);
        });
        return batch_status::ok;
    }

    /// Calls fn(i) for every i in [0, n) on the pool; returns when all are done. Usable as the
    /// executor of sample_batch(): `sample_batch(m, rows, out, pool)`. \pre fn(i) does not throw:
    /// with threads > 1 an exception escaping fn calls std::terminate (the items run inside the
    /// noexcept pool loop; sampler::sample never throws after construction).
    template <class F>
    void parallel_for(std::size_t n, F&& fn) {
        if (n == 0) return;
        if (threads_ == 1 || n == 1) {
            for (std::size_t i = 0; i < n; ++i) fn(i);
            return;
        }
        std::lock_guard<std::mutex> call_lock(call_mutex_);
        // No worker reads the job fields now: the previous call returned only once pending_ and
        // busy_ were both 0, and a worker reads them only after seeing pending_ > 0 (below).
        job_fn_ = [](void* f, std::size_t i) { (*static_cast<std::remove_reference_t<F>*>(f))(i); };
        job_ctx_ = const_cast<void*>(static_cast<const void*>(&fn));
        job_n_ = n;
        next_.store(0, std::memory_order_relaxed);
        {
            // under mutex_: a worker about to sleep re-checks generation_ under it (no lost
            // wake-up); the seq_cst store of pending_ publishes the fields above
            std::lock_guard<std::mutex> lock(mutex_);
            pending_.store(n);
            generation_.fetch_add(1);
        }
        wake_.notify_all();  // no system call when every worker is polling
        run_items();
        auto done = [this] { return pending_.load() == 0 && busy_.load() == 0; };
        if (!detail::spin_until(done, spin_)) {
            std::unique_lock<std::mutex> lock(mutex_);
            done_.wait(lock, done);
        }
    }
    template <class F>
    void operator()(std::size_t n, F&& fn) {
        parallel_for(n, static_cast<F&&>(fn));
    }

private:
    std::size_t threads_;
    std::chrono::microseconds spin_;
    std::vector<std::thread> workers_;
    std::mutex call_mutex_;  // one call at a time
    std::mutex mutex_;       // sleeping and waking only
    std::condition_variable wake_, done_;
    std::atomic<bool> stop_{false};
    std::atomic<std::uint64_t> generation_{0};  // +1 per published job
    void (*job_fn_)(void*, std::size_t) = nullptr;
    void* job_ctx_ = nullptr;
    std::size_t job_n_ = 0;
    // the counters the threads hammer, each on its own cache line
    alignas(64) std::atomic<std::size_t> next_{0};     // next item to claim
    alignas(64) std::atomic<std::size_t> pending_{0};  // items of the live job not finished
    alignas(64) std::atomic<std::size_t> busy_{0};     // workers that may read the job fields

    // Claims items of the live job until none is left; then reports how many it finished.
    void run_items() noexcept {
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
        if (finished > 0) pending_.fetch_sub(finished);  // release: fn's writes to the caller
    }

    void work_loop() {
        std::uint64_t seen = 0;
        for (;;) {
            auto woken = [&] { return stop_.load() || generation_.load() != seen; };
            if (!detail::spin_until(woken, spin_)) {
                std::unique_lock<std::mutex> lock(mutex_);
                wake_.wait(lock, woken);
            }
            if (stop_.load()) return;
            seen = generation_.load();
            // Join only a live job. busy_ is raised before pending_ is read (both seq_cst), and
            // the caller reads busy_ after seeing pending_ == 0: either the caller sees this
            // worker busy and waits for it, or this worker sees pending_ == 0 (or the pending_
            // of a later job, published with its fields) and touches nothing of an old job. A
            // worker that wakes late, after the caller finished the job alone, leaves at once.
            busy_.fetch_add(1);
            if (pending_.load() > 0) run_items();
            busy_.fetch_sub(1);
            { std::lock_guard<std::mutex> lock(mutex_); }  // a sleeping caller re-checks after
            done_.notify_all();
        }
    }
};

DECODEKIT_END_NAMESPACE
