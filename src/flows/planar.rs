//! Planar and radial flows (Rezende & Mohamed 2015, §4.1, eq. 10-14 and App. A.1-A.2), used in the density direction:
//! each layer maps data towards the base by the closed form, so log p(x) is exact and cheap.
//! - Planar: z = x + û tanh(wᵀx + b), log|det| = log|1 + ûᵀw tanh'(wᵀx + b)|; invertible because
//!   û = u + [m(wᵀu) - wᵀu] w/‖w‖², m(a) = -1 + softplus(a), makes wᵀû > -1 (App. A.1). The inverse has no closed
//!   form: a = wᵀx solves the monotone scalar equation wᵀz = a + wᵀû tanh(a + b), found by bisection (sampling only).
//! - Radial: z = x + β̂ (x - x₀)/(α̂ + r), r = ‖x - x₀‖, α̂ = softplus(α) > 0, β̂ = -α̂ + softplus(β) ≥ -α̂ (App. A.2);
//!   log|det| = (D - 1) log(1 + β̂h) + log(1 + β̂α̂/(α̂ + r)²) with h = 1/(α̂ + r). Its inverse is closed-form: r solves
//!   r² + (α̂ + β̂ - r_z) r - α̂ r_z = 0.
use crate::layer::{Layer, LayerKind};
use tch::{nn, Tensor};

/// Bisection steps of the planar inverse: the bracket shrinks 2^-64 times, below f64 precision.
const BISECTION_STEPS: usize = 64;

#[derive(Debug)]
pub struct Planar {
    u: Tensor,
    w: Tensor,
    b: Tensor,
}

impl Planar {
    pub fn new(path: &nn::Path, dim: i64) -> Self {
        let init = nn::Init::Randn { mean: 0.0, stdev: 0.1 };
        Planar { u: path.var("u", &[dim], init), w: path.var("w", &[dim], init), b: path.zeros("b", &[1]) }
    }

    /// û with wᵀû = -1 + softplus(wᵀu) > -1.
    fn u_hat(&self) -> Tensor {
        let wu = self.w.dot(&self.u);
        let m = wu.softplus() - 1.0;
        &self.u + (m - wu) * &self.w / (self.w.square().sum(None) + 1e-12)
    }

    /// wᵀx + b per example.
    fn activation(&self, x: &Tensor) -> Tensor {
        x.matmul(&self.w) + &self.b
    }
}

impl Layer for Planar {
    fn forward(&self, x: &Tensor) -> (Tensor, Tensor) {
        let u = self.u_hat();
        let a = self.activation(x);
        let h = a.tanh();
        let z = x + h.unsqueeze(1) * u.unsqueeze(0);
        let det = (-h.square() + 1.0) * self.w.dot(&u) + 1.0;
        (z, det.abs().log())
    }

    /// x = z - û tanh(a + b) with a = wᵀx from bisection on wᵀz = a + wᵀû tanh(a + b) (strictly increasing in a).
    fn inverse(&self, z: &Tensor) -> (Tensor, Tensor) {
        let u = self.u_hat();
        let c = self.w.dot(&u);
        let target = z.matmul(&self.w);
        let width = c.abs() + 1e-6;
        let (mut lo, mut hi) = (&target - &width, &target + &width);
        for _ in 0..BISECTION_STEPS {
            let mid = (&lo + &hi) * 0.5;
            let g = &mid + &c * (&mid + &self.b).tanh() - &target;
            let below = g.lt(0.0);
            lo = mid.where_self(&below, &lo);
            hi = hi.where_self(&below, &mid);
        }
        let a = (lo + hi) * 0.5;
        let x = z - (a + &self.b).tanh().unsqueeze(1) * u.unsqueeze(0);
        let v = self.forward(&x).1;
        (x, -v)
    }

    fn kind(&self) -> LayerKind {
        LayerKind::Bijection
    }
}

#[derive(Debug)]
pub struct Radial {
    x0: Tensor,
    alpha: Tensor,
    beta: Tensor,
    dim: i64,
}

impl Radial {
    pub fn new(path: &nn::Path, dim: i64) -> Self {
        Radial {
            x0: path.var("x0", &[dim], nn::Init::Randn { mean: 0.0, stdev: 1.0 }),
            alpha: path.zeros("alpha", &[1]),
            beta: path.zeros("beta", &[1]),
            dim,
        }
    }

