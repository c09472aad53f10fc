//! Diffusion normalizing flow (Zhang & Chen 2021). A forward SDE dx = f(x, t, θ) dt + g(t) dw with a trainable drift
//! carries data to N(0, I) at t = T; the backward SDE dx = [f - g² s(x, t, θ)] dt + g dw, with a trainable score s,
//! carries noise back. Both are discretised on a grid t_0 < ... < t_N (eq. 8 and 9 of the paper):
//!
//!   forward  x_{i+1} = x_i + f(x_i, t_i) Δt_i + g_i √Δt_i ε_i,                      ε_i ~ N(0, I)
//!   backward x_i     = x_{i+1} - [f(x_{i+1}, t_{i+1}) - g²_{i+1} s(x_{i+1}, t_{i+1})] Δt_i + g_{i+1} √Δt_i δ^B_i
//!
//! and trained by KL(p_F(τ) || p_B(τ)) (eq. 11), i.e. per trajectory the negative ELBO of the discrete backward chain
//!
//!   -log p_B(x_0) ≤ -log N(x_N; 0, I) + Σ_i [½||δ^B_i||² - ½||ε_i||² + D ln(g_{i+1}/g_i)],
//!
//! with δ^B_i solved from the backward step. The constants (ε_i terms, g ratios, ½ D ln 2π) do not change gradients
//! but make the training loss an upper bound on the NLL in nats. The likelihood reported by default is the exact one
//! of the marginal-equivalent probability-flow ODE dx = [f - ½ g² s] dt (a continuous normalizing flow).
use super::grid;
use crate::dist::normal::sum_except_batch;
use crate::dist::{Distribution, StandardNormal};
use crate::model::{Kind as LikKind, LogProb, Model, SamplingCost};
use crate::nets::guidance::{with_context, Mode};
use crate::nets::TimeNet;
use crate::score::likelihood::{ode_log_prob, Divergence};
use crate::score::ode::rk45;
use crate::score::space::ModelSpace;
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use std::cell::Cell;
use tch::{Kind, Tensor};

/// How gradients flow through the N steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backprop {
    /// Autograd through the whole chain: activations of all 2N+1 network calls are kept.
    Full,
    /// Keep only the states x_0..x_N; in the backward pass recompute one step at a time and carry dL/dx_i backwards
    /// (the official code's custom autograd function): activation memory independent of N, about twice the compute.
    Recompute,
}

/// The training grid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GridKind {
    Fixed,
    Random,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sampler {
    /// The backward SDE on the fixed grid: 2 network evaluations per step.
    Sde,
    /// The probability-flow ODE by RK45 at `ode.rtol`.
    Ode,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Likelihood {
    /// log p of the probability-flow ODE: exact divergence (exact) or Hutchinson (estimate).
    Ode,
    /// One-trajectory ELBO of the discrete backward chain (a lower bound).
    Elbo,
}

/// `kind = "diffflow"`: the grid, diffusion, gradient, sampler and likelihood settings (network keys are NetSpec's;
/// drift and score networks share them).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DiffFlowParams {
    /// N, the number of steps for sampling and the ELBO (and for training unless `steps_schedule` is given).
    pub steps: usize,
    /// Progressive N during training: [[first step, N], ...], e.g. [[0, 5], [3000, 10], [5000, 20], [8000, 30]].
    pub steps_schedule: Vec<(i64, usize)>,
    /// t_0 (data) and T (noise) of the grid.
    pub t_start: f64,
    pub t_end: f64,
    /// β of the grid t_i = (t_0^β + i/N (T^β - t_0^β))^{1/β}.
    pub grid_exp: f64,
    /// Training grid: fixed, or randomized interior times.
    pub grid: GridKind,
    /// g(t): constant `g`, or linear from `g` at t_0 to `g_end` at T.
    pub g: f64,
    pub g_end: Option<f64>,
    pub backprop: Backprop,
    pub sampler: Sampler,
    /// Sampler steps (default `steps`): the networks are continuous in t, so any grid can be sampled.
    pub sample_steps: Option<usize>,
    /// Return the mean of the last backward step (no noise): Tweedie's estimate E[x_0 | x_1] for that step's
    /// Gaussian increment, as the official code's sampler does.
    pub denoise: bool,
    pub likelihood: Likelihood,
    /// `[model.ode]`: the probability-flow ODE of the likelihood (and of the ODE sampler).
    pub ode: crate::score::likelihood::OdeParams,
    /// Vectors are modelled as y = x / data_scale; log p_x adds -D ln scale.
    pub data_scale: f64,
    /// `[model.net]`: the time-conditioned network (an MLP on vectors, a U-Net on images).
    pub net: crate::nets::spec::NetSpec,
    /// A conditional run: the width of the context embedding added to the time embedding (default: 16 for
    /// classes, a vector context as it is).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context_embed: Option<i64>,
    /// A conditional run: the probability of training a row with the null context (classifier-free guidance).
    #[serde(skip_serializing_if = "crate::nets::guidance::is_default_p_uncond")]
    pub p_uncond: f64,
    /// A conditional run: the guidance weight w of sampling, ε̃ = (1 + w) ε(c) − w ε(∅); 0 is the conditional model.
    #[serde(skip_serializing_if = "crate::nets::guidance::is_zero")]
    pub guidance_weight: f64,
}

