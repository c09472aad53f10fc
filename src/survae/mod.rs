//! SurVAE surjections (Nielsen et al. 2020): inference surjections (abs, sort, max; the slice lives in
//! `flows::slice`) with exact likelihoods, generative surjections (augment, variational dequantization) and the
//! stochastic permutation, all on the `Layer` interface; and the models composed from them.
pub mod abs;
pub mod augment;
pub mod fold;
pub mod max;
pub mod model;
pub mod sort;
pub mod vardeq;
#[cfg(test)]
pub mod testing;
