#pragma once
/// \file processors/processor.hpp
/// The logits-processor concept that built-in and user processors share, and any_processor, the
/// copyable type-erased holder a runtime-ordered pipeline stores them in.
///
/// A processor changes a logits row in place before truncation and the draw:
///   void apply(std::span<float> logits, const processor_context& c) noexcept-ish
/// It must not throw (it runs inside noexcept sampling calls: an exception terminates).
/// Optional members, detected at compile time:
///   void touched(const processor_context& c, token_sink& out) const
///       declares every id apply() may read or write for this call. A processor that has it is
///       sparse: a pipeline may give it a row in which only those entries hold the caller's
///       logits (no copy of the whole row). Without it the processor is dense (it may read or
///       write any entry, so the pipeline copies the row first).
///   void append(std::span<const token_id> added, const processor_context& c)
///   void cut_back(std::size_t keep, std::span<const token_id> removed, const processor_context& c)
///   void reset(const processor_context& c)
///       per-sequence state that follows the history (processors/history.hpp): before apply()
///       the pipeline reports what changed since the previous call: reset (rebuild from
///       c.history), or cut_back (the tokens that were at [keep, old length) were removed; the
///       history is already c.history) and then append (c.history[keep, size) were added).
///       A processor with any of the three must have all three.
/// A processor object is per sequence: a pipeline owns a copy (a beam fork copies it).

#include <decodekit/config.hpp>
#include <decodekit/types.hpp>

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <type_traits>
#include <utility>

DECODEKIT_BEGIN_NAMESPACE

/// What a processor sees besides the row.
struct processor_context {
    std::span<const token_id> history{};  ///< prompt + generated so far, oldest first
    std::size_t prompt_length = 0;        ///< history[0, prompt_length) is the prompt
    std::uint64_t sequence = 0;           ///< the request's sequence id
    std::uint64_t step = 0;               ///< generated tokens before the row's position
    std::size_t vocab_size = 0;           ///< the row's size

    /// Tokens generated so far (history past the prompt).
    std::size_t generated() const noexcept {
        return history.size() > prompt_length ? history.size() - prompt_length : 0;
    }
};

/// Receives the ids a sparse processor declares (ids outside [0, vocab) are ignored). Made from a
/// per-id function, or a per-span one (a span is then handed over whole: one indirect call per
/// span, not per id).
class token_sink {
public:
    using fn_type = void (*)(void*, token_id) noexcept;
    using span_fn_type = void (*)(void*, std::span<const token_id>) noexcept;
    token_sink(fn_type fn, void* ctx) noexcept : fn_(fn), ctx_(ctx) {}
    token_sink(span_fn_type fn, void* ctx) noexcept : span_fn_(fn), ctx_(ctx) {}
    void operator()(token_id t) noexcept {
        if (span_fn_)
            span_fn_(ctx_, std::span<const token_id>(&t, 1));
        else
            fn_(ctx_, t);
    }
    /// Declares every id of a span.
    void operator()(std::span<const token_id> ids) noexcept {
        if (span_fn_) {
            span_fn_(ctx_, ids);
            return;
        }
        for (token_id t : ids) fn_(ctx_, t);
    }

private:
    fn_type fn_ = nullptr;
    span_fn_type span_fn_ = nullptr;
    void* ctx_;
};

/// A type that changes logits rows (see the file comment).
template <class P>
concept logits_processor = std::copy_constructible<P> &&
    requires(P& p, std::span<float> x, const processor_context& c) {
    p.apply(x, c);
};

/// A processor that declares the ids it touches.
template <class P>
concept sparse_logits_processor = logits_processor<P> &&
    requires(const P& p, const processor_context& c, token_sink& s) {
    p.touched(c, s);
};

/// A processor (or any component) whose state follows the history.
template <class P>
concept history_follower = requires(P& p, std::span<const token_id> t, std::size_t n,
                                    const processor_context& c) {
    p.append(t, c);
    p.cut_back(n, t, c);
    p.reset(c);
};

