//! What tasks write for task 0: the stream of kept samples, and their counts.

use crate::error::{Error, Result};
use crate::sample::Sample;
use serde::Serialize;
use std::io::Write;

/// One line of a task's kept stream (for the sinks task 0 writes from every sample).
#[derive(Serialize, serde::Deserialize)]
pub(in crate::engine) struct StreamLine {
    /// Unit index within the segment, in this task.
    pub(in crate::engine) u: u64,
    pub(in crate::engine) sample: Sample,
}

impl StreamLine {
    /// Append as one JSON line.
    pub(in crate::engine) fn write(
        &self,
        out: &mut impl Write,
        path: &std::path::Path,
    ) -> Result<()> {
        let mut bytes = serde_json::to_vec(self).map_err(|e| Error::Output {
            path: path.to_path_buf(),
            message: format!("cannot encode a stream line: {e}"),
        })?;
        bytes.push(b'\n');
        out.write_all(&bytes).map_err(|e| Error::io(path, e))
    }
}

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
