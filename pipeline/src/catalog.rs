//! The catalog of curated data. Every run writes `catalog.parquet` into its run directory (so
//! it is published atomically with the data it describes): one row per group of curated samples
//! sharing domain, task, source, kind and the values of the catalog's dimension tags (language,
//! split, user tags), with their samples, turns, tokens and characters and a few example ids.
//!
//! A catalog root is a folder of run directories. Queries scan every `*/catalog.parquet` under
//! it with polars lazy scans (runs with different tag columns are concatenated diagonally), so a
//! summary or a mix preview reads a few kilobytes per run and never a sample.

use crate::mix::{GroupStat, MixPlan, MixSpec, PoolSpec};
use crate::sample::Sample;
use crate::tokenize::TokenizerHandle;
use polars::prelude::*;
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Catalog query results are polars frames.
pub use polars::prelude::DataFrame;

/// The file name of a run's catalog.
pub const CATALOG_FILE: &str = "catalog.parquet";

/// Columns every catalog row has, besides the dimension tags. `path` and `published` are
/// added when a catalog is loaded (where the run lies, when it was published); `source_hash`
/// (the content hash of the group's source file, when the run read it), `source_content`
/// (`<samples>:<sum of their content hashes>` over the run's samples of that source: the same
/// samples give the same value, whatever file they came from) and `mixed` (the run is a mix)
/// are missing from catalogs written before they were kept.
pub const FIXED_COLUMNS: [&str; 18] = [
    "run",
    "path",
    "files",
    "tokens_by",
    "domain",
    "task",
    "source",
    "kind",
    "samples",
    "turns",
    "tokens",
    "chars",
    "copies",
    "examples",
    "source_hash",
    "source_content",
    "mixed",
    "published",
];

/// The tag `sluice mix run` puts on every sample it reads back: the catalog run (folder) it
/// came from.
pub const RUN_TAG: &str = "catalog_run";

/// Tag values that mean "no value" when a tag is compared as a number.
const MISSING: [&str; 3] = ["", "unknown", "und"];

/// Counts tokens of samples: with a tokenizer, or approximately (one per CJK character, one
/// per four bytes of other words) when none is configured.
#[derive(Clone)]
pub enum TokenCounter {
    /// An HF tokenizer.
    Tokenizer {
        /// The tokenizer.
        handle: Arc<TokenizerHandle>,
        /// How it is named in the catalog (`tokenizer.json:<first 12 hex of its sha256>`).
        name: String,
    },
    /// The approximation.
    Approx,
}

impl std::fmt::Debug for TokenCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

impl TokenCounter {
    /// A counter with the tokenizer at `path`, or the approximation for `None`.
    pub fn new(path: Option<&Path>) -> Result<TokenCounter, String> {
        let Some(path) = path else {
            return Ok(TokenCounter::Approx);
        };
        let handle = TokenizerHandle::shared(path)?;
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        use sha2::Digest;
        let hash = sha2::Sha256::digest(&bytes);
        let hex: String = hash.iter().take(6).map(|b| format!("{b:02x}")).collect();
        let file = path
            .file_name()
            .map_or_else(String::new, |f| f.to_string_lossy().into_owned());
        Ok(TokenCounter::Tokenizer {
            handle,
            name: format!("{file}:{hex}"),
        })
    }

    /// The name recorded in the catalog's `tokens_by` column.
    pub fn name(&self) -> String {
        match self {
            TokenCounter::Tokenizer { name, .. } => name.clone(),
            TokenCounter::Approx => "approx".into(),
        }
    }

    /// Tokens of a sample's content (system prompt, turns or text), without template tokens.
    pub fn count(&self, s: &Sample) -> u64 {
        s.content_parts()
            .map(|(_, text)| match self {
                TokenCounter::Tokenizer { handle, .. } => handle
                    .count(text)
                    .map_or_else(|_| approx_tokens(text), |n| n as u64),
                TokenCounter::Approx => approx_tokens(text),
            })
            .sum()
    }
}

/// One token per CJK character, about one per four bytes of other words, one per symbol.
pub fn approx_tokens(text: &str) -> u64 {
    let mut n = 0u64;
    let mut word = 0u64;
    for c in text.chars() {
        if c.is_alphanumeric() && (c as u32) < 0x2E80 {
            word += c.len_utf8() as u64;
            continue;
        }
        n += word.div_ceil(4);
        word = 0;
        if !c.is_whitespace() {
            n += 1;
        }
    }
    n + word.div_ceil(4)
}

