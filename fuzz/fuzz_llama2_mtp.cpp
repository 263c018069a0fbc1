/// \file fuzz/fuzz_llama2_mtp.cpp
/// The MTP module loader of the reference backend (examples/llama2/mtp.hpp) on arbitrary bytes,
/// checked against a small fixed checkpoint; then, when a module loads, the model's mtp_logits
/// on arbitrary requests (hidden states of any size and value, token ids and depths out of range,
/// positions and slots beyond the limits, spans too small). Nothing may read or write out of
/// bounds; a rejected file must carry a message; an accepted one must have valid shapes, the
/// checkpoint's dim and vocab, and exactly the implied size; a rejected request must report
/// last_error() and NaN rows, a valid one must not.
/// Input: [mode] then either raw file bytes (mode even) or [header fields][size delta][reseal]
/// [weights]: a header from small fuzzed fields with a body of (almost) the right size and,
/// usually, a correct CRC, so that parsing gets past the size and CRC checks.

#include <llama2/llama2.hpp>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include "fuzz_common.hpp"

namespace dk = decodekit;

namespace {

dk_llama2::config small_config() {
    dk_llama2::config c;
    c.dim = 8;
    c.hidden_dim = 12;
    c.n_layers = 1;
    c.n_heads = 2;
    c.n_kv_heads = 1;
    c.vocab_size = 24;
    c.seq_len = 16;
    return c;
}

const dk_llama2::checkpoint& small_checkpoint() {
    static const dk_llama2::checkpoint ck = std::move(
        dk_llama2::parse_checkpoint(dk_llama2::make_random_checkpoint(small_config(), 3)).value());
    return ck;
}

std::vector<unsigned char> synthetic_file(FuzzedDataProvider& in) {
    const auto c = small_config();
    std::uint32_t h[8] = {
        1,
        std::uint32_t(in.ConsumeBool() ? c.dim : in.ConsumeIntegralInRange(1, 12)),
        std::uint32_t(in.ConsumeIntegralInRange(1, 9)),
        std::uint32_t(in.ConsumeBool() ? c.vocab_size : in.ConsumeIntegralInRange(1, 30)),
        std::uint32_t(in.ConsumeIntegralInRange(1, 3)),
        std::uint32_t(in.ConsumeIntegralInRange(0, 15) == 0 ? 1 : 0),
        0,
        0};
    if (h[5] == 1) h[6] = 2, h[7] = 1;
    if (in.ConsumeIntegralInRange<int>(0, 15) == 0)
        h[in.ConsumeIntegralInRange<int>(0, 7)] = in.ConsumeIntegral<std::uint32_t>();
    dk_llama2::mtp_shape s{int(h[1] & 0x7FFFFFFF),
                           int(h[2] & 0x7FFFFFFF),
                           int(h[3] & 0x7FFFFFFF),
                           int(h[4] & 0x7FFFFFFF),
                           h[5] == 1,
                           int(h[6] & 0x7FFFFFFF),
                           int(h[7] & 0x7FFFFFFF)};
    std::size_t floats = 32;
    if (h[5] <= 1 && !dk_llama2::check_mtp_shape(s)) floats = dk_llama2::layout_of(s).total;
    if (floats > (1u << 18)) floats = 32;
    const int delta =
        in.ConsumeIntegralInRange<int>(0, 15) == 0 ? in.ConsumeIntegralInRange<int>(-5, 5) : 0;
    const bool reseal = in.ConsumeIntegralInRange<int>(0, 15) != 0;
    std::vector<unsigned char> bytes(dk_llama2::mtp_header_bytes + floats * 4 + 4);
    std::memcpy(bytes.data(), dk_llama2::mtp_magic, 8);
    std::memcpy(bytes.data() + 8, h, sizeof h);
    std::vector<float> w;
    dk_fuzz::fill_row(in, w, std::min<std::size_t>(floats, 48),
                      in.ConsumeIntegralInRange<int>(0, 2) == 0 ? 0 : 2);
    for (float& v : w)
        if (!std::isfinite(v) && in.ConsumeIntegralInRange<int>(0, 3) != 0) v = 0.25f;
    for (std::size_t i = 0; i < floats; ++i) {
        const float v = w.empty() ? 0.01f : w[i % w.size()] * 0.125f;
        std::memcpy(bytes.data() + dk_llama2::mtp_header_bytes + i * 4, &v, 4);
    }
    if (delta < 0)
        bytes.resize(bytes.size() - std::size_t(-delta));
    else
        bytes.resize(bytes.size() + std::size_t(delta), 0);
    if (reseal && bytes.size() >= 4) {
        const std::uint32_t crc = dk_llama2::detail::crc32(
            std::span<const unsigned char>(bytes.data(), bytes.size() - 4));
        std::memcpy(bytes.data() + bytes.size() - 4, &crc, 4);
    }
    return bytes;
}

void run_model(FuzzedDataProvider& in, dk_llama2::mtp_weights w) {
    float wmax = 0;
    for (float v : w.data) wmax = std::max(wmax, std::fabs(v));
    const bool tame = wmax <= 4.f;
    dk_llama2::model_options opt;
    opt.max_slots = in.ConsumeIntegralInRange<std::size_t>(1, 4);
    dk_llama2::model m(small_checkpoint(), opt);
    const bool attach = in.ConsumeIntegralInRange<int>(0, 7) != 0;
    if (attach) DK_FUZZ_CHECK(!m.set_mtp_module(std::move(w)), "a loaded module was refused");
    const std::size_t V = m.vocab_size(), D = m.hidden_size(), depth = m.mtp_depth();
    const int calls = in.ConsumeIntegralInRange<int>(1, 4);
    for (int c = 0; c < calls && in.remaining_bytes() > 0; ++c) {
        const std::size_t nreq = in.ConsumeIntegralInRange<std::size_t>(0, 4);
        std::vector<std::vector<float>> hs(nreq);
        std::vector<dk::mtp_request> reqs(nreq);
        std::vector<char> ok(nreq);
        for (std::size_t r = 0; r < nreq; ++r) {
            const bool right = in.ConsumeIntegralInRange<int>(0, 7) != 0;
            hs[r] = right ? dk_fuzz::consume_row(in, D, D) : dk_fuzz::consume_row(in, 0, D + 2);
            reqs[r].hidden = hs[r];
            reqs[r].token = dk_fuzz::consume_token(in, V);
            reqs[r].depth = in.ConsumeIntegralInRange<std::size_t>(0, depth + 1);
            reqs[r].position = in.ConsumeIntegralInRange<std::size_t>(0, m.max_sequence_length());
            reqs[r].slot =
                in.ConsumeIntegralInRange<std::uint32_t>(0, std::uint32_t(opt.max_slots));
            bool good = attach && hs[r].size() == D && reqs[r].token >= 0 &&
                        std::size_t(reqs[r].token) < V && reqs[r].depth >= 1 &&
                        reqs[r].depth <= depth && reqs[r].position < m.max_sequence_length() &&
                        reqs[r].slot < opt.max_slots;
            for (float v : hs[r]) good = good && std::isfinite(v);
            ok[r] = good;
        }
        const bool short_out = in.ConsumeIntegralInRange<int>(0, 15) == 0 && nreq > 0;
        std::vector<float> logits(nreq * V - (short_out ? 1 : 0), 7.f);
        std::vector<float> hidden(in.ConsumeBool() ? nreq * D : 0, 7.f);
        m.mtp_logits(reqs, logits, hidden);
        if (short_out) {
            DK_FUZZ_CHECK(!m.last_error().empty(), "a short output span was not reported");
            for (float v : logits) DK_FUZZ_CHECK(v == 7.f, "wrote into a short output span");
            continue;
        }
        bool all_ok = true;
        for (std::size_t r = 0; r < nreq; ++r) {
            all_ok = all_ok && ok[r];
            const float* row = logits.data() + r * V;
            if (!ok[r]) {
                for (std::size_t i = 0; i < V; ++i)
                    DK_FUZZ_CHECK(std::isnan(row[i]), "an invalid request's row is not NaN");
                continue;
            }
            float hmax = 0;
            for (float v : hs[r]) hmax = std::max(hmax, std::fabs(v));
            if (tame && hmax < 1e4f)
                for (std::size_t i = 0; i < V; ++i)
                    DK_FUZZ_CHECK(std::isfinite(row[i]), "non-finite logit %g from a valid request",
                                  row[i]);
        }
        DK_FUZZ_CHECK(all_ok == m.last_error().empty(),
                      "last_error() '%s' disagrees (all valid: %d)", m.last_error().c_str(),
                      int(all_ok));
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    FuzzedDataProvider in(data, size);
    const bool raw = in.ConsumeIntegral<std::uint8_t>() % 2 == 0;
    const std::vector<unsigned char> bytes =
        raw ? in.ConsumeBytes<unsigned char>(in.ConsumeIntegralInRange<std::size_t>(0, 4096))
            : synthetic_file(in);
    const auto& ck = small_checkpoint();
    auto w = dk_llama2::parse_mtp_module(bytes, ck.cfg);
    if (!w) {
        DK_FUZZ_CHECK(!w.error().empty(), "rejected without a message");
        return 0;
    }
    const auto& s = w.value().shape;
    DK_FUZZ_CHECK(!dk_llama2::check_mtp_shape(s), "accepted an invalid shape");
    DK_FUZZ_CHECK(s.dim == ck.cfg.dim && s.vocab == ck.cfg.vocab_size && !s.attention,
                  "accepted a module that does not fit the checkpoint");
    DK_FUZZ_CHECK(bytes.size() == dk_llama2::mtp_header_bytes + w.value().layout.total * 4 + 4,
                  "accepted a file of the wrong size");
    for (float v : w.value().data) DK_FUZZ_CHECK(std::isfinite(v), "accepted a non-finite weight");
    run_model(in, std::move(w.value()));
    return 0;
}
