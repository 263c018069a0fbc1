#pragma once
/// \file llama2/models_dir.hpp
/// Where the examples find the model files shipped in examples/models (see its README).

#include <cstdlib>
#include <string>

namespace dk_llama2 {

/// The folder holding stories260K.bin, tok512.bin and tokenizer.bin: the DECODEKIT_MODELS_DIR
/// environment variable when set and non-empty, else examples/models of the source tree (its
/// absolute path is compiled in as DK_EXAMPLES_MODELS_DIR, so any working directory works),
/// else "examples/models" relative to the working directory.
inline std::string default_models_dir() {
    if (const char* env = std::getenv("DECODEKIT_MODELS_DIR"); env && *env) return env;
#ifdef DK_EXAMPLES_MODELS_DIR
    return DK_EXAMPLES_MODELS_DIR;
#else
    return "examples/models";
#endif
}

}  // namespace dk_llama2
