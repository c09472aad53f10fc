//! What tch 0.24 does not wrap, reached through the C++ shim `csrc/native.h` (compiled by build.rs against the
//! wheel's headers): the fused Adam / AdamW update (`at::_fused_adam_`, `at::_fused_adamw_`; CPU and CUDA kernels;
//! here), mixed precision (`amp`: bf16 autocast on the CPU and CUDA, TF32 matmuls) and CUDA graphs (`graph`, with a
//! plain fallback on the CPU and in builds without the feature `cuda-graphs`). Every C++ exception stops at
//! the C boundary and comes back as a status and a message, turned into an `anyhow` error naming the operation. This
//! module imports nothing else of the crate.
pub mod amp;
pub mod coupling;
pub mod ffi;
pub mod graph;

use anyhow::{anyhow, Result};
use std::ffi::CStr;
use std::os::raw::c_char;
use std::ptr;
use tch::Tensor;

/// Adam's constants for [`fused_adam`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamOptions {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// AdamW's decoupled decay θ ← θ(1 - lr·wd) (else L2: wd·θ added to the gradient).
    pub decoupled: bool,
}

/// tch's handle of `t` (a `torch::Tensor*`) for the shim. The shim writes into the tensors' storage, as any in-place
/// op does, but never into the handle, so a shared borrow is enough.
fn handle(t: &Tensor) -> *mut torch_sys::C_tensor {
    t.as_ptr() as *mut torch_sys::C_tensor
}

/// The message a C shim wrote into its error slot (both relaxflow shims, this one and the c10d one in
/// `parallel::ffi`, use the convention), released with that shim's `free`; "no message" when the slot is empty.
pub(crate) fn take_message(err: *mut c_char, free: unsafe extern "C" fn(*mut c_char)) -> String {
    if err.is_null() {
        return "no message".to_string();
    }
    // SAFETY: a non-null err is a NUL-terminated string the shim allocated for us, freed once here.
    let m = unsafe { CStr::from_ptr(err) }.to_string_lossy().trim().to_string();
    unsafe { free(err) };
    m
}

/// Runs one shim call and turns a failure into an error naming `what`.
pub(crate) fn call(what: &str, f: impl FnOnce(*mut *mut c_char) -> i32) -> Result<()> {
    let mut err: *mut c_char = ptr::null_mut();
    let status = f(&mut err);
    if status == ffi::RF_NATIVE_OK {
        return Ok(());
    }
    let msg = take_message(err, ffi::rf_native_free_error);
    let kind = match status {
        ffi::RF_NATIVE_INVALID => " (invalid argument)",
        ffi::RF_NATIVE_UNSUPPORTED => " (unsupported)",
        _ => "",
    };
    Err(anyhow!("{what}{kind}: {msg}"))
}

