//! SurVAE flows on vectors (`kind = "survae"`): one surjective (or stochastic) layer in front of a RealNVP stack, and
//! the model's likelihood labelled by the SurVAE bookkeeping: exact when every layer is a bijection or an inference
//! surjection, else a lower bound, evaluated as IWBO(k) with k = `eval_k` (Nielsen et al. 2020, §3.4).
use super::abs::Abs;
use super::augment::Augment;
use super::sort::StochasticPermutation;
use super::fold::{Fold, Folded};
use crate::dist::StandardNormal;
use crate::flows::build::{realnvp_layers, Mixing, RealNvpParams};
use crate::flows::{Conditioner, ScaleBound};
use crate::layer::{Layer, LayerModel};
use crate::model::{Kind, LogProb, Model, SamplingCost};
use crate::nets::Activation;
use anyhow::{ensure, Result};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tch::{nn, Tensor};

/// Rows per pass of IWBO(k).
const ROWS: i64 = 200_000;

/// The layer in front of the flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Surjection {
    /// z = |x| with a learned sign classifier q(s | z); p(z) = Σ_σ p_flow(σ ⊙ z) (`survae::fold`).
    Abs,
    /// z = |x| with q(s | z) = 1/2 per coordinate (V = -D log 2); p(z) as for `abs`.
    AbsFixed,
    /// z = sort(x) (V = -log D!); p(z) = Σ_π p_flow(π z) over the D! orders.
    Sort,
    /// A stochastic permutation of the features (a bound; exact for exchangeable flows).
    Permute,
    /// Pad with `augment` dimensions from a learned q(e | x) (a generative surjection, a bound).
    Augment,
}

/// `kind = "survae"`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SurvaeParams {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub surjection: Option<Surjection>,
    /// RealNVP couplings after the surjection.
    pub n_layers: usize,
    pub hidden: Vec<i64>,
    pub activation: Activation,
    pub scale_bound: ScaleBound,
    /// The couplings' networks: `shared` (one MLP, identity at start) or `separate` (the SNF paper's RNVP).
    pub conditioner: Conditioner,
    /// Hidden widths of the abs sign classifier and of augment's q(e | x).
    pub sign_hidden: Vec<i64>,
    /// Extra dimensions of `surjection = "augment"`.
    pub augment: i64,
    /// Importance samples of IWBO(k) when the likelihood is a bound.
    pub eval_k: i64,
    /// A conditional run: the width of the context embedding the couplings (and augment's q(e | x, c)) read
    /// (default: 16 for classes, a vector context as it is).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context_embed: Option<i64>,
}

impl Default for SurvaeParams {
    fn default() -> Self {
        SurvaeParams {
            surjection: Default::default(),
            n_layers: 8,
            hidden: vec![64, 64],
            activation: Activation::Relu,
            scale_bound: ScaleBound::Tanh,
            conditioner: Default::default(),
            sign_hidden: vec![64, 64],
            augment: 2,
            eval_k: 100,
            context_embed: None,
        }
    }
}

pub struct Survae {
    model: LayerModel,
    eval_k: i64,
}

impl Survae {
    /// The model `p` describes: abs and sort as exact folded models (`survae::fold`), permute and augment as layer
    /// models evaluated by IWBO(eval_k).
    pub fn new(path: &nn::Path, dim: i64, p: &SurvaeParams) -> Result<Box<dyn Model>> {
        ensure!(p.eval_k >= 1, "model.eval_k must be at least 1");
        let Some(surjection) = p.surjection else {
            anyhow::bail!("model.surjection is required: abs | abs_fixed | sort | permute | augment")
        };
        let sp = path.sub("surjection");
        let fold = match surjection {
            Surjection::Abs => Some(Fold::Abs(Abs::new(&sp, dim, Some(&p.sign_hidden))?)),
            Surjection::AbsFixed => Some(Fold::Abs(Abs::new(&sp, dim, None)?)),
            Surjection::Sort => Some(Fold::Sort),
            _ => None,
        };
        let (front, flow_dim): (Vec<Box<dyn Layer>>, i64) = match surjection {
            Surjection::Permute => (vec![Box::new(StochasticPermutation)], dim),
            Surjection::Augment => (vec![Box::new(Augment::new(&sp, dim, p.augment, &p.sign_hidden)?)], dim + p.augment),
            _ => (Vec::new(), dim),
        };
        let mut layers = front;
        layers.extend(realnvp_layers(&path.sub("flow"), flow_dim, &p.flow_params())?);
        let base = Box::new(StandardNormal { shape: vec![flow_dim], device: path.device() });
        let model = LayerModel { layers, base, family: crate::model::Family::Survae };
        Ok(match fold {
            Some(fold) => Box::new(Folded::new(fold, model, dim, crate::model::Family::Survae)?),
            None => Box::new(Survae { model, eval_k: p.eval_k }),
        })
    }

    /// Any layer model (e.g. a multi-scale flow with max pooling or variational dequantization) with this
    /// bookkeeping: exact, or IWBO(eval_k) when a layer makes it a bound.
    pub fn wrap(model: LayerModel, eval_k: i64) -> Self {
        Survae { model, eval_k }
    }
}

