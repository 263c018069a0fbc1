#pragma once
/// \file sampling/working_set.hpp
/// The named working set that a sampler's steps read and narrow, one call at a time.
///
/// It starts as every valid entry of the row (full(): nothing materialised, no pass made). A step
/// that narrows it materialises the kept entries as candidates (ids + logits in
/// sampling_workspace::cand), in id order (id_ordered()), ordered (logit descending, ties by
/// ascending id: ordered()) or neither. Temperature is a scale carried along (temperature()),
/// applied where weights are computed. Entries with a NaN or -inf logit are never in the set.
///
/// Weights: weights()[i] = exp((x_i - m) / temperature()) for the kept entries (m the kept
/// maximum), float, aligned with kept(). A kernel that computed them while selecting hands them
/// over (set_weights()); otherwise ensure_weights() computes them in one SIMD pass. They follow
/// keep_if() / keep_first(); reordering or a new temperature recomputes them when next needed.
/// The draw (draw.hpp) uses them in id order: no sort of the kept set.
///
/// Cut: a step that selected a prefix of the full row's order (top-p) may leave the set as a
/// kernels::row_cut over row() with the row's weights in the workspace (set_cut()), nothing
/// compacted: the draw then reads the row with the cut (kernels::draw_cut, one read pass). Any
/// other use of the set (kept(), weights(), the next narrowing step, logprob extras,
/// distribution()) first compacts it (settle(): one pass, the kept entries in id order with
/// their weights), so steps see the same set either way.
///
/// Overlay: when the sampler's processors are sparse it does not copy the row; row() is then the
/// caller's row and the processed entries are patches (the entries the processors changed).
/// Steps that run first on a full set must honour them: the built-in first steps that can
/// (top-k, min-p, greedy) use overlay_top_k() / merge_patches(); any other step starting on an
/// overlaid full set calls materialise() first, which merges them. After the first narrowing the
/// overlay is gone.
///
/// Deferred patches: when every processed value is at most the row's (penalties that only lower,
/// processors/penalties.hpp lowers_only()), the processor stage may hand over a
/// detail::deferred_patches instead of writing its patches. A lowered entry can leave the k best,
/// never enter them, so overlay_top_k() selects k + max(k, 16) of the caller's row (no mask of
/// patched ids), asks for the processed values of those entries only (O(k) lookups, not
/// O(patched ids)), and keeps the k best of them when at least k stay above the selection's
/// lowest logit (every entry outside it is at most that logit, processed or not). Otherwise, and
/// for the other uses of the overlay (merge_patches(), materialise()), the patches are written
/// first (resolve()) and the overlay works as above. (A second overlay_top_k() after one the
/// selection decided selects again, deferred; the built-in steps call it once.)
///
/// Mask: a set may carry a token bitmask (set_mask(); kernels/mask.hpp). The full set is then
/// the valid entries the mask allows: the row_* helpers (the kernels the fused first steps use:
/// greedy's argmax, top-k, min-p, materialise(), the overlay helpers, the draw) read the mask
/// inside their passes. Steps that read row() themselves do not honour it: the sampler gives
/// them a masked copy of the row instead (and no mask here). Once narrowed, kept() holds only
/// allowed entries.

#include <decodekit/candidates.hpp>
#include <decodekit/config.hpp>
#include <decodekit/kernels/cut.hpp>
#include <decodekit/kernels/mask.hpp>
#include <decodekit/kernels/reduce.hpp>
#include <decodekit/kernels/select.hpp>
#include <decodekit/kernels/softmax.hpp>
#include <decodekit/sampling/workspace.hpp>
#include <decodekit/simd/xsimd_compat.hpp>
#include <decodekit/types.hpp>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <vector>

DECODEKIT_BEGIN_NAMESPACE

