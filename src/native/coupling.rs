//! RealNVP's affine coupling with an MLP conditioner as one autograd node (`csrc/coupling.cpp`): the same ATen
//! kernels as the op-by-op version, with a hand-written backward instead of ~15 recorded nodes, which is most of a
//! small 2D flow's training step on CPU cores (`make bench`).
use super::{call, ffi, handle};
use anyhow::Result;
use std::ptr;
use tch::Tensor;

/// The conditioner's hidden activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    Relu = 0,
    Tanh = 1,
    Silu = 2,
}

/// The coupling of `x` = [first | second] (`split` columns first; `parity`: second conditions first, else first
/// conditions second): h = MLP(x_a) (`params` = weight_1, bias_1, ..., weight_L, bias_L; weights `[out, in]`),
/// log s = tanh(h[:, :d]), z_b = x_b · exp(log s) + h[:, d:], z = x with x_b replaced by z_b, and ldj = Σ log s per row
/// (Dinh et al. 2017, eq. 7-8). Differentiable in every input through one node whose backward is the chain rule
/// written out (checked against autograd of the op-by-op version in `flows::coupling`).
pub fn affine_coupling(x: &Tensor, split: i64, parity: bool, params: &[&Tensor], act: Act) -> Result<(Tensor, Tensor)> {
    let handles: Vec<*mut torch_sys::C_tensor> = params.iter().map(|t| handle(t)).collect();
    let (mut z, mut ldj) = (ptr::null_mut(), ptr::null_mut());
    call("fused affine coupling", |err| unsafe {
        // SAFETY: every pointer is a live tch handle borrowed for the call; the outputs are new handles we own.
        ffi::rf_affine_coupling(handle(x), split, parity as i32, handles.as_ptr(), handles.len() as i32, act as i32, &mut z, &mut ldj, err)
    })?;
    // SAFETY: on success the shim wrote two `new at::Tensor` handles, which tch frees on drop.
    Ok(unsafe { (Tensor::from_ptr(z), Tensor::from_ptr(ldj)) })
}
