//! The `Model` trait every family implements, and how far a reported likelihood can be trusted.
use crate::context::{Context, ContextSpec};
use serde::{Deserialize, Serialize};
use tch::Tensor;

/// How far a reported log-likelihood can be trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// The exact log-density (change of variables, inference surjections).
    Exact,
    /// A lower bound on log p(x) (ELBO, IWAE, DDPM VLB): its NLL is an upper bound.
    LowerBound,
    /// A stochastic estimate (Hutchinson trace, importance sampling): report its settings and standard error.
    Estimate,
}

impl Kind {
    /// The combined kind of a sum of terms: exact only when every term is exact; any estimate makes an estimate.
    pub fn combine(self, other: Kind) -> Kind {
        match (self, other) {
            (Kind::Estimate, _) | (_, Kind::Estimate) => Kind::Estimate,
            (Kind::LowerBound, _) | (_, Kind::LowerBound) => Kind::LowerBound,
            _ => Kind::Exact,
        }
    }

    /// A label for tables: how to read the NLL column.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Exact => "exact",
            Kind::LowerBound => "bound",
            Kind::Estimate => "estimate",
        }
    }
}

/// The model families relaxflow compares, in the survey's order (run.json and summary.json write them in lower case).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Flow,
    Survae,
    Vae,
    Snf,
    Diffusion,
    Score,
    Diffflow,
    /// Continuous normalizing flows trained through the ODE (FFJORD).
    Cnf,
    /// Not a generative model: the CNN whose features score image samples.
    Classifier,
}

impl Family {
    pub const ALL: [Family; 9] =
        [Family::Flow, Family::Survae, Family::Vae, Family::Snf, Family::Diffusion, Family::Score, Family::Diffflow, Family::Cnf, Family::Classifier];

    /// The lower-case name written into run folders.
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Flow => "flow",
            Family::Survae => "survae",
            Family::Vae => "vae",
            Family::Snf => "snf",
            Family::Diffusion => "diffusion",
            Family::Score => "score",
            Family::Diffflow => "diffflow",
            Family::Cnf => "cnf",
            Family::Classifier => "classifier",
        }
    }

    /// The family named `name` (as written in a summary), if any.
    pub fn parse(name: &str) -> Option<Family> {
        Family::ALL.into_iter().find(|f| f.as_str() == name)
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// Per-example log-likelihood (nats) together with its kind.
#[derive(Debug)]
pub struct LogProb {
    /// Shape \[batch], in nats.
    pub value: Tensor,
    pub kind: Kind,
}

/// A flow's density in its logit space, for checking bits/dim by hand: y = logit(α + (1-2α)x) and log p_Y(y).
#[derive(Debug)]
pub struct LogitSpace {
    pub alpha: f64,
    /// [batch, event shape...].
    pub y: Tensor,
    /// \[batch], nats.
    pub log_prob_y: Tensor,
}

/// What one sample costs: network evaluations and sampler steps.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SamplingCost {
    /// Network evaluations per sample (a coupling layer's conditioner counts one).
    pub nfe_per_sample: usize,
    /// Sequential steps of the sampler (layers for a flow, time steps for diffusion).
    pub steps: usize,
}

/// A model kind's hyper-parameters: the `[model]` table of an experiment (every key has a default, unknown keys are
/// errors), and how they become a model for data of a given event shape. The registry needs one line per kind:
/// `registry::build_kind::<MyParams>`.
///
/// ```
/// use relaxflow::model::ModelParams;
/// use relaxflow::NsfParams;
/// use tch::{nn, Device};
///
/// // The same struct a TOML `[model]` table parses into; keys left out take their defaults.
/// let p: NsfParams = toml::from_str("n_layers = 2\nbins = 4\n[base]\nkind = \"diag_normal\"")?;
/// assert_eq!(p.hidden, NsfParams::default().hidden);
/// let vs = nn::VarStore::new(Device::Cpu);
/// let model = p.build(&vs.root(), &[3])?;
/// assert_eq!(model.sample(5).size(), vec![5, 3]);
/// assert!(toml::from_str::<NsfParams>("bins = 4\nbinz = 5").is_err(), "unknown keys are errors");
/// # anyhow::Ok(())
/// ```
pub trait ModelParams: serde::de::DeserializeOwned + Serialize + Default {
    /// The model for data of event `shape` (\[D] for vectors, [C, H, W] for images), its variables under `path`.
    fn build(&self, path: &tch::nn::Path, shape: &[i64]) -> anyhow::Result<Box<dyn Model>>;
    /// The conditional model p(x | c) for contexts `context` (see `crate::context`); kinds without a conditional
    /// form say so.
    fn build_conditional(&self, _path: &tch::nn::Path, _shape: &[i64], context: &ContextSpec) -> anyhow::Result<Box<dyn Model>> {
        anyhow::bail!("this model kind has no conditional form yet, so it cannot be trained on data with a context ({})", context.describe())
    }
}

/// The panic of an unconditional model handed a context: the runner and the CLI check contexts against
/// `Model::context_spec` first, so reaching it is a bug.
pub fn expect_unconditional(family: Family, c: &Context) {
    assert!(c.is_none(), "a {family} model without a conditional form was given a context (the caller checks contexts first)");
}

