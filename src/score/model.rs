//! The score model: a time-conditioned network trained by denoising score matching on an SDE's perturbation
//! kernels (Song et al. 2021, eq. 7, with λ(t) = s(t)², i.e. predicting the noise), sampled by reverse-SDE
//! Euler-Maruyama, predictor-corrector, annealed Langevin (NCSN) or the probability-flow ODE, and evaluated by the
//! PF-ODE likelihood.
use super::likelihood::{self, Divergence};
use super::ode::rk45;
use super::sde::{bcast, Sde, SdeKind};
use super::space::ModelSpace;
use crate::model::{LogProb, Model, SamplingCost};
use crate::nets::guidance::{with_context, Mode};
use crate::nets::TimeNet;
use serde::{Deserialize, Serialize};
use std::cell::Cell;
use tch::{Kind, Tensor};

/// How samples are drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sampler {
    /// Reverse-time SDE, Euler-Maruyama, `sample_steps` steps.
    Em,
    /// Reverse-diffusion predictor + one Langevin corrector step per step (snr 0.16): 2 evaluations per step.
    Pc,
    /// Probability-flow ODE with RK45 at `ode.rtol`.
    Ode,
    /// Annealed Langevin dynamics over `sample_steps` geometric noise levels, `langevin_steps` each (NCSN).
    Ald,
}

/// `kind = "score"` / `kind = "ncsn"`: SDE, sampler and likelihood settings (the network's keys are `NetSpec`'s).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScoreParams {
    pub sde: SdeKind,
    pub beta_min: Option<f64>,
    pub beta_max: Option<f64>,
    pub sigma_min: Option<f64>,
    pub sigma_max: Option<f64>,
    pub sampler: Sampler,
    pub sample_steps: usize,
    /// Langevin steps per noise level (ALD) / corrector signal-to-noise ratio (PC).
    pub langevin_steps: usize,
    pub snr: f64,
    /// ALD step size ε (α_i = ε σ_i² / σ_min², Song & Ermon 2019, Alg. 1).
    pub ald_eps: f64,
    /// Smallest time of training, sampling and likelihood (score_sde: 1e-5).
    pub t_eps: f64,
    /// `[model.ode]`: the probability-flow ODE of the likelihood (and of the ODE sampler).
    pub ode: crate::score::likelihood::OdeParams,
    /// Vectors are modelled as y = x / data_scale (≈ the data's standard deviation); log p_x adds -D ln scale.
    /// The network reads y_t / √(m(t)² + s(t)²), so its input stays O(1) for every SDE (VE included).
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

impl ScoreParams {
    fn conditioning(&self) -> crate::nets::guidance::Conditioning {
        crate::nets::guidance::Conditioning { context_embed: self.context_embed, p_uncond: self.p_uncond, guidance_weight: self.guidance_weight }
    }
}

impl Default for ScoreParams {
    fn default() -> Self {
        ScoreParams {
            sde: SdeKind::Vp,
            beta_min: Default::default(),
            beta_max: Default::default(),
            sigma_min: Default::default(),
            sigma_max: Default::default(),
            sampler: Sampler::Pc,
            sample_steps: 500,
            langevin_steps: 5,
            snr: 0.16,
            ald_eps: 2e-5,
            t_eps: 1e-5,
            ode: Default::default(),
            data_scale: 1.0,
            net: Default::default(),
            context_embed: None,
            p_uncond: crate::nets::guidance::P_UNCOND,
            guidance_weight: 0.0,
        }
    }
}

impl ScoreParams {
    /// The SDE with score_sde's defaults for missing constants (VP/sub-VP β 0.1..20; VE σ 0.01..50).
    pub fn sde(&self) -> Sde {
        Sde {
            kind: self.sde,
            beta_min: self.beta_min.unwrap_or(0.1),
            beta_max: self.beta_max.unwrap_or(20.0),
            sigma_min: self.sigma_min.unwrap_or(0.01),
            sigma_max: self.sigma_max.unwrap_or(50.0),
        }
    }
}

/// Score model on vectors or images. Images are modelled in y = 2x - 1 (x ∈ \[0,1] dequantized), and log p_x(x) =
/// log p_y(y) + D ln 2, so the usual bits/dim offset (+8 on \[0,1], i.e. +7 on [-1,1]) applies.
#[derive(Debug)]
pub struct ScoreModel {
    pub net: Box<dyn TimeNet>,
    pub sde: Sde,
    pub p: ScoreParams,
    pub shape: Vec<i64>,
    pub images: bool,
    pub device: tch::Device,
    /// Drift evaluations of the last ODE sample and of the last likelihood evaluation.
    sample_nfe: Cell<usize>,
    likelihood_nfe: Cell<usize>,
}

