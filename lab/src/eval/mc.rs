//! Multiple-choice items: read from the user's labelled files, or made from QA pairs with
//! distractors taken from other answers of the same task (flagged `synthetic`).
//!
//! A labelled file is CSV or JSONL (or a JSON array), one question per record:
//! - the question: `question` (or `stem`, `query`, `问题`, `题目`);
//! - the options: `options` / `choices` / `选项` as a list, an object `{"A": …, "B": …}` or one
//!   text with a line per option (`A. …`, `B、…`), else the columns `A`, `B`, `C`, … from `A` on;
//! - the answer: `answer` / `答案` as a letter or as the text of an option, or `gold` / `label`
//!   as an index from 0;
//! - optionally `id` (else `<file>#<record>`), `domain`, `task`, and `tags` (an object).

use super::{letter, McItem, OpenItem};
use anyhow::{bail, Context, Result};
use sluice_pipeline::sample::Sample;
use std::collections::{BTreeMap, HashSet};
use std::path::Path;

/// Defaults for records that do not say.
#[derive(Debug, Clone, Default)]
pub struct McSource {
    /// Domain of records without one (else such a record is an error).
    pub domain: Option<String>,
    /// Task of records without one (default `mc`).
    pub task: Option<String>,
}

/// Most records one labelled file may hold.
const MAX_RECORDS: usize = 1_000_000;

fn field<'a>(
    r: &'a serde_json::Map<String, serde_json::Value>,
    keys: &[&str],
) -> Option<&'a serde_json::Value> {
    keys.iter().find_map(|k| r.get(*k)).filter(|v| !v.is_null())
}

fn text_of(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.trim().to_string()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Options written as one text, a line per option: `A. …`, `B、…`, `(C) …`.
fn options_from_text(t: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    for line in t.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let line = line.strip_prefix('(').unwrap_or(line);
        let mut chars = line.chars();
        let l = chars.next()?;
        if l != char::from(b'A' + out.len() as u8) {
            return None;
        }
        let rest = chars.as_str();
        let rest = rest
            .strip_prefix(['.', '、', ':', '：', ')', '）'])
            .unwrap_or(rest)
            .trim();
        out.push(rest.to_string());
    }
    (out.len() >= 2).then_some(out)
}

