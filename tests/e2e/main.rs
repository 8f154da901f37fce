//! End-to-end tests: they run the `sluice` binary on real data from `../shared/data` and on
//! generated broken input, and read the outputs back. One test binary, so one link.

#![allow(clippy::disallowed_methods)] // tests write their fixtures directly

mod ablate;
mod browser;
mod cdp;
mod classifier;
mod cleaning;
mod common;
mod determinism;
mod diversity;
mod eval;
mod inputs;
mod minhash;
mod mix;
mod outputs;
mod phases;
mod readme;
mod rejects;
mod serve;
mod storage;
mod tasks;
mod tokenize;
mod train;
