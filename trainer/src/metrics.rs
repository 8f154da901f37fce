//! Text overlap metrics for generated answers, computed as the packages practitioners report
//! them (exact match and token F1 as the SQuAD v1.1 script, Chinese by character): BLEU as
//! sacrebleu computes it (tokenizers `13a` for English and `zh` for Chinese, 4-gram
//! precisions, brevity penalty, exponential smoothing; effective order for single sentences) and
//! ROUGE-L as rouge-score's F-measure (English words as its default tokenizer makes them; each
//! Chinese ideograph a token). `trainer/tests/data/metrics_reference.json` holds both packages'
//! numbers on Chinese and English pairs (made by `trainer/bench/metrics_reference.py`), which the
//! tests match.

use regex::Regex;
use std::collections::HashMap;
use std::sync::LazyLock;

/// How BLEU splits text into tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BleuTokenizer {
    /// sacrebleu's `13a` (mteval-v13a), for English and other space-separated languages.
    Intl13a,
    /// sacrebleu's `zh`: every Chinese character a token, the rest as `13a`.
    Zh,
}

impl BleuTokenizer {
    /// `zh` when the text holds a CJK ideograph, else `13a`.
    pub fn for_text(text: &str) -> BleuTokenizer {
        if text.chars().any(is_ideograph) {
            BleuTokenizer::Zh
        } else {
            BleuTokenizer::Intl13a
        }
    }
}

/// The regular-expression part shared by `13a` and `zh` (sacrebleu's `TokenizerRegexp`).
static RULES: LazyLock<[(Regex, &'static str); 4]> = LazyLock::new(|| {
    let re = |p: &str| Regex::new(p).unwrap_or_else(|e| panic!("a fixed pattern: {e}"));
    [
        // Punctuation and symbols of Western text, spaced out.
        (re(r"([\{-~\[-` -&\(-\+:-@/])"), " $1 "),
        // Period and comma, unless preceded by a digit...
        (re(r"([^0-9])([\.,])"), "$1 $2 "),
        // ...or followed by one.
        (re(r"([\.,])([^0-9])"), " $1 $2"),
        // A dash after a digit.
        (re(r"([0-9])(-)"), "$1 $2 "),
    ]
});

fn regexp_tokenize(line: &str) -> String {
    let mut s = line.to_string();
    for (re, with) in RULES.iter() {
        s = re.replace_all(&s, *with).into_owned();
    }
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// sacrebleu's `13a` tokenizer.
pub fn tokenize_13a(line: &str) -> String {
    let mut s = line
        .replace("<skipped>", "")
        .replace("-\n", "")
        .replace('\n', " ");
    if s.contains('&') {
        s = s
            .replace("&quot;", "\"")
            .replace("&amp;", "&")
            .replace("&lt;", "<")
            .replace("&gt;", ">");
    }
    regexp_tokenize(&format!(" {s} "))
}

/// Characters sacrebleu's `zh` tokenizer splits out. Its table compares strings, and two of its
/// "ranges" are written with five hex digits (`\u20000`–`\u2a6d6`, `\u2f800`–`\u2fa1d`), which
/// Python reads as a four-digit escape and a digit: they cover U+2001–U+2A6D and U+2F81–U+2FA1
/// (general punctuation such as — and “ among them). Reproduced as sacrebleu behaves.
fn is_zh_char(c: char) -> bool {
    const RANGES: [(u32, u32); 22] = [
        (0x3400, 0x4db5),
        (0x4e00, 0x9fa5),
        (0x9fa6, 0x9fbb),
        (0xf900, 0xfa2d),
        (0xfa30, 0xfa6a),
        (0xfa70, 0xfad9),
        (0x2001, 0x2a6d),
        (0x2f81, 0x2fa1),
        (0xff00, 0xffef),
        (0x2e80, 0x2eff),
        (0x3000, 0x303f),
        (0x31c0, 0x31ef),
        (0x2f00, 0x2fdf),
        (0x2ff0, 0x2fff),
        (0x3100, 0x312f),
        (0x31a0, 0x31bf),
        (0xfe10, 0xfe1f),
        (0xfe30, 0xfe4f),
        (0x2600, 0x26ff),
        (0x2700, 0x27bf),
        (0x3200, 0x32ff),
        (0x3300, 0x33ff),
    ];
    let u = c as u32;
    RANGES.iter().any(|&(a, b)| (a..=b).contains(&u))
}

/// sacrebleu's `zh` tokenizer.
pub fn tokenize_zh(line: &str) -> String {
    let mut s = String::with_capacity(line.len() * 2);
    for c in line.trim().chars() {
        if is_zh_char(c) {
            s.push(' ');
            s.push(c);
            s.push(' ');
        } else {
            s.push(c);
        }
    }
    regexp_tokenize(&s)
}

/// Counts from which BLEU is computed; they add up over a corpus.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BleuStats {
    /// Matched n-grams, n = 1..=4 (clipped by the reference's counts).
    pub correct: [u64; 4],
    /// Hypothesis n-grams.
    pub total: [u64; 4],
    /// Hypothesis tokens.
    pub sys_len: u64,
    /// Reference tokens.
    pub ref_len: u64,
}

