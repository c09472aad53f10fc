//! The stochastic normalizing flow model: RealNVP blocks with a stochastic layer after each (in the generative
//! direction) on u_λ, λ = 1/B, 2/B, ..., 1, trained by a mixture of maximum likelihood and reverse KL.
use super::interp::Tilt;
use super::{AdaptiveMetropolis, Hmc, Interpolated, Langevin, Metropolis};
use crate::context::{Context, ContextSpec};
use crate::dist::energy::{self, Energy, TiltedDoubleWell};
use crate::nets::embed::ContextEncoder;
use crate::dist::StandardNormal;
use crate::flows::build::{realnvp_layers_given, spline_layers, Mixing, RealNvpParams};
use crate::flows::{Conditioner, ScaleBound};
use crate::layer::{Layer, LayerModel};
use crate::model::{LogProb, Model, SamplingCost};
use crate::nets::Activation;
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::rc::Rc;
use tch::{nn, Tensor};

/// Which stochastic layer follows each flow block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stochastic {
    /// A plain flow (exact likelihood).
    None,
    Langevin,
    /// Random-walk Metropolis-Hastings.
    Mh,
    /// Metropolis-Hastings with a learned step size per MC step (the SNF paper's adaptive MC).
    MhAdaptive,
    Hmc,
}

/// The couplings of each flow block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CouplingKind {
    /// RealNVP affine couplings.
    Affine,
    /// Rational-quadratic spline couplings (NSF) with `bins` bins on [-tail_bound, tail_bound].
    Spline,
}

/// Where the stochastic layers sample, λ of u_λ = (1 - λ) u_prior + λ u_target after flow block b of B (generative
/// order).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LambdaSchedule {
    /// λ = (b + 1)/B: 1/B, 2/B, ..., 1.
    Even,
    /// The SNF paper's code: λ = b/(B - 1) after the inner blocks (0, 1/2 for B = 3) and the target (λ = 1) after the
    /// last one.
    Paper,
}

/// `kind = "snf"`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SnfParams {
    /// The energy the stochastic layers sample and reverse KL trains against: doublewell | gmm | rings.
    pub target: String,
    pub n_blocks: usize,
    pub couplings_per_block: usize,
    pub hidden: Vec<i64>,
    pub activation: Activation,
    pub scale_bound: ScaleBound,
    /// The couplings' networks: `shared` (one MLP, identity at start) or `separate` (the SNF paper's RNVP).
    pub conditioner: Conditioner,
    pub stochastic: Stochastic,
    /// MCMC steps per stochastic layer.
    pub mc_steps: usize,
    /// MH proposal σ, Langevin ε, or HMC's initial ε.
    pub step_size: f64,
    /// HMC leapfrog steps.
    pub leapfrog: usize,
    /// Weight α of reverse KL in (1 - α) ML + α KL, from step `kl_start` on (before it: pure ML).
    pub kl_weight: f64,
    pub kl_start: i64,
    /// Couplings of the flow blocks: affine (RealNVP) or spline (NSF).
    pub coupling: CouplingKind,
    /// Spline couplings: bins and tail bound.
    pub bins: i64,
    pub tail_bound: f64,
    /// A stochastic layer on the prior (λ = 0) before the first flow block, as the paper's "+MC" models have.
    pub mc_prior: bool,
    pub lambdas: LambdaSchedule,
}

impl Default for SnfParams {
    fn default() -> Self {
        SnfParams {
            target: Default::default(),
            n_blocks: 3,
            couplings_per_block: 2,
            hidden: vec![64, 64],
            activation: Activation::Relu,
            scale_bound: ScaleBound::Tanh,
            conditioner: Default::default(),
            stochastic: Stochastic::None,
            mc_steps: 20,
            step_size: 0.25,
            leapfrog: 5,
            kl_weight: Default::default(),
            kl_start: Default::default(),
            coupling: CouplingKind::Affine,
            bins: 20,
            tail_bound: 3.0,
            mc_prior: Default::default(),
            lambdas: LambdaSchedule::Even,
        }
    }
}

/// A stochastic normalizing flow (or, with `stochastic = "none"`, a flow) with an energy target.
#[derive(Debug)]
pub struct Snf {
    pub flow: LayerModel,
    pub target: Rc<dyn Energy>,
    pub params: SnfParams,
    /// A conditional SNF p(x | c) on the tilted double well: h(c) for the couplings, and the tilt c every
    /// stochastic layer's energy reads.
    pub condition: Option<Condition>,
}

