#pragma once
/// \file llama2/model.hpp
/// The reference backend: a llama2.c-semantics transformer (RMSNorm eps 1e-5, RoPE on adjacent
/// pairs with frequency 10000^(-2i/head_size), grouped-query attention with a KV cache, SwiGLU,
/// shared or separate classifier) implementing every capability of decodekit's model concepts:
///   language_model      logits(requests, out)
///   hidden_state_model  logits_and_hidden(requests, logits_out, hidden_out)
///                       (hidden = the final-normed residual fed to the classifier)
///   layer_logits_model  layer_logits(requests, layers, out): final norm + classifier applied
///                       to the residual stream after layer l (0 = embedding, n_layers = output)
///   multi_token_model   head_logits(requests, out). stories260K has no multi-token heads;
///                       num_heads() is a constructor option (default 1 = only the ordinary
///                       next-token head). Head h >= 1 is EMULATED by greedy self-rollout: the
///                       logits for t+1+h given the sequence plus the argmax tokens of heads
///                       0..h-1, each costing one extra cached token forward (a stand-in for
///                       real MTP heads, so MTP drafting can be exercised end to end).
///   mtp_module_model    mtp_depth(), mtp_logits(requests, logits_out, hidden_out): a sequential
///                       MTP module chain attached with set_mtp_module() (mtp.hpp: the trained
///                       examples/models/stories260K-mtp.bin). Without one, mtp_depth() is 0 and
///                       every mtp_logits row is NaN with last_error() set.
///
/// KV cache: a pool of physical caches (tokens + K/V rows, channel-major so attention is SIMD
/// over positions); each logical slot maps to one. Per call, each request first finds the longest
/// prefix of its tokens held by any cache deep enough for it. It takes that cache over when the
/// cache is its own slot's, unowned, or owned by a slot remapped in the same call (a beam fork
/// keeps its parent's cache without copying); otherwise it copies just the rows it lacks into a
/// free cache, before anything in the call is computed (so sources are intact). Caches of slots
/// outside the call are only ever copied from. Appending costs one token forward; a cut-back
/// (rejected drafts) or a branch recomputes only from the divergence point; a beam step costs one
/// token forward per beam however the beams were reordered. Positions whose outputs are
/// requested are always (re)computed.
/// layer_logits runs only the layers up to the deepest one requested (an early-exit self-draft
/// at layer l costs l/n_layers of a forward); such a slot's cache is marked shallow and is not
/// reused (nor lent) for deeper requests.
///
/// Batched compute: every (request, position) a call must compute goes through each layer
/// together (up to options().max_batch_positions at a time, then the next chunk): one
/// matrix-matrix product per weight matrix reads the weights once for all of them, RoPE and the
/// K/V writes are per position, attention is causal over each request's own cache (positions of
/// one request in the call see each other causally), and the classifier runs once over every
/// row whose output is wanted (per requested layer for layer_logits). So verifying k drafts costs
/// about one token forward on a memory-bound model, and one call over many requests shares the
/// weight reads. Each output is computed with the operations, in the order, of a one-position
/// forward: results are bit-identical whatever the batch (composition, order, chunking).
/// Scratch buffers grow to the largest batch seen and are reused (no allocation per call in
/// steady state once the caches exist).
///
/// Invalid requests (empty, token id out of range, longer than seq_len, slot >= max_slots,
/// n_last outside [1, length]) do not read out of bounds: their output rows are filled with NaN
/// and last_error() says why; the other requests of the call are computed normally. An output
/// span too small for the call (or row counts that overflow) gets nothing written and an error.

#include "checkpoint.hpp"
#include "mtp.hpp"

// The umbrella only (model concepts, kernels::softmax, the simd layer), so the backend also builds
// against the single header.
#include <decodekit/decodekit.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace dk_llama2 {

namespace dk = decodekit;

