//! MinHash LSH accuracy on a corpus whose near duplicates are known (`sluice bench minhash
//! --accuracy`): precision and recall of the verified pairs against exact shingle Jaccard, for
//! sluice's banding and verification beside datasketch's (equal-weight bands, estimated
//! Jaccard), at several thresholds.
//!
//! Truth: every pair within a lineage (an original and its edited copies) and every reported
//! pair, each with its exact Jaccard over the stage's own shingles. Pairs of unrelated samples
//! are taken to be far apart (they share a sentence now and then, far from any threshold); one
//! that is not would only be missing from the recall's denominator.

use crate::stages::minhash::{
    bucket_pairs, estimate, optimal_params, recall_params, sketch_jaccard, MinHasher,
};
use std::collections::{HashMap, HashSet};
use std::time::Instant;

/// One method at one threshold.
#[derive(Debug, Clone)]
pub struct Accuracy {
    /// `sluice` or `datasketch`.
    pub method: &'static str,
    /// Threshold.
    pub threshold: f64,
    /// Bands × rows.
    pub bands: usize,
    /// Rows per band.
    pub rows: usize,
    /// Verified pairs.
    pub reported: usize,
    /// Share of verified pairs whose exact Jaccard ≥ threshold.
    pub precision: f64,
    /// Pairs with exact Jaccard ≥ threshold + 0.05.
    pub truth: usize,
    /// Share of those verified directly.
    pub recall: f64,
    /// Share of those in one cluster (verified directly or through others).
    pub cluster_recall: f64,
    /// Seconds for signatures, banding and verification.
    pub seconds: f64,
}

/// Exact Jaccard of two sorted, distinct shingle lists.
fn exact(a: &[u64], b: &[u64]) -> f64 {
    let (mut i, mut j, mut both) = (0, 0, 0usize);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Equal => {
                both += 1;
                i += 1;
                j += 1;
            }
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
        }
    }
    both as f64 / (a.len() + b.len() - both).max(1) as f64
}

fn root(parent: &mut [usize], mut x: usize) -> usize {
    while parent[x] != x {
        parent[x] = parent[parent[x]];
        x = parent[x];
    }
    x
}

/// Measure both methods at each threshold. `lineage[i]` is the original sample `i` copies
/// (itself for an original).
pub fn measure(texts: &[String], lineage: &[usize], thresholds: &[f64]) -> Vec<Accuracy> {
    let shingler = MinHasher::new(0.8, 2, 5, Some((1, 1)), 1);
    let shingles: Vec<Vec<u64>> = texts.iter().map(|t| shingler.shingles(t)).collect();
    let mut groups: HashMap<usize, Vec<usize>> = HashMap::new();
    for (i, &r) in lineage.iter().enumerate() {
        groups.entry(r).or_default().push(i);
    }
    let mut lineage_pairs: Vec<(usize, usize, f64)> = Vec::new();
    for members in groups.values() {
        for (x, &a) in members.iter().enumerate() {
            for &b in &members[x + 1..] {
                lineage_pairs.push((a.min(b), a.max(b), exact(&shingles[a], &shingles[b])));
            }
        }
    }
    let mut out = Vec::new();
    for &t in thresholds {
        for method in ["datasketch", "sluice"] {
            let (bands, rows) = if method == "sluice" {
                recall_params(t, 128)
            } else {
                optimal_params(t, 128)
            };
            let started = Instant::now();
            let h = MinHasher::new(t, 128, 5, Some((bands, rows)), 0x5eed_0000_0000_0001);
            let sketches: Vec<Option<(Vec<u32>, Vec<u32>)>> =
                texts.iter().map(|x| h.signature_and_sketch(x)).collect();
            let mut buckets: HashMap<u128, Vec<usize>> = HashMap::new();
            for (i, s) in sketches.iter().enumerate() {
                if let Some((sig, _)) = s {
                    for k in h.band_keys(sig) {
                        buckets.entry(k).or_default().push(i);
                    }
                }
            }
            let mut edges: HashSet<(usize, usize)> = HashSet::new();
            for members in buckets.values() {
                for (i, j) in bucket_pairs(members.len()) {
                    let (a, b) = (members[j], members[i]);
                    let (Some((sa, ka)), Some((sb, kb))) = (&sketches[a], &sketches[b]) else {
                        continue;
                    };
                    let ok = if method == "sluice" {
                        sketch_jaccard(ka, kb) >= t
                    } else {
                        estimate(sa, sb) >= t
                    };
                    if ok {
                        edges.insert((a.min(b), a.max(b)));
                    }
                }
            }
            let seconds = started.elapsed().as_secs_f64();
            let good = edges
                .iter()
                .filter(|&&(a, b)| exact(&shingles[a], &shingles[b]) >= t)
                .count();
            let mut parent: Vec<usize> = (0..texts.len()).collect();
            for &(a, b) in &edges {
                let (ra, rb) = (root(&mut parent, a), root(&mut parent, b));
                parent[ra.max(rb)] = ra.min(rb);
            }
            // True pairs: lineage pairs and reported pairs over the margin.
            let mut truth: HashSet<(usize, usize)> = lineage_pairs
                .iter()
                .filter(|p| p.2 >= t + 0.05)
                .map(|p| (p.0, p.1))
                .collect();
            truth.extend(
                edges
                    .iter()
                    .filter(|&&(a, b)| exact(&shingles[a], &shingles[b]) >= t + 0.05),
            );
            let found = truth.iter().filter(|p| edges.contains(p)).count();
            let together = truth
                .iter()
                .filter(|&&(a, b)| root(&mut parent, a) == root(&mut parent, b))
                .count();
            out.push(Accuracy {
                method,
                threshold: t,
                bands,
                rows,
                reported: edges.len(),
                precision: good as f64 / edges.len().max(1) as f64,
                truth: truth.len(),
                recall: found as f64 / truth.len().max(1) as f64,
                cluster_recall: together as f64 / truth.len().max(1) as f64,
                seconds,
            });
        }
    }
    out
}
