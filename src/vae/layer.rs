//! The VAE as one stochastic layer (Nielsen et al. 2020, §2: "a VAE is a stochastic transformation"): data -> latent
//! draws z ~ q(z|x) and contributes V = log p(x|z) - log q(z|x); with the prior as the base, log p(z) + V is the
//! single-sample ELBO (Kingma & Welling 2014, eq. 3), a lower bound on log p(x).
use super::decoder::Likelihood;
use super::nets::{Decoder, Encoder};
use crate::dist::normal::{sum_except_batch, LN_2PI};
use crate::layer::{Layer, LayerKind};
use tch::Tensor;

#[derive(Debug)]
pub struct VaeLayer {
    pub encoder: Encoder,
    pub decoder: Decoder,
    pub likelihood: Likelihood,
    /// Generative direction returns the decoder's mean instead of a draw (clean pictures; not a sample of p(x)).
    pub sample_mean: bool,
}

/// log N(z; μ, σ²) summed per example.
pub fn log_normal(z: &Tensor, mu: &Tensor, log_s: &Tensor) -> Tensor {
    let u = (z - mu) * (-log_s).exp();
    sum_except_batch(&(u.square() * -0.5 - log_s - 0.5 * LN_2PI))
}

impl VaeLayer {
    /// z ~ q(z|x) by reparameterisation, and log q(z|x).
    pub fn posterior_sample(&self, x: &Tensor) -> (Tensor, Tensor) {
        let (mu, log_s) = self.encoder.forward(x);
        let z = &mu + log_s.exp() * crate::rows::randn_like(&mu);
        let log_q = log_normal(&z, &mu, &log_s);
        (z, log_q)
    }

    /// log p(x|z) per example.
    pub fn log_likelihood(&self, x: &Tensor, z: &Tensor) -> Tensor {
        self.likelihood.log_prob(&self.decoder.forward(z), x)
    }
}

impl Layer for VaeLayer {
    fn forward(&self, x: &Tensor) -> (Tensor, Tensor) {
        let (z, log_q) = self.posterior_sample(x);
        let v = self.log_likelihood(x, &z) - log_q;
        (z, v)
    }

    /// x ~ p(x|z) (or its mean); contribution log q(z|x) - log p(x|z), the kernel ratio of the generative step.
    fn inverse(&self, z: &Tensor) -> (Tensor, Tensor) {
        let raw = self.decoder.forward(z);
        let x = if self.sample_mean { self.likelihood.mean(&raw) } else { self.likelihood.sample(&raw) };
        let (mu, log_s) = self.encoder.forward(&x);
        let v = log_normal(z, &mu, &log_s) - self.likelihood.log_prob(&raw, &x);
        (x, v)
    }

    fn kind(&self) -> LayerKind {
        LayerKind::Stochastic
    }

    fn nfe(&self) -> usize {
        1
    }
}
