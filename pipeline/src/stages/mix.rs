//! `mix`: select the training mix from the samples that reach it, by pools and ratio (see
//! [`crate::mix`] for the rules). A global stage: `map` keeps a small record per sample (id,
//! tokens, domain, task, source, kind, tags); `finish` assigns pools with polars (so `where`
//! conditions are polars SQL over tags), plans quotas from the pools' statistics with the same
//! planner that answers previews, then fills them:
//!
//! - each task's members are ordered by a seeded hash of their id (ties by position), so the
//!   selection does not depend on thread counts or input order within a task;
//! - a sample quota takes whole passes over the task, then the first members of the order;
//! - a token quota does the same, then takes, in order, every member that still fits (first
//!   fit), carrying what is left to the pool's next task, so a pool ends short of its quota by
//!   less than one sample's tokens; in `cpt` mode the domain pool is then trimmed until its
//!   share is at most the ratio.
//!
//! Selected samples are tagged `mix_pool`; a sample selected k times is written k times, the
//! copies with ids `<id>#r<n>` and tag `mix_copy = n`. Samples not selected are dropped
//! (`not_selected`, or `no_pool` when they match no pool), so counts still reconcile. The
//! report's stage entry carries the plan, and the requested and achieved shares.
//!
//! Memory: the global stage holds one small record per sample (about 100 bytes plus tags).

use super::{Decision, Decisions, DropReason, GlobalStage};
use crate::exchange::{Records, Wire};
use crate::mix::frame::{pool_expr, pooled_stats};
use crate::mix::{MixMode, MixPlan, MixSpec, MixUnit, PoolRole};
use crate::sample::Sample;
use crate::tokenize::TokenCounter;
use polars::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Config of `type = "mix"`: a [`MixSpec`] plus how tokens are counted.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The mix.
    #[serde(flatten)]
    pub spec: MixSpec,
    /// tokenizer.json used to count tokens (default: the catalog's, i.e. `output.shards`'s,
    /// else an approximation).
    #[serde(default)]
    pub tokenizer: Option<PathBuf>,
    /// Set by a confined compile: the folders the tokenizer must lie in when it is opened.
    #[serde(skip)]
    pub confined_to: Option<std::sync::Arc<[PathBuf]>>,
    /// Samples meeting this condition (e.g. `split <> 'train'`) are held out: never in a pool,
    /// never repeated, written once as they are, tagged with the pool they would belong to
    /// (`mix_pool`, or `none`), so evaluation splits keep every domain while the training split
    /// is mixed.
    #[serde(default)]
    pub holdout: Option<String>,
    /// With `holdout`: append the pool to a held-out sample's `split` tag (`test_domain`,
    /// `test_general`), so the shards hold one evaluation split per pool.
    #[serde(default)]
    pub holdout_split_by_pool: bool,
    /// `sluice mix run` only: the sources each catalog run is counted for (run folder → sources).
    /// A sample tagged with a run ([`crate::sample::tag::RUN`]) whose source that run is not
    /// counted for is left out (`overlap`), as the catalog's preview leaves it out.
    #[serde(skip)]
    pub owners: Option<Arc<BTreeMap<String, std::collections::BTreeSet<String>>>>,
}

impl Config {
    pub(crate) fn validate(&self) -> Vec<String> {
        self.spec.validate()
    }

    pub(crate) fn resolve_paths(&mut self, base: &Path) {
        if let Some(p) = &mut self.tokenizer {
            *p = crate::confine::resolve(base, p);
        }
    }
}

/// What `map` keeps of a sample.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MixRecord {
    id: String,
    tokens: u64,
    domain: String,
    task: String,
    source: String,
    kind: String,
    tags: BTreeMap<String, String>,
    /// `sluice mix run` only: the content hash (hex), to write each sample once.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    content: String,
}

/// The frame column that says whether a record counts (see [`Config::owners`]).
const OWNED: &str = "__owned";
/// The frame column that says whether a record is held out ([`Config::holdout`]).
const HELD: &str = "__held_out";

fn is_copy(r: &MixRecord) -> bool {
    r.tags.contains_key(crate::sample::tag::COPY)
}

