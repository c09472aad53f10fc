//! RealNVP and NICE models for vector data, from their hyper-parameters (the `[model]` section of an experiment).
use super::batchnorm::BatchNorm;
use super::{ActNorm, Conditioner, Coupling, Permutation, Reverse, ScaleBound, Transformer};
use crate::dist::{DiagNormal, Distribution, ResampledGaussian, ResampledParams, StandardNormal};
use crate::layer::{Layer, LayerModel};
use super::conditional::ConditionalFlow;
use crate::context::ContextSpec;
use crate::nets::embed::ContextEncoder;
use crate::nets::Activation;
use anyhow::Result;
use serde::{Deserialize, Serialize};
use tch::nn;

/// How features are mixed between couplings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mixing {
    /// Couplings alternate which half conditions the other (no extra layer).
    Alternate,
    /// A `Reverse` layer between couplings.
    Reverse,
    /// A fixed random `Permutation` between couplings.
    Random,
    /// A learned LU-decomposed linear layer between couplings (as in neural spline flows and Glow).
    Lu,
}

impl Mixing {
    /// The layer between two couplings on `features` features (channels, on images), or None for `alternate`, where
    /// the couplings swap halves instead; `perm` and `lu` name the variables of the permutation and the LU layer.
    pub fn between(self, features: i64, perm: &nn::Path, lu: &nn::Path) -> Option<Box<dyn Layer>> {
        match self {
            Mixing::Alternate => None,
            Mixing::Reverse => Some(Box::new(Reverse)),
            Mixing::Random => Some(Box::new(Permutation::new(perm, features))),
            Mixing::Lu => Some(Box::new(super::lu::LuLinear::new(lu, features))),
        }
    }

    /// Whether the `i`-th coupling transforms the other half (odd couplings, with `alternate` mixing).
    pub fn parity(self, i: usize) -> bool {
        self == Mixing::Alternate && i % 2 == 1
    }
}

/// The base distribution p(z).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Base {
    StandardNormal,
    DiagNormal,
    /// A Gaussian mixture with learned weights, means and diagonal scales (`base_components` of them).
    Gmm,
    /// N(0, I) resampled by a learned acceptance with truncation (Stimper et al.), set in `[model.base.resampled]`.
    Resampled,
    /// Conditional models only: N(μ(h), diag σ(h)²) with (μ, log σ) from an MLP of the context features h(c).
    ConditionalNormal,
}

/// `[model.base]`: a vector flow's base distribution p(z).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BaseParams {
    pub kind: Base,
    /// Components of the `gmm` base.
    pub components: i64,
    /// `[model.base.resampled]`: settings of the `resampled` base.
    pub resampled: ResampledParams,
}

impl Default for BaseParams {
    fn default() -> Self {
        BaseParams { kind: Base::StandardNormal, components: 8, resampled: ResampledParams::default() }
    }
}

/// `kind = "realnvp"`: affine couplings (Dinh et al. 2017).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RealNvpParams {
    /// Number of coupling layers.
    pub n_layers: usize,
    /// Hidden widths of each coupling's MLP.
    pub hidden: Vec<i64>,
    pub activation: Activation,
    pub scale_bound: ScaleBound,
    /// One MLP per coupling starting at the identity (`shared`), or the SNF paper's separate shift and scale MLPs.
    pub conditioner: Conditioner,
    /// An ActNorm (data-initialised) before every coupling.
    pub actnorm: bool,
    /// A BatchNorm bijection after every coupling but the last (RealNVP §3.7; running statistics in evaluation).
    pub batchnorm: bool,
    pub mixing: Mixing,
    pub base: BaseParams,
    /// Conditional models (data with a context): the width of the context features h(c); unset, a vector context
    /// is read as it is and a class gets a learned 16-wide embedding.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context_embed: Option<i64>,
}

