//! `quality`: heuristic quality filters with thresholds in `rules/quality.toml` (compiled in as
//! the default; a pipeline may name its own file, or override single keys in `thresholds`).
//!
//! Checks, each naming its drop code: per-turn and per-sample length (`turn_too_short`,
//! `turn_too_long`, `too_short`, `too_long`), empty or whitespace answers (`empty_answer`),
//! control characters (`control_chars`), mojibake (`mojibake`), symbol ratio (`symbols`), and
//! Gopher-style repetition: duplicate lines (`dup_lines`, `dup_line_chars`), the most frequent
//! 2–4-gram (`top_ngram`) and characters in duplicated 5–10-grams (`dup_ngrams`). Tokens are CJK
//! characters and runs of letters and digits, so Chinese and English are measured alike.

use super::{DropReason, RecordStage, SplitMix64, StageCx, Verdict};
use crate::normalize::is_cjk;
use crate::sample::{Role, Sample};
use serde::Deserialize;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// The bundled thresholds.
pub const BUILTIN_RULES: &str = include_str!("../../../rules/quality.toml");

/// Thresholds; every one optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    /// Fewest characters of a turn.
    pub min_turn_chars: Option<usize>,
    /// Most characters of a turn.
    pub max_turn_chars: Option<usize>,
    /// Fewest characters of a sample.
    pub min_sample_chars: Option<usize>,
    /// Most characters of a sample.
    pub max_sample_chars: Option<usize>,
    /// Most control characters.
    pub max_control_chars: Option<usize>,
    /// Most mojibake characters per character.
    pub max_mojibake_ratio: Option<f64>,
    /// Most symbol characters per non-space character.
    pub max_symbol_ratio: Option<f64>,
    /// Repetition checks apply from this many tokens.
    pub min_tokens_for_repetition: Option<usize>,
    /// Most duplicate lines per line.
    pub max_dup_line_ratio: Option<f64>,
    /// Most characters in duplicate lines per character.
    pub max_dup_line_char_ratio: Option<f64>,
    /// For n = 2, 3, 4: the most frequent n-gram's most share of n-gram characters.
    pub max_top_ngram_ratio: Option<Vec<f64>>,
    /// For n = 5 … 10: most share of characters in duplicated n-grams.
    pub max_dup_ngram_ratio: Option<Vec<f64>>,
}

impl Thresholds {
    fn overlay(mut self, o: &Thresholds) -> Thresholds {
        macro_rules! take {
            ($($f:ident),*) => { $( if o.$f.is_some() { self.$f = o.$f.clone(); } )* };
        }
        take!(
            min_turn_chars,
            max_turn_chars,
            min_sample_chars,
            max_sample_chars,
            max_control_chars,
            max_mojibake_ratio,
            max_symbol_ratio,
            min_tokens_for_repetition,
            max_dup_line_ratio,
            max_dup_line_char_ratio,
            max_top_ngram_ratio,
            max_dup_ngram_ratio
        );
        self
    }
}

/// Config of `type = "quality"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// A thresholds file like `rules/quality.toml` (relative to the pipeline file); bundled if
    /// absent.
    #[serde(default)]
    pub rules: Option<PathBuf>,
    /// Single thresholds overriding the file's (`thresholds = { max_turn_chars = 4000 }`).
    #[serde(default)]
    pub thresholds: Thresholds,
    /// Set by a confined compile: the folders its files must lie in when they are opened.
    #[serde(skip)]
    pub confined_to: Option<std::sync::Arc<[std::path::PathBuf]>>,
}

impl Config {
    pub(crate) fn validate(&self) -> Vec<String> {
        let mut out = Vec::new();
        let o = &self.thresholds;
        for (name, v) in [
            ("max_mojibake_ratio", o.max_mojibake_ratio),
            ("max_symbol_ratio", o.max_symbol_ratio),
            ("max_dup_line_ratio", o.max_dup_line_ratio),
            ("max_dup_line_char_ratio", o.max_dup_line_char_ratio),
        ] {
            if v.is_some_and(|v| !(0.0..=1.0).contains(&v)) {
                out.push(format!("{name} must be within [0, 1]"));
            }
        }
        out
    }

    pub(crate) fn resolve_paths(&mut self, base: &Path) {
        if let Some(p) = &mut self.rules {
            *p = crate::confine::resolve(base, p);
        }
    }
}

/// The built stage.
pub struct Quality {
    t: Thresholds,
}

