//! Mix planning: how much each pool and each task within it contributes to a training mix.
//!
//! The planner works on aggregated statistics only (samples and tokens per pool and task), so
//! the same function answers a preview from the catalog without reading a sample, and fixes the
//! quotas that the `mix` stage then fills with real samples.
//!
//! - `sft`: `ratio = "1:5"` means general = 5 × domain, counted in samples (or tokens).
//! - `cpt`: `ratio = 0.15` means domain data is at most 15% of the tokens; `instruct_share`
//!   mixes SFT-formatted samples into the pretraining data at that share.
//! - Without a `target`, the total is the largest one that needs no pool more than once: the
//!   scarcest pool is used whole. With a `target`, short pools are upsampled, up to
//!   `max_repeats` epochs (a warning is given beyond 4); if even that is not enough, the total
//!   shrinks so that the ratio still holds, and a warning says so.
//! - Within a pool, tasks share the pool's quota in proportion to `available^(1/temperature)`
//!   (1 = proportional, large = uniform), and no task exceeds its cap (`task_cap`, in samples).

pub mod frame;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Repeats beyond this many epochs get a warning.
pub const WARN_REPEATS: f64 = 4.0;

/// What the mix is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum MixMode {
    /// Supervised fine-tuning: domain:general by ratio.
    #[default]
    Sft,
    /// Continued pretraining: domain share of tokens at most p.
    Cpt,
}

/// What quotas count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MixUnit {
    /// Samples.
    Samples,
    /// Tokens.
    Tokens,
}

/// A ratio as written: `"1:5"` (domain:general) or a share of the domain pool (`0.15`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ratio {
    /// The domain pool's share of the mix, in (0, 1).
    pub domain_share: f64,
    /// As written, for reports.
    pub parts: Option<(f64, f64)>,
}

impl Ratio {
    /// Parse `"a:b"` or a share.
    pub fn parse(s: &str) -> Result<Ratio, String> {
        let s = s.trim();
        let bad = || {
            format!(
                "ratio {s:?}: expected \"domain:general\" such as \"1:5\", or a share such as 0.15"
            )
        };
        if let Some((a, b)) = s.split_once(':') {
            let a: f64 = a.trim().parse().map_err(|_| bad())?;
            let b: f64 = b.trim().parse().map_err(|_| bad())?;
            if !(a > 0.0 && b > 0.0 && a.is_finite() && b.is_finite()) {
                return Err(bad());
            }
            return Ok(Ratio {
                domain_share: a / (a + b),
                parts: Some((a, b)),
            });
        }
        let p: f64 = s.parse().map_err(|_| bad())?;
        if !(p > 0.0 && p < 1.0) {
            return Err(format!(
                "ratio {p}: a domain share must lie strictly between 0 and 1"
            ));
        }
        Ok(Ratio {
            domain_share: p,
            parts: None,
        })
    }
}

impl<'de> Deserialize<'de> for Ratio {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(f64),
            S(String),
        }
        let text = match Raw::deserialize(d)? {
            Raw::N(n) => n.to_string(),
            Raw::S(s) => s,
        };
        Ratio::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl Serialize for Ratio {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.parts {
            Some((a, b)) => s.serialize_str(&format!("{a}:{b}")),
            None => s.serialize_f64(self.domain_share),
        }
    }
}

/// Which samples form a pool. Every given condition must hold; `where` is a condition over the
/// sample's fields (`domain`, `task`, `source`, `kind`) and its tags (`region = 'east' AND
/// age >= 18`; numeric tags compare as numbers), in the grammar of [`crate::filter`].
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PoolSpec {
    /// Domains (any of).
    #[serde(
        default,
        deserialize_with = "one_or_many",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub domain: Vec<String>,
    /// Tasks (any of).
    #[serde(
        default,
        deserialize_with = "one_or_many",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub task: Vec<String>,
    /// Sources (any of).
    #[serde(
        default,
        deserialize_with = "one_or_many",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub source: Vec<String>,
    /// `sft` or `pretrain`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<crate::sample::Kind>,
    /// A condition ([`crate::filter`]).
    #[serde(default, rename = "where", skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Raw::deserialize(d)? {
        Raw::One(s) => vec![s],
        Raw::Many(v) => v,
    })
}

