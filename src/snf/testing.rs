//! Statistical checks shared by the stochastic layers' tests.
use crate::dist::energy::Energy;
use crate::layer::Layer;
use tch::{Kind, Tensor};

/// Mean and variance of each coordinate within 4 standard errors of the expected values (fixed seeds make this
/// deterministic; 4 s.e. bounds a false alarm per coordinate at ~6e-5).
pub fn assert_moments(x: &Tensor, mean: &[f64], var: &[f64], what: &str) {
    let x = x.to_kind(Kind::Double);
    let n = x.size()[0] as f64;
    for (i, (&m, &v)) in mean.iter().zip(var).enumerate() {
        let c = x.select(1, i as i64);
        let (mu, s2) = (c.mean(None).double_value(&[]), c.var(true).double_value(&[]));
        let fourth = (&c - mu).pow_tensor_scalar(4).mean(None).double_value(&[]);
        assert!((mu - m).abs() < 4.0 * (v / n).sqrt(), "{what}: mean of x{i} {mu} vs {m}");
        let se_var = ((fourth - s2 * s2) / n).sqrt();
        assert!((s2 - v).abs() < 4.0 * se_var, "{what}: variance of x{i} {s2} vs {v} (s.e. {se_var})");
    }
}

/// Started from exact samples of `target`, the layer keeps mean, variance and P(x1 < 0) within statistical error
/// (the reference moments come from an independent exact draw of 10^6 points, whose own error is negligible).
pub fn assert_invariant(layer: &dyn Layer, target: &dyn Energy, n: i64, what: &str) {
    let start = target.sample(n);
    let (out, _) = layer.forward(&start);
    let reference = target.sample(1_000_000).to_kind(Kind::Double);
    let d = reference.size()[1];
    let mean: Vec<f64> = (0..d).map(|i| reference.select(1, i).mean(None).double_value(&[])).collect();
    let var: Vec<f64> = (0..d).map(|i| reference.select(1, i).var(true).double_value(&[])).collect();
    assert_moments(&out, &mean, &var, what);
    let p = target.mode_weight();
    let frac = out.select(1, 0).lt(0.0).to_kind(Kind::Double).mean(None).double_value(&[]);
    // Each row runs its own chain from its own exact start, so the rows are iid draws of the layer's output law.
    assert!((frac - p).abs() < 4.0 * (p * (1.0 - p) / n as f64).sqrt(), "{what}: P(x1<0) {frac} vs {p}");
}
