// relaxflow's fused affine coupling (see native.h): RealNVP's coupling with an MLP conditioner as ONE autograd node
// (torch::autograd::Function) with a hand-written backward, instead of ~15 nodes of recorded ATen ops. Same kernels,
// none of the autograd bookkeeping per op, which is most of a small 2D flow's step on CPU cores.
//
// Forward (Dinh et al. 2017, eq. 7-8, with log s = tanh(h_s)):
//   a_0 = x_a;  u_l = a_{l-1} W_l^T + b_l;  a_l = act(u_l) (l < L);  h = u_L = [h_s | h_t]
//   log s = tanh(h_s);  z_b = x_b * exp(log s) + h_t;  ldj = sum_j log s_j
// Backward, from g_z = dL/dz_b and g_v = dL/dldj:
//   dL/dx_b = g_z * s;  dL/dh_t = g_z;  dL/dh_s = (g_z * x_b * s + g_v) * (1 - log s^2)
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
  // params: W_1, b_1, ..., W_L, b_L (torch.nn.Linear layout: W_l is [out, in]).
  static variable_list forward(AutogradContext *ctx, const at::Tensor &x_a, const at::Tensor &x_b, int64_t act,
                               at::TensorList params) {
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
    at::Tensor ldj = log_s.sum(1);
    saved.push_back(log_s);
    saved.push_back(s);
    for (const at::Tensor &p : params) saved.push_back(p);
    ctx->save_for_backward(saved);
    ctx->saved_data["layers"] = static_cast<int64_t>(layers);
    ctx->saved_data["act"] = act;
    return {z_b, ldj};
  }

  static variable_list backward(AutogradContext *ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const int64_t layers = ctx->saved_data["layers"].toInt();
    const int64_t act = ctx->saved_data["act"].toInt();
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

    at::Tensor g_z = grads[0].defined() ? grads[0] : at::zeros_like(x_b);
    at::Tensor g_logs = g_z * x_b * s;
    if (grads[1].defined()) g_logs = g_logs + grads[1].unsqueeze(1);
    at::Tensor g_xb = g_z * s;
    at::Tensor g = at::cat({at::tanh_backward(g_logs, log_s), g_z}, 1);  // dL/dh = [dL/dh_s | dL/dh_t]

    variable_list out(3 + 2 * layers);
    for (int64_t l = layers - 1; l >= 0; --l) {
      out[3 + 2 * l] = g.t().mm(inputs[l]);  // dL/dW_l
      out[3 + 2 * l + 1] = g.sum(0);         // dL/db_l
      at::Tensor g_in = g.mm(saved[p0 + 2 * l]);
      if (l > 0) {
        g = activate_backward(g_in, pre[l - 1], inputs[l], act);
      } else {
        out[0] = g_in;  // dL/dx_a
      }
    }
    out[1] = g_xb;
    return out;  // out[2] (the activation code) stays undefined
  }
};

const at::Tensor &need(const rf_tensor *t, const char *name) {
  if (t == nullptr || !t->defined()) throw Invalid{std::string(name) + " is null or undefined"};
  return *t;
}

}  // namespace

extern "C" {

rf_native_status rf_affine_coupling(rf_tensor *x_a, rf_tensor *x_b, rf_tensor **params, int32_t n_params, int32_t act,
                                    rf_tensor **z_b, rf_tensor **ldj, char **err) {
  return guarded(err, [&] {
    if (params == nullptr || n_params < 2 || n_params % 2 != 0) throw Invalid{"params must be (weight, bias) pairs"};
    if (act < RELU || act > SILU) throw Invalid{"act must be 0 (relu), 1 (tanh) or 2 (silu)"};
    if (z_b == nullptr || ldj == nullptr) throw Invalid{"output pointers are null"};
    const at::Tensor &a = need(x_a, "x_a");
    const at::Tensor &b = need(x_b, "x_b");
    if (a.dim() != 2 || b.dim() != 2 || a.size(0) != b.size(0)) throw Invalid{"x_a and x_b must be [batch, dim] with one batch"};
    std::vector<at::Tensor> ps;
    int64_t width = a.size(1);
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
    if (width != 2 * b.size(1)) throw Invalid{"the conditioner must give 2 * dim(x_b) outputs (log-scale and shift)"};
    variable_list out = AffineCoupling::apply(a, b, static_cast<int64_t>(act), at::TensorList(ps));
    *z_b = new at::Tensor(out[0]);
    *ldj = new at::Tensor(out[1]);
  });
}

}  // extern "C"
