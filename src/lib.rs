//! relaxflow: normalizing flows and the models that relax them, on libtorch (tch).
//!
//! Layers of the crate, importing downwards only: `experiment`/`runner`/`report` -> model families (`flows`, ...)
//! -> `layer`, `model`, `nets`, `dist` -> tch. `data` is read by the runner and by tests, never by a model.
pub mod classifier;
pub mod data;
pub mod diffflow;
pub mod diffusion;
pub mod dist;
pub mod errors;
pub mod experiment;
pub mod flows;
pub mod layer;
pub mod model;
pub mod nets;
pub mod report;
pub mod runner;
pub mod score;
pub mod snf;
pub mod survae;
pub mod vae;
