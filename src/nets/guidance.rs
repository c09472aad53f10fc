//! Classifier-free guidance (Ho & Salimans 2022) for the time-conditioned families (DDPM, score, DiffFlow): one
//! network reads (x, t, h) where h is the context embedding h(c) (`ContextEncoder`) or a learned null embedding ∅.
//! Training replaces each example's h(c) by ∅ with probability `p_uncond` (their Alg. 1), so the same weights learn
//! the conditional ε(x, t, c) and the unconditional ε(x, t, ∅); sampling reads the guided prediction
//! ε̃ = (1 + w) ε(x, t, c) − w ε(x, t, ∅) (their eq. 6). w = 0, the default, is the conditional model itself, and
//! every likelihood is of the conditional model (w = 0): a guided sampler has no density of its own.
//!
//! The model code stays as it is: a model binds the batch's contexts to its `Guided` network for the length of one
//! call (`bind`), and every `forward_t` inside that call reads them. h(c) is recomputed at each network call, so a
//! loss that recomputes segments of its graph (DiffFlow) backpropagates through the encoder as often as it needs.
use super::embed::ContextEncoder;
use super::TimeNet;
use crate::context::{Context, ContextSpec};
use anyhow::{ensure, Result};
use std::cell::{Cell, RefCell};
use tch::{nn, Kind, Tensor};

/// How the network reads the bound contexts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Training: each row's context is dropped to ∅ with probability `p_uncond` (one draw per row per bind).
    Train,
    /// The conditional model ε(x, t, c): likelihoods.
    Conditional,
    /// Sampling: the guided prediction at the network's guidance weight (the conditional model when w = 0).
    Guided,
}

struct Binding {
    c: Context,
    /// Train mode: which rows keep their context, [B, 1] bool.
    keep: Option<Tensor>,
    mode: Mode,
}

/// A time-conditioned network of (x, t, h(c)) with a learned null context, read through `TimeNet` while contexts
/// are bound.
pub struct Guided {
    net: Box<dyn TimeNet>,
    encoder: ContextEncoder,
    /// ∅, [1, E] (zeros at initialisation; trained by the dropped rows).
    null: Tensor,
    p_uncond: f64,
    weight: Cell<f64>,
    binding: RefCell<Option<Binding>>,
}

impl std::fmt::Debug for Guided {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guided").field("net", &self.net).field("context", &self.encoder.spec).field("p_uncond", &self.p_uncond).field("weight", &self.weight.get()).finish()
    }
}

/// Checks the guidance settings of a `[model]` table.
pub fn check(p_uncond: f64, weight: f64) -> Result<()> {
    ensure!((0.0..1.0).contains(&p_uncond), "model.p_uncond must be in [0, 1) (the probability of dropping the context in training), got {p_uncond}");
    ensure!(weight.is_finite() && weight >= 0.0, "model.guidance_weight must be a finite number >= 0 (0 samples the conditional model), got {weight}");
    Ok(())
}

impl Guided {
    /// The context encoder at `path/context` (with ∅ beside it), then the network `net(E)` built for features of
    /// the encoder's width E.
    pub fn new(path: &nn::Path, context: ContextSpec, embed: Option<i64>, p_uncond: f64, weight: f64, net: impl FnOnce(i64) -> Result<Box<dyn TimeNet>>) -> Result<Self> {
        check(p_uncond, weight)?;
        let p = path.sub("context");
        let encoder = ContextEncoder::new(&p, context, embed)?;
        let null = p.zeros("null", &[1, encoder.width()]);
        let net = net(encoder.width())?;
        Ok(Guided { net, encoder, null, p_uncond, weight: Cell::new(weight), binding: RefCell::new(None) })
    }

    pub fn context_spec(&self) -> ContextSpec {
        self.encoder.spec
    }

    /// The guidance weight w of `Mode::Guided`.
    pub fn weight(&self) -> f64 {
        self.weight.get()
    }

    /// Sets w (a sampling setting: the trained weights hold every w at once).
    pub fn set_weight(&self, w: f64) -> Result<()> {
        check(self.p_uncond, w)?;
        self.weight.set(w);
        Ok(())
    }

    pub fn p_uncond(&self) -> f64 {
        self.p_uncond
    }

    /// A vector context's standardisation from the first training batch's contexts.
    pub fn data_init(&self, c: &Context) {
        self.encoder.data_init(c)
    }

