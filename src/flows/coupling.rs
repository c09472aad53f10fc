//! Coupling layers: affine (RealNVP, Dinh et al. 2017, eq. 7-8) and additive (NICE, Dinh et al. 2015, eq. 5).
//!
//! The input is split into a conditioning half x_a and a transformed half x_b; a network reads x_a and sets the
//! element-wise transform of x_b, so the Jacobian is triangular and log|det| = Σ log s.
use crate::layer::{Layer, LayerKind};
use crate::native;
use crate::nets::{Activation, Mlp};
use anyhow::Result;
use serde::{Deserialize, Serialize};
use tch::{nn, Tensor};

/// How an affine coupling keeps its scale positive and bounded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScaleBound {
    /// log s = tanh(h): |log s| ≤ 1 per layer.
    Tanh,
    /// s = softplus(h + ln(e - 1)) + 1e-3, so s = 1.001 at h = 0 and s > 0 always.
    Softplus,
    /// s = σ(h + 2) (Glow's affine coupling): s in (0, 1), 0.88 at h = 0.
    Sigmoid,
    /// log s = α tanh(h) with α = e^a learned per coupling from a = -1 (bgtorch's `AffineTransformer`, the SNF paper's
    /// RealNVP): the bound starts at 0.37 and grows where the data need it.
    ScaledTanh,
}

impl ScaleBound {
    /// log s from the conditioner's raw output h (for `ScaledTanh`, before the coupling's factor α).
    pub fn log_scale(self, raw: &Tensor) -> Tensor {
        match self {
            ScaleBound::Tanh => raw.tanh(),
            ScaleBound::Softplus => ((raw + 0.541_324_854_612_918_1).softplus() + 1e-3).log(),
            ScaleBound::Sigmoid => (raw + 2.0).log_sigmoid(),
            ScaleBound::ScaledTanh => raw.tanh(),
        }
    }
}

/// The networks that give an affine coupling its (log s, t).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Conditioner {
    /// One MLP with 2·d outputs whose last layer starts at zero, so the coupling starts as the identity.
    #[default]
    Shared,
    /// Separate shift and scale MLPs, every layer with torch.nn.Linear's default initialisation (bgtorch's RNVP, as
    /// in the SNF paper's code).
    Separate,
}

/// The element-wise transform of x_b.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Transformer {
    /// Monotonic rational-quadratic spline with `bins` bins on [-bound, bound], identity outside (NSF, Durkan et al.
    /// 2019): the conditioner gives 3·bins - 1 numbers per element.
    Spline { bins: i64, bound: f64 },
    /// z_b = x_b ⊙ s(x_a) + t(x_a).
    Affine(ScaleBound),
    /// z_b = x_b + t(x_a) (volume preserving).
    Additive,
}

thread_local! {
    /// Whether affine couplings use the fused node: on, unless RELAXFLOW_FUSED_COUPLING=0 (what `make bench` compares
    /// against); tests switch it per thread with [`with_fused`].
    static FUSED: std::cell::Cell<bool> = std::cell::Cell::new(std::env::var("RELAXFLOW_FUSED_COUPLING").map_or(true, |v| v != "0"));
}

/// Runs `f` with the fused coupling on or off on this thread (the op-by-op version is the reference in tests and
/// `make bench`'s comparison).
pub fn with_fused<T>(on: bool, f: impl FnOnce() -> T) -> T {
    let before = FUSED.with(|c| c.replace(on));
    let out = f();
    FUSED.with(|c| c.set(before));
    out
}

/// A coupling layer on inputs of shape [batch, dim].
#[derive(Debug)]
pub struct Coupling {
    net: Mlp,
    /// The shift network of a `Separate` conditioner (`net` then gives the raw scale).
    shift_net: Option<Mlp>,
    transformer: Transformer,
    /// Size of the first half; the halves are x[:, ..split] and x[:, split..].
    split: i64,
    dim: i64,
    /// false: the first half conditions the second; true: the second conditions the first.
    parity: bool,
    /// log α of a `ScaledTanh` bound.
    log_alpha: Option<Tensor>,
    /// Width E of the context features h(c) every conditioner also reads ([x_a, h(c)]); 0: unconditional.
    context: i64,
}

