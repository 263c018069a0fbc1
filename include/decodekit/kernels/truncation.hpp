#pragma once
/// \file kernels/truncation.hpp
/// The vocabulary of the truncation kernels (nucleus.hpp, typical.hpp, thresholds.hpp, xtc.hpp):
/// a kept set described over the row (row_cut), and what every kernel reports
/// (truncation_result): the cut, the sums a draw needs, which exactness tier decided.

#include <decodekit/candidates.hpp>
#include <decodekit/config.hpp>
#include <decodekit/types.hpp>

#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>

DECODEKIT_BEGIN_NAMESPACE
namespace kernels {

/// A kept set of a row as a logit interval whose boundary tie groups may be cut by id: entry i
/// is kept iff lo < x_i < hi, or x_i == lo and i <= lo_last, or x_i == hi and i <= hi_last
/// (npos: the whole group), both bounds holding when lo == hi. Every set a truncation step keeps
/// has this shape: a prefix of the order logit descending / id ascending (top-k, top-p, the
/// thresholds: hi = +inf) or typical's interval around its centre. The default cut is empty.
struct row_cut {
    float lo = std::numeric_limits<float>::infinity();
    float hi = -std::numeric_limits<float>::infinity();
    std::size_t lo_last = npos;
    std::size_t hi_last = npos;

    /// Whether entry i of value v is kept. NaN never is.
    constexpr bool contains(float v, std::size_t i) const noexcept {
        return (v > lo || (v == lo && i <= lo_last)) && (v < hi || (v == hi && i <= hi_last));
    }
};

/// Which tier of a truncation kernel decided its kept set (the tiers are exact; later ones are
/// rarer and slower, in the enumerators' order: compare with < / >=).
enum class exactness_tier : std::uint8_t {
    float_bound,  ///< the float weights, whose error bound could not change the set
    corrected,    ///< one read pass over the row and its float weights, no exponential: every
                  ///< weight's argument rounding recovered (top-p: in double; typical: its
                  ///< compensated pass, entropy.hpp; a margin was within the float bound, not
                  ///< within the exponential's own error)
    double_pass,  ///< a double-precision exponential pass over the row (a margin was within the
                  ///< float bound, and for top-p within the corrected tier's bound too)
    reference,    ///< the scalar reference's own arithmetic (a margin was within ~1e-10), or a
                  ///< row with +inf entries, or a temperature that is subnormal or above 2^120
                  ///< (detail::float_inv_temperature)
};

/// Outcome of a truncation kernel's call.
enum class truncation_status : std::uint8_t {
    ok,
    bad_size,  ///< out.capacity() or the weights span is smaller than the row: nothing done
};

/// What a truncation kernel reports besides its kept set (the candidates, in id order, and their
/// weights).
struct truncation_result {
    std::size_t kept = 0;  ///< size of the kept set (== out.size() for the compacting kernels)
    row_cut cut = {};      ///< the kept set over the row
    /// largest valid entry of the row (-inf when none, +inf when an entry is +inf)
    float max = -std::numeric_limits<float>::infinity();
    /// normaliser: sum over the row of the float weights exp((x_i - max) / T), accumulated in
    /// double (a row with +inf entries: their count); NaN when the kernel does not compute it
    double sum = 0;
    /// sum of the kept entries' weights, accumulated in double; top-p's and typical's cuts add
    /// the mass above their bracket from float sums of 2 (typical) or 8 (top-p) vectors first,
    /// within 2^-24 (3 2^-24) of that part (a draw against it may differ from one against the
    /// exact double sum at a rate of ~1e-9, in which token a boundary u picks)
    double kept_sum = 0;
    exactness_tier tier = exactness_tier::float_bound;
    truncation_status status = truncation_status::ok;

    bool ok() const noexcept { return status == truncation_status::ok; }
};

namespace detail {
/// The truncation kernels' preamble: `out` cleared, and an empty result, with status bad_size
/// when out.capacity() or weights.size() < x.size() (nothing else done then).
inline truncation_result sized(std::span<const float> x, candidates& out,
                               std::span<float> weights) noexcept {
    truncation_result r;
    out.clear();
    if (out.capacity() < x.size() || weights.size() < x.size())
        r.status = truncation_status::bad_size;
    return r;
}
}  // namespace detail

}  // namespace kernels
DECODEKIT_END_NAMESPACE
