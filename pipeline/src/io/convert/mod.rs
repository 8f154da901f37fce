//! Raw record → `Sample`: decode, parse, recognise the record format, build and validate the
//! sample. Every failure is a message for rejects.jsonl; nothing here panics on input.
//!
//! Validation is strict on purpose: a dialogue must alternate user-side (user, observation) and
//! model-side (assistant, function_call) turns, start with the user side, end with the model
//! side, and have no empty turn. That is what chat templates and loss masks downstream assume.

use super::{Payload, RawRecord};
use crate::io::options::RecordFormat;
use crate::normalize::remove_cjk_spaces;
use crate::sample::{Kind, Sample, Turn};
use serde_json::{Map, Value};

mod formats;

use formats::{from_flex, from_object, utterances, Flex, Parsed};

/// Convert one raw record. On success also returns the format it was read as.
pub fn convert(rec: &RawRecord) -> Result<(Sample, RecordFormat), String> {
    let cx = &rec.cx;
    let plan = &cx.plan;
    // GB18030 sequences that could not be decoded (as U+FFFD): the sample is tagged.
    let mut replaced = 0usize;
    let parsed = match &rec.payload {
        Payload::Error(e) => return Err(e.clone()),
        Payload::Text(bytes) => {
            let (text, bad) = cx.encoding.decode_lossy(bytes)?;
            replaced += bad;
            let mut p = Parsed::new(RecordFormat::Text);
            p.text = Some(text);
            p
        }
        Payload::Csv(row) => {
            let headers = cx.headers.as_deref().unwrap_or_default();
            let mut obj = Map::new();
            for (i, (name, cell)) in headers.iter().zip(row.iter()).enumerate() {
                let (value, bad) = cx
                    .encoding
                    .decode_lossy(cell)
                    .map_err(|e| format!("column {} ({name:?}): {e}", i + 1))?;
                replaced += bad;
                obj.insert(name.clone(), Value::String(value));
            }
            from_object(obj, plan.format, &plan.columns)?
        }
        Payload::Json(bytes) => {
            // Decode (GB18030) or validate (UTF-8) once, for a clear message with the offset;
            // parsing from `&str` then skips serde_json's own second validation.
            let owned;
            let text: &str = if cx.encoding == super::TextEncoding::Gb18030
                && cx.reader != crate::io::options::ReaderKind::Json
            {
                let (t, bad) = cx.encoding.decode_lossy(bytes)?;
                replaced += bad;
                owned = t;
                &owned
            } else {
                super::TextEncoding::Utf8.validate(bytes)?
            };
            let first = text.bytes().find(|b| !b.is_ascii_whitespace());
            match (first, plan.format) {
                (Some(b'['), RecordFormat::Auto | RecordFormat::Utterances) => {
                    let utts: Vec<String> = serde_json::from_str(text).map_err(json_err)?;
                    utterances(utts)?
                }
                (Some(b'{'), RecordFormat::Columns) => {
                    let obj: Map<String, Value> = serde_json::from_str(text).map_err(json_err)?;
                    from_object(obj, plan.format, &plan.columns)?
                }
                (Some(b'{'), _) => {
                    let flex: Flex = serde_json::from_str(text).map_err(json_err)?;
                    // Key names only: values are skipped, so a deeply nested one (past
                    // serde_json's recursion limit for values) still lets the message name it.
                    from_flex(flex, plan.format, || {
                        serde_json::from_str::<
                            std::collections::BTreeMap<String, serde::de::IgnoredAny>,
                        >(text)
                        .map(|m| m.into_keys().collect())
                        .unwrap_or_default()
                    })?
                }
                _ => {
                    // Let serde_json describe what is wrong (truncation, bad token) with a column.
                    let v: Value = serde_json::from_str(text).map_err(json_err)?;
                    return Err(format!(
                        "expected a JSON object (or an array of utterances), found {}",
                        type_name(&v)
                    ));
                }
            }
        }
        Payload::Value(v) => match v {
            Value::Object(obj) => from_object(obj.clone(), plan.format, &plan.columns)?,
            Value::Array(_) => {
                let utts: Vec<String> = serde_json::from_value(v.clone()).map_err(json_err)?;
                utterances(utts)?
            }
            other => return Err(format!("expected a record, found {}", type_name(other))),
        },
    };
    let (mut sample, format) = assemble(rec, parsed)?;
    if replaced > 0 {
        sample
            .tags
            .insert("encoding_errors".into(), replaced.to_string());
    }
    Ok((sample, format))
}

fn json_err(e: serde_json::Error) -> String {
    format!("invalid JSON record: {e}")
}

