// decodekit-demo: loads a llama2.c model (stories260K by default) and runs a prompt through
// decodekit's decoding strategies, printing the text and a statistics table (or JSON).
// Run `decodekit-demo --help` for the options.
#include <decodekit/decodekit.hpp>
#include <llama2/llama2.hpp>

#include <unistd.h>
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
    int max_tokens = 200;
    std::string strategy = "greedy";
    std::uint64_t seed = 42;
    float temperature = 0.8f;
    int top_k = 40;
    float top_p = 0.95f;
    float min_p = 0.05f;
    int beams = 4;
    bool json = false;
};

void usage(std::FILE* f) {
    std::fputs(
        "usage: decodekit-demo [options]\n"
        "  --model PATH         llama2.c checkpoint (default: stories260K.bin from "
        "../shared/models,\n"
        "                       then ./models; none found: a small random-weight model)\n"
        "  --tokenizer PATH     llama2.c tokenizer (default: tok512.bin / tokenizer.bin beside the "
        "model)\n"
        "  --prompt TEXT        prompt (default \"Once upon a time\"; \"\" starts from BOS alone)\n"
        "  --max-tokens N       new tokens per strategy (default 200)\n"
        "  --strategy S         greedy|sample|beam|contrastive|dola|speculative|all (default "
        "greedy)\n"
        "  --seed N             sampling seed (default 42)\n"
        "  --temperature T      sampling temperature (default 0.8)\n"
        "  --top-k K            sampling top-k, 0 = off (default 40)\n"
        "  --top-p P            sampling top-p, 1 = off (default 0.95)\n"
        "  --min-p P            sampling min-p, 0 = off (default 0.05)\n"
        "  --beams N            beam width (default 4)\n"
        "  --json               one JSON object per strategy: strategy, text, tokens, stats\n"
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
            ok = parse_int(v, 0, 1 << 22, n), o.top_k = int(n);
        else if (a == "--top-p")
            ok = parse_float(v, 0.f, 1.f, o.top_p);
        else if (a == "--min-p")
            ok = parse_float(v, 0.f, 1.f, o.min_p);
        else if (a == "--beams")
            ok = parse_int(v, 1, 64, n), o.beams = int(n);
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

std::string exe_dir(const char* argv0) {
    char buf[4096];
    const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
    std::string p = n > 0 ? std::string(buf, std::size_t(n)) : std::string(argv0);
    const auto slash = p.find_last_of('/');
    return slash == std::string::npos ? "." : p.substr(0, slash);
}

// ------------------------------------------------------------------------------------------
// A run of one strategy and its statistics.

struct run_stats {
    double total_s = 0, ttft_s = 0, tpot_s = 0, tokens_per_s = 0;
    std::uint64_t model_calls = 0, tokens_forwarded = 0;
    std::optional<double> acceptance;  // speculative only
    std::string note;
};

struct run_result {
    std::string strategy;
    bool available = true;
    std::string why_not;
    std::vector<token_id> tokens;  // generated only
    run_stats stats;
};

using clock_type = std::chrono::steady_clock;
double seconds_since(clock_type::time_point t0) {
    return std::chrono::duration<double>(clock_type::now() - t0).count();
}

bool is_stop(token_id t) { return t == dk_llama2::bos_id || t == dk_llama2::eos_id; }

// Greedy / sampled decoding: one cached model call per token.
template <class Pick>
run_result decode_loop(const char* name, dk_llama2::model& m, const std::vector<token_id>& prompt,
                       int max_new, Pick&& pick) {
    run_result r;
    r.strategy = name;
    m.clear_cache();
    m.reset_counters();
    std::vector<token_id> seq = prompt;
    std::vector<float> logits(m.vocab_size());
    const auto t0 = clock_type::now();
    double first = 0;
    for (int step = 0; step < max_new; ++step) {
        dk::sequence_request req{seq, 1, 0};
        m.logits(std::span(&req, 1), logits);
        const token_id next = pick(std::span<const float>(logits), seq, std::uint64_t(step));
        if (step == 0) first = seconds_since(t0);
        if (next < 0 || is_stop(next)) break;
        seq.push_back(next);
        r.tokens.push_back(next);
    }
    r.stats.total_s = seconds_since(t0);
    r.stats.ttft_s = first;
    r.stats.model_calls = m.counters().calls;
    r.stats.tokens_forwarded = m.counters().tokens_forwarded;
    return r;
}

// Temperature, top-k, top-p, min-p then a draw, written plainly (until the library's sampler
// replaces it).
struct simple_sampler {
    float temperature, top_p, min_p;
    int top_k;
    std::uint64_t seed;
    std::vector<std::pair<float, token_id>> work;

    token_id operator()(std::span<const float> logits, const std::vector<token_id>&,
                        std::uint64_t step) {
        if (temperature <= 0.f) return token_id(dk::kernels::argmax(logits));
        work.clear();
        for (std::size_t i = 0; i < logits.size(); ++i)
            if (std::isfinite(logits[i])) work.emplace_back(logits[i], token_id(i));
        if (work.empty()) return -1;
        std::sort(work.begin(), work.end(), [](auto a, auto b) {
            return a.first > b.first || (a.first == b.first && a.second < b.second);
        });
        if (top_k > 0 && std::size_t(top_k) < work.size()) work.resize(std::size_t(top_k));
        const float mx = work[0].first;
        double z = 0;
        for (auto& w : work) z += std::exp(double(w.first - mx) / temperature);
        double cum = 0;
        std::size_t keep = 0;
        for (auto& w : work) {
            const double p = std::exp(double(w.first - mx) / temperature) / z;
            if (keep > 0 && p < min_p * (1.0 / z)) break;
            ++keep;
            cum += p;
            if (cum >= top_p) break;
        }
        work.resize(std::max<std::size_t>(keep, 1));
        double zz = 0;
        for (auto& w : work) zz += std::exp(double(w.first - mx) / temperature);
        auto rng = dk::make_stream({seed, 0, step}, dk::rng_purpose::sample);
        double u = rng.uniform() * zz;
        for (auto& w : work) {
            u -= std::exp(double(w.first - mx) / temperature);
            if (u <= 0) return w.second;
        }
        return work.back().second;
    }
};

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
    s.tpot_s = n > 1 ? (s.total_s - s.ttft_s) / double(n - 1) : 0;
}

void print_json(const run_result& r, const std::string& text) {
    if (!r.available) {
        std::printf("{\"strategy\":\"%s\",\"available\":false,\"reason\":\"%s\"}\n",
                    r.strategy.c_str(), json_escape(r.why_not).c_str());
        return;
    }
    std::printf("{\"strategy\":\"%s\",\"text\":\"%s\",\"tokens\":[", r.strategy.c_str(),
                json_escape(text).c_str());
    for (std::size_t i = 0; i < r.tokens.size(); ++i)
        std::printf("%s%d", i ? "," : "", r.tokens[i]);
    const auto& s = r.stats;
    std::printf(
        "],\"stats\":{\"new_tokens\":%zu,\"tokens_per_s\":%.1f,\"ttft_ms\":%.3f,\"tpot_ms\":%.3f,"
        "\"model_calls\":%llu,\"tokens_forwarded\":%llu",
        r.tokens.size(), s.tokens_per_s, s.ttft_s * 1e3, s.tpot_s * 1e3,
        (unsigned long long)s.model_calls, (unsigned long long)s.tokens_forwarded);
    if (s.acceptance) std::printf(",\"acceptance_rate\":%.3f", *s.acceptance);
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

    // ---- model and tokenizer
    std::string model_path = o.model;
    if (model_path.empty()) {
        for (const std::string& dir : {exe_dir(argv[0]) + "/../../../../shared/models",
                                       std::string("../shared/models"), std::string("./models")}) {
            if (file_exists(dir + "/stories260K.bin")) {
                model_path = dir + "/stories260K.bin";
                break;
            }
        }
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
        model.emplace(std::move(ck.value()));
        char resolved[4096];
        model_name = ::realpath(model_path.c_str(), resolved) ? std::string(resolved) : model_path;
    } else {
        std::fprintf(info,
                     "decodekit-demo: no model found (looked for stories260K.bin in "
                     "<exe>/../../../../shared/models, "
                     "../shared/models, ./models; pass --model PATH). Using a small random-weight "
                     "model: the "
                     "text will be gibberish.\n");
        auto cfg = dk_llama2::tiny_config(400);
        cfg.shared_classifier = false;  // a shared one makes random weights repeat the last token
        auto ck = dk_llama2::parse_checkpoint(dk_llama2::make_random_checkpoint(cfg, 2024));
        model.emplace(std::move(ck.value()));
        tok.emplace(dk_llama2::tokenizer::synthetic(400));
        model_name = "random-weight tiny model";
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

    // ---- strategies
    std::vector<run_result> results;
    for (const auto& s : strategies) {
        run_result r;
        if (s == "greedy") {
            r = decode_loop("greedy", m, prompt, max_new,
                            [](std::span<const float> l, const std::vector<token_id>&,
                               std::uint64_t) { return token_id(dk::kernels::argmax(l)); });
        } else if (s == "sample") {
            simple_sampler smp{o.temperature, o.top_p, o.min_p, o.top_k, o.seed, {}};
            r = decode_loop("sample", m, prompt, max_new, smp);
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
            print_json(r, text);
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
        std::printf("%-12s %8s %10s %10s %10s %8s %10s %8s\n", "strategy", "tokens", "tokens/s",
                    "TTFT ms", "TPOT ms", "calls", "forwarded", "accept");
        for (const auto& r : results) {
            if (!r.available) {
                std::printf("%-12s %8s\n", r.strategy.c_str(), "n/a");
                continue;
            }
            const auto& s = r.stats;
            char acc[16] = "-";
            if (s.acceptance) std::snprintf(acc, sizeof acc, "%.1f%%", *s.acceptance * 100);
            std::printf("%-12s %8zu %10.0f %10.3f %10.3f %8llu %10llu %8s\n", r.strategy.c_str(),
                        r.tokens.size(), s.tokens_per_s, s.ttft_s * 1e3, s.tpot_s * 1e3,
                        (unsigned long long)s.model_calls, (unsigned long long)s.tokens_forwarded,
                        acc);
        }
        std::printf(
            "(calls = model calls; forwarded = token forwards computed by the backend, cache "
            "misses)\n");
    }
    return 0;
}
