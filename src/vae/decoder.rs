//! Observation models p(x | z) of a VAE decoder: Bernoulli (binarized images), Gaussian (continuous data) and the
//! discretized logistic of 8-bit pixels (Salimans et al. 2017, PixelCNN++ eq. 2), each from the decoder's raw output.
use crate::dist::normal::{sum_except_batch, LN_2PI};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// Smallest log-scale of the Gaussian and logistic decoders (keeps the likelihood bounded).
const MIN_LOG_SCALE: f64 = -7.0;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Likelihood {
    /// x ∈ {0, 1}: log p = Σ x log σ(l) + (1 - x) log σ(-l), from logits l.
    Bernoulli,
    /// x ∈ R: N(μ, σ²) per dimension with μ and log σ from the decoder.
    Gaussian,
    /// 8-bit pixels: P(pixel) = F((y + 1/255 - μ)/s) - F((y - 1/255 - μ)/s), y = pixel/127.5 - 1, F the logistic
    /// CDF with the outer bins extended to ±∞. Returned as log P + D ln 256: the density of the uniformly dequantized
    /// data on [0, 1]^D, so bits/dim follow the flows' formula.
    DiscretizedLogistic,
}

impl Likelihood {
    /// Decoder outputs per data dimension.
    pub fn params_per_dim(self) -> i64 {
        match self {
            Likelihood::Bernoulli => 1,
            Likelihood::Gaussian | Likelihood::DiscretizedLogistic => 2,
        }
    }

    /// (location, log-scale) from raw outputs of shape [batch, 2, event...]; location alone for Bernoulli.
    fn split(raw: &Tensor) -> (Tensor, Tensor) {
        (raw.select(1, 0), raw.select(1, 1).clamp_min(MIN_LOG_SCALE))
    }

    /// log p(x | z) per example from the decoder's raw output [batch, params_per_dim, event...].
    pub fn log_prob(self, raw: &Tensor, x: &Tensor) -> Tensor {
        match self {
            Likelihood::Bernoulli => {
                let logits = raw.select(1, 0);
                sum_except_batch(&-(logits.binary_cross_entropy_with_logits::<Tensor>(x, None, None, tch::Reduction::None)))
            }
            Likelihood::Gaussian => {
                let (mu, log_s) = Self::split(raw);
                let u = (x - mu) * (-&log_s).exp();
                sum_except_batch(&(u.square() * -0.5 - log_s - 0.5 * LN_2PI))
            }
            Likelihood::DiscretizedLogistic => {
                let (mu, log_s) = Self::split(raw);
                let pixel = (x * 256.0).floor().clamp(0.0, 255.0);
                let d = pixel.numel() as f64 / pixel.size()[0] as f64;
                sum_except_batch(&discretized_logistic_log_prob(&pixel, &mu, &log_s)) + d * 256f64.ln()
            }
        }
    }

    /// A draw of x (Bernoulli: 0/1; logistic: pixel values mapped back to (pixel + 0.5)/256) given the raw output.
    pub fn sample(self, raw: &Tensor) -> Tensor {
        match self {
            Likelihood::Bernoulli => raw.select(1, 0).sigmoid().bernoulli(),
            Likelihood::Gaussian => {
                let (mu, log_s) = Self::split(raw);
                &mu + log_s.exp() * crate::rows::randn_like(&mu)
            }
            Likelihood::DiscretizedLogistic => {
                let (mu, log_s) = Self::split(raw);
                let u = crate::rows::rand_like(&mu).clamp(1e-5, 1.0 - 1e-5);
                let y = &mu + log_s.exp() * (u.log() - (-&u + 1.0).log());
                let pixel = ((y + 1.0) * 127.5).round().clamp(0.0, 255.0);
                (pixel + 0.5) / 256.0
            }
        }
    }

    /// The decoder's mean in data space (Bernoulli: probabilities; logistic: the location as a pixel intensity).
    pub fn mean(self, raw: &Tensor) -> Tensor {
        match self {
            Likelihood::Bernoulli => raw.select(1, 0).sigmoid(),
            Likelihood::Gaussian => raw.select(1, 0),
            Likelihood::DiscretizedLogistic => ((raw.select(1, 0) + 1.0) * 0.5).clamp(0.0, 1.0),
        }
    }
}

