// Attention over a key table, for vizattn's "native" backend (vizattn/native.py); the rules are
// those of vizattn.functional.attend. Each query n of a (batch, head) slice attends to the K
// tokens keys[n, s] (-1: an empty slot), with optional additive terms per slot. An empty slot is
// skipped, or, with zero_slots (SASA's zero padding), is a zero key and value whose logit is its term.
//
// Shapes: q [S, N, d], k [S, N, d], v [S, N, dv] contiguous (S = B * heads slices); keys [N, K]
// int64; terms [Bt, Ht, N, K] with Bt in {1, B}, Ht in {1, heads}, or none. order [N]: the order
// in which queries (and, in backward, key tokens) are visited, a permutation that puts queries
// with shared keys next to each other (a block's or a grid line's members), so their keys stay in cache.
// Rows of d = dv = V * (64 bytes) (e.g. head_dim 16, 32, 48, 64 in float32) are held in registers
// as V vectors of 64 bytes (GCC vector extensions: the compiler maps them onto the ISA it targets);
// other rows use plain loops.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

namespace {

constexpr int64_t GRAIN = 16;  // queries per parallel task

typedef float vec_f __attribute__((vector_size(64)));
typedef double vec_d __attribute__((vector_size(64)));
template <typename T>
struct VecOf;
template <>
struct VecOf<float> {
  typedef vec_f type;
};
template <>
struct VecOf<double> {
  typedef vec_d type;
};
template <typename T>
using vec = typename VecOf<T>::type;
template <typename T>
constexpr int LANES = 64 / sizeof(T);

inline float hsum(vec_f x) {
  typedef float v8 __attribute__((vector_size(32)));
  typedef float v4 __attribute__((vector_size(16)));
  v8 a = __builtin_shufflevector(x, x, 0, 1, 2, 3, 4, 5, 6, 7) +
         __builtin_shufflevector(x, x, 8, 9, 10, 11, 12, 13, 14, 15);
  v4 b = __builtin_shufflevector(a, a, 0, 1, 2, 3) + __builtin_shufflevector(a, a, 4, 5, 6, 7);
  return (b[0] + b[2]) + (b[1] + b[3]);
}

inline double hsum(vec_d x) {
  typedef double v4 __attribute__((vector_size(32)));
  v4 a = __builtin_shufflevector(x, x, 0, 1, 2, 3) + __builtin_shufflevector(x, x, 4, 5, 6, 7);
  return (a[0] + a[2]) + (a[1] + a[3]);
}

// A row of d values kept in V vector registers (V > 0: d == V * LANES) ...
template <typename T, int V>
struct Row {
  vec<T> x[V];
  Row(T*, int64_t) {}
  static vec<T> at(const T* y, int c) {
    vec<T> r;
    std::memcpy(&r, y + c * LANES<T>, sizeof r);
    return r;
  }
  void zero() {
    for (int c = 0; c < V; ++c) x[c] = vec<T>{};
  }
  void load(const T* y) {
    for (int c = 0; c < V; ++c) x[c] = at(y, c);
  }
  void store(T* y) const { std::memcpy(y, x, sizeof x); }
  void fma(T a, const T* y) {  // x += a * y
    for (int c = 0; c < V; ++c) x[c] += a * at(y, c);
  }
  T dot(const T* y) const {
    vec<T> acc = x[0] * at(y, 0);
    for (int c = 1; c < V; ++c) acc += x[c] * at(y, c);
    return hsum(acc);
  }
};

// ... or in a scratch buffer of any length (V == 0).
template <typename T>
struct Row<T, 0> {
  T* x;
  int64_t d;
  Row(T* scratch, int64_t d) : x(scratch), d(d) {}
  void zero() {
    for (int64_t c = 0; c < d; ++c) x[c] = 0;
  }
  void load(const T* y) { std::memcpy(x, y, d * sizeof(T)); }
  void store(T* y) const { std::memcpy(y, x, d * sizeof(T)); }
  void fma(T a, const T* y) {
    for (int64_t c = 0; c < d; ++c) x[c] += a * y[c];
  }
  T dot(const T* y) const {
    T acc = 0;
    for (int64_t c = 0; c < d; ++c) acc += x[c] * y[c];
    return acc;
  }
};

// x[s] = exp(x[s]) for x <= 0 (-inf -> 0, NaN stays NaN). float: a branch-free polynomial the compiler
// vectorises (2^n * exp(r), |r| <= ln2 / 2, Taylor to r^7: truncation below 1e-8, so float rounding
// dominates); double: std::exp.
inline void exp_nonpositive(float* x, int64_t K) {
  for (int64_t s = 0; s < K; ++s) {
    const float y = x[s] >= -87.0f ? x[s] : -87.0f;  // NaN -> -87: a finite value to convert to int
    const float n = (y * 1.44269504f + 12582912.0f) - 12582912.0f;  // round to nearest: 1.5 * 2^23
    const float r = (y - n * 0.693145752f) - n * 1.42860677e-6f;  // ln2 split in two parts
    float p = 1.0f / 5040;
    p = p * r + 1.0f / 720;
    p = p * r + 1.0f / 120;
    p = p * r + 1.0f / 24;
    p = p * r + 1.0f / 6;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
    float scale;
    std::memcpy(&scale, &bits, sizeof scale);
    x[s] = x[s] < -87.0f ? 0.0f : x[s] != x[s] ? x[s] : p * scale;
  }
}

inline void exp_nonpositive(double* x, int64_t K) {
  for (int64_t s = 0; s < K; ++s) x[s] = std::exp(x[s]);
}

// Where slice s's terms start (broadcast over batch and/or heads), or nullptr without terms.
template <typename T>
inline const T* terms_of(const T* terms, int64_t s, int64_t heads, int64_t Bt, int64_t Ht, int64_t NK) {
  if (terms == nullptr) return nullptr;
  const int64_t b = Bt == 1 ? 0 : s / heads, h = Ht == 1 ? 0 : s % heads;
  return terms + (b * Ht + h) * NK;
}

struct Sizes {
  int64_t S, N, K, d, dv, heads;
};

template <typename T, int V>
void forward_kernel(const T* q, const T* k, const T* v, const int64_t* keys, const int64_t* order, const T* terms,
                    int64_t Bt, int64_t Ht, T* out, T* p, Sizes z, T scale, bool zero_slots) {
  const T minus_inf = -std::numeric_limits<T>::infinity();
  at::parallel_for(0, z.S * z.N, GRAIN, [&](int64_t begin, int64_t end) {
    std::vector<T> scratch(z.d + z.dv);
    Row<T, V> qn(scratch.data(), z.d), on(scratch.data() + z.d, z.dv);
    for (int64_t u = begin; u < end; ++u) {
      const int64_t s = u / z.N, n = order[u % z.N], i = s * z.N + n;
      const int64_t* kn = keys + n * z.K;
      const T* tn = terms_of(terms, s, z.heads, Bt, Ht, z.N * z.K);
      tn = tn == nullptr ? nullptr : tn + n * z.K;
      const T* ks = k + s * z.N * z.d;
      const T* vs = v + s * z.N * z.dv;
      T* pn = p + i * z.K;
      qn.load(q + i * z.d);
      T top = minus_inf;
      bool live = zero_slots;  // does the query have a slot in the softmax at all
      for (int64_t slot = 0; slot < z.K; ++slot) {
        const int64_t j = kn[slot];
        T logit = minus_inf;
        if (j >= 0) {
          logit = scale * qn.dot(ks + j * z.d) + (tn ? tn[slot] : T(0));
          live = true;
        } else if (zero_slots) {
          logit = tn ? tn[slot] : T(0);
        }
        pn[slot] = logit;
        top = logit > top ? logit : top;
      }
      on.zero();
      if (!live) {  // no slot at all: zero output, zero weights
        for (int64_t slot = 0; slot < z.K; ++slot) pn[slot] = 0;
        on.store(out + i * z.dv);
        continue;
      }
      for (int64_t slot = 0; slot < z.K; ++slot) pn[slot] -= top;
      exp_nonpositive(pn, z.K);
      T total = 0;
      for (int64_t slot = 0; slot < z.K; ++slot) total += pn[slot];
      if (!(total < std::numeric_limits<T>::infinity())) {
        // a NaN logit, an inf one, or all live ones -inf (from a NaN or inf in q or a key's k): as in
        // torch's softmax, every weight and the output are NaN; a slot without a key still weighs 0
        const T nan = std::numeric_limits<T>::quiet_NaN();
        for (int64_t slot = 0; slot < z.K; ++slot) pn[slot] = kn[slot] >= 0 || zero_slots ? nan : T(0);
        for (int64_t c = 0; c < z.dv; ++c) out[i * z.dv + c] = nan;
        continue;
      }
      const T inv = T(1) / total;
      for (int64_t slot = 0; slot < z.K; ++slot) {
        pn[slot] *= inv;
        const int64_t j = kn[slot];
        if (j >= 0) on.fma(pn[slot], vs + j * z.dv);
      }
      on.store(out + i * z.dv);
    }
  });
}

// Pass 1, per query: dS = p * (g - sum p g) with g = dO . v_j (+ the weights' own gradient), and dq.
template <typename T, int V>
void query_grads(const T* k, const T* v, const int64_t* keys, const int64_t* order, const T* p, const T* grad_out,
                 const T* grad_p, T* ds, T* dq, Sizes z, T scale) {
  at::parallel_for(0, z.S * z.N, GRAIN, [&](int64_t begin, int64_t end) {
    std::vector<T> scratch(z.d + z.dv);
    Row<T, V> gn(scratch.data(), z.dv), dqn(scratch.data() + z.dv, z.d);
    for (int64_t u = begin; u < end; ++u) {
      const int64_t s = u / z.N, n = order[u % z.N], i = s * z.N + n;
      const int64_t* kn = keys + n * z.K;
      const T* pn = p + i * z.K;
      const T* vs = v + s * z.N * z.dv;
      const T* ks = k + s * z.N * z.d;
      T* dsn = ds + i * z.K;
      gn.load(grad_out + i * z.dv);
      T mean = 0;
      for (int64_t slot = 0; slot < z.K; ++slot) {
        const int64_t j = kn[slot];
        T g = j >= 0 ? gn.dot(vs + j * z.dv) : T(0);
        if (grad_p) g += grad_p[i * z.K + slot];
        dsn[slot] = g;
        mean += pn[slot] * g;
      }
      dqn.zero();
      for (int64_t slot = 0; slot < z.K; ++slot) {
        dsn[slot] = pn[slot] * (dsn[slot] - mean);
        const int64_t j = kn[slot];
        if (j >= 0) dqn.fma(scale * dsn[slot], ks + j * z.d);
      }
      dqn.store(dq + i * z.d);
    }
  });
}

// Pass 2, per key token j: dk_j = scale * sum dS q_n and dv_j = sum p dO_n over the (n, slot) pairs
// that use j (inverse table: inv_slot[inv_start[j] : inv_start[j + 1]] holds n * K + slot). Each
// task writes only its own keys' rows: no races, and the sums run in a fixed order.
template <typename T, int V>
void key_grads(const T* q, const T* p, const T* grad_out, const T* ds, const int64_t* order, const int64_t* inv_start,
               const int64_t* inv_slot, T* dk, T* dvv, Sizes z, T scale) {
  at::parallel_for(0, z.S * z.N, GRAIN, [&](int64_t begin, int64_t end) {
    std::vector<T> scratch(z.d + z.dv);
    Row<T, V> dkj(scratch.data(), z.d), dvj(scratch.data() + z.d, z.dv);
    for (int64_t u = begin; u < end; ++u) {
      const int64_t s = u / z.N, j = order[u % z.N], i = s * z.N + j;
      dkj.zero();
      dvj.zero();
      for (int64_t w = inv_start[j]; w < inv_start[j + 1]; ++w) {
        const int64_t flat = s * z.N * z.K + inv_slot[w], n = inv_slot[w] / z.K;
        dkj.fma(scale * ds[flat], q + (s * z.N + n) * z.d);
        dvj.fma(p[flat], grad_out + (s * z.N + n) * z.dv);
      }
      dkj.store(dk + i * z.d);
      dvj.store(dvv + i * z.dv);
    }
  });
}

// Calls body.template operator()<V>() with the register width that fits rows of d = dv values.
template <typename T, typename F>
void by_width(const Sizes& z, F&& body) {
  const int64_t lanes = LANES<T>;
  const int64_t V = z.d == z.dv && z.d % lanes == 0 ? z.d / lanes : 0;
  switch (V) {
    case 1: return body.template operator()<1>();
    case 2: return body.template operator()<2>();
    case 3: return body.template operator()<3>();
    case 4: return body.template operator()<4>();
    default: return body.template operator()<0>();
  }
}

void check(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.is_contiguous(), name, " must be contiguous CPU tensors");
}

}  // namespace

