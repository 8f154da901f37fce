//! `minhash`: near-duplicate removal with MinHash LSH.
//!
//! Content (all turns, or the prompt side) is put in canonical form (NFKC, lower case, folded
//! whitespace) and split into tokens: each CJK character is a token, other runs of letters and
//! digits are words, punctuation is ignored. Shingles are `ngram` consecutive tokens, so Chinese
//! gets character n-grams and English word n-grams. Each shingle is hashed with xxh3; the
//! signature keeps, per permutation, the minimum of a multiply-shift hash. Bands of `rows`
//! values are the exchange keys (map); records sharing a band are candidates (reduce). The
//! default banding weighs a missed pair 19 times a needless candidate ([`recall_params`]; 16 ×
//! 8 at 0.8, where pairs of Jaccard 0.85 become candidates with probability 0.994), because
//! every candidate is verified on the shingles themselves: each sample carries the smallest
//! [`SKETCH`] (1024) distinct shingle hashes, so the Jaccard similarity compared with the
//! threshold is exact up to ~1,000 tokens and a bottom-k estimate (±0.011 at 0.85) beyond.
//! Verified pairs are joined by union-find into clusters (finish), of which one sample is kept
//! (first, longest, or highest score tag) and the others are dropped naming it. Every member of
//! a cluster is tagged `minhash_cluster` = kept id. `sluice bench minhash --accuracy` measures
//! precision and recall against exact Jaccard beside datasketch's banding and estimate.
//!
//! Exchange (see [`crate::exchange`]): each sample's signature, sketch, id, length and score
//! are written once to the record file; each band key goes as a 24-byte (key, position) entry
//! to one of the partition files. Per million samples of ~2 KB at 128 permutations and 16
//! bands that is ~0.5 GB of signatures plus up to 4 KB of sketch per sample (~2.9 GB of record
//! file in all) and ~384 MB of partition files on disk; in memory, reduce holds one partition
//! per thread plus 8 bytes of offset per sample, and finish holds the verified pairs and the
//! members of clusters only. The persistent index keeps each sample's id, signature and
//! sketch; samples of an index written before sketches (format 2) are verified on the
//! signatures' estimate. (Measured before sketches: 1M samples in 22
//! s on 2 threads, peak RSS 651 MB; the mapped record file counts there, as page cache.)

use super::exact_dedup::Scope;
use super::{Decision, Decisions, DropReason, GlobalStage};
use crate::exchange::{Records, Wire};
use crate::sample::Sample;
use serde::Deserialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

mod sketch;
pub use sketch::{
    estimate, optimal_params, recall_params, sketch_jaccard, MinHasher, MISS_WEIGHT, SKETCH,
};
#[cfg(test)]
use sketch::{signature_of, signature_scalar};

/// Config of `type = "minhash"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Jaccard similarity at which two samples are near duplicates (default 0.8).
    #[serde(default = "default_threshold")]
    pub threshold: f64,
    /// Signature length (default 128).
    #[serde(default = "default_num_perm")]
    pub num_perm: usize,
    /// Tokens per shingle (default 5: character 5-grams in Chinese, word 5-grams in English).
    #[serde(default = "default_ngram")]
    pub ngram: usize,
    /// LSH bands; with `rows`, overrides the optimum computed from the threshold.
    #[serde(default)]
    pub bands: Option<usize>,
    /// Rows per band.
    #[serde(default)]
    pub rows: Option<usize>,
    /// `all` content (default) or the `prompt` side only.
    #[serde(default)]
    pub scope: Scope,
    /// Which member of a cluster is kept: `first` (default), `longest`, or `score`.
    #[serde(default)]
    pub keep: Keep,
    /// With `keep = "score"`: the numeric tag to maximize (e.g. `quality_score`).
    #[serde(default)]
    pub score_tag: Option<String>,
    /// Seed of the hash permutations (default fixed).
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Drop near duplicates (default true); `false` only tags clusters, e.g. for a `split`
    /// stage that keeps each cluster within one split.
    #[serde(default = "default_drop")]
    pub drop: bool,
    /// A directory for a persistent index of every sample kept so far (relative to the pipeline
    /// file). A run deduplicates against it without reading old data, and adds its own kept
    /// samples once it is published; clusters that include an indexed sample keep that one.
    #[serde(default)]
    pub index: Option<PathBuf>,
}

