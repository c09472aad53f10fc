//! The VAE model (Kingma & Welling 2014) and its importance-weighted variant (IWAE, Burda et al. 2016): one
//! `VaeLayer` on a N(0, I) prior, trained by the ELBO or IWAE(k), evaluated by importance sampling.
use super::decoder::Likelihood;
use super::layer::VaeLayer;
use super::nets::{Arch, Decoder, Encoder};
use crate::context::{Context, ContextSpec};
use crate::dist::StandardNormal;
use crate::nets::embed::ContextEncoder;
use crate::layer::LayerModel;
use crate::model::{Kind, LogProb, Model, SamplingCost};
use crate::nets::Activation;
use anyhow::{ensure, Result};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::rc::Rc;
use tch::{nn, Tensor};

/// Rows per pass when replicating a batch k times (bounds memory of IWAE and importance sampling).
const ROWS: i64 = 50_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Objective {
    /// Single-sample ELBO.
    Elbo,
    /// IWAE(k): log (1/k) Σ p(x, z_j)/q(z_j|x).
    Iwae,
}

/// `kind = "vae"`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VaeParams {
    pub arch: Arch,
    /// Hidden widths of the encoder MLP (the decoder mirrors them).
    pub hidden: Vec<i64>,
    pub latent: i64,
    pub activation: Activation,
    /// p(x|z): bernoulli (binarized data), gaussian, discretized_logistic (8-bit images).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub likelihood: Option<Likelihood>,
    pub objective: Objective,
    /// Importance samples per example in training (IWAE).
    pub k: i64,
    /// Importance samples per example for the test NLL estimate.
    pub eval_k: i64,
    /// Samples show the decoder's mean rather than a draw from p(x|z).
    pub sample_mean: bool,
    /// ELBO training against posterior collapse: the KL term's weight β rises linearly from 0 to 1 over these steps
    /// (KL warm-up / annealing, Bowman et al. 2016; Sønderby et al. 2016). 0: off.
    pub kl_warmup: i64,
    /// Free bits λ (nats per latent unit; Kingma et al. 2016, eq. 15): each unit's batch-mean KL counts as at least
    /// λ, so the optimiser gains nothing by pushing a unit below λ and collapsing it. 0: off.
    pub free_bits: f64,
    /// A conditional run: the width of the context embedding both networks read (default: 16 for classes, a
    /// vector context as it is).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context_embed: Option<i64>,
}

impl Default for VaeParams {
    fn default() -> Self {
        VaeParams {
            arch: Arch::Mlp,
            hidden: vec![200, 200],
            latent: 50,
            activation: Activation::Tanh,
            likelihood: Default::default(),
            objective: Objective::Elbo,
            k: 1,
            eval_k: 1000,
            sample_mean: Default::default(),
            kl_warmup: Default::default(),
            free_bits: Default::default(),
            context_embed: None,
        }
    }
}

pub struct Vae {
    model: LayerModel,
    layer: Rc<VaeLayer>,
    p: VaeParams,
    /// h(c) of a conditional VAE p(x | c) = ∫ p(x | z, c) p(z) dz (Sohn et al. 2015); None: unconditional.
    context: Option<ContextEncoder>,
}

impl Vae {
    pub fn new(path: &nn::Path, shape: &[i64], p: &VaeParams) -> Result<Self> {
        Self::new_given(path, shape, p, None)
    }

