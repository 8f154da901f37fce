//! `sensitive`: sensitive words from `sensitive_words/` (one file per category), matched with
//! aho-corasick over normalized text so that evasions do not help: NFKC (full-width to
//! half-width), lower case, and zero-width characters, spaces and symbols skipped (`微*信`,
//! `微 信`, `Ｑ Ｑ` all match). Matches are mapped back to the original text. An allow-list
//! (`allow.txt`) of harmless phrases suppresses matches lying inside them. Per category: `drop`
//! the sample (default), `mask` the matched span with `*`, or `tag` it. Samples with matches get
//! the tag `sensitive` listing the categories.

use super::{DropReason, RecordStage, StageCx, Verdict};
use crate::sample::Sample;
use aho_corasick::{AhoCorasick, MatchKind};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use unicode_normalization::UnicodeNormalization;

/// What to do with a category's matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Drop the sample (default).
    #[default]
    Drop,
    /// Replace every matched character with `*`.
    Mask,
    /// Keep the text; only tag the sample.
    Tag,
}

/// Config of `type = "sensitive"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The word-list directory (relative to the pipeline file): `*.txt`, one per category.
    pub dir: PathBuf,
    /// Action per category (file stem); `default_action` for the others.
    #[serde(default)]
    pub actions: BTreeMap<String, Action>,
    /// Action of categories not named in `actions` (default `drop`).
    #[serde(default)]
    pub default_action: Action,
    /// Categories that only tag samples of some domains, e.g. `{ porn = ["medical"] }`: anatomy
    /// words are the subject of medical dialogue, not abuse.
    #[serde(default)]
    pub tag_only_in: BTreeMap<String, Vec<String>>,
    /// The allow-list file name inside `dir` (default `allow.txt`; absent file = none).
    #[serde(default = "default_allow")]
    pub allow: String,
    /// Set by a confined compile: the folders its files must lie in when they are opened.
    #[serde(skip)]
    pub confined_to: Option<std::sync::Arc<[std::path::PathBuf]>>,
}

fn default_allow() -> String {
    "allow.txt".into()
}

impl Config {
    pub(crate) fn validate(&self) -> Vec<String> {
        let plain = std::path::Path::new(&self.allow)
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
        if plain && !self.allow.is_empty() {
            Vec::new()
        } else {
            vec![format!(
                "allow {:?} must be a file name inside `dir`",
                self.allow
            )]
        }
    }

    pub(crate) fn resolve_paths(&mut self, base: &Path) {
        self.dir = crate::confine::resolve(base, &self.dir);
    }
}

/// Text in matching form, with the original byte span of every normalized byte.
pub struct Normalized {
    /// The normalized text.
    pub text: String,
    /// For each byte of `text`: (start, end) of the original character it came from.
    pub origin: Vec<(u32, u32)>,
}

fn is_invisible(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200F}' | '\u{2060}'..='\u{2064}' | '\u{FEFF}' | '\u{00AD}')
}

/// Normalize for matching (see the module doc).
pub fn normalize(text: &str) -> Normalized {
    let mut out = Normalized {
        text: String::with_capacity(text.len()),
        origin: Vec::with_capacity(text.len()),
    };
    let mut buf = [0u8; 4];
    for (i, c) in text.char_indices() {
        if is_invisible(c) {
            continue;
        }
        let span = (i as u32, (i + c.len_utf8()) as u32);
        let mut push = |n: char| {
            for l in n.to_lowercase() {
                if l.is_alphanumeric() {
                    out.text.push_str(l.encode_utf8(&mut buf));
                    out.origin.extend(std::iter::repeat_n(span, l.len_utf8()));
                }
            }
        };
        if c.is_ascii() {
            push(c);
        } else {
            for n in c.nfkc() {
                push(n);
            }
        }
    }
    out
}

/// The built stage.
pub struct Sensitive {
    ac: Option<AhoCorasick>,
    /// Category index of each pattern.
    pattern_cat: Vec<usize>,
    categories: Vec<(String, Action)>,
    tag_only_in: BTreeMap<String, Vec<String>>,
    allow: Option<AhoCorasick>,
    /// Words loaded (after normalization and de-duplication).
    pub words: usize,
}

fn read_words(
    path: &Path,
    roots: Option<&[PathBuf]>,
) -> Result<Vec<String>, crate::error::StageError> {
    let text = crate::confine::read_to_string_within(path, roots)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(text
        .lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .map(|l| normalize(l.trim()).text)
        .filter(|w| !w.is_empty())
        .collect())
}

