//! The `cnf` family: a continuous normalizing flow dz/dt = v(z, t) on t ∈ [0, T] (Chen et al. 2018; FFJORD,
//! Grathwohl et al. 2019), data at t = 0 and N(0, I) at t = T, trained by maximum likelihood through the ODE with
//! RNODE's kinetic-energy and Jacobian-norm regularisers (Finlay et al. 2020, eq. 9):
//!
//!   L = E_x[-log p(x)] + λ_K E_x[∫‖v‖² dt] + λ_J E_x[∫‖εᵀ∂v/∂z‖² dt],
//!
//! with gradients by backpropagation through RK45's steps or by the adjoint method. The likelihood of evaluation is
//! the instantaneous change of variables solved by the crate's one likelihood routine (`score::likelihood::
//! ode_log_prob`, the PF-ODE's), exact divergence in low dimension and Hutchinson's estimate above
//! `ode.exact_divergence_max_dim`; samples integrate z ~ N(0, I) from T back to 0 with the same RK45.
use super::dynamics::{Dynamics, Terms};
use crate::model::{Family, LogProb, Model, SamplingCost};
use crate::nets::guidance::{with_context, Mode};
use crate::nets::TimeNet;
use crate::score::adjoint;
use crate::score::likelihood::{self, Divergence, OdeParams};
use crate::score::ode::{rk45, Tolerance};
use crate::score::space::ModelSpace;
use serde::{Deserialize, Serialize};
use std::cell::{Cell, RefCell};
use tch::{Kind, Tensor};

/// How the training gradient goes through the ODE solve.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Gradient {
    /// Autograd through every RK45 evaluation: exact gradients of the discretised solve, memory grows with the
    /// number of steps.
    Backprop,
    /// The adjoint method (Chen et al. 2018, Alg. 1): a second, backward solve; memory constant in the number of
    /// steps, gradients exact up to the solver tolerance.
    Adjoint,
}

/// `kind = "cnf"`: the ODE, its training and its network (`[model.net]`, `NetSpec`'s keys).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CnfParams {
    /// T, the integration time of the flow.
    pub time_length: f64,
    /// RK45 tolerance of training (rtol = atol); evaluation and sampling use `ode.rtol`.
    pub train_rtol: f64,
    pub gradient: Gradient,
    /// The adjoint's step-size control: `seminorm` (over [z, a] only; Kidger et al. 2021) or `full` (also over
    /// ∂L/∂θ, torchdiffeq's default). Unused by backprop.
    pub adjoint_norm: adjoint::Norm,
    /// λ_K, the weight of the kinetic energy ∫‖v‖² dt (RNODE; 0 is FFJORD's plain maximum likelihood).
    pub kinetic: f64,
    /// λ_J, the weight of the Jacobian Frobenius norm ∫‖∂v/∂z‖²_F dt (one Rademacher probe).
    pub jacobian: f64,
    /// `[model.ode]`: the likelihood's and the sampler's solve (tolerance, divergence estimator); training uses
    /// the same divergence at `train_rtol`.
    pub ode: OdeParams,
    /// Vectors are modelled as y = x / data_scale; log p_x adds -D ln scale. Images as y = 2x - 1.
    pub data_scale: f64,
    /// `[model.net]`: v(z, t), an MLP on vectors, a U-Net on images; `time_max_freq` defaults to 8 here.
    pub net: crate::nets::spec::NetSpec,
    /// A conditional run p(x | c): the width of the context embedding the velocity reads beside t (default: 16 for
    /// classes, a vector context as it is).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context_embed: Option<i64>,
    /// A conditional run: the probability of training a row with the null context (0: none, the default; above 0,
    /// one network also learns p(x) and `guidance_weight` can extrapolate the velocity at sampling).
    #[serde(skip_serializing_if = "crate::nets::guidance::is_zero")]
    pub p_uncond: f64,
    /// A conditional run: samples follow ṽ = (1 + w) v(z, t, c) - w v(z, t, ∅) (no density of its own); 0 samples
    /// the conditional model, whose density every likelihood reports.
    #[serde(skip_serializing_if = "crate::nets::guidance::is_zero")]
    pub guidance_weight: f64,
}

