// The engine example (examples/engine/engine.hpp) on stories260K: its KV slot handling (slots
// per request from a free list, beam forks by parent index) costs exactly the token forwards of
// the requests run alone on fresh models (a slot shared by two live sequences, or a fork that
// lost its parent's cache, would recompute), every slot comes back, the outputs equal the
// single-request drivers', the two admission policies do what they say, and invalid requests
// and engine options are rejected naming the field.
#include "dk_test.hpp"

#include <engine/engine.hpp>

#include <string>
#include <vector>

// One namespace per test file: the unity groups (tests/CMakeLists.txt) compile several
// files as one translation unit.
namespace dk_t_engine {

namespace {

namespace dk = decodekit;
using dk::token_id;
using dk_engine::request_spec;
using dk_engine::strategy;

/// Requests whose prompts share no prefix (no BOS, distinct first tokens), so that no request
/// reuses another's cache: the engine's forwards are then the sum of the requests' own.
std::vector<request_spec> workload(const dk_llama2::tokenizer& tok) {
    const std::vector<token_id> stops = {dk_llama2::bos_id, dk_llama2::eos_id};
    const char* prompts[] = {"Once upon a time",  "Lily and Ben went to the park",
                             "The cat",           "Tom had a big red ball",
                             "Sam wanted to fly", "One day, Mia"};
    std::vector<request_spec> w;
    for (std::size_t i = 0; i < 6; ++i) {
        request_spec r;
        r.id = i;
        r.prompt = tok.encode(prompts[i], false, false);
        r.arrival_step = i * 3;
        if (i % 3 == 1) {
            r.kind = strategy::beam;
            r.beam = {.num_beams = 4, .max_new_tokens = 12 + 5 * i, .eos_ids = stops};
        } else {
            r.kind = i % 3 == 0 ? strategy::greedy : strategy::hf;
            r.gen = {.sampling = {.temperature = i % 3 == 0 ? 0.f : 0.7f, .seed = i},
                     .max_new_tokens = 10 + 7 * i,
                     .eos_ids = stops,
                     .sequence = i};
        }
        w.push_back(std::move(r));
    }
    return w;
}

}  // namespace

TEST_CASE("engine: KV slots per request and beam forks by parent cost no recomputation",
          "[e2e][engine]") {
    const std::string dir = DK_MODELS_DIR;
    auto ck = dk_llama2::load_checkpoint(dir + "/stories260K.bin");
    auto tok = dk_llama2::tokenizer::load(dir + "/tok512.bin", 512);
    REQUIRE(ck.ok());
    REQUIRE(tok.ok());
    const auto w = workload(tok.value());
    for (std::size_t i = 1; i < w.size(); ++i) REQUIRE(w[i].prompt[0] != w[0].prompt[0]);

    // Alone: each request on a fresh model, its forwards counted.
    std::vector<dk_engine::outcome> alone;
    std::uint64_t alone_forwards = 0;
    for (const auto& s : w) {
        dk_llama2::model fresh(ck.value());
        REQUIRE_FALSE(s.check(fresh).has_value());
        alone.push_back(dk_engine::make_live(s, fresh)->run_alone(fresh));
        alone_forwards += fresh.counters().tokens_forwarded;
    }

    for (auto mode : {dk_engine::batching::continuous, dk_engine::batching::static_batches}) {
        INFO("mode " << int(mode));
        dk_llama2::model m(ck.value());
        dk_engine::engine e(m, {.mode = mode, .max_batch = 3});
        dk_engine::run_stats st;
        const auto rec = e.run(w, st);
        CHECK(st.bad_status == 0);
        CHECK(e.slots_in_use() == 0);
        CHECK(m.last_error().empty());
        // 3 live requests, beams of 4: at most 4 + 4 + 1 slots (a fork takes a fresh slot
        // only while its parent's is kept by a sibling).
        CHECK(st.slots_high_water <= 9);
        CHECK(st.forwarded == alone_forwards);
        for (std::size_t i = 0; i < w.size(); ++i) {
            INFO("request " << i);
            REQUIRE_FALSE(rec[i].rejected.has_value());
            CHECK(rec[i].out.tokens == alone[i].tokens);
            CHECK(rec[i].out.reason == alone[i].reason);
            CHECK(rec[i].first >= rec[i].arrival);
            CHECK(rec[i].finish >= rec[i].first);
        }
        if (mode == dk_engine::batching::continuous) {
            // a request is admitted at its arrival step whenever fewer than 3 are live
            CHECK(rec[0].admitted_step == 0);
            CHECK(rec[1].admitted_step == w[1].arrival_step);
        } else {
            // static: a request admitted after another's arrival waits for the whole batch
            for (std::size_t i = 0; i < w.size(); ++i)
                for (std::size_t j = 0; j < w.size(); ++j)
                    if (rec[j].admitted_step > rec[i].admitted_step)
                        CHECK(rec[j].admitted_step > rec[i].finished_step);
        }
    }
}

TEST_CASE("engine: an invalid request is rejected with the field named, the others run",
          "[e2e][engine]") {
    const std::string dir = DK_MODELS_DIR;
    auto ck = dk_llama2::load_checkpoint(dir + "/stories260K.bin");
    auto tok = dk_llama2::tokenizer::load(dir + "/tok512.bin", 512);
    REQUIRE(ck.ok());
    REQUIRE(tok.ok());
    dk_llama2::model m(ck.value());
    auto w = workload(tok.value());
    w[2].gen.sampling.top_p = 2.f;
    w[4].beam.num_return = 9;
    w[5].prompt.clear();
    dk_engine::engine e(m, {.max_batch = 4});
    dk_engine::run_stats st;
    const auto rec = e.run(w, st);
    REQUIRE(rec[2].rejected.has_value());
    CHECK(rec[2].rejected->find("top_p") != std::string::npos);
    REQUIRE(rec[4].rejected.has_value());
    CHECK(rec[4].rejected->find("num_return") != std::string::npos);
    REQUIRE(rec[5].rejected.has_value());
    CHECK(rec[5].rejected->find("prompt") != std::string::npos);
    for (std::size_t i : {0, 1, 3}) {
        CHECK_FALSE(rec[i].rejected.has_value());
        CHECK_FALSE(rec[i].out.tokens.empty());
    }
    CHECK(e.slots_in_use() == 0);
    // the engine's own configuration
    const auto why = dk_engine::engine_options{.max_batch = 0}.check();
    REQUIRE(why.has_value());
    CHECK(why->find("engine_options.max_batch") != std::string::npos);
    CHECK_FALSE(dk_engine::engine_options{.max_batch = 1}.check().has_value());
    DK_IF_EXCEPTIONS(CHECK_THROWS_AS(dk_engine::engine(m, {.max_batch = 0}), dk::config_error);)
}
}  // namespace dk_t_engine
