//! `filler`: smooth spoken fillers (嗯嗯, 呃, 额…, 那个，…, um) out of dialogue turns without
//! damaging words.
//!
//! Text is segmented with jieba (POS-tagged); only whole tokens are candidates, so 金额, 额外,
//! 那个产品 and 啊哈 are never touched. The word lists live in `rules/filler.toml` (compiled in as
//! the default; a pipeline may name its own):
//!
//! - `always` words go wherever they stand alone, repeated or not (嗯嗯 / 呃 / um). A
//!   single-character one that jieba tags as a content word (额/n) goes only at a clause
//!   boundary, where it cannot be the noun.
//! - `initial` words go at the start of a clause when a pause follows (那个，… / 啊，…) or when
//!   repeated there (哦哦哦明白了); repeated elsewhere they are collapsed (好啊啊啊 → 好啊).
//! - any other interjection (POS `e`) at the start of a clause followed by a pause goes
//!   (哎呀，… ), unless listed in `protect`.
//!
//! The pause after a removed clause-initial filler goes with it, doubled punctuation left behind
//! is tidied, and a turn that is nothing but filler is left as it was (counted). Changed samples
//! are tagged `filler_removed` with the number of fillers removed.

use super::{RecordStage, StageCx, Verdict};
use crate::sample::{Role, Sample};
use serde::Deserialize;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// The bundled rules.
pub const BUILTIN_RULES: &str = include_str!("../../../rules/filler.toml");

/// Config of `type = "filler"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// A rules file like `rules/filler.toml` (relative to the pipeline file); the bundled one
    /// when absent.
    #[serde(default)]
    pub rules: Option<PathBuf>,
    /// Roles whose turns are smoothed (default user and assistant).
    #[serde(default = "default_roles")]
    pub roles: Vec<Role>,
    /// Smooth document text too (default false).
    #[serde(default)]
    pub documents: bool,
    /// Set by a confined compile: the folders its files must lie in when they are opened.
    #[serde(skip)]
    pub confined_to: Option<std::sync::Arc<[std::path::PathBuf]>>,
}

fn default_roles() -> Vec<Role> {
    vec![Role::User, Role::Assistant]
}

impl Config {
    pub(crate) fn validate(&self) -> Vec<String> {
        if self.roles.is_empty() && !self.documents {
            return vec!["roles is empty and documents is false: nothing to smooth".into()];
        }
        Vec::new()
    }

    pub(crate) fn resolve_paths(&mut self, base: &Path) {
        if let Some(p) = &mut self.rules {
            *p = crate::confine::resolve(base, p);
        }
    }
}

/// The rules file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    /// Removed wherever they stand alone.
    pub always: Vec<String>,
    /// Removed at a clause start before a pause, or when repeated.
    pub initial: Vec<String>,
    /// Never removed; added to the segmenter's dictionary.
    pub protect: Vec<String>,
    /// Interjections removed at a clause start before a pause (any POS-e token is).
    #[serde(default)]
    pub interjections: Vec<String>,
    /// Pause punctuation.
    pub pauses: Vec<String>,
}

/// The built stage.
pub struct Filler {
    cfg: Config,
    jieba: jieba_rs::Jieba,
    always: HashSet<String>,
    protect: HashSet<String>,
    pauses: HashSet<String>,
    /// The single-character pauses other than the space, for tidying.
    pause_chars: HashSet<char>,
    /// Every listed word, longest first, for repetition checks.
    units: Vec<String>,
    /// Finds any listed word or interjection: texts without one skip segmentation.
    trigger: Option<aho_corasick::AhoCorasick>,
    /// What each trigger pattern is.
    pattern_kind: Vec<Kind>,
    /// A pause that is a word (letters, digits, CJK) would make a block's first token a
    /// pause: then every text with a trigger is segmented whole.
    segment_everything: bool,
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Always,
    Initial,
    Interjection,
}

/// A character of a jieba block (its `RE_HAN_DEFAULT`).
fn is_block_char(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(c, '+' | '#' | '&' | '.' | '_' | '%' | '-')
        || matches!(c as u32,
            0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xF900..=0xFAFF | 0x20000..=0x2A6DF
            | 0x2A700..=0x2B73F | 0x2B740..=0x2B81F | 0x2B820..=0x2CEAF | 0x2CEB0..=0x2EBEF
            | 0x2F800..=0x2FA1F)
}

