//! The C API of `csrc/native.h`, declared by hand (keep the two in step; the structs are `#[repr(C)]`).
use std::os::raw::c_char;

pub const RF_NATIVE_OK: i32 = 0;
pub const RF_NATIVE_ERROR: i32 = 1;
pub const RF_NATIVE_INVALID: i32 = 3;
pub const RF_NATIVE_UNSUPPORTED: i32 = 4;

/// An opaque CUDA graph owned by the shim.
#[repr(C)]
pub struct RfGraph {
    _private: [u8; 0],
}

#[repr(C)]
pub struct RfAdamOptions {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    pub decoupled: i32,
}

/// A device's autocast state before a region, restored when it closes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct RfAutocastSaved {
    pub enabled: i32,
    pub scalar_type: i32,
}

extern "C" {
    /// Tensors are tch's handles (`Tensor::as_mut_ptr`), `torch::Tensor*` on the C++ side; `lr_tensor` may be null.
    pub fn rf_fused_adam(
        param: *mut torch_sys::C_tensor,
        grad: *mut torch_sys::C_tensor,
        exp_avg: *mut torch_sys::C_tensor,
        exp_avg_sq: *mut torch_sys::C_tensor,
        step: *mut torch_sys::C_tensor,
        lr_tensor: *mut torch_sys::C_tensor,
        opts: *const RfAdamOptions,
        err: *mut *mut c_char,
    ) -> i32;
    /// `params`: weight, bias pairs; writes two new tch handles to `z` and `ldj`.
    pub fn rf_affine_coupling(
        x: *mut torch_sys::C_tensor,
        split: i64,
        parity: i32,
        params: *const *mut torch_sys::C_tensor,
        n_params: i32,
        act: i32,
        z: *mut *mut torch_sys::C_tensor,
        ldj: *mut *mut torch_sys::C_tensor,
        err: *mut *mut c_char,
    ) -> i32;
    pub fn rf_autocast_enter(device: i32, dtype: i32, saved: *mut RfAutocastSaved, err: *mut *mut c_char) -> i32;
    pub fn rf_autocast_exit(device: i32, saved: *const RfAutocastSaved, err: *mut *mut c_char) -> i32;
    pub fn rf_set_float32_matmul_precision(precision: *const c_char, err: *mut *mut c_char) -> i32;
    pub fn rf_float32_matmul_precision() -> i32;
    pub fn rf_graph_available() -> i32;
    pub fn rf_graph_new(device: i32, out: *mut *mut RfGraph, err: *mut *mut c_char) -> i32;
    pub fn rf_graph_capture_begin(g: *mut RfGraph, err: *mut *mut c_char) -> i32;
    pub fn rf_graph_capture_end(g: *mut RfGraph, err: *mut *mut c_char) -> i32;
    pub fn rf_graph_replay(g: *mut RfGraph, err: *mut *mut c_char) -> i32;
    pub fn rf_graph_free(g: *mut RfGraph);
    pub fn rf_native_free_error(err: *mut c_char);
}