impl std::ops::AddAssign for BleuStats {
    fn add_assign(&mut self, o: BleuStats) {
        for n in 0..4 {
            self.correct[n] += o.correct[n];
            self.total[n] += o.total[n];
        }
        self.sys_len += o.sys_len;
        self.ref_len += o.ref_len;
    }
}

fn ngrams(tokens: &[&str], n: usize) -> HashMap<Vec<String>, u64> {
    let mut out = HashMap::new();
    for w in tokens.windows(n) {
        *out.entry(w.iter().map(|t| t.to_string()).collect())
            .or_insert(0) += 1;
    }
    out
}

/// The counts of one hypothesis against one reference.
pub fn bleu_stats(hypothesis: &str, reference: &str, tok: BleuTokenizer) -> BleuStats {
    let t = |s: &str| match tok {
        BleuTokenizer::Intl13a => tokenize_13a(s.trim_end()),
        BleuTokenizer::Zh => tokenize_zh(s.trim_end()),
    };
    let (h, r) = (t(hypothesis), t(reference));
    let h: Vec<&str> = h.split_whitespace().collect();
    let r: Vec<&str> = r.split_whitespace().collect();
    let mut st = BleuStats {
        sys_len: h.len() as u64,
        ref_len: r.len() as u64,
        ..Default::default()
    };
    for n in 1..=4 {
        let hc = ngrams(&h, n);
        let rc = ngrams(&r, n);
        st.total[n - 1] = h.len().saturating_sub(n - 1) as u64;
        st.correct[n - 1] = hc
            .iter()
            .map(|(g, &c)| c.min(rc.get(g).copied().unwrap_or(0)))
            .sum();
    }
    st
}

/// BLEU (0–100) from counts: sacrebleu's `compute_bleu` with exponential smoothing;
/// `effective_order` leaves out orders the hypothesis is too short for (sentence BLEU).
pub fn bleu_score(st: &BleuStats, effective_order: bool) -> f64 {
    let bp = if st.sys_len < st.ref_len {
        if st.sys_len > 0 {
            (1.0 - st.ref_len as f64 / st.sys_len as f64).exp()
        } else {
            0.0
        }
    } else {
        1.0
    };
    if st.correct.iter().all(|&c| c == 0) {
        return 0.0;
    }
    let mut precisions = [0f64; 4];
    let mut smooth = 1.0;
    let mut order = 4;
    for (n, p) in precisions.iter_mut().enumerate() {
        let (correct, total) = (st.correct[n], st.total[n]);
        if total == 0 {
            break;
        }
        if effective_order {
            order = n + 1;
        }
        *p = if correct == 0 {
            smooth *= 2.0;
            100.0 / (smooth * total as f64)
        } else {
            100.0 * correct as f64 / total as f64
        };
    }
    let log = |p: f64| if p == 0.0 { -9_999_999_999.0 } else { p.ln() };
    bp * (precisions[..order].iter().map(|&p| log(p)).sum::<f64>() / order as f64).exp()
}

/// Corpus BLEU (sacrebleu's `corpus_bleu`, one reference per hypothesis).
pub fn corpus_bleu(pairs: &[(&str, &str)], tok: BleuTokenizer) -> f64 {
    let mut st = BleuStats::default();
    for (h, r) in pairs {
        st += bleu_stats(h, r, tok);
    }
    bleu_score(&st, false)
}

/// Sentence BLEU (sacrebleu's `sentence_bleu`: effective order).
pub fn sentence_bleu(hypothesis: &str, reference: &str, tok: BleuTokenizer) -> f64 {
    bleu_score(&bleu_stats(hypothesis, reference, tok), true)
}

