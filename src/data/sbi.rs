//! Simulation-based-inference tasks with known posteriors (sbibm, Lueckmann et al. 2021): a prior p(θ), a
//! simulator x ~ p(x | θ), and reference posterior samples for fixed observations x_o, exact where the posterior
//! allows it. A conditional model trained on simulated pairs is q(θ | x): the dataset's rows are θ, its context x.
//!
//! - `gaussian_linear`: θ ∈ R¹⁰ ~ N(0, 0.1 I), x ~ N(θ, 0.1 I). Posterior N(x/2, 0.05 I) in closed form, so the
//!   conditional entropy H(θ | x) = 5 ln(2πe · 0.05) is known and q's expected NLL must stay above it.
//! - `two_moons`: θ ~ U(-1, 1)², a ~ U(-π/2, π/2), r ~ N(0.1, 0.01²), p = (r cos a + 0.25, r sin a),
//!   x = p + (-|θ₁ + θ₂|/√2, (-θ₁ + θ₂)/√2). Exact posterior samples by inverting the simulator (below).
//! - `slcp`: θ ~ U(-3, 3)⁵, x = four draws of N(m, S), m = (θ₁, θ₂), s₁ = θ₃², s₂ = θ₄², ρ = tanh θ₅,
//!   S = [[s₁², ρ s₁ s₂], [ρ s₁ s₂, s₂²]]. The likelihood is closed-form; reference samples come from random-walk
//!   Metropolis chains started at the true θ, with the sign symmetries θ₃ → -θ₃, θ₄ → -θ₄ applied at random (the
//!   likelihood reads only θ₃², θ₄²), so all four modes are covered.
use std::f64::consts::{FRAC_1_SQRT_2, PI};
use tch::{Device, Kind, Tensor};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Task {
    GaussianLinear,
    TwoMoons,
    Slcp,
}

const GL_DIM: i64 = 10;
const GL_VAR: f64 = 0.1;

const F64: (Kind, Device) = (Kind::Double, Device::Cpu);

impl Task {
    pub const ALL: [Task; 3] = [Task::GaussianLinear, Task::TwoMoons, Task::Slcp];