fn default_drop() -> bool {
    true
}

fn default_threshold() -> f64 {
    0.8
}
fn default_num_perm() -> usize {
    128
}
fn default_ngram() -> usize {
    5
}
fn default_seed() -> u64 {
    0x5eed_0000_0000_0001
}

/// Keep policy of a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Keep {
    /// The earliest record.
    #[default]
    First,
    /// The longest (characters); ties to the earliest.
    Longest,
    /// The highest `score_tag`; ties and missing scores to the earliest.
    Score,
}

impl Config {
    pub(crate) fn resolve_paths(&mut self, base: &Path) {
        if let Some(p) = self.index.as_mut().filter(|p| p.is_relative()) {
            *p = crate::confine::resolve(base, p);
        }
    }

    pub(crate) fn validate(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !(self.threshold > 0.0 && self.threshold <= 1.0) {
            out.push(format!("threshold {} is not in (0, 1]", self.threshold));
        }
        if self.num_perm < 2 || self.num_perm > 1024 {
            out.push(format!(
                "num_perm {} is not between 2 and 1024",
                self.num_perm
            ));
        }
        if self.ngram == 0 {
            out.push("ngram must be at least 1".into());
        }
        match (self.bands, self.rows) {
            (Some(b), Some(r)) if b * r > self.num_perm || b == 0 || r == 0 => out.push(format!(
                "bands × rows = {} must be between 1 and num_perm {}",
                b * r,
                self.num_perm
            )),
            (Some(_), None) | (None, Some(_)) => out.push("set bands and rows together".into()),
            _ => {}
        }
        if self.keep == Keep::Score && self.score_tag.is_none() {
            out.push("keep = \"score\" needs score_tag".into());
        }
        out
    }
}

/// The per-record payload in the exchange: stored once, found by position from any band.
#[derive(Debug, Clone)]
pub struct Item {
    sig: Vec<u32>,
    /// The bottom-k shingle sketch ([`SKETCH`]); empty for samples of a format-2 index.
    sketch: Vec<u32>,
    id: String,
    chars: usize,
    score: Option<f64>,
    /// Kept by an earlier run (from the index): always the one kept in its cluster.
    old: bool,
}

impl Wire for Item {
    fn put(&self, out: &mut Vec<u8>) -> std::io::Result<()> {
        out.extend_from_slice(&(self.chars as u64).to_le_bytes());
        out.extend_from_slice(&self.score.unwrap_or(f64::NAN).to_le_bytes());
        out.push(u8::from(self.old));
        out.extend_from_slice(&(self.sig.len() as u32).to_le_bytes());
        for v in &self.sig {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&(self.sketch.len() as u32).to_le_bytes());
        for v in &self.sketch {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(self.id.as_bytes());
        Ok(())
    }

    fn get(b: &[u8]) -> Option<Item> {
        let u64_at = |at: usize| Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?));
        let chars = u64_at(0)? as usize;
        let score = f64::from_bits(u64_at(8)?);
        let old = *b.get(16)? == 1;
        let n = u32::from_le_bytes(b.get(17..21)?.try_into().ok()?) as usize;
        let sig_end = 21 + 4 * n;
        let words = |s: &[u8]| -> Vec<u32> {
            s.chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        };
        let sig = words(b.get(21..sig_end)?);
        let m = u32::from_le_bytes(b.get(sig_end..sig_end + 4)?.try_into().ok()?) as usize;
        let sketch_end = sig_end + 4 + 4 * m;
        let sketch = words(b.get(sig_end + 4..sketch_end)?);
        let id = String::from_utf8(b.get(sketch_end..)?.to_vec()).ok()?;
        Some(Item {
            sig,
            sketch,
            id,
            chars,
            score: (!score.is_nan()).then_some(score),
            old,
        })
    }
}