/// log P(pixel) element-wise under the discretized logistic with location μ and log-scale log s on y ∈ [-1, 1].
pub fn discretized_logistic_log_prob(pixel: &Tensor, mu: &Tensor, log_s: &Tensor) -> Tensor {
    let y = pixel / 127.5 - 1.0;
    let inv_s = (-log_s).exp();
    let plus = (&y + 1.0 / 255.0 - mu) * &inv_s;
    let minus = (&y - 1.0 / 255.0 - mu) * &inv_s;
    // log F(plus) for the bottom bin, log(1 - F(minus)) for the top bin, log(F(plus) - F(minus)) inside; the inner
    // difference uses the density at the centre when it underflows (PixelCNN++'s safeguard).
    let log_cdf_plus = plus.log_sigmoid();
    let log_one_minus_cdf_minus = -minus.softplus();
    let diff = plus.sigmoid() - minus.sigmoid();
    let mid = (&y - mu) * &inv_s;
    let log_pdf_mid = &mid - log_s - mid.softplus() * 2.0 + (2.0f64 / 255.0).ln();
    let inner = diff.clamp_min(1e-12).log().where_self(&diff.gt(1e-5), &log_pdf_mid);
    let top = log_one_minus_cdf_minus.where_self(&pixel.ge(255.0), &inner);
    log_cdf_plus.where_self(&pixel.le(0.0), &top).to_kind(Kind::Float)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn discretized_logistic_sums_to_one_over_the_256_values() {
        let pixel = Tensor::arange(256, (Kind::Float, Device::Cpu));
        for (mu, log_s) in [(0.0, -2.0), (0.7, -5.0), (-1.0, -6.9), (0.2, 0.5)] {
            let lp = discretized_logistic_log_prob(&pixel, &Tensor::from(mu as f32), &Tensor::from(log_s as f32));
            let total = lp.to_kind(Kind::Double).exp().sum(Kind::Double).double_value(&[]);
            assert!((total - 1.0).abs() < 2e-3, "μ {mu}, log s {log_s}: total {total}");
        }
    }

    #[test]
    fn bernoulli_and_gaussian_match_their_closed_forms() {
        let x = Tensor::from_slice(&[1.0f32, 0.0, 1.0]).view([1, 3]);
        let logits = Tensor::from_slice(&[0.5f32, -1.0, 2.0]).view([1, 1, 3]);
        let s = |v: f64| 1.0 / (1.0 + (-v).exp());
        let expected = s(0.5).ln() + (1.0 - s(-1.0)).ln() + s(2.0).ln();
        assert!((Likelihood::Bernoulli.log_prob(&logits, &x).double_value(&[0]) - expected).abs() < 1e-5);
        let raw = Tensor::from_slice(&[0.0f32, 1.0, 0.5, 0.3, 0.0, -0.2]).view([1, 2, 3]);
        let g = |x: f64, m: f64, ls: f64| -0.5 * ((x - m) / ls.exp()).powi(2) - ls - 0.5 * LN_2PI;
        let expected = g(1.0, 0.0, 0.3) + g(0.0, 1.0, 0.0) + g(1.0, 0.5, -0.2);
        assert!((Likelihood::Gaussian.log_prob(&raw, &x).double_value(&[0]) - expected).abs() < 1e-5);
    }

    #[test]
    fn logistic_samples_land_on_pixel_centres_near_the_location() {
        let raw = Tensor::stack(&[Tensor::full([2000, 4], 0.2, (Kind::Float, Device::Cpu)), Tensor::full([2000, 4], -4.0, (Kind::Float, Device::Cpu))], 1);
        let x = Likelihood::DiscretizedLogistic.sample(&raw);
        let pixel = &x * 256.0 - 0.5;
        assert!((&pixel - pixel.round()).abs().max().double_value(&[]) < 1e-3);
        let mean = (x.mean(None).double_value(&[]) * 2.0) - 1.0;
        assert!((mean - 0.2).abs() < 0.01, "{mean}");
    }
}
