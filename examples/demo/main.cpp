// decodekit-demo: loads a llama2.c model (stories260K by default) and runs a prompt through
// decodekit's decoding strategies, printing the text and a statistics table (or JSON).
// Run `decodekit-demo --help` for the options.
#include <decodekit/decodekit.hpp>
#include <llama2/llama2.hpp>
#ifdef DK_HAVE_REGEX  // examples/regex, built when PCRE2 is found
#include <regex/llama2_vocabulary.hpp>
#include <regex/regex_generate.hpp>
#endif

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

namespace dk = decodekit;
using dk::token_id;

namespace {

struct options {
    std::string model, tokenizer;
    std::string prompt = "Once upon a time";
    int max_tokens = 160;
    std::string strategy = "all";
    std::uint64_t seed = 42;
    float temperature = 0.8f;
    int top_k = 40;
    float top_p = 0.95f;
    float min_p = 0.05f;
    int beams = 4;
    int draft_layer = -1;  // early-exit layer of the speculative self-draft (-1: n_layers - 1)
    std::string draft = "early-exit";  // speculative proposer: early-exit | ngram | mtp
    std::string mtp;                   // MTP module file (--draft mtp; default: beside the model)
    bool json = false;
    std::optional<std::string> regex;  // --regex: constrained greedy and sampling
    bool random_model = false;         // a random-weight model with the tokenizer's vocabulary
    bool top_k_set = false, top_p_set = false;  // given on the command line
};

void usage(std::FILE* f) {
    std::fputs(
        "usage: decodekit-demo [options]\n"
        "  --model PATH         llama2.c checkpoint (default: stories260K.bin from "
        "$DECODEKIT_MODELS_DIR,\n"
        "                       else the repository's examples/models; none found: a small\n"
        "                       random-weight model)\n"
        "  --tokenizer PATH     llama2.c tokenizer (default: tok512.bin / tokenizer.bin beside the "
        "model)\n"
        "  --prompt TEXT        prompt (default \"Once upon a time\"; \"\" starts from BOS alone)\n"
        "  --max-tokens N       new tokens per strategy (default 160)\n"
        "  --strategy S         greedy|sample|beam|contrastive|dola|speculative|all (default "
        "all)\n"
        "  --seed N             sampling seed (default 42)\n"
        "  --temperature T      sampling temperature (default 0.8)\n"
        "  --top-k K            sampling top-k, 0 = off (default 40)\n"
        "  --top-p P            sampling top-p, 1 = off (default 0.95)\n"
        "  --min-p P            sampling min-p, 0 = off (default 0.05)\n"
        "  --beams N            beam width (default 4)\n"
        "  --draft-layer L      speculative: early-exit self-draft layer (default n_layers - 1)\n"
        "  --draft P            speculative proposer: early-exit (default), ngram (prompt "
        "lookup)\n"
        "                       or mtp (the model's trained MTP module)\n"
        "  --mtp PATH           MTP module file for --draft mtp (default: <model>-mtp.bin "
        "beside the\n"
        "                       model, e.g. stories260K-mtp.bin)\n"
        "  --regex PATTERN      constrain the generated text to a full match of PATTERN (PCRE2,\n"
        "                       bytes): greedy and sampling (min-p + temperature unless --top-k /\n"
        "                       --top-p are given), with the constraint's queries per token\n"
        "  --random-model       a random-weight tiny model with the tokenizer's vocabulary (also\n"
        "                       chosen when --tokenizer does not fit the default model, e.g.\n"
        "                       --tokenizer examples/models/tokenizer.bin: 32000 tokens)\n"
        "  --json               one JSON object per strategy: strategy, text, tokens,\n"
        "                       stop_reason, stats (and regex with --regex)\n"
        "  --help               this text\n",
        f);
}

bool parse_int(const char* s, long lo, long hi, long& out) {
    char* end = nullptr;
    const long v = std::strtol(s, &end, 10);
    if (end == s || *end != '\0' || v < lo || v > hi) return false;
    out = v;
    return true;
}
bool parse_float(const char* s, float lo, float hi, float& out) {
    char* end = nullptr;
    const float v = std::strtof(s, &end);
    if (end == s || *end != '\0' || !(v >= lo && v <= hi)) return false;
    out = v;
    return true;
}

// 0: ok, 1: error, 2: help printed.
int parse_args(int argc, char** argv, options& o) {
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--help" || a == "-h") {
            usage(stdout);
            return 2;
        }
        if (a == "--json") {
            o.json = true;
            continue;
        }
        if (a == "--random-model") {
            o.random_model = true;
            continue;
        }
        if (i + 1 >= argc) {
            std::fprintf(stderr, "decodekit-demo: %s needs a value (see --help)\n", a.c_str());
            return 1;
        }
        const char* v = argv[++i];
        long n = 0;
        bool ok = true;
        if (a == "--model")
            o.model = v;
        else if (a == "--tokenizer")
            o.tokenizer = v;
        else if (a == "--prompt")
            o.prompt = v;
        else if (a == "--strategy")
            o.strategy = v;
        else if (a == "--max-tokens")
            ok = parse_int(v, 0, 1 << 20, n), o.max_tokens = int(n);
        else if (a == "--seed") {
            char* end = nullptr;
            o.seed = std::strtoull(v, &end, 10);
            ok = end != v && *end == '\0';
        } else if (a == "--temperature")
            ok = parse_float(v, 0.f, 100.f, o.temperature);
        else if (a == "--top-k")
            ok = parse_int(v, 0, 1 << 22, n), o.top_k = int(n), o.top_k_set = true;
        else if (a == "--top-p")
            ok = parse_float(v, 0.f, 1.f, o.top_p), o.top_p_set = true;
        else if (a == "--regex")
            o.regex = v;
        else if (a == "--min-p")
            ok = parse_float(v, 0.f, 1.f, o.min_p);
        else if (a == "--beams")
            ok = parse_int(v, 1, 64, n), o.beams = int(n);
        else if (a == "--draft")
            ok = (o.draft = v) == "early-exit" || o.draft == "ngram" || o.draft == "mtp";
        else if (a == "--mtp")
            o.mtp = v;
        else if (a == "--draft-layer")
            ok = parse_int(v, 0, 1 << 10, n), o.draft_layer = int(n);
        else {
            std::fprintf(stderr, "decodekit-demo: unknown option %s (see --help)\n", a.c_str());
            return 1;
        }
        if (!ok) {
            std::fprintf(stderr, "decodekit-demo: bad value '%s' for %s (see --help)\n", v,
                         a.c_str());
            return 1;
        }
    }
    return 0;
}

