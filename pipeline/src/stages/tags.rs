//! `tags`: attach user profile tags (age, gender, region, crowd, any extra columns) to samples by
//! joining on `user_id` with a profile table (CSV or Parquet, read with polars), plus derived
//! buckets such as age groups. Samples without a user id, or whose user is not in the table,
//! get `unknown` for every tag, so distributions and pool filters always see a value.
//!
//! The table is read once when the stage is built: every column as text (ids such as `00123`
//! keep their zeros), buckets derived with polars expressions, then held as a hash map from
//! user id to tag values, a broadcast join: memory is the size of the profile table.

use super::{RecordStage, StageCx, Verdict};
use crate::sample::Sample;
use polars::prelude::*;
use serde::Deserialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Config of `type = "tags"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The profile table: `.csv`, `.tsv` or `.parquet`, relative to the pipeline file.
    pub profiles: PathBuf,
    /// Its user id column (default `user_id`).
    #[serde(default = "default_key")]
    pub key: String,
    /// Columns to attach as tags (default: every other column).
    #[serde(default)]
    pub columns: Option<Vec<String>>,
    /// Rename columns to tag names: `{ city_tier = "region" }`.
    #[serde(default)]
    pub rename: std::collections::BTreeMap<String, String>,
    /// Derived buckets of numeric columns.
    #[serde(default)]
    pub buckets: Vec<Bucket>,
    /// Value for missing users and empty cells (default `unknown`).
    #[serde(default = "default_unknown")]
    pub unknown: String,
    /// Set by a confined compile: the folders its files must lie in when they are opened.
    #[serde(skip)]
    pub confined_to: Option<std::sync::Arc<[std::path::PathBuf]>>,
}

/// A derived bucket tag: `{ column = "age", tag = "age_group", edges = [18, 25, 35, 50, 65] }`
/// gives `<18`, `18-24`, `25-34`, `35-49`, `50-64`, `65+`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bucket {
    /// Numeric source column.
    pub column: String,
    /// Tag name (default `<column>_group`).
    #[serde(default)]
    pub tag: Option<String>,
    /// Ascending bucket edges; a value equal to an edge falls in the bucket that starts there.
    pub edges: Vec<f64>,
    /// Labels, one more than edges (default: ranges as above).
    #[serde(default)]
    pub labels: Option<Vec<String>>,
}

fn default_key() -> String {
    "user_id".into()
}
fn default_unknown() -> String {
    "unknown".into()
}

impl Bucket {
    fn tag(&self) -> String {
        self.tag
            .clone()
            .unwrap_or_else(|| format!("{}_group", self.column))
    }

    fn labels(&self) -> Vec<String> {
        if let Some(l) = &self.labels {
            return l.clone();
        }
        let f = |x: f64| {
            if x.fract() == 0.0 {
                format!("{x:.0}")
            } else {
                format!("{x}")
            }
        };
        let mut out = Vec::with_capacity(self.edges.len() + 1);
        if let Some(first) = self.edges.first() {
            out.push(format!("<{}", f(*first)));
        }
        for w in self.edges.windows(2) {
            let hi = w[1];
            // Whole-number edges read as closed ranges (18-24); others as half-open ones.
            if w[0].fract() == 0.0 && hi.fract() == 0.0 {
                out.push(format!("{}-{}", f(w[0]), f(hi - 1.0)));
            } else {
                out.push(format!("{}-{}", f(w[0]), f(hi)));
            }
        }
        if let Some(last) = self.edges.last() {
            out.push(format!("{}+", f(*last)));
        }
        out
    }
}

impl Config {
    pub(crate) fn validate(&self) -> Vec<String> {
        let mut out = Vec::new();
        for b in &self.buckets {
            if b.edges.is_empty() {
                out.push(format!("buckets of {}: edges is empty", b.column));
            }
            if b.edges.windows(2).any(|w| w[0] >= w[1]) {
                out.push(format!("buckets of {}: edges must ascend", b.column));
            }
            if let Some(l) = &b.labels {
                if l.len() != b.edges.len() + 1 {
                    out.push(format!(
                        "buckets of {}: {} labels for {} edges (need one more label than edges)",
                        b.column,
                        l.len(),
                        b.edges.len()
                    ));
                }
            }
        }
        out
    }

    pub(crate) fn resolve_paths(&mut self, base: &Path) {
        self.profiles = crate::confine::resolve(base, &self.profiles);
    }
}

/// The built stage.
#[derive(Debug)]
pub struct Tags {
    names: Vec<String>,
    users: HashMap<String, Vec<String>>,
    unknown: String,
}

impl Tags {
    /// Read the profile table and build the lookup.
    pub fn new(cfg: &Config) -> Result<Tags, crate::error::StageError> {
        let path = &cfg.profiles;
        let at = |e: PolarsError| format!("{}: {e}", path.display());
        let ext = path
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        let df = match ext.as_str() {
            "csv" | "tsv" => CsvReadOptions::default()
                .with_has_header(true)
                // Every column as text: ids keep leading zeros, tags round-trip exactly.
                .with_infer_schema_length(Some(0))
                .map_parse_options(|o| o.with_separator(if ext == "tsv" { b'\t' } else { b',' }))
                .into_reader_with_file_handle(
                    crate::confine::open_confined(path, cfg.confined_to.as_deref())
                        .map_err(|e| format!("{}: {e}", path.display()))?,
                )
                .finish()
                .map_err(at)?,
            "parquet" | "pq" => {
                let file = crate::confine::open_confined(path, cfg.confined_to.as_deref())
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                let df = ParquetReader::new(file).finish().map_err(at)?;
                let cols = df
                    .columns()
                    .iter()
                    .map(|c| c.cast(&DataType::String))
                    .collect::<PolarsResult<Vec<_>>>()
                    .map_err(at)?;
                DataFrame::new(df.height(), cols).map_err(at)?
            }
            _ => {
                return Err(format!(
                    "{}: profile tables are .csv, .tsv or .parquet",
                    path.display()
                )
                .into())
            }
        };
        let names_in: Vec<String> = df
            .get_column_names()
            .iter()
            .map(|n| n.to_string())
            .collect();
        if !names_in.contains(&cfg.key) {
            return Err(format!(
                "{}: no key column {:?} (columns: {})",
                path.display(),
                cfg.key,
                names_in.join(", ")
            )
            .into());
        }
        let columns: Vec<String> = match &cfg.columns {
            Some(c) => {
                if let Some(missing) = c.iter().find(|c| !names_in.contains(c)) {
                    return Err(format!(
                        "{}: no column {missing:?} (columns: {})",
                        path.display(),
                        names_in.join(", ")
                    )
                    .into());
                }
                c.clone()
            }
            None => names_in
                .iter()
                .filter(|n| **n != cfg.key)
                .cloned()
                .collect(),
        };
        for b in &cfg.buckets {
            if !names_in.contains(&b.column) {
                return Err(format!(
                    "{}: bucket column {:?} is not in the table",
                    path.display(),
                    b.column
                )
                .into());
            }
        }
        // Derived buckets, as polars expressions over the numeric value of the column.
        let mut exprs: Vec<Expr> = vec![col(cfg.key.as_str())];
        exprs.extend(columns.iter().map(|c| col(c.as_str())));
        for b in &cfg.buckets {
            let v = col(b.column.as_str())
                .str()
                .strip_chars(lit(NULL))
                .cast(DataType::Float64);
            let labels = b.labels();
            let mut e = lit(labels[labels.len() - 1].clone());
            for (edge, label) in b.edges.iter().zip(&labels).rev() {
                e = when(v.clone().lt(lit(*edge)))
                    .then(lit(label.clone()))
                    .otherwise(e);
            }
            exprs.push(
                when(v.clone().is_null())
                    .then(lit(NULL).cast(DataType::String))
                    .otherwise(e)
                    .alias(b.tag()),
            );
        }
        let df = df.lazy().select(exprs).collect().map_err(at)?;
        let mut names: Vec<String> = columns
            .iter()
            .map(|c| cfg.rename.get(c).cloned().unwrap_or_else(|| c.clone()))
            .collect();
        names.extend(cfg.buckets.iter().map(Bucket::tag));
        let key = df
            .column(&cfg.key)
            .and_then(|c| c.str().cloned())
            .map_err(at)?;
        let values = df.columns()[1..]
            .iter()
            .map(|c| c.str().cloned())
            .collect::<PolarsResult<Vec<_>>>()
            .map_err(at)?;
        let mut users: HashMap<String, Vec<String>> = HashMap::with_capacity(df.height());
        for row in 0..df.height() {
            let Some(id) = key.get(row).map(str::trim).filter(|s| !s.is_empty()) else {
                continue;
            };
            let tags: Vec<String> = values
                .iter()
                .map(|ca| {
                    ca.get(row)
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .unwrap_or(&cfg.unknown)
                        .to_string()
                })
                .collect();
            if let Some(prev) = users.insert(id.to_string(), tags) {
                let _ = prev;
                return Err(format!(
                    "{}: user {id:?} appears twice (row {} repeats an earlier row's key)",
                    path.display(),
                    row + 2
                )
                .into());
            }
        }
        Ok(Tags {
            names,
            users,
            unknown: cfg.unknown.clone(),
        })
    }
}

impl RecordStage for Tags {
    fn process(&self, mut sample: Sample, cx: &mut StageCx) -> Verdict {
        let found = sample
            .user_id
            .as_deref()
            .map(str::trim)
            .and_then(|u| self.users.get(u));
        match (found, &sample.user_id) {
            (Some(values), _) => {
                cx.count("matched", 1);
                for (n, v) in self.names.iter().zip(values) {
                    sample.tags.insert(n.clone(), v.clone());
                }
            }
            (None, uid) => {
                cx.count(
                    if uid.is_some() {
                        "unmatched"
                    } else {
                        "no_user_id"
                    },
                    1,
                );
                for n in &self.names {
                    sample.tags.insert(n.clone(), self.unknown.clone());
                }
            }
        }
        Verdict::Keep(sample)
    }

    fn dimensions(&self) -> Vec<String> {
        self.names.clone()
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests write their fixtures directly
mod tests {
    use super::*;

    fn build(csv: &str, extra: &str) -> Result<Tags, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let path = dir.path().join("users.csv");
        std::fs::write(&path, csv).map_err(|e| e.to_string())?;
        let cfg: Config = toml::from_str(&format!("profiles = {:?}\n{extra}", path))
            .map_err(|e| e.to_string())?;
        assert!(cfg.validate().is_empty(), "{:?}", cfg.validate());
        Ok(Tags::new(&cfg)?)
    }

    fn tagged(t: &Tags, user: Option<&str>) -> Sample {
        let mut s = Sample::document("d", "text");
        s.user_id = user.map(str::to_string);
        match t.process(s, &mut StageCx::new(1)) {
            Verdict::Keep(s) => s,
            Verdict::Drop(..) => panic!("tags never drops"),
        }
    }

    #[test]
    fn joins_buckets_and_marks_unknown_users() {
        let t = build(
            "user_id,age,gender,region\n007,17,f,east\n8,30,m,\n9,x,m,west\n10,65,f,north\n",
            "buckets = [{ column = \"age\", edges = [18, 25, 35, 50, 65] }]",
        )
        .expect("builds");
        let s = tagged(&t, Some("007"));
        assert_eq!(s.tags["age"], "17");
        assert_eq!(s.tags["age_group"], "<18");
        assert_eq!(s.tags["region"], "east");
        let s = tagged(&t, Some("8"));
        assert_eq!(s.tags["age_group"], "25-34");
        assert_eq!(s.tags["region"], "unknown", "an empty cell is unknown");
        assert_eq!(
            tagged(&t, Some("9")).tags["age_group"],
            "unknown",
            "not a number"
        );
        assert_eq!(tagged(&t, Some("10")).tags["age_group"], "65+");
        let s = tagged(&t, Some("7"));
        assert_eq!(s.tags["gender"], "unknown", "007 is not 7");
        assert_eq!(tagged(&t, None).tags["age_group"], "unknown");
    }

    #[test]
    fn parquet_profiles_with_typed_columns_join_as_text() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("users.parquet");
        let mut df = DataFrame::new_infer_height(vec![
            Column::new("uid".into(), vec!["a1", "a2"]),
            Column::new("age".into(), vec![Some(40i64), None]),
            Column::new("city_tier".into(), vec!["1", "3"]),
        ])
        .expect("frame");
        let mut bytes = Vec::new();
        ParquetWriter::new(&mut bytes)
            .finish(&mut df)
            .expect("parquet");
        std::fs::write(&path, bytes).expect("write");
        let cfg: Config = toml::from_str(&format!(
            "profiles = {path:?}\nkey = \"uid\"\nrename = {{ city_tier = \"region\" }}\nbuckets = [{{ column = \"age\", edges = [18, 60], labels = [\"minor\", \"adult\", \"senior\"] }}]"
        ))
        .expect("config");
        let t = Tags::new(&cfg).expect("builds");
        let s = tagged(&t, Some("a1"));
        assert_eq!(s.tags["age"], "40");
        assert_eq!(s.tags["age_group"], "adult");
        assert_eq!(s.tags["region"], "1");
        assert_eq!(tagged(&t, Some("a2")).tags["age_group"], "unknown");
    }

    #[test]
    fn table_problems_are_clear_errors() {
        let e = build("uid,age\n1,2\n", "").expect_err("no key column");
        assert!(e.contains("no key column \"user_id\""), "{e}");
        let e = build("user_id,age\n1,2\n1,3\n", "").expect_err("duplicate");
        assert!(e.contains("appears twice") && e.contains("row 3"), "{e}");
        let e = build("user_id,age\n1,2\n", "columns = [\"crowd\"]").expect_err("missing column");
        assert!(e.contains("crowd"), "{e}");
    }
}