/// The pools of a mix: the domain pool, the general pool and (cpt) the instruction pool.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Pools {
    /// Domain data (default: none; `domain` must be given here or as `--domain`).
    #[serde(default)]
    pub domain: Option<PoolSpec>,
    /// General data (default: domain `general` and kind `sft`, or `pretrain` in cpt mode).
    #[serde(default)]
    pub general: Option<PoolSpec>,
    /// SFT-formatted samples mixed into cpt data (default: kind `sft`, any domain but the
    /// domain pool's).
    #[serde(default)]
    pub instruct: Option<PoolSpec>,
}

/// A mix as configured (the `mix` stage's config, `sluice mix`, and `GET /mix`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MixSpec {
    /// `sft` (default) or `cpt`.
    #[serde(default)]
    pub mode: MixMode,
    /// `samples` (default for sft) or `tokens` (default for cpt).
    #[serde(default)]
    pub unit: Option<MixUnit>,
    /// sft: `"1:5"` (domain:general) or the domain share; cpt: the largest domain share.
    pub ratio: Ratio,
    /// cpt: share of SFT-formatted samples (default 0).
    #[serde(default)]
    pub instruct_share: f64,
    /// Total size in the unit (default: the largest that uses no pool more than once).
    #[serde(default)]
    pub target: Option<u64>,
    /// Most epochs of any task when upsampling (default 4).
    #[serde(default = "default_max_repeats")]
    pub max_repeats: f64,
    /// Most samples taken from one task (repeats included), for every task.
    #[serde(default)]
    pub task_cap: Option<u64>,
    /// Per-task caps by task name, overriding `task_cap`.
    #[serde(default)]
    pub task_caps: BTreeMap<String, u64>,
    /// Sampling temperature across tasks within a pool (default 1: proportional to size).
    #[serde(default = "default_temperature")]
    pub temperature: f64,
    /// Seed of the selection (default: the pipeline's).
    #[serde(default)]
    pub seed: Option<u64>,
    /// A condition every pool must also meet (e.g. `region = 'east'`; [`crate::filter`]).
    #[serde(default, rename = "where")]
    pub filter: Option<String>,
    /// The pools.
    #[serde(default)]
    pub pools: Pools,
}

fn default_max_repeats() -> f64 {
    4.0
}
fn default_temperature() -> f64 {
    1.0
}

/// A pool's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PoolRole {
    /// Domain data.
    Domain,
    /// SFT samples in a cpt mix.
    Instruct,
    /// General data.
    General,
}

impl PoolRole {
    /// The name used in tags and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            PoolRole::Domain => "domain",
            PoolRole::Instruct => "instruct",
            PoolRole::General => "general",
        }
    }
}

impl MixSpec {
    /// A spec for `--domain D --ratio R [--mode M]` with default pools (sft: dialogues only).
    pub fn for_domain(domain: &str, ratio: Ratio, mode: MixMode) -> MixSpec {
        MixSpec {
            mode,
            unit: None,
            ratio,
            instruct_share: 0.0,
            target: None,
            max_repeats: default_max_repeats(),
            task_cap: None,
            task_caps: BTreeMap::new(),
            temperature: default_temperature(),
            seed: None,
            filter: None,
            pools: Pools {
                domain: Some(PoolSpec {
                    domain: vec![domain.to_string()],
                    kind: (mode == MixMode::Sft).then_some(crate::sample::Kind::Sft),
                    ..Default::default()
                }),
                general: None,
                instruct: None,
            },
        }
    }

