//! The catalog of curated data. Every run writes `catalog.parquet` into its run directory (so
//! it is published atomically with the data it describes): one row per group of curated samples
//! sharing domain, task, source, kind and the values of the catalog's dimension tags (language,
//! split, user tags), with their samples, turns, tokens and characters and a few example ids.
//!
//! A catalog root is a folder of run directories. Queries scan every `*/catalog.parquet` under
//! it with polars lazy scans (runs with different tag columns are concatenated diagonally), so a
//! summary or a mix preview reads a few kilobytes per run and never a sample.
//!
//! Two Arrow stacks: samples are written with arrow-rs and `parquet` (`io/writers`), a
//! streaming writer whose chunks and row groups sluice fixes, so output bytes are stable; the
//! catalog and the mix stage query with polars (lazy scans, diagonal concatenation, SQL
//! expressions for `where`), which arrow-rs does not offer. Polars reads the Parquet arrow-rs
//! writes, so the two meet only at files.

mod builder;
mod load;
mod query;

pub use builder::*;
pub use load::*;
pub use query::*;

/// The tag `sluice mix run` puts on every sample it reads back (see [`crate::sample::tag::RUN`]).
pub const RUN_TAG: &str = crate::sample::tag::RUN;
pub use crate::mix::frame::{
    numeric_tags, pool_condition, pool_expr, pool_stats, pooled_stats, tag_columns, where_expr,
    FIXED_COLUMNS, MISSING,
};
pub use crate::sample::content_hash;
pub use crate::tokenize::{approx_tokens, TokenCounter};

/// Catalog query results are polars frames.
pub use polars::prelude::DataFrame;

/// The file name of a run's catalog.
pub const CATALOG_FILE: &str = "catalog.parquet";
