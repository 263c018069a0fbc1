/// \file fuzz/fuzz_llama2_tokenizer.cpp
/// The llama2.c tokenizer (examples/llama2) on arbitrary bytes: parse() of arbitrary files (and
/// of well-formed files with fuzzed pieces and scores), then encode() of arbitrary text (invalid
/// UTF-8 included) and decode() of arbitrary ids. Checks: a rejected file carries a message;
/// every encoded id is in range; decode(encode(text)) reproduces the text when every byte has a
/// byte-fallback piece (the synthetic tokenizer). Input: [mode][...].

#include <llama2/llama2.hpp>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "fuzz_common.hpp"

namespace {

void put_i32(std::vector<unsigned char>& b, std::int32_t v) {
    unsigned char c[4];
    std::memcpy(c, &v, 4);
    b.insert(b.end(), c, c + 4);
}

void exercise(FuzzedDataProvider& in, const dk_llama2::tokenizer& tok, bool round_trip) {
    const std::string text = in.ConsumeRandomLengthString(256);
    const bool bos = in.ConsumeBool(), eos = in.ConsumeBool();
    const std::vector<std::int32_t> ids = tok.encode(text, bos, eos);
    for (std::int32_t id : ids)
        DK_FUZZ_CHECK(id >= 0 && id < tok.vocab_size(), "encode produced id %d (vocab %d)", id,
                      tok.vocab_size());
    if (round_trip && !text.empty()) {
        // Synthetic: " " prefix then pieces; decode after BOS strips the dummy space.
        const std::vector<std::int32_t> body(ids.begin() + (bos ? 1 : 0),
                                             ids.end() - (eos ? 1 : 0));
        const std::string back = tok.decode(body, dk_llama2::bos_id);
        DK_FUZZ_CHECK(back == text, "decode(encode(text)) != text (%zu vs %zu bytes)", back.size(),
                      text.size());
    }
    std::vector<std::int32_t> junk;
    while (in.remaining_bytes() >= 4 && junk.size() < 64)
        junk.push_back(in.ConsumeBool()
                           ? in.ConsumeIntegral<std::int32_t>()
                           : in.ConsumeIntegralInRange<std::int32_t>(-2, tok.vocab_size() + 1));
    (void)tok.decode(junk, in.ConsumeIntegral<std::int32_t>());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    FuzzedDataProvider in(data, size);
    const int mode = in.ConsumeIntegralInRange<int>(0, 2);
    if (mode == 0) {  // arbitrary file bytes, arbitrary vocab size
        int vocab = in.ConsumeIntegralInRange<int>(-2, 600);
        if (in.ConsumeIntegralInRange<int>(0, 31) == 0) vocab = in.ConsumeIntegral<int>();
        const std::vector<unsigned char> bytes =
            in.ConsumeBytes<unsigned char>(in.ConsumeIntegralInRange<std::size_t>(0, 2048));
        auto t = dk_llama2::tokenizer::parse(bytes, vocab);
        if (!t) {
            DK_FUZZ_CHECK(!t.error().empty(), "rejected without a message");
            return 0;
        }
        DK_FUZZ_CHECK(t.value().vocab_size() == vocab, "vocab size %d, asked %d",
                      t.value().vocab_size(), vocab);
        exercise(in, t.value(), false);
    } else if (mode == 1) {  // a well-formed file with fuzzed pieces and scores
        const int vocab = in.ConsumeIntegralInRange<int>(3, 300);
        const std::int32_t max_len = in.ConsumeIntegralInRange<std::int32_t>(1, 8);
        std::vector<unsigned char> bytes;
        put_i32(bytes, max_len);
        for (int i = 0; i < vocab; ++i) {
            float score = dk_fuzz::palette_value(in.ConsumeIntegral<std::uint8_t>());
            if (score != score) score = 0.f;  // NaN scores are rejected (tested in mode 0)
            std::string piece = in.ConsumeRandomLengthString(std::size_t(max_len));
            if (piece.empty() && i >= 3 && i < 259) piece = std::string(1, char(i - 3));
            unsigned char c[4];
            std::memcpy(c, &score, 4);
            bytes.insert(bytes.end(), c, c + 4);
            put_i32(bytes, std::int32_t(piece.size()));
            bytes.insert(bytes.end(), piece.begin(), piece.end());
        }
        auto t = dk_llama2::tokenizer::parse(bytes, vocab);
        DK_FUZZ_CHECK(t.ok(), "a well-formed file was rejected: %s", t.error().c_str());
        exercise(in, t.value(), false);
    } else {  // the synthetic byte-level tokenizer: encode/decode must round-trip any bytes
        const int vocab = in.ConsumeIntegralInRange<int>(259, 400);
        const auto tok = dk_llama2::tokenizer::synthetic(vocab);
        exercise(in, tok, true);
    }
    return 0;
}
