//! ActNorm (Kingma & Dhariwal 2018, Table 1): z = (x + b) ⊙ exp(log s) per channel, with data-dependent
//! initialisation so that the first batch leaves with zero mean and unit variance per channel.
use crate::layer::{Layer, LayerKind};
use tch::{nn, Tensor};

/// ActNorm over channel dimension 1 of inputs [batch, C] or [batch, C, ...spatial].
#[derive(Debug)]
pub struct ActNorm {
    bias: Tensor,
    log_scale: Tensor,
}

impl ActNorm {
    pub fn new(path: &nn::Path, channels: i64) -> Self {
        ActNorm { bias: path.zeros("bias", &[channels]), log_scale: path.zeros("log_scale", &[channels]) }
    }

    /// Parameters viewed as [1, C, 1, ...] to broadcast against `x`.
    fn view(&self, p: &Tensor, x: &Tensor) -> Tensor {
        let mut shape = vec![1i64; x.dim()];
        shape[1] = -1;
        p.view(shape.as_slice())
    }

    /// Σ log s times the number of positions each channel covers, per example.
    fn log_det(&self, x: &Tensor) -> Tensor {
        let spatial: i64 = x.size()[2..].iter().product();
        (self.log_scale.sum(None) * spatial as f64).expand([x.size()[0]], false)
    }
}

impl Layer for ActNorm {
    fn forward(&self, x: &Tensor) -> (Tensor, Tensor) {
        let z = (x + self.view(&self.bias, x)) * self.view(&self.log_scale, x).exp();
        (z, self.log_det(x))
    }

    fn inverse(&self, z: &Tensor) -> (Tensor, Tensor) {
        let x = z * (-self.view(&self.log_scale, z)).exp() - self.view(&self.bias, z);
        (x, -self.log_det(z))
    }

    fn kind(&self) -> LayerKind {
        LayerKind::Bijection
    }

    /// b = -mean, log s = -log(std + 1e-6) over every dimension but the channel.
    fn data_init(&self, x: &Tensor) -> Tensor {
        let c = x.size()[1];
        let flat = x.transpose(0, 1).reshape([c, -1]);
        let mean = flat.mean_dim(1, false, None);
        let std = flat.std_dim(1, false, false);
        tch::no_grad(|| {
            self.bias.shallow_clone().copy_(&(-mean));
            self.log_scale.shallow_clone().copy_(&(-(std + 1e-6).log()));
        });
        self.forward(x).0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flows::testing::check_bijection;
    use tch::{Device, Kind};

    #[test]
    fn actnorm_is_a_correct_bijection() {
        check_bijection(3, |p| {
            let a = ActNorm::new(p, 3);
            let _ = a.data_init(&(Tensor::randn([64, 3], (Kind::Double, Device::Cpu)) * 3.0 + 1.0).to_kind(Kind::Float));
            Box::new(a)
        });
    }

    #[test]
    fn data_init_standardises_the_batch() {
        let vs = nn::VarStore::new(Device::Cpu);
        let a = ActNorm::new(&vs.root(), 4);
        let x = Tensor::randn([512, 4], (Kind::Float, Device::Cpu)) * 5.0 - 2.0;
        let z = a.data_init(&x);
        let mean = z.mean_dim(0, false, None).abs().max().double_value(&[]);
        let std = z.std_dim(0, false, false);
        assert!(mean < 1e-4, "mean {mean}");
        assert!((std - 1.0).abs().max().double_value(&[]) < 1e-3);
    }

    #[test]
    fn image_log_det_counts_every_position() {
        let vs = nn::VarStore::new(Device::Cpu);
        let a = ActNorm::new(&vs.root(), 2);
        tch::no_grad(|| a.log_scale.shallow_clone().copy_(&Tensor::from_slice(&[0.5f32, -0.2])));
        let x = Tensor::randn([3, 2, 4, 5], (Kind::Float, Device::Cpu));
        let (_, v) = a.forward(&x);
        assert!((v.double_value(&[0]) - 0.3 * 20.0).abs() < 1e-5);
    }
}