namespace detail {

/// `v` unchanged, but the compiler must hold it in a register: stops GCC from folding a loaded
/// vector back into every FMA that uses it as a memory operand (R x C loads per chunk instead of
/// R + C, which makes the tile load-bound).
template <class A>
inline dk::simd::batch<A> in_register(dk::simd::batch<A> v) noexcept {
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
    if constexpr (dk::simd::x86_family<A> != 0) {
        auto r = static_cast<typename dk::simd::batch<A>::register_type>(v);
        __asm__("" : "+v"(r));
        return dk::simd::batch<A>(r);
    }
#endif
    return v;
}

/// Hint that the cache line `bytes` after `p` will be read soon. Never dereferences (any
/// address is fine, so the address is formed as an integer: no out-of-range pointer).
inline void prefetch(const float* p, std::size_t bytes) noexcept {
#if defined(__GNUC__)
    __builtin_prefetch(reinterpret_cast<const void*>(reinterpret_cast<std::uintptr_t>(p) + bytes));
#else
    (void)p;
    (void)bytes;
#endif
}

/// One register tile of matmul_rows: outputs (r0 + c, i0 + a) for a < R, c < C. While it
/// streams its R weight rows it prefetches the same columns of the next tile's rows, so the
/// memory stream keeps going while the FMAs run.
template <class A, std::size_t R, std::size_t C, class OutRow>
inline void matmul_tile(OutRow& out_row, const float* DECODEKIT_RESTRICT x, std::size_t r0,
                        const float* DECODEKIT_RESTRICT w, std::size_t i0, std::size_t n) noexcept {
    using B = dk::simd::batch<A>;
    constexpr std::size_t L = dk::simd::lanes<A>;
    const std::size_t nv = n - n % L;
    const float* wr[R];
    const float* xr[C];
    for (std::size_t a = 0; a < R; ++a) wr[a] = w + (i0 + a) * n;
    for (std::size_t c = 0; c < C; ++c) xr[c] = x + (r0 + c) * n;
    B acc[R][C];
    for (std::size_t a = 0; a < R; ++a)
        for (std::size_t c = 0; c < C; ++c) acc[a][c] = B(0.f);
    for (std::size_t j = 0; j < nv; j += L) {
        B wv[R];
        for (std::size_t a = 0; a < R; ++a) prefetch(wr[a] + j, R * n * sizeof(float));
        for (std::size_t a = 0; a < R; ++a) wv[a] = in_register<A>(B::load_unaligned(wr[a] + j));
        for (std::size_t c = 0; c < C; ++c) {
            const B xv = in_register<A>(B::load_unaligned(xr[c] + j));
            for (std::size_t a = 0; a < R; ++a) acc[a][c] = xsimd::fma(wv[a], xv, acc[a][c]);
        }
    }
    for (std::size_t c = 0; c < C; ++c) {
        float* o = out_row(r0 + c);
        for (std::size_t a = 0; a < R; ++a) {
            float s = dk::simd::reduce_add<A>(acc[a][c]);
            for (std::size_t j = nv; j < n; ++j) s += wr[a][j] * xr[c][j];
            o[i0 + a] = s;
        }
    }
}

/// Weight rows [i0, i1) (a multiple of R of them, then single rows) against x rows r0 .. r0+C-1.
template <class A, std::size_t R, std::size_t C, class OutRow>
inline void matmul_strip(OutRow& out_row, const float* x, std::size_t r0, const float* w,
                         std::size_t i0, std::size_t i1, std::size_t n) noexcept {
    std::size_t i = i0;
    for (; i + R <= i1; i += R) matmul_tile<A, R, C>(out_row, x, r0, w, i, n);
    for (; i < i1; ++i) matmul_tile<A, 1, C>(out_row, x, r0, w, i, n);
}

/// Register tiles of matmul_rows: up to max_tile_cols<A> x rows at once, with tile_rows<A, C>
/// weight rows, so that the R x C accumulators, R weight vectors and one x vector fit the
/// register file (32 vector registers with AVX-512, 16 otherwise).
template <class A>
inline constexpr std::size_t max_tile_cols = dk::simd::lanes<A> >= 16 ? 8 : 4;
template <class A, std::size_t C>
inline constexpr std::size_t tile_rows = dk::simd::lanes<A> >= 16 ? (C <= 6 ? 4 : 3)
                                         : C <= 2                 ? 4
                                         : C <= 3                 ? 3
                                                                  : 2;

/// matmul_strip for c (in [1, max_tile_cols<A>]) x rows from r0, each weight chunk in registers
/// serving all c of them.
template <class A, std::size_t C = 1, class OutRow>
inline void matmul_group(std::size_t c, OutRow& out_row, const float* x, std::size_t r0,
                         const float* w, std::size_t i0, std::size_t i1, std::size_t n) noexcept {
    if constexpr (C < max_tile_cols<A>) {
        if (c != C) return matmul_group<A, C + 1>(c, out_row, x, r0, w, i0, i1, n);
    }
    matmul_strip<A, tile_rows<A, C>, C>(out_row, x, r0, w, i0, i1, n);
}

/// out_row(r)[i] = sum_j W[i*n + j] * x[r*n + j] for r < m, i < d: run.c's matmul for m rows
/// of x at once (x row-major, m x n; W row-major, d x n; out_row(r) -> float* of row r).
/// For m <= max_tile_cols (8 with AVX-512) every weight chunk loaded into registers serves all
/// m rows, so W is streamed from memory once and the FMAs overlap the stream. Larger m: a block
/// of weight rows (about 128 KB, L2-resident) is read from memory once, then every group of x
/// rows passes through it. Each output is accumulated exactly as a single matrix-vector product
/// does it: lane-wise FMA over the whole SIMD chunks of j in order, one horizontal add, then the
/// scalar tail in order. A row's result therefore does not depend on m, on the tiling, or on
/// the other rows (bit-identical to computing it alone).
template <class A = dk::simd::default_arch, class OutRow>
void matmul_rows(OutRow&& out_row, const float* x, std::size_t m, const float* w, std::size_t n,
                 std::size_t d) noexcept {
    constexpr std::size_t C = max_tile_cols<A>;
    const std::size_t block = m <= C ? d : std::max<std::size_t>(8, std::size_t(32768) / n);
    for (std::size_t i0 = 0; i0 < d; i0 += block) {
        const std::size_t i1 = std::min(d, i0 + block);
        std::size_t r = 0;
        for (; m - r > C; r += C) matmul_group<A>(C, out_row, x, r, w, i0, i1, n);
        if (r < m) matmul_group<A>(m - r, out_row, x, r, w, i0, i1, n);
    }
}

/// out[i] = sum_j W[i*n + j] * x[j] for i < d (run.c's matmul; matmul_rows with one row).
template <class A = dk::simd::default_arch>
void matmul(float* DECODEKIT_RESTRICT out, const float* DECODEKIT_RESTRICT x,
            const float* DECODEKIT_RESTRICT w, std::size_t n, std::size_t d) noexcept {
    matmul_rows<A>([out](std::size_t) { return out; }, x, 1, w, n, d);
}

/// Dot product of two length-n vectors (xsimd).
template <class A = dk::simd::default_arch>
float dot(const float* a, const float* b, std::size_t n) noexcept {
    using B = dk::simd::batch<A>;
    constexpr std::size_t L = dk::simd::lanes<A>;
    const std::size_t nv = n - n % L;
    B acc(0.f);
    for (std::size_t j = 0; j < nv; j += L)
        acc = xsimd::fma(B::load_unaligned(a + j), B::load_unaligned(b + j), acc);
    float s = dk::simd::reduce_add<A>(acc);
    for (std::size_t j = nv; j < n; ++j) s += a[j] * b[j];
    return s;
}

/// y[j] += a * x[j] for j < n (xsimd).
template <class A = dk::simd::default_arch>
void axpy(float* DECODEKIT_RESTRICT y, float a, const float* DECODEKIT_RESTRICT x,
          std::size_t n) noexcept {
    using B = dk::simd::batch<A>;
    constexpr std::size_t L = dk::simd::lanes<A>;
    const std::size_t nv = n - n % L;
    const B av(a);
    for (std::size_t j = 0; j < nv; j += L)
        xsimd::fma(av, B::load_unaligned(x + j), B::load_unaligned(y + j)).store_unaligned(y + j);
    for (std::size_t j = nv; j < n; ++j) y[j] += a * x[j];
}

/// o = x * w / sqrt(mean(x^2) + 1e-5) (run.c's rmsnorm).
inline void rmsnorm(float* o, const float* x, const float* w, std::size_t n) noexcept {
    float ss = 0.f;
    for (std::size_t j = 0; j < n; ++j) ss += x[j] * x[j];
    ss /= float(n);
    ss += 1e-5f;
    ss = 1.f / std::sqrt(ss);
    for (std::size_t j = 0; j < n; ++j) o[j] = w[j] * (ss * x[j]);
}

}  // namespace detail

