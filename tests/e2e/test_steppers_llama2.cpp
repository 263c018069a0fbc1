// Engine-driven decoding on the reference backend (examples/llama2, a KV cache per slot): the
// steppers of every strategy interleaved in one continuous-batching loop (one batched call per
// model, kind and layer set per engine step, slots renamed per request, shuffled order, requests
// joining at different steps) give the tokens of their single-request drivers, and a stop string
// over the real tokenizer's pieces stops the story where the text says.
#include "dk_test.hpp"
#include "engine_loop.hpp"

#include <llama2/llama2.hpp>

#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

// One namespace per test file: the unity groups (tests/CMakeLists.txt) compile several
// files as one translation unit.
namespace dk_t_steppers_llama2 {

namespace {

namespace dk = decodekit;
using dk::token_id;

struct request_case {
    std::function<dk_test::engine_job(std::size_t start)> start;
    std::function<void()> check;
};

template <class Stepper, class Make, class Driver, class Compare>
request_case make_case(Make make, Driver driver, Compare compare) {
    auto st = std::make_shared<std::unique_ptr<Stepper>>();
    return {[=](std::size_t start) {
                *st = make();
                return dk_test::job_of(**st, start);
            },
            [=] {
                const auto want = driver();
                compare((*st)->result(), want);
            }};
}

}  // namespace

TEST_CASE("e2e: steppers interleaved on the reference backend equal their drivers",
          "[e2e][steppers]") {
    const std::string dir = DK_MODELS_DIR;
    auto ck = dk_llama2::load_checkpoint(dir + "/stories260K.bin");
    auto tok = dk_llama2::tokenizer::load(dir + "/tok512.bin", 512);
    REQUIRE(ck.ok());
    REQUIRE(tok.ok());
    dk_llama2::model m(ck.value(), {.num_heads = 3});
    const std::size_t V = m.vocab_size();
    const std::vector<token_id> stops = {dk_llama2::bos_id, dk_llama2::eos_id};
    const auto p1 = tok->encode("Once upon a time", true, false);
    const auto p2 = tok->encode("Lily and Ben went to the park", true, false);
    const auto p3 = tok->encode("The cat", true, false);
    const int exit_layer = int(m.num_layers()) - 1;
    auto same = [](const auto& got, const auto& want) {
        CHECK(got.tokens == want.tokens);
        CHECK(got.reason == want.reason);
    };
    using spec_ee = dk::early_exit_proposer<dk_llama2::model, dk::basic_processing>;
    using spec_mtp = dk::mtp_proposer<dk_llama2::model, dk::basic_processing>;

    for (std::uint64_t seed = 1; seed <= 3; ++seed) {
        INFO("shuffle seed " << seed);
        std::vector<request_case> cases;
        const dk::generate_params greedy{
            .sampling = {.temperature = 0.f}, .max_new_tokens = 40, .eos_ids = stops};
        const dk::generate_params sampled{.sampling = {.temperature = 0.8f, .top_k = 40, .seed = 7},
                                          .max_new_tokens = 48,
                                          .eos_ids = stops,
                                          .sequence = seed};
        for (const auto* pp : {&p1, &p2}) {
            const auto prompt = *pp;
            cases.push_back(make_case<dk::generation_stepper>(
                [=] { return std::make_unique<dk::generation_stepper>(greedy, V, prompt); },
                [&, prompt] { return dk::generate(m, prompt, greedy); }, same));
            cases.push_back(make_case<dk::generation_stepper>(
                [=] { return std::make_unique<dk::generation_stepper>(sampled, V, prompt); },
                [&, prompt] { return dk::generate(m, prompt, sampled); }, same));
        }
        const dk::beam_search_params bp{
            .num_beams = 3, .num_return = 3, .max_new_tokens = 24, .eos_ids = stops};
        cases.push_back(make_case<dk::beam_searcher>(
            [=] { return std::make_unique<dk::beam_searcher>(bp, V, p3); },
            [&] { return dk::beam_search(m, p3, bp); },
            [](const auto& got, const auto& want) {
                REQUIRE(got.hypotheses.size() == want.hypotheses.size());
                for (std::size_t i = 0; i < got.hypotheses.size(); ++i)
                    CHECK(got.hypotheses[i].tokens == want.hypotheses[i].tokens);
            }));
        const dk::contrastive_params cp{
            .top_k = 4, .alpha = 0.6f, .max_new_tokens = 30, .eos_ids = stops};
        cases.push_back(make_case<dk::contrastive_stepper>(
            [=, &m] {
                return std::make_unique<dk::contrastive_stepper>(cp, V, m.hidden_size(), p1);
            },
            [&] { return dk::contrastive_search(m, p1, cp); }, same));
        const dk::dola_params dp{.layers = dk::dola_layer_set::high,
                                 .tied_embeddings = m.cfg().shared_classifier,
                                 .max_new_tokens = 30,
                                 .eos_ids = stops};
        cases.push_back(make_case<dk::dola_stepper>(
            [=, &m] { return std::make_unique<dk::dola_stepper>(dp, V, m.num_layers(), p2); },
            [&] { return dk::dola_decode(m, p2, dp); }, same));
        // Speculative: early exit (stepwise drafting, batched), sampled and greedy; MTP heads.
        struct spec_state {
            dk::basic_processing proc;
            std::optional<spec_ee> ee;
            std::optional<spec_mtp> mtp;
            std::unique_ptr<dk::speculative_stepper<spec_ee, dk::basic_processing>> st_ee;
            std::unique_ptr<dk::speculative_stepper<spec_mtp, dk::basic_processing>> st_mtp;
        };
        for (int variant = 0; variant < 3; ++variant) {
            auto s = std::make_shared<spec_state>();
            const dk::basic_processing proc =
                variant == 0 ? dk::basic_processing{.temperature = 0.8f, .top_k = 40}
                             : dk::basic_processing{.temperature = 0.f};
            const dk::speculative_params sp{
                .max_new_tokens = 40,
                .eos_ids = stops,
                .seed = 3 + seed,
                .rule = variant == 0 ? dk::verification::rejection : dk::verification::greedy,
                .draft_length = 3,
                .adaptive = variant == 1};
            const dk::draft_options opt{
                .mode = variant == 0 ? dk::draft_mode::sample : dk::draft_mode::greedy, .slot = 1};
            const auto prompt = variant == 1 ? p2 : p1;
            cases.push_back(
                {[=, &m](std::size_t start) {
                     s->proc = proc;
                     if (variant < 2) {
                         s->ee.emplace(m, exit_layer, proc, opt);
                         s->st_ee = std::make_unique<
                             dk::speculative_stepper<spec_ee, dk::basic_processing>>(
                             sp, V, prompt, *s->ee, s->proc);
                         return dk_test::job_of(*s->st_ee, start);
                     }
                     s->mtp.emplace(m, 0, proc, opt);
                     s->st_mtp =
                         std::make_unique<dk::speculative_stepper<spec_mtp, dk::basic_processing>>(
                             sp, V, prompt, *s->mtp, s->proc);
                     return dk_test::job_of(*s->st_mtp, start);
                 },
                 [=, &m] {
                     dk::basic_processing proc2 = proc;
                     if (variant < 2) {
                         spec_ee ee(m, exit_layer, proc2, opt);
                         const auto want = dk::speculative_decode(m, ee, prompt, sp, proc2);
                         const auto got = s->st_ee->result();
                         CHECK(got.tokens == want.tokens);
                         CHECK(got.stats.accepted == want.stats.accepted);
                         CHECK(got.stats.drafted > 0);
                     } else {
                         spec_mtp mtp(m, 0, proc2, opt);
                         const auto want = dk::speculative_decode(m, mtp, prompt, sp, proc2);
                         const auto got = s->st_mtp->result();
                         CHECK(got.tokens == want.tokens);
                         CHECK(got.stats.accepted == want.stats.accepted);
                     }
                 }});
        }
        dk_test::engine_loop<dk_llama2::model> loop(m, nullptr, seed);
        std::mt19937_64 rng(seed);
        for (auto& c : cases) loop.add(c.start(seed == 1 ? 0 : rng() % 8));
        m.clear_cache();
        loop.run();
        CHECK(loop.largest_batch() >= 4);
        CHECK(m.last_error().empty());
        for (auto& c : cases) c.check();
    }
}

TEST_CASE("e2e: a stop string over the tokenizer's pieces ends the story at the text",
          "[e2e][stop_strings]") {
    const std::string dir = DK_MODELS_DIR;
    auto ck = dk_llama2::load_checkpoint(dir + "/stories260K.bin");
    auto tok = dk_llama2::tokenizer::load(dir + "/tok512.bin", 512);
    REQUIRE(ck.ok());
    REQUIRE(tok.ok());
    dk_llama2::model m(ck.value());
    const auto prompt = tok->encode("Once upon a time", true, false);
    const std::vector<token_id> stops = {dk_llama2::bos_id, dk_llama2::eos_id};
    const dk::generate_params gp{
        .sampling = {.temperature = 0.f}, .max_new_tokens = 120, .eos_ids = stops};
    const auto full = dk::generate(m, prompt, gp);
    std::string story;
    token_id prev = prompt.back();
    for (token_id t : full.tokens) {
        story += tok->decode(prev, t);
        prev = t;
    }
    // A stop string from the middle of the story, spanning token boundaries.
    const std::size_t at = story.size() / 2;
    const std::string stop = story.substr(at, 7);
    const std::size_t first = story.find(stop);
    REQUIRE(first != std::string::npos);
    dk::generate_params sp = gp;
    sp.stop_strings = {stop};
    std::string piece_buf;
    token_id last = prompt.back();
    sp.detokenize = [&](token_id t) -> std::string_view {
        piece_buf = tok->decode(last, t);
        last = t;
        return piece_buf;
    };
    std::string streamed;
    const auto r =
        dk::generate(m, prompt, sp, [&](const dk::token_event& e) { streamed += e.text; });
    CHECK(r.reason == dk::stop_reason::stop_string);
    CHECK(streamed == story.substr(0, first));
    REQUIRE(r.tokens.size() <= full.tokens.size());
    CHECK(std::equal(r.tokens.begin(), r.tokens.end(), full.tokens.begin()));
    CHECK(r.tokens.size() < full.tokens.size());
}
}  // namespace dk_t_steppers_llama2
