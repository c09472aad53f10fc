//! DDPM (Ho et al. 2020): ε-prediction trained with L_simple (eq. 14), ancestral sampling (Alg. 2), DDIM sampling
//! (Song et al. 2021a, η = 0), and the variational bound L_T + Σ L_{t-1} + L_0 (eq. 5) as a lower bound on log p.
use super::schedule::{Schedule, ScheduleKind};
use crate::model::{Kind as LikKind, LogProb, Model, SamplingCost};
use crate::nets::guidance::{with_context, Mode};
use crate::nets::TimeNet;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

/// The reverse process variance σ_t².
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Variance {
    /// σ_t² = β_t.
    Beta,
    /// σ_t² = β̃_t, the posterior variance.
    Posterior,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DdpmSampler {
    Ancestral,
    Ddim,
}

/// `kind = "ddpm"`: the diffusion settings and `[model.net]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DdpmParams {
    pub timesteps: usize,
    pub schedule: ScheduleKind,
    pub variance: Variance,
    pub sampler: DdpmSampler,
    pub ddim_steps: usize,
    /// Vectors are modelled as y = x / data_scale (choose ≈ the data's standard deviation); log p_x adds -D ln scale.
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

impl DdpmParams {
    fn conditioning(&self) -> crate::nets::guidance::Conditioning {
        crate::nets::guidance::Conditioning { context_embed: self.context_embed, p_uncond: self.p_uncond, guidance_weight: self.guidance_weight }
    }
}

impl Default for DdpmParams {
    fn default() -> Self {
        DdpmParams {
            timesteps: 1000,
            schedule: ScheduleKind::Linear,
            variance: Variance::Beta,
            sampler: DdpmSampler::Ancestral,
            ddim_steps: 50,
            data_scale: 1.0,
            net: Default::default(),
            context_embed: None,
            p_uncond: crate::nets::guidance::P_UNCOND,
            guidance_weight: 0.0,
        }
    }
}

/// A DDPM on vectors, or on 8-bit images modelled in y = pixel/127.5 - 1 with a discretized decoder.
#[derive(Debug)]
pub struct Ddpm {
    pub net: Box<dyn TimeNet>,
    pub sched: Schedule,
    pub p: DdpmParams,
    pub shape: Vec<i64>,
    pub images: bool,
    pub device: Device,
}

const LN_2PI: f64 = 1.837_877_066_409_345_5;

fn sum_dims(x: &Tensor) -> Tensor {
    x.flatten(1, -1).sum_dim_intlist(1, false, Kind::Double)
}

/// log Φ(x), stable enough for the decoder's bins.
fn std_normal_cdf(x: &Tensor) -> Tensor {
    ((x / std::f64::consts::SQRT_2).erf() + 1.0) * 0.5
}

impl Ddpm {
    pub fn new(net: Box<dyn TimeNet>, p: DdpmParams, shape: Vec<i64>, images: bool, device: Device) -> Self {
        let sched = Schedule::new(p.schedule, p.timesteps.max(2));
        Ddpm { net, sched, p, shape, images, device }
    }

    /// Model space: images are (dequantized) x ∈ [0,1) -> pixel = ⌊256 x⌋ -> y = pixel/127.5 - 1.
    fn to_model_space(&self, x: &Tensor) -> Tensor {
        if self.images {
            (x * 256.0).floor().clamp(0.0, 255.0) / 127.5 - 1.0
        } else {
            x / self.p.data_scale
        }
    }

    fn t_steps(&self) -> usize {
        self.sched.steps()
    }

    /// ε_θ(y_t, t) with the network reading t / T.
    pub fn eps(&self, y: &Tensor, t: &Tensor) -> Tensor {
        self.net.forward_t(y, &(t.to_kind(Kind::Float) / self.t_steps() as f64))
    }

    fn full_t(&self, t: usize, n: i64) -> Tensor {
        Tensor::full([n], t as i64, (Kind::Int64, self.device))
    }

    /// μ_θ(y_t, t) = (y_t - β_t/√(1-ᾱ_t) ε) / √α_t (eq. 11).
    fn model_mean(&self, y: &Tensor, t: usize, eps: &Tensor) -> Tensor {
        let s = &self.sched;
        (y - eps * (s.betas[t] / (1.0 - s.alpha_bar[t]).sqrt())) / s.alphas[t].sqrt()
    }

    fn sigma2(&self, t: usize) -> f64 {
        match (self.p.variance, t) {
            (_, 0) | (Variance::Beta, _) => self.sched.betas[t],
            (Variance::Posterior, _) => self.sched.posterior_variance(t),
        }
    }

    fn ancestral(&self, n: i64) -> Tensor {
        let mut shape = vec![n];
        shape.extend(&self.shape);
        let mut y = crate::rows::randn(shape.as_slice(), (Kind::Float, self.device));
        for t in (0..self.t_steps()).rev() {
            let e = self.eps(&y, &self.full_t(t, n));
            let mean = self.model_mean(&y, t, &e);
            y = if t > 0 { mean + crate::rows::randn_like(&y) * self.sigma2(t).sqrt() } else { mean };
        }
        y
    }

    /// DDIM with η = 0 on `ddim_steps` evenly spaced steps: deterministic given y_T.
    pub fn ddim_from(&self, y_t: &Tensor) -> Tensor {
        let total = self.t_steps();
        let k = self.p.ddim_steps.clamp(1, total);
        let taus: Vec<usize> = (0..k).map(|i| (i * (total - 1)) / (k - 1).max(1)).collect();
        let n = y_t.size()[0];
        let mut y = y_t.shallow_clone();
        for i in (0..k).rev() {
            let t = taus[i];
            let e = self.eps(&y, &self.full_t(t, n));
            let ab = self.sched.alpha_bar[t];
            let mut x0 = (&y - &e * (1.0 - ab).sqrt()) / ab.sqrt();
            if self.images {
                x0 = x0.clamp(-1.0, 1.0);
            }
            let ab_prev = if i > 0 { self.sched.alpha_bar[taus[i - 1]] } else { 1.0 };
            y = x0 * ab_prev.sqrt() + e * (1.0 - ab_prev).sqrt();
        }
        y
    }

    /// The negative variational bound per example, in nats in model space: L_T + Σ_{t≥1} L_{t-1} + L_0.
    pub fn nll_bound(&self, y0: &Tensor) -> Tensor {
        let s = &self.sched;
        let n = y0.size()[0];
        let last = self.t_steps() - 1;
        // L_T = KL(q(y_T | y_0) || N(0, I)).
        let (m, v) = (s.alpha_bar[last].sqrt(), 1.0 - s.alpha_bar[last]);
        let mut total = sum_dims(&((y0 * m).square() + v - 1.0 - v.ln())) * 0.5;
        for t in 0..=last {
            let tt = self.full_t(t, n);
            let y_t = s.q_sample(y0, &tt, &crate::rows::randn_like(y0));
            let mean = self.model_mean(&y_t, t, &self.eps(&y_t, &tt));
            let sigma2 = self.sigma2(t);
            let term = if t > 0 {
                // L_{t-1} = KL(q(y_{t-1} | y_t, y_0) || p_θ(y_{t-1} | y_t)).
                let (c0, ct) = s.posterior_mean_coefs(t);
                let post_mean = y0 * c0 + &y_t * ct;
                let pv = s.posterior_variance(t);
                sum_dims(&((post_mean - &mean).square() / sigma2 + pv / sigma2 - 1.0 + (sigma2 / pv).ln())) * 0.5
            } else if self.images {
                -sum_dims(&self.discretized_log_likelihood(y0, &mean, sigma2.sqrt()))
            } else {
                sum_dims(&(((y0 - &mean).square() / sigma2 + sigma2.ln() + LN_2PI) * 0.5))
            };
            total = total + term;
        }
        total
    }

    /// log P(pixel) under N(mean, σ²) integrated over the pixel's bin [y - 1/255, y + 1/255], the outer bins reaching
    /// ±∞ (Ho et al. 2020, §3.3).
    fn discretized_log_likelihood(&self, y0: &Tensor, mean: &Tensor, sigma: f64) -> Tensor {
        let centred = y0 - mean;
        let upper = std_normal_cdf(&((&centred + 1.0 / 255.0) / sigma));
        let lower = std_normal_cdf(&((&centred - 1.0 / 255.0) / sigma));
        let upper = upper.where_self(&y0.lt(0.999), &upper.ones_like());
        let lower = lower.where_self(&y0.gt(-0.999), &lower.zeros_like());
        (upper - lower).clamp_min(1e-12).log()
    }
}

impl Model for Ddpm {
    /// L_simple: E_{t, ε} ||ε - ε_θ(√ᾱ_t y_0 + √(1-ᾱ_t) ε, t)||² (summed over dimensions).
    fn loss(&self, x: &Tensor, _step: i64) -> Tensor {
        let y0 = self.to_model_space(x);
        let n = y0.size()[0];
        let t = crate::rows::randint(self.t_steps() as i64, &[n], y0.device());
        let eps = crate::rows::randn_like(&y0);
        let y_t = self.sched.q_sample(&y0, &t, &eps);
        (self.eps(&y_t, &t) - eps).square().flatten(1, -1).sum_dim_intlist(1, false, None).mean(None)
    }

    /// The variational bound (one noise draw per term): a lower bound on log p. For images it is log P(pixels)
    /// + D ln 256, the density of the uniformly dequantized data on \[0,1]^D, so bits/dim = -bound/(D ln 2) + 8
    /// equals the discrete bound in bits/dim.
    fn log_prob(&self, x: &Tensor) -> LogProb {
        let y0 = self.to_model_space(x);
        let bound = -self.nll_bound(&y0);
        let d: i64 = self.shape.iter().product();
        let value = if self.images { bound + d as f64 * 256f64.ln() } else { bound - d as f64 * self.p.data_scale.ln() };
        LogProb { value: value.to_kind(Kind::Float), kind: LikKind::LowerBound }
    }

    fn sample(&self, n: i64) -> Tensor {
        let y = tch::no_grad(|| match self.p.sampler {
            DdpmSampler::Ancestral => self.ancestral(n),
            DdpmSampler::Ddim => {
                let mut shape = vec![n];
                shape.extend(&self.shape);
                self.ddim_from(&crate::rows::randn(shape.as_slice(), (Kind::Float, self.device)))
            }
        });
        if self.images {
            ((y + 1.0) * 0.5).clamp(0.0, 1.0)
        } else {
            y * self.p.data_scale
        }
    }

    fn sampling_cost(&self) -> SamplingCost {
        let n = match self.p.sampler {
            DdpmSampler::Ancestral => self.t_steps(),
            DdpmSampler::Ddim => self.p.ddim_steps.clamp(1, self.t_steps()),
        };
        SamplingCost { nfe_per_sample: n, steps: n }
    }

    fn family(&self) -> crate::model::Family {
        crate::model::Family::Diffusion
    }

    fn estimator(&self) -> serde_json::Value {
        let mut e = serde_json::json!({
            "likelihood": "variational bound L_T + sum L_{t-1} + L_0 over all T steps, one noise draw per term",
            "timesteps": self.t_steps(),
            "decoder": if self.images { "discretized Gaussian over 8-bit bins (Ho et al. 2020)" } else { "Gaussian N(mu_theta(x_1, 1), beta_1)" },
            "reverse_variance": self.p.variance,
        });
        if let Some(g) = self.net.guided() {
            e["guidance"] = crate::nets::guidance::describe(g);
        }
        e
    }

    fn context_spec(&self) -> Option<crate::ContextSpec> {
        self.net.guided().map(|g| g.context_spec())
    }

    fn loss_given(&self, x: &Tensor, c: &crate::Context, step: i64) -> Tensor {
        with_context(&[&*self.net], c, Mode::Train, || self.loss(x, step))
    }

    /// The bound of the conditional model (w = 0).
    fn log_prob_given(&self, x: &Tensor, c: &crate::Context) -> LogProb {
        with_context(&[&*self.net], c, Mode::Conditional, || self.log_prob(x))
    }

    fn data_init_given(&self, x: &Tensor, c: &crate::Context) {
        if let Some(g) = self.net.guided() {
            g.data_init(c);
        }
        self.data_init(x)
    }

    /// One sample per context row, at the guidance weight `model.guidance_weight`.
    fn sample_given(&self, n: i64, c: &crate::Context) -> Tensor {
        with_context(&[&*self.net], c, Mode::Guided, || self.sample(c.len().unwrap_or(n)))
    }
}

impl crate::model::ModelParams for DdpmParams {
    fn build(&self, path: &tch::nn::Path, shape: &[i64]) -> anyhow::Result<Box<dyn Model>> {
        let net = crate::nets::spec::time_net(&path.sub("net"), shape, &self.net)?;
        Ok(Box::new(Ddpm::new(net, self.clone(), shape.to_vec(), shape.len() == 3, path.device())))
    }

    /// p(x | c): the context embedding added to the time embedding, classifier-free guidance at sampling.
    fn build_conditional(&self, path: &tch::nn::Path, shape: &[i64], context: &crate::ContextSpec) -> anyhow::Result<Box<dyn Model>> {
        let net = crate::nets::guidance::time_net(&path.sub("net"), shape, &self.net, context, &self.conditioning())?;
        Ok(Box::new(Ddpm::new(net, self.clone(), shape.to_vec(), shape.len() == 3, path.device())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::score::sde::bcast;

    /// The optimal ε-predictor for data N(0, s² I): E[ε | y_t] = √(1-ᾱ) y_t / (ᾱ s² + 1 - ᾱ).
    #[derive(Debug)]
    struct GaussianEps {
        s: f64,
        alpha_bar: Vec<f64>,
    }

    impl TimeNet for GaussianEps {
        fn forward_t(&self, x: &Tensor, t: &Tensor) -> Tensor {
            let steps = self.alpha_bar.len() as f64;
            let idx = (t * steps).round().to_kind(Kind::Int64);
            let ab = Tensor::from_slice(&self.alpha_bar).to_kind(x.kind()).index_select(0, &idx);
            let coef = (-&ab + 1.0).sqrt() / (&ab * (self.s * self.s) - &ab + 1.0);
            x * bcast(&coef, x)
        }
    }

    fn gaussian_ddpm(s: f64, p: DdpmParams) -> Ddpm {
        let sched = Schedule::new(p.schedule, p.timesteps);
        let net = Box::new(GaussianEps { s, alpha_bar: sched.alpha_bar.clone() });
        Ddpm::new(net, p, vec![2], false, Device::Cpu)
    }

    fn params(toml_text: &str) -> DdpmParams {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn bound_stays_below_the_exact_log_density_of_gaussian_data() {
        tch::manual_seed(0);
        let s = 0.8;
        // σ_t² = β_t is the right reverse variance for data near N(0, I) (Ho et al. §3.2): the bound is then tight;
        // σ_t² = β̃_t (right for a point mass) loosens it, but it stays a bound.
        let mut gaps = Vec::new();
        for p in [params("timesteps = 200\nvariance = \"beta\""), params("timesteps = 200\nvariance = \"beta\"\nschedule = \"cosine\""), params("timesteps = 200\nvariance = \"posterior\"")] {
            let m = gaussian_ddpm(s, p);
            let x = Tensor::randn([4000, 2], (Kind::Double, Device::Cpu)) * s;
            let bound = tch::no_grad(|| m.log_prob(&x.to_kind(Kind::Float))).value.to_kind(Kind::Double);
            let exact = x.square().sum_dim_intlist(1, false, None) * (-0.5 / (s * s)) - (2.0 * std::f64::consts::PI * s * s).ln();
            let gap = (&exact - &bound).mean(None).double_value(&[]);
            let se = (&exact - &bound).std(true).double_value(&[]) / (4000f64).sqrt();
            assert!(gap > -3.0 * se, "bound above the exact log-likelihood: gap {gap} ± {se}");
            gaps.push(gap);
        }
        assert!(gaps[0] < 0.15 && gaps[1] < 0.15, "with σ² = β the optimal model's bound is tight: gaps {gaps:?}");
        assert!(gaps[2] > gaps[0] + 0.5, "β̃ must be looser than β on spread-out data: {gaps:?}");
    }

    #[test]
    fn data_scale_changes_variables_with_its_log_det() {
        // Data N(0, 1.6² I) modelled at scale 2 is N(0, 0.8² I) in model space: the bound in data space must again
        // sit just below the exact log-density, which needs the -D ln 2 term.
        tch::manual_seed(4);
        let m = gaussian_ddpm(0.8, params("timesteps = 200\nvariance = \"beta\"\ndata_scale = 2.0"));
        let x = Tensor::randn([4000, 2], (Kind::Double, Device::Cpu)) * 1.6;
        let bound = tch::no_grad(|| m.log_prob(&x.to_kind(Kind::Float))).value.to_kind(Kind::Double);
        let exact = x.square().sum_dim_intlist(1, false, None) * (-0.5 / 2.56) - (2.0 * std::f64::consts::PI * 2.56).ln();
        let gap = (&exact - &bound).mean(None).double_value(&[]);
        let se = (&exact - &bound).std(true).double_value(&[]) / (4000f64).sqrt();
        assert!(gap > -3.0 * se && gap < 0.15, "scaled data: gap {gap} ± {se}");
    }

    #[test]
    fn discretized_decoder_is_a_distribution_over_the_256_values() {
        let m = gaussian_ddpm(0.8, params("timesteps = 10"));
        let y = Tensor::arange(256, (Kind::Double, Device::Cpu)) / 127.5 - 1.0;
        for (mean, sigma) in [(0.1, 0.05), (-0.97, 0.01), (0.5, 0.8)] {
            let lp = m.discretized_log_likelihood(&y, &y.full_like(mean), sigma);
            let total = lp.exp().sum(Kind::Double).double_value(&[]);
            assert!((total - 1.0).abs() < 1e-6, "mean {mean}, sigma {sigma}: probabilities sum to {total}");
        }
    }

    #[test]
    fn ddim_is_deterministic_and_ancestral_sampling_recovers_the_data_law() {
        tch::manual_seed(1);
        let m = gaussian_ddpm(0.8, params("timesteps = 200\nddim_steps = 20"));
        let y_t = Tensor::randn([5000, 2], (Kind::Float, Device::Cpu));
        let a = tch::no_grad(|| m.ddim_from(&y_t));
        let b = tch::no_grad(|| m.ddim_from(&y_t));
        assert!(a.equal(&b), "DDIM with the same noise must give the same samples");
        let x = m.sample(20_000).to_kind(Kind::Double);
        let var = x.var(true).double_value(&[]);
        assert!((var - 0.64).abs() < 0.03, "ancestral samples of the optimal model have variance {var}, data 0.64");
    }
}