impl DiffFlowParams {
    fn conditioning(&self) -> crate::nets::guidance::Conditioning {
        crate::nets::guidance::Conditioning { context_embed: self.context_embed, p_uncond: self.p_uncond, guidance_weight: self.guidance_weight }
    }
}

impl Default for DiffFlowParams {
    fn default() -> Self {
        DiffFlowParams {
            steps: 30,
            steps_schedule: Default::default(),
            t_start: 1e-3,
            t_end: 0.05,
            grid_exp: 0.9,
            grid: GridKind::Fixed,
            g: 0.2,
            g_end: Default::default(),
            backprop: Backprop::Full,
            sampler: Sampler::Sde,
            sample_steps: Default::default(),
            denoise: true,
            likelihood: Likelihood::Ode,
            ode: Default::default(),
            data_scale: 1.0,
            net: Default::default(),
            context_embed: None,
            p_uncond: crate::nets::guidance::P_UNCOND,
            guidance_weight: 0.0,
        }
    }
}

impl DiffFlowParams {
    pub fn check(&self) -> Result<()> {
        if !(self.t_start > 0.0 && self.t_end > self.t_start) {
            bail!("model.t_start and model.t_end must satisfy 0 < t_start < t_end, got {} and {}", self.t_start, self.t_end);
        }
        if self.g <= 0.0 || self.g_end.is_some_and(|g| g <= 0.0) {
            bail!("model.g (and g_end) must be positive: the backward noise δ^B divides by g");
        }
        if self.steps == 0 || self.sample_steps == Some(0) {
            bail!("model.steps and model.sample_steps must be at least 1");
        }
        if self.grid_exp <= 0.0 || self.data_scale <= 0.0 {
            bail!("model.grid_exp and model.data_scale must be positive");
        }
        if !self.steps_schedule.is_empty() {
            grid::check_schedule(&self.steps_schedule)?;
        }
        Ok(())
    }
}

#[derive(Debug)]
pub struct DiffFlow {
    pub drift: Box<dyn TimeNet>,
    pub score: Box<dyn TimeNet>,
    pub p: DiffFlowParams,
    pub shape: Vec<i64>,
    pub images: bool,
    pub device: tch::Device,
    sample_nfe: Cell<usize>,
    likelihood_nfe: Cell<usize>,
}

/// ½||v||² per example.
fn half_sq(v: &Tensor) -> Tensor {
    sum_except_batch(&v.square()) * 0.5
}

impl DiffFlow {
    pub fn new(drift: Box<dyn TimeNet>, score: Box<dyn TimeNet>, p: DiffFlowParams, shape: Vec<i64>, images: bool, device: tch::Device) -> Result<Self> {
        p.check()?;
        Ok(DiffFlow { drift, score, p, shape, images, device, sample_nfe: Cell::new(0), likelihood_nfe: Cell::new(0) })
    }

    fn dim(&self) -> i64 {
        self.shape.iter().product()
    }

    /// g(t): constant or linear between t_0 and T.
    pub fn g(&self, t: f64) -> f64 {
        match self.p.g_end {
            None => self.p.g,
            Some(g1) => self.p.g + (g1 - self.p.g) * (t - self.p.t_start) / (self.p.t_end - self.p.t_start),
        }
    }

    /// f(x, t); the networks read time normalised to t/T ∈ (0, 1].
    pub fn f(&self, x: &Tensor, t: f64) -> Tensor {
        self.drift.forward_at(x, t / self.p.t_end)
    }

    pub fn s(&self, x: &Tensor, t: f64) -> Tensor {
        self.score.forward_at(x, t / self.p.t_end)
    }