    /// The unit quotas count in.
    pub fn unit(&self) -> MixUnit {
        self.unit.unwrap_or(match self.mode {
            MixMode::Sft => MixUnit::Samples,
            MixMode::Cpt => MixUnit::Tokens,
        })
    }

    /// Problems with the values, each as a message.
    pub fn validate(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.pools.domain.is_none() {
            out.push("pools.domain is required (which samples are domain data)".into());
        }
        if !(0.0..1.0).contains(&self.instruct_share) {
            out.push(format!(
                "instruct_share {} must lie in [0, 1)",
                self.instruct_share
            ));
        }
        if self.instruct_share > 0.0 && self.mode == MixMode::Sft {
            out.push("instruct_share applies to mode = \"cpt\" only".into());
        }
        if self.ratio.domain_share + self.instruct_share >= 1.0 {
            out.push(format!(
                "domain share {} plus instruct_share {} leaves nothing for general data",
                self.ratio.domain_share, self.instruct_share
            ));
        }
        if !(self.max_repeats >= 1.0 && self.max_repeats.is_finite()) {
            out.push(format!(
                "max_repeats {} must be at least 1",
                self.max_repeats
            ));
        }
        if !(self.temperature > 0.0 && self.temperature.is_finite()) {
            out.push(format!("temperature {} must be positive", self.temperature));
        }
        if self.target == Some(0) {
            out.push("target must be positive".into());
        }
        if self.task_cap == Some(0) || self.task_caps.values().any(|&c| c == 0) {
            out.push("task caps must be positive".into());
        }
        let pools = [
            ("where", self.filter.as_ref()),
            (
                "pools.domain.where",
                self.pools.domain.as_ref().and_then(|p| p.filter.as_ref()),
            ),
            (
                "pools.general.where",
                self.pools.general.as_ref().and_then(|p| p.filter.as_ref()),
            ),
            (
                "pools.instruct.where",
                self.pools.instruct.as_ref().and_then(|p| p.filter.as_ref()),
            ),
        ];
        for (key, w) in pools {
            if let Some(Err(e)) = w.map(|w| crate::filter::canonical(w, None)) {
                // The message starts `where "…"`: name the pool only when it is a pool's.
                out.push(if key == "where" {
                    e
                } else {
                    format!("{key}: {e}")
                });
            }
        }
        out
    }

    /// The pools in matching order (domain, instruct, general): a sample belongs to the first
    /// pool it matches. Defaults filled in.
    pub fn resolved_pools(&self) -> Vec<(PoolRole, PoolSpec, f64)> {
        use crate::sample::Kind;
        let domain = self.pools.domain.clone().unwrap_or_default();
        let mut out = Vec::new();
        let general_share = 1.0 - self.ratio.domain_share - self.instruct_share;
        out.push((PoolRole::Domain, domain, self.ratio.domain_share));
        if self.mode == MixMode::Cpt && self.instruct_share > 0.0 {
            let instruct = self.pools.instruct.clone().unwrap_or(PoolSpec {
                kind: Some(Kind::Sft),
                ..Default::default()
            });
            out.push((PoolRole::Instruct, instruct, self.instruct_share));
        }
        let general = self.pools.general.clone().unwrap_or(PoolSpec {
            domain: vec!["general".into()],
            kind: Some(match self.mode {
                MixMode::Sft => Kind::Sft,
                MixMode::Cpt => Kind::Pretrain,
            }),
            ..Default::default()
        });
        out.push((PoolRole::General, general, general_share));
        if let Some(w) = &self.filter {
            for (_, p, _) in &mut out {
                p.filter = Some(match &p.filter {
                    Some(f) => format!("({f}) AND ({w})"),
                    None => w.clone(),
                });
            }
        }
        out
    }

    /// AND a condition onto [`MixSpec::filter`].
    pub fn add_filter(&mut self, condition: &str) {
        self.filter = Some(match &self.filter {
            Some(f) => format!("({f}) AND ({condition})"),
            None => condition.to_string(),
        });
    }

