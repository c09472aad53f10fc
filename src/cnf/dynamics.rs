//! The augmented ODE of a CNF dz/dt = v(z, t) on t ∈ [0, T], data at t = 0 and the base N(0, I) at t = T:
//!
//!   d/dt [z, Δ, K, J] = [v, ∇·v, ‖v‖², ‖εᵀ ∂v/∂z‖²],
//!
//! so that log p(x) = log N(z(T); 0, I) + Δ(T) (instantaneous change of variables, Chen et al. 2018, Thm. 1), and
//! K(T) = ∫‖v‖² dt and J(T) = ∫‖εᵀ∂v/∂z‖² dt are RNODE's kinetic-energy and Jacobian-Frobenius regularisers
//! (Finlay et al. 2020, eq. 9, J by one Rademacher probe ε, an unbiased estimate of ‖∂v/∂z‖_F²).
//! The divergence is exact (one vector-Jacobian product per dimension) or Hutchinson's εᵀ(∂v/∂z)ε with the same
//! probes, fixed along the path (FFJORD). Every product is taken with `create_graph`, so the right-hand side is
//! differentiable in z and in the parameters of v: backpropagation through RK45's steps and the adjoint's
//! vector-Jacobian products both work on it.
use crate::score::likelihood::Divergence;
use tch::{Kind, Tensor};

/// v(z, s) with s = t / T ∈ [0, 1] of shape \[B] (the time input of the project's time-conditioned networks).
pub type Velocity<'a> = dyn Fn(&Tensor, &Tensor) -> Tensor + 'a;

/// One batch's augmented dynamics.
pub struct Dynamics<'a> {
    pub v: &'a Velocity<'a>,
    /// The batch's shape [B, event...].
    pub shape: Vec<i64>,
    /// T, the integration time.
    pub time_length: f64,
    pub div: Divergence,
    /// Rademacher probes shaped like the batch, drawn once per batch: Hutchinson's (all of them) and the
    /// Jacobian-norm estimate's (the first). None needed for an exact divergence without the Jacobian term.
    pub probes: Vec<Tensor>,
}

/// What the augmented state at t = T gives, per example \[B].
pub struct Terms {
    /// log p(x) in the space z lives in (nats).
    pub log_prob: Tensor,
    /// K(T) = ∫_0^T ‖v‖² dt.
    pub kinetic: Tensor,
    /// J(T) = ∫_0^T ‖εᵀ ∂v/∂z‖² dt (0 without probes).
    pub jacobian: Tensor,
}