/// Backend options.
struct model_options {
    std::size_t num_heads = 1;    ///< multi-token heads exposed (0 means 1; h >= 1 emulated)
    std::size_t max_slots = 256;  ///< slots accepted (a KV cache is allocated per slot used)
    /// Positions computed together through each layer (a call with more is computed in chunks
    /// of this many, in order). Bounds the scratch memory of a call: about 7 dim + 2 hidden_dim
    /// floats per position. In [1, 65536].
    std::size_t max_batch_positions = 256;

    /// The first invalid field, named with its allowed range; nullopt when valid.
    std::optional<std::string> check() const {
        if (max_batch_positions < 1 || max_batch_positions > 65536)
            return "model_options.max_batch_positions must be in [1, 65536], got " +
                   std::to_string(max_batch_positions);
        return std::nullopt;
    }
};

/// Counters for statistics and tests.
struct model_counters {
    std::uint64_t calls = 0;  ///< logits/logits_and_hidden/layer_logits/head_logits/mtp calls
    std::uint64_t tokens_forwarded = 0;  ///< token forwards computed (cache misses)
    std::uint64_t tokens_reused = 0;     ///< positions served from a cache
    std::uint64_t mtp_rows = 0;          ///< MTP module steps computed (mtp_logits rows)
};

/// The llama2.c transformer. Template on the xsimd architecture of its matmuls and attention.
/// Not thread-safe: one model object serves one thread at a time (it owns scratch buffers).
template <class A = dk::simd::default_arch>
class basic_model {
public:
    /// Takes ownership of a loaded checkpoint. Invalid options are reported through
    /// decodekit::raise (config_error, or the error handler with -fno-exceptions).
    explicit basic_model(checkpoint ck, model_options opt = {}) : ck_(std::move(ck)), opt_(opt) {
        dk::raise_if(opt_.check());
        const config& c = ck_.cfg;
        att_.resize(std::size_t(c.seq_len));
        prob_.resize(std::size_t(c.seq_len));
        const std::size_t half = std::size_t(c.head_size()) / 2;
        inv_freq_.resize(half);
        for (std::size_t i = 0; i < half; ++i)
            inv_freq_[i] = 1.0f / std::pow(10000.0f, float(2 * i) / float(c.head_size()));
        if (opt_.num_heads == 0) opt_.num_heads = 1;
    }

    const config& cfg() const noexcept { return ck_.cfg; }
    const model_options& options() const noexcept { return opt_; }

    // --- concept surface ---------------------------------------------------------------------
    /// Vocabulary size.
    std::size_t vocab_size() const noexcept { return std::size_t(ck_.cfg.vocab_size); }
    /// Width of the hidden state returned by logits_and_hidden().
    std::size_t hidden_size() const noexcept { return std::size_t(ck_.cfg.dim); }
    /// Number of transformer layers (layer_logits accepts 0..num_layers()).
    std::size_t num_layers() const noexcept { return std::size_t(ck_.cfg.n_layers); }
    /// Number of prediction heads (1 = the ordinary next-token head only; see the file comment).
    std::size_t num_heads() const noexcept { return opt_.num_heads; }
    /// Maximum sequence length.
    std::size_t max_sequence_length() const noexcept { return std::size_t(ck_.cfg.seq_len); }

    /// Logits for the last n_last positions of each request; out: rows_needed x vocab_size().
    /// A span too small (or a row count that overflows) writes nothing and sets last_error().
    void logits(std::span<const dk::sequence_request> requests, std::span<float> out) {
        ++counters_.calls;
        error_.clear();
        if (fits(requests, 1, out.size(), vocab_size()))
            run(requests, out.data(), vocab_size(), nullptr, {}, 0);
    }