#[derive(PartialEq)]
enum Class {
    Always,
    Initial,
}

/// A listed word a token repeats: its index in `Filler::units`, and how many times.
type Unit = (usize, usize);

fn is_punct_token(w: &str) -> bool {
    w.chars()
        .all(|c| !c.is_alphanumeric() && !c.is_whitespace())
}

impl Filler {
    /// Build from config: read the rules and prepare the segmenter.
    pub fn new(cfg: &Config) -> Result<Filler, crate::error::StageError> {
        let rules: Rules = super::load_toml(
            cfg.rules.as_deref(),
            BUILTIN_RULES,
            "filler rules",
            cfg.confined_to.as_deref(),
        )?;
        Ok(Filler::from_rules(cfg, &rules))
    }

    /// Build from rules already read.
    pub fn from_rules(cfg: &Config, rules: &Rules) -> Filler {
        let mut jieba = jieba_rs::Jieba::new();
        let lower =
            |v: &[String]| -> HashSet<String> { v.iter().map(|w| w.to_lowercase()).collect() };
        for w in rules
            .protect
            .iter()
            .chain(&rules.always)
            .chain(&rules.initial)
        {
            if w.chars().count() > 1 && !w.is_ascii() {
                jieba.add_word(w, Some(100_000), None);
            }
        }
        let mut units: Vec<String> = rules
            .always
            .iter()
            .chain(&rules.initial)
            .map(|w| w.to_lowercase())
            .collect();
        units.sort_by_key(|w| std::cmp::Reverse(w.chars().count()));
        // Each listed word as written and lower-cased (tokens are compared lower-cased).
        let mut words: Vec<String> = Vec::new();
        let mut pattern_kind = Vec::new();
        for (list, kind) in [
            (&rules.always, Kind::Always),
            (&rules.initial, Kind::Initial),
            (&rules.interjections, Kind::Interjection),
        ] {
            for w in list.iter().filter(|w| !w.is_empty()) {
                for form in [w.clone(), w.to_lowercase()] {
                    words.push(form);
                    pattern_kind.push(kind);
                }
            }
        }
        let trigger = aho_corasick::AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .build(&words)
            .ok();
        let segment_everything = rules
            .pauses
            .iter()
            .any(|p| !p.is_empty() && p.chars().all(|c| is_block_char(c) && c.is_alphanumeric()));
        Filler {
            trigger,
            pattern_kind,
            segment_everything,
            cfg: cfg.clone(),
            jieba,
            always: lower(&rules.always),
            protect: lower(&rules.protect),
            pauses: rules.pauses.iter().cloned().collect(),
            pause_chars: rules
                .pauses
                .iter()
                .filter_map(|p| {
                    let mut cs = p.chars();
                    cs.next().filter(|&c| c != ' ' && cs.next().is_none())
                })
                .collect(),
            units,
        }
    }

    fn is_pause(&self, w: &str) -> bool {
        w.trim().is_empty() || self.pauses.contains(w)
    }

    /// The listed word a token repeats (itself included): its index in `units`, and how many
    /// times.
    fn unit_of(&self, w: &str) -> Option<Unit> {
        let lw = w.to_lowercase();
        if self.protect.contains(&lw) {
            return None;
        }
        self.units.iter().enumerate().find_map(|(i, u)| {
            let n = u.len();
            (lw.len().is_multiple_of(n) && lw.as_bytes().chunks(n).all(|c| c == u.as_bytes()))
                .then_some((i, lw.len() / n))
        })
    }

    fn class(&self, unit: usize) -> Class {
        if self.always.contains(&self.units[unit]) {
            Class::Always
        } else {
            Class::Initial
        }
    }