impl Sensitive {
    /// Build from config: read every category file and the allow-list.
    pub fn new(cfg: &Config) -> Result<Sensitive, crate::error::StageError> {
        let entries = std::fs::read_dir(&cfg.dir)
            .map_err(|e| format!("sensitive word directory {}: {e}", cfg.dir.display()))?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "txt"))
            .filter(|p| p.file_name().is_none_or(|n| n != cfg.allow.as_str()))
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(format!("{}: no *.txt word lists", cfg.dir.display()).into());
        }
        let mut categories = Vec::new();
        let mut patterns: Vec<String> = Vec::new();
        let mut pattern_cat = Vec::new();
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for f in &files {
            let name = f
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let action = cfg
                .actions
                .get(&name)
                .copied()
                .unwrap_or(cfg.default_action);
            let ci = categories.len();
            categories.push((name, action));
            for w in read_words(f, cfg.confined_to.as_deref())? {
                // A word in two lists belongs to the first (files in name order).
                if seen.contains_key(&w) {
                    continue;
                }
                seen.insert(w.clone(), ci);
                patterns.push(w);
                pattern_cat.push(ci);
            }
        }
        for k in cfg.actions.keys().chain(cfg.tag_only_in.keys()) {
            if !categories.iter().any(|(n, _)| n == k) {
                return Err(format!("actions.{k}: no {k}.txt in {}", cfg.dir.display()).into());
            }
        }
        let build = |pats: &[String]| {
            AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostLongest)
                .build(pats)
                .map_err(|e| format!("{}: {e}", cfg.dir.display()))
        };
        let ac = if patterns.is_empty() {
            None
        } else {
            Some(build(&patterns)?)
        };
        let allow_path = cfg.dir.join(&cfg.allow);
        let allow = if allow_path.exists() {
            let words = read_words(&allow_path, cfg.confined_to.as_deref())?;
            (!words.is_empty()).then(|| build(&words)).transpose()?
        } else {
            None
        };
        Ok(Sensitive {
            ac,
            words: patterns.len(),
            pattern_cat,
            categories,
            tag_only_in: cfg.tag_only_in.clone(),
            allow,
        })
    }

    /// Matches in `text` as (category, original byte start, end), allow-listed ones removed.
    pub fn find(&self, text: &str) -> Vec<(usize, usize, usize)> {
        let Some(ac) = &self.ac else {
            return Vec::new();
        };
        let n = normalize(text);
        let allowed: Vec<(usize, usize)> = self
            .allow
            .as_ref()
            .map(|a| a.find_iter(&n.text).map(|m| (m.start(), m.end())).collect())
            .unwrap_or_default();
        ac.find_iter(&n.text)
            .filter(|m| !allowed.iter().any(|&(s, e)| s <= m.start() && m.end() <= e))
            .map(|m| {
                let cat = self.pattern_cat[m.pattern().as_usize()];
                let start = n.origin[m.start()].0 as usize;
                let end = n.origin[m.end() - 1].1 as usize;
                (cat, start, end)
            })
            .collect()
    }
}

/// Replace each character of the spans (the span's own non-word characters included) by `*`.
fn mask(text: &str, spans: &[(usize, usize)]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for &(s, e) in spans {
        if s < last {
            continue;
        }
        out.push_str(&text[last..s]);
        out.extend(
            text[s..e]
                .chars()
                .map(|c| if c.is_whitespace() { c } else { '*' }),
        );
        last = e;
    }
    out.push_str(&text[last..]);
    out
}