#[derive(Debug, Default, Clone)]
struct Acc {
    samples: u64,
    turns: u64,
    tokens: u64,
    chars: u64,
    copies: u64,
    examples: Vec<String>,
}

/// A sample's content as a 128-bit hash: its system prompt, turns (with roles) and text,
/// exactly as written (two files holding the same dialogues give the same hashes).
pub fn content_hash(s: &Sample) -> u128 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for (label, part) in s.content_parts() {
        h.update(label.as_bytes());
        h.update(b"\x01");
        h.update(part.as_bytes());
        h.update(b"\x02");
    }
    h.digest128()
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

    /// The dimension tags.
    pub fn dims(&self) -> &[String] {
        &self.dims
    }

    /// Add curated samples (tokens are counted in parallel). A mix's extra copies (tag
    /// `mix_copy`) are counted as `copies` only: every other statistic is about distinct samples.
    pub fn add(&mut self, samples: &[Sample]) {
        // Per sample: its group key, and (turns, tokens, chars, content hash) unless it is a
        // copy.
        type Row = (Vec<Option<String>>, Option<(u64, u64, u64, u128)>);
        let rows: Vec<Row> = samples
            .par_iter()
            .map(|s| {
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
                        self.counter.count(s),
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

    /// Catalog rows so far.
    pub fn rows(&self) -> usize {
        self.groups.len()
    }

    /// Distinct samples per value of each dimension tag (`unset` where a sample lacks the tag).
    pub fn distributions(&self) -> BTreeMap<String, BTreeMap<String, u64>> {
        let mut out: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
        for (key, acc) in &self.groups {
            for (d, v) in self.dims.iter().zip(&key[4..]) {
                let v = v.clone().unwrap_or_else(|| "unset".into());
                *out.entry(d.clone()).or_default().entry(v).or_default() += acc.samples;
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
                .map(|a| serde_json::to_string(&a.examples).unwrap_or_default())
                .collect::<Vec<String>>(),
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

/// The catalog files under a root: `<root>/catalog.parquet` (a run directory itself) and
/// `<root>/*/catalog.parquet`, sorted.
pub fn catalog_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let own = root.join(CATALOG_FILE);
    if own.is_file() {
        out.push(own);
    }
    if let Ok(entries) = std::fs::read_dir(root) {
        for e in entries.flatten() {
            let p = e.path().join(CATALOG_FILE);
            // Unpublished (`.tmp-…`), failed and trial (`--limit`) runs are not part of the
            // catalog.
            let name = e.file_name().to_string_lossy().into_owned();
            if p.is_file()
                && !name.starts_with('.')
                && !name.ends_with(".failed")
                && !name.ends_with(".trial")
            {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Errors of catalog queries, as messages.
fn msg(e: PolarsError) -> String {
    e.to_string()
}

/// Every row of the catalog under `root`, as one lazy frame (tag columns that a run lacks are
/// null there; numeric tags are Float64, see [`numeric_tags`]), each source's samples counted
/// once (see [`load_versioned`]). An empty catalog is an error naming the root. `runs` limits
/// it to runs named by name or folder. The frame comes from [`load`]'s cache.
pub fn scan(root: &Path, runs: Option<&[String]>) -> Result<LazyFrame, String> {
    Ok(load(root, runs)?.lazy())
}

/// What identifies a catalog's state: each catalog file with its size and modification time.
type Fingerprint = Vec<(PathBuf, u64, Option<std::time::SystemTime>)>;

fn fingerprint_of(files: &[PathBuf]) -> Fingerprint {
    files
        .iter()
        .map(|f| {
            let m = std::fs::metadata(f).ok();
            (
                f.clone(),
                m.as_ref().map_or(0, |m| m.len()),
                m.and_then(|m| m.modified().ok()),
            )
        })
        .collect()
}

/// The catalog under `root` as one typed frame. Reading 1,000 small Parquet files costs far
/// more than answering a query, so the frame is cached per root in the process and reloaded
/// only when a catalog file appears, disappears or changes (a `stat` per file per call).
pub fn load(root: &Path, runs: Option<&[String]>) -> Result<DataFrame, String> {
    load_versioned(root, runs).map(|c| c.frame)
}

/// A loaded catalog.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// A hash of the catalog's state (its files, sizes and modification times, and the run
    /// selection): answers computed from the frame stay valid while it is unchanged.
    pub version: u64,
    /// The rows counted.
    pub frame: DataFrame,
    /// Runs that overlap (read the same source files), and which one counts.
    pub warnings: Vec<String>,
}

/// [`load`], with the catalog's version and its overlap warnings.
///
/// Runs that read the same source (the same file: `source`, and the same content hash where
/// both runs know it; or the same samples under another name: the same count and sum of
/// sample content hashes) would count its samples twice. Each source's rows are taken from
/// one run: the run whose samples carry more user tags (a `tags` stage joined a profile
/// table), then curated runs before mixes (a mix is a selection of other runs' data), then the
/// newest (by when its catalog was published), then the first by folder. Every other run's
/// rows of that source are left out, and a warning names the runs.
pub fn load_versioned(root: &Path, runs: Option<&[String]>) -> Result<Loaded, String> {
    use std::sync::{Mutex, OnceLock};
    type Cache = BTreeMap<(PathBuf, Option<Vec<String>>), (Fingerprint, Loaded)>;
    static CACHE: OnceLock<Mutex<Cache>> = OnceLock::new();
    let files = catalog_files(root);
    if files.is_empty() {
        return Err(format!(
            "no catalog under {}: expected <run>/{CATALOG_FILE} files written by `sluice run`",
            root.display()
        ));
    }
    let fingerprint = fingerprint_of(&files);
    let version = xxhash_rust::xxh3::xxh3_64(format!("{fingerprint:?}{runs:?}").as_bytes());
    let cache = CACHE.get_or_init(Default::default);
    let key = (root.to_path_buf(), runs.map(<[String]>::to_vec));
    if let Ok(c) = cache.lock() {
        if let Some((fp, loaded)) = c.get(&key) {
            if *fp == fingerprint {
                return Ok(loaded.clone());
            }
        }
    }
    let frames = files
        .iter()
        .zip(&fingerprint)
        .map(|(f, (_, _, modified))| {
            // `path`: the run directory relative to the root, from where the file lies, so a
            // run directory can be moved or copied and its catalog entry stays true.
            let dir = f
                .parent()
                .and_then(|d| d.strip_prefix(root).ok())
                .map_or_else(String::new, |d| d.to_string_lossy().into_owned());
            let published = modified
                .and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs() as i64);
            LazyFrame::scan_parquet(
                PlRefPath::new(f.to_string_lossy().as_ref()),
                ScanArgsParquet::default(),
            )
            .map(|lf| lf.with_columns([lit(dir).alias("path"), lit(published).alias("published")]))
            .map_err(|e| format!("{}: {e}", f.display()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let df = concat_lf_diagonal(frames, UnionArgs::default())
        .and_then(|lf| lf.collect())
        .map_err(msg)?;
    let df = match runs {
        Some(names) => select_runs(df, names)?,
        None => df,
    };
    let (df, warnings) = count_sources_once(df)?;
    let tags = tag_columns(df.schema());
    let df = numeric_tags(df, &tags).map_err(msg)?;
    let loaded = Loaded {
        version,
        frame: df,
        warnings,
    };
    if let Ok(mut c) = cache.lock() {
        c.insert(key, (fingerprint, loaded.clone()));
    }
    Ok(loaded)
}

/// A string column's values, row by row; all `None` when the frame has no such column
/// (catalogs written before it was kept).
fn string_column(df: &DataFrame, name: &str) -> Vec<Option<String>> {
    df.column(name)
        .ok()
        .and_then(|c| c.str().ok().cloned())
        .map(|ca| ca.iter().map(|v| v.map(str::to_string)).collect())
        .unwrap_or_else(|| vec![None; df.height()])
}

/// Only the rows of runs named (by run name or folder); a name that matches no run is an
/// error listing the runs there are.
fn select_runs(df: DataFrame, names: &[String]) -> Result<DataFrame, String> {
    let strs = |c: &str| -> Vec<String> {
        string_column(&df, c)
            .into_iter()
            .map(Option::unwrap_or_default)
            .collect()
    };
    let (run, path) = (strs("run"), strs("path"));
    for n in names {
        if !run.contains(n) && !path.contains(n) {
            let mut known: Vec<&String> = path.iter().collect();
            known.sort();
            known.dedup();
            return Err(format!(
                "--runs: no run {n:?} in the catalog (runs: {})",
                known
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    let keep: Vec<bool> = run
        .iter()
        .zip(&path)
        .map(|(r, p)| names.contains(r) || names.contains(p))
        .collect();
    df.filter(&BooleanChunked::from_slice("keep".into(), &keep))
        .map_err(msg)
}

/// Each source's rows from one run (see [`load_versioned`]), and a warning per pair of
/// overlapping runs.
fn count_sources_once(df: DataFrame) -> Result<(DataFrame, Vec<String>), String> {
    let strs = |c: &str| string_column(&df, c);
    let (path, source, hash) = (strs("path"), strs("source"), strs("source_hash"));
    let mixed: Vec<bool> = df
        .column("mixed")
        .ok()
        .and_then(|c| c.bool().ok().cloned())
        .map(|ca| ca.iter().map(|v| v.unwrap_or(false)).collect())
        .unwrap_or_else(|| vec![false; df.height()]);
    let published: Vec<i64> = df
        .column("published")
        .ok()
        .and_then(|c| c.i64().ok().cloned())
        .map(|ca| ca.iter().map(|v| v.unwrap_or(0)).collect())
        .unwrap_or_else(|| vec![0; df.height()]);
    // The known content hashes of each source: with one, rows that do not know it are the
    // same file; with several, each hash is its own file.
    let mut hashes: BTreeMap<&str, std::collections::BTreeSet<&str>> = BTreeMap::new();
    for (s, h) in source.iter().zip(&hash) {
        if let (Some(s), Some(h)) = (s, h) {
            hashes.entry(s.as_str()).or_default().insert(h.as_str());
        }
    }
    let file_key = |i: usize| -> (String, String) {
        let s = source[i].clone().unwrap_or_default();
        let h = match (&hash[i], hashes.get(s.as_str())) {
            (Some(h), _) => h.clone(),
            (None, Some(set)) if set.len() == 1 => set
                .iter()
                .next()
                .map_or_else(String::new, |h| h.to_string()),
            _ => String::new(),
        };
        (s, h)
    };
    // Two sources are the same data when they are the same file, or when a run's samples of
    // one and a run's samples of the other are the same samples (the same count and sum of
    // content hashes: a file copied under another name, an export of the same dialogues).
    let content = strs("source_content");
    type Key = (String, String);
    fn find(parent: &mut BTreeMap<Key, Key>, k: &Key) -> Key {
        let mut cur = k.clone();
        while let Some(p) = parent.get(&cur) {
            if *p == cur {
                break;
            }
            cur = p.clone();
        }
        parent.insert(k.clone(), cur.clone());
        cur
    }
    let mut parent: BTreeMap<Key, Key> = BTreeMap::new();
    for (i, c) in content.iter().enumerate() {
        let a = file_key(i);
        parent.entry(a.clone()).or_insert_with(|| a.clone());
        if let Some(c) = c.as_ref().filter(|c| !c.starts_with("0:")) {
            let b = ("\u{0}content".to_string(), c.clone());
            parent.entry(b.clone()).or_insert_with(|| b.clone());
            let (ra, rb) = (find(&mut parent, &a), find(&mut parent, &b));
            if ra != rb {
                let (lo, hi) = if ra < rb { (ra, rb) } else { (rb, ra) };
                parent.insert(hi, lo);
            }
        }
    }
    let roots: Vec<Key> = (0..df.height())
        .map(|i| find(&mut parent, &file_key(i)))
        .collect();
    let key_of = |i: usize| -> Key { roots[i].clone() };
    // How many user tags a run's samples of a source carry (tags other than `lang` and `split`
    // with a real value, not `unknown`, in some row): a run that joined a profile table knows
    // more about the same samples.
    let mut richness: BTreeMap<(String, String), usize> = BTreeMap::new();
    for t in tag_columns(df.schema())
        .into_iter()
        .filter(|t| t != "lang" && t != "split")
    {
        let values = strs(&t);
        let mut tagged: std::collections::BTreeSet<(String, String)> = Default::default();
        for (i, v) in values.iter().enumerate() {
            if v.as_deref().is_some_and(|v| !MISSING.contains(&v)) {
                tagged.insert((
                    path[i].clone().unwrap_or_default(),
                    source[i].clone().unwrap_or_default(),
                ));
            }
        }
        for k in tagged {
            *richness.entry(k).or_default() += 1;
        }
    }
    // Rank of a run for a source: more user tags first, curated before mixed, newest, then by
    // folder.
    type Rank = (
        std::cmp::Reverse<usize>,
        bool,
        std::cmp::Reverse<i64>,
        String,
    );
    let mut owner: BTreeMap<(String, String), Rank> = BTreeMap::new();
    let mut readers: BTreeMap<(String, String), std::collections::BTreeSet<String>> =
        BTreeMap::new();
    for i in 0..df.height() {
        let p = path[i].clone().unwrap_or_default();
        let rich = richness
            .get(&(p.clone(), source[i].clone().unwrap_or_default()))
            .copied()
            .unwrap_or(0);
        let rank = (
            std::cmp::Reverse(rich),
            mixed[i],
            std::cmp::Reverse(published[i]),
            p.clone(),
        );
        let key = key_of(i);
        readers.entry(key.clone()).or_default().insert(p);
        owner
            .entry(key)
            .and_modify(|r| {
                if rank < *r {
                    *r = rank.clone();
                }
            })
            .or_insert(rank);
    }
    let keep: Vec<bool> = (0..df.height())
        .map(|i| owner.get(&key_of(i)).map(|r| &r.3) == path[i].as_ref())
        .collect();
    // One warning per (run left out, run counted), with the number of shared sources.
    let mut pairs: BTreeMap<(String, String), usize> = BTreeMap::new();
    for (key, rs) in &readers {
        let Some(own) = owner.get(key) else { continue };
        for r in rs.iter().filter(|r| **r != own.3) {
            *pairs.entry((r.clone(), own.3.clone())).or_default() += 1;
        }
    }
    // One warning per run left out of some source: which runs count those sources instead.
    let mut by_left: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for ((left, counted), n) in pairs {
        by_left
            .entry(left)
            .or_default()
            .push(format!("{n} from {counted:?}"));
    }
    let warnings = by_left
        .into_iter()
        .map(|(left, counted)| {
            format!(
                "run {left:?} overlaps other runs: source files it read are counted from another run ({}); each source is counted once (runs with more user tags first, curated runs before mixes, then the newest); choose runs with --runs",
                counted.join(", ")
            )
        })
        .collect();
    let df = df
        .filter(&BooleanChunked::from_slice("keep".into(), &keep))
        .map_err(msg)?;
    Ok((df, warnings))
}

/// The dimension (tag) columns of a catalog frame's schema.
pub fn tag_columns(schema: &Schema) -> Vec<String> {
    schema
        .iter_names()
        .map(|n| n.to_string())
        .filter(|n| !FIXED_COLUMNS.contains(&n.as_str()))
        .collect()
}

/// Cast tag columns whose every value is a number (or a missing marker such as `unknown`) to
/// Float64, so `age >= 18` compares numbers; missing markers become null.
pub fn numeric_tags(mut df: DataFrame, tags: &[String]) -> PolarsResult<DataFrame> {
    for t in tags {
        let Ok(col) = df.column(t) else { continue };
        let Ok(ca) = col.str() else { continue };
        let mut any = false;
        let numeric = ca.iter().all(|v| match v {
            None => true,
            Some(v) if MISSING.contains(&v) => true,
            Some(v) => {
                any = true;
                v.trim().parse::<f64>().is_ok()
            }
        });
        if numeric && any {
            let values: Vec<Option<f64>> = ca
                .iter()
                .map(|v| v.and_then(|v| v.trim().parse::<f64>().ok()))
                .collect();
            df.with_column(Column::new(t.as_str().into(), values))?;
        }
    }
    Ok(df)
}

/// A `where` condition as a polars expression: checked by [`crate::filter`] (no function,
/// subquery or table reaches polars), with its columns checked against `columns` when given.
pub fn where_expr(text: &str, columns: Option<&[String]>) -> Result<Expr, String> {
    let sql = crate::filter::canonical(text, columns)?;
    polars::sql::sql_expr(&sql).map_err(|e| format!("where {text:?}: {e}"))
}

/// The condition of one pool over a frame with `domain`, `task`, `source`, `kind` and tag
/// columns.
pub fn pool_condition(p: &PoolSpec) -> Result<Expr, String> {
    let any_of = |name: &str, values: &[String]| {
        values
            .iter()
            .map(|v| col(name).eq(lit(v.clone())))
            .reduce(|a, b| a.or(b))
    };
    let mut conds: Vec<Expr> = Vec::new();
    conds.extend(any_of("domain", &p.domain));
    conds.extend(any_of("task", &p.task));
    conds.extend(any_of("source", &p.source));
    if let Some(k) = p.kind {
        conds.push(col("kind").eq(lit(k.as_str())));
    }
    if let Some(w) = &p.filter {
        conds.push(where_expr(w, None)?);
    }
    Ok(conds
        .into_iter()
        .reduce(|a, b| a.and(b))
        .unwrap_or_else(|| lit(true))
        .fill_null(lit(false)))
}

/// A `pool` column (UInt32, null outside every pool): the index of the first pool a row
/// matches, in [`MixSpec::resolved_pools`] order.
pub fn pool_expr(spec: &MixSpec) -> Result<Expr, String> {
    let pools = spec.resolved_pools();
    let mut expr: Option<Expr> = None;
    for (i, (_, p, _)) in pools.iter().enumerate().rev() {
        let then = lit(i as u32);
        let cond = pool_condition(p)?;
        expr = Some(match expr {
            None => when(cond)
                .then(then)
                .otherwise(lit(NULL).cast(DataType::UInt32)),
            Some(rest) => when(cond).then(then).otherwise(rest),
        });
    }
    Ok(expr
        .unwrap_or_else(|| lit(NULL).cast(DataType::UInt32))
        .alias("pool"))
}

/// Group statistics for the planner from a catalog (or per-sample) frame with `samples`,
/// `tokens` and `examples` columns.
pub fn pool_stats(lf: LazyFrame, spec: &MixSpec) -> Result<Vec<GroupStat>, String> {
    pooled_stats(lf.with_column(pool_expr(spec)?))
}

/// [`pool_stats`] over a frame that already has its `pool` column.
pub fn pooled_stats(lf: LazyFrame) -> Result<Vec<GroupStat>, String> {
    let schema = lf.clone().collect_schema().map_err(msg)?;
    let grouped = lf
        .filter(col("pool").is_not_null())
        .group_by([col("pool"), col("task")])
        .agg([
            col("samples").sum(),
            col("tokens").sum(),
            col("examples").head(Some(3)),
        ])
        .sort(["pool", "task"], Default::default())
        .collect()
        .map_err(|e| {
            format!(
                "{e} (columns available: {})",
                schema
                    .iter_names()
                    .map(|n| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?;
    let pool = grouped
        .column("pool")
        .and_then(|c| c.u32().cloned())
        .map_err(msg)?;
    let task = grouped
        .column("task")
        .and_then(|c| c.str().cloned())
        .map_err(msg)?;
    let samples = grouped
        .column("samples")
        .and_then(|c| c.cast(&DataType::UInt64))
        .map_err(msg)?;
    let tokens = grouped
        .column("tokens")
        .and_then(|c| c.cast(&DataType::UInt64))
        .map_err(msg)?;
    let samples = samples.u64().map_err(msg)?;
    let tokens = tokens.u64().map_err(msg)?;
    let examples = grouped
        .column("examples")
        .and_then(|c| c.list().cloned())
        .map_err(msg)?;
    let mut out = Vec::with_capacity(grouped.height());
    for i in 0..grouped.height() {
        let mut ex = Vec::new();
        if let Some(s) = examples.get_as_series(i) {
            if let Ok(strs) = s.str() {
                for v in strs.iter().flatten() {
                    ex.extend(serde_json::from_str::<Vec<String>>(v).unwrap_or_default());
                }
            }
        }
        out.push(GroupStat {
            pool: pool.get(i).unwrap_or(0) as usize,
            task: task.get(i).unwrap_or("").to_string(),
            samples: samples.get(i).unwrap_or(0),
            tokens: tokens.get(i).unwrap_or(0),
            examples: ex,
        });
    }
    Ok(out)
}

/// A mix preview from the catalog under `root`: the plan the `mix` stage would follow.
pub fn preview(root: &Path, runs: Option<&[String]>, spec: &MixSpec) -> Result<MixPlan, String> {
    let loaded = load_versioned(root, runs)?;
    let mut plan = preview_frame(&loaded.frame, spec)?;
    plan.warnings.extend(loaded.warnings);
    Ok(plan)
}

/// [`preview`] over a loaded catalog frame.
pub fn preview_frame(catalog: &DataFrame, spec: &MixSpec) -> Result<MixPlan, String> {
    let problems = spec.validate();
    if !problems.is_empty() {
        return Err(problems.join("; "));
    }
    // What a `where` may name: the sample's fields and the tags (as the mix stage sees them).
    let mut columns: Vec<String> = ["domain", "task", "source", "kind"]
        .iter()
        .map(|c| c.to_string())
        .collect();
    columns.extend(tag_columns(catalog.schema()));
    for (_, pool, _) in spec.resolved_pools() {
        if let Some(w) = &pool.filter {
            crate::filter::canonical(w, Some(&columns))?;
        }
    }
    let stats = pool_stats(catalog.clone().lazy(), spec)?;
    let mut plan = crate::mix::plan(spec, &stats);
    let methods = token_methods(catalog)?;
    if methods.len() > 1 && spec.unit() == crate::mix::MixUnit::Tokens {
        plan.warnings.push(format!(
            "runs in this catalog counted tokens differently ({}): token shares mix units",
            methods.join(", ")
        ));
    }
    Ok(plan)
}

/// The distinct `tokens_by` values of a catalog frame.
pub fn token_methods(catalog: &DataFrame) -> Result<Vec<String>, String> {
    let df = catalog
        .clone()
        .lazy()
        .select([col("tokens_by")])
        .unique_stable(None, UniqueKeepStrategy::First)
        .collect()
        .map_err(msg)?;
    let ca = df
        .column("tokens_by")
        .and_then(|c| c.str().cloned())
        .map_err(msg)?;
    Ok(ca.iter().flatten().map(str::to_string).collect())
}

/// Totals of the catalog grouped by `by` (column names), largest first: samples, turns,
/// tokens, chars.
pub fn summary(
    root: &Path,
    runs: Option<&[String]>,
    by: &[String],
    filter: Option<&str>,
) -> Result<DataFrame, String> {
    let lf = scan(root, runs)?;
    let schema = lf.clone().collect_schema().map_err(msg)?;
    for b in by {
        if schema.get(b).is_none() {
            return Err(format!(
                "no column {b:?} in the catalog (columns: {})",
                schema
                    .iter_names()
                    .map(|n| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    let mut lf = lf;
    if let Some(w) = filter {
        let columns: Vec<String> = schema.iter_names().map(|n| n.to_string()).collect();
        lf = lf.filter(where_expr(w, Some(&columns))?);
    }
    let keys: Vec<Expr> = by.iter().map(|b| col(b.as_str())).collect();
    let aggs = [
        col("samples").sum(),
        col("turns").sum(),
        col("tokens").sum(),
        col("chars").sum(),
        // Catalogs written before copies were counted have no such column.
        if schema.get("copies").is_some() {
            col("copies").sum()
        } else {
            lit(0u64).alias("copies")
        },
    ];
    let out = if keys.is_empty() {
        lf.select(aggs)
    } else {
        lf.group_by(keys).agg(aggs).sort_by_exprs(
            vec![col("samples")],
            SortMultipleOptions::default().with_order_descending(true),
        )
    };
    out.collect().map_err(msg)
}

/// A small polars frame as JSON rows.
pub fn frame_json(df: &DataFrame) -> serde_json::Value {
    let names: Vec<String> = df
        .get_column_names()
        .iter()
        .map(|n| n.to_string())
        .collect();
    let rows: Vec<serde_json::Value> = (0..df.height())
        .map(|i| {
            let mut row = serde_json::Map::new();
            for (n, c) in names.iter().zip(df.columns()) {
                let v = match c.get(i) {
                    Ok(AnyValue::Null) | Err(_) => serde_json::Value::Null,
                    // Strings come borrowed or owned (after a group-by): never Debug-quoted.
                    Ok(v) if v.get_str().is_some() => serde_json::json!(v.get_str()),
                    Ok(v) if v.is_unsigned_integer() => serde_json::json!(v.extract::<u64>()),
                    Ok(v) if v.is_signed_integer() => serde_json::json!(v.extract::<i64>()),
                    Ok(v) if v.is_float() => serde_json::json!(v.extract::<f64>()),
                    Ok(other) => serde_json::json!(other.to_string()),
                };
                row.insert(n.clone(), v);
            }
            serde_json::Value::Object(row)
        })
        .collect();
    serde_json::Value::Array(rows)
}

/// The runs in a catalog: run name, its directory relative to the root, and its curated files.
pub fn runs(root: &Path, runs: Option<&[String]>) -> Result<Vec<RunEntry>, String> {
    runs_of(scan(root, runs)?)
}

/// One run of a catalog.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RunEntry {
    /// The run's name.
    pub run: String,
    /// Its directory, relative to the catalog root.
    pub path: String,
    /// The glob of its curated files within that directory.
    pub files: String,
}

/// The distinct runs among a catalog frame's rows, by path.
fn runs_of(lf: LazyFrame) -> Result<Vec<RunEntry>, String> {
    let df = lf
        .select([col("run"), col("path"), col("files")])
        .unique_stable(None, UniqueKeepStrategy::First)
        .sort(["path"], Default::default())
        .collect()
        .map_err(msg)?;
    let get = |n: &str| df.column(n).and_then(|c| c.str().cloned()).map_err(msg);
    let (r, p, f) = (get("run")?, get("path")?, get("files")?);
    let text = |v: Option<&str>| v.unwrap_or("").to_string();
    Ok((0..df.height())
        .map(|i| RunEntry {
            run: text(r.get(i)),
            path: text(p.get(i)),
            files: text(f.get(i)),
        })
        .collect())
}

/// A pipeline that mixes curated data from the catalog under `root`: one input per run that
/// has samples in some pool (its curated files, read back as sluice records with their domain,
/// task and tags), and a single `mix` stage. `sluice mix run` executes it like any pipeline.
pub fn mix_pipeline(
    root: &Path,
    runs: Option<&[String]>,
    spec: &MixSpec,
    out: &Path,
    seed: u64,
    tokenizer: Option<PathBuf>,
) -> Result<crate::Plan, String> {
    let problems = spec.validate();
    if !problems.is_empty() {
        return Err(problems.join("; "));
    }
    let frame = load(root, runs)?;
    let used = runs_of(
        frame
            .clone()
            .lazy()
            .with_column(pool_expr(spec)?)
            .filter(col("pool").is_not_null()),
    )?;
    // Which sources each run is counted for: a sample read from a run that another run
    // counts for is left out of the mix (`overlap`), as the preview leaves it out.
    let mut owners: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
    let pairs = frame
        .clone()
        .lazy()
        .select([col("path"), col("source")])
        .unique_stable(None, UniqueKeepStrategy::First)
        .collect()
        .map_err(msg)?;
    let strs = |c: &str| pairs.column(c).and_then(|c| c.str().cloned()).map_err(msg);
    let (ps, ss) = (strs("path")?, strs("source")?);
    for (p, s) in ps.iter().zip(ss.iter()) {
        owners
            .entry(p.unwrap_or("").to_string())
            .or_default()
            .insert(s.unwrap_or("").to_string());
    }
    let mut inputs = Vec::new();
    for entry in &used {
        let dir = entry.path.as_str();
        let files = match entry.files.as_str() {
            "" => "curated/*.parquet",
            f => f,
        };
        let pattern = root.join(dir).join(files);
        let mut found: Vec<PathBuf> = glob::glob(&pattern.to_string_lossy())
            .map_err(|e| format!("{}: {e}", pattern.display()))?
            .filter_map(|p| p.ok())
            .collect();
        found.sort();
        if found.is_empty() {
            return Err(format!(
                "the catalog lists run {dir:?} but {} matches no file",
                pattern.display()
            ));
        }
        let mut input = crate::config::InputPlan::new(dir);
        input.format = crate::config::RecordFormat::Sluice;
        input.tags = vec![(RUN_TAG.to_string(), dir.to_string())];
        input.files = found
            .into_iter()
            .map(|p| {
                let shown = p
                    .strip_prefix(root)
                    .unwrap_or(&p)
                    .to_string_lossy()
                    .into_owned();
                (p, shown)
            })
            .collect();
        inputs.push(input);
    }
    if inputs.is_empty() {
        return Err(format!(
            "no run under {} has samples in any pool of the mix",
            root.display()
        ));
    }
    let name = out
        .file_name()
        .map_or_else(|| "mix".to_string(), |n| n.to_string_lossy().into_owned());
    Ok(crate::Plan {
        config_path: root.join("<mix>"),
        name: name.clone(),
        seed,
        batch_size: 2048,
        batch_bytes: 64 << 20,
        max_record_bytes: 64 << 20,
        max_reject_ratio: 0.0,
        inputs,
        stages: vec![crate::stages::StageConfig::Mix(Box::new(
            crate::stages::mix::Config {
                spec: spec.clone(),
                tokenizer: tokenizer.clone(),
                owners: Some(Arc::new(owners)),
            },
        ))],
        output_dir: out.to_path_buf(),
        output_url: None,
        formats: vec![
            crate::config::OutputFormat::Parquet,
            crate::config::OutputFormat::Jsonl,
        ],
        rows_per_file: 100_000,
        llamafactory_style: Default::default(),
        llamafactory_name: name,
        shards: None,
        catalog: crate::config::CatalogPlan {
            tokenizer,
            dimensions: None,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn approx_tokens_counts_cjk_per_character_and_words_by_length() {
        assert_eq!(approx_tokens("你好，世界"), 5);
        assert_eq!(approx_tokens("hello world"), 4);
        assert_eq!(approx_tokens(""), 0);
    }

    #[test]
    fn numeric_tags_compare_as_numbers_and_unknown_is_null() {
        let df = DataFrame::new_infer_height(vec![
            Column::new(
                "age".into(),
                vec![Some("17"), Some("30"), Some("unknown"), None],
            ),
            Column::new(
                "region".into(),
                vec![Some("east"), Some("west"), Some("east"), None],
            ),
        ])
        .expect("frame");
        let df = numeric_tags(df, &["age".into(), "region".into()]).expect("cast");
        assert_eq!(
            df.column("age").map(|c| c.dtype().clone()).ok(),
            Some(DataType::Float64)
        );
        let out = df
            .lazy()
            .filter(polars::sql::sql_expr("age >= 18 AND region = 'west'").expect("sql"))
            .collect()
            .expect("filter");
        assert_eq!(out.height(), 1);
    }
}
