//! The Fourier-feature MLP of DiffFlow's 2D experiments (Zhang & Chen 2021, App. D): time enters through
//! sin/cos(ω_k t + φ_k) with fixed frequencies ω_k spread linearly over [0.1, 100] and learned phases φ_k, is embedded
//! by a two-layer MLP and added to a linear embedding of x; GELU layers of constant width follow.
use anyhow::{bail, Result};
use tch::{nn, nn::Module, Kind, Tensor};

#[derive(Debug)]
pub struct FourierMlp {
    freqs: Tensor,
    phase: Tensor,
    input: nn::Linear,
    time1: nn::Linear,
    time2: nn::Linear,
    layers: Vec<nn::Linear>,
    out: nn::Linear,
    /// Linear map of conditioning features added to the time embedding (a conditional network only).
    cond: Option<nn::Linear>,
}

impl FourierMlp {
    /// `width` channels, `depth` hidden GELU layers, input and output of size `d`.
    pub fn new(path: &nn::Path, d: i64, width: i64, depth: usize) -> Result<Self> {
        if d <= 0 || width <= 1 || depth == 0 {
            bail!("Fourier MLP sizes must be positive: dim {d}, width {width}, depth {depth}");
        }
        let c = nn::LinearConfig::default();
        Ok(FourierMlp {
            freqs: Tensor::linspace(0.1, 100.0, width, (Kind::Float, path.device())).unsqueeze(0),
            phase: path.var("phase", &[1, width], nn::Init::Randn { mean: 0.0, stdev: 1.0 }),
            input: nn::linear(path / "input", d, width, c),
            time1: nn::linear(path / "time1", 2 * width, width, c),
            time2: nn::linear(path / "time2", width, width, c),
            layers: (0..depth).map(|i| nn::linear(path / format!("layer{i}"), width, width, c)).collect(),
            out: nn::linear(path / "out", width, d, c),
            cond: None,
        })
    }

    /// The same network reading conditioning features of width `e`, embedded linearly and added to the time
    /// embedding (created after every other variable, so the rest initialises as in `new`).
    pub fn conditional(path: &nn::Path, d: i64, width: i64, depth: usize, e: i64) -> Result<Self> {
        let mut net = Self::new(path, d, width, depth)?;
        net.cond = Some(nn::linear(path / "cond", e, width, Default::default()));
        Ok(net)
    }

    /// The time embedding MLP(sin, cos(ω t + φ)) of `t` [batch] (or [1], broadcast over the batch).
    fn embed(&self, t: &Tensor) -> Tensor {
        let arg = t.unsqueeze(1) * &self.freqs + &self.phase;
        let feats = Tensor::cat(&[arg.sin(), arg.cos()], 1);
        self.time2.forward(&self.time1.forward(&feats).gelu("none"))
    }

    /// `t` of shape \[batch] (or \[1]), in [0, 1].
    pub fn forward(&self, x: &Tensor, t: &Tensor) -> Tensor {
        self.body(x, &self.embed(&t.to_kind(x.kind())))
    }

    fn body(&self, x: &Tensor, emb: &Tensor) -> Tensor {
        let mut h = (self.input.forward(x) + emb).gelu("none");
        for l in &self.layers {
            h = l.forward(&h).gelu("none");
        }
        self.out.forward(&h)
    }
}

impl super::TimeNet for FourierMlp {
    fn forward_t(&self, x: &Tensor, t: &Tensor) -> Tensor {
        self.forward(x, t)
    }

    /// One embedding row for the whole batch.
    fn forward_at(&self, x: &Tensor, t: f64) -> Tensor {
        self.body(x, &self.embed(&Tensor::full([1], t, (x.kind(), x.device()))))
    }

    fn forward_tc(&self, x: &Tensor, t: &Tensor, h: &Tensor) -> Tensor {
        let cond = self.cond.as_ref().expect("a Fourier MLP built without conditioning features (FourierMlp::conditional)");
        self.body(x, &(self.embed(&t.to_kind(x.kind())) + cond.forward(&h.to_kind(x.kind()))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn the_2d_protocol_network_has_about_100k_parameters_and_depends_on_time() {
        let vs = nn::VarStore::new(Device::Cpu);
        let net = FourierMlp::new(&vs.root(), 2, 128, 3).unwrap();
        let n: i64 = vs.trainable_variables().iter().map(|t| t.numel() as i64).sum();
        assert!((95_000..105_000).contains(&n), "{n} parameters");
        let x = Tensor::ones([1, 2], (Kind::Float, Device::Cpu));
        let a = net.forward(&x, &Tensor::from_slice(&[0.1f32]));
        let b = net.forward(&x, &Tensor::from_slice(&[0.9f32]));
        assert_eq!(a.size(), vec![1, 2]);
        assert!((&a - b).abs().sum(None).double_value(&[]) > 1e-4);
        let same = crate::nets::TimeNet::forward_at(&net, &x, 0.1);
        assert!((a - same).abs().max().double_value(&[]) < 1e-6, "one embedding for the batch gives the same output");
    }
}
