//! Denoising diffusion probabilistic models (Ho et al. 2020): schedules, ε-prediction with L_simple, ancestral and
//! DDIM samplers, and the variational bound with a Gaussian (vectors) or discretized Gaussian (8-bit images) decoder.
pub mod ddpm;
pub mod schedule;

pub use ddpm::{Ddpm, DdpmParams};
pub use schedule::{Schedule, ScheduleKind};
