//! From a checked spec to a [`Plan`]: globs expanded (URL inputs through the caller's
//! fetcher), stage paths resolved, cross-section rules checked, every problem collected.

use super::output::CatalogPlan;
use super::paths::confine_spec;
use super::spec::PipelineSpec;
use super::{CompileOptions, InputPlan, Plan};
use crate::confine::lexical_normalize;
use crate::error::{ConfigIssue, Error, Result};
use crate::io::options::{ColumnTarget, Encoding, ReaderKind, RecordFormat, ShardsPlan};
use crate::stages::StageConfig;
use std::path::Path;

pub(super) fn compile(spec: PipelineSpec, path: &Path, opts: &CompileOptions) -> Result<Plan> {
    let base = path.parent().unwrap_or(Path::new("")).to_path_buf();
    let mut spec = spec;
    // The paths as written, for messages: a resolved path would show the server's folders.
    let spelled: Vec<_> = spec.stages.iter().map(|s| s.paths()).collect();
    for stage in &mut spec.stages {
        stage.resolve_paths(&base);
    }
    if let Some(c) = &opts.confine {
        confine_spec(&spec, &spelled, &base, c, opts.output_dir.as_deref()).map_err(|f| {
            Error::Forbidden {
                key: f.key,
                message: f.message,
            }
        })?;
        let roots: std::sync::Arc<[std::path::PathBuf]> = c.read_roots().into();
        for stage in &mut spec.stages {
            stage.confine_reads(&roots);
        }
    }
    let mut issues = Vec::new();
    let mut issue = |key: String, message: String| issues.push(ConfigIssue { key, message });

    if !(0.0..=1.0).contains(&spec.max_reject_ratio) {
        issue(
            "max_reject_ratio".into(),
            format!("{} is not a share between 0 and 1", spec.max_reject_ratio),
        );
    }
    if spec.inputs.is_empty() {
        issue("inputs".into(), "at least one [[inputs]] is needed".into());
    }
    let mut inputs = Vec::new();
    let mut names = std::collections::BTreeSet::new();
    for (i, input) in spec.inputs.iter().enumerate() {
        let key = |k: &str| format!("inputs[{i}].{k}");
        let name = input.name.clone().unwrap_or_else(|| format!("input{i}"));
        if !names.insert(name.clone()) {
            issue(key("name"), format!("duplicate input name {name:?}"));
        }
        if input.paths.is_empty() {
            issue(key("paths"), "at least one path or glob is needed".into());
        }
        let mut files = Vec::new();
        for pattern in &input.paths {
            let found = if crate::remote::is_url(pattern) {
                // Listed in object storage and fetched into the local cache by the caller's
                // fetcher; shown by URL.
                match &opts.fetch {
                    Some(fetch) => fetch(pattern).map_err(crate::confine::GlobError::Invalid),
                    None => Err(crate::confine::GlobError::Invalid(format!(
                        "{pattern}: URL inputs need an object-store fetcher (load the pipeline through sluice_pipeline::config)"
                    ))),
                }
            } else {
                crate::confine::expand(&base, pattern, &opts.limits, opts.confine.as_ref())
            };
            match found {
                Ok(found) if found.is_empty() => {
                    issue(key("paths"), format!("no file matches {pattern:?}"))
                }
                Ok(found) => files.extend(found),
                Err(crate::confine::GlobError::Forbidden(message)) => {
                    return Err(Error::Forbidden {
                        key: key("paths"),
                        message,
                    })
                }
                Err(crate::confine::GlobError::Invalid(msg)) => issue(key("paths"), msg),
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        files.retain(|(p, _)| seen.insert(p.clone()));
        let mut columns = Vec::new();
        for (col, target) in &input.columns {
            match ColumnTarget::parse(target) {
                Some(t) => columns.push((col.clone(), t)),
                None => issue(
                    key(&format!("columns.{col}")),
                    format!("unknown target {target:?}: expected user, assistant, system, text, id, user_id, domain, task, tag:<name> or ignore"),
                ),
            }
        }
        let format = match (input.format, columns.is_empty()) {
            (RecordFormat::Auto, false) => RecordFormat::Columns,
            (RecordFormat::Columns, true) => {
                issue(
                    key("format"),
                    "format \"columns\" needs a `columns` mapping".into(),
                );
                RecordFormat::Columns
            }
            (f, false) if f != RecordFormat::Columns => {
                issue(
                    key("columns"),
                    format!("a column mapping only applies to format \"columns\" (or \"auto\"), not {:?}", f.as_str()),
                );
                f
            }
            (f, _) => f,
        };
        if format == RecordFormat::Columns {
            let has = |t: &ColumnTarget| columns.iter().any(|(_, c)| c == t);
            let dialogue = has(&ColumnTarget::User) || has(&ColumnTarget::Assistant);
            if !(dialogue || has(&ColumnTarget::Text)) {
                issue(
                    key("columns"),
                    "map at least one column to user and assistant, or to text".into(),
                );
            } else if dialogue && !(has(&ColumnTarget::User) && has(&ColumnTarget::Assistant)) {
                issue(
                    key("columns"),
                    "a dialogue needs a user column and an assistant column".into(),
                );
            }
        }
        if input.reader == ReaderKind::Parquet && input.encoding == Encoding::Gb18030 {
            issue(
                key("encoding"),
                "Parquet strings are UTF-8 by definition".into(),
            );
        }
        inputs.push(InputPlan {
            task: input.task.clone().unwrap_or_else(|| name.clone()),
            task_forced: input.task.is_some(),
            name,
            files,
            reader: input.reader,
            format,
            compression: input.compression,
            encoding: input.encoding,
            domain: input.domain.clone(),
            kind: input.kind,
            columns,
            text_unit: input.text_unit,
            cjk_despace: input.cjk_despace,
            max_expansion: input.max_expansion,
            max_quoted_lines: input.max_quoted_lines,
            confined_to: opts.confine.as_ref().map(|c| c.read_roots().into()),
            tags: Vec::new(),
        });
    }
    for (i, stage) in spec.stages.iter().enumerate() {
        for msg in stage.validate() {
            issue(format!("stages[{i}] ({})", stage.type_name()), msg);
        }
    }
    let mut shards = None;
    if let Some(s) = &spec.output.shards {
        let path = |p: &String| lexical_normalize(&crate::confine::resolve(&base, Path::new(p)));
        let tokenizer = s.tokenizer.as_ref().map(path);
        let vocab_merges = match (&s.vocab, &s.merges) {
            (Some(v), Some(m)) => Some((path(v), path(m))),
            (None, None) => None,
            _ => {
                issue(
                    "output.shards".into(),
                    "vocab and merges go together".into(),
                );
                None
            }
        };
        match (&tokenizer, &vocab_merges) {
            (None, None) => issue(
                "output.shards.tokenizer".into(),
                "set `tokenizer` (a tokenizer.json) or `vocab` + `merges`".into(),
            ),
            (Some(_), Some(_)) => issue(
                "output.shards".into(),
                "set either `tokenizer` or `vocab` + `merges`, not both".into(),
            ),
            _ => {}
        }
        for p in tokenizer
            .iter()
            .chain(vocab_merges.iter().flat_map(|(v, m)| [v, m]))
        {
            if !p.is_file() {
                issue(
                    "output.shards".into(),
                    format!("{}: no such file", p.display()),
                );
            }
        }
        let located = crate::confine::resolve(&base, Path::new(&s.template));
        let template = if !crate::tokenize::Template::is_builtin(&s.template) && located.is_file() {
            located.to_string_lossy().into_owned()
        } else {
            s.template.clone()
        };
        if let Err(e) = crate::tokenize::Template::load(&template) {
            issue("output.shards.template".into(), e.to_string());
        }
        if s.seq_len == Some(0) || s.max_source_tokens == Some(0) || s.max_target_tokens == Some(0)
        {
            issue(
                "output.shards".into(),
                "token lengths must be positive".into(),
            );
        }
        shards = Some(ShardsPlan {
            tokenizer,
            vocab_merges,
            template,
            system: s.system.clone(),
            budget: crate::tokenize::Budget {
                max_source_tokens: s.max_source_tokens,
                max_target_tokens: s.max_target_tokens,
            },
            train_on: s.train_on,
            seq_len: s.seq_len,
            shard_bytes: s.shard_size.0.max(1),
            megatron: s.megatron,
            confined_to: opts.confine.as_ref().map(|c| c.read_roots().into()),
        });
    }
    let catalog_tokenizer = match &spec.output.catalog.tokenizer {
        Some(t) => {
            let p = lexical_normalize(&crate::confine::resolve(&base, Path::new(t)));
            if !p.is_file() {
                issue(
                    "output.catalog.tokenizer".into(),
                    format!("{}: no such file", p.display()),
                );
            }
            Some(p)
        }
        None => shards.as_ref().and_then(|s| s.tokenizer.clone()),
    };
    // A mix counts tokens as the catalog does unless told otherwise, and comes after every
    // other global stage (its copies must not meet a dedup).
    let mut mix_at = None;
    for (i, stage) in spec.stages.iter_mut().enumerate() {
        match stage {
            StageConfig::Mix(m) => {
                if mix_at.is_some() {
                    issue(
                        format!("stages[{i}] (mix)"),
                        "only one mix stage per pipeline".into(),
                    );
                }
                mix_at = Some(i);
                if m.tokenizer.is_none() {
                    m.tokenizer = catalog_tokenizer.clone();
                }
            }
            StageConfig::ExactDedup(_) | StageConfig::Minhash(_) | StageConfig::Split(_) => {
                if let Some(m) = mix_at {
                    issue(
                        format!("stages[{i}] ({})", stage.type_name()),
                        format!("global stages must come before the mix (stages[{m}]): its copies would meet them"),
                    );
                }
            }
            _ => {}
        }
    }
    if spec.output.formats.is_empty() {
        issue(
            "output.formats".into(),
            "at least one format is needed".into(),
        );
    }
    if spec.output.dir.trim().is_empty() {
        issue("output.dir".into(), "an output directory is needed".into());
    }
    if !issues.is_empty() {
        return Err(Error::Config {
            file: path.to_path_buf(),
            issues,
        });
    }
    let name = spec.name.clone().unwrap_or_else(|| {
        path.file_stem()
            .map_or("run".into(), |s| s.to_string_lossy().into_owned())
    });
    Ok(Plan {
        config_path: path.to_path_buf(),
        llamafactory_name: spec
            .output
            .llamafactory
            .dataset_name
            .clone()
            .unwrap_or_else(|| name.clone()),
        name,
        seed: spec.seed,
        batch_size: spec.batch_size.get(),
        batch_bytes: usize::try_from(spec.batch_bytes.0)
            .unwrap_or(usize::MAX)
            .max(1),
        max_record_bytes: usize::try_from(spec.max_record_bytes.0).unwrap_or(usize::MAX),
        max_reject_ratio: spec.max_reject_ratio,
        inputs,
        stages: spec.stages,
        output_dir: if crate::remote::is_url(&spec.output.dir) {
            crate::remote::staging_dir(&spec.output.dir)
        } else if let Some(dir) = &opts.output_dir {
            dir.clone()
        } else {
            lexical_normalize(&base.join(&spec.output.dir))
        },
        output_url: crate::remote::is_url(&spec.output.dir).then(|| spec.output.dir.clone()),
        formats: spec.output.formats,
        rows_per_file: spec.output.rows_per_file.get(),
        llamafactory_style: spec.output.llamafactory.style,
        shards,
        catalog: CatalogPlan {
            tokenizer: catalog_tokenizer,
            dimensions: spec.output.catalog.dimensions.clone(),
            confined_to: opts.confine.as_ref().map(|c| c.read_roots().into()),
        },
    })
}
