//! `length_filter`: drop samples whose total content is too short or too long (in characters),
//! or whose dialogue has too few or too many turns. Token-based budgets belong to `truncate`.

use super::{DropReason, RecordStage, StageCx, Verdict};
use crate::sample::Sample;
use serde::Deserialize;

/// Config of `type = "length_filter"`. Every bound is optional; at least one must be set.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Fewest characters of content (system, turns, text) a sample may have.
    #[serde(default)]
    pub min_chars: Option<usize>,
    /// Most characters of content a sample may have.
    #[serde(default)]
    pub max_chars: Option<usize>,
    /// Fewest dialogue turns (documents are not checked).
    #[serde(default)]
    pub min_turns: Option<usize>,
    /// Most dialogue turns (documents are not checked).
    #[serde(default)]
    pub max_turns: Option<usize>,
}

impl Config {
    pub(crate) fn validate(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.min_chars.is_none()
            && self.max_chars.is_none()
            && self.min_turns.is_none()
            && self.max_turns.is_none()
        {
            out.push("set at least one of min_chars, max_chars, min_turns, max_turns".into());
        }
        if let (Some(lo), Some(hi)) = (self.min_chars, self.max_chars) {
            if lo > hi {
                out.push(format!("min_chars {lo} is above max_chars {hi}"));
            }
        }
        if let (Some(lo), Some(hi)) = (self.min_turns, self.max_turns) {
            if lo > hi {
                out.push(format!("min_turns {lo} is above max_turns {hi}"));
            }
        }
        out
    }
}

/// The built stage.
#[derive(Debug)]
pub struct LengthFilter {
    cfg: Config,
}

impl LengthFilter {
    /// Build from config.
    pub fn new(cfg: &Config) -> LengthFilter {
        LengthFilter { cfg: cfg.clone() }
    }
}

impl RecordStage for LengthFilter {
    fn process(&self, sample: Sample, _cx: &mut StageCx) -> Verdict {
        let c = &self.cfg;
        if c.min_chars.is_some() || c.max_chars.is_some() {
            let n = sample.char_len();
            if let Some(min) = c.min_chars.filter(|&m| n < m) {
                return Verdict::Drop(
                    sample,
                    DropReason::new("too_short", format!("{n} chars < min_chars {min}")),
                );
            }
            if let Some(max) = c.max_chars.filter(|&m| n > m) {
                return Verdict::Drop(
                    sample,
                    DropReason::new("too_long", format!("{n} chars > max_chars {max}")),
                );
            }
        }
        if sample.text.is_none() {
            let t = sample.turns.len();
            if let Some(min) = c.min_turns.filter(|&m| t < m) {
                return Verdict::Drop(
                    sample,
                    DropReason::new("too_few_turns", format!("{t} turns < min_turns {min}")),
                );
            }
            if let Some(max) = c.max_turns.filter(|&m| t > m) {
                return Verdict::Drop(
                    sample,
                    DropReason::new("too_many_turns", format!("{t} turns > max_turns {max}")),
                );
            }
        }
        Verdict::Keep(sample)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::{Kind, Role, Turn};

    fn dialogue(turns: &[&str]) -> Sample {
        Sample {
            id: "t#1".into(),
            source: "t".into(),
            domain: "general".into(),
            task: "t".into(),
            kind: Kind::Sft,
            user_id: None,
            system: None,
            tools: None,
            turns: turns
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    Turn::new(
                        if i % 2 == 0 {
                            Role::User
                        } else {
                            Role::Assistant
                        },
                        *c,
                    )
                })
                .collect(),
            text: None,
            tags: Default::default(),
        }
    }

    fn code(cfg: &str, s: Sample) -> Option<&'static str> {
        let c: Config = toml::from_str(cfg).expect("config parses");
        assert!(c.validate().is_empty());
        match LengthFilter::new(&c).process(s, &mut StageCx::new(0)) {
            Verdict::Keep(_) => None,
            Verdict::Drop(_, r) => Some(r.code),
        }
    }

    #[test]
    fn every_reason_fires_and_bounds_are_inclusive() {
        assert_eq!(
            code("min_chars = 5", dialogue(&["你好", "您好"])),
            Some("too_short")
        );
        assert_eq!(code("min_chars = 4", dialogue(&["你好", "您好"])), None);
        assert_eq!(
            code("max_chars = 3", dialogue(&["你好", "您好"])),
            Some("too_long")
        );
        assert_eq!(code("max_chars = 4", dialogue(&["你好", "您好"])), None);
        assert_eq!(
            code("min_turns = 4", dialogue(&["a", "b"])),
            Some("too_few_turns")
        );
        assert_eq!(
            code("max_turns = 2", dialogue(&["a", "b", "c", "d"])),
            Some("too_many_turns")
        );
        assert_eq!(code("max_turns = 4", dialogue(&["a", "b", "c", "d"])), None);
    }

    #[test]
    fn typos_and_contradictions_are_rejected() {
        assert!(toml::from_str::<Config>("min_char = 5").is_err());
        let c: Config = toml::from_str("min_chars = 9\nmax_chars = 3").expect("parses");
        assert_eq!(c.validate().len(), 1);
        let c: Config = toml::from_str("").expect("parses");
        assert_eq!(c.validate().len(), 1);
    }
}
