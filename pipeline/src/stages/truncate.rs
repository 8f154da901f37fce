//! `truncate`: fit a dialogue into a token budget the way it will be trained.
//!
//! The response is the last assistant turn; the source is everything before it (system prompt
//! included). The response is cut at its end to `max_target_tokens`. The source is
//! left-truncated to `max_source_tokens`: the system prompt stays, whole old rounds (a user turn
//! and what follows it up to the next user turn) go first, newest first kept, so the dialogue
//! still starts with a user turn; only when the last round alone exceeds the budget is a turn
//! cut inside, keeping its newest (last) tokens. Tokens are counted with a real tokenizer (the
//! same shared handle the shard writer uses) or by characters when none is configured.
//! `turn_overhead` adds the tokens a chat template spends per turn.
//!
//! Documents pass unchanged. A sample whose system prompt alone exceeds the source budget is
//! dropped (`system_over_budget`). Changed samples get the tag `truncated` saying what was cut.

use super::{DropReason, RecordStage, StageCx, Verdict};
use crate::sample::{Role, Sample, Turn};
use crate::tokenize::TokenizerHandle;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Config of `type = "truncate"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Budget of the source side (system + history + prompt), in tokens (or characters).
    pub max_source_tokens: usize,
    /// Budget of the response (the last assistant turn); unbounded when absent.
    #[serde(default)]
    pub max_target_tokens: Option<usize>,
    /// An HF `tokenizer.json` (relative to the pipeline file); characters are counted without.
    #[serde(default)]
    pub tokenizer: Option<PathBuf>,
    /// Set by a confined compile: the folders the tokenizer must lie in when it is opened.
    #[serde(skip)]
    pub confined_to: Option<std::sync::Arc<[PathBuf]>>,
    /// Tokens the chat template adds per turn (role markers), counted against the budgets.
    #[serde(default)]
    pub turn_overhead: usize,
}

impl Config {
    pub(crate) fn validate(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.max_source_tokens == 0 {
            out.push("max_source_tokens must be positive".into());
        }
        if self.max_target_tokens == Some(0) {
            out.push("max_target_tokens must be positive".into());
        }
        out
    }

    pub(crate) fn resolve_paths(&mut self, base: &Path) {
        if let Some(t) = &mut self.tokenizer {
            *t = crate::confine::resolve(base, t);
        }
    }
}

/// What truncation measured of one sample, in the counter's unit: the source (system prompt
/// and history, with the template's per-turn overhead) and the response, before and after.
#[derive(Debug, Default)]
struct Measured {
    source_before: Option<usize>,
    source_after: Option<usize>,
    response: Option<(usize, usize)>,
}

/// The report's histograms of a truncate stage that counts tokens: source before and after,
/// response before and after.
const TOKEN_NAMES: [&str; 4] = [
    "source_tokens_before",
    "source_tokens_after",
    "response_tokens_before",
    "response_tokens_after",
];
/// The same, for a stage that counts characters (no tokenizer).
const CHAR_NAMES: [&str; 4] = [
    "source_chars_before",
    "source_chars_after",
    "response_chars_before",
    "response_chars_after",
];

/// How lengths are measured.
enum Counter {
    Chars,
    Tokens(Arc<TokenizerHandle>),
}

impl Counter {
    fn count(&self, text: &str) -> Result<usize, String> {
        match self {
            Counter::Chars => Ok(text.chars().count()),
            Counter::Tokens(t) => Ok(t.count(text)?),
        }
    }

    /// The longest suffix of `text` (keep_end) or prefix (otherwise) within `budget` units.
    fn cut(&self, text: &str, budget: usize, keep_end: bool) -> Result<String, String> {
        let starts: Vec<usize> = match self {
            Counter::Chars => text.char_indices().map(|(i, _)| i).collect(),
            Counter::Tokens(t) => t.token_starts(text)?,
        };
        if starts.len() <= budget {
            return Ok(text.to_string());
        }
        if budget == 0 {
            return Ok(String::new());
        }
        // Cut at a token start, moved to a character boundary (byte-level tokens may split a
        // character); re-count, since tokens at the new edge can merge differently.
        let mut keep = budget;
        loop {
            let piece = if keep_end {
                let mut at = starts[starts.len() - keep];
                while !text.is_char_boundary(at) {
                    at += 1;
                }
                &text[at..]
            } else {
                let mut at = starts[keep];
                while !text.is_char_boundary(at) {
                    at -= 1;
                }
                &text[..at]
            };
            if keep <= 1 || self.count(piece)? <= budget {
                return Ok(piece.to_string());
            }
            keep -= 1;
        }
    }
}

/// The built stage.
pub struct Truncate {
    cfg: Config,
    counter: Counter,
}

impl Truncate {
    /// Build from config, loading (or sharing) the tokenizer.
    pub fn new(cfg: &Config) -> Result<Truncate, crate::error::StageError> {
        let counter = match &cfg.tokenizer {
            Some(p) => Counter::Tokens(TokenizerHandle::shared_within(
                p,
                cfg.confined_to.as_deref(),
            )?),
            None => Counter::Chars,
        };
        Ok(Truncate {
            cfg: cfg.clone(),
            counter,
        })
    }

    fn cost(&self, t: &Turn) -> Result<usize, String> {
        Ok(self.counter.count(&t.content)? + self.cfg.turn_overhead)
    }

    /// Fit `s` into the budgets; each change is noted with the counter it bumps, and the sizes
    /// measured on the way go to `m`.
    fn truncate(
        &self,
        s: &mut Sample,
        notes: &mut Vec<(&'static str, String)>,
        m: &mut Measured,
    ) -> Result<(), DropReason> {
        let fail = |e: String| DropReason::new("tokenize_failed", e);
        let overhead = self.cfg.turn_overhead;
        // The response: the last turn when it is an assistant turn.
        let target = s
            .turns
            .last()
            .filter(|t| t.role == Role::Assistant)
            .is_some()
            .then(|| s.turns.len() - 1);
        if let (Some(i), Some(max)) = (target, self.cfg.max_target_tokens) {
            let budget = max.saturating_sub(overhead);
            let n = self.counter.count(&s.turns[i].content).map_err(fail)?;
            m.response = Some((n, n.min(budget)));
            if n > budget {
                s.turns[i].content = self
                    .counter
                    .cut(&s.turns[i].content, budget, false)
                    .map_err(fail)?;
                notes.push(("responses_cut", format!("response {n}->{budget}")));
            }
        }
        let source_end = target.unwrap_or(s.turns.len());
        let system = match &s.system {
            Some(sys) => self.counter.count(sys).map_err(fail)? + overhead,
            None => 0,
        };
        if system > self.cfg.max_source_tokens {
            return Err(DropReason::new(
                "system_over_budget",
                format!(
                    "system prompt {system} > max_source_tokens {}",
                    self.cfg.max_source_tokens
                ),
            ));
        }
        let budget = self.cfg.max_source_tokens - system;
        let costs = s.turns[..source_end]
            .iter()
            .map(|t| self.cost(t))
            .collect::<Result<Vec<usize>, String>>()
            .map_err(fail)?;
        let total: usize = costs.iter().sum();
        m.source_before = Some(system + total);
        if total <= budget {
            m.source_after = Some(system + total);
            return Ok(());
        }
        // Round starts: user turns. Keep the latest suffix of whole rounds that fits.
        let starts: Vec<usize> = (0..source_end)
            .filter(|&i| s.turns[i].role == Role::User)
            .collect();
        let mut from = None;
        for &st in &starts {
            if costs[st..].iter().sum::<usize>() <= budget {
                from = Some(st);
                break;
            }
        }
        let dropped_before = match from {
            Some(st) => st,
            None => {
                // Not even the last round fits: keep it and cut its user turn (the oldest part
                // of the round) from the start, keeping its newest tokens.
                let Some(&st) = starts.last() else {
                    return Err(DropReason::new(
                        "source_over_budget",
                        "no user turn to cut and the history exceeds max_source_tokens",
                    ));
                };
                let rest: usize = costs[st + 1..].iter().sum();
                if rest + overhead >= budget {
                    return Err(DropReason::new(
                        "source_over_budget",
                        format!(
                            "the turns after the last prompt alone need {rest} > max_source_tokens {}",
                            self.cfg.max_source_tokens
                        ),
                    ));
                }
                let room = budget - rest - overhead;
                let before = costs[st] - overhead;
                s.turns[st].content = self
                    .counter
                    .cut(&s.turns[st].content, room, true)
                    .map_err(fail)?;
                notes.push(("turns_cut_inside", format!("prompt {before}->{room}")));
                m.source_after = Some(system + rest + overhead + room);
                st
            }
        };
        if from.is_some() {
            m.source_after = Some(system + costs[dropped_before..].iter().sum::<usize>());
        }
        if dropped_before > 0 {
            s.turns.drain(..dropped_before);
            notes.push((
                "history_dropped",
                format!("dropped {dropped_before} oldest turns"),
            ));
        }
        Ok(())
    }
}

impl RecordStage for Truncate {
    fn process(&self, mut sample: Sample, cx: &mut StageCx) -> Verdict {
        if sample.turns.is_empty() {
            return Verdict::Keep(sample);
        }
        let mut notes = Vec::new();
        let mut m = Measured::default();
        let verdict = self.truncate(&mut sample, &mut notes, &mut m);
        let names = match self.counter {
            Counter::Tokens(_) => TOKEN_NAMES,
            Counter::Chars => CHAR_NAMES,
        };
        for (name, v) in names.iter().zip([
            m.source_before,
            m.source_after,
            m.response.map(|r| r.0),
            m.response.map(|r| r.1),
        ]) {
            if let Some(v) = v {
                cx.observe(name, v as u64);
            }
        }
        match verdict {
            Err(reason) => Verdict::Drop(sample, reason),
            Ok(()) => {
                if !notes.is_empty() {
                    cx.count("truncated", 1);
                    for (counter, _) in &notes {
                        cx.count(counter, 1);
                    }
                    let text: Vec<String> = notes.into_iter().map(|(_, n)| n).collect();
                    sample.tags.insert("truncated".into(), text.join("; "));
                }
                Verdict::Keep(sample)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage(src: usize, tgt: Option<usize>) -> Truncate {
        Truncate::new(&Config {
            max_source_tokens: src,
            max_target_tokens: tgt,
            tokenizer: None,
            confined_to: None,
            turn_overhead: 0,
        })
        .expect("builds")
    }

    fn dialogue(turns: &[&str]) -> Sample {
        let turns = turns
            .iter()
            .enumerate()
            .map(|(i, t)| Turn::new([Role::User, Role::Assistant][i % 2], *t))
            .collect();
        Sample::dialogue("d", turns)
    }

    fn run(t: &Truncate, s: Sample) -> Verdict {
        t.process(s, &mut StageCx::new(0))
    }

    #[test]
    fn oldest_whole_rounds_go_first_and_the_system_prompt_stays() {
        let mut s = dialogue(&["aaaa", "bbbb", "cccc", "dddd", "eeee", "ffff"]);
        s.system = Some("sys".into());
        let Verdict::Keep(out) = run(&stage(3 + 8 + 4, None), s) else {
            panic!("dropped")
        };
        let texts: Vec<&str> = out.turns.iter().map(|t| t.content.as_str()).collect();
        assert_eq!(texts, ["cccc", "dddd", "eeee", "ffff"]);
        assert_eq!(out.system.as_deref(), Some("sys"));
        assert!(out.tags["truncated"].contains("dropped 2"));
    }

    #[test]
    fn a_prompt_alone_over_budget_keeps_its_newest_characters() {
        let s = dialogue(&["old", "reply", "0123456789", "answer"]);
        let Verdict::Keep(out) = run(&stage(4, Some(3)), s) else {
            panic!("dropped")
        };
        let texts: Vec<&str> = out.turns.iter().map(|t| t.content.as_str()).collect();
        assert_eq!(texts, ["6789", "ans"]);
    }

    #[test]
    fn fitting_dialogues_and_documents_are_untouched() {
        let s = dialogue(&["hi", "hello"]);
        let Verdict::Keep(out) = run(&stage(10, Some(10)), s.clone()) else {
            panic!("dropped")
        };
        assert_eq!(out, s);
        let d = Sample::document("x", "long ".repeat(100));
        let Verdict::Keep(out) = run(&stage(1, Some(1)), d.clone()) else {
            panic!("dropped")
        };
        assert_eq!(out, d);
    }

    #[test]
    fn sizes_before_and_after_are_measured_for_the_report() {
        let measure = |t: &Truncate, s: Sample| {
            let mut cx = StageCx::new(0);
            let _ = t.process(s, &mut cx);
            cx.observed
        };
        let mut s = dialogue(&["aaaa", "bbbb", "cccc", "dddd", "eeee", "ffff"]);
        s.system = Some("sys".into());
        // Source: system 3 + five turns of 4; after: system + the three newest turns.
        assert_eq!(
            measure(&stage(15, None), s),
            [("source_chars_before", 23), ("source_chars_after", 15)]
        );
        let s = dialogue(&["old", "reply", "0123456789", "answer"]);
        assert_eq!(
            measure(&stage(4, Some(3)), s),
            [
                ("source_chars_before", 18),
                ("source_chars_after", 4),
                ("response_chars_before", 6),
                ("response_chars_after", 3)
            ]
        );
        // Fitting: the same before and after; documents are not measured.
        assert_eq!(
            measure(&stage(10, Some(10)), dialogue(&["hi", "hello"])),
            [
                ("source_chars_before", 2),
                ("source_chars_after", 2),
                ("response_chars_before", 5),
                ("response_chars_after", 5)
            ]
        );
        assert!(measure(&stage(1, None), Sample::document("x", "long text")).is_empty());
    }

    #[test]
    fn an_oversized_system_prompt_drops_the_sample() {
        let mut s = dialogue(&["q", "a"]);
        s.system = Some("x".repeat(50));
        assert!(
            matches!(run(&stage(10, None), s), Verdict::Drop(_, r) if r.code == "system_over_budget")
        );
    }
}
