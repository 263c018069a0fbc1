#pragma once
/// \file llama2/tokenizer.hpp
/// The llama2.c tokenizer format (tok512.bin, tokenizer.bin) and run.c's encode/decode:
/// encode prepends the dummy space " " to non-empty text, looks each UTF-8 code point up
/// (falling back to its bytes, id = byte + 3), then repeatedly merges the adjacent pair whose
/// concatenation is the vocabulary entry with the best score. decode strips the leading space
/// of the piece after BOS and turns `<0xXX>` pieces into that byte. BOS = 1, EOS = 2.

#include "checkpoint.hpp"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace dk_llama2 {

inline constexpr std::int32_t bos_id = 1;  ///< "\n<s>\n"; run.c also stops generating on it
inline constexpr std::int32_t eos_id = 2;  ///< "\n</s>\n"

/// A parsed tokenizer: pieces, their merge scores, and a lookup table.
class tokenizer {
public:
    /// Parses the llama2.c tokenizer format for `vocab_size` entries (the size comes from the
    /// model header). Fails on truncation, negative/oversized lengths or trailing bytes.
    static result<tokenizer> parse(std::span<const unsigned char> bytes, int vocab_size) {
        using R = result<tokenizer>;
        if (vocab_size < 3 || vocab_size > max_vocab)
            return R::failure("llama2 tokenizer: vocab_size " + std::to_string(vocab_size) +
                              " must be in [3, 4194304]");
        if (bytes.size() < 4) return R::failure("llama2 tokenizer: truncated header");
        std::int32_t max_len = 0;
        std::memcpy(&max_len, bytes.data(), 4);
        if (max_len <= 0 || max_len > (1 << 16))
            return R::failure("llama2 tokenizer: max_token_length " + std::to_string(max_len) +
                              " must be in [1, 65536]");
        // Every entry takes at least 8 bytes (score, length): a vocab_size the file cannot hold
        // is rejected before anything is allocated for it.
        if ((bytes.size() - 4) / 8 < std::size_t(vocab_size))
            return R::failure("llama2 tokenizer: truncated: " + std::to_string(vocab_size) +
                              " entries need at least " +
                              std::to_string(4 + 8 * std::size_t(vocab_size)) +
                              " bytes, the file has " + std::to_string(bytes.size()));
        tokenizer t;
        t.max_token_length_ = max_len;
        t.pieces_.reserve(std::size_t(vocab_size));  // <= (file size - 4) / 8 entries
        t.scores_.reserve(std::size_t(vocab_size));
        std::size_t at = 4;
        for (int i = 0; i < vocab_size; ++i) {
            if (bytes.size() - at < 8)
                return R::failure("llama2 tokenizer: truncated at entry " + std::to_string(i) +
                                  " of " + std::to_string(vocab_size));
            float score;
            std::int32_t len;
            std::memcpy(&score, bytes.data() + at, 4);
            std::memcpy(&len, bytes.data() + at + 4, 4);
            at += 8;
            if (len < 0 || len > max_len)
                return R::failure("llama2 tokenizer: entry " + std::to_string(i) + " has length " +
                                  std::to_string(len) + ", must be in [0, max_token_length = " +
                                  std::to_string(max_len) + "]");
            if (std::size_t(len) > bytes.size() - at)
                return R::failure("llama2 tokenizer: truncated in the text of entry " +
                                  std::to_string(i));
            if (!(score == score))
                return R::failure("llama2 tokenizer: NaN score at entry " + std::to_string(i));
            t.pieces_.emplace_back(reinterpret_cast<const char*>(bytes.data() + at),
                                   std::size_t(len));
            t.scores_.push_back(score);
            at += std::size_t(len);
        }
        if (at != bytes.size())
            return R::failure("llama2 tokenizer: " + std::to_string(bytes.size() - at) +
                              " trailing bytes after " + std::to_string(vocab_size) +
                              " entries (wrong vocab_size for this file?)");
        t.lookup_.reserve(t.pieces_.size() * 2);
        for (std::size_t i = 0; i < t.pieces_.size(); ++i)
            t.lookup_.emplace(t.pieces_[i], std::int32_t(i));
        return t;
    }

    /// Loads a tokenizer file. See parse().
    static result<tokenizer> load(const std::string& path, int vocab_size) {
        auto bytes = read_file_bytes(path);
        if (!bytes) return result<tokenizer>::failure(bytes.error());
        auto t = parse(bytes.value(), vocab_size);
        if (!t) return result<tokenizer>::failure(t.error() + " ('" + path + "')");
        return t;
    }