/// A copyable holder of any logits_processor (copies clone the processor and its state).
class any_processor {
public:
    any_processor() = default;
    template <class P>
    requires(!std::same_as<std::decay_t<P>, any_processor> && logits_processor<std::decay_t<P>>)
        any_processor(P&& p)  // NOLINT: implicit, like std::function
        : m_(std::make_unique<model<std::decay_t<P>>>(std::forward<P>(p))) {}
    any_processor(const any_processor& o) : m_(o.m_ ? o.m_->clone() : nullptr) {}
    any_processor(any_processor&&) noexcept = default;
    any_processor& operator=(const any_processor& o) {
        if (this != &o) m_ = o.m_ ? o.m_->clone() : nullptr;
        return *this;
    }
    any_processor& operator=(any_processor&&) noexcept = default;

    /// True when it holds a processor.
    explicit operator bool() const noexcept { return m_ != nullptr; }
    /// Changes `x` in place. \pre holds a processor
    void apply(std::span<float> x, const processor_context& c) { m_->apply(x, c); }
    /// True when the processor declares its ids (touched()).
    bool sparse() const noexcept { return m_->sparse(); }
    /// Declares the ids apply() may touch. \pre sparse()
    void touched(const processor_context& c, token_sink& s) const { m_->touched(c, s); }
    /// True when its state follows the history.
    bool follows_history() const noexcept { return m_->follows_history(); }
    void append(std::span<const token_id> added, const processor_context& c) {
        m_->append(added, c);
    }
    void cut_back(std::size_t keep, std::span<const token_id> removed, const processor_context& c) {
        m_->cut_back(keep, removed, c);
    }
    void reset(const processor_context& c) { m_->reset(c); }
    /// The held processor when it is a P, else nullptr.
    template <class P>
    P* get() noexcept {
        if (!m_ || m_->tag() != tag_of<P>()) return nullptr;
        return &static_cast<model<P>*>(m_.get())->p;
    }

private:
    // a per-type address instead of RTTI (works with -fno-rtti)
    template <class P>
    static const void* tag_of() noexcept {
        static const char tag = 0;
        return &tag;
    }
    struct base {
        virtual ~base() = default;
        virtual const void* tag() const noexcept = 0;
        virtual std::unique_ptr<base> clone() const = 0;
        virtual void apply(std::span<float>, const processor_context&) = 0;
        virtual bool sparse() const noexcept = 0;
        virtual void touched(const processor_context&, token_sink&) const = 0;
        virtual bool follows_history() const noexcept = 0;
        virtual void append(std::span<const token_id>, const processor_context&) = 0;
        virtual void cut_back(std::size_t, std::span<const token_id>, const processor_context&) = 0;
        virtual void reset(const processor_context&) = 0;
    };
    template <class P>
    struct model final : base {
        P p;
        explicit model(P q) : p(std::move(q)) {}
        const void* tag() const noexcept override { return tag_of<P>(); }
        std::unique_ptr<base> clone() const override { return std::make_unique<model>(p); }
        void apply(std::span<float> x, const processor_context& c) override { p.apply(x, c); }
        bool sparse() const noexcept override { return sparse_logits_processor<P>; }
        void touched(const processor_context& c, token_sink& s) const override {
            if constexpr (sparse_logits_processor<P>) p.touched(c, s);
        }
        bool follows_history() const noexcept override { return history_follower<P>; }
        void append(std::span<const token_id> t, const processor_context& c) override {
            if constexpr (history_follower<P>) p.append(t, c);
        }
        void cut_back(std::size_t n, std::span<const token_id> t,
                      const processor_context& c) override {
            if constexpr (history_follower<P>) p.cut_back(n, t, c);
        }
        void reset(const processor_context& c) override {
            if constexpr (history_follower<P>) p.reset(c);
        }
    };
    std::unique_ptr<base> m_;
};

DECODEKIT_END_NAMESPACE