    pub fn name(self) -> &'static str {
        match self {
            Task::GaussianLinear => "gaussian_linear",
            Task::TwoMoons => "two_moons",
            Task::Slcp => "slcp",
        }
    }

    pub fn from_name(name: &str) -> Option<Task> {
        Task::ALL.into_iter().find(|t| t.name() == name)
    }

    pub fn names() -> Vec<&'static str> {
        Task::ALL.iter().map(|t| t.name()).collect()
    }

    /// Dimension of θ.
    pub fn theta_dim(self) -> i64 {
        match self {
            Task::GaussianLinear => GL_DIM,
            Task::TwoMoons => 2,
            Task::Slcp => 5,
        }
    }

    /// Dimension of x.
    pub fn x_dim(self) -> i64 {
        match self {
            Task::GaussianLinear => GL_DIM,
            Task::TwoMoons => 2,
            Task::Slcp => 8,
        }
    }

    /// `n` draws of θ from the prior, [n, dim θ] f64.
    pub fn prior(self, n: i64) -> Tensor {
        let d = self.theta_dim();
        match self {
            Task::GaussianLinear => Tensor::randn([n, d], F64) * GL_VAR.sqrt(),
            Task::TwoMoons => Tensor::rand([n, d], F64) * 2.0 - 1.0,
            Task::Slcp => Tensor::rand([n, d], F64) * 6.0 - 3.0,
        }
    }

    /// log p(θ) (up to nothing: normalised), per row.
    pub fn prior_log_prob(self, theta: &Tensor) -> Tensor {
        let d = self.theta_dim() as f64;
        match self {
            Task::GaussianLinear => (theta.square().sum_dim_intlist(1, false, None) / GL_VAR + d * (2.0 * PI * GL_VAR).ln()) * -0.5,
            Task::TwoMoons | Task::Slcp => {
                let half = if self == Task::TwoMoons { 1.0 } else { 3.0 };
                let inside = theta.abs().le(half).all_dim(1, false);
                let log_density = -d * (2.0 * half).ln();
                Tensor::full([theta.size()[0]], f64::NEG_INFINITY, F64).where_self(&inside.logical_not(), &Tensor::from(log_density))
            }
        }
    }

    /// One simulation x ~ p(x | θ) per row of θ, [n, dim x] f64.
    pub fn simulate(self, theta: &Tensor) -> Tensor {
        let theta = theta.to_kind(Kind::Double);
        let n = theta.size()[0];
        match self {
            Task::GaussianLinear => &theta + Tensor::randn([n, GL_DIM], F64) * GL_VAR.sqrt(),
            Task::TwoMoons => {
                let p = moon_point(n);
                let (t1, t2) = (theta.select(1, 0), theta.select(1, 1));
                let offset = Tensor::stack(&[-(&t1 + &t2).abs() * FRAC_1_SQRT_2, (&t2 - &t1) * FRAC_1_SQRT_2], 1);
                p + offset
            }
            Task::Slcp => {
                let (m, l) = slcp_mean_and_cholesky(&theta);
                let eps = Tensor::randn([n, 4, 2], F64);
                // x_j = m + L ε_j for each of the four draws.
                let draws = eps.matmul(&l.transpose(1, 2)) + m.unsqueeze(1);
                draws.flatten(1, 2)
            }
        }
    }

    /// log p(x | θ) per row (closed form where the task has one; two moons' is not needed here).
    pub fn log_likelihood(self, theta: &Tensor, x: &Tensor) -> Option<Tensor> {
        match self {
            Task::GaussianLinear => {
                Some(((x - theta).square().sum_dim_intlist(1, false, None) / GL_VAR + GL_DIM as f64 * (2.0 * PI * GL_VAR).ln()) * -0.5)
            }
            Task::Slcp => {
                let (m, l) = slcp_mean_and_cholesky(theta);
                let xs = x.view([-1, 4, 2]);
                let diff = xs - m.unsqueeze(1); // [n, 4, 2]
                // Solve L u = diff for each draw: u = L⁻¹ diff, log N = -½|u|² - log det L - ln 2π.
                let (l11, l21, l22) = (l.select(1, 0).select(1, 0), l.select(1, 1).select(1, 0), l.select(1, 1).select(1, 1));
                let u1 = diff.select(2, 0) / l11.unsqueeze(1);
                let u2 = (diff.select(2, 1) - &u1 * l21.unsqueeze(1)) / l22.unsqueeze(1);
                let quad = (u1.square() + u2.square()).sum_dim_intlist(1, false, None);
                let log_det = (l11.log() + l22.log()) * 4.0;
                Some(quad * -0.5 - log_det - 4.0 * (2.0 * PI).ln())
            }
            Task::TwoMoons => None,
        }
    }

    /// The analytic posterior's (mean, variance) per dimension, where it has one (gaussian_linear).
    pub fn posterior_gaussian(self, x: &Tensor) -> Option<(Tensor, f64)> {
        // Prior N(0, v I), likelihood N(θ, v I): posterior precision 2/v, mean x/2.
        (self == Task::GaussianLinear).then(|| (x / 2.0, GL_VAR / 2.0))
    }

    /// H(θ | x) in nats where it is known: the same for every x for gaussian_linear.
    pub fn conditional_entropy(self) -> Option<f64> {
        (self == Task::GaussianLinear).then(|| 0.5 * GL_DIM as f64 * (2.0 * PI * std::f64::consts::E * GL_VAR / 2.0).ln())
    }

    /// The `n_obs` reference observations (θ_o, x_o) of this crate's benchmark: seeded draws from the prior and the
    /// simulator (sbibm's own ten observations are files of its package; these are drawn the same way).
    pub fn observations(self, n_obs: i64) -> (Tensor, Tensor) {
        tch::manual_seed(1_000_003 + self as i64);
        let theta = self.prior(n_obs);
        let x = self.simulate(&theta);
        (theta, x)
    }

    /// `n` samples of the true posterior p(θ | x_o) for one observation `x_o` [dim x] (and its true θ_o, which the
    /// MCMC reference starts from), [n, dim θ] f64.
    pub fn reference_posterior(self, x_o: &Tensor, theta_o: &Tensor, n: i64) -> Tensor {
        let x_o = x_o.to_kind(Kind::Double).view([1, -1]);
        match self {
            Task::GaussianLinear => {
                let (mean, var) = self.posterior_gaussian(&x_o).expect("analytic");
                mean + Tensor::randn([n, GL_DIM], F64) * var.sqrt()
            }
            Task::TwoMoons => two_moons_posterior(&x_o, n),
            Task::Slcp => slcp_posterior(self, &x_o, &theta_o.to_kind(Kind::Double).view([1, -1]), n),
        }
    }
}