/// The signature part of an encoded [`Item`], without decoding the rest.
fn sig_bytes(b: &[u8]) -> &[u8] {
    let n = b
        .get(17..21)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u32::from_le_bytes) as usize;
    b.get(21..21 + 4 * n).unwrap_or(&[])
}

/// The sketch part of an encoded [`Item`], as words.
fn sketch_words(b: &[u8]) -> Vec<u32> {
    let sig_end = 21 + sig_bytes(b).len();
    let m = b
        .get(sig_end..sig_end + 4)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u32::from_le_bytes) as usize;
    b.get(sig_end + 4..sig_end + 4 + 4 * m)
        .unwrap_or(&[])
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Whether a candidate pair is a near duplicate: the Jaccard similarity of the shingle
/// sketches when both have one, else (a sample from an index) the signatures' estimate.
pub fn verified(sig_a: &[u8], sketch_a: &[u32], sig_b: &[u8], sketch_b: &[u32], t: f64) -> bool {
    if sketch_a.is_empty() || sketch_b.is_empty() {
        estimate_bytes(sig_a, sig_b) >= t
    } else {
        sketch_jaccard(sketch_a, sketch_b) >= t
    }
}

/// Estimated Jaccard similarity of two encoded signatures.
fn estimate_bytes(a: &[u8], b: &[u8]) -> f64 {
    let n = a.len() / 4;
    let same = a
        .chunks_exact(4)
        .zip(b.chunks_exact(4))
        .filter(|(x, y)| x == y)
        .count();
    same as f64 / n.max(1) as f64
}

/// One partition's verified pairs of positions.
#[derive(Default)]
pub struct Edges {
    pairs: Vec<(u64, u64)>,
}

impl Wire for Edges {
    fn put(&self, out: &mut Vec<u8>) -> std::io::Result<()> {
        for (a, b) in &self.pairs {
            out.extend_from_slice(&a.to_le_bytes());
            out.extend_from_slice(&b.to_le_bytes());
        }
        Ok(())
    }
    fn get(bytes: &[u8]) -> Option<Edges> {
        if !bytes.len().is_multiple_of(16) {
            return None;
        }
        let u = |c: &[u8]| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        Some(Edges {
            pairs: bytes
                .chunks_exact(16)
                .map(|c| (u(&c[..8]), u(&c[8..])))
                .collect(),
        })
    }
}

/// The built stage.
#[derive(Debug)]
pub struct MinHash {
    cfg: Config,
    hasher: MinHasher,
    /// Samples kept by earlier runs, from the index.
    loaded: Vec<Item>,
    /// The updated index, ready to be written once the run is published.
    pending: Mutex<Option<Vec<u8>>>,
}

const INDEX_FILE: &str = "minhash.index";
/// Index format 3: each sample's id, signature and shingle sketch.
const INDEX_MAGIC: &[u8; 8] = b"SLMHIDX3";
/// Format 2 (before sketches): id and signature; its samples are verified on the estimate.
const INDEX_MAGIC_V2: &[u8; 8] = b"SLMHIDX2";

/// Candidates compared with each new member of a band bucket, at most.
const BUCKET_COMPARE: usize = 32;

/// The pairs (later, earlier) of a band bucket of `n` members that are compared: each member
/// with the [`BUCKET_COMPARE`] members before it.
pub fn bucket_pairs(n: usize) -> impl Iterator<Item = (usize, usize)> {
    (1..n).flat_map(|i| (i.saturating_sub(BUCKET_COMPARE)..i).map(move |j| (i, j)))
}

impl MinHash {
    /// Build from config, loading the index if one is configured and exists.
    pub fn new(cfg: &Config) -> Result<MinHash, crate::error::StageError> {
        let hasher = MinHasher::new(
            cfg.threshold,
            cfg.num_perm,
            cfg.ngram,
            cfg.bands.zip(cfg.rows),
            cfg.seed,
        );
        let mut stage = MinHash {
            cfg: cfg.clone(),
            hasher,
            loaded: Vec::new(),
            pending: Mutex::new(None),
        };
        if let Some(dir) = &cfg.index {
            let path = dir.join(INDEX_FILE);
            if path.exists() {
                let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
                stage.loaded = stage
                    .parse_index(&bytes)
                    .map_err(|e| format!("index {}: {e}", path.display()))?;
            }
        }
        Ok(stage)
    }