    /// The VAE of p(x | c) for contexts `context` (None: `new`): encoder q(z | x, c) and decoder p(x | z, c) read
    /// the context embedding (at `path/context`) beside their inputs; the prior stays N(0, I).
    pub fn new_given(path: &nn::Path, shape: &[i64], p: &VaeParams, context: Option<&ContextSpec>) -> Result<Self> {
        ensure!(p.k >= 1 && p.eval_k >= 1, "model.k and model.eval_k must be at least 1");
        ensure!(p.free_bits >= 0.0 && p.free_bits.is_finite(), "model.free_bits must be a non-negative number, got {}", p.free_bits);
        ensure!(
            p.objective == Objective::Elbo || (p.kl_warmup == 0 && p.free_bits == 0.0),
            "model.kl_warmup and model.free_bits shape the ELBO's KL term; with objective = \"iwae\" leave them at 0"
        );
        let context = context.map(|spec| ContextEncoder::new(&path.sub("context"), *spec, p.context_embed)).transpose()?;
        let cond = context.as_ref().map_or(0, ContextEncoder::width);
        let encoder = Encoder::new(&path.sub("encoder"), shape, p.arch, &p.hidden, p.latent, p.activation, cond)?;
        let Some(likelihood) = p.likelihood else {
            anyhow::bail!("model.likelihood is required: bernoulli (binarized data) | gaussian | discretized_logistic (8-bit images)")
        };
        let per_dim = likelihood.params_per_dim();
        let decoder = Decoder::new(&path.sub("decoder"), shape, p.arch, &p.hidden, p.latent, per_dim, p.activation, cond)?;
        let layer = Rc::new(VaeLayer { encoder, decoder, likelihood, sample_mean: p.sample_mean });
        let base = Box::new(StandardNormal { shape: vec![p.latent], device: path.device() });
        let model = LayerModel { layers: vec![Box::new(layer.clone())], base, family: crate::model::Family::Vae };
        Ok(Vae { model, layer, p: p.clone(), context })
    }

    /// Posterior-collapse diagnostics on `x` (Burda et al. 2016, §5.2): KL(q(z_u|x) || N(0, 1)) per latent unit
    /// averaged over x, and the active units A_u = Var_x(E_q[z_u]) > 0.01.
    fn collapse(&self, x: &Tensor) -> serde_json::Value {
        let (mu, log_s) = self.layer.encoder.forward(x);
        let kl = ((mu.square() + (&log_s * 2.0).exp() - 1.0) * 0.5 - &log_s).mean_dim(0, false, None);
        let activity = mu.var_dim(0, false, false);
        let kl: Vec<f64> = Vec::try_from(kl.to_kind(tch::Kind::Double)).unwrap_or_default();
        let activity: Vec<f64> = Vec::try_from(activity.to_kind(tch::Kind::Double)).unwrap_or_default();
        json!({
            "kl_per_unit_nats": kl, "kl_total_nats": kl.iter().sum::<f64>(), "unit_activity": activity,
            "active_units": activity.iter().filter(|&&a| a > 0.01).count(), "latent": self.p.latent,
        })
    }
}

impl Vae {
    /// -E_q[log p(x|z)] + β(step) Σ_u max(λ, mean over the batch of KL(q(z_u|x) || N(0, 1))), with the KL in closed
    /// form (0.5(μ² + σ² - 1) - log σ per unit). At β = 1 and λ = 0 this is the negative ELBO (analytic KL).
    /// `h`: a conditional VAE's context features.
    fn shaped_elbo_loss(&self, x: &Tensor, h: Option<&Tensor>, step: i64) -> Tensor {
        let (mu, log_s) = self.layer.encoder.forward_given(x, h);
        let z = &mu + log_s.exp() * crate::rows::randn_like(&mu);
        let reconstruction = self.layer.log_likelihood_given(x, &z, h).mean(None);
        let kl_units = ((mu.square() + (&log_s * 2.0).exp() - 1.0) * 0.5 - &log_s).mean_dim(0, false, None);
        let kind = kl_units.kind();
        let kl = if self.p.free_bits > 0.0 { kl_units.clamp_min(self.p.free_bits) } else { kl_units }.sum(kind);
        let beta = if self.p.kl_warmup > 0 { ((step + 1) as f64 / self.p.kl_warmup as f64).min(1.0) } else { 1.0 };
        -reconstruction + kl * beta
    }
}

