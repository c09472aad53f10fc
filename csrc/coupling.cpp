// relaxflow's fused affine coupling (see native.h): RealNVP's coupling with an MLP conditioner as ONE autograd node
// (torch::autograd::Function) with a hand-written backward, instead of ~15 nodes of recorded ATen ops. Same kernels,
// none of the autograd bookkeeping per op, which is most of a small 2D flow's step on CPU cores.
//
// Forward (Dinh et al. 2017, eq. 7-8, with log s = tanh(h_s)), x split into (x_a, x_b) and z joined in the same order:
//   a_0 = x_a;  u_l = a_{l-1} W_l^T + b_l;  a_l = act(u_l) (l < L);  h = u_L = [h_s | h_t]
//   log s = tanh(h_s);  z_a = x_a;  z_b = x_b * exp(log s) + h_t;  ldj = sum_j log s_j
// Backward, from g_z = dL/dz_b, dL/dz_a and g_v = dL/dldj:
//   dL/dx_b = g_z * s;  dL/dh_t = g_z;  dL/dh_s = (g_z * x_b * s + g_v) * (1 - log s^2);  dL/dx_a = dL/dz_a + dL/da_0
//   dL/dW_l = g_l^T a_{l-1};  dL/db_l = sum_rows g_l;  dL/da_{l-1} = g_l W_l;  g_{l-1} = dL/da_{l-1} * act'(u_{l-1})
#include "native_util.hpp"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include <string>
#include <vector>

using rf_native::guarded;
using rf_native::Invalid;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

namespace {

enum Act : int64_t { RELU = 0, TANH = 1, SILU = 2 };

at::Tensor activate(const at::Tensor &u, int64_t act) {
  switch (act) {
    case RELU: return at::relu(u);
    case TANH: return at::tanh(u);
    default: return at::silu(u);
  }
}

// dL/du from dL/da, with a = act(u).
at::Tensor activate_backward(const at::Tensor &g, const at::Tensor &u, const at::Tensor &a, int64_t act) {
  switch (act) {
    case RELU: return at::threshold_backward(g, a, 0);
    case TANH: return at::tanh_backward(g, a);
    default: return at::silu_backward(g, u);
  }
}

struct AffineCoupling : public torch::autograd::Function<AffineCoupling> {
  // x = [first | second] with `split` columns first; parity 0: x_a = first conditions x_b = second, 1: the reverse.
  // params: W_1, b_1, ..., W_L, b_L (torch.nn.Linear layout: W_l is [out, in]).
  static variable_list forward(AutogradContext *ctx, const at::Tensor &x, int64_t split, int64_t parity, int64_t act,
                               at::TensorList params) {
    at::Tensor first = x.narrow(1, 0, split), second = x.narrow(1, split, x.size(1) - split);
    const at::Tensor &x_a = parity ? second : first;
    const at::Tensor &x_b = parity ? first : second;
    const size_t layers = params.size() / 2;
    std::vector<at::Tensor> saved{x_b};
    at::Tensor a = x_a;
    for (size_t l = 0; l < layers; ++l) {
      saved.push_back(a);  // a_{l-1}, the layer's input
      at::Tensor u = at::addmm(params[2 * l + 1], a, params[2 * l].t());
      if (l + 1 < layers) {
        saved.push_back(u);
        a = activate(u, act);
      } else {
        a = u;
      }
    }
    const int64_t d = x_b.size(1);
    at::Tensor log_s = at::tanh(a.narrow(1, 0, d));
    at::Tensor s = at::exp(log_s);
    at::Tensor z_b = at::addcmul(a.narrow(1, d, d), x_b, s);
    at::Tensor z = parity ? at::cat({z_b, x_a}, 1) : at::cat({x_a, z_b}, 1);
    at::Tensor ldj = log_s.sum(1);
    saved.push_back(log_s);
    saved.push_back(s);
    for (const at::Tensor &p : params) saved.push_back(p);
    ctx->save_for_backward(saved);
    ctx->saved_data["layers"] = static_cast<int64_t>(layers);
    ctx->saved_data["act"] = act;
    ctx->saved_data["split"] = split;
    ctx->saved_data["parity"] = parity;
    return {z, ldj};
  }