/// The highest frequency of a CNF's time features unless `net.time_max_freq` says otherwise: v must be smooth in t,
/// or the adaptive solver pays for it in evaluations.
pub const TIME_MAX_FREQ: f64 = 8.0;

impl Default for CnfParams {
    fn default() -> Self {
        CnfParams {
            time_length: 1.0,
            train_rtol: 1e-5,
            gradient: Gradient::Backprop,
            adjoint_norm: adjoint::Norm::Seminorm,
            kinetic: 0.01,
            jacobian: 0.01,
            ode: OdeParams::default(),
            data_scale: 1.0,
            net: crate::nets::spec::NetSpec { hidden: vec![64, 64, 64], activation: crate::nets::Activation::Tanh, ..Default::default() },
            context_embed: None,
            p_uncond: 0.0,
            guidance_weight: 0.0,
        }
    }
}

/// Function evaluations of training, summed since they were last read.
#[derive(Default)]
struct Tally {
    steps: Cell<u64>,
    forward: Cell<u64>,
    backward: Cell<u64>,
    kinetic: Cell<f64>,
    jacobian: Cell<f64>,
}

impl Tally {
    /// One step: its evaluations and the batch means of K and J.
    fn add(&self, forward: usize, backward: usize, kinetic: f64, jacobian: f64) {
        self.steps.set(self.steps.get() + 1);
        self.forward.set(self.forward.get() + forward as u64);
        self.backward.set(self.backward.get() + backward as u64);
        self.kinetic.set(self.kinetic.get() + kinetic);
        self.jacobian.set(self.jacobian.get() + jacobian);
    }

    /// Means per step, then zero.
    fn take(&self) -> Option<(f64, f64, f64, f64, u64)> {
        let n = self.steps.replace(0);
        let means = (self.forward.replace(0) as f64 / n as f64, self.backward.replace(0) as f64 / n as f64, self.kinetic.replace(0.0) / n as f64, self.jacobian.replace(0.0) / n as f64, n);
        (n > 0).then_some(means)
    }
}

pub struct CnfModel {
    pub net: Box<dyn TimeNet>,
    pub p: CnfParams,
    pub shape: Vec<i64>,
    images: bool,
    device: tch::Device,
    /// The network's parameters (`bind_parameters`), which the adjoint's backward solve differentiates.
    params: RefCell<Vec<Tensor>>,
    /// Training evaluations since the last metrics line, and since the process started (for the summary).
    since_log: Tally,
    total: Tally,
    sample_nfe: Cell<usize>,
    likelihood_nfe: Cell<usize>,
}

impl std::fmt::Debug for CnfModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CnfModel").field("net", &self.net).field("p", &self.p).field("shape", &self.shape).finish()
    }
}

impl CnfModel {
    pub fn new(net: Box<dyn TimeNet>, p: CnfParams, shape: Vec<i64>, device: tch::Device) -> Self {
        let images = shape.len() == 3;
        CnfModel {
            net,
            p,
            shape,
            images,
            device,
            params: RefCell::new(Vec::new()),
            since_log: Tally::default(),
            total: Tally::default(),
            sample_nfe: Cell::new(0),
            likelihood_nfe: Cell::new(0),
        }
    }

    fn dim(&self) -> i64 {
        self.shape.iter().product()
    }

    fn space(&self) -> ModelSpace {
        ModelSpace { images: self.images, data_scale: self.p.data_scale, dim: self.dim() }
    }

    /// v(z, s) with s = t / T, the network's time input.
    fn velocity(&self, z: &Tensor, s: &Tensor) -> Tensor {
        self.net.forward_t(z, s)
    }

    fn divergence(&self) -> Divergence {
        self.p.ode.divergence(self.dim())
    }

    fn train_tolerance(&self) -> Tolerance {
        Tolerance { rtol: self.p.train_rtol, atol: self.p.train_rtol }
    }

    /// The augmented dynamics of a batch y (model space): Hutchinson's probes, or one probe for the Jacobian term.
    fn dynamics<'a>(&self, v: &'a super::dynamics::Velocity<'a>, y: &Tensor) -> Dynamics<'a> {
        let div = self.divergence();
        let probes = match div {
            Divergence::Hutchinson { probes } => likelihood::rademacher(y, probes.max(1)),
            Divergence::Exact if self.p.jacobian > 0.0 => likelihood::rademacher(y, 1),
            Divergence::Exact => Vec::new(),
        };
        Dynamics { v, shape: y.size(), time_length: self.p.time_length, div, probes }
    }