/// What a conditional SNF adds: the context encoder of its couplings, the bound tilt of its stochastic layers'
/// target, and the tilted energy for the diagnostics' exact log Z(c).
#[derive(Debug)]
pub struct Condition {
    pub encoder: ContextEncoder,
    pub tilt: Rc<Tilt>,
    pub energy: TiltedDoubleWell,
}

impl Snf {
    pub fn new(path: &nn::Path, dim: i64, p: &SnfParams) -> Result<Snf> {
        Self::new_given(path, dim, p, None)
    }

    /// The SNF of p(x | c) for a target that takes the context as its parameter: `target = "doublewell"` tilted by
    /// c, u(x; c) = x1⁴ − 6 x1² − c x1 + ½|x_rest|² (one context column; the data set `doublewell-tilted`). The
    /// couplings read h(c) beside x_a, each stochastic layer samples u_λ(x; c) of its row's c.
    pub fn new_given(path: &nn::Path, dim: i64, p: &SnfParams, context: Option<&ContextSpec>) -> Result<Snf> {
        anyhow::ensure!(p.n_blocks > 0, "model.n_blocks must be at least 1");
        anyhow::ensure!((0.0..=1.0).contains(&p.kl_weight), "model.kl_weight must be in [0, 1], got {}", p.kl_weight);
        anyhow::ensure!(p.step_size > 0.0, "model.step_size must be positive, got {}", p.step_size);
        anyhow::ensure!(p.bins >= 2 && p.tail_bound > 0.0, "model.bins must be at least 2 and model.tail_bound positive");
        anyhow::ensure!(!p.target.is_empty(), "model.target is required: the energy the flow samples (doublewell | gmm | rings)");
        let target: Rc<dyn Energy> = Rc::from(energy::by_name(&p.target, dim)?);
        let condition = match context {
            None => None,
            Some(spec) => {
                anyhow::ensure!(
                    p.target == "doublewell",
                    "model.target = `{}` takes no parameter; a conditional SNF needs a parametric target: doublewell, tilted by the context c (u(x; c) = x1^4 - 6 x1^2 - c x1 + |x_rest|^2 / 2; data.name = \"doublewell-tilted\")",
                    p.target
                );
                anyhow::ensure!(
                    *spec == (ContextSpec::Vector { width: 1 }),
                    "a conditional SNF reads one context column, the tilt c of its double-well target; the data has {}",
                    spec.describe()
                );
                anyhow::ensure!(p.coupling == CouplingKind::Affine, "model.coupling = \"spline\" has no conditional form in an SNF yet; use affine");
                let encoder = ContextEncoder::new(&path.sub("context"), *spec, None)?;
                Some(Condition { encoder, tilt: Rc::new(Tilt::default()), energy: TiltedDoubleWell::new(dim) })
            }
        };
        let e = condition.as_ref().map_or(0, |c| c.encoder.width());
        let tilt = condition.as_ref().map(|c| c.tilt.clone());
        let block = RealNvpParams {
            n_layers: p.couplings_per_block,
            hidden: p.hidden.clone(),
            activation: p.activation,
            scale_bound: p.scale_bound,
            conditioner: p.conditioner,
            actnorm: false,
            batchnorm: false,
            mixing: Mixing::Alternate,
            base: Default::default(),
            context_embed: None,
        };
        let blocks = p.n_blocks;
        let lambda_after = |b: usize| match p.lambdas {
            _ if b + 1 == blocks => 1.0,
            LambdaSchedule::Even => (b + 1) as f64 / blocks as f64,
            LambdaSchedule::Paper => b as f64 / (blocks - 1) as f64,
        };
        let stochastic = |lambda: f64, bp: &nn::Path| -> Option<Box<dyn Layer>> {
            let u = Interpolated { target: target.clone(), lambda, tilt: tilt.clone() };
            match p.stochastic {
                Stochastic::None => None,
                Stochastic::Langevin => Some(Box::new(Langevin { u, eps: p.step_size, steps: p.mc_steps })),
                Stochastic::Mh => Some(Box::new(Metropolis { u, sigma: p.step_size, steps: p.mc_steps })),
                Stochastic::MhAdaptive => Some(Box::new(AdaptiveMetropolis::new(&bp.sub("amc"), u, p.step_size, p.mc_steps))),
                Stochastic::Hmc => Some(Box::new(Hmc::new(&bp.sub("hmc"), u, p.step_size, p.leapfrog, p.mc_steps))),
            }
        };
        // Data side first: the stochastic layer after flow block b, then block b, for b = B-1 down to 0; then the
        // prior's layer (λ = 0) when asked.
        let mut layers: Vec<Box<dyn Layer>> = Vec::new();
        for b in (0..blocks).rev() {
            let bp = path.sub(format!("block{b}"));
            layers.extend(stochastic(lambda_after(b), &bp));
            match p.coupling {
                CouplingKind::Affine => layers.extend(realnvp_layers_given(&bp.sub("flow"), dim, &block, e)?),
                CouplingKind::Spline => {
                    layers.extend(spline_layers(&bp.sub("flow"), dim, p.couplings_per_block, &p.hidden, p.activation, p.bins, p.tail_bound)?)
                }
            }
        }
        if p.mc_prior {
            layers.extend(stochastic(0.0, &path.sub("prior")));
        }
        let base = Box::new(StandardNormal { shape: vec![dim], device: path.device() });
        let family = if p.stochastic == Stochastic::None { crate::model::Family::Flow } else { crate::model::Family::Snf };
        Ok(Snf { flow: LayerModel { layers, base, family }, target, params: p.clone(), condition })
    }