    /// Binds contexts `c` (one row per example of the coming calls) until the guard drops; in training each row
    /// keeps its context with probability 1 - p_uncond.
    pub fn bind(&self, c: &Context, mode: Mode) -> Bound<'_> {
        let keep = (mode == Mode::Train).then(|| self.keep_mask(c));
        self.bind_with(c, mode, keep)
    }

    /// Which rows of `c` keep their context in a training step: [B, 1] bool, P(keep) = 1 - p_uncond.
    fn keep_mask(&self, c: &Context) -> Tensor {
        let rows = c.len().expect("a conditional network is bound to a context with rows (the caller checks contexts first)");
        crate::rows::rand(&[rows, 1], (Kind::Float, self.null.device())).ge(self.p_uncond)
    }

    fn bind_with(&self, c: &Context, mode: Mode, keep: Option<Tensor>) -> Bound<'_> {
        *self.binding.borrow_mut() = Some(Binding { c: c.shallow_clone(), keep, mode });
        Bound(self)
    }

    /// h for the bound contexts, ∅ on dropped rows in training.
    fn features(&self, b: &Binding, rows: i64) -> Tensor {
        let h = self.encoder.forward(&b.c);
        assert_eq!(h.size()[0], rows, "a conditional network got a batch of {rows} rows for {} bound contexts", h.size()[0]);
        match &b.keep {
            Some(keep) => h.where_self(keep, &self.null),
            None => h,
        }
    }
}

/// Holds a binding; dropping it unbinds.
pub struct Bound<'a>(&'a Guided);

impl Drop for Bound<'_> {
    fn drop(&mut self) {
        *self.0.binding.borrow_mut() = None;
    }
}

impl TimeNet for Guided {
    fn forward_t(&self, x: &Tensor, t: &Tensor) -> Tensor {
        let binding = self.binding.borrow();
        let b = binding.as_ref().expect("a conditional network was called without its contexts (the model binds them in *_given)");
        let n = x.size()[0];
        let h = self.features(b, n);
        let w = self.weight.get();
        if b.mode != Mode::Guided || w == 0.0 {
            return self.net.forward_tc(x, t, &h);
        }
        let null = self.null.expand([n, self.encoder.width()], false);
        let both = self.net.forward_tc(&Tensor::cat(&[x, x], 0), &Tensor::cat(&[t, t], 0), &Tensor::cat(&[h, null], 0));
        let (cond, uncond) = (both.narrow(0, 0, n), both.narrow(0, n, n));
        cond * (1.0 + w) - uncond * w
    }

    fn guided(&self) -> Option<&Guided> {
        Some(self)
    }
}

/// The guided network of `[model.net]` for data of event `shape` and contexts `context`: encoder and ∅ at
/// `path/context`, the network's own variables at `path` as `spec::time_net` puts them.
pub fn time_net(path: &nn::Path, shape: &[i64], net: &super::spec::NetSpec, context: &ContextSpec, c: &Conditioning) -> Result<Box<dyn TimeNet>> {
    Ok(Box::new(Guided::new(path, *context, c.context_embed, c.p_uncond, c.guidance_weight, |e| super::spec::time_net_given(path, shape, net, Some(e)))?))
}

/// The conditioning keys of a time-conditioned family's `[model]` table (read only by a conditional run).
#[derive(Clone, Copy, Debug)]
pub struct Conditioning {
    pub context_embed: Option<i64>,
    pub p_uncond: f64,
    pub guidance_weight: f64,
}

/// Default of `model.p_uncond` (Ho & Salimans 2022 find 0.1 to 0.2 best).
pub const P_UNCOND: f64 = 0.1;

pub fn is_default_p_uncond(p: &f64) -> bool {
    *p == P_UNCOND
}

pub fn is_zero(w: &f64) -> bool {
    *w == 0.0
}

/// The guidance settings for summary.json's estimator.
pub fn describe(g: &Guided) -> serde_json::Value {
    serde_json::json!({
        "method": "classifier-free guidance (Ho & Salimans 2022): samples use (1 + w) eps(x, t, c) - w eps(x, t, null); likelihoods are of the conditional model (w = 0)",
        "context": g.context_spec().describe(),
        "p_uncond": g.p_uncond(),
        "guidance_weight": g.weight(),
    })
}

