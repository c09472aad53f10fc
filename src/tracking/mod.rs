//! TensorBoard event files, written without TensorFlow: `record.rs` frames records (TFRecord: length, masked
//! CRC-32C of the length, data, masked CRC-32C of the data) and reads them back, tolerating a torn last record;
//! `event.rs` holds the protobuf messages (`Event`, `Summary`, images, text tensors) as `prost` structs with the
//! field numbers of tensorflow/core/util/event.proto and summary.proto; `writer.rs` is a run's `tb/` folder: one
//! event file per process, scalars from each metrics line, PNG pictures, markdown text, and the truncation a resume
//! needs so that every step is written once.
pub mod event;
pub mod record;
pub mod writer;

pub use writer::{scalar_tag, EventWriter, TB_DIR};