fn is_ideograph(c: char) -> bool {
    matches!(c as u32, 0x3400..=0x4dbf | 0x4e00..=0x9fff | 0xf900..=0xfaff)
}

/// ROUGE tokens: lowercased runs of `[a-z0-9]` (rouge-score's default tokenizer) and every CJK
/// ideograph alone.
pub fn rouge_tokens(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    for c in text.to_lowercase().chars() {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            word.push(c);
            continue;
        }
        if !word.is_empty() {
            out.push(std::mem::take(&mut word));
        }
        if is_ideograph(c) {
            out.push(c.to_string());
        }
    }
    if !word.is_empty() {
        out.push(word);
    }
    out
}

/// ROUGE-L F-measure of a prediction against a reference (rouge-score's `rougeL`).
pub fn rouge_l(prediction: &str, reference: &str) -> f64 {
    let (p, r) = (rouge_tokens(prediction), rouge_tokens(reference));
    if p.is_empty() || r.is_empty() {
        return 0.0;
    }
    // Longest common subsequence, one row at a time.
    let mut prev = vec![0usize; p.len() + 1];
    for rt in &r {
        let mut row = vec![0usize; p.len() + 1];
        for (j, pt) in p.iter().enumerate() {
            row[j + 1] = if rt == pt {
                prev[j] + 1
            } else {
                row[j].max(prev[j + 1])
            };
        }
        prev = row;
    }
    let lcs = prev[p.len()] as f64;
    let (precision, recall) = (lcs / p.len() as f64, lcs / r.len() as f64);
    if precision + recall > 0.0 {
        2.0 * precision * recall / (precision + recall)
    } else {
        0.0
    }
}

/// SQuAD's answer normalization, extended to Chinese: lowercase, punctuation dropped, English
/// articles dropped; tokens are words (runs of letters and digits) and single CJK ideographs.
pub fn answer_tokens(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut Vec<String>| {
        if !word.is_empty() && !matches!(word.as_str(), "a" | "an" | "the") {
            out.push(word.clone());
        }
        word.clear();
    };
    for c in text.to_lowercase().chars() {
        if is_ideograph(c) {
            flush(&mut word, &mut out);
            out.push(c.to_string());
        } else if c.is_alphanumeric() {
            word.push(c);
        } else if c.is_whitespace() {
            flush(&mut word, &mut out);
        }
        // Punctuation is removed without splitting, as SQuAD does ("don't" → "dont").
    }
    flush(&mut word, &mut out);
    out
}

/// Exact match after [`answer_tokens`] normalization (1.0 or 0.0).
pub fn exact_match(prediction: &str, reference: &str) -> f64 {
    f64::from(u8::from(
        answer_tokens(prediction) == answer_tokens(reference),
    ))
}

/// SQuAD's token F1: the overlap of the two bags of [`answer_tokens`] (Chinese by character).
pub fn token_f1(prediction: &str, reference: &str) -> f64 {
    let (p, r) = (answer_tokens(prediction), answer_tokens(reference));
    if p.is_empty() || r.is_empty() {
        return f64::from(u8::from(p == r));
    }
    let mut counts: HashMap<&str, i64> = HashMap::new();
    for t in &r {
        *counts.entry(t.as_str()).or_insert(0) += 1;
    }
    let mut common = 0i64;
    for t in &p {
        if let Some(c) = counts.get_mut(t.as_str()) {
            if *c > 0 {
                *c -= 1;
                common += 1;
            }
        }
    }
    if common == 0 {
        return 0.0;
    }
    let precision = common as f64 / p.len() as f64;
    let recall = common as f64 / r.len() as f64;
    2.0 * precision * recall / (precision + recall)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tokenizers_split_as_sacrebleu_does() {
        assert_eq!(
            tokenize_13a("Take 3.5 mg, i.e. 7 mg in 2020-2021."),
            "Take 3.5 mg , i . e . 7 mg in 2020 - 2021 ."
        );
        assert_eq!(tokenize_13a("Tom &amp; Jerry"), "Tom & Jerry");
        assert_eq!(tokenize_zh("使用Python开发。"), "使 用 Python 开 发 。");
        assert_eq!(
            rouge_tokens("Use Python 3 与 Rust!"),
            ["use", "python", "3", "与", "rust"]
        );
    }
}