    /// Generative samples at the rows' tilts `c` [n, 1] with their path log-weights against u(x; c): log w =
    /// -u(x; c) - log p_Z(z) + Σ ΔS, so E\[w] = Z(c).
    pub fn log_weights_given(&self, c: &Tensor) -> (Tensor, Tensor) {
        let cond = self.condition.as_ref().expect("log_weights_given of a conditional SNF");
        let h = cond.encoder.forward(&Context::Vector(c.shallow_clone()));
        let _bound = cond.tilt.bind(c);
        let z = self.flow.base.sample(c.size()[0]);
        let (x, delta_s) = self.flow.inverse_given(&z, &h);
        let log_w = -(self.target.energy(&x) + cond.tilt.energy(&x)) - self.flow.base.log_prob(&z) + delta_s;
        (x, log_w)
    }

    /// The tilts of a vector context (the raw c, not its standardised features).
    fn tilts_of(c: &Context) -> Tensor {
        match c {
            Context::Vector(v) => v.shallow_clone(),
            _ => panic!("a conditional SNF reads a vector context (the caller checks contexts first)"),
        }
    }

    /// -log p̂(x | c) per row through the layers, the tilt bound.
    fn nll_given(&self, x: &Tensor, c: &Context) -> Tensor {
        let cond = self.condition.as_ref().expect("a conditional SNF");
        let h = cond.encoder.forward(c);
        let _bound = cond.tilt.bind(&Self::tilts_of(c));
        let (z, v) = self.flow.forward_given(x, &h);
        -(self.flow.base.log_prob(&z) + v)
    }

    /// Generative samples with their path log-weights log w = -u(x) - log p_Z(z) + Σ ΔS (Wu et al., eq. 9, with the
    /// prior normalised), so E\[w] = Z of the target.
    pub fn log_weights(&self, n: i64) -> (Tensor, Tensor) {
        let z = self.flow.base.sample(n);
        let (x, delta_s) = self.flow.inverse(&z);
        let log_w = -self.target.energy(&x) - self.flow.base.log_prob(&z) + delta_s;
        (x, log_w)
    }

    /// Reverse KL of the paths up to log Z: E[-log w] over `n` generative samples.
    fn kl_loss(&self, n: i64) -> Tensor {
        -self.log_weights(n).1.mean(None)
    }
}

impl Model for Snf {
    /// (1 - α) E_data[-log p̂(x)] + α E_z[-log w] with α = kl_weight from `kl_start` on (0 before).
    fn loss(&self, x: &Tensor, step: i64) -> Tensor {
        let alpha = if step >= self.params.kl_start { self.params.kl_weight } else { 0.0 };
        let n = x.size()[0];
        match alpha {
            a if a <= 0.0 => self.flow.loss(x, step),
            a if a >= 1.0 => self.kl_loss(n),
            a => self.flow.loss(x, step) * (1.0 - a) + self.kl_loss(n) * a,
        }
    }

