// The reference backend's MTP module (examples/llama2/mtp.hpp): the loader rejecting truncated,
// mismatched and corrupted files; mtp_logits without a module and on invalid requests; several
// requests in one call; the C++ forward of the shipped examples/models/stories260K-mtp.bin against
// the training script's forward on dumped inputs (tests/e2e/fixtures/stories260K-mtp-cases.bin,
// written by examples/mtp/train_mtp.py --fixture); and MTP speculative decoding on stories260K:
// greedy's tokens with the acceptance bar of the demo prompt.
#include "dk_test.hpp"

#include <llama2/llama2.hpp>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

// One namespace per test file: the unity groups (tests/CMakeLists.txt) compile several
// files as one translation unit.
namespace dk_t_llama2_mtp {

namespace {

namespace dk = decodekit;
using dk::token_id;

const std::string models = DK_MODELS_DIR;

dk_llama2::checkpoint tiny_checkpoint() {
    auto ck =
        dk_llama2::parse_checkpoint(dk_llama2::make_random_checkpoint(dk_llama2::tiny_config(), 7));
    REQUIRE(ck.ok());
    return std::move(ck.value());
}

dk_llama2::checkpoint stories260k() {
    auto ck = dk_llama2::load_checkpoint(models + "/stories260K.bin");
    REQUIRE(ck.ok());  // shipped in examples/models: a missing file fails the test
    return std::move(ck.value());
}

dk_llama2::model stories260k_with_module() {
    auto ck = stories260k();
    auto mod = dk_llama2::load_mtp_module(models + "/stories260K-mtp.bin", ck.cfg);
    INFO(mod.error());
    REQUIRE(mod.ok());
    dk_llama2::model m(std::move(ck));
    REQUIRE_FALSE(m.set_mtp_module(std::move(mod.value())));
    return m;
}

void put_u32(std::vector<unsigned char>& b, std::size_t at, std::uint32_t v) {
    std::memcpy(b.data() + at, &v, 4);
}
/// Recomputes the trailing CRC-32 (so a test reaches the checks after it).
std::vector<unsigned char> resealed(std::vector<unsigned char> b) {
    put_u32(b, b.size() - 4,
            dk_llama2::detail::crc32(std::span<const unsigned char>(b.data(), b.size() - 4)));
    return b;
}
/// The error of parsing `bytes` against `cfg` ("" when accepted).
std::string error_of(const std::vector<unsigned char>& bytes, const dk_llama2::config& cfg) {
    auto r = dk_llama2::parse_mtp_module(bytes, cfg);
    return r.ok() ? std::string() : r.error();
}
bool has(const std::string& s, const char* what) { return s.find(what) != std::string::npos; }

}  // namespace

TEST_CASE("llama2 MTP loader accepts valid modules and rejects bad files",
          "[llama2][mtp][loader]") {
    const auto cfg = dk_llama2::tiny_config();
    const auto good = dk_llama2::make_random_mtp_module(cfg, 37, 2, 1);
    auto ok = dk_llama2::parse_mtp_module(good, cfg);
    REQUIRE(ok.ok());
    CHECK(ok->shape.dim == cfg.dim);
    CHECK(ok->shape.hidden == 37);
    CHECK(ok->shape.depth == 2);
    CHECK(good.size() == 40 + 4 * ok->layout.total + 4);

    SECTION("truncated or oversized") {
        for (std::size_t n : {std::size_t(0), std::size_t(7), std::size_t(39), std::size_t(43),
                              std::size_t(44), good.size() / 2, good.size() - 4, good.size() - 1}) {
            const std::vector<unsigned char> cut(good.begin(), good.begin() + std::ptrdiff_t(n));
            INFO("size " << n);
            CHECK(has(error_of(cut, cfg), "truncated"));
        }
        auto longer = good;
        longer.resize(good.size() + 4, 0);
        CHECK(has(error_of(longer, cfg), "oversized"));
    }
    SECTION("wrong magic or version") {
        auto b = good;
        b[0] = 'X';
        CHECK(has(error_of(b, cfg), "magic"));
        b = good;
        put_u32(b, 8, 2);
        CHECK(has(error_of(b, cfg), "version 2"));
    }
    SECTION("shape fields out of range, named") {
        const std::pair<std::size_t, const char*> fields[] = {
            {12, "dim"}, {16, "hidden"}, {20, "vocab"}, {24, "depth"}};
        for (auto [at, name] : fields) {
            auto b = good;
            put_u32(b, at, 0);
            INFO(name);
            CHECK(has(error_of(b, cfg), (std::string("field ") + name + " = 0").c_str()));
            put_u32(b, at, 0xFFFFFFFFu);
            CHECK(has(error_of(b, cfg), name));
        }
        auto b = good;
        put_u32(b, 28, 2);
        CHECK(has(error_of(b, cfg), "attention = 2"));
        b = good;
        put_u32(b, 32, 4);  // n_heads without attention
        CHECK(has(error_of(b, cfg), "n_heads = 4"));
    }
    SECTION("a module with attention is rejected, not misread") {
        auto b = good;
        put_u32(b, 28, 1);
        put_u32(b, 32, std::uint32_t(cfg.n_heads));
        put_u32(b, 36, std::uint32_t(cfg.n_kv_heads));
        // the size such a file has: attention tensors per module
        const std::size_t d = std::size_t(cfg.dim),
                          kv = d / std::size_t(cfg.n_heads) * std::size_t(cfg.n_kv_heads);
        b.resize(b.size() + 2 * 4 * (d + 2 * d * d + 2 * kv * d), 0);
        CHECK(has(error_of(resealed(b), cfg), "attention"));
        CHECK(has(error_of(resealed(b), cfg), "not supported"));
    }
    SECTION("shapes that do not match the checkpoint") {
        auto other = cfg;
        other.dim = 64;
        other.n_heads = 8;
        other.n_kv_heads = 4;
        CHECK(has(error_of(dk_llama2::make_random_mtp_module(other, 37, 1, 1), cfg),
                  "do not match the checkpoint"));
        other = cfg;
        other.vocab_size = 512;
        CHECK(has(error_of(dk_llama2::make_random_mtp_module(other, 37, 1, 1), cfg), "vocab 512"));
    }
    SECTION("corrupted: a flipped bit, non-finite weights") {
        auto b = good;
        b[40 + 1000] ^= 0x10;
        CHECK(has(error_of(b, cfg), "CRC-32 mismatch"));
        b = good;
        b[b.size() - 1] ^= 0x01;  // the CRC itself
        CHECK(has(error_of(b, cfg), "CRC-32 mismatch"));
        for (float bad :
             {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
            b = good;
            std::memcpy(b.data() + 40 + 4 * 123, &bad, 4);
            CHECK(has(error_of(resealed(b), cfg), "non-finite value at float 123"));
        }
    }
    SECTION("files") {
        auto missing = dk_llama2::load_mtp_module("/nonexistent/mtp.bin", cfg);
        CHECK(has(missing.error(), "cannot open"));
        // on disk: the header is checked against the file size before the file is read
        const std::string tmp =
            (std::filesystem::temp_directory_path() / "dk_test_llama2_mtp_cut.bin").string();
        REQUIRE(dk_llama2::write_file_bytes(
            tmp, std::span<const unsigned char>(good.data(), good.size() - 8)));
        auto cut = dk_llama2::load_mtp_module(tmp, cfg);
        CHECK(has(cut.error(), "truncated file"));
        CHECK(has(cut.error(), tmp.c_str()));
        REQUIRE(dk_llama2::write_file_bytes(tmp, good));
        CHECK(dk_llama2::load_mtp_module(tmp, cfg).ok());
        std::filesystem::remove(tmp);
        auto ck = stories260k();
        auto shipped = dk_llama2::load_mtp_module(models + "/stories260K-mtp.bin", ck.cfg);
        INFO(shipped.error());
        REQUIRE(shipped.ok());
        CHECK(shipped->shape.dim == 64);
        CHECK(shipped->shape.vocab == 512);
        CHECK_FALSE(shipped->shape.attention);
        // and it does not fit another checkpoint
        auto wrong = dk_llama2::load_mtp_module(models + "/stories260K-mtp.bin", cfg);
        CHECK(has(wrong.error(), "do not match the checkpoint"));
        CHECK(has(wrong.error(), "stories260K-mtp.bin"));
    }
}

TEST_CASE("llama2 mtp_logits: no module, invalid requests, several requests per call",
          "[llama2][mtp]") {
    dk_llama2::model m(tiny_checkpoint());
    const std::size_t V = m.vocab_size(), D = m.hidden_size();
    const std::vector<token_id> seq = {1, 5, 9, 14};
    std::vector<float> l0(V), h0(D);
    const dk::sequence_request sr{seq, 1, 0};
    m.logits_and_hidden(std::span(&sr, 1), l0, h0);
    std::vector<float> logits(3 * V, 0.f), hidden(3 * D, 0.f);
    const dk::mtp_request one{h0, 7, 1, 4, 0};

    SECTION("without a module: NaN rows and last_error()") {
        CHECK(m.mtp_depth() == 0);
        m.mtp_logits(std::span(&one, 1), logits, hidden);
        CHECK(has(m.last_error(), "no MTP module"));
        CHECK(std::isnan(logits[0]));
        CHECK(std::isnan(hidden[0]));
    }
    SECTION("a module for another checkpoint is refused; the model keeps none") {
        auto other = dk_llama2::tiny_config(300);
        auto w =
            dk_llama2::parse_mtp_module(dk_llama2::make_random_mtp_module(other, 20, 1, 3), other);
        REQUIRE(w.ok());
        const auto why = m.set_mtp_module(std::move(w.value()));
        REQUIRE(why);
        CHECK(has(*why, "does not fit"));
        CHECK(m.mtp_depth() == 0);
    }

    auto w = dk_llama2::parse_mtp_module(
        dk_llama2::make_random_mtp_module(dk_llama2::tiny_config(), 37, 2, 5),
        dk_llama2::tiny_config());
    REQUIRE(w.ok());
    REQUIRE_FALSE(m.set_mtp_module(std::move(w.value())));
    REQUIRE(m.mtp_depth() == 2);

    SECTION("several requests in one call equal each alone (bit for bit)") {
        std::vector<float> h1(D);
        for (std::size_t j = 0; j < D; ++j) h1[j] = 0.3f * std::sin(float(j));
        const std::vector<dk::mtp_request> reqs = {
            {h0, 7, 1, 4, 0}, {h1, 300, 2, 9, 1}, {h0, 12, 2, 5, 0}};
        m.mtp_logits(reqs, logits, hidden);
        REQUIRE(m.last_error().empty());
        for (std::size_t r = 0; r < reqs.size(); ++r) {
            std::vector<float> l1(V), hh(D);
            m.mtp_logits(std::span(&reqs[r], 1), l1, hh);
            CHECK(std::memcmp(l1.data(), logits.data() + r * V, V * 4) == 0);
            CHECK(std::memcmp(hh.data(), hidden.data() + r * D, D * 4) == 0);
            for (float v : l1) REQUIRE(std::isfinite(v));
        }
        // hidden_out may be empty (no state wanted); the logits are the same
        std::vector<float> l2(3 * V);
        m.mtp_logits(reqs, l2, {});
        CHECK(l2 == logits);
        // in-place chaining: hidden may be its own hidden_out row
        std::vector<float> hin = h0, lin(V);
        const dk::mtp_request inplace{hin, 7, 1, 4, 0};
        m.mtp_logits(std::span(&inplace, 1), lin, hin);
        CHECK(std::memcmp(lin.data(), logits.data(), V * 4) == 0);
        CHECK(std::memcmp(hin.data(), hidden.data(), D * 4) == 0);
        CHECK(m.counters().mtp_rows == 3 + 3 + 3 + 1);
    }
    SECTION("invalid requests get NaN rows and last_error(); valid ones in the call do not") {
        std::vector<float> nan_h = h0;
        nan_h[3] = std::numeric_limits<float>::quiet_NaN();
        const std::vector<float> short_h(D - 1, 0.5f);
        const std::pair<dk::mtp_request, const char*> bad[] = {
            {{short_h, 7, 1, 4, 0}, "hidden state of"},
            {{h0, token_id(V), 1, 4, 0}, "token id"},
            {{h0, -1, 1, 4, 0}, "token id"},
            {{h0, 7, 0, 4, 0}, "depth 0"},
            {{h0, 7, 3, 4, 0}, "depth 3"},
            {{h0, 7, 1, m.max_sequence_length(), 0}, "position"},
            {{h0, 7, 1, 4, 100000}, "slot"},
            {{nan_h, 7, 1, 4, 0}, "non-finite"},
        };
        for (const auto& [q, what] : bad) {
            INFO(what);
            const std::vector<dk::mtp_request> reqs = {one, q, one};
            std::fill(logits.begin(), logits.end(), 0.f);
            m.mtp_logits(reqs, logits, hidden);
            CHECK(has(m.last_error(), what));
            for (std::size_t i = 0; i < V; ++i) REQUIRE(std::isnan(logits[V + i]));
            for (std::size_t i = 0; i < D; ++i) REQUIRE(std::isnan(hidden[D + i]));
            CHECK(std::isfinite(logits[0]));
            CHECK(std::isfinite(logits[2 * V]));
        }
        // spans too small: an error and nothing written
        std::vector<float> small(V - 1, 1.f);
        m.mtp_logits(std::span(&one, 1), small, {});
        CHECK(has(m.last_error(), "too small"));
        CHECK(small[0] == 1.f);
        std::vector<float> small_h(D - 1, 1.f);
        m.mtp_logits(std::span(&one, 1), logits, small_h);
        CHECK(has(m.last_error(), "too small"));
        // a valid call clears the error
        m.mtp_logits(std::span(&one, 1), logits, hidden);
        CHECK(m.last_error().empty());
    }
}

TEST_CASE("llama2 MTP forward equals the training script's on dumped inputs",
          "[llama2][mtp][model]") {
    // Fixture: cases (depth, token, hidden in, logits, hidden out) from validation stories of the
    // dump, computed by train_mtp.py's forward (float32 torch) with the shipped weights. The C++
    // forward sums in another order: |difference| <= 1e-4 + 1e-4 |reference| per value (logits
    // are of order 10, hidden states of order 1; the largest difference observed is 1e-5).
    auto bytes = dk_llama2::read_file_bytes(std::string(DK_SOURCE_DIR) +
                                            "/tests/e2e/fixtures/stories260K-mtp-cases.bin");
    REQUIRE(bytes.ok());
    const auto& b = bytes.value();
    REQUIRE(b.size() >= 24);
    REQUIRE(std::memcmp(b.data(), "DKMTPFIX", 8) == 0);
    std::uint32_t head[4];
    std::memcpy(head, b.data() + 8, 16);
    const std::size_t cases = head[1], D = head[2], V = head[3];
    REQUIRE(head[0] == 1);
    REQUIRE(b.size() == 24 + cases * (8 + 4 * (2 * D + V)));
    auto m = stories260k_with_module();
    REQUIRE(D == m.hidden_size());
    REQUIRE(V == m.vocab_size());
    REQUIRE(cases >= 8);
    std::vector<float> hin(D), want_l(V), want_h(D), got_l(V), got_h(D);
    float worst = 0;
    std::size_t at = 24, deepest = 0;
    for (std::size_t c = 0; c < cases; ++c) {
        std::uint32_t depth;
        std::int32_t token;
        std::memcpy(&depth, b.data() + at, 4);
        std::memcpy(&token, b.data() + at + 4, 4);
        std::memcpy(hin.data(), b.data() + at + 8, 4 * D);
        std::memcpy(want_l.data(), b.data() + at + 8 + 4 * D, 4 * V);
        std::memcpy(want_h.data(), b.data() + at + 8 + 4 * (D + V), 4 * D);
        at += 8 + 4 * (2 * D + V);
        deepest = std::max<std::size_t>(deepest, depth);
        const dk::mtp_request q{hin, token, depth, 1, 0};
        m.mtp_logits(std::span(&q, 1), got_l, got_h);
        REQUIRE(m.last_error().empty());
        for (std::size_t i = 0; i < V; ++i) {
            const float d = std::fabs(got_l[i] - want_l[i]);
            worst = std::max(worst, d);
            REQUIRE(d <= 1e-4f + 1e-4f * std::fabs(want_l[i]));
        }
        for (std::size_t i = 0; i < D; ++i)
            REQUIRE(std::fabs(got_h[i] - want_h[i]) <= 1e-4f + 1e-4f * std::fabs(want_h[i]));
    }
    CHECK(deepest == m.mtp_depth());  // every module is covered
    INFO("largest logit difference " << worst);
    CHECK(worst < 1e-3f);
}

TEST_CASE("MTP speculative decoding on stories260K", "[llama2][mtp][speculative][model]") {
    auto m = stories260k_with_module();
    auto tok = dk_llama2::tokenizer::load(models + "/tok512.bin", 512);
    REQUIRE(tok.ok());
    const auto prompt = tok->encode("Once upon a time");  // the demo's prompt
    const std::vector<token_id> stops = {dk_llama2::bos_id, dk_llama2::eos_id};
    const std::size_t n = 160;  // the demo's default
    const auto greedy =
        dk::generate(m, prompt,
                     dk::generate_params{
                         .sampling = {.temperature = 0.f}, .max_new_tokens = n, .eos_ids = stops});
    dk::basic_processing greedy_proc{.temperature = 0.f};

    SECTION("greedy: greedy's tokens; acceptance >= 50 % on the demo prompt (the demo's bar)") {
        for (auto rule : {dk::verification::greedy, dk::verification::rejection}) {
            dk::mtp_module_proposer draft(m, greedy_proc);
            const auto r = dk::speculative_decode(m, draft, prompt,
                                                  {.max_new_tokens = n,
                                                   .eos_ids = stops,
                                                   .rule = rule,
                                                   .draft_length = 4,
                                                   .adaptive = true},
                                                  greedy_proc);
            CHECK(r.tokens == greedy.tokens);
            INFO("acceptance " << r.stats.acceptance_rate());
            CHECK(r.stats.acceptance_rate() >= 0.5);  // deterministic: greedy drafts, greedy law
            CHECK(r.stats.mean_tokens_per_target_call() > 1.5);
            CHECK(m.last_error().empty());
        }
    }
    SECTION("sampled at temperature 0.8: reproducible, drafts accepted") {
        dk::basic_processing proc{.temperature = 0.8f};
        auto run = [&] {
            dk::mtp_module_proposer draft(m, proc, {.mode = dk::draft_mode::sample});
            return dk::speculative_decode(
                m, draft, prompt, {.max_new_tokens = 64, .eos_ids = stops, .seed = 9}, proc);
        };
        const auto a = run();
        m.clear_cache();
        const auto b = run();
        CHECK(a.tokens == b.tokens);
        CHECK(a.stats.accepted > 0);
        CHECK(m.last_error().empty());
    }
}
}  // namespace dk_t_llama2_mtp