    /// Everything that makes signatures comparable; an index must match it exactly.
    fn params_header(&self) -> Vec<u8> {
        let mut h = INDEX_MAGIC.to_vec();
        for v in [
            self.cfg.num_perm as u64,
            self.cfg.ngram as u64,
            self.hasher.bands as u64,
            self.hasher.rows as u64,
            self.cfg.seed,
            self.cfg.threshold.to_bits(),
            u64::from(self.cfg.scope == Scope::Prompt),
        ] {
            h.extend_from_slice(&v.to_le_bytes());
        }
        h
    }

    fn parse_index(&self, b: &[u8]) -> Result<Vec<Item>, crate::error::StageError> {
        let header = self.params_header();
        if b.len() < header.len() + 8 || (b[..8] != *INDEX_MAGIC && b[..8] != *INDEX_MAGIC_V2) {
            return Err("not a sluice minhash index".into());
        }
        let with_sketches = b[..8] == *INDEX_MAGIC;
        // Bands and rows (bytes 24..40) may differ: band keys are recomputed from the stored
        // signatures, so an index stays usable when only the banding changes (as it did when
        // the default moved from datasketch's 9 × 13 to 16 × 8 at 0.8).
        let same = |r: std::ops::Range<usize>| b[r.clone()] == header[r];
        if !(same(8..24) && same(40..header.len())) {
            return Err("built with different minhash settings (num_perm, ngram, bands, rows, seed, threshold, scope): use a new index directory".into());
        }
        let mut at = header.len();
        let mut take = |n: usize| -> Result<&[u8], String> {
            let s = b.get(at..at + n).ok_or("truncated")?;
            at += n;
            Ok(s)
        };
        let u32_of = |s: &[u8]| u32::from_le_bytes([s[0], s[1], s[2], s[3]]);
        let mut count_bytes = [0u8; 8];
        count_bytes.copy_from_slice(take(8)?);
        let count = u64::from_le_bytes(count_bytes);
        let mut out = Vec::new();
        for _ in 0..count {
            let len = u32_of(take(4)?) as usize;
            let id = String::from_utf8(take(len)?.to_vec()).map_err(|_| "an id is not UTF-8")?;
            let sig = take(4 * self.cfg.num_perm)?
                .chunks_exact(4)
                .map(u32_of)
                .collect();
            let sketch = if with_sketches {
                let m = u32_of(take(4)?) as usize;
                if m > SKETCH {
                    return Err(format!("a sketch of {m} shingles (at most {SKETCH})").into());
                }
                take(4 * m)?.chunks_exact(4).map(u32_of).collect()
            } else {
                Vec::new()
            };
            out.push(Item {
                sig,
                sketch,
                id,
                chars: 0,
                score: None,
                old: true,
            });
        }
        Ok(out)
    }

    fn index_bytes<'a>(&self, count: usize, items: impl Iterator<Item = &'a Item>) -> Vec<u8> {
        let mut b = self.params_header();
        b.extend_from_slice(&(count as u64).to_le_bytes());
        for it in items {
            b.extend_from_slice(&(it.id.len() as u32).to_le_bytes());
            b.extend_from_slice(it.id.as_bytes());
            for v in &it.sig {
                b.extend_from_slice(&v.to_le_bytes());
            }
            b.extend_from_slice(&(it.sketch.len() as u32).to_le_bytes());
            for v in &it.sketch {
                b.extend_from_slice(&v.to_le_bytes());
            }
        }
        b
    }

    /// The bands and rows in use.
    pub fn params(&self) -> (usize, usize) {
        (self.hasher.bands, self.hasher.rows)
    }
}

impl GlobalStage for MinHash {
    type Record = Item;
    type Reduced = Edges;

