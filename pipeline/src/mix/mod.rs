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
mod spec;

pub use spec::*;

use serde::Serialize;
use std::collections::BTreeMap;

/// Repeats beyond this many epochs get a warning.
pub const WARN_REPEATS: f64 = 4.0;

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
    for (i, (role, spec, _)) in pools.iter().enumerate() {
        if by_pool[i].is_empty() {
            warnings.push(format!(
                "the {} pool ({}) is empty: no sample matches it, so the mix is empty",
                role.as_str(),
                spec.describe()
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