namespace detail {
inline constexpr float f_inf = std::numeric_limits<float>::infinity();

/// exp((x - m)/t) with the special-value rules (m = +inf: 1 for +inf entries, else 0).
inline double cand_weight(float x, float m, float t) noexcept {
    if (!(x > -f_inf)) return 0.0;  // NaN, -inf
    if (m == f_inf) return x == f_inf ? 1.0 : 0.0;
    return std::exp((double(x) - double(m)) / double(t));
}

/// Patches a processor stage left to be computed when needed (see working_set's file comment):
/// the stage guarantees that no processed value is above the row's.
struct deferred_patches {
    void* owner = nullptr;
    /// Replaces lg[i], the row's logit at ids[i] (an id of the row), by its processed value.
    void (*values)(void* owner, const token_id* ids, float* lg, std::size_t n) noexcept = nullptr;
    /// Writes every patch {processed value, id} (each id once, those whose value differs
    /// bitwise from row's) to out, clears their bits in marks; returns their number.
    std::size_t (*write)(void* owner, std::span<const float> row, scored* out,
                         std::uint32_t* marks) noexcept = nullptr;

    explicit operator bool() const noexcept { return owner != nullptr; }
};
}  // namespace detail

/// The working set of one sampling call (see the file comment).
class working_set {
public:
    /// A full set over `row` (with `n_patches` patches in ws.patches when overlaid; or the
    /// patches `deferred`, which makes the set overlaid).
    working_set(std::span<const float> row, sampling_workspace& ws, std::size_t n_patches = 0,
                bool overlay = false, detail::deferred_patches deferred = {}) noexcept
        : row_(row),
          ws_(ws),
          n_patches_(deferred ? 0 : n_patches),
          overlay_(overlay || bool(deferred)),
          deferred_(deferred) {}
    working_set(const working_set&) = delete;
    working_set& operator=(const working_set&) = delete;
    /// Leaves the workspace's unpatched bits all ones (its invariant between calls).
    ~working_set() { clear_patch_marks(); }

    // ---- what it is ----
    /// The row the set refers to.
    std::span<const float> row() const noexcept { return row_; }
    /// Replaces the row the (full) set refers to (XTC: the row minus its head).
    void set_row(std::span<const float> r) noexcept { row_ = r; }
    std::size_t vocab_size() const noexcept { return row_.size(); }
    /// True while the set is every valid entry of row() (nothing materialised).
    bool full() const noexcept { return full_; }
    /// The kept entries (a pending cut is compacted first). \pre !full()
    candidates& kept() noexcept {
        settle();
        return ws_.cand;
    }
    const candidates& kept() const noexcept {
        settle();
        return ws_.cand;
    }
    /// The number of kept entries, without compacting a pending cut. \pre !full()
    std::size_t size() const noexcept { return cut_pending_ ? cut_kept_ : ws_.cand.size(); }
    /// True while the set is a cut over row() not yet compacted (see the file comment).
    bool cut_pending() const noexcept { return cut_pending_; }
    /// The pending cut (meaningful when cut_pending()).
    const kernels::row_cut& cut() const noexcept { return cut_; }
    /// The row's weights at the pending cut's temperature (cut_temperature()), and the sum of
    /// the kept ones (meaningful when cut_pending()).
    std::span<const float> cut_weights() const noexcept {
        return {ws_.weights.data(), row_.size()};
    }
    double cut_sum() const noexcept { return cut_sum_; }
    float cut_temperature() const noexcept { return cut_t_; }
    /// Makes the set the entries of the full row that `c` keeps (`kept` of them), the row's
    /// weights exp((x_i - m) / temperature()) (m the row max, finite) already in the
    /// workspace's weights[0, V) and `sum` the kept ones' sum (> 0). \pre full(), not overlaid
    void set_cut(const kernels::row_cut& c, std::size_t kept, float m, double sum) noexcept {
        full_ = false;
        cut_pending_ = true;
        cut_ = c;
        cut_kept_ = kept;
        cut_max_ = m;
        cut_sum_ = sum;
        cut_t_ = t_;
        order_ = by_id;
        weights_ok_ = false;
    }
    /// Compacts a pending cut into kept() (id order, with its weights); nothing otherwise.
    void settle() const noexcept {
        if (!cut_pending_) return;
        cut_pending_ = false;
        double sum = 0;
        kernels::detail::compact_cut_from<simd::default_arch>(
            row_, ws_.weights.data(), cut_, cut_max_, 1.f / cut_t_, ws_.cand, 0, sum);
        weights_ok_ = sum > 0 && std::isfinite(sum);
        sum_ok_ = weights_ok_;
        weights_t_ = cut_t_;
        sum_ = sum;
    }
    /// True when kept() is sorted by logit descending, ties by ascending id.
    bool ordered() const noexcept { return order_ == by_logit; }
    /// True when kept() is in ascending id order.
    bool id_ordered() const noexcept { return order_ == by_id; }
    /// The temperature scale the set is at (1 until a temperature step).
    float temperature() const noexcept { return t_; }
    void set_temperature(float t) noexcept { t_ = t; }
    /// True while the full set is the caller's row plus patches (see the file comment).
    bool overlaid() const noexcept { return overlay_; }
    /// The workspace the set lives in.
    sampling_workspace& workspace() noexcept { return ws_; }
    /// True when the full set is restricted by a token bitmask (see the file comment).
    bool masked() const noexcept { return masked_; }
    /// The mask (meaningful when masked()).
    const kernels::token_bitmask& mask() const noexcept { return mask_; }
    /// Restricts the full set to the entries `m` allows. \pre full(), m covers the row
    void set_mask(const kernels::token_bitmask& m) noexcept {
        mask_ = m;
        masked_ = true;
    }
    /// True when token i is in the mask (always without one).
    bool allowed(std::size_t i) const noexcept { return !masked_ || mask_.allowed(i); }

