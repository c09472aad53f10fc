//! The SurVAE layer algebra (Nielsen et al. 2020) and the model composed from layers and a base distribution.
//!
//! A layer maps data x to latent z and returns its per-example likelihood contribution V(x, z):
//! log|det dz/dx| for a bijection, log p(x|z) - log q(z|x) for stochastic layers and generative surjections.
//! Then log p(x) = log p(z_L) + sum_l V_l (eq. 4 of Nielsen et al.), exact only when every layer is exact.
use crate::dist::Distribution;
use crate::model::{Kind, LogProb, LogitSpace, Model, SamplingCost};
use tch::Tensor;

/// What a layer is in SurVAE terms; decides the model's `Kind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerKind {
    Bijection,
    InferenceSurjection,
    GenerativeSurjection,
    Stochastic,
}

impl LayerKind {
    /// Exact for bijections and inference surjections; a lower bound otherwise (Nielsen et al., Table 1).
    pub fn likelihood_kind(self) -> Kind {
        match self {
            LayerKind::Bijection | LayerKind::InferenceSurjection => Kind::Exact,
            LayerKind::GenerativeSurjection | LayerKind::Stochastic => Kind::LowerBound,
        }
    }
}

/// One layer of a flow, SurVAE flow, VAE or SNF.
pub trait Layer: std::fmt::Debug {
    /// Data -> latent: returns z and V(x, z) per example (shape \[batch]).
    fn forward(&self, x: &Tensor) -> (Tensor, Tensor);
    /// Latent -> data: returns x and the generative direction's contribution per example; for a bijection this is
    /// log|det dx/dz| = -V(x, z). Energy training and SNF path weights use it.
    fn inverse(&self, z: &Tensor) -> (Tensor, Tensor);
    fn kind(&self) -> LayerKind;
    /// The inverse when it draws noise (a factored-out slice samples its dropped part): that noise is scaled by the
    /// temperature `t`. Deterministic layers ignore `t`.
    fn inverse_tempered(&self, z: &Tensor, _t: f64) -> (Tensor, Tensor) {
        self.inverse(z)
    }
    /// Some(α) for the fixed preprocessing y = logit(α + (1 - 2α)x) of image flows (see `flows::logit`).
    fn logit_alpha(&self) -> Option<f64> {
        None
    }
    /// Data-dependent initialisation (ActNorm): set parameters from the batch `x`, return the layer's output on it.
    fn data_init(&self, x: &Tensor) -> Tensor {
        self.forward(x).0
    }
    /// Network evaluations one pass through this layer costs.
    fn nfe(&self) -> usize {
        0
    }
    /// Training (batch statistics, fresh Monte Carlo estimates) or evaluation mode; evaluation unless told.
    fn set_training(&self, _on: bool) {}
    /// Data -> latent given the context features h(c) \[batch, E] of a conditional model (see `crate::context`).
    /// Layers without learned parts, and layers built unconditional, ignore `h`.
    fn forward_given(&self, x: &Tensor, _h: &Tensor) -> (Tensor, Tensor) {
        self.forward(x)
    }
    /// Latent -> data given h(c); the contribution as in `inverse`.
    fn inverse_given(&self, z: &Tensor, _h: &Tensor) -> (Tensor, Tensor) {
        self.inverse(z)
    }
    /// `data_init` of a conditional model's layer, whose output may depend on h(c).
    fn data_init_given(&self, x: &Tensor, _h: &Tensor) -> Tensor {
        self.data_init(x)
    }
}

/// Layers composed with a base distribution: log p(x) = log p_base(z) + sum of V (the flow, SurVAE and VAE model).
#[derive(Debug)]
pub struct LayerModel {
    pub layers: Vec<Box<dyn Layer>>,
    pub base: Box<dyn Distribution>,
    pub family: crate::model::Family,
}

impl LayerModel {
    /// Kind of the composed likelihood: exact only when every layer is exact.
    pub fn kind(&self) -> Kind {
        self.layers.iter().fold(self.base.kind(), |k, l| k.combine(l.kind().likelihood_kind()))
    }

