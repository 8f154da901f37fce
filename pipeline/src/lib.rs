//! sluice's pipeline library: the record model, pipeline config and plan, readers and writers,
//! stages, the engine, storage and reports. The `sluice` binary is a thin layer over it.

pub mod bench;
pub mod catalog;
pub mod chart;
pub mod classifier;
pub mod config;
pub mod confine;
pub mod decisions;
pub mod engine;
pub mod error;
pub mod exchange;
pub mod filter;
pub mod fuzz;
pub mod inspect;
pub mod io;
pub mod mix;
pub mod normalize;
pub mod plan;
pub mod remote;
pub mod report;
pub mod report_html;
pub mod sample;
pub mod spec_check;
pub mod stages;
pub mod storage;
pub mod tasks;
pub mod tokenize;

pub use config::Plan;
pub use engine::{run, Progress, RunOptions};
pub use error::{Error, Result};
pub use report::Report;
pub use sample::{Kind, Role, Sample, Turn};