    fn map(&self, sample: &Sample, emit: &mut dyn FnMut(u128)) -> Option<Item> {
        let text = self.cfg.scope.text(sample);
        let (sig, sketch) = self.hasher.signature_and_sketch(&text)?;
        for k in self.hasher.band_keys(&sig) {
            emit(k);
        }
        let score = self
            .cfg
            .score_tag
            .as_ref()
            .and_then(|t| sample.tags.get(t))
            .and_then(|v| v.parse().ok());
        Some(Item {
            sig,
            sketch,
            id: sample.id.clone(),
            chars: sample.char_len(),
            score,
            old: false,
        })
    }

    fn reduce(&self, _key: u128, members: &[u64], records: &Records<Item>, out: &mut Edges) {
        if members.len() < 2 {
            return;
        }
        let sigs: Vec<&[u8]> = members
            .iter()
            .map(|&p| sig_bytes(records.bytes(p)))
            .collect();
        let sketches: Vec<Vec<u32>> = members
            .iter()
            .map(|&p| sketch_words(records.bytes(p)))
            .collect();
        for (i, j) in bucket_pairs(members.len()) {
            if verified(
                sigs[j],
                &sketches[j],
                sigs[i],
                &sketches[i],
                self.cfg.threshold,
            ) {
                out.pairs.push((members[j], members[i]));
            }
        }
    }

    fn finish(
        &self,
        parts: Vec<Edges>,
        records: &Records<Item>,
    ) -> Result<Decisions, crate::error::StageError> {
        Ok(self.decide(parts, records))
    }

    fn preload(&self, emit: &mut dyn FnMut(&[u128], &Item)) {
        for it in &self.loaded {
            emit(&self.hasher.band_keys(&it.sig), it);
        }
    }

    fn commit(&self) -> Result<(), crate::error::StageError> {
        let bytes = self.pending.lock().ok().and_then(|mut p| p.take());
        let (Some(dir), Some(bytes)) = (&self.cfg.index, bytes) else {
            return Ok(());
        };
        let file = |path: &std::path::Path, message: String| crate::error::StageError::File {
            path: path.to_path_buf(),
            message,
        };
        std::fs::create_dir_all(dir).map_err(|e| file(dir, e.to_string()))?;
        // The storage error names its file already.
        crate::storage::write_atomic(&dir.join(INDEX_FILE), &bytes)
            .map_err(|e| crate::error::StageError::Invalid(e.to_string()))
    }

    fn pending(&self) -> Option<Vec<u8>> {
        self.pending.lock().ok().and_then(|p| p.clone())
    }

    fn restore_pending(&self, bytes: Vec<u8>) {
        if let Ok(mut p) = self.pending.lock() {
            *p = Some(bytes);
        }
    }
}

