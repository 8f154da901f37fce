//! The tokenized-shards output: samples are templated and tokenized in parallel per batch and
//! spilled per split (tokens and masks on disk, offsets in memory: 9 bytes per sample); at the
//! end each split is globally shuffled with the run's seed and written as native shards of about
//! `shard_size` bytes, plus `manifest.json` and, on request, Megatron `.bin/.idx` of documents.

use crate::error::{Error, Result};
use crate::io::options::ShardsPlan;
use crate::io::writers::{DropInfo, OutputFile, SampleSink};
use crate::sample::Sample;
use crate::tokenize::{encode_sample, Encoded, Template, TokenizerHandle};
use rayon::prelude::*;
use sluice_shards::megatron::{MegatronDtype, MegatronWriter};
use sluice_shards::{Manifest, ShardBuilder, ShardEntry, SplitInfo, TokenDtype, TokenizerInfo};
use std::collections::BTreeMap;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

struct Spill {
    tokens_path: PathBuf,
    mask_path: PathBuf,
    tokens: BufWriter<std::fs::File>,
    mask: BufWriter<std::fs::File>,
    /// Token offset where each sample starts (plus the end).
    offsets: Vec<u64>,
    /// Whether each sample is a document (for the Megatron output).
    docs: Vec<bool>,
    turns_dropped: u64,
    samples_cut: u64,
    /// Token spills handed over by tasks, read in place (see [`ShardSink::adopt`]): their
    /// token and mask files with the token offset where each starts. When there are any, the
    /// sink's own files hold nothing.
    adopted: Vec<(PathBuf, PathBuf, u64)>,
}

/// Writes tokenized shards (see the module doc).
pub struct ShardSink {
    root: PathBuf,
    dir: PathBuf,
    work: PathBuf,
    plan: ShardsPlan,
    seed: u64,
    tok: std::sync::Arc<TokenizerHandle>,
    template: Template,
    dtype: TokenDtype,
    spills: BTreeMap<String, Spill>,
    /// Content tokens of each sample of the last write.
    last_tokens: Vec<Option<u64>>,
    /// Shards written by several tasks (see [`ShardSink::share`]).
    share: Option<Share>,
}

/// The file in which a task lists the shards it wrote.
pub const SHARDS_WRITTEN: &str = "shards.json";

/// One shard a task wrote for task 0 (`shards.json` in its shard folder).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct WrittenShard {
    /// Its split.
    pub split: String,
    /// Its index in the split.
    pub index: usize,
    /// Its file name, in the task's shard folder.
    pub file: String,
    /// What it holds.
    pub stats: sluice_shards::ShardStats,
}

/// This task's share of the shards: shard k of a split is written by task k mod `n`.
#[derive(Debug, Default)]
struct Share {
    me: usize,
    n: usize,
    /// Task 0: the other tasks' shards (their files, checked), by (split, index).
    others: BTreeMap<(String, usize), (PathBuf, sluice_shards::ShardStats)>,
}