    fn cap_of(&self, task: &str) -> Option<u64> {
        self.task_caps.get(task).copied().or(self.task_cap)
    }
}

/// Statistics of one (pool, task) group: the planner's whole input.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupStat {
    /// Pool index in [`MixSpec::resolved_pools`] order.
    pub pool: usize,
    /// Task name.
    pub task: String,
    /// Samples available.
    pub samples: u64,
    /// Tokens available.
    pub tokens: u64,
    /// A few sample ids.
    pub examples: Vec<String>,
}

/// The plan for one task within a pool.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TaskPlan {
    /// Task name.
    pub task: String,
    /// Samples available.
    pub available_samples: u64,
    /// Tokens available.
    pub available_tokens: u64,
    /// Cap in samples, when one applies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cap: Option<u64>,
    /// Quota in the mix's unit (samples: a whole number).
    pub quota: f64,
    /// Epochs over the task's data (quota / available).
    pub repeat: f64,
}

/// The plan for one pool.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PoolPlan {
    /// `domain`, `instruct` or `general`.
    pub pool: PoolRole,
    /// Requested share of the mix.
    pub requested_share: f64,
    /// Samples available.
    pub available_samples: u64,
    /// Tokens available.
    pub available_tokens: u64,
    /// Quota in the mix's unit.
    pub quota: f64,
    /// Samples selected (exact for a sample quota, estimated from mean sizes for tokens).
    pub selected_samples: f64,
    /// Tokens selected (exact for a token quota, estimated from mean sizes for samples).
    pub selected_tokens: f64,
    /// Share of the mix in its unit.
    pub share: f64,
    /// Epochs over the pool's data.
    pub repeat: f64,
    /// A few sample ids from the pool.
    pub examples: Vec<String>,
    /// Per task.
    pub tasks: Vec<TaskPlan>,
}

/// A mix plan: quotas per pool and task, and what to warn about.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MixPlan {
    /// `sft` or `cpt`.
    pub mode: MixMode,
    /// What quotas count.
    pub unit: MixUnit,
    /// The ratio as requested.
    pub ratio: Ratio,
    /// The target as requested.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<u64>,
    /// The planned total in the unit.
    pub total: f64,
    /// Per pool, in matching order.
    pub pools: Vec<PoolPlan>,
    /// Things a user should know (short pools, heavy upsampling, unreachable targets).
    pub warnings: Vec<String>,
}

