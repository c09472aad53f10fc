//! Tables and reports read from run folders (summary.json), never from models.
pub mod compare;
pub mod figure;