/// The simulator's noise point p = (r cos a + 0.25, r sin a), a ~ U(-π/2, π/2), r ~ N(0.1, 0.01²).
fn moon_point(n: i64) -> Tensor {
    let a = (Tensor::rand([n], F64) - 0.5) * PI;
    let r = Tensor::randn([n], F64) * 0.01 + 0.1;
    Tensor::stack(&[&r * a.cos() + 0.25, &r * a.sin()], 1)
}

/// Exact samples of the two-moons posterior at x_o: with s = (θ₁ + θ₂)/√2, d = (θ₂ - θ₁)/√2 (a rotation, Jacobian
/// 1), x = p + (-|s|, d), so p(θ | x_o) ∝ 1[θ ∈ box] p_P(x_o₁ + |s|, x_o₂ - d). Draw p ~ p_P, set |s| = p₁ - x_o₁
/// (rejected when negative), d = x_o₂ - p₂, the sign of s by a fair coin (both branches carry the same density), and
/// keep θ inside the prior's box: rejection from the exact density, no approximation.
fn two_moons_posterior(x_o: &Tensor, n: i64) -> Tensor {
    let mut kept: Vec<Tensor> = Vec::new();
    let mut have = 0;
    let (x1, x2) = (x_o.double_value(&[0, 0]), x_o.double_value(&[0, 1]));
    for _ in 0..1000 {
        let m = (2 * (n - have)).max(1024);
        let p = moon_point(m);
        let abs_s = p.select(1, 0) - x1;
        let d = -p.select(1, 1) + x2;
        let sign = Tensor::rand([m], F64).lt(0.5).to_kind(Kind::Double) * 2.0 - 1.0;
        let s = &abs_s * sign;
        let theta = Tensor::stack(&[(&s - &d) * FRAC_1_SQRT_2, (&s + &d) * FRAC_1_SQRT_2], 1);
        let ok = abs_s.ge(0.0).logical_and(&theta.abs().le(1.0).all_dim(1, false));
        let good = theta.index_select(0, &ok.nonzero().squeeze_dim(1));
        have += good.size()[0];
        kept.push(good);
        if have >= n {
            break;
        }
    }
    assert!(have >= n, "two moons: x_o is outside the simulator's support (no posterior samples)");
    Tensor::cat(&kept, 0).narrow(0, 0, n)
}

/// SLCP's mean m = (θ₁, θ₂) [n, 2] and the Cholesky factor L [n, 2, 2] of S.
fn slcp_mean_and_cholesky(theta: &Tensor) -> (Tensor, Tensor) {
    let m = theta.narrow(1, 0, 2);
    let (s1, s2) = (theta.select(1, 2).square(), theta.select(1, 3).square());
    let rho = theta.select(1, 4).tanh();
    // S = [[s1², ρ s1 s2], [ρ s1 s2, s2²]] = L Lᵀ with L = [[s1, 0], [ρ s2, s2 √(1 - ρ²)]].
    let zero = s1.zeros_like();
    let l = Tensor::stack(&[Tensor::stack(&[&s1, &zero], 1), Tensor::stack(&[&rho * &s2, &s2 * (-rho.square() + 1.0).sqrt()], 1)], 1);
    (m, l)
}