impl ScoreModel {
    pub fn new(net: Box<dyn TimeNet>, p: ScoreParams, shape: Vec<i64>, images: bool, device: tch::Device) -> Self {
        ScoreModel { net, sde: p.sde(), p, shape, images, device, sample_nfe: Cell::new(0), likelihood_nfe: Cell::new(0) }
    }

    fn space(&self) -> ModelSpace {
        ModelSpace { images: self.images, data_scale: self.p.data_scale, dim: self.shape.iter().product() }
    }

    fn to_model_space(&self, x: &Tensor) -> Tensor {
        self.space().to_model(x)
    }

    fn to_data_space(&self, y: &Tensor) -> Tensor {
        self.space().to_data(y)
    }

    /// The noise prediction net(c_in y, t) with c_in = 1/√(m² + s²).
    fn predict_noise(&self, y: &Tensor, t: &Tensor) -> Tensor {
        let (m, s) = self.sde.mean_std(t);
        let c_in = (m.square() + s.square()).rsqrt();
        self.net.forward_t(&(y * bcast(&c_in, y)), t)
    }

    /// s_θ(y, t) = -net(c_in y, t) / s(t).
    pub fn score(&self, y: &Tensor, t: &Tensor) -> Tensor {
        let (_, s) = self.sde.mean_std(t);
        -self.predict_noise(y, t) / bcast(&s, y)
    }

    fn times(&self, t: f64, n: i64, device: tch::Device) -> Tensor {
        Tensor::full([n], t, (Kind::Float, device))
    }

    fn reverse_sde(&self, n: i64, pc: bool) -> Tensor {
        let device = self.net_device();
        let mut y = self.sde.prior_sample(&self.full_shape(n), device);
        let steps = self.p.sample_steps.max(1);
        let dt = (1.0 - self.p.t_eps) / steps as f64;
        for i in 0..steps {
            let t = self.times(1.0 - i as f64 * dt, n, device);
            if pc {
                y = self.langevin_corrector(&y, &t);
            }
            let g = self.sde.diffusion(&t);
            let drift = self.sde.drift(&y, &t) - self.score(&y, &t) * bcast(&g.square(), &y);
            y = &y - drift * dt + crate::rows::randn_like(&y) * bcast(&(g * dt.sqrt()), &y);
        }
        y
    }

    /// One Langevin step at a step size set by the signal-to-noise ratio (Song et al. 2021, Alg. 4/5).
    fn langevin_corrector(&self, y: &Tensor, t: &Tensor) -> Tensor {
        let s = self.score(y, t);
        let z = crate::rows::randn_like(y);
        let ratio = z.norm().double_value(&[]) / s.norm().double_value(&[]).max(1e-12);
        let step = 2.0 * (self.p.snr * ratio).powi(2);
        y + s * step + z * (2.0 * step).sqrt()
    }

    /// NCSN's annealed Langevin dynamics on σ_i = σ_max (σ_min/σ_max)^{i/(L-1)}, mapped to VE times.
    fn annealed_langevin(&self, n: i64) -> Tensor {
        let device = self.net_device();
        let mut y = self.sde.prior_sample(&self.full_shape(n), device);
        let levels = self.p.sample_steps.max(2);
        let (smin, smax) = (self.sde.sigma_min, self.sde.sigma_max);
        for i in 0..levels {
            let sigma = smax * (smin / smax).powf(i as f64 / (levels - 1) as f64);
            let t = self.times(((sigma / smin).ln() / (smax / smin).ln()).max(self.p.t_eps), n, device);
            let alpha = self.p.ald_eps * (sigma / smin).powi(2);
            for _ in 0..self.p.langevin_steps {
                y = &y + self.score(&y, &t) * (alpha / 2.0) + crate::rows::randn_like(&y) * alpha.sqrt();
            }
        }
        y
    }

    fn pf_ode_sample(&self, n: i64) -> Tensor {
        let device = self.net_device();
        let y1 = self.sde.prior_sample(&self.full_shape(n), device).to_kind(Kind::Double);
        let mut rhs = |t: f64, y: &Tensor| {
            let yy = y.to_kind(Kind::Float);
            let tt = self.times(t, n, device);
            likelihood::pf_drift(&self.sde, &|a: &Tensor, b: &Tensor| self.score(a, b), &yy, &tt).to_kind(Kind::Double)
        };
        let tol = self.p.ode.tolerance();
        let (y0, nfe) = rk45(&mut rhs, &y1, 1.0, self.p.t_eps, tol);
        self.sample_nfe.set(nfe);
        y0.to_kind(Kind::Float)
    }

