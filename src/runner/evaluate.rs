//! Test-set likelihood and sampler cost, labelled honestly.
use super::replicas::Replicas;
use super::sync;
use anyhow::Result;
use crate::context::Context;
use crate::data::{bits_per_dim, Dataset};
use crate::model::{Kind, Model};
use serde::{Deserialize, Serialize};
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
    log_prob_sharded(model, x, batch, device, &Replicas::single()).expect("one process has no collective to fail")
}

/// log p(x_i | c_i) of every row of `x` with its context row of `c` (`Context::None`: log p(x_i)).
pub fn log_prob_batched_given(model: &dyn Model, x: &Tensor, c: &Context, batch: i64, device: Device) -> (Tensor, Kind) {
    log_prob_sharded_given(model, x, c, batch, device, &Replicas::single()).expect("one process has no collective to fail")
}

/// As [`log_prob_batched`], each batch split over the ranks of `replicas` (per-example noise drawn as the whole
/// batch's rows, see `crate::rows`) and the values gathered on every rank: the same numbers as one process (for
/// adaptive ODE likelihoods, up to the solver's tolerance: its steps adapt to the rows it is given).
pub fn log_prob_sharded(model: &dyn Model, x: &Tensor, batch: i64, device: Device, replicas: &Replicas) -> Result<(Tensor, Kind)> {
    log_prob_sharded_given(model, x, &Context::None, batch, device, replicas)
}

/// As [`log_prob_sharded`], each row of `x` with its row of the contexts `c`.
pub fn log_prob_sharded_given(model: &dyn Model, x: &Tensor, c: &Context, batch: i64, device: Device, replicas: &Replicas) -> Result<(Tensor, Kind)> {
    let n = x.size()[0];
    let mut parts = Vec::new();
    let mut kind = Kind::Exact;
    tch::no_grad(|| -> Result<()> {
        for start in (0..n).step_by(batch.max(1) as usize) {
            let len = batch.min(n - start);
            let split = replicas.split(len);
            let rows = split.rows_of(&x.narrow(0, start, len)).to_device(device);
            let lp = match c {
                Context::None => crate::rows::with_split(split, || model.log_prob(&rows)),
                _ => {
                    let ctx = c.narrow(start + split.offset, split.len, device);
                    crate::rows::with_split(split, || model.log_prob_given(&rows, &ctx))
                }
            };
            kind = lp.kind;
            parts.push((lp.value.to_device(Device::Cpu).to_kind(tch::Kind::Double), split));
        }
        Ok(())
    })?;
    if replicas.size() == 1 {
        return Ok((Tensor::cat(&parts.into_iter().map(|p| p.0).collect::<Vec<_>>(), 0), kind));
    }
    // One collective for the whole set: this rank's rows in place, zeros elsewhere.
    let all = Tensor::zeros([n], (tch::Kind::Double, Device::Cpu));
    let mut start = 0;
    for (lp, split) in parts {
        all.narrow(0, start + split.offset, split.len).copy_(&lp);
        start += split.total;
    }
    Ok((replicas.gather_rows(&all, crate::rows::Split::whole(n))?, kind))
}

/// Mean test NLL on the first `n` test examples (all when `n` is None).
pub fn test_nll(model: &dyn Model, data: &Dataset, n: Option<i64>, batch: i64, device: Device) -> Evaluation {
    test_nll_sharded(model, data, n, batch, device, &Replicas::single()).expect("one process has no collective to fail")
}

/// As [`test_nll`], the test points of every batch split over the ranks of `replicas` (the result on every rank).
pub fn test_nll_sharded(model: &dyn Model, data: &Dataset, n: Option<i64>, batch: i64, device: Device, replicas: &Replicas) -> Result<Evaluation> {
    let total = data.test.size()[0];
    let n = n.map_or(total, |k| k.min(total));
    let c = data.test_context(0, n, Device::Cpu);
    let (lp, kind) = log_prob_sharded_given(model, &data.test.narrow(0, 0, n), &c, batch, device, replicas)?;
    let nll = -lp;
    let mean = nll.mean(None).double_value(&[]);
    let stderr = if n > 1 { nll.std(true).double_value(&[]) / (n as f64).sqrt() } else { f64::NAN };
    let n_nonfinite = nll.isfinite().logical_not().sum(tch::Kind::Int64).int64_value(&[]);
    let bits_per_dim = data.dequantized_8bit.then(|| bits_per_dim(mean, data.dim(), true));
    Ok(Evaluation { nll_nats: mean, nll_stderr: stderr, kind, bits_per_dim, n, n_nonfinite })
}