    /// z = f(x) through every layer, and the summed contributions V.
    pub fn forward(&self, x: &Tensor) -> (Tensor, Tensor) {
        let mut z = x.shallow_clone();
        let mut v: Option<Tensor> = None;
        for layer in &self.layers {
            let (z_next, v_l) = layer.forward(&z);
            v = Some(match v {
                Some(v) => v + v_l,
                None => v_l,
            });
            z = z_next;
        }
        let v = v.unwrap_or_else(|| Tensor::zeros([x.size()[0]], (x.kind(), x.device())));
        (z, v)
    }

    /// x = f^{-1}(z) through every layer in reverse, and the summed generative contributions.
    pub fn inverse(&self, z: &Tensor) -> (Tensor, Tensor) {
        self.inverse_tempered(z, 1.0)
    }

    /// The inverse with every noise draw inside it (factored-out slices) at temperature `t`.
    pub fn inverse_tempered(&self, z: &Tensor, t: f64) -> (Tensor, Tensor) {
        let mut x = z.shallow_clone();
        let mut v = Tensor::zeros([z.size()[0]], (z.kind(), z.device()));
        for layer in self.layers.iter().rev() {
            let (x_prev, v_l) = layer.inverse_tempered(&x, t);
            v = v + v_l;
            x = x_prev;
        }
        (x, v)
    }

    /// z = f(x; h) through every layer given the context features h(c), and the summed contributions V.
    pub fn forward_given(&self, x: &Tensor, h: &Tensor) -> (Tensor, Tensor) {
        let mut z = x.shallow_clone();
        let mut v = Tensor::zeros([x.size()[0]], (x.kind(), x.device()));
        for layer in &self.layers {
            let (z_next, v_l) = layer.forward_given(&z, h);
            v = v + v_l;
            z = z_next;
        }
        (z, v)
    }

    /// x = f^{-1}(z; h) through every layer in reverse, and the summed generative contributions.
    pub fn inverse_given(&self, z: &Tensor, h: &Tensor) -> (Tensor, Tensor) {
        let mut x = z.shallow_clone();
        let mut v = Tensor::zeros([z.size()[0]], (z.kind(), z.device()));
        for layer in self.layers.iter().rev() {
            let (x_prev, v_l) = layer.inverse_given(&x, h);
            v = v + v_l;
            x = x_prev;
        }
        (x, v)
    }

    /// The importance-weighted bound IWBO(k) = log (1/k) Σ_j exp(log p(z_j) + V_j) over k independent passes
    /// (Burda et al. 2016, eq. 8; Nielsen et al. 2020, §3.4). Equal to log p(x) for an exact model; for a stochastic
    /// one E[IWBO(k)] increases with k towards log p(x). Replicas go through in chunks of at most `rows` rows.
    pub fn iwbo(&self, x: &Tensor, k: i64, rows: i64) -> Tensor {
        self.iwbo_given(x, None, k, rows)
    }

    /// IWBO(k) of log p(x | c) with context features `h` [batch, E] (each of the k copies of a row reads its row's
    /// h); None is `iwbo`.
    pub fn iwbo_given(&self, x: &Tensor, h: Option<&Tensor>, k: i64, rows: i64) -> Tensor {
        let b = x.size()[0];
        // Under a data-parallel split, chunk as the whole batch would be, and draw each chunk's K copies as the
        // whole batch's rows (see crate::rows), so the bound of every example is the one-process value.
        let split = crate::rows::current().filter(|s| s.len == b && s.blocks == 1);
        let per_chunk = (rows / split.map_or(b, |s| s.total).max(1)).clamp(1, k);
        let mut parts = Vec::new();
        let mut done = 0;
        while done < k {
            let c = per_chunk.min(k - done);
            let mut shape = x.size();
            shape[0] = c * b;
            let mut expanded = vec![c];
            expanded.extend(x.size());
            let xr = x.unsqueeze(0).expand(expanded.as_slice(), false).reshape(shape.as_slice());
            let hr = h.map(|h| h.repeat([c, 1]));
            let pass = || match &hr {
                Some(hr) => {
                    let (z, v) = self.forward_given(&xr, hr);
                    self.base.log_prob_given(&z, hr) + v
                }
                None => {
                    let (z, v) = self.forward(&xr);
                    self.base.log_prob(&z) + v
                }
            };
            let lp = match split {
                Some(s) => crate::rows::with_split(s.repeated(c), pass),
                None => pass(),
            };
            parts.push(lp.view([c, b]));
            done += c;
        }
        Tensor::cat(&parts, 0).logsumexp(0, false) - (k as f64).ln()
    }
}