    /// The backward drift f - g² s at (x, t).
    fn backward_drift(&self, x: &Tensor, t: f64) -> Tensor {
        self.f(x, t) - self.s(x, t) * self.g(t).powi(2)
    }

    /// E[x_{i+1} | x_i] = x_i + f(x_i, t_i) Δt_i (eq. 8 without its noise).
    fn forward_mean(&self, x: &Tensor, t: f64, dt: f64) -> Tensor {
        x + self.f(x, t) * dt
    }

    /// δ^B_i = (x_i - x_{i+1} + [f - g² s](x_{i+1}, t_{i+1}) Δt_i) / (g_{i+1} √Δt_i), solved from eq. 9.
    fn backward_noise(&self, x: &Tensor, x_next: &Tensor, t_next: f64, dt: f64) -> Tensor {
        (x - x_next + self.backward_drift(x_next, t_next) * dt) / (self.g(t_next) * dt.sqrt())
    }

    /// The prior N(0, I) at T.
    fn prior(&self) -> StandardNormal {
        StandardNormal { shape: self.shape.clone(), device: self.device }
    }

    /// -log N(x_N; 0, I) per example.
    fn prior_nll(&self, z: &Tensor) -> Tensor {
        -self.prior().log_prob(z)
    }

    /// The θ-free part of step i: -½||ε_i||² + D ln(g_{i+1}/g_i).
    fn step_constant(&self, eps: &Tensor, t: f64, t_next: f64) -> Tensor {
        -half_sq(eps) + self.dim() as f64 * (self.g(t_next) / self.g(t)).ln()
    }

    /// Per-example negative ELBO of the trajectories started at y0 with forward noises `eps` on `grid`, with autograd
    /// through the whole chain. f(x_{i+1}, t_{i+1}) is shared by δ^B_i and the next forward step (N+1 drift and N
    /// score evaluations).
    pub fn chain_nelbo(&self, y0: &Tensor, grid: &[f64], eps: &[Tensor]) -> Tensor {
        let mut x = y0.shallow_clone();
        let mut f_x = self.f(&x, grid[0]);
        let mut total = Tensor::zeros([y0.size()[0]], (y0.kind(), y0.device()));
        for i in 0..grid.len() - 1 {
            let (t, t_next) = (grid[i], grid[i + 1]);
            let dt = t_next - t;
            let x_next = &x + &f_x * dt + &eps[i] * (self.g(t) * dt.sqrt());
            let f_next = self.f(&x_next, t_next);
            let back = &f_next - self.s(&x_next, t_next) * self.g(t_next).powi(2);
            let delta_b = (&x - &x_next + back * dt) / (self.g(t_next) * dt.sqrt());
            total = total + half_sq(&delta_b) + self.step_constant(&eps[i], t, t_next);
            x = x_next;
            f_x = f_next;
        }
        total + self.prior_nll(&x)
    }

    /// The same negative ELBO, with the gradient of its batch mean accumulated into the parameters by recomputation:
    /// a no-grad forward pass keeps x_0..x_N; then for i = N-1..0, with a = dL/dx_{i+1} from the later steps,
    /// backpropagating ½||δ^B_i(x_i, x_{i+1})||² and ⟨a + ∂ℓ_i/∂x_{i+1}, x_i + f(x_i, t_i)Δt_i⟩ gives every parameter
    /// its share and a = dL/dx_i. Returns the per-example values, detached.
    pub fn chain_nelbo_recompute(&self, y0: &Tensor, grid: &[f64], eps: &[Tensor]) -> Tensor {
        let b = y0.size()[0] as f64;
        let n = grid.len() - 1;
        let mut states = vec![y0.detach()];
        tch::no_grad(|| {
            for i in 0..n {
                let dt = grid[i + 1] - grid[i];
                let next = self.forward_mean(&states[i], grid[i], dt) + &eps[i] * (self.g(grid[i]) * dt.sqrt());
                states.push(next);
            }
        });
        let mut total = self.prior_nll(&states[n]);
        let mut a = &states[n] / b;
        for i in (0..n).rev() {
            let (t, t_next) = (grid[i], grid[i + 1]);
            let dt = t_next - t;
            let xi = states[i].detach().set_requires_grad(true);
            let xn = states[i + 1].detach().set_requires_grad(true);
            let ell = half_sq(&self.backward_noise(&xi, &xn, t_next, dt));
            (ell.sum(None) / b).backward();
            let carry = xn.grad() + &a;
            (self.forward_mean(&xi, t, dt) * carry).sum(None).backward();
            a = xi.grad().detach().copy();
            total = total + ell.detach() + self.step_constant(&eps[i], t, t_next);
        }
        total
    }

