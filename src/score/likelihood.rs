//! log p_ε(x) along the probability-flow ODE dx/dt = f̃(x, t) = f(x, t) - ½ g(t)² ∇log p_t(x) (Song et al. 2021,
//! eq. 13): integrating d/dt [x, Δ] = [f̃, ∇·f̃] from t = ε to 1 gives log p_ε(x) = log p_1(x(1)) + Δ(1)
//! (Chen et al. 2018, instantaneous change of variables).
use super::ode::{rk45, Tolerance};
use super::sde::{bcast, Sde};
use tch::{Kind, Tensor};

/// `[model.ode]`: how the probability-flow ODE is solved, for likelihoods and the ODE sampler.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OdeParams {
    /// RK45 tolerance (rtol = atol).
    pub rtol: f64,
    /// Exact divergence up to this dimension, Hutchinson's estimate above it.
    pub exact_divergence_max_dim: i64,
    /// Rademacher probes per evaluation of Hutchinson's estimate.
    pub hutchinson_probes: usize,
}

impl Default for OdeParams {
    fn default() -> Self {
        OdeParams { rtol: 1e-5, exact_divergence_max_dim: 16, hutchinson_probes: 1 }
    }
}

impl OdeParams {
    /// RK45 at rtol = atol = `rtol`.
    pub fn tolerance(&self) -> Tolerance {
        Tolerance { rtol: self.rtol, atol: self.rtol }
    }

    /// The divergence estimator for data of `dim` dimensions.
    pub fn divergence(&self, dim: i64) -> Divergence {
        Divergence::for_dim(dim, self.exact_divergence_max_dim, self.hutchinson_probes)
    }
}

/// How the divergence ∇·f̃ is computed.
#[derive(Clone, Copy, Debug)]
pub enum Divergence {
    /// Σ_i ∂f̃_i/∂x_i with one backward pass per dimension: exact (up to the ODE solver's tolerance).
    Exact,
    /// Hutchinson: E[εᵀ (∂f̃/∂x) ε] with `probes` Rademacher vectors drawn once per example and kept along the path
    /// (as FFJORD does): an unbiased stochastic estimate.
    Hutchinson { probes: usize },
}

/// Serde defaults of the likelihood settings shared by the score and DiffFlow models.

impl Divergence {
    /// Exact up to `exact_max_dim` dimensions, Hutchinson with `probes` probes above.
    pub fn for_dim(dim: i64, exact_max_dim: i64, probes: usize) -> Divergence {
        if dim <= exact_max_dim { Divergence::Exact } else { Divergence::Hutchinson { probes } }
    }

    /// How the likelihood it gives must be labelled.
    pub fn kind(self) -> crate::model::Kind {
        match self {
            Divergence::Exact => crate::model::Kind::Exact,
            Divergence::Hutchinson { .. } => crate::model::Kind::Estimate,
        }
    }

    /// For summary.json.
    pub fn describe(self) -> String {
        match self {
            Divergence::Exact => "exact divergence (autograd, one pass per dimension)".to_string(),
            Divergence::Hutchinson { probes } => format!("Hutchinson, {probes} Rademacher probe(s) per example, fixed along the path"),
        }
    }
}

/// ∇log p_t(x) for a batch at one time.
pub type ScoreFn<'a> = dyn Fn(&Tensor, &Tensor) -> Tensor + 'a;

/// f̃(x, t) = f(x, t) - ½ g(t)² s(x, t).
pub fn pf_drift(sde: &Sde, score: &ScoreFn, x: &Tensor, t: &Tensor) -> Tensor {
    let g2 = sde.diffusion(t).square();
    sde.drift(x, t) - score(x, t) * bcast(&(g2 * 0.5), x)
}

/// log p_ε(x) per example \[B] (f64) and the number of drift evaluations.
pub fn log_prob(sde: &Sde, score: &ScoreFn, x: &Tensor, eps: f64, div: Divergence, tol: Tolerance) -> (Tensor, usize) {
    let drift = |y: &Tensor, t: &Tensor| pf_drift(sde, score, y, t);
    ode_log_prob(&drift, &|z: &Tensor| sde.prior_log_prob(z), x, eps, 1.0, div, tol)
}

/// A velocity field v(x, t) for a batch at one time (t of shape \[batch]).
pub type DriftFn<'a> = dyn Fn(&Tensor, &Tensor) -> Tensor + 'a;

/// log p_{t0}(x) of the continuous normalizing flow dx/dt = v(x, t) whose density at `t1` is `prior_log_prob`:
/// log p_{t0}(x) = log p_{t1}(x(t1)) + ∫_{t0}^{t1} ∇·v(x(t), t) dt (Chen et al. 2018, Thm. 1), integrated jointly by
/// RK45 in f64. Returns log p per example \[B] (f64) and the number of velocity evaluations.
pub fn ode_log_prob(
    v: &DriftFn,
    prior_log_prob: &dyn Fn(&Tensor) -> Tensor,
    x: &Tensor,
    t0: f64,
    t1: f64,
    div: Divergence,
    tol: Tolerance,
) -> (Tensor, usize) {
    let shape = x.size();
    let b = shape[0];
    let d: i64 = shape[1..].iter().product();
    let probes: Vec<Tensor> = match div {
        Divergence::Exact => vec![],
        Divergence::Hutchinson { probes } => rademacher(x, probes.max(1)),
    };
    let mut rhs = |t: f64, state: &Tensor| -> Tensor {
        let xs = state.narrow(1, 0, d).to_kind(x.kind()).reshape(shape.as_slice());
        let tt = Tensor::full([b], t, (Kind::Float, x.device()));
        let (dx, dlogp) = tch::with_grad(|| {
            let xg = xs.detach().set_requires_grad(true);
            let f = v(&xg, &tt);
            let div = match div {
                Divergence::Exact => exact_divergence(&f, &xg, d),
                Divergence::Hutchinson { .. } => hutchinson(&f, &xg, &probes),
            };
            (f.detach(), div.detach())
        });
        Tensor::cat(&[dx.reshape([b, d]).to_kind(Kind::Double), dlogp.to_kind(Kind::Double).unsqueeze(1)], 1)
    };
    let y0 = Tensor::cat(&[x.reshape([b, d]).to_kind(Kind::Double), Tensor::zeros([b, 1], (Kind::Double, x.device()))], 1);
    let (y1, nfe) = rk45(&mut rhs, &y0, t0, t1, tol);
    let x1 = y1.narrow(1, 0, d).reshape(shape.as_slice());
    let delta = y1.select(1, d);
    (prior_log_prob(&x1) + delta, nfe)
}