impl MinHash {
    /// Clusters from every partition's edges, and what to keep of each.
    fn decide(&self, parts: Vec<Edges>, records: &Records<Item>) -> Decisions {
        let mut pairs = Vec::new();
        // Pairs name positions of this exchange only (partition results may come from a
        // shared work folder).
        let n = records.len();
        for p in parts {
            pairs.extend(p.pairs.into_iter().filter(|&(a, b)| a < n && b < n));
        }
        // Union-find over positions; the smaller position becomes the root, so roots are stable.
        let mut parent: HashMap<u64, u64> = HashMap::new();
        fn find(parent: &mut HashMap<u64, u64>, x: u64) -> u64 {
            let mut root = x;
            while let Some(&p) = parent.get(&root).filter(|&&p| p != root) {
                root = p;
            }
            let mut cur = x;
            while cur != root {
                let next = parent.get(&cur).copied().unwrap_or(root);
                parent.insert(cur, root);
                cur = next;
            }
            root
        }
        pairs.sort_unstable();
        for (a, b) in pairs {
            parent.entry(a).or_insert(a);
            parent.entry(b).or_insert(b);
            let (ra, rb) = (find(&mut parent, a), find(&mut parent, b));
            if ra != rb {
                let (lo, hi) = if ra < rb { (ra, rb) } else { (rb, ra) };
                parent.insert(hi, lo);
            }
        }
        let mut clusters: std::collections::BTreeMap<u64, Vec<u64>> = Default::default();
        let positions: Vec<u64> = parent.keys().copied().collect();
        for p in positions {
            let r = find(&mut parent, p);
            clusters.entry(r).or_default().push(p);
        }
        let mut decisions = Decisions::new();
        let mut items: HashMap<u64, Item> = HashMap::new();
        for members in clusters.values() {
            for &p in members {
                if let Some(it) = records.get(p) {
                    items.insert(p, it);
                }
            }
        }
        for (_, mut members) in clusters {
            members.sort_unstable();
            let item = |p: &u64| items.get(p);
            // A sample an earlier run published stays the one kept.
            let oldest_indexed = members
                .iter()
                .find(|p| item(p).is_some_and(|i| i.old))
                .copied();
            let keep = match self.cfg.keep {
                _ if oldest_indexed.is_some() => oldest_indexed.unwrap_or(members[0]),
                Keep::First => members[0],
                Keep::Longest => *members
                    .iter()
                    .max_by_key(|p| (item(p).map_or(0, |i| i.chars), std::cmp::Reverse(**p)))
                    .unwrap_or(&members[0]),
                Keep::Score => *members
                    .iter()
                    .max_by(|x, y| {
                        let sx = item(x).and_then(|i| i.score).unwrap_or(f64::NEG_INFINITY);
                        let sy = item(y).and_then(|i| i.score).unwrap_or(f64::NEG_INFINITY);
                        sx.total_cmp(&sy).then(y.cmp(x))
                    })
                    .unwrap_or(&members[0]),
            };
            let keep_id = item(&keep).map_or_else(String::new, |i| i.id.clone());
            let n = members.len();
            for p in members {
                let tags = vec![("minhash_cluster".to_string(), keep_id.clone())];
                let drop = (p != keep && self.cfg.drop).then(|| DropReason {
                    code: "near_duplicate",
                    detail: Some(format!(
                        "in a near-duplicate cluster of {n} (Jaccard ≥ {}) kept as {keep_id}",
                        self.cfg.threshold
                    )),
                    duplicate_of: Some(keep_id.clone()),
                });
                decisions.insert(
                    p,
                    Decision {
                        drop,
                        tags,
                        repeat: 0,
                    },
                );
            }
        }
        decisions.seal();
        if self.cfg.index.is_some() {
            // The next index: what earlier runs kept, then this run's survivors in order.
            let fresh: Vec<Item> = (self.loaded.len() as u64..records.len())
                .filter(|p| decisions.get(p).is_none_or(|d| d.drop.is_none()))
                .filter_map(|p| records.get(p))
                .collect();
            if let Ok(mut pending) = self.pending.lock() {
                *pending = Some(self.index_bytes(
                    self.loaded.len() + fresh.len(),
                    self.loaded.iter().chain(fresh.iter()),
                ));
            }
        }
        decisions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn optimal_params_match_datasketch() {
        // datasketch 1.x MinHashLSH(threshold, num_perm).b, .r, printed for these settings.
        assert_eq!(optimal_params(0.8, 128), (9, 13));
        assert_eq!(optimal_params(0.5, 128), (25, 5));
        assert_eq!(optimal_params(0.9, 256), (9, 28));
        assert_eq!(optimal_params(0.7, 128), (14, 9));
    }

    #[test]
    fn default_banding_weighs_misses() {
        assert_eq!(recall_params(0.8, 128), (16, 8));
        let cfg: Config = toml::from_str("").expect("defaults");
        assert_eq!(MinHash::new(&cfg).expect("builds").params(), (16, 8));
    }

    #[test]
    #[allow(clippy::disallowed_methods)] // a test fixture
    fn an_index_of_format_2_or_other_banding_still_loads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg: Config =
            toml::from_str(&format!("index = {:?}", dir.path().display().to_string()))
                .expect("parses");
        let stage = MinHash::new(&cfg).expect("builds");
        // An index as format 2 wrote it, with datasketch's 9 × 13 banding.
        let mut b = stage.params_header();
        b[..8].copy_from_slice(INDEX_MAGIC_V2);
        b[24..32].copy_from_slice(&9u64.to_le_bytes());
        b[32..40].copy_from_slice(&13u64.to_le_bytes());
        b.extend_from_slice(&1u64.to_le_bytes());
        b.extend_from_slice(&2u32.to_le_bytes());
        b.extend_from_slice(b"s1");
        for v in 0..128u32 {
            b.extend_from_slice(&v.to_le_bytes());
        }
        std::fs::write(dir.path().join(INDEX_FILE), &b).expect("writes");
        let loaded = MinHash::new(&cfg).expect("loads").loaded;
        assert_eq!(loaded.len(), 1);
        assert!(loaded[0].sketch.is_empty() && loaded[0].id == "s1");
        // Another seed is another index.
        b[40..48].copy_from_slice(&1u64.to_le_bytes());
        std::fs::write(dir.path().join(INDEX_FILE), &b).expect("writes");
        assert!(MinHash::new(&cfg).is_err());
    }

