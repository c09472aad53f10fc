//! Mixed precision through the shim: autocast regions with a chosen dtype on the CPU and CUDA (tch's own
//! `tch::autocast` only reaches the deprecated CUDA-only switch, hence fp16 on CUDA only), TF32 matmuls, and the
//! process's network precision that the image networks (U-Net, the flows' ResNet conditioners) read.
//!
//! `Precision::Bf16` runs those networks' forward passes under bf16 autocast and returns their outputs in f32, so the
//! weights stay f32 (autocast casts them per op) and everything around the networks -- log-determinants, likelihoods,
//! losses, ODE and sampler updates -- stays f32. `Fp32` (the default) leaves every computation exactly as it was: no
//! region is entered and no setting is touched unless another precision was set before in this process, in which
//! case the matmul precision it changed is put back.
use super::{call, ffi};
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use std::cell::Cell;
use std::ffi::CString;
use std::sync::OnceLock;
use tch::{Device, Kind, Tensor};

/// `train.precision`: how the image networks compute.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// f32 everywhere, as libtorch does by default.
    #[default]
    Fp32,
    /// f32 tensors, TF32 matmuls on CUDA (`set_float32_matmul_precision("high")`).
    Tf32,
    /// The image networks under bf16 autocast (f32 weights and outputs), TF32 for the remaining f32 matmuls.
    Bf16,
}

/// A low-precision dtype for autocast.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AmpDtype {
    Bf16,
    F16,
}

thread_local! {
    static NETWORK_PRECISION: Cell<Precision> = const { Cell::new(Precision::Fp32) };
}

/// The float32 matmul precision before relaxflow first changed it (what `Fp32` puts back).
static ORIGINAL_MATMUL: OnceLock<i32> = OnceLock::new();

const MATMUL_NAMES: [&str; 3] = ["highest", "high", "medium"];

fn set_matmul(code: i32) -> Result<()> {
    let name = CString::new(MATMUL_NAMES[code.clamp(0, 2) as usize]).expect("no NUL");
    call("setting the float32 matmul precision", |err| unsafe { ffi::rf_set_float32_matmul_precision(name.as_ptr(), err) })
}

/// The current float32 matmul precision: "highest", "high" or "medium".
pub fn float32_matmul_precision() -> &'static str {
    MATMUL_NAMES[unsafe { ffi::rf_float32_matmul_precision() }.clamp(0, 2) as usize]
}

/// Makes `p` this thread's network precision (and sets the process's matmul precision to match); returns the
/// previous one. `Fp32` changes nothing unless another precision was set earlier in this process.
pub fn set_precision(p: Precision) -> Result<Precision> {
    let current = unsafe { ffi::rf_float32_matmul_precision() };
    match p {
        Precision::Fp32 => {
            if let Some(&orig) = ORIGINAL_MATMUL.get() {
                if orig != current {
                    set_matmul(orig)?;
                }
            }
        }
        Precision::Tf32 | Precision::Bf16 => {
            ORIGINAL_MATMUL.get_or_init(|| current);
            set_matmul(1)?;
        }
    }
    Ok(NETWORK_PRECISION.with(|c| c.replace(p)))
}

/// This thread's network precision.
pub fn precision() -> Precision {
    NETWORK_PRECISION.with(|c| c.get())
}

/// Runs `f` with the network precision `p`, then puts the previous one back (also on panic).
pub fn with_precision<T>(p: Precision, f: impl FnOnce() -> T) -> Result<T> {
    struct Restore(Precision);
    impl Drop for Restore {
        fn drop(&mut self) {
            if let Err(e) = set_precision(self.0) {
                eprintln!("warning: restoring the network precision: {e:#}");
            }
        }
    }
    let _restore = Restore(set_precision(p)?);
    Ok(f())
}

fn device_code(device: Device) -> Result<i32> {
    match device {
        Device::Cpu => Ok(0),
        Device::Cuda(_) => Ok(1),
        other => bail!("autocast is available on the CPU and CUDA, not {other:?}"),
    }
}

/// An open autocast region on one device type; closing it (drop) restores the state it found.
pub struct Autocast {
    device: i32,
    saved: ffi::RfAutocastSaved,
}

impl Autocast {
    /// Turns autocast on for `device`'s type with `dtype` on this thread.
    pub fn enter(device: Device, dtype: AmpDtype) -> Result<Autocast> {
        let code = device_code(device)?;
        let mut saved = ffi::RfAutocastSaved::default();
        let d = match dtype {
            AmpDtype::Bf16 => 0,
            AmpDtype::F16 => 1,
        };
        call("entering autocast", |err| unsafe { ffi::rf_autocast_enter(code, d, &mut saved, err) })?;
        Ok(Autocast { device: code, saved })
    }
}