/// A shared layer is a layer (a model keeps a handle on a layer it also composes, e.g. for diagnostics).
impl<L: Layer> Layer for std::rc::Rc<L> {
    fn forward(&self, x: &Tensor) -> (Tensor, Tensor) {
        (**self).forward(x)
    }
    fn inverse(&self, z: &Tensor) -> (Tensor, Tensor) {
        (**self).inverse(z)
    }
    fn kind(&self) -> LayerKind {
        (**self).kind()
    }
    fn inverse_tempered(&self, z: &Tensor, t: f64) -> (Tensor, Tensor) {
        (**self).inverse_tempered(z, t)
    }
    fn logit_alpha(&self) -> Option<f64> {
        (**self).logit_alpha()
    }
    fn data_init(&self, x: &Tensor) -> Tensor {
        (**self).data_init(x)
    }
    fn nfe(&self) -> usize {
        (**self).nfe()
    }
    fn set_training(&self, on: bool) {
        (**self).set_training(on)
    }
    fn forward_given(&self, x: &Tensor, h: &Tensor) -> (Tensor, Tensor) {
        (**self).forward_given(x, h)
    }
    fn inverse_given(&self, z: &Tensor, h: &Tensor) -> (Tensor, Tensor) {
        (**self).inverse_given(z, h)
    }
    fn data_init_given(&self, x: &Tensor, h: &Tensor) -> Tensor {
        (**self).data_init_given(x, h)
    }
}

impl Model for LayerModel {
    /// Maximum likelihood: the mean negative log-likelihood of the batch (nats per example).
    fn loss(&self, x: &Tensor, _step: i64) -> Tensor {
        -self.log_prob(x).value.mean(None)
    }

    /// Maximum likelihood through the layers: device work of fixed shapes, independent of the step.
    fn capturable(&self) -> bool {
        true
    }

    fn log_prob(&self, x: &Tensor) -> LogProb {
        let (z, v) = self.forward(x);
        LogProb { value: self.base.log_prob(&z) + v, kind: self.kind() }
    }

    fn sample(&self, n: i64) -> Tensor {
        tch::no_grad(|| self.inverse(&self.base.sample(n)).0)
    }

    fn sample_tempered(&self, n: i64, t: f64) -> Option<Tensor> {
        Some(tch::no_grad(|| self.inverse_tempered(&self.base.sample_tempered(n, t), t).0))
    }

    /// When the first layer is the logit preprocessing: y = logit(α + (1-2α)x) and log p_Y(y) from the layers after it.
    fn logit_space_log_prob(&self, x: &Tensor) -> Option<LogitSpace> {
        let (first, rest) = self.layers.split_first()?;
        let alpha = first.logit_alpha()?;
        let (y, _) = first.forward(x);
        let mut z = y.shallow_clone();
        let mut v = Tensor::zeros([x.size()[0]], (x.kind(), x.device()));
        for layer in rest {
            let (z_next, v_l) = layer.forward(&z);
            v = v + v_l;
            z = z_next;
        }
        Some(LogitSpace { alpha, y, log_prob_y: self.base.log_prob(&z) + v })
    }

    fn sampling_cost(&self) -> SamplingCost {
        SamplingCost { nfe_per_sample: self.layers.iter().map(|l| l.nfe()).sum(), steps: self.layers.len() }
    }

    fn data_init(&self, x: &Tensor) {
        tch::no_grad(|| {
            let mut z = x.shallow_clone();
            for layer in &self.layers {
                z = layer.data_init(&z);
            }
        })
    }

    fn family(&self) -> crate::model::Family {
        self.family
    }

    fn estimator(&self) -> serde_json::Value {
        self.base.describe()
    }

    fn set_training(&self, on: bool) {
        for layer in &self.layers {
            layer.set_training(on);
        }
        self.base.set_training(on);
    }
}