/// The single dimension of vector data, or an error telling how to get it.
pub fn vector_dim(kind: &str, shape: &[i64]) -> anyhow::Result<i64> {
    match shape {
        [d] => Ok(*d),
        _ => anyhow::bail!("model `{kind}` needs vector data, but the dataset has shape {shape:?} (set data.flatten = true)"),
    }
}

/// What the runner, eval, compare and report see, for every family.
pub trait Model {
    /// Scalar to minimise for one batch (maximum likelihood, ELBO, DSM, KL, ...); `step` lets schedules vary.
    fn loss(&self, x: &Tensor, step: i64) -> Tensor;
    /// The loss of one batch with its gradient accumulated into every parameter's `.grad`; returns the loss detached.
    /// By default autograd through `loss`; a model may trade compute for memory (DiffFlow's recomputation).
    fn loss_backward(&self, x: &Tensor, step: i64) -> Tensor {
        let loss = self.loss(x, step);
        loss.backward();
        loss.detach()
    }
    /// Whether `loss_backward` is a fixed sequence of device work that a CUDA graph may capture (`train.cuda_graph`):
    /// the same shapes at every step, no host synchronisation, no host state changed per step, no use of `step`.
    fn capturable(&self) -> bool {
        false
    }
    /// Per-example log-likelihood in nats with its kind.
    fn log_prob(&self, x: &Tensor) -> LogProb;
    /// `n` samples in data space, shape [n, D].
    fn sample(&self, n: i64) -> Tensor;
    /// `n` samples at temperature `t` (the sampler's Gaussian noise scaled by t), where the model defines one.
    fn sample_tempered(&self, _n: i64, _t: f64) -> Option<Tensor> {
        None
    }
    /// For flows that start with the logit preprocessing: the density of the logit-space variable, so bits/dim can be
    /// recomputed by hand from log p_Y(y) and the logit's Jacobian.
    fn logit_space_log_prob(&self, _x: &Tensor) -> Option<LogitSpace> {
        None
    }
    /// Network evaluations and steps per sample.
    fn sampling_cost(&self) -> SamplingCost;
    /// Data-dependent initialisation (ActNorm) from a first batch; called once before training, never on resume.
    fn data_init(&self, _x: &Tensor) {}
    /// Training mode (on) for `loss`, evaluation mode (off, the default) for densities and sampling: batch
    /// normalization's running statistics, a resampled base's normaliser.
    fn set_training(&self, _on: bool) {}
    /// The family this model belongs to (flow, vae, ...), for tables.
    fn family(&self) -> Family;
    /// Family-specific evaluation written to summary.json under `diagnostics` (e.g. importance weights against an
    /// energy target), from `n` samples repeated `repeats` times.
    fn diagnostics(&self, _n: i64, _repeats: i64) -> Option<serde_json::Value> {
        None
    }
    /// Family-specific evaluation on test points `x` (a VAE's bounds at several k and posterior-collapse
    /// diagnostics), written to summary.json under `diagnostics` when `diagnostics` has nothing.
    fn test_diagnostics(&self, _x: &Tensor) -> Option<serde_json::Value> {
        None
    }
    /// How `log_prob` is computed (solver, divergence estimator, number of samples...), for summary.json.
    fn estimator(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
    /// The trainable parameters of the model, handed over once after it is built (`runner::session`): a model whose
    /// gradients are not autograd's through `loss` (a CNF's adjoint method) needs them by name of tensor; others
    /// ignore them.
    fn bind_parameters(&self, _params: &[Tensor]) {}
    /// Numbers about the last training step for the metrics line (and so TensorBoard), e.g. a CNF's forward and
    /// backward function evaluations; None when the family has none.
    fn train_stats(&self) -> Option<serde_json::Map<String, serde_json::Value>> {
        None
    }
    /// The context a conditional model p(x | c) reads; None for an unconditional model p(x).
    fn context_spec(&self) -> Option<ContextSpec> {
        None
    }
    /// `loss` of a batch whose rows are paired with the rows of `c` (`Context::None` for an unconditional model).
    fn loss_given(&self, x: &Tensor, c: &Context, step: i64) -> Tensor {
        expect_unconditional(self.family(), c);
        self.loss(x, step)
    }
    /// `loss_backward` of a batch paired with `c`.
    fn loss_backward_given(&self, x: &Tensor, c: &Context, step: i64) -> Tensor {
        if c.is_none() {
            return self.loss_backward(x, step);
        }
        let loss = self.loss_given(x, c, step);
        loss.backward();
        loss.detach()
    }
    /// log p(x_i | c_i) per example, with its kind.
    fn log_prob_given(&self, x: &Tensor, c: &Context) -> LogProb {
        expect_unconditional(self.family(), c);
        self.log_prob(x)
    }
    /// `data_init` from a first batch paired with its contexts.
    fn data_init_given(&self, x: &Tensor, c: &Context) {
        expect_unconditional(self.family(), c);
        self.data_init(x)
    }
    /// One sample per row of `c` (for `Context::None`, `n` samples of p(x)).
    fn sample_given(&self, n: i64, c: &Context) -> Tensor {
        expect_unconditional(self.family(), c);
        self.sample(n)
    }
}