/// Tokens of a text: CJK characters and runs of letters/digits, each as a 64-bit key (the
/// character itself, or the run's xxh3, mixed) and its length in characters.
fn tokens(text: &str, out: &mut Vec<(u64, u32)>) {
    out.clear();
    let mut start: Option<(usize, u32)> = None;
    let word = |w: &str, n: u32| {
        (
            SplitMix64::mix(xxhash_rust::xxh3::xxh3_64(w.as_bytes()) | 1 << 63),
            n,
        )
    };
    for (i, c) in text.char_indices() {
        if is_cjk(c) && c.is_alphanumeric() {
            if let Some((s, n)) = start.take() {
                out.push(word(&text[s..i], n));
            }
            out.push((SplitMix64::mix(u64::from(c)), 1));
        } else if c.is_alphanumeric() {
            start.get_or_insert((i, 0)).1 += 1;
        } else if let Some((s, n)) = start.take() {
            out.push(word(&text[s..i], n));
        }
    }
    if let Some((s, n)) = start {
        out.push(word(&text[s..], n));
    }
}

fn is_punct(c: char) -> bool {
    c.is_ascii_punctuation()
        || matches!(c as u32, 0x2000..=0x206F | 0x3000..=0x303F | 0xFE30..=0xFE4F | 0xFF01..=0xFF0F | 0xFF1A..=0xFF20 | 0xFF3B..=0xFF40 | 0xFF5B..=0xFF65)
        || "·–—‘’“”…、。《》「」『』【】〔〕".contains(c)
}

fn is_control(c: char) -> bool {
    c.is_control() && !matches!(c, '\n' | '\r' | '\t')
}

/// Character counts of a text, in one pass.
#[derive(Default)]
struct CharCounts {
    chars: usize,
    controls: usize,
    visible: usize,
    symbols: usize,
    mojibake: usize,
}

fn char_counts(text: &str) -> CharCounts {
    let mut n = CharCounts::default();
    let mut prev = '\0';
    for c in text.chars() {
        n.chars += 1;
        if is_control(c) {
            n.controls += 1;
        }
        if c.is_alphanumeric() {
            n.visible += 1;
        } else if !c.is_whitespace() {
            n.visible += 1;
            if !is_punct(c) {
                n.symbols += 1;
            }
        }
        if c == '\u{FFFD}' {
            n.mojibake += 1;
        }
        // UTF-8 read as Latin-1: Ã©, â€…
        if matches!(prev, 'Ã' | 'Â' | 'â') && ('\u{80}'..='\u{BF}').contains(&c) {
            n.mojibake += 2;
        }
        prev = c;
    }
    for pat in ["锟斤拷", "烫烫烫", "屯屯屯"] {
        n.mojibake += text.matches(pat).count() * 3;
    }
    n
}

/// Repetition statistics of one token sequence, level by level: level `n` groups the
/// positions whose n-grams are equal. A position can only repeat an (n+1)-gram if it repeats
/// the n-gram, so each level works only on the positions of the previous level's repeated
/// groups, and clean text is done after two or three levels: linear in the text, with no
/// n-gram built as a string.
struct NgramLevels<'t> {
    toks: &'t [(u64, u32)],
    total_chars: usize,
    /// The n-gram key of each position at the last level computed.
    keys: Vec<u64>,
    /// Positions in repeated groups at the last level, ascending.
    active: Vec<u32>,
    /// The last level computed.
    n: usize,
    /// Per level n (index n): (most frequent repeated n-gram's characters × count, characters
    /// in repeated occurrences).
    stats: Vec<(usize, usize)>,
    scratch: Vec<(u64, u32)>,
    covered: Vec<bool>,
}

impl<'t> NgramLevels<'t> {
    fn new(toks: &'t [(u64, u32)]) -> Self {
        NgramLevels {
            toks,
            total_chars: toks.iter().map(|t| t.1 as usize).sum(),
            keys: toks.iter().map(|t| t.0).collect(),
            active: (0..toks.len() as u32).collect(),
            n: 1,
            stats: vec![(0, 0); 2],
            scratch: Vec::new(),
            covered: Vec::new(),
        }
    }

