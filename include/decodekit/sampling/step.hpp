#pragma once
/// \file sampling/step.hpp
/// The truncation-step concept that built-in and user steps share, the context a step runs with,
/// and any_step, the copyable type-erased holder a runtime-ordered pipeline stores user steps in.
///
/// A step narrows the working set (sampling/working_set.hpp) or changes its temperature:
///   void apply(working_set& w, const step_context& c)
/// It must not throw (it runs inside noexcept sampling calls). It sees the set after every step
/// before it in the order; a full set means nothing has narrowed it yet. It must keep at least
/// one entry when the set has one (an empty set means "no valid token"). Randomness comes from
/// c.stream(purpose) (keyed by the call's seed, sequence and step: never by batch position).
/// A step object is per sampler (a sampler owns a copy): per-sequence state may live in it.

#include <decodekit/config.hpp>
#include <decodekit/random.hpp>
#include <decodekit/sampling/params.hpp>
#include <decodekit/sampling/result.hpp>
#include <decodekit/sampling/working_set.hpp>

#include <concepts>
#include <cstddef>
#include <memory>
#include <type_traits>
#include <utility>

DECODEKIT_BEGIN_NAMESPACE

/// What a step runs with besides the working set.
struct step_context {
    const sampling_params& params;  ///< the sampler's configuration
    const sample_context& call;     ///< the call's key and history
    sampler_state& state;           ///< the sampler's mutable state (mirostat's mu)

    /// The call's random stream for `purpose` (keyed by seed, sequence and step).
    rng_stream stream(rng_purpose purpose) const noexcept {
        return make_stream({params.seed, call.sequence, call.step}, purpose);
    }
};

/// A type that narrows a working set (see the file comment).
template <class S>
concept sampling_step_type = std::copy_constructible<S> &&
    requires(S& s, working_set& w, const step_context& c) {
    s.apply(w, c);
};

/// A copyable holder of any sampling_step_type (copies clone the step and its state).
class any_step {
public:
    any_step() = default;
    template <class S>
    requires(!std::same_as<std::decay_t<S>, any_step> && sampling_step_type<std::decay_t<S>>)
        any_step(S&& s)  // NOLINT: implicit, like std::function
        : m_(std::make_unique<model<std::decay_t<S>>>(std::forward<S>(s))) {}
    any_step(const any_step& o) : m_(o.m_ ? o.m_->clone() : nullptr) {}
    any_step(any_step&&) noexcept = default;
    any_step& operator=(const any_step& o) {
        if (this != &o) m_ = o.m_ ? o.m_->clone() : nullptr;
        return *this;
    }
    any_step& operator=(any_step&&) noexcept = default;

    /// True when it holds a step.
    explicit operator bool() const noexcept { return m_ != nullptr; }
    /// Runs the step. \pre holds a step
    void apply(working_set& w, const step_context& c) { m_->apply(w, c); }

private:
    struct base {
        virtual ~base() = default;
        virtual std::unique_ptr<base> clone() const = 0;
        virtual void apply(working_set&, const step_context&) = 0;
    };
    template <class S>
    struct model final : base {
        S s;
        explicit model(S x) : s(std::move(x)) {}
        std::unique_ptr<base> clone() const override { return std::make_unique<model>(s); }
        void apply(working_set& w, const step_context& c) override { s.apply(w, c); }
    };
    std::unique_ptr<base> m_;
};

/// One built-in step in the registration table (sampling/steps.hpp): its id, whether the
/// params enable it for a vocabulary, and its apply function.
struct builtin_step {
    sampling_step id;
    bool (*enabled)(const sampling_params&, std::size_t vocab_size) noexcept;
    void (*apply)(working_set&, const step_context&) noexcept;
};

DECODEKIT_END_NAMESPACE