/// Bits/dim of a flow with a logit preprocessing computed a second way: from its logit-space density log p_Y(y) plus
/// the logit's log-Jacobian worked out here by hand (in f64, from x), against the model's own log p(x).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BitsPerDimCheck {
    /// α of y = logit(α + (1 - 2α)x).
    #[serde(deserialize_with = "crate::runner::summary::f64_or_nan")]
    pub alpha: f64,
    /// Mean -log p_Y(y), nats per image (the logit-space NLL some papers report; depends on α).
    #[serde(deserialize_with = "crate::runner::summary::f64_or_nan")]
    pub logit_space_nll_nats: f64,
    /// Mean Σ_i [log(1 - 2α) - log s_i - log(1 - s_i)], s = α + (1 - 2α)x.
    #[serde(deserialize_with = "crate::runner::summary::f64_or_nan")]
    pub logit_log_det_nats: f64,
    /// (logit_space_nll - logit_log_det) / (D ln 2) + 8.
    #[serde(deserialize_with = "crate::runner::summary::f64_or_nan")]
    pub bits_per_dim_by_hand: f64,
    /// From the model's log p(x) on the same images.
    #[serde(deserialize_with = "crate::runner::summary::f64_or_nan")]
    pub bits_per_dim_from_model: f64,
    pub n: i64,
}

/// The check on the first `n` test images (as `test_nll` with the same `n`), or None for models without a logit.
pub fn bits_per_dim_check(model: &dyn Model, data: &Dataset, n: Option<i64>, batch: i64, device: Device) -> Option<BitsPerDimCheck> {
    if !data.dequantized_8bit || data.context.is_some() {
        return None;
    }
    let total = data.test.size()[0];
    let n = n.map_or(total, |k| k.min(total));
    let (mut lp_y, mut log_det, mut lp_x) = (Vec::new(), Vec::new(), Vec::new());
    let mut alpha = None;
    tch::no_grad(|| {
        for start in (0..n).step_by(batch.max(1) as usize) {
            let x = data.test.narrow(0, start, batch.min(n - start)).to_device(device);
            let Some(ls) = model.logit_space_log_prob(&x) else { return };
            alpha = Some(ls.alpha);
            let s = x.to_kind(tch::Kind::Double) * (1.0 - 2.0 * ls.alpha) + ls.alpha;
            let per_dim = -(s.log() + (-&s + 1.0).log()) + (1.0 - 2.0 * ls.alpha).ln();
            log_det.push(per_dim.flatten(1, -1).sum_dim_intlist(1, false, None).to_device(Device::Cpu));
            lp_y.push(ls.log_prob_y.to_kind(tch::Kind::Double).to_device(Device::Cpu));
            lp_x.push(model.log_prob(&x).value.to_kind(tch::Kind::Double).to_device(Device::Cpu));
        }
    });
    let alpha = alpha?;
    let mean = |v: &[Tensor]| Tensor::cat(v, 0).mean(None).double_value(&[]);
    let (nll_y, log_det, nll_x) = (-mean(&lp_y), mean(&log_det), -mean(&lp_x));
    Some(BitsPerDimCheck {
        alpha,
        logit_space_nll_nats: nll_y,
        logit_log_det_nats: log_det,
        bits_per_dim_by_hand: bits_per_dim(nll_y - log_det, data.dim(), true),
        bits_per_dim_from_model: bits_per_dim(nll_x, data.dim(), true),
        n,
    })
}

/// Milliseconds per 1000 log-density evaluations on the first test points (at most 1000, and at most `cap`, the
/// evaluation's own `n_final`), after a warm-up call: the likelihood's cost (one pass for a flow, k passes for
/// IWBO, an ODE solve for a CNF).
pub fn timed_log_prob(model: &dyn Model, data: &Dataset, cap: Option<i64>, batch: i64, device: Device) -> f64 {
    let n = data.test.size()[0].min(1000).min(cap.unwrap_or(1000)).max(1);
    let x = data.test.narrow(0, 0, n);
    let c = data.test_context(0, n, Device::Cpu);
    let _ = log_prob_batched_given(model, &x.narrow(0, 0, n.min(8)), &c.narrow(0, n.min(8), Device::Cpu), batch, device);
    sync(device);
    let start = Instant::now();
    let _ = log_prob_batched_given(model, &x, &c, batch, device);
    sync(device);
    start.elapsed().as_secs_f64() * 1000.0 * 1000.0 / n as f64
}

/// As [`timed_samples`], the `n` samples drawn in shares by the ranks of `replicas` (per-example noise as the whole
/// draw's rows) and gathered on every rank; the time is the wall time of the sharded draw.
pub fn timed_samples_sharded(model: &dyn Model, n: i64, device: Device, replicas: &Replicas) -> Result<(Tensor, f64)> {
    if replicas.size() == 1 || n < replicas.size() as i64 {
        return Ok(timed_samples(model, n, device));
    }
    let split = replicas.split(n);
    let _ = model.sample(n.min(16));
    sync(device);
    let start = Instant::now();
    let mine = crate::rows::with_split(split, || model.sample(split.len));
    let x = replicas.gather_rows(&mine, split)?;
    sync(device);
    Ok((x, start.elapsed().as_secs_f64() * 1000.0 * 1000.0 / n as f64))
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