impl Model for Vae {
    fn loss(&self, x: &Tensor, step: i64) -> Tensor {
        match self.p.objective {
            Objective::Elbo if self.p.kl_warmup > 0 || self.p.free_bits > 0.0 => self.shaped_elbo_loss(x, None, step),
            Objective::Elbo => -self.model.log_prob(x).value.mean(None),
            Objective::Iwae => -self.model.iwbo(x, self.p.k, ROWS).mean(None),
        }
    }

    /// Importance-sampling estimate log (1/K) Σ p(x, z_j)/q(z_j|x), z_j ~ q(z|x), K = eval_k: consistent as K grows,
    /// below log p(x) in expectation (so the NLL estimate errs high).
    fn log_prob(&self, x: &Tensor) -> LogProb {
        LogProb { value: self.model.iwbo(x, self.p.eval_k, ROWS), kind: Kind::Estimate }
    }

    fn sample(&self, n: i64) -> Tensor {
        self.model.sample(n)
    }

    fn sampling_cost(&self) -> SamplingCost {
        self.model.sampling_cost()
    }

    fn family(&self) -> crate::model::Family {
        crate::model::Family::Vae
    }

    fn estimator(&self) -> serde_json::Value {
        json!({
            "method": "importance sampling with q(z|x) as proposal (IWAE bound with k = eval_k)", "k": self.p.eval_k,
            "bias": "E[log p_hat] <= log p(x): the NLL estimate is biased upward, less with larger k",
            "train_objective": self.p.objective, "train_k": self.p.k, "kl_warmup": self.p.kl_warmup, "free_bits": self.p.free_bits,
        })
    }

    /// ELBO and IWAE(k) bounds at k = 1, 5, 50 on the same points, and the collapse diagnostics (of an
    /// unconditional VAE: a conditional one's need each point's context).
    fn test_diagnostics(&self, x: &Tensor) -> Option<serde_json::Value> {
        if self.context.is_some() {
            return None;
        }
        let mean = |k: i64| self.model.iwbo(x, k, ROWS).mean(None).double_value(&[]);
        let bounds: Vec<(i64, f64)> = [1, 5, 50].iter().map(|&k| (k, mean(k))).collect();
        Some(json!({
            "n": x.size()[0],
            "bounds_nats": bounds.iter().map(|(k, b)| json!({ "k": k, "mean_log_p_lower_bound": b })).collect::<Vec<_>>(),
            "collapse": self.collapse(x),
        }))
    }

    fn context_spec(&self) -> Option<ContextSpec> {
        self.context.as_ref().map(|e| e.spec)
    }

    /// The training objective of p(x | c): the (shaped) ELBO or IWAE(k) with every network reading h(c).
    fn loss_given(&self, x: &Tensor, c: &Context, step: i64) -> Tensor {
        let Some(h) = self.features(c) else { return self.loss(x, step) };
        match self.p.objective {
            Objective::Elbo if self.p.kl_warmup > 0 || self.p.free_bits > 0.0 => self.shaped_elbo_loss(x, Some(&h), step),
            Objective::Elbo => {
                let (z, v) = self.model.forward_given(x, &h);
                -(self.model.base.log_prob_given(&z, &h) + v).mean(None)
            }
            Objective::Iwae => -self.model.iwbo_given(x, Some(&h), self.p.k, ROWS).mean(None),
        }
    }

    /// The importance-sampling estimate of log p(x | c) with q(z | x, c) as proposal, K = eval_k.
    fn log_prob_given(&self, x: &Tensor, c: &Context) -> LogProb {
        match self.features(c) {
            Some(h) => LogProb { value: self.model.iwbo_given(x, Some(&h), self.p.eval_k, ROWS), kind: Kind::Estimate },
            None => self.log_prob(x),
        }
    }