/// Plan a mix from group statistics.
pub fn plan(spec: &MixSpec, stats: &[GroupStat]) -> MixPlan {
    let unit = spec.unit();
    let pools = spec.resolved_pools();
    let r = spec.max_repeats.max(1.0);
    let mut warnings = Vec::new();
    // Per pool: tasks with (available in unit, once-capacity, max-capacity, mean tokens, cap).
    struct T {
        task: String,
        samples: u64,
        tokens: u64,
        avail: f64,
        once: f64,
        max: f64,
        cap: Option<u64>,
    }
    let mut by_pool: Vec<Vec<T>> = (0..pools.len()).map(|_| Vec::new()).collect();
    let mut examples: Vec<Vec<String>> = vec![Vec::new(); pools.len()];
    let mut merged: BTreeMap<(usize, &str), (u64, u64)> = BTreeMap::new();
    for g in stats.iter().filter(|g| g.pool < pools.len()) {
        let e = merged.entry((g.pool, g.task.as_str())).or_default();
        e.0 += g.samples;
        e.1 += g.tokens;
        for id in &g.examples {
            if examples[g.pool].len() < 5 && !examples[g.pool].contains(id) {
                examples[g.pool].push(id.clone());
            }
        }
    }
    for ((pool, task), (samples, tokens)) in merged {
        if samples == 0 {
            continue;
        }
        let per_sample = match unit {
            MixUnit::Samples => 1.0,
            MixUnit::Tokens => tokens as f64 / samples as f64,
        };
        let avail = samples as f64 * per_sample;
        let cap = spec.cap_of(task);
        let cap_units = cap.map_or(f64::INFINITY, |c| c as f64 * per_sample);
        by_pool[pool].push(T {
            task: task.to_string(),
            samples,
            tokens,
            avail,
            once: avail.min(cap_units),
            max: (avail * r).min(cap_units),
            cap,
        });
    }
    // Without a target the total is set by the data itself (the scarce pool whole); task caps
    // shape a pool's tasks but do not shrink the mix while repeats can still fill the pool.
    let once: Vec<f64> = by_pool
        .iter()
        .map(|ts| {
            let data: f64 = ts.iter().map(|t| t.avail).sum();
            let most: f64 = ts.iter().map(|t| t.max).sum();
            data.min(most)
        })
        .collect();
    let most: Vec<f64> = by_pool
        .iter()
        .map(|ts| ts.iter().map(|t| t.max).sum())
        .collect();
    let whole = |x: f64| match unit {
        MixUnit::Samples => (x + 1e-6).floor(),
        MixUnit::Tokens => x,
    };
    let unit_name = match unit {
        MixUnit::Samples => "samples",
        MixUnit::Tokens => "tokens",
    };
    let limit = |caps: &[f64]| {
        pools
            .iter()
            .enumerate()
            .map(|(i, (_, _, s))| (caps[i] / s, i))
            .fold((f64::INFINITY, 0), |a, b| if b.0 < a.0 { b } else { a })
    };
    let mut total = match spec.target {
        Some(target) => {
            let (t, p) = limit(&most);
            if t < target as f64 {
                warnings.push(format!(
                    "target {target} {unit_name} is not reachable: the {} pool has {:.0} {unit_name} at most ({} repeats); the mix is cut to {:.0} {unit_name} so that the ratio holds",
                    pools[p].0.as_str(),
                    most[p],
                    spec.max_repeats,
                    whole(t)
                ));
                t
            } else {
                target as f64
            }
        }
        None => limit(&once).0,
    };
    if !total.is_finite() {
        total = 0.0;
    }
    // Samples are whole: the total rounds to the nearest sample, and no pool goes past what it
    // may give (its data once without a target, up to max_repeats with one).
    let limit_of = |i: usize| {
        whole(if spec.target.is_some() {
            most[i]
        } else {
            once[i]
        })
    };
    if unit == MixUnit::Samples {
        total = total.round();
    }
    for (i, (role, _, _)) in pools.iter().enumerate() {
        if by_pool[i].is_empty() {
            warnings.push(format!(
                "the {} pool is empty: no sample matches it, so the mix is empty",
                role.as_str()
            ));
        }
    }
    // Pool quotas: every pool but the largest-share one is rounded; that one takes the rest,
    // so the total is exact and every ratio is within one sample.
    let largest = pools
        .iter()
        .enumerate()
        .fold(0, |a, (i, p)| if p.2 > pools[a].2 { i } else { a });
    let mut quotas: Vec<f64> = pools
        .iter()
        .enumerate()
        .map(|(i, (_, _, s))| {
            let q = total * s;
            let q = match unit {
                MixUnit::Samples => q.round(),
                MixUnit::Tokens => q,
            };
            q.min(limit_of(i))
        })
        .collect();
    let others: f64 = quotas
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != largest)
        .map(|(_, q)| q)
        .sum();
    quotas[largest] = (total - others).max(0.0).min(limit_of(largest));
    let mut out_pools = Vec::new();
    let planned_total: f64 = quotas.iter().sum();
    for (i, (role, _, share)) in pools.iter().enumerate() {
        let ts = &by_pool[i];
        let weights: Vec<f64> = ts
            .iter()
            .map(|t| t.once.powf(1.0 / spec.temperature))
            .collect();
        let caps: Vec<f64> = ts.iter().map(|t| t.max).collect();
        let alloc = allocate(quotas[i], &weights, &caps, unit == MixUnit::Samples);
        let mut tasks = Vec::new();
        let (mut sel_samples, mut sel_tokens) = (0.0, 0.0);
        for (t, q) in ts.iter().zip(alloc) {
            let repeat = q / t.avail;
            let mean = t.tokens as f64 / t.samples as f64;
            match unit {
                MixUnit::Samples => {
                    sel_samples += q;
                    sel_tokens += q * mean;
                }
                MixUnit::Tokens => {
                    sel_tokens += q;
                    sel_samples += q / mean;
                }
            }
            if repeat > WARN_REPEATS + 1e-9 {
                warnings.push(format!(
                    "task {} of the {} pool is repeated {repeat:.2} times (more than {WARN_REPEATS} epochs): expect overfitting",
                    t.task,
                    role.as_str()
                ));
            }
            tasks.push(TaskPlan {
                task: t.task.clone(),
                available_samples: t.samples,
                available_tokens: t.tokens,
                cap: t.cap,
                quota: unsigned_zero(q),
                repeat: unsigned_zero(repeat),
            });
        }
        let avail_units: f64 = ts.iter().map(|t| t.avail).sum();
        let repeat = if avail_units > 0.0 {
            quotas[i] / avail_units
        } else {
            0.0
        };
        if *role == PoolRole::Domain && repeat > 1.0 + 1e-9 && !ts.is_empty() {
            warnings.push(format!(
                "domain data is too small for the ratio at this size: {avail_units:.0} {unit_name} available, {:.0} needed (upsampled {repeat:.2}×)",
                quotas[i]
            ));
        }
        out_pools.push(PoolPlan {
            pool: *role,
            requested_share: *share,
            available_samples: ts.iter().map(|t| t.samples).sum(),
            available_tokens: ts.iter().map(|t| t.tokens).sum(),
            quota: unsigned_zero(quotas[i]),
            selected_samples: unsigned_zero(sel_samples),
            selected_tokens: unsigned_zero(sel_tokens),
            share: if planned_total > 0.0 {
                quotas[i] / planned_total
            } else {
                0.0
            },
            repeat: unsigned_zero(repeat),
            examples: std::mem::take(&mut examples[i]),
            tasks,
        });
    }
    MixPlan {
        mode: spec.mode,
        unit,
        ratio: spec.ratio,
        target: spec.target,
        total: unsigned_zero(planned_total),
        pools: out_pools,
        warnings,
    }
}