    /// Compute the next level from the current one.
    fn step(&mut self) {
        let n = self.n + 1;
        let t = self.toks.len();
        self.scratch.clear();
        for &p in &self.active {
            let i = p as usize;
            if i + n <= t {
                let k = SplitMix64::mix(self.keys[i].rotate_left(23) ^ self.toks[i + n - 1].0);
                self.keys[i] = k;
                self.scratch.push((k, p));
            }
        }
        // Equal keys together, each group in position order.
        self.scratch.sort_unstable();
        self.covered.clear();
        self.covered.resize(t, false);
        let (mut top, mut any_dup) = (0usize, false);
        self.active.clear();
        let mut g = 0;
        while g < self.scratch.len() {
            let key = self.scratch[g].0;
            let mut e = g + 1;
            while e < self.scratch.len() && self.scratch[e].0 == key {
                e += 1;
            }
            if e - g > 1 {
                let first = self.scratch[g].1 as usize;
                let chars: usize = self.toks[first..first + n]
                    .iter()
                    .map(|t| t.1 as usize)
                    .sum();
                top = top.max((e - g) * chars);
                for &(_, p) in &self.scratch[g + 1..e] {
                    let p = p as usize;
                    self.covered[p..p + n].fill(true);
                    any_dup = true;
                }
                self.active.extend(self.scratch[g..e].iter().map(|x| x.1));
            }
            g = e;
        }
        self.active.sort_unstable();
        let dup = if any_dup {
            self.toks
                .iter()
                .zip(&self.covered)
                .filter(|(_, &c)| c)
                .map(|(t, _)| t.1 as usize)
                .sum()
        } else {
            0
        };
        self.stats.push((top, dup));
        self.n = n;
    }

    fn level(&mut self, n: usize) -> (usize, usize) {
        while self.n < n {
            if self.active.is_empty() {
                // Nothing repeats at this length, so nothing longer does.
                self.stats.push((0, 0));
                self.n += 1;
            } else {
                self.step();
            }
        }
        self.stats[n]
    }

    /// The most frequent n-gram's share of n-gram characters.
    fn top_ratio(&mut self, n: usize) -> f64 {
        let (top, _) = self.level(n);
        top as f64 / self.total_chars.max(1) as f64
    }

    /// Share of characters covered by repeated occurrences of n-grams.
    fn dup_ratio(&mut self, n: usize) -> f64 {
        let (_, dup) = self.level(n);
        dup as f64 / self.total_chars.max(1) as f64
    }
}

impl Quality {
    /// Build from config.
    pub fn new(cfg: &Config) -> Result<Quality, crate::error::StageError> {
        let base: Thresholds = super::load_toml(
            cfg.rules.as_deref(),
            BUILTIN_RULES,
            "quality rules",
            cfg.confined_to.as_deref(),
        )?;
        Ok(Quality {
            t: base.overlay(&cfg.thresholds),
        })
    }

    /// The first failed check, if any.
    pub fn check(&self, s: &Sample) -> Option<DropReason> {
        let t = &self.t;
        let fail = |code, detail: String| Some(DropReason::new(code, detail));
        for (i, turn) in s.turns.iter().enumerate() {
            let n = turn.content.trim().chars().count();
            if n == 0 && turn.role == Role::Assistant {
                return fail("empty_answer", format!("turn {i} is empty or whitespace"));
            }
            if let Some(min) = t.min_turn_chars.filter(|&m| n < m) {
                return fail("turn_too_short", format!("turn {i}: {n} chars < {min}"));
            }
            if let Some(max) = t.max_turn_chars.filter(|&m| n > m) {
                return fail("turn_too_long", format!("turn {i}: {n} chars > {max}"));
            }
        }
        let mut text = String::new();
        for (_, part) in s.content_parts() {
            text.push_str(part);
            text.push('\n');
        }
        let counts = char_counts(&text);
        let chars = counts.chars.saturating_sub(1);
        if let Some(min) = t.min_sample_chars.filter(|&m| chars < m) {
            return fail("too_short", format!("{chars} chars < {min}"));
        }
        if let Some(max) = t.max_sample_chars.filter(|&m| chars > m) {
            return fail("too_long", format!("{chars} chars > {max}"));
        }
        let controls = counts.controls;
        if let Some(max) = t.max_control_chars.filter(|&m| controls > m) {
            return fail(
                "control_chars",
                format!("{controls} control characters > {max}"),
            );
        }
        let ratio = |a: usize, b: usize| a as f64 / b.max(1) as f64;
        let moji = ratio(counts.mojibake, chars);
        if let Some(max) = t.max_mojibake_ratio.filter(|&m| moji > m) {
            return fail("mojibake", format!("mojibake ratio {moji:.3} > {max}"));
        }
        let sym = ratio(counts.symbols, counts.visible);
        if let Some(max) = t.max_symbol_ratio.filter(|&m| sym > m) {
            return fail("symbols", format!("symbol ratio {sym:.3} > {max}"));
        }
        // Repetition is judged per document, or per user / assistant turn of a dialogue: a
        // dialogue restating names across turns is normal, a turn stuck in a loop is not.
        if let Some(doc) = &s.text {
            if let Some(r) = self.repetition(doc) {
                return Some(r);
            }
        }
        for (i, turn) in s.turns.iter().enumerate() {
            if !matches!(turn.role, Role::User | Role::Assistant) {
                continue;
            }
            if let Some(mut r) = self.repetition(&turn.content) {
                r.detail = r.detail.map(|d| format!("turn {i}: {d}"));
                return Some(r);
            }
        }
        None
    }

