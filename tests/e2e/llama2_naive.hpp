#pragma once
// An independent, deliberately naive llama2.c forward pass for the e2e tests: whole sequence,
// layer by layer, no KV cache, scalar loops with double accumulation. It shares nothing with
// examples/llama2/model.hpp except the checkpoint struct (weights + layout).
#include <llama2/checkpoint.hpp>

#include <cmath>
#include <cstdint>
#include <vector>

namespace dk_naive {

using mat = std::vector<std::vector<float>>;  // [position][feature]

inline std::vector<float> apply(const float* w, const std::vector<float>& x, std::size_t out) {
    std::vector<float> y(out);
    for (std::size_t i = 0; i < out; ++i) {
        double s = 0;
        for (std::size_t j = 0; j < x.size(); ++j) s += double(w[i * x.size() + j]) * x[j];
        y[i] = float(s);
    }
    return y;
}

inline std::vector<float> norm(const std::vector<float>& x, const float* w) {
    double ss = 0;
    for (float v : x) ss += double(v) * v;
    const double r = 1.0 / std::sqrt(ss / double(x.size()) + 1e-5);
    std::vector<float> y(x.size());
    for (std::size_t i = 0; i < x.size(); ++i) y[i] = float(double(w[i]) * (r * x[i]));
    return y;
}

inline void rope(std::vector<float>& v, std::size_t pos, std::size_t head_size) {
    for (std::size_t i = 0; i + 1 < v.size(); i += 2) {
        const double freq = std::pow(10000.0, -double(i % head_size) / double(head_size));
        const double a = double(pos) * freq, c = std::cos(a), s = std::sin(a);
        const double x0 = v[i], x1 = v[i + 1];
        v[i] = float(x0 * c - x1 * s);
        v[i + 1] = float(x0 * s + x1 * c);
    }
}

/// Residual streams: result[l][pos] after layer l (0 = embeddings) for the whole sequence.
inline std::vector<mat> residuals(const dk_llama2::checkpoint& ck,
                                  const std::vector<std::int32_t>& tokens) {
    const auto& c = ck.cfg;
    const auto& L = ck.layout;
    const std::size_t D = std::size_t(c.dim), H = std::size_t(c.hidden_dim),
                      KV = std::size_t(c.kv_dim()), HS = std::size_t(c.head_size()),
                      T = tokens.size();
    const std::size_t group = std::size_t(c.n_heads / c.n_kv_heads);
    std::vector<mat> res;
    mat x(T, std::vector<float>(D));
    for (std::size_t t = 0; t < T; ++t)
        for (std::size_t i = 0; i < D; ++i)
            x[t][i] = ck.weights[L.token_embedding + std::size_t(tokens[t]) * D + i];
    res.push_back(x);
    for (std::size_t l = 0; l < std::size_t(c.n_layers); ++l) {
        mat q(T), k(T), v(T);
        for (std::size_t t = 0; t < T; ++t) {
            auto xn = norm(x[t], ck.tensor(L.rms_att + l * D));
            q[t] = apply(ck.tensor(L.wq + l * D * D), xn, D);
            k[t] = apply(ck.tensor(L.wk + l * KV * D), xn, KV);
            v[t] = apply(ck.tensor(L.wv + l * KV * D), xn, KV);
            rope(q[t], t, HS);
            rope(k[t], t, HS);
        }
        for (std::size_t t = 0; t < T; ++t) {
            std::vector<float> o(D, 0.f);
            for (std::size_t h = 0; h < std::size_t(c.n_heads); ++h) {
                const std::size_t kh = h / group;
                std::vector<double> s(t + 1);
                double mx = -1e300;
                for (std::size_t u = 0; u <= t; ++u) {
                    double d = 0;
                    for (std::size_t i = 0; i < HS; ++i)
                        d += double(q[t][h * HS + i]) * k[u][kh * HS + i];
                    s[u] = d / std::sqrt(double(HS));
                    mx = std::max(mx, s[u]);
                }
                double z = 0;
                for (auto& e : s) z += (e = std::exp(e - mx));
                for (std::size_t i = 0; i < HS; ++i) {
                    double acc = 0;
                    for (std::size_t u = 0; u <= t; ++u) acc += s[u] / z * v[u][kh * HS + i];
                    o[h * HS + i] = float(acc);
                }
            }
            auto proj = apply(ck.tensor(L.wo + l * D * D), o, D);
            for (std::size_t i = 0; i < D; ++i) x[t][i] += proj[i];
            auto xn = norm(x[t], ck.tensor(L.rms_ffn + l * D));
            auto a = apply(ck.tensor(L.w1 + l * H * D), xn, H);
            auto b = apply(ck.tensor(L.w3 + l * H * D), xn, H);
            for (std::size_t i = 0; i < H; ++i)
                a[i] = float(a[i] / (1.0 + std::exp(-double(a[i]))) * b[i]);
            auto down = apply(ck.tensor(L.w2 + l * D * H), a, D);
            for (std::size_t i = 0; i < D; ++i) x[t][i] += down[i];
        }
        res.push_back(x);
    }
    return res;
}

/// Logits of a residual vector: classifier(rmsnorm(x, rms_final)).
inline std::vector<float> readout(const dk_llama2::checkpoint& ck, const std::vector<float>& x) {
    return apply(ck.tensor(ck.layout.wcls), norm(x, ck.tensor(ck.layout.rms_final)),
                 std::size_t(ck.cfg.vocab_size));
}

/// Logits after the last layer at every position.
inline mat logits(const dk_llama2::checkpoint& ck, const std::vector<std::int32_t>& tokens) {
    auto res = residuals(ck, tokens);
    mat out;
    for (const auto& x : res.back()) out.push_back(readout(ck, x));
    return out;
}

inline std::int32_t argmax(const std::vector<float>& v) {
    std::size_t b = 0;
    for (std::size_t i = 1; i < v.size(); ++i)
        if (v[i] > v[b]) b = i;
    return std::int32_t(b);
}

}  // namespace dk_naive
