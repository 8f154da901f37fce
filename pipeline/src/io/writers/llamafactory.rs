//! The LLaMA-Factory export: one JSON array per dataset (sharegpt or alpaca style) and its
//! `dataset_info.json`.

use super::*;
use crate::error::{Error, Result};
use crate::io::options::LlamaFactoryStyle;
use crate::sample::{Role, Sample};
use crate::storage::{write_atomic, AtomicFile};
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// A JSON array written element by element.
pub(super) struct JsonArray {
    file: AtomicFile,
    count: u64,
}

impl JsonArray {
    fn open(path: PathBuf) -> Result<JsonArray> {
        let mut file = AtomicFile::create(path)?;
        file.write_all(b"[")
            .map_err(|e| Error::io(file.path(), e))?;
        Ok(JsonArray { file, count: 0 })
    }

    fn push(&mut self, value: &impl Serialize) -> Result<()> {
        let sep: &[u8] = if self.count == 0 { b"\n  " } else { b",\n  " };
        let path = self.file.path().to_path_buf();
        self.file.write_all(sep).map_err(|e| Error::io(&path, e))?;
        serde_json::to_writer(&mut self.file, value).map_err(|e| Error::Output {
            path,
            message: e.to_string(),
        })?;
        self.count += 1;
        Ok(())
    }

    fn close(mut self, root: &Path) -> Result<OutputFile> {
        let path = self.file.path().to_path_buf();
        self.file
            .write_all(b"\n]\n")
            .map_err(|e| Error::io(&path, e))?;
        self.file.commit()?;
        Ok(OutputFile {
            path: rel(root, &path),
            records: self.count,
            bytes: file_size(&path),
        })
    }
}

#[derive(Serialize)]
pub(super) struct ShareTurn<'a> {
    from: &'a str,
    value: &'a str,
}

#[derive(Serialize)]
pub(super) struct ShareRecord<'a> {
    conversations: Vec<ShareTurn<'a>>,
    system: &'a str,
    tools: &'a str,
}

#[derive(Serialize)]
pub(super) struct AlpacaRecord<'a> {
    instruction: &'a str,
    input: &'a str,
    output: &'a str,
    system: &'a str,
    history: Vec<[&'a str; 2]>,
}

#[derive(Serialize)]
pub(super) struct TextRecord<'a> {
    text: &'a str,
}

/// The LLaMA-Factory export: `<name>.json` for dialogues and `<name>_pretrain.json` for
/// documents, plus `dataset_info.json` entries that LLaMA-Factory's loader accepts. Samples
/// with a `split` tag go to one dataset per split (`<name>_train`, `<name>_valid`,
/// `<name>_test_pretrain`, …): a held-out sample is never in the dataset one trains on.
pub struct LlamaFactorySink {
    root: PathBuf,
    dir: PathBuf,
    name: String,
    style: LlamaFactoryStyle,
    /// A task's parts (its index): each dataset becomes a folder of per-task arrays, and
    /// the run's `dataset_info.json` is written once every task's parts are in.
    part: Option<usize>,
    /// Dialogues by dataset name.
    sft: BTreeMap<String, JsonArray>,
    /// Documents by dataset name.
    pretrain: BTreeMap<String, JsonArray>,
}

/// The dataset a sample goes to: `<name>` without a split, else `<name>_<split>` (the split
/// reduced to letters, digits, `-` and `_`).
pub(super) fn dataset_of(name: &str, s: &Sample) -> String {
    match s.tags.get("split").filter(|v| !v.is_empty()) {
        None => name.to_string(),
        Some(split) => {
            let clean: String = split
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            format!("{name}_{clean}")
        }
    }
}

impl LlamaFactorySink {
    /// Files go to `dir` under dataset name `name`.
    pub fn new(
        root: &Path,
        dir: PathBuf,
        name: &str,
        style: LlamaFactoryStyle,
    ) -> LlamaFactorySink {
        LlamaFactorySink {
            root: root.to_path_buf(),
            dir,
            name: name.to_string(),
            style,
            part: None,
            sft: BTreeMap::new(),
            pretrain: BTreeMap::new(),
        }
    }

    /// Write task `task`'s parts: `<dataset>/part-<task>-00000.json` (documents:
    /// `<dataset>_pretrain/pretrain-<task>-00000.json`) and no `dataset_info.json`
    /// ([`dataset_info`] writes it over every task's).
    pub fn parts(mut self, task: usize) -> LlamaFactorySink {
        self.part = Some(task);
        self
    }

    /// Where dataset `name`'s array goes.
    fn file(&self, name: &str, pretrain: bool) -> PathBuf {
        match self.part {
            None => self.dir.join(format!("{name}.json")),
            Some(t) => {
                let kind = if pretrain { "pretrain" } else { "part" };
                self.dir
                    .join(name)
                    .join(format!("{kind}-{t:05}-00000.json"))
            }
        }
    }
}