    // ---- the row's kernels, under the mask when there is one ----
    /// kernels::argmax of the row (npos when nothing is allowed).
    std::size_t row_argmax() const noexcept {
        return masked_ ? kernels::argmax(row_, mask_) : kernels::argmax(row_);
    }
    /// kernels::top_k of the row into `out`.
    std::size_t row_top_k(std::size_t k, tie_policy ties, candidates& out) const noexcept {
        return masked_ ? kernels::top_k(row_, k, ties, out, mask_)
                       : kernels::top_k(row_, k, ties, out);
    }
    /// kernels::filter_at_least of the row into `out`.
    std::size_t row_filter_at_least(float thr, candidates& out) const noexcept {
        return masked_ ? kernels::filter_at_least(row_, thr, out, mask_)
                       : kernels::filter_at_least(row_, thr, out);
    }
    /// kernels::filter_min_p of the row into `out`.
    std::size_t row_filter_min_p(float p_base, float t, candidates& out) const noexcept {
        return masked_ ? kernels::filter_min_p(row_, p_base, t, out, mask_)
                       : kernels::filter_min_p(row_, p_base, t, out);
    }

    // ---- narrowing ----
    /// Materialises every valid entry (id order) when full (merging the overlay). O(V).
    void materialise() noexcept {
        settle();
        if (!full_) return;
        row_filter_at_least(-detail::f_inf, ws_.cand);
        if (overlay_) {
            merge_patches(-detail::f_inf);
            clear_patch_marks();
        }
        full_ = false;
        order_ = by_id;
        weights_ok_ = false;
    }
    /// Materialises when the set is full and overlaid: for steps that read row() directly.
    void materialise_if_overlaid() noexcept {
        settle();
        if (full_ && overlay_) materialise();
    }
    /// Makes the set every valid entry of row() again (a step that looked at candidates but
    /// narrowed nothing, e.g. XTC's head).
    void set_full() noexcept {
        full_ = true;
        cut_pending_ = false;
        order_ = by_id;
        weights_ok_ = false;
    }
    /// The set is what kept() holds now (built by the overlay helpers), in whatever order they
    /// left it.
    void set_narrowed() noexcept {
        full_ = false;
        cut_pending_ = false;
    }
    /// Sets the kept entries a kernel wrote into kept(): ordered (logit descending) or in id order.
    void set_kept(bool is_ordered) noexcept {
        full_ = false;
        cut_pending_ = false;
        order_ = is_ordered ? by_logit : by_id;
        weights_ok_ = false;
    }
    /// Sorts the kept entries by logit descending, ties by ascending id. \pre !full()
    void order() noexcept {
        settle();
        if (order_ == by_logit) return;
        sort_kept([](const detail::scored& a, const detail::scored& b) noexcept {
            return detail::scored_before(a, b);  // a lambda: std::sort inlines it
        });
        order_ = by_logit;
    }
    /// Sorts the kept entries by ascending id (the draw's order). \pre !full()
    void order_by_id() noexcept {
        settle();
        if (order_ == by_id) return;
        sort_kept([](const detail::scored& a, const detail::scored& b) { return a.id < b.id; });
        order_ = by_id;
    }
    /// Writes ws.sorted[0, n) back into the kept arrays, in `is_ordered` order (logit descending)
    /// or neither; the weights are recomputed when next needed.
    void write_back(std::size_t n, bool is_ordered = true) noexcept {
        cut_pending_ = false;
        token_id* ids = ws_.cand.id_storage();
        float* lg = ws_.cand.logit_storage();
        for (std::size_t i = 0; i < n; ++i) {
            ids[i] = ws_.sorted[i].id;
            lg[i] = ws_.sorted[i].logit;
        }
        ws_.cand.resize(n);
        order_ = is_ordered ? by_logit : unordered;
        weights_ok_ = false;
    }
    /// Keeps the entries i with keep(i), preserving their order (and their weights). \pre !full()
    template <class Keep>
    void keep_if(Keep&& keep) noexcept {
        settle();
        token_id* ids = ws_.cand.id_storage();
        float* lg = ws_.cand.logit_storage();
        float* w = ws_.weights.data();
        const std::size_t n = ws_.cand.size();
        std::size_t j = 0;
        while (j < n && keep(j)) ++j;  // the kept prefix stays where it is: nothing to move
        for (std::size_t i = j + 1; i < n; ++i)
            if (keep(i)) {
                ids[j] = ids[i];
                lg[j] = lg[i];
                w[j] = w[i];
                ++j;
            }
        ws_.cand.resize(j);
        sum_ok_ = false;
    }
    /// Keeps the first n entries (the n best when ordered()). \pre !full()
    void keep_first(std::size_t n) noexcept {
        settle();
        ws_.cand.resize(std::min(n, ws_.cand.size()));
        sum_ok_ = false;
    }