    /// Smooth one text; returns the new text and how many fillers went.
    ///
    /// Only the parts of the text that can hold a filler are segmented. jieba cuts each run of
    /// CJK characters, ASCII letters, digits and `+#&._%-` (a block) on its own, so a block
    /// segmented alone gives the tokens it gives inside the whole text. A block is segmented
    /// when a listed word could be a token there: an `always` word anywhere in it, a listed
    /// word at its start, two listed words back to back (a repetition), or the whole block
    /// being a dictionary word (an interjection standing alone); and when it holds any of
    /// `+#&._%-` (punctuation tokens inside it move clause starts). Every other block is
    /// passed through as one word: none of its tokens could be removed, and after it the
    /// smoothing state is what its tokens would have left.
    pub fn smooth(&self, text: &str) -> (String, usize) {
        let Some(trigger) = &self.trigger else {
            return self.smooth_tagged(text, self.tag_all(text));
        };
        if !trigger.is_match(text) {
            return (text.to_string(), 0);
        }
        if self.segment_everything {
            return self.smooth_tagged(text, self.tag_all(text));
        }
        // Listed-word matches (start, end, is an `always` word); interjections only gate the
        // fast path above.
        let mut hits: Vec<(usize, usize, bool)> = trigger
            .find_overlapping_iter(text)
            .filter_map(|m| match self.pattern_kind[m.pattern().as_usize()] {
                Kind::Interjection => None,
                k => Some((m.start(), m.end(), k == Kind::Always)),
            })
            .collect();
        hits.sort_unstable();
        let mut tags: Vec<(&str, &str)> = Vec::with_capacity(text.len() / 8);
        let mut i = 0;
        let bytes = text.as_bytes();
        while i < text.len() {
            let c = text[i..].chars().next().unwrap_or_default();
            if is_block_char(c) {
                let mut e = i;
                for (j, c) in text[i..].char_indices() {
                    if !is_block_char(c) {
                        break;
                    }
                    e = i + j + c.len_utf8();
                }
                let block = &text[i..e];
                if self.must_segment(block, i, &hits) {
                    tags.extend(
                        self.jieba
                            .tag(block, true)
                            .into_iter()
                            .map(|t| (t.word, t.tag)),
                    );
                } else {
                    tags.push((block, "x"));
                }
                i = e;
            } else {
                // jieba's treatment of what lies between blocks: `\r\n` and each other
                // whitespace character alone, every other character alone.
                let len = if bytes[i] == b'\r' && bytes.get(i + 1) == Some(&b'\n') {
                    2
                } else {
                    c.len_utf8()
                };
                let word = &text[i..i + len];
                let tag = if c.is_alphanumeric() {
                    self.jieba.tag(word, true).first().map_or("x", |t| t.tag)
                } else {
                    "x"
                };
                tags.push((word, tag));
                i += len;
            }
        }
        self.smooth_tagged(text, tags)
    }