// -> (out [S, N, dv], p [S, N, K])
std::vector<at::Tensor> slot_forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                     const at::Tensor& keys, const at::Tensor& order,
                                     const c10::optional<at::Tensor>& terms, double scale, bool zero_slots,
                                     int64_t heads) {
  for (auto* t : {&q, &k, &v, &keys, &order}) check(*t, "q, k, v, keys and order");
  const Sizes z{q.size(0), q.size(1), keys.size(1), q.size(2), v.size(2), heads};
  auto out = at::empty({z.S, z.N, z.dv}, q.options());
  auto p = at::empty({z.S, z.N, z.K}, q.options());
  const bool has_terms = terms.has_value() && terms->defined();
  if (has_terms) check(*terms, "terms");
  const int64_t Bt = has_terms ? terms->size(0) : 1, Ht = has_terms ? terms->size(1) : 1;
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "slot_forward", [&] {
    using T = scalar_t;
    by_width<T>(z, [&]<int V>() {
      forward_kernel<T, V>(q.data_ptr<T>(), k.data_ptr<T>(), v.data_ptr<T>(), keys.data_ptr<int64_t>(),
                           order.data_ptr<int64_t>(), has_terms ? terms->data_ptr<T>() : nullptr, Bt, Ht,
                           out.data_ptr<T>(), p.data_ptr<T>(), z, static_cast<T>(scale), zero_slots);
    });
  });
  return {out, p};
}

