//! Bijective flows: coupling layers, permutations, ActNorm, and the models built from them; the image machinery
//! (logit, squeeze, image couplings, slice) and the multi-scale builder.
pub mod actnorm;
pub mod batchnorm;
pub mod build;
pub mod conditional;
pub mod coupling;
pub mod image_coupling;
pub mod logit;
pub mod lu;
pub mod made;
pub mod permutation;
pub mod planar;
pub mod sinh_arcsinh;
pub mod slice;
pub mod spline;
pub mod squeeze;
#[cfg(test)]
pub mod testing;

pub use actnorm::ActNorm;
pub use coupling::{Conditioner, Coupling, ScaleBound, Transformer};
pub use permutation::{Permutation, Reverse};
