#pragma once
/// \file sampling/any_step.hpp
/// The truncation-step concept (a type with `void apply(working_set&, const step_context&)`, see
/// sampling/step.hpp) and any_step, the copyable type-erased holder user steps travel in
/// (sampling_params::steps). Only declarations of the working set and the context are needed
/// here, so that sampling_params can hold user steps.

#include <decodekit/config.hpp>

#include <concepts>
#include <memory>
#include <type_traits>
#include <utility>

DECODEKIT_BEGIN_NAMESPACE

class working_set;
struct step_context;

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
    /// The held step when it is an S, else nullptr.
    template <class S>
    S* get() noexcept {
        if (!m_ || m_->tag() != tag_of<S>()) return nullptr;
        return &static_cast<model<S>*>(m_.get())->s;
    }

private:
    // a per-type address instead of RTTI (works with -fno-rtti)
    template <class S>
    static const void* tag_of() noexcept {
        static const char tag = 0;
        return &tag;
    }
    struct base {
        virtual ~base() = default;
        virtual const void* tag() const noexcept = 0;
        virtual std::unique_ptr<base> clone() const = 0;
        virtual void apply(working_set&, const step_context&) = 0;
    };
    template <class S>
    struct model final : base {
        S s;
        explicit model(S x) : s(std::move(x)) {}
        const void* tag() const noexcept override { return tag_of<S>(); }
        std::unique_ptr<base> clone() const override { return std::make_unique<model>(s); }
        void apply(working_set& w, const step_context& c) override { s.apply(w, c); }
    };
    std::unique_ptr<base> m_;
};

DECODEKIT_END_NAMESPACE