    /// Tweedie's denoising step at t_eps: E[x_0 | x_ε] ≈ (y + s² ∇log p) / m.
    fn denoise(&self, y: &Tensor) -> Tensor {
        let t = self.times(self.p.t_eps, y.size()[0], y.device());
        let (m, s) = self.sde.mean_std(&t);
        (y + self.score(y, &t) * bcast(&s.square(), y)) / bcast(&m, y)
    }

    fn full_shape(&self, n: i64) -> Vec<i64> {
        let mut s = vec![n];
        s.extend(&self.shape);
        s
    }

    fn net_device(&self) -> tch::Device {
        self.device
    }

    fn divergence(&self) -> Divergence {
        self.p.ode.divergence(self.shape.iter().product())
    }
}

impl Model for ScoreModel {
    /// Denoising score matching with λ(t) = s(t)²: E_t E_z ||net(m x + s z, t) - z||² (summed over dimensions).
    fn loss(&self, x: &Tensor, _step: i64) -> Tensor {
        let y = self.to_model_space(x);
        let b = y.size()[0];
        let t = crate::rows::rand(&[b], (Kind::Float, y.device())) * (1.0 - self.p.t_eps) + self.p.t_eps;
        let z = crate::rows::randn_like(&y);
        let (m, s) = self.sde.mean_std(&t);
        let yt = &y * bcast(&m, &y) + &z * bcast(&s, &y);
        (self.predict_noise(&yt, &t) - z).square().flatten(1, -1).sum_dim_intlist(1, false, None).mean(None)
    }

    /// log p_ε(x) by the PF-ODE: exact divergence (labelled exact, up to the RK45 tolerance) in low dimension,
    /// Hutchinson's estimate (labelled an estimate) above `exact_divergence_max_dim`.
    fn log_prob(&self, x: &Tensor) -> LogProb {
        let y = self.to_model_space(x);
        let score = |a: &Tensor, b: &Tensor| self.score(a, b);
        let tol = self.p.ode.tolerance();
        let div = self.divergence();
        let (lp, nfe) = likelihood::log_prob(&self.sde, &score, &y, self.p.t_eps, div, tol);
        self.likelihood_nfe.set(nfe);
        let lp = lp + self.space().log_jacobian();
        let kind = div.kind();
        LogProb { value: lp.to_kind(Kind::Float), kind }
    }

    fn sample(&self, n: i64) -> Tensor {
        let y = tch::no_grad(|| match self.p.sampler {
            Sampler::Em => self.denoise(&self.reverse_sde(n, false)),
            Sampler::Pc => self.denoise(&self.reverse_sde(n, true)),
            Sampler::Ald => self.denoise(&self.annealed_langevin(n)),
            Sampler::Ode => self.pf_ode_sample(n),
        });
        self.to_data_space(&y)
    }

    fn sampling_cost(&self) -> SamplingCost {
        let steps = self.p.sample_steps.max(1);
        let (nfe, steps) = match self.p.sampler {
            Sampler::Em => (steps + 1, steps),
            Sampler::Pc => (2 * steps + 1, steps),
            Sampler::Ald => (steps.max(2) * self.p.langevin_steps + 1, steps.max(2) * self.p.langevin_steps),
            Sampler::Ode => (self.sample_nfe.get(), self.sample_nfe.get()),
        };
        SamplingCost { nfe_per_sample: nfe, steps }
    }

    fn family(&self) -> crate::model::Family {
        crate::model::Family::Score
    }

    fn estimator(&self) -> serde_json::Value {
        let d: i64 = self.shape.iter().product();
        let div = self.divergence().describe();
        serde_json::json!({
            "likelihood": "probability-flow ODE, log p at t = t_eps",
            "solver": format!("RK45 (Dormand-Prince), rtol = atol = {}", self.p.ode.rtol),
            "t_eps": self.p.t_eps,
            "divergence": div,
            "dim": d,
            "nfe_last_evaluation": self.likelihood_nfe.get(),
            "guidance": self.net.guided().map(crate::nets::guidance::describe),
        })
    }

    fn context_spec(&self) -> Option<crate::ContextSpec> {
        self.net.guided().map(|g| g.context_spec())
    }

