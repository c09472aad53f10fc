//! MADE (Germain et al. 2015, eq. 12-13) and the masked autoregressive layers built on it, with affine or
//! rational-quadratic spline transformers: MAF (Papamakarios et al. 2017, fast density) and IAF (Kingma et al. 2016,
//! fast sampling).
//!
//! Inputs get degrees 1..D, hidden units degrees in 1..D-1 (cycled), and a weight from a unit of degree m to one of
//! degree m' is kept when m' ≥ m (hidden) or m' > m (output): output i then depends on x_{<i} only.
use crate::layer::{Layer, LayerKind};
use crate::nets::Activation;
use anyhow::{ensure, Result};
use tch::{nn, Tensor};

/// A masked MLP from D inputs to `per_dim` outputs per dimension, each depending only on earlier dimensions.
#[derive(Debug)]
pub struct Made {
    weights: Vec<Tensor>,
    biases: Vec<Tensor>,
    masks: Vec<Tensor>,
    act: Activation,
    dim: i64,
    per_dim: i64,
    /// Context inputs h(c) after the D data inputs, with degree 0: every hidden unit and output may read them.
    context: i64,
}

/// Mask [out, in] keeping m_out ≥ m_in (hidden) or m_out > m_in (strict, output).
fn mask(deg_out: &[i64], deg_in: &[i64], strict: bool) -> Tensor {
    let v: Vec<f32> = deg_out
        .iter()
        .flat_map(|&o| deg_in.iter().map(move |&i| if (strict && o > i) || (!strict && o >= i) { 1.0 } else { 0.0 }))
        .collect();
    Tensor::from_slice(&v).view([deg_out.len() as i64, deg_in.len() as i64])
}

impl Made {
    /// `zero_last` starts the outputs at zero (an identity layer).
    pub fn new(path: &nn::Path, dim: i64, hidden: &[i64], per_dim: i64, act: Activation, zero_last: bool) -> Result<Self> {
        Self::conditional(path, dim, hidden, per_dim, act, zero_last, 0)
    }

    /// A MADE that also reads `context` context features (Papamakarios et al. 2017, §3.4: the conditional MADE):
    /// they get degree 0, so output i depends on x_{<i} and on all of h(c).
    pub fn conditional(path: &nn::Path, dim: i64, hidden: &[i64], per_dim: i64, act: Activation, zero_last: bool, context: i64) -> Result<Self> {
        ensure!(dim >= 1 && per_dim >= 1 && hidden.iter().all(|&h| h > 0) && context >= 0, "MADE sizes must be positive");
        let input: Vec<i64> = (1..=dim).collect();
        let mut degrees = vec![input.iter().copied().chain(std::iter::repeat(0).take(context as usize)).collect::<Vec<i64>>()];
        for &h in hidden {
            degrees.push((0..h).map(|k| k % (dim - 1).max(1) + 1).collect());
        }
        let output: Vec<i64> = (0..per_dim).flat_map(|_| input.iter().copied()).collect();
        degrees.push(output);
        let (mut weights, mut biases, mut masks) = (Vec::new(), Vec::new(), Vec::new());
        let n = degrees.len() - 1;
        for l in 0..n {
            let (d_in, d_out) = (&degrees[l], &degrees[l + 1]);
            let p = path.sub(format!("masked{l}"));
            let bound = 1.0 / (d_in.len() as f64).sqrt();
            let shape = [d_out.len() as i64, d_in.len() as i64];
            let init = if zero_last && l == n - 1 { nn::Init::Const(0.0) } else { nn::Init::Uniform { lo: -bound, up: bound } };
            weights.push(p.var("weight", &shape, init));
            biases.push(p.var("bias", &[shape[0]], init));
            masks.push(mask(d_out, d_in, l == n - 1).to_device(path.device()));
        }
        Ok(Made { weights, biases, masks, act, dim, per_dim, context })
    }

    /// Outputs [batch, per_dim, D]: out[:, k, i] depends on x[:, ..i] only.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        assert!(self.context == 0, "this MADE is conditional: call forward_given with the context");
        self.masked(x)
    }

    /// Outputs [batch, per_dim, D] of a conditional MADE: out[:, k, i] depends on x[:, ..i] and on h(c).
    pub fn forward_given(&self, x: &Tensor, h: &Tensor) -> Tensor {
        self.masked(&Tensor::cat(&[x, &h.to_kind(x.kind())], 1))
    }

    fn masked(&self, x: &Tensor) -> Tensor {
        let last = self.weights.len() - 1;
        let mut h = x.shallow_clone();
        for (l, ((w, b), m)) in self.weights.iter().zip(&self.biases).zip(&self.masks).enumerate() {
            h = h.linear(&(w * m.to_kind(w.kind())), Some(b));
            if l < last {
                h = self.act.apply(&h);
            }
        }
        h.view([-1, self.per_dim, self.dim])
    }
}

