//! What is known of a data set's true law beyond its samples: its density, a sharp support, its modes. The
//! expressivity measures (`data::truth`) compare a model against these; a law says `None` for what it does not know.
use tch::{Device, Kind, Tensor};

/// A data set's true law, as far as it is known in closed form. Inputs are [n, D] points on the CPU.
pub trait KnownLaw {
    /// log p(x) in nats (f64), where the density is known.
    fn log_density(&self, _x: &Tensor) -> Option<Tensor> {
        None
    }
    /// Whether each row lies in the support, where the support has a sharp edge (e.g. the checkerboard's squares).
    fn sharp_support(&self, _x: &Tensor) -> Option<Tensor> {
        None
    }
    /// The differential entropy in nats, where known in closed form.
    fn closed_form_entropy(&self) -> Option<f64> {
        None
    }
    /// The modes of a multimodal law: each row's mode (-1 for none) and the true mode weights.
    fn modes(&self, _x: &Tensor) -> Option<(Tensor, Vec<f64>)> {
        None
    }
}

/// The index of the nearest of `centres` for each row of `x`, or -1 when it is farther than `radius`.
pub fn nearest_centre(x: &Tensor, centres: &[[f64; 2]], radius: f64) -> Tensor {
    let x = x.to_kind(Kind::Double).to_device(Device::Cpu);
    let mu = Tensor::from_slice(&centres.concat()).view([-1, 2]);
    let d = (x.unsqueeze(1) - mu.unsqueeze(0)).square().sum_dim_intlist(2, false, Kind::Double).sqrt();
    let (dmin, k) = d.min_dim(1, false);
    k.where_self(&dmin.le(radius), &Tensor::from(-1i64))
}