impl Drop for Autocast {
    fn drop(&mut self) {
        if let Err(e) = call("leaving autocast", |err| unsafe { ffi::rf_autocast_exit(self.device, &self.saved, err) }) {
            eprintln!("warning: {e:#}");
        }
    }
}

/// Runs `f` in an autocast region with `dtype` on `device`.
pub fn autocast<T>(device: Device, dtype: AmpDtype, f: impl FnOnce() -> T) -> Result<T> {
    let _region = Autocast::enter(device, dtype)?;
    Ok(f())
}

/// A network's forward pass at this thread's network precision: `f()` as is unless the precision is `Bf16` and `x`
/// is f32, in which case `f` runs under bf16 autocast and its output comes back as f32.
pub fn network(x: &Tensor, f: impl FnOnce() -> Tensor) -> Tensor {
    if precision() != Precision::Bf16 || x.kind() != Kind::Float {
        return f();
    }
    let y = autocast(x.device(), AmpDtype::Bf16, f).unwrap_or_else(|e| panic!("bf16 network forward: {e:#}"));
    if y.kind() == Kind::Float {
        y
    } else {
        y.to_kind(Kind::Float)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::nn::{self, Module};

    fn net_and_input() -> (nn::VarStore, nn::Linear, Tensor) {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let lin = nn::linear(vs.root(), 64, 32, Default::default());
        (vs, lin, Tensor::randn([16, 64], (Kind::Float, Device::Cpu)))
    }

    #[test]
    fn autocast_runs_linear_layers_in_bf16_and_restores_the_state() {
        let (_vs, lin, x) = net_and_input();
        let plain = lin.forward(&x);
        let inside = autocast(Device::Cpu, AmpDtype::Bf16, || lin.forward(&x)).unwrap();
        assert_eq!(plain.kind(), Kind::Float);
        assert_eq!(inside.kind(), Kind::BFloat16, "CPU autocast with bf16 must run linear in bf16");
        let rel = (inside.to_kind(Kind::Float) - &plain).abs().max().double_value(&[]) / plain.abs().max().double_value(&[]);
        assert!(rel > 0.0 && rel < 0.05, "bf16 output must be close to f32, not equal: {rel}");
        // Closed: the same call is f32 again, bit for bit.
        assert!(lin.forward(&x).equal(&plain));
    }

    #[test]
    fn fp32_network_precision_is_bit_unchanged_even_after_bf16() {
        let (_vs, lin, x) = net_and_input();
        let reference = lin.forward(&x);
        assert_eq!(precision(), Precision::Fp32);
        assert!(network(&x, || lin.forward(&x)).equal(&reference));
        let low = with_precision(Precision::Bf16, || network(&x, || lin.forward(&x))).unwrap();
        assert_eq!(low.kind(), Kind::Float, "networks return f32 under bf16");
        assert!(!low.equal(&reference), "bf16 must change the numbers (else this test could not fail)");
        assert_eq!(precision(), Precision::Fp32);
        assert_eq!(float32_matmul_precision(), "highest", "fp32 puts the matmul precision back");
        assert!(network(&x, || lin.forward(&x)).equal(&reference));
        assert!(lin.forward(&x).equal(&reference));
    }

    #[test]
    fn f64_inputs_are_left_alone_and_gradients_reach_f32_weights() {
        let (vs, lin, x) = net_and_input();
        let x64 = x.to_kind(Kind::Double);
        let lin64 = {
            let vs64 = nn::VarStore::new(Device::Cpu);
            let l = nn::linear(vs64.root(), 64, 32, Default::default());
            (vs64, l)
        };
        let y64 = with_precision(Precision::Bf16, || network(&x64, || x64.matmul(&lin64.1.ws.to_kind(Kind::Double).tr()))).unwrap();
        assert_eq!(y64.kind(), Kind::Double);
        let loss = with_precision(Precision::Bf16, || network(&x, || lin.forward(&x))).unwrap().square().mean(None);
        loss.backward();
        for (name, v) in vs.variables() {
            assert_eq!(v.kind(), Kind::Float);
            assert_eq!(v.grad().kind(), Kind::Float, "{name}: the gradient of an f32 weight is f32");
            assert!(v.grad().abs().sum(None).double_value(&[]) > 0.0, "{name}: no gradient");
        }
    }

    #[test]
    fn bad_device_and_nested_regions() {
        assert!(Autocast::enter(Device::Mps, AmpDtype::Bf16).is_err());
        let (_vs, lin, x) = net_and_input();
        let y = autocast(Device::Cpu, AmpDtype::Bf16, || autocast(Device::Cpu, AmpDtype::Bf16, || lin.forward(&x)).unwrap()).unwrap();
        assert_eq!(y.kind(), Kind::BFloat16);
        assert_eq!(lin.forward(&x).kind(), Kind::Float, "both regions closed");
    }
}
