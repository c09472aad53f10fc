//! Bijective flows: coupling layers, permutations, ActNorm, and the models built from them.
pub mod actnorm;
pub mod build;
pub mod coupling;
pub mod lu;
pub mod made;
pub mod permutation;
pub mod spline;
#[cfg(test)]
pub mod testing;

pub use actnorm::ActNorm;
pub use coupling::{Coupling, ScaleBound, Transformer};
pub use permutation::{Permutation, Reverse};
