//! The record formats a JSON object can take (dialogue, alpaca, sharegpt, OpenAI messages,
//! documents, utterance lists, mapped columns): their serde shapes, how a format is
//! recognised, and how each becomes the parts of a sample.

use super::type_name;
use crate::io::options::{ColumnTarget, RecordFormat};
use crate::sample::{Kind, Role, Tags, Turn};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// A JSON scalar accepted where a string is expected for ids (`"7"` or `7`).
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum Scalar {
    S(String),
    I(i64),
    U(u64),
    F(f64),
    B(bool),
}

impl Scalar {
    pub(super) fn into_string(self) -> String {
        match self {
            Scalar::S(s) => s,
            Scalar::I(i) => i.to_string(),
            Scalar::U(u) => u.to_string(),
            Scalar::F(f) => f.to_string(),
            Scalar::B(b) => b.to_string(),
        }
    }
}

/// Tags as a JSON object, or as the `[{key, value}]` list that sluice's Parquet stores.
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum TagsField {
    Map(BTreeMap<String, Scalar>),
    List(Vec<TagPair>),
}

#[derive(Deserialize)]
pub(super) struct TagPair {
    pub(super) key: String,
    pub(super) value: Scalar,
}

/// Tools may be a JSON string or structured JSON; both are kept as a JSON string.
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum Tools {
    S(String),
    V(Value),
}

#[derive(Deserialize)]
pub(super) struct ShareTurn {
    pub(super) from: String,
    pub(super) value: String,
}

#[derive(Deserialize)]
pub(super) struct OaMessage {
    pub(super) role: String,
    #[serde(default)]
    pub(super) content: Option<OaContent>,
    #[serde(default)]
    pub(super) tool_calls: Option<Value>,
}

#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum OaContent {
    S(String),
    Parts(Vec<OaPart>),
}

#[derive(Deserialize)]
pub(super) struct OaPart {
    #[serde(rename = "type")]
    pub(super) kind: String,
    #[serde(default)]
    pub(super) text: Option<String>,
}

/// Every key any supported record format uses; unknown keys are ignored.
#[derive(Deserialize, Default)]
pub(super) struct Flex {
    pub(super) id: Option<Scalar>,
    pub(super) user_id: Option<Scalar>,
    pub(super) domain: Option<String>,
    pub(super) task: Option<String>,
    pub(super) kind: Option<Kind>,
    pub(super) source: Option<String>,
    pub(super) system: Option<String>,
    pub(super) tools: Option<Tools>,
    pub(super) instruction: Option<String>,
    pub(super) input: Option<String>,
    pub(super) output: Option<String>,
    pub(super) history: Option<Vec<(String, String)>>,
    pub(super) prompt: Option<String>,
    pub(super) response: Option<String>,
    pub(super) conversations: Option<Vec<ShareTurn>>,
    pub(super) messages: Option<Vec<OaMessage>>,
    pub(super) turns: Option<Vec<Turn>>,
    pub(super) tags: Option<TagsField>,
    pub(super) text: Option<String>,
}

/// What a record's content is, before the sample is assembled.
pub(super) struct Parsed {
    pub(super) format: RecordFormat,
    pub(super) id: Option<String>,
    pub(super) user_id: Option<String>,
    pub(super) domain: Option<String>,
    pub(super) task: Option<String>,
    pub(super) kind: Option<Kind>,
    pub(super) source: Option<String>,
    pub(super) system: Option<String>,
    pub(super) tools: Option<String>,
    pub(super) turns: Vec<Turn>,
    pub(super) text: Option<String>,
    pub(super) tags: Tags,
}

impl Parsed {
    pub(super) fn new(format: RecordFormat) -> Parsed {
        Parsed {
            format,
            id: None,
            user_id: None,
            domain: None,
            task: None,
            kind: None,
            source: None,
            system: None,
            tools: None,
            turns: Vec::new(),
            text: None,
            tags: Tags::new(),
        }
    }
}