    /// Logits and the final-normed hidden states of the same positions (an empty hidden_out:
    /// logits only).
    void logits_and_hidden(std::span<const dk::sequence_request> requests,
                           std::span<float> logits_out, std::span<float> hidden_out) {
        ++counters_.calls;
        error_.clear();
        if (fits(requests, 1, logits_out.size(), vocab_size()) &&
            (hidden_out.empty() || fits(requests, 1, hidden_out.size(), hidden_size())))
            run(requests, logits_out.data(), vocab_size(),
                hidden_out.empty() ? nullptr : hidden_out.data(), {}, 0);
    }

    /// Logits read out after each layer in `layers` (rows [request][position][layer]).
    void layer_logits(std::span<const dk::sequence_request> requests, std::span<const int> layers,
                      std::span<float> out) {
        ++counters_.calls;
        error_.clear();
        if (!fits(requests, layers.size(), out.size(), vocab_size())) return;
        for (int l : layers) {
            if (l < 0 || std::size_t(l) > num_layers()) {
                set_error("layer " + std::to_string(l) + " out of range [0, num_layers()]");
                std::fill_n(out.data(), dk::rows_needed(requests) * layers.size() * vocab_size(),
                            std::numeric_limits<float>::quiet_NaN());
                return;
            }
        }
        run(requests, out.data(), vocab_size(), nullptr, layers, 1);
    }

    /// Logits of heads 0..num_heads()-1 for each request's last position (rows [request][head]).
    /// Head h of every request is computed in one batched pass (num_heads() passes per call).
    void head_logits(std::span<const dk::sequence_request> requests, std::span<float> out) {
        ++counters_.calls;
        error_.clear();
        const std::size_t V = vocab_size(), H = num_heads(), R = requests.size();
        if (R == 0) return;  // nothing to compute (out may be empty: no pointer arithmetic on it)
        if (out.size() / V / H < R) {
            set_error("head_logits: output span too small: need " + std::to_string(R) + " x " +
                      std::to_string(H) + " rows");
            return;
        }
        while (head_seqs_.size() < R) {
            head_seqs_.emplace_back();
            head_seqs_.back().reserve(max_sequence_length() + H);
        }
        head_reqs_.resize(R);
        for (std::size_t r = 0; r < R; ++r) {
            head_seqs_[r].assign(requests[r].tokens.begin(), requests[r].tokens.end());
            head_reqs_[r] = {head_seqs_[r], 1, requests[r].slot};
        }
        for (std::size_t h = 0; h < H; ++h) {
            run(head_reqs_, out.data() + h * V, H * V, nullptr, {}, 0);
            if (h + 1 == H) break;
            for (std::size_t r = 0; r < R; ++r) {
                if (!plans_[r].valid) continue;  // stays invalid: NaN rows for the next heads
                const float* row = out.data() + (r * H + h) * V;
                head_seqs_[r].push_back(dk::token_id(std::max_element(row, row + V) - row));
                head_reqs_[r].tokens = head_seqs_[r];
            }
        }
    }

    /// Modules of the attached MTP chain (0: none attached).
    std::size_t mtp_depth() const noexcept { return mtp_ ? mtp_->depth() : 0; }

    /// One MTP module step per request (decodekit's mtp_module_model; mtp.hpp's
    /// run_mtp_logits: invalid requests and calls without a module get NaN rows and
    /// last_error()). The module is stateless: position and slot are only range-checked.
    void mtp_logits(std::span<const dk::mtp_request> requests, std::span<float> logits_out,
                    std::span<float> hidden_out) {
        ++counters_.calls;
        error_ = run_mtp_logits(mtp_ ? &*mtp_ : nullptr, ck_, requests, logits_out, hidden_out,
                                opt_.max_slots, max_sequence_length(), counters_.mtp_rows);
    }

    /// Attaches an MTP module chain (load_mtp_module / parse_mtp_module), replacing any previous
    /// one. Returns why not (the previous module is kept) when its dim or vocab is not the
    /// checkpoint's or its blocks have attention; nullopt when attached.
    std::optional<std::string> set_mtp_module(mtp_weights w) {
        const mtp_shape& s = w.shape;
        if (check_mtp_shape(s) || s.dim != ck_.cfg.dim || s.vocab != ck_.cfg.vocab_size ||
            s.attention || w.data.size() != layout_of(s).total)
            return "set_mtp_module: the module does not fit this checkpoint (dim " +
                   std::to_string(s.dim) + ", vocab " + std::to_string(s.vocab) +
                   (s.attention ? ", attention" : "") + "; checkpoint dim " +
                   std::to_string(ck_.cfg.dim) + ", vocab " + std::to_string(ck_.cfg.vocab_size) +
                   ")";
        mtp_.emplace(std::move(w));
        return std::nullopt;
    }

    // --- extras ------------------------------------------------------------------------------
    /// The last error of a request (empty when the last call had none).
    const std::string& last_error() const noexcept { return error_; }
    /// Counters since construction (or reset_counters()).
    const model_counters& counters() const noexcept { return counters_; }
    void reset_counters() noexcept { counters_ = {}; }
    /// Forgets every slot's cache (the next call recomputes from scratch).
    void clear_cache() noexcept {
        for (auto& c : caches_) c.tokens.clear();
    }
    /// Number of physical KV caches allocated so far (slots used + forks in flight).
    std::size_t caches_allocated() const noexcept { return caches_.size(); }

private:
    // A physical KV cache. Logical slots map to caches; a call may hand a slot's cache to
    // another slot (a beam fork takes over its parent's cache without copying).
    struct kv_cache {
        std::vector<dk::token_id> tokens;  // tokens whose K/V rows are valid, in order
        std::vector<float> key, value;     // [layer][kv channel][pos]: positions contiguous
        std::size_t depth = 0;             // layers whose K/V rows are valid for every cached token
        std::int64_t owner = -1;           // logical slot mapped to this cache, or -1
    };