    fn log_prob(&self, x: &Tensor) -> LogProb {
        self.flow.log_prob(x)
    }

    fn sample(&self, n: i64) -> Tensor {
        self.flow.sample(n)
    }

    fn sampling_cost(&self) -> SamplingCost {
        self.flow.sampling_cost()
    }

    fn family(&self) -> crate::model::Family {
        self.flow.family
    }

    fn set_training(&self, on: bool) {
        self.flow.set_training(on);
    }

    fn diagnostics(&self, n: i64, repeats: i64) -> Option<serde_json::Value> {
        match &self.condition {
            None => Some(super::metrics::energy_report(self, n, repeats)),
            Some(cond) => Some(super::metrics::conditional_energy_report(self, &cond.energy, n, repeats)),
        }
    }

    fn context_spec(&self) -> Option<ContextSpec> {
        self.condition.as_ref().map(|c| c.encoder.spec)
    }

    /// (1 - α) E_data[-log p̂(x | c)] + α E_z[-log w(c)] with the batch's tilts.
    fn loss_given(&self, x: &Tensor, c: &Context, step: i64) -> Tensor {
        if c.is_none() {
            return self.loss(x, step);
        }
        let alpha = if step >= self.params.kl_start { self.params.kl_weight } else { 0.0 };
        let kl = || -self.log_weights_given(&Self::tilts_of(c)).1.mean(None);
        match alpha {
            a if a <= 0.0 => self.nll_given(x, c).mean(None),
            a if a >= 1.0 => kl(),
            a => self.nll_given(x, c).mean(None) * (1.0 - a) + kl() * a,
        }
    }

    fn log_prob_given(&self, x: &Tensor, c: &Context) -> LogProb {
        if c.is_none() {
            return self.log_prob(x);
        }
        LogProb { value: -self.nll_given(x, c), kind: self.flow.kind() }
    }

    fn data_init_given(&self, x: &Tensor, c: &Context) {
        if let Some(cond) = &self.condition {
            cond.encoder.data_init(c);
        }
        self.data_init(x)
    }

    fn sample_given(&self, n: i64, c: &Context) -> Tensor {
        if c.is_none() {
            return self.sample(n);
        }
        tch::no_grad(|| self.log_weights_given(&Self::tilts_of(c)).0)
    }
}

impl crate::model::ModelParams for SnfParams {
    fn build(&self, path: &nn::Path, shape: &[i64]) -> Result<Box<dyn Model>> {
        Ok(Box::new(Snf::new(path, crate::model::vector_dim("snf", shape)?, self)?))
    }