    /// (α̂, β̂) with α̂ > 0 and β̂ ≥ -α̂.
    fn constrained(&self) -> (Tensor, Tensor) {
        let a = self.alpha.softplus();
        let b = self.beta.softplus() - &a;
        (a, b)
    }

    fn log_det(&self, r: &Tensor, a: &Tensor, b: &Tensor) -> Tensor {
        let h = (r + a).reciprocal();
        let first = (&h * b + 1.0).log() * (self.dim - 1) as f64;
        let second = (b * a / (r + a).square() + 1.0).log();
        first + second
    }
}

impl Layer for Radial {
    fn forward(&self, x: &Tensor) -> (Tensor, Tensor) {
        let (a, b) = self.constrained();
        let d = x - &self.x0;
        let r = d.square().sum_dim_intlist(1, false, None).sqrt();
        let h = (&r + &a).reciprocal();
        let z = x + d * (&h * &b).unsqueeze(1);
        (z, self.log_det(&r, &a, &b))
    }

    fn inverse(&self, z: &Tensor) -> (Tensor, Tensor) {
        let (a, b) = self.constrained();
        let d = z - &self.x0;
        let r_z = d.square().sum_dim_intlist(1, false, None).sqrt();
        let p = &a + &b - &r_z;
        let r = (-&p + (p.square() + &r_z * &a * 4.0).sqrt()) * 0.5;
        let scale = (&r + &a).reciprocal() * &b + 1.0;
        let x = d / scale.unsqueeze(1) + &self.x0;
        (x, -self.log_det(&r, &a, &b))
    }

    fn kind(&self) -> LayerKind {
        LayerKind::Bijection
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flows::testing::check_bijection;
    use tch::{Device, Kind};

    #[test]
    fn planar_and_radial_are_correct_bijections() {
        check_bijection(2, |p| Box::new(Planar::new(p, 2)));
        check_bijection(5, |p| Box::new(Planar::new(p, 5)));
        check_bijection(2, |p| Box::new(Radial::new(p, 2)));
        check_bijection(4, |p| Box::new(Radial::new(p, 4)));
    }

    #[test]
    fn planar_stays_invertible_where_the_raw_u_would_not_be() {
        // wᵀu = -4 would fold the plane (1 + wᵀu tanh' < 0 near a = 0); û repairs it.
        let vs = nn::VarStore::new(Device::Cpu);
        let layer = Planar::new(&vs.root(), 2);
        tch::no_grad(|| {
            layer.w.shallow_clone().copy_(&Tensor::from_slice(&[2.0f32, 0.0]));
            layer.u.shallow_clone().copy_(&Tensor::from_slice(&[-2.0f32, 1.0]));
        });
        assert!(layer.w.dot(&layer.u_hat()).double_value(&[]) > -1.0);
        let x = Tensor::linspace(-3.0, 3.0, 101, (Kind::Float, Device::Cpu)).unsqueeze(1).pad([0, 1], "constant", Some(0.0));
        let z = layer.forward(&x).0.select(1, 0);
        let steps = z.narrow(0, 1, 100) - z.narrow(0, 0, 100);
        assert!(steps.min().double_value(&[]) > 0.0, "z_1 increases along x_1: the map does not fold");
    }

    #[test]
    fn radial_with_the_extreme_beta_is_still_invertible() {
        // β̂ → -α̂ contracts towards x₀ as hard as allowed; the inverse must still recover x.
        let mut vs = nn::VarStore::new(Device::Cpu);
        let layer = Radial::new(&vs.root(), 3);
        tch::no_grad(|| {
            layer.beta.shallow_clone().copy_(&Tensor::from_slice(&[-8.0f32]));
        });
        vs.double();
        let x = Tensor::randn([64, 3], (Kind::Double, Device::Cpu));
        let (z, v) = layer.forward(&x);
        let (x_back, v_back) = layer.inverse(&z);
        assert!((x_back - &x).abs().max().double_value(&[]) < 1e-8);
        assert!((v + v_back).abs().max().double_value(&[]) < 1e-8);
    }
}
