#pragma once
/// \file llama2/mtp.hpp
/// Sequential multi-token-prediction modules for the reference backend (decodekit's
/// mtp_module_model): DeepSeek-V3's MTP structure scaled to a llama2.c checkpoint, its file
/// format and loader, and its forward. dk_llama2::model exposes a loaded module through
/// mtp_depth() / mtp_logits() (model.hpp).
///
/// ## The module (depth k, one position)
///   a = RMSNorm(h; hnorm)            h: h(k-1, i), dim floats (depth 0: the main model's final
///                                    hidden state, as logits_and_hidden returns it)
///   b = RMSNorm(Emb(t); enorm)       t = t(i+k); Emb = the checkpoint's token embedding
///   x = proj [a; b]                  proj: dim x 2 dim
///   x = x + W2 (silu(W1 xn) * W3 xn), xn = RMSNorm(x; ffn_norm)      (one SwiGLU FFN block)
///   h(k, i) = RMSNorm(x; the checkpoint's final norm)   -> logits = the checkpoint's classifier h
/// RMSNorm is run.c's (eps 1e-5). The block has no attention: the module is a function of
/// (h, t, depth) only, so it keeps no per-sequence state, ignores mtp_request::position and
/// ::slot, and a cut-back after rejected drafts needs nothing (examples/README.md gives the
/// acceptance measured with and without attention behind this choice). h(k, i) is the vector
/// the shared head reads, as at depth 0.
///
/// ## File format, version 1 (little-endian)
///   char magic[8] = "DKMTPMOD"; u32 version = 1;
///   u32 dim, hidden (FFN width), vocab, depth (modules), attention (0/1), n_heads, n_kv_heads;
///   per module, f32: hnorm[dim], enorm[dim], proj[dim][2 dim], (attention only: attn_norm[dim],
///     wq[dim][dim], wk[kv][dim], wv[kv][dim], wo[dim][dim], kv = dim / n_heads * n_kv_heads),
///     ffn_norm[dim], w1[hidden][dim], w2[dim][hidden], w3[hidden][dim]  (matrices row-major,
///     out x in; proj's first dim columns read a, the others b);
///   u32 crc32 (IEEE 802.3, zlib's) of every byte before it.
/// n_heads and n_kv_heads are 0 without attention. The format defines attention blocks so that a
/// module with attention is a new file, not a new format; this backend's forward has none and
/// rejects such files. The loader rejects (with a message, never reading out of bounds): a file
/// shorter than the header, a wrong magic or version, shape fields out of range, a size other
/// than exactly what the shapes imply, a CRC mismatch, non-finite weights, and a dim or vocab
/// other than the checkpoint's; load_mtp_module checks the header against the file size before
/// reading the file. Errors are values (result<T>), never exceptions.

#include "checkpoint.hpp"

// The umbrella only (the simd layer), so the backend also builds against the single header.
#include <decodekit/decodekit.hpp>

#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace dk_llama2 {

namespace dk = decodekit;

/// The shapes of an MTP module file.
struct mtp_shape {
    int dim = 0;             ///< the checkpoint's dim
    int hidden = 0;          ///< FFN width of each module
    int vocab = 0;           ///< the checkpoint's vocabulary size
    int depth = 0;           ///< modules in the chain
    bool attention = false;  ///< blocks with attention (not supported by this backend)
    int n_heads = 0, n_kv_heads = 0;
};

inline constexpr char mtp_magic[8] = {'D', 'K', 'M', 'T', 'P', 'M', 'O', 'D'};
inline constexpr std::uint32_t mtp_format_version = 1;
inline constexpr std::size_t mtp_header_bytes = 8 + 8 * 4;
inline constexpr int mtp_max_depth = 64;

/// Offsets (in floats) of one module's tensors from the start of that module.
struct mtp_layout {
    std::size_t hnorm, enorm, proj, ffn_norm, w1, w2, w3;
    std::size_t per_module;  ///< floats per module (attention tensors included)
    std::size_t total;       ///< floats of the whole chain
};