/// Runs `f` with contexts `c` bound to every guided network in `nets` (an unconditional call, `Context::None`, binds
/// nothing). In training the networks drop the same rows (DiffFlow's drift and score learn one joint ∅ model).
pub fn with_context<R>(nets: &[&dyn TimeNet], c: &Context, mode: Mode, f: impl FnOnce() -> R) -> R {
    if c.is_none() {
        return f();
    }
    let guided: Vec<&Guided> = nets.iter().filter_map(|n| n.guided()).collect();
    assert!(!guided.is_empty(), "a context was given to a model whose networks are unconditional (the caller checks contexts first)");
    let keep = (mode == Mode::Train).then(|| guided[0].keep_mask(c));
    let guards: Vec<Bound<'_>> = guided.iter().map(|g| g.bind_with(c, mode, keep.as_ref().map(Tensor::shallow_clone))).collect();
    let out = f();
    drop(guards);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nets::spec::{time_net_given, NetSpec};
    use tch::Device;

    fn guided(vs: &nn::VarStore, shape: &[i64], w: f64) -> Guided {
        let spec = NetSpec { hidden: vec![16], unet_ch: 8, unet_mults: vec![1, 2], unet_groups: 4, ..Default::default() };
        Guided::new(&vs.root(), ContextSpec::Class { classes: 3 }, Some(4), 0.5, w, |e| time_net_given(&vs.root().sub("net"), shape, &spec, Some(e))).unwrap()
    }

    fn perturb(vs: &nn::VarStore) {
        tch::no_grad(|| {
            for mut v in vs.trainable_variables() {
                let noise = v.randn_like() * 0.3;
                let _ = v.g_add_(&noise);
            }
        });
    }

    #[test]
    fn guided_prediction_is_the_extrapolation_of_conditional_and_null() {
        tch::manual_seed(0);
        for shape in [vec![2i64], vec![1, 8, 8]] {
            let vs = nn::VarStore::new(Device::Cpu);
            let g = guided(&vs, &shape, 2.0);
            perturb(&vs);
            let mut full = vec![3i64];
            full.extend(&shape);
            let x = Tensor::randn(full.as_slice(), (Kind::Float, Device::Cpu));
            let t = Tensor::from_slice(&[0.1f32, 0.5, 0.9]);
            let c = Context::Class(Tensor::from_slice(&[0i64, 2, 1]));
            let h = g.encoder.forward(&c);
            let cond = g.net.forward_tc(&x, &t, &h);
            let null = g.net.forward_tc(&x, &t, &g.null.expand([3, 4], false));
            let eps = |mode| {
                let _b = g.bind(&c, mode);
                g.forward_t(&x, &t)
            };
            assert!((eps(Mode::Conditional) - &cond).abs().max().double_value(&[]) < 1e-6);
            let want = &cond * 3.0 - &null * 2.0;
            assert!((eps(Mode::Guided) - want).abs().max().double_value(&[]) < 1e-5, "(1 + w) eps_c - w eps_null at w = 2 ({shape:?})");
            assert!((&cond - &null).abs().max().double_value(&[]) > 1e-3, "the context changes the prediction ({shape:?})");
            g.weight.set(0.0);
            assert!((eps(Mode::Guided) - &cond).abs().max().double_value(&[]) < 1e-6, "w = 0 is the conditional model");
        }
    }

    #[test]
    fn training_drops_contexts_at_the_rate_p_uncond_and_unbinding_is_enforced() {
        tch::manual_seed(1);
        let vs = nn::VarStore::new(Device::Cpu);
        let g = guided(&vs, &[2], 0.0);
        perturb(&vs);
        let n = 4000;
        let c = Context::Class(Tensor::zeros([n], (Kind::Int64, Device::Cpu)));
        let x = Tensor::zeros([n, 2], (Kind::Float, Device::Cpu));
        let t = Tensor::full([n], 0.3, (Kind::Float, Device::Cpu));
        let null = g.net.forward_tc(&x.narrow(0, 0, 1), &t.narrow(0, 0, 1), &g.null);
        let out = {
            let _b = g.bind(&c, Mode::Train);
            g.forward_t(&x, &t)
        };
        let dropped = (out - null).abs().sum_dim_intlist(1, false, None).lt(1e-6).to_kind(Kind::Float).mean(None).double_value(&[]);
        assert!((dropped - 0.5).abs() < 0.04, "rows dropped to the null context: {dropped}, expected p_uncond = 0.5");
        let unbound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| g.forward_t(&x, &t)));
        assert!(unbound.is_err(), "a call outside a binding is refused");
        // Two networks bound together in training drop the same rows.
        let vs2 = nn::VarStore::new(Device::Cpu);
        let g2 = guided(&vs2, &[2], 0.0);
        let c = Context::Class(Tensor::zeros([64], (Kind::Int64, Device::Cpu)));
        let (a, b) = with_context(&[&g, &g2], &c, Mode::Train, || {
            let keep = |g: &Guided| g.binding.borrow().as_ref().and_then(|b| b.keep.as_ref().map(Tensor::copy)).unwrap();
            (keep(&g), keep(&g2))
        });
        assert!(a.equal(&b) && a.logical_not().any().int64_value(&[]) == 1, "one keep mask for every network of the model");
        assert!(g.binding.borrow().is_none() && g2.binding.borrow().is_none(), "unbound after the call");
        assert!(g.set_weight(-0.5).is_err() && g.set_weight(1.5).is_ok() && g.weight() == 1.5);
        assert!(check(1.0, 0.0).is_err() && check(0.1, -1.0).is_err() && check(0.1, f64::NAN).is_err() && check(0.0, 3.0).is_ok());
    }
}
