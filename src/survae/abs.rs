//! The absolute-value surjection (Nielsen et al. 2020, §3.2 and Table 3): z = |x| element-wise, an inference
//! surjection. The lost sign s = sign(x) is modelled by q(s | z): a learned classifier σ(l(z)) or the fixed 1/2, so
//! V = log q(s | z) (|∂z/∂x| = 1 on each orthant): -D log 2 with the fixed classifier. Sampling draws s ~ q(s | z).
//! The learned logits are l_i(z) = z_i g_i(z): at z_i = 0 both signs get 1/2, so the density is continuous across
//! the axis (either sign may be assigned to x_i = 0). `survae::fold` gives z its density.
use crate::layer::{Layer, LayerKind};
use crate::nets::{Activation, Mlp};
use anyhow::Result;
use tch::{nn, Tensor};

#[derive(Debug)]
pub struct Abs {
    /// z -> logits of P(s_i = +1 | z); None for the fixed 1/2.
    classifier: Option<Mlp>,
}

impl Abs {
    /// On [batch, dim] data; `hidden` = None gives the fixed-1/2 variant.
    pub fn new(path: &nn::Path, dim: i64, hidden: Option<&[i64]>) -> Result<Self> {
        let classifier = match hidden {
            Some(h) => Some(Mlp::new(&path.sub("classifier"), dim, h, dim, Activation::Relu, true)?),
            None => None,
        };
        Ok(Abs { classifier })
    }

    /// Logits of P(s = +1 | z): z ⊙ g(z) (0 on the axes), zeros for the fixed variant.
    fn logits(&self, z: &Tensor) -> Tensor {
        match &self.classifier {
            Some(net) => net.forward(z) * z,
            None => z.zeros_like(),
        }
    }

    /// log q(s | z) per example for signs s ∈ {-1, +1}.
    pub fn log_q(&self, s: &Tensor, z: &Tensor) -> Tensor {
        (self.logits(z) * s).log_sigmoid().sum_dim_intlist(1, false, None)
    }

    /// Signs s ~ q(s | z), ±1.
    pub fn draw_signs(&self, z: &Tensor) -> Tensor {
        let p = self.logits(z).sigmoid();
        crate::rows::rand_like(&p).lt_tensor(&p).to_kind(z.kind()) * 2.0 - 1.0
    }
}

impl Layer for Abs {
    fn forward(&self, x: &Tensor) -> (Tensor, Tensor) {
        let z = x.abs();
        let s = x.ge(0.0).to_kind(x.kind()) * 2.0 - 1.0;
        let v = self.log_q(&s, &z);
        (z, v)
    }

    fn inverse(&self, z: &Tensor) -> (Tensor, Tensor) {
        let s = self.draw_signs(z);
        let v = self.log_q(&s, z);
        (z * s, -v)
    }

    fn kind(&self) -> LayerKind {
        LayerKind::InferenceSurjection
    }

    fn nfe(&self) -> usize {
        usize::from(self.classifier.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn fixed_sign_probability_contributes_minus_log_2_per_dimension() {
        let vs = nn::VarStore::new(Device::Cpu);
        let abs = Abs::new(&vs.root(), 3, None).unwrap();
        let x = Tensor::randn([5, 3], (Kind::Float, Device::Cpu));
        let (z, v) = abs.forward(&x);
        assert!(z.equal(&x.abs()));
        assert!((v + 3.0 * 2f64.ln()).abs().max().double_value(&[]) < 1e-6);
    }
}
