//! Importance-weighted diagnostics against an energy target: log Z estimate, effective sample size, mode weight,
//! path KL, and the free-energy profile along x1 (Wu et al. 2020, Fig. 3) raw and reweighted, over repeats.
use super::Snf;
use serde_json::{json, Value};
use tch::{Kind, Tensor};

/// Range and bins of the free-energy profile along x1 (the paper's: 30 bins on -2.25 < x1 < 2.25).
pub const PROFILE: (f64, f64, i64) = (-2.25, 2.25, 30);

/// log (1/n) Σ w: an estimate of log Z (its exponential is unbiased for Z).
pub fn log_z_estimate(log_w: &Tensor) -> f64 {
    log_w.logsumexp([0], false).double_value(&[]) - (log_w.size()[0] as f64).ln()
}

/// Kish effective sample size divided by n: (Σw)² / (n Σw²).
pub fn ess_fraction(log_w: &Tensor) -> f64 {
    let a = log_w.logsumexp([0], false).double_value(&[]);
    let b = (log_w * 2.0).logsumexp([0], false).double_value(&[]);
    (2.0 * a - b).exp() / log_w.size()[0] as f64
}

/// Self-normalised weights Σ = 1 (or uniform 1/n when `log_w` is None).
fn normalised(log_w: Option<&Tensor>, n: i64) -> Tensor {
    match log_w {
        Some(lw) => lw.softmax(0, Kind::Double),
        None => Tensor::full([n], 1.0 / n as f64, (Kind::Double, tch::Device::Cpu)),
    }
}

/// Probability of x1 in each bin of [lo, hi] (mass outside the range counts in the denominator).
pub fn x1_bin_probs(x1: &Tensor, log_w: Option<&Tensor>, (lo, hi, bins): (f64, f64, i64)) -> Vec<f64> {
    let w = normalised(log_w, x1.size()[0]);
    let idx = ((x1 - lo) / ((hi - lo) / bins as f64)).floor();
    let inside = idx.ge(0.0).logical_and(&idx.lt(bins as f64));
    let idx = idx.clamp(0.0, (bins - 1) as f64).to_kind(Kind::Int64);
    let w = w * inside.to_kind(Kind::Double);
    Vec::try_from(Tensor::zeros([bins], (Kind::Double, tch::Device::Cpu)).index_add(0, &idx, &w)).unwrap_or_default()
}

/// F = -log p per bin in kT (∞ where a bin is empty).
pub fn free_energy(probs: &[f64]) -> Vec<f64> {
    probs.iter().map(|&p| if p > 0.0 { -p.ln() } else { f64::INFINITY }).collect()
}

/// Error of estimated free-energy profiles against the exact one: each repeat is shifted to the exact profile's
/// mean over the bins populated in every repeat; bias = RMS over bins of (mean estimate - exact), std = RMS of the
/// per-bin standard deviation over repeats, combined = sqrt(bias² + std²).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProfileError {
    pub bias: f64,
    pub std: f64,
    pub combined: f64,
    pub bins_used: usize,
}

pub fn profile_error(estimates: &[Vec<f64>], exact: &[f64]) -> ProfileError {
    let used: Vec<usize> =
        (0..exact.len()).filter(|&i| exact[i].is_finite() && estimates.iter().all(|f| f[i].is_finite())).collect();
    if used.is_empty() || estimates.is_empty() {
        return ProfileError { bias: f64::NAN, std: f64::NAN, combined: f64::NAN, bins_used: 0 };
    }
    let mean_over = |f: &[f64]| used.iter().map(|&i| f[i]).sum::<f64>() / used.len() as f64;
    let exact_mean = mean_over(exact);
    let shifted: Vec<Vec<f64>> = estimates.iter().map(|f| {
        let s = exact_mean - mean_over(f);
        f.iter().map(|v| v + s).collect()
    }).collect();
    let r = shifted.len() as f64;
    let (mut bias2, mut var) = (0.0, 0.0);
    for &i in &used {
        let m = shifted.iter().map(|f| f[i]).sum::<f64>() / r;
        bias2 += (m - exact[i]).powi(2);
        if shifted.len() > 1 {
            var += shifted.iter().map(|f| (f[i] - m).powi(2)).sum::<f64>() / (r - 1.0);
        }
    }
    let k = used.len() as f64;
    let (bias, std) = ((bias2 / k).sqrt(), (var / k).sqrt());
    ProfileError { bias, std, combined: (bias * bias + std * std).sqrt(), bins_used: used.len() }
}

