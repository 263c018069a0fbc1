#pragma once
/// \file llama2/llama2.hpp
/// The reference backend of decodekit's examples: llama2.c checkpoint loader, tokenizer and
/// transformer (see model.hpp for the model-concept capabilities and the KV-cache contract).
#include "checkpoint.hpp"
#include "model.hpp"
#include "models_dir.hpp"
#include "tokenizer.hpp"
