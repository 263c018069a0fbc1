/// \file fuzz/fuzz_llama2_checkpoint.cpp
/// The llama2.c checkpoint loader (examples/llama2) on arbitrary bytes, then, when a checkpoint
/// loads, the model on arbitrary requests (token ids out of range, empty sequences, n_last 0 or
/// beyond the sequence, sequences longer than seq_len, bad slots and layers). Nothing may read or
/// write out of bounds; a rejected file must carry a message; a rejected request must report
/// last_error() and NaN rows.
/// Input: [mode] then either raw file bytes (mode even) or [header fields][size delta][weights]:
/// a header built from small fuzzed fields with a weight section of (almost) the right size, so
/// that parsing gets past the size check.

#include <llama2/llama2.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include "fuzz_common.hpp"

namespace dk = decodekit;

namespace {

std::vector<unsigned char> synthetic_file(FuzzedDataProvider& in) {
    std::int32_t h[7];
    const int head = 2 * in.ConsumeIntegralInRange<int>(1, 3);  // head size, even
    h[3] = in.ConsumeIntegralInRange<int>(1, 3);                // n_heads
    h[0] = head * h[3];                                         // dim
    h[1] = in.ConsumeIntegralInRange<int>(1, 9);                // hidden_dim
    h[2] = in.ConsumeIntegralInRange<int>(1, 2);                // n_layers
    h[4] = in.ConsumeBool() ? h[3] : 1;                         // n_kv_heads
    h[5] = in.ConsumeIntegralInRange<int>(-40, 40);             // vocab (negative: separate)
    h[6] = in.ConsumeIntegralInRange<int>(1, 12);               // seq_len
    if (in.ConsumeIntegralInRange<int>(0, 15) == 0)
        h[in.ConsumeIntegralInRange<int>(0, 6)] = in.ConsumeIntegral<std::int32_t>();
    dk_llama2::config c;
    c.dim = h[0], c.hidden_dim = h[1], c.n_layers = h[2], c.n_heads = h[3], c.n_kv_heads = h[4];
    c.shared_classifier = h[5] > 0;
    c.vocab_size = h[5] == INT32_MIN ? 0 : (h[5] < 0 ? -h[5] : h[5]);
    c.seq_len = h[6];
    std::size_t floats = 64;
    if (!dk_llama2::check_config(c)) floats = dk_llama2::layout_of(c).total;
    if (floats > (1u << 20)) floats = 64;
    const int delta =
        in.ConsumeIntegralInRange<int>(0, 15) == 0 ? in.ConsumeIntegralInRange<int>(-5, 5) : 0;
    std::vector<unsigned char> bytes(28 + floats * 4);
    std::memcpy(bytes.data(), h, 28);
    // Weights: small values from the input (repeated), sometimes a non-finite one.
    std::vector<float> w;
    dk_fuzz::fill_row(in, w, std::min<std::size_t>(floats, 48),
                      in.ConsumeIntegralInRange<int>(0, 2) == 0 ? 0 : 2);
    for (float& v : w)
        if (!std::isfinite(v) && in.ConsumeIntegralInRange<int>(0, 3) != 0) v = 0.25f;
    for (std::size_t i = 0; i < floats; ++i) {
        const float v = w.empty() ? 0.01f : w[i % w.size()] * 0.125f;
        std::memcpy(bytes.data() + 28 + i * 4, &v, 4);
    }
    if (delta < 0)
        bytes.resize(bytes.size() - std::size_t(-delta));
    else
        bytes.resize(bytes.size() + std::size_t(delta), 0);
    return bytes;
}

void run_model(FuzzedDataProvider& in, dk_llama2::checkpoint ck) {
    dk_llama2::model_options opt;
    opt.num_heads = in.ConsumeIntegralInRange<std::size_t>(0, 3);
    opt.max_slots = in.ConsumeIntegralInRange<std::size_t>(1, 4);
    // Finite but huge weights may overflow the forward pass legitimately; check finiteness of
    // the logits only for tame weights.
    float wmax = 0;
    for (std::size_t i = 0; i < ck.layout.freq_real; ++i)
        wmax = std::max(wmax, std::fabs(ck.weights[i]));
    const bool tame = wmax <= 4.f;
    dk_llama2::basic_model<> m(std::move(ck), opt);
    const std::size_t V = m.vocab_size(), D = m.hidden_size();
    const int calls = in.ConsumeIntegralInRange<int>(1, 4);
    for (int c = 0; c < calls && in.remaining_bytes() > 0; ++c) {
        const std::size_t nreq = in.ConsumeIntegralInRange<std::size_t>(0, 3);
        std::vector<std::vector<dk::token_id>> seqs(nreq);
        std::vector<dk::sequence_request> reqs(nreq);
        bool expect_ok = true;
        for (std::size_t r = 0; r < nreq; ++r) {
            seqs[r] = dk_fuzz::consume_tokens(in, V, m.max_sequence_length() + 2);
            reqs[r].tokens = seqs[r];
            reqs[r].n_last = in.ConsumeIntegralInRange<std::size_t>(0, seqs[r].size() + 1);
            reqs[r].slot =
                in.ConsumeIntegralInRange<std::uint32_t>(0, std::uint32_t(opt.max_slots));
            bool ok = !seqs[r].empty() && reqs[r].n_last >= 1 && reqs[r].n_last <= seqs[r].size() &&
                      seqs[r].size() <= m.max_sequence_length() && reqs[r].slot < opt.max_slots;
            for (dk::token_id t : seqs[r]) ok = ok && t >= 0 && std::size_t(t) < V;
            expect_ok = expect_ok && ok;
        }
        const std::size_t rows = dk::rows_needed(reqs);
        const int kind = in.ConsumeIntegralInRange<int>(0, 3);
        std::vector<float> out, hidden;
        if (kind == 0) {
            out.resize(rows * V);
            m.logits(reqs, out);
        } else if (kind == 1) {
            out.resize(rows * V);
            hidden.resize(rows * D);
            m.logits_and_hidden(reqs, out, hidden);
        } else if (kind == 2) {
            std::vector<int> layers(in.ConsumeIntegralInRange<std::size_t>(0, 3));
            for (int& l : layers) l = in.ConsumeIntegralInRange<int>(-1, int(m.num_layers()) + 1);
            out.resize(rows * layers.size() * V);
            m.layer_logits(reqs, layers, out);
            for (int l : layers)
                expect_ok = expect_ok && l >= 0 && std::size_t(l) <= m.num_layers();
        } else {
            out.resize(nreq * m.num_heads() * V);
            m.head_logits(reqs, out);
        }
        if (expect_ok && kind != 3) {
            DK_FUZZ_CHECK(m.last_error().empty(), "valid request rejected: %s",
                          m.last_error().c_str());
            if (tame)
                for (float v : out)
                    DK_FUZZ_CHECK(std::isfinite(v), "non-finite logit %g from a valid request", v);
        }
        if (!expect_ok && kind != 3)
            DK_FUZZ_CHECK(!m.last_error().empty(), "an invalid request was not reported");
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    FuzzedDataProvider in(data, size);
    const bool raw = in.ConsumeIntegral<std::uint8_t>() % 2 == 0;
    std::vector<unsigned char> bytes =
        raw ? in.ConsumeBytes<unsigned char>(in.ConsumeIntegralInRange<std::size_t>(0, 4096))
            : synthetic_file(in);
    auto ck = dk_llama2::parse_checkpoint(bytes);
    if (!ck) {
        DK_FUZZ_CHECK(!ck.error().empty(), "rejected without a message");
        return 0;
    }
    const auto& c = ck.value().cfg;
    DK_FUZZ_CHECK(!dk_llama2::check_config(c), "accepted an invalid config");
    DK_FUZZ_CHECK(bytes.size() == 28 + ck.value().layout.total * 4,
                  "accepted a file of the wrong size");
    run_model(in, std::move(ck.value()));
    return 0;
}
