//! Inference surjections with finitely many preimages (abs, sort), made exact and continuous everywhere by giving the
//! surjection's output the density of the same surjection applied to a flow's sample.
//!
//! SurVAE (Nielsen et al. 2020, §3.2) writes p(x) = q(b | z) p(z) for z = f(x) (b: which preimage x is, e.g. the
//! signs for abs, the permutation for sort), with p(z) a density on the image of f (the positive orthant, the
//! ordered cone). With y ~ p_Y from a flow on R^D and z = f(y), the change of variables over every preimage gives
//!
//!   p(z) = Σ_{b} p_Y(b(z))          (abs: Σ over the 2^D sign patterns σ of p_Y(σ ⊙ z); sort: Σ over the D! orders)
//!
//! a normalised density on the image, finite and continuous up to its boundary (at z_i = 0 every σ_i gives the same
//! point; at ties the permutations coincide). An earlier version mapped the image onto R^D by a bijection (inverse
//! softplus, log-gaps) instead: normalised too, but the density was forced to 0 on the boundary, and in f32 the map
//! overflowed there, giving NaN log p on the axes (x_i = 0) and at ties. Cost: 2^D or D! flow evaluations per point,
//! so these models are for low dimensions (D ≤ 10 for abs, D ≤ 7 for sort).
use super::abs::Abs;
use super::sort::log_factorial;
use crate::layer::LayerModel;
use crate::model::{LogProb, Model, SamplingCost};
use anyhow::{ensure, Result};
use tch::{Device, Tensor};

/// Which surjection, with what it needs.
#[derive(Debug)]
pub enum Fold {
    /// z = |x|; q(s | z) from the sign classifier (1/2 at z_i = 0, so p is continuous across the axes).
    Abs(Abs),
    /// z = sort(x) ascending; q(π | z) = 1/D!.
    Sort,
}

/// Largest dimension each fold is built for (2^10 and 7! = 5040 flow evaluations per point).
const MAX_ABS_DIM: i64 = 10;
const MAX_SORT_DIM: i64 = 7;

/// Every sign pattern of D coordinates, [2^D, D], entries ±1.
fn sign_patterns(d: i64, device: Device) -> Tensor {
    let n = 1i64 << d;
    let bits = Tensor::arange(n, (tch::Kind::Int64, device)).unsqueeze(1).bitwise_right_shift(&Tensor::arange(d, (tch::Kind::Int64, device)).unsqueeze(0));
    bits.bitwise_and(1) * 2 - 1
}

/// Every permutation of 0..D, [D!, D].
fn permutations(d: i64) -> Vec<Vec<i64>> {
    fn go(prefix: &mut Vec<i64>, rest: &mut Vec<i64>, out: &mut Vec<Vec<i64>>) {
        if rest.is_empty() {
            out.push(prefix.clone());
        }
        for i in 0..rest.len() {
            let v = rest.remove(i);
            prefix.push(v);
            go(prefix, rest, out);
            prefix.pop();
            rest.insert(i, v);
        }
    }
    let mut out = Vec::new();
    go(&mut Vec::new(), &mut (0..d).collect(), &mut out);
    out
}

/// A fold in front of a flow: p(x) = q(b | f(x)) Σ_b p_Y(b(f(x))).
pub struct Folded {
    pub fold: Fold,
    /// The flow and base on R^D (p_Y).
    pub flow: LayerModel,
    pub family: crate::model::Family,
}

impl Folded {
    pub fn new(fold: Fold, flow: LayerModel, dim: i64, family: crate::model::Family) -> Result<Folded> {
        match fold {
            Fold::Abs(_) => ensure!(dim <= MAX_ABS_DIM, "the abs surjection sums over 2^D sign patterns; D = {dim} is above {MAX_ABS_DIM}"),
            Fold::Sort => ensure!(dim <= MAX_SORT_DIM, "the sort surjection sums over D! orders; D = {dim} is above {MAX_SORT_DIM}"),
        }
        Ok(Folded { fold, flow, family })
    }

    /// Every preimage of z = f(x), stacked: [B, n, D].
    fn preimages(&self, z: &Tensor) -> Tensor {
        let d = z.size()[1];
        match &self.fold {
            Fold::Abs(_) => sign_patterns(d, z.device()).to_kind(z.kind()).unsqueeze(1) * z.unsqueeze(0),
            Fold::Sort => {
                let perms: Vec<Tensor> = permutations(d).iter().map(|p| z.index_select(1, &Tensor::from_slice(p).to_device(z.device()))).collect();
                Tensor::stack(&perms, 0)
            }
        }
    }

