//! What a mix asks for, as written (in a `mix` stage, a mix file or `/mix` parameters): pools,
//! ratio, mode, unit, target, caps.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

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

/// A ratio that cannot be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RatioError {
    /// Neither `a:b` with two positive numbers nor a number.
    #[error("ratio {0:?}: expected \"domain:general\" such as \"1:5\", or a share such as 0.15")]
    Form(String),
    /// A share outside (0, 1).
    #[error("ratio {0}: a domain share must lie strictly between 0 and 1")]
    Share(f64),
}

impl From<RatioError> for String {
    fn from(e: RatioError) -> String {
        e.to_string()
    }
}

impl Ratio {
    /// Parse `"a:b"` or a share.
    pub fn parse(s: &str) -> Result<Ratio, RatioError> {
        let s = s.trim();
        let bad = || RatioError::Form(s.to_string());
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
            return Err(RatioError::Share(p));
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

impl PoolSpec {
    /// What the pool takes, in words: `domain general, kind pretrain, where age >= 18`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        for (name, values) in [
            ("domain", &self.domain),
            ("task", &self.task),
            ("source", &self.source),
        ] {
            if !values.is_empty() {
                parts.push(format!("{name} {}", values.join(" or ")));
            }
        }
        if let Some(k) = self.kind {
            parts.push(format!("kind {}", k.as_str()));
        }
        if let Some(w) = &self.filter {
            parts.push(format!("where {}", crate::filter::quoted(w)));
        }
        if parts.is_empty() {
            "every sample".into()
        } else {
            parts.join(", ")
        }
    }
}

pub(super) fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
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

pub(super) fn default_max_repeats() -> f64 {
    4.0
}

pub(super) fn default_temperature() -> f64 {
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
        // Bounded upsampling: a sample is written at most 10,000 times.
        if !(self.max_repeats >= 1.0 && self.max_repeats <= 10_000.0) {
            out.push(format!(
                "max_repeats {} must be between 1 and 10000",
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
                    e.to_string()
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

    pub(super) fn cap_of(&self, task: &str) -> Option<u64> {
        self.task_caps.get(task).copied().or(self.task_cap)
    }
}