    fn data_init_given(&self, x: &Tensor, c: &Context) {
        if let Some(e) = &self.context {
            e.data_init(c);
        }
        self.data_init(x)
    }

    /// One draw of p(x | z, c), z ~ N(0, I), per context row.
    fn sample_given(&self, n: i64, c: &Context) -> Tensor {
        match self.features(c) {
            Some(h) => tch::no_grad(|| {
                let z = self.model.base.sample_given(&h, 1.0);
                self.model.inverse_given(&z, &h).0
            }),
            None => self.sample(n),
        }
    }
}

impl Vae {
    /// h(c) of a conditional VAE; None for `Context::None` (which a conditional VAE's networks then refuse).
    fn features(&self, c: &Context) -> Option<Tensor> {
        match (&self.context, c) {
            (_, Context::None) => None,
            (Some(e), c) => Some(e.forward(c)),
            (None, _) => {
                crate::model::expect_unconditional(crate::model::Family::Vae, c);
                None
            }
        }
    }
}

impl crate::model::ModelParams for VaeParams {
    fn build(&self, path: &nn::Path, shape: &[i64]) -> Result<Box<dyn Model>> {
        Ok(Box::new(Vae::new(path, shape, self)?))
    }

    /// The conditional VAE p(x | c) (Sohn et al. 2015): q(z | x, c), p(x | z, c), prior N(0, I).
    fn build_conditional(&self, path: &nn::Path, shape: &[i64], context: &ContextSpec) -> Result<Box<dyn Model>> {
        Ok(Box::new(Vae::new_given(path, shape, self, Some(context))?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    fn f64s(v: &[f64], shape: &[i64]) -> Tensor {
        Tensor::from_slice(v).view(shape)
    }

    /// A linear-Gaussian VAE with decoder p(x|z) = N(Wz + b, σ² I), σ = e^{-1/2}, and the encoder set to the exact
    /// posterior's mean map and marginal log-scales, shifted by `perturb`. The model's marginal is N(b, WWᵀ + σ² I);
    /// returns it with the VAE.
    fn linear_vae(vs: &nn::VarStore, w: &Tensor, perturb: f64) -> (Vae, Tensor, Tensor) {
        let p: VaeParams = toml::from_str("hidden = []\nlatent = 2\nlikelihood = \"gaussian\"").unwrap();
        let vae = Vae::new(&vs.root(), &[3], &p).unwrap();
        let b = f64s(&[0.1, -0.2, 0.3], &[3]);
        let log_sigma = -0.5f64;
        let sigma2 = (2.0 * log_sigma).exp();
        // Exact posterior: Σ = (I + WᵀW/σ²)⁻¹, μ = Σ Wᵀ (x - b)/σ².
        let eye2 = Tensor::eye(2, (Kind::Double, Device::Cpu));
        let cov = (&eye2 + w.transpose(0, 1).matmul(w) / sigma2).inverse();
        let a = cov.matmul(&w.transpose(0, 1)) / sigma2;
        let c = -a.matmul(&b);
        let log_s = cov.diagonal(0, 0, 1).log() * 0.5;
        let zeros = |r, c| Tensor::zeros([r, c], (Kind::Double, Device::Cpu));
        tch::no_grad(|| {
            let vars = vs.variables();
            let set = |name: &str, t: Tensor| {
                let _ = vars[name].shallow_clone().copy_(&t.to_kind(Kind::Float));
            };
            set("encoder.mlp.linear0.weight", Tensor::cat(&[&a + perturb, zeros(2, 3)], 0));
            set("encoder.mlp.linear0.bias", Tensor::cat(&[&c, &(&log_s + perturb)], 0));
            set("decoder.mlp.linear0.weight", Tensor::cat(&[w.shallow_clone(), zeros(3, 2)], 0));
            set("decoder.mlp.linear0.bias", Tensor::cat(&[b.shallow_clone(), Tensor::full([3], log_sigma, (Kind::Double, Device::Cpu))], 0));
        });
        let cov_x = w.matmul(&w.transpose(0, 1)) + Tensor::eye(3, (Kind::Double, Device::Cpu)) * sigma2;
        (vae, b, cov_x)
    }

    fn exact_log_p(x: &Tensor, mean: &Tensor, cov: &Tensor) -> Tensor {
        let d = x.to_kind(Kind::Double) - mean;
        let sol = cov.inverse().matmul(&d.transpose(0, 1)).transpose(0, 1);
        (&d * sol).sum_dim_intlist(1, false, None) * -0.5 - cov.logdet() * 0.5 - 1.5 * crate::dist::normal::LN_2PI
    }

    #[test]
    fn elbo_below_iwae_k_below_iwae_k_prime_below_the_exact_log_likelihood() {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let w = f64s(&[1.0, 0.5, -0.3, 0.8, 0.2, -1.0], &[3, 2]);
        let (vae, mean, cov) = linear_vae(&vs, &w, 0.3);
        let x = Tensor::randn([16, 3], (Kind::Float, Device::Cpu)) * 1.5;
        let exact = exact_log_p(&x, &mean, &cov).mean(None).double_value(&[]);
        // Averages over replicas, so each E[bound] is resolved well below the gaps.
        let avg = |k: i64| (0..20).map(|_| vae.model.iwbo(&x, k, ROWS).mean(None).double_value(&[])).sum::<f64>() / 20.0;
        let (elbo, i5, i50, i2000) = (avg(1), avg(5), avg(50), avg(2000));
        assert!(elbo < i5 && i5 < i50 && i50 <= i2000 + 1e-3 && i2000 <= exact + 1e-3, "{elbo} {i5} {i50} {i2000} vs {exact}");
        assert!(exact - elbo > 0.05, "a perturbed encoder leaves a visible gap: {elbo} vs {exact}");
        assert!(exact - i2000 < 0.25 * (exact - elbo), "IWAE(2000) closes most of the gap: {elbo} {i2000} vs {exact}");
        assert_eq!(vae.log_prob(&x).kind, crate::model::Kind::Estimate);
    }

    #[test]
    fn with_the_exact_posterior_every_single_draw_elbo_is_log_p() {
        // Orthogonal columns make WᵀW diagonal, so the exact posterior is a diagonal Gaussian the encoder represents:
        // then p(x, z)/q(z|x) = p(x) for every z, and the one-sample ELBO has no gap and no variance.
        tch::manual_seed(1);
        let vs = nn::VarStore::new(Device::Cpu);
        let w = f64s(&[1.0, 0.0, 0.0, 2.0, 0.0, 0.0], &[3, 2]);
        let (vae, mean, cov) = linear_vae(&vs, &w, 0.0);
        let x = Tensor::randn([32, 3], (Kind::Float, Device::Cpu));
        let exact = exact_log_p(&x, &mean, &cov);
        let elbo = vae.model.log_prob(&x).value.to_kind(Kind::Double);
        assert!((elbo - exact).abs().max().double_value(&[]) < 1e-4);
    }

    /// The shaped ELBO against independent computations: at β = 1 and λ = 0 (analytic KL) its expectation is -log p(x)
    /// when the encoder is the exact posterior (closed form of the linear-Gaussian model); free bits λ replace each
    /// unit's batch-mean KL by max(λ, KL_u), and warm-up scales the KL by (step + 1)/kl_warmup.
    #[test]
    fn shaped_elbo_matches_the_closed_form_and_its_free_bits_and_warm_up() {
        tch::manual_seed(4);
        let vs = nn::VarStore::new(Device::Cpu);
        let w = f64s(&[1.0, 0.0, 0.0, 2.0, 0.0, 0.0], &[3, 2]);
        let (mut vae, mean, cov) = linear_vae(&vs, &w, 0.0);
        let x = Tensor::randn([16, 3], (Kind::Float, Device::Cpu));
        let exact = exact_log_p(&x, &mean, &cov).mean(None).double_value(&[]);
        let reps = x.repeat([1000, 1]);
        let loss = tch::no_grad(|| vae.shaped_elbo_loss(&reps, None, 0).double_value(&[]));
        assert!((loss + exact).abs() < 0.05, "E[-ELBO] {loss} vs -log p {exact}");

        let (mu, log_s) = tch::no_grad(|| vae.layer.encoder.forward(&reps));
        let kl_units: Vec<f64> = Vec::try_from(((mu.square() + (&log_s * 2.0).exp() - 1.0) * 0.5 - &log_s).mean_dim(0, false, Kind::Double)).unwrap();
        let lambda = 100.0;
        let with = |v: &mut Vae, free_bits: f64, warmup: i64, step: i64| {
            v.p.free_bits = free_bits;
            v.p.kl_warmup = warmup;
            tch::manual_seed(9);
            tch::no_grad(|| v.shaped_elbo_loss(&reps, None, step).double_value(&[]))
        };
        let base = with(&mut vae, 0.0, 0, 0);
        let kl: f64 = kl_units.iter().sum();
        let floored: f64 = kl_units.iter().map(|k| k.max(lambda)).sum();
        assert!((with(&mut vae, lambda, 0, 0) - base - (floored - kl)).abs() < 1e-3, "free bits floor each unit's KL at λ");
        assert!((with(&mut vae, 0.0, 10, 1) - base - (0.2 - 1.0) * kl).abs() < 1e-3, "β = 2/10 at step 1");
    }

    /// The 2D VAE of `vae-checkerboard`, free bits as it ships.
    const VAE_2D: &str = "hidden = [128, 128]\nlatent = 2\nactivation = \"relu\"\nlikelihood = \"gaussian\"\nfree_bits = 1.0";

    /// Posterior collapse is the failure to guard against: on a multimodal 2D set a briefly trained VAE must beat
    /// the best single Gaussian (fitted in closed form to the training data) clearly, with its latents in use.
    #[test]
    fn a_briefly_trained_vae_beats_a_gaussian_on_multimodal_data_with_active_units() {
        tch::manual_seed(0);
        let train = crate::data::toy::generate("8gaussians", 20_000).unwrap();
        let test = crate::data::toy::generate("8gaussians", 2_000).unwrap();
        let (mean, cov) = (train.mean_dim(0, false, Kind::Float), train.transpose(0, 1).cov(1, None::<&Tensor>, None::<&Tensor>));
        let gaussian_nll = -exact_log_p(&test, &mean.to_kind(Kind::Double), &cov.to_kind(Kind::Double)).mean(None).double_value(&[]) ;
        let gaussian_nll = gaussian_nll - 0.5 * crate::dist::normal::LN_2PI; // exact_log_p's constant is for D = 3

        let vs = nn::VarStore::new(Device::Cpu);
        let p: VaeParams = toml::from_str(VAE_2D).unwrap();
        let vae = Vae::new(&vs.root(), &[2], &p).unwrap();
        let mut opt = nn::OptimizerConfig::build(nn::Adam::default(), &vs, 2e-3).unwrap();
        for step in 0..1500 {
            let idx = Tensor::randint(20_000, [256], (Kind::Int64, Device::Cpu));
            let loss = vae.loss(&train.index_select(0, &idx), step);
            opt.backward_step(&loss);
        }
        let nll = tch::no_grad(|| -vae.model.iwbo(&test, 100, ROWS).mean(None).double_value(&[]));
        let active = tch::no_grad(|| vae.collapse(&test))["active_units"].as_i64().unwrap();
        assert!(active >= 1, "posterior collapse: no active unit");
        assert!(nll < gaussian_nll - 0.3, "VAE {nll:.3} nats vs a single Gaussian {gaussian_nll:.3}");
    }
}