impl Default for RealNvpParams {
    /// The defaults of `kind = "realnvp"` (every key of an empty `[model]` table).
    fn default() -> Self {
        RealNvpParams {
            n_layers: 8,
            hidden: vec![64, 64],
            activation: Activation::Relu,
            scale_bound: ScaleBound::Tanh,
            conditioner: Conditioner::Shared,
            actnorm: false,
            batchnorm: false,
            mixing: Mixing::Alternate,
            base: BaseParams::default(),
            context_embed: None,
        }
    }
}

/// `kind = "nice"`: additive couplings followed by a diagonal scaling (Dinh et al. 2015, §3.3); the scaling is an
/// ActNorm, so it is also data-initialised.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NiceParams {
    pub n_layers: usize,
    pub hidden: Vec<i64>,
    pub activation: Activation,
    pub mixing: Mixing,
    pub base: BaseParams,
}

impl Default for NiceParams {
    fn default() -> Self {
        let r = RealNvpParams::default();
        NiceParams { n_layers: r.n_layers, hidden: r.hidden, activation: r.activation, mixing: r.mixing, base: r.base }
    }
}

/// `kind = "nsf"`: rational-quadratic spline couplings with linear tails (Durkan et al. 2019, RQ-NSF (C)).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NsfParams {
    pub n_layers: usize,
    pub hidden: Vec<i64>,
    pub activation: Activation,
    /// K, the number of spline bins.
    pub bins: i64,
    /// B: the spline acts on [-B, B], the identity outside.
    pub bound: f64,
    pub actnorm: bool,
    pub mixing: Mixing,
    pub base: BaseParams,
    /// Conditional models (data with a context): the width of the context features h(c); unset, a vector context
    /// is read as it is and a class gets a learned 16-wide embedding.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context_embed: Option<i64>,
}

impl Default for NsfParams {
    /// The defaults of `kind = "nsf"`.
    fn default() -> Self {
        let r = RealNvpParams::default();
        NsfParams { n_layers: r.n_layers, hidden: r.hidden, activation: r.activation, bins: 8, bound: 4.0, actnorm: false, mixing: r.mixing, base: r.base, context_embed: None }
    }
}

/// Which pass of an autoregressive flow is cheap.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Masked autoregressive flow: density in one pass, sampling in D.
    Maf,
    /// Inverse autoregressive flow: sampling in one pass, density in D.
    Iaf,
}

/// The element-wise transformer of `kind = "maf"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArTransformer {
    Affine,
    /// Rational-quadratic spline (`bins`, `bound`), as in RQ-NSF (AR).
    Spline,
}

/// `kind = "maf"`: affine or spline MADE layers with the order reversed between layers (Papamakarios et al. 2017), or IAF.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MafParams {
    pub n_layers: usize,
    /// Hidden widths of each MADE.
    pub hidden: Vec<i64>,
    pub activation: Activation,
    pub direction: Direction,
    pub transformer: ArTransformer,
    /// A BatchNorm bijection between MADE layers (MAF §3.4; running statistics in evaluation).
    pub batchnorm: bool,
    /// Spline bins K and bound B (with `transformer = "spline"`).
    pub bins: i64,
    pub bound: f64,
    pub actnorm: bool,
    pub base: BaseParams,
    /// Data in [0, 1] (flattened images): start with the logit preprocessing y = logit(α + (1 - 2α)x) with this α.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logit_alpha: Option<f64>,
    /// Conditional models (data with a context): the width of the context features h(c); unset, a vector context
    /// is read as it is and a class gets a learned 16-wide embedding.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context_embed: Option<i64>,
}

impl Default for MafParams {
    fn default() -> Self {
        let n = NsfParams::default();
        MafParams {
            n_layers: n.n_layers,
            hidden: n.hidden,
            activation: n.activation,
            direction: Direction::Maf,
            transformer: ArTransformer::Affine,
            batchnorm: false,
            bins: n.bins,
            bound: n.bound,
            actnorm: false,
            base: n.base,
            logit_alpha: None,
            context_embed: None,
        }
    }
}