/// A JSON object or CSV row: by column mapping, or through the same recognition as JSON.
pub(super) fn from_object(
    obj: Map<String, Value>,
    format: RecordFormat,
    columns: &[(String, ColumnTarget)],
) -> Result<Parsed, String> {
    if format != RecordFormat::Columns {
        let keys: Vec<String> = obj.keys().cloned().collect();
        let flex: Flex = serde_json::from_value(Value::Object(obj))
            .map_err(|e| format!("invalid record: {e}"))?;
        return from_flex(flex, format, || keys);
    }
    let mut p = Parsed::new(RecordFormat::Columns);
    let (mut user, mut assistant, mut text): (Vec<String>, Vec<String>, Vec<String>) =
        Default::default();
    for (col, target) in columns {
        let value = match obj.get(col) {
            None => {
                let names: Vec<&str> = obj.keys().map(String::as_str).collect();
                return Err(format!(
                    "no column {col:?} in this record (it has {names:?})"
                ));
            }
            Some(Value::Null) => continue,
            Some(Value::String(s)) => s.clone(),
            Some(v @ (Value::Number(_) | Value::Bool(_))) => v.to_string(),
            Some(v) => {
                return Err(format!(
                    "column {col:?} holds {}, expected text",
                    type_name(v)
                ))
            }
        };
        match target {
            ColumnTarget::User => user.push(value),
            ColumnTarget::Assistant => assistant.push(value),
            ColumnTarget::Text => text.push(value),
            ColumnTarget::System => p.system = Some(value),
            ColumnTarget::Id => p.id = Some(value),
            ColumnTarget::UserId => p.user_id = Some(value),
            ColumnTarget::Domain => p.domain = Some(value),
            ColumnTarget::Task => p.task = Some(value),
            ColumnTarget::Tag(name) => {
                p.tags.insert(name.clone(), value);
            }
            ColumnTarget::Ignore => {}
        }
    }
    if !user.is_empty() || !assistant.is_empty() {
        p.turns.push(Turn::new(Role::User, user.join("\n")));
        p.turns
            .push(Turn::new(Role::Assistant, assistant.join("\n")));
    }
    if !text.is_empty() {
        p.text = Some(text.join("\n"));
    }
    Ok(p)
}

pub(super) fn detect(f: &Flex) -> Option<RecordFormat> {
    Some(if f.turns.is_some() {
        RecordFormat::Sluice
    } else if f.conversations.is_some() {
        RecordFormat::Sharegpt
    } else if f.messages.is_some() {
        RecordFormat::Openai
    } else if f.instruction.is_some() {
        RecordFormat::Alpaca
    } else if f.prompt.is_some() || f.response.is_some() {
        RecordFormat::Dialogue
    } else if f.text.is_some() {
        RecordFormat::Text
    } else {
        return None;
    })
}

pub(super) fn missing(field: &str, format: RecordFormat) -> String {
    format!("missing field `{field}` (format {})", format.as_str())
}