impl Wire for MixRecord {
    fn put(&self, out: &mut Vec<u8>) -> std::io::Result<()> {
        serde_json::to_writer(out, self).map_err(std::io::Error::from)
    }
    fn get(bytes: &[u8]) -> Option<MixRecord> {
        serde_json::from_slice(bytes).ok()
    }
}

/// Selected and available amounts of one pool, as achieved.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Achieved {
    /// `domain`, `instruct` or `general`.
    pub pool: PoolRole,
    /// Requested share (in the mix's unit).
    pub requested_share: f64,
    /// Achieved share (in the mix's unit).
    pub share: f64,
    /// Samples written (copies included).
    pub samples: u64,
    /// Distinct samples written.
    pub distinct: u64,
    /// Tokens written (copies included).
    pub tokens: u64,
    /// Largest repeat count of any sample.
    pub max_copies: u64,
}

/// The mix's entry in report.json.
#[derive(Debug, Clone, Serialize)]
pub struct MixSummary {
    /// The plan the selection followed.
    pub plan: MixPlan,
    /// What was selected, per pool.
    pub achieved: Vec<Achieved>,
    /// Samples that matched no pool.
    pub no_pool: u64,
    /// Samples held out ([`Config::holdout`]), written once and never mixed.
    #[serde(skip_serializing_if = "is_zero")]
    pub held_out: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The built stage.
#[derive(Debug)]
pub struct Mix {
    spec: MixSpec,
    seed: u64,
    counter: TokenCounter,
    owners: Option<std::sync::Arc<BTreeMap<String, std::collections::BTreeSet<String>>>>,
    holdout: Option<String>,
    holdout_split_by_pool: bool,
    summary: Mutex<Option<MixSummary>>,
}

impl Mix {
    /// Build from config; `seed` is the pipeline's, used unless the spec sets one.
    pub fn new(cfg: &Config, seed: u64) -> Result<Mix, crate::error::StageError> {
        let counter =
            TokenCounter::new_within(cfg.tokenizer.as_deref(), cfg.confined_to.as_deref())?;
        // Check `where` conditions now, not after the whole map phase.
        let _ = pool_expr(&cfg.spec)?;
        if let Some(h) = &cfg.holdout {
            let _ = crate::mix::frame::where_expr(h, None)?;
        }
        Ok(Mix {
            holdout: cfg.holdout.clone(),
            holdout_split_by_pool: cfg.holdout_split_by_pool,
            seed: cfg.spec.seed.unwrap_or(seed),
            spec: cfg.spec.clone(),
            counter,
            owners: cfg.owners.clone(),
            summary: Mutex::new(None),
        })
    }

    /// Per-sample frame: one row per record with `samples = 1`.
    fn frame(records: &Records<MixRecord>) -> PolarsResult<(DataFrame, Vec<MixRecord>)> {
        let n = records.len();
        let mut recs = Vec::with_capacity(n as usize);
        for pos in 0..n {
            recs.push(records.get(pos).ok_or_else(
                || polars_err!(ComputeError: "mix: record {pos} of the exchange is unreadable"),
            )?);
        }
        let mut tag_names: Vec<String> = recs
            .iter()
            .flat_map(|r| r.tags.keys().cloned())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        // Fixed columns win over tags of the same name.
        tag_names.retain(|t| !crate::mix::frame::FIXED_COLUMNS.contains(&t.as_str()) && t != "pos");
        let text = |name: &str, f: &dyn Fn(&MixRecord) -> String| {
            Column::new(name.into(), recs.iter().map(f).collect::<Vec<String>>())
        };
        let mut cols = vec![
            Column::new("pos".into(), (0..n).collect::<Vec<u64>>()),
            text("domain", &|r| r.domain.clone()),
            text("task", &|r| r.task.clone()),
            text("source", &|r| r.source.clone()),
            text("kind", &|r| r.kind.clone()),
            // An earlier mix's copies are not available data: they count for nothing.
            Column::new(
                "samples".into(),
                recs.iter()
                    .map(|r| u64::from(!is_copy(r)))
                    .collect::<Vec<u64>>(),
            ),
            Column::new(
                "tokens".into(),
                recs.iter()
                    .map(|r| if is_copy(r) { 0 } else { r.tokens })
                    .collect::<Vec<u64>>(),
            ),
            // A one-id JSON array, as the catalog writes its examples.
            text("examples", &|r| {
                serde_json::Value::from(vec![r.id.clone()]).to_string()
            }),
        ];
        for t in &tag_names {
            cols.push(Column::new(
                t.as_str().into(),
                recs.iter()
                    .map(|r| r.tags.get(t).cloned())
                    .collect::<Vec<Option<String>>>(),
            ));
        }
        let df = DataFrame::new(n as usize, cols)?;
        let df = crate::mix::frame::numeric_tags(df, &tag_names)?;
        Ok((df, recs))
    }

