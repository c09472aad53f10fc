//! The classifier two-sample test (Lopez-Paz & Oquab 2017), as the SBI benchmark computes it (sbibm's `c2st`): both
//! samples z-scored by the first one's mean and std, an MLP with two hidden layers of 10·D ReLU units trained by
//! Adam to tell them apart, and its mean accuracy over k held-out folds. 0.5: indistinguishable; 1.0: disjoint.
use tch::nn::{self, Module, OptimizerConfig};
use tch::{Device, Kind, Tensor};

/// Settings of the test.
#[derive(Clone, Copy, Debug)]
pub struct C2stSettings {
    pub folds: i64,
    /// Most passes over a fold's training rows; training stops earlier when the training loss has not improved by
    /// 1e-4 for 10 passes (scikit-learn's `n_iter_no_change` rule, which sbibm's MLPClassifier uses).
    pub max_epochs: i64,
    pub batch: i64,
    pub seed: i64,
}

impl Default for C2stSettings {
    fn default() -> Self {
        C2stSettings { folds: 5, max_epochs: 200, batch: 200, seed: 1 }
    }
}

/// Mean held-out accuracy of a classifier between the rows of `a` and of `b` ([n, D] each, any float kind).
pub fn c2st(a: &Tensor, b: &Tensor, s: &C2stSettings) -> f64 {
    tch::manual_seed(s.seed);
    let a = a.to_kind(Kind::Float).to_device(Device::Cpu);
    let b = b.to_kind(Kind::Float).to_device(Device::Cpu);
    let mean = a.mean_dim(0, true, None);
    let std = a.std_dim(0, true, true).clamp_min(1e-8);
    let x = Tensor::cat(&[(&a - &mean) / &std, (&b - &mean) / &std], 0);
    let y = Tensor::cat(&[Tensor::zeros([a.size()[0]], (Kind::Float, Device::Cpu)), Tensor::ones([b.size()[0]], (Kind::Float, Device::Cpu))], 0);
    let n = x.size()[0];
    let perm = Tensor::randperm(n, (Kind::Int64, Device::Cpu));
    let (x, y) = (x.index_select(0, &perm), y.index_select(0, &perm));
    let folds = s.folds.clamp(2, n);
    let mut acc = 0.0;
    for k in 0..folds {
        let (lo, hi) = (k * n / folds, (k + 1) * n / folds);
        let test = Tensor::arange_start(lo, hi, (Kind::Int64, Device::Cpu));
        let train = Tensor::cat(&[Tensor::arange(lo, (Kind::Int64, Device::Cpu)), Tensor::arange_start(hi, n, (Kind::Int64, Device::Cpu))], 0);
        acc += fold_accuracy(&x.index_select(0, &train), &y.index_select(0, &train), &x.index_select(0, &test), &y.index_select(0, &test), s);
    }
    acc / folds as f64
}

fn fold_accuracy(x: &Tensor, y: &Tensor, x_test: &Tensor, y_test: &Tensor, s: &C2stSettings) -> f64 {
    let d = x.size()[1];
    let h = 10 * d;
    let vs = nn::VarStore::new(Device::Cpu);
    let p = vs.root();
    let net = nn::seq()
        .add(nn::linear(&p / "l0", d, h, Default::default()))
        .add_fn(|t| t.relu())
        .add(nn::linear(&p / "l1", h, h, Default::default()))
        .add_fn(|t| t.relu())
        .add(nn::linear(&p / "l2", h, 1, Default::default()));
    let mut opt = nn::Adam::default().build(&vs, 1e-3).expect("Adam over a fresh VarStore");
    let n = x.size()[0];
    let (mut best, mut stale) = (f64::INFINITY, 0);
    for _ in 0..s.max_epochs {
        let perm = Tensor::randperm(n, (Kind::Int64, Device::Cpu));
        let mut total = 0.0;
        for start in (0..n).step_by(s.batch as usize) {
            let idx = perm.narrow(0, start, s.batch.min(n - start));
            let logits = net.forward(&x.index_select(0, &idx)).squeeze_dim(1);
            let loss = logits.binary_cross_entropy_with_logits::<Tensor>(&y.index_select(0, &idx), None, None, tch::Reduction::Sum);
            opt.backward_step(&loss);
            total += loss.double_value(&[]);
        }
        let epoch_loss = total / n as f64;
        if epoch_loss < best - 1e-4 {
            (best, stale) = (epoch_loss, 0);
        } else {
            stale += 1;
            if stale >= 10 {
                break;
            }
        }
    }
    tch::no_grad(|| {
        let predicted = net.forward(x_test).squeeze_dim(1).gt(0.0).to_kind(Kind::Float);
        predicted.eq_tensor(y_test).to_kind(Kind::Double).mean(None).double_value(&[])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_law_is_near_chance_and_separated_laws_are_near_one() {
        tch::manual_seed(0);
        let s = C2stSettings { folds: 3, max_epochs: 30, ..Default::default() };
        let a = Tensor::randn([1500, 2], (Kind::Float, Device::Cpu));
        let b = Tensor::randn([1500, 2], (Kind::Float, Device::Cpu));
        let same = c2st(&a, &b, &s);
        assert!((same - 0.5).abs() < 0.05, "same law: {same}");
        let shifted = &b + 3.0;
        let apart = c2st(&a, &shifted, &s);
        assert!(apart > 0.97, "means 3σ·√2 apart: {apart}");
        // In between: a shift of 1 in one coordinate gives the Bayes accuracy Φ(1/2) = 0.69.
        let half = &b + Tensor::from_slice(&[1.0f32, 0.0]);
        let mid = c2st(&a, &half, &s);
        assert!((mid - 0.691).abs() < 0.04, "shift 1: {mid} vs Bayes 0.691");
    }
}