    /// N and the grid of a training step.
    fn training_grid(&self, step: i64) -> Vec<f64> {
        let n = if self.p.steps_schedule.is_empty() { self.p.steps } else { grid::steps_at(&self.p.steps_schedule, step) };
        let (t0, t1, beta) = (self.p.t_start, self.p.t_end, self.p.grid_exp);
        match self.p.grid {
            GridKind::Fixed => grid::fixed(n, t0, t1, beta),
            GridKind::Random => grid::random(n, t0, t1, beta),
        }
    }

    fn noises(&self, y: &Tensor, n: usize) -> Vec<Tensor> {
        (0..n).map(|_| crate::rows::randn_like(y)).collect()
    }

    fn space(&self) -> ModelSpace {
        ModelSpace { images: self.images, data_scale: self.p.data_scale, dim: self.dim() }
    }

    fn sample_steps(&self) -> usize {
        self.p.sample_steps.unwrap_or(self.p.steps)
    }

    fn full_shape(&self, n: i64) -> Vec<i64> {
        let mut s = vec![n];
        s.extend(&self.shape);
        s
    }

    /// The backward SDE from N(0, I) at T down to t_0 (eq. 9), the last step's noise dropped when `denoise`.
    pub fn backward_sde(&self, z: &Tensor, n: usize) -> Tensor {
        let grid = grid::fixed(n, self.p.t_start, self.p.t_end, self.p.grid_exp);
        let mut x = z.shallow_clone();
        for i in (0..n).rev() {
            let dt = grid[i + 1] - grid[i];
            let mean = &x - self.backward_drift(&x, grid[i + 1]) * dt;
            x = if i == 0 && self.p.denoise { mean } else { mean + crate::rows::randn_like(&x) * (self.g(grid[i + 1]) * dt.sqrt()) };
        }
        x
    }

    /// The probability-flow velocity f - ½ g² s.
    fn pf_velocity(&self, x: &Tensor, t: f64) -> Tensor {
        self.f(x, t) - self.s(x, t) * (0.5 * self.g(t).powi(2))
    }

    fn pf_ode_sample(&self, z: &Tensor) -> Tensor {
        let mut rhs = |t: f64, y: &Tensor| self.pf_velocity(&y.to_kind(Kind::Float), t).to_kind(Kind::Double);
        let tol = self.p.ode.tolerance();
        let (x, nfe) = rk45(&mut rhs, &z.to_kind(Kind::Double), self.p.t_end, self.p.t_start, tol);
        self.sample_nfe.set(nfe);
        x.to_kind(Kind::Float)
    }

    fn divergence(&self) -> Divergence {
        self.p.ode.divergence(self.dim())
    }

    /// log p(y) at t_0 of the ODE dy = [f - ½ g² s] dt with y(T) ~ N(0, I), and its kind.
    pub fn ode_log_prob(&self, y: &Tensor) -> (Tensor, LikKind) {
        let v = |x: &Tensor, t: &Tensor| self.pf_velocity(x, t.double_value(&[0]));
        let prior = |z: &Tensor| self.prior().log_prob(z);
        let tol = self.p.ode.tolerance();
        let div = self.divergence();
        let (lp, nfe) = ode_log_prob(&v, &prior, y, self.p.t_start, self.p.t_end, div, tol);
        self.likelihood_nfe.set(nfe);
        (lp, div.kind())
    }
}

impl Model for DiffFlow {
    /// The batch mean of the negative ELBO of one forward trajectory per example (eq. 11 plus constants).
    fn loss(&self, x: &Tensor, step: i64) -> Tensor {
        let y = self.space().to_model(x);
        let grid = self.training_grid(step);
        let eps = self.noises(&y, grid.len() - 1);
        self.chain_nelbo(&y, &grid, &eps).mean(None)
    }

    fn loss_backward(&self, x: &Tensor, step: i64) -> Tensor {
        match self.p.backprop {
            Backprop::Full => {
                let loss = self.loss(x, step);
                loss.backward();
                loss.detach()
            }
            Backprop::Recompute => {
                let y = self.space().to_model(x);
                let grid = self.training_grid(step);
                let eps = self.noises(&y, grid.len() - 1);
                self.chain_nelbo_recompute(&y, &grid, &eps).mean(None)
            }
        }
    }