/// One record as an item; `Err` says what is wrong with it.
fn item(
    r: &serde_json::Map<String, serde_json::Value>,
    fallback_id: String,
    src: &McSource,
) -> std::result::Result<McItem, String> {
    let question = field(r, &["question", "stem", "query", "问题", "题目"])
        .and_then(text_of)
        .filter(|q| !q.is_empty())
        .ok_or("no question (question, stem, query, 问题 or 题目)")?;
    let choices: Vec<String> = match field(r, &["options", "choices", "选项"]) {
        Some(serde_json::Value::Array(a)) => {
            a.iter().map(|v| text_of(v).unwrap_or_default()).collect()
        }
        Some(serde_json::Value::Object(o)) => {
            let mut v = Vec::new();
            while let Some(t) = o.get(&letter(v.len())).and_then(text_of) {
                v.push(t);
            }
            v
        }
        Some(serde_json::Value::String(t)) => options_from_text(t)
            .ok_or("options: a text with one line per option, `A. …`, `B. …`")?,
        Some(_) => return Err("options: a list, an object of letters or a text".into()),
        None => {
            let mut v = Vec::new();
            while let Some(t) = r.get(&letter(v.len())).and_then(text_of) {
                if v.len() >= 26 {
                    break;
                }
                v.push(t);
            }
            v
        }
    };
    if choices.len() < 2 {
        return Err("fewer than two options".into());
    }
    if choices.iter().any(|c| c.is_empty()) {
        return Err("an option is empty".into());
    }
    let distinct: HashSet<&str> = choices.iter().map(String::as_str).collect();
    if distinct.len() != choices.len() {
        return Err("two options are the same".into());
    }
    let gold = if let Some(v) = field(r, &["gold", "label"]) {
        let i = v
            .as_u64()
            .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
            .ok_or("gold: an index from 0")?;
        usize::try_from(i).map_err(|_| "gold: an index from 0")?
    } else {
        let a = field(r, &["answer", "答案"])
            .and_then(text_of)
            .ok_or("no answer (answer or 答案: a letter or an option's text; or gold: an index)")?;
        let trimmed = a.trim_end_matches(['.', '、', ')', '）']).trim();
        let by_letter = (trimmed.chars().count() == 1)
            .then(|| trimmed.to_ascii_uppercase())
            .and_then(|l| (0..choices.len()).find(|&i| letter(i) == l));
        match by_letter.or_else(|| choices.iter().position(|c| *c == a)) {
            Some(i) => i,
            None if a.parse::<u64>().is_ok() => {
                return Err(format!(
                    "answer {a:?}: a number is ambiguous here; give a letter, or gold (from 0)"
                ))
            }
            None => {
                return Err(format!(
                    "answer {a:?} is neither an option's letter nor its text"
                ))
            }
        }
    };
    if gold >= choices.len() {
        return Err(format!("the answer is option {gold}, of {}", choices.len()));
    }
    let domain = field(r, &["domain"])
        .and_then(text_of)
        .or_else(|| src.domain.clone())
        .ok_or("no domain: add a domain column or give the file's domain (--mc-domain)")?;
    let task = field(r, &["task"])
        .and_then(text_of)
        .or_else(|| src.task.clone())
        .unwrap_or_else(|| "mc".into());
    let tags: BTreeMap<String, String> = match r.get("tags") {
        Some(serde_json::Value::Object(o)) => o
            .iter()
            .filter_map(|(k, v)| text_of(v).map(|t| (k.clone(), t)))
            .collect(),
        _ => BTreeMap::new(),
    };
    Ok(McItem {
        id: field(r, &["id"]).and_then(text_of).unwrap_or(fallback_id),
        domain,
        task,
        history: Vec::new(),
        prompt: question.clone(),
        question,
        answer: letter(gold),
        letters: choices
            .iter()
            .enumerate()
            .map(|(i, c)| (letter(i), c.clone()))
            .collect(),
        choices,
        gold,
        synthetic: false,
        tags,
    })
}

/// Read a labelled file (CSV, JSONL or a JSON array); every bad record is named.
pub fn read_labelled(path: &Path, src: &McSource) -> Result<Vec<McItem>> {
    let name = path
        .file_name()
        .map_or_else(|| "mc".into(), |n| n.to_string_lossy().into_owned());
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: reading the multiple-choice file", path.display()))?;
    let mut records: Vec<(usize, serde_json::Map<String, serde_json::Value>)> = Vec::new();
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "csv" => {
            let mut rd = csv::Reader::from_reader(text.as_bytes());
            let headers = rd
                .headers()
                .with_context(|| format!("{}: the header row", path.display()))?
                .clone();
            for (i, row) in rd.records().enumerate() {
                let row = row.with_context(|| format!("{}: row {}", path.display(), i + 2))?;
                let map = headers
                    .iter()
                    .zip(row.iter())
                    .filter(|(_, v)| !v.is_empty())
                    .map(|(h, v)| {
                        (
                            h.trim().to_string(),
                            serde_json::Value::String(v.to_string()),
                        )
                    })
                    .collect();
                records.push((i + 2, map));
            }
        }
        "jsonl" => {
            for (i, line) in text.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                let v: serde_json::Value = serde_json::from_str(line)
                    .with_context(|| format!("{}: line {}", path.display(), i + 1))?;
                match v {
                    serde_json::Value::Object(o) => records.push((i + 1, o)),
                    _ => bail!("{}: line {}: not a JSON object", path.display(), i + 1),
                }
            }
        }
        "json" => {
            let v: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("{}: not JSON", path.display()))?;
            let serde_json::Value::Array(a) = v else {
                bail!("{}: a JSON array of questions is expected", path.display());
            };
            for (i, v) in a.into_iter().enumerate() {
                match v {
                    serde_json::Value::Object(o) => records.push((i + 1, o)),
                    _ => bail!("{}: item {}: not a JSON object", path.display(), i + 1),
                }
            }
        }
        other => bail!(
            "{}: .{other} is not a multiple-choice format (.csv, .jsonl or .json)",
            path.display()
        ),
    }
    if records.len() > MAX_RECORDS {
        bail!("{}: more than {MAX_RECORDS} questions", path.display());
    }
    let mut out = Vec::with_capacity(records.len());
    let mut ids = HashSet::new();
    for (n, r) in &records {
        let it = item(r, format!("{name}#{n}"), src)
            .map_err(|e| anyhow::anyhow!("{}: record {n}: {e}", path.display()))?;
        if !ids.insert(it.id.clone()) {
            bail!(
                "{}: record {n}: id {:?} appears twice",
                path.display(),
                it.id
            );
        }
        out.push(it);
    }
    Ok(out)
}