bool file_exists(const std::string& p) {
    std::FILE* f = std::fopen(p.c_str(), "rb");
    if (!f) return false;
    std::fclose(f);
    return true;
}

// The number of entries of a llama2.c tokenizer file (its vocabulary size), or -1 when it is not
// one: a max-length header, then (score, length, bytes) entries up to the end of the file.
int tokenizer_entries(const std::string& path) {
    auto bytes = dk_llama2::read_file_bytes(path);
    if (!bytes || bytes->size() < 4) return -1;
    const auto& b = bytes.value();
    std::size_t at = 4;
    int n = 0;
    while (at < b.size()) {
        std::int32_t len = 0;
        if (b.size() - at < 8) return -1;
        std::memcpy(&len, b.data() + at + 4, 4);
        if (len < 0 || std::size_t(len) > b.size() - at - 8) return -1;
        at += 8 + std::size_t(len);
        if (++n > (1 << 22)) return -1;
    }
    return n;
}

// ------------------------------------------------------------------------------------------
// A run of one strategy and its statistics.

struct run_stats {
    double total_s = 0, ttft_s = 0, tpot_s = 0, tokens_per_s = 0;
    std::uint64_t model_calls = 0, tokens_forwarded = 0;
    std::optional<double> acceptance;  // speculative only
    bool streamed =
        true;  // false: the library returns the text at the end (beam, contrastive, DoLa)
    std::string note;
};