// -> (dq, dk, dv, dS [S, N, K]: the gradient of the logits, i.e. of the terms)
std::vector<at::Tensor> slot_backward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                      const at::Tensor& keys, const at::Tensor& order, const at::Tensor& p,
                                      const at::Tensor& grad_out, const c10::optional<at::Tensor>& grad_p,
                                      const at::Tensor& inv_start, const at::Tensor& inv_slot, double scale) {
  for (auto* t : {&q, &k, &v, &keys, &order, &p, &grad_out, &inv_start, &inv_slot}) check(*t, "backward inputs");
  const bool has_gp = grad_p.has_value() && grad_p->defined();
  if (has_gp) check(*grad_p, "grad_p");
  const Sizes z{q.size(0), q.size(1), keys.size(1), q.size(2), v.size(2), 1};
  auto dq = at::empty_like(q), dk = at::empty_like(k), dvv = at::empty_like(v), ds = at::empty_like(p);
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "slot_backward", [&] {
    using T = scalar_t;
    const auto sc = static_cast<T>(scale);
    by_width<T>(z, [&]<int V>() {
      query_grads<T, V>(k.data_ptr<T>(), v.data_ptr<T>(), keys.data_ptr<int64_t>(), order.data_ptr<int64_t>(),
                        p.data_ptr<T>(),
                        grad_out.data_ptr<T>(), has_gp ? grad_p->data_ptr<T>() : nullptr, ds.data_ptr<T>(),
                        dq.data_ptr<T>(), z, sc);
      key_grads<T, V>(q.data_ptr<T>(), p.data_ptr<T>(), grad_out.data_ptr<T>(), ds.data_ptr<T>(),
                      order.data_ptr<int64_t>(), inv_start.data_ptr<int64_t>(), inv_slot.data_ptr<int64_t>(),
                      dk.data_ptr<T>(), dvv.data_ptr<T>(), z, sc);
    });
  });
  return {dq, dk, dvv, ds};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &slot_forward, "attention over a key table: (out, weights)");
  m.def("backward", &slot_backward, "its gradients: (dq, dk, dv, dlogits)");
}