/// The first problem with `s` (message), or nullopt.
inline std::optional<std::string> check_mtp_shape(const mtp_shape& s) {
    auto bad = [](const char* field, long long v, const char* allowed) {
        return std::string("llama2 MTP module: header field ") + field + " = " + std::to_string(v) +
               ", must be " + allowed;
    };
    if (s.dim <= 0 || s.dim > max_dim) return bad("dim", s.dim, "in [1, 65536]");
    if (s.hidden <= 0 || s.hidden > max_hidden) return bad("hidden", s.hidden, "in [1, 262144]");
    if (s.vocab <= 0 || s.vocab > max_vocab) return bad("vocab", s.vocab, "in [1, 4194304]");
    if (s.depth <= 0 || s.depth > mtp_max_depth) return bad("depth", s.depth, "in [1, 64]");
    if (s.attention) {
        if (s.n_heads <= 0 || s.n_heads > s.dim || s.dim % s.n_heads != 0)
            return bad("n_heads", s.n_heads, "a divisor of dim");
        if (s.n_kv_heads <= 0 || s.n_heads % s.n_kv_heads != 0)
            return bad("n_kv_heads", s.n_kv_heads, "a divisor of n_heads");
    } else if (s.n_heads != 0 || s.n_kv_heads != 0) {
        return bad(s.n_heads != 0 ? "n_heads" : "n_kv_heads",
                   s.n_heads != 0 ? s.n_heads : s.n_kv_heads, "0 when attention = 0");
    }
    return std::nullopt;
}

/// Where each tensor of a module lives. \pre !check_mtp_shape(s)
inline mtp_layout layout_of(const mtp_shape& s) noexcept {
    const std::size_t d = std::size_t(s.dim), h = std::size_t(s.hidden);
    mtp_layout l{};
    std::size_t at = 0;
    auto take = [&](std::size_t n) {
        const std::size_t here = at;
        at += n;
        return here;
    };
    l.hnorm = take(d);
    l.enorm = take(d);
    l.proj = take(d * 2 * d);
    if (s.attention) {
        const std::size_t kv = d / std::size_t(s.n_heads) * std::size_t(s.n_kv_heads);
        take(d + 2 * d * d + 2 * kv * d);  // attn_norm, wq, wk, wv, wo (not supported here)
    }
    l.ffn_norm = take(d);
    l.w1 = take(h * d);
    l.w2 = take(d * h);
    l.w3 = take(h * d);
    l.per_module = at;
    l.total = at * std::size_t(s.depth);
    return l;
}

/// A loaded module chain: its shapes and weights (owned).
struct mtp_weights {
    mtp_shape shape;
    mtp_layout layout;
    std::vector<float> data;

    /// The tensor at `offset` of module `k` (1-based).
    const float* tensor(std::size_t k, std::size_t offset) const noexcept {
        return data.data() + (k - 1) * layout.per_module + offset;
    }
};

