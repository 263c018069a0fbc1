#pragma once
/// \file toy_model.hpp
/// A deterministic toy backend for tests: satisfies language_model, hidden_state_model,
/// layer_logits_model, multi_token_model and mtp_module_model. Everything is a pure function of the
/// context (the tokens up to and including the position), so tests can recompute any answer
/// independently through the `*_of(context)` helpers, which do not touch the call counters.
///
/// - logits(context)[i] = scale * u(hash(context), i) with u in [-2, 2) (multiples of 2^-22),
///   + eos_bias on eos_id (when eos_id >= 0), + perturb * u'(hash(context), i) (a draft variant:
///   same vocabulary, different distribution; perturb = 0 is the target), or a user function.
/// - hidden(context)[j] in [-1, 1), hidden_size() floats.
/// - layer l of num_layers() (l = num_layers() is the ordinary logits):
///   (l / L) * logits + (1 - l / L) * scale * noise_l(context).
/// - head h of num_heads(): head 0 = ordinary logits; head h > 0 = logits of the context
///   extended by h greedy tokens, plus mtp_noise * scale * noise_h(context).
///
/// - MTP module k of mtp_depth() (mtp_module_model, stateless): logits and next hidden state
///   are scale * u(hash(hidden bits, token, k)) and 0.5 * u(...): a pure function of the request
///   (mtp_of()); invalid requests (hidden size, token, depth) get NaN rows.
///
/// Counters: calls (model calls of any kind), sequences (requests), positions (rows produced),
/// tokens (sum of request lengths: the cost of a backend that recomputes everything).

// The umbrella (not model.hpp / types.hpp) so the single-header preset, which has only
// single_include/ on the path, builds the tests that use the toy model.
#include <decodekit/decodekit.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <span>
#include <vector>

namespace dk_test {

struct toy_model_config {
    std::size_t vocab_size = 8;
    std::size_t hidden_size = 6;
    std::size_t num_layers = 4;
    std::size_t num_heads = 3;
    std::uint64_t seed = 1;
    float scale = 1.f;                ///< logits spread: larger = sharper distributions
    decodekit::token_id eos_id = -1;  ///< token that eos_bias is added to (-1: none)
    float eos_bias = 0.f;             ///< added to the EOS logit (make EOS likely)
    std::uint64_t perturb_seed = 0x5eed;
    float perturb = 0.f;        ///< weight of a second noise term (0 = target model)
    float mtp_noise = 0.5f;     ///< noise of heads h > 0, relative to scale
    std::size_t mtp_depth = 2;  ///< sequential MTP modules (0: none)
};

class toy_model {
public:
    using logits_fn =
        std::function<void(std::span<const decodekit::token_id> context, std::span<float> out)>;

    explicit toy_model(toy_model_config cfg = {}) : cfg_(cfg) {}

    /// A draft variant: same vocabulary and seed, different distribution (perturbation weight w).
    static toy_model draft_of(const toy_model_config& target, float w = 1.f,
                              std::uint64_t perturb_seed = 0x5eed) {
        toy_model_config c = target;
        c.perturb = w;
        c.perturb_seed = perturb_seed;
        return toy_model(c);
    }

    /// Replaces the logits function (hidden states, layers and heads still use the hash model).
    void set_logits_function(logits_fn fn) { fn_ = std::move(fn); }

    const toy_model_config& config() const noexcept { return cfg_; }
    std::size_t vocab_size() const noexcept { return cfg_.vocab_size; }
    std::size_t hidden_size() const noexcept { return cfg_.hidden_size; }
    std::size_t num_layers() const noexcept { return cfg_.num_layers; }
    std::size_t num_heads() const noexcept { return cfg_.num_heads; }
    std::size_t mtp_depth() const noexcept { return cfg_.mtp_depth; }

    // ---- counters
    std::size_t calls = 0;
    std::size_t sequences = 0;
    std::size_t positions = 0;
    std::size_t tokens = 0;
    std::vector<std::uint32_t> last_slots;        ///< slots of the last call, in request order
    std::size_t mtp_rows = 0;                     ///< mtp_logits rows computed (valid requests)
    std::vector<decodekit::mtp_request> mtp_log;  ///< every mtp_logits request (hidden not kept)
    void reset_counters() noexcept {
        calls = sequences = positions = tokens = mtp_rows = 0;
        mtp_log.clear();
    }

