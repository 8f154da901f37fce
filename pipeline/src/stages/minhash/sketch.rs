//! Shingles, MinHash signatures, LSH band keys, the bands × rows choice, and the bottom-k
//! shingle sketch that verifies candidates.

use crate::normalize::{canonical_into, is_cjk};

/// The probability that two samples of Jaccard `s` share at least one band.
fn candidate_probability(s: f64, bands: usize, rows: usize) -> f64 {
    1.0 - (1.0 - s.powi(rows as i32)).powi(bands as i32)
}

fn integrate(f: impl Fn(f64) -> f64, a: f64, b: f64) -> f64 {
    // Simpson's rule; the integrands are smooth polynomials.
    let n = 200;
    let h = (b - a) / n as f64;
    let mut sum = f(a) + f(b);
    for i in 1..n {
        sum += f(a + i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 };
    }
    sum * h / 3.0
}

/// Bands and rows minimizing the false-positive plus false-negative areas (equal weights), as
/// datasketch's `_optimal_param` does.
pub fn optimal_params(threshold: f64, num_perm: usize) -> (usize, usize) {
    weighted_params(threshold, num_perm, 0.5)
}

/// Weight of a missed pair against a needless candidate in [`recall_params`].
pub const MISS_WEIGHT: f64 = 0.95;

/// The bands and rows sluice uses: false negatives weigh [`MISS_WEIGHT`], false positives the
/// rest. Every candidate is verified against its shingle sketch, so a needless candidate costs
/// one comparison, while a missed one is a duplicate kept. At 0.8 and 128 permutations this is
/// 16 × 8: pairs of Jaccard 0.85 become candidates with probability 0.994 (datasketch's 9 × 13:
/// 0.686).
pub fn recall_params(threshold: f64, num_perm: usize) -> (usize, usize) {
    weighted_params(threshold, num_perm, MISS_WEIGHT)
}

fn weighted_params(threshold: f64, num_perm: usize, miss_weight: f64) -> (usize, usize) {
    let mut best = (1, 1);
    let mut best_err = f64::MAX;
    for b in 1..=num_perm {
        for r in 1..=num_perm / b {
            let fp = integrate(|s| candidate_probability(s, b, r), 0.0, threshold);
            let fn_ = integrate(|s| 1.0 - candidate_probability(s, b, r), threshold, 1.0);
            let err = (1.0 - miss_weight) * fp + miss_weight * fn_;
            if err < best_err {
                best_err = err;
                best = (b, r);
            }
        }
    }
    best
}

/// Shingles kept per sample to verify candidates: the smallest [`SKETCH`] distinct shingle
/// hashes (all of them for texts up to about 1,000 tokens, where the Jaccard computed is exact).
pub const SKETCH: usize = 1024;

/// Jaccard similarity from two bottom-k sketches (sorted, distinct): exact when both hold every
/// shingle (fewer than [`SKETCH`]), else the bottom-k estimate over the union's `k` smallest
/// hashes, `k` the smaller sketch (standard error ≈ √(J(1−J)/k), 0.011 at J = 0.85).
pub fn sketch_jaccard(a: &[u32], b: &[u32]) -> f64 {
    let complete = a.len() < SKETCH && b.len() < SKETCH;
    let k = if complete {
        usize::MAX
    } else {
        a.len().min(b.len())
    };
    let (mut i, mut j, mut union, mut both) = (0, 0, 0usize, 0usize);
    while union < k && (i < a.len() || j < b.len()) {
        match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) if x == y => {
                both += 1;
                i += 1;
                j += 1;
            }
            (Some(x), Some(y)) if x < y => i += 1,
            (Some(_), None) => i += 1,
            _ => j += 1,
        }
        union += 1;
    }
    both as f64 / union.max(1) as f64
}

/// Shingling, signatures and banding for one configuration.
#[derive(Debug, Clone)]
pub struct MinHasher {
    ngram: usize,
    pub(super) a: Vec<u32>,
    pub(super) b: Vec<u32>,
    /// LSH bands.
    pub bands: usize,
    /// Rows per band.
    pub rows: usize,
}

impl MinHasher {
    /// Build from the threshold, permutations, n-gram size and optional explicit bands × rows
    /// (else [`recall_params`]).
    pub fn new(
        threshold: f64,
        num_perm: usize,
        ngram: usize,
        bands_rows: Option<(usize, usize)>,
        seed: u64,
    ) -> MinHasher {
        let (bands, rows) = bands_rows.unwrap_or_else(|| recall_params(threshold, num_perm));
        let mut rng = crate::stages::SplitMix64(seed);
        let a = (0..num_perm)
            .map(|_| (rng.next_u64() >> 32) as u32 | 1)
            .collect();
        let b = (0..num_perm)
            .map(|_| (rng.next_u64() >> 32) as u32)
            .collect();
        MinHasher {
            ngram,
            a,
            b,
            bands,
            rows,
        }
    }