    /// Every token of the text, tagged (the whole text segmented).
    fn tag_all<'a>(&'a self, text: &'a str) -> Vec<(&'a str, &'a str)> {
        self.jieba
            .tag(text, true)
            .into_iter()
            .map(|t| (t.word, t.tag))
            .collect()
    }

    /// Whether a block (starting at byte `at`) must be segmented: see [`Filler::smooth`].
    fn must_segment(&self, block: &str, at: usize, hits: &[(usize, usize, bool)]) -> bool {
        if block.contains(['+', '#', '&', '.', '_', '%', '-']) || self.jieba.has_word(block) {
            return true;
        }
        let end = at + block.len();
        let from = hits.partition_point(|h| h.0 < at);
        let inside: Vec<&(usize, usize, bool)> = hits[from..]
            .iter()
            .take_while(|h| h.0 < end)
            .filter(|h| h.1 <= end)
            .collect();
        inside
            .iter()
            .any(|h| h.2 || h.0 == at || inside.iter().any(|g| g.0 == h.1))
    }

    /// The smoothing itself, over the text's tagged tokens in order.
    fn smooth_tagged(&self, text: &str, tags: Vec<(&str, &str)>) -> (String, usize) {
        // Tokens with the listed word each repeats, found once; runs of the same word
        // (嗯 嗯 嗯) are merged into one repeated token.
        let mut toks: Vec<(String, &str, Option<Unit>)> = Vec::with_capacity(tags.len());
        for &(word, tag) in &tags {
            let unit = if is_punct_token(word) || word.trim().is_empty() {
                None
            } else {
                self.unit_of(word)
            };
            match (toks.last_mut(), unit) {
                (Some((w, _, slot)), Some(this)) if slot.is_some_and(|l| l.0 == this.0) => {
                    w.push_str(word);
                    *slot = self.unit_of(w);
                }
                _ => toks.push((word.to_string(), tag, unit)),
            }
        }
        let mut out = String::with_capacity(text.len());
        let mut removed = 0;
        let mut at_start = true;
        let mut skip_pause = false;
        for i in 0..toks.len() {
            let (w, tag, unit) = (&toks[i].0, toks[i].1, toks[i].2);
            if w.trim().is_empty() {
                if !skip_pause {
                    out.push_str(w);
                }
                continue;
            }
            if is_punct_token(w) {
                let pause = self.is_pause(w);
                if skip_pause {
                    // The pause after a removed clause-initial filler goes with it; so does a
                    // sentence end when the filler was the whole sentence (嗯。).
                    if pause {
                        continue;
                    }
                    skip_pause = false;
                    if out.trim_end().is_empty() || ends_with_punct(&out) {
                        at_start = true;
                        continue;
                    }
                }
                out.push_str(w);
                at_start = true;
                continue;
            }
            skip_pause = false;
            let next = toks[i + 1..]
                .iter()
                .find(|(w, _, _)| !w.trim().is_empty() || self.is_pause(w))
                .map(|(w, _, _)| w.as_str());
            let next_is_pause = next.is_none_or(|n| self.is_pause(n) || is_punct_token(n));
            match unit.map(|(u, reps)| (self.class(u), u, reps)) {
                Some((Class::Always, _, _)) => {
                    let content_pos =
                        tag.starts_with('n') || tag.starts_with('v') || tag.starts_with('a');
                    let single = w.chars().count() == 1;
                    if !(single && content_pos) || at_start || next_is_pause {
                        removed += 1;
                        skip_pause = at_start;
                        continue;
                    }
                }
                Some((Class::Initial, unit, reps)) => {
                    if at_start && (next_is_pause || reps > 1) {
                        removed += 1;
                        skip_pause = next_is_pause;
                        continue;
                    }
                    if reps > 1 {
                        removed += 1;
                        out.push_str(&w[..self.units[unit].len().min(w.len())]);
                        at_start = false;
                        continue;
                    }
                }
                _ if tag == "e"
                    && at_start
                    && next.is_some_and(|n| self.is_pause(n))
                    && !self.protect.contains(&w.to_lowercase()) =>
                {
                    removed += 1;
                    skip_pause = true;
                    continue;
                }
                _ => {}
            }
            out.push_str(w);
            at_start = false;
        }
        if removed == 0 {
            return (text.to_string(), 0);
        }
        let tidied = tidy(&out, &self.pause_chars);
        if tidied.trim().is_empty() {
            return (text.to_string(), 0);
        }
        (tidied, removed)
    }
}

fn ends_with_punct(s: &str) -> bool {
    s.trim_end()
        .chars()
        .last()
        .is_some_and(|c| !c.is_alphanumeric())
}

/// Drop a pause directly followed by other punctuation (，。 → 。, ，， → ，) and leading pauses.
fn tidy(s: &str, pauses: &HashSet<char>) -> String {
    let chars: Vec<char> = s.chars().collect();
    let is_pause = |c: char| pauses.contains(&c);
    let mut out = String::with_capacity(s.len());
    for (i, &c) in chars.iter().enumerate() {
        if is_pause(c) {
            let next = chars[i + 1..].iter().find(|c| !c.is_whitespace());
            if out.trim().is_empty() {
                continue;
            }
            let doubled_dash = next.is_some_and(|&n| n == c && "…—".contains(c));
            if !doubled_dash && next.is_some_and(|&n| is_pause(n) || "。！？!?；;".contains(n))
            {
                continue;
            }
        }
        out.push(c);
    }
    out.trim_start().to_string()
}

