// decodekit-mtp-dump: the self-distillation data of the MTP module (examples/mtp/train_mtp.py).
// Generates stories with the reference backend itself from the training prompts (greedy, and
// sampled at each temperature with fixed seeds), then dumps, for every position of every story,
// the token, the main model's final hidden state (what logits_and_hidden returns: the input of
// MTP module 1) and its next-token logits (the soft targets). Refuses training prompts that share
// a token prefix with a held-out prompt (--exclude), and reports how much of the held-out
// prompts' greedy continuations the training stories contain anyway (16-gram overlap).
//
// Dump format (little-endian; an intermediate file, not shipped): "DKMTPDMP", u32 version (1),
// u32 dim, u32 vocab, u32 stories, u64 positions; then per story: u32 length, u32 prompt length
// (BOS included), u32 temperature x 1000 (0 = greedy), i32 tokens[length],
// f32 hidden[length][dim], f32 logits[length][vocab] (row p: the logits after tokens 0..p).
#include <decodekit/decodekit.hpp>
#include <llama2/llama2.hpp>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <set>
#include <string>
#include <vector>

namespace dk = decodekit;
using dk::token_id;

namespace {

struct options {
    std::string model, tokenizer, prompts, exclude, out;
    std::size_t samples = 4;  // sampled stories per prompt and temperature
    std::vector<float> temperatures = {0.8f, 1.0f};
    std::size_t max_tokens = 256;
    std::uint64_t seed = 1;
};

void usage(std::FILE* f) {
    std::fputs(
        "usage: decodekit-mtp-dump --prompts FILE --exclude FILE --out FILE [options]\n"
        "  --prompts FILE       training prompts, one per line ('#' lines and blank lines "
        "ignored)\n"
        "  --exclude FILE       held-out prompts (same format): no training prompt may share a "
        "token\n"
        "                       prefix with one\n"
        "  --out FILE           the dump (format in the source's header comment)\n"
        "  --model PATH         llama2.c checkpoint (default: stories260K.bin of the models "
        "folder)\n"
        "  --tokenizer PATH     its tokenizer (default: tok512.bin beside the model)\n"
        "  --samples N          sampled stories per prompt and temperature (default 4)\n"
        "  --temperatures LIST  comma-separated sampling temperatures (default 0.8,1.0)\n"
        "  --max-tokens N       new tokens per story at most (default 256)\n"
        "  --seed N             sampling seed (default 1); story s of prompt p at temperature t\n"
        "                       uses RNG sequence (p * temperatures + t) * samples + s\n",
        f);
}

bool read_prompts(const std::string& path, std::vector<std::string>& out) {
    auto bytes = dk_llama2::read_file_bytes(path);
    if (!bytes) {
        std::fprintf(stderr, "decodekit-mtp-dump: %s\n", bytes.error().c_str());
        return false;
    }
    std::string text(bytes->begin(), bytes->end()), line;
    for (std::size_t i = 0; i <= text.size(); ++i) {
        if (i < text.size() && text[i] != '\n') {
            line += text[i];
            continue;
        }
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if (!line.empty() && line[0] != '#') out.push_back(line);
        line.clear();
    }
    return true;
}

bool parse_args(int argc, char** argv, options& o) {
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--help" || a == "-h") {
            usage(stdout);
            std::exit(0);
        }
        if (i + 1 >= argc) {
            std::fprintf(stderr, "decodekit-mtp-dump: %s needs a value\n", a.c_str());
            return false;
        }
        const std::string v = argv[++i];
        char* end = nullptr;
        if (a == "--model") {
            o.model = v;
        } else if (a == "--tokenizer") {
            o.tokenizer = v;
        } else if (a == "--prompts") {
            o.prompts = v;
        } else if (a == "--exclude") {
            o.exclude = v;
        } else if (a == "--out") {
            o.out = v;
        } else if (a == "--samples" || a == "--max-tokens" || a == "--seed") {
            const unsigned long long n = std::strtoull(v.c_str(), &end, 10);
            if (end == v.c_str() || *end != '\0' || (a != "--seed" && n > 100000)) {
                std::fprintf(stderr, "decodekit-mtp-dump: bad value '%s' for %s\n", v.c_str(),
                             a.c_str());
                return false;
            }
            (a == "--samples" ? o.samples : a == "--max-tokens" ? o.max_tokens : o.seed) = n;
        } else if (a == "--temperatures") {
            o.temperatures.clear();
            const char* s = v.c_str();
            for (;;) {
                const float t = std::strtof(s, &end);
                if (end == s || !(t > 0.f && t <= 10.f)) {
                    std::fprintf(stderr, "decodekit-mtp-dump: bad temperature list '%s'\n",
                                 v.c_str());
                    return false;
                }
                o.temperatures.push_back(t);
                if (*end == '\0') break;
                if (*end != ',') {
                    std::fprintf(stderr, "decodekit-mtp-dump: bad temperature list '%s'\n",
                                 v.c_str());
                    return false;
                }
                s = end + 1;
            }
        } else {
            std::fprintf(stderr, "decodekit-mtp-dump: unknown option %s (see --help)\n", a.c_str());
            return false;
        }
    }
    if (o.prompts.empty() || o.exclude.empty() || o.out.empty()) {
        std::fprintf(stderr, "decodekit-mtp-dump: --prompts, --exclude and --out are required\n");
        return false;
    }
    return true;
}