    /// The training objective from the state at T: -mean log p_x + λ_K mean K + λ_J mean J (nats).
    fn objective(&self, d: &Dynamics, state: &Tensor) -> (Tensor, Terms) {
        let terms = d.terms(state);
        let nll = -(terms.log_prob.mean(Kind::Double) + self.space().log_jacobian());
        let loss = nll + terms.kinetic.mean(Kind::Double) * self.p.kinetic + terms.jacobian.mean(Kind::Double) * self.p.jacobian;
        (loss, terms)
    }

    /// z(T) for data x: the flow's forward map (the encoder), solved at `ode.rtol`.
    pub fn encode(&self, x: &Tensor) -> Tensor {
        let y = self.space().to_model(x);
        self.solve(&y, 0.0, self.p.time_length).0.to_kind(x.kind())
    }

    /// x = z(0) for base points z(T) = z: the sampler's map.
    pub fn decode(&self, z: &Tensor) -> Tensor {
        let (y, nfe) = self.solve(z, self.p.time_length, 0.0);
        self.sample_nfe.set(nfe);
        self.space().to_data(&y.to_kind(z.kind()))
    }

    /// dz/dt = v from t0 to t1 in f64 at `ode.rtol`, without a graph; returns z(t1) and the evaluations.
    fn solve(&self, z: &Tensor, t0: f64, t1: f64) -> (Tensor, usize) {
        let kind = z.kind();
        let b = z.size()[0];
        let mut rhs = |t: f64, y: &Tensor| {
            let s = Tensor::full([b], t / self.p.time_length, (Kind::Float, y.device()));
            self.velocity(&y.to_kind(kind), &s).to_kind(Kind::Double)
        };
        tch::no_grad(|| rk45(&mut rhs, &z.to_kind(Kind::Double), t0, t1, self.p.ode.tolerance()))
    }

    fn adjoint_loss_backward(&self, x: &Tensor) -> Tensor {
        let params = self.params.borrow();
        assert!(!params.is_empty(), "model.gradient = \"adjoint\" needs the CNF's parameters: call Model::bind_parameters after building it (runner::Session does)");
        let y = self.space().to_model(x);
        let v = |z: &Tensor, s: &Tensor| self.velocity(z, s);
        let d = self.dynamics(&v, &y);
        let field = |t: f64, s: &Tensor| d.rhs(t, s);
        let tol = self.train_tolerance();
        let (s1, nfe_forward) = adjoint::forward(&field, &d.initial(&y), 0.0, self.p.time_length, tol);
        let leaf = s1.set_requires_grad(true);
        let (loss, terms) = tch::with_grad(|| self.objective(&d, &leaf));
        let a1 = Tensor::run_backward(&[&loss], &[&leaf], false, false).remove(0);
        let g = adjoint::backward(&field, &params, &leaf.detach(), &a1, 0.0, self.p.time_length, tol, self.p.adjoint_norm);
        adjoint::accumulate(&params, &g.params);
        self.count(nfe_forward, g.nfe, &terms);
        loss.detach().to_kind(Kind::Float)
    }

    fn count(&self, forward: usize, backward: usize, terms: &Terms) {
        let mean = |t: &Tensor| t.detach().mean(Kind::Double).double_value(&[]);
        let (kinetic, jacobian) = (mean(&terms.kinetic), mean(&terms.jacobian));
        self.since_log.add(forward, backward, kinetic, jacobian);
        self.total.add(forward, backward, kinetic, jacobian);
    }

    fn backward_nfe_name(&self) -> &'static str {
        match self.p.gradient {
            Gradient::Backprop => "backprop: one reverse pass through each forward evaluation",
            Gradient::Adjoint => "adjoint: evaluations of the backward solve [z, a, ∂L/∂θ] (step control per adjoint_norm)",
        }
    }
}