/// `-0.0` as `0.0`: a plan never shows a negative zero.
fn unsigned_zero(x: f64) -> f64 {
    if x == 0.0 {
        0.0
    } else {
        x
    }
}

/// Share `q` among items by weight, no item above its cap (water-filling: what a capped item
/// cannot take goes to the others). With `whole`, shares are whole numbers summing to
/// `min(q, Σ floor(cap))`, the remainders going to the largest fractions (ties to the first).
pub fn allocate(q: f64, weights: &[f64], caps: &[f64], whole: bool) -> Vec<f64> {
    let n = weights.len();
    let mut out = vec![0.0; n];
    let caps: Vec<f64> = caps
        .iter()
        .map(|c| if whole { (c + 1e-6).floor() } else { *c })
        .collect();
    let mut active: Vec<usize> = (0..n).filter(|&i| caps[i] > 0.0).collect();
    let mut left = q.min(caps.iter().sum());
    while !active.is_empty() && left > 1e-9 {
        let wsum: f64 = active.iter().map(|&i| weights[i]).sum();
        let share = |i: usize| {
            if wsum > 0.0 {
                left * weights[i] / wsum
            } else {
                left / active.len() as f64
            }
        };
        let over: Vec<usize> = active
            .iter()
            .copied()
            .filter(|&i| share(i) >= caps[i] - out[i])
            .collect();
        if over.is_empty() {
            for &i in &active {
                out[i] += share(i);
            }
            left = 0.0;
        } else {
            for &i in &over {
                left -= caps[i] - out[i];
                out[i] = caps[i];
            }
            active.retain(|i| !over.contains(i));
        }
    }
    if whole {
        let target = q.min(caps.iter().sum()).round();
        let mut floors: Vec<f64> = out.iter().map(|x| (x + 1e-6).floor()).collect();
        let mut rest = target - floors.iter().sum::<f64>();
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| {
            let fa = out[a] - floors[a];
            let fb = out[b] - floors[b];
            fb.total_cmp(&fa).then(a.cmp(&b))
        });
        while rest > 0.5 {
            let before = rest;
            for &i in &order {
                if rest > 0.5 && floors[i] + 1.0 <= caps[i] {
                    floors[i] += 1.0;
                    rest -= 1.0;
                }
            }
            if rest == before {
                break;
            }
        }
        return floors;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(pool: usize, task: &str, samples: u64, tokens: u64) -> GroupStat {
        GroupStat {
            pool,
            task: task.into(),
            samples,
            tokens,
            examples: vec![format!("{task}#1")],
        }
    }

    fn spec(text: &str) -> MixSpec {
        let s: MixSpec = toml::from_str(text).expect("spec parses");
        assert!(s.validate().is_empty(), "{:?}", s.validate());
        s
    }

    #[test]
    fn sft_one_to_five_uses_the_scarce_domain_whole() {
        let s = spec("ratio = \"1:5\"\npools.domain = { domain = \"medical\" }");
        let p = plan(
            &s,
            &[stat(0, "qa", 1000, 200_000), stat(1, "chat", 9000, 900_000)],
        );
        assert_eq!(p.pools[0].quota, 1000.0);
        assert_eq!(p.pools[1].quota, 5000.0);
        assert_eq!(p.total, 6000.0);
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
        // General short: the domain side shrinks instead, and nothing repeats.
        let p = plan(&s, &[stat(0, "qa", 1000, 1), stat(1, "chat", 4001, 1)]);
        assert_eq!(p.pools[1].quota, 4001.0);
        assert!(
            (p.pools[0].quota - 4001.0 / 5.0).abs() <= 1.0,
            "{:?}",
            p.pools[0]
        );
    }

    #[test]
    fn a_target_upsamples_with_a_warning_and_never_past_max_repeats() {
        let s = spec(
            "ratio = \"1:5\"\ntarget = 12000\nmax_repeats = 10\npools.domain = { domain = \"m\" }",
        );
        let p = plan(&s, &[stat(0, "qa", 400, 1), stat(1, "chat", 90_000, 1)]);
        assert_eq!(p.pools[0].quota, 2000.0);
        assert_eq!(p.pools[1].quota, 10_000.0);
        assert!(
            p.warnings.iter().any(|w| w.contains("repeated 5.00 times")),
            "{:?}",
            p.warnings
        );
        assert!(p
            .warnings
            .iter()
            .any(|w| w.contains("too small for the ratio")));
        // max_repeats 4 caps the domain at 1600: the total shrinks to keep 1:5.
        let s = spec(
            "ratio = \"1:5\"\ntarget = 12000\nmax_repeats = 4\npools.domain = { domain = \"m\" }",
        );
        let mut p = plan(&s, &[stat(0, "qa", 400, 1), stat(1, "chat", 90_000, 1)]);
        assert_eq!(p.pools[0].quota, 1600.0);
        assert_eq!(p.pools[1].quota, 8000.0);
        assert!(p.warnings.iter().any(|w| w.contains("not reachable")));
        p.warnings.clear();
    }

    #[test]
    fn caps_and_temperature_share_a_pool_among_tasks() {
        let s = spec(
            "ratio = \"1:1\"\ntask_caps = { a = 300, b = 300, c = 300 }\ntemperature = 1e9\npools.domain = { domain = \"m\" }",
        );
        // Domain: three tasks of 1000, 100, 50 samples, cap 300, uniform temperature.
        let stats = [
            stat(0, "a", 1000, 1),
            stat(0, "b", 100, 1),
            stat(0, "c", 50, 1),
            stat(1, "g", 100_000, 1),
        ];
        let p = plan(&s, &stats);
        let q: Vec<f64> = p.pools[0].tasks.iter().map(|t| t.quota).collect();
        // The data (1150 samples) would give 1150, but the caps and max_repeats let the pool
        // give at most 300 + 300 + 4 × 50 = 800: the big task is capped, the small ones are
        // repeated up to their limits.
        assert_eq!(q, vec![300.0, 300.0, 200.0]);
        assert_eq!(p.pools[1].quota, 800.0);
        // A cap in the general pool does not shrink the mix while repeats can fill it: the
        // scarce domain pool is used whole (examples/mix_sft.toml: 200 medical samples).
        let s = spec("ratio = \"1:5\"\ntask_cap = 800\npools.domain = { domain = \"m\" }");
        let p = plan(
            &s,
            &[
                stat(0, "qa", 200, 1),
                stat(1, "chat", 1397, 1),
                stat(1, "identity", 91, 1),
                stat(1, "tools", 97, 1),
            ],
        );
        assert_eq!(p.pools[0].quota, 200.0);
        assert_eq!(p.pools[1].quota, 1000.0);
        // With a target, the smallest task stops at max_repeats (4 × 50) and the others share
        // the rest, none past the cap of 300.
        let s = spec(
            "ratio = \"1:1\"\ntarget = 1400\ntask_caps = { a = 300, b = 300, c = 300 }\ntemperature = 1e9\npools.domain = { domain = \"m\" }",
        );
        let p = plan(&s, &stats);
        let q: Vec<f64> = p.pools[0].tasks.iter().map(|t| t.quota).collect();
        assert_eq!(q, vec![250.0, 250.0, 200.0]);
    }

    #[test]
    fn cpt_shares_are_in_tokens() {
        let s = spec(
            "mode = \"cpt\"\nratio = 0.15\ninstruct_share = 0.05\npools.domain = { domain = \"fin\" }",
        );
        assert_eq!(s.unit(), MixUnit::Tokens);
        let p = plan(
            &s,
            &[
                stat(0, "news", 100, 150_000),
                stat(1, "sft", 1000, 500_000),
                stat(2, "web", 10_000, 50_000_000),
            ],
        );
        assert!((p.total - 1_000_000.0).abs() < 1e-6, "{}", p.total);
        assert!((p.pools[0].share - 0.15).abs() < 1e-9);
        assert!((p.pools[1].share - 0.05).abs() < 1e-9);
        assert!((p.pools[2].quota - 800_000.0).abs() < 1e-6);
    }

    #[test]
    fn whole_allocations_sum_exactly() {
        let a = allocate(10.0, &[1.0, 1.0, 1.0], &[100.0, 100.0, 100.0], true);
        assert_eq!(a.iter().sum::<f64>(), 10.0);
        assert_eq!(a, vec![4.0, 3.0, 3.0]);
        let a = allocate(10.0, &[5.0, 1.0], &[2.0, 100.0], true);
        assert_eq!(a, vec![2.0, 8.0]);
    }

    #[test]
    fn bad_specs_are_reported() {
        assert!(Ratio::parse("1:0").is_err());
        assert!(Ratio::parse("1.5").is_err());
        assert!(
            (Ratio::parse("1:5").map(|r| r.domain_share).unwrap_or(0.0) - 1.0 / 6.0).abs() < 1e-12
        );
        let s: MixSpec =
            toml::from_str("ratio = 0.9\ninstruct_share = 0.2\nmode = \"cpt\"").expect("parses");
        assert_eq!(s.validate().len(), 2, "{:?}", s.validate());
    }
}