/// A MAF (or IAF) on [batch, dim] data.
pub fn maf(path: &nn::Path, dim: i64, p: &MafParams) -> Result<LayerModel> {
    let layers = maf_layers(path, dim, p, 0)?;
    Ok(LayerModel { layers, base: base(path, dim, &p.base)?, family: crate::model::Family::Flow })
}

/// The layers of a MAF whose MADEs also read `context` context features (0: unconditional).
fn maf_layers(path: &nn::Path, dim: i64, p: &MafParams, context: i64) -> Result<Vec<Box<dyn Layer>>> {
    use super::made::{ArTransform, Autoregressive, MaskedAutoregressive};
    anyhow::ensure!(p.n_layers > 0, "model.n_layers must be at least 1");
    let kind = match p.direction {
        Direction::Maf => Autoregressive::Maf,
        Direction::Iaf => Autoregressive::Iaf,
    };
    let mut layers: Vec<Box<dyn Layer>> = Vec::new();
    if let Some(alpha) = p.logit_alpha {
        layers.push(Box::new(super::logit::Logit::new(alpha)?));
    }
    for i in 0..p.n_layers {
        let lp = path.sub("flow").sub(format!("layer{i}"));
        if p.actnorm {
            layers.push(Box::new(ActNorm::new(&lp.sub("actnorm"), dim)));
        }
        let transform = match p.transformer {
            ArTransformer::Affine => ArTransform::Affine,
            ArTransformer::Spline => ArTransform::Spline { bins: p.bins, bound: p.bound },
        };
        layers.push(Box::new(MaskedAutoregressive::conditional(&lp, dim, &p.hidden, p.activation, kind, transform, context)?));
        if i + 1 < p.n_layers {
            if p.batchnorm {
                layers.push(Box::new(BatchNorm::new(&lp.sub("batchnorm"), dim)));
            }
            layers.push(Box::new(Reverse));
        }
    }
    Ok(layers)
}

/// The layer of `kind = "planar"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlanarTransform {
    Planar,
    Radial,
}

/// `kind = "planar"`: a stack of planar or radial layers (Rezende & Mohamed 2015) in the density direction.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PlanarParams {
    pub n_layers: usize,
    pub transform: PlanarTransform,
    pub base: BaseParams,
}

impl Default for PlanarParams {
    fn default() -> Self {
        PlanarParams { n_layers: 32, transform: PlanarTransform::Planar, base: BaseParams::default() }
    }
}

/// A planar (or radial) flow on [batch, dim] data.
pub fn planar(path: &nn::Path, dim: i64, p: &PlanarParams) -> Result<LayerModel> {
    use super::planar::{Planar, Radial};
    anyhow::ensure!(p.n_layers > 0, "model.n_layers must be at least 1");
    let layers: Vec<Box<dyn Layer>> = (0..p.n_layers)
        .map(|i| {
            let lp = path.sub("flow").sub(format!("layer{i}"));
            match p.transform {
                PlanarTransform::Planar => Box::new(Planar::new(&lp, dim)) as Box<dyn Layer>,
                PlanarTransform::Radial => Box::new(Radial::new(&lp, dim)),
            }
        })
        .collect();
    Ok(LayerModel { layers, base: base(path, dim, &p.base)?, family: crate::model::Family::Flow })
}

/// What a stack of couplings needs, whichever coupling it is.
struct Stack<'a> {
    n_layers: usize,
    hidden: &'a [i64],
    activation: Activation,
    transformer: Transformer,
    actnorm: bool,
    batchnorm: bool,
    mixing: Mixing,
    conditioner: Conditioner,
    /// Width of the context features every conditioner also reads (0: unconditional).
    context: i64,
}