    // The plan of one request in a call.
    struct plan {
        bool valid = false;
        std::size_t depth = 0;                       // layers to run
        std::size_t first_out = 0;                   // first position whose outputs are wanted
        std::size_t source = npos_, source_len = 0;  // best cache to reuse and its prefix
        std::size_t target = npos_;                  // cache this request computes into
        std::size_t start = 0;                       // first position to compute
        std::size_t out_row = 0;                     // its first output row
    };
    static constexpr std::size_t npos_ = std::size_t(-1);

    // One (request, position) to compute in a batch.
    struct work_row {
        std::size_t request, pos;
        dk::token_id token;
    };

    void set_error(std::string e) { error_ = std::move(e); }

    // True when `size` floats hold rows_needed(requests) x per_pos rows of `width` (the count
    // computed without overflow); otherwise sets the error.
    bool fits(std::span<const dk::sequence_request> requests, std::size_t per_pos, std::size_t size,
              std::size_t width) {
        const std::size_t cap = size / width;  // whole rows available
        std::size_t rows = 0;
        bool overflow = false;
        for (const auto& r : requests) {
            if (r.n_last > std::numeric_limits<std::size_t>::max() - rows) overflow = true;
            if (overflow) break;
            rows += r.n_last;
        }
        if (!overflow && per_pos > 0 && rows > std::numeric_limits<std::size_t>::max() / per_pos)
            overflow = true;
        if (overflow || rows * per_pos > cap) {
            set_error(overflow ? std::string("output rows overflow: n_last too large")
                               : "output span too small: need " + std::to_string(rows * per_pos) +
                                     " rows of " + std::to_string(width));
            return false;
        }
        return true;
    }

    std::size_t new_cache() {
        kv_cache c;
        c.tokens.reserve(max_sequence_length());  // never reallocated afterwards
        const std::size_t n = std::size_t(ck_.cfg.n_layers) * std::size_t(ck_.cfg.seq_len) *
                              std::size_t(ck_.cfg.kv_dim());
        c.key.assign(n, 0.f);
        c.value.assign(n, 0.f);
        caches_.push_back(std::move(c));
        return caches_.size() - 1;
    }

    static std::size_t common_prefix(std::span<const dk::token_id> a,
                                     std::span<const dk::token_id> b) noexcept {
        const std::size_t n = std::min(a.size(), b.size());
        std::size_t i = 0;
        while (i < n && a[i] == b[i]) ++i;
        return i;
    }

    std::size_t usable_prefix(const kv_cache& c, const dk::sequence_request& req,
                              const plan& p) const noexcept {
        if (c.depth < p.depth) return 0;
        return std::min(common_prefix(c.tokens, req.tokens), p.first_out);
    }

