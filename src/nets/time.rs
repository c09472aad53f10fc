//! Time conditioning: sinusoidal features of a scalar time (Vaswani et al. 2017; Ho et al. 2020, §4) and an MLP
//! that reads (x, features(t)) for 2D diffusion, score and DiffFlow models.
use super::{Activation, Mlp};
use anyhow::Result;
use tch::{nn, Kind, Tensor};

/// [sin(t·ω_k), cos(t·ω_k)] with ω_k = max_freq^(k/(half-1)), k = 0..half: shape [batch, dim] for t of shape \[batch].
/// Time is expected in [0, 1] (continuous models) or scaled to it (discrete steps t/T); `max_freq` sets the finest
/// resolution (1000 resolves 1000 steps).
pub fn sinusoidal(t: &Tensor, dim: i64, max_freq: f64) -> Tensor {
    let half = (dim / 2).max(1);
    let k = Tensor::arange(half, (Kind::Float, t.device()));
    let freqs = (k * (max_freq.ln() / (half - 1).max(1) as f64)).exp();
    let args = t.to_kind(Kind::Float).unsqueeze(1) * freqs.unsqueeze(0);
    Tensor::cat(&[args.sin(), args.cos()], 1)
}

/// The default highest frequency of the sinusoidal time features: resolves 1000 discrete steps of t in [0, 1].
pub const MAX_FREQ: f64 = 1000.0;

/// out = MLP([x, sinusoidal(t)]): a time-conditioned network on vectors, output of the same size as x by default.
#[derive(Debug)]
pub struct TimeMlp {
    mlp: Mlp,
    emb_dim: i64,
    /// Width of the conditioning features concatenated after the time features (0: none).
    cond: i64,
    /// Highest frequency of the time features (`MAX_FREQ` unless `with_max_freq`).
    max_freq: f64,
}

impl TimeMlp {
    pub fn new(path: &nn::Path, d_in: i64, hidden: &[i64], d_out: i64, emb_dim: i64, act: Activation) -> Result<Self> {
        Self::conditional(path, d_in, hidden, d_out, emb_dim, act, 0)
    }

    /// out = MLP([x, sinusoidal(t), h]) with conditioning features h of width `cond` (0 gives `new`).
    pub fn conditional(path: &nn::Path, d_in: i64, hidden: &[i64], d_out: i64, emb_dim: i64, act: Activation, cond: i64) -> Result<Self> {
        Ok(TimeMlp { mlp: Mlp::new(path, d_in + emb_dim + cond, hidden, d_out, act, false)?, emb_dim, cond, max_freq: MAX_FREQ })
    }

    /// The same network with time features up to frequency `f` (no variable changes).
    pub fn with_max_freq(mut self, f: f64) -> Self {
        self.max_freq = f;
        self
    }

    /// `t` of shape \[batch] in [0, 1].
    pub fn forward(&self, x: &Tensor, t: &Tensor) -> Tensor {
        let emb = sinusoidal(t, self.emb_dim, self.max_freq).to_kind(x.kind());
        self.mlp.forward(&Tensor::cat(&[x.shallow_clone(), emb], 1))
    }

    /// MLP([x, sinusoidal(t), h]) for a network built with `conditional`; `h` [batch, cond].
    pub fn forward_given(&self, x: &Tensor, t: &Tensor, h: &Tensor) -> Tensor {
        assert_eq!(h.size(), vec![x.size()[0], self.cond], "conditioning features [batch, width] of a conditional time MLP");
        let emb = sinusoidal(t, self.emb_dim, self.max_freq).to_kind(x.kind());
        self.mlp.forward(&Tensor::cat(&[x.shallow_clone(), emb, h.to_kind(x.kind())], 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn features_are_bounded_and_separate_nearby_steps() {
        let t = Tensor::from_slice(&[0.0f32, 0.001, 0.5, 1.0]);
        let f = sinusoidal(&t, 32, 1000.0);
        assert_eq!(f.size(), vec![4, 32]);
        assert!(f.abs().max().double_value(&[]) <= 1.0 + 1e-6);
        let d = (f.get(0) - f.get(1)).norm().double_value(&[]);
        assert!(d > 0.1, "steps 1/1000 apart must be distinguishable, distance {d}");
    }

    #[test]
    fn time_mlp_depends_on_time() {
        let vs = nn::VarStore::new(Device::Cpu);
        let net = TimeMlp::new(&vs.root(), 2, &[16], 2, 16, Activation::Silu).unwrap();
        let x = Tensor::ones([1, 2], (Kind::Float, Device::Cpu));
        let a = net.forward(&x, &Tensor::from_slice(&[0.1f32]));
        let b = net.forward(&x, &Tensor::from_slice(&[0.9f32]));
        assert!((a - b).abs().sum(None).double_value(&[]) > 1e-4);
    }
}