impl Coupling {
    pub fn new(
        path: &nn::Path,
        dim: i64,
        hidden: &[i64],
        act: Activation,
        transformer: Transformer,
        parity: bool,
        conditioner: Conditioner,
    ) -> Result<Self> {
        Self::conditional(path, dim, hidden, act, transformer, parity, conditioner, 0)
    }

    /// A coupling whose conditioner reads [x_a, h(c)], with h(c) of width `context` (0: unconditional, as `new`):
    /// z_b = τ(x_b; θ(x_a, h)), still triangular in x, so log|det ∂z/∂x| = Σ log|τ'| for every c.
    #[allow(clippy::too_many_arguments)]
    pub fn conditional(
        path: &nn::Path,
        dim: i64,
        hidden: &[i64],
        act: Activation,
        transformer: Transformer,
        parity: bool,
        conditioner: Conditioner,
        context: i64,
    ) -> Result<Self> {
        anyhow::ensure!(context >= 0, "a context width cannot be negative, got {context}");
        anyhow::ensure!(dim >= 2, "a coupling layer needs at least 2 dimensions, got {dim}");
        let split = dim / 2;
        let (d_cond, d_trans) = if parity { (dim - split, split) } else { (split, dim - split) };
        let d_cond = d_cond + context;
        let d_out = match transformer {
            Transformer::Affine(_) => 2 * d_trans,
            Transformer::Additive => d_trans,
            Transformer::Spline { bins, .. } => {
                anyhow::ensure!(bins >= 2, "a spline needs at least 2 bins, got {bins}");
                (3 * bins - 1) * d_trans
            }
        };
        let (net, shift_net) = match (conditioner, transformer) {
            (Conditioner::Separate, Transformer::Affine(_)) => {
                let scale = Mlp::new(&path.sub("scale_net"), d_cond, hidden, d_trans, act, false)?;
                (scale, Some(Mlp::new(&path.sub("shift_net"), d_cond, hidden, d_trans, act, false)?))
            }
            (Conditioner::Separate, _) => anyhow::bail!("conditioner = \"separate\" is for affine couplings"),
            (Conditioner::Shared, _) => (Mlp::new(&path.sub("net"), d_cond, hidden, d_out, act, true)?, None),
        };
        let log_alpha = (transformer == Transformer::Affine(ScaleBound::ScaledTanh)).then(|| path.var("log_alpha", &[1], nn::Init::Const(-1.0)));
        Ok(Coupling { net, shift_net, transformer, split, dim, parity, log_alpha, context })
    }

    /// (x_a, x_b): conditioning and transformed parts.
    fn split(&self, x: &Tensor) -> (Tensor, Tensor) {
        let mut halves = x.split_with_sizes([self.split, self.dim - self.split], 1);
        let (second, first) = (halves.pop().expect("two halves"), halves.pop().expect("two halves"));
        if self.parity {
            (second, first)
        } else {
            (first, second)
        }
    }

    fn join(&self, x_a: &Tensor, x_b: &Tensor) -> Tensor {
        if self.parity {
            Tensor::cat(&[x_b, x_a], 1)
        } else {
            Tensor::cat(&[x_a, x_b], 1)
        }
    }

    /// What the conditioner reads: x_a, or [x_a, h(c)] for a conditional coupling.
    fn conditioner_input(&self, x_a: &Tensor, h: Option<&Tensor>) -> Tensor {
        match h {
            Some(h) => Tensor::cat(&[x_a, &h.to_kind(x_a.kind())], 1),
            None if self.context > 0 => panic!("this coupling is conditional: call forward_given / inverse_given with the context"),
            None => x_a.shallow_clone(),
        }
    }