    // ---- weights ----
    /// Largest kept logit (-inf when empty). \pre !full()
    float kept_max() const noexcept {
        settle();
        if (ws_.cand.empty()) return -detail::f_inf;
        if (order_ == by_logit) return ws_.cand.logits()[0];
        float m = -detail::f_inf;
        for (float v : ws_.cand.logits()) m = v > m ? v : m;
        return m;
    }
    /// weights()[i] = exp((x_i - max)/temperature()) over the kept entries; returns their sum
    /// (in double). \pre !full()
    double fill_weights() noexcept {
        settle();
        const float m = kept_max();
        double s = 0;
        const float* lg = ws_.cand.logit_storage();
        for (std::size_t i = 0; i < ws_.cand.size(); ++i) {
            ws_.weights[i] = float(detail::cand_weight(lg[i], m, t_));
            s += double(ws_.weights[i]);
        }
        note_weights(s);
        return s;
    }
    /// The weights (see the file comment) computed if needed: one SIMD exp pass over the kept
    /// logits; returns their sum (in double; 0 when no entry has weight). \pre !full()
    double ensure_weights() noexcept {
        settle();
        if (weights_ok_ && weights_t_ == t_) {
            if (!sum_ok_) {
                double s = 0;
                for (float v : weights()) s += double(v);
                note_weights(s);
            }
            return sum_;
        }
        const auto st = kernels::exp_weights(ws_.cand.logits(), t_,
                                             std::span<float>(ws_.weights.data(), ws_.cand.size()));
        note_weights(st.sum);
        return sum_;
    }
    /// A kernel wrote the kept entries' weights at temperature() (any common reference for the
    /// exponent) into weights(); `sum` is their sum.
    void set_weights(double sum) noexcept { note_weights(sum); }
    /// The kept entries' weights (valid after ensure_weights(), fill_weights() or set_weights()).
    std::span<float> weights() noexcept {
        settle();
        return {ws_.weights.data(), ws_.cand.size()};
    }
    /// Keeps the entries with weight >= w_thr, at least min(min_keep, size) (the most probable).
    /// \pre ordered(), weights filled
    void keep_weight_at_least(double w_thr, std::size_t min_keep) noexcept {
        settle();
        std::size_t n = 0;
        while (n < ws_.cand.size() && ws_.weights[n] >= w_thr) ++n;
        keep_first(std::max(n, std::min(min_keep, ws_.cand.size())));
    }
    /// Keeps the leading entries with weight >= w_thr, at least one. \pre ordered(), weights
    void keep_weight_from_top(double w_thr) noexcept {
        settle();
        std::size_t n = 0;
        while (n < ws_.cand.size() && ws_.weights[n] >= w_thr) ++n;
        keep_first(std::max<std::size_t>(n, 1));
    }
    /// Number of valid (not NaN, not -inf) entries of the row. O(V).
    std::size_t valid_count() const noexcept {
        std::size_t n = 0;
        for (float v : row_) n += v > -detail::f_inf;
        return n;
    }