    /// Hashes of the shingles of a text (after canonical form).
    pub fn shingles(&self, text: &str) -> Vec<u64> {
        let mut canon = String::with_capacity(text.len());
        canonical_into(text, &mut canon);
        let mut tokens: Vec<&str> = Vec::new();
        let mut word_start: Option<usize> = None;
        for (i, c) in canon.char_indices() {
            // Ideographs are letters: skip the Unicode table lookup for the common case.
            let ideograph = matches!(c as u32, 0x4E00..=0x9FFF | 0x3400..=0x4DBF);
            let cjk = ideograph || (is_cjk(c) && c.is_alphanumeric());
            if !cjk && c.is_alphanumeric() {
                word_start.get_or_insert(i);
                continue;
            }
            if let Some(s) = word_start.take() {
                tokens.push(&canon[s..i]);
            }
            if cjk {
                tokens.push(&canon[i..i + c.len_utf8()]);
            }
        }
        if let Some(s) = word_start {
            tokens.push(&canon[s..]);
        }
        if tokens.is_empty() {
            return Vec::new();
        }
        let n = self.ngram.min(tokens.len());
        let mut buf = String::new();
        let mut out: Vec<u64> = tokens
            .windows(n)
            .map(|w| {
                buf.clear();
                for t in w {
                    buf.push_str(t);
                    buf.push('\u{1}');
                }
                xxhash_rust::xxh3::xxh3_64(buf.as_bytes())
            })
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The MinHash signature of a text, or `None` when it has no tokens.
    pub fn signature(&self, text: &str) -> Option<Vec<u32>> {
        let shingles = self.shingles(text);
        if shingles.is_empty() {
            return None;
        }
        // Each permutation is x ↦ a·x + b (mod 2^32) with odd a, a bijection of the 32-bit
        // shingle hashes, like datasketch's linear permutations; 32-bit lanes vectorize.
        let folded: Vec<u32> = shingles.iter().map(|&h| (h ^ (h >> 32)) as u32).collect();
        Some(signature_of(&self.a, &self.b, &folded))
    }

    /// The signature and the bottom-k shingle sketch of a text, or `None` when it has no
    /// tokens.
    pub fn signature_and_sketch(&self, text: &str) -> Option<(Vec<u32>, Vec<u32>)> {
        let shingles = self.shingles(text);
        if shingles.is_empty() {
            return None;
        }
        let mut folded: Vec<u32> = shingles.iter().map(|&h| (h ^ (h >> 32)) as u32).collect();
        let sig = signature_of(&self.a, &self.b, &folded);
        folded.sort_unstable();
        folded.dedup();
        folded.truncate(SKETCH);
        Some((sig, folded))
    }

    /// Band keys of a signature.
    pub fn band_keys(&self, sig: &[u32]) -> Vec<u128> {
        (0..self.bands)
            .map(|j| {
                let mut bytes = Vec::with_capacity(4 + 4 * self.rows);
                bytes.extend_from_slice(&(j as u32).to_le_bytes());
                for v in &sig[j * self.rows..(j + 1) * self.rows] {
                    bytes.extend_from_slice(&v.to_le_bytes());
                }
                xxhash_rust::xxh3::xxh3_128(&bytes)
            })
            .collect()
    }
}

pub(super) fn signature_scalar(a: &[u32], b: &[u32], xs: &[u32]) -> Vec<u32> {
    a.iter()
        .zip(b)
        .map(|(&a, &b)| {
            xs.iter()
                .map(|&x| a.wrapping_mul(x).wrapping_add(b))
                .min()
                .unwrap_or(u32::MAX)
        })
        .collect()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn signature_avx2(a: &[u32], b: &[u32], xs: &[u32]) -> Vec<u32> {
    // The same code as `signature_scalar`, compiled with AVX2 so the min-reduction over the
    // shingles runs 8 lanes wide.
    signature_scalar(a, b, xs)
}

/// MinHash values of folded shingle hashes, with AVX2 when the CPU has it (identical results).
pub(super) fn signature_of(a: &[u32], b: &[u32], xs: &[u32]) -> Vec<u32> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above; the function only does safe
        // arithmetic on slices.
        #[allow(unsafe_code)]
        return unsafe { signature_avx2(a, b, xs) };
    }
    signature_scalar(a, b, xs)
}

/// Estimated Jaccard similarity of two signatures.
pub fn estimate(a: &[u32], b: &[u32]) -> f64 {
    let same = a.iter().zip(b).filter(|(x, y)| x == y).count();
    same as f64 / a.len().max(1) as f64
}
