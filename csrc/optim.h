/* relaxflow's C API over ATen ops that tch 0.24 does not wrap, for speed where the GPU is: the fused Adam/AdamW
 * update (at::_fused_adam_ / at::_fused_adamw_, CPU and CUDA kernels). Every call catches every C++ exception and
 * returns an rf_native_status; on failure *err receives a message allocated here, to be released with
 * rf_native_free_error. Rust side: src/native/ffi.rs (keep the two in step). */
#ifndef RELAXFLOW_OPTIM_H
#define RELAXFLOW_OPTIM_H

#include <stdint.h>

#ifdef __cplusplus
namespace at { class Tensor; }
typedef at::Tensor rf_tensor; /* tch's tensor handle is a torch::Tensor* (torch-sys torch_api.h) */
extern "C" {
#else
typedef struct rf_tensor rf_tensor;
#endif

typedef enum {
  RF_NATIVE_OK = 0,
  RF_NATIVE_ERROR = 1,   /* ATen refused or failed (its message says why) */
  RF_NATIVE_INVALID = 3  /* bad arguments caught by the shim (null pointer, dtype, shape, device) */
} rf_native_status;

typedef struct {
  double lr;
  double beta1;
  double beta2;
  double eps;
  double weight_decay;
  int32_t decoupled; /* nonzero: AdamW's decoupled decay (theta *= 1 - lr * wd), else L2 added to the gradient */
} rf_adam_options;

/* One Adam update, in place, of the dense float tensors `param`, `exp_avg` (m) and `exp_avg_sq` (v) from `grad`
 * (same shape, dtype and device), at step `step`: a float32 scalar tensor on the parameters' device holding the
 * 1-based count of this update (the caller increments it first, as torch.optim does). `lr_tensor` (may be NULL) is a
 * float32 scalar on the parameters' device that replaces opts->lr (so a captured CUDA graph can change it). */
rf_native_status rf_fused_adam(rf_tensor *param, rf_tensor *grad, rf_tensor *exp_avg, rf_tensor *exp_avg_sq,
                               rf_tensor *step, rf_tensor *lr_tensor, const rf_adam_options *opts, char **err);

void rf_native_free_error(char *err);

#ifdef __cplusplus
}
#endif
#endif
