//! `split`: assign every sample to train/valid/test (any names) by ratio, deterministically by
//! seed, stratified by domain and task, keeping groups whole: samples sharing the group tag
//! (default `minhash_cluster`, set by a `minhash` stage with `drop = false`) land in one split,
//! so near duplicates never leak across splits. The split name is written as the `split` tag.
//!
//! Within each stratum, groups are ordered by a seeded hash of their key and cut at the exact
//! cumulative quotas, so achieved counts are within one group of the ratios.

use super::{Decision, Decisions, GlobalStage};
use crate::exchange::Records;
use crate::sample::Sample;
use serde::Deserialize;
use std::collections::BTreeMap;

/// Config of `type = "split"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Split names and their shares, summing to 1: `{ train = 0.9, valid = 0.05, test = 0.05 }`.
    pub ratios: BTreeMap<String, f64>,
    /// Keep ratios per (domain, task) (default true).
    #[serde(default = "default_true")]
    pub stratify: bool,
    /// Tag whose equal values must share a split (default `minhash_cluster`).
    #[serde(default = "default_group_tag")]
    pub group_tag: String,
    /// Seed of the assignment (default 42).
    #[serde(default = "default_seed")]
    pub seed: u64,
}

fn default_true() -> bool {
    true
}
fn default_group_tag() -> String {
    "minhash_cluster".into()
}
fn default_seed() -> u64 {
    42
}

impl Config {
    pub(crate) fn validate(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.ratios.is_empty() {
            out.push("ratios needs at least one split".into());
        }
        if let Some((name, r)) = self
            .ratios
            .iter()
            .find(|(_, r)| !(**r >= 0.0 && **r <= 1.0))
        {
            out.push(format!(
                "ratio of {name} is {r}, not a share between 0 and 1"
            ));
        }
        let sum: f64 = self.ratios.values().sum();
        if (sum - 1.0).abs() > 1e-6 {
            out.push(format!("ratios sum to {sum}, not 1"));
        }
        out
    }
}

/// The built stage.
#[derive(Debug)]
pub struct Split {
    cfg: Config,
}

impl Split {
    /// Build from config.
    pub fn new(cfg: &Config) -> Split {
        Split { cfg: cfg.clone() }
    }
}

impl GlobalStage for Split {
    type Record = u64;
    type Reduced = Decisions;

    fn map(&self, s: &Sample, emit: &mut dyn FnMut(u128)) -> Option<u64> {
        let stratum = if self.cfg.stratify {
            xxhash_rust::xxh3::xxh3_128(format!("{}\u{0}{}", s.domain, s.task).as_bytes())
        } else {
            0
        };
        let group = s.tags.get(&self.cfg.group_tag).unwrap_or(&s.id);
        emit(stratum);
        Some(xxhash_rust::xxh3::xxh3_64_with_seed(
            group.as_bytes(),
            self.cfg.seed,
        ))
    }

    fn reduce(&self, _stratum: u128, members: &[u64], records: &Records<u64>, out: &mut Decisions) {
        let groups = members
            .iter()
            .map(|&pos| (records.get(pos).unwrap_or(pos), pos));
        self.assign(members.len(), groups, out);
    }

    fn finish(
        &self,
        parts: Vec<Decisions>,
        _: &Records<u64>,
    ) -> Result<Decisions, crate::error::StageError> {
        Ok(Decisions::merge(parts))
    }
}

impl Split {
    /// Assign `n` records, given as (group hash, position), to splits by cumulative quota.
    fn assign(&self, n: usize, values: impl Iterator<Item = (u64, u64)>, out: &mut Decisions) {
        let n = n as f64;
        let mut groups: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        for (g, pos) in values {
            groups.entry(g).or_default().push(pos);
        }
        // Cumulative quotas in samples; each group goes where its middle falls.
        let mut bounds = Vec::new();
        let mut acc = 0.0;
        for (name, r) in &self.cfg.ratios {
            acc += r * n;
            bounds.push((acc, name.clone()));
        }
        let mut filled = 0.0;
        for (_, members) in groups {
            let mid = filled + members.len() as f64 / 2.0;
            let name = bounds
                .iter()
                .find(|(b, _)| mid < *b)
                .or(bounds.last())
                .map(|(_, n)| n.clone())
                .unwrap_or_default();
            filled += members.len() as f64;
            for pos in members {
                out.insert(
                    pos,
                    Decision {
                        drop: None,
                        tags: vec![("split".to_string(), name.clone())],
                        repeat: 0,
                    },
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(toml_text: &str) -> Config {
        toml::from_str(toml_text).expect("parses")
    }

    #[test]
    fn ratios_are_exact_within_a_group_and_groups_stay_whole() {
        let s = Split::new(&cfg("ratios = { train = 0.8, valid = 0.1, test = 0.1 }"));
        // 1000 singletons and one group of 5 (positions 1000..1005 share group hash 7).
        let mut values: Vec<(u64, u64)> = (0..1000u64)
            .map(|p| (xxhash_rust::xxh3::xxh3_64(&p.to_le_bytes()), p))
            .collect();
        values.extend((1000..1005).map(|p| (7, p)));
        let mut out = Decisions::new();
        s.assign(values.len(), values.into_iter(), &mut out);
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for d in out.values() {
            *counts.entry(d.tags[0].1.clone()).or_default() += 1;
        }
        assert!((counts["train"] as i64 - 804).abs() <= 5, "{counts:?}");
        assert!(
            (counts["valid"] as i64 - 100).abs() <= 5 && (counts["test"] as i64 - 100).abs() <= 5,
            "{counts:?}"
        );
        let group: Vec<&String> = (1000..1005)
            .map(|p| &out.get(&p).expect("decided").tags[0].1)
            .collect();
        assert!(
            group.iter().all(|g| *g == group[0]),
            "the group is in one split"
        );
    }

    #[test]
    fn bad_ratios_are_reported() {
        assert_eq!(
            cfg("ratios = { train = 0.9, test = 0.2 }").validate().len(),
            1
        );
        assert!(toml::from_str::<Config>("ratio = { train = 1.0 }").is_err());
    }
}