    fn loss_given(&self, x: &Tensor, c: &crate::Context, step: i64) -> Tensor {
        with_context(&[&*self.net], c, Mode::Train, || self.loss(x, step))
    }

    /// The PF-ODE likelihood of the conditional model (w = 0).
    fn log_prob_given(&self, x: &Tensor, c: &crate::Context) -> LogProb {
        with_context(&[&*self.net], c, Mode::Conditional, || self.log_prob(x))
    }

    fn data_init_given(&self, x: &Tensor, c: &crate::Context) {
        if let Some(g) = self.net.guided() {
            g.data_init(c);
        }
        self.data_init(x)
    }

    /// One sample per context row, the score guided at `model.guidance_weight`.
    fn sample_given(&self, n: i64, c: &crate::Context) -> Tensor {
        with_context(&[&*self.net], c, Mode::Guided, || self.sample(c.len().unwrap_or(n)))
    }
}

impl crate::model::ModelParams for ScoreParams {
    fn build(&self, path: &tch::nn::Path, shape: &[i64]) -> anyhow::Result<Box<dyn Model>> {
        let net = crate::nets::spec::time_net(&path.sub("net"), shape, &self.net)?;
        Ok(Box::new(ScoreModel::new(net, self.clone(), shape.to_vec(), shape.len() == 3, path.device())))
    }

    /// p(x | c): the context embedding added to the time embedding, classifier-free guidance at sampling.
    fn build_conditional(&self, path: &tch::nn::Path, shape: &[i64], context: &crate::ContextSpec) -> anyhow::Result<Box<dyn Model>> {
        let net = crate::nets::guidance::time_net(&path.sub("net"), shape, &self.net, context, &self.conditioning())?;
        Ok(Box::new(ScoreModel::new(net, self.clone(), shape.to_vec(), shape.len() == 3, path.device())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    /// The optimal noise predictor for data N(0, v I) under `sde`, reading the preconditioned input c_in·y:
    /// E[z | y_t] = s y_t / (m² v + s²).
    #[derive(Debug)]
    struct GaussianNoise {
        sde: Sde,
        v: f64,
    }

    impl TimeNet for GaussianNoise {
        fn forward_t(&self, u: &Tensor, t: &Tensor) -> Tensor {
            let (m, s) = self.sde.mean_std(t);
            let y = u * bcast(&(m.square() + s.square()).sqrt(), u);
            y * bcast(&(&s / (m.square() * self.v + s.square())), u)
        }
    }

    fn model(kind: SdeKind, sampler: &str, v: f64) -> ScoreModel {
        let p: ScoreParams = toml::from_str(&format!(
            "sde = \"{kind}\"\nsampler = \"{sampler}\"\nsample_steps = 200\nsigma_max = 10.0\nald_eps = 1e-4\nlangevin_steps = 10",
            kind = match kind { SdeKind::Vp => "vp", SdeKind::SubVp => "sub_vp", SdeKind::Ve => "ve" }
        ))
        .unwrap();
        let sde = p.sde();
        ScoreModel::new(Box::new(GaussianNoise { sde, v }), p, vec![2], false, Device::Cpu)
    }

    #[test]
    fn samplers_with_the_exact_score_recover_the_data_law() {
        tch::manual_seed(0);
        let v = 0.25;
        for (kind, sampler) in [(SdeKind::Vp, "em"), (SdeKind::Vp, "pc"), (SdeKind::Vp, "ode"), (SdeKind::SubVp, "em"), (SdeKind::Ve, "em"), (SdeKind::Ve, "ald")] {
            let m = model(kind, sampler, v);
            let x = m.sample(4000).to_kind(Kind::Double);
            let var = x.var(true).double_value(&[]);
            let mean = x.mean(None).double_value(&[]);
            assert!(mean.abs() < 0.05 && (var - v).abs() < 0.05, "{kind:?}/{sampler}: mean {mean}, variance {var} (data 0, {v})");
        }
    }

    #[test]
    fn dsm_loss_is_minimised_by_the_exact_noise_predictor() {
        tch::manual_seed(1);
        let v = 0.25;
        let m = model(SdeKind::Vp, "em", v);
        let x = Tensor::randn([20_000, 2], (Kind::Float, Device::Cpu)) * v.sqrt();
        let optimal = m.loss(&x, 0).double_value(&[]);
        let off = ScoreModel::new(Box::new(GaussianNoise { sde: m.sde, v: 0.5 }), m.p.clone(), vec![2], false, Device::Cpu);
        assert!(off.loss(&x, 0).double_value(&[]) > optimal + 0.01, "a wrong variance must cost more");
    }
}