impl Model for CnfModel {
    /// The regularised negative log-likelihood of the batch (module comment), differentiable by backpropagation
    /// through every RK45 evaluation at `train_rtol`.
    fn loss(&self, x: &Tensor, _step: i64) -> Tensor {
        let y = self.space().to_model(x);
        let v = |z: &Tensor, s: &Tensor| self.velocity(z, s);
        let d = self.dynamics(&v, &y);
        let (s1, nfe) = rk45(&mut |t, s: &Tensor| d.rhs(t, s), &d.initial(&y), 0.0, self.p.time_length, self.train_tolerance());
        let (loss, terms) = self.objective(&d, &s1);
        self.count(nfe, if self.p.gradient == Gradient::Backprop { nfe } else { 0 }, &terms);
        loss.to_kind(Kind::Float)
    }

    fn loss_backward(&self, x: &Tensor, step: i64) -> Tensor {
        match self.p.gradient {
            Gradient::Backprop => {
                let loss = self.loss(x, step);
                loss.backward();
                loss.detach()
            }
            Gradient::Adjoint => self.adjoint_loss_backward(x),
        }
    }

    /// log p(x) = log N(z(T); 0, I) + ∫_0^T ∇·v dt + log|dy/dx|, exact divergence (labelled exact, up to the RK45
    /// tolerance) in low dimension, Hutchinson's (labelled an estimate) above `exact_divergence_max_dim`.
    fn log_prob(&self, x: &Tensor) -> LogProb {
        let y = self.space().to_model(x);
        let t_len = self.p.time_length;
        let v = |z: &Tensor, t: &Tensor| self.velocity(z, &(t / t_len));
        let base = |z: &Tensor| z.flatten(1, -1).square().sum_dim_intlist(1, false, Kind::Double) * -0.5 - 0.5 * self.dim() as f64 * (2.0 * std::f64::consts::PI).ln();
        let div = self.divergence();
        let (lp, nfe) = likelihood::ode_log_prob(&v, &base, &y, 0.0, t_len, div, self.p.ode.tolerance());
        self.likelihood_nfe.set(nfe);
        LogProb { value: (lp + self.space().log_jacobian()).to_kind(Kind::Float), kind: div.kind() }
    }

    fn sample(&self, n: i64) -> Tensor {
        self.sample_tempered(n, 1.0).expect("a CNF samples at any temperature")
    }

    /// z ~ N(0, t² I) at time T, integrated back to 0.
    fn sample_tempered(&self, n: i64, t: f64) -> Option<Tensor> {
        let mut shape = vec![n];
        shape.extend(&self.shape);
        let z = crate::rows::randn(&shape, (Kind::Float, self.device)) * t;
        Some(self.decode(&z))
    }

    fn sampling_cost(&self) -> SamplingCost {
        SamplingCost { nfe_per_sample: self.sample_nfe.get(), steps: self.sample_nfe.get() }
    }

    fn family(&self) -> Family {
        Family::Cnf
    }

    fn context_spec(&self) -> Option<crate::ContextSpec> {
        self.net.guided().map(|g| g.context_spec())
    }

    fn loss_given(&self, x: &Tensor, c: &crate::Context, step: i64) -> Tensor {
        with_context(&[&*self.net], c, Mode::Train, || self.loss(x, step))
    }

    /// One binding of the batch's contexts for the whole step: forward and (adjoint) backward solves read the same
    /// rows, with the same dropped rows.
    fn loss_backward_given(&self, x: &Tensor, c: &crate::Context, step: i64) -> Tensor {
        with_context(&[&*self.net], c, Mode::Train, || self.loss_backward(x, step))
    }

    /// log p(x | c) of the conditional model (w = 0).
    fn log_prob_given(&self, x: &Tensor, c: &crate::Context) -> LogProb {
        with_context(&[&*self.net], c, Mode::Conditional, || self.log_prob(x))
    }

    fn data_init_given(&self, x: &Tensor, c: &crate::Context) {
        if let Some(g) = self.net.guided() {
            g.data_init(c);
        }
        self.data_init(x)
    }

    /// One sample per context row, the velocity guided at `model.guidance_weight`.
    fn sample_given(&self, n: i64, c: &crate::Context) -> Tensor {
        with_context(&[&*self.net], c, Mode::Guided, || self.sample(c.len().unwrap_or(n)))
    }

    fn bind_parameters(&self, params: &[Tensor]) {
        *self.params.borrow_mut() = params.iter().map(Tensor::shallow_clone).collect();
    }