fn couplings(path: &nn::Path, dim: i64, s: &Stack) -> Result<Vec<Box<dyn Layer>>> {
    anyhow::ensure!(s.n_layers > 0, "model.n_layers must be at least 1");
    let mut layers: Vec<Box<dyn Layer>> = Vec::new();
    for i in 0..s.n_layers {
        let p = path.sub(format!("layer{i}"));
        if s.actnorm {
            layers.push(Box::new(ActNorm::new(&p.sub("actnorm"), dim)));
        }
        let parity = s.mixing.parity(i);
        layers.push(Box::new(Coupling::conditional(&p.sub("coupling"), dim, s.hidden, s.activation, s.transformer, parity, s.conditioner, s.context)?));
        if i + 1 < s.n_layers {
            if s.batchnorm {
                layers.push(Box::new(BatchNorm::new(&p.sub("batchnorm"), dim)));
            }
            layers.extend(s.mixing.between(dim, &p.sub("perm"), &p.sub("lu")));
        }
    }
    Ok(layers)
}

/// The base distribution a flow's parameters name.
pub fn base(path: &nn::Path, dim: i64, p: &BaseParams) -> Result<Box<dyn Distribution>> {
    Ok(match p.kind {
        Base::Gmm => Box::new(crate::dist::MixtureBase::new(&path.sub("base"), p.components, dim)?),
        Base::Resampled => Box::new(ResampledGaussian::new(&path.sub("base"), dim, &p.resampled)?),
        Base::StandardNormal => Box::new(StandardNormal { shape: vec![dim], device: path.device() }),
        Base::DiagNormal => Box::new(DiagNormal::new(&path.sub("base"), &[dim])),
        Base::ConditionalNormal => anyhow::bail!("model.base.kind = \"conditional_normal\" needs data with a context (data.context_columns, data.context_path or data.context)"),
    })
}

/// The base of a conditional flow: `conditional_normal` reads h(c) of width `context`; every other base is p(z).
fn conditional_base(path: &nn::Path, dim: i64, p: &BaseParams, context: i64, hidden: &[i64]) -> Result<Box<dyn Distribution>> {
    match p.kind {
        Base::ConditionalNormal => Ok(Box::new(crate::dist::ConditionalNormal::new(&path.sub("base"), context, dim, hidden)?)),
        _ => base(path, dim, p),
    }
}

/// A conditional flow from the layers `make(E)` builds for context features of width E.
fn conditional_flow(
    path: &nn::Path,
    dim: i64,
    spec: &ContextSpec,
    embed: Option<i64>,
    base_params: &BaseParams,
    hidden: &[i64],
    make: impl FnOnce(i64) -> Result<Vec<Box<dyn Layer>>>,
) -> Result<Box<dyn crate::model::Model>> {
    let encoder = ContextEncoder::new(&path.sub("context"), *spec, embed)?;
    let e = encoder.width();
    let layers = make(e)?;
    let base = conditional_base(path, dim, base_params, e, hidden)?;
    Ok(Box::new(ConditionalFlow { flow: LayerModel { layers, base, family: crate::model::Family::Flow }, encoder, eval_k: 1 }))
}

/// The layers of a RealNVP stack on [batch, dim] data (no base), for models that compose flows with other layers.
pub fn realnvp_layers(path: &nn::Path, dim: i64, p: &RealNvpParams) -> Result<Vec<Box<dyn Layer>>> {
    realnvp_stack(path, dim, p, 0)
}

/// `realnvp_layers` whose couplings read `context` features beside x_a (0: `realnvp_layers`).
pub fn realnvp_layers_given(path: &nn::Path, dim: i64, p: &RealNvpParams, context: i64) -> Result<Vec<Box<dyn Layer>>> {
    realnvp_stack(path, dim, p, context)
}

fn realnvp_stack(path: &nn::Path, dim: i64, p: &RealNvpParams, context: i64) -> Result<Vec<Box<dyn Layer>>> {
    let stack = Stack {
        n_layers: p.n_layers,
        hidden: &p.hidden,
        activation: p.activation,
        transformer: Transformer::Affine(p.scale_bound),
        actnorm: p.actnorm,
        batchnorm: p.batchnorm,
        mixing: p.mixing,
        conditioner: p.conditioner,
        context,
    };
    couplings(path, dim, &stack)
}

