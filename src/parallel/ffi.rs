//! The C API of `csrc/dist.h`, declared by hand (keep the two in step; `rf_dist_options` is `#[repr(C)]`).
use std::os::raw::c_char;

/// An opaque process group owned by the shim.
#[repr(C)]
pub struct RfDistGroup {
    _private: [u8; 0],
}

pub const RF_DIST_OK: i32 = 0;
pub const RF_DIST_ERROR: i32 = 1;
pub const RF_DIST_TIMEOUT: i32 = 2;
pub const RF_DIST_INVALID: i32 = 3;
pub const RF_DIST_UNSUPPORTED: i32 = 4;

pub const RF_STORE_TCP: i32 = 0;
pub const RF_STORE_FILE: i32 = 1;

pub const RF_OP_SUM: i32 = 0;
pub const RF_OP_MIN: i32 = 1;
pub const RF_OP_MAX: i32 = 2;

pub const RF_BACKEND_GLOO: i32 = 0;
pub const RF_BACKEND_NCCL: i32 = 1;

#[repr(C)]
pub struct RfDistOptions {
    pub store_kind: i32,
    pub host: *const c_char,
    pub port: u16,
    pub serve: i32,
    pub path: *const c_char,
    pub prefix: *const c_char,
    pub rank: i32,
    pub world_size: i32,
    pub timeout_ms: i64,
    pub backend: i32,
}

extern "C" {
    pub fn rf_dist_has_nccl() -> i32;
    pub fn rf_dist_group_new(opts: *const RfDistOptions, out: *mut *mut RfDistGroup, err: *mut *mut c_char) -> i32;
    /// `t` is tch's tensor handle (`Tensor::as_mut_ptr`), a `torch::Tensor*` on the C++ side; `op` is RF_OP_SUM,
    /// RF_OP_MIN or RF_OP_MAX.
    pub fn rf_dist_allreduce(g: *mut RfDistGroup, t: *mut torch_sys::C_tensor, op: i32, err: *mut *mut c_char) -> i32;
    pub fn rf_dist_broadcast(g: *mut RfDistGroup, t: *mut torch_sys::C_tensor, root: i32, err: *mut *mut c_char) -> i32;
    pub fn rf_dist_barrier(g: *mut RfDistGroup, err: *mut *mut c_char) -> i32;
    pub fn rf_dist_group_free(g: *mut RfDistGroup);
    pub fn rf_dist_free_error(err: *mut c_char);
}