    // mode 0: logits (+ hidden when `hidden` is non-null); mode 1: layer logits. Output row k of
    // the call starts at out + k * stride (hidden row k at hidden + k * hidden_size()).
    // \pre the caller checked the output sizes and the layer indices
    void run(std::span<const dk::sequence_request> requests, float* out, std::size_t stride,
             float* hidden, std::span<const int> layers, int mode) {
        const std::size_t V = vocab_size(), D = hidden_size();
        const std::size_t per_pos = mode == 1 ? layers.size() : 1;
        // Layers to run: all for logits; up to the deepest requested layer for layer logits (an
        // early-exit draft costs only its layers; its cache is then shallower).
        std::size_t depth = num_layers();
        if (mode == 1) {
            depth = 0;
            for (int l : layers) depth = std::max(depth, std::size_t(l));
        }

        // 1. Plan against the state before the call: each request's best cache to reuse.
        plans_.assign(requests.size(), plan{});
        std::size_t row = 0;
        for (std::size_t i = 0; i < requests.size(); ++i) {
            plan& p = plans_[i];
            p.out_row = row;
            row += requests[i].n_last * per_pos;
            p.valid = validate(requests[i]);
            if (!p.valid) continue;
            p.depth = depth;
            p.first_out = requests[i].tokens.size() - requests[i].n_last;
            for (std::size_t c = 0; c < caches_.size(); ++c) {
                const std::size_t len = usable_prefix(caches_[c], requests[i], p);
                const bool own = caches_[c].owner == std::int64_t(requests[i].slot);
                if (len > p.source_len || (len > 0 && len == p.source_len && own)) {
                    p.source = c;
                    p.source_len = len;
                }
            }
        }
        // 2. Longest reuse first: a request takes over its source cache when no one has yet and
        //    the cache is its own slot's, unowned, or owned by a slot remapped in this call (a
        //    cache of a slot outside the call is only ever copied from).
        in_call_.clear();
        for (const auto& r : requests) in_call_.push_back(std::int64_t(r.slot));
        auto slot_in_call = [&](std::int64_t s) {
            return std::find(in_call_.begin(), in_call_.end(), s) != in_call_.end();
        };
        // (a stable insertion sort by decreasing source_len: std::stable_sort may allocate)
        order_.resize(requests.size());
        for (std::size_t i = 0; i < order_.size(); ++i) {
            std::size_t j = i;
            for (; j > 0 && plans_[order_[j - 1]].source_len < plans_[i].source_len; --j)
                order_[j] = order_[j - 1];
            order_[j] = i;
        }
        claimed_.assign(caches_.size(), 0);
        for (std::size_t i : order_) {
            plan& p = plans_[i];
            if (p.valid && p.source != npos_ && !claimed_[p.source] &&
                (caches_[p.source].owner < 0 || slot_in_call(caches_[p.source].owner))) {
                p.target = p.source;
                claimed_[p.source] = 1;
                p.start = p.source_len;
            }
        }
        // 3. The others get a free cache (their own slot's, an unowned one, one whose slot is
        //    remapped in this call, or a new one) and copy the rows they lack from their source.
        //    Copies happen before any computation, so every source still holds its old rows.
        const std::size_t kv = std::size_t(ck_.cfg.kv_dim()), T = std::size_t(ck_.cfg.seq_len);
        for (std::size_t i : order_) {
            plan& p = plans_[i];
            if (!p.valid || p.target != npos_) continue;
            const auto& req = requests[i];
            std::size_t best = npos_, best_len = 0;
            int best_rank = 4;
            for (std::size_t c = 0; c < caches_.size(); ++c) {
                if (claimed_[c]) continue;
                const kv_cache& k = caches_[c];
                const int rank = k.owner == std::int64_t(req.slot) ? 0
                                 : k.owner < 0                     ? 1
                                 : slot_in_call(k.owner)           ? 2
                                                                   : 4;
                if (rank == 4) continue;  // belongs to a slot outside this call: keep it
                const std::size_t len = usable_prefix(k, req, p);
                if (rank < best_rank || (rank == best_rank && len > best_len)) {
                    best = c;
                    best_rank = rank;
                    best_len = len;
                }
            }
            if (best == npos_) {
                best = new_cache();
                claimed_.push_back(0);
                best_len = 0;
            }
            claimed_[best] = 1;
            p.target = best;
            p.start = best_len;
            kv_cache& t = caches_[best];
            if (p.source != npos_ && p.source_len > best_len) {
                const kv_cache& s = caches_[p.source];
                for (std::size_t lc = 0; lc < s.depth * kv; ++lc) {  // (layer, channel) rows
                    const std::size_t from = lc * T + best_len, n = p.source_len - best_len;
                    std::copy_n(s.key.data() + from, n, t.key.data() + from);
                    std::copy_n(s.value.data() + from, n, t.value.data() + from);
                }
                // rows [0, best_len) keep t.depth layers, the copied ones s.depth
                t.depth = best_len > 0 ? std::min(t.depth, s.depth) : s.depth;
                t.tokens.assign(req.tokens.begin(),
                                req.tokens.begin() + std::ptrdiff_t(p.source_len));
                p.start = p.source_len;
            }
        }
        // 4. Remap the slots; invalid requests get NaN rows; list the positions to compute.
        for (std::size_t i = 0; i < requests.size(); ++i) {
            if (!plans_[i].valid) continue;
            const std::int64_t s = std::int64_t(requests[i].slot);
            for (auto& c : caches_)
                if (c.owner == s) c.owner = -1;
        }
        rows_.clear();
        for (std::size_t i = 0; i < requests.size(); ++i) {
            const auto& req = requests[i];
            const plan& p = plans_[i];
            if (!p.valid) {
                for (std::size_t k = 0; k < req.n_last * per_pos; ++k)
                    std::fill_n(out + (p.out_row + k) * stride, V,
                                std::numeric_limits<float>::quiet_NaN());
                if (hidden)
                    std::fill_n(hidden + p.out_row * D, req.n_last * D,
                                std::numeric_limits<float>::quiet_NaN());
                continue;
            }
            kv_cache& c = caches_[p.target];
            c.owner = std::int64_t(req.slot);
            counters_.tokens_reused += p.start;
            c.tokens.assign(req.tokens.begin(), req.tokens.begin() + std::ptrdiff_t(p.start));
            c.depth = p.start > 0 ? std::min(c.depth, p.depth) : p.depth;
            for (std::size_t pos = p.start; pos < req.tokens.size(); ++pos)
                rows_.push_back({i, pos, req.tokens[pos]});
        }
        // 5. Compute every listed position together, in chunks of max_batch_positions (rows are
        //    in (request, position) order, so a chunk only attends to K/V rows already written).
        const std::size_t chunk = opt_.max_batch_positions;
        for (std::size_t r0 = 0; r0 < rows_.size(); r0 += chunk)
            forward_batch(r0, std::min(rows_.size(), r0 + chunk), depth, out, stride, hidden,
                          layers, mode);
        counters_.tokens_forwarded += rows_.size();
        for (std::size_t i = 0; i < requests.size(); ++i)
            if (plans_[i].valid)
                caches_[plans_[i].target].tokens.assign(requests[i].tokens.begin(),
                                                        requests[i].tokens.end());
    }

    bool validate(const dk::sequence_request& req) {
        if (req.tokens.empty()) return set_error("empty sequence"), false;
        if (req.n_last == 0 || req.n_last > req.tokens.size())
            return set_error("n_last must be in [1, sequence length]"), false;
        if (req.tokens.size() > max_sequence_length())
            return set_error("sequence of " + std::to_string(req.tokens.size()) +
                             " tokens exceeds seq_len " + std::to_string(max_sequence_length())),
                   false;
        if (req.slot >= opt_.max_slots) return set_error("slot beyond max_slots"), false;
        for (dk::token_id t : req.tokens)
            if (t < 0 || std::size_t(t) >= vocab_size())
                return set_error("token id " + std::to_string(t) + " out of range"), false;
        return true;
    }

    // Grows a scratch buffer to at least n elements (never shrinks: no allocation once the
    // largest call has been seen).
    template <class T>
    static void reserve_rows(std::vector<T>& v, std::size_t n) {
        if (v.size() < n) v.resize(n);
    }