impl RecordStage for Filler {
    fn process(&self, mut sample: Sample, cx: &mut StageCx) -> Verdict {
        let mut removed = 0;
        for t in &mut sample.turns {
            if !self.cfg.roles.contains(&t.role) {
                continue;
            }
            let (s, n) = self.smooth(&t.content);
            if n > 0 {
                t.content = s;
                removed += n;
            }
        }
        if self.cfg.documents {
            if let Some(text) = &sample.text {
                let (s, n) = self.smooth(text);
                if n > 0 {
                    sample.text = Some(s);
                    removed += n;
                }
            }
        }
        if removed > 0 {
            cx.count("samples_changed", 1);
            cx.count("fillers_removed", removed as u64);
            sample
                .tags
                .insert("filler_removed".into(), removed.to_string());
        }
        Verdict::Keep(sample)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage() -> Filler {
        Filler::new(&Config {
            confined_to: None,
            rules: None,
            roles: default_roles(),
            documents: false,
        })
        .expect("builtin rules load")
    }

    /// Smoothing with the whole text segmented, as first written: the windowed segmentation
    /// must give the same output on every text.
    fn reference(f: &Filler, text: &str) -> (String, usize) {
        if f.trigger.as_ref().is_some_and(|t| !t.is_match(text)) {
            return (text.to_string(), 0);
        }
        f.smooth_tagged(text, f.tag_all(text))
    }

    #[test]
    fn windowed_segmentation_changes_nothing() {
        let f = stage();
        let mut texts: Vec<String> = include_str!("../../../tests/data/filler_golden.tsv")
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .flat_map(|l| l.split('\t').map(str::to_string).collect::<Vec<_>>())
            .collect();
        // Mixtures: golden sentences glued with separators, fillers, repetitions,
        // interjections, English, digits and punctuation inside blocks.
        let pieces = [
            "嗯",
            "嗯嗯",
            "那个",
            "就是",
            "就是说",
            "啊",
            "啊啊",
            "哎呀",
            "哦哦哦",
            "额",
            "金额",
            "额度",
            "um",
            "Um",
            "UH",
            "er",
            "hmm",
            "呃",
            "，",
            "。",
            "…",
            "~",
            " ",
            "\r\n",
            "\n",
            "3.5%",
            "a-b",
            "AI",
            "好的",
            "这个",
            "产品",
            "我想",
            "然后呢",
            "嘛",
            "咦",
            "，，",
            "!",
            "这个这个",
            "那个那个",
            "嗯，",
            "啊，",
            "这款产品真的很好",
            "¥",
            "é",
            "ア",
            "ｂ",
        ];
        let mut seed = 7u64;
        let mut next = |n: usize| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) as usize % n
        };
        for _ in 0..3000 {
            let mut t = String::new();
            for _ in 0..1 + next(14) {
                if next(5) == 0 {
                    t.push_str(&texts[next(texts.len())].clone());
                } else {
                    t.push_str(pieces[next(pieces.len())]);
                }
            }
            texts.push(t);
        }
        for t in &texts {
            assert_eq!(f.smooth(t), reference(&f, t), "{t:?}");
        }
    }

    /// The golden set: precision and recall of changes, and exact outputs.
    #[test]
    fn golden_set_precision_and_recall() {
        let f = stage();
        let golden = include_str!("../../../tests/data/filler_golden.tsv");
        let (mut tp, mut fp, mut fn_, mut wrong) = (0, 0, 0, Vec::new());
        let mut n = 0;
        for line in golden
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let (input, expected) = line.split_once('\t').expect("input<TAB>expected");
            n += 1;
            let (got, _) = f.smooth(input);
            let must_change = input != expected;
            let changed = got != input;
            match (must_change, changed) {
                (true, true) if got == expected => tp += 1,
                (true, true) => {
                    fp += 1;
                    fn_ += 1;
                }
                (true, false) => fn_ += 1,
                (false, true) => fp += 1,
                (false, false) => {}
            }
            if got != expected {
                wrong.push(format!("{input} -> {got} (want {expected})"));
            }
        }
        assert!(n >= 100, "{n} golden sentences");
        let precision = tp as f64 / (tp + fp).max(1) as f64;
        let recall = tp as f64 / (tp + fn_).max(1) as f64;
        eprintln!("filler golden: n={n} precision={precision:.3} recall={recall:.3}");
        for w in &wrong {
            eprintln!("  {w}");
        }
        assert!(precision >= 0.95, "precision {precision:.3}: {wrong:#?}");
        assert!(recall >= 0.9, "recall {recall:.3}: {wrong:#?}");
    }
}