    fn repetition(&self, text: &str) -> Option<DropReason> {
        let t = &self.t;
        let fail = |code, detail: String| Some(DropReason::new(code, detail));
        let ratio = |a: usize, b: usize| a as f64 / b.max(1) as f64;
        let mut toks = Vec::new();
        tokens(text, &mut toks);
        if toks.len() < t.min_tokens_for_repetition.unwrap_or(0) {
            return None;
        }
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        let mut seen = HashSet::new();
        let (mut dup, mut dup_chars, mut line_chars) = (0, 0, 0);
        for l in &lines {
            let n = l.chars().count();
            line_chars += n;
            if !seen.insert(*l) {
                dup += 1;
                dup_chars += n;
            }
        }
        let r = ratio(dup, lines.len());
        if let Some(max) = t.max_dup_line_ratio.filter(|&m| r > m) {
            return fail("dup_lines", format!("duplicate line ratio {r:.3} > {max}"));
        }
        let r = ratio(dup_chars, line_chars);
        if let Some(max) = t.max_dup_line_char_ratio.filter(|&m| r > m) {
            return fail(
                "dup_line_chars",
                format!("duplicate line chars {r:.3} > {max}"),
            );
        }
        let mut levels = NgramLevels::new(&toks);
        for (k, &max) in t.max_top_ngram_ratio.iter().flatten().enumerate() {
            let r = levels.top_ratio(k + 2);
            if r > max {
                return fail(
                    "top_ngram",
                    format!("top {}-gram ratio {r:.3} > {max}", k + 2),
                );
            }
        }
        for (k, &max) in t.max_dup_ngram_ratio.iter().flatten().enumerate() {
            let r = levels.dup_ratio(k + 5);
            if r > max {
                return fail(
                    "dup_ngrams",
                    format!("dup {}-gram chars {r:.3} > {max}", k + 5),
                );
            }
        }
        None
    }
}