    fn build_conditional(&self, path: &nn::Path, shape: &[i64], context: &ContextSpec) -> Result<Box<dyn Model>> {
        Ok(Box::new(Snf::new_given(path, crate::model::vector_dim("snf", shape)?, self, Some(context))?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dist::energy::Gaussian;
    use tch::{Device, Kind};

    fn params(stochastic: &str) -> SnfParams {
        // Unadjusted Langevin on a quartic energy diverges for large steps; 0.01 is the experiments' setting.
        let step = if stochastic == "langevin" { 0.01 } else { 0.1 };
        toml::from_str(&format!(
            "target = \"doublewell\"\nn_blocks = 2\nhidden = [16]\nstochastic = \"{stochastic}\"\nmc_steps = 3\nstep_size = {step}\nkl_weight = 0.5\nkl_start = 1"
        ))
        .unwrap()
    }

    /// An SNF whose energy is a Gaussian (closed-form Z), with perturbed flow weights.
    fn gaussian_snf(stochastic: &str, vs: &nn::VarStore) -> Snf {
        let mut snf = Snf::new(&vs.root(), 2, &params(stochastic)).unwrap();
        let target: Rc<dyn Energy> = Rc::new(Gaussian { mean: vec![1.0, -0.5], std: 0.7 });
        // Re-target every stochastic layer: rebuild with the Gaussian in place of the double well.
        let mut p = params(stochastic);
        p.target = "doublewell".into();
        let mut layers: Vec<Box<dyn Layer>> = Vec::new();
        for (b, layer) in snf.flow.layers.drain(..).enumerate() {
            let lambda = if b == 0 { 1.0 } else { 0.5 };
            let u = Interpolated { target: target.clone(), lambda, tilt: None };
            let replaced: Box<dyn Layer> = match stochastic {
                "mh" if layer.kind() == crate::layer::LayerKind::Stochastic => Box::new(Metropolis { u, sigma: 0.4, steps: 3 }),
                "mh_adaptive" if layer.kind() == crate::layer::LayerKind::Stochastic => {
                    Box::new(AdaptiveMetropolis::new(&vs.root().sub(format!("a{b}")), u, 0.2, 3))
                }
                "langevin" if layer.kind() == crate::layer::LayerKind::Stochastic => Box::new(Langevin { u, eps: 0.05, steps: 3 }),
                "hmc" if layer.kind() == crate::layer::LayerKind::Stochastic => {
                    Box::new(Hmc::new(&vs.root().sub(format!("t{b}")), u, 0.2, 3, 2))
                }
                _ => layer,
            };
            layers.push(replaced);
        }
        snf.flow.layers = layers;
        snf.target = target;
        tch::no_grad(|| {
            for mut v in vs.trainable_variables() {
                let _ = v.g_add_(&(v.randn_like() * 0.1));
            }
        });
        snf
    }

    #[test]
    fn path_weights_are_unbiased_for_z() {
        for stochastic in ["none", "mh", "langevin", "hmc", "mh_adaptive"] {
            tch::manual_seed(21);
            let vs = nn::VarStore::new(Device::Cpu);
            let snf = gaussian_snf(stochastic, &vs);
            let z = snf.target.log_z().exp();
            let (x, log_w) = tch::no_grad(|| snf.log_weights(200_000));
            let w = log_w.to_kind(Kind::Double).exp();
            let n = w.size()[0] as f64;
            let (mean, std) = (w.mean(None).double_value(&[]), w.std(true).double_value(&[]));
            let se = std / n.sqrt();
            assert!((mean - z).abs() < 4.0 * se, "{stochastic}: E[w] = {mean} ± {se}, Z = {z}");
            // Reweighted mode weight against the closed form.
            let left = x.select(1, 0).lt(0.0).to_kind(Kind::Double);
            let p_hat = (&left * &w).sum(Kind::Double).double_value(&[]) / w.sum(Kind::Double).double_value(&[]);
            let p = snf.target.mode_weight();
            assert!((p_hat - p).abs() < 0.01, "{stochastic}: reweighted P(x1<0) {p_hat} vs {p}");
        }
    }

    #[test]
    fn mixed_loss_reaches_every_parameter_and_switches_at_kl_start() {
        for stochastic in ["mh", "hmc", "langevin"] {
            tch::manual_seed(5);
            let vs = nn::VarStore::new(Device::Cpu);
            let snf = Snf::new(&vs.root(), 2, &params(stochastic)).unwrap();
            tch::no_grad(|| {
                for mut v in vs.trainable_variables() {
                    let _ = v.g_add_(&(v.randn_like() * 0.1));
                }
            });
            let x = snf.target.sample(64);
            tch::manual_seed(9);
            let ml_only = snf.loss(&x, 0).double_value(&[]);
            tch::manual_seed(9);
            let ml = snf.flow.loss(&x, 0).double_value(&[]);
            assert!((ml_only - ml).abs() < 1e-5, "{stochastic}: before kl_start the loss is ML only: {ml_only} vs {ml}");
            snf.loss(&x, 1).backward();
            for (name, v) in vs.variables() {
                let g = v.grad().abs().sum(None).double_value(&[]);
                assert!(g.is_finite() && g > 0.0, "{stochastic}: gradient at {name} is {g}");
            }
        }
    }

    #[test]
    fn kind_is_a_bound_with_stochastic_layers_and_exact_without() {
        let vs = nn::VarStore::new(Device::Cpu);
        let x = Tensor::zeros([3, 2], (Kind::Float, Device::Cpu));
        assert_eq!(Snf::new(&vs.root().sub("a"), 2, &params("mh")).unwrap().log_prob(&x).kind, crate::model::Kind::LowerBound);
        assert_eq!(Snf::new(&vs.root().sub("b"), 2, &params("none")).unwrap().log_prob(&x).kind, crate::model::Kind::Exact);
    }
}
