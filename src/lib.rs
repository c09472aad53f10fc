//! relaxflow: normalizing flows and the models that relax them, on libtorch (tch).
//!
//! Layers of the crate, importing downwards only (checked by `tests/structure.rs`): `report` -> `runner` ->
//! `experiment` -> `multiscale` -> model families (`survae` -> `flows`, `snf`, `vae`, ...) -> `layer`, `model`, `nets`,
//! `dist` -> tch. `data` and `classifier` are read by the runner and by tests, never by a model. `plot` (pictures and
//! plots) serves the runner and the report and imports only `files` (atomic writes). `native` (ATen ops tch does not
//! wrap, through the C++ shim csrc/optim.cpp) imports nothing of the crate.
pub mod classifier;
pub mod cnf;
pub mod context;
pub mod data;
pub mod diffflow;
pub mod diffusion;
pub mod dist;
pub mod errors;
pub mod experiment;
pub mod files;
pub mod flows;
pub mod layer;
pub mod model;
pub mod multiscale;
pub mod native;
pub mod nets;
pub mod parallel;
pub mod plot;
pub mod report;
pub mod rows;
pub mod runner;
pub mod score;
pub mod snf;
pub mod survae;
pub mod tracking;
pub mod vae;
pub mod workspace;

pub use workspace::Workspace;

// The library surface: what a researcher composes in their own Rust code (see examples/ and README "Use it as a
// library").
pub use dist::{DiagNormal, Distribution, StandardNormal};
pub use flows::build::{nsf, realnvp, NsfParams, RealNvpParams};
pub use layer::{Layer, LayerKind, LayerModel};
pub use context::{Context, ContextSpec};
pub use model::{Family, Kind, LogProb, Model};
pub use runner::session::{open_run, Session};
pub use runner::train::{train, TrainOptions};
