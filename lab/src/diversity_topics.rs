//! Topic clusters of a sample of texts: TF-IDF vectors (content words, `content_words`; terms in at least two
//! texts and at most half of them), L2-normalized, clustered by k-means with k-means++ seeding
//! under cosine similarity (a fixed seed, at most 50 rounds).

use crate::diversity::Topic;
use std::collections::{BTreeMap, HashMap, HashSet};

/// A sparse unit vector: (term, weight), terms ascending.
type Vector = Vec<(u32, f32)>;

fn dot(v: &Vector, centre: &[f32]) -> f32 {
    v.iter().map(|&(t, w)| w * centre[t as usize]).sum()
}

/// SplitMix64: the seeded generator of the seeding step.
struct Mix(u64);

impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The topics of `(id, text)` pairs, largest first.
pub fn topics(
    jieba: &jieba_rs::Jieba,
    sample: &[(String, String)],
    k: usize,
    seed: u64,
) -> Vec<Topic> {
    let n = sample.len();
    if n == 0 {
        return Vec::new();
    }
    let docs: Vec<Vec<String>> = sample
        .iter()
        .map(|(_, t)| crate::diversity::content_words(jieba, t))
        .collect();
    let mut df: HashMap<&str, usize> = HashMap::new();
    for d in &docs {
        for w in d.iter().map(String::as_str).collect::<HashSet<_>>() {
            *df.entry(w).or_default() += 1;
        }
    }
    // Terms numbered in sorted order (deterministic).
    let mut vocab: Vec<&str> = df
        .iter()
        .filter(|(_, &c)| c >= 2 && c * 2 <= n.max(2))
        .map(|(w, _)| *w)
        .collect();
    vocab.sort_unstable();
    let index: HashMap<&str, u32> = vocab
        .iter()
        .enumerate()
        .map(|(i, w)| (*w, i as u32))
        .collect();
    let vectors: Vec<Vector> = docs
        .iter()
        .map(|d| {
            let mut tf: BTreeMap<u32, f32> = BTreeMap::new();
            for w in d {
                if let Some(&t) = index.get(w.as_str()) {
                    *tf.entry(t).or_default() += 1.0;
                }
            }
            let mut v: Vector = tf
                .into_iter()
                .map(|(t, c)| {
                    let idf = ((n as f32 + 1.0) / (df[vocab[t as usize]] as f32 + 1.0)).ln() + 1.0;
                    (t, c * idf)
                })
                .collect();
            let norm = v.iter().map(|(_, w)| w * w).sum::<f32>().sqrt();
            if norm > 0.0 {
                for (_, w) in &mut v {
                    *w /= norm;
                }
            }
            v
        })
        .collect();
    let k = k.min(n);
    let dims = vocab.len().max(1);
    // k-means++ seeding on cosine distance (1 − similarity).
    let mut rng = Mix(seed ^ 0x7091_c5ee);
    let mut centres: Vec<Vec<f32>> = Vec::with_capacity(k);
    let dense = |v: &Vector| {
        let mut c = vec![0f32; dims];
        for &(t, w) in v {
            c[t as usize] = w;
        }
        c
    };
    centres.push(dense(&vectors[(rng.next() % n as u64) as usize]));
    let mut nearest: Vec<f64> = vectors
        .iter()
        .map(|v| 1.0 - f64::from(dot(v, &centres[0])))
        .collect();
    while centres.len() < k {
        let total: f64 = nearest.iter().map(|d| d.max(0.0) * d.max(0.0)).sum();
        if total <= 0.0 {
            break;
        }
        let mut target = rng.unit() * total;
        let mut pick = n - 1;
        for (i, d) in nearest.iter().enumerate() {
            target -= d.max(0.0) * d.max(0.0);
            if target <= 0.0 {
                pick = i;
                break;
            }
        }
        let c = dense(&vectors[pick]);
        for (i, v) in vectors.iter().enumerate() {
            nearest[i] = nearest[i].min(1.0 - f64::from(dot(v, &c)));
        }
        centres.push(c);
    }
    let k = centres.len();
    let mut assign = vec![usize::MAX; n];
    for _ in 0..50 {
        let mut changed = false;
        for (i, v) in vectors.iter().enumerate() {
            let best = (0..k)
                .map(|c| (c, dot(v, &centres[c])))
                .fold(
                    (0usize, f32::NEG_INFINITY),
                    |b, x| if x.1 > b.1 { x } else { b },
                )
                .0;
            if assign[i] != best {
                assign[i] = best;
                changed = true;
            }
        }
        if !changed {
            break;
        }
        for (c, centre) in centres.iter_mut().enumerate() {
            let mut sum = vec![0f32; dims];
            let mut members = 0;
            for (i, v) in vectors.iter().enumerate() {
                if assign[i] == c {
                    members += 1;
                    for &(t, w) in v {
                        sum[t as usize] += w;
                    }
                }
            }
            if members == 0 {
                continue;
            }
            let norm = sum.iter().map(|w| w * w).sum::<f32>().sqrt();
            if norm > 0.0 {
                for w in &mut sum {
                    *w /= norm;
                }
            }
            *centre = sum;
        }
    }
    let mut out: Vec<Topic> = (0..k)
        .filter_map(|c| {
            let members: Vec<usize> = (0..n).filter(|&i| assign[i] == c).collect();
            if members.is_empty() {
                return None;
            }
            let mut terms: Vec<(usize, f32)> = centres[c]
                .iter()
                .copied()
                .enumerate()
                .filter(|(_, w)| *w > 0.0)
                .collect();
            terms.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            let mut near: Vec<(f32, &str)> = members
                .iter()
                .map(|&i| (dot(&vectors[i], &centres[c]), sample[i].0.as_str()))
                .collect();
            near.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(b.1)));
            Some(Topic {
                size: members.len() as u64,
                share: members.len() as f64 / n as f64,
                terms: terms
                    .iter()
                    .take(8)
                    .map(|(t, _)| vocab.get(*t).unwrap_or(&"").to_string())
                    .collect(),
                examples: near.iter().take(3).map(|(_, id)| id.to_string()).collect(),
            })
        })
        .collect();
    out.sort_by(|a, b| b.size.cmp(&a.size).then(a.terms.cmp(&b.terms)));
    out
}