/// Which direction is one network pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Autoregressive {
    /// MAF: density in one pass (z_i = (x_i - μ_i(x_<i)) e^{-α_i}), sampling in D passes.
    Maf,
    /// IAF: sampling in one pass (x_i = z_i e^{α_i(z_<i)} + μ_i), density in D passes.
    Iaf,
}

/// The element-wise transformer of an autoregressive layer, with its parameters set by the MADE.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ArTransform {
    /// z_i = (x_i - μ_i) e^{-α_i}, α = tanh(raw) so |α| ≤ 1 per layer (as in our couplings).
    Affine,
    /// z_i = RQ-spline(x_i) with `bins` bins on [-bound, bound], identity outside (Durkan et al. 2019, RQ-NSF (AR)).
    Spline { bins: i64, bound: f64 },
}

impl ArTransform {
    fn params_per_dim(self) -> i64 {
        match self {
            ArTransform::Affine => 2,
            ArTransform::Spline { bins, .. } => 3 * bins - 1,
        }
    }
}

/// An autoregressive layer: z_i = τ(x_i; θ_i(x_<i)) with θ from a MADE; MAF (Papamakarios et al. 2017) or IAF
/// (Kingma et al. 2016) by which direction takes one pass.
#[derive(Debug)]
pub struct MaskedAutoregressive {
    made: Made,
    kind: Autoregressive,
    transform: ArTransform,
    dim: i64,
}

impl MaskedAutoregressive {
    pub fn new(path: &nn::Path, dim: i64, hidden: &[i64], act: Activation, kind: Autoregressive) -> Result<Self> {
        Self::with_transform(path, dim, hidden, act, kind, ArTransform::Affine)
    }

    pub fn with_transform(
        path: &nn::Path,
        dim: i64,
        hidden: &[i64],
        act: Activation,
        kind: Autoregressive,
        transform: ArTransform,
    ) -> Result<Self> {
        Self::conditional(path, dim, hidden, act, kind, transform, 0)
    }

    /// A layer whose MADE also reads h(c) of width `context` (0: unconditional).
    pub fn conditional(
        path: &nn::Path,
        dim: i64,
        hidden: &[i64],
        act: Activation,
        kind: Autoregressive,
        transform: ArTransform,
        context: i64,
    ) -> Result<Self> {
        if let ArTransform::Spline { bins, bound } = transform {
            ensure!(bins >= 2, "a spline needs at least 2 bins, got {bins}");
            ensure!(bound > 0.0, "model.bound must be positive, got {bound}");
        }
        let made = Made::conditional(&path.sub("made"), dim, hidden, transform.params_per_dim(), act, true, context)?;
        Ok(MaskedAutoregressive { made, kind, transform, dim })
    }

    /// τ(input; θ(cond, h(c))) element-wise (or τ⁻¹ with `inverse`), and Σ log|∂out/∂input| per example; `cond` is
    /// what the MADE reads autoregressively (x, z, or the partial solution).
    fn elementwise(&self, cond: &Tensor, input: &Tensor, inverse: bool, ctx: Option<&Tensor>) -> (Tensor, Tensor) {
        let h = match ctx {
            Some(c) => self.made.forward_given(cond, c),
            None => self.made.forward(cond),
        };
        match self.transform {
            ArTransform::Affine => {
                let (mu, alpha) = (h.select(1, 0), h.select(1, 1).tanh());
                let ldj = alpha.sum_dim_intlist(1, false, None);
                if inverse {
                    (input * alpha.exp() + mu, ldj)
                } else {
                    ((input - mu) * (-alpha).exp(), -ldj)
                }
            }
            ArTransform::Spline { bins, bound } => {
                let h = h.transpose(1, 2); // [batch, D, 3K - 1]
                let (w, ht, dv) = (h.narrow(2, 0, bins), h.narrow(2, bins, bins), h.narrow(2, 2 * bins, bins - 1));
                let p = super::spline::SplineParams { widths: &w, heights: &ht, derivatives: &dv };
                let (out, log_grad) = super::spline::rational_quadratic(input, &p, bound, inverse);
                (out, log_grad.sum_dim_intlist(1, false, None))
            }
        }
    }

