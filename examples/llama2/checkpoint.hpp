#pragma once
/// \file llama2/checkpoint.hpp
/// Loader (and a tiny writer, for tests) of Karpathy's llama2.c checkpoint format, legacy
/// "version 0" export: 7 int32 header fields, then float32 weights (layout: layout_of() below).
/// Every size is validated against the header before anything is read: truncated, oversized or
/// corrupt files are rejected with a message, never read out of bounds. No exceptions are used
/// (the examples build with -fno-exceptions too).

#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace dk_llama2 {

/// A value or an error message (an expected-like result that needs no exceptions).
template <class T>
class result {
public:
    result(T value) : value_(std::move(value)) {}  // NOLINT(google-explicit-constructor)
    /// A failed result carrying `message`.
    static result failure(std::string message) {
        result r;
        r.error_ = std::move(message);
        return r;
    }
    /// True when a value is held.
    bool ok() const noexcept { return value_.has_value(); }
    explicit operator bool() const noexcept { return ok(); }
    /// The value. \pre ok()
    T& value() & noexcept { return *value_; }
    const T& value() const& noexcept { return *value_; }
    T&& value() && noexcept { return std::move(*value_); }
    T* operator->() noexcept { return &*value_; }
    const T* operator->() const noexcept { return &*value_; }
    /// The error message (empty when ok()).
    const std::string& error() const noexcept { return error_; }

private:
    result() = default;
    std::optional<T> value_;
    std::string error_;
};

/// Reads a whole file into bytes; fails with a message naming the path.
inline result<std::vector<unsigned char>> read_file_bytes(const std::string& path) {
    using R = result<std::vector<unsigned char>>;
    std::FILE* f = std::fopen(path.c_str(), "rb");
    if (!f) return R::failure("cannot open '" + path + "'");
    std::vector<unsigned char> bytes;
    unsigned char buf[1 << 16];
    for (;;) {
        const std::size_t n = std::fread(buf, 1, sizeof buf, f);
        bytes.insert(bytes.end(), buf, buf + n);
        if (n < sizeof buf) break;
    }
    const bool failed = std::ferror(f) != 0;
    std::fclose(f);
    if (failed) return R::failure("error while reading '" + path + "'");
    return bytes;
}

/// The model hyperparameters of a llama2.c checkpoint header.
struct config {
    int dim = 0;         ///< residual stream width
    int hidden_dim = 0;  ///< FFN width
    int n_layers = 0;
    int n_heads = 0;
    int n_kv_heads = 0;
    int vocab_size = 0;             ///< always positive here (abs() of the header field)
    int seq_len = 0;                ///< maximum context length
    bool shared_classifier = true;  ///< header vocab_size > 0: classifier = token embedding

    int head_size() const noexcept { return dim / n_heads; }
    int kv_dim() const noexcept { return dim / n_heads * n_kv_heads; }
};

/// Limits far above any llama2.c model; they keep every size computation far from overflow.
inline constexpr int max_dim = 1 << 16, max_hidden = 1 << 18, max_layers = 1 << 10,
                     max_vocab = 1 << 22, max_seq_len = 1 << 20;

/// Offsets (in floats) of each tensor inside the weight array.
struct weight_layout {
    std::size_t token_embedding, rms_att, wq, wk, wv, wo, rms_ffn, w1, w2, w3, rms_final, freq_real,
        freq_imag, wcls, total;
};

/// The first problem with `c` (message), or nullopt when the configuration is usable.
inline std::optional<std::string> check_config(const config& c) {
    auto bad = [](const char* field, long long v, const char* allowed) {
        return std::string("llama2 checkpoint: header field ") + field + " = " + std::to_string(v) +
               ", must be " + allowed;
    };
    if (c.dim <= 0 || c.dim > max_dim) return bad("dim", c.dim, "in [1, 65536]");
    if (c.hidden_dim <= 0 || c.hidden_dim > max_hidden)
        return bad("hidden_dim", c.hidden_dim, "in [1, 262144]");
    if (c.n_layers <= 0 || c.n_layers > max_layers)
        return bad("n_layers", c.n_layers, "in [1, 1024]");
    if (c.n_heads <= 0 || c.n_heads > c.dim) return bad("n_heads", c.n_heads, "in [1, dim]");
    if (c.dim % c.n_heads != 0) return bad("n_heads", c.n_heads, "a divisor of dim");
    if (c.head_size() % 2 != 0)
        return bad("n_heads", c.n_heads, "such that dim / n_heads is even (RoPE pairs)");
    if (c.n_kv_heads <= 0 || c.n_kv_heads > c.n_heads)
        return bad("n_kv_heads", c.n_kv_heads, "in [1, n_heads]");
    if (c.n_heads % c.n_kv_heads != 0)
        return bad("n_kv_heads", c.n_kv_heads, "a divisor of n_heads");
    if (c.vocab_size <= 0 || c.vocab_size > max_vocab)
        return bad("vocab_size", c.vocab_size, "non-zero with |vocab_size| <= 4194304");
    if (c.seq_len <= 0 || c.seq_len > max_seq_len)
        return bad("seq_len", c.seq_len, "in [1, 1048576]");
    return std::nullopt;
}

