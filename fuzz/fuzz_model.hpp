#pragma once
/// \file fuzz/fuzz_model.hpp
/// A toy backend whose outputs come from fuzz input: every model-concept capability (logits,
/// hidden states, layer logits, extra heads), each row a pure function of the context (a hash
/// picks one of a few fuzzed rows, so repeated contexts give repeated rows and NaN / +-inf / ties
/// reach the strategies). It checks the strategy's side of the contract on every call: non-empty
/// sequences starting with the prompt, n_last in [1, size], generated ids in [0, V), output spans
/// large enough, layers in [0, num_layers()].

#include <decodekit/model.hpp>

#include <algorithm>
#include <cstdint>
#include <span>
#include <vector>

#include "fuzz_common.hpp"

namespace dk_fuzz {

class fuzz_model {
public:
    fuzz_model(FuzzedDataProvider& in, std::size_t vocab) : vocab_(vocab) {
        hidden_ = in.ConsumeIntegralInRange<std::size_t>(1, 5);
        layers_ = in.ConsumeIntegralInRange<std::size_t>(1, 5);
        heads_ = in.ConsumeIntegralInRange<std::size_t>(1, 3);
        rows_ = in.ConsumeIntegralInRange<std::size_t>(1, 6);
        const int mode = in.ConsumeIntegralInRange<int>(0, 2);
        fill_row(in, table_, rows_ * vocab_, mode);
        fill_row(in, hidden_table_, rows_ * hidden_, in.ConsumeBool() ? 0 : 2);
        salt_ = in.ConsumeIntegral<std::uint64_t>();
    }

    /// The prompt every request must start with.
    std::vector<decodekit::token_id> prompt;
    std::size_t calls = 0;

    std::size_t vocab_size() const noexcept { return vocab_; }
    std::size_t hidden_size() const noexcept { return hidden_; }
    std::size_t num_layers() const noexcept { return layers_; }
    std::size_t num_heads() const noexcept { return heads_; }

    /// Next-token logits after `ctx` read out at `layer` (num_layers() = the ordinary output).
    std::span<const float> row_of(std::span<const decodekit::token_id> ctx,
                                  std::size_t layer) const {
        const std::size_t r = (hash(ctx) + layer * 7919u + (layer == layers_ ? 0 : 1)) % rows_;
        return {table_.data() + (layer == layers_ ? hash(ctx) % rows_ : r) * vocab_, vocab_};
    }
    std::span<const float> hidden_of(std::span<const decodekit::token_id> ctx) const {
        return {hidden_table_.data() + (hash(ctx) / 3) % rows_ * hidden_, hidden_};
    }

    void logits(std::span<const decodekit::sequence_request> req, std::span<float> out) {
        check(req, out.size(), 1);
        std::size_t row = 0;
        for (const auto& r : req)
            for (std::size_t p = r.tokens.size() - r.n_last; p < r.tokens.size(); ++p)
                copy(row_of(r.tokens.first(p + 1), layers_), out, row++);
    }
    void logits_and_hidden(std::span<const decodekit::sequence_request> req, std::span<float> out,
                           std::span<float> hidden) {
        check(req, out.size(), 1);
        DK_FUZZ_CHECK(hidden.size() >= decodekit::rows_needed(req) * hidden_,
                      "hidden span too small");
        std::size_t row = 0;
        for (const auto& r : req)
            for (std::size_t p = r.tokens.size() - r.n_last; p < r.tokens.size(); ++p) {
                const auto h = hidden_of(r.tokens.first(p + 1));
                std::copy(h.begin(), h.end(), hidden.begin() + std::ptrdiff_t(row * hidden_));
                copy(row_of(r.tokens.first(p + 1), layers_), out, row++);
            }
    }
    void layer_logits(std::span<const decodekit::sequence_request> req, std::span<const int> layers,
                      std::span<float> out) {
        check(req, out.size(), layers.size());
        for (int l : layers)
            DK_FUZZ_CHECK(l >= 0 && std::size_t(l) <= layers_, "layer %d of %zu requested", l,
                          layers_);
        std::size_t row = 0;
        for (const auto& r : req)
            for (std::size_t p = r.tokens.size() - r.n_last; p < r.tokens.size(); ++p)
                for (int l : layers)
                    copy(row_of(r.tokens.first(p + 1), std::size_t(l)), out, row++);
    }
    void head_logits(std::span<const decodekit::sequence_request> req, std::span<float> out) {
        ++calls;
        DK_FUZZ_CHECK(out.size() >= req.size() * heads_ * vocab_, "head span too small");
        std::size_t row = 0;
        for (const auto& r : req) {
            check_tokens(r);
            for (std::size_t h = 0; h < heads_; ++h)
                copy(row_of(r.tokens, h == 0 ? layers_ : (h * 3) % layers_), out, row++);
        }
    }

private:
    std::uint64_t hash(std::span<const decodekit::token_id> ctx) const noexcept {
        std::uint64_t h = salt_ ^ 0x9E3779B97F4A7C15ull;
        for (auto t : ctx) h = (h ^ std::uint32_t(t)) * 0x100000001B3ull + (h >> 29);
        return h;
    }
    void copy(std::span<const float> src, std::span<float> out, std::size_t row) const {
        std::copy(src.begin(), src.end(), out.begin() + std::ptrdiff_t(row * vocab_));
    }
    void check_tokens(const decodekit::sequence_request& r) const {
        DK_FUZZ_CHECK(!r.tokens.empty(), "empty sequence requested");
        DK_FUZZ_CHECK(r.n_last >= 1 && r.n_last <= r.tokens.size(), "n_last %zu for %zu tokens",
                      r.n_last, r.tokens.size());
        DK_FUZZ_CHECK(r.tokens.size() >= prompt.size() &&
                          std::equal(prompt.begin(), prompt.end(), r.tokens.begin()),
                      "a request does not start with the prompt");
        for (std::size_t i = prompt.size(); i < r.tokens.size(); ++i)
            DK_FUZZ_CHECK(r.tokens[i] >= 0 && std::size_t(r.tokens[i]) < vocab_,
                          "generated token %d out of range", r.tokens[i]);
    }
    void check(std::span<const decodekit::sequence_request> req, std::size_t out_size,
               std::size_t per_pos) {
        ++calls;
        for (const auto& r : req) check_tokens(r);
        DK_FUZZ_CHECK(out_size >= decodekit::rows_needed(req) * per_pos * vocab_,
                      "output span too small: %zu for %zu rows", out_size,
                      decodekit::rows_needed(req) * per_pos);
    }

    std::size_t vocab_, hidden_ = 1, layers_ = 1, heads_ = 1, rows_ = 1;
    std::vector<float> table_, hidden_table_;
    std::uint64_t salt_ = 0;
};

static_assert(decodekit::language_model<fuzz_model>);
static_assert(decodekit::hidden_state_model<fuzz_model>);
static_assert(decodekit::layer_logits_model<fuzz_model>);
static_assert(decodekit::multi_token_model<fuzz_model>);

/// True when the logit of `t` after `ctx` at `layer` has probability > 0 (not NaN, not -inf).
inline bool valid_choice(const fuzz_model& m, std::span<const decodekit::token_id> ctx,
                         decodekit::token_id t, std::size_t layer) {
    if (t < 0 || std::size_t(t) >= m.vocab_size()) return false;
    const float v = m.row_of(ctx, layer)[std::size_t(t)];
    return !std::isnan(v) && v != -inf;
}

}  // namespace dk_fuzz
