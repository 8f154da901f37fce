//! `sluice eval build`: held-out evaluation sets from a curated run, never in any training set
//! it is told of.
//!
//! The candidates are the run's held-out split (`test`, and the per-pool `test_domain`,
//! `test_general` a mix writes). A pipeline with `minhash` (`drop = false`) before its `split`
//! stage keeps near-duplicate clusters whole, so no held-out sample has a near duplicate in
//! its own run's training split; on top of that every candidate is checked against the
//! training split of this run and of every run named with `--against` (other mixes, earlier
//! versions): a candidate is dropped when a training sample has its id, its content (exact,
//! after case and whitespace folding), or a MinHash near duplicate of it (Jaccard at least
//! `threshold`, verified on the shingles, not just a shared band). Candidates are also
//! deduplicated among themselves the same way. Memory holds the candidates only: training
//! data streams past them once.
//!
//! Outputs under `--out`: `open/<domain>.jsonl` ([`OpenItem`]), `mc/<domain>.jsonl`
//! ([`McItem`]), each beside an OpenCompass `.meta.json`, an lm-evaluation-harness task per
//! file under `lm_eval/`, and `manifest.json` (what was read, what was dropped and why, what
//! was written).

use super::mc::{self, McSource};
use super::{question_text, McItem, OpenItem};
use anyhow::{bail, Result};
use serde::Serialize;
use sluice_pipeline::io::convert::convert;
use sluice_pipeline::io::options::InputPlan;
use sluice_pipeline::io::read_path;
use sluice_pipeline::sample::{Role, Sample};
use sluice_pipeline::stages::exact_dedup::Scope;
use sluice_pipeline::stages::minhash::{sketch_jaccard, MinHasher};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What `eval build` is asked for.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The curated run whose held-out split the sets come from.
    pub run: PathBuf,
    /// The held-out split: files of this split and of `<split>_*`.
    pub split: String,
    /// The training split's name in every run (default `train`).
    pub train_split: String,
    /// More runs whose training split must not leak into the sets.
    pub against: Vec<PathBuf>,
    /// The user's labelled multiple-choice files (CSV, JSONL or a JSON array).
    pub mc_files: Vec<PathBuf>,
    /// Domain and task of their records that do not say.
    pub mc_source: McSource,
    /// Make synthetic multiple-choice items from QA pairs (when the user gives none).
    pub synthetic_mc: bool,
    /// Options per synthetic item.
    pub choices: usize,
    /// Near-duplicate threshold (Jaccard of shingles).
    pub threshold: f64,
    /// Items per domain and form at most (0: all).
    pub max_per_domain: usize,
    /// Seed of sampling, distractors and option order.
    pub seed: u64,
    /// Where the sets go.
    pub out: PathBuf,
}

/// Why a candidate was left out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Leak {
    /// A training sample has its id.
    SameId,
    /// A training sample has its content.
    SameContent,
    /// A training sample is a near duplicate.
    NearDuplicate,
    /// Another candidate has its content or is a near duplicate (the first by id is kept).
    DuplicateCandidate,
}

/// One candidate left out, for the manifest.
#[derive(Debug, Clone, Serialize)]
pub struct LeakExample {
    /// The candidate.
    pub id: String,
    /// Why.
    pub reason: Leak,
    /// The training sample (or candidate) it matched.
    pub matched: String,
    /// The run it is in.
    pub run: String,
    /// Jaccard of the shingles, for near duplicates.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jaccard: Option<f64>,
}

/// One written file.
#[derive(Debug, Clone, Serialize)]
pub struct SetFile {
    /// `open` or `mc`.
    pub form: String,
    /// The domain.
    pub domain: String,
    /// Path under the output folder.
    pub path: String,
    /// Items.
    pub items: usize,
    /// Of which synthetic (multiple choice).
    pub synthetic: usize,
    /// Items per task.
    pub tasks: BTreeMap<String, usize>,
}