impl Model for Survae {
    fn loss(&self, x: &Tensor, _step: i64) -> Tensor {
        -self.model.log_prob(x).value.mean(None)
    }

    /// Exact models: log p(x). Bounded ones: IWBO(eval_k), a lower bound on log p(x) in expectation.
    fn log_prob(&self, x: &Tensor) -> LogProb {
        match self.model.kind() {
            Kind::Exact => self.model.log_prob(x),
            kind => LogProb { value: self.model.iwbo(x, self.eval_k, ROWS), kind },
        }
    }

    fn sample(&self, n: i64) -> Tensor {
        self.model.sample(n)
    }

    fn sampling_cost(&self) -> SamplingCost {
        self.model.sampling_cost()
    }

    fn family(&self) -> crate::model::Family {
        self.model.family
    }

    fn sample_tempered(&self, n: i64, t: f64) -> Option<Tensor> {
        self.model.sample_tempered(n, t)
    }

    fn logit_space_log_prob(&self, x: &Tensor) -> Option<crate::model::LogitSpace> {
        self.model.logit_space_log_prob(x)
    }

    fn data_init(&self, x: &Tensor) {
        self.model.data_init(x)
    }

    fn set_training(&self, on: bool) {
        self.model.set_training(on)
    }

    fn estimator(&self) -> serde_json::Value {
        match self.model.kind() {
            Kind::Exact => json!({ "method": "exact (bijections and inference surjections)" }),
            _ => json!({ "method": "IWBO(k): log (1/k) Σ exp(log p(z_j) + V_j), a lower bound in expectation", "k": self.eval_k }),
        }
    }
}

impl crate::model::ModelParams for SurvaeParams {
    fn build(&self, path: &nn::Path, shape: &[i64]) -> Result<Box<dyn Model>> {
        Survae::new(path, crate::model::vector_dim("survae", shape)?, self)
    }

    /// p(x | c) for `permute` and `augment`: the couplings, and augment's q(e | x, c), read h(c); a lower bound
    /// evaluated as IWBO(eval_k). abs and sort sum the flow over sign / order patterns (`survae::fold`), which has
    /// no conditional form here.
    fn build_conditional(&self, path: &nn::Path, shape: &[i64], context: &crate::ContextSpec) -> Result<Box<dyn Model>> {
        let dim = crate::model::vector_dim("survae", shape)?;
        ensure!(self.eval_k >= 1, "model.eval_k must be at least 1");
        let surjection = match self.surjection {
            Some(s @ (Surjection::Permute | Surjection::Augment)) => s,
            Some(s) => anyhow::bail!("model.surjection = {s:?} has no conditional form (its fold sums the flow over sign or order patterns); a conditional SurVAE flow takes permute or augment"),
            None => anyhow::bail!("model.surjection is required: abs | abs_fixed | sort | permute | augment"),
        };
        let encoder = crate::nets::embed::ContextEncoder::new(&path.sub("context"), *context, self.context_embed)?;
        let e = encoder.width();
        let (front, flow_dim): (Vec<Box<dyn Layer>>, i64) = match surjection {
            Surjection::Augment => (vec![Box::new(Augment::conditional(&path.sub("surjection"), dim, self.augment, &self.sign_hidden, e)?)], dim + self.augment),
            _ => (vec![Box::new(StochasticPermutation)], dim),
        };
        let mut layers = front;
        layers.extend(crate::flows::build::realnvp_layers_given(&path.sub("flow"), flow_dim, &self.flow_params(), e)?);
        let base = Box::new(StandardNormal { shape: vec![flow_dim], device: path.device() });
        let flow = LayerModel { layers, base, family: crate::model::Family::Survae };
        Ok(Box::new(crate::flows::conditional::ConditionalFlow { flow, encoder, eval_k: self.eval_k }))
    }
}

impl SurvaeParams {
    /// The RealNVP stack after the surjection.
    fn flow_params(&self) -> RealNvpParams {
        RealNvpParams {
            n_layers: self.n_layers,
            hidden: self.hidden.clone(),
            activation: self.activation,
            scale_bound: self.scale_bound,
            conditioner: self.conditioner,
            actnorm: false,
            batchnorm: false,
            mixing: Mixing::Alternate,
            base: Default::default(),
            context_embed: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn kinds_follow_the_layers() {
        let vs = nn::VarStore::new(Device::Cpu);
        let build = |s: &str| {
            let p: SurvaeParams = toml::from_str(&format!("surjection = \"{s}\"\nn_layers = 2\nhidden = [8]\neval_k = 3")).unwrap();
            Survae::new(&vs.root().sub(s), 2, &p).unwrap()
        };
        let x = Tensor::randn([5, 2], (tch::Kind::Float, Device::Cpu));
        for (s, kind) in [("abs", Kind::Exact), ("abs_fixed", Kind::Exact), ("sort", Kind::Exact), ("permute", Kind::LowerBound), ("augment", Kind::LowerBound)] {
            let m = build(s);
            let lp = m.log_prob(&x);
            assert_eq!(lp.kind, kind, "{s}");
            assert!(bool::try_from(lp.value.isfinite().all()).unwrap(), "{s}");
            assert_eq!(m.sample(4).size(), vec![4, 2], "{s}");
        }
    }
}
