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
        self.posterior_sample_given(x, None)
    }

    /// z ~ q(z | x, c) and log q(z | x, c), with context features `h` (None: q(z | x)).
    pub fn posterior_sample_given(&self, x: &Tensor, h: Option<&Tensor>) -> (Tensor, Tensor) {
        let (mu, log_s) = self.encoder.forward_given(x, h);
        let z = &mu + log_s.exp() * crate::rows::randn_like(&mu);
        let log_q = log_normal(&z, &mu, &log_s);
        (z, log_q)
    }

    /// log p(x|z) per example.
    pub fn log_likelihood(&self, x: &Tensor, z: &Tensor) -> Tensor {
        self.log_likelihood_given(x, z, None)
    }

    /// log p(x | z, c) per example (None: log p(x | z)).
    pub fn log_likelihood_given(&self, x: &Tensor, z: &Tensor, h: Option<&Tensor>) -> Tensor {
        self.likelihood.log_prob(&self.decoder.forward_given(z, h), x)
    }

    /// V = log p(x | z, c) - log q(z | x, c) at z ~ q(z | x, c).
    fn forward_with(&self, x: &Tensor, h: Option<&Tensor>) -> (Tensor, Tensor) {
        let (z, log_q) = self.posterior_sample_given(x, h);
        let v = self.log_likelihood_given(x, &z, h) - log_q;
        (z, v)
    }

    /// x ~ p(x | z, c) (or its mean); contribution log q(z | x, c) - log p(x | z, c).
    fn inverse_with(&self, z: &Tensor, h: Option<&Tensor>) -> (Tensor, Tensor) {
        let raw = self.decoder.forward_given(z, h);
        let x = if self.sample_mean { self.likelihood.mean(&raw) } else { self.likelihood.sample(&raw) };
        let (mu, log_s) = self.encoder.forward_given(&x, h);
        let v = log_normal(z, &mu, &log_s) - self.likelihood.log_prob(&raw, &x);
        (x, v)
    }
}

impl Layer for VaeLayer {
    fn forward(&self, x: &Tensor) -> (Tensor, Tensor) {
        self.forward_with(x, None)
    }

    /// x ~ p(x|z) (or its mean); contribution log q(z|x) - log p(x|z), the kernel ratio of the generative step.
    fn inverse(&self, z: &Tensor) -> (Tensor, Tensor) {
        self.inverse_with(z, None)
    }

    /// The conditional VAE (Sohn et al. 2015) with the prior p(z) = N(0, I): encoder q(z | x, c), decoder
    /// p(x | z, c), both reading h(c) beside their input.
    fn forward_given(&self, x: &Tensor, h: &Tensor) -> (Tensor, Tensor) {
        self.forward_with(x, Some(h))
    }

    fn inverse_given(&self, z: &Tensor, h: &Tensor) -> (Tensor, Tensor) {
        self.inverse_with(z, Some(h))
    }

    fn kind(&self) -> LayerKind {
        LayerKind::Stochastic
    }

    fn nfe(&self) -> usize {
        1
    }
}