pub(super) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn validate_dialogue(turns: &[Turn]) -> Result<(), String> {
    if turns.is_empty() {
        return Err("the dialogue has no turns".into());
    }
    for (i, t) in turns.iter().enumerate() {
        if t.content.trim().is_empty() {
            return Err(format!("turn {} ({}) is empty", i + 1, t.role));
        }
        let want_model = i % 2 == 1;
        if t.role.is_model() != want_model {
            let expected = if want_model {
                "assistant or function_call"
            } else {
                "user or observation"
            };
            return Err(format!(
                "turn {} is {} but {expected} was expected: turns must alternate, user side first",
                i + 1,
                t.role
            ));
        }
    }
    if turns.len() % 2 == 1 {
        return Err(format!(
            "the dialogue ends with an unanswered {} turn",
            turns[turns.len() - 1].role
        ));
    }
    Ok(())
}

/// Tag set on dialogues whose unanswered last user-side turn was removed.
pub const TRAILING_TURN_TAG: &str = "trailing_turn_removed";

fn assemble(rec: &RawRecord, mut p: Parsed) -> Result<(Sample, RecordFormat), String> {
    let plan = &rec.cx.plan;
    if plan.cjk_despace {
        for t in &mut p.turns {
            t.content = remove_cjk_spaces(&t.content);
        }
        p.text = p.text.map(|t| remove_cjk_spaces(&t));
        p.system = p.system.map(|t| remove_cjk_spaces(&t));
    }
    let is_doc = p.turns.is_empty() && p.text.is_some();
    let kind = if is_doc { Kind::Pretrain } else { Kind::Sft };
    if let Some(want) = plan.kind.or(p.kind) {
        if want != kind {
            return Err(format!(
                "the input's kind is {} but this record is a {}",
                want.as_str(),
                if is_doc { "document" } else { "dialogue" }
            ));
        }
    }
    if is_doc {
        if p.text.as_deref().is_none_or(|t| t.trim().is_empty()) {
            return Err("the document text is empty".into());
        }
    } else {
        if p.text.is_some() {
            return Err("a record cannot have both turns and text".into());
        }
        // A last question nobody answered carries no training signal, but the turns before it
        // do: remove it and say so in a tag, rather than lose the whole dialogue.
        if p.turns.len() >= 3
            && p.turns.len() % 2 == 1
            && p.turns.last().is_some_and(|t| !t.role.is_model())
        {
            p.turns.pop();
            p.tags.insert(TRAILING_TURN_TAG.into(), "true".into());
        }
        validate_dialogue(&p.turns)?;
    }
    if let Some(split) = &rec.split {
        p.tags.insert("split".into(), split.to_string());
    }
    let id =
        p.id.filter(|s| !s.is_empty())
            .unwrap_or_else(|| format!("{}#{}", rec.cx.file, rec.number));
    let domain = plan
        .domain
        .clone()
        .or(p.domain)
        .unwrap_or_else(|| "general".into());
    let task = if plan.task_forced {
        Some(plan.task.clone())
    } else {
        p.task
    }
    .unwrap_or_else(|| plan.task.clone());
    let sample = Sample {
        id,
        source: p.source.unwrap_or_else(|| rec.cx.file.to_string()),
        domain,
        task,
        kind,
        user_id: p.user_id,
        system: p.system,
        tools: p.tools,
        turns: p.turns,
        text: p.text,
        tags: {
            let mut tags = p.tags;
            for (k, v) in &plan.tags {
                tags.insert(k.clone(), v.clone());
            }
            tags
        },
    };
    Ok((sample, p.format))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::options::ColumnTarget;
    use crate::io::options::{Encoding, InputPlan, ReaderKind};
    use crate::io::{FileCx, TextEncoding};
    use crate::sample::Role;
    use std::sync::Arc;

    fn rec_with(
        json: &str,
        format: RecordFormat,
        columns: Vec<(String, ColumnTarget)>,
    ) -> RawRecord {
        let plan = Arc::new(InputPlan {
            reader: ReaderKind::Jsonl,
            format,
            encoding: Encoding::Utf8,
            columns,
            ..InputPlan::new("in")
        });
        RawRecord {
            cx: Arc::new(FileCx {
                input: 0,
                plan,
                file: Arc::from("f.jsonl"),
                encoding: TextEncoding::Utf8,
                encoding_why: Arc::from(""),
                headers: None,
                reader: ReaderKind::Jsonl,
            }),
            line: 3,
            number: 2,
            split: None,
            payload: Payload::Json(json.as_bytes().to_vec()),
        }
    }

    fn conv(json: &str) -> Result<(Sample, RecordFormat), String> {
        convert(&rec_with(json, RecordFormat::Auto, vec![]))
    }

    #[test]
    fn alpaca_joins_instruction_and_input_and_keeps_history() {
        let (s, f) = conv(r#"{"instruction":"翻译","input":"hello","output":"你好","system":"sys","history":[["q1","a1"]]}"#).expect("ok");
        assert_eq!(f, RecordFormat::Alpaca);
        assert_eq!(s.system.as_deref(), Some("sys"));
        let contents: Vec<_> = s.turns.iter().map(|t| t.content.as_str()).collect();
        assert_eq!(contents, ["q1", "a1", "翻译\nhello", "你好"]);
        assert_eq!(s.id, "f.jsonl#2");
        assert_eq!(s.kind, Kind::Sft);
    }

    #[test]
    fn sharegpt_tool_roles_and_leading_system() {
        let (s, f) = conv(r#"{"conversations":[{"from":"system","value":"S"},{"from":"human","value":"q"},{"from":"function_call","value":"{}"},{"from":"observation","value":"r"},{"from":"gpt","value":"a"}],"tools":"[]"}"#).expect("ok");
        assert_eq!(f, RecordFormat::Sharegpt);
        assert_eq!(s.system.as_deref(), Some("S"));
        let roles: Vec<_> = s.turns.iter().map(|t| t.role).collect();
        assert_eq!(
            roles,
            [
                Role::User,
                Role::FunctionCall,
                Role::Observation,
                Role::Assistant
            ]
        );
        assert_eq!(s.tools.as_deref(), Some("[]"));
    }

    #[test]
    fn openai_messages_with_parts_and_tool_calls() {
        let (s, f) = conv(r#"{"messages":[{"role":"system","content":"S"},{"role":"user","content":[{"type":"text","text":"hi"}]},{"role":"assistant","content":null,"tool_calls":[{"function":{"name":"f"}}]},{"role":"tool","content":"42"},{"role":"assistant","content":"done"}]}"#).expect("ok");
        assert_eq!(f, RecordFormat::Openai);
        assert_eq!(s.turns[0].content, "hi");
        assert_eq!(s.turns[1].role, Role::FunctionCall);
        assert_eq!(s.turns[2].role, Role::Observation);
    }

    #[test]
    fn dialogue_text_utterances_and_ids() {
        let (s, _) = conv(r#"{"id": 17, "prompt":"p","response":"r","history":[]}"#).expect("ok");
        assert_eq!(s.id, "17");
        let (s, f) = conv(r#"{"text":"a document"}"#).expect("ok");
        assert_eq!((s.kind, f), (Kind::Pretrain, RecordFormat::Text));
        let (s, f) = conv(r#"["a","b","c"]"#).expect("ok");
        assert_eq!(f, RecordFormat::Utterances);
        assert_eq!(s.turns.len(), 2);
        assert_eq!(
            s.tags.get(TRAILING_TURN_TAG).map(String::as_str),
            Some("true")
        );
        let (s, _) = conv(r#"{"conversations":[{"from":"human","value":"q1"},{"from":"gpt","value":"a1"},{"from":"human","value":"q2"}]}"#).expect("trimmed");
        assert_eq!(s.turns.len(), 2);
        assert_eq!(
            s.tags.get(TRAILING_TURN_TAG).map(String::as_str),
            Some("true")
        );
    }

    #[test]
    fn bad_records_get_precise_messages() {
        let err = |j: &str| conv(j).expect_err(j);
        assert!(
            err(r#"{"instruction":"x","output":"#).contains("EOF"),
            "truncated"
        );
        assert!(err(r#"{"instruction":"x","output":5}"#).contains("invalid type"));
        assert!(err(r#"{"conversations":[]}"#).contains("no turns"));
        assert!(err(
            r#"{"conversations":[{"from":"human","value":"q"},{"from":"gpt","value":"  "}]}"#
        )
        .contains("turn 2 (assistant) is empty"));
        assert!(err(
            r#"{"conversations":[{"from":"gpt","value":"a"},{"from":"human","value":"q"}]}"#
        )
        .contains("alternate"));
        assert!(err(r#"{"conversations":[{"from":"human","value":"q"}]}"#).contains("unanswered"));
        assert!(err(r#"{"conversations":[{"from":"alien","value":"q"}]}"#).contains("unknown role"));
        assert!(err(r#"{"问":"q","答":"a"}"#).contains("found keys [\"答\", \"问\"]"));
        // Regression (attacker walk of #18): a value nested past serde_json's recursion limit
        // made the message say `found keys []`.
        let deep = format!("{{\"a\": {}{}}}", "[".repeat(200), "]".repeat(200));
        assert!(err(&deep).contains("found keys [\"a\"]"), "{}", err(&deep));
        assert!(err(r#""just a string""#).contains("found a string"));
    }

    #[test]
    fn column_mapping_builds_a_dialogue_with_tags() {
        let cols = vec![
            ("问".to_string(), ColumnTarget::User),
            ("答".to_string(), ColumnTarget::Assistant),
            ("科室".to_string(), ColumnTarget::Tag("department".into())),
        ];
        let (s, f) = convert(&rec_with(
            r#"{"问":"头疼怎么办","答":"多休息","科室":"内科"}"#,
            RecordFormat::Columns,
            cols.clone(),
        ))
        .expect("ok");
        assert_eq!(f, RecordFormat::Columns);
        assert_eq!(s.turns[0].content, "头疼怎么办");
        assert_eq!(s.tags.get("department").map(String::as_str), Some("内科"));
        let e =
            convert(&rec_with(r#"{"问":"q"}"#, RecordFormat::Columns, cols)).expect_err("missing");
        assert!(e.contains("no column \"答\""), "{e}");
    }
}