    /// Mean forward and backward evaluations per step since the last line, and the two regularisers' integrals (J
    /// only where a probe estimates it).
    fn train_stats(&self) -> Option<serde_json::Map<String, serde_json::Value>> {
        let (forward, backward, kinetic, jacobian, _) = self.since_log.take()?;
        let mut m = serde_json::Map::new();
        m.insert("nfe_forward".into(), forward.into());
        if self.p.gradient == Gradient::Adjoint {
            m.insert("nfe_backward".into(), backward.into());
        }
        m.insert("kinetic".into(), kinetic.into());
        // J is computed only with a probe: Hutchinson's, or the one drawn for λ_J > 0.
        if self.p.jacobian > 0.0 || matches!(self.divergence(), Divergence::Hutchinson { .. }) {
            m.insert("jacobian".into(), jacobian.into());
        }
        Some(m)
    }

    fn estimator(&self) -> serde_json::Value {
        let totals = (self.total.steps.get(), self.total.forward.get(), self.total.backward.get());
        let per_step = |n: u64| if totals.0 > 0 { serde_json::json!(n as f64 / totals.0 as f64) } else { serde_json::Value::Null };
        serde_json::json!({
            "likelihood": "CNF, instantaneous change of variables: log p(x) = log N(z(T)) + ∫_0^T div v dt",
            "guidance": self.net.guided().map(crate::nets::guidance::describe),
            "solver": format!("RK45 (Dormand-Prince), rtol = atol = {}", self.p.ode.rtol),
            "time_length": self.p.time_length,
            "divergence": self.divergence().describe(),
            "dim": self.dim(),
            "nfe_last_evaluation": self.likelihood_nfe.get(),
            "training": {
                "gradient": self.p.gradient,
                "adjoint_norm": if self.p.gradient == Gradient::Adjoint { serde_json::json!(self.p.adjoint_norm) } else { serde_json::Value::Null },
                "rtol": self.p.train_rtol,
                "kinetic_weight": self.p.kinetic,
                "jacobian_weight": self.p.jacobian,
                "steps_counted": totals.0,
                "nfe_forward_per_step": per_step(totals.1),
                "nfe_backward_per_step": if self.p.gradient == Gradient::Adjoint { per_step(totals.2) } else { serde_json::Value::Null },
                "backward": self.backward_nfe_name(),
            },
        })
    }
}

impl crate::model::ModelParams for CnfParams {
    fn build(&self, path: &tch::nn::Path, shape: &[i64]) -> anyhow::Result<Box<dyn Model>> {
        anyhow::ensure!(self.time_length > 0.0 && self.time_length.is_finite(), "model.time_length must be a positive number, got {}", self.time_length);
        anyhow::ensure!(self.train_rtol > 0.0 && self.ode.rtol > 0.0, "model.train_rtol and model.ode.rtol must be positive, got {} and {}", self.train_rtol, self.ode.rtol);
        anyhow::ensure!(self.kinetic >= 0.0 && self.jacobian >= 0.0, "model.kinetic and model.jacobian are weights ≥ 0, got {} and {}", self.kinetic, self.jacobian);
        anyhow::ensure!(self.data_scale > 0.0, "model.data_scale must be positive, got {}", self.data_scale);
        Ok(Box::new(CnfModel::new(self.network(path, shape)?, self.clone(), shape.to_vec(), path.device())))
    }

    /// p(x | c): the context embedding read beside t by the velocity (through `nets::guidance`).
    fn build_conditional(&self, path: &tch::nn::Path, shape: &[i64], context: &crate::ContextSpec) -> anyhow::Result<Box<dyn Model>> {
        anyhow::ensure!(
            self.guidance_weight == 0.0 || self.p_uncond > 0.0,
            "model.guidance_weight = {} needs a null context trained beside c (model.p_uncond > 0, e.g. 0.1); with p_uncond = 0 only w = 0 is defined",
            self.guidance_weight
        );
        let conditioning = crate::nets::guidance::Conditioning { context_embed: self.context_embed, p_uncond: self.p_uncond, guidance_weight: self.guidance_weight };
        let net = crate::nets::guidance::time_net(&path.sub("net"), shape, &self.time_spec(shape), context, &conditioning)?;
        Ok(Box::new(CnfModel::new(net, self.clone(), shape.to_vec(), path.device())))
    }
}

