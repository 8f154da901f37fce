//! `quality`: heuristic quality filters with thresholds in `rules/quality.toml` (compiled in as
//! the default; a pipeline may name its own file, or override single keys in `thresholds`).
//!
//! Checks, each naming its drop code: per-turn and per-sample length (`turn_too_short`,
//! `turn_too_long`, `too_short`, `too_long`), empty or whitespace answers (`empty_answer`),
//! control characters (`control_chars`), mojibake (`mojibake`), symbol ratio (`symbols`), and
//! Gopher-style repetition: duplicate lines (`dup_lines`, `dup_line_chars`), the most frequent
//! 2–4-gram (`top_ngram`) and characters in duplicated 5–10-grams (`dup_ngrams`). Tokens are CJK
//! characters and runs of letters and digits, so Chinese and English are measured alike.

use super::{DropReason, RecordStage, StageCx, Verdict};
use crate::normalize::is_cjk;
use crate::sample::{Role, Sample};
use serde::Deserialize;
use std::collections::{HashMap, HashSet};
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

/// Tokens of a text: CJK characters and runs of letters/digits (lower-cased).
fn tokens(text: &str) -> Vec<&str> {
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
}

fn is_punct(c: char) -> bool {
    c.is_ascii_punctuation()
        || matches!(c as u32, 0x2000..=0x206F | 0x3000..=0x303F | 0xFE30..=0xFE4F | 0xFF01..=0xFF0F | 0xFF1A..=0xFF20 | 0xFF3B..=0xFF40 | 0xFF5B..=0xFF65)
        || "·–—‘’“”…、。《》「」『』【】〔〕".contains(c)
}

fn is_control(c: char) -> bool {
    c.is_control() && !matches!(c, '\n' | '\r' | '\t')
}

fn mojibake_chars(text: &str) -> usize {
    let mut n = text.chars().filter(|&c| c == '\u{FFFD}').count();
    for pat in ["锟斤拷", "烫烫烫", "屯屯屯"] {
        n += text.matches(pat).count() * 3;
    }
    let chars: Vec<char> = text.chars().collect();
    n + chars
        .windows(2)
        .filter(|w| matches!(w[0], 'Ã' | 'Â' | 'â') && ('\u{80}'..='\u{BF}').contains(&w[1]))
        .count()
        * 2
}

/// The most frequent n-gram's share of n-gram characters.
fn top_ngram_ratio(toks: &[&str], n: usize) -> f64 {
    if toks.len() < n {
        return 0.0;
    }
    let mut counts: HashMap<&[&str], usize> = HashMap::new();
    for g in toks.windows(n) {
        *counts.entry(g).or_default() += 1;
    }
    let total: usize = toks.iter().map(|t| t.chars().count()).sum();
    counts
        .iter()
        .filter(|(_, &c)| c > 1)
        .map(|(g, &c)| c * g.iter().map(|t| t.chars().count()).sum::<usize>())
        .max()
        .map_or(0.0, |m| m as f64 / total.max(1) as f64)
}

/// Share of characters covered by repeated occurrences of n-grams.
fn dup_ngram_ratio(toks: &[&str], n: usize) -> f64 {
    if toks.len() < n {
        return 0.0;
    }
    let mut seen: HashSet<&[&str]> = HashSet::new();
    let mut covered = vec![false; toks.len()];
    for (i, g) in toks.windows(n).enumerate() {
        if !seen.insert(g) {
            for c in &mut covered[i..i + n] {
                *c = true;
            }
        }
    }
    let total: usize = toks.iter().map(|t| t.chars().count()).sum();
    let dup: usize = toks
        .iter()
        .zip(&covered)
        .filter(|(_, &c)| c)
        .map(|(t, _)| t.chars().count())
        .sum();
    dup as f64 / total.max(1) as f64
}

impl Quality {
    /// Build from config.
    pub fn new(cfg: &Config) -> Result<Quality, crate::error::StageError> {
        let base: Thresholds =
            super::load_toml(cfg.rules.as_deref(), BUILTIN_RULES, "quality rules")?;
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
        let chars = text.chars().count().saturating_sub(1);
        if let Some(min) = t.min_sample_chars.filter(|&m| chars < m) {
            return fail("too_short", format!("{chars} chars < {min}"));
        }
        if let Some(max) = t.max_sample_chars.filter(|&m| chars > m) {
            return fail("too_long", format!("{chars} chars > {max}"));
        }
        let controls = text.chars().filter(|&c| is_control(c)).count();
        if let Some(max) = t.max_control_chars.filter(|&m| controls > m) {
            return fail(
                "control_chars",
                format!("{controls} control characters > {max}"),
            );
        }
        let ratio = |a: usize, b: usize| a as f64 / b.max(1) as f64;
        let moji = ratio(mojibake_chars(&text), chars);
        if let Some(max) = t.max_mojibake_ratio.filter(|&m| moji > m) {
            return fail("mojibake", format!("mojibake ratio {moji:.3} > {max}"));
        }
        let visible = text.chars().filter(|c| !c.is_whitespace()).count();
        let symbols = text
            .chars()
            .filter(|&c| !c.is_alphanumeric() && !c.is_whitespace() && !is_punct(c))
            .count();
        let sym = ratio(symbols, visible);
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
        let toks = tokens(text);
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
        for (k, &max) in t.max_top_ngram_ratio.iter().flatten().enumerate() {
            let r = top_ngram_ratio(&toks, k + 2);
            if r > max {
                return fail(
                    "top_ngram",
                    format!("top {}-gram ratio {r:.3} > {max}", k + 2),
                );
            }
        }
        for (k, &max) in t.max_dup_ngram_ratio.iter().flatten().enumerate() {
            let r = dup_ngram_ratio(&toks, k + 5);
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
