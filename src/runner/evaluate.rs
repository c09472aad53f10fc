//! Test-set likelihood and sampler cost, labelled honestly.
use super::sync;
use crate::data::{bits_per_dim, Dataset};
use crate::model::{Kind, Model};
use serde::Serialize;
use std::time::Instant;
use tch::{Device, Tensor};

/// A test-set negative log-likelihood with its kind.
#[derive(Clone, Debug, Serialize)]
pub struct Evaluation {
    /// Mean NLL in nats per example (an upper bound when `kind` is a lower bound on log p).
    pub nll_nats: f64,
    /// Standard error of that mean over test examples.
    pub nll_stderr: f64,
    pub kind: Kind,
    /// 8-bit images: bits/dim with the dequantization offset (nll / (D ln 2) + 8).
    pub bits_per_dim: Option<f64>,
    /// Test examples used.
    pub n: i64,
    /// Examples whose log-density was NaN or -inf (counted in the mean as they are).
    pub n_nonfinite: i64,
}

/// log p(x) of every row of `x`, evaluated in batches without gradients, returned on the CPU in f64.
pub fn log_prob_batched(model: &dyn Model, x: &Tensor, batch: i64, device: Device) -> (Tensor, Kind) {
    let n = x.size()[0];
    let mut parts = Vec::new();
    let mut kind = Kind::Exact;
    tch::no_grad(|| {
        for start in (0..n).step_by(batch.max(1) as usize) {
            let len = batch.min(n - start);
            let lp = model.log_prob(&x.narrow(0, start, len).to_device(device));
            kind = lp.kind;
            parts.push(lp.value.to_device(Device::Cpu).to_kind(tch::Kind::Double));
        }
    });
    (Tensor::cat(&parts, 0), kind)
}

/// Mean test NLL on the first `n` test examples (all when `n` is None).
pub fn test_nll(model: &dyn Model, data: &Dataset, n: Option<i64>, batch: i64, device: Device) -> Evaluation {
    let total = data.test.size()[0];
    let n = n.map_or(total, |k| k.min(total));
    let (lp, kind) = log_prob_batched(model, &data.test.narrow(0, 0, n), batch, device);
    let nll = -lp;
    let mean = nll.mean(None).double_value(&[]);
    let stderr = if n > 1 { nll.std(true).double_value(&[]) / (n as f64).sqrt() } else { f64::NAN };
    let n_nonfinite = nll.isfinite().logical_not().sum(tch::Kind::Int64).int64_value(&[]);
    let bits_per_dim = data.dequantized_8bit.then(|| bits_per_dim(mean, data.dim(), true));
    Evaluation { nll_nats: mean, nll_stderr: stderr, kind, bits_per_dim, n, n_nonfinite }
}

/// `n` samples and the milliseconds per 1000 samples it took, after a small warm-up draw.
pub fn timed_samples(model: &dyn Model, n: i64, device: Device) -> (Tensor, f64) {
    let _ = model.sample(n.min(16));
    sync(device);
    let start = Instant::now();
    let x = model.sample(n);
    sync(device);
    (x, start.elapsed().as_secs_f64() * 1000.0 * 1000.0 / n as f64)
}
