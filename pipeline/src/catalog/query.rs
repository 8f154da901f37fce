//! Questions to the catalog: summaries, pool statistics, mix previews, and the pipeline that
//! writes a mix from the pools' curated files.

use crate::mix::{MixPlan, MixSpec};
use polars::prelude::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::*;
use crate::mix::frame::{invalid, QueryError};

/// A mix preview from the catalog under `root`: the plan the `mix` stage would follow.
pub fn preview(
    root: &Path,
    runs: Option<&[String]>,
    spec: &MixSpec,
) -> Result<MixPlan, QueryError> {
    let loaded = load_versioned(root, runs)?;
    let mut plan = preview_frame(&loaded.frame, spec)?;
    plan.warnings.extend(loaded.warnings);
    Ok(plan)
}

/// [`preview`] over a loaded catalog frame.
pub fn preview_frame(catalog: &DataFrame, spec: &MixSpec) -> Result<MixPlan, QueryError> {
    let problems = spec.validate();
    if !problems.is_empty() {
        return invalid(problems.join("; "));
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
pub fn token_methods(catalog: &DataFrame) -> Result<Vec<String>, QueryError> {
    let df = catalog
        .clone()
        .lazy()
        .select([col("tokens_by")])
        .unique_stable(None, UniqueKeepStrategy::First)
        .collect()
        .map_err(QueryError::Polars)?;
    let ca = df
        .column("tokens_by")
        .and_then(|c| c.str().cloned())
        .map_err(QueryError::Polars)?;
    Ok(ca.iter().flatten().map(str::to_string).collect())
}

/// Totals of the catalog grouped by `by` (column names), largest first: samples, turns,
/// tokens, chars.
pub fn summary(
    root: &Path,
    runs: Option<&[String]>,
    by: &[String],
    filter: Option<&str>,
) -> Result<DataFrame, QueryError> {
    let lf = scan(root, runs)?;
    let schema = lf.clone().collect_schema().map_err(QueryError::Polars)?;
    for b in by {
        if schema.get(b).is_none() {
            return invalid(format!(
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
    out.collect().map_err(QueryError::Polars)
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
pub fn runs(root: &Path, runs: Option<&[String]>) -> Result<Vec<RunEntry>, QueryError> {
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
pub(super) fn runs_of(lf: LazyFrame) -> Result<Vec<RunEntry>, QueryError> {
    let df = lf
        .select([col("run"), col("path"), col("files")])
        .unique_stable(None, UniqueKeepStrategy::First)
        .sort(["path"], Default::default())
        .collect()
        .map_err(QueryError::Polars)?;
    let get = |n: &str| {
        df.column(n)
            .and_then(|c| c.str().cloned())
            .map_err(QueryError::Polars)
    };
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
) -> Result<crate::Plan, QueryError> {
    let problems = spec.validate();
    if !problems.is_empty() {
        return invalid(problems.join("; "));
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
        .map_err(QueryError::Polars)?;
    let strs = |c: &str| {
        pairs
            .column(c)
            .and_then(|c| c.str().cloned())
            .map_err(QueryError::Polars)
    };
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
            .map_err(|e| QueryError::Invalid(format!("{}: {e}", pattern.display())))?
            .filter_map(|p| p.ok())
            .collect();
        found.sort();
        if found.is_empty() {
            return invalid(format!(
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
        return invalid(format!(
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
                confined_to: None,
                owners: Some(Arc::new(owners)),
                holdout: None,
                holdout_split_by_pool: false,
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
            confined_to: None,
        },
    })
}