    // ---- the overlay (built-in first steps) ----
    /// The patches written in the workspace (0 while deferred).
    std::size_t patch_count() const noexcept { return n_patches_; }
    /// True while the overlay's patches are deferred (not yet written).
    bool deferred() const noexcept { return bool(deferred_); }
    /// Writes deferred patches into the workspace (ws.patches, the unpatched bits); nothing when
    /// there are none. O(patched ids).
    void resolve() noexcept {
        if (!deferred_) return;
        const detail::deferred_patches d = deferred_;
        deferred_ = {};
        n_patches_ = d.write(d.owner, row_, ws_.patches.data(), ws_.unpatched.data());
    }
    /// True when id t is patched. \pre overlaid(), nothing deferred
    bool patched(token_id t) const noexcept {
        const auto u = std::uint32_t(t);
        return ((ws_.unpatched[u / 32] >> (u % 32)) & 1u) == 0;
    }
    /// Writes the patches with value >= thr (valid and allowed only) into the candidate storage
    /// from position j on; returns the end position.
    /// On x86, patches are first tested a vector of them at a time (logit lanes >= thr), so
    /// the many patches a long history's penalties push below thr cost a fraction of a cycle.
    template <class A = simd::default_arch>
    std::size_t append_patches(float thr, std::size_t j) noexcept {
        resolve();
        token_id* ids = ws_.cand.id_storage();
        float* lg = ws_.cand.logit_storage();
        const detail::scored* p = ws_.patches.data();
        const auto take = [&](std::size_t i) noexcept {
            const float v = p[i].logit;
            if (v > -detail::f_inf && v >= thr && allowed(std::size_t(p[i].id))) {
                ids[j] = p[i].id;
                lg[j] = v;
                ++j;
            }
        };
        std::size_t i = 0;
        if constexpr (simd::x86_family<A> != 0) {
            // a batch spans lanes / 2 patches, {logit, id} interleaved: only the even lanes
            // (the logits) are tested; the intrinsic loads may alias the id lanes
            using B = simd::batch<A>;
            constexpr std::size_t per = simd::lanes<A> / 2;
            static_assert(sizeof(detail::scored) == 2 * sizeof(float));
            const std::uint64_t even = 0x5555555555555555ull;
            const B tb(thr);
            const float* raw = reinterpret_cast<const float*>(p);
            for (; i + per <= n_patches_; i += per) {
                if ((simd::to_mask<A>(B::load_unaligned(raw + 2 * i) >= tb) & even) == 0) continue;
                for (std::size_t e = i; e < i + per; ++e) take(e);
            }
        }
        for (; i < n_patches_; ++i) take(i);
        return j;
    }
    /// Drops the patched ids from kept() and appends the patches with value >= thr (valid and
    /// allowed only).
    void merge_patches(float thr) noexcept {
        resolve();
        cut_pending_ = false;
        token_id* ids = ws_.cand.id_storage();
        float* lg = ws_.cand.logit_storage();
        std::size_t j = 0;
        for (std::size_t i = 0; i < ws_.cand.size(); ++i)
            if (!patched(ids[i])) {
                ids[j] = ids[i];
                lg[j] = lg[i];
                ++j;
            }
        ws_.cand.resize(append_patches(thr, j));
        order_ = unordered;
        weights_ok_ = false;
    }
    /// The k best of the patched row (tie policy `ties`) into kept(), ordered. \pre overlaid()
    /// One selection pass over the row under a mask without the patched ids (the k best unpatched
    /// entries), then the patches reaching the k-th of those join and the merged set is cut to
    /// k: O(V + patches + k log k), never a selection or sort of k + patches entries.
    /// With deferred patches, first the selection of the file comment (no patch written when
    /// it decides).
    void overlay_top_k(std::size_t k, tie_policy ties) noexcept {
        if (deferred_ && deferred_top_k(k, ties)) return;
        resolve();
        unpatched_top_k(k, ties);
        candidates& c = ws_.cand;
        // a patch below the k-th unpatched entry cannot enter the k best (fewer than k: any)
        const float thr = c.size() >= k && k > 0 ? c.logits()[c.size() - 1] : -detail::f_inf;
        const std::size_t before = c.size();
        const std::size_t j = append_patches(thr, before);
        c.resize(j);
        order_ = by_logit;  // kernels::top_k's order; patches appended below break it
        weights_ok_ = false;
        if (j == before) return;  // no patch reaches the k best: already ordered and cut
        order_ = unordered;
        order();
        if (k < c.size()) {
            std::size_t n = k;
            if (ties == tie_policy::keep_ties)
                while (n < c.size() && c.logits()[n] == c.logits()[k - 1]) ++n;
            c.resize(n);
        }
    }
    /// Clears the patch marks and ends the overlay (the set no longer reads the caller's row
    /// through patches).
    void clear_patch_marks() noexcept {
        deferred_ = {};  // never written: no mark to clear
        if (!overlay_) return;
        restore_unpatched_bits();
        overlay_ = false;
    }

private:
    enum order_kind : std::uint8_t { by_id, by_logit, unordered };