pub(super) fn from_flex(
    mut f: Flex,
    format: RecordFormat,
    keys: impl FnOnce() -> Vec<String>,
) -> Result<Parsed, String> {
    let format = match format {
        RecordFormat::Auto => match detect(&f) {
            Some(fmt) => fmt,
            None => {
                let names = keys();
                return Err(format!(
                    "no known record layout: expected turns, conversations, messages, instruction, prompt/response or text, found keys {names:?}; map the keys with `columns`"
                ));
            }
        },
        f => f,
    };
    let mut p = Parsed::new(format);
    p.id = f.id.take().map(Scalar::into_string);
    p.user_id = f.user_id.take().map(Scalar::into_string);
    p.domain = f.domain.take();
    p.task = f.task.take();
    p.system = f.system.take().filter(|s| !s.trim().is_empty());
    p.tools = match f.tools.take() {
        Some(Tools::S(s)) if s.trim().is_empty() => None,
        Some(Tools::S(s)) => Some(s),
        Some(Tools::V(Value::Null)) | None => None,
        Some(Tools::V(v)) => Some(v.to_string()),
    };
    let history = |h: Option<Vec<(String, String)>>| -> Vec<Turn> {
        h.unwrap_or_default()
            .into_iter()
            .flat_map(|(q, a)| [Turn::new(Role::User, q), Turn::new(Role::Assistant, a)])
            .collect()
    };
    match format {
        RecordFormat::Sluice => {
            // sluice's own records keep their lineage when read again.
            p.kind = f.kind;
            p.source = f.source;
            // A document (kind pretrain) has text and no turns.
            p.turns = match (f.turns, &f.text) {
                (Some(turns), _) => turns,
                (None, Some(_)) => Vec::new(),
                (None, None) => return Err(missing("turns` or `text", format)),
            };
            p.text = f.text;
            p.tags = match f.tags {
                None => Tags::new(),
                Some(TagsField::Map(m)) => {
                    m.into_iter().map(|(k, v)| (k, v.into_string())).collect()
                }
                Some(TagsField::List(l)) => l
                    .into_iter()
                    .map(|p| (p.key, p.value.into_string()))
                    .collect(),
            };
        }
        RecordFormat::Alpaca => {
            let instruction = f
                .instruction
                .ok_or_else(|| missing("instruction", format))?;
            let output = f.output.ok_or_else(|| missing("output", format))?;
            let prompt = match f.input.as_deref().map(str::trim) {
                Some(input) if !input.is_empty() => {
                    format!("{instruction}\n{}", f.input.unwrap_or_default())
                }
                _ => instruction,
            };
            p.turns = history(f.history);
            p.turns.push(Turn::new(Role::User, prompt));
            p.turns.push(Turn::new(Role::Assistant, output));
        }
        RecordFormat::Dialogue => {
            let prompt = f.prompt.ok_or_else(|| missing("prompt", format))?;
            let response = f.response.ok_or_else(|| missing("response", format))?;
            p.turns = history(f.history);
            p.turns.push(Turn::new(Role::User, prompt));
            p.turns.push(Turn::new(Role::Assistant, response));
        }
        RecordFormat::Sharegpt => {
            let conv = f
                .conversations
                .ok_or_else(|| missing("conversations", format))?;
            for (i, t) in conv.into_iter().enumerate() {
                if t.from == "system" {
                    if i == 0 && p.system.is_none() {
                        p.system = Some(t.value).filter(|s| !s.trim().is_empty());
                        continue;
                    }
                    return Err(format!(
                        "conversations[{i}]: a system turn is only allowed first"
                    ));
                }
                let role = Role::parse(&t.from).ok_or_else(|| {
                    format!("conversations[{i}]: unknown role {:?} (expected human, gpt, system, function_call, observation)", t.from)
                })?;
                p.turns.push(Turn::new(role, t.value));
            }
        }
        RecordFormat::Openai => {
            let messages = f.messages.ok_or_else(|| missing("messages", format))?;
            for (i, m) in messages.into_iter().enumerate() {
                let content = match m.content {
                    None => None,
                    Some(OaContent::S(s)) => Some(s),
                    Some(OaContent::Parts(parts)) => {
                        let mut text = String::new();
                        for (j, part) in parts.into_iter().enumerate() {
                            match (part.kind.as_str(), part.text) {
                                ("text", Some(t)) => text.push_str(&t),
                                (kind, _) => {
                                    return Err(format!(
                                    "messages[{i}].content[{j}]: part of type {kind:?} is not text"
                                ))
                                }
                            }
                        }
                        Some(text)
                    }
                };
                match m.role.as_str() {
                    "system" | "developer" if p.turns.is_empty() => {
                        p.system = content.filter(|s| !s.trim().is_empty());
                    }
                    "system" | "developer" => {
                        return Err(format!(
                            "messages[{i}]: a system message is only allowed first"
                        ))
                    }
                    "assistant"
                        if m.tool_calls.as_ref().is_some_and(|v| !v.is_null())
                            && content.as_deref().is_none_or(|c| c.trim().is_empty()) =>
                    {
                        let calls = m.tool_calls.unwrap_or(Value::Null);
                        p.turns
                            .push(Turn::new(Role::FunctionCall, calls.to_string()));
                    }
                    role => {
                        let r = Role::parse(role).ok_or_else(|| {
                            format!("messages[{i}]: unknown role {role:?} (expected system, user, assistant, tool)")
                        })?;
                        p.turns.push(Turn::new(r, content.unwrap_or_default()));
                    }
                }
            }
        }
        RecordFormat::Text => {
            p.text = Some(f.text.ok_or_else(|| missing("text", format))?);
        }
        RecordFormat::Utterances | RecordFormat::Columns | RecordFormat::Auto => {
            return Err(format!(
                "format {} expects a different record shape",
                format.as_str()
            ))
        }
    }
    Ok(p)
}

/// Alternating utterances (LCCC), user first.
pub(super) fn utterances(utts: Vec<String>) -> Result<Parsed, String> {
    if utts.len() < 2 {
        return Err(format!(
            "an utterance list needs at least 2 utterances, found {}",
            utts.len()
        ));
    }
    let mut p = Parsed::new(RecordFormat::Utterances);
    p.turns = utts
        .into_iter()
        .enumerate()
        .map(|(i, u)| {
            Turn::new(
                if i % 2 == 0 {
                    Role::User
                } else {
                    Role::Assistant
                },
                u,
            )
        })
        .collect();
    Ok(p)
}
