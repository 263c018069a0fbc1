// The reference backend (examples/llama2): loader validation, tokenizer, forward pass against an
// independent naive implementation, KV-cache reuse, layer/hidden/head readouts, and the greedy
// story of stories260K. Runs on tiny self-written checkpoints and on the models shipped in
// examples/models (DK_MODELS_DIR; a missing file fails the test).
#include "dk_test.hpp"
#include "llama2_naive.hpp"

#include <llama2/llama2.hpp>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

// One namespace per test file: the unity groups (tests/CMakeLists.txt) compile several
// files as one translation unit.
namespace dk_t_llama2 {

namespace {

using decodekit::sequence_request;
using dk_llama2::checkpoint;
using dk_llama2::tokenizer;

std::string models_dir() { return DK_MODELS_DIR; }

checkpoint tiny_checkpoint(bool shared = true, std::uint64_t seed = 7) {
    auto cfg = dk_llama2::tiny_config();
    cfg.shared_classifier = shared;
    auto bytes = dk_llama2::make_random_checkpoint(cfg, seed);
    auto ck = dk_llama2::parse_checkpoint(bytes);
    REQUIRE(ck.ok());
    return std::move(ck.value());
}

// The model checkpoints these tests run on: the tiny one always, stories260K when present.
std::vector<std::pair<std::string, checkpoint>> test_checkpoints() {
    std::vector<std::pair<std::string, checkpoint>> v;
    v.emplace_back("tiny (shared classifier)", tiny_checkpoint(true));
    v.emplace_back("tiny (separate classifier)", tiny_checkpoint(false, 11));
    auto ck = dk_llama2::load_checkpoint(models_dir() + "/stories260K.bin");
    REQUIRE(ck.ok());  // shipped in examples/models: a missing file is a failure, not a skip
    v.emplace_back("stories260K", std::move(ck.value()));
    return v;
}

float max_abs_diff(std::span<const float> a, std::span<const float> b) {
    REQUIRE(a.size() == b.size());
    float m = 0;
    for (std::size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(a[i] - b[i]));
    return m;
}

std::vector<std::int32_t> some_tokens(std::size_t n, int vocab, std::uint64_t seed) {
    dk_llama2::splitmix64 r{seed};
    std::vector<std::int32_t> t{dk_llama2::bos_id};
    while (t.size() < n) t.push_back(std::int32_t(3 + r.next() % std::uint64_t(vocab - 3)));
    return t;
}

std::vector<unsigned char> with_header(std::vector<unsigned char> bytes, int field,
                                       std::int32_t value) {
    std::memcpy(bytes.data() + 4 * field, &value, 4);
    return bytes;
}

}  // namespace

TEST_CASE("llama2 loader accepts valid checkpoints and rejects bad ones", "[llama2][loader]") {
    const auto cfg = dk_llama2::tiny_config();
    const auto good = dk_llama2::make_random_checkpoint(cfg, 1);
    auto ok = dk_llama2::parse_checkpoint(good);
    REQUIRE(ok.ok());
    CHECK(ok->cfg.dim == cfg.dim);
    CHECK(ok->cfg.vocab_size == cfg.vocab_size);
    CHECK(ok->cfg.shared_classifier);

    auto sep_cfg = cfg;
    sep_cfg.shared_classifier = false;
    const auto sep = dk_llama2::make_random_checkpoint(sep_cfg, 1);
    CHECK(sep.size() == good.size() + std::size_t(cfg.vocab_size * cfg.dim) * 4);
    auto sep_ok = dk_llama2::parse_checkpoint(sep);
    REQUIRE(sep_ok.ok());
    CHECK_FALSE(sep_ok->cfg.shared_classifier);
    CHECK(sep_ok->cfg.vocab_size == cfg.vocab_size);

    auto rejects = [](std::vector<unsigned char> bytes, const char* needle) {
        auto r = dk_llama2::parse_checkpoint(bytes);
        CHECK_FALSE(r.ok());
        INFO("message: " << r.error());
        CHECK(r.error().find(needle) != std::string::npos);
    };
    SECTION("truncated") {
        rejects({good.begin(), good.end() - 1}, "truncated");
        rejects({good.begin(), good.end() - 4}, "truncated");
        rejects({good.begin(), good.begin() + 27}, "truncated header");
        rejects({}, "truncated header");
        rejects({sep.begin(), sep.end() - 4}, "truncated");  // separate classifier cut short
    }
    SECTION("oversized") {
        auto big = good;
        big.insert(big.end(), 4, 0);
        rejects(big, "oversized");
        rejects(with_header(sep, 5, cfg.vocab_size),
                "oversized");  // wcls present but header says shared
    }
    SECTION("corrupt header") {
        rejects(with_header(good, 0, 0), "dim");
        rejects(with_header(good, 0, -48), "dim");
        rejects(with_header(good, 0, 1 << 30), "dim");
        rejects(with_header(good, 1, 0), "hidden_dim");
        rejects(with_header(good, 2, 0), "n_layers");
        rejects(with_header(good, 3, 0), "n_heads");
        rejects(with_header(good, 3, 5), "n_heads");     // 48 % 5 != 0
        rejects(with_header(good, 3, 16), "n_heads");    // head size 3: odd, RoPE needs pairs
        rejects(with_header(good, 4, 3), "n_kv_heads");  // 4 % 3 != 0
        rejects(with_header(good, 4, 8), "n_kv_heads");  // more KV heads than heads
        rejects(with_header(good, 4, 0), "n_kv_heads");
        rejects(with_header(good, 5, 0), "vocab_size");
        rejects(with_header(good, 5, std::numeric_limits<std::int32_t>::min()), "vocab_size");
        rejects(with_header(good, 6, 0), "seq_len");
        rejects(with_header(good, 6, 64), "oversized");  // smaller seq_len: fewer freq_cis floats
        // every field at its maximum: the size check must not overflow
        auto huge = good;
        for (int f : {0, 1, 2, 6}) huge = with_header(huge, f, 1 << 16);
        rejects(huge, "");
    }
    SECTION("corrupt weights") {
        auto bad = good;
        const float nan = std::numeric_limits<float>::quiet_NaN();
        std::memcpy(bad.data() + 28 + 4 * 100, &nan, 4);
        rejects(bad, "non-finite");
        auto bad2 = good;
        const float inf = std::numeric_limits<float>::infinity();
        std::memcpy(bad2.data() + bad2.size() - 4 * std::size_t(cfg.seq_len * cfg.head_size()) - 4,
                    &inf, 4);
        rejects(bad2, "non-finite");  // rms_final
    }
    SECTION("files on disk: checked against the header before being read") {
        const std::string dir = std::filesystem::temp_directory_path().string();
        const std::string good_path = dir + "/dk_llama2_test_good.bin",
                          bad_path = dir + "/dk_llama2_test_bad.bin";
        REQUIRE(dk_llama2::write_file_bytes(good_path, good));
        auto loaded = dk_llama2::load_checkpoint(good_path);
        REQUIRE(loaded.ok());
        CHECK(loaded->weights == ok->weights);
        REQUIRE(dk_llama2::write_file_bytes(bad_path, std::span(good).first(good.size() - 8)));
        auto bad = dk_llama2::load_checkpoint(bad_path);
        CHECK_FALSE(bad.ok());
        CHECK(bad.error().find("truncated") != std::string::npos);
        CHECK(bad.error().find(bad_path) != std::string::npos);
        std::remove(good_path.c_str());
        std::remove(bad_path.c_str());
    }
    SECTION("missing file") {
        auto r = dk_llama2::load_checkpoint("/nonexistent/dir/model.bin");
        CHECK_FALSE(r.ok());
        CHECK(r.error().find("cannot open") != std::string::npos);
    }
}

TEST_CASE("llama2 loader reads stories260K", "[llama2][loader][model]") {
    const std::string path = models_dir() + "/stories260K.bin";
    auto ck = dk_llama2::load_checkpoint(path);
    REQUIRE(ck.ok());
    const auto& c = ck->cfg;
    CHECK(c.dim == 64);
    CHECK(c.hidden_dim == 172);
    CHECK(c.n_layers == 5);
    CHECK(c.n_heads == 8);
    CHECK(c.n_kv_heads == 4);
    CHECK(c.vocab_size == 512);
    CHECK(c.seq_len == 512);
    CHECK(c.shared_classifier);
    CHECK(ck->weights.size() == 264128u);
    // the same bytes cut by one float are rejected
    auto bytes = dk_llama2::read_file_bytes(path);
    REQUIRE(bytes.ok());
    std::vector<unsigned char> cut(bytes->begin(), bytes->end() - 4);
    CHECK_FALSE(dk_llama2::parse_checkpoint(cut).ok());
}

TEST_CASE("llama2 tokenizer: parse, encode, decode", "[llama2][tokenizer]") {
    SECTION("synthetic tokenizer round trip (always runs)") {
        auto t = tokenizer::synthetic(400);
        REQUIRE(t.vocab_size() == 400);
        const std::string text = "the day she saw Lily, happy! \xC3\xA9\xE4\xB8\x96";
        auto ids = t.encode(text, true, false);
        REQUIRE(ids.front() == dk_llama2::bos_id);
        // no " " piece in this vocabulary: no dummy prefix, and decoding gives the text back
        CHECK(t.decode(std::span(ids).subspan(1)) == text);
        CHECK(ids.size() - 1 < text.size());  // some merges happened
        auto with_eos = t.encode("x", false, true);
        CHECK(with_eos.back() == dk_llama2::eos_id);
        CHECK(t.encode("", true, false) == std::vector<std::int32_t>{1});
    }
    SECTION("corrupt tokenizer bytes are rejected") {
        std::vector<unsigned char> b(4, 0);
        std::int32_t maxlen = 4;
        std::memcpy(b.data(), &maxlen, 4);
        CHECK_FALSE(tokenizer::parse(b, 3).ok());  // no entries: truncated
        // an absurd vocab_size for a 4-byte file: rejected from the size, before any allocation
        const auto huge = tokenizer::parse(b, 4194304);
        CHECK_FALSE(huge.ok());
        CHECK(huge.error().find("need at least 33554436 bytes") != std::string::npos);
        auto entry = [&](float score, std::int32_t len, const char* s) {
            const auto at = b.size();
            b.resize(at + 8 + std::size_t(std::max(len, 0)));
            std::memcpy(b.data() + at, &score, 4);
            std::memcpy(b.data() + at + 4, &len, 4);
            if (len > 0) std::memcpy(b.data() + at + 8, s, std::size_t(len));
        };
        entry(0, 1, "a");
        entry(0, 1, "b");
        entry(0, 2, "ab");
        CHECK(tokenizer::parse(b, 3).ok());
        CHECK_FALSE(tokenizer::parse(b, 4).ok());  // truncated
        CHECK_FALSE(tokenizer::parse(b, 2).ok());  // trailing bytes
        auto bad = b;
        std::int32_t big = 1000;
        std::memcpy(bad.data() + 4 + 4, &big, 4);  // first entry claims 1000 bytes
        auto r = tokenizer::parse(bad, 3);
        CHECK_FALSE(r.ok());
        CHECK(r.error().find("length") != std::string::npos);
        std::int32_t neg = -1;
        std::memcpy(bad.data() + 4 + 4, &neg, 4);
        CHECK_FALSE(tokenizer::parse(bad, 3).ok());
    }
    const std::vector<std::string> texts = {
        "Once upon a time, there was a little girl named Lily.",
        "She loved to play outside in the park.",
        "  leading spaces, trailing spaces  ",
        "Numbers 12345 and symbols #@$%^&*()[]{} <0x41>",
        "caf\xC3\xA9 na\xC3\xAFve \xE4\xB8\x96\xE7\x95\x8C \xF0\x9F\x99\x82 end",
        "line one\nline two\ttab",
    };
    for (auto [file, vocab] :
         {std::pair<const char*, int>{"tok512.bin", 512}, {"tokenizer.bin", 32000}}) {
        const std::string path = models_dir() + "/" + file;
        auto t = tokenizer::load(path, vocab);
        REQUIRE(t.ok());
        CHECK(t->vocab_size() == vocab);
        // the wrong vocabulary size is detected (the file does not end where it should)
        CHECK_FALSE(tokenizer::load(path, vocab - 1).ok());
        CHECK_FALSE(tokenizer::load(path, vocab + 1).ok());
        for (const auto& text : texts) {
            auto ids = t->encode(text);
            INFO(file << ": " << text);
            REQUIRE(ids.size() >= 2);
            CHECK(ids[0] == dk_llama2::bos_id);
            for (auto id : ids) CHECK((id >= 0 && id < vocab));
            // decoding after BOS strips the dummy prefix space: the exact text comes back
            CHECK(t->decode(std::span(ids).subspan(1)) == text);
            CHECK(ids.size() < text.size() + 2);
        }
        if (vocab == 512) {
            CHECK(t->piece(259) == " t");
            // the prompt of the golden sample: first tokens as run.c encodes them
            auto ids = t->encode("Once upon a time");
            CHECK(ids == std::vector<std::int32_t>{1, 403, 407, 261, 378});
        } else {
            auto ids = t->encode("Hello world");
            CHECK(ids == std::vector<std::int32_t>{1, 15043, 3186});  // Llama 2's well-known ids
        }
    }
}

TEST_CASE("llama2 forward pass equals the naive reference, cached or not", "[llama2][forward]") {
    for (auto& [name, ck] : test_checkpoints()) {
        INFO(name);
        const int V = ck.cfg.vocab_size;
        const auto seq = some_tokens(24, V, 3);
        const auto ref = dk_naive::logits(ck, seq);
        dk_llama2::model m(ck);
        std::vector<float> out(std::size_t(V) * seq.size());
        // 1. whole sequence at once, every position
        sequence_request all{seq, seq.size(), 0};
        m.logits(std::span(&all, 1), out);
        REQUIRE(m.last_error().empty());
        for (std::size_t p = 0; p < seq.size(); ++p)
            CHECK(max_abs_diff(std::span(out).subspan(p * V, V), ref[p]) < 1e-4f);
        // 2. token by token on a fresh slot: each step costs one token forward
        const auto before = m.counters().tokens_forwarded;
        for (std::size_t n = 1; n <= seq.size(); ++n) {
            sequence_request r{std::span(seq).first(n), 1, 1};
            m.logits(std::span(&r, 1), std::span(out).first(V));
            CHECK(max_abs_diff(std::span(out).first(V), ref[n - 1]) < 1e-4f);
        }
        CHECK(m.counters().tokens_forwarded - before == seq.size());
        // 3. cut back and branch: slot 1 now diverges at position 10
        auto branch = seq;
        branch.resize(10);
        branch.push_back(5);
        branch.push_back(6);
        const auto ref_b = dk_naive::logits(ck, branch);
        const auto b0 = m.counters().tokens_forwarded;
        sequence_request rb{branch, 2, 1};
        m.logits(std::span(&rb, 1), std::span(out).first(2 * V));
        CHECK(m.counters().tokens_forwarded - b0 == 2);
        CHECK(max_abs_diff(std::span(out).first(V), ref_b[10]) < 1e-4f);
        CHECK(max_abs_diff(std::span(out).subspan(V, V), ref_b[11]) < 1e-4f);
        // 4. a fork into a new slot reuses the prefix cached in another slot (K/V copied)
        auto fork = seq;
        fork.resize(20);
        fork.push_back(7);
        const auto ref_f = dk_naive::logits(ck, fork);
        const auto f0 = m.counters().tokens_forwarded;
        sequence_request rf{fork, 1, 5};
        m.logits(std::span(&rf, 1), std::span(out).first(V));
        CHECK(m.counters().tokens_forwarded - f0 == 1);
        CHECK(max_abs_diff(std::span(out).first(V), ref_f.back()) < 1e-4f);
        // 5. several sequences in one call, mixed n_last; same result as separately
        std::vector<sequence_request> reqs = {{seq, 3, 0}, {branch, 1, 2}, {fork, 2, 3}};
        std::vector<float> multi(decodekit::rows_needed(reqs) * std::size_t(V));
        m.logits(reqs, multi);
        CHECK(max_abs_diff(std::span(multi).subspan(0, V), ref[seq.size() - 3]) < 1e-4f);
        CHECK(max_abs_diff(std::span(multi).subspan(2 * V, V), ref.back()) < 1e-4f);
        CHECK(max_abs_diff(std::span(multi).subspan(3 * V, V), ref_b.back()) < 1e-4f);
        CHECK(max_abs_diff(std::span(multi).subspan(4 * V, V), ref_f[fork.size() - 2]) < 1e-4f);
        CHECK(max_abs_diff(std::span(multi).subspan(5 * V, V), ref_f.back()) < 1e-4f);
        // 6. the same request twice gives the same logits (last position recomputed)
        std::vector<float> again(multi.size());
        m.logits(reqs, again);
        CHECK(max_abs_diff(again, multi) == 0.f);
        // negative control: a different sequence gives different logits
        CHECK(max_abs_diff(std::span(multi).subspan(0, V), ref_b.back()) > 1e-3f);
    }
}

TEST_CASE("llama2 layer, hidden and head readouts", "[llama2][capabilities]") {
    for (auto& [name, ck] : test_checkpoints()) {
        INFO(name);
        const std::size_t V = std::size_t(ck.cfg.vocab_size), D = std::size_t(ck.cfg.dim);
        const int L = ck.cfg.n_layers;
        const auto seq = some_tokens(12, int(V), 9);
        const auto res = dk_naive::residuals(ck, seq);
        dk_llama2::model m(ck, {.num_heads = 3});
        sequence_request r{seq, 2, 0};
        std::vector<float> logits(2 * V), hidden(2 * D);
        m.logits_and_hidden(std::span(&r, 1), logits, hidden);
        // logits == classifier @ hidden
        for (std::size_t p = 0; p < 2; ++p) {
            for (std::size_t v = 0; v < V; v += 37) {
                double s = 0;
                for (std::size_t i = 0; i < D; ++i)
                    s += double(ck.weights[ck.layout.wcls + v * D + i]) * hidden[p * D + i];
                CHECK(std::fabs(float(s) - logits[p * V + v]) < 1e-4f);
            }
        }
        // layer readouts: rows [position][layer]; the last layer equals logits()
        const std::vector<int> layers = {L, 0, 1, L - 1};
        std::vector<float> ll(2 * layers.size() * V);
        m.layer_logits(std::span(&r, 1), layers, ll);
        REQUIRE(m.last_error().empty());
        for (std::size_t p = 0; p < 2; ++p) {
            CHECK(max_abs_diff(std::span(ll).subspan((p * layers.size()) * V, V),
                               std::span(logits).subspan(p * V, V)) < 1e-5f);
            for (std::size_t li = 0; li < layers.size(); ++li) {
                const auto ref =
                    dk_naive::readout(ck, res[std::size_t(layers[li])][seq.size() - 2 + p]);
                CHECK(max_abs_diff(std::span(ll).subspan((p * layers.size() + li) * V, V), ref) <
                      1e-4f);
            }
        }
        // early layers differ from the output (negative control)
        CHECK(max_abs_diff(std::span(ll).subspan(V, V), std::span(ll).first(V)) > 1e-3f);
        // an early-exit readout runs only the layers it needs; its shallow cache is never
        // reused by (nor lent to) a full-depth request
        {
            dk_llama2::model me(ck);
            const std::vector<int> one = {1};
            sequence_request rs{seq, 1, 4};
            std::vector<float> l1(V), full(V);
            me.layer_logits(std::span(&rs, 1), one, l1);
            CHECK(max_abs_diff(l1, dk_naive::readout(ck, res[1].back())) < 1e-4f);
            me.logits(std::span(&rs, 1), full);  // same slot, now all layers
            CHECK(max_abs_diff(full, std::span(logits).subspan(V, V)) < 1e-4f);
            sequence_request r5{seq, 1, 5};
            me.layer_logits(std::span(&r5, 1), one, l1);  // slot 5 borrows slot 4's (deep) prefix
            CHECK(max_abs_diff(l1, dk_naive::readout(ck, res[1].back())) < 1e-4f);
            sequence_request r6{seq, 1, 6};
            const auto f0 = me.counters().tokens_forwarded;
            me.logits(std::span(&r6, 1), full);  // may borrow from slot 4 only, not shallow slot 5
            CHECK(me.counters().tokens_forwarded - f0 == 1);
            CHECK(max_abs_diff(full, std::span(logits).subspan(V, V)) < 1e-4f);
        }
        // bad layer index: NaN rows and an error, no out-of-bounds read
        const std::vector<int> bad_layers = {L + 1};
        std::vector<float> bad(2 * V);
        m.layer_logits(std::span(&r, 1), bad_layers, bad);
        CHECK_FALSE(m.last_error().empty());
        CHECK(std::isnan(bad[0]));
        // heads: head 0 = next token; head h = next token after greedily appending heads < h
        REQUIRE(m.num_heads() == 3);
        sequence_request r1{seq, 1, 0};
        std::vector<float> heads(3 * V);
        m.head_logits(std::span(&r1, 1), heads);
        auto ext = seq;
        for (std::size_t h = 0; h < 3; ++h) {
            const auto ref = dk_naive::logits(ck, ext).back();
            CHECK(max_abs_diff(std::span(heads).subspan(h * V, V), ref) < 1e-4f);
            ext.push_back(dk_naive::argmax(ref));
        }
        // the default backend exposes only the ordinary head
        dk_llama2::model m1(ck);
        CHECK(m1.num_heads() == 1);
    }
}

TEST_CASE("llama2 invalid requests never read out of bounds", "[llama2][robustness]") {
    dk_llama2::model m(tiny_checkpoint());
    const std::size_t V = m.vocab_size();
    std::vector<float> out(V, 0.f);
    std::vector<std::int32_t> bad = {1, 5, std::int32_t(V)};
    sequence_request r{bad, 1, 0};
    m.logits(std::span(&r, 1), out);
    CHECK_FALSE(m.last_error().empty());
    CHECK(std::isnan(out[0]));
    std::vector<std::int32_t> neg = {1, -3};
    sequence_request rn{neg, 1, 0};
    m.logits(std::span(&rn, 1), out);
    CHECK(std::isnan(out[0]));
    std::vector<std::int32_t> too_long(m.max_sequence_length() + 1, 5);
    sequence_request rl{too_long, 1, 0};
    m.logits(std::span(&rl, 1), out);
    CHECK(m.last_error().find("seq_len") != std::string::npos);
    std::vector<std::int32_t> ok = {1, 5};
    sequence_request rs{ok, 1, 100000};
    m.logits(std::span(&rs, 1), out);
    CHECK(std::isnan(out[0]));
    sequence_request rgood{ok, 1, 0};
    m.logits(std::span(&rgood, 1), out);
    CHECK(m.last_error().empty());
    CHECK(std::isfinite(out[0]));
}

TEST_CASE("stories260K greedy story is llama2.c's", "[llama2][greedy][model]") {
    const std::string mp = models_dir() + "/stories260K.bin", tp = models_dir() + "/tok512.bin";
    auto ck = dk_llama2::load_checkpoint(mp);
    auto tok = tokenizer::load(tp, 512);
    REQUIRE(ck.ok());
    REQUIRE(tok.ok());
    // First 20 greedy tokens from BOS, verified once with the naive implementation (below).
    const std::vector<std::int32_t> pinned = {1,   403, 407, 261, 378, 432, 383, 286, 261, 376, 298,
                                              315, 421, 395, 317, 426, 338, 401, 396, 267, 337};
    auto naive = dk_naive::logits(ck.value(), pinned);
    for (std::size_t i = 0; i + 1 < pinned.size(); ++i)
        CHECK(dk_naive::argmax(naive[i]) == pinned[i + 1]);

    dk_llama2::model m(std::move(ck.value()));
    std::vector<std::int32_t> seq = {dk_llama2::bos_id};
    std::vector<float> out(512);
    for (int step = 0; step < 256; ++step) {  // run.c's default: 256 steps, stop at BOS
        sequence_request r{seq, 1, 0};
        m.logits(std::span(&r, 1), out);
        const auto next = std::int32_t(decodekit::kernels::argmax(std::span<const float>(out)));
        if (next == dk_llama2::bos_id) break;
        seq.push_back(next);
    }
    REQUIRE(seq.size() > pinned.size());
    CHECK(std::vector<std::int32_t>(seq.begin(), seq.begin() + std::ptrdiff_t(pinned.size())) ==
          pinned);
    CHECK(m.counters().tokens_forwarded == seq.size() - 1);  // one token forward per step
    // llama2.c doc/stories260K.md, `./run stories260K.bin -z tok512.bin -t 0.0`:
    const std::string golden =
        "Once upon a time, there was a little girl named Lily. She loved to play outside in the "
        "park. "
        "One day, she saw a big, red ball. She wanted to play with it, but it was too high.\n"
        "Lily's mom said, \"Lily, let's go to the park.\" Lily was sad and didn't know what to do. "
        "She "
        "said, \"I want to play with your ball, but I can't find it.\"\n"
        "Lily was sad and didn't know what to do. She said, \"I'm sorry, Lily. I didn't know what "
        "to "
        "do.\"\n"
        "Lily didn't want to help her mom, so she said, \"I'm sorry, mom. I didn't know what to "
        "do.\" "
        "Her mom said, \"Don't worry, Lily. We can help you.";
    const std::string text = tok->decode(std::span(seq).subspan(1));
    CHECK(text == golden);
}

TEST_CASE("llama2 KV caches follow beam-style forks in one call", "[llama2][cache]") {
    for (auto& [name, ck] : test_checkpoints()) {
        INFO(name);
        const std::size_t V = std::size_t(ck.cfg.vocab_size);
        dk_llama2::model m(ck);
        // four beams share a prompt, then diverge
        std::vector<std::vector<std::int32_t>> beams(4, some_tokens(10, int(V), 21));
        for (std::size_t b = 0; b < 4; ++b) beams[b].push_back(std::int32_t(10 + b));
        auto call = [&](const std::vector<std::vector<std::int32_t>>& seqs) {
            std::vector<sequence_request> reqs;
            for (std::size_t b = 0; b < seqs.size(); ++b)
                reqs.push_back({seqs[b], 1, std::uint32_t(b)});
            std::vector<float> out(seqs.size() * V);
            m.logits(reqs, out);
            REQUIRE(m.last_error().empty());
            return out;
        };
        call(beams);
        for (int step = 0; step < 6; ++step) {
            // every beam continues from a permuted parent (two children of beam 2, none of beam 1)
            const std::size_t parent[4] = {2, 2, 0, 3};
            std::vector<std::vector<std::int32_t>> next(4);
            for (std::size_t b = 0; b < 4; ++b) {
                next[b] = beams[parent[(b + std::size_t(step)) % 4]];
                next[b].push_back(std::int32_t(20 + b + 4 * std::size_t(step)));
            }
            const auto before = m.counters().tokens_forwarded;
            const auto out = call(next);
            CHECK(m.counters().tokens_forwarded - before == 4);  // one token per beam, no recompute
            for (std::size_t b = 0; b < 4; ++b) {
                const auto ref = dk_naive::logits(ck, next[b]).back();
                CHECK(max_abs_diff(std::span(out).subspan(b * V, V), ref) < 1e-4f);
            }
            beams = next;
        }
        CHECK(m.caches_allocated() <= 8);
    }
}
}  // namespace dk_t_llama2