    /// overlay_top_k with deferred patches (see the file comment): the k2 = k + max(k, 16) best
    /// entries of the row (exactly_k, id order), their processed values, and the k best of those
    /// (tie policy `ties`) when that is the answer: the row has fewer than k2 valid entries (the
    /// selection holds them all), or at least k processed values are above the selection's
    /// lowest logit f (every entry left out is at most f before processing, so at most f after:
    /// the k best and every entry tied with the k-th are in the selection). Returns false (the
    /// selection is then scratch) otherwise. O(V) read + O(k2) lookups + O(k2 log k2).
    bool deferred_top_k(std::size_t k, tie_policy ties) noexcept {
        if (k == 0) return false;
        const std::size_t k2 = std::min(row_.size(), k + std::max<std::size_t>(k, 16));
        candidates& c = ws_.cand;
        if (masked_)
            kernels::top_k_unordered(row_, k2, tie_policy::exactly_k, c, mask_);
        else
            kernels::top_k_unordered(row_, k2, tie_policy::exactly_k, c);
        const std::size_t n = c.size();
        token_id* ids = c.id_storage();
        float* lg = c.logit_storage();
        float f = detail::f_inf;
        for (std::size_t i = 0; i < n; ++i) f = lg[i] < f ? lg[i] : f;  // valid entries only
        deferred_.values(deferred_.owner, ids, lg, n);
        std::size_t j = 0, above = 0;
        for (std::size_t i = 0; i < n; ++i) {  // a processed -inf leaves the set
            above += lg[i] > f;
            if (!(lg[i] > -detail::f_inf)) continue;
            ids[j] = ids[i];
            lg[j] = lg[i];
            ++j;
        }
        if (n == k2 && above < k) return false;
        c.resize(j);
        order_ = unordered;
        weights_ok_ = false;
        order();
        if (k < c.size()) {
            std::size_t m = k;
            if (ties == tie_policy::keep_ties)
                while (m < c.size() && c.logits()[m] == c.logits()[k - 1]) ++m;
            c.resize(m);
        }
        return true;
    }

