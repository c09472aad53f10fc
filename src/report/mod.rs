//! Tables and reports read from run folders (summary.json), never from models.
pub mod compare;
pub mod contact;
pub mod figure;
pub mod notebook;
pub mod sbi_table;
pub mod snf_table;
pub mod survey;
pub mod sweep;