impl Dynamics<'_> {
    fn dims(&self) -> (i64, i64) {
        (self.shape[0], self.shape[1..].iter().product())
    }

    /// The state at t = 0: [x flattened, 0, 0, 0] per row, [B, D + 3].
    pub fn initial(&self, x: &Tensor) -> Tensor {
        let (b, d) = self.dims();
        Tensor::cat(&[x.reshape([b, d]), Tensor::zeros([b, 3], (x.kind(), x.device()))], 1)
    }

    /// d/dt of the state [B, D + 3] at time t (differentiable; see the module comment).
    pub fn rhs(&self, t: f64, state: &Tensor) -> Tensor {
        tch::with_grad(|| {
            let (b, d) = self.dims();
            let z0 = state.narrow(1, 0, d).reshape(self.shape.as_slice());
            let z = if z0.requires_grad() { z0 } else { z0.detach().set_requires_grad(true) };
            let s = Tensor::full([b], t / self.time_length, (Kind::Float, state.device()));
            let v = (self.v)(&z, &s);
            let vjp = |e: &Tensor| Tensor::run_backward(&[(&v * e).sum(None)], &[&z], true, true).remove(0);
            let rows = |t: &Tensor| t.reshape([b, d]);
            let mut jac_probe = None;
            let div = match self.div {
                Divergence::Exact => {
                    let flat = rows(&v);
                    (0..d).fold(Tensor::zeros([b], (v.kind(), v.device())), |acc, i| {
                        let g = Tensor::run_backward(&[flat.select(1, i).sum(None)], &[&z], true, true).remove(0);
                        acc + rows(&g).select(1, i)
                    })
                }
                Divergence::Hutchinson { .. } => {
                    let products: Vec<Tensor> = self.probes.iter().map(vjp).collect();
                    let div = products.iter().zip(&self.probes).fold(Tensor::zeros([b], (v.kind(), v.device())), |acc, (p, e)| acc + rows(&(p * e)).sum_dim_intlist(1, false, None));
                    jac_probe = products.into_iter().next();
                    div / self.probes.len().max(1) as f64
                }
            };
            let jacobian = match (jac_probe, self.probes.first()) {
                (Some(p), _) => rows(&p).square().sum_dim_intlist(1, false, None),
                (None, Some(e)) => rows(&vjp(e)).square().sum_dim_intlist(1, false, None),
                (None, None) => Tensor::zeros([b], (v.kind(), v.device())),
            };
            let kinetic = rows(&v).square().sum_dim_intlist(1, false, None);
            let k = state.kind();
            Tensor::cat(&[rows(&v).to_kind(k), div.to_kind(k).unsqueeze(1), kinetic.to_kind(k).unsqueeze(1), jacobian.to_kind(k).unsqueeze(1)], 1)
        })
    }

    /// log p(x), K and J from the state at t = T.
    pub fn terms(&self, state: &Tensor) -> Terms {
        let (_, d) = self.dims();
        let z = state.narrow(1, 0, d);
        let log_base = z.square().sum_dim_intlist(1, false, None) * -0.5 - 0.5 * d as f64 * (2.0 * std::f64::consts::PI).ln();
        Terms { log_prob: log_base + state.select(1, d), kinetic: state.select(1, d + 1), jacobian: state.select(1, d + 2) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::score::adjoint;
    use crate::score::likelihood::rademacher;
    use crate::score::ode::{rk45, Tolerance};
    use tch::Device;

    const T: f64 = 0.8;

    /// v(z) = z Aᵀ: z(T) = e^{AT} x, so log p(x) = log N(e^{AT} x) + T tr A; K = ∫‖A e^{At} x‖² dt (Simpson on a
    /// fine grid); J = T ‖εᵀA‖² exactly (the Jacobian is A everywhere).
    #[test]
    fn a_linear_field_gives_its_closed_forms_and_adjoint_gradients_equal_backprop() {
        tch::manual_seed(5);
        let opts = (Kind::Double, Device::Cpu);
        let a = Tensor::from_slice(&[0.3f64, -0.7, 0.5, -0.2]).reshape([2, 2]).set_requires_grad(true);
        let v = |z: &Tensor, _s: &Tensor| z.matmul(&a.tr());
        let x = Tensor::randn([6, 2], opts);
        let probes = rademacher(&x, 1);
        let tol = Tolerance { rtol: 1e-10, atol: 1e-10 };
        for div in [Divergence::Exact, Divergence::Hutchinson { probes: 1 }] {
            let dynamics = Dynamics { v: &v, shape: x.size(), time_length: T, div, probes: probes.iter().map(Tensor::shallow_clone).collect() };
            let (s1, nfe) = rk45(&mut |t, s: &Tensor| dynamics.rhs(t, s), &dynamics.initial(&x), 0.0, T, tol);
            let terms = dynamics.terms(&s1);
            let expm = (a.detach() * T).matrix_exp();
            let z = x.matmul(&expm.tr());
            let tr = a.detach().trace().double_value(&[]);
            let exact = z.square().sum_dim_intlist(1, false, None) * -0.5 - (2.0 * std::f64::consts::PI).ln() + T * tr;
            let err = (&terms.log_prob - &exact).abs().max().double_value(&[]);
            // Hutchinson with one probe is exact only in expectation: εᵀAε = tr A + ε1 ε2 (A12 + A21).
            let e = &probes[0];
            let hutch_shift = (e.select(1, 0) * e.select(1, 1)).double_value(&[0]) * (0.5 - 0.7) * T;
            match div {
                Divergence::Exact => assert!(err < 1e-7, "log p off by {err} ({nfe} evaluations)"),
                Divergence::Hutchinson { .. } => {
                    let shifted = (&terms.log_prob - &exact).select(0, 0).double_value(&[]);
                    assert!((shifted - hutch_shift).abs() < 1e-7, "Hutchinson: {shifted} vs {hutch_shift}");
                }
            }
            let grid = 2001;
            let k: Vec<f64> = (0..grid)
                .map(|i| {
                    let t = T * i as f64 / (grid - 1) as f64;
                    let zt = x.matmul(&(a.detach() * t).matrix_exp().tr());
                    zt.matmul(&a.detach().tr()).square().sum_dim_intlist(1, false, None).double_value(&[0])
                })
                .collect();
            let h = T / (grid - 1) as f64;
            let simpson = h / 3.0 * (k[0] + k[grid - 1] + (1..grid - 1).map(|i| if i % 2 == 1 { 4.0 * k[i] } else { 2.0 * k[i] }).sum::<f64>());
            assert!((terms.kinetic.double_value(&[0]) - simpson).abs() < 1e-7, "K {} vs {simpson}", terms.kinetic.double_value(&[0]));
            let jac = e.matmul(&a.detach()).square().sum_dim_intlist(1, false, None) * T;
            assert!((&terms.jacobian - jac).abs().max().double_value(&[]) < 1e-9);

            // The regularised objective's gradient in A: backprop through the steps = the adjoint.
            let objective = |s: &Tensor| {
                let t = dynamics.terms(s);
                -t.log_prob.mean(Kind::Double) + t.kinetic.mean(Kind::Double) * 0.1 + t.jacobian.mean(Kind::Double) * 0.05
            };
            let bp = Tensor::run_backward(&[objective(&s1)], &[&a], false, false).remove(0);
            let field = |t: f64, s: &Tensor| dynamics.rhs(t, s);
            let (s1a, _) = adjoint::forward(&field, &dynamics.initial(&x), 0.0, T, tol);
            let leaf = s1a.set_requires_grad(true);
            let a1 = Tensor::run_backward(&[objective(&leaf)], &[&leaf], false, false).remove(0);
            let g = adjoint::backward(&field, &[a.shallow_clone()], &leaf.detach(), &a1, 0.0, T, tol, adjoint::Norm::Full);
            let rel = (&g.params[0] - &bp).abs().max().double_value(&[]) / bp.abs().max().double_value(&[]);
            assert!(rel < 1e-6, "{div:?}: adjoint vs backprop gradient, relative error {rel}");
        }
    }
}
