/// \file fuzz/fuzz_batch.cpp
/// Batched sampling with per-row parameters: a [rows x vocab] matrix with a stride, each row its
/// own sampler (params decoded from bytes; rows with invalid params are left out, as a server
/// rejects the request), key and history. Oracle: every row's result equals the same sampler
/// type sampling that row alone (batch invariance), serial and through a 2-thread
/// batch_sampler, in a shuffled row order.

#include <decodekit/decodekit.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "fuzz_common.hpp"
#include "fuzz_params.hpp"

namespace dk = decodekit;
using dk::token_id;

namespace {

bool same(const dk::sample_result& a, const dk::sample_result& b) {
    return a.token == b.token && a.status == b.status &&
           ((a.logprob != a.logprob && b.logprob != b.logprob) || a.logprob == b.logprob);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    static dk::batch_sampler pool(2);  // created once: no thread per call
    FuzzedDataProvider in(data, size);
    const std::size_t vocab = in.ConsumeIntegralInRange<std::size_t>(1, 48);
    const std::size_t rows = in.ConsumeIntegralInRange<std::size_t>(0, 8);
    const std::size_t stride = vocab + in.ConsumeIntegralInRange<std::size_t>(0, 3);
    std::vector<float> matrix;
    dk_fuzz::fill_row(in, matrix, rows * stride, in.ConsumeIntegralInRange<int>(0, 2));

    std::vector<dk::sampling_params> params;
    std::vector<std::vector<token_id>> histories;
    std::vector<dk::sample_context> ctxs;
    for (std::size_t r = 0; r < rows; ++r) {
        dk::sampling_params p = dk_fuzz::consume_sampling_params(in, vocab);
        if (p.check()) p = dk::sampling_params{.seed = p.seed};  // rejected request: defaults
        params.push_back(std::move(p));
        histories.push_back(dk_fuzz::consume_tokens(in, vocab, 12));
    }
    for (std::size_t r = 0; r < rows; ++r) {
        dk::sample_context c;
        c.history = histories[r];
        c.prompt_length = in.ConsumeIntegralInRange<std::size_t>(0, histories[r].size());
        c.sequence = in.ConsumeIntegralInRange<std::uint64_t>(0, 3);  // collisions allowed
        c.step = in.ConsumeIntegralInRange<std::uint64_t>(0, 3);
        ctxs.push_back(c);
    }
    const dk::logits_matrix m{matrix.data(), rows, vocab, stride};

    // Alone.
    std::vector<dk::sample_result> alone(rows);
    for (std::size_t r = 0; r < rows; ++r) {
        dk::sampler s(params[r], vocab);
        alone[r] = s.sample(m.row(r), ctxs[r]);
    }
    // Batched: serial, then pooled with the rows in a shuffled order.
    std::vector<std::unique_ptr<dk::sampler>> samplers;
    for (std::size_t r = 0; r < rows; ++r)
        samplers.push_back(std::make_unique<dk::sampler>(params[r], vocab));
    std::vector<dk::batch_row> br(rows);
    for (std::size_t r = 0; r < rows; ++r) br[r] = {samplers[r].get(), ctxs[r]};
    std::vector<dk::sample_result> serial(rows);
    dk::sample_batch(m, br, serial);
    for (std::size_t r = 0; r < rows; ++r)
        DK_FUZZ_CHECK(same(serial[r], alone[r]), "row %zu: batch %d, alone %d", r, serial[r].token,
                      alone[r].token);

    std::vector<std::size_t> perm(rows);
    for (std::size_t i = 0; i < rows; ++i) perm[i] = i;
    for (std::size_t i = rows; i > 1; --i)
        std::swap(perm[i - 1], perm[in.ConsumeIntegralInRange<std::size_t>(0, i - 1)]);
    std::vector<float> shuffled(rows * stride);
    std::vector<dk::batch_row> sbr(rows);
    std::vector<std::unique_ptr<dk::sampler>> s2;
    for (std::size_t i = 0; i < rows; ++i) {
        std::copy_n(matrix.data() + perm[i] * stride, stride, shuffled.data() + i * stride);
        s2.push_back(std::make_unique<dk::sampler>(params[perm[i]], vocab));
        sbr[i] = {s2.back().get(), ctxs[perm[i]]};
    }
    std::vector<dk::sample_result> pooled(rows);
    pool.sample(dk::logits_matrix{shuffled.data(), rows, vocab, stride}, sbr, pooled);
    for (std::size_t i = 0; i < rows; ++i)
        DK_FUZZ_CHECK(same(pooled[i], alone[perm[i]]),
                      "row %zu (shuffled to %zu): pooled %d, alone %d", perm[i], i, pooled[i].token,
                      alone[perm[i]].token);
    return 0;
}
