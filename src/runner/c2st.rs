//! The classifier two-sample test (Lopez-Paz & Oquab 2017), as the SBI benchmark computes it (sbibm's `c2st`): both
//! samples z-scored by the first one's mean and std, an MLP with two hidden layers of 10·D ReLU units trained by
//! Adam to tell them apart, and its mean accuracy over k held-out folds. 0.5: indistinguishable; 1.0: disjoint.
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
    c2st_many(&[(a.shallow_clone(), b.shallow_clone())], s)[0]
}

/// [`c2st`] of several pairs at once (all of one shape): the k fold classifiers of every pair train side by side as
/// one batched network (each with its own batches, Adam moments and stopping rule), the same classifiers as
/// separate loops at a fraction of the kernel launches.
pub fn c2st_many(pairs: &[(Tensor, Tensor)], s: &C2stSettings) -> Vec<f64> {
    tch::manual_seed(s.seed);
    let mut xs = Vec::new();
    let mut ys = Vec::new();
    for (a, b) in pairs {
        let a = a.to_kind(Kind::Float).to_device(Device::Cpu);
        let b = b.to_kind(Kind::Float).to_device(Device::Cpu);
        let mean = a.mean_dim(0, true, None);
        let std = a.std_dim(0, true, true).clamp_min(1e-8);
        let x = Tensor::cat(&[(&a - &mean) / &std, (&b - &mean) / &std], 0);
        let y = Tensor::cat(&[Tensor::zeros([a.size()[0]], (Kind::Float, Device::Cpu)), Tensor::ones([b.size()[0]], (Kind::Float, Device::Cpu))], 0);
        let perm = Tensor::randperm(x.size()[0], (Kind::Int64, Device::Cpu));
        xs.push(x.index_select(0, &perm));
        ys.push(y.index_select(0, &perm));
    }
    let n = xs[0].size()[0];
    assert!(xs.iter().all(|x| x.size() == xs[0].size()), "c2st_many: every pair must have the same shape");
    let folds = s.folds.clamp(2, n);
    let bounds: Vec<(i64, i64)> = (0..folds).map(|k| (k * n / folds, (k + 1) * n / folds)).collect();
    // Training rows of fold k: every row outside its test slice (the same count for all folds, dropping at most
    // one row where n is not a multiple of k).
    let m = bounds.iter().map(|(lo, hi)| n - (hi - lo)).min().unwrap_or(0);
    let train = Tensor::stack(
        &bounds
            .iter()
            .map(|&(lo, hi)| Tensor::cat(&[Tensor::arange(lo, (Kind::Int64, Device::Cpu)), Tensor::arange_start(hi, n, (Kind::Int64, Device::Cpu))], 0).narrow(0, 0, m))
            .collect::<Vec<_>>(),
        0,
    )
    .view([-1]);
    let x_train: Vec<Tensor> = xs.iter().map(|x| x.index_select(0, &train).view([folds, m, -1])).collect();
    let y_train: Vec<Tensor> = ys.iter().map(|y| y.index_select(0, &train).view([folds, m])).collect();
    let net = train_folds(&Tensor::cat(&x_train, 0), &Tensor::cat(&y_train, 0), s);
    tch::no_grad(|| {
        xs.iter()
            .zip(&ys)
            .enumerate()
            .map(|(p, (x, y))| {
                let acc: f64 = bounds
                    .iter()
                    .enumerate()
                    .map(|(k, &(lo, hi))| {
                        let logits = net.forward(p as i64 * folds + k as i64, &x.narrow(0, lo, hi - lo));
                        logits.gt(0.0).to_kind(Kind::Float).eq_tensor(&y.narrow(0, lo, hi - lo)).to_kind(Kind::Double).mean(None).double_value(&[])
                    })
                    .sum();
                acc / folds as f64
            })
            .collect()
    })
}

/// k MLPs D → 10D → 10D → 1 (ReLU) as batched weights [k, in, out].
struct Folds {
    params: Vec<Tensor>,
}

impl Folds {
    /// torch.nn.Linear's initialisation per fold: weights and biases U(-1/√fan_in, 1/√fan_in).
    fn new(k: i64, d: i64) -> Folds {
        let h = 10 * d;
        let mut params = Vec::new();
        for (i, o) in [(d, h), (h, h), (h, 1)] {
            let bound = 1.0 / (i as f64).sqrt();
            params.push((Tensor::rand([k, i, o], (Kind::Float, Device::Cpu)) * 2.0 - 1.0) * bound);
            params.push((Tensor::rand([k, 1, o], (Kind::Float, Device::Cpu)) * 2.0 - 1.0) * bound);
        }
        Folds { params: params.into_iter().map(|p| p.set_requires_grad(true)).collect() }
    }

