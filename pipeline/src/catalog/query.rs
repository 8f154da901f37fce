//! Questions to the catalog: summaries, pool statistics, mix previews, and the pipeline that
//! writes a mix from the pools' curated files.

use crate::mix::{GroupStat, MixPlan, MixSpec, PoolSpec};
use polars::prelude::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::*;

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
pub(super) fn runs_of(lf: LazyFrame) -> Result<Vec<RunEntry>, String> {
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