impl RecordStage for Sensitive {
    fn process(&self, mut s: Sample, cx: &mut StageCx) -> Verdict {
        let domain = s.domain.clone();
        let mut found: BTreeSet<usize> = BTreeSet::new();
        let mut first_drop: Option<(usize, String)> = None;
        let action = |cat: usize| {
            let (name, action) = &self.categories[cat];
            match self.tag_only_in.get(name) {
                Some(domains) if domains.contains(&domain) => Action::Tag,
                _ => *action,
            }
        };
        for f in s.content_mut() {
            let hits = self.find(f);
            if hits.is_empty() {
                continue;
            }
            let mut masked = Vec::new();
            for &(cat, start, end) in &hits {
                found.insert(cat);
                match action(cat) {
                    Action::Drop if first_drop.is_none() => {
                        first_drop = Some((cat, f[start..end].to_string()));
                    }
                    Action::Mask => masked.push((start, end)),
                    _ => {}
                }
            }
            if !masked.is_empty() {
                *f = mask(f, &masked);
            }
        }
        for &c in &found {
            cx.count(&format!("{}_samples", self.categories[c].0), 1);
        }
        if let Some((cat, word)) = first_drop {
            let detail = format!("{} word {word:?}", self.categories[cat].0);
            return Verdict::Drop(s, DropReason::new("sensitive", detail));
        }
        if !found.is_empty() {
            let cats: Vec<&str> = found
                .iter()
                .map(|&c| self.categories[c].0.as_str())
                .collect();
            s.tags.insert("sensitive".into(), cats.join(","));
        }
        Verdict::Keep(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::{Role, Turn};

    fn bundled(actions: &[(&str, Action)]) -> Sensitive {
        Sensitive::new(&Config {
            confined_to: None,
            dir: Path::new(env!("CARGO_MANIFEST_DIR")).join("../sensitive_words"),
            actions: actions.iter().map(|(k, a)| (k.to_string(), *a)).collect(),
            default_action: Action::Drop,
            tag_only_in: [("porn".to_string(), vec!["medical".to_string()])].into(),
            allow: default_allow(),
        })
        .expect("bundled lists load")
    }

    fn cats(s: &Sensitive, text: &str) -> Vec<String> {
        s.find(text)
            .into_iter()
            .map(|(c, a, b)| format!("{}:{}", s.categories[c].0, &text[a..b]))
            .collect()
    }

    #[test]
    fn evasions_still_match_and_map_back_to_the_original() {
        let s = bundled(&[]);
        assert!(s.words > 800, "{} words", s.words);
        assert_eq!(cats(&s, "这里出售炸药"), ["guns_explosives:出售炸药"]);
        assert_eq!(
            cats(&s, "出*售 炸\u{200B}药哦"),
            ["guns_explosives:出*售 炸\u{200B}药"]
        );
        assert_eq!(cats(&s, "加ＱＱ聊"), ["ads:ＱＱ"]);
        assert_eq!(cats(&s, "加q.q聊"), ["ads:q.q"]);
    }

    #[test]
    fn the_allow_list_and_ordinary_text_do_not_match() {
        let s = bundled(&[]);
        assert!(cats(&s, "网络信号不好，请把卡拔出来重新插").is_empty());
        assert!(cats(&s, "您好，请问有什么可以帮您？").is_empty());
        assert_eq!(cats(&s, "网络兼职日结"), ["ads:网络", "ads:兼职"]);
    }

    #[test]
    fn actions_per_category() {
        let s = bundled(&[("ads", Action::Tag), ("porn", Action::Mask)]);
        let sample = Sample::dialogue(
            "d",
            vec![
                Turn::new(Role::User, "兼职招聘，加QQ"),
                Turn::new(Role::Assistant, "好的"),
            ],
        );
        let Verdict::Keep(out) = s.process(sample.clone(), &mut StageCx::new(0)) else {
            panic!("dropped")
        };
        assert_eq!(out.turns[0].content, "兼职招聘，加QQ");
        assert_eq!(out.tags["sensitive"], "ads");
        let mut gun = sample;
        gun.turns[1].content = "我们出售 炸药".into();
        assert!(matches!(
            s.process(gun, &mut StageCx::new(0)),
            Verdict::Drop(_, r) if r.code == "sensitive"
        ));
        let mut medical = Sample::dialogue(
            "m",
            vec![
                Turn::new(Role::User, "阴道流血是怎么回事"),
                Turn::new(Role::Assistant, "建议尽快就医"),
            ],
        );
        let Verdict::Keep(g) = s.process(medical.clone(), &mut StageCx::new(0)) else {
            panic!("porn is masked, not dropped")
        };
        assert_eq!(g.turns[0].content, "**流血是怎么回事");
        medical.domain = "medical".into();
        let Verdict::Keep(m) = s.process(medical, &mut StageCx::new(0)) else {
            panic!("medical anatomy dropped")
        };
        assert_eq!(m.tags["sensitive"], "porn");
        assert_eq!(mask("ab出*售c", &[(2, 9)]), "ab***c");
    }
}
