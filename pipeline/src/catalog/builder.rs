//! What a run adds to the catalog: groups of its curated samples, written as
//! `catalog.parquet` beside them (the engine's side of the catalog).

use crate::sample::Sample;
use polars::prelude::*;
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::path::Path;

use super::*;

#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub(super) struct Acc {
    samples: u64,
    turns: u64,
    tokens: u64,
    chars: u64,
    copies: u64,
    examples: Vec<String>,
}

/// One task's share of a run's catalog (see [`CatalogBuilder::part`]).
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct CatalogPart {
    groups: Vec<(Vec<Option<String>>, Acc)>,
    /// Per source: distinct samples and the wrapping sum of their content hashes (hex).
    content: Vec<(String, u64, String)>,
}

/// Accumulates a run's catalog as curated samples are written.
#[derive(Debug)]
pub struct CatalogBuilder {
    dims: Vec<String>,
    counter: TokenCounter,
    /// Key: domain, task, source, kind, then one value per dimension.
    groups: BTreeMap<Vec<Option<String>>, Acc>,
    /// The run's input files (as shown) with their content hashes.
    inputs: BTreeMap<String, String>,
    /// Per source: distinct samples and the wrapping sum of their content hashes.
    content: BTreeMap<String, (u64, u128)>,
    /// Whether the run is a mix (its samples are a selection of other data).
    mixed: bool,
}

impl CatalogBuilder {
    /// A builder grouping by these dimension tags, counting tokens with `counter`.
    pub fn new(dims: Vec<String>, counter: TokenCounter) -> CatalogBuilder {
        CatalogBuilder {
            dims,
            counter,
            groups: BTreeMap::new(),
            inputs: BTreeMap::new(),
            content: BTreeMap::new(),
            mixed: false,
        }
    }

    /// What the run read (input files as shown, with their content hashes) and whether it is
    /// a mix: what lets a catalog count each source's samples once across runs.
    pub fn set_lineage(&mut self, inputs: BTreeMap<String, String>, mixed: bool) {
        self.inputs = inputs;
        self.mixed = mixed;
    }

    /// Whether the catalog counts tokens with `tok`.
    pub fn counts_with(&self, tok: &crate::tokenize::TokenizerHandle) -> bool {
        self.counter.uses(tok)
    }

    /// The dimension tags.
    pub fn dims(&self) -> &[String] {
        &self.dims
    }

    /// Add curated samples. A mix's extra copies (tag `mix_copy`) are counted as `copies`
    /// only: every other statistic is about distinct samples. `known` holds content token
    /// counts a sink already made with this catalog's tokenizer (parallel to `samples`); the
    /// rest are counted here, in parallel.
    pub fn add(&mut self, samples: &[Sample], known: Option<&[Option<u64>]>) {
        let known = known.filter(|k| k.len() == samples.len());
        // Per sample: its group key, and (turns, tokens, chars, content hash) unless it is a
        // copy.
        type Row = (Vec<Option<String>>, Option<(u64, u64, u64, u128)>);
        let rows: Vec<Row> = samples
            .par_iter()
            .enumerate()
            .map(|(i, s)| {
                let copy = s.tags.contains_key(crate::sample::tag::COPY);
                let mut key = vec![
                    Some(s.domain.clone()),
                    Some(s.task.clone()),
                    Some(s.source.clone()),
                    Some(s.kind.as_str().to_string()),
                ];
                key.extend(self.dims.iter().map(|d| s.tags.get(d).cloned()));
                let stats = (!copy).then(|| {
                    (
                        s.turns.len() as u64,
                        known
                            .and_then(|k| k[i])
                            .unwrap_or_else(|| self.counter.count(s)),
                        s.char_len() as u64,
                        content_hash(s),
                    )
                });
                (key, stats)
            })
            .collect();
        for ((key, stats), s) in rows.into_iter().zip(samples) {
            let acc = self.groups.entry(key).or_default();
            let Some((turns, tokens, chars, hash)) = stats else {
                acc.copies += 1;
                continue;
            };
            let c = self.content.entry(s.source.clone()).or_default();
            c.0 += 1;
            c.1 = c.1.wrapping_add(hash);
            acc.samples += 1;
            acc.turns += turns;
            acc.tokens += tokens;
            acc.chars += chars;
            if acc.examples.len() < 3 {
                acc.examples.push(s.id.clone());
            }
        }
    }

    /// What this builder has counted, for another to merge.
    pub fn part(&self) -> CatalogPart {
        CatalogPart {
            groups: self
                .groups
                .iter()
                .map(|(k, a)| (k.clone(), a.clone()))
                .collect(),
            content: self
                .content
                .iter()
                .map(|(src, (n, h))| (src.clone(), *n, format!("{h:032x}")))
                .collect(),
        }
    }

    /// Forget what was counted (the tokenizer, dimensions and lineage stay).
    pub fn clear_counts(&mut self) {
        self.groups.clear();
        self.content.clear();
    }