fn mean_std(v: &[f64]) -> Value {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    let s = if v.len() > 1 { (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0)).sqrt() } else { f64::NAN };
    json!({"mean": m, "std": s})
}

fn column_mean(rows: &[Vec<f64>]) -> Vec<f64> {
    (0..rows[0].len()).map(|i| rows.iter().map(|r| r[i]).sum::<f64>() / rows.len() as f64).collect()
}

/// The histogram of `x` over [min x, max x] in `bins` equal bins as a density (numpy's `histogram(x, bins,
/// density=True, weights=w)`), and the bin centres.
fn numpy_histogram(x: &[f64], w: Option<&[f64]>, bins: usize) -> (Vec<f64>, Vec<f64>) {
    let (lo, hi) = x.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
    let width = (hi - lo) / bins as f64;
    let mut h = vec![0.0; bins];
    for (i, &v) in x.iter().enumerate() {
        let k = (((v - lo) / width) as usize).min(bins - 1);
        h[k] += w.map_or(1.0, |w| w[i]);
    }
    let total: f64 = h.iter().sum();
    let density = h.iter().map(|c| c / (total * width)).collect();
    let centres = (0..bins).map(|k| lo + (k as f64 + 0.5) * width).collect();
    (density, centres)
}

/// The SNF paper's free-energy error (noegroup/stochastic_normalizing_flows, `analysis.sample_energy` and the
/// notebooks' `bias_uncertainty`), for one trained model from `repeats` batches: per repeat F = -ln of a 30-bin density
/// histogram of x1 over the batch's own range, shifted to mean 0 over its finite bins; the exact profile
/// u(x1, 0, ...) at the last repeat's bin centres shifted to minimum 0, the repeats' mean F shifted to minimum 0;
/// over the bins with -2.25 < x1 < 2.25 where both are finite: bias = |mean(u - mean F)|, uncertainty = mean of the
/// per-bin standard deviation over repeats; combined = sqrt(bias² + uncertainty²). Raw and reweighted (weights
/// exp(log w - mean log w)).
pub fn paper_profile_error(target: &dyn crate::dist::energy::Energy, dim: i64, x1s: &[Vec<f64>], log_ws: &[Vec<f64>], weighted: bool) -> Value {
    const BINS: usize = 30;
    let mut fs: Vec<Vec<f64>> = Vec::new();
    let mut centres = Vec::new();
    for (x1, lw) in x1s.iter().zip(log_ws) {
        // In f32, as the paper's code has them (torch float32 -> numpy): weights below e^-103 underflow to 0, and a
        // bin holding only such samples is empty (then excluded), not a finite ~100 kT.
        let w: Option<Vec<f64>> = weighted.then(|| {
            let m = lw.iter().sum::<f64>() / lw.len() as f64;
            lw.iter().map(|l| ((l - m) as f32).exp() as f64).collect()
        });
        let (h, c) = numpy_histogram(x1, w.as_deref(), BINS);
        let mut f: Vec<f64> = h.iter().map(|p| -p.ln()).collect();
        let finite: Vec<f64> = f.iter().copied().filter(|v| v.is_finite()).collect();
        let shift = finite.iter().sum::<f64>() / finite.len().max(1) as f64;
        f.iter_mut().for_each(|v| *v -= shift);
        fs.push(f);
        centres = c;
    }
    let pts = Tensor::zeros([BINS as i64, dim], (Kind::Double, tch::Device::Cpu));
    let _ = pts.select(1, 0).copy_(&Tensor::from_slice(&centres));
    let mut u: Vec<f64> = Vec::try_from(target.energy(&pts.to_kind(Kind::Float)).to_kind(Kind::Double)).unwrap_or_default();
    let u_min = u.iter().copied().fold(f64::INFINITY, f64::min);
    u.iter_mut().for_each(|v| *v -= u_min);
    let n = fs.len() as f64;
    let mut mean: Vec<f64> = (0..BINS).map(|k| fs.iter().map(|f| f[k]).sum::<f64>() / n).collect();
    let m_min = mean.iter().copied().fold(f64::INFINITY, f64::min);
    mean.iter_mut().for_each(|v| *v -= m_min);
    let used: Vec<usize> = (0..BINS).filter(|&k| centres[k] > -2.25 && centres[k] < 2.25 && (u[k] - mean[k]).is_finite()).collect();
    let bias = (used.iter().map(|&k| u[k] - mean[k]).sum::<f64>() / used.len().max(1) as f64).abs();
    let std_of = |k: usize| {
        let m = fs.iter().map(|f| f[k]).sum::<f64>() / n;
        (fs.iter().map(|f| (f[k] - m).powi(2)).sum::<f64>() / n).sqrt()
    };
    let uncertainty = used.iter().map(|&k| std_of(k)).sum::<f64>() / used.len().max(1) as f64;
    json!({"bias_kT": bias, "uncertainty_kT": uncertainty, "combined_kT": (bias * bias + uncertainty * uncertainty).sqrt(), "bins_used": used.len()})
}

