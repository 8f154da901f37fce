//! One module per command of the `sluice` binary.

pub mod ablate;
pub mod bench;
pub mod catalog;
pub mod check;
pub mod classifier;
pub mod eval;
pub mod inspect;
pub mod mix;
pub mod run;
pub mod serve;
pub mod train;