    fn log_prob(&self, x: &Tensor) -> LogProb {
        let y = self.space().to_model(x);
        let (lp, kind) = match self.p.likelihood {
            Likelihood::Ode => self.ode_log_prob(&y),
            Likelihood::Elbo => {
                let grid = grid::fixed(self.p.steps, self.p.t_start, self.p.t_end, self.p.grid_exp);
                let eps = self.noises(&y, self.p.steps);
                (-self.chain_nelbo(&y, &grid, &eps).to_kind(Kind::Double), LikKind::LowerBound)
            }
        };
        LogProb { value: (lp + self.space().log_jacobian()).to_kind(Kind::Float), kind }
    }

    fn sample(&self, n: i64) -> Tensor {
        let z = crate::rows::randn(self.full_shape(n).as_slice(), (Kind::Float, self.device));
        let y = tch::no_grad(|| match self.p.sampler {
            Sampler::Sde => self.backward_sde(&z, self.sample_steps()),
            Sampler::Ode => self.pf_ode_sample(&z),
        });
        self.space().to_data(&y)
    }

    /// Drift and score count one evaluation each.
    fn sampling_cost(&self) -> SamplingCost {
        match self.p.sampler {
            Sampler::Sde => SamplingCost { nfe_per_sample: 2 * self.sample_steps(), steps: self.sample_steps() },
            Sampler::Ode => SamplingCost { nfe_per_sample: 2 * self.sample_nfe.get(), steps: self.sample_nfe.get() },
        }
    }

    fn family(&self) -> crate::model::Family {
        crate::model::Family::Diffflow
    }

    fn estimator(&self) -> serde_json::Value {
        let lik = match self.p.likelihood {
            Likelihood::Ode => {
                let div = self.divergence().describe();
                serde_json::json!({
                    "likelihood": "probability-flow ODE dx = [f - g^2 s / 2] dt from t_start to T, prior N(0, I) at T",
                    "solver": format!("RK45 (Dormand-Prince), rtol = atol = {}", self.p.ode.rtol),
                    "divergence": div,
                })
            }
            Likelihood::Elbo => serde_json::json!({
                "likelihood": "ELBO of the discrete backward chain, one forward trajectory per example (a lower bound)",
            }),
        };
        serde_json::json!({
            "estimator": lik,
            "steps": self.p.steps, "t_start": self.p.t_start, "t_end": self.p.t_end, "grid_exp": self.p.grid_exp,
            "g": self.p.g, "g_end": self.p.g_end, "nfe_last_evaluation": self.likelihood_nfe.get(),
            "sampler": format!("{:?}", self.p.sampler).to_lowercase(), "sample_steps": self.sample_steps(),
            "guidance": self.drift.guided().map(crate::nets::guidance::describe),
        })
    }

    fn context_spec(&self) -> Option<crate::ContextSpec> {
        self.drift.guided().map(|g| g.context_spec())
    }

    fn loss_given(&self, x: &Tensor, c: &crate::Context, step: i64) -> Tensor {
        with_context(&[&*self.drift, &*self.score], c, Mode::Train, || self.loss(x, step))
    }

    /// `loss_backward` (with its recomputation) with the contexts bound; drift and score drop the same rows.
    fn loss_backward_given(&self, x: &Tensor, c: &crate::Context, step: i64) -> Tensor {
        with_context(&[&*self.drift, &*self.score], c, Mode::Train, || self.loss_backward(x, step))
    }

    /// The likelihood of the conditional model (w = 0).
    fn log_prob_given(&self, x: &Tensor, c: &crate::Context) -> LogProb {
        with_context(&[&*self.drift, &*self.score], c, Mode::Conditional, || self.log_prob(x))
    }

    fn data_init_given(&self, x: &Tensor, c: &crate::Context) {
        for g in [self.drift.guided(), self.score.guided()].into_iter().flatten() {
            g.data_init(c);
        }
        self.data_init(x)
    }

    /// One sample per context row; drift and score are both guided at `model.guidance_weight`, so the backward
    /// drift f - g² s is the guided combination of the conditional and null ones.
    fn sample_given(&self, n: i64, c: &crate::Context) -> Tensor {
        with_context(&[&*self.drift, &*self.score], c, Mode::Guided, || self.sample(c.len().unwrap_or(n)))
    }
}