    // ---- pure helpers (no counters)
    /// Next-token logits after `context` (the ordinary output at its last position).
    std::vector<float> logits_of(std::span<const decodekit::token_id> context) const {
        std::vector<float> out(cfg_.vocab_size);
        write_logits(context, hash_of(context), out);
        return out;
    }
    /// Hidden state at the last position of `context`.
    std::vector<float> hidden_of(std::span<const decodekit::token_id> context) const {
        std::vector<float> out(cfg_.hidden_size);
        write_hidden(hash_of(context), out);
        return out;
    }
    /// Logits read out at layer `layer` (0..num_layers()) at the last position of `context`.
    std::vector<float> layer_logits_of(std::span<const decodekit::token_id> context,
                                       int layer) const {
        std::vector<float> out(cfg_.vocab_size);
        write_layer(context, hash_of(context), layer, out);
        return out;
    }
    /// Logits of head `head` at the last position of `context`.
    std::vector<float> head_logits_of(std::span<const decodekit::token_id> context,
                                      std::size_t head) const {
        std::vector<float> out(cfg_.vocab_size);
        write_head(context, head, out);
        return out;
    }

    /// MTP module `depth` on (hidden, token): its logits and the hidden state it passes on.
    void mtp_of(std::span<const float> hidden, decodekit::token_id token, std::size_t depth,
                std::span<float> logits_out, std::span<float> hidden_out) const {
        std::uint64_t h = mix(cfg_.seed ^ (0xA5A5ull + depth));
        for (float v : hidden) {
            std::uint32_t b = 0;
            std::memcpy(&b, &v, 4);
            h = mix(h ^ b);
        }
        h = step_hash(h, token);
        for (std::size_t i = 0; i < logits_out.size(); ++i) logits_out[i] = cfg_.scale * u(h, i, 3);
        for (std::size_t j = 0; j < hidden_out.size(); ++j) hidden_out[j] = 0.5f * u(h, j, 4);
    }

    // ---- the concept
    void mtp_logits(std::span<const decodekit::mtp_request> requests, std::span<float> logits_out,
                    std::span<float> hidden_out) {
        ++calls;
        const std::size_t V = cfg_.vocab_size, H = cfg_.hidden_size;
        for (std::size_t r = 0; r < requests.size(); ++r) {
            const auto& q = requests[r];
            mtp_log.push_back({{}, q.token, q.depth, q.position, q.slot});
            const auto lo = logits_out.subspan(r * V, V);
            const auto ho = hidden_out.empty() ? std::span<float>{} : hidden_out.subspan(r * H, H);
            if (q.hidden.size() != H || q.token < 0 || std::size_t(q.token) >= V || q.depth < 1 ||
                q.depth > cfg_.mtp_depth) {
                std::fill(lo.begin(), lo.end(), std::numeric_limits<float>::quiet_NaN());
                std::fill(ho.begin(), ho.end(), std::numeric_limits<float>::quiet_NaN());
                continue;
            }
            mtp_of(q.hidden, q.token, q.depth, lo, ho);
            ++mtp_rows;
        }
    }

    void logits(std::span<const decodekit::sequence_request> requests, std::span<float> out) {
        count(requests);
        const std::size_t V = cfg_.vocab_size;
        std::size_t row = 0;
        for (const auto& r : requests)
            for_positions(r, [&](std::span<const decodekit::token_id> ctx, std::uint64_t h) {
                write_logits(ctx, h, out.subspan(row++ * V, V));
            });
    }

    void logits_and_hidden(std::span<const decodekit::sequence_request> requests,
                           std::span<float> logits_out, std::span<float> hidden_out) {
        count(requests);
        const std::size_t V = cfg_.vocab_size, H = cfg_.hidden_size;
        std::size_t row = 0;
        for (const auto& r : requests)
            for_positions(r, [&](std::span<const decodekit::token_id> ctx, std::uint64_t h) {
                write_logits(ctx, h, logits_out.subspan(row * V, V));
                write_hidden(h, hidden_out.subspan(row * H, H));
                ++row;
            });
    }

    void layer_logits(std::span<const decodekit::sequence_request> requests,
                      std::span<const int> layers, std::span<float> out) {
        count(requests);
        positions += rows_needed(requests) * (layers.size() > 0 ? layers.size() - 1 : 0);
        const std::size_t V = cfg_.vocab_size;
        std::size_t row = 0;
        for (const auto& r : requests)
            for_positions(r, [&](std::span<const decodekit::token_id> ctx, std::uint64_t h) {
                for (int l : layers) write_layer(ctx, h, l, out.subspan(row++ * V, V));
            });
    }

