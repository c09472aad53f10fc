//! Sample quality for low-dimensional data: the squared maximum mean discrepancy between model samples and held-out
//! data (Gretton et al. 2012, eq. 3, the unbiased estimator), with a sum of Gaussian kernels at several bandwidths
//! relative to the data's pooled standard deviation, so one number is sensitive to both coarse and fine structure.
use super::session::Session;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

/// Bandwidths of the kernel sum, in units of the reference data's standard deviation.
pub const SCALES: [f64; 4] = [0.05, 0.1, 0.3, 1.0];

/// Σ_h exp(-||a_i - b_j||² / (2 h²)) for every pair.
fn kernel(a: &Tensor, b: &Tensor, bandwidths: &[f64]) -> Tensor {
    let d2 = (a.square().sum_dim_intlist(1, true, None) + b.square().sum_dim_intlist(1, true, None).transpose(0, 1)
        - a.matmul(&b.transpose(0, 1)) * 2.0)
        .clamp_min(0.0);
    bandwidths.iter().map(|h| (&d2 * (-0.5 / (h * h))).exp()).reduce(|p, q| p + q).expect("one bandwidth at least")
}

/// Unbiased MMD² between `x` [n, D] and `y` [m, D]: E k(x, x') + E k(y, y') - 2 E k(x, y), diagonals excluded.
/// Bandwidths are SCALES times the pooled standard deviation of `y`. Zero in expectation when the laws agree.
pub fn mmd2(x: &Tensor, y: &Tensor) -> f64 {
    let (x, y) = (x.to_kind(Kind::Double).flatten(1, -1), y.to_kind(Kind::Double).flatten(1, -1));
    let sigma = y.std(true).double_value(&[]);
    let bw: Vec<f64> = SCALES.iter().map(|s| s * sigma).collect();
    let (n, m) = (x.size()[0] as f64, y.size()[0] as f64);
    let off_diag = |k: Tensor, len: f64| (k.sum(Kind::Double).double_value(&[]) - k.diagonal(0, 0, 1).sum(Kind::Double).double_value(&[])) / (len * (len - 1.0));
    let kxx = off_diag(kernel(&x, &x, &bw), n);
    let kyy = off_diag(kernel(&y, &y, &bw), m);
    let kxy = kernel(&x, &y, &bw).mean(Kind::Double).double_value(&[]);
    kxx + kyy - 2.0 * kxy
}

/// MMD² of (up to 5000) samples against as many test points, for data of dimension ≤ 16.
pub fn sample_mmd(s: &Session, samples: &Tensor) -> Option<f64> {
    if s.data.dim() > 16 {
        return None;
    }
    let n = samples.size()[0].min(s.data.test.size()[0]).min(5000);
    (n > 1).then(|| mmd2(&samples.narrow(0, 0, n).to_device(Device::Cpu), &s.data.test.narrow(0, 0, n).to_device(Device::Cpu)))
}

/// Fraction of samples outside the data's support where it is sharp (checkerboard), else outside the true law's 99%
/// highest-density region (rings, 8 gaussians, gmm; the data itself has 0.01 there), with the region's name.
pub fn outside_support(s: &Session, samples: &Tensor) -> Option<(f64, String)> {
    let (inside, data_outside) = s.data.truth.as_ref()?.in_support(&samples.to_device(Device::Cpu))?;
    let region = if data_outside == 0.0 { "support".to_string() } else { format!("99% highest-density region (data: {data_outside})") };
    Some((1.0 - inside.to_kind(Kind::Double).mean(None).double_value(&[]), region))
}

/// Which modes of a multimodal set the samples reach (see `data::truth::Truth::assign_modes`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ModeCoverage {
    pub modes: usize,
    /// Modes whose share of the samples is at least a quarter of their true weight.
    pub covered: usize,
    /// Share of the samples near each mode, and the true weights.
    pub shares: Vec<f64>,
    pub true_weights: Vec<f64>,
    /// Share of the samples near no mode (beyond 3 standard deviations of every one).
    #[serde(deserialize_with = "crate::runner::summary::f64_or_nan")]
    pub unassigned: f64,
}

/// Mode coverage of `samples` for sets with known modes.
pub fn mode_coverage(s: &Session, samples: &Tensor) -> Option<ModeCoverage> {
    let (k, weights) = s.data.truth.as_ref()?.assign_modes(&samples.to_device(Device::Cpu))?;
    let n = k.size()[0].max(1) as f64;
    let counts = Vec::<i64>::try_from((&k + 1).bincount::<Tensor>(None, weights.len() as i64 + 1)).ok()?;
    let shares: Vec<f64> = counts[1..].iter().map(|&c| c as f64 / n).collect();
    let covered = shares.iter().zip(&weights).filter(|(s, w)| **s >= 0.25 * **w).count();
    Some(ModeCoverage { modes: weights.len(), covered, shares, true_weights: weights, unassigned: counts[0] as f64 / n })
}

