#pragma once
/// \file sampling/constraint.hpp
/// Constraints for structured output in their callback form: a type that says whether token t
/// may come next,
///   bool allowed(token_id t, const processor_context& c) const
/// (c.history is the sequence so far). Optional history hooks (append / cut_back / reset, as
/// processors have: processors/processor.hpp) let it keep per-sequence state (a parser's or a
/// regular expression's state) that follows the history through the sampler's one mechanism
/// (processors/history.hpp), so a speculative rejection rolls it back like every other state.
/// It must not throw. A sampler owns a copy (sampling_params::constraint).
///
/// The packed-bitmask form (the layout grammar engines emit) is given per call instead:
/// sample_context::mask (kernels/mask.hpp).
///
/// How the sampler queries a callback constraint (constraint_check::exact, the default): only
/// where the law of the pipeline applied to the masked row depends on it (sampling/
/// constrained.hpp lists the cases with their proof sketches: greedy, top-k or min-p first,
/// draw-then-check for min-p + temperature and temperature-only draws when no logprob is asked,
/// else every valid token), and at most once per token and call (one exception: min-p first with
/// min_keep > 1 and fewer allowed tokens than min_keep above its threshold, where the fallback
/// walk from the top asks again about the tokens above the threshold).
/// constraint_check::sample_then_check is llama.cpp's shortcut: the unconstrained pipeline draws,
/// the drawn token is checked, and only when it is not allowed is the pipeline run again on the
/// masked row. Not exact: a token is drawn with probability q(t) + P(reject) q'(t), q the
/// unconstrained pipeline's law restricted to allowed tokens and q' the masked pipeline's law,
/// instead of q'(t).

#include <decodekit/config.hpp>
#include <decodekit/processors/processor.hpp>
#include <decodekit/types.hpp>

#include <concepts>
#include <cstdint>
#include <memory>
#include <span>
#include <type_traits>
#include <utility>

DECODEKIT_BEGIN_NAMESPACE

/// How a sampler uses a callback constraint (see the file comment).
enum class constraint_check : std::uint8_t {
    exact,              ///< the pipeline's law on the masked row, querying only what it needs
    sample_then_check,  ///< llama.cpp's shortcut (opt-in; not exact, see the file comment)
};

/// A type that says whether a token may come next (see the file comment).
template <class C>
concept token_constraint = std::copy_constructible<C> &&
    requires(const C& c, token_id t, const processor_context& ctx) {
    { c.allowed(t, ctx) } -> std::convertible_to<bool>;
};

/// A copyable holder of any token_constraint (copies clone it and its state).
class any_constraint {
public:
    any_constraint() = default;
    template <class C>
    requires(!std::same_as<std::decay_t<C>, any_constraint> && token_constraint<std::decay_t<C>>)
        any_constraint(C&& c)  // NOLINT: implicit, like std::function
        : m_(std::make_unique<model<std::decay_t<C>>>(std::forward<C>(c))) {}
    any_constraint(const any_constraint& o) : m_(o.m_ ? o.m_->clone() : nullptr) {}
    any_constraint(any_constraint&&) noexcept = default;
    any_constraint& operator=(const any_constraint& o) {
        if (this != &o) m_ = o.m_ ? o.m_->clone() : nullptr;
        return *this;
    }
    any_constraint& operator=(any_constraint&&) noexcept = default;

    /// True when it holds a constraint.
    explicit operator bool() const noexcept { return m_ != nullptr; }
    /// True when token t may come next. \pre holds a constraint
    bool allowed(token_id t, const processor_context& c) const { return m_->allowed(t, c); }
    /// True when its state follows the history.
    bool follows_history() const noexcept { return m_ && m_->follows_history(); }
    void append(std::span<const token_id> added, const processor_context& c) {
        m_->append(added, c);
    }
    void cut_back(std::size_t keep, std::span<const token_id> removed, const processor_context& c) {
        m_->cut_back(keep, removed, c);
    }
    void reset(const processor_context& c) { m_->reset(c); }
    /// The held constraint when it is a C, else nullptr.
    template <class C>
    C* get() noexcept {
        if (!m_ || m_->tag() != tag_of<C>()) return nullptr;
        return &static_cast<model<C>*>(m_.get())->c;
    }

private:
    template <class C>
    static const void* tag_of() noexcept {
        static const char tag = 0;
        return &tag;
    }
    struct base {
        virtual ~base() = default;
        virtual const void* tag() const noexcept = 0;
        virtual std::unique_ptr<base> clone() const = 0;
        virtual bool allowed(token_id, const processor_context&) const = 0;
        virtual bool follows_history() const noexcept = 0;
        virtual void append(std::span<const token_id>, const processor_context&) = 0;
        virtual void cut_back(std::size_t, std::span<const token_id>, const processor_context&) = 0;
        virtual void reset(const processor_context&) = 0;
    };
    template <class C>
    struct model final : base {
        C c;
        explicit model(C x) : c(std::move(x)) {}
        const void* tag() const noexcept override { return tag_of<C>(); }
        std::unique_ptr<base> clone() const override { return std::make_unique<model>(c); }
        bool allowed(token_id t, const processor_context& x) const override {
            return bool(c.allowed(t, x));
        }
        bool follows_history() const noexcept override { return history_follower<C>; }
        void append(std::span<const token_id> t, const processor_context& x) override {
            if constexpr (history_follower<C>) c.append(t, x);
        }
        void cut_back(std::size_t n, std::span<const token_id> t,
                      const processor_context& x) override {
            if constexpr (history_follower<C>) c.cut_back(n, t, x);
        }
        void reset(const processor_context& x) override {
            if constexpr (history_follower<C>) c.reset(x);
        }
    };
    std::unique_ptr<base> m_;
};

DECODEKIT_END_NAMESPACE