    /// Solves out = τ^{±1}(input; θ(out_<i)) for out, one dimension per pass (D passes), then its log-derivative.
    fn sequential(&self, input: &Tensor, inverse: bool, ctx: Option<&Tensor>) -> (Tensor, Tensor) {
        let mut out = input.zeros_like();
        for _ in 0..self.dim {
            out = self.elementwise(&out, input, inverse, ctx).0;
        }
        let (_, ldj) = self.elementwise(&out, input, inverse, ctx);
        (out, ldj)
    }

    fn forward_with(&self, x: &Tensor, ctx: Option<&Tensor>) -> (Tensor, Tensor) {
        match self.kind {
            Autoregressive::Maf => self.elementwise(x, x, false, ctx),
            Autoregressive::Iaf => self.sequential(x, false, ctx),
        }
    }

    fn inverse_with(&self, z: &Tensor, ctx: Option<&Tensor>) -> (Tensor, Tensor) {
        match self.kind {
            Autoregressive::Maf => self.sequential(z, true, ctx),
            Autoregressive::Iaf => self.elementwise(z, z, true, ctx),
        }
    }
}

impl Layer for MaskedAutoregressive {
    /// Data -> latent. MAF: z = τ(x; θ(x_<i)) in one pass. IAF: z = τ(x; θ(z_<i)), solved in D passes.
    fn forward(&self, x: &Tensor) -> (Tensor, Tensor) {
        self.forward_with(x, None)
    }

    /// Latent -> data. MAF: x = τ⁻¹(z; θ(x_<i)) in D passes. IAF: x = τ⁻¹(z; θ(z_<i)) in one pass.
    fn inverse(&self, z: &Tensor) -> (Tensor, Tensor) {
        self.inverse_with(z, None)
    }

    fn forward_given(&self, x: &Tensor, h: &Tensor) -> (Tensor, Tensor) {
        self.forward_with(x, (self.made.context > 0).then_some(h))
    }

    fn inverse_given(&self, z: &Tensor, h: &Tensor) -> (Tensor, Tensor) {
        self.inverse_with(z, (self.made.context > 0).then_some(h))
    }

    fn data_init_given(&self, x: &Tensor, h: &Tensor) -> Tensor {
        self.forward_given(x, h).0
    }

    fn kind(&self) -> LayerKind {
        LayerKind::Bijection
    }

    /// Network passes of the sampling direction: MAF D + 1 (D to build x, one for the log-derivative), IAF 1.
    fn nfe(&self) -> usize {
        match self.kind {
            Autoregressive::Maf => self.dim as usize + 1,
            Autoregressive::Iaf => 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flows::testing::check_bijection;
    use tch::{Device, Kind};

/// The dense Jacobian ∂out/∂x of a MADE at `x` [1, D] (rows: outputs flattened), for structure tests.
fn made_jacobian(made: &Made, x: &Tensor) -> Tensor {
    let x = x.detach().set_requires_grad(true);
    let out = made.forward(&x).flatten(0, -1);
    let rows: Vec<Tensor> = (0..out.size()[0])
        .map(|k| Tensor::run_backward(&[out.get(k)], &[&x], true, false).remove(0).flatten(0, -1))
        .collect();
    Tensor::stack(&rows, 0).to_device(Device::Cpu).to_kind(Kind::Double)
}

    #[test]
    fn made_outputs_depend_only_on_earlier_inputs() {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let d = 5;
        let made = Made::new(&vs.root(), d, &[32, 32], 2, Activation::Tanh, false).unwrap();
        let j = made_jacobian(&made, &Tensor::randn([1, d], (Kind::Float, Device::Cpu)));
        for k in 0..2 {
            for i in 0..d {
                for m in 0..d {
                    let g = j.double_value(&[k * d + i, m]).abs();
                    if m >= i {
                        assert_eq!(g, 0.0, "output {k},{i} depends on input {m}");
                    } else {
                        assert!(g > 0.0, "output {k},{i} should see input {m} (masks too strict)");
                    }
                }
            }
        }
    }

    #[test]
    fn maf_and_iaf_are_correct_bijections() {
        for kind in [Autoregressive::Maf, Autoregressive::Iaf] {
            check_bijection(4, |p| Box::new(MaskedAutoregressive::new(p, 4, &[16, 16], Activation::Tanh, kind).unwrap()));
        }
    }

    #[test]
    fn spline_maf_and_iaf_are_correct_bijections_inside_and_in_the_tails() {
        // Bound 1 puts some of the N(0, 1) inputs in the linear tails.
        for kind in [Autoregressive::Maf, Autoregressive::Iaf] {
            let t = ArTransform::Spline { bins: 6, bound: 1.0 };
            check_bijection(4, |p| Box::new(MaskedAutoregressive::with_transform(p, 4, &[16, 16], Activation::Tanh, kind, t).unwrap()));
        }
    }
}
