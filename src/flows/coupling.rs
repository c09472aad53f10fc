//! Coupling layers: affine (RealNVP, Dinh et al. 2017, eq. 7-8) and additive (NICE, Dinh et al. 2015, eq. 5).
//!
//! The input is split into a conditioning half x_a and a transformed half x_b; a network reads x_a and sets the
//! element-wise transform of x_b, so the Jacobian is triangular and log|det| = Σ log s.
use crate::layer::{Layer, LayerKind};
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
}

impl ScaleBound {
    /// log s from the conditioner's raw output h.
    pub fn log_scale(self, raw: &Tensor) -> Tensor {
        match self {
            ScaleBound::Tanh => raw.tanh(),
            ScaleBound::Softplus => ((raw + 0.541_324_854_612_918_1).softplus() + 1e-3).log(),
            ScaleBound::Sigmoid => (raw + 2.0).log_sigmoid(),
        }
    }
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

/// A coupling layer on inputs of shape [batch, dim].
#[derive(Debug)]
pub struct Coupling {
    net: Mlp,
    transformer: Transformer,
    /// Size of the first half; the halves are x[:, ..split] and x[:, split..].
    split: i64,
    dim: i64,
    /// false: the first half conditions the second; true: the second conditions the first.
    parity: bool,
}

impl Coupling {
    pub fn new(
        path: &nn::Path,
        dim: i64,
        hidden: &[i64],
        act: Activation,
        transformer: Transformer,
        parity: bool,
    ) -> Result<Self> {
        anyhow::ensure!(dim >= 2, "a coupling layer needs at least 2 dimensions, got {dim}");
        let split = dim / 2;
        let (d_cond, d_trans) = if parity { (dim - split, split) } else { (split, dim - split) };
        let d_out = match transformer {
            Transformer::Affine(_) => 2 * d_trans,
            Transformer::Additive => d_trans,
            Transformer::Spline { bins, .. } => {
                anyhow::ensure!(bins >= 2, "a spline needs at least 2 bins, got {bins}");
                (3 * bins - 1) * d_trans
            }
        };
        let net = Mlp::new(&path.sub("net"), d_cond, hidden, d_out, act, true)?;
        Ok(Coupling { net, transformer, split, dim, parity })
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

    /// The spline of x_b (or its inverse) given x_a, and Σ log|derivative| per example.
    fn spline(&self, x_a: &Tensor, input: &Tensor, bins: i64, bound: f64, inverse: bool) -> (Tensor, Tensor) {
        let (b, d) = (input.size()[0], input.size()[1]);
        let h = self.net.forward(x_a).view([b, d, 3 * bins - 1]);
        let (w, ht, dv) = (h.narrow(2, 0, bins), h.narrow(2, bins, bins), h.narrow(2, 2 * bins, bins - 1));
        let p = super::spline::SplineParams { widths: &w, heights: &ht, derivatives: &dv };
        let (out, log_grad) = super::spline::rational_quadratic(input, &p, bound, inverse);
        (out, log_grad.sum_dim_intlist(1, false, None))
    }

    /// (log s, t) from the conditioner; log s is None for the additive coupling.
    fn params(&self, x_a: &Tensor) -> (Option<Tensor>, Tensor) {
        let h = self.net.forward(x_a);
        match self.transformer {
            Transformer::Additive | Transformer::Spline { .. } => (None, h),
            Transformer::Affine(bound) => {
                let mut parts = h.split(h.size()[1] / 2, 1);
                let (t, raw) = (parts.pop().expect("two parts"), parts.pop().expect("two parts"));
                (Some(bound.log_scale(&raw)), t)
            }
        }
    }
}

impl Layer for Coupling {
    /// z_b = x_b · exp(log s) + t, V = Σ log s.
    fn forward(&self, x: &Tensor) -> (Tensor, Tensor) {
        let (x_a, x_b) = self.split(x);
        if let Transformer::Spline { bins, bound } = self.transformer {
            let (z_b, v) = self.spline(&x_a, &x_b, bins, bound, false);
            return (self.join(&x_a, &z_b), v);
        }
        let (log_s, t) = self.params(&x_a);
        match log_s {
            Some(log_s) => {
                let z_b = t.addcmul(&x_b, &log_s.exp());
                (self.join(&x_a, &z_b), log_s.sum_dim_intlist(1, false, None))
            }
            None => (self.join(&x_a, &(x_b + t)), Tensor::zeros([x.size()[0]], (x.kind(), x.device()))),
        }
    }

    /// x_b = (z_b - t) · exp(-log s), contribution -Σ log s.
    fn inverse(&self, z: &Tensor) -> (Tensor, Tensor) {
        let (z_a, z_b) = self.split(z);
        if let Transformer::Spline { bins, bound } = self.transformer {
            let (x_b, v) = self.spline(&z_a, &z_b, bins, bound, true);
            return (self.join(&z_a, &x_b), v);
        }
        let (log_s, t) = self.params(&z_a);
        match log_s {
            Some(log_s) => {
                let x_b = (z_b - t) * (-&log_s).exp();
                (self.join(&z_a, &x_b), -log_s.sum_dim_intlist(1, false, None))
            }
            None => (self.join(&z_a, &(z_b - t)), Tensor::zeros([z.size()[0]], (z.kind(), z.device()))),
        }
    }

    fn kind(&self) -> LayerKind {
        LayerKind::Bijection
    }

    fn nfe(&self) -> usize {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flows::testing::check_bijection;

    fn check(dim: i64, transformer: Transformer, parity: bool) {
        check_bijection(dim, |p| Box::new(Coupling::new(p, dim, &[16, 16], Activation::Tanh, transformer, parity).unwrap()));
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