/// `snf.log_weights(n)` drawn in blocks of at most `EVAL_BLOCK` samples: the same distribution with the intermediate
/// tensors of one block at a time (bounded memory whatever `eval.diag_samples`; measured no faster on 2 CPU cores).
/// The committed SNF table was drawn this way, so changing the block size changes its random draws.
fn log_weights_in_blocks(snf: &Snf, n: i64) -> (Tensor, Tensor) {
    let parts: Vec<(Tensor, Tensor)> = (0..n).step_by(EVAL_BLOCK as usize).map(|i| snf.log_weights(EVAL_BLOCK.min(n - i))).collect();
    let (xs, ws): (Vec<Tensor>, Vec<Tensor>) = parts.into_iter().unzip();
    (Tensor::cat(&xs, 0), Tensor::cat(&ws, 0))
}

const EVAL_BLOCK: i64 = 8192;

/// Everything summary.json reports for a model with an energy target, from `repeats` batches of `n` samples.
pub fn energy_report(snf: &Snf, n: i64, repeats: i64) -> Value {
    let t = &snf.target;
    let exact_probs = t.x1_bin_probs(PROFILE.0, PROFILE.1, PROFILE.2);
    let exact_f = free_energy(&exact_probs);
    let (mut log_z, mut ess, mut kl, mut mode_raw, mut mode_rw) = (vec![], vec![], vec![], vec![], vec![]);
    let (mut f_raw, mut f_rw) = (vec![], vec![]);
    let (mut x1s, mut log_ws) = (vec![], vec![]);
    for _ in 0..repeats.max(1) {
        let (x, log_w) = tch::no_grad(|| log_weights_in_blocks(snf, n));
        let (x, log_w) = (x.to_device(tch::Device::Cpu).to_kind(Kind::Double), log_w.to_device(tch::Device::Cpu).to_kind(Kind::Double));
        let x1 = x.select(1, 0);
        let left = x1.lt(0.0).to_kind(Kind::Double);
        log_z.push(log_z_estimate(&log_w));
        ess.push(ess_fraction(&log_w) * 1000.0);
        kl.push(-log_w.mean(None).double_value(&[]) + t.log_z());
        mode_raw.push(left.mean(None).double_value(&[]));
        mode_rw.push((&left * normalised(Some(&log_w), n)).sum(Kind::Double).double_value(&[]));
        f_raw.push(free_energy(&x1_bin_probs(&x1, None, PROFILE)));
        f_rw.push(free_energy(&x1_bin_probs(&x1, Some(&log_w), PROFILE)));
        x1s.push(Vec::<f64>::try_from(&x1).unwrap_or_default());
        log_ws.push(Vec::<f64>::try_from(&log_w).unwrap_or_default());
    }
    let dim = snf.flow.base.sample(1).size()[1];
    let err = |f: &[Vec<f64>]| {
        let e = profile_error(f, &exact_f);
        json!({"bias_kT": e.bias, "std_kT": e.std, "combined_kT": e.combined, "bins_used": e.bins_used})
    };
    let finite = |v: Vec<f64>| v.into_iter().map(|x| if x.is_finite() { json!(x) } else { Value::Null }).collect::<Vec<_>>();
    let w = (PROFILE.1 - PROFILE.0) / PROFILE.2 as f64;
    let centres: Vec<f64> = (0..PROFILE.2).map(|i| PROFILE.0 + (i as f64 + 0.5) * w).collect();
    json!({
        "target": snf.params.target,
        "samples_per_repeat": n,
        "repeats": repeats.max(1),
        "exact": {"log_z": t.log_z(), "mode_weight_x1_lt_0": t.mode_weight(), "entropy_nats": t.entropy()},
        "log_z_estimate": mean_std(&log_z),
        "ess_per_1000": mean_std(&ess),
        "path_kl_nats": mean_std(&kl),
        "path_kl_note": "E[-log w] + log Z over generative paths: the KL between forward and backward path laws, an upper bound on the KL from model samples to the target",
        "mode_weight_raw": mean_std(&mode_raw),
        "mode_weight_reweighted": mean_std(&mode_rw),
        "paper_free_energy_error": {
            "protocol": "the SNF paper's code (Wu et al. 2020, noegroup/stochastic_normalizing_flows, experiment 1): per repeat F = -ln of a 30-bin density histogram of x1 over the batch's range, shifted to mean 0; exact u(x1, 0) at the bin centres and the repeats' mean F each shifted to minimum 0; over bins with -2.25 < x1 < 2.25: bias = |mean(u - F)|, uncertainty = mean per-bin std over repeats, combined = sqrt(bias^2 + uncertainty^2)",
            "raw": paper_profile_error(&**t, dim, &x1s, &log_ws, false),
            "reweighted": paper_profile_error(&**t, dim, &x1s, &log_ws, true),
        },
        "free_energy_profile": {
            "protocol": "F = -ln P(x1 in bin), 30 bins on (-2.25, 2.25); each repeat shifted to the exact profile's mean over bins populated in every repeat; bias = RMS(mean - exact), std = RMS(per-bin std over repeats), combined = sqrt(bias^2 + std^2)",
            "raw": err(&f_raw),
            "reweighted": err(&f_rw),
            "bin_centres": centres,
            "exact_kT": finite(exact_f.clone()),
            "raw_mean_kT": finite(column_mean(&f_raw)),
            "reweighted_mean_kT": finite(column_mean(&f_rw)),
        },
    })
}