/// Where each tensor lives, in floats from the start of the weights. \pre !check_config(c)
inline weight_layout layout_of(const config& c) noexcept {
    const std::size_t dim = std::size_t(c.dim), hid = std::size_t(c.hidden_dim),
                      L = std::size_t(c.n_layers), kv = std::size_t(c.kv_dim()),
                      V = std::size_t(c.vocab_size), T = std::size_t(c.seq_len),
                      hs = std::size_t(c.head_size());
    weight_layout w{};
    std::size_t at = 0;
    auto take = [&](std::size_t n) {
        const std::size_t here = at;
        at += n;
        return here;
    };
    w.token_embedding = take(V * dim);
    w.rms_att = take(L * dim);
    w.wq = take(L * dim * dim);
    w.wk = take(L * kv * dim);
    w.wv = take(L * kv * dim);
    w.wo = take(L * dim * dim);
    w.rms_ffn = take(L * dim);
    w.w1 = take(L * hid * dim);
    w.w2 = take(L * dim * hid);
    w.w3 = take(L * hid * dim);
    w.rms_final = take(dim);
    w.freq_real = take(T * hs / 2);
    w.freq_imag = take(T * hs / 2);
    w.wcls = c.shared_classifier ? w.token_embedding : take(V * dim);
    w.total = at;
    return w;
}

/// A loaded checkpoint: its configuration and its weights (owned, read once).
struct checkpoint {
    config cfg;
    weight_layout layout;
    std::vector<float> weights;

    const float* tensor(std::size_t offset) const noexcept { return weights.data() + offset; }
};

/// The configuration in the first 28 bytes of a checkpoint of `file_size` bytes, checked: the
/// header is valid and the file size is exactly what it implies. Reads nothing else.
inline result<config> parse_header(std::span<const unsigned char> bytes, std::size_t file_size) {
    using R = result<config>;
    constexpr std::size_t header_bytes = 7 * 4;
    if (bytes.size() < header_bytes || file_size < header_bytes)
        return R::failure("llama2 checkpoint: truncated header (" + std::to_string(file_size) +
                          " bytes, need 28)");
    std::int32_t h[7];
    std::memcpy(h, bytes.data(), header_bytes);
    config c;
    c.dim = h[0];
    c.hidden_dim = h[1];
    c.n_layers = h[2];
    c.n_heads = h[3];
    c.n_kv_heads = h[4];
    c.shared_classifier = h[5] > 0;
    c.vocab_size = h[5] == std::numeric_limits<std::int32_t>::min() ? 0 : (h[5] < 0 ? -h[5] : h[5]);
    c.seq_len = h[6];
    if (auto problem = check_config(c)) return R::failure(*problem);
    const weight_layout lay = layout_of(c);
    const std::size_t expected = header_bytes + lay.total * 4;
    if (file_size != expected) {
        return R::failure(std::string("llama2 checkpoint: ") +
                          (file_size < expected ? "truncated" : "oversized") +
                          " file: " + std::to_string(file_size) + " bytes, the header implies " +
                          std::to_string(expected) + " (28 + 4 x " + std::to_string(lay.total) +
                          " floats)");
    }
    return c;
}

/// Parses a checkpoint from memory. Fails (with a message) on a short header, an invalid
/// configuration, a size that does not match the header exactly, or non-finite weights.
inline result<checkpoint> parse_checkpoint(std::span<const unsigned char> bytes) {
    using R = result<checkpoint>;
    constexpr std::size_t header_bytes = 7 * 4;
    auto header = parse_header(bytes, bytes.size());
    if (!header) return R::failure(header.error());
    const config c = header.value();
    const weight_layout lay = layout_of(c);
    checkpoint ck;
    ck.cfg = c;
    ck.layout = lay;
    ck.weights.resize(lay.total);
    std::memcpy(ck.weights.data(), bytes.data() + header_bytes, lay.total * 4);
    // The legacy freq_cis arrays are unused (RoPE is recomputed) and not checked.
    for (std::size_t i = 0; i < lay.freq_real; ++i) {
        if (!std::isfinite(ck.weights[i]))
            return R::failure("llama2 checkpoint: corrupt weights: non-finite value at float " +
                              std::to_string(i));
    }
    if (!c.shared_classifier) {
        for (std::size_t i = lay.wcls; i < lay.total; ++i) {
            if (!std::isfinite(ck.weights[i]))
                return R::failure(
                    "llama2 checkpoint: corrupt classifier: non-finite value at float " +
                    std::to_string(i));
        }
    }
    return ck;
}