    // Queues the final norm of residual `x` for the classifier; its logits go to `logits`, the
    // normed vector to `hidden` (when non-null). Flushes when the queue is full.
    void queue_readout(const float* x, float* logits, float* hidden) noexcept {
        const std::size_t dim = hidden_size();
        float* normed = normed_.data() + n_readouts_ * dim;
        detail::rmsnorm(normed, x, ck_.tensor(ck_.layout.rms_final), dim);
        if (hidden) std::copy_n(normed, dim, hidden);
        readout_rows_[n_readouts_] = logits;
        if (++n_readouts_ == readout_capacity_) flush_readouts();
    }

    // The classifier over every queued row: one pass over its weights.
    void flush_readouts() noexcept {
        if (n_readouts_ == 0) return;
        float* const* rows = readout_rows_.data();
        detail::matmul_rows<A>([rows](std::size_t r) { return rows[r]; }, normed_.data(),
                               n_readouts_, ck_.tensor(ck_.layout.wcls), hidden_size(),
                               vocab_size());
        n_readouts_ = 0;
    }

    // Rows [r0, r1) of rows_ through layers [0, depth) together: each weight matrix is applied
    // to all of them at once (matmul_rows), RoPE per position, K/V rows written into each
    // request's cache, then causal attention of each position over its own cache (positions of
    // one request in this batch see each other causally: all K/V rows of a layer are written
    // before any attention of that layer). Wanted outputs are read out by the batched classifier.
    // Every per-position computation is the one-position computation (same order of operations),
    // so the results are bit-identical to computing each position alone.
    void forward_batch(std::size_t r0, std::size_t r1, std::size_t depth, float* out,
                       std::size_t stride, float* hidden, std::span<const int> layers, int mode) {
        const config& c = ck_.cfg;
        const weight_layout& w = ck_.layout;
        const std::size_t dim = std::size_t(c.dim), hid = std::size_t(c.hidden_dim),
                          kv_dim = std::size_t(c.kv_dim()), hs = std::size_t(c.head_size()),
                          half = hs / 2, n_heads = std::size_t(c.n_heads),
                          kv_mul = std::size_t(c.n_heads / c.n_kv_heads),
                          T = std::size_t(c.seq_len);
        const std::size_t m = r1 - r0;
        const std::size_t per_pos = mode == 1 ? layers.size() : 1;
        reserve_rows(x_, m * dim);
        reserve_rows(xb_, m * dim);
        reserve_rows(xb2_, m * dim);
        reserve_rows(q_, m * dim);
        reserve_rows(k_, m * kv_dim);
        reserve_rows(v_, m * kv_dim);
        reserve_rows(hb_, m * hid);
        reserve_rows(hb2_, m * hid);
        reserve_rows(rope_, m * hs);
        readout_capacity_ = std::max<std::size_t>(
            1, std::min(m * std::max<std::size_t>(per_pos, 1), opt_.max_batch_positions));
        reserve_rows(normed_, readout_capacity_ * dim);
        reserve_rows(readout_rows_, readout_capacity_);
        n_readouts_ = 0;
        float* const x = x_.data();
        float* const xb = xb_.data();
        float* const xb2 = xb2_.data();
        float* const q = q_.data();
        float* const kk = k_.data();
        float* const vv = v_.data();
        float* const hb = hb_.data();
        float* const hb2 = hb2_.data();
        auto rows_of = [](float* base, std::size_t width) {
            return [base, width](std::size_t r) { return base + r * width; };
        };

        // Embeddings and the RoPE rotation of each position (cos, sin per frequency).
        for (std::size_t t = 0; t < m; ++t) {
            const work_row& wr = rows_[r0 + t];
            std::copy_n(ck_.tensor(w.token_embedding) + std::size_t(wr.token) * dim, dim,
                        x + t * dim);
            for (std::size_t f = 0; f < half; ++f) {
                const float val = float(wr.pos) * inv_freq_[f];
                rope_[t * hs + f] = std::cos(val);
                rope_[t * hs + half + f] = std::sin(val);
            }
        }
        // Readouts of the positions whose outputs are wanted, after layer l (mode 1: each
        // requested layer; mode 0: the output layer only).
        auto read_out = [&](std::size_t l) {
            if (mode == 1 && std::find(layers.begin(), layers.end(), int(l)) == layers.end())
                return;
            if (mode == 0 && l != depth) return;
            for (std::size_t t = 0; t < m; ++t) {
                const work_row& wr = rows_[r0 + t];
                const plan& p = plans_[wr.request];
                if (wr.pos < p.first_out) continue;
                const std::size_t k = wr.pos - p.first_out;
                if (mode == 1) {
                    for (std::size_t li = 0; li < layers.size(); ++li)
                        if (std::size_t(layers[li]) == l)
                            queue_readout(x + t * dim,
                                          out + (p.out_row + k * per_pos + li) * stride, nullptr);
                } else {
                    queue_readout(x + t * dim, out + (p.out_row + k) * stride,
                                  hidden ? hidden + (p.out_row + k) * dim : nullptr);
                }
            }
        };
        read_out(0);
        const float sqrt_hs = std::sqrt(float(hs));
        for (std::size_t l = 0; l < depth; ++l) {
            const std::size_t loff = l * kv_dim * T;
            for (std::size_t t = 0; t < m; ++t)
                detail::rmsnorm(xb + t * dim, x + t * dim, ck_.tensor(w.rms_att) + l * dim, dim);
            detail::matmul_rows<A>(rows_of(q, dim), xb, m, ck_.tensor(w.wq) + l * dim * dim, dim,
                                   dim);
            detail::matmul_rows<A>(rows_of(kk, kv_dim), xb, m, ck_.tensor(w.wk) + l * kv_dim * dim,
                                   dim, kv_dim);
            detail::matmul_rows<A>(rows_of(vv, kv_dim), xb, m, ck_.tensor(w.wv) + l * kv_dim * dim,
                                   dim, kv_dim);
            for (std::size_t t = 0; t < m; ++t) {
                const work_row& wr = rows_[r0 + t];
                // RoPE: rotate adjacent pairs (i, i+1) of q, and of k below kv_dim.
                const float* cs = rope_.data() + t * hs;
                for (std::size_t i = 0; i < dim; i += 2) {
                    const std::size_t f = (i % hs) / 2;
                    const float fcr = cs[f], fci = cs[half + f];
                    const int rotn = i < kv_dim ? 2 : 1;
                    for (int vi = 0; vi < rotn; ++vi) {
                        float* vec = vi == 0 ? q + t * dim : kk + t * kv_dim;
                        const float v0 = vec[i], v1 = vec[i + 1];
                        vec[i] = v0 * fcr - v1 * fci;
                        vec[i + 1] = v0 * fci + v1 * fcr;
                    }
                }
                // Store the position's K/V rows (channel-major: each channel's positions
                // contiguous) in its request's cache.
                kv_cache& st = caches_[plans_[wr.request].target];
                for (std::size_t j = 0; j < kv_dim; ++j) {
                    st.key[loff + j * T + wr.pos] = kk[t * kv_dim + j];
                    st.value[loff + j * T + wr.pos] = vv[t * kv_dim + j];
                }
            }
            // Grouped-query attention of each position over positions 0..pos of its cache, SIMD
            // over positions: scores = sum_i q_i K_i[0..pos]; softmax(scores / sqrt(hs));
            // out_i = p . V_i[0..pos].
            for (std::size_t t = 0; t < m; ++t) {
                const work_row& wr = rows_[r0 + t];
                const kv_cache& st = caches_[plans_[wr.request].target];
                const std::size_t n = wr.pos + 1;
                const std::span<float> att(att_.data(), n), prob(prob_.data(), n);
                for (std::size_t h = 0; h < n_heads; ++h) {
                    const float* qh = q + t * dim + h * hs;
                    const std::size_t kvh = (h / kv_mul) * hs;
                    std::fill(att.begin(), att.end(), 0.f);
                    for (std::size_t i = 0; i < hs; ++i)
                        detail::axpy<A>(att.data(), qh[i], st.key.data() + loff + (kvh + i) * T, n);
                    dk::kernels::softmax<A>(att, prob, sqrt_hs);
                    float* xbh = xb + t * dim + h * hs;
                    for (std::size_t i = 0; i < hs; ++i)
                        xbh[i] =
                            detail::dot<A>(prob.data(), st.value.data() + loff + (kvh + i) * T, n);
                }
            }
            detail::matmul_rows<A>(rows_of(xb2, dim), xb, m, ck_.tensor(w.wo) + l * dim * dim, dim,
                                   dim);
            for (std::size_t i = 0; i < m * dim; ++i) x[i] += xb2[i];
            // SwiGLU FFN.
            for (std::size_t t = 0; t < m; ++t)
                detail::rmsnorm(xb + t * dim, x + t * dim, ck_.tensor(w.rms_ffn) + l * dim, dim);
            detail::matmul_rows<A>(rows_of(hb, hid), xb, m, ck_.tensor(w.w1) + l * dim * hid, dim,
                                   hid);
            detail::matmul_rows<A>(rows_of(hb2, hid), xb, m, ck_.tensor(w.w3) + l * dim * hid, dim,
                                   hid);
            for (std::size_t i = 0; i < m * hid; ++i) {
                float val = hb[i];
                val *= 1.f / (1.f + std::exp(-val));
                hb[i] = val * hb2[i];
            }
            detail::matmul_rows<A>(rows_of(xb, dim), hb, m, ck_.tensor(w.w2) + l * dim * hid, hid,
                                   dim);
            for (std::size_t i = 0; i < m * dim; ++i) x[i] += xb[i];
            read_out(l + 1);
        }
        flush_readouts();
    }

