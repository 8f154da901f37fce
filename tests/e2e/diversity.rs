//! `sluice inspect diversity` on the bundled data: its counts, shares, length percentiles, turn
//! histograms, near-duplicate cluster sizes and dominance warnings equal a count made here
//! from the curated files; the topic clusters and difficulty buckets cover every sample.

use crate::common::*;
use std::collections::{BTreeMap, HashMap};

/// Nearest-rank percentile.
fn pct(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let r = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[r - 1]
}

#[test]
fn diversity_statistics_equal_an_independent_count() {
    let tmp = tempfile::tempdir().expect("tmp");
    let run = crate::eval::run(tmp.path(), 42);
    let out = sluice(&[
        "inspect",
        "diversity",
        run.to_str().expect("utf8"),
        "--split",
        "train",
        "--k",
        "5",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let d: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("diversity.json")).expect("json"))
            .expect("json");
    let samples = crate::eval::split_lines(&run, "train");
    let n = samples.len();
    assert_eq!(d["overall"]["count"], n as u64);
    // Per domain and task.
    let mut groups: BTreeMap<(String, String), Vec<&serde_json::Value>> = BTreeMap::new();
    for s in &samples {
        groups
            .entry((
                s["domain"].as_str().expect("domain").to_string(),
                s["task"].as_str().expect("task").to_string(),
            ))
            .or_default()
            .push(s);
    }
    let got = d["groups"].as_array().expect("groups");
    assert_eq!(got.len(), groups.len());
    for ((domain, task), members) in &groups {
        let g = got
            .iter()
            .find(|g| g["domain"] == domain.as_str() && g["task"] == task.as_str())
            .unwrap_or_else(|| panic!("{domain}/{task}"));
        assert_eq!(g["count"], members.len() as u64, "{domain}/{task}");
        let share = g["share"].as_f64().expect("share");
        assert!((share - members.len() as f64 / n as f64).abs() < 1e-12);
        // Characters of content: system, turns, text joined by newlines.
        let mut chars: Vec<f64> = members
            .iter()
            .map(|s| {
                let mut parts: Vec<&str> = Vec::new();
                if let Some(x) = s["system"].as_str() {
                    parts.push(x);
                }
                for t in s["turns"].as_array().into_iter().flatten() {
                    parts.push(t["content"].as_str().expect("content"));
                }
                if let Some(x) = s["text"].as_str() {
                    parts.push(x);
                }
                parts.join("\n").chars().count() as f64
            })
            .collect();
        assert_eq!(
            g["chars"]["p50"].as_f64(),
            Some(pct(&mut chars, 0.5)),
            "{domain}/{task}"
        );
        assert_eq!(
            g["chars"]["p90"].as_f64(),
            Some(pct(&mut chars, 0.9)),
            "{domain}/{task}"
        );
        assert_eq!(
            g["chars"]["max"].as_f64(),
            chars.iter().copied().reduce(f64::max)
        );
        let mut turns: BTreeMap<String, u64> = BTreeMap::new();
        for s in members {
            let users = s["turns"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|t| t["role"] == "user")
                .count();
            *turns.entry(users.to_string()).or_default() += 1;
        }
        assert_eq!(g["turns"], serde_json::json!(turns), "{domain}/{task}");
        let buckets: u64 = g["difficulty"]
            .as_object()
            .expect("difficulty")
            .values()
            .map(|v| v.as_u64().expect("n"))
            .sum();
        assert_eq!(buckets, members.len() as u64);
        let typed: u64 = g["instruction_types"]
            .as_array()
            .expect("types")
            .iter()
            .map(|t| t[1].as_u64().expect("n"))
            .sum();
        assert!(typed <= members.len() as u64 && typed > 0);
    }
    // Near-duplicate clusters from the minhash stage's tags.
    let mut clusters: HashMap<String, u64> = HashMap::new();
    for s in &samples {
        let key = s["tags"]["minhash_cluster"]
            .as_str()
            .map_or_else(|| format!("\u{0}{}", s["id"]), str::to_string);
        *clusters.entry(key).or_default() += 1;
    }
    let mut sizes: BTreeMap<String, u64> = BTreeMap::new();
    for size in clusters.values() {
        let b = match size {
            1 => "1",
            2 => "2",
            3..=5 => "3-5",
            6..=10 => "6-10",
            _ => "11+",
        };
        *sizes.entry(b.to_string()).or_default() += 1;
    }
    assert_eq!(d["duplicate_clusters"]["from"], "minhash_cluster tags");
    assert_eq!(d["duplicate_clusters"]["sizes"], serde_json::json!(sizes));
    // Topics cover the sample; a dominant task is warned about.
    let covered: u64 = d["topics"]
        .as_array()
        .expect("topics")
        .iter()
        .map(|t| t["size"].as_u64().expect("size"))
        .sum();
    assert_eq!(covered, d["topic_sample"].as_u64().expect("sample"));
    assert_eq!(covered, n as u64, "the whole run fits the default sample");
    let chitchat = groups
        .iter()
        .filter(|((_, t), _)| t == "chitchat")
        .map(|(_, m)| m.len())
        .sum::<usize>() as f64
        / n as f64;
    let warned = d["warnings"].to_string().contains("task \\\"chitchat\\\"");
    assert_eq!(warned, chitchat > 0.5, "{} ({chitchat})", d["warnings"]);
}