    /// Add another builder's counts. Merging the tasks' parts in task order (input order)
    /// gives the catalog one process would have built: sums, and the first three example ids.
    pub fn merge(&mut self, part: CatalogPart) -> Result<(), String> {
        for (key, a) in part.groups {
            // Parts come from the shared work folder: a group key has its shape.
            if key.len() != 4 + self.dims.len() {
                return Err(format!(
                    "a catalog part's group has {} values, not {}",
                    key.len(),
                    4 + self.dims.len()
                ));
            }
            let acc = self.groups.entry(key).or_default();
            acc.samples = acc.samples.saturating_add(a.samples);
            acc.turns = acc.turns.saturating_add(a.turns);
            acc.tokens = acc.tokens.saturating_add(a.tokens);
            acc.chars = acc.chars.saturating_add(a.chars);
            acc.copies = acc.copies.saturating_add(a.copies);
            for id in a.examples {
                if acc.examples.len() < 3 {
                    acc.examples.push(id);
                }
            }
        }
        for (source, n, hex) in part.content {
            let h = u128::from_str_radix(&hex, 16)
                .map_err(|e| format!("a catalog part's content hash {hex:?}: {e}"))?;
            let c = self.content.entry(source).or_default();
            c.0 = c.0.saturating_add(n);
            c.1 = c.1.wrapping_add(h);
        }
        Ok(())
    }

    /// Catalog rows so far.
    pub fn rows(&self) -> usize {
        self.groups.len()
    }

    /// Distinct samples per value of the sample's domain, task and kind and of each dimension
    /// tag (`unset` where a sample lacks the tag).
    pub fn distributions(&self) -> BTreeMap<String, BTreeMap<String, u64>> {
        let mut out: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
        // The sample's own fields first (domain, task, kind; not source, which the report's
        // inputs already count), then the tag dimensions.
        let fields = [(0, "domain"), (1, "task"), (3, "kind")];
        for (key, acc) in &self.groups {
            let named = fields
                .iter()
                .map(|&(i, name)| (name, &key[i]))
                .chain(self.dims.iter().map(String::as_str).zip(&key[4..]));
            for (d, v) in named {
                let v = v.clone().unwrap_or_else(|| "unset".into());
                *out.entry(d.to_string()).or_default().entry(v).or_default() += acc.samples;
            }
        }
        out.retain(|_, m| !(m.len() == 1 && m.contains_key("unset")));
        out
    }

    /// The catalog rows as a frame; `run` names the run, `files` is the glob of its curated
    /// files within the run directory. Nothing in it depends on where the run directory lies.
    pub fn frame(&self, run: &str, files: &str) -> PolarsResult<DataFrame> {
        let n = self.groups.len();
        let text = |name: &str, v: Vec<Option<String>>| Column::new(name.into(), v);
        let repeat = |name: &str, v: &str| Column::new(name.into(), vec![v.to_string(); n]);
        let mut cols = vec![
            repeat("run", run),
            repeat("files", files),
            repeat("tokens_by", &self.counter.name()),
        ];
        for (i, name) in ["domain", "task", "source", "kind"].iter().enumerate() {
            cols.push(text(
                name,
                self.groups.keys().map(|k| k[i].clone()).collect(),
            ));
        }
        for (i, d) in self.dims.iter().enumerate() {
            cols.push(text(
                d,
                self.groups.keys().map(|k| k[4 + i].clone()).collect(),
            ));
        }
        let num = |name: &str, f: &dyn Fn(&Acc) -> u64| {
            Column::new(
                name.into(),
                self.groups.values().map(f).collect::<Vec<u64>>(),
            )
        };
        cols.push(num("samples", &|a| a.samples));
        cols.push(num("turns", &|a| a.turns));
        cols.push(num("tokens", &|a| a.tokens));
        cols.push(num("chars", &|a| a.chars));
        cols.push(num("copies", &|a| a.copies));
        cols.push(Column::new(
            "examples".into(),
            self.groups
                .values()
                .map(|a| serde_json::to_string(&a.examples))
                .collect::<Result<Vec<String>, _>>()
                .map_err(|e| polars_err!(ComputeError: "catalog examples: {e}"))?,
        ));
        cols.push(text(
            "source_hash",
            self.groups
                .keys()
                .map(|k| k[2].as_ref().and_then(|s| self.inputs.get(s).cloned()))
                .collect(),
        ));
        cols.push(text(
            "source_content",
            self.groups
                .keys()
                .map(|k| {
                    k[2].as_ref()
                        .and_then(|s| self.content.get(s))
                        .map(|(n, sum)| format!("{n}:{sum:032x}"))
                })
                .collect(),
        ));
        cols.push(Column::new("mixed".into(), vec![self.mixed; n]));
        DataFrame::new(n, cols)
    }

    /// Write the catalog file (Parquet, atomically).
    pub fn write(&self, dest: &Path, run: &str, files: &str) -> crate::Result<()> {
        let err = |e: PolarsError| crate::Error::Output {
            path: dest.to_path_buf(),
            message: format!("cannot write the catalog: {e}"),
        };
        let mut df = self.frame(run, files).map_err(err)?;
        let mut bytes = Vec::new();
        ParquetWriter::new(&mut bytes)
            .with_compression(ParquetCompression::Zstd(None))
            .finish(&mut df)
            .map_err(err)?;
        crate::storage::write_atomic(dest, &bytes)
    }
}