    /// A byte-level tokenizer for random-weight models: specials, the 256 byte tokens, printable
    /// ASCII characters, then common English pieces (scores decreasing) up to `vocab_size`
    /// entries (400 holds them all).
    /// \pre vocab_size >= 259
    static tokenizer synthetic(int vocab_size) {
        static constexpr const char* common[] = {
            " t",   "he",    " a",   "in",     " s",   "er",   " the", "an",  "ed",   "nd",
            " w",   "ou",    " b",   "is",     " h",   "it",   "on",   " o",  "ing",  " f",
            "at",   " m",    "en",   "es",     " c",   "ll",   " d",   "ar",  " l",   "or",
            " p",   "ay",    " and", " to",    " was", " on",  " in",  " he", " she", " big",
            " day", " Lily", " Tom", " happy", " saw", " play"};
        tokenizer t;
        t.pieces_ = {"<unk>", "\n<s>\n", "\n</s>\n"};
        t.scores_ = {0.f, 0.f, 0.f};
        for (int b = 0; b < 256; ++b) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "<0x%02X>", b);
            t.pieces_.emplace_back(buf);
            t.scores_.push_back(0.f);
        }
        for (int ch = 32; ch < 127 && int(t.pieces_.size()) < vocab_size; ++ch) {
            t.pieces_.emplace_back(1, char(ch));  // printable ASCII as pieces, so merges apply
            t.scores_.push_back(-1000.f);
        }
        for (int i = int(t.pieces_.size()), j = 0; i < vocab_size; ++i, ++j) {
            const std::size_t n = sizeof common / sizeof common[0];
            t.pieces_.emplace_back(std::size_t(j) < n ? std::string(common[j])
                                                      : "<unused" + std::to_string(j) + ">");
            t.scores_.push_back(-float(j));
        }
        t.max_token_length_ = 16;
        for (std::size_t i = 0; i < t.pieces_.size(); ++i)
            t.lookup_.emplace(t.pieces_[i], std::int32_t(i));
        return t;
    }

    /// Number of entries.
    int vocab_size() const noexcept { return int(pieces_.size()); }
    /// The piece text of `id` (raw, as stored). \pre 0 <= id < vocab_size()
    std::string_view piece(std::int32_t id) const noexcept { return pieces_[std::size_t(id)]; }
    /// The merge score of `id`.
    float score(std::int32_t id) const noexcept { return scores_[std::size_t(id)]; }
    /// The id of piece `s`, or -1 (the lowest id when a piece occurs twice).
    std::int32_t find(std::string_view s) const {
        auto it = lookup_.find(std::string(s));
        return it == lookup_.end() ? -1 : it->second;
    }

    /// Encodes `text` like run.c's encode(): optional BOS, dummy space prefix when the text is
    /// non-empty, code points with byte fallback, then best-score pair merges; optional EOS.
    std::vector<std::int32_t> encode(std::string_view text, bool bos = true,
                                     bool eos = false) const {
        std::vector<std::int32_t> tokens;
        tokens.reserve(text.size() + 3);
        if (bos) tokens.push_back(bos_id);
        if (!text.empty()) {
            // run.c pushes str_lookup(" ") unchecked; every llama2.c vocabulary has " ".
            const std::int32_t dummy = find(" ");
            if (dummy >= 0) tokens.push_back(dummy);
        }
        std::string buf;
        for (std::size_t i = 0; i < text.size(); ++i) {
            const unsigned char c = static_cast<unsigned char>(text[i]);
            if ((c & 0xC0) != 0x80) buf.clear();  // a leading byte starts a new code point
            buf.push_back(char(c));
            const bool next_is_continuation =
                i + 1 < text.size() && (static_cast<unsigned char>(text[i + 1]) & 0xC0) == 0x80;
            if (next_is_continuation && buf.size() < 4) continue;
            const std::int32_t id = find(buf);
            if (id >= 0) {
                tokens.push_back(id);
            } else {
                for (char b : buf) {
                    const std::int32_t byte_id = std::int32_t(static_cast<unsigned char>(b)) + 3;
                    if (byte_id < vocab_size()) tokens.push_back(byte_id);
                }
            }
            buf.clear();
        }
        // Merge the best-scoring adjacent pair until none merges.
        std::string pair;
        for (;;) {
            float best_score = -1e10f;
            std::int32_t best_id = -1;
            std::size_t best_idx = 0;
            for (std::size_t i = 0; i + 1 < tokens.size(); ++i) {
                pair.assign(piece(tokens[i]));
                pair += piece(tokens[i + 1]);
                const std::int32_t id = find(pair);
                if (id >= 0 && scores_[std::size_t(id)] > best_score) {
                    best_score = scores_[std::size_t(id)];
                    best_id = id;
                    best_idx = i;
                }
            }
            if (best_id < 0) break;
            tokens[best_idx] = best_id;
            tokens.erase(tokens.begin() + std::ptrdiff_t(best_idx) + 1);
        }
        if (eos) tokens.push_back(eos_id);
        return tokens;
    }

    /// The text of `token` following `prev` (run.c decode): the leading space is stripped after
    /// BOS, `<0xXX>` pieces become that raw byte. Out-of-range ids decode to "".
    std::string decode(std::int32_t prev, std::int32_t token) const {
        if (token < 0 || token >= vocab_size()) return {};
        std::string_view p = piece(token);
        if (prev == bos_id && !p.empty() && p[0] == ' ') p.remove_prefix(1);
        if (p.size() == 6 && p[0] == '<' && p[1] == '0' && p[2] == 'x' && p[5] == '>') {
            int hi = hex(p[3]), lo = hex(p[4]);
            if (hi >= 0 && lo >= 0) return std::string(1, char(hi * 16 + lo));
        }
        return std::string(p);
    }

    /// The text of a token sequence, each token decoded after its predecessor (the first after
    /// `prev`, BOS by default, so a leading space is stripped as run.c does).
    std::string decode(std::span<const std::int32_t> tokens, std::int32_t prev = bos_id) const {
        std::string s;
        for (std::int32_t t : tokens) {
            s += decode(prev, t);
            prev = t;
        }
        return s;
    }

private:
    static int hex(char c) noexcept {
        if (c >= '0' && c <= '9') return c - '0';
        if (c >= 'A' && c <= 'F') return c - 'A' + 10;
        if (c >= 'a' && c <= 'f') return c - 'a' + 10;
        return -1;
    }

    std::vector<std::string> pieces_;
    std::vector<float> scores_;
    std::unordered_map<std::string, std::int32_t> lookup_;
    int max_token_length_ = 0;
};

}  // namespace dk_llama2
