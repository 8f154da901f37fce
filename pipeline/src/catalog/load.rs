//! Reading catalogs: every run's `catalog.parquet` under a root, the runs chosen, each
//! source counted once.

use polars::prelude::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::*;
use crate::mix::frame::{invalid, QueryError};

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
/// Every row of the catalog under `root`, as one lazy frame (tag columns that a run lacks are
/// null there; numeric tags are Float64, see [`numeric_tags`]), each source's samples counted
/// once (see [`load_versioned`]). An empty catalog is an error naming the root. `runs` limits
/// it to runs named by name or folder. The frame comes from [`load`]'s cache.
pub fn scan(root: &Path, runs: Option<&[String]>) -> Result<LazyFrame, QueryError> {
    Ok(load(root, runs)?.lazy())
}

/// What identifies a catalog's state: each catalog file with its size and modification time.
type Fingerprint = Vec<(PathBuf, u64, Option<std::time::SystemTime>)>;

pub(super) fn fingerprint_of(files: &[PathBuf]) -> Fingerprint {
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
pub fn load(root: &Path, runs: Option<&[String]>) -> Result<DataFrame, QueryError> {
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
pub fn load_versioned(root: &Path, runs: Option<&[String]>) -> Result<Loaded, QueryError> {
    use std::sync::{Mutex, OnceLock};
    type Cache = BTreeMap<(PathBuf, Option<Vec<String>>), (Fingerprint, Loaded)>;
    static CACHE: OnceLock<Mutex<Cache>> = OnceLock::new();
    let files = catalog_files(root);
    if files.is_empty() {
        return invalid(format!(
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
            .map_err(|e| QueryError::Invalid(format!("{}: {e}", f.display())))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let df = concat_lf_diagonal(frames, UnionArgs::default())
        .and_then(|lf| lf.collect())
        .map_err(QueryError::Polars)?;
    let df = match runs {
        Some(names) => select_runs(df, names)?,
        None => df,
    };
    let (df, warnings) = count_sources_once(df)?;
    let tags = tag_columns(df.schema());
    let df = numeric_tags(df, &tags).map_err(QueryError::Polars)?;
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
pub(super) fn string_column(df: &DataFrame, name: &str) -> Vec<Option<String>> {
    df.column(name)
        .ok()
        .and_then(|c| c.str().ok().cloned())
        .map(|ca| ca.iter().map(|v| v.map(str::to_string)).collect())
        .unwrap_or_else(|| vec![None; df.height()])
}

/// Only the rows of runs named (by run name or folder); a name that matches no run is an
/// error listing the runs there are.
pub(super) fn select_runs(df: DataFrame, names: &[String]) -> Result<DataFrame, QueryError> {
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
            return invalid(format!(
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
        .map_err(QueryError::Polars)
}

/// Each source's rows from one run (see [`load_versioned`]), and a warning per pair of
/// overlapping runs.
pub(super) fn count_sources_once(df: DataFrame) -> Result<(DataFrame, Vec<String>), QueryError> {
    let strs = |c: &str| string_column(&df, c);
    let (path, source, hash) = (strs("path"), strs("source"), strs("source_hash"));
    let mixed: Vec<bool> = df
        .column("mixed")
        .ok()
        .and_then(|c| c.bool().ok().cloned())
        .map(|ca| ca.iter().map(|v| v.unwrap_or(false)).collect())
        .unwrap_or_else(|| vec![false; df.height()]);
    // The literal is stored in the smallest integer type that holds it (Int32 until 2038):
    // read it whatever its width.
    let published: Vec<i64> = df
        .column("published")
        .ok()
        .and_then(|c| c.cast(&DataType::Int64).ok())
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
        .map_err(QueryError::Polars)?;
    Ok((df, warnings))
}
