// relaxflow's mixed precision (see native.h): autocast regions with a chosen dtype on the CPU and CUDA (tch's own
// autocast calls the deprecated CUDA-only switch, so fp16 on CUDA only), and the float32 matmul precision (TF32).
#include "native_util.hpp"

#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>

#include <string>

using rf_native::guarded;
using rf_native::Invalid;

namespace {

at::DeviceType device_type(int32_t device) {
  switch (device) {
    case 0:
      return at::kCPU;
    case 1:
      return at::kCUDA;
    default:
      throw Invalid{"autocast device must be 0 (CPU) or 1 (CUDA), got " + std::to_string(device)};
  }
}

at::ScalarType scalar_type(int32_t dtype) {
  switch (dtype) {
    case 0:
      return at::kBFloat16;
    case 1:
      return at::kHalf;
    default:
      throw Invalid{"autocast dtype must be 0 (bfloat16) or 1 (float16), got " + std::to_string(dtype)};
  }
}

}  // namespace

extern "C" {

rf_native_status rf_autocast_enter(int32_t device, int32_t dtype, rf_autocast_saved *saved, char **err) {
  return guarded(err, [&] {
    if (saved == nullptr) throw Invalid{"saved is null"};
    const at::DeviceType d = device_type(device);
    const at::ScalarType t = scalar_type(dtype);
    saved->enabled = at::autocast::is_autocast_enabled(d) ? 1 : 0;
    saved->scalar_type = static_cast<int32_t>(at::autocast::get_autocast_dtype(d));
    at::autocast::set_autocast_dtype(d, t);
    at::autocast::set_autocast_enabled(d, true);
    at::autocast::increment_nesting();
  });
}

rf_native_status rf_autocast_exit(int32_t device, const rf_autocast_saved *saved, char **err) {
  return guarded(err, [&] {
    if (saved == nullptr) throw Invalid{"saved is null"};
    const at::DeviceType d = device_type(device);
    // As torch.autocast's __exit__: the cached low-precision copies of the weights go with the outermost region.
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    at::autocast::set_autocast_enabled(d, saved->enabled != 0);
    at::autocast::set_autocast_dtype(d, static_cast<at::ScalarType>(saved->scalar_type));
  });
}

rf_native_status rf_set_float32_matmul_precision(const char *precision, char **err) {
  return guarded(err, [&] {
    if (precision == nullptr) throw Invalid{"precision is null"};
    const std::string p(precision);
    if (p != "highest" && p != "high" && p != "medium")
      throw Invalid{"float32 matmul precision must be highest, high or medium, got `" + p + "`"};
    at::globalContext().setFloat32MatmulPrecision(p);
  });
}

int32_t rf_float32_matmul_precision(void) {
  switch (at::globalContext().float32MatmulPrecision()) {
    case at::Float32MatmulPrecision::HIGHEST:
      return 0;
    case at::Float32MatmulPrecision::HIGH:
      return 1;
    default:
      return 2;
  }
}

}  // extern "C"
