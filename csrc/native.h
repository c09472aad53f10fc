/* relaxflow's C API over what tch 0.24 does not wrap, for speed where the GPU is: the fused Adam/AdamW update
 * (at::_fused_adam_ / at::_fused_adamw_, CPU and CUDA kernels; optim.cpp), autocast with a chosen dtype on the CPU
 * and CUDA and the float32 matmul precision (amp.cpp), CUDA graphs (graph.cpp, cargo feature `cuda-graphs`). Every call catches every C++ exception and returns an
 * rf_native_status; on failure *err receives a message allocated here, to be released with rf_native_free_error.
 * Rust side: src/native/ffi.rs (keep the two in step). */
#ifndef RELAXFLOW_NATIVE_H
#define RELAXFLOW_NATIVE_H

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
  RF_NATIVE_INVALID = 3,    /* bad arguments caught by the shim (null pointer, dtype, shape, device) */
  RF_NATIVE_UNSUPPORTED = 4 /* not in this build (CUDA graphs without the cargo feature `cuda-graphs`) */
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

/* RealNVP's affine coupling with an MLP conditioner as one autograd node with a hand-written backward (coupling.cpp):
 * x = [first | second] (`split` columns first); parity 0: x_a = first, x_b = second, else the reverse. h = MLP(x_a) with
 * `params` = weight_1, bias_1, ..., weight_L, bias_L (torch.nn.Linear layout) and hidden activation `act` (0 relu,
 * 1 tanh, 2 silu); log s = tanh(h[:, :d_b]), z_b = x_b * exp(log s) + h[:, d_b:], z = x with x_b replaced by z_b,
 * ldj = sum log s. Writes two new tensors (tch handles, freed by tch) to *z and *ldj. */
rf_native_status rf_affine_coupling(rf_tensor *x, int64_t split, int32_t parity, rf_tensor **params, int32_t n_params,
                                    int32_t act, rf_tensor **z, rf_tensor **ldj, char **err);

/* Autocast regions. device: 0 = CPU, 1 = CUDA; dtype: 0 = bfloat16, 1 = float16. `enter` records the previous
 * state of that device's autocast in *saved and turns it on with `dtype`; `exit` restores *saved (and drops the cast
 * cache when the outermost region closes). Autocast state is per thread, as in PyTorch. */
typedef struct {
  int32_t enabled;
  int32_t scalar_type; /* the previous c10::ScalarType, as an integer */
} rf_autocast_saved;

rf_native_status rf_autocast_enter(int32_t device, int32_t dtype, rf_autocast_saved *saved, char **err);
rf_native_status rf_autocast_exit(int32_t device, const rf_autocast_saved *saved, char **err);

/* torch.set_float32_matmul_precision: "highest" (no TF32), "high" (TF32 matmuls), "medium"; process-wide. */
rf_native_status rf_set_float32_matmul_precision(const char *precision, char **err);
/* The current setting: 0 = highest, 1 = high, 2 = medium. */
int32_t rf_float32_matmul_precision(void);

/* CUDA graphs (graph.cpp; only with the cargo feature `cuda-graphs`, else RF_NATIVE_UNSUPPORTED). Between
 * capture_begin and capture_end the CUDA work queued on this thread goes into the graph instead of running (on a
 * side stream from the pool, made current for the capture); replay runs it again on the current stream, reading and
 * writing the same memory. */
typedef struct rf_graph rf_graph;
int32_t rf_graph_available(void);
rf_native_status rf_graph_new(int32_t device, rf_graph **out, char **err);
rf_native_status rf_graph_capture_begin(rf_graph *g, char **err);
rf_native_status rf_graph_capture_end(rf_graph *g, char **err);
rf_native_status rf_graph_replay(rf_graph *g, char **err);
void rf_graph_free(rf_graph *g); /* NULL is fine */

void rf_native_free_error(char *err);

#ifdef __cplusplus
}
#endif
#endif