    /// The spline of x_b (or its inverse) given the conditioner input, and Σ log|derivative| per example.
    fn spline(&self, x_a: &Tensor, input: &Tensor, bins: i64, bound: f64, inverse: bool) -> (Tensor, Tensor) {
        let (b, d) = (input.size()[0], input.size()[1]);
        let h = self.net.forward(x_a).view([b, d, 3 * bins - 1]);
        let (w, ht, dv) = (h.narrow(2, 0, bins), h.narrow(2, bins, bins), h.narrow(2, 2 * bins, bins - 1));
        let p = super::spline::SplineParams { widths: &w, heights: &ht, derivatives: &dv };
        let (out, log_grad) = super::spline::rational_quadratic(input, &p, bound, inverse);
        (out, log_grad.sum_dim_intlist(1, false, None))
    }

    /// (z, ldj) of the forward map through the fused coupling (`native::coupling`, one autograd node) when this
    /// coupling is what it computes -- affine, log s = tanh, one shared MLP -- and fusing is on; else None.
    fn fused(&self, x: &Tensor) -> Option<(Tensor, Tensor)> {
        if !FUSED.with(|f| f.get()) || self.transformer != Transformer::Affine(ScaleBound::Tanh) || self.shift_net.is_some() {
            return None;
        }
        let act = match self.net.activation() {
            Activation::Relu => native::coupling::Act::Relu,
            Activation::Tanh => native::coupling::Act::Tanh,
            Activation::Silu => native::coupling::Act::Silu,
        };
        // The shim checks shapes; a failure there is a bug: say so once and compute the same map op by op.
        match native::coupling::affine_coupling(x, self.split, self.parity, &self.net.params(), act) {
            Ok(out) => Some(out),
            Err(e) => {
                static WARNED: std::sync::Once = std::sync::Once::new();
                WARNED.call_once(|| eprintln!("warning: {e:#}; affine couplings run op by op instead"));
                None
            }
        }
    }

    /// (log s, t) from the conditioner; log s is None for the additive coupling.
    fn params(&self, x_a: &Tensor) -> (Option<Tensor>, Tensor) {
        let h = self.net.forward(x_a);
        match self.transformer {
            Transformer::Additive | Transformer::Spline { .. } => (None, h),
            Transformer::Affine(bound) => {
                let (raw, t) = match &self.shift_net {
                    Some(shift) => (h, shift.forward(x_a)),
                    None => {
                        let mut parts = h.split(h.size()[1] / 2, 1);
                        let t = parts.pop().expect("two parts");
                        (parts.pop().expect("two parts"), t)
                    }
                };
                let log_s = bound.log_scale(&raw);
                (Some(self.log_alpha.as_ref().map_or_else(|| log_s.shallow_clone(), |a| &log_s * a.exp())), t)
            }
        }
    }
}

impl Layer for Coupling {
    /// z_b = x_b · exp(log s) + t, V = Σ log s.
    fn forward(&self, x: &Tensor) -> (Tensor, Tensor) {
        if self.context == 0 {
            if let Some(fused) = self.fused(x) {
                return fused;
            }
        }
        self.forward_with(x, None)
    }

    /// x_b = (z_b - t) · exp(-log s), contribution -Σ log s.
    fn inverse(&self, z: &Tensor) -> (Tensor, Tensor) {
        self.inverse_with(z, None)
    }

    fn forward_given(&self, x: &Tensor, h: &Tensor) -> (Tensor, Tensor) {
        self.forward_with(x, (self.context > 0).then_some(h))
    }

    fn inverse_given(&self, z: &Tensor, h: &Tensor) -> (Tensor, Tensor) {
        self.inverse_with(z, (self.context > 0).then_some(h))
    }

    fn data_init_given(&self, x: &Tensor, h: &Tensor) -> Tensor {
        self.forward_given(x, h).0
    }

    fn kind(&self) -> LayerKind {
        LayerKind::Bijection
    }

    fn nfe(&self) -> usize {
        1
    }
}

