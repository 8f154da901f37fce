//! What a task writes for the process that publishes the run: its counts.

use serde::Serialize;

/// A task's counts, for task 0's merge.
#[derive(Serialize, serde::Deserialize)]
pub(in crate::engine) struct Partial {
    /// Its counts.
    pub(in crate::engine) tally: crate::engine::tally::Tally,
    /// Units (records read, or spilled samples) each segment handled.
    pub(in crate::engine) units: Vec<u64>,
    /// Input bytes it read.
    pub(in crate::engine) bytes_read: u64,
    /// The files it wrote itself (under `out/` in its folder; paths as in the run).
    #[serde(default)]
    pub(in crate::engine) outputs: Vec<crate::io::writers::OutputFile>,
    /// Its share of the catalog.
    #[serde(default)]
    pub(in crate::engine) catalog: crate::catalog::CatalogPart,
}