    #[test]
    fn sketch_jaccard_is_exact_below_the_sketch_size_and_close_above() {
        let a: Vec<u32> = (0..400).collect();
        let b: Vec<u32> = (100..500).collect();
        assert_eq!(sketch_jaccard(&a, &b), 300.0 / 500.0);
        assert_eq!(sketch_jaccard(&a, &a), 1.0);
        assert_eq!(sketch_jaccard(&a, &[]), 0.0);
        // Large sets: bottom-k of pseudo-random hashes, true Jaccard 0.8.
        let mix = |x: u32| x.wrapping_mul(2_654_435_761).rotate_left(13) ^ 0x9E37_79B9;
        let bottom = |r: std::ops::Range<u32>| {
            let mut v: Vec<u32> = r.map(mix).collect();
            v.sort_unstable();
            v.truncate(SKETCH);
            v
        };
        let (x, y) = (bottom(0..9000), bottom(1000..10_000));
        let j = sketch_jaccard(&x, &y);
        assert!((j - 0.8).abs() < 0.04, "{j}");
    }

    #[test]
    fn chinese_shingles_are_characters_and_english_are_words() {
        let h = MinHasher::new(0.8, 16, 2, None, 1);
        assert_eq!(
            h.shingles("金额, 额外").len(),
            3,
            "金额 额额 额外 after punctuation is dropped"
        );
        assert_eq!(h.shingles("Hello, brave new world").len(), 3);
        assert!(h.shingles("  ，。！").is_empty());
        assert_eq!(
            h.shingles("ＨＥＬＬＯ brave"),
            h.shingles("hello BRAVE"),
            "canonical form"
        );
    }

    #[test]
    fn estimates_track_true_jaccard() {
        let h = MinHasher::new(0.8, 256, 1, None, 7);
        let a: String = (0..200).map(|i| format!("w{i} ")).collect();
        let b: String = (50..250).map(|i| format!("w{i} ")).collect(); // J = 150/250 = 0.6
        let est = estimate(
            &h.signature(&a).expect("sig"),
            &h.signature(&b).expect("sig"),
        );
        assert!((est - 0.6).abs() < 0.08, "estimate {est}");
    }

    #[test]
    fn vectorized_and_scalar_signatures_agree() {
        let xs: Vec<u32> = (0..1000u32)
            .map(|i| i.wrapping_mul(2_654_435_761))
            .collect();
        let h = MinHasher::new(0.8, 128, 5, None, 3);
        assert_eq!(
            signature_of(&h.a, &h.b, &xs),
            signature_scalar(&h.a, &h.b, &xs)
        );
    }

    #[test]
    fn config_checks() {
        let c: Config = toml::from_str("threshold = 0.8\nbands = 20\nrows = 10").expect("parses");
        assert_eq!(c.validate().len(), 1, "200 > 128");
        let c: Config = toml::from_str("keep = \"score\"").expect("parses");
        assert_eq!(c.validate().len(), 1);
        assert!(toml::from_str::<Config>("treshold = 0.8").is_err());
    }
}
