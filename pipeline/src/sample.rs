//! The record model: one `Sample` flows through every stage.
//!
//! A sample is either a dialogue (`kind = sft`: optional system prompt plus alternating turns) or a
//! document (`kind = pretrain`: `text`). Readers build samples; stages only transform them.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// Whether a sample is a dialogue for supervised fine-tuning or a document for pretraining.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A dialogue: `system` + `turns`.
    #[default]
    Sft,
    /// A document: `text`.
    Pretrain,
}

impl Kind {
    /// The name used in configs and outputs.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Sft => "sft",
            Kind::Pretrain => "pretrain",
        }
    }
}

/// Who speaks a turn. Names follow the OpenAI roles; LLaMA-Factory's sharegpt names map onto them
/// (`human` → user, `gpt` → assistant, `function_call`, `observation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The end user (sharegpt `human`).
    User,
    /// The model (sharegpt `gpt`).
    Assistant,
    /// A tool call emitted by the model: trained like an assistant turn.
    FunctionCall,
    /// A tool's answer: context, like a user turn.
    Observation,
}

impl Role {
    /// The name used in configs and outputs.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::FunctionCall => "function_call",
            Role::Observation => "observation",
        }
    }

    /// Parse a role name from any supported input vocabulary.
    pub fn parse(name: &str) -> Option<Role> {
        Some(match name {
            "user" | "human" => Role::User,
            "assistant" | "gpt" | "bot" | "model" => Role::Assistant,
            "function_call" | "tool_call" => Role::FunctionCall,
            "observation" | "tool" | "function" => Role::Observation,
            _ => return None,
        })
    }

    /// True for the roles the model produces (the trained side of a dialogue).
    pub fn is_model(self) -> bool {
        matches!(self, Role::Assistant | Role::FunctionCall)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One utterance of a dialogue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Turn {
    /// Who speaks.
    pub role: Role,
    /// What is said.
    pub content: String,
}

impl Turn {
    /// A turn from a role and its content.
    pub fn new(role: Role, content: impl Into<String>) -> Turn {
        Turn {
            role,
            content: content.into(),
        }
    }
}

/// Tags: user profile tags (age, gender, region, crowd…) and stage annotations. Values are strings
/// so that every output format round-trips them exactly; numeric annotations are written with a
/// fixed format by the stage that sets them.
pub type Tags = BTreeMap<String, String>;

/// The unit of data flowing through a pipeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sample {
    /// Stable id: given by the input, else `<source>#<record number>`.
    pub id: String,
    /// The input file (as written in the pipeline config, after glob expansion).
    pub source: String,
    /// Data domain, e.g. `general`, `finance`, `medical`.
    pub domain: String,
    /// Task name within the domain, e.g. `qa`, `chitchat`.
    pub task: String,
    /// Dialogue or document.
    pub kind: Kind,
    /// The end user this sample came from, when the logs say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// System prompt of a dialogue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// Tool definitions (a JSON string, as in sharegpt `tools`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<String>,
    /// Dialogue turns, user first, alternating; empty for documents.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub turns: Vec<Turn>,
    /// Document text; `None` for dialogues.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// User tags and stage annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: Tags,
}

impl Sample {
    /// A dialogue with default provenance (domain `general`), for tests and generated data.
    pub fn dialogue(id: impl Into<String>, turns: Vec<Turn>) -> Sample {
        Sample {
            id: id.into(),
            source: String::new(),
            domain: "general".into(),
            task: String::new(),
            kind: Kind::Sft,
            user_id: None,
            system: None,
            tools: None,
            turns,
            text: None,
            tags: Tags::new(),
        }
    }

    /// A document with default provenance (domain `general`), for tests and generated data.
    pub fn document(id: impl Into<String>, text: impl Into<String>) -> Sample {
        Sample {
            kind: Kind::Pretrain,
            text: Some(text.into()),
            ..Sample::dialogue(id, Vec::new())
        }
    }

    /// Total characters of content (system, turns, text), the unit of the length filter.
    pub fn char_len(&self) -> usize {
        let mut n = self.system.as_deref().map_or(0, |s| s.chars().count());
        n += self.text.as_deref().map_or(0, |s| s.chars().count());
        n + self
            .turns
            .iter()
            .map(|t| t.content.chars().count())
            .sum::<usize>()
    }