/// Reference samples of SLCP's posterior: `chains` random-walk Metropolis chains started at θ_o, a per-dimension
/// step adapted towards a 0.3 acceptance during burn-in, then `n / chains` states each `thin` steps apart; the sign
/// flips of θ₃ and θ₄ (exact symmetries) drawn at random for every kept state.
fn slcp_posterior(task: Task, x_o: &Tensor, theta_o: &Tensor, n: i64) -> Tensor {
    let chains = 200.min(n).max(1);
    let per_chain = (n + chains - 1) / chains;
    let (burn, thin) = (3000, 20);
    let log_post = |t: &Tensor| task.log_likelihood(t, &x_o.expand([t.size()[0], 8], false)).expect("closed form") + task.prior_log_prob(t);
    let mut theta = theta_o.expand([chains, 5], false).contiguous();
    let mut lp = log_post(&theta);
    let mut step = Tensor::full([1, 5], 0.05, F64);
    let mut kept = Vec::new();
    for it in 0..burn + per_chain * thin {
        let proposal = &theta + Tensor::randn([chains, 5], F64) * &step;
        let lp_new = log_post(&proposal);
        let accept = Tensor::rand([chains], F64).log().lt_tensor(&(&lp_new - &lp)).unsqueeze(1);
        theta = proposal.where_self(&accept, &theta);
        lp = lp_new.where_self(&accept.squeeze_dim(1), &lp);
        if it < burn && it % 50 == 49 {
            let rate = accept.to_kind(Kind::Double).mean(None).double_value(&[]);
            step = step * if rate > 0.3 { 1.2 } else { 0.83 };
        }
        if it >= burn && (it - burn) % thin == thin - 1 {
            kept.push(theta.shallow_clone());
        }
    }
    let samples = Tensor::cat(&kept, 0).narrow(0, 0, n);
    let signs = (Tensor::rand([n, 2], F64).lt(0.5).to_kind(Kind::Double) * 2.0 - 1.0).to_kind(Kind::Double);
    let ones = Tensor::ones([n, 1], F64);
    let flip = Tensor::cat(&[&ones, &ones, &signs, &ones], 1);
    samples * flip
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaussian_linear_posterior_is_the_conjugate_update() {
        // Against Bayes' rule on a grid in one coordinate: p(θ | x) ∝ N(θ; 0, v) N(x; θ, v) has mean x/2, var v/2.
        tch::manual_seed(0);
        let (theta_o, x_o) = Task::GaussianLinear.observations(1);
        let s = Task::GaussianLinear.reference_posterior(&x_o.get(0), &theta_o.get(0), 200_000);
        let mean_err = (s.mean_dim(0, false, None) - x_o.get(0) / 2.0).abs().max().double_value(&[]);
        let var = s.var_dim(0, true, false).mean(None).double_value(&[]);
        assert!(mean_err < 0.003 && (var - 0.05).abs() < 0.001, "mean err {mean_err}, var {var}");
        let grid = Tensor::linspace(-2.0, 2.0, 40001, F64);
        let x1 = x_o.double_value(&[0, 0]);
        let log_w = (grid.square() / GL_VAR + (&grid - x1).square() / GL_VAR) * -0.5;
        let w = (&log_w - log_w.max()).exp();
        let m = (&w * &grid).sum(Kind::Double) / w.sum(Kind::Double);
        assert!((m.double_value(&[]) - x1 / 2.0).abs() < 1e-6);
        let h = Task::GaussianLinear.conditional_entropy().unwrap();
        assert!((h - 5.0 * (2.0 * PI * std::f64::consts::E * 0.05).ln()).abs() < 1e-12);
    }

    #[test]
    fn two_moons_reference_samples_follow_the_unnormalised_posterior() {
        // Importance check: the exact sampler's histogram in s = (θ1+θ2)/√2 matches self-normalised weights of the
        // analytic density p_P(x_o - g(θ)) over prior draws.
        tch::manual_seed(3);
        let task = Task::TwoMoons;
        let (theta_o, x_o) = task.observations(1);
        let s = task.reference_posterior(&x_o.get(0), &theta_o.get(0), 50_000);
        assert!(s.abs().le(1.0).all().int64_value(&[]) == 1);
        // Every sample regenerates x_o exactly under some (a, r): the implied p lies on the moon's support.
        let (t1, t2) = (s.select(1, 0), s.select(1, 1));
        let p1 = x_o.double_value(&[0, 0]) + (&t1 + &t2).abs() * FRAC_1_SQRT_2;
        let p2 = x_o.double_value(&[0, 1]) - (&t2 - &t1) * FRAC_1_SQRT_2;
        let r = ((&p1 - 0.25).square() + p2.square()).sqrt();
        let (lo, hi) = (r.min().double_value(&[]), r.max().double_value(&[]));
        assert!(lo > 0.1 - 0.06 && hi < 0.1 + 0.06, "radius {lo}..{hi}");
        assert!((&p1 - 0.25).ge(0.0).all().int64_value(&[]) == 1, "a in [-π/2, π/2] means p1 >= 0.25");
        // Both branches of the sign of s are present in equal measure when both fit in the box.
        let frac = (&t1 + &t2).gt(0.0).to_kind(Kind::Double).mean(None).double_value(&[]);
        assert!(frac > 0.05 && frac < 0.95, "positive-s fraction {frac}");
    }

    #[test]
    fn slcp_likelihood_matches_a_dense_multivariate_normal() {
        tch::manual_seed(5);
        let theta = Task::Slcp.prior(6);
        let x = Task::Slcp.simulate(&theta);
        let ll = Task::Slcp.log_likelihood(&theta, &x).unwrap();
        for i in 0..6 {
            let t: Vec<f64> = Vec::try_from(theta.get(i)).unwrap();
            let (s1, s2, rho) = (t[2] * t[2], t[3] * t[3], t[4].tanh());
            let (a, b, c) = (s1 * s1, rho * s1 * s2, s2 * s2);
            let det = a * c - b * b;
            let xs: Vec<f64> = Vec::try_from(x.get(i)).unwrap();
            let mut by_hand = 0.0;
            for j in 0..4 {
                let (d1, d2) = (xs[2 * j] - t[0], xs[2 * j + 1] - t[1]);
                let q = (c * d1 * d1 - 2.0 * b * d1 * d2 + a * d2 * d2) / det;
                by_hand += -0.5 * q - 0.5 * det.ln() - (2.0 * PI).ln();
            }
            assert!((ll.double_value(&[i]) - by_hand).abs() < 1e-8 * by_hand.abs().max(1.0), "row {i}");
        }
    }

    #[test]
    fn slcp_reference_chains_concentrate_near_the_truth_with_all_four_sign_modes() {
        tch::manual_seed(9);
        let task = Task::Slcp;
        let (theta_o, x_o) = task.observations(1);
        let s = task.reference_posterior(&x_o.get(0), &theta_o.get(0), 2000);
        assert_eq!(s.size(), vec![2000, 5]);
        // The posterior of |θ3|, |θ4| is near the truth's (4 draws pin the scales down to tens of percent).
        for k in [2, 3] {
            let med = s.select(1, k).abs().median().double_value(&[]);
            let truth = theta_o.double_value(&[0, k]).abs();
            assert!((med - truth).abs() < 0.5 * truth.max(0.3) + 0.2, "|θ{k}| median {med} vs {truth}");
            let pos = s.select(1, k).gt(0.0).to_kind(Kind::Double).mean(None).double_value(&[]);
            assert!((pos - 0.5).abs() < 0.06, "sign balance of θ{k}: {pos}");
        }
    }
}