/// `manifest.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Manifest {
    /// The run the candidates came from.
    pub run: String,
    /// The held-out split files read.
    pub candidate_files: Vec<String>,
    /// Training files checked against.
    pub training_files: Vec<String>,
    /// Training samples streamed past the candidates.
    pub training_samples: u64,
    /// Held-out samples read.
    pub candidates: usize,
    /// The user's multiple-choice items read.
    pub labelled_mc: usize,
    /// Candidates left out, by reason.
    pub left_out: BTreeMap<String, usize>,
    /// Up to 50 of them.
    pub left_out_examples: Vec<LeakExample>,
    /// Candidates that are documents (no dialogue): they make no open or MC item.
    pub documents: usize,
    /// Domain → tasks without enough distinct answers for synthetic options.
    pub no_synthetic: BTreeMap<String, Vec<String>>,
    /// Settings.
    pub threshold: f64,
    /// Settings.
    pub seed: u64,
    /// The files written.
    pub files: Vec<SetFile>,
    /// How to load them.
    pub formats: String,
}

/// The text a sample is compared by (every part: a leaked answer is leakage).
fn content(s: &Sample) -> String {
    Scope::All.text(s)
}

/// Content with case and whitespace folded, hashed.
fn content_hash(text: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(super::fold(text).as_bytes())
}

/// A seeded rank of `key` (deterministic sampling and shuffling).
pub(crate) fn rank(seed: u64, key: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(key.as_bytes(), seed)
}

/// The curated files of one split (`<split>-NNNNN.*`), and with `prefix` of `<split>_*` too.
fn split_files(run: &Path, split: &str, prefix: bool) -> Result<Vec<PathBuf>> {
    crate::curated::files(run, &|s| {
        s == split || (prefix && s.starts_with(&format!("{split}_")))
    })
}

/// Every sample of a file, in order; a record that cannot be read is an error naming it.
pub(crate) fn read_samples(path: &Path, f: &mut dyn FnMut(Sample)) -> Result<()> {
    let plan = Arc::new(InputPlan::new("eval"));
    let mut bad: Option<String> = None;
    let status = read_path(&plan, path, 64 << 20, &mut |rec| {
        match convert(&rec) {
            Ok((s, _)) => f(s),
            Err(e) => {
                bad.get_or_insert_with(|| format!("record {}: {e}", rec.number));
            }
        }
        Ok(())
    })
    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    if let Err(e) = status {
        bail!("{}: {e}", path.display());
    }
    if let Some(e) = bad {
        bail!("{}: {e}", path.display());
    }
    Ok(())
}

/// A candidate with what it is compared by: a held-out sample, or one of the user's
/// multiple-choice items (as a dialogue: the question, then the right option).
struct Candidate {
    sample: Sample,
    /// Index into the user's items, for those.
    mc: Option<usize>,
    hash: u64,
    sketch: Vec<u32>,
    bands: Vec<u128>,
}

/// The candidates' index: id, content hash and LSH bands to candidate positions.
struct Index {
    hasher: MinHasher,
    threshold: f64,
    ids: HashMap<String, Vec<usize>>,
    hashes: HashMap<u64, Vec<usize>>,
    bands: HashMap<u128, Vec<usize>>,
}

impl Index {
    /// Candidates matching `s` (id, content or near duplicate), with the reason and Jaccard.
    fn matches(
        &self,
        cands: &[Candidate],
        s: &Sample,
        skip: Option<usize>,
    ) -> Vec<(usize, Leak, Option<f64>)> {
        let mut out = Vec::new();
        for &i in self.ids.get(&s.id).into_iter().flatten() {
            if Some(i) != skip {
                out.push((i, Leak::SameId, None));
            }
        }
        let text = content(s);
        if let Some(list) = self.hashes.get(&content_hash(&text)) {
            for &i in list {
                if Some(i) != skip && !out.iter().any(|o| o.0 == i) {
                    out.push((i, Leak::SameContent, None));
                }
            }
        }
        if let Some((sig, sketch)) = self.hasher.signature_and_sketch(&text) {
            let mut seen = HashSet::new();
            for key in self.hasher.band_keys(&sig) {
                for &i in self.bands.get(&key).into_iter().flatten() {
                    if Some(i) == skip || out.iter().any(|o| o.0 == i) || !seen.insert(i) {
                        continue;
                    }
                    let j = sketch_jaccard(&sketch, &cands[i].sketch);
                    if j >= self.threshold {
                        out.push((i, Leak::NearDuplicate, Some(j)));
                    }
                }
            }
        }
        out
    }
}

