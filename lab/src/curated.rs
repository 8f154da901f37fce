//! A curated run's output files (`<run>/curated/<split>-NNNNN.<format>`): one file per part,
//! however many formats the run wrote it in (JSONL preferred, then Parquet).

use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Formats by preference: the first one a part was written in is read.
const PREFERENCE: [&str; 5] = [".jsonl", ".jsonl.gz", ".jsonl.zst", ".parquet", ".json"];

/// The part files of the splits `keep` accepts (given the split's name), one per part, sorted.
pub fn files(run: &Path, keep: &dyn Fn(&str) -> bool) -> Result<Vec<PathBuf>> {
    let dir = run.join("curated");
    let entries = std::fs::read_dir(&dir).with_context(|| {
        format!(
            "{}: no curated/ folder (is it the output folder of `sluice run`?)",
            run.display()
        )
    })?;
    // part stem → (preference, path)
    let mut parts: BTreeMap<String, (usize, PathBuf)> = BTreeMap::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some((rank, ext)) = PREFERENCE
            .iter()
            .enumerate()
            .find(|(_, ext)| name.ends_with(*ext))
        else {
            continue;
        };
        let stem = &name[..name.len() - ext.len()];
        let Some((split, _)) = stem.rsplit_once('-') else {
            continue;
        };
        if !keep(split) || !e.path().is_file() {
            continue;
        }
        let better = parts.get(stem).is_none_or(|(r, _)| rank < *r);
        if better {
            parts.insert(stem.to_string(), (rank, e.path()));
        }
    }
    Ok(parts.into_values().map(|(_, p)| p).collect())
}