    checkpoint ck_;
    model_options opt_;
    std::optional<mtp_module<A>> mtp_;
    std::vector<kv_cache> caches_;
    std::vector<plan> plans_;
    std::vector<std::size_t> order_;
    std::vector<char> claimed_;
    std::vector<std::int64_t> in_call_;
    std::vector<work_row> rows_;
    // Scratch of a batch, rows of m positions (grown to the largest batch seen, then reused).
    std::vector<float> x_, xb_, xb2_, hb_, hb2_, q_, k_, v_, rope_, normed_;
    std::vector<float> att_, prob_, inv_freq_;  // one position's attention; RoPE frequencies
    std::vector<float*> readout_rows_;          // classifier queue: output row of each normed row
    std::size_t n_readouts_ = 0, readout_capacity_ = 1;
    std::vector<std::vector<dk::token_id>> head_seqs_;  // head_logits: each request + its heads
    std::vector<dk::sequence_request> head_reqs_;
    model_counters counters_;
    std::string error_;
};

/// The backend on the default architecture.
using model = basic_model<>;

static_assert(dk::language_model<model>);
static_assert(dk::hidden_state_model<model>);
static_assert(dk::layer_logits_model<model>);
static_assert(dk::multi_token_model<model>);
static_assert(dk::mtp_module_model<model>);

}  // namespace dk_llama2