/// Build the evaluation sets.
pub fn build(opts: &BuildOptions) -> Result<Manifest> {
    if opts.choices < 2 || opts.choices > 26 {
        bail!("--choices {}: between 2 and 26", opts.choices);
    }
    if !(opts.threshold > 0.0 && opts.threshold <= 1.0) {
        bail!("--threshold {}: within (0, 1]", opts.threshold);
    }
    let hasher = MinHasher::new(opts.threshold, 128, 5, None, 0x5eed_e7a1);
    // The candidates.
    let candidate_files = split_files(&opts.run, &opts.split, true)?;
    if candidate_files.is_empty() {
        bail!(
            "{}: no curated file of split {:?} (or {:?}_*): run a pipeline whose split stage \
             makes it",
            opts.run.display(),
            opts.split,
            opts.split
        );
    }
    let mut samples = Vec::new();
    for f in &candidate_files {
        read_samples(f, &mut |s| samples.push(s))?;
    }
    // Deterministic order: by id (the first of duplicates by id is kept).
    samples.sort_by(|a, b| a.id.cmp(&b.id));
    let mut user_mc: Vec<McItem> = Vec::new();
    for f in &opts.mc_files {
        user_mc.extend(mc::read_labelled(f, &opts.mc_source)?);
    }
    let mut candidates: Vec<Candidate> = Vec::with_capacity(samples.len() + user_mc.len());
    let mut push = |sample: Sample, mc: Option<usize>| {
        let text = content(&sample);
        let (sig, sketch) = hasher.signature_and_sketch(&text).unwrap_or_default();
        candidates.push(Candidate {
            hash: content_hash(&text),
            bands: if sig.is_empty() {
                Vec::new()
            } else {
                hasher.band_keys(&sig)
            },
            sketch,
            sample,
            mc,
        });
    };
    for s in samples {
        push(s, None);
    }
    for (i, item) in user_mc.iter().enumerate() {
        push(mc::as_sample(item), Some(i));
    }
    let mut index = Index {
        hasher,
        threshold: opts.threshold,
        ids: HashMap::new(),
        hashes: HashMap::new(),
        bands: HashMap::new(),
    };
    for (i, c) in candidates.iter().enumerate() {
        index.ids.entry(c.sample.id.clone()).or_default().push(i);
        index.hashes.entry(c.hash).or_default().push(i);
        for &b in &c.bands {
            index.bands.entry(b).or_default().push(i);
        }
    }
    let mut left: BTreeMap<usize, LeakExample> = BTreeMap::new();
    // Among themselves: a later candidate (by id) matching an earlier one goes.
    for (i, c) in candidates.iter().enumerate() {
        if left.contains_key(&i) {
            continue;
        }
        for (j, _, jac) in index.matches(&candidates, &c.sample, Some(i)) {
            let same_kind = c.mc.is_some() == candidates[j].mc.is_some();
            if j > i && same_kind && !left.contains_key(&j) {
                left.insert(
                    j,
                    LeakExample {
                        id: candidates[j].sample.id.clone(),
                        reason: Leak::DuplicateCandidate,
                        matched: c.sample.id.clone(),
                        run: opts.run.display().to_string(),
                        jaccard: jac,
                    },
                );
            }
        }
    }
    // Against every training split: streamed once.
    let mut training_files = Vec::new();
    for run in std::iter::once(&opts.run).chain(&opts.against) {
        let files = split_files(run, &opts.train_split, false)?;
        if files.is_empty() {
            bail!(
                "{}: no curated file of the training split {:?}",
                run.display(),
                opts.train_split
            );
        }
        for f in files {
            training_files.push((run.clone(), f));
        }
    }
    let mut training_samples = 0u64;
    for (run, f) in &training_files {
        read_samples(f, &mut |s| {
            training_samples += 1;
            for (i, reason, jaccard) in index.matches(&candidates, &s, None) {
                let earlier = left.get(&i).map(|l| l.reason);
                // A leak into training outranks a duplicate among candidates.
                if earlier.is_none() || earlier == Some(Leak::DuplicateCandidate) {
                    left.insert(
                        i,
                        LeakExample {
                            id: candidates[i].sample.id.clone(),
                            reason,
                            matched: s.id.clone(),
                            run: run.display().to_string(),
                            jaccard,
                        },
                    );
                }
            }
        })?;
    }
    // Open items per domain, from the held-out samples kept.
    let mut documents = 0usize;
    let mut open: BTreeMap<String, Vec<OpenItem>> = BTreeMap::new();
    let mut mcs: BTreeMap<String, Vec<McItem>> = BTreeMap::new();
    for (i, c) in candidates.iter().enumerate() {
        if left.contains_key(&i) {
            continue;
        }
        match c.mc {
            Some(m) => mcs
                .entry(user_mc[m].domain.clone())
                .or_default()
                .push(user_mc[m].clone()),
            None => match open_item(&c.sample) {
                Some(item) => open.entry(c.sample.domain.clone()).or_default().push(item),
                None => documents += 1,
            },
        }
    }
    // Multiple choice: the user's, else synthetic from the open items.
    let mut no_synthetic: BTreeMap<String, Vec<String>> = BTreeMap::new();
    if user_mc.is_empty() && opts.synthetic_mc {
        for (domain, items) in &open {
            let (made, short) = mc::synthetic(items, opts.choices, opts.seed);
            if !made.is_empty() {
                mcs.insert(domain.clone(), made);
            }
            if !short.is_empty() {
                no_synthetic.insert(domain.clone(), short);
            }
        }
    }
    // Sampling per domain and form, deterministic.
    let cap = |n: usize| {
        if opts.max_per_domain == 0 {
            n
        } else {
            n.min(opts.max_per_domain)
        }
    };
    for items in open.values_mut() {
        items.sort_by_key(|i| (rank(opts.seed, &i.id), i.id.clone()));
        items.truncate(cap(items.len()));
        items.sort_by(|a, b| a.id.cmp(&b.id));
    }
    for items in mcs.values_mut() {
        items.sort_by_key(|i| (rank(opts.seed, &i.id), i.id.clone()));
        items.truncate(cap(items.len()));
        items.sort_by(|a, b| a.id.cmp(&b.id));
    }
    let files = super::build_write::write(&opts.out, &open, &mcs)?;
    let mut left_out: BTreeMap<String, usize> = BTreeMap::new();
    for l in left.values() {
        *left_out
            .entry(
                serde_json::to_value(l.reason)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
            )
            .or_default() += 1;
    }
    let manifest = Manifest {
        run: opts.run.display().to_string(),
        candidate_files: candidate_files
            .iter()
            .map(|p| p.display().to_string())
            .collect(),
        training_files: training_files
            .iter()
            .map(|(_, p)| p.display().to_string())
            .collect(),
        training_samples,
        candidates: candidates.iter().filter(|c| c.mc.is_none()).count(),
        labelled_mc: user_mc.len(),
        left_out,
        left_out_examples: left.values().take(50).cloned().collect(),
        documents,
        no_synthetic,
        threshold: opts.threshold,
        seed: opts.seed,
        files,
        formats: super::build_write::FORMATS.to_string(),
    };
    super::build_write::write_manifest(&opts.out, &manifest)?;
    Ok(manifest)
}

/// The open item of a dialogue whose last turn is the model's answer to a user turn.
pub fn open_item(s: &Sample) -> Option<OpenItem> {
    let n = s.turns.len();
    if n < 2 || !s.turns[n - 1].role.is_model() || s.turns[n - 2].role != Role::User {
        return None;
    }
    let prompt = s.turns[n - 2].content.clone();
    let reference = s.turns[n - 1].content.clone();
    if reference.trim().is_empty() || prompt.trim().is_empty() {
        return None;
    }
    let history = s.turns[..n - 2].to_vec();
    Some(OpenItem {
        id: s.id.clone(),
        domain: s.domain.clone(),
        task: s.task.clone(),
        system: s.system.clone(),
        question: question_text(&history, &prompt),
        answer: reference.clone(),
        history,
        prompt,
        reference,
        tags: s.tags.clone(),
    })
}