    /// Logits [k, B] of batches x [k, B, D].
    fn logits(&self, x: &Tensor) -> Tensor {
        let p = &self.params;
        let h = p[1].baddbmm(x, &p[0], 1.0, 1.0).relu();
        let h = p[3].baddbmm(&h, &p[2], 1.0, 1.0).relu();
        p[5].baddbmm(&h, &p[4], 1.0, 1.0).squeeze_dim(-1)
    }

    /// Fold k's logits [n] of rows x [n, D].
    fn forward(&self, k: i64, x: &Tensor) -> Tensor {
        let p: Vec<Tensor> = self.params.iter().map(|t| t.get(k)).collect();
        let h = (x.matmul(&p[0]) + &p[1]).relu();
        let h = (h.matmul(&p[2]) + &p[3]).relu();
        (h.matmul(&p[4]) + &p[5]).squeeze_dim(-1)
    }
}

/// Adam (lr 1e-3, β = (0.9, 0.999), ε = 1e-8) on minibatches of each fold's rows x [k, m, D], y [k, m], until a
/// fold's epoch loss has not improved by 1e-4 on its best for 10 epochs (scikit-learn's rule; that fold is then
/// frozen) or `max_epochs`.
fn train_folds(x: &Tensor, y: &Tensor, s: &C2stSettings) -> Folds {
    let (k, m, d) = (x.size()[0], x.size()[1], x.size()[2]);
    let net = Folds::new(k, d);
    let mut moments: Vec<(Tensor, Tensor)> = net.params.iter().map(|p| (p.zeros_like(), p.zeros_like())).collect();
    let (lr, b1, b2, eps) = (1e-3, 0.9, 0.999, 1e-8);
    let mut best = vec![f64::INFINITY; k as usize];
    let mut stale = vec![0; k as usize];
    let mut active = vec![true; k as usize];
    let mut t = 0;
    for _ in 0..s.max_epochs {
        let mask = Tensor::from_slice(&active.iter().map(|&a| a as i64 as f32).collect::<Vec<_>>()).view([k, 1, 1]);
        let perm = Tensor::rand([k, m], (Kind::Float, Device::Cpu)).argsort(1, false);
        let mut total = Tensor::zeros([k], (Kind::Double, Device::Cpu));
        for start in (0..m).step_by(s.batch as usize) {
            let idx = perm.narrow(1, start, s.batch.min(m - start));
            let xb = x.gather(1, &idx.unsqueeze(-1).expand([-1, -1, d], false), false);
            let yb = y.gather(1, &idx, false);
            let loss = net.logits(&xb).binary_cross_entropy_with_logits::<Tensor>(&yb, None, None, tch::Reduction::None).sum_dim_intlist(1, false, Kind::Float);
            for p in &net.params {
                let mut g = p.grad();
                if g.defined() {
                    let _ = g.zero_();
                }
            }
            loss.sum(Kind::Float).backward();
            t += 1;
            tch::no_grad(|| {
                let (c1, c2) = (1.0 - f64::powi(b1, t), 1.0 - f64::powi(b2, t));
                for (p, (mo, ve)) in net.params.iter().zip(moments.iter_mut()) {
                    let g = p.grad();
                    *mo = &*mo * b1 + &g * (1.0 - b1);
                    *ve = &*ve * b2 + g.square() * (1.0 - b2);
                    let step = (&*mo / c1) / ((&*ve / c2).sqrt() + eps) * lr;
                    let mut p = p.shallow_clone();
                    let _ = p.g_sub_(&(step * &mask));
                }
            });
            total += loss.detach().to_kind(Kind::Double);
        }
        let epoch: Vec<f64> = Vec::try_from(total / m as f64).unwrap_or_default();
        for f in 0..k as usize {
            if !active[f] {
                continue;
            }
            if epoch[f] > best[f] - 1e-4 {
                stale[f] += 1;
            } else {
                stale[f] = 0;
            }
            best[f] = best[f].min(epoch[f]);
            active[f] = stale[f] < 10;
        }
        if !active.iter().any(|&a| a) {
            break;
        }
    }
    net
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
        // All three at once: the same measures from one batched training.
        let many = c2st_many(&[(a.shallow_clone(), b.shallow_clone()), (a.shallow_clone(), shifted), (a, half)], &s);
        assert!((many[0] - 0.5).abs() < 0.05 && many[1] > 0.97 && (many[2] - 0.691).abs() < 0.04, "batched: {many:?}");
    }
}
