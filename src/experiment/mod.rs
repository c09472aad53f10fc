//! Experiments: TOML configs (`experiments/NAME.toml`) and the registry from model kinds to constructors.
pub mod config;
pub mod legacy;
pub mod registry;

pub use config::{EvalConfig, Experiment, LrSchedule, OptimizerImpl, TrainConfig};