    fn select(
        &self,
        records: &Records<MixRecord>,
    ) -> Result<(Decisions, MixSummary), crate::error::StageError> {
        let (mut df, recs) = Mix::frame(records).map_err(|e| e.to_string())?;
        // A sample read back from a catalog run that is not counted for its source (another
        // run is) belongs to no pool: the preview counted it from that other run.
        let owned: Vec<bool> = recs
            .iter()
            .map(
                |r| match (&self.owners, r.tags.get(crate::sample::tag::RUN)) {
                    (Some(owners), Some(run)) => {
                        owners.get(run).is_some_and(|s| s.contains(&r.source))
                    }
                    _ => true,
                },
            )
            .collect();
        // `sluice mix run`: the same content read from two sources the catalog could not tell
        // apart (a few shared dialogues) is written once, the first in input order.
        let mut first_of: std::collections::HashMap<&str, usize> = Default::default();
        let mut dup_of: Vec<Option<usize>> = vec![None; recs.len()];
        for (pos, r) in recs.iter().enumerate() {
            if owned[pos] && !r.content.is_empty() && !is_copy(r) {
                match first_of.entry(r.content.as_str()) {
                    std::collections::hash_map::Entry::Occupied(e) => dup_of[pos] = Some(*e.get()),
                    std::collections::hash_map::Entry::Vacant(v) => {
                        v.insert(pos);
                    }
                }
            }
        }
        let owned: Vec<bool> = owned
            .iter()
            .zip(&dup_of)
            .map(|(o, d)| *o && d.is_none())
            .collect();
        df.with_column(Column::new(OWNED.into(), owned.clone()))
            .map_err(|e| e.to_string())?;
        let held_expr = match &self.holdout {
            Some(h) => crate::mix::frame::where_expr(h, None)?.fill_null(lit(false)),
            None => lit(false),
        };
        // Pools are assigned once; the statistics and the selection both read the column. A
        // held-out sample keeps the pool it would belong to in `__held_pool` only.
        const MATCHED: &str = "__matched_pool";
        let within = |held: bool| {
            let h = if held { col(HELD) } else { col(HELD).not() };
            when(col(OWNED).and(h))
                .then(col(MATCHED))
                .otherwise(lit(NULL).cast(DataType::UInt32))
        };
        let pooled = df
            .lazy()
            .with_columns([held_expr.alias(HELD), pool_expr(&self.spec)?.alias(MATCHED)])
            .with_columns([
                within(false).alias("pool"),
                within(true).alias("__held_pool"),
            ])
            .collect()
            .map_err(|e| e.to_string())?;
        let held_col = pooled
            .column(HELD)
            .and_then(|c| c.bool().cloned())
            .map_err(|e| e.to_string())?;
        let held: Vec<bool> = (0..recs.len())
            .map(|i| owned[i] && held_col.get(i).unwrap_or(false))
            .collect();
        let held_pool = pooled
            .column("__held_pool")
            .and_then(|c| c.u32().cloned())
            .map_err(|e| e.to_string())?;
        let stats = pooled_stats(pooled.clone().lazy())?;
        let plan = crate::mix::plan(&self.spec, &stats);
        let pool_of = pooled
            .column("pool")
            .and_then(|c| c.u32().cloned())
            .map_err(|e| e.to_string())?;
        // Members of each (pool, task), ordered by seeded id hash, then position.
        let mut members: BTreeMap<(usize, &str), Vec<(u64, u64)>> = BTreeMap::new();
        let mut no_pool = Vec::new();
        for (pos, r) in recs.iter().enumerate() {
            if is_copy(r) {
                continue; // an earlier mix's copy: never a candidate
            }
            match pool_of.get(pos) {
                Some(p) => members
                    .entry((p as usize, r.task.as_str()))
                    .or_default()
                    .push((
                        xxhash_rust::xxh3::xxh3_64_with_seed(r.id.as_bytes(), self.seed),
                        pos as u64,
                    )),
                None if owned[pos] => no_pool.push(pos as u64),
                None => {}
            }
        }
        for m in members.values_mut() {
            m.sort_unstable();
        }
        let unit = plan.unit;
        let mut copies: BTreeMap<u64, u64> = BTreeMap::new();
        // Per pool: the selections in the order they were taken (for cpt trimming).
        let mut taken: Vec<Vec<u64>> = vec![Vec::new(); plan.pools.len()];
        for (pi, pool) in plan.pools.iter().enumerate() {
            let mut carry = 0.0f64;
            for tp in &pool.tasks {
                let Some(m) = members.get(&(pi, tp.task.as_str())) else {
                    continue;
                };
                let cap = tp.cap.unwrap_or(u64::MAX);
                let mut n_taken = 0u64;
                let mut take = |pos: u64, taken: &mut Vec<Vec<u64>>| {
                    *copies.entry(pos).or_default() += 1;
                    taken[pi].push(pos);
                };
                match unit {
                    MixUnit::Samples => {
                        let q = tp.quota.round() as u64;
                        let len = m.len() as u64;
                        for k in 0..q {
                            take(m[(k % len) as usize].1, &mut taken);
                        }
                    }
                    MixUnit::Tokens => {
                        let mut budget = tp.quota + carry;
                        let total: u64 = m.iter().map(|&(_, p)| recs[p as usize].tokens).sum();
                        let full_ok = |budget: f64, n_taken: u64| {
                            total > 0 && budget >= total as f64 && n_taken + m.len() as u64 <= cap
                        };
                        while full_ok(budget, n_taken) {
                            for &(_, p) in m {
                                take(p, &mut taken);
                            }
                            n_taken += m.len() as u64;
                            budget -= total as f64;
                        }
                        // First fit in order: a member too large for what is left is
                        // skipped, so the task ends short by less than its smallest member.
                        for &(_, p) in m {
                            let t = recs[p as usize].tokens as f64;
                            if n_taken >= cap {
                                break;
                            }
                            if t <= budget {
                                take(p, &mut taken);
                                n_taken += 1;
                                budget -= t;
                            }
                        }
                        carry = budget.max(0.0);
                    }
                }
            }
        }
        let tokens_of = |p: u64| recs[p as usize].tokens;
        let amount = |sel: &[u64]| -> f64 {
            match unit {
                MixUnit::Samples => sel.len() as f64,
                MixUnit::Tokens => sel.iter().map(|&p| tokens_of(p) as f64).sum(),
            }
        };
        if self.spec.mode == MixMode::Cpt {
            // "At most p": trim the domain pool's last selections until its share is ≤ p.
            let p = self.spec.ratio.domain_share;
            let others: f64 = taken[1..].iter().map(|s| amount(s)).sum();
            let mut dom = amount(&taken[0]);
            while dom > p * (dom + others) + 1e-9 {
                let Some(pos) = taken[0].pop() else { break };
                dom -= match unit {
                    MixUnit::Samples => 1.0,
                    MixUnit::Tokens => tokens_of(pos) as f64,
                };
                if let Some(c) = copies.get_mut(&pos) {
                    *c -= 1;
                }
            }
        }
        let grand: f64 = taken.iter().map(|s| amount(s)).sum();
        let achieved = plan
            .pools
            .iter()
            .zip(&taken)
            .map(|(pp, sel)| {
                let distinct: std::collections::BTreeSet<u64> = sel.iter().copied().collect();
                Achieved {
                    pool: pp.pool,
                    requested_share: pp.requested_share,
                    share: if grand > 0.0 {
                        amount(sel) / grand
                    } else {
                        0.0
                    },
                    samples: sel.len() as u64,
                    distinct: distinct.len() as u64,
                    tokens: sel.iter().map(|&p| tokens_of(p)).sum(),
                    max_copies: distinct
                        .iter()
                        .map(|p| copies.get(p).copied().unwrap_or(0))
                        .max()
                        .unwrap_or(0),
                }
            })
            .collect();
        let mut decisions = Decisions::new();
        for (pos, r) in recs.iter().enumerate() {
            let pos = pos as u64;
            let n = copies.get(&pos).copied().unwrap_or(0);
            let decision = match pool_of.get(pos as usize) {
                _ if dup_of[pos as usize].is_some() => {
                    let first = dup_of[pos as usize].map_or("", |f| recs[f].id.as_str());
                    Decision::drop(DropReason {
                        code: "duplicate",
                        detail: Some(format!(
                            "the same content as {first}, read from another source"
                        )),
                        duplicate_of: Some(first.to_string()),
                    })
                }
                _ if !owned[pos as usize] => Decision::drop(DropReason::new(
                    "overlap",
                    format!(
                        "source {:?} is counted from another catalog run than {:?}",
                        r.source,
                        r.tags
                            .get(crate::sample::tag::RUN)
                            .map_or("", |s| s.as_str())
                    ),
                )),
                _ if is_copy(r) => Decision::drop(DropReason::new(
                    "earlier_copy",
                    "a copy written by an earlier mix's upsampling; its original is a candidate",
                )),
                _ if held[pos as usize] => {
                    let pool = held_pool
                        .get(pos as usize)
                        .map_or("none", |p| plan.pools[p as usize].pool.as_str());
                    let mut tags = vec![("mix_pool".to_string(), pool.to_string())];
                    if self.holdout_split_by_pool {
                        let split = r.tags.get("split").map_or("heldout", |s| s.as_str());
                        tags.push(("split".to_string(), format!("{split}_{pool}")));
                    }
                    Decision {
                        drop: None,
                        tags,
                        repeat: 0,
                    }
                }
                None => Decision::drop(DropReason::new(
                    "no_pool",
                    format!(
                        "domain {:?}, task {:?} matches no pool of the mix",
                        r.domain, r.task
                    ),
                )),
                Some(_) if n == 0 => Decision::drop(DropReason::new(
                    "not_selected",
                    "not needed to fill the pool's quota",
                )),
                Some(p) => Decision {
                    drop: None,
                    tags: vec![(
                        "mix_pool".to_string(),
                        plan.pools[p as usize].pool.as_str().to_string(),
                    )],
                    repeat: (n - 1) as u32,
                },
            };
            decisions.insert(pos, decision);
        }
        Ok((
            decisions,
            MixSummary {
                plan,
                achieved,
                no_pool: no_pool.len() as u64,
                held_out: held.iter().filter(|&&h| h).count() as u64,
            },
        ))
    }
}

impl GlobalStage for Mix {
    type Record = MixRecord;
    type Reduced = ();

