// relaxflow's fused optimizer step (see native.h): at::_fused_adam_ / at::_fused_adamw_ on one flat parameter buffer.
#include "native_util.hpp"

#include <ATen/ATen.h>

#include <optional>
#include <string>
#include <vector>

using rf_native::guarded;
using rf_native::Invalid;

namespace {

const at::Tensor &need(const rf_tensor *t, const char *name) {
  if (t == nullptr || !t->defined()) throw Invalid{std::string(name) + " is null or undefined"};
  return *t;
}

void same_as(const at::Tensor &t, const at::Tensor &param, const char *name) {
  if (t.sizes() != param.sizes() || t.scalar_type() != param.scalar_type() || t.device() != param.device())
    throw Invalid{std::string(name) + " must have the parameter's shape, dtype and device"};
}

}  // namespace

extern "C" {

rf_native_status rf_fused_adam(rf_tensor *param, rf_tensor *grad, rf_tensor *exp_avg, rf_tensor *exp_avg_sq,
                               rf_tensor *step, rf_tensor *lr_tensor, const rf_adam_options *opts, char **err) {
  return guarded(err, [&] {
    if (opts == nullptr) throw Invalid{"options are null"};
    const at::Tensor &p = need(param, "param");
    const at::Tensor &g = need(grad, "grad");
    const at::Tensor &m = need(exp_avg, "exp_avg");
    const at::Tensor &v = need(exp_avg_sq, "exp_avg_sq");
    const at::Tensor &s = need(step, "step");
    if (!p.is_floating_point()) throw Invalid{"param must be a floating-point tensor"};
    same_as(g, p, "grad");
    same_as(m, p, "exp_avg");
    same_as(v, p, "exp_avg_sq");
    if (s.numel() != 1 || s.scalar_type() != at::kFloat || s.device() != p.device())
      throw Invalid{"step must be a float32 scalar tensor on the parameters' device"};
    // The tensors are already views of relaxflow's flat buffers: one list entry each.
    std::vector<at::Tensor> ps{p}, gs{g}, ms{m}, vs{v}, steps{s}, none;
    const double wd = opts->weight_decay;
    if (lr_tensor != nullptr) {
      const at::Tensor &lr = need(lr_tensor, "lr_tensor");
      if (lr.numel() != 1 || lr.scalar_type() != at::kFloat || lr.device() != p.device())
        throw Invalid{"lr_tensor must be a float32 scalar tensor on the parameters' device"};
      if (opts->decoupled)
        at::_fused_adamw_(ps, gs, ms, vs, none, steps, lr, opts->beta1, opts->beta2, wd, opts->eps, false, false);
      else
        at::_fused_adam_(ps, gs, ms, vs, none, steps, lr, opts->beta1, opts->beta2, wd, opts->eps, false, false);
    } else if (opts->decoupled) {
      at::_fused_adamw_(ps, gs, ms, vs, none, steps, opts->lr, opts->beta1, opts->beta2, wd, opts->eps, false, false);
    } else {
      at::_fused_adam_(ps, gs, ms, vs, none, steps, opts->lr, opts->beta1, opts->beta2, wd, opts->eps, false, false);
    }
  });
}

void rf_native_free_error(char *err) { std::free(err); }

}  // extern "C"