impl crate::model::ModelParams for DiffFlowParams {
    /// Two networks of the same `[model.net]`: the drift at `drift`, the score at `score`.
    fn build(&self, path: &tch::nn::Path, shape: &[i64]) -> Result<Box<dyn Model>> {
        let drift = crate::nets::spec::time_net(&path.sub("drift"), shape, &self.net)?;
        let score = crate::nets::spec::time_net(&path.sub("score"), shape, &self.net)?;
        Ok(Box::new(DiffFlow::new(drift, score, self.clone(), shape.to_vec(), shape.len() == 3, path.device())?))
    }

    /// p(x | c): drift and score each read the context embedding beside the time embedding (each its own encoder),
    /// classifier-free guidance at sampling.
    fn build_conditional(&self, path: &tch::nn::Path, shape: &[i64], context: &crate::ContextSpec) -> Result<Box<dyn Model>> {
        let c = self.conditioning();
        let drift = crate::nets::guidance::time_net(&path.sub("drift"), shape, &self.net, context, &c)?;
        let score = crate::nets::guidance::time_net(&path.sub("score"), shape, &self.net, context, &c)?;
        Ok(Box::new(DiffFlow::new(drift, score, self.clone(), shape.to_vec(), shape.len() == 3, path.device())?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nets::{Activation, TimeMlp};
    use std::f64::consts::PI;
    use tch::{nn, Device};

    /// f(x, τ) = a x + b τ, with τ = t/T the networks' time.
    #[derive(Debug)]
    struct Affine {
        a: f64,
        b: f64,
    }

    impl TimeNet for Affine {
        fn forward_t(&self, x: &Tensor, tau: &Tensor) -> Tensor {
            x * self.a + tau.to_kind(x.kind()).unsqueeze(1) * self.b
        }
    }

    /// The exact score -x / v(t) of the forward marginal of dx = a x dt + g dw from N(0, v0 I) at t_0.
    #[derive(Debug)]
    struct GaussScore {
        a: f64,
        g: f64,
        v0: f64,
        t0: f64,
        t_end: f64,
    }

    impl GaussScore {
        fn var(&self, t: f64) -> f64 {
            let e = (2.0 * self.a * (t - self.t0)).exp();
            self.v0 * e + self.g * self.g * (e - 1.0) / (2.0 * self.a)
        }
    }

    impl TimeNet for GaussScore {
        fn forward_t(&self, x: &Tensor, tau: &Tensor) -> Tensor {
            let t = tau.double_value(&[0]) * self.t_end;
            -x / self.var(t)
        }
    }

    fn params(extra: &str) -> DiffFlowParams {
        toml::from_str(extra).unwrap()
    }

    fn model(drift: Box<dyn TimeNet>, score: Box<dyn TimeNet>, p: DiffFlowParams, d: i64) -> DiffFlow {
        DiffFlow::new(drift, score, p, vec![d], false, Device::Cpu).unwrap()
    }

    #[test]
    fn negative_elbo_matches_a_hand_computed_two_step_chain() {
        let (a, b, c) = (-2.0, 0.7, -1.5);
        let p = params("steps = 2\nt_start = 0.1\nt_end = 0.5\ngrid_exp = 1.0\ng = 0.8\ng_end = 1.2");
        let m = model(Box::new(Affine { a, b }), Box::new(Affine { a: c, b: 0.0 }), p, 1);
        let grid = [0.1, 0.3, 0.5];
        let (x0, e0, e1) = (0.9, -0.4, 1.3);
        let eps = [Tensor::from_slice(&[e0]).view([1, 1]), Tensor::from_slice(&[e1]).view([1, 1])];
        let got = m.chain_nelbo(&Tensor::from_slice(&[x0]).view([1, 1]), &grid, &eps).double_value(&[0]);
        // By hand: τ = t / 0.5, g linear from 0.8 at t = 0.1 to 1.2 at t = 0.5.
        let f = |x: f64, t: f64| a * x + b * t / 0.5;
        let s = |x: f64| c * x;
        let g = |t: f64| 0.8 + 0.4 * (t - 0.1) / 0.4;
        let dt = 0.2f64;
        let x1 = x0 + f(x0, 0.1) * dt + g(0.1) * dt.sqrt() * e0;
        let x2 = x1 + f(x1, 0.3) * dt + g(0.3) * dt.sqrt() * e1;
        let db0 = (x0 - x1 + (f(x1, 0.3) - g(0.3).powi(2) * s(x1)) * dt) / (g(0.3) * dt.sqrt());
        let db1 = (x1 - x2 + (f(x2, 0.5) - g(0.5).powi(2) * s(x2)) * dt) / (g(0.5) * dt.sqrt());
        let want = 0.5 * x2 * x2 + 0.5 * (2.0 * PI).ln() + 0.5 * db0 * db0 - 0.5 * e0 * e0 + (g(0.3) / g(0.1)).ln()
            + 0.5 * db1 * db1 - 0.5 * e1 * e1 + (g(0.5) / g(0.3)).ln();
        assert!((got - want).abs() < 1e-9, "chain {got} vs hand {want}");
    }

    #[test]
    fn recomputed_gradients_equal_full_backpropagation() {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let drift = TimeMlp::new(&(vs.root() / "drift"), 2, &[16, 16], 2, 8, Activation::Silu).unwrap();
        let score = TimeMlp::new(&(vs.root() / "score"), 2, &[16, 16], 2, 8, Activation::Silu).unwrap();
        let m = model(Box::new(drift), Box::new(score), params("steps = 6\ng = 0.5\ng_end = 0.9"), 2);
        let y = Tensor::randn([32, 2], (Kind::Float, Device::Cpu));
        let grid = grid::random(6, 1e-3, 0.05, 0.9);
        let eps: Vec<Tensor> = (0..6).map(|_| y.randn_like()).collect();
        let vars = vs.trainable_variables();
        let grads = |full: bool| {
            for v in &vars {
                let mut g = v.grad();
                if g.defined() {
                    let _ = g.zero_();
                }
            }
            let value = if full {
                let l = m.chain_nelbo(&y, &grid, &eps);
                l.mean(None).backward();
                l.detach()
            } else {
                m.chain_nelbo_recompute(&y, &grid, &eps)
            };
            let flat = Tensor::cat(&vars.iter().map(|v| v.grad().flatten(0, -1).copy()).collect::<Vec<_>>(), 0);
            (value, flat)
        };
        let (v_full, g_full) = grads(true);
        let (v_re, g_re) = grads(false);
        assert!((&v_full - &v_re).abs().max().double_value(&[]) < 1e-3, "losses differ");
        let rel = (&g_full - &g_re).norm().double_value(&[]) / g_full.norm().double_value(&[]);
        assert!(rel < 1e-4, "gradients differ: relative error {rel}");
        assert!(g_full.abs().gt(0.0).to_kind(Kind::Float).mean(None).double_value(&[]) > 0.9, "gradients reach the parameters");
    }

    /// Gaussian data N(0, v0 I), drift a x and the exact score: the PF-ODE maps x to x √(v(T)/v0), so
    /// log p(x) = log N(x √(v(T)/v0); 0, I) + (D/2) ln(v(T)/v0).
    #[test]
    fn ode_likelihood_with_the_exact_score_is_the_closed_form() {
        let (a, g, v0, t0, t1) = (-1.0, 1.0, 0.3, 1e-3, 1.0);
        let p = params(&format!("t_start = {t0}\nt_end = {t1}\ng = {g}\n[ode]\nrtol = 1e-7"));
        let sc = GaussScore { a, g, v0, t0, t_end: t1 };
        let ratio = sc.var(t1) / v0;
        let m = model(Box::new(Affine { a, b: 0.0 }), Box::new(sc), p, 3);
        tch::manual_seed(1);
        let x = Tensor::randn([64, 3], (Kind::Double, Device::Cpu)) * v0.sqrt();
        let (lp, kind) = m.ode_log_prob(&x.to_kind(Kind::Float));
        assert_eq!(kind, LikKind::Exact);
        let z = &x * ratio.sqrt();
        let want = z.square().sum_dim_intlist(1, false, Kind::Double) * -0.5 - 1.5 * (2.0 * PI).ln() + 1.5 * ratio.ln();
        let err = (lp - want).abs().max().double_value(&[]);
        assert!(err < 1e-3, "PF-ODE log p off by {err}");
    }

    /// g → 0: the SDE pair collapses to the ODE dx = f dt, a continuous normalizing flow. With f = a x its exact
    /// log-density is log N(x e^{a(T-t0)}; 0, I) + D a (T - t0), whatever the score network says.
    #[test]
    fn vanishing_diffusion_reduces_diffflow_to_a_continuous_flow() {
        tch::manual_seed(2);
        let vs = nn::VarStore::new(Device::Cpu);
        let (a, t0, t1): (f64, f64, f64) = (-0.8, 1e-3, 0.5);
        let x = Tensor::randn([64, 2], (Kind::Float, Device::Cpu));
        let span = t1 - t0;
        let z = x.to_kind(Kind::Double) * (a * span).exp();
        let cnf = z.square().sum_dim_intlist(1, false, Kind::Double) * -0.5 - (2.0 * PI).ln() + 2.0 * a * span;
        let mut errors = Vec::new();
        for (k, g) in [0.5, 0.05, 0.005].into_iter().enumerate() {
            let score = TimeMlp::new(&(vs.root() / format!("score{k}")), 2, &[16], 2, 8, Activation::Tanh).unwrap();
            let p = params(&format!("t_start = {t0}\nt_end = {t1}\ng = {g}\n[ode]\nrtol = 1e-7"));
            let m = model(Box::new(Affine { a, b: 0.0 }), Box::new(score), p, 2);
            errors.push((m.ode_log_prob(&x).0 - &cnf).abs().max().double_value(&[]));
        }
        assert!(errors[0] > 1e-3, "with g = 0.5 the score term matters ({errors:?})");
        assert!(errors[1] < errors[0] / 50.0 && errors[2] < errors[1] / 50.0, "error must shrink like g²: {errors:?}");
        assert!(errors[2] < 1e-4, "{errors:?}");
    }

    /// With the exact score of Gaussian data and a prior matched at T, the discrete chain's negative ELBO is an
    /// upper bound on the data's NLL that tightens as the grid refines.
    #[test]
    fn negative_elbo_bounds_the_nll_and_tightens_with_more_steps() {
        let (g, v0, t0, t1, d) = (1.0, 0.25, 1e-3, 1.0, 2i64);
        // Choose a < 0 so that v(T) = 1: the forward chain ends in the N(0, I) prior.
        let var_at = |a: f64| GaussScore { a, g, v0, t0, t_end: t1 }.var(t1);
        let (mut lo, mut hi) = (-5.0, -1e-6);
        for _ in 0..100 {
            let mid = 0.5 * (lo + hi);
            if var_at(mid) > 1.0 { hi = mid } else { lo = mid }
        }
        let a = 0.5 * (lo + hi);
        let entropy = 0.5 * d as f64 * (2.0 * PI * std::f64::consts::E * v0).ln();
        tch::manual_seed(3);
        let y = Tensor::randn([20_000, d], (Kind::Double, Device::Cpu)) * v0.sqrt();
        let mut gaps = Vec::new();
        for n in [10usize, 100] {
            let p = params(&format!("steps = {n}\nt_start = {t0}\nt_end = {t1}\ngrid_exp = 1.0\ng = {g}"));
            let m = model(Box::new(Affine { a, b: 0.0 }), Box::new(GaussScore { a, g, v0, t0, t_end: t1 }), p, d);
            let grid = grid::fixed(n, t0, t1, 1.0);
            let eps: Vec<Tensor> = (0..n).map(|_| y.randn_like()).collect();
            let nelbo = m.chain_nelbo(&y, &grid, &eps);
            let mean = nelbo.mean(None).double_value(&[]);
            let se = nelbo.std(true).double_value(&[]) / (20_000f64).sqrt();
            assert!(mean > entropy - 4.0 * se, "N = {n}: bound {mean} below the exact NLL {entropy}");
            gaps.push(mean - entropy);
        }
        assert!(gaps[1] < gaps[0] && gaps[1] < 0.05, "gaps {gaps:?}");
    }

    #[test]
    fn backward_sde_with_the_exact_score_recovers_the_data_law() {
        let (g, v0, t0, t1) = (1.0, 0.25, 1e-3, 1.0);
        let a = -0.75; // any drift: the sampler starts from the forward chain's law at T
        let sc = GaussScore { a, g, v0, t0, t_end: t1 };
        let v_t = sc.var(t1);
        let p = params(&format!("steps = 200\nt_start = {t0}\nt_end = {t1}\ngrid_exp = 1.0\ng = {g}"));
        let m = model(Box::new(Affine { a, b: 0.0 }), Box::new(sc), p, 2);
        tch::manual_seed(4);
        let z = Tensor::randn([20_000, 2], (Kind::Float, Device::Cpu)) * v_t.sqrt();
        let x = tch::no_grad(|| m.backward_sde(&z, 200));
        let var = x.var(true).double_value(&[]);
        assert!((var - v0).abs() < 0.02, "sampled variance {var}, data {v0}");
    }

    #[test]
    fn bad_settings_are_named() {
        let e = |s: &str| params(s).check().unwrap_err().to_string();
        assert!(e("g = 0.0").contains("model.g"));
        assert!(e("t_start = 0.1\nt_end = 0.05").contains("t_start"));
        assert!(e("steps_schedule = [[5, 10]]").contains("step 0"));
    }
}
