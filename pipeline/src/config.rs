//! The pipeline file as the commands and the service load it: [`crate::plan`], with URL inputs
//! listed and fetched from object storage ([`crate::remote`]).

pub use crate::plan::*;

use crate::error::{Error, Result};
use std::path::Path;
use std::sync::Arc;

/// Parse and compile a pipeline file.
pub fn load(path: &Path) -> Result<Plan> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    parse(&text, path)
}

/// Parse and compile a pipeline from its text; `path` locates relative paths and errors.
pub fn parse(text: &str, path: &Path) -> Result<Plan> {
    parse_with(text, path, &CompileOptions::default())
}

/// [`crate::plan::parse_with`], with URL inputs fetched from object storage unless `opts`
/// brings its own fetcher.
pub fn parse_with(text: &str, path: &Path, opts: &CompileOptions) -> Result<Plan> {
    let mut opts = opts.clone();
    if opts.fetch.is_none() {
        opts.fetch = Some(Arc::new(|pattern: &str| {
            crate::remote::fetch(pattern).map_err(|e| e.to_string())
        }));
    }
    crate::plan::parse_with(text, path, &opts)
}