bool is_prefix(const std::vector<token_id>& a, const std::vector<token_id>& b) {
    return a.size() <= b.size() && std::equal(a.begin(), a.end(), b.begin());
}

template <class T>
void put(std::vector<unsigned char>& buf, const T* p, std::size_t n) {
    const auto* b = reinterpret_cast<const unsigned char*>(p);
    buf.insert(buf.end(), b, b + n * sizeof(T));
}
void put_u32(std::vector<unsigned char>& buf, std::uint32_t v) { put(buf, &v, 1); }

}  // namespace

int main(int argc, char** argv) {
    options o;
    if (!parse_args(argc, argv, o)) return 2;
    const std::string dir = dk_llama2::default_models_dir();
    if (o.model.empty()) o.model = dir + "/stories260K.bin";
    auto ck = dk_llama2::load_checkpoint(o.model);
    if (!ck) {
        std::fprintf(stderr, "decodekit-mtp-dump: %s\n", ck.error().c_str());
        return 1;
    }
    const int V = ck->cfg.vocab_size;
    if (o.tokenizer.empty()) {
        const auto slash = o.model.find_last_of('/');
        o.tokenizer = (slash == std::string::npos ? std::string(".") : o.model.substr(0, slash)) +
                      "/tok" + std::to_string(V) + ".bin";
    }
    auto tok = dk_llama2::tokenizer::load(o.tokenizer, V);
    if (!tok) {
        std::fprintf(stderr, "decodekit-mtp-dump: %s\n", tok.error().c_str());
        return 1;
    }
    std::vector<std::string> train_text, eval_text;
    if (!read_prompts(o.prompts, train_text) || !read_prompts(o.exclude, eval_text)) return 1;
    std::vector<std::vector<token_id>> train, held_out;
    for (const auto& p : eval_text) held_out.push_back(tok->encode(p, true, false));
    for (const auto& p : train_text) {
        auto t = tok->encode(p, true, false);
        if (t.size() < 2) {
            std::fprintf(stderr,
                         "decodekit-mtp-dump: empty training prompt: greedy decoding from BOS "
                         "alone writes the held-out \"Once upon a time\" story\n");
            return 1;
        }
        for (std::size_t e = 0; e < held_out.size(); ++e) {
            if (is_prefix(held_out[e], t) || is_prefix(t, held_out[e])) {
                std::fprintf(stderr,
                             "decodekit-mtp-dump: training prompt \"%s\" shares a token prefix "
                             "with held-out prompt \"%s\"\n",
                             p.c_str(), eval_text[e].c_str());
                return 1;
            }
        }
        train.push_back(std::move(t));
    }

    dk_llama2::model m(std::move(ck.value()));
    const std::size_t D = m.hidden_size();
    std::FILE* f = std::fopen(o.out.c_str(), "wb");
    if (!f) {
        std::fprintf(stderr, "decodekit-mtp-dump: cannot write '%s'\n", o.out.c_str());
        return 1;
    }
    std::vector<unsigned char> buf;
    put(buf, "DKMTPDMP", 8);
    put_u32(buf, 1);
    put_u32(buf, std::uint32_t(D));
    put_u32(buf, std::uint32_t(V));
    put_u32(buf, 0);  // stories, patched at the end
    const std::uint64_t zero = 0;
    put(buf, &zero, 1);  // positions, patched at the end
    std::fwrite(buf.data(), 1, buf.size(), f);

    std::uint32_t stories = 0;
    std::uint64_t positions = 0, generated = 0;
    std::set<std::vector<token_id>> train_grams;  // 16-grams of the training stories
    constexpr std::size_t gram = 16;
    std::vector<float> logits, hidden;
    auto dump_story = [&](const std::vector<token_id>& prompt, float temperature,
                          std::uint64_t sequence) -> bool {
        dk::generate_params gp;
        gp.max_new_tokens = std::min(o.max_tokens, m.max_sequence_length() - prompt.size());
        gp.eos_ids = {dk_llama2::bos_id, dk_llama2::eos_id};
        gp.sampling.temperature = temperature;
        gp.sampling.seed = o.seed;
        gp.sequence = sequence;
        const auto res = dk::generate(m, prompt, gp);
        std::vector<token_id> seq = prompt;
        seq.insert(seq.end(), res.tokens.begin(), res.tokens.end());
        const std::size_t n = seq.size();
        logits.resize(n * std::size_t(V));
        hidden.resize(n * D);
        const dk::sequence_request all{seq, n, 0};
        m.logits_and_hidden(std::span(&all, 1), logits, hidden);
        if (!m.last_error().empty()) {
            std::fprintf(stderr, "decodekit-mtp-dump: %s\n", m.last_error().c_str());
            return false;
        }
        buf.clear();
        put_u32(buf, std::uint32_t(n));
        put_u32(buf, std::uint32_t(prompt.size()));
        put_u32(buf, std::uint32_t(temperature * 1000.f + 0.5f));
        put(buf, seq.data(), n);
        put(buf, hidden.data(), hidden.size());
        put(buf, logits.data(), logits.size());
        if (std::fwrite(buf.data(), 1, buf.size(), f) != buf.size()) {
            std::fprintf(stderr, "decodekit-mtp-dump: write error on '%s'\n", o.out.c_str());
            return false;
        }
        for (std::size_t i = 0; i + gram <= n; ++i)
            train_grams.emplace(seq.begin() + std::ptrdiff_t(i),
                                seq.begin() + std::ptrdiff_t(i + gram));
        ++stories;
        positions += n;
        generated += res.tokens.size();
        return true;
    };
    const std::size_t T = o.temperatures.size();
    for (std::size_t p = 0; p < train.size(); ++p) {
        if (!dump_story(train[p], 0.f, 0)) return 1;
        for (std::size_t t = 0; t < T; ++t)
            for (std::size_t s = 0; s < o.samples; ++s)
                if (!dump_story(train[p], o.temperatures[t], (p * T + t) * o.samples + s)) return 1;
    }
    // Patch the counts.
    std::fseek(f, 20, SEEK_SET);
    std::fwrite(&stories, 4, 1, f);
    std::fwrite(&positions, 8, 1, f);
    if (std::fclose(f) != 0) {
        std::fprintf(stderr, "decodekit-mtp-dump: write error on '%s'\n", o.out.c_str());
        return 1;
    }

    // Leakage check: the held-out prompts' greedy continuations against the training stories.
    std::size_t grams = 0, seen = 0;
    for (const auto& prompt : held_out) {
        dk::generate_params gp;
        gp.max_new_tokens = std::min<std::size_t>(160, m.max_sequence_length() - prompt.size());
        gp.eos_ids = {dk_llama2::bos_id, dk_llama2::eos_id};
        gp.sampling.temperature = 0.f;
        const auto res = dk::generate(m, prompt, gp);
        std::vector<token_id> seq = prompt;
        seq.insert(seq.end(), res.tokens.begin(), res.tokens.end());
        for (std::size_t i = prompt.size() > gram ? prompt.size() - gram : 0;
             i + gram <= seq.size(); ++i, ++grams)
            seen += train_grams.count(std::vector<token_id>(
                seq.begin() + std::ptrdiff_t(i), seq.begin() + std::ptrdiff_t(i + gram)));
    }
    std::printf(
        "decodekit-mtp-dump: %u stories (%zu prompts x (1 greedy + %zu temperatures x %zu "
        "samples)), %llu positions (%llu generated tokens), %.1f MB -> %s\n"
        "held-out check: %zu of %zu 16-grams of the %zu held-out prompts' greedy continuations "
        "(160 tokens) occur in the training stories (%.1f%%)\n",
        stories, train.size(), T, o.samples, (unsigned long long)positions,
        (unsigned long long)generated,
        double(32 + stories * 12 + positions * (4 + 4 * (D + std::size_t(V)))) / 1e6, o.out.c_str(),
        seen, grams, held_out.size(), grams ? 100.0 * double(seen) / double(grams) : 0.0);
    return 0;
}