/// An item as a dialogue (the question and its options, then the right option), so it is
/// checked against training data as samples are.
pub fn as_sample(it: &McItem) -> Sample {
    let options: String = it
        .choices
        .iter()
        .enumerate()
        .map(|(i, c)| format!("\n{}. {c}", letter(i)))
        .collect();
    let mut s = super::dialogue(
        &it.id,
        &it.domain,
        &it.task,
        None,
        &it.history,
        &format!("{}{options}", it.prompt),
        &it.choices[it.gold],
    );
    s.source = "mc".into();
    s
}

/// Synthetic items from open items: per task with at least `choices` distinct answers, each
/// item's question with its answer and `choices − 1` other answers of the task (chosen and
/// placed by the seed). Returns the items and the tasks that had too few distinct answers.
pub fn synthetic(items: &[OpenItem], choices: usize, seed: u64) -> (Vec<McItem>, Vec<String>) {
    let mut by_task: BTreeMap<&str, Vec<&OpenItem>> = BTreeMap::new();
    for it in items {
        by_task.entry(it.task.as_str()).or_default().push(it);
    }
    let mut out = Vec::new();
    let mut short = Vec::new();
    for (task, group) in by_task {
        let distinct: HashSet<String> = group.iter().map(|i| super::fold(&i.reference)).collect();
        if distinct.len() < choices {
            short.push(task.to_string());
            continue;
        }
        for it in &group {
            let gold_norm = super::fold(&it.reference);
            let mut others: Vec<&&OpenItem> = group
                .iter()
                .filter(|o| super::fold(&o.reference) != gold_norm)
                .collect();
            others.sort_by_key(|o| {
                (
                    super::build::rank(seed, &format!("{}\u{1}{}", it.id, o.id)),
                    o.id.clone(),
                )
            });
            let mut picked: Vec<String> = Vec::new();
            let mut seen: HashSet<String> = HashSet::new();
            for o in others {
                if seen.insert(super::fold(&o.reference)) {
                    picked.push(o.reference.clone());
                }
                if picked.len() + 1 == choices {
                    break;
                }
            }
            let gold = (super::build::rank(seed, &it.id) % choices as u64) as usize;
            picked.insert(gold, it.reference.clone());
            out.push(McItem {
                id: format!("{}#mc", it.id),
                domain: it.domain.clone(),
                task: it.task.clone(),
                history: it.history.clone(),
                question: it.question.clone(),
                prompt: it.prompt.clone(),
                answer: letter(gold),
                letters: picked
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (letter(i), c.clone()))
                    .collect(),
                choices: picked,
                gold,
                synthetic: true,
                tags: it.tags.clone(),
            });
        }
    }
    (out, short)
}
