// Every decoding strategy end to end on the reference backend (examples/llama2): on a tiny
// self-written random checkpoint and on stories260K (shipped in examples/models).
// Exactness checks: greedy speculative (every proposer) == greedy; beam width 1 == greedy;
// contrastive alpha 0 == greedy; plus seeded reproducibility and KV-cache accounting.
#include "dk_test.hpp"

#include <llama2/llama2.hpp>

#include <string>
#include <vector>

// One namespace per test file: the unity groups (tests/CMakeLists.txt) compile several
// files as one translation unit.
namespace dk_t_strategies {

namespace {

namespace dk = decodekit;
using dk::token_id;

struct subject {
    std::string name;
    dk_llama2::checkpoint ck;
    std::vector<token_id> prompt;
    std::size_t max_new;
};

std::vector<subject> subjects() {
    std::vector<subject> v;
    {
        auto cfg = dk_llama2::tiny_config();
        cfg.shared_classifier = false;  // random shared classifiers just repeat the last token
        auto ck = dk_llama2::parse_checkpoint(dk_llama2::make_random_checkpoint(cfg, 2024));
        REQUIRE(ck.ok());
        auto tok = dk_llama2::tokenizer::synthetic(cfg.vocab_size);
        v.push_back({"tiny random", std::move(ck.value()), tok.encode("Once upon a time"), 40});
    }
    const std::string dir = DK_MODELS_DIR;
    auto ck = dk_llama2::load_checkpoint(dir + "/stories260K.bin");
    auto tok = dk_llama2::tokenizer::load(dir + "/tok512.bin", 512);
    REQUIRE(ck.ok());  // shipped in examples/models: missing files fail the test
    REQUIRE(tok.ok());
    v.push_back({"stories260K", std::move(ck.value()), tok->encode("Once upon a time"), 120});
    return v;
}

const std::vector<token_id> stops = {dk_llama2::bos_id, dk_llama2::eos_id};

// Plain greedy decoding written directly against the backend (the reference for the others).
std::vector<token_id> plain_greedy(dk_llama2::model& m, std::vector<token_id> seq,
                                   std::size_t max_new) {
    std::vector<token_id> out;
    std::vector<float> row(m.vocab_size());
    while (out.size() < max_new) {
        dk::sequence_request r{seq, 1, 0};
        m.logits(std::span(&r, 1), row);
        const auto t = token_id(dk::kernels::argmax(std::span<const float>(row)));
        if (t == dk_llama2::bos_id || t == dk_llama2::eos_id) break;
        out.push_back(t);
        seq.push_back(t);
    }
    return out;
}

std::vector<token_id> strip_stop(std::vector<token_id> t) {
    if (!t.empty() && (t.back() == dk_llama2::bos_id || t.back() == dk_llama2::eos_id))
        t.pop_back();
    return t;
}

bool all_in_vocab(const std::vector<token_id>& t, std::size_t V) {
    for (auto x : t)
        if (x < 0 || std::size_t(x) >= V) return false;
    return true;
}

}  // namespace

TEST_CASE("e2e: greedy and sampled generate() on the reference backend", "[e2e][generate]") {
    for (auto& s : subjects()) {
        INFO(s.name);
        dk_llama2::model m(s.ck);
        const auto greedy = plain_greedy(m, s.prompt, s.max_new);
        REQUIRE(!greedy.empty());
        m.clear_cache();
        m.reset_counters();
        dk::generate_params gp;
        gp.sampling.temperature = 0.f;
        gp.max_new_tokens = s.max_new;
        gp.eos_ids = stops;
        const auto g = dk::generate(m, s.prompt, gp);
        CHECK(g.tokens == greedy);
        // one model call and one token forward per generated token (the prompt once)
        CHECK(m.counters().calls == g.stats.model_calls);
        CHECK(m.counters().tokens_forwarded <= s.prompt.size() + g.tokens.size());
        CHECK(g.stats.tokens_per_second > 0);

        gp.sampling = {.temperature = 0.8f, .top_k = 40, .top_p = 0.95f, .seed = 7};
        const auto a = dk::generate(m, s.prompt, gp);
        const auto b = dk::generate(m, s.prompt, gp);
        CHECK(a.tokens == b.tokens);  // seeded: reproducible
        CHECK(all_in_vocab(a.tokens, m.vocab_size()));
        CHECK(!a.tokens.empty());
        gp.sampling.seed = 8;
        const auto c = dk::generate(m, s.prompt, gp);
        CHECK(all_in_vocab(c.tokens, m.vocab_size()));
    }
}

TEST_CASE("e2e: beam search", "[e2e][beam]") {
    for (auto& s : subjects()) {
        INFO(s.name);
        dk_llama2::model m(s.ck);
        const auto greedy = plain_greedy(m, s.prompt, s.max_new);
        dk::beam_search_params bp;
        bp.num_beams = 1;
        bp.max_new_tokens = s.max_new;
        bp.eos_ids = stops;
        const auto one = dk::beam_search(m, s.prompt, bp);
        REQUIRE(!one.hypotheses.empty());
        CHECK(strip_stop(one.hypotheses.front().tokens) == greedy);

        bp.num_beams = 4;
        bp.num_return = 4;
        m.reset_counters();
        const auto four = dk::beam_search(m, s.prompt, bp);
        REQUIRE(four.hypotheses.size() == 4);
        for (std::size_t i = 1; i < 4; ++i)
            CHECK(four.hypotheses[i - 1].score >= four.hypotheses[i].score);
        for (const auto& h : four.hypotheses) CHECK(all_in_vocab(h.tokens, m.vocab_size()));
        // KV reuse across beam forks: about one token forward per beam per step
        CHECK(m.counters().tokens_forwarded <= s.prompt.size() * 4 + four.model_rows);
    }
}

TEST_CASE("e2e: contrastive search", "[e2e][contrastive]") {
    for (auto& s : subjects()) {
        INFO(s.name);
        dk_llama2::model m(s.ck);
        const auto greedy = plain_greedy(m, s.prompt, s.max_new);
        dk::contrastive_params cp;
        cp.top_k = 4;
        cp.alpha = 0.f;
        cp.max_new_tokens = s.max_new;
        cp.eos_ids = stops;
        const auto zero = dk::contrastive_search(m, s.prompt, cp);
        CHECK(strip_stop(zero.tokens) == greedy);

        cp.alpha = 0.6f;
        m.reset_counters();
        const auto r = dk::contrastive_search(m, s.prompt, cp);
        CHECK(all_in_vocab(r.tokens, m.vocab_size()));
        CHECK(!r.tokens.empty());
        // k look-ahead rows per step, each costing one token forward thanks to the fork reuse
        CHECK(m.counters().tokens_forwarded <= s.prompt.size() + 4 * r.tokens.size() + 4);
    }
}

TEST_CASE("e2e: DoLa", "[e2e][dola]") {
    for (auto& s : subjects()) {
        INFO(s.name);
        dk_llama2::model m(s.ck);
        for (auto set : {dk::dola_layer_set::low, dk::dola_layer_set::high}) {
            dk::dola_params dp;
            dp.layers = set;
            dp.max_new_tokens = s.max_new;
            dp.eos_ids = stops;
            const auto r = dk::dola_decode(m, s.prompt, dp);
            CHECK(all_in_vocab(r.tokens, m.vocab_size()));
            CHECK(!r.tokens.empty());
            CHECK(r.premature_layers.size() >= r.tokens.size() - 1);
            for (int l : r.premature_layers) CHECK((l >= 0 && std::size_t(l) < m.num_layers()));
        }
    }
}

TEST_CASE("e2e: greedy speculative decoding equals greedy for every proposer",
          "[e2e][speculative]") {
    for (auto& s : subjects()) {
        INFO(s.name);
        dk_llama2::model m(s.ck, {.num_heads = 3});
        const auto greedy = plain_greedy(m, s.prompt, s.max_new);
        dk::basic_processing greedy_proc{.temperature = 0.f};
        dk::speculative_params sp;
        sp.max_new_tokens = s.max_new;
        sp.eos_ids = stops;
        sp.rule = dk::verification::greedy;
        sp.draft_length = 3;
        sp.adaptive = true;
        for (int layer = 1; layer < int(m.num_layers()); ++layer) {
            INFO("early exit at layer " << layer);
            dk::early_exit_proposer<dk_llama2::model> draft(m, layer, greedy_proc);
            const auto r = dk::speculative_decode(m, draft, s.prompt, sp, greedy_proc);
            CHECK(strip_stop(r.tokens) == greedy);
            CHECK(r.stats.drafted > 0);
        }
        {
            dk::ngram_proposer draft{};
            const auto r = dk::speculative_decode(m, draft, s.prompt, sp, greedy_proc);
            CHECK(strip_stop(r.tokens) == greedy);
        }
        {
            dk::mtp_proposer<dk_llama2::model> draft(m, 0, greedy_proc, {.slot = 1});
            const auto r = dk::speculative_decode(m, draft, s.prompt, sp, greedy_proc);
            CHECK(strip_stop(r.tokens) == greedy);
            // emulated heads are the greedy rollout: every draft is accepted
            CHECK(r.stats.accepted == r.stats.drafted);
        }
        {
            // the exact rejection rule with greedy (one-hot) processing is greedy too
            dk::speculative_params rp = sp;
            rp.rule = dk::verification::rejection;
            dk::early_exit_proposer<dk_llama2::model> draft(m, int(m.num_layers()) - 1,
                                                            greedy_proc);
            const auto r = dk::speculative_decode(m, draft, s.prompt, rp, greedy_proc);
            CHECK(strip_stop(r.tokens) == greedy);
        }
    }
}

TEST_CASE("e2e: sampled speculative decoding runs and is reproducible", "[e2e][speculative]") {
    for (auto& s : subjects()) {
        INFO(s.name);
        dk_llama2::model m(s.ck);
        dk::basic_processing proc{.temperature = 0.8f, .top_k = 40};
        dk::speculative_params sp;
        sp.max_new_tokens = s.max_new;
        sp.eos_ids = stops;
        sp.seed = 99;
        sp.rule = dk::verification::rejection;
        dk::early_exit_proposer<dk_llama2::model> draft(m, int(m.num_layers()) - 1, proc,
                                                        {.mode = dk::draft_mode::sample});
        const auto a = dk::speculative_decode(m, draft, s.prompt, sp, proc);
        const auto b = dk::speculative_decode(m, draft, s.prompt, sp, proc);
        CHECK(a.tokens == b.tokens);
        CHECK(all_in_vocab(a.tokens, m.vocab_size()));
        CHECK(!a.tokens.empty());
        CHECK(a.stats.drafted > 0);
    }
}
}  // namespace dk_t_strategies
