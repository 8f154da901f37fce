//! `langid`: detect each sample's language (whatlang, restricted to the languages the pipeline
//! lists, ISO 639-3 codes such as `cmn`, `eng`), tag it as `lang`, and optionally keep only some.
//!
//! The text is the sample's content (all turns, or the user side), first `max_chars`
//! characters. Samples with fewer than `min_chars` letters, or whose detection is not reliable
//! enough (`min_confidence`), are tagged `und`; `keep_undetermined` decides whether they pass an
//! `allowed` filter.

use super::{DropReason, RecordStage, StageCx, Verdict};
use crate::sample::{Role, Sample};
use serde::Deserialize;

/// Config of `type = "langid"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Candidate languages, ISO 639-3 (default `cmn`, `eng`).
    #[serde(default = "default_languages")]
    pub languages: Vec<String>,
    /// Keep only these (ISO 639-3); all pass when empty.
    #[serde(default)]
    pub allowed: Vec<String>,
    /// Fewest letters for a decision (default 10).
    #[serde(default = "default_min_chars")]
    pub min_chars: usize,
    /// Characters looked at (default 2000).
    #[serde(default = "default_max_chars")]
    pub max_chars: usize,
    /// Lowest confidence for a decision (default 0.5).
    #[serde(default = "default_min_confidence")]
    pub min_confidence: f64,
    /// Whether undetermined samples pass `allowed` (default true).
    #[serde(default = "yes")]
    pub keep_undetermined: bool,
    /// Detect on the user side only (default: all content).
    #[serde(default)]
    pub user_only: bool,
}

fn default_languages() -> Vec<String> {
    vec!["cmn".into(), "eng".into()]
}
fn default_min_chars() -> usize {
    10
}
fn default_max_chars() -> usize {
    2000
}
fn default_min_confidence() -> f64 {
    0.5
}
fn yes() -> bool {
    true
}

impl Config {
    pub(crate) fn validate(&self) -> Vec<String> {
        let mut out = Vec::new();
        for code in self.languages.iter().chain(&self.allowed) {
            if whatlang::Lang::from_code(code.as_str()).is_none() {
                out.push(format!("{code:?} is not an ISO 639-3 code whatlang knows"));
            }
        }
        if self.languages.len() < 2 {
            out.push("list at least two candidate languages".into());
        }
        for a in &self.allowed {
            if !self.languages.contains(a) {
                out.push(format!("allowed language {a} is not among `languages`"));
            }
        }
        out
    }
}

/// The built stage.
pub struct LangId {
    cfg: Config,
    detector: whatlang::Detector,
}

impl LangId {
    /// Build from config.
    pub fn new(cfg: &Config) -> Result<LangId, crate::error::StageError> {
        let langs = cfg
            .languages
            .iter()
            .map(|c| whatlang::Lang::from_code(c.as_str()).ok_or(format!("unknown language {c}")))
            .collect::<Result<Vec<_>, String>>()?;
        Ok(LangId {
            cfg: cfg.clone(),
            detector: whatlang::Detector::with_allowlist(langs),
        })
    }

    /// The language code of a text, or `und`.
    pub fn detect(&self, text: &str) -> &'static str {
        let letters = text.chars().filter(|c| c.is_alphabetic()).count();
        if letters < self.cfg.min_chars {
            return "und";
        }
        match self.detector.detect(text) {
            Some(info) if info.confidence() >= self.cfg.min_confidence => info.lang().code(),
            _ => "und",
        }
    }
}

impl RecordStage for LangId {
    fn process(&self, mut s: Sample, cx: &mut StageCx) -> Verdict {
        let mut text = String::new();
        if !self.cfg.user_only {
            if let Some(t) = &s.text {
                text.push_str(t);
            }
        }
        for t in &s.turns {
            if self.cfg.user_only && t.role != Role::User {
                continue;
            }
            text.push_str(&t.content);
            text.push('\n');
            if text.len() > self.cfg.max_chars * 4 {
                break;
            }
        }
        let cut: String = text.chars().take(self.cfg.max_chars).collect();
        let lang = self.detect(&cut);
        cx.count(lang, 1);
        s.tags.insert("lang".into(), lang.to_string());
        let allowed = self.cfg.allowed.is_empty()
            || self.cfg.allowed.iter().any(|a| a == lang)
            || (lang == "und" && self.cfg.keep_undetermined);
        if allowed {
            Verdict::Keep(s)
        } else {
            let detail = format!("language {lang} not in {:?}", self.cfg.allowed);
            Verdict::Drop(s, DropReason::new("language", detail))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chinese_and_english_are_told_apart_and_filtered() {
        let cfg: Config = toml::from_str("allowed = [\"cmn\"]").expect("parses");
        assert!(cfg.validate().is_empty());
        let l = LangId::new(&cfg).expect("builds");
        assert_eq!(l.detect("请问信用卡的年费是多少，可以免除吗？"), "cmn");
        assert_eq!(
            l.detect("What is the annual fee of this credit card?"),
            "eng"
        );
        assert_eq!(l.detect("ok"), "und");
        let en = Sample::document("e", "The quick brown fox jumps over the lazy dog again.");
        assert!(matches!(
            l.process(en, &mut StageCx::new(0)),
            Verdict::Drop(_, r) if r.code == "language"
        ));
        let bad: Config = toml::from_str("languages = [\"cmn\", \"xx\"]").expect("parses");
        assert_eq!(bad.validate().len(), 1);
    }
}