/// Image runs (8-bit MNIST / Fashion-MNIST / CIFAR-10, not binarized): sample quality in the feature space of
/// relaxflow's own classifier (`eval.classifier`, else the newest finished runs/\<dataset>-classifier run that takes
/// images of the samples' size) on `eval.quality_samples`
/// samples (`samples` topped up with fresh draws in chunks when it has fewer). None, with a warning, when there is no
/// classifier; a failure (a wrong classifier run, say) is reported in the value's `error`.
pub fn image_quality(s: &Session, samples: &Tensor) -> Option<serde_json::Value> {
    use crate::classifier::quality as classifier;
    if s.data.binarized || classifier::classifier_experiment(&s.data.name).is_none() {
        return None;
    }
    let Some(classifier) = s.exp.eval.classifier.clone().or_else(|| classifier::find_classifier(&s.data.name, &s.runs, s.data.dim())) else {
        let exp = classifier::classifier_experiment(&s.data.name).unwrap_or("classifier");
        let size = (s.data.name == "cifar10" && s.data.dim() != 3 * 32 * 32).then(|| format!(" --set data.image_size={}", s.data.shape.last().copied().unwrap_or(0)));
        let size = size.unwrap_or_default();
        eprintln!("note: no {exp} run of these images' size found, so no image sample quality (train it first: relaxflow train {exp}{size})");
        return None;
    };
    let n = s.exp.eval.quality_samples.max(2);
    // A class-conditional model: samples at classes 0, 1, ..., 9, 0, ... in turn, scored also by whether the
    // classifier sees the class they were drawn at.
    let classes = match s.model.context_spec() {
        Some(crate::ContextSpec::Class { classes }) => Some(Tensor::arange(n, (tch::Kind::Int64, s.device)).remainder(classes)),
        _ => None,
    };
    let x = tch::no_grad(|| {
        if let Some(c) = &classes {
            tch::manual_seed(s.exp.train.seed + 7);
            let parts: Vec<Tensor> = (0..n)
                .step_by(s.exp.eval.batch_size.max(1) as usize)
                .map(|i| {
                    let k = s.exp.eval.batch_size.max(1).min(n - i);
                    s.model.sample_given(k, &crate::Context::Class(c.narrow(0, i, k))).to_device(Device::Cpu)
                })
                .collect();
            return Tensor::cat(&parts, 0);
        }
        let mut parts = vec![samples.narrow(0, 0, samples.size()[0].min(n)).to_device(Device::Cpu)];
        let mut have = parts[0].size()[0];
        tch::manual_seed(s.exp.train.seed + 7);
        while have < n {
            let k = (n - have).min(s.exp.eval.batch_size.max(1));
            parts.push(s.model.sample(k).to_device(Device::Cpu));
            have += k;
        }
        Tensor::cat(&parts, 0)
    });
    let scored = super::classifier_run::open_run(&classifier, s.device).and_then(|trained| {
        let mut q = classifier::image_quality(&x, &s.data.name, &s.exp.data.dir, &trained)?;
        q.conditional_class_accuracy = classes.as_ref().map(|c| classifier::class_accuracy(&x, c, &trained));
        Ok(q)
    });
    match scored {
        Ok(q) => serde_json::to_value(q).ok(),
        Err(e) => {
            eprintln!("warning: image sample quality failed: {e:#}");
            Some(serde_json::json!({ "error": format!("{e:#}"), "classifier_run": classifier }))
        }
    }
}

/// The same MMD² between as many training and test points: the value a perfect sampler would show (noise floor).
pub fn data_mmd_floor(s: &Session, n: i64) -> Option<f64> {
    let n = n.min(s.data.test.size()[0]).min(s.data.train.size()[0]).min(5000);
    (s.data.dim() <= 16 && n > 1).then(|| {
        mmd2(&s.data.train.narrow(0, 0, n).to_device(Device::Cpu), &s.data.test.narrow(0, 0, n).to_device(Device::Cpu))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn mmd_is_near_zero_for_one_law_and_grows_with_the_difference() {
        tch::manual_seed(0);
        let opts = (Kind::Double, Device::Cpu);
        let y = Tensor::randn([1000, 2], opts);
        let same = mmd2(&Tensor::randn([1000, 2], opts), &y);
        let near = mmd2(&(Tensor::randn([1000, 2], opts) * 1.1), &y);
        let far = mmd2(&(Tensor::randn([1000, 2], opts) + 1.0), &y);
        assert!(same.abs() < 2e-3, "same law: {same}");
        assert!(near > same && far > near && far > 0.1, "{same} {near} {far}");
    }
}