    /// z = f(x) and log q(b | z) of the preimage x is.
    fn surject(&self, x: &Tensor) -> (Tensor, Tensor) {
        match &self.fold {
            Fold::Abs(abs) => {
                let z = x.abs();
                let s = x.ge(0.0).to_kind(x.kind()) * 2.0 - 1.0;
                let lq = abs.log_q(&s, &z);
                (z, lq)
            }
            Fold::Sort => {
                let (z, _) = x.sort(1, false);
                let lq = Tensor::full([x.size()[0]], -log_factorial(x.size()[1]), (x.kind(), x.device()));
                (z, lq)
            }
        }
    }

    /// log p(z) = log Σ_b p_Y(b(z)).
    fn log_p_image(&self, z: &Tensor) -> Tensor {
        let y = self.preimages(z);
        let (b, n, d) = (y.size()[0], y.size()[1], y.size()[2]);
        self.flow.log_prob(&y.reshape([b * n, d])).value.view([b, n]).logsumexp(0, false)
    }
}

impl Model for Folded {
    fn loss(&self, x: &Tensor, _step: i64) -> Tensor {
        -self.log_prob(x).value.mean(None)
    }

    /// log p(x) = log q(b | z) + log Σ_b p_Y(b(z)), z = f(x): exact.
    fn log_prob(&self, x: &Tensor) -> LogProb {
        let (z, lq) = self.surject(x);
        LogProb { value: lq + self.log_p_image(&z), kind: self.flow.kind() }
    }

    /// y from the flow, z = f(y), then a preimage of z drawn from q(b | z).
    fn sample(&self, n: i64) -> Tensor {
        let y = self.flow.sample(n);
        match &self.fold {
            Fold::Abs(abs) => {
                let z = y.abs();
                z.shallow_clone() * abs.draw_signs(&z)
            }
            Fold::Sort => {
                let (z, _) = y.sort(1, false);
                let idx = crate::rows::rand_like(&z).argsort(1, false);
                z.gather(1, &idx, false)
            }
        }
    }

    fn sampling_cost(&self) -> SamplingCost {
        let mut c = self.flow.sampling_cost();
        if let Fold::Abs(abs) = &self.fold {
            c.nfe_per_sample += crate::layer::Layer::nfe(abs);
        }
        c
    }

    fn family(&self) -> crate::model::Family {
        self.family
    }

    fn data_init(&self, x: &Tensor) {
        let (z, _) = self.surject(x);
        self.flow.data_init(&z)
    }

    fn set_training(&self, on: bool) {
        self.flow.set_training(on)
    }