/// The tilts a conditional SNF's diagnostics report: c = -1, 0.5 (the untilted double well) and 2.
const REPORT_TILTS: [usize; 3] = [0, 6, 12];

/// A conditional SNF on the tilted double well: at c = -1, 0.5 and 2, the importance-sampling estimate of log Z(c)
/// beside its exact value, the effective sample size and the reweighted mode weight P(x1 < 0 | c) beside the
/// exact one; `log_z_estimate` and `exact` at the top are those at c = 0.5, comparable with `snf-doublewell`.
pub fn conditional_energy_report(snf: &Snf, energy: &crate::dist::energy::TiltedDoubleWell, n: i64, repeats: i64) -> Value {
    let tilts = crate::dist::energy::TiltedDoubleWell::tilts();
    let device = snf.flow.base.sample(1).device();
    let mut per_tilt = Vec::new();
    let mut at_half = (json!(null), json!(null));
    for &i in &REPORT_TILTS {
        let (mut log_z, mut ess, mut mode_rw) = (vec![], vec![], vec![]);
        for _ in 0..repeats.max(1) {
            let parts: Vec<(Tensor, Tensor)> = (0..n)
                .step_by(EVAL_BLOCK as usize)
                .map(|j| {
                    let c = Tensor::full([EVAL_BLOCK.min(n - j), 1], tilts[i], (Kind::Float, device));
                    tch::no_grad(|| snf.log_weights_given(&c))
                })
                .collect();
            let (xs, ws): (Vec<Tensor>, Vec<Tensor>) = parts.into_iter().unzip();
            let x = Tensor::cat(&xs, 0).to_device(tch::Device::Cpu).to_kind(Kind::Double);
            let log_w = Tensor::cat(&ws, 0).to_device(tch::Device::Cpu).to_kind(Kind::Double);
            let left = x.select(1, 0).lt(0.0).to_kind(Kind::Double);
            log_z.push(log_z_estimate(&log_w));
            ess.push(ess_fraction(&log_w) * 1000.0);
            mode_rw.push((&left * normalised(Some(&log_w), n)).sum(Kind::Double).double_value(&[]));
        }
        let exact = json!({"log_z": energy.log_z(i), "mode_weight_x1_lt_0": energy.mode_weight(i), "entropy_nats": energy.entropy(i)});
        if i == 6 {
            at_half = (exact.clone(), mean_std(&log_z));
        }
        per_tilt.push(json!({
            "c": tilts[i], "exact": exact, "log_z_estimate": mean_std(&log_z), "ess_per_1000": mean_std(&ess),
            "mode_weight_reweighted": mean_std(&mode_rw),
        }));
    }
    json!({
        "target": "doublewell tilted by the context c: u(x; c) = x1^4 - 6 x1^2 - c x1 + |x_rest|^2 / 2",
        "samples_per_repeat": n,
        "repeats": repeats.max(1),
        "exact": at_half.0,
        "log_z_estimate": at_half.1,
        "log_z_note": "top-level log_z_estimate and exact are at c = 0.5 (the untilted doublewell); per_tilt has c = -1, 0.5, 2",
        "per_tilt": per_tilt,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dist::energy::{Energy, Gaussian};

    #[test]
    fn weights_of_exact_samples_give_log_z_and_full_ess() {
        // log w = -u(x) - log p(x) = log Z exactly when x ~ p: constant weights.
        let g = Gaussian { mean: vec![0.3, -0.2], std: 1.5 };
        let x = g.sample(1000).to_kind(Kind::Double);
        let log_p = -g.energy(&x) - g.log_z();
        let log_w = -g.energy(&x) - log_p;
        assert!((log_z_estimate(&log_w) - g.log_z()).abs() < 1e-9);
        assert!((ess_fraction(&log_w) - 1.0).abs() < 1e-9);
    }

    #[test]
    fn profile_error_is_zero_for_the_exact_profile_up_to_a_shift() {
        let exact = vec![1.0, 2.0, 0.5, f64::INFINITY];
        let est = vec![vec![3.0, 4.0, 2.5, 1.0], vec![3.0, 4.0, 2.5, 1.0]];
        let e = profile_error(&est, &exact);
        assert_eq!(e.bins_used, 3);
        assert!(e.combined.abs() < 1e-12);
        let off = vec![vec![1.0, 2.0, 1.5, 0.0]];
        assert!(profile_error(&off, &exact).bias > 0.4);
    }

    #[test]
    fn bin_probabilities_count_mass_outside_the_range() {
        let x1 = Tensor::from_slice(&[-3.0f64, -2.0, 0.1, 0.2]);
        let p = x1_bin_probs(&x1, None, (-2.25, 2.25, 3));
        assert_eq!(p, vec![0.25, 0.5, 0.0]);
    }

    #[test]
    fn the_papers_error_is_small_for_exact_samples_and_large_for_shifted_ones() {
        use crate::dist::energy::{DoubleWell, Energy};
        tch::manual_seed(11);
        let dw = DoubleWell::new(2);
        let (mut good, mut bad, mut lw) = (vec![], vec![], vec![]);
        for _ in 0..5 {
            let x1 = dw.sample(100_000).select(1, 0).to_kind(Kind::Double);
            good.push(Vec::<f64>::try_from(&x1).unwrap());
            bad.push(Vec::<f64>::try_from(&(&x1 * 0.7)).unwrap());
            lw.push(vec![0.0; 100_000]);
        }
        let e = paper_profile_error(&dw, 2, &good, &lw, false);
        assert!(e["combined_kT"].as_f64().unwrap() < 0.2, "{e}");
        assert_eq!(paper_profile_error(&dw, 2, &good, &lw, true)["combined_kT"], e["combined_kT"], "zero log-weights reweight nothing");
        let e = paper_profile_error(&dw, 2, &bad, &lw, false);
        assert!(e["combined_kT"].as_f64().unwrap() > 0.5, "a squeezed profile is far off: {e}");
    }
}