    /// Every content field, mutable, in a fixed order: system prompt, document text, turns.
    pub fn content_mut(&mut self) -> Vec<&mut String> {
        let mut out: Vec<&mut String> = Vec::with_capacity(self.turns.len() + 2);
        out.extend(self.system.as_mut());
        out.extend(self.text.as_mut());
        out.extend(self.turns.iter_mut().map(|t| &mut t.content));
        out
    }

    /// Every piece of content in a fixed order, each with a label; the basis of content hashing.
    pub fn content_parts(&self) -> impl Iterator<Item = (&str, &str)> {
        let system = self.system.as_deref().map(|s| ("system", s));
        let text = self.text.as_deref().map(|s| ("text", s));
        let turns = self
            .turns
            .iter()
            .map(|t| (t.role.as_str(), t.content.as_str()));
        system.into_iter().chain(turns).chain(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_parse_every_vocabulary() {
        assert_eq!(Role::parse("human"), Some(Role::User));
        assert_eq!(Role::parse("gpt"), Some(Role::Assistant));
        assert_eq!(Role::parse("tool"), Some(Role::Observation));
        assert_eq!(Role::parse("function_call"), Some(Role::FunctionCall));
        assert_eq!(Role::parse("narrator"), None);
    }

    #[test]
    fn sample_round_trips_through_json_and_rejects_unknown_keys() {
        let s = Sample {
            id: "a#1".into(),
            source: "a.jsonl".into(),
            domain: "finance".into(),
            task: "qa".into(),
            kind: Kind::Sft,
            user_id: Some("u1".into()),
            system: None,
            tools: None,
            turns: vec![
                Turn::new(Role::User, "你好"),
                Turn::new(Role::Assistant, "您好"),
            ],
            text: None,
            tags: Tags::from([("region".to_string(), "east".to_string())]),
        };
        let json = serde_json::to_string(&s).expect("serialize");
        let back: Sample = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, s);
        assert_eq!(s.char_len(), 4);
        let bad = json.replacen("{", "{\"extra\":1,", 1);
        assert!(serde_json::from_str::<Sample>(&bad).is_err());
    }
}

/// Why a stage dropped a sample.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DropReason {
    /// A short stable code, counted in the report (`too_short`, `duplicate`).
    pub code: &'static str,
    /// Human-readable detail (`12 chars < min_chars 20`).
    pub detail: Option<String>,
    /// For duplicates: the id of the sample kept in its place.
    pub duplicate_of: Option<String>,
}

impl DropReason {
    /// A reason with a code and a detail.
    pub fn new(code: &'static str, detail: impl Into<String>) -> DropReason {
        DropReason {
            code,
            detail: Some(detail.into()),
            duplicate_of: None,
        }
    }
}

/// What a record-wise stage decides for one sample.
#[derive(Debug)]
pub enum Verdict {
    /// Pass the (possibly changed) sample on.
    Keep(Sample),
    /// Drop it, saying why.
    Drop(Sample, DropReason),
}

/// A `&'static str` for a reason code read back from a file (codes are few and static in the
/// stages; each distinct one is leaked once).
pub fn intern_code(code: &str) -> &'static str {
    static CODES: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());
    let mut codes = CODES.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(c) = codes.iter().find(|c| **c == code) {
        return c;
    }
    let c: &'static str = Box::leak(code.to_string().into_boxed_str());
    codes.push(c);
    c
}

/// Well-known tag names that more than one layer reads.
pub mod tag {
    /// Marks a mix's extra copy of a sample (its value is the copy number).
    pub const COPY: &str = "mix_copy";
    /// The split a sample belongs to (`train`, `valid`, `test`).
    pub const SPLIT: &str = "split";
    /// Put by `sluice mix run` on every sample it reads back: the catalog run (folder) it
    /// came from.
    pub const RUN: &str = "catalog_run";
}

/// A sample's content as a 128-bit hash: its system prompt, turns (with roles) and text,
/// exactly as written (two files holding the same dialogues give the same hashes).
pub fn content_hash(s: &Sample) -> u128 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for (label, part) in s.content_parts() {
        h.update(label.as_bytes());
        h.update(b"\x01");
        h.update(part.as_bytes());
        h.update(b"\x02");
    }
    h.digest128()
}
