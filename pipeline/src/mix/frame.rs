//! The mix planner's view of data as polars frames of catalog-shaped rows (domain, task,
//! source, kind, tag columns, samples, tokens, examples): pool conditions, pool statistics,
//! numeric tags. The catalog's previews and the `mix` stage both use it.

use super::{GroupStat, MixSpec, PoolSpec};
use polars::prelude::*;

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

/// Tag values that mean "no value" when a tag is compared as a number.
pub const MISSING: [&str; 3] = ["", "unknown", "und"];

/// What went wrong asking a frame (the catalog, or the mix stage's records).
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// Polars refused or failed the query.
    #[error("{0}")]
    Polars(#[from] PolarsError),
    /// A `where` condition that is not allowed or names an unknown column.
    #[error(transparent)]
    Where(#[from] crate::filter::FilterError),
    /// A question that cannot be answered as asked (an unknown run, a bad spec).
    #[error("{0}")]
    Invalid(String),
}

/// Where a message is what the caller keeps (a config issue, an HTTP answer).
impl From<QueryError> for String {
    fn from(e: QueryError) -> String {
        e.to_string()
    }
}

/// A mix stage whose pools cannot be asked cannot decide.
impl From<QueryError> for crate::error::StageError {
    fn from(e: QueryError) -> crate::error::StageError {
        crate::error::StageError::Invalid(e.to_string())
    }
}

/// A question that cannot be answered as asked.
pub fn invalid<T>(message: impl Into<String>) -> Result<T, QueryError> {
    Err(QueryError::Invalid(message.into()))
}

/// A `where` condition as a polars expression: checked by [`crate::filter`] (no function,
/// subquery or table reaches polars), with its columns checked against `columns` when given.
pub fn where_expr(text: &str, columns: Option<&[String]>) -> Result<Expr, QueryError> {
    let sql = crate::filter::canonical(text, columns)?;
    polars::sql::sql_expr(&sql)
        .map_err(|e| QueryError::Invalid(format!("where {}: {e}", crate::filter::quoted(text))))
}

/// The condition of one pool over a frame with `domain`, `task`, `source`, `kind` and tag
/// columns.
pub fn pool_condition(p: &PoolSpec) -> Result<Expr, QueryError> {
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
pub fn pool_expr(spec: &MixSpec) -> Result<Expr, QueryError> {
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
pub fn pool_stats(lf: LazyFrame, spec: &MixSpec) -> Result<Vec<GroupStat>, QueryError> {
    pooled_stats(lf.with_column(pool_expr(spec)?))
}

/// [`pool_stats`] over a frame that already has its `pool` column.
pub fn pooled_stats(lf: LazyFrame) -> Result<Vec<GroupStat>, QueryError> {
    let schema = lf.clone().collect_schema().map_err(QueryError::Polars)?;
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
            QueryError::Invalid(format!(
                "{e} (columns available: {})",
                schema
                    .iter_names()
                    .map(|n| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
    let pool = grouped
        .column("pool")
        .and_then(|c| c.u32().cloned())
        .map_err(QueryError::Polars)?;
    let task = grouped
        .column("task")
        .and_then(|c| c.str().cloned())
        .map_err(QueryError::Polars)?;
    let samples = grouped
        .column("samples")
        .and_then(|c| c.cast(&DataType::UInt64))
        .map_err(QueryError::Polars)?;
    let tokens = grouped
        .column("tokens")
        .and_then(|c| c.cast(&DataType::UInt64))
        .map_err(QueryError::Polars)?;
    let samples = samples.u64().map_err(QueryError::Polars)?;
    let tokens = tokens.u64().map_err(QueryError::Polars)?;
    let examples = grouped
        .column("examples")
        .and_then(|c| c.list().cloned())
        .map_err(QueryError::Polars)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenize::approx_tokens;

    #[test]
    fn approx_tokens_counts_cjk_per_character_and_words_by_length() {
        assert_eq!(approx_tokens("你好，世界"), 5);
        assert_eq!(approx_tokens("hello world"), 4);
        assert_eq!(approx_tokens(""), 0);
    }

    /// Regression: conditions an attacker shaped for the parsers behind polars SQL (a chain
    /// of hundreds of ANDs or +, dozens of NOTs) neither overflow a 2 MiB thread stack, as a
    /// request's or a job's thread has, nor take exponential time: chains are balanced, and
    /// what still nests too deep is refused at once.
    #[test]
    fn long_chains_run_on_a_small_stack_and_deep_nesting_is_refused_fast() {
        let run = |cond: String| {
            std::thread::Builder::new()
                .stack_size(2 << 20)
                .spawn(move || {
                    let t = std::time::Instant::now();
                    let df = DataFrame::new_infer_height(vec![Column::new(
                        "age".into(),
                        vec![1.0f64, 5.0, 30.0],
                    )])
                    .expect("frame");
                    let out = where_expr(&cond, None).and_then(|e| {
                        df.lazy()
                            .filter(e)
                            .collect()
                            .map(|d| d.height())
                            .map_err(QueryError::Polars)
                    });
                    (out.map_err(|e| e.to_string()), t.elapsed())
                })
                .expect("thread")
                .join()
                .expect("no stack overflow")
        };
        let chain = |term: &str, op: &str, n: usize| vec![term; n].join(op);
        let (rows, _) = run(chain("age > 1", " AND ", 300));
        assert_eq!(rows, Ok(2));
        let (rows, _) = run(chain("age > 2", " OR ", 300));
        assert_eq!(rows, Ok(2));
        let (rows, _) = run(format!("{} > 1000", chain("age", " + ", 300)));
        assert_eq!(rows, Ok(2));
        // Redundant parentheses vanish in the canonical form.
        let (rows, _) = run(format!("{}age > 1{}", "(".repeat(60), ")".repeat(60)));
        assert_eq!(rows, Ok(2));
        for nested in [
            format!("{}age > 1", "NOT ".repeat(60)),
            format!("{}age > 1", "- ".repeat(60)),
            format!("{} > 1", chain("age", " - ", 300)),
        ] {
            let (out, took) = run(nested.clone());
            let e = out.expect_err("refused");
            assert!(e.contains("deep"), "{e}");
            assert!(
                took < std::time::Duration::from_secs(1),
                "{nested}: {took:?}"
            );
        }
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