    fn estimator(&self) -> serde_json::Value {
        let what = match self.fold {
            Fold::Abs(_) => "abs: log q(s | |x|) + log Σ over the 2^D sign patterns σ of p_flow(σ ⊙ |x|)",
            Fold::Sort => "sort: -log D! + log Σ over the D! orders of p_flow(π(sort x))",
        };
        serde_json::json!({ "method": format!("exact ({what})") })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dist::DiagNormal;
    use crate::flows::build::{realnvp_layers, RealNvpParams};
    use crate::survae::testing::perturb;
    use tch::{nn, Kind as TKind};

    fn folded(vs: &nn::VarStore, fold: Fold) -> Folded {
        let p: RealNvpParams = toml::from_str("n_layers = 4\nhidden = [16]").unwrap();
        let layers = realnvp_layers(&vs.root().sub("flow"), 2, &p).unwrap();
        let base = DiagNormal::new(&vs.root().sub("base"), &[2]);
        perturb(vs, 0.2);
        tch::no_grad(|| {
            let _ = base.mean.shallow_clone().copy_(&Tensor::from_slice(&[0.6f32, -0.3]));
        });
        Folded::new(fold, LayerModel { layers, base: Box::new(base), family: crate::model::Family::Survae }, 2, crate::model::Family::Survae).unwrap()
    }

    /// Σ p · area on a grid that contains the axes (x_i = 0) and the diagonal (ties): every value finite.
    fn mass_with_boundaries(m: &Folded) -> f64 {
        let (n, r) = (801, 16.0);
        let xs = Tensor::linspace(-r, r, n, (TKind::Float, Device::Cpu));
        let pts = Tensor::stack(&[xs.repeat_interleave_self_int(n, 0, None), xs.repeat([n])], 1);
        let lp = tch::no_grad(|| m.log_prob(&pts).value);
        assert!(bool::try_from(lp.isfinite().all()).unwrap(), "log p finite everywhere, the axes and ties included");
        let h = 2.0 * r / (n - 1) as f64;
        lp.exp().sum(TKind::Double).double_value(&[]) * h * h
    }

    #[test]
    fn folded_abs_and_sort_integrate_to_one_with_finite_boundaries() {
        for fold in ["abs_learned", "abs_fixed", "sort"] {
            let vs = nn::VarStore::new(Device::Cpu);
            let f = match fold {
                "abs_learned" => Fold::Abs(Abs::new(&vs.root().sub("sign"), 2, Some(&[16])).unwrap()),
                "abs_fixed" => Fold::Abs(Abs::new(&vs.root().sub("sign"), 2, None).unwrap()),
                _ => Fold::Sort,
            };
            let m = folded(&vs, f);
            let mass = mass_with_boundaries(&m);
            assert!((mass - 1.0).abs() < 5e-3, "{fold}: mass {mass}");
        }
    }

    #[test]
    fn density_is_continuous_across_the_boundary_with_finite_gradients() {
        let vs = nn::VarStore::new(Device::Cpu);
        let m = folded(&vs, Fold::Abs(Abs::new(&vs.root().sub("sign"), 2, Some(&[16])).unwrap()));
        let eps = 1e-4f32;
        let x = Tensor::from_slice(&[0.0f32, 0.7, eps, 0.7, -eps, 0.7, 0.3, 0.0, 0.0, 0.0]).view([5, 2]).set_requires_grad(true);
        let lp = m.log_prob(&x).value;
        let v: Vec<f32> = Vec::try_from(&lp.detach()).unwrap();
        assert!(v.iter().all(|p| p.is_finite()), "{v:?}");
        assert!((v[0] - v[1]).abs() < 1e-2 && (v[0] - v[2]).abs() < 1e-2, "continuous across x_1 = 0: {v:?}");
        lp.sum(TKind::Float).backward();
        assert!(bool::try_from(x.grad().isfinite().all()).unwrap(), "finite gradients at the boundary");

        let vs = nn::VarStore::new(Device::Cpu);
        let m = folded(&vs, Fold::Sort);
        let x = Tensor::from_slice(&[0.5f32, 0.5, 0.5, 0.5 + eps, 0.5 + eps, 0.5]).view([3, 2]).set_requires_grad(true);
        let lp = m.log_prob(&x).value;
        let v: Vec<f32> = Vec::try_from(&lp.detach()).unwrap();
        assert!(v.iter().all(|p| p.is_finite()) && (v[0] - v[1]).abs() < 1e-2 && (v[1] - v[2]).abs() < 1e-5, "{v:?}");
        lp.sum(TKind::Float).backward();
        assert!(bool::try_from(x.grad().isfinite().all()).unwrap());
    }

    #[test]
    fn samples_follow_the_density() {
        // The fraction of samples in the first quadrant equals the model's mass there.
        let vs = nn::VarStore::new(Device::Cpu);
        let m = folded(&vs, Fold::Abs(Abs::new(&vs.root().sub("sign"), 2, Some(&[16])).unwrap()));
        tch::manual_seed(0);
        let x = tch::no_grad(|| m.sample(100_000));
        let frac = x.gt(0.0).all_dim(1, false).to_kind(TKind::Double).mean(None).double_value(&[]);
        let n = 400;
        let h = 6.0 / n as f64;
        let xs = Tensor::arange(n, (TKind::Float, Device::Cpu)) * h + h / 2.0;
        let pts = Tensor::stack(&[xs.repeat_interleave_self_int(n, 0, None), xs.repeat([n])], 1);
        let mass = tch::no_grad(|| m.log_prob(&pts).value.exp().sum(TKind::Double).double_value(&[])) * h * h;
        assert!((frac - mass).abs() < 0.01, "samples {frac} vs density {mass}");
    }

    #[test]
    fn enumerations_are_complete() {
        assert_eq!(permutations(4).len(), 24);
        let s = sign_patterns(3, Device::Cpu);
        assert_eq!(s.size(), vec![8, 3]);
        assert_eq!(s.unique_dim(0, true, false, false).0.size()[0], 8);
    }
}