/// One fused Adam update, in place, of `param`, `m` and `v` from `grad` (dense tensors of one shape, dtype and
/// device) at `step`, a float32 scalar on the same device holding this update's 1-based count (incremented by the
/// caller first, as torch.optim does). `lr`: a float32 scalar tensor on the device that replaces `opts.lr` (for code
/// that must not change its arguments between calls, e.g. a captured CUDA graph), or None.
///
/// The same arithmetic as torch.optim.Adam(fused=True) / AdamW(fused=True): m ← lerp(m, g, 1-β₁),
/// v ← β₂v + (1-β₂)g², θ ← θ - lr/(1-β₁ᵗ) · m / (√v/√(1-β₂ᵗ) + ε), after θ ← θ(1 - lr·wd) when decoupled.
pub fn fused_adam(param: &Tensor, grad: &Tensor, m: &Tensor, v: &Tensor, step: &Tensor, lr: Option<&Tensor>, opts: &AdamOptions) -> Result<()> {
    let o = ffi::RfAdamOptions {
        lr: opts.lr,
        beta1: opts.beta1,
        beta2: opts.beta2,
        eps: opts.eps,
        weight_decay: opts.weight_decay,
        decoupled: opts.decoupled as i32,
    };
    let lr_ptr = lr.map_or(ptr::null_mut(), handle);
    call("fused Adam step (at::_fused_adam_)", |err| unsafe {
        // SAFETY: every pointer is a live tch tensor handle borrowed for the call; the shim keeps none of them.
        ffi::rf_fused_adam(handle(param), handle(grad), handle(m), handle(v), handle(step), lr_ptr, &o, err)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    const OPTS: (Kind, Device) = (Kind::Float, Device::Cpu);

    fn opts(weight_decay: f64, decoupled: bool) -> AdamOptions {
        AdamOptions { lr: 1e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay, decoupled }
    }

    /// Adam written out with tensor ops in f64, the reference for one update.
    fn reference(p: &Tensor, g: &Tensor, m: &Tensor, v: &Tensor, t: i32, o: &AdamOptions) -> (Tensor, Tensor, Tensor) {
        let (p, g, m, v) = (p.to_kind(Kind::Double), g.to_kind(Kind::Double), m.to_kind(Kind::Double), v.to_kind(Kind::Double));
        let (p, g) = if o.decoupled { (p * (1.0 - o.lr * o.weight_decay), g) } else { (p.shallow_clone(), g + &p * o.weight_decay) };
        let m = m * o.beta1 + &g * (1.0 - o.beta1);
        let v = v * o.beta2 + g.square() * (1.0 - o.beta2);
        let denom = (&v / (1.0 - o.beta2.powi(t))).sqrt() + o.eps;
        let p = p - &m / denom * (o.lr / (1.0 - o.beta1.powi(t)));
        (p, m, v)
    }

    #[test]
    fn fused_adam_and_adamw_match_the_formula() {
        for (wd, decoupled) in [(0.0, true), (0.1, true), (0.1, false)] {
            tch::manual_seed(3);
            let o = opts(wd, decoupled);
            let p = Tensor::randn([257], OPTS);
            let g = Tensor::randn([257], OPTS);
            let m = Tensor::randn([257], OPTS) * 0.1;
            let v = Tensor::rand([257], OPTS) * 0.1;
            let (want_p, want_m, want_v) = reference(&p, &g, &m, &v, 3, &o);
            let step = Tensor::from(3.0f32);
            fused_adam(&p, &g, &m, &v, &step, None, &o).unwrap();
            for (name, got, want) in [("param", &p, &want_p), ("m", &m, &want_m), ("v", &v, &want_v)] {
                let diff = (got.to_kind(Kind::Double) - want).abs().max().double_value(&[]);
                assert!(diff < 1e-6, "wd {wd} decoupled {decoupled}: {name} differs by {diff}");
            }
        }
    }

    #[test]
    fn a_learning_rate_tensor_replaces_the_number() {
        let o = opts(0.0, true);
        let (p1, p2) = (Tensor::ones([8], OPTS), Tensor::ones([8], OPTS));
        let g = Tensor::full([8], 0.5, OPTS);
        let (m1, v1, m2, v2) = (g.zeros_like(), g.zeros_like(), g.zeros_like(), g.zeros_like());
        let step = Tensor::from(1.0f32);
        fused_adam(&p1, &g, &m1, &v1, &step, None, &AdamOptions { lr: 0.25, ..o }).unwrap();
        fused_adam(&p2, &g, &m2, &v2, &step, Some(&Tensor::from(0.25f32)), &AdamOptions { lr: 99.0, ..o }).unwrap();
        assert_eq!((&p1 - &p2).abs().max().double_value(&[]), 0.0);
        assert!((p1.double_value(&[0]) - 0.75).abs() < 1e-6, "first step moves by lr: {}", p1.double_value(&[0]));
    }

    #[test]
    fn bad_arguments_are_errors_not_crashes() {
        let o = opts(0.0, true);
        let p = Tensor::zeros([4], OPTS);
        let step = Tensor::from(1.0f32);
        let short = Tensor::zeros([3], OPTS);
        let err = fused_adam(&p, &short, &p.zeros_like(), &p.zeros_like(), &step, None, &o).unwrap_err().to_string();
        assert!(err.contains("invalid argument") && err.contains("grad"), "{err}");
        let int_step = Tensor::from(1i64);
        let err = fused_adam(&p, &p.zeros_like(), &p.zeros_like(), &p.zeros_like(), &int_step, None, &o).unwrap_err().to_string();
        assert!(err.contains("step must be a float32 scalar"), "{err}");
        let doubles = Tensor::zeros([4], (Kind::Double, Device::Cpu));
        let err = fused_adam(&p, &doubles, &p.zeros_like(), &p.zeros_like(), &step, None, &o).unwrap_err().to_string();
        assert!(err.contains("fused Adam step"), "{err}");
    }
}
