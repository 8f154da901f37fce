//! `decontaminate`: drop training samples that share a long n-gram (default 13 tokens: CJK
//! characters or words, as in `minhash`) with any evaluation set, so benchmarks are not learned.
//! Evaluation files are read with sluice's readers (any format), once, into a set of n-gram
//! hashes; each dropped sample names the evaluation file it overlaps.

use super::exact_dedup::Scope;
use super::minhash::MinHasher;
use super::{DropReason, RecordStage, StageCx, Verdict};
use crate::io::convert::convert;
use crate::io::options::InputPlan;
use crate::io::read_path;
use crate::sample::Sample;
use serde::Deserialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Config of `type = "decontaminate"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Evaluation files, relative to the pipeline file.
    pub eval: Vec<PathBuf>,
    /// Tokens per n-gram (default 13).
    #[serde(default = "default_ngram")]
    pub ngram: usize,
    /// What of a training sample is checked: `all` (default) or `prompt`.
    #[serde(default)]
    pub scope: Scope,
    /// Set by a confined compile: the folders its files must lie in when they are opened.
    #[serde(skip)]
    pub confined_to: Option<std::sync::Arc<[std::path::PathBuf]>>,
}

fn default_ngram() -> usize {
    13
}

impl Config {
    pub(crate) fn validate(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.eval.is_empty() {
            out.push("eval needs at least one evaluation file".into());
        }
        for p in &self.eval {
            if !p.is_file() {
                out.push(format!("eval file {}: no such file", p.display()));
            }
        }
        if self.ngram < 4 {
            out.push(format!(
                "ngram {} is too short to mean contamination (use 8 or more)",
                self.ngram
            ));
        }
        out
    }

    pub(crate) fn resolve_paths(&mut self, base: &Path) {
        for p in &mut self.eval {
            if p.is_relative() {
                *p = crate::confine::resolve(base, p);
            }
        }
    }
}

/// The built stage: n-gram hash → index of the evaluation file it came from.
#[derive(Debug)]
pub struct Decontaminate {
    cfg: Config,
    hasher: MinHasher,
    grams: HashMap<u64, usize>,
    names: Vec<String>,
}

impl Decontaminate {
    /// Read every evaluation file into the n-gram set.
    pub fn new(cfg: &Config) -> Result<Decontaminate, crate::error::StageError> {
        let hasher = MinHasher::new(0.5, 2, cfg.ngram, Some((1, 1)), 0);
        let mut grams = HashMap::new();
        let mut names = Vec::new();
        let plan = Arc::new(InputPlan {
            confined_to: cfg.confined_to.clone(),
            ..InputPlan::new("eval")
        });
        for (i, path) in cfg.eval.iter().enumerate() {
            names.push(path.file_name().map_or_else(
                || path.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            ));
            let mut unreadable = 0u64;
            let status = read_path(&plan, path, 64 << 20, &mut |rec| {
                match convert(&rec) {
                    // Evaluation answers count as much as questions: a leaked answer is leakage.
                    Ok((s, _)) => {
                        for g in hasher.shingles(&Scope::All.text(&s)) {
                            grams.entry(g).or_insert(i);
                        }
                    }
                    Err(_) => unreadable += 1,
                }
                Ok(())
            })
            .map_err(|e| e.to_string())?;
            if let Err(e) = status {
                return Err(format!("eval file {}: {e}", path.display()).into());
            }
            if unreadable > 0 {
                return Err(format!("eval file {}: {unreadable} records could not be read; fix or remove them so the check is complete", path.display()).into());
            }
        }
        Ok(Decontaminate {
            cfg: cfg.clone(),
            hasher,
            grams,
            names,
        })
    }
}

impl RecordStage for Decontaminate {
    fn process(&self, sample: Sample, cx: &mut StageCx) -> Verdict {
        let text = self.cfg.scope.text(&sample);
        // Too short for an n-gram of full length: whole-text matches are exact dedup's job.
        if text.chars().count() < self.cfg.ngram {
            return Verdict::Keep(sample);
        }
        let grams = self.hasher.shingles(&text);
        let hits = grams.iter().filter(|g| self.grams.contains_key(g)).count();
        if let Some(file) = grams.iter().find_map(|g| self.grams.get(g)) {
            cx.count("samples_contaminated", 1);
            let detail = format!(
                "{hits} of {} {}-grams also occur in {}",
                grams.len(),
                self.cfg.ngram,
                self.names[*file]
            );
            return Verdict::Drop(sample, DropReason::new("contaminated", detail));
        }
        Verdict::Keep(sample)
    }
}
