#pragma once
/// \file regex/llama2_vocabulary.hpp
/// The dk_regex vocabulary of a llama2.c tokenizer: each token's bytes as run.c's decoder
/// prints them (`<0xXX>` pieces become that byte, the leading space of a piece is dropped right
/// after BOS), BOS = 1 (never allowed), EOS = 2 (allowed at a full match).

#include "regex_constraint.hpp"

#include <llama2/tokenizer.hpp>

namespace dk_regex {

/// The vocabulary of `tok` (see the file comment). O(vocabulary).
inline vocabulary llama2_vocabulary(const dk_llama2::tokenizer& tok) {
    vocabulary v;
    v.bytes.reserve(std::size_t(tok.vocab_size()));
    // decode(prev, t) with a prev other than BOS: the text t adds in the middle of a sequence
    v.bytes_after_bos.reserve(std::size_t(tok.vocab_size()));
    for (int t = 0; t < tok.vocab_size(); ++t) {
        v.bytes.push_back(tok.decode(dk_llama2::eos_id, t));
        v.bytes_after_bos.push_back(tok.decode(dk_llama2::bos_id, t));
    }
    v.bos_id = dk_llama2::bos_id;
    v.eos_ids = {dk_llama2::eos_id};
    return v;
}

}  // namespace dk_regex