fn err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Output {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

impl ShardSink {
    /// Load the tokenizer and template; shards go to `dir`, spills to `work`.
    pub fn new(
        root: &Path,
        dir: PathBuf,
        work: PathBuf,
        plan: &ShardsPlan,
        seed: u64,
    ) -> Result<ShardSink> {
        let tok = match (&plan.tokenizer, &plan.vocab_merges) {
            (Some(t), _) => TokenizerHandle::shared_within(t, plan.confined_to.as_deref()),
            (None, Some((v, m))) => {
                let template = Template::load(&plan.template).map_err(|e| err(&dir, e))?;
                let specials = special_tokens(&template);
                let refs: Vec<&str> = specials.iter().map(String::as_str).collect();
                TokenizerHandle::from_vocab_merges(v, m, &refs).map(std::sync::Arc::new)
            }
            (None, None) => Err(crate::tokenize::TokenizeError::Tokenizer {
                from: "output.shards".into(),
                message: "no tokenizer configured".into(),
            }),
        }
        .map_err(|e| err(&dir, e))?;
        let template = Template::load(&plan.template).map_err(|e| err(&dir, e))?;
        Ok(ShardSink {
            root: root.to_path_buf(),
            dtype: TokenDtype::for_vocab(tok.vocab_size),
            dir,
            work,
            plan: plan.clone(),
            seed,
            tok,
            template,
            spills: BTreeMap::new(),
            last_tokens: Vec::new(),
            share: None,
        })
    }

    fn spill(&mut self, split: &str) -> Result<&mut Spill> {
        if !self.spills.contains_key(split) {
            std::fs::create_dir_all(&self.work).map_err(|e| Error::io(&self.work, e))?;
            let tokens_path = self.work.join(format!("shards-{split}.tokens"));
            let mask_path = self.work.join(format!("shards-{split}.mask"));
            #[allow(clippy::disallowed_methods)] // scratch files in the staging directory
            let (t, m) = (
                std::fs::File::create(&tokens_path),
                std::fs::File::create(&mask_path),
            );
            let spill = Spill {
                tokens: BufWriter::new(t.map_err(|e| Error::io(&tokens_path, e))?),
                mask: BufWriter::new(m.map_err(|e| Error::io(&mask_path, e))?),
                tokens_path,
                mask_path,
                offsets: vec![0],
                docs: Vec::new(),
                turns_dropped: 0,
                samples_cut: 0,
                adopted: Vec::new(),
            };
            self.spills.insert(split.to_string(), spill);
        }
        self.spills
            .get_mut(split)
            .ok_or_else(|| err(&self.work, "spill vanished"))
    }
}

/// What a task's shard sink hands over per split (`spill.json`; the tokens, masks, offsets and
/// document flags are files beside it).
#[derive(serde::Serialize, serde::Deserialize)]
struct HandedSplit {
    samples: u64,
    turns_dropped: u64,
    samples_cut: u64,
}

impl ShardSink {
    /// A task of a task-sharded run: close the spills without shuffling or writing shards,
    /// leaving them in the spill folder with `spill.json` and each split's offsets and document
    /// flags, for task 0 to [`ShardSink::adopt`]. Returns the file names to share.
    pub fn hand_over(mut self) -> Result<Vec<String>> {
        let spills = std::mem::take(&mut self.spills);
        let mut names = vec!["spill.json".to_string()];
        let mut meta = BTreeMap::new();
        std::fs::create_dir_all(&self.work).map_err(|e| Error::io(&self.work, e))?;
        for (split, spill) in spills {
            spill
                .tokens
                .into_inner()
                .map_err(|e| Error::io(&spill.tokens_path, e.into_error()))?;
            spill
                .mask
                .into_inner()
                .map_err(|e| Error::io(&spill.mask_path, e.into_error()))?;
            let offsets: Vec<u8> = spill.offsets.iter().flat_map(|o| o.to_le_bytes()).collect();
            let docs: Vec<u8> = spill.docs.iter().map(|&d| u8::from(d)).collect();
            crate::storage::write_atomic(
                &self.work.join(format!("shards-{split}.offsets")),
                &offsets,
            )?;
            crate::storage::write_atomic(&self.work.join(format!("shards-{split}.docs")), &docs)?;
            for ext in ["tokens", "mask", "offsets", "docs"] {
                names.push(format!("shards-{split}.{ext}"));
            }
            meta.insert(
                split,
                HandedSplit {
                    samples: spill.docs.len() as u64,
                    turns_dropped: spill.turns_dropped,
                    samples_cut: spill.samples_cut,
                },
            );
        }
        let json = serde_json::to_vec(&meta).map_err(|e| err(&self.work, e))?;
        crate::storage::write_atomic(&self.work.join("spill.json"), &json)?;
        Ok(names)
    }

    /// Write only this task's share of the shards (shard k when k mod `n` = `me`), after
    /// adopting every task's spills: the shuffle and the cuts are computed over all of them,
    /// and the other shards are counted, not read or written. A task other than 0 then writes
    /// `shards.json` (see [`WrittenShard`]) in place of a manifest; task 0 takes the others'
    /// shards from `others` and writes the manifest. Not with Megatron output, which is one
    /// file per split.
    pub fn share(&mut self, me: usize, n: usize, others: Vec<(PathBuf, WrittenShard)>) {
        self.share = Some(Share {
            me,
            n: n.max(1),
            others: others
                .into_iter()
                .map(|(path, w)| ((w.split, w.index), (path, w.stats)))
                .collect(),
        });
    }

    /// Task 0: append what a task handed over (`sub` of its folder `task_dir`), in task order.
    /// The spills then hold every sample in input order, as in one process, so the shards are
    /// the same bytes. The files are read in place, and only regular files inside `task_dir`
    /// whose sizes agree with their offsets are taken (they come from a shared work folder).
    pub fn adopt(&mut self, task_dir: &Path, sub: &str) -> Result<()> {
        let dir = task_dir.join(sub);
        let dir = dir.as_path();
        let within = |name: &str| crate::storage::file_within(task_dir, &format!("{sub}/{name}"));
        let meta_path = within("spill.json")?;
        let bytes = std::fs::read(&meta_path).map_err(|e| Error::io(&meta_path, e))?;
        let meta: BTreeMap<String, HandedSplit> =
            serde_json::from_slice(&bytes).map_err(|e| err(&meta_path, e))?;
        for (split, m) in meta {
            // Split names become file names: only what `split_of` makes (the work folder is
            // shared, so a name from it must not reach other places).
            if split.is_empty() || !split.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(err(
                    &meta_path,
                    format!("split name {split:?} is not a split"),
                ));
            }
            let read = |ext: &str| -> Result<Vec<u8>> {
                let p = within(&format!("shards-{split}.{ext}"))?;
                std::fs::read(&p).map_err(|e| Error::io(&p, e))
            };
            let offsets: Vec<u64> = read("offsets")?
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                .collect();
            let docs = read("docs")?;
            if offsets.len() as u64 != m.samples + 1 || docs.len() as u64 != m.samples {
                return Err(err(
                    dir,
                    format!("split {split}: offsets and counts disagree"),
                ));
            }
            // Offsets start at 0, never go back, and end where the token and mask files end.
            let tokens_path = within(&format!("shards-{split}.tokens"))?;
            let mask_path = within(&format!("shards-{split}.mask"))?;
            let size = |p: &Path| {
                std::fs::metadata(p)
                    .map(|m| m.len())
                    .map_err(|e| Error::io(p, e))
            };
            let last = offsets.last().copied().unwrap_or(0);
            if offsets.first() != Some(&0)
                || offsets.windows(2).any(|w| w[1] < w[0])
                || size(&tokens_path)? != last.saturating_mul(4)
                || size(&mask_path)? != last
            {
                return Err(err(
                    dir,
                    format!("split {split}: the offsets do not match the token and mask files"),
                ));
            }
            let spill = self.spill(&split)?;
            if spill.offsets.len() > 1 && spill.adopted.is_empty() {
                return Err(err(
                    dir,
                    format!("split {split}: a sink that wrote samples cannot adopt spills"),
                ));
            }
            let base = spill.offsets.last().copied().unwrap_or(0);
            // Read in place by `finish`, not copied.
            spill.adopted.push((tokens_path, mask_path, base));
            spill.offsets.extend(offsets[1..].iter().map(|o| base + o));
            spill.docs.extend(docs.iter().map(|&d| d != 0));
            spill.turns_dropped += m.turns_dropped;
            spill.samples_cut += m.samples_cut;
        }
        Ok(())
    }
}

