//! Where continuous-time models (score SDEs, DiffFlow) work: images as y = 2x - 1 of the dequantized data in \[0,1]^D,
//! vectors as y = x / data_scale; log p_x(x) = log p_y(y) + log|dy/dx|.
use tch::Tensor;

#[derive(Clone, Copy, Debug)]
pub struct ModelSpace {
    pub images: bool,
    pub data_scale: f64,
    /// D, the event size.
    pub dim: i64,
}

impl ModelSpace {
    pub fn to_model(&self, x: &Tensor) -> Tensor {
        if self.images { x * 2.0 - 1.0 } else { x / self.data_scale }
    }

    /// Back to data space (images clamped to [0, 1]).
    pub fn to_data(&self, y: &Tensor) -> Tensor {
        if self.images { ((y + 1.0) * 0.5).clamp(0.0, 1.0) } else { y * self.data_scale }
    }

    /// log|dy/dx| = D ln 2 (images) or -D ln data_scale (vectors).
    pub fn log_jacobian(&self) -> f64 {
        let d = self.dim as f64;
        if self.images { d * std::f64::consts::LN_2 } else { -d * self.data_scale.ln() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn round_trip_and_the_jacobian_is_the_log_determinant() {
        let x = Tensor::rand([4, 3], (Kind::Double, Device::Cpu));
        for s in [ModelSpace { images: true, data_scale: 1.0, dim: 3 }, ModelSpace { images: false, data_scale: 2.5, dim: 3 }] {
            assert!((s.to_data(&s.to_model(&x)) - &x).abs().max().double_value(&[]) < 1e-12);
            let scale = (s.to_model(&x).get(0).get(0).double_value(&[]) - s.to_model(&x.zeros_like()).get(0).get(0).double_value(&[]))
                / x.get(0).get(0).double_value(&[]);
            assert!((s.log_jacobian() - 3.0 * scale.ln()).abs() < 1e-9);
        }
    }
}