/// Loads a checkpoint file (read once). See parse_checkpoint().
inline result<checkpoint> load_checkpoint(const std::string& path) {
    // Check the header against the file size first: a huge or wrong file is rejected unread.
    {
        std::FILE* f = std::fopen(path.c_str(), "rb");
        if (!f) return result<checkpoint>::failure("cannot open '" + path + "'");
        unsigned char h[28] = {};
        const std::size_t got = std::fread(h, 1, sizeof h, f);
        long size = -1;
        if (std::fseek(f, 0, SEEK_END) == 0) size = std::ftell(f);
        std::fclose(f);
        if (size >= 0) {
            auto header = parse_header(std::span<const unsigned char>(h, got), std::size_t(size));
            if (!header) return result<checkpoint>::failure(header.error() + " ('" + path + "')");
        }
    }
    auto bytes = read_file_bytes(path);
    if (!bytes) return result<checkpoint>::failure(bytes.error());
    auto ck = parse_checkpoint(bytes.value());
    if (!ck) return result<checkpoint>::failure(ck.error() + " ('" + path + "')");
    return ck;
}

// ---------------------------------------------------------------------------------------------
// Tiny checkpoint writer (random weights, deterministic): lets tests and the demo run without
// the shipped model files.

/// SplitMix64: a portable deterministic generator (std distributions differ across libraries).
struct splitmix64 {
    std::uint64_t state;
    std::uint64_t next() noexcept {
        std::uint64_t z = (state += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        return z ^ (z >> 31);
    }
    /// Uniform in [-1, 1).
    float symmetric() noexcept { return float(double(next() >> 11) * 0x1p-52 - 1.0); }
};

/// A small configuration for tests (odd hidden size to exercise SIMD tails; GQA 2:1).
inline config tiny_config(int vocab_size = 400) {
    config c;
    c.dim = 48;
    c.hidden_dim = 100;
    c.n_layers = 3;
    c.n_heads = 4;
    c.n_kv_heads = 2;
    c.vocab_size = vocab_size;
    c.seq_len = 128;
    c.shared_classifier = true;
    return c;
}

/// The bytes of a checkpoint with configuration `c` and deterministic random weights from
/// `seed` (norm weights near 1, matrices scaled by 1/sqrt(fan-in)). \pre !check_config(c)
inline std::vector<unsigned char> make_random_checkpoint(const config& c, std::uint64_t seed) {
    const weight_layout lay = layout_of(c);
    std::vector<float> w(lay.total);
    splitmix64 rng{seed};
    const float s_dim = 1.f / std::sqrt(float(c.dim)), s_hid = 1.f / std::sqrt(float(c.hidden_dim));
    auto fill = [&](std::size_t from, std::size_t n, float scale, float offset) {
        for (std::size_t i = 0; i < n; ++i) w[from + i] = offset + scale * rng.symmetric();
    };
    const std::size_t dim = std::size_t(c.dim), hid = std::size_t(c.hidden_dim),
                      L = std::size_t(c.n_layers), kv = std::size_t(c.kv_dim()),
                      V = std::size_t(c.vocab_size);
    fill(lay.token_embedding, V * dim, 1.f, 0.f);
    fill(lay.rms_att, L * dim, 0.1f, 1.f);
    fill(lay.wq, L * dim * dim, 2.f * s_dim, 0.f);
    fill(lay.wk, L * kv * dim, 2.f * s_dim, 0.f);
    fill(lay.wv, L * kv * dim, s_dim, 0.f);
    fill(lay.wo, L * dim * dim, s_dim, 0.f);
    fill(lay.rms_ffn, L * dim, 0.1f, 1.f);
    fill(lay.w1, L * hid * dim, s_dim, 0.f);
    fill(lay.w2, L * dim * hid, s_hid, 0.f);
    fill(lay.w3, L * hid * dim, s_dim, 0.f);
    fill(lay.rms_final, dim, 0.1f, 1.f);
    // freq_cis: what the legacy exporter wrote (cos/sin of the RoPE angles).
    const std::size_t half = std::size_t(c.head_size()) / 2;
    for (std::size_t t = 0; t < std::size_t(c.seq_len); ++t) {
        for (std::size_t i = 0; i < half; ++i) {
            const double f = std::pow(10000.0, -double(2 * i) / double(c.head_size()));
            w[lay.freq_real + t * half + i] = float(std::cos(double(t) * f));
            w[lay.freq_imag + t * half + i] = float(std::sin(double(t) * f));
        }
    }
    if (!c.shared_classifier) fill(lay.wcls, V * dim, s_dim, 0.f);
    std::vector<unsigned char> bytes(28 + w.size() * 4);
    const std::int32_t h[7] = {c.dim,        c.hidden_dim,
                               c.n_layers,   c.n_heads,
                               c.n_kv_heads, c.shared_classifier ? c.vocab_size : -c.vocab_size,
                               c.seq_len};
    std::memcpy(bytes.data(), h, 28);
    std::memcpy(bytes.data() + 28, w.data(), w.size() * 4);
    return bytes;
}

/// Writes `bytes` to `path`; false on failure.
inline bool write_file_bytes(const std::string& path, std::span<const unsigned char> bytes) {
    std::FILE* f = std::fopen(path.c_str(), "wb");
    if (!f) return false;
    const bool ok = std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size();
    return std::fclose(f) == 0 && ok;
}

}  // namespace dk_llama2