/// Strings of the template that must be single special tokens (e.g. `<|im_start|>`).
fn special_tokens(t: &Template) -> Vec<String> {
    let mut out = Vec::new();
    for s in [
        &t.bos,
        &t.system,
        &t.user,
        &t.observation,
        &t.assistant,
        &t.function_call,
        &t.after_assistant,
        &t.eos,
    ] {
        let mut rest = s.as_str();
        while let Some(start) = rest.find("<|") {
            let Some(end) = rest[start..].find("|>") else {
                break;
            };
            let tok = &rest[start..start + end + 2];
            if !out.iter().any(|o| o == tok) {
                out.push(tok.to_string());
            }
            rest = &rest[start + end + 2..];
        }
    }
    out
}

/// The split a sample belongs to: its `split` tag (`validation`/`dev` read as `valid`), else train.
fn split_of(s: &Sample) -> String {
    match s.tags.get("split").map(String::as_str) {
        Some("validation" | "dev" | "valid") => "valid".into(),
        Some(other) if !other.is_empty() => {
            other.replace(|c: char| !c.is_ascii_alphanumeric() && c != '_', "_")
        }
        _ => "train".into(),
    }
}

impl SampleSink for ShardSink {
    fn write(&mut self, samples: &[Sample], _drops: Option<&[DropInfo]>) -> Result<()> {
        let (tok, tpl, plan) = (&self.tok, &self.template, &self.plan);
        let encoded: Vec<std::result::Result<Encoded, String>> = samples
            .par_iter()
            .map(|s| {
                encode_sample(
                    tok,
                    tpl,
                    plan.system.as_deref(),
                    s,
                    plan.budget,
                    plan.train_on,
                )
            })
            .collect();
        self.last_tokens.clear();
        for (s, e) in samples.iter().zip(encoded) {
            let e = e.map_err(|m| err(&self.dir, format!("tokenizing sample {}: {m}", s.id)))?;
            self.last_tokens.push(e.content_tokens);
            let split = split_of(s);
            let wide = self.dtype;
            let spill = self.spill(&split)?;
            if !spill.adopted.is_empty() {
                return Err(err(
                    &spill.tokens_path,
                    "a sink that adopted token spills cannot write samples",
                ));
            }
            let mut buf = Vec::with_capacity(e.ids.len() * 4);
            for id in &e.ids {
                if !wide.fits(*id) {
                    return Err(err(
                        &spill.tokens_path,
                        format!("token id {id} does not fit {wide:?}"),
                    ));
                }
                buf.extend_from_slice(&id.to_le_bytes());
            }
            spill
                .tokens
                .write_all(&buf)
                .map_err(|e| Error::io(&spill.tokens_path, e))?;
            spill
                .mask
                .write_all(&e.mask)
                .map_err(|e| Error::io(&spill.mask_path, e))?;
            let last = spill.offsets.last().copied().unwrap_or(0);
            spill.offsets.push(last + e.ids.len() as u64);
            spill.docs.push(s.text.is_some());
            spill.turns_dropped += e.turns_dropped as u64;
            spill.samples_cut += u64::from(e.cut);
        }
        Ok(())
    }