/// `n_layers` rational-quadratic spline couplings (alternating halves) on [batch, dim], without a base: the NSF
/// blocks of a stochastic normalizing flow.
pub fn spline_layers(path: &nn::Path, dim: i64, n_layers: usize, hidden: &[i64], activation: Activation, bins: i64, bound: f64) -> Result<Vec<Box<dyn Layer>>> {
    anyhow::ensure!(bound > 0.0, "the spline bound must be positive, got {bound}");
    let stack = Stack { n_layers, hidden, activation, transformer: Transformer::Spline { bins, bound }, actnorm: false, batchnorm: false, mixing: Mixing::Alternate, conditioner: Conditioner::Shared, context: 0 };
    couplings(path, dim, &stack)
}

/// A RealNVP model on [batch, dim] data.
///
/// ```
/// use relaxflow::{realnvp, Kind, Model, RealNvpParams};
/// use tch::{nn, Device, Tensor};
///
/// let vs = nn::VarStore::new(Device::Cpu);
/// let flow = realnvp(&vs.root(), 2, &RealNvpParams { n_layers: 4, hidden: vec![16], ..Default::default() })?;
/// let x = Tensor::randn([8, 2], (tch::Kind::Float, Device::Cpu));
/// let lp = flow.log_prob(&x);
/// assert_eq!(lp.kind, Kind::Exact); // a flow's log-likelihood is exact (change of variables)
/// assert_eq!(lp.value.size(), vec![8]);
/// # anyhow::Ok(())
/// ```
pub fn realnvp(path: &nn::Path, dim: i64, p: &RealNvpParams) -> Result<LayerModel> {
    let layers = realnvp_layers(&path.sub("flow"), dim, p)?;
    Ok(LayerModel { layers, base: base(path, dim, &p.base)?, family: crate::model::Family::Flow })
}

/// A neural spline flow (coupling) on [batch, dim] data.
pub fn nsf(path: &nn::Path, dim: i64, p: &NsfParams) -> Result<LayerModel> {
    let layers = nsf_layers(&path.sub("flow"), dim, p, 0)?;
    Ok(LayerModel { layers, base: base(path, dim, &p.base)?, family: crate::model::Family::Flow })
}

fn nsf_layers(path: &nn::Path, dim: i64, p: &NsfParams, context: i64) -> Result<Vec<Box<dyn Layer>>> {
    anyhow::ensure!(p.bound > 0.0, "model.bound must be positive, got {}", p.bound);
    let stack = Stack {
        n_layers: p.n_layers,
        hidden: &p.hidden,
        activation: p.activation,
        transformer: Transformer::Spline { bins: p.bins, bound: p.bound },
        actnorm: p.actnorm,
        batchnorm: false,
        mixing: p.mixing,
        conditioner: Conditioner::Shared,
        context,
    };
    couplings(path, dim, &stack)
}

/// A NICE model on [batch, dim] data.
pub fn nice(path: &nn::Path, dim: i64, p: &NiceParams) -> Result<LayerModel> {
    let stack = Stack {
        n_layers: p.n_layers,
        hidden: &p.hidden,
        activation: p.activation,
        transformer: Transformer::Additive,
        actnorm: false,
        batchnorm: false,
        mixing: p.mixing,
        conditioner: Conditioner::Shared,
        context: 0,
    };
    let mut layers = couplings(&path.sub("flow"), dim, &stack)?;
    layers.push(Box::new(ActNorm::new(&path.sub("scaling"), dim)));
    Ok(LayerModel { layers, base: base(path, dim, &p.base)?, family: crate::model::Family::Flow })
}

impl crate::model::ModelParams for RealNvpParams {
    fn build(&self, path: &nn::Path, shape: &[i64]) -> Result<Box<dyn crate::model::Model>> {
        Ok(Box::new(realnvp(path, crate::model::vector_dim("realnvp", shape)?, self)?))
    }
    fn build_conditional(&self, path: &nn::Path, shape: &[i64], spec: &ContextSpec) -> Result<Box<dyn crate::model::Model>> {
        let dim = crate::model::vector_dim("realnvp", shape)?;
        conditional_flow(path, dim, spec, self.context_embed, &self.base, &self.hidden, |e| realnvp_stack(&path.sub("flow"), dim, self, e))
    }
}

