#pragma once
/// \file engine_loop.hpp
/// A minimal continuous-batching loop for tests: steppers of any strategy join at given engine
/// steps; each engine step shuffles the live steppers, groups their next_call()s by (model,
/// kind, layers, heads), makes ONE model call per group with every stepper's sequences (and
/// MTP module steps) concatenated (slots renamed: slot_base + local slot), splits the rows back and
/// advances each stepper. What an inference engine does, minus scheduling policy.

#include "dk_test.hpp"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <random>
#include <span>
#include <tuple>
#include <vector>

namespace dk_test {

/// One request in the loop (type-erased stepper).
struct engine_job {
    std::function<decodekit::model_call()> next_call;
    std::function<decodekit::step_status(std::span<const float>, std::span<const float>)> advance;
    const void* draft_model = nullptr;  ///< the model that model_role::draft calls run on
    std::size_t start_step = 0;         ///< the engine step it joins at
    std::uint32_t slot_base = 0;        ///< set by the engine
};

/// Wraps a stepper (kept by reference: it must outlive the loop).
template <class Stepper>
engine_job job_of(Stepper& s, std::size_t start_step = 0, const void* draft_model = nullptr) {
    return {[&s] { return s.next_call(); },
            [&s](std::span<const float> rows, std::span<const float> hidden) {
                return s.advance(rows, hidden).status;
            },
            draft_model, start_step};
}

/// The loop over a target model and (optionally) a draft model.
template <class Target, class Draft = Target>
class engine_loop {
public:
    engine_loop(Target& target, Draft* draft, std::uint64_t shuffle_seed,
                std::uint32_t slots_per_job = 16)
        : target_(&target), draft_(draft), rng_(shuffle_seed), slots_(slots_per_job) {}

    void add(engine_job j) {
        j.slot_base = std::uint32_t(jobs_.size()) * slots_;
        jobs_.push_back(std::move(j));
    }

    /// Runs until every job is done; returns the number of engine steps.
    std::size_t run(std::size_t max_steps = 100000) {
        std::size_t step = 0;
        for (; step < max_steps; ++step) {
            std::vector<std::size_t> live;
            bool pending = false;
            for (std::size_t i = 0; i < jobs_.size(); ++i) {
                if (jobs_[i].start_step > step) {
                    pending = true;
                    continue;
                }
                if (!jobs_[i].next_call().empty()) live.push_back(i);
            }
            if (live.empty() && !pending) break;
            std::shuffle(live.begin(), live.end(), rng_);
            // group by (model, kind, layers, heads), keeping the shuffled order
            std::vector<std::vector<std::size_t>> groups;
            std::vector<decodekit::model_call> heads_of_group;
            for (std::size_t i : live) {
                const decodekit::model_call c = jobs_[i].next_call();
                const void* m = model_of(jobs_[i], c);
                std::size_t g = 0;
                for (; g < groups.size(); ++g) {
                    const auto& h = heads_of_group[g];
                    if (model_of(jobs_[groups[g][0]], h) == m && h.kind == c.kind &&
                        h.heads == c.heads &&
                        std::equal(h.layers.begin(), h.layers.end(), c.layers.begin(),
                                   c.layers.end()))
                        break;
                }
                if (g == groups.size()) {
                    groups.emplace_back();
                    heads_of_group.push_back(c);
                }
                groups[g].push_back(i);
            }
            for (std::size_t g = 0; g < groups.size(); ++g) call_group(groups[g]);
            ++calls_;
        }
        return step;
    }
    /// Model calls made per (model, kind): counts of the loop (not of the model).
    std::size_t model_calls() const noexcept { return model_calls_; }
    std::size_t draft_calls() const noexcept { return draft_calls_; }
    std::size_t largest_batch() const noexcept { return largest_; }
    /// Model calls of one kind (any model).
    std::size_t calls_of(decodekit::call_kind k) const noexcept {
        return calls_of_kind_[std::size_t(k)];
    }

private:
    const void* model_of(const engine_job& j, const decodekit::model_call& c) const {
        return c.model == decodekit::model_role::draft && j.draft_model
                   ? j.draft_model
                   : static_cast<const void*>(target_);
    }
    void call_group(const std::vector<std::size_t>& members) {
        std::vector<decodekit::model_call> calls;
        std::vector<decodekit::sequence_request> merged;
        std::vector<decodekit::mtp_request> merged_mtp;
        for (std::size_t i : members) {
            calls.push_back(jobs_[i].next_call());
            for (auto r : calls.back().requests) {
                r.slot += jobs_[i].slot_base;
                merged.push_back(r);
            }
            for (auto q : calls.back().mtp) {
                q.slot += jobs_[i].slot_base;
                merged_mtp.push_back(q);
            }
        }
        decodekit::model_call c = calls.front();
        c.requests = merged;
        c.mtp = merged_mtp;
        ++calls_of_kind_[std::size_t(c.kind)];
        largest_ = std::max(largest_, members.size());
        const void* m = model_of(jobs_[members.front()], c);
        if (m == static_cast<const void*>(target_)) {
            ++model_calls_;
            run_on(*target_, c, members, calls);
        } else {
            ++draft_calls_;
            run_on(*draft_, c, members, calls);
        }
    }
    template <class M>
    void run_on(M& model, const decodekit::model_call& c, const std::vector<std::size_t>& members,
                const std::vector<decodekit::model_call>& calls) {
        const std::size_t V = model.vocab_size();
        std::size_t H = 0;
        if constexpr (decodekit::hidden_state_model<M>) H = model.hidden_size();
        logits_.assign(c.logits_rows() * V, 0.f);
        hidden_.assign(c.hidden_rows() * H, 0.f);
        REQUIRE(decodekit::run_model_call(model, c, logits_, hidden_));
        std::size_t row = 0, hrow = 0;
        for (std::size_t k = 0; k < members.size(); ++k) {
            const std::size_t n = calls[k].logits_rows(), nh = calls[k].hidden_rows();
            const auto status = jobs_[members[k]].advance(
                std::span<const float>(logits_).subspan(row * V, n * V),
                std::span<const float>(hidden_).subspan(hrow * H, nh * H));
            REQUIRE(status == decodekit::step_status::ok);
            row += n;
            hrow += nh;
        }
    }

    Target* target_;
    Draft* draft_;
    std::mt19937_64 rng_;
    std::uint32_t slots_;
    std::vector<engine_job> jobs_;
    std::vector<float> logits_, hidden_;
    std::size_t calls_ = 0, model_calls_ = 0, draft_calls_ = 0, largest_ = 0;
    std::size_t calls_of_kind_[8] = {};
};

}  // namespace dk_test