    fn content_tokens(&self) -> Option<(&TokenizerHandle, &[Option<u64>])> {
        Some((&self.tok, &self.last_tokens))
    }

    fn finish(mut self: Box<Self>) -> Result<Vec<OutputFile>> {
        let spills = std::mem::take(&mut self.spills);
        let mut files = Vec::new();
        let mut manifest = Manifest {
            format: "sluice-shards".into(),
            version: 1,
            tokenizer: TokenizerInfo {
                sha256: self.tok.sha256.clone(),
                vocab_size: self.tok.vocab_size as u64,
                eos_id: self
                    .tok
                    .encode(&self.template.eos)
                    .ok()
                    .and_then(|v| (v.len() == 1).then(|| v[0])),
                source: Some(self.tok.source.clone()),
            },
            template: self.template.name.clone(),
            dtype: self.dtype,
            seq_len: self.plan.seq_len.map(|s| s as u64),
            seed: self.seed,
            splits: BTreeMap::new(),
        };
        std::fs::create_dir_all(&self.dir).map_err(|e| Error::io(&self.dir, e))?;
        let share = self.share.take();
        let mut written: Vec<WrittenShard> = Vec::new();
        for (split, spill) in spills {
            let Spill {
                tokens,
                mask,
                tokens_path,
                mask_path,
                offsets,
                docs,
                turns_dropped,
                samples_cut,
                adopted,
            } = spill;
            tokens
                .into_inner()
                .map_err(|e| Error::io(&tokens_path, e.into_error()))?;
            mask.into_inner()
                .map_err(|e| Error::io(&mask_path, e.into_error()))?;
            // Where the tokens are: the sink's own files, or the adopted ones in order.
            let sources = if adopted.is_empty() {
                vec![(tokens_path.clone(), mask_path.clone(), 0)]
            } else {
                adopted
            };
            let mut readers = Vec::with_capacity(sources.len());
            for (t, m, first) in &sources {
                readers.push((
                    std::fs::File::open(t).map_err(|e| Error::io(t, e))?,
                    std::fs::File::open(m).map_err(|e| Error::io(m, e))?,
                    *first,
                ));
            }
            let firsts: Vec<u64> = readers.iter().map(|f| f.2).collect();
            let n = offsets.len() - 1;
            let split_seed = self.seed ^ xxhash_rust::xxh3::xxh3_64(split.as_bytes());
            let order = sluice_shards::permutation(n, split_seed);
            let mut info = SplitInfo {
                dropped_turns: turns_dropped,
                truncated_samples: samples_cut,
                ..Default::default()
            };
            let mut builder = ShardBuilder::new(self.dtype);
            let mut seq_tokens = 0usize;
            let mut megatron = if self.plan.megatron && docs.iter().any(|&d| d) {
                std::fs::create_dir_all(self.dir.join("megatron"))
                    .map_err(|e| Error::io(&self.dir, e))?;
                let prefix = self.dir.join(format!("megatron/{split}_text_document"));
                Some((
                    MegatronWriter::create(&prefix, MegatronDtype::for_vocab(self.tok.vocab_size))
                        .map_err(|e| err(&prefix, e))?,
                    prefix,
                ))
            } else {
                None
            };
            let mine = |k: usize| share.as_ref().is_none_or(|s| k % s.n == s.me);
            let flush = |builder: &mut ShardBuilder,
                         info: &mut SplitInfo,
                         files: &mut Vec<OutputFile>,
                         written: &mut Vec<WrittenShard>|
             -> Result<()> {
                if builder.samples() == 0 {
                    return Ok(());
                }
                let k = info.shards.len();
                let name = format!("{split}-{k:05}.bin");
                let path = self.dir.join(&name);
                let stats = match &share {
                    Some(sh) if k % sh.n != sh.me && sh.me != 0 => {
                        // Another task's shard: counted to keep the cuts, not written here.
                        let zero = sluice_shards::ShardStats {
                            samples: 0,
                            sequences: 0,
                            tokens: 0,
                            trained_tokens: 0,
                        };
                        info.shards.push(ShardEntry {
                            file: name,
                            stats: zero,
                        });
                        *builder = ShardBuilder::new(self.dtype);
                        return Ok(());
                    }
                    Some(sh) if k % sh.n != sh.me => {
                        // Task 0: another task wrote it; it moves into the run.
                        let (from, stats) = sh
                            .others
                            .get(&(split.clone(), k))
                            .ok_or_else(|| err(&self.dir, format!("no task wrote shard {name}")))?;
                        crate::storage::link_or_copy(from, &path)?;
                        stats.clone()
                    }
                    _ => sluice_shards::native::write_shard(builder, &path)
                        .map_err(|e| err(&path, e))?,
                };
                if share.as_ref().is_some_and(|sh| sh.me != 0) {
                    written.push(WrittenShard {
                        split: split.clone(),
                        index: k,
                        file: name.clone(),
                        stats: stats.clone(),
                    });
                }
                info.samples += stats.samples;
                info.sequences += stats.sequences;
                info.tokens += stats.tokens;
                info.trained_tokens += stats.trained_tokens;
                files.push(OutputFile {
                    path: rel(&self.root, &path),
                    records: stats.samples,
                    bytes: std::fs::metadata(&path).map_or(0, |m| m.len()),
                });
                info.shards.push(ShardEntry { file: name, stats });
                *builder = ShardBuilder::new(self.dtype);
                Ok(())
            };
            let (mut ids_bytes, mut mask_buf) = (Vec::new(), Vec::new());
            for &i in &order {
                let (a, b) = (offsets[i] as usize, offsets[i + 1] as usize);
                ids_bytes.resize((b - a) * 4, 0);
                mask_buf.resize(b - a, 0);
                if mine(info.shards.len()) {
                    // A sample lies in one source: the last that starts at or before it.
                    let f = firsts.partition_point(|&first| first <= a as u64).max(1) - 1;
                    let (tf, mf, first) = &mut readers[f];
                    let at = a as u64 - *first;
                    tf.seek(SeekFrom::Start(at * 4))
                        .and_then(|_| tf.read_exact(&mut ids_bytes))
                        .map_err(|e| Error::io(&sources[f].0, e))?;
                    mf.seek(SeekFrom::Start(at))
                        .and_then(|_| mf.read_exact(&mut mask_buf))
                        .map_err(|e| Error::io(&sources[f].1, e))?;
                } else {
                    // Another task's shard: only its size matters here.
                    ids_bytes.fill(0);
                    mask_buf.fill(0);
                }
                let ids: Vec<u32> = ids_bytes
                    .chunks_exact(4)
                    .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                match self.plan.seq_len {
                    // Packing: start a new sequence when this sample would overflow it.
                    Some(len) if seq_tokens > 0 && seq_tokens + ids.len() > len => {
                        builder.end_sequence();
                        seq_tokens = 0;
                    }
                    Some(_) => {}
                    None => builder.end_sequence(),
                }
                builder
                    .push_sample(&ids, &mask_buf)
                    .map_err(|e| err(&self.dir, e))?;
                seq_tokens += ids.len();
                if let Some((w, prefix)) = megatron.as_mut() {
                    if docs[i] {
                        w.add_document(&ids).map_err(|e| err(prefix, e))?;
                    }
                }
                if builder.byte_size() >= self.plan.shard_bytes {
                    builder.end_sequence();
                    seq_tokens = 0;
                    flush(&mut builder, &mut info, &mut files, &mut written)?;
                }
            }
            flush(&mut builder, &mut info, &mut files, &mut written)?;
            if let Some((w, prefix)) = megatron {
                let docs_written = w.finish().map_err(|e| err(&prefix, e))?;
                for ext in [".bin", ".idx"] {
                    let mut p = prefix.clone().into_os_string();
                    p.push(ext);
                    let p = PathBuf::from(p);
                    files.push(OutputFile {
                        path: rel(&self.root, &p),
                        records: docs_written,
                        bytes: std::fs::metadata(&p).map_or(0, |m| m.len()),
                    });
                }
            }
            let _ = std::fs::remove_file(&tokens_path);
            let _ = std::fs::remove_file(&mask_path);
            manifest.splits.insert(split, info);
        }
        if share.as_ref().is_some_and(|sh| sh.me != 0) {
            // A task's share: its shards and what they hold, for task 0's manifest.
            let json = serde_json::to_vec(&written).map_err(|e| err(&self.dir, e))?;
            crate::storage::write_atomic(&self.dir.join(SHARDS_WRITTEN), &json)?;
            return Ok(files);
        }
        // The tokenizer travels with the shards: a tokenizer.json is copied beside the manifest,
        // which then names it relative to itself, whatever folder the run started in.
        let src = Path::new(&self.tok.source);
        if src.is_file() && src.file_name().is_some_and(|n| n == "tokenizer.json") {
            let bytes = std::fs::read(src).map_err(|e| err(src, e))?;
            let dest = self.dir.join("tokenizer.json");
            crate::storage::write_atomic(&dest, &bytes)?;
            manifest.tokenizer.source = Some("tokenizer.json".into());
            files.push(OutputFile {
                path: rel(&self.root, &dest),
                records: 1,
                bytes: bytes.len() as u64,
            });
        }
        manifest.save(&self.dir).map_err(|e| err(&self.dir, e))?;
        let mp = self.dir.join("manifest.json");
        files.push(OutputFile {
            path: rel(&self.root, &mp),
            records: manifest.splits.len() as u64,
            bytes: std::fs::metadata(&mp).map_or(0, |m| m.len()),
        });
        Ok(files)
    }
}