    /// kernels::top_k of the row without the patched ids (and under the set's mask) into kept(),
    /// ordered: one masked pass with ws.unpatched as the mask (the processor stage cleared the
    /// patched ids' bits). With a mask of its own the set's words are and-ed in for the pass,
    /// and the buffer is made all ones but the patched bits again after it (O(V / 32)).
    void unpatched_top_k(std::size_t k, tie_policy ties) noexcept {
        std::uint32_t* bits = ws_.unpatched.data();
        std::size_t size = row_.size();
        if (masked_) {
            size = std::min(size, mask_.covered());
            for (std::size_t i = 0; i < kernels::bitmask_words(size); ++i)
                bits[i] &= mask_.words[i];
        }
        const kernels::token_bitmask m{
            .words = std::span<const std::uint32_t>(bits, kernels::bitmask_words(size)),
            .size = size};
        kernels::top_k(row_, k, ties, ws_.cand, m);
        if (!masked_) return;
        std::fill_n(bits, kernels::bitmask_words(size), ~0u);
        for (std::size_t i = 0; i < n_patches_; ++i) {
            const auto t = std::uint32_t(ws_.patches[i].id);
            bits[t / 32] &= ~(1u << (t % 32));
        }
    }
    /// Sets the patched ids' bits in ws.unpatched again (all ones: its invariant between calls):
    /// one bit per patch, or one fill of the buffer (16 KiB at V = 128256, a few hundred vector
    /// stores) when the patches are many (>= 1 per 16 words): that is cheaper than as many
    /// scattered read-modify-writes.
    void restore_unpatched_bits() noexcept {
        std::vector<std::uint32_t>& bits = ws_.unpatched;
        if (n_patches_ * 16 >= bits.size()) {
            std::fill(bits.begin(), bits.end(), ~0u);
            return;
        }
        for (std::size_t i = 0; i < n_patches_; ++i) {
            const auto t = std::uint32_t(ws_.patches[i].id);
            ws_.unpatched[t / 32] |= 1u << (t % 32);
        }
    }

    template <class Before>
    void sort_kept(Before&& before) noexcept {
        const std::size_t n = ws_.cand.size();
        const token_id* ids = ws_.cand.id_storage();
        const float* lg = ws_.cand.logit_storage();
        for (std::size_t i = 0; i < n; ++i) ws_.sorted[i] = {lg[i], ids[i]};
        std::sort(ws_.sorted.begin(), ws_.sorted.begin() + std::ptrdiff_t(n), before);
        write_back(n);
    }
    void note_weights(double sum) noexcept {
        weights_ok_ = true;
        sum_ok_ = true;
        weights_t_ = t_;
        sum_ = sum;
    }

    std::span<const float> row_;
    sampling_workspace& ws_;
    std::size_t n_patches_ = 0;
    bool overlay_ = false;
    bool masked_ = false;
    kernels::token_bitmask mask_{};
    bool full_ = true;
    order_kind order_ = by_id;
    float t_ = 1.f;
    // (mutable: settle() compacts a pending cut from const accessors)
    mutable bool weights_ok_ = false, sum_ok_ = false;
    mutable float weights_t_ = 1.f;
    mutable double sum_ = 0;
    mutable bool cut_pending_ = false;
    kernels::row_cut cut_{};
    detail::deferred_patches deferred_{};
    std::size_t cut_kept_ = 0;
    float cut_max_ = 0.f, cut_t_ = 1.f;
    double cut_sum_ = 0;
};

DECODEKIT_END_NAMESPACE