// A regex-constrained run's figures (--regex).
struct regex_figures {
    bool complete = false;  // the generated text is a full match
    std::uint64_t queries = 0, extension_checks = 0;
    double per_token = 0, vocab_fraction = 0;  // sampler queries per sampling call
};

struct run_result {
    std::string strategy;
    bool available = true;
    std::string why_not;
    std::vector<token_id> tokens;  // generated only
    std::string stop_reason;       // decodekit's stop_reason name
    run_stats stats;
    std::optional<regex_figures> regex;
};

using clock_type = std::chrono::steady_clock;
double seconds_since(clock_type::time_point t0) {
    return std::chrono::duration<double>(clock_type::now() - t0).count();
}

// A strategy run by a library function that returns its tokens at the end (beam, contrastive,
// speculative): times it and reads the backend's counters.
template <class F>
run_result timed(const char* name, dk_llama2::model& m, F&& f) {
    run_result r;
    r.strategy = name;
    m.clear_cache();
    m.reset_counters();
    const auto t0 = clock_type::now();
    f(r);
    r.stats.total_s = seconds_since(t0);
    r.stats.model_calls = m.counters().calls;
    r.stats.tokens_forwarded = m.counters().tokens_forwarded;
    return r;
}

// ------------------------------------------------------------------------------------------
// Output.

std::string json_escape(const std::string& s) {
    std::string o;
    for (unsigned char c : s) {
        switch (c) {
            case '"':
                o += "\\\"";
                break;
            case '\\':
                o += "\\\\";
                break;
            case '\n':
                o += "\\n";
                break;
            case '\t':
                o += "\\t";
                break;
            case '\r':
                o += "\\r";
                break;
            default:
                if (c < 0x20) {
                    char b[8];
                    std::snprintf(b, sizeof b, "\\u%04x", c);
                    o += b;
                } else {
                    o += char(c);
                }
        }
    }
    return o;
}

void finish_stats(run_stats& s, std::size_t n) {
    s.tokens_per_s = s.total_s > 0 ? double(n) / s.total_s : 0;
    // Not streamed: TTFT is the whole run and TPOT the mean time per output token.
    if (!s.streamed) s.ttft_s = s.total_s;
    s.tpot_s = !s.streamed ? (n ? s.total_s / double(n) : 0)
                           : (n > 1 ? (s.total_s - s.ttft_s) / double(n - 1) : 0);
}

void print_json(const run_result& r, const std::string& text, const std::string& pattern) {
    if (!r.available) {
        std::printf("{\"strategy\":\"%s\",\"available\":false,\"reason\":\"%s\"}\n",
                    r.strategy.c_str(), json_escape(r.why_not).c_str());
        return;
    }
    std::printf("{\"strategy\":\"%s\",\"text\":\"%s\",\"tokens\":[", r.strategy.c_str(),
                json_escape(text).c_str());
    for (std::size_t i = 0; i < r.tokens.size(); ++i)
        std::printf("%s%d", i ? "," : "", r.tokens[i]);
    std::printf("],\"stop_reason\":\"%s\"", r.stop_reason.c_str());
    if (r.regex)
        std::printf(
            ",\"regex\":{\"pattern\":\"%s\",\"complete\":%s,\"queries\":%llu,"
            "\"queries_per_token\":%.3f,\"queries_vocab_pct\":%.4f,\"extension_checks\":%llu}",
            json_escape(pattern).c_str(), r.regex->complete ? "true" : "false",
            (unsigned long long)r.regex->queries, r.regex->per_token, r.regex->vocab_fraction * 100,
            (unsigned long long)r.regex->extension_checks);
    const auto& s = r.stats;
    std::printf(
        ",\"stats\":{\"new_tokens\":%zu,\"tokens_per_s\":%.1f,\"ttft_ms\":%.3f,\"tpot_ms\":%.3f,"
        "\"model_calls\":%llu,\"tokens_forwarded\":%llu",
        r.tokens.size(), s.tokens_per_s, s.ttft_s * 1e3, s.tpot_s * 1e3,
        (unsigned long long)s.model_calls, (unsigned long long)s.tokens_forwarded);
    if (s.acceptance) std::printf(",\"acceptance_rate\":%.3f", *s.acceptance);
    std::printf(",\"streamed\":%s", s.streamed ? "true" : "false");
    std::printf("}}\n");
}

}  // namespace

