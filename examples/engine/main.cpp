// decodekit-engine: a continuous-batching engine over the reference backend (engine.hpp). Runs a
// workload of requests with mixed strategies in continuous and/or static batching mode, prints
// one JSON object per request and a summary, and checks each request's tokens against the same
// request run alone through its single-request driver (equal_alone). `--soak SECONDS` runs
// random (and invalid, adversarial, cancelled) requests until the time is up and reports what it
// found. Run `decodekit-engine --help` for the options.
#include "engine.hpp"

#include <unistd.h>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <optional>
#include <random>
#include <string>
#include <vector>

namespace {

namespace dk = decodekit;
using dk::token_id;
using dk_engine::clock_type;
using dk_engine::request_spec;
using dk_engine::strategy;

struct options {
    std::string model, tokenizer;
    std::string mode = "continuous";  // continuous | static | both
    bool json = false;
    std::size_t requests = 40;
    std::size_t max_batch = 8;
    std::size_t runs = 3;
    std::size_t max_tokens = 256;
    std::uint64_t seed = 1;
    double soak_seconds = 0;
    double rss_limit = 0;  // soak: fail when RSS at the end > rss_limit x RSS after warm-up
};

void usage(std::FILE* f) {
    std::fputs(
        "usage: decodekit-engine [options]\n"
        "  --model PATH       llama2.c checkpoint (default: stories260K.bin from "
        "$DECODEKIT_MODELS_DIR,\n"
        "                     else the repository's examples/models)\n"
        "  --tokenizer PATH   llama2.c tokenizer (default: tok512.bin / tokenizer.bin beside "
        "the model)\n"
        "  --mode M           continuous | static | both (default continuous)\n"
        "  --json             one JSON object per request, then a summary object per mode\n"
        "  --requests N       requests in the workload, >= 1 (default 40: 5 of each of the 8 "
        "kinds)\n"
        "  --max-batch N      live requests at most, in [1, 64] (default 8)\n"
        "  --runs N           runs per mode; the summary gives medians (default 3)\n"
        "  --max-tokens N     cap on a request's max_new_tokens, >= 1 (default 256)\n"
        "  --seed N           workload seed (default 1)\n"
        "  --soak SECONDS     random requests (invalid, adversarial, cancelled ones included) "
        "until\n"
        "                     the time is up; reports requests, findings, step times and RSS\n"
        "  --rss-limit R      soak: exit 1 when RSS at the end > R x RSS after warm-up (0: off)\n"
        "  --help             this text\n"
        "Exit status: 0 when every request equals its run alone (soak: no finding), 1 "
        "otherwise,\n"
        "2 for bad arguments.\n",
        f);
}

bool parse_size(const char* s, std::size_t lo, std::size_t hi, std::size_t& out) {
    char* end = nullptr;
    const unsigned long long v = std::strtoull(s, &end, 10);
    if (end == s || *end != '\0' || s[0] == '-' || v < lo || v > hi) return false;
    out = std::size_t(v);
    return true;
}

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
            std::fprintf(stderr, "decodekit-engine: %s needs a value (see --help)\n", a.c_str());
            return 1;
        }
        const char* v = argv[++i];
        bool ok = true;
        std::size_t n = 0;
        if (a == "--model")
            o.model = v;
        else if (a == "--tokenizer")
            o.tokenizer = v;
        else if (a == "--mode")
            ok = (o.mode = v) == "continuous" || o.mode == "static" || o.mode == "both";
        else if (a == "--requests")
            ok = parse_size(v, 1, 100000, o.requests);
        else if (a == "--max-batch")
            ok = parse_size(v, 1, 64, o.max_batch);
        else if (a == "--runs")
            ok = parse_size(v, 1, 100, o.runs);
        else if (a == "--max-tokens")
            ok = parse_size(v, 1, 1 << 20, o.max_tokens);
        else if (a == "--seed")
            ok = parse_size(v, 0, std::numeric_limits<std::size_t>::max(), n), o.seed = n;
        else if (a == "--soak" || a == "--rss-limit") {
            char* end = nullptr;
            const double d = std::strtod(v, &end);
            ok = end != v && *end == '\0' && d >= 0 && d <= 1e6;
            (a == "--soak" ? o.soak_seconds : o.rss_limit) = d;
        } else {
            std::fprintf(stderr, "decodekit-engine: unknown option %s (see --help)\n", a.c_str());
            return 1;
        }
        if (!ok) {
            std::fprintf(stderr, "decodekit-engine: bad value '%s' for %s (see --help)\n", v,
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

std::string json_escape(std::string_view s) {
    std::string o;
    for (unsigned char c : s) {
        if (c == '"')
            o += "\\\"";
        else if (c == '\\')
            o += "\\\\";
        else if (c == '\n')
            o += "\\n";
        else if (c < 0x20) {
            char b[8];
            std::snprintf(b, sizeof b, "\\u%04x", c);
            o += b;
        } else {
            o += char(c);
        }
    }
    return o;
}

/// Valid UTF-8 for JSON: bytes of an invalid or truncated sequence become U+FFFD.
std::string utf8_clean(std::string_view s) {
    std::string o;
    for (std::size_t i = 0; i < s.size();) {
        const auto c = static_cast<unsigned char>(s[i]);
        const std::size_t n = c < 0x80             ? 1
                              : (c & 0xE0) == 0xC0 ? 2
                              : (c & 0xF0) == 0xE0 ? 3
                              : (c & 0xF8) == 0xF0 ? 4
                                                   : 0;
        bool ok = n > 0 && i + n <= s.size();
        for (std::size_t k = 1; ok && k < n; ++k)
            ok = (static_cast<unsigned char>(s[i + k]) & 0xC0) == 0x80;
        if (ok) {
            o.append(s.substr(i, n));
            i += n;
        } else {
            o += "\xEF\xBF\xBD";
            ++i;
        }
    }
    return o;
}

double percentile(std::vector<double> v, double p) {
    if (v.empty()) return 0;
    std::sort(v.begin(), v.end());
    const double rank = p * double(v.size() - 1);  // linear interpolation between ranks
    const std::size_t lo = std::size_t(rank);
    const std::size_t hi = std::min(lo + 1, v.size() - 1);
    return v[lo] + (v[hi] - v[lo]) * (rank - double(lo));
}

std::size_t rss_bytes() {
    std::FILE* f = std::fopen("/proc/self/statm", "r");
    if (!f) return 0;
    unsigned long long size = 0, resident = 0;
    const int n = std::fscanf(f, "%llu %llu", &size, &resident);
    std::fclose(f);
    return n == 2 ? std::size_t(resident) * std::size_t(::sysconf(_SC_PAGESIZE)) : 0;
}

// ------------------------------------------------------------------------------------------
// The workload

const std::vector<token_id> stops = {dk_llama2::bos_id, dk_llama2::eos_id};

/// The detokenizer of stop strings and streamed text: a token's piece (no BOS context: generated
/// tokens never follow BOS).
dk::detokenize_fn detokenizer(const dk_llama2::tokenizer& tok) {
    return [t = &tok](token_id id) -> std::string_view {
        thread_local std::string piece;
        piece = t->decode(-1, id);
        return piece;
    };
}

/// The default workload: kind i % 8, staggered arrivals (0 to 4 steps apart), budgets from 8
/// to 256 tokens (capped by --max-tokens and the context).
std::vector<request_spec> make_workload(const options& o, const dk_llama2::model& m,
                                        const dk_llama2::tokenizer& tok) {
    static const char* prompts[] = {"Once upon a time",       "Lily and Ben went to the park",
                                    "The little dog",         "One day, a girl named Mia",
                                    "Tom had a big red ball", "The sun was shining and",
                                    "There was a cat who",    "Sam wanted to fly"};
    static const std::size_t budgets[] = {8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256};
    std::mt19937_64 rng(o.seed);
    std::vector<request_spec> w;
    std::size_t step = 0;
    const auto detok = detokenizer(tok);
    for (std::size_t i = 0; i < o.requests; ++i) {
        request_spec r;
        r.id = i;
        r.kind = strategy(i % dk_engine::strategy_count);
        r.prompt = tok.encode(prompts[rng() % std::size(prompts)], true, false);
        r.arrival_step = step;
        step += rng() % 5;
        const std::size_t room = m.max_sequence_length() - r.prompt.size();
        const std::size_t budget =
            std::min({budgets[rng() % std::size(budgets)], o.max_tokens, room});
        const std::uint64_t seed = o.seed * 1000 + i;
        dk::generate_params g{
            .max_new_tokens = budget, .eos_ids = stops, .sequence = i, .detokenize = detok};
        g.sampling.seed = seed;
        switch (r.kind) {
            case strategy::greedy:
                g.sampling.temperature = 0.f;
                break;
            case strategy::llama_cpp:  // llama.cpp's defaults: penalties over the last 64
                g.sampling.order = dk::sampling_order::llama_cpp;
                g.sampling.temperature = 0.8f;
                g.sampling.top_k = 40;
                g.sampling.top_p = 0.95f;
                g.sampling.min_p = 0.05f;
                g.sampling.penalties.repetition = 1.1f;
                g.sampling.penalties.repetition_scope = dk::penalty_scope::last_n;
                g.sampling.penalties.last_n = 64;
                break;
            case strategy::hf:
                g.sampling.order = dk::sampling_order::hf;
                g.sampling.temperature = 0.7f;
                g.sampling.top_p = 0.9f;
                g.sampling.penalties.repetition = 1.2f;
                break;
            case strategy::logprobs:
                g.sampling.temperature = 1.f;
                g.sampling.logprobs.top_n = 5;
                break;
            case strategy::stop_string:
                g.sampling.temperature = 0.8f;
                g.sampling.top_k = 40;
                g.sampling.min_new_tokens = std::min<std::size_t>(12, budget);
                g.stop_strings = {"."};
                break;
            case strategy::beam:
                r.beam = {.num_beams = 4,
                          .max_new_tokens = std::min<std::size_t>(budget, 64),
                          .eos_ids = stops};
                break;
            case strategy::spec_ngram:
                r.spec = {.max_new_tokens = budget,
                          .eos_ids = stops,
                          .seed = seed,
                          .sequence = i,
                          .rule = dk::verification::greedy,
                          .draft_length = 4,
                          .adaptive = true,
                          .detokenize = detok};
                r.proc = {.temperature = 0.f};
                r.ngram = {.min_n = 1, .max_n = 3};
                break;
            case strategy::spec_early_exit:
                r.spec = {.max_new_tokens = budget,
                          .eos_ids = stops,
                          .seed = seed,
                          .sequence = i,
                          .rule = dk::verification::rejection,
                          .draft_length = 3,
                          .detokenize = detok};
                r.proc = {.temperature = 0.8f, .top_k = 40};
                r.exit_layer = int(m.num_layers()) - 1;
                r.draft_opt = {.mode = dk::draft_mode::sample, .slot = 1};
                break;
        }
        r.gen = std::move(g);
        w.push_back(std::move(r));
    }
    return w;
}

// ------------------------------------------------------------------------------------------
// Runs and reports

struct summary {
    std::string mode;
    std::size_t requests = 0, tokens = 0, steps = 0, target_calls = 0, draft_calls = 0;
    std::size_t largest_batch = 0, largest_rows = 0, draft_rounds = 0, slots = 0;
    std::uint64_t forwarded = 0;
    double throughput = 0, ttft_p50 = 0, ttft_p99 = 0, tpot_p50 = 0;
    bool all_equal = true;
};

struct request_metrics {
    double ttft = 0, tpot = 0, tokens_per_s = 0;
};

request_metrics metrics_of(const dk_engine::request_record& r) {
    request_metrics m;
    const std::size_t n = r.out.tokens.size();
    m.ttft = r.first - r.arrival;
    m.tpot = n > 1 ? (r.finish - r.first) / double(n - 1) : 0;
    const double total = r.finish - r.arrival;
    m.tokens_per_s = total > 0 ? double(n) / total : 0;
    return m;
}

bool same(const dk_engine::outcome& a, const dk_engine::outcome& b) {
    return a.tokens == b.tokens && a.reason == b.reason;
}

void print_request(const dk_engine::request_record& r, bool equal_alone,
                   const dk_llama2::tokenizer& tok) {
    const request_spec& s = *r.spec;
    const auto m = metrics_of(r);
    std::printf("{\"id\":%zu,\"strategy\":\"%s\",\"arrival_step\":%zu,\"prompt_tokens\":%zu,", s.id,
                dk_engine::to_string(s.kind), s.arrival_step, s.prompt.size());
    if (r.rejected) {
        std::printf("\"error\":\"%s\"}\n", json_escape(*r.rejected).c_str());
        return;
    }
    std::printf("\"tokens\":[");
    for (std::size_t i = 0; i < r.out.tokens.size(); ++i)
        std::printf("%s%d", i ? "," : "", r.out.tokens[i]);
    // beam: the best hypothesis' text; the others: the text streamed (a stop string is cut)
    const std::string text =
        s.kind == strategy::beam ? tok.decode(r.out.tokens, s.prompt.back()) : r.out.text;
    std::printf(
        "],\"text\":\"%s\",\"stop_reason\":\"%s\",\"ttft_ms\":%.3f,\"tpot_ms\":%.3f,"
        "\"tokens_per_s\":%.1f,\"equal_alone\":%s",
        json_escape(utf8_clean(text)).c_str(), dk::to_string(r.out.reason), m.ttft * 1e3,
        m.tpot * 1e3, m.tokens_per_s, equal_alone ? "true" : "false");
    if (!r.out.top_logprobs.empty()) {
        std::printf(",\"top_logprobs\":[");
        for (std::size_t i = 0; i < r.out.top_logprobs.size(); ++i) {
            std::printf("%s[", i ? "," : "");
            for (std::size_t k = 0; k < r.out.top_logprobs[i].size(); ++k)
                std::printf("%s[%d,%.4f]", k ? "," : "", r.out.top_logprobs[i][k].token,
                            double(r.out.top_logprobs[i][k].logprob));
            std::printf("]");
        }
        std::printf("]");
    }
    std::printf("}\n");
}

void print_summary(const summary& s, std::size_t runs, bool json) {
    if (json) {
        std::printf(
            "{\"mode\":\"%s\",\"requests\":%zu,\"throughput_tok_s\":%.1f,\"ttft_p50_ms\":%.3f,"
            "\"ttft_p99_ms\":%.3f,\"tpot_p50_ms\":%.3f,\"tokens\":%zu,\"runs\":%zu,"
            "\"steps\":%zu,\"target_calls\":%zu,\"draft_calls\":%zu,\"largest_batch\":%zu,"
            "\"largest_call_positions\":%zu,\"kv_slots\":%zu,\"tokens_forwarded\":%llu,"
            "\"all_equal_alone\":%s}\n",
            s.mode.c_str(), s.requests, s.throughput, s.ttft_p50 * 1e3, s.ttft_p99 * 1e3,
            s.tpot_p50 * 1e3, s.tokens, runs, s.steps, s.target_calls, s.draft_calls,
            s.largest_batch, s.largest_rows, s.slots, (unsigned long long)s.forwarded,
            s.all_equal ? "true" : "false");
        return;
    }
    std::printf(
        "%-10s requests %zu, %zu tokens: %.0f tok/s, TTFT p50 %.2f ms p99 %.2f ms, TPOT p50 %.3f "
        "ms; %zu steps, %zu target + %zu draft calls (<= %zu per step), batch <= %zu requests / "
        "%zu positions, %zu KV slots, %llu token forwards; equal_alone: %s (medians of %zu "
        "runs)\n",
        s.mode.c_str(), s.requests, s.tokens, s.throughput, s.ttft_p50 * 1e3, s.ttft_p99 * 1e3,
        s.tpot_p50 * 1e3, s.steps, s.target_calls, s.draft_calls, s.draft_rounds, s.largest_batch,
        s.largest_rows, s.slots, (unsigned long long)s.forwarded, s.all_equal ? "all" : "NOT ALL",
        runs);
}

/// The runs of one mode: each run's medians, the last run's records.
struct mode_runs {
    summary s;
    std::vector<double> thr, p50, p99, tp50;
    std::vector<dk_engine::request_record> rec;
};

/// One run of the workload in `mode`, added to `mr`.
void run_once(dk_llama2::model& m, const std::vector<request_spec>& w,
              const std::vector<dk_engine::outcome>& alone, dk_engine::batching mode,
              const options& o, mode_runs& mr) {
    summary& s = mr.s;
    s.mode = mode == dk_engine::batching::continuous ? "continuous" : "static";
    m.clear_cache();
    dk_engine::engine e(m, {.mode = mode, .max_batch = o.max_batch});
    dk_engine::run_stats st;
    mr.rec = e.run(w, st);
    const auto& rec = mr.rec;
    std::vector<double> ttft, tpot;
    std::size_t tokens = 0, served = 0;
    for (std::size_t i = 0; i < rec.size(); ++i) {
        if (rec[i].rejected) continue;
        ++served;
        if (!same(rec[i].out, alone[i])) s.all_equal = false;
        const auto mt = metrics_of(rec[i]);
        ttft.push_back(mt.ttft);
        if (rec[i].out.tokens.size() > 1) tpot.push_back(mt.tpot);
        tokens += rec[i].out.tokens.size();
    }
    if (st.bad_status > 0 || e.slots_in_use() != 0) s.all_equal = false;
    mr.thr.push_back(st.wall > 0 ? double(tokens) / st.wall : 0);
    mr.p50.push_back(percentile(ttft, 0.5));
    mr.p99.push_back(percentile(ttft, 0.99));
    mr.tp50.push_back(percentile(tpot, 0.5));
    s.requests = served;
    s.tokens = tokens;
    s.steps = st.steps;
    s.target_calls = st.target_calls;
    s.draft_calls = st.draft_calls;
    s.largest_batch = st.largest_batch;
    s.largest_rows = st.largest_rows;
    s.draft_rounds = st.largest_draft_rounds;
    s.slots = st.slots_high_water;
    s.forwarded = st.forwarded;
    s.throughput = percentile(mr.thr, 0.5);
    s.ttft_p50 = percentile(mr.p50, 0.5);
    s.ttft_p99 = percentile(mr.p99, 0.5);
    s.tpot_p50 = percentile(mr.tp50, 0.5);
}

/// Prints the last run's requests (JSON) or the ones not equal to their run alone.
void print_requests(const mode_runs& mr, const std::vector<dk_engine::outcome>& alone,
                    const dk_llama2::tokenizer& tok, bool json) {
    for (std::size_t i = 0; i < mr.rec.size(); ++i) {
        const auto& r = mr.rec[i];
        const bool eq = !r.rejected && same(r.out, alone[i]);
        if (json)
            print_request(r, eq, tok);
        else if (!eq)
            std::printf("request %zu (%s): NOT equal to its run alone\n", r.spec->id,
                        dk_engine::to_string(r.spec->kind));
    }
}

// ------------------------------------------------------------------------------------------
// The soak

/// The soak's largest batch and beam width (they bound its KV slots).
constexpr std::size_t soak_max_batch = 12, soak_max_beams = 8;

/// A random request: any kind, random and adversarial parameters (flat or peaked rows through
/// extreme temperatures, huge top-k, tiny top-p, long prompts, prompts with invalid ids, stop
/// sequences and strings), about 1 in 8 invalid (rejected up front), about 1 in 7 cancelled.
request_spec random_request(std::mt19937_64& rng, std::size_t id, std::size_t step,
                            const dk_llama2::model& m, const dk_llama2::tokenizer& tok) {
    auto pick = [&](auto... v) {
        const std::common_type_t<decltype(v)...> a[] = {v...};
        return a[rng() % sizeof...(v)];
    };
    const std::size_t V = m.vocab_size(), T = m.max_sequence_length();
    request_spec r;
    r.id = id;
    r.kind = strategy(rng() % dk_engine::strategy_count);
    r.arrival_step = step;
    const std::size_t plen = pick(std::size_t(1), std::size_t(4), std::size_t(16), std::size_t(64),
                                  std::size_t(T / 2), std::size_t(T - 4));
    r.prompt.push_back(dk_llama2::bos_id);
    while (r.prompt.size() < plen) r.prompt.push_back(token_id(3 + rng() % (V - 3)));
    if (rng() % 40 == 0) r.prompt[rng() % r.prompt.size()] = token_id(V + rng() % 5);  // bad id
    if (rng() % 60 == 0) r.prompt.clear();                                             // empty
    const std::size_t budget = pick(std::size_t(1), std::size_t(4), std::size_t(16),
                                    std::size_t(48), std::size_t(128), std::size_t(T));
    if (rng() % 7 == 0) r.cancel_after = 1 + rng() % 12;
    const auto detok = detokenizer(tok);
    const bool invalid = rng() % 8 == 0;
    dk::generate_params g{.max_new_tokens = budget, .eos_ids = stops, .sequence = id};
    auto& sp = g.sampling;
    sp.seed = rng();
    sp.order =
        pick(dk::sampling_order::hf, dk::sampling_order::llama_cpp, dk::sampling_order::vllm);
    sp.temperature = pick(0.f, 1e-4f, 0.7f, 1.f, 5.f, 100.f, 1e4f);
    sp.top_k = pick(0, 1, 40, 1 << 20);
    sp.top_p = pick(1.f, 0.9f, 1e-6f, 0.f);
    sp.min_p = pick(0.f, 0.05f, 0.99f);
    sp.typical_p = pick(1.f, 1.f, 0.5f);
    sp.penalties.repetition = pick(1.f, 1.2f, 100.f);
    sp.penalties.frequency = pick(0.f, 0.5f);
    sp.no_repeat_ngram_size = pick(std::size_t(0), std::size_t(0), std::size_t(3));
    sp.mirostat = rng() % 10 == 0;
    sp.min_new_tokens = pick(std::size_t(0), std::size_t(0), std::size_t(8), budget);
    sp.logprobs.top_n = pick(std::size_t(0), std::size_t(5), std::size_t(1000));
    if (rng() % 3 == 0) g.stop_sequences = {{token_id(3 + rng() % 40)}, {13, 14}};
    if (rng() % 3 == 0 || r.kind == strategy::stop_string) {
        g.stop_strings = {
            pick(std::string("."), std::string(" the"), std::string("\xC3\xA9"), std::string("a"))};
        g.detokenize = detok;
    } else if (rng() % 2 == 0) {
        g.detokenize = detok;
    }
    if (invalid) {
        switch (rng() % 6) {
            case 0:
                sp.top_p = 2.f;
                break;
            case 1:
                sp.temperature = std::numeric_limits<float>::quiet_NaN();
                break;
            case 2:
                g.max_new_tokens = 0;
                break;
            case 3:
                g.stop_strings = {""};
                g.detokenize = detok;
                break;
            case 4:
                g.stop_strings = {"x"};
                g.detokenize = {};
                break;
            default:
                sp.penalties.repetition = -1.f;
        }
    }
    switch (r.kind) {
        case strategy::beam:
            r.beam = {
                .num_beams = pick(std::size_t(1), std::size_t(2), std::size_t(4), soak_max_beams),
                .max_new_tokens = std::max<std::size_t>(1, std::min<std::size_t>(budget, 64)),
                .length_penalty = pick(1.f, 0.f, -2.f),
                .stopping = pick(dk::early_stopping::first_n, dk::early_stopping::heuristic,
                                 dk::early_stopping::never),
                .eos_ids = stops,
                .stop_sequences = g.stop_sequences,
                .stop_strings = g.stop_strings,
                .detokenize = g.detokenize};
            r.beam.num_return = 1 + rng() % r.beam.num_beams;
            if (rng() % 4 == 0) {
                r.beam.stochastic = true;
                r.beam.temperature = pick(0.5f, 1.f, 50.f);
                r.beam.seed = rng();
            }
            if (invalid) r.beam.num_return = r.beam.num_beams + 1;
            break;
        case strategy::spec_ngram:
        case strategy::spec_early_exit:
            r.spec = {.max_new_tokens = budget,
                      .eos_ids = stops,
                      .stop_sequences = g.stop_sequences,
                      .seed = rng(),
                      .sequence = id,
                      .rule = pick(dk::verification::greedy, dk::verification::rejection,
                                   dk::verification::typical),
                      .draft_length = pick(std::size_t(1), std::size_t(4), std::size_t(8)),
                      .adaptive = rng() % 2 == 0,
                      .stop_strings = g.stop_strings,
                      .detokenize = g.detokenize};
            r.proc = {.temperature = pick(0.f, 0.8f, 100.f),
                      .top_k = pick(std::size_t(0), std::size_t(40), std::size_t(1) << 20),
                      .top_p = pick(1.f, 0.5f, 1e-6f)};
            r.ngram = {.min_n = 1, .max_n = pick(std::size_t(1), std::size_t(3))};
            r.exit_layer = int(1 + rng() % m.num_layers());
            r.draft_opt = {.mode = pick(dk::draft_mode::greedy, dk::draft_mode::sample),
                           .min_confidence = pick(0.f, 0.3f),
                           .slot = 1};
            if (invalid) r.spec.draft_length = r.spec.max_draft_length + 1;
            break;
        default:
            break;
    }
    r.gen = std::move(g);
    return r;
}

/// Step times in a fixed histogram (1% wide log buckets from 1 us): O(1) memory however long
/// the soak runs, so the RSS it reports is the engine's.
class time_histogram {
public:
    void add(double seconds) {
        const double x = std::max(seconds, 1e-6) / 1e-6;
        const auto b = std::size_t(std::log(x) / std::log(1.01));
        ++counts_[std::min(b, counts_.size() - 1)];
        ++n_;
    }
    double median() const {
        std::size_t seen = 0;
        for (std::size_t b = 0; b < counts_.size(); ++b)
            if ((seen += counts_[b]) * 2 >= n_ && n_ > 0)
                return 1e-6 * std::pow(1.01, double(b) + 0.5);
        return 0;
    }

private:
    std::vector<std::size_t> counts_ = std::vector<std::size_t>(2400, 0);  // up to ~23 s
    std::size_t n_ = 0;
};

struct soak_report {
    std::size_t rounds = 0, requests = 0, served = 0, rejected = 0, cancelled = 0, tokens = 0;
    std::size_t checked = 0, findings = 0;
    time_histogram steps;
    double slowest_step = 0;
};

/// Touches every KV cache and the largest scratch the soak can use (soak_max_batch requests of
/// soak_max_beams slots, a long prompt), so that RSS after warm-up measures growth, not first use.
void prewarm(dk_llama2::model& m) {
    const std::size_t slots = soak_max_batch * soak_max_beams + 2;
    std::vector<token_id> longp(m.max_sequence_length() / 2 + 8, 3);
    longp[0] = dk_llama2::bos_id;
    std::vector<dk::sequence_request> reqs;
    for (std::size_t s = 0; s < slots; ++s)
        reqs.push_back({std::span<const token_id>(longp).first(s == 0 ? longp.size() : 2), 1,
                        std::uint32_t(s)});
    std::vector<float> out(reqs.size() * m.vocab_size());
    m.logits(reqs, out);
    m.clear_cache();
}

int soak(dk_llama2::model& m, const dk_llama2::tokenizer& tok, const options& o) {
    std::mt19937_64 rng(o.seed);
    soak_report rep;
    prewarm(m);
    const auto t0 = clock_type::now();
    auto elapsed = [&] { return std::chrono::duration<double>(clock_type::now() - t0).count(); };
    const double warm_up = std::min(o.soak_seconds * 0.2, 60.0);
    std::size_t rss_warm = 0, rss_end = 0, rss_max = 0, id = 0;
    double next_report = 0;
    std::printf("soak: %.0f s, seed %llu, warm-up %.0f s\n", o.soak_seconds,
                (unsigned long long)o.seed, warm_up);
    while (elapsed() < o.soak_seconds || rep.rounds == 0) {
        std::vector<request_spec> w;
        std::size_t step = 0;
        const std::size_t n = 8 + rng() % 24;
        for (std::size_t i = 0; i < n; ++i) {
            w.push_back(random_request(rng, id++, step, m, tok));
            step += rng() % 4;
        }
        const std::size_t batch = 1 + rng() % soak_max_batch;
        dk_engine::engine e(m, {.mode = rng() % 4 ? dk_engine::batching::continuous
                                                  : dk_engine::batching::static_batches,
                                .max_batch = batch});
        dk_engine::run_stats st;
        const auto rec = e.run(w, st);
        ++rep.rounds;
        rep.requests += rec.size();
        auto finding = [&](const char* what, const request_spec* s) {
            ++rep.findings;
            if (rep.findings <= 20)
                std::printf("soak: FINDING: %s (request %zu, %s)\n", what, s ? s->id : 0,
                            s ? dk_engine::to_string(s->kind) : "-");
        };
        if (st.bad_status) finding("a stepper advance did not return ok", nullptr);
        if (e.slots_in_use() != 0) finding("slots not given back after the run", nullptr);
        for (const auto& r : rec) {
            const request_spec& s = *r.spec;
            const bool valid = !s.check(m).has_value();
            if (r.rejected) {
                ++rep.rejected;
                if (valid) finding("a valid request was rejected", &s);
                continue;
            }
            ++rep.served;
            rep.tokens += r.out.tokens.size();
            if (!(r.first >= r.arrival && r.finish >= r.first)) finding("times out of order", &s);
            // Replay alone: equal, or (cancelled) a prefix of the run alone.
            const auto live = dk_engine::make_live(s, m);
            const auto alone = live->run_alone(m);
            ++rep.checked;
            if (r.cancelled) {
                ++rep.cancelled;
                if (r.out.reason != dk::stop_reason::cancelled && !same(r.out, alone))
                    finding("a cancelled request that ended first differs alone", &s);
                if (s.kind != strategy::beam &&
                    (r.out.tokens.size() > alone.tokens.size() ||
                     !std::equal(r.out.tokens.begin(), r.out.tokens.end(), alone.tokens.begin())))
                    finding("a cancelled request's tokens are not a prefix of its run alone", &s);
            } else if (!same(r.out, alone)) {
                finding("tokens differ from the request run alone", &s);
            }
        }
        for (double d : st.step_seconds) {
            rep.steps.add(d);
            rep.slowest_step = std::max(rep.slowest_step, d);
        }
        const std::size_t rss = rss_bytes();
        rss_max = std::max(rss_max, rss);
        if (rss_warm == 0 && elapsed() >= warm_up) rss_warm = rss;
        rss_end = rss;
        if (elapsed() >= next_report) {
            std::printf(
                "soak: t=%.0f s rounds=%zu requests=%zu tokens=%zu findings=%zu "
                "rss=%.1f MB\n",
                elapsed(), rep.rounds, rep.requests, rep.tokens, rep.findings,
                double(rss) / 1048576.0);
            std::fflush(stdout);
            next_report += 10;
        }
    }
    if (rss_warm == 0) rss_warm = rss_end;
    const double median = rep.steps.median();
    const double growth = rss_warm ? double(rss_end) / double(rss_warm) : 0;
    std::printf(
        "soak: done in %.0f s: %zu rounds, %zu requests (%zu served, %zu rejected as invalid, "
        "%zu cancelled), %zu tokens, %zu replayed alone, findings %zu; steps: median %.3f ms, "
        "slowest %.3f ms (%.0fx); RSS after warm-up %.1f MB, at the end %.1f MB (%.3fx), max "
        "%.1f MB\n",
        elapsed(), rep.rounds, rep.requests, rep.served, rep.rejected, rep.cancelled, rep.tokens,
        rep.checked, rep.findings, median * 1e3, rep.slowest_step * 1e3,
        median > 0 ? rep.slowest_step / median : 0, double(rss_warm) / 1048576.0,
        double(rss_end) / 1048576.0, growth, double(rss_max) / 1048576.0);
    if (rep.findings) return 1;
    if (o.rss_limit > 0 && growth > o.rss_limit) {
        std::printf("soak: FINDING: RSS grew %.3fx after warm-up (limit %.2fx)\n", growth,
                    o.rss_limit);
        return 1;
    }
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    options o;
    if (int rc = parse_args(argc, argv, o)) return rc == 2 ? 0 : 2;
    std::string model_path = o.model;
    if (model_path.empty()) model_path = dk_llama2::default_models_dir() + "/stories260K.bin";
    if (!file_exists(model_path)) {
        std::fprintf(stderr,
                     "decodekit-engine: no model at %s (pass --model PATH or set "
                     "DECODEKIT_MODELS_DIR)\n",
                     model_path.c_str());
        return 2;
    }
    auto ck = dk_llama2::load_checkpoint(model_path);
    if (!ck) {
        std::fprintf(stderr, "decodekit-engine: %s\n", ck.error().c_str());
        return 2;
    }
    const int V = ck->cfg.vocab_size;
    std::string tok_path = o.tokenizer;
    if (tok_path.empty()) {
        const auto slash = model_path.find_last_of('/');
        const std::string dir = slash == std::string::npos ? "." : model_path.substr(0, slash);
        tok_path = dir + (V == 32000 ? "/tokenizer.bin" : "/tok" + std::to_string(V) + ".bin");
    }
    auto loaded = dk_llama2::tokenizer::load(tok_path, V);
    if (!loaded) {
        std::fprintf(stderr, "decodekit-engine: %s\n", loaded.error().c_str());
        return 2;
    }
    const dk_llama2::tokenizer* tok = &loaded.value();
    dk_llama2::model m(std::move(ck.value()));
    if (o.soak_seconds > 0) return soak(m, *tok, o);

    const auto w = make_workload(o, m, *tok);
    // Each request alone through its driver (untimed): the reference of equal_alone.
    std::vector<dk_engine::outcome> alone;
    for (const auto& s : w) {
        if (s.check(m)) {
            alone.emplace_back();
            continue;
        }
        m.clear_cache();
        alone.push_back(dk_engine::make_live(s, m)->run_alone(m));
    }
    // The modes' runs alternate (continuous, static, continuous, ...) so that the machine's
    // load drifts over both alike; the summaries give the medians over the runs.
    std::vector<dk_engine::batching> modes;
    if (o.mode != "static") modes.push_back(dk_engine::batching::continuous);
    if (o.mode != "continuous") modes.push_back(dk_engine::batching::static_batches);
    std::vector<mode_runs> runs(modes.size());
    for (std::size_t r = 0; r < o.runs; ++r)
        for (std::size_t k = 0; k < modes.size(); ++k) run_once(m, w, alone, modes[k], o, runs[k]);
    bool ok = true;
    for (const auto& mr : runs) print_requests(mr, alone, *tok, o.json);
    for (const auto& mr : runs) {
        print_summary(mr.s, o.runs, o.json);
        ok = ok && mr.s.all_equal;
    }
    if (!m.last_error().empty())
        std::fprintf(stderr, "decodekit-engine: backend error: %s\n", m.last_error().c_str());
    return ok ? 0 : 1;
}