/// `dataset_info.json` for the datasets `sft` (dialogues) and `pretrain` (documents, named
/// `<dataset>_pretrain`): each entry's `file_name` is `<name>.json`, or the folder `<name>`
/// of a task-sharded run's per-task parts (LLaMA-Factory reads every file of a folder as one
/// dataset).
pub fn dataset_info(
    style: LlamaFactoryStyle,
    sft: &[String],
    pretrain: &[String],
    folders: bool,
) -> std::result::Result<Vec<u8>, String> {
    let file_name = |name: &str| {
        if folders {
            name.to_string()
        } else {
            format!("{name}.json")
        }
    };
    let mut info = serde_json::Map::new();
    for name in sft {
        let entry = match style {
            LlamaFactoryStyle::Sharegpt => serde_json::json!({
                "file_name": file_name(name),
                "formatting": "sharegpt",
                "columns": {"messages": "conversations", "system": "system", "tools": "tools"}
            }),
            LlamaFactoryStyle::Alpaca => serde_json::json!({
                "file_name": file_name(name),
                "columns": {"prompt": "instruction", "query": "input", "response": "output", "system": "system", "history": "history"}
            }),
        };
        info.insert(name.clone(), entry);
    }
    for name in pretrain {
        info.insert(
            name.clone(),
            serde_json::json!({"file_name": file_name(name), "columns": {"prompt": "text"}}),
        );
    }
    let mut bytes =
        serde_json::to_vec_pretty(&serde_json::Value::Object(info)).map_err(|e| e.to_string())?;
    bytes.push(b'\n');
    Ok(bytes)
}

pub(super) fn sharegpt_role(r: Role) -> &'static str {
    match r {
        Role::User => "human",
        Role::Assistant => "gpt",
        Role::FunctionCall => "function_call",
        Role::Observation => "observation",
    }
}

impl SampleSink for LlamaFactorySink {
    fn write(&mut self, samples: &[Sample], _drops: Option<&[DropInfo]>) -> Result<()> {
        for s in samples {
            let dataset = dataset_of(&self.name, s);
            if let Some(text) = &s.text {
                let name = format!("{dataset}_pretrain");
                if !self.pretrain.contains_key(&name) {
                    let a = JsonArray::open(self.file(&name, true))?;
                    self.pretrain.insert(name.clone(), a);
                }
                if let Some(a) = self.pretrain.get_mut(&name) {
                    a.push(&TextRecord { text })?;
                }
                continue;
            }
            if !self.sft.contains_key(&dataset) {
                let a = JsonArray::open(self.file(&dataset, false))?;
                self.sft.insert(dataset.clone(), a);
            }
            let Some(out) = self.sft.get_mut(&dataset) else {
                continue;
            };
            let system = s.system.as_deref().unwrap_or("");
            match self.style {
                LlamaFactoryStyle::Sharegpt => out.push(&ShareRecord {
                    conversations: s
                        .turns
                        .iter()
                        .map(|t| ShareTurn {
                            from: sharegpt_role(t.role),
                            value: &t.content,
                        })
                        .collect(),
                    system,
                    tools: s.tools.as_deref().unwrap_or(""),
                })?,
                LlamaFactoryStyle::Alpaca => {
                    if s.turns
                        .iter()
                        .any(|t| matches!(t.role, Role::FunctionCall | Role::Observation))
                    {
                        return Err(Error::Output {
                            path: self.dir.clone(),
                            message: format!("sample {} has tool turns, which the alpaca layout cannot hold: use llamafactory.style = \"sharegpt\"", s.id),
                        });
                    }
                    let pairs: Vec<[&str; 2]> = s
                        .turns
                        .chunks(2)
                        .map(|p| {
                            [
                                p[0].content.as_str(),
                                p.get(1).map_or("", |t| t.content.as_str()),
                            ]
                        })
                        .collect();
                    let Some((last, history)) = pairs.split_last() else {
                        continue;
                    };
                    out.push(&AlpacaRecord {
                        instruction: last[0],
                        input: "",
                        output: last[1],
                        system,
                        history: history.to_vec(),
                    })?
                }
            }
        }
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<Vec<OutputFile>> {
        let mut files = Vec::new();
        let sft: Vec<String> = self.sft.keys().cloned().collect();
        let pretrain: Vec<String> = self.pretrain.keys().cloned().collect();
        for (_, a) in self.sft.into_iter().chain(self.pretrain) {
            files.push(a.close(&self.root)?);
        }
        if self.part.is_some() {
            return Ok(files);
        }
        let path = self.dir.join("dataset_info.json");
        let bytes =
            dataset_info(self.style, &sft, &pretrain, false).map_err(|message| Error::Output {
                path: path.clone(),
                message,
            })?;
        write_atomic(&path, &bytes)?;
        files.push(OutputFile {
            path: rel(&self.root, &path),
            records: files.len() as u64,
            bytes: bytes.len() as u64,
        });
        Ok(files)
    }
}