impl Coupling {
    /// The forward map op by op, the conditioner reading x_a (and h(c) when given).
    fn forward_with(&self, x: &Tensor, h: Option<&Tensor>) -> (Tensor, Tensor) {
        let (x_a, x_b) = self.split(x);
        let cond = self.conditioner_input(&x_a, h);
        if let Transformer::Spline { bins, bound } = self.transformer {
            let (z_b, v) = self.spline(&cond, &x_b, bins, bound, false);
            return (self.join(&x_a, &z_b), v);
        }
        let (log_s, t) = self.params(&cond);
        match log_s {
            Some(log_s) => {
                let z_b = t.addcmul(&x_b, &log_s.exp());
                (self.join(&x_a, &z_b), log_s.sum_dim_intlist(1, false, None))
            }
            None => (self.join(&x_a, &(x_b + t)), Tensor::zeros([x.size()[0]], (x.kind(), x.device()))),
        }
    }

    /// The inverse op by op.
    fn inverse_with(&self, z: &Tensor, h: Option<&Tensor>) -> (Tensor, Tensor) {
        let (z_a, z_b) = self.split(z);
        let cond = self.conditioner_input(&z_a, h);
        if let Transformer::Spline { bins, bound } = self.transformer {
            let (x_b, v) = self.spline(&cond, &z_b, bins, bound, true);
            return (self.join(&z_a, &x_b), v);
        }
        let (log_s, t) = self.params(&cond);
        match log_s {
            Some(log_s) => {
                let x_b = (z_b - t) * (-&log_s).exp();
                (self.join(&z_a, &x_b), -log_s.sum_dim_intlist(1, false, None))
            }
            None => (self.join(&z_a, &(z_b - t)), Tensor::zeros([z.size()[0]], (z.kind(), z.device()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flows::testing::check_bijection;

    fn check(dim: i64, transformer: Transformer, parity: bool) {
        check_bijection(dim, |p| Box::new(Coupling::new(p, dim, &[16, 16], Activation::Tanh, transformer, parity, Conditioner::Shared).unwrap()));
    }

    #[test]
    fn separate_conditioner_coupling_is_a_correct_bijection_and_starts_away_from_the_identity() {
        for (dim, parity) in [(2, false), (3, true)] {
            let t = Transformer::Affine(ScaleBound::ScaledTanh);
            check_bijection(dim, |p| Box::new(Coupling::new(p, dim, &[16, 16], Activation::Relu, t, parity, Conditioner::Separate).unwrap()));
        }
        tch::manual_seed(0);
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let c = Coupling::new(&vs.root(), 2, &[8], Activation::Relu, Transformer::Affine(ScaleBound::ScaledTanh), false, Conditioner::Separate).unwrap();
        let x = Tensor::randn([64, 2], (tch::Kind::Float, tch::Device::Cpu));
        let (z, ldj) = c.forward(&x);
        assert!((z - &x).abs().max().double_value(&[]) > 1e-3, "random output layers: not the identity at init");
        assert!(ldj.abs().max().double_value(&[]) <= (-1.0f64).exp() + 1e-6, "|log s| <= e^-1 at init");
        let spline = Transformer::Spline { bins: 4, bound: 3.0 };
        assert!(Coupling::new(&vs.root(), 2, &[8], Activation::Relu, spline, false, Conditioner::Separate).is_err());
    }

    /// The fused node (one autograd node, hand-written backward) against the op-by-op coupling under autograd:
    /// outputs, and the gradients of every input and parameter for losses reading z, ldj or both.
    #[test]
    fn the_fused_coupling_equals_the_op_by_op_one_in_value_and_every_gradient() {
        use tch::{Device, Kind};
        for (act, dim, parity, hidden) in [(Activation::Relu, 2, false, vec![16, 16]), (Activation::Tanh, 5, true, vec![7]),
                                            (Activation::Silu, 4, false, vec![9, 5, 6]), (Activation::Relu, 3, true, vec![12])] {
            tch::manual_seed(4);
            let vs = nn::VarStore::new(Device::Cpu);
            let c = Coupling::new(&vs.root(), dim, &hidden, act, Transformer::Affine(ScaleBound::Tanh), parity, Conditioner::Shared).unwrap();
            // Leave the zero-initialised output layer: move every parameter so log s and t are far from 0.
            tch::no_grad(|| {
                for v in vs.trainable_variables() {
                    let _ = v.shallow_clone().g_add_(&(v.randn_like() * 0.5));
                }
            });
            let x = Tensor::randn([33, dim], (Kind::Float, Device::Cpu)).set_requires_grad(true);
            assert!(native::coupling::affine_coupling(&x, c.split, c.parity, &c.net.params(), native::coupling::Act::Relu).is_ok());
            assert!(with_fused(true, || c.fused(&x)).is_some() && with_fused(false, || c.fused(&x)).is_none());
            let (wz, wl) = (Tensor::randn([33, dim], (Kind::Float, Device::Cpu)), Tensor::randn([33], (Kind::Float, Device::Cpu)));
            for (use_z, use_ldj) in [(true, true), (true, false), (false, true)] {
                let grads = |fused: bool| {
                    with_fused(fused, || {
                        let (z, ldj) = c.forward(&x);
                        let mut loss = Tensor::zeros([], (Kind::Float, Device::Cpu));
                        if use_z {
                            loss = loss + (&z * &wz).sum(Kind::Float);
                        }
                        if use_ldj {
                            loss = loss + (&ldj * &wl).sum(Kind::Float);
                        }
                        let mut inputs = vec![x.shallow_clone()];
                        inputs.extend(vs.trainable_variables());
                        let g = Tensor::run_backward(&[loss], &inputs, false, false);
                        (z.detach(), ldj.detach(), g)
                    })
                };
                let (z0, l0, g0) = grads(false);
                let (z1, l1, g1) = grads(true);
                let what = format!("{act:?}, dim {dim}, parity {parity}, hidden {hidden:?}, z {use_z}, ldj {use_ldj}");
                assert!((&z0 - &z1).abs().max().double_value(&[]) < 1e-6, "{what}: z");
                assert!((&l0 - &l1).abs().max().double_value(&[]) < 1e-6, "{what}: ldj");
                assert!(l0.abs().max().double_value(&[]) > 0.1, "{what}: the test must exercise log s");
                for (i, (a, b)) in g0.iter().zip(&g1).enumerate() {
                    let d = (a - b).abs().max().double_value(&[]);
                    assert!(d < 1e-5 * (1.0 + a.abs().max().double_value(&[])), "{what}: gradient of input {i} differs by {d}");
                }
                assert!(g1.iter().skip(1).any(|g| g.abs().max().double_value(&[]) > 1e-3), "{what}: parameters get gradients");
            }
        }
    }

    #[test]
    fn affine_tanh_coupling_is_a_correct_bijection() {
        check(2, Transformer::Affine(ScaleBound::Tanh), false);
        check(5, Transformer::Affine(ScaleBound::Tanh), true);
    }

    #[test]
    fn affine_softplus_coupling_is_a_correct_bijection() {
        check(3, Transformer::Affine(ScaleBound::Softplus), false);
        check(4, Transformer::Affine(ScaleBound::Softplus), true);
    }

    #[test]
    fn affine_sigmoid_coupling_is_a_correct_bijection() {
        check(3, Transformer::Affine(ScaleBound::Sigmoid), true);
    }

    #[test]
    fn affine_scaled_tanh_coupling_is_a_correct_bijection() {
        check(2, Transformer::Affine(ScaleBound::ScaledTanh), false);
        check(3, Transformer::Affine(ScaleBound::ScaledTanh), true);
    }

    #[test]
    fn spline_coupling_is_a_correct_bijection_inside_and_in_the_tails() {
        check(2, Transformer::Spline { bins: 8, bound: 3.0 }, false);
        check(5, Transformer::Spline { bins: 5, bound: 1.0 }, true);
    }

    #[test]
    fn additive_coupling_is_a_correct_bijection() {
        check(2, Transformer::Additive, true);
        check(5, Transformer::Additive, false);
    }
}
