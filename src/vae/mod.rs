//! VAEs as stochastic layers: encoder/decoder networks, observation models, the ELBO/IWAE model.
pub mod decoder;
pub mod layer;
pub mod model;
pub mod nets;

pub use decoder::Likelihood;
pub use layer::VaeLayer;
pub use model::{Vae, VaeParams};
