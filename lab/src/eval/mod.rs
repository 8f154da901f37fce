//! Evaluation sets and model scoring.
//!
//! [`build`] makes held-out evaluation sets from a curated run (its held-out split), kept apart
//! from every training set it is told of: an open form (prompt with history, reference answer)
//! and a multiple-choice form (the user's labelled questions, or synthetic ones from QA pairs
//! with distractors taken from other answers of the same task). [`run`] scores a model on them:
//! log-likelihood and perplexity of the references, multiple-choice accuracy by log-likelihood
//! ranking, greedy generation with BLEU-4, ROUGE-L, exact match and token F1.

pub mod build;
mod build_write;
pub mod mc;
pub mod run;

use serde::{Deserialize, Serialize};
use sluice_pipeline::sample::{Kind, Role, Sample, Turn};
use std::collections::BTreeMap;

/// One open-form item: the dialogue up to the last user turn, and the answer it should get.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenItem {
    /// The sample's id.
    pub id: String,
    /// Domain.
    pub domain: String,
    /// Task.
    pub task: String,
    /// System prompt, if the sample has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// Earlier turns, oldest first (user/assistant alternating).
    #[serde(default)]
    pub history: Vec<Turn>,
    /// The last user turn.
    pub prompt: String,
    /// The answer in the data.
    pub reference: String,
    /// The sample's tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// The whole prompt as one text (history as `user:`/`assistant:` lines, then the prompt):
    /// OpenCompass's `question`.
    pub question: String,
    /// The reference again under OpenCompass's name.
    pub answer: String,
}

/// One multiple-choice item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct McItem {
    /// Id.
    pub id: String,
    /// Domain.
    pub domain: String,
    /// Task.
    pub task: String,
    /// Earlier turns, when the question comes from a dialogue.
    #[serde(default)]
    pub history: Vec<Turn>,
    /// The question as one text, earlier turns included (`user:`/`assistant:` lines): what
    /// lm-evaluation-harness and OpenCompass show the model.
    pub question: String,
    /// The last user turn alone (sluice renders `history` and this with the chat template).
    pub prompt: String,
    /// The options, in order.
    pub choices: Vec<String>,
    /// Index of the right option (lm-evaluation-harness `doc_to_target`).
    pub gold: usize,
    /// Its letter (OpenCompass `answer`).
    pub answer: String,
    /// Whether the options were made by sluice (distractors from other answers of the task)
    /// rather than given by the user.
    pub synthetic: bool,
    /// Tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// The options again as OpenCompass's `A`, `B`, … columns.
    #[serde(flatten)]
    pub letters: BTreeMap<String, String>,
}

/// `A`, `B`, … for option `i`.
pub fn letter(i: usize) -> String {
    char::from(b'A' + (i % 26) as u8).to_string()
}

/// Lines of a dialogue's earlier turns and prompt, as one question text.
pub fn question_text(history: &[Turn], prompt: &str) -> String {
    let mut s = String::new();
    for t in history {
        s.push_str(t.role.as_str());
        s.push_str(": ");
        s.push_str(&t.content);
        s.push('\n');
    }
    if !history.is_empty() {
        s.push_str("user: ");
    }
    s.push_str(prompt);
    s
}

/// A domain as a file name: letters, digits, `_` and `-` kept, anything else as `_xx` hex.
pub fn file_stem(domain: &str) -> String {
    let mut s = String::new();
    for b in domain.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' {
            s.push(char::from(b));
        } else {
            s.push_str(&format!("_{b:02x}"));
        }
    }
    if s.is_empty() {
        s.push_str("_empty");
    }
    s.truncate(120);
    s
}

/// Text compared for sameness: whitespace runs folded to one space, lowercase.
pub fn fold(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// A dialogue sample: `history`, then `prompt` as the user's turn and `answer` as the
/// assistant's (how items are scored and checked against training data).
pub fn dialogue(
    id: &str,
    domain: &str,
    task: &str,
    system: Option<&str>,
    history: &[Turn],
    prompt: &str,
    answer: &str,
) -> Sample {
    let mut turns = history.to_vec();
    turns.push(Turn::new(Role::User, prompt.to_string()));
    turns.push(Turn::new(Role::Assistant, answer.to_string()));
    Sample {
        id: id.to_string(),
        source: "eval".into(),
        domain: domain.to_string(),
        task: task.to_string(),
        kind: Kind::Sft,
        user_id: None,
        system: system.map(str::to_string),
        tools: None,
        turns,
        text: None,
        tags: Default::default(),
    }
}