    fn map(&self, s: &Sample, _emit: &mut dyn FnMut(u128)) -> Option<MixRecord> {
        // No keys: the whole selection happens in `finish` over the records.
        Some(MixRecord {
            id: s.id.clone(),
            tokens: self.counter.count(s),
            domain: s.domain.clone(),
            task: s.task.clone(),
            source: s.source.clone(),
            kind: s.kind.as_str().to_string(),
            tags: s.tags.clone(),
            content: if self.owners.is_some() {
                format!("{:032x}", crate::sample::content_hash(s))
            } else {
                String::new()
            },
        })
    }

    fn reduce(&self, _key: u128, _members: &[u64], _records: &Records<MixRecord>, _out: &mut ()) {}

    fn finish(
        &self,
        _: Vec<()>,
        records: &Records<MixRecord>,
    ) -> Result<Decisions, crate::error::StageError> {
        // A failure (a column that a `where` names but no sample has) fails the run.
        let (decisions, summary) = self.select(records)?;
        if let Ok(mut s) = self.summary.lock() {
            *s = Some(summary);
        }
        Ok(decisions)
    }

    fn summary(&self) -> Option<serde_json::Value> {
        let summary = self.summary.lock().ok()?.clone()?;
        serde_json::to_value(summary).ok()
    }
}