impl CnfParams {
    /// v(z, t) under `path/net`, with time features up to `TIME_MAX_FREQ` unless `net.time_max_freq` is set.
    pub fn network(&self, path: &tch::nn::Path, shape: &[i64]) -> anyhow::Result<Box<dyn TimeNet>> {
        crate::nets::spec::time_net(&path.sub("net"), shape, &self.time_spec(shape))
    }

    fn time_spec(&self, shape: &[i64]) -> crate::nets::spec::NetSpec {
        let mut spec = self.net.clone();
        if spec.arch == crate::nets::spec::Arch::Mlp || shape.len() == 3 {
            spec.time_max_freq = Some(spec.time_max_freq.unwrap_or(TIME_MAX_FREQ));
        }
        spec
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ModelParams;
    use tch::nn::OptimizerConfig;
    use tch::{nn, Device};

    fn model(toml_text: &str, seed: i64) -> (nn::VarStore, CnfModel) {
        tch::manual_seed(seed);
        let vs = nn::VarStore::new(Device::Cpu);
        let p: CnfParams = toml::from_str(toml_text).unwrap();
        let m = CnfModel::new(p.network(&vs.root(), &[2]).unwrap(), p, vec![2], Device::Cpu);
        m.bind_parameters(&vs.trainable_variables());
        (vs, m)
    }

    /// A random-init CNF moves N(0, I) noticeably; its density must still integrate to 1.
    #[test]
    fn density_integrates_to_one_on_a_grid() {
        let (_vs, m) = model("time_length = 1.5\n[net]\nhidden = [32, 32]\n[ode]\nrtol = 1e-6", 5);
        let (n, half) = (120, 6.0);
        let axis = Tensor::linspace(-half, half, n, (Kind::Float, Device::Cpu));
        let xx = axis.repeat_interleave_self_int(n, 0, None);
        let yy = axis.repeat([n]);
        let grid = Tensor::stack(&[xx, yy], 1);
        let lp = tch::no_grad(|| m.log_prob(&grid));
        assert_eq!(lp.kind, crate::model::Kind::Exact);
        let h = 2.0 * half / (n - 1) as f64;
        let mass = lp.value.to_kind(Kind::Double).exp().sum(Kind::Double).double_value(&[]) * h * h;
        assert!((mass - 1.0).abs() < 5e-3, "∫ p = {mass}");
        // It is not the base density: the flow moved the mass.
        let base = grid.to_kind(Kind::Double).square().sum_dim_intlist(1, false, None) * -0.5 - (2.0 * std::f64::consts::PI).ln();
        let moved = (lp.value.to_kind(Kind::Double) - base).abs().max().double_value(&[]);
        assert!(moved > 0.1, "the random field changes log p by at most {moved}");
    }

    /// Sample, then evaluate: the forward map recovers the base point, and log p(x) by the forward solve equals
    /// log N(z) - ∫ div v dt taken along the sampler's own backward path.
    #[test]
    fn sampling_then_evaluating_is_reversible() {
        let (_vs, m) = model("[net]\nhidden = [32, 32]\n[ode]\nrtol = 1e-7", 6);
        let z = Tensor::randn([64, 2], (Kind::Float, Device::Cpu));
        let cnf = &m;
        let x = cnf.decode(&z);
        let back = cnf.encode(&x);
        let err = (&back - &z).abs().max().double_value(&[]);
        assert!(err < 1e-4, "encode(decode(z)) off by {err}");
        // The augmented ODE from (z, 0) at T back to 0 accumulates -∫ div v.
        let v = |zz: &Tensor, s: &Tensor| cnf.velocity(&zz.to_kind(Kind::Float), s);
        let d = Dynamics { v: &v, shape: vec![64, 2], time_length: 1.0, div: Divergence::Exact, probes: vec![] };
        let s0 = tch::no_grad(|| rk45(&mut |t, s: &Tensor| d.rhs(t, s).detach(), &d.initial(&z.to_kind(Kind::Double)), 1.0, 0.0, Tolerance { rtol: 1e-8, atol: 1e-8 })).0;
        let x_path = s0.narrow(1, 0, 2);
        assert!((&x_path - x.to_kind(Kind::Double)).abs().max().double_value(&[]) < 1e-4);
        let log_n = z.to_kind(Kind::Double).square().sum_dim_intlist(1, false, None) * -0.5 - (2.0 * std::f64::consts::PI).ln();
        let along_path = log_n - s0.select(1, 2);
        let lp = tch::no_grad(|| m.log_prob(&x)).value.to_kind(Kind::Double);
        let gap = (&lp - &along_path).abs().max().double_value(&[]);
        assert!(gap < 1e-3, "log p by the forward solve vs the backward path: {gap}");
        assert!(m.sampling_cost().nfe_per_sample > 6);
    }

    /// The adjoint's gradients equal backpropagation's through the solver, for the whole regularised loss, in f64
    /// at a tight tolerance, with the same probes (same seed).
    #[test]
    fn adjoint_gradients_equal_backpropagation() {
        let x = Tensor::randn([16, 2], (Kind::Double, Device::Cpu)) * 0.7;
        let settings = "train_rtol = 1e-9\nkinetic = 0.1\njacobian = 0.05\n[net]\nhidden = [16]\n[ode]\nhutchinson_probes = 2";
        let mut grads = Vec::new();
        for (gradient, max_dim) in [("backprop", 16), ("adjoint", 16), ("backprop", 1), ("adjoint", 1)] {
            // The [ode] table is last in `settings`, so the divergence key lands in it.
            let (mut vs, m) = model(&format!("gradient = \"{gradient}\"\n{settings}\nexact_divergence_max_dim = {max_dim}"), 7);
            vs.double();
            m.bind_parameters(&vs.trainable_variables());
            tch::manual_seed(8);
            let loss = m.loss_backward(&x, 0).double_value(&[]);
            let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().map(|(k, v)| (k, v.grad())).collect();
            named.sort_by(|a, b| a.0.cmp(&b.0));
            let stats = m.train_stats().unwrap();
            assert!(stats["nfe_forward"].as_f64().unwrap() > 6.0);
            assert_eq!(stats.contains_key("nfe_backward"), gradient == "adjoint");
            grads.push((gradient, max_dim, loss, named));
        }
        for pair in grads.chunks(2) {
            let ((_, dim, l_bp, bp), (_, _, l_adj, adj)) = (&pair[0], &pair[1]);
            assert!((l_bp - l_adj).abs() < 1e-6, "the same loss: {l_bp} vs {l_adj}");
            for ((name, g_bp), (_, g_adj)) in bp.iter().zip(adj) {
                let rel = (g_bp - g_adj).abs().max().double_value(&[]) / g_bp.abs().max().double_value(&[]).max(1e-12);
                assert!(rel < 1e-5, "exact_divergence_max_dim {dim}: ∂L/∂{name} relative error {rel}");
            }
        }
    }

    #[test]
    fn a_few_steps_of_maximum_likelihood_fit_a_shifted_gaussian() {
        let (vs, m) = model("train_rtol = 1e-3\nkinetic = 0.0\njacobian = 0.0\n[net]\nhidden = [32]\n[ode]\nrtol = 1e-4", 9);
        let data = Tensor::randn([512, 2], (Kind::Float, Device::Cpu)) * 0.5 + 1.5;
        let nll = |m: &CnfModel| -tch::no_grad(|| m.log_prob(&data)).value.mean(Kind::Double).double_value(&[]);
        let before = nll(&m);
        let mut opt = nn::Adam::default().build(&vs, 2e-2).unwrap();
        for step in 0..60 {
            opt.zero_grad();
            let _ = m.loss_backward(&data.narrow(0, (step % 4) * 128, 128), step);
            opt.step();
        }
        let after = nll(&m);
        assert!(after < before - 1.0, "NLL {before} -> {after}");
    }

    #[test]
    fn bad_settings_are_named() {
        let vs = nn::VarStore::new(Device::Cpu);
        for (text, key) in [("time_length = -1.0", "time_length"), ("kinetic = -0.1", "kinetic"), ("train_rtol = 0.0", "train_rtol")] {
            let p: CnfParams = toml::from_str(text).unwrap();
            let err = p.build(&vs.root(), &[2]).err().expect("refused").to_string();
            assert!(err.contains(key), "{err}");
        }
        assert!(toml::from_str::<CnfParams>("gradient = \"adjoin\"").is_err());
    }
}