int main(int argc, char** argv) {
    options o;
    if (int rc = parse_args(argc, argv, o)) return rc == 2 ? 0 : 2;
    const std::vector<std::string> all_strategies = {"greedy",      "sample", "beam",
                                                     "contrastive", "dola",   "speculative"};
    std::vector<std::string> strategies;
    if (o.strategy == "all") {
        strategies = all_strategies;
    } else if (std::find(all_strategies.begin(), all_strategies.end(), o.strategy) !=
               all_strategies.end()) {
        strategies = {o.strategy};
    } else {
        std::fprintf(stderr,
                     "decodekit-demo: unknown strategy '%s' "
                     "(greedy|sample|beam|contrastive|dola|speculative|all)\n",
                     o.strategy.c_str());
        return 2;
    }
    if (o.regex) {
#ifndef DK_HAVE_REGEX
        std::fprintf(stderr,
                     "decodekit-demo: --regex: this build has no PCRE2 (Debian: apt-get install "
                     "libpcre2-dev, then configure again)\n");
        return 2;
#endif
        if (o.strategy == "all") {
            strategies = {"greedy", "sample"};
        } else if (o.strategy != "greedy" && o.strategy != "sample") {
            std::fprintf(stderr, "decodekit-demo: --regex runs greedy and sample only, not '%s'\n",
                         o.strategy.c_str());
            return 2;
        }
    }

    // ---- model and tokenizer
    std::string model_path = o.model;
    if (model_path.empty() && !o.random_model) {
        const std::string dir = dk_llama2::default_models_dir();
        if (file_exists(dir + "/stories260K.bin")) model_path = dir + "/stories260K.bin";
    }
    // --tokenizer without --model: a random-weight model of the tokenizer's vocabulary when the
    // file does not fit the default model (e.g. the 32000-token tokenizer.bin: no checkpoint of
    // that vocabulary exists here), or with --random-model
    int random_vocab = 0;
    if (!o.tokenizer.empty() && o.model.empty()) {
        const int n = tokenizer_entries(o.tokenizer);
        if (n < 0) {
            std::fprintf(stderr, "decodekit-demo: --tokenizer %s: not a llama2.c tokenizer file\n",
                         o.tokenizer.c_str());
            return 1;
        }
        if (!model_path.empty()) {
            auto ck = dk_llama2::load_checkpoint(model_path);
            if (ck && ck->cfg.vocab_size != n) model_path.clear();
        }
        if (model_path.empty()) random_vocab = n;
    } else if (o.random_model && o.model.empty()) {
        random_vocab = 400;  // the synthetic byte-level tokenizer
    }
    std::optional<dk_llama2::model> model;
    std::optional<dk_llama2::tokenizer> tok;
    std::string model_name;
    FILE* info = o.json ? stderr : stdout;
    if (!model_path.empty()) {
        auto ck = dk_llama2::load_checkpoint(model_path);
        if (!ck) {
            std::fprintf(stderr, "decodekit-demo: %s\n", ck.error().c_str());
            return 1;
        }
        const int V = ck->cfg.vocab_size;
        std::string tok_path = o.tokenizer;
        if (tok_path.empty()) {
            const auto slash = model_path.find_last_of('/');
            const std::string dir = slash == std::string::npos ? "." : model_path.substr(0, slash);
            tok_path = dir + (V == 32000 ? "/tokenizer.bin" : "/tok" + std::to_string(V) + ".bin");
        }
        auto t = dk_llama2::tokenizer::load(tok_path, V);
        if (!t) {
            std::fprintf(stderr, "decodekit-demo: %s\n", t.error().c_str());
            return 1;
        }
        tok.emplace(std::move(t.value()));
        std::optional<dk_llama2::mtp_weights> module;
        if (o.draft == "mtp") {  // <model>-mtp.bin beside the model unless --mtp says otherwise
            std::string mtp_path = o.mtp;
            if (mtp_path.empty())
                mtp_path = model_path.substr(
                               0, model_path.size() - (model_path.ends_with(".bin") ? 4 : 0)) +
                           "-mtp.bin";
            auto w = dk_llama2::load_mtp_module(mtp_path, ck->cfg);
            if (!w) {
                std::fprintf(stderr, "decodekit-demo: --draft mtp: %s\n", w.error().c_str());
                return 1;
            }
            module.emplace(std::move(w.value()));
        }
        model.emplace(std::move(ck.value()));
        if (module) {
            if (auto why = model->set_mtp_module(std::move(*module))) {
                std::fprintf(stderr, "decodekit-demo: --draft mtp: %s\n", why->c_str());
                return 1;
            }
        }
        char resolved[4096];
        model_name = ::realpath(model_path.c_str(), resolved) ? std::string(resolved) : model_path;
    } else {
        if (o.draft == "mtp") {
            std::fprintf(stderr,
                         "decodekit-demo: --draft mtp needs a model with a trained MTP module "
                         "(stories260K.bin + stories260K-mtp.bin); none found in %s\n",
                         dk_llama2::default_models_dir().c_str());
            return 1;
        }
        const int V = random_vocab > 0 ? random_vocab : 400;
        if (random_vocab == 0)
            std::fprintf(info,
                         "decodekit-demo: no model found (looked for stories260K.bin in %s; pass "
                         "--model PATH or set DECODEKIT_MODELS_DIR). Using a small random-weight "
                         "model: the text will be gibberish.\n",
                         dk_llama2::default_models_dir().c_str());
        if (!o.tokenizer.empty()) {
            auto t = dk_llama2::tokenizer::load(o.tokenizer, V);
            if (!t) {
                std::fprintf(stderr, "decodekit-demo: %s\n", t.error().c_str());
                return 1;
            }
            tok.emplace(std::move(t.value()));
        } else {
            tok.emplace(dk_llama2::tokenizer::synthetic(V));
        }
        auto cfg = dk_llama2::tiny_config(V);
        cfg.shared_classifier = false;  // a shared one makes random weights repeat the last token
        auto ck = dk_llama2::parse_checkpoint(dk_llama2::make_random_checkpoint(cfg, 2024));
        model.emplace(std::move(ck.value()));
        model_name =
            "random-weight tiny model, vocabulary " + std::to_string(V) +
            (o.tokenizer.empty() ? std::string(" (synthetic tokenizer)") : " of " + o.tokenizer);
    }
    dk_llama2::model& m = *model;
    const std::vector<token_id> prompt = tok->encode(o.prompt, true, false);
    const int room = int(m.max_sequence_length()) - int(prompt.size());
    if (room <= 0) {
        std::fprintf(stderr, "decodekit-demo: the prompt (%zu tokens) fills the context (%zu)\n",
                     prompt.size(), m.max_sequence_length());
        return 1;
    }
    const int max_new = std::min(o.max_tokens, room);
    if (!o.json) {
        const auto& c = m.cfg();
        std::printf("model: %s (dim %d, %d layers, %d heads, %d kv heads, vocab %d, context %d)\n",
                    model_name.c_str(), c.dim, c.n_layers, c.n_heads, c.n_kv_heads, c.vocab_size,
                    c.seq_len);
        std::printf("prompt: \"%s\" (%zu tokens incl. BOS), up to %d new tokens\n\n",
                    o.prompt.c_str(), prompt.size(), max_new);
    }

    // One untimed warm-up call: allocates the first KV cache so that the first strategy's
    // time to first token is not charged for it.
    {
        std::vector<float> row(m.vocab_size());
        const dk::sequence_request warm{prompt, 1, 0};
        m.logits(std::span(&warm, 1), row);
    }

    // ---- the regex constraint (--regex)
#ifdef DK_HAVE_REGEX
    std::optional<dk_regex::regex_constraint> constraint;
    if (o.regex) {
        auto c = dk_regex::regex_constraint::compile(*o.regex, dk_regex::llama2_vocabulary(*tok));
        if (!c) {
            std::fprintf(stderr, "decodekit-demo: --regex: %s\n", c.error().c_str());
            return 2;
        }
        constraint.emplace(std::move(c.value()));
    }
#endif

    // ---- strategies
    std::vector<run_result> results;
    for (const auto& s : strategies) {
        run_result r;
#ifdef DK_HAVE_REGEX
        if (constraint && max_new > 0) {
            // The sampler applies the constraint (sampling_params::constraint) and queries it only
            // where the law needs it: greedy walks down from the top; sampling is min-p then
            // temperature (llama.cpp order, min-p first): the highest allowed token sets the
            // threshold; the token is then drawn from the unmasked min-p set and checked (exact
            // in law; after 8 refusals every token above the threshold is queried), unless
            // --top-k / --top-p are given (top-k first queries its k best allowed tokens; top-p
            // first needs every token's verdict). The demo prints no logprob: it asks for none,
            // since the chosen logprob under a constraint needs every verdict above the
            // threshold (the masked normaliser).
            dk::sampling_params sp;
            sp.logprobs.chosen = false;
            char how[128] = "greedy";
            if (s == "sample") {
                sp.temperature = o.temperature;
                sp.top_k = o.top_k_set ? o.top_k : 0;
                sp.top_p = o.top_p_set ? o.top_p : 1.f;
                sp.min_p = o.min_p;
                sp.seed = o.seed;
                std::snprintf(how, sizeof how, "temperature %g, top-k %d, top-p %g, min-p %g",
                              double(sp.temperature), sp.top_k, double(sp.top_p), double(sp.min_p));
            } else {
                sp.temperature = 0.f;
            }
            if (auto problem = sp.check()) {
                std::fprintf(stderr, "decodekit-demo: %s\n", problem->c_str());
                return 2;
            }
            r = timed(s.c_str(), m, [&](run_result& rr) {
                const auto g = dk_regex::generate(m, prompt, *constraint, sp,
                                                  {.max_new_tokens = std::size_t(max_new)});
                rr.tokens = g.tokens;
                rr.stop_reason = dk::to_string(g.reason);
                rr.stats.ttft_s = g.stats.time_to_first_token;
                rr.regex = regex_figures{.complete = g.complete,
                                         .queries = g.queries,
                                         .extension_checks = g.extension_checks,
                                         .per_token = g.queries_per_step(),
                                         .vocab_fraction = g.query_fraction()};
                char note[320];
                std::snprintf(note, sizeof note,
                              "%s; regex %s, stop %s; %.2f constraint queries per token (%.3f%% "
                              "of the %zu-token vocabulary) over %zu steps",
                              how, g.complete ? "matched in full" : "NOT matched in full",
                              rr.stop_reason.c_str(), g.queries_per_step(),
                              g.query_fraction() * 100, g.vocab_size, g.steps);
                rr.stats.note = note;
            });
            finish_stats(r.stats, r.tokens.size());
            results.push_back(std::move(r));
            continue;
        }
#endif
        if (s == "greedy" || s == "sample") {
            if (max_new == 0) continue;
            // decodekit::generate: one cached model call per token through decodekit::sampler
            // (temperature 0 = greedy; sampling in llama.cpp order top-k, top-p, min-p,
            // temperature).
            dk::generate_params gp;
            gp.max_new_tokens = std::size_t(max_new);
            gp.eos_ids = {dk_llama2::bos_id, dk_llama2::eos_id};  // run.c stops at BOS too
            if (s == "greedy") {
                gp.sampling.temperature = 0.f;
            } else {
                gp.sampling.temperature = o.temperature;
                gp.sampling.top_k = o.top_k;
                gp.sampling.top_p = o.top_p;
                gp.sampling.min_p = o.min_p;
                gp.sampling.seed = o.seed;
            }
            if (auto problem = gp.check()) {
                std::fprintf(stderr, "decodekit-demo: %s\n", problem->c_str());
                return 2;
            }
            r = timed(s.c_str(), m, [&](run_result& rr) {
                const auto res = dk::generate(m, prompt, gp);
                rr.tokens = res.tokens;
                rr.stop_reason = dk::to_string(res.reason);
                rr.stats.ttft_s = res.stats.time_to_first_token;
                if (s == "sample") {
                    char note[160];
                    std::snprintf(note, sizeof note,
                                  "temperature %g, top-k %d, top-p %g, min-p %g, seed %llu",
                                  double(o.temperature), o.top_k, double(o.top_p), double(o.min_p),
                                  (unsigned long long)o.seed);
                    rr.stats.note = note;
                }
            });
        } else if (s == "beam") {
            if (max_new == 0) continue;
            r = timed("beam", m, [&](run_result& rr) {
                dk::beam_search_params bp;
                bp.num_beams = std::size_t(o.beams);
                bp.max_new_tokens = std::size_t(max_new);
                bp.eos_ids = {dk_llama2::bos_id, dk_llama2::eos_id};
                const auto res = dk::beam_search(m, prompt, bp);
                rr.tokens = res.tokens;  // the best hypothesis (EOS excluded)
                rr.stop_reason = dk::to_string(res.reason);
                char note[128];
                std::snprintf(note, sizeof note,
                              "beam width %d, length penalty 1, score %.3f; %zu steps", o.beams,
                              res.hypotheses.front().score, res.steps);
                rr.stats.note = note;
            });
            r.stats.streamed = false;  // the text is known only at the end
        } else if (s == "contrastive") {
            if (max_new == 0) continue;
            r = timed("contrastive", m, [&](run_result& rr) {
                dk::contrastive_params cp;
                cp.top_k = 4;
                cp.alpha = 0.6f;
                cp.max_new_tokens = std::size_t(max_new);
                cp.eos_ids = {dk_llama2::bos_id, dk_llama2::eos_id};
                const auto res = dk::contrastive_search(m, prompt, cp);
                rr.tokens = res.tokens;
                rr.stop_reason = dk::to_string(res.reason);
                rr.stats.note = "top-k 4, alpha 0.6";
            });
            r.stats.streamed = false;
        } else if (s == "dola") {
            if (max_new == 0) continue;
            r = timed("dola", m, [&](run_result& rr) {
                dk::dola_params dp;
                dp.layers = dk::dola_layer_set::high;
                dp.tied_embeddings = m.cfg().shared_classifier;
                dp.max_new_tokens = std::size_t(max_new);
                dp.eos_ids = {dk_llama2::bos_id, dk_llama2::eos_id};
                const auto res = dk::dola_decode(m, prompt, dp);
                rr.tokens = res.tokens;
                rr.stop_reason = dk::to_string(res.reason);
                rr.stats.note =
                    "premature layers: high range, relative top 0.1, repetition penalty 1.2, "
                    "greedy";
            });
            r.stats.streamed = false;
        } else if (s == "speculative") {
            if (max_new == 0) continue;
            const int layer = o.draft_layer >= 0 ? o.draft_layer : int(m.num_layers()) - 1;
            if (layer < 1 || std::size_t(layer) >= m.num_layers()) {
                std::fprintf(stderr, "decodekit-demo: --draft-layer must be in [1, %zu)\n",
                             m.num_layers());
                return 2;
            }
            r = timed("speculative", m, [&](run_result& rr) {
                // Greedy speculative decoding (output == greedy): the early-exit self-draft (the
                // model read out at `layer`; its slot runs only `layer` layers) or n-gram prompt
                // lookup proposes, the full model verifies all drafts in one call.
                dk::basic_processing greedy_proc{.temperature = 0.f};
                dk::speculative_params spp;
                spp.max_new_tokens = std::size_t(max_new);
                spp.eos_ids = {dk_llama2::bos_id, dk_llama2::eos_id};
                spp.rule = dk::verification::greedy;
                spp.draft_length = 4;
                spp.adaptive = true;
                dk::speculative_result res;
                char what[64];
                if (o.draft == "ngram") {
                    dk::ngram_proposer draft{.min_n = 1, .max_n = 3};
                    res = dk::speculative_decode(m, draft, prompt, spp, greedy_proc);
                    std::snprintf(what, sizeof what, "n-gram prompt lookup (n = 3..1)");
                } else if (o.draft == "mtp") {
                    // The trained MTP module (examples/llama2/mtp.hpp). speculative_decode
                    // verifies with logits_and_hidden and hands the module the main model's
                    // hidden state at the last verified position: no extra main forward per
                    // round (the first round computes it, counted in the draft calls).
                    dk::mtp_module_proposer<dk_llama2::model> draft(m, greedy_proc);
                    res = dk::speculative_decode(m, draft, prompt, spp, greedy_proc);
                    std::snprintf(what, sizeof what, "MTP module (%zu modules, chained)",
                                  m.mtp_depth());
                } else {
                    dk::early_exit_proposer<dk_llama2::model> draft(m, layer, greedy_proc);
                    res = dk::speculative_decode(m, draft, prompt, spp, greedy_proc);
                    std::snprintf(what, sizeof what, "early-exit self-draft at layer %d of %zu",
                                  layer, m.num_layers());
                }
                rr.tokens = res.tokens;
                rr.stop_reason = dk::to_string(res.reason);
                rr.stats.ttft_s = res.stats.time_to_first_token;
                rr.stats.acceptance = res.stats.acceptance_rate();
                char note[256];
                std::snprintf(
                    note, sizeof note,
                    "%s, greedy verification, adaptive draft length; %zu target + %zu draft "
                    "calls, %.2f tokens per target call",
                    what, res.stats.target_calls, res.stats.draft_calls,
                    res.stats.mean_tokens_per_target_call());
                rr.stats.note = note;
            });
        } else {
            r.strategy = s;
            r.available = false;
            r.why_not = "not available in this build of decodekit yet";
        }
        finish_stats(r.stats, r.tokens.size());
        results.push_back(std::move(r));
    }

    // ---- output
    for (const auto& r : results) {
        const std::string text = o.prompt + tok->decode(r.tokens, prompt.back());
        if (o.json) {
            print_json(r, text, o.regex.value_or(""));
            continue;
        }
        std::printf("=== %s ===\n", r.strategy.c_str());
        if (!r.available) {
            std::printf("not available: %s\n\n", r.why_not.c_str());
            continue;
        }
        std::printf("%s\n", text.c_str());
        if (!r.stats.note.empty()) std::printf("(%s)\n", r.stats.note.c_str());
        std::printf("\n");
    }
    if (!o.json) {
        std::printf("%-14s %8s %10s %10s %10s %8s %10s %8s\n", "strategy", "tokens", "tokens/s",
                    "TTFT ms", "TPOT ms", "calls", "forwarded", "accept");
        for (const auto& r : results) {
            if (!r.available) {
                std::printf("%-14s %8s\n", r.strategy.c_str(), "n/a");
                continue;
            }
            const auto& s = r.stats;
            char acc[16] = "-";
            if (s.acceptance) std::snprintf(acc, sizeof acc, "%.1f%%", *s.acceptance * 100);
            const std::string name = r.strategy + (s.streamed ? "" : " *");
            std::printf("%-14s %8zu %10.0f %10.3f %10.3f %8llu %10llu %8s\n", name.c_str(),
                        r.tokens.size(), s.tokens_per_s, s.ttft_s * 1e3, s.tpot_s * 1e3,
                        (unsigned long long)s.model_calls, (unsigned long long)s.tokens_forwarded,
                        acc);
        }
        std::printf(
            "(calls = model calls; forwarded = token forwards computed by the backend, cache "
            "misses;\n * = not streamed: the library returns the text at the end, so TTFT is the "
            "whole run and TPOT\n its mean per output token; accept = accepted / drafted "
            "tokens)\n");
    }
    return 0;
}