impl RecordStage for Quality {
    fn process(&self, s: Sample, _cx: &mut StageCx) -> Verdict {
        match self.check(&s) {
            Some(r) => Verdict::Drop(s, r),
            None => Verdict::Keep(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::Turn;

    fn q() -> Quality {
        Quality::new(&toml::from_str("").expect("empty config")).expect("builtin")
    }

    fn code(s: &Sample) -> Option<&'static str> {
        q().check(s).map(|r| r.code)
    }

    fn qa(question: &str, answer: &str) -> Sample {
        Sample::dialogue(
            "d",
            vec![
                Turn::new(Role::User, question),
                Turn::new(Role::Assistant, answer),
            ],
        )
    }

    #[test]
    fn clean_text_passes_in_both_languages() {
        assert_eq!(
            code(&qa(
                "信用卡逾期了怎么办？",
                "请尽快还款，并联系银行协商分期。"
            )),
            None
        );
        let essay = "The central bank raised its policy rate by a quarter point on Tuesday, \
            citing persistent inflation in services and a tight labour market, while signalling \
            that further increases would depend on incoming data about wages and prices.";
        assert_eq!(code(&Sample::document("e", essay)), None);
    }

    #[test]
    fn each_check_catches_its_defect() {
        assert_eq!(code(&qa("你好", "   ")), Some("empty_answer"));
        assert_eq!(
            code(&qa("你好\u{0007}吗", "好的，谢谢")),
            Some("control_chars")
        );
        assert_eq!(code(&qa("锟斤拷锟斤拷", "烫烫烫烫烫烫")), Some("mojibake"));
        assert_eq!(code(&qa("★★★★★★", "■■■■■■好")), Some("symbols"));
        let spam = "点击领取大奖，限时优惠\n".repeat(30);
        assert_eq!(code(&Sample::document("s", spam)), Some("dup_lines"));
        let loop_ = "我们的产品非常好，".repeat(30);
        assert!(matches!(
            code(&qa("介绍一下", &loop_)),
            Some("top_ngram" | "dup_ngrams")
        ));
    }

    /// The n-gram statistics as first written (a map of token slices per n), kept as the
    /// reference the level-wise version must agree with.
    fn reference(text: &str, n: usize) -> (f64, f64) {
        use std::collections::HashMap;
        let toks: Vec<&str> = {
            let mut out = Vec::new();
            let mut start: Option<usize> = None;
            for (i, c) in text.char_indices() {
                if is_cjk(c) && c.is_alphanumeric() {
                    if let Some(s) = start.take() {
                        out.push(&text[s..i]);
                    }
                    out.push(&text[i..i + c.len_utf8()]);
                } else if c.is_alphanumeric() {
                    start.get_or_insert(i);
                } else if let Some(s) = start.take() {
                    out.push(&text[s..i]);
                }
            }
            if let Some(s) = start {
                out.push(&text[s..]);
            }
            out
        };
        if toks.len() < n {
            return (0.0, 0.0);
        }
        let total: usize = toks.iter().map(|t| t.chars().count()).sum();
        let mut counts: HashMap<&[&str], usize> = HashMap::new();
        for g in toks.windows(n) {
            *counts.entry(g).or_default() += 1;
        }
        let top = counts
            .iter()
            .filter(|(_, &c)| c > 1)
            .map(|(g, &c)| c * g.iter().map(|t| t.chars().count()).sum::<usize>())
            .max()
            .unwrap_or(0);
        let mut seen = HashSet::new();
        let mut covered = vec![false; toks.len()];
        for (i, g) in toks.windows(n).enumerate() {
            if !seen.insert(g) {
                covered[i..i + n].fill(true);
            }
        }
        let dup: usize = toks
            .iter()
            .zip(&covered)
            .filter(|(_, &c)| c)
            .map(|(t, _)| t.chars().count())
            .sum();
        (
            top as f64 / total.max(1) as f64,
            dup as f64 / total.max(1) as f64,
        )
    }

    #[test]
    fn levelwise_ngram_statistics_equal_the_reference() {
        let mut seed = 0x1234_5678_u64;
        let mut next = || {
            seed = SplitMix64::mix(seed.wrapping_add(0x9E37_79B9_7F4A_7C15));
            seed
        };
        let words = [
            "我", "们", "的", "产品", "好", "abc", "Ab", "12", "很", "价格",
        ];
        let seps = ["", "", " ", "，", "。", "\n"];
        for case in 0..400 {
            // From varied text to heavy repetition: a small vocabulary and copied stretches.
            let vocab = 2 + (case % 9);
            let mut parts: Vec<String> = Vec::new();
            for _ in 0..(next() % 300) {
                if next() % 7 == 0 && parts.len() > 10 {
                    let from = (next() % parts.len() as u64) as usize;
                    let len = ((next() % 12) as usize).min(parts.len() - from);
                    let copy: Vec<String> = parts[from..from + len].to_vec();
                    parts.extend(copy);
                } else {
                    parts.push(format!(
                        "{}{}",
                        words[(next() % vocab as u64) as usize],
                        seps[(next() % seps.len() as u64) as usize]
                    ));
                }
            }
            let text = parts.concat();
            let mut toks = Vec::new();
            tokens(&text, &mut toks);
            let mut levels = NgramLevels::new(&toks);
            for n in 2..=12 {
                let (top, dup) = reference(&text, n);
                assert_eq!(
                    levels.top_ratio(n),
                    top,
                    "case {case}, top {n}-gram: {text}"
                );
                assert_eq!(
                    levels.dup_ratio(n),
                    dup,
                    "case {case}, dup {n}-gram: {text}"
                );
            }
        }
    }

    #[test]
    fn inline_overrides_win_over_the_file() {
        let cfg: Config = toml::from_str("thresholds = { max_turn_chars = 5 }").expect("parses");
        let q = Quality::new(&cfg).expect("builds");
        assert_eq!(
            q.check(&qa("你好", "这是一个很长的回答")).map(|r| r.code),
            Some("turn_too_long")
        );
        assert!(toml::from_str::<Config>("thresholds = { max_turn_char = 5 }").is_err());
    }
}