namespace detail {
/// CRC-32 (IEEE 802.3, reflected, as zlib.crc32) of `bytes`.
inline std::uint32_t crc32(std::span<const unsigned char> bytes) noexcept {
    static constexpr auto table = [] {
        std::array<std::uint32_t, 256> t{};
        for (std::uint32_t i = 0; i < 256; ++i) {
            std::uint32_t c = i;
            for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            t[i] = c;
        }
        return t;
    }();
    std::uint32_t c = 0xFFFFFFFFu;
    for (unsigned char b : bytes) c = table[(c ^ b) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

inline std::uint32_t read_u32(const unsigned char* p) noexcept {
    std::uint32_t v;
    std::memcpy(&v, p, 4);
    return v;
}
}  // namespace detail

/// The shapes in the header of a module file of `file_size` bytes whose first bytes are `head`
/// (at least mtp_header_bytes of them when the file has that many), checked: magic, version,
/// shape fields, and a file size of exactly what they imply. Reads nothing else.
inline result<mtp_shape> parse_mtp_header(std::span<const unsigned char> head,
                                          std::size_t file_size) {
    using R = result<mtp_shape>;
    const std::string what = "llama2 MTP module: ";
    if (file_size < mtp_header_bytes + 4 || head.size() < mtp_header_bytes)
        return R::failure(what + "truncated header (" + std::to_string(file_size) +
                          " bytes, need at least " + std::to_string(mtp_header_bytes + 4) + ")");
    if (std::memcmp(head.data(), mtp_magic, 8) != 0)
        return R::failure(what + "bad magic (not a DKMTPMOD file)");
    const std::uint32_t version = detail::read_u32(head.data() + 8);
    if (version != mtp_format_version)
        return R::failure(what + "format version " + std::to_string(version) +
                          " is not supported (this loader reads version 1)");
    std::uint32_t f[7];
    for (int i = 0; i < 7; ++i) f[i] = detail::read_u32(head.data() + 12 + 4 * i);
    if (f[4] > 1)
        return R::failure(what + "header field attention = " + std::to_string(f[4]) +
                          ", must be 0 or 1");
    auto field = [](std::uint32_t v) { return v > 0x7FFFFFFFu ? -1 : int(v); };
    mtp_shape s{field(f[0]), field(f[1]), field(f[2]), field(f[3]),
                f[4] == 1,   field(f[5]), field(f[6])};
    if (auto problem = check_mtp_shape(s)) return R::failure(*problem);
    const mtp_layout lay = layout_of(s);
    const std::size_t expected = mtp_header_bytes + lay.total * 4 + 4;
    if (file_size != expected)
        return R::failure(what + (file_size < expected ? "truncated" : "oversized") +
                          " file: " + std::to_string(file_size) + " bytes, the header implies " +
                          std::to_string(expected) + " (40 + 4 x " + std::to_string(lay.total) +
                          " floats + 4)");
    return s;
}

/// Parses a module file from memory and checks it against the checkpoint configuration `cfg`
/// (the module's dim and vocab must be the checkpoint's). See the file comment for what fails.
inline result<mtp_weights> parse_mtp_module(std::span<const unsigned char> bytes,
                                            const config& cfg) {
    using R = result<mtp_weights>;
    const std::string what = "llama2 MTP module: ";
    auto header = parse_mtp_header(bytes, bytes.size());
    if (!header) return R::failure(header.error());
    const mtp_shape s = header.value();
    const mtp_layout lay = layout_of(s);
    const std::size_t expected = bytes.size();
    const std::uint32_t stored = detail::read_u32(bytes.data() + expected - 4);
    if (detail::crc32(bytes.first(expected - 4)) != stored)
        return R::failure(what + "corrupt file: CRC-32 mismatch");
    if (s.attention)
        return R::failure(what +
                          "blocks with attention (header field attention = 1) are not supported "
                          "by this backend");
    if (s.dim != cfg.dim || s.vocab != cfg.vocab_size)
        return R::failure(what + "shapes do not match the checkpoint: module dim " +
                          std::to_string(s.dim) + ", vocab " + std::to_string(s.vocab) +
                          "; checkpoint dim " + std::to_string(cfg.dim) + ", vocab " +
                          std::to_string(cfg.vocab_size));
    mtp_weights w;
    w.shape = s;
    w.layout = lay;
    w.data.resize(lay.total);
    std::memcpy(w.data.data(), bytes.data() + mtp_header_bytes, lay.total * 4);
    for (std::size_t i = 0; i < w.data.size(); ++i)
        if (!std::isfinite(w.data[i]))
            return R::failure(what + "corrupt weights: non-finite value at float " +
                              std::to_string(i));
    return w;
}

/// Loads a module file (read once) for a checkpoint with configuration `cfg`. See
/// parse_mtp_module().
inline result<mtp_weights> load_mtp_module(const std::string& path, const config& cfg) {
    // Check the header against the file size first: a huge or wrong file is rejected unread.
    {
        std::FILE* f = std::fopen(path.c_str(), "rb");
        if (!f) return result<mtp_weights>::failure("cannot open '" + path + "'");
        unsigned char h[mtp_header_bytes] = {};
        const std::size_t got = std::fread(h, 1, sizeof h, f);
        long size = -1;
        if (std::fseek(f, 0, SEEK_END) == 0) size = std::ftell(f);
        std::fclose(f);
        if (size >= 0) {
            auto header =
                parse_mtp_header(std::span<const unsigned char>(h, got), std::size_t(size));
            if (!header) return result<mtp_weights>::failure(header.error() + " ('" + path + "')");
        }
    }
    auto bytes = read_file_bytes(path);
    if (!bytes) return result<mtp_weights>::failure(bytes.error());
    auto w = parse_mtp_module(bytes.value(), cfg);
    if (!w) return result<mtp_weights>::failure(w.error() + " ('" + path + "')");
    return w;
}

/// The bytes of a module file for checkpoint configuration `c` with `depth` modules of FFN
/// width `hidden` and deterministic random weights from `seed` (tests, fuzzing).
/// \pre !check_config(c), hidden in [1, max_hidden], depth in [1, 64]
inline std::vector<unsigned char> make_random_mtp_module(const config& c, int hidden, int depth,
                                                         std::uint64_t seed) {
    const mtp_shape s{c.dim, hidden, c.vocab_size, depth, false, 0, 0};
    const mtp_layout l = layout_of(s);
    std::vector<float> w(l.total);
    splitmix64 rng{seed};
    const std::size_t d = std::size_t(c.dim), h = std::size_t(hidden);
    const float s_dim = 1.f / std::sqrt(float(d)), s_hid = 1.f / std::sqrt(float(h));
    for (std::size_t k = 0; k < std::size_t(depth); ++k) {
        float* m = w.data() + k * l.per_module;
        auto fill = [&](std::size_t from, std::size_t n, float scale, float offset) {
            for (std::size_t i = 0; i < n; ++i) m[from + i] = offset + scale * rng.symmetric();
        };
        fill(l.hnorm, d, 0.1f, 1.f);
        fill(l.enorm, d, 0.1f, 1.f);
        fill(l.proj, 2 * d * d, s_dim, 0.f);
        fill(l.ffn_norm, d, 0.1f, 1.f);
        fill(l.w1, h * d, s_dim, 0.f);
        fill(l.w2, d * h, s_hid, 0.f);
        fill(l.w3, h * d, s_dim, 0.f);
    }
    std::vector<unsigned char> bytes(mtp_header_bytes + w.size() * 4 + 4);
    std::memcpy(bytes.data(), mtp_magic, 8);
    const std::uint32_t head[8] = {mtp_format_version,
                                   std::uint32_t(c.dim),
                                   std::uint32_t(hidden),
                                   std::uint32_t(c.vocab_size),
                                   std::uint32_t(depth),
                                   0,
                                   0,
                                   0};
    std::memcpy(bytes.data() + 8, head, sizeof head);
    std::memcpy(bytes.data() + mtp_header_bytes, w.data(), w.size() * 4);
    const std::uint32_t crc =
        detail::crc32(std::span<const unsigned char>(bytes.data(), bytes.size() - 4));
    std::memcpy(bytes.data() + bytes.size() - 4, &crc, 4);
    return bytes;
}

/// The forward of a loaded module chain, template on the xsimd architecture. Owns scratch
/// buffers: one object serves one thread at a time.
template <class A = dk::simd::default_arch>
class mtp_module {
public:
    explicit mtp_module(mtp_weights w) : w_(std::move(w)) {}

    const mtp_shape& shape() const noexcept { return w_.shape; }
    std::size_t depth() const noexcept { return std::size_t(w_.shape.depth); }

    /// One step of module `k` (1-based, <= depth()) for `n` rows: row r reads hidden[r] (dim
    /// floats) and token tokens[r], and writes logits[r] (vocab floats) and, when non-null,
    /// hidden_out[r] (dim floats). Each weight matrix is read once per call for all rows.
    /// \pre every token in [0, vocab), the checkpoint is the one the module was checked against
    void forward(const checkpoint& ck, std::size_t k, std::size_t n, const float* const* hidden,
                 const dk::token_id* tokens, float* const* logits, float* const* hidden_out) {
        const std::size_t d = std::size_t(w_.shape.dim), h = std::size_t(w_.shape.hidden),
                          V = std::size_t(w_.shape.vocab);
        const mtp_layout& l = w_.layout;
        ab_.resize(n * 2 * d);
        x_.resize(n * d);
        xn_.resize(n * d);
        hb_.resize(n * h);
        hb2_.resize(n * h);
        for (std::size_t r = 0; r < n; ++r) {
            rmsnorm(ab_.data() + r * 2 * d, hidden[r], w_.tensor(k, l.hnorm), d);
            rmsnorm(ab_.data() + r * 2 * d + d,
                    ck.tensor(ck.layout.token_embedding) + std::size_t(tokens[r]) * d,
                    w_.tensor(k, l.enorm), d);
        }
        matmul_rows(x_.data(), ab_.data(), w_.tensor(k, l.proj), 2 * d, d, n);
        for (std::size_t r = 0; r < n; ++r)
            rmsnorm(xn_.data() + r * d, x_.data() + r * d, w_.tensor(k, l.ffn_norm), d);
        matmul_rows(hb_.data(), xn_.data(), w_.tensor(k, l.w1), d, h, n);
        matmul_rows(hb2_.data(), xn_.data(), w_.tensor(k, l.w3), d, h, n);
        for (std::size_t i = 0; i < n * h; ++i) {
            const float v = hb_[i];
            hb_[i] = v * (1.f / (1.f + std::exp(-v))) * hb2_[i];
        }
        matmul_rows(xn_.data(), hb_.data(), w_.tensor(k, l.w2), h, d, n);
        for (std::size_t i = 0; i < n * d; ++i) x_[i] += xn_[i];
        // The shared head: the checkpoint's final norm and classifier.
        for (std::size_t r = 0; r < n; ++r)
            rmsnorm(xn_.data() + r * d, x_.data() + r * d, ck.tensor(ck.layout.rms_final), d);
        lg_.resize(n * V);
        matmul_rows(lg_.data(), xn_.data(), ck.tensor(ck.layout.wcls), d, V, n);
        for (std::size_t r = 0; r < n; ++r) {
            std::copy_n(lg_.data() + r * V, V, logits[r]);
            if (hidden_out && hidden_out[r]) std::copy_n(xn_.data() + r * d, d, hidden_out[r]);
        }
    }

    /// forward() for the requests r with valid[r], batched per depth: row r of logits_out (and
    /// of hidden_out when non-empty) gets request r's outputs; other rows are left alone.
    /// request.hidden may be its own hidden_out row (in-place chaining). Returns the rows
    /// computed. \pre the valid requests are (run_mtp_logits's checks), the spans hold
    /// requests.size() rows
    std::size_t forward_requests(const checkpoint& ck, std::span<const dk::mtp_request> requests,
                                 std::span<const char> valid, std::span<float> logits_out,
                                 std::span<float> hidden_out) {
        const std::size_t V = std::size_t(w_.shape.vocab), D = std::size_t(w_.shape.dim);
        std::size_t done = 0;
        for (std::size_t k = 1; k <= depth(); ++k) {
            in_.clear();
            tok_.clear();
            out_.clear();
            hout_.clear();
            for (std::size_t r = 0; r < requests.size(); ++r) {
                if (!valid[r] || requests[r].depth != k) continue;
                in_.push_back(requests[r].hidden.data());
                tok_.push_back(requests[r].token);
                out_.push_back(logits_out.data() + r * V);
                hout_.push_back(hidden_out.empty() ? nullptr : hidden_out.data() + r * D);
            }
            if (in_.empty()) continue;
            forward(ck, k, in_.size(), in_.data(), tok_.data(), out_.data(), hout_.data());
            done += in_.size();
        }
        return done;
    }

private:
    /// o = x * w / sqrt(mean(x^2) + 1e-5) (run.c's rmsnorm).
    static void rmsnorm(float* o, const float* x, const float* w, std::size_t n) noexcept {
        float ss = 0.f;
        for (std::size_t j = 0; j < n; ++j) ss += x[j] * x[j];
        ss = 1.f / std::sqrt(ss / float(n) + 1e-5f);
        for (std::size_t j = 0; j < n; ++j) o[j] = w[j] * (ss * x[j]);
    }

    /// out[r][i] = sum_j W[i][j] x[r][j] for i < d, r < rows (W: d x n row-major; x: rows x n;
    /// out: rows x d). Each row of W is loaded once for all rows of x.
    static void matmul_rows(float* DECODEKIT_RESTRICT out, const float* DECODEKIT_RESTRICT x,
                            const float* DECODEKIT_RESTRICT w, std::size_t n, std::size_t d,
                            std::size_t rows) noexcept {
        using B = dk::simd::batch<A>;
        constexpr std::size_t L = dk::simd::lanes<A>;
        const std::size_t nv = n - n % L;
        for (std::size_t i = 0; i < d; ++i) {
            const float* wi = w + i * n;
            for (std::size_t r = 0; r < rows; ++r) {
                const float* xr = x + r * n;
                B acc(0.f);
                for (std::size_t j = 0; j < nv; j += L)
                    acc = xsimd::fma(B::load_unaligned(wi + j), B::load_unaligned(xr + j), acc);
                float s = dk::simd::reduce_add<A>(acc);
                for (std::size_t j = nv; j < n; ++j) s += wi[j] * xr[j];
                out[r * d + i] = s;
            }
        }
    }

    mtp_weights w_;
    std::vector<float> ab_, x_, xn_, hb_, hb2_, lg_;
    std::vector<const float*> in_;
    std::vector<dk::token_id> tok_;
    std::vector<float*> out_, hout_;
};

/// decodekit's mtp_logits on a model over `ck` (`module` null: none loaded) that accepts slots
/// below `max_slots` and positions below `seq_len`. Output spans too small (logits_out below
/// requests.size() x vocab, or a non-empty hidden_out below requests.size() x dim): nothing is
/// written. Otherwise each invalid request (no module; hidden not dim finite floats; token
/// outside [0, vocab); depth outside [1, depth()]; position >= seq_len; slot >= max_slots) gets
/// NaN rows, and the valid ones are computed, batched per depth. Returns the last problem, ""
/// when none; adds the rows computed to `rows_computed`.
template <class A>
std::string run_mtp_logits(mtp_module<A>* module, const checkpoint& ck,
                           std::span<const dk::mtp_request> requests, std::span<float> logits_out,
                           std::span<float> hidden_out, std::size_t max_slots, std::size_t seq_len,
                           std::uint64_t& rows_computed) {
    const std::size_t V = std::size_t(ck.cfg.vocab_size), D = std::size_t(ck.cfg.dim);
    const std::size_t R = requests.size();
    if (logits_out.size() / V < R || (!hidden_out.empty() && hidden_out.size() / D < R))
        return "mtp_logits: output span too small: need " + std::to_string(R) + " rows";
    std::string error;
    std::vector<char> valid(R, 0);
    for (std::size_t r = 0; r < R; ++r) {
        const dk::mtp_request& q = requests[r];
        std::string e;
        if (!module)
            e = "mtp_logits: no MTP module loaded (set_mtp_module)";
        else if (q.hidden.size() != D)
            e = "mtp_logits: hidden state of " + std::to_string(q.hidden.size()) +
                " floats, hidden_size() is " + std::to_string(D);
        else if (q.token < 0 || std::size_t(q.token) >= V)
            e = "mtp_logits: token id " + std::to_string(q.token) + " out of range";
        else if (q.depth < 1 || q.depth > module->depth())
            e = "mtp_logits: depth " + std::to_string(q.depth) +
                " outside [1, mtp_depth() = " + std::to_string(module->depth()) + "]";
        else if (q.position >= seq_len)
            e = "mtp_logits: position " + std::to_string(q.position) + " beyond seq_len";
        else if (q.slot >= max_slots)
            e = "mtp_logits: slot beyond max_slots";
        else
            for (float v : q.hidden)
                if (!std::isfinite(v)) {
                    e = "mtp_logits: non-finite value in the hidden state";
                    break;
                }
        if (e.empty()) {
            valid[r] = 1;
            continue;
        }
        error = std::move(e);
        std::fill_n(logits_out.data() + r * V, V, std::numeric_limits<float>::quiet_NaN());
        if (!hidden_out.empty())
            std::fill_n(hidden_out.data() + r * D, D, std::numeric_limits<float>::quiet_NaN());
    }
    if (module)
        rows_computed += module->forward_requests(ck, requests, valid, logits_out, hidden_out);
    return error;
}

}  // namespace dk_llama2