fn rel(root: &Path, p: &Path) -> String {
    p.strip_prefix(root)
        .unwrap_or(p)
        .to_string_lossy()
        .replace('\\', "/")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::disallowed_methods)] // fixtures
    use super::*;

    fn sink(root: &Path, work: &Path) -> ShardSink {
        let plan = ShardsPlan {
            tokenizer: Some(
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../examples/data/tokenizers/minimind/tokenizer.json"),
            ),
            vocab_merges: None,
            template: "chatml".into(),
            system: None,
            budget: Default::default(),
            train_on: Default::default(),
            seq_len: None,
            shard_bytes: 1 << 20,
            megatron: false,
            confined_to: None,
        };
        ShardSink::new(root, root.join("shards"), work.to_path_buf(), &plan, 7).expect("sink")
    }

    fn samples(from: usize, n: usize) -> Vec<Sample> {
        (from..from + n)
            .map(|i| {
                let mut s =
                    Sample::document(format!("d{i}"), format!("文档 {i} {}", "字".repeat(i % 7)));
                if i % 3 == 0 {
                    s.tags.insert("split".into(), "valid".into());
                }
                s
            })
            .collect()
    }

    fn shard_files(root: &Path, files: &[OutputFile]) -> Vec<(String, Vec<u8>)> {
        files
            .iter()
            .map(|f| {
                (
                    f.path.clone(),
                    std::fs::read(root.join(&f.path)).expect("read"),
                )
            })
            .collect()
    }

    /// Tasks hand over their token spills and task 0 adopts them in task order: the shards are
    /// the bytes one sink writes from all the samples.
    #[test]
    fn adopted_spills_make_the_shards_of_one_sink() {
        let dir = tempfile::tempdir().expect("tempdir");
        let one_root = dir.path().join("one");
        let mut one = sink(&one_root, &dir.path().join("one-work"));
        one.write(&samples(0, 50), None).expect("write");
        let expected = shard_files(&one_root, &Box::new(one).finish().expect("finish"));

        let mut handed = Vec::new();
        for (t, (from, n)) in [(0, 20), (20, 0), (20, 30)].into_iter().enumerate() {
            let work = dir.path().join(format!("task-{t}"));
            let mut s = sink(&dir.path().join(format!("out-{t}")), &work);
            s.write(&samples(from, n), None).expect("write");
            s.hand_over().expect("hand over");
            handed.push(work);
        }
        let root = dir.path().join("merged");
        let mut merged = sink(&root, &dir.path().join("merged-work"));
        for h in &handed {
            let name = h.file_name().and_then(|n| n.to_str()).expect("name");
            merged
                .adopt(h.parent().expect("parent"), name)
                .expect("adopt");
        }
        let got = shard_files(&root, &Box::new(merged).finish().expect("finish"));
        assert_eq!(
            got.iter().map(|f| &f.0).collect::<Vec<_>>(),
            expected.iter().map(|f| &f.0).collect::<Vec<_>>()
        );
        assert!(got == expected, "the same shard bytes");

        // A split name from the shared work folder must not become a path elsewhere.
        std::fs::write(
            handed[0].join("spill.json"),
            r#"{"../x":{"samples":0,"turns_dropped":0,"samples_cut":0}}"#,
        )
        .expect("write");
        let mut again = sink(&dir.path().join("again"), &dir.path().join("again-work"));
        let e = again
            .adopt(handed[0].parent().expect("parent"), "task-0")
            .expect_err("refused");
        assert!(e.to_string().contains("not a split"), "{e}");
    }
}