    void head_logits(std::span<const decodekit::sequence_request> requests, std::span<float> out) {
        count(requests);
        positions += requests.size() * (cfg_.num_heads - 1);
        const std::size_t V = cfg_.vocab_size;
        std::size_t row = 0;
        for (const auto& r : requests)
            for (std::size_t h = 0; h < cfg_.num_heads; ++h)
                write_head(r.tokens, h, out.subspan(row++ * V, V));
    }

private:
    static std::uint64_t mix(std::uint64_t x) noexcept {  // splitmix64 finaliser
        x += 0x9E3779B97F4A7C15ull;
        x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
        x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
        return x ^ (x >> 31);
    }
    static std::uint64_t step_hash(std::uint64_t h, decodekit::token_id t) noexcept {
        return mix(h ^ (std::uint64_t(std::uint32_t(t)) + 0x100000001ull));
    }
    std::uint64_t empty_hash() const noexcept { return mix(cfg_.seed * 0x2545F4914F6CDD1Dull); }
    std::uint64_t hash_of(std::span<const decodekit::token_id> ctx) const noexcept {
        std::uint64_t h = empty_hash();
        for (auto t : ctx) h = step_hash(h, t);
        return h;
    }
    /// Uniform in [-2, 2), a multiple of 2^-22.
    static float u(std::uint64_t h, std::uint64_t i, std::uint64_t salt) noexcept {
        const std::uint64_t b = mix(h ^ mix(i * 0xD6E8FEB86659FD93ull + salt)) >> 40;
        return float(b) * 0x1p-22f - 2.f;
    }

    void write_logits(std::span<const decodekit::token_id> ctx, std::uint64_t h,
                      std::span<float> out) const {
        if (fn_) {
            fn_(ctx, out);
            return;
        }
        for (std::size_t i = 0; i < out.size(); ++i) {
            float v = cfg_.scale * u(h, i, 1);
            if (cfg_.perturb != 0.f) v += cfg_.perturb * cfg_.scale * u(h, i, cfg_.perturb_seed);
            out[i] = v;
        }
        if (cfg_.eos_id >= 0 && std::size_t(cfg_.eos_id) < out.size())
            out[std::size_t(cfg_.eos_id)] += cfg_.eos_bias;
    }
    void write_hidden(std::uint64_t h, std::span<float> out) const {
        for (std::size_t j = 0; j < out.size(); ++j) out[j] = 0.5f * u(h, j, 2);
    }
    void write_layer(std::span<const decodekit::token_id> ctx, std::uint64_t h, int layer,
                     std::span<float> out) const {
        write_logits(ctx, h, out);
        const float L = float(cfg_.num_layers);
        const float w = float(std::clamp(layer, 0, int(cfg_.num_layers))) / L;
        if (w == 1.f) return;
        for (std::size_t i = 0; i < out.size(); ++i)
            out[i] = w * out[i] + (1.f - w) * cfg_.scale * u(h, i, 1000 + std::uint64_t(layer));
    }
    void write_head(std::span<const decodekit::token_id> ctx, std::size_t head,
                    std::span<float> out) const {
        std::vector<decodekit::token_id> ext(ctx.begin(), ctx.end());
        std::vector<float> row(cfg_.vocab_size);
        for (std::size_t s = 0; s < head; ++s) {
            write_logits(ext, hash_of(ext), row);
            ext.push_back(
                decodekit::token_id(std::max_element(row.begin(), row.end()) - row.begin()));
        }
        const std::uint64_t h = hash_of(ext);
        write_logits(ext, h, out);
        if (head > 0 && cfg_.mtp_noise != 0.f) {
            const std::uint64_t h0 = hash_of(ctx);
            for (std::size_t i = 0; i < out.size(); ++i)
                out[i] += cfg_.mtp_noise * cfg_.scale * u(h0, i, 2000 + head);
        }
    }

    template <class F>
    void for_positions(const decodekit::sequence_request& r, F&& f) const {
        const std::size_t n = r.tokens.size();
        const std::size_t first = n - std::min(r.n_last, n);
        std::uint64_t h = empty_hash();
        for (std::size_t t = 0; t < n; ++t) {
            h = step_hash(h, r.tokens[t]);
            if (t >= first) f(r.tokens.first(t + 1), h);
        }
    }
    void count(std::span<const decodekit::sequence_request> requests) {
        ++calls;
        sequences += requests.size();
        positions += decodekit::rows_needed(requests);
        last_slots.clear();
        for (const auto& r : requests) {
            tokens += r.tokens.size();
            last_slots.push_back(r.slot);
        }
    }

    toy_model_config cfg_;
    logits_fn fn_;
};

static_assert(decodekit::language_model<toy_model>);
static_assert(decodekit::hidden_state_model<toy_model>);
static_assert(decodekit::layer_logits_model<toy_model>);
static_assert(decodekit::multi_token_model<toy_model>);
static_assert(decodekit::mtp_module_model<toy_model>);

}  // namespace dk_test
