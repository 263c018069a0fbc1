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
/// Invalid requests (empty, token id out of range, longer than seq_len, slot >= max_slots) do
/// not read out of bounds: their output rows are filled with NaN and last_error() says why.

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

/// out[i] = sum_j W[i*n + j] * x[j] for i < d (run.c's matmul), xsimd batches over j.
template <class A = dk::simd::default_arch>
void matmul(float* DECODEKIT_RESTRICT out, const float* DECODEKIT_RESTRICT x,
            const float* DECODEKIT_RESTRICT w, std::size_t n, std::size_t d) noexcept {
    using B = dk::simd::batch<A>;
    constexpr std::size_t L = dk::simd::lanes<A>;
    const std::size_t nv = n - n % L;
    std::size_t i = 0;
    for (; i + 2 <= d; i += 2) {  // two rows at a time: x is loaded once for both
        const float* r0 = w + i * n;
        const float* r1 = r0 + n;
        B a0(0.f), a1(0.f);
        for (std::size_t j = 0; j < nv; j += L) {
            const B xv = B::load_unaligned(x + j);
            a0 = xsimd::fma(B::load_unaligned(r0 + j), xv, a0);
            a1 = xsimd::fma(B::load_unaligned(r1 + j), xv, a1);
        }
        float s0 = dk::simd::reduce_add<A>(a0), s1 = dk::simd::reduce_add<A>(a1);
        for (std::size_t j = nv; j < n; ++j) {
            s0 += r0[j] * x[j];
            s1 += r1[j] * x[j];
        }
        out[i] = s0;
        out[i + 1] = s1;
    }
    for (; i < d; ++i) {
        const float* r = w + i * n;
        B a(0.f);
        for (std::size_t j = 0; j < nv; j += L)
            a = xsimd::fma(B::load_unaligned(r + j), B::load_unaligned(x + j), a);
        float s = dk::simd::reduce_add<A>(a);
        for (std::size_t j = nv; j < n; ++j) s += r[j] * x[j];
        out[i] = s;
    }
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
    std::size_t num_heads = 1;    ///< multi-token heads exposed (>= 1; h >= 1 emulated, see top)
    std::size_t max_slots = 256;  ///< slots accepted (a KV cache is allocated per slot used)
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
    /// Takes ownership of a loaded checkpoint.
    explicit basic_model(checkpoint ck, model_options opt = {}) : ck_(std::move(ck)), opt_(opt) {
        const config& c = ck_.cfg;
        const std::size_t dim = std::size_t(c.dim), hid = std::size_t(c.hidden_dim);
        x_.resize(dim);
        xb_.resize(dim);
        xb2_.resize(dim);
        hb_.resize(hid);
        hb2_.resize(hid);
        q_.resize(dim);
        att_.resize(std::size_t(c.seq_len));
        prob_.resize(std::size_t(c.seq_len));
        k_.resize(std::size_t(c.kv_dim()));
        v_.resize(std::size_t(c.kv_dim()));
        resid_.resize((std::size_t(c.n_layers) + 1) * dim);
        normed_.resize(dim);
        const std::size_t half = std::size_t(c.head_size()) / 2;
        inv_freq_.resize(half);
        for (std::size_t i = 0; i < half; ++i)
            inv_freq_[i] = 1.0f / std::pow(10000.0f, float(2 * i) / float(c.head_size()));
        if (opt_.num_heads == 0) opt_.num_heads = 1;
    }

    const config& cfg() const noexcept { return ck_.cfg; }

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
    void logits(std::span<const dk::sequence_request> requests, std::span<float> out) {
        run(requests, out, {}, {}, 0);
    }

    /// Logits and the final-normed hidden states of the same positions.
    void logits_and_hidden(std::span<const dk::sequence_request> requests,
                           std::span<float> logits_out, std::span<float> hidden_out) {
        run(requests, logits_out, hidden_out, {}, 0);
    }

    /// Logits read out after each layer in `layers` (rows [request][position][layer]).
    void layer_logits(std::span<const dk::sequence_request> requests, std::span<const int> layers,
                      std::span<float> out) {
        run(requests, out, {}, layers, 1);
    }

    /// Logits of heads 0..num_heads()-1 for each request's last position (rows [request][head]).
    void head_logits(std::span<const dk::sequence_request> requests, std::span<float> out) {
        const std::uint64_t calls = counters_.calls + 1;  // one call, whatever run() counts
        const std::size_t V = vocab_size(), H = num_heads();
        if (out.size() < requests.size() * H * V) {
            set_error("head_logits: output span too small");
            return;
        }
        std::vector<dk::token_id> seq;
        for (std::size_t r = 0; r < requests.size(); ++r) {
            seq.assign(requests[r].tokens.begin(), requests[r].tokens.end());
            for (std::size_t h = 0; h < H; ++h) {
                float* row = out.data() + (r * H + h) * V;
                const dk::sequence_request one{seq, 1, requests[r].slot};
                run(std::span(&one, 1), std::span<float>(row, V), {}, {}, 0);
                if (!error_.empty()) {
                    for (std::size_t k = h + 1; k < H; ++k)
                        std::fill_n(out.data() + (r * H + k) * V, V,
                                    std::numeric_limits<float>::quiet_NaN());
                    break;
                }
                if (h + 1 < H) {
                    const auto best = std::max_element(row, row + V) - row;
                    seq.push_back(dk::token_id(best));
                }
            }
        }
        counters_.calls = calls;
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
    };
    static constexpr std::size_t npos_ = std::size_t(-1);

    void set_error(std::string e) { error_ = std::move(e); }

    std::size_t new_cache() {
        kv_cache c;
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

    // mode 0: logits (+ hidden when hidden_out non-empty); mode 1: layer logits.
    void run(std::span<const dk::sequence_request> requests, std::span<float> out,
             std::span<float> hidden_out, std::span<const int> layers, int mode) {
        ++counters_.calls;
        error_.clear();
        const std::size_t V = vocab_size(), D = hidden_size();
        const std::size_t per_pos = mode == 1 ? layers.size() : 1;
        const std::size_t rows = dk::rows_needed(requests) * per_pos;
        if (out.size() < rows * V || (!hidden_out.empty() && hidden_out.size() < rows * D)) {
            set_error("output span too small: need " + std::to_string(rows) + " rows");
            return;
        }
        for (int l : layers) {
            if (l < 0 || std::size_t(l) > num_layers()) {
                set_error("layer " + std::to_string(l) + " out of range [0, num_layers()]");
                std::fill_n(out.data(), rows * V, std::numeric_limits<float>::quiet_NaN());
                return;
            }
        }
        // Layers to run: all for logits; up to the deepest requested layer for layer logits (an
        // early-exit draft costs only its layers; its cache is then shallower).
        std::size_t depth = num_layers();
        if (mode == 1) {
            depth = 0;
            for (int l : layers) depth = std::max(depth, std::size_t(l));
        }

        // 1. Plan against the state before the call: each request's best cache to reuse.
        plans_.assign(requests.size(), plan{});
        for (std::size_t i = 0; i < requests.size(); ++i) {
            plan& p = plans_[i];
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
        order_.resize(requests.size());
        for (std::size_t i = 0; i < order_.size(); ++i) order_[i] = i;
        std::stable_sort(order_.begin(), order_.end(), [&](std::size_t a, std::size_t b) {
            return plans_[a].source_len > plans_[b].source_len;
        });
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
        // 4. Remap the slots, then compute each request from its start.
        for (std::size_t i = 0; i < requests.size(); ++i) {
            const plan& p = plans_[i];
            if (!p.valid) continue;
            const std::int64_t s = std::int64_t(requests[i].slot);
            for (auto& c : caches_)
                if (c.owner == s) c.owner = -1;
        }
        std::size_t row = 0;
        for (std::size_t i = 0; i < requests.size(); ++i) {
            const auto& req = requests[i];
            const std::size_t n = req.n_last * per_pos;
            std::span<float> o(out.data() + row * V, n * V);
            std::span<float> h = hidden_out.empty()
                                     ? std::span<float>{}
                                     : std::span<float>(hidden_out.data() + row * D, n * D);
            row += n;
            const plan& p = plans_[i];
            if (!p.valid) {
                std::fill(o.begin(), o.end(), std::numeric_limits<float>::quiet_NaN());
                std::fill(h.begin(), h.end(), std::numeric_limits<float>::quiet_NaN());
                continue;
            }
            kv_cache& c = caches_[p.target];
            c.owner = std::int64_t(req.slot);
            compute(c, req, p, o, h, layers, mode);
        }
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

    void compute(kv_cache& c, const dk::sequence_request& req, const plan& p, std::span<float> out,
                 std::span<float> hidden, std::span<const int> layers, int mode) {
        const std::size_t len = req.tokens.size(), start = p.start;
        counters_.tokens_reused += start;
        c.tokens.assign(req.tokens.begin(), req.tokens.begin() + std::ptrdiff_t(start));
        c.depth = start > 0 ? std::min(c.depth, p.depth) : p.depth;
        const std::size_t V = vocab_size(), D = hidden_size();
        const std::size_t per_pos = mode == 1 ? layers.size() : 1;
        for (std::size_t pos = start; pos < len; ++pos) {
            const bool want = pos >= p.first_out;
            forward_token(c, req.tokens[pos], pos, p.depth, want && mode == 1);
            c.tokens.push_back(req.tokens[pos]);
            ++counters_.tokens_forwarded;
            if (!want) continue;
            const std::size_t k = pos - p.first_out;
            if (mode == 1) {
                for (std::size_t li = 0; li < layers.size(); ++li)
                    readout(resid_.data() + std::size_t(layers[li]) * D,
                            out.data() + (k * per_pos + li) * V, nullptr);
            } else {
                readout(x_.data(), out.data() + k * V,
                        hidden.empty() ? nullptr : hidden.data() + k * D);
            }
        }
    }

    // Final norm + classifier of residual `x` into `logits`; the normed vector into `hidden`.
    void readout(const float* x, float* logits, float* hidden) noexcept {
        const config& c = ck_.cfg;
        const std::size_t dim = std::size_t(c.dim);
        detail::rmsnorm(normed_.data(), x, ck_.tensor(ck_.layout.rms_final), dim);
        if (hidden) std::copy_n(normed_.data(), dim, hidden);
        detail::matmul<A>(logits, normed_.data(), ck_.tensor(ck_.layout.wcls), dim, vocab_size());
    }

    // One token through layers [0, depth) at `pos`, writing its K/V rows into the slot; leaves
    // the last residual in x_ (and each layer's residual in resid_ when keep_layers).
    void forward_token(kv_cache& st, dk::token_id token, std::size_t pos, std::size_t depth,
                       bool keep_layers) noexcept {
        const config& c = ck_.cfg;
        const weight_layout& w = ck_.layout;
        const std::size_t dim = std::size_t(c.dim), hid = std::size_t(c.hidden_dim),
                          kv_dim = std::size_t(c.kv_dim()), hs = std::size_t(c.head_size()),
                          n_heads = std::size_t(c.n_heads),
                          kv_mul = std::size_t(c.n_heads / c.n_kv_heads),
                          T = std::size_t(c.seq_len);
        float* x = x_.data();
        std::copy_n(ck_.tensor(w.token_embedding) + std::size_t(token) * dim, dim, x);
        if (keep_layers) std::copy_n(x, dim, resid_.data());
        const float sqrt_hs = std::sqrt(float(hs));
        const std::span<float> att(att_.data(), pos + 1), prob(prob_.data(), pos + 1);
        for (std::size_t l = 0; l < depth; ++l) {
            detail::rmsnorm(xb_.data(), x, ck_.tensor(w.rms_att) + l * dim, dim);
            const std::size_t loff = l * kv_dim * T;
            float* k = k_.data();
            float* v = v_.data();
            detail::matmul<A>(q_.data(), xb_.data(), ck_.tensor(w.wq) + l * dim * dim, dim, dim);
            detail::matmul<A>(k, xb_.data(), ck_.tensor(w.wk) + l * kv_dim * dim, dim, kv_dim);
            detail::matmul<A>(v, xb_.data(), ck_.tensor(w.wv) + l * kv_dim * dim, dim, kv_dim);
            // RoPE: rotate adjacent pairs (i, i+1) of q, and of k below kv_dim.
            for (std::size_t i = 0; i < dim; i += 2) {
                const std::size_t head_dim = i % hs;
                const float val = float(pos) * inv_freq_[head_dim / 2];
                const float fcr = std::cos(val), fci = std::sin(val);
                const int rotn = i < kv_dim ? 2 : 1;
                for (int vi = 0; vi < rotn; ++vi) {
                    float* vec = vi == 0 ? q_.data() : k;
                    const float v0 = vec[i], v1 = vec[i + 1];
                    vec[i] = v0 * fcr - v1 * fci;
                    vec[i + 1] = v0 * fci + v1 * fcr;
                }
            }
            // Store this position's K/V rows (channel-major: each channel's positions contiguous).
            for (std::size_t j = 0; j < kv_dim; ++j) {
                st.key[loff + j * T + pos] = k[j];
                st.value[loff + j * T + pos] = v[j];
            }
            // Grouped-query attention over positions 0..pos, SIMD over positions:
            // scores = sum_i q_i K_i[0..pos]; softmax(scores / sqrt(hs)); out_i = p . V_i[0..pos].
            for (std::size_t h = 0; h < n_heads; ++h) {
                const float* qh = q_.data() + h * hs;
                const std::size_t kvh = (h / kv_mul) * hs;
                std::fill(att.begin(), att.end(), 0.f);
                for (std::size_t i = 0; i < hs; ++i)
                    detail::axpy<A>(att.data(), qh[i], st.key.data() + loff + (kvh + i) * T,
                                    pos + 1);
                dk::kernels::softmax<A>(att, prob, sqrt_hs);
                float* xbh = xb_.data() + h * hs;
                for (std::size_t i = 0; i < hs; ++i)
                    xbh[i] = detail::dot<A>(prob.data(), st.value.data() + loff + (kvh + i) * T,
                                            pos + 1);
            }
            detail::matmul<A>(xb2_.data(), xb_.data(), ck_.tensor(w.wo) + l * dim * dim, dim, dim);
            for (std::size_t i = 0; i < dim; ++i) x[i] += xb2_[i];
            // SwiGLU FFN.
            detail::rmsnorm(xb_.data(), x, ck_.tensor(w.rms_ffn) + l * dim, dim);
            detail::matmul<A>(hb_.data(), xb_.data(), ck_.tensor(w.w1) + l * dim * hid, dim, hid);
            detail::matmul<A>(hb2_.data(), xb_.data(), ck_.tensor(w.w3) + l * dim * hid, dim, hid);
            for (std::size_t i = 0; i < hid; ++i) {
                float val = hb_[i];
                val *= 1.f / (1.f + std::exp(-val));
                hb_[i] = val * hb2_[i];
            }
            detail::matmul<A>(xb_.data(), hb_.data(), ck_.tensor(w.w2) + l * dim * hid, hid, dim);
            for (std::size_t i = 0; i < dim; ++i) x[i] += xb_[i];
            if (keep_layers) std::copy_n(x, dim, resid_.data() + (l + 1) * dim);
        }
    }

    checkpoint ck_;
    model_options opt_;
    std::optional<mtp_module<A>> mtp_;
    std::vector<kv_cache> caches_;
    std::vector<plan> plans_;
    std::vector<std::size_t> order_;
    std::vector<char> claimed_;
    std::vector<std::int64_t> in_call_;
    std::vector<float> x_, xb_, xb2_, hb_, hb2_, q_, k_, v_, att_, prob_, resid_, normed_,
        inv_freq_;
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