/// `n` Rademacher probes (±1) shaped like `x`, from the batch's row-consistent stream (`rows`).
pub fn rademacher(x: &Tensor, n: usize) -> Vec<Tensor> {
    (0..n).map(|_| crate::rows::rand_like(x).lt(0.5).to_kind(x.kind()) * 2.0 - 1.0).collect()
}

/// Σ_i ∂f_i/∂x_i by one vector-Jacobian product per dimension.
fn exact_divergence(f: &Tensor, x: &Tensor, d: i64) -> Tensor {
    let b = x.size()[0];
    let flat = f.reshape([b, d]);
    let mut total = Tensor::zeros([b], (f.kind(), f.device()));
    for i in 0..d {
        let g = Tensor::run_backward(&[flat.select(1, i).sum(None)], &[x], true, false).remove(0);
        total = total + g.reshape([b, d]).select(1, i);
    }
    total
}

/// Mean over probes of εᵀ (∂f/∂x) ε, by one vector-Jacobian product per probe.
fn hutchinson(f: &Tensor, x: &Tensor, probes: &[Tensor]) -> Tensor {
    let b = x.size()[0];
    let mut total = Tensor::zeros([b], (f.kind(), f.device()));
    for e in probes {
        let vjp = Tensor::run_backward(&[(f * e).sum(None)], &[x], true, false).remove(0);
        total = total + (vjp * e).flatten(1, -1).sum_dim_intlist(1, false, None);
    }
    total / probes.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::score::sde::SdeKind;
    use tch::Device;

    /// Data N(μ, s² I): the perturbed marginal is N(m μ, (m² s² + σ²) I), whose score is known in closed form.
    fn gaussian_score(sde: Sde, mu: f64, s: f64) -> impl Fn(&Tensor, &Tensor) -> Tensor {
        move |x: &Tensor, t: &Tensor| {
            let (m, sd) = sde.mean_std(t);
            let var = m.square() * (s * s) + sd.square();
            -(x - bcast(&(m * mu), x)) / bcast(&var, x)
        }
    }

    fn exact_log_prob_at(sde: &Sde, x: &Tensor, mu: f64, s: f64, t: f64) -> Tensor {
        let (m, sd) = sde.mean_std(&Tensor::from_slice(&[t]).to_kind(Kind::Double));
        let var = m.square().double_value(&[0]) * s * s + sd.square().double_value(&[0]);
        let mean = m.double_value(&[0]) * mu;
        let d = x.size()[1] as f64;
        (x - mean).square().sum_dim_intlist(1, false, Kind::Double) * (-0.5 / var) - 0.5 * d * (2.0 * std::f64::consts::PI * var).ln()
    }

    #[test]
    fn pf_ode_likelihood_of_a_gaussian_is_exact_and_hutchinson_agrees() {
        for kind in [SdeKind::Vp, SdeKind::SubVp, SdeKind::Ve] {
            let sde = Sde { kind, beta_min: 0.1, beta_max: 20.0, sigma_min: 0.01, sigma_max: 50.0 };
            // Zero-mean data, so the prior N(0, prior_std²) matches p_1 to ~1e-4 (VP: m(1)² ≈ 4e-5; VE: s² ≪ σ_max²).
            let (mu, s) = (0.0, 0.5);
            let score = gaussian_score(sde, mu, s);
            tch::manual_seed(3);
            let x = Tensor::randn([256, 3], (Kind::Double, Device::Cpu)) * s + mu;
            let eps = 1e-5;
            let tol = Tolerance { rtol: 1e-6, atol: 1e-6 };
            let (lp, nfe) = log_prob(&sde, &score, &x, eps, Divergence::Exact, tol);
            let exact = exact_log_prob_at(&sde, &x, mu, s, eps);
            let err = (&lp - &exact).abs().max().double_value(&[]);
            let tol_ok = 1e-3;
            assert!(err < tol_ok, "{kind:?}: PF-ODE log p off by {err} ({nfe} evaluations)");

            let (est, _) = log_prob(&sde, &score, &x, eps, Divergence::Hutchinson { probes: 1 }, tol);
            let diff = &est - &lp;
            let se = diff.std(true).double_value(&[]) / (256f64).sqrt();
            let mean = diff.mean(None).double_value(&[]);
            assert!(mean.abs() < 4.0 * se + 1e-4, "{kind:?}: Hutchinson bias {mean} vs s.e. {se}");
        }
    }
}