  static variable_list backward(AutogradContext *ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const int64_t layers = ctx->saved_data["layers"].toInt();
    const int64_t act = ctx->saved_data["act"].toInt();
    const int64_t split = ctx->saved_data["split"].toInt();
    const bool parity = ctx->saved_data["parity"].toInt() != 0;
    // saved: x_b, then per layer a_{l-1} (and u_l for hidden layers), then log s, s, then the parameters.
    const at::Tensor &x_b = saved[0];
    std::vector<at::Tensor> inputs, pre;
    size_t k = 1;
    for (int64_t l = 0; l < layers; ++l) {
      inputs.push_back(saved[k++]);
      if (l + 1 < layers) pre.push_back(saved[k++]);
    }
    const at::Tensor &log_s = saved[k];
    const at::Tensor &s = saved[k + 1];
    const size_t p0 = k + 2;
    const int64_t d_a = inputs[0].size(1), d_b = x_b.size(1);

    // dL/dz split like z: z_a = x_a passes through, z_b is transformed.
    at::Tensor g_za, g_zb;
    if (grads[0].defined()) {
      at::Tensor head = grads[0].narrow(1, 0, split), tail = grads[0].narrow(1, split, d_a + d_b - split);
      g_za = parity ? tail : head;
      g_zb = parity ? head : tail;
    } else {
      g_za = at::zeros_like(inputs[0]);
      g_zb = at::zeros_like(x_b);
    }
    at::Tensor g_logs = g_zb * x_b * s;
    if (grads[1].defined()) g_logs = g_logs + grads[1].unsqueeze(1);
    at::Tensor g_xb = g_zb * s;
    at::Tensor g = at::cat({at::tanh_backward(g_logs, log_s), g_zb}, 1);  // dL/dh = [dL/dh_s | dL/dh_t]

    variable_list out(4 + 2 * layers);
    at::Tensor g_xa;
    for (int64_t l = layers - 1; l >= 0; --l) {
      out[4 + 2 * l] = g.t().mm(inputs[l]);  // dL/dW_l
      out[4 + 2 * l + 1] = g.sum(0);         // dL/db_l
      at::Tensor g_in = g.mm(saved[p0 + 2 * l]);
      if (l > 0) {
        g = activate_backward(g_in, pre[l - 1], inputs[l], act);
      } else {
        g_xa = g_in + g_za;  // through the conditioner, and straight through z_a = x_a
      }
    }
    out[0] = parity ? at::cat({g_xb, g_xa}, 1) : at::cat({g_xa, g_xb}, 1);
    return out;  // out[1..3] (split, parity, activation code) stay undefined
  }
};

const at::Tensor &need(const rf_tensor *t, const char *name) {
  if (t == nullptr || !t->defined()) throw Invalid{std::string(name) + " is null or undefined"};
  return *t;
}

}  // namespace

extern "C" {

rf_native_status rf_affine_coupling(rf_tensor *x, int64_t split, int32_t parity, rf_tensor **params, int32_t n_params,
                                    int32_t act, rf_tensor **z, rf_tensor **ldj, char **err) {
  return guarded(err, [&] {
    if (params == nullptr || n_params < 2 || n_params % 2 != 0) throw Invalid{"params must be (weight, bias) pairs"};
    if (act < RELU || act > SILU) throw Invalid{"act must be 0 (relu), 1 (tanh) or 2 (silu)"};
    if (z == nullptr || ldj == nullptr) throw Invalid{"output pointers are null"};
    const at::Tensor &input = need(x, "x");
    if (input.dim() != 2 || split < 1 || split >= input.size(1)) throw Invalid{"x must be [batch, dim] with 0 < split < dim"};
    const int64_t d_a = parity ? input.size(1) - split : split;
    const int64_t d_b = input.size(1) - d_a;
    std::vector<at::Tensor> ps;
    int64_t width = d_a;
    for (int32_t i = 0; i < n_params; i += 2) {
      const at::Tensor &w = need(params[i], "weight");
      const at::Tensor &bias = need(params[i + 1], "bias");
      if (w.dim() != 2 || w.size(1) != width || bias.dim() != 1 || bias.size(0) != w.size(0))
        throw Invalid{"layer " + std::to_string(i / 2) + ": weight must be [out, " + std::to_string(width) +
                      "] and bias [out]"};
      width = w.size(0);
      ps.push_back(w);
      ps.push_back(bias);
    }
    if (width != 2 * d_b) throw Invalid{"the conditioner must give 2 * dim(x_b) outputs (log-scale and shift)"};
    variable_list out = AffineCoupling::apply(input, split, static_cast<int64_t>(parity != 0), static_cast<int64_t>(act),
                                              at::TensorList(ps));
    *z = new at::Tensor(out[0]);
    *ldj = new at::Tensor(out[1]);
  });
}

}  // extern "C"