impl crate::model::ModelParams for NiceParams {
    fn build(&self, path: &nn::Path, shape: &[i64]) -> Result<Box<dyn crate::model::Model>> {
        Ok(Box::new(nice(path, crate::model::vector_dim("nice", shape)?, self)?))
    }
}

impl crate::model::ModelParams for NsfParams {
    fn build(&self, path: &nn::Path, shape: &[i64]) -> Result<Box<dyn crate::model::Model>> {
        Ok(Box::new(nsf(path, crate::model::vector_dim("nsf", shape)?, self)?))
    }
    fn build_conditional(&self, path: &nn::Path, shape: &[i64], spec: &ContextSpec) -> Result<Box<dyn crate::model::Model>> {
        let dim = crate::model::vector_dim("nsf", shape)?;
        conditional_flow(path, dim, spec, self.context_embed, &self.base, &self.hidden, |e| nsf_layers(&path.sub("flow"), dim, self, e))
    }
}

impl crate::model::ModelParams for MafParams {
    fn build(&self, path: &nn::Path, shape: &[i64]) -> Result<Box<dyn crate::model::Model>> {
        Ok(Box::new(maf(path, crate::model::vector_dim("maf", shape)?, self)?))
    }
    fn build_conditional(&self, path: &nn::Path, shape: &[i64], spec: &ContextSpec) -> Result<Box<dyn crate::model::Model>> {
        let dim = crate::model::vector_dim("maf", shape)?;
        conditional_flow(path, dim, spec, self.context_embed, &self.base, &self.hidden, |e| maf_layers(path, dim, self, e))
    }
}

impl crate::model::ModelParams for PlanarParams {
    fn build(&self, path: &nn::Path, shape: &[i64]) -> Result<Box<dyn crate::model::Model>> {
        Ok(Box::new(planar(path, crate::model::vector_dim("planar", shape)?, self)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Kind as LikKind, Model};
    use tch::{Device, Kind, Tensor};

    fn params() -> RealNvpParams {
        toml::from_str("hidden = [16]\nn_layers = 4\nactnorm = true\nmixing = \"random\"\n[base]\nkind = \"diag_normal\"").unwrap()
    }

    #[test]
    fn composed_log_prob_is_exact_and_matches_change_of_variables() {
        tch::manual_seed(3);
        let vs = nn::VarStore::new(Device::Cpu);
        let model = realnvp(&vs.root(), 3, &params()).unwrap();
        let x = Tensor::randn([16, 3], (Kind::Float, Device::Cpu));
        model.data_init(&x);
        let lp = model.log_prob(&x);
        assert_eq!(lp.kind, LikKind::Exact);
        let (z, v) = model.forward(&x);
        let by_hand = model.base.log_prob(&z) + v;
        assert!((lp.value - by_hand).abs().max().double_value(&[]) < 1e-5);
        let (x_back, _) = model.inverse(&z);
        assert!((x_back - x).abs().max().double_value(&[]) < 1e-4);
    }

    #[test]
    fn unknown_model_key_is_rejected_by_name() {
        let err = toml::from_str::<RealNvpParams>("hiden = [16]").unwrap_err().to_string();
        assert!(err.contains("hiden"), "{err}");
    }

    #[test]
    fn nice_is_volume_preserving_up_to_its_scaling() {
        let vs = nn::VarStore::new(Device::Cpu);
        let p: NiceParams = toml::from_str("hidden = [8]\nn_layers = 3").unwrap();
        let model = nice(&vs.root(), 2, &p).unwrap();
        let x = Tensor::randn([5, 2], (Kind::Float, Device::Cpu));
        let (_, v) = model.forward(&x);
        assert!(v.abs().max().double_value(&[]) < 1e-6, "scaling starts at identity, so V = 0");
        assert_eq!(model.sampling_cost().nfe_per_sample, 3);
    }
}
