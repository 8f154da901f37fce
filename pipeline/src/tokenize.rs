//! Tokenizers and chat templates: a sample becomes token ids plus a loss mask.
//!
//! Templates are data (`rules/templates/*.toml`, built in, or any file): each role's string has a
//! `{content}` slot. A sample is rendered as segments (template text, content) that are tokenized
//! one by one, so every id knows which segment it came from: masks are exact, and budgets cut only
//! content, never a template token. Trained: the content of assistant and function_call turns and
//! the rest of their template after the content (the end-of-turn token). Documents train every
//! token and end with the template's `eos`.

use crate::sample::{Role, Sample};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// What went wrong loading a tokenizer or template, or encoding text.
#[derive(Debug, thiserror::Error)]
pub enum TokenizeError {
    /// A file could not be read.
    #[error("{path}: {source}", path = .path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A tokenizer that could not be built.
    #[error("tokenizer {from}: {message}")]
    Tokenizer {
        /// Its file(s).
        from: String,
        /// What the tokenizers library said.
        message: String,
    },
    /// A template file that is not a usable template.
    #[error("{name}: {message}")]
    Template {
        /// Its name or path.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// Neither a built-in template nor a file.
    #[error(
        "unknown template {name:?}: use one of {known:?} (or their aliases) or a template file"
    )]
    UnknownTemplate {
        /// As given.
        name: String,
        /// The built-in names.
        known: Vec<String>,
    },
    /// Text the tokenizer could not encode (or ids it could not decode).
    #[error("{0}")]
    Encode(String),
}

/// A stage whose tokenizer or template cannot be loaded cannot be built.
impl From<TokenizeError> for crate::error::StageError {
    fn from(e: TokenizeError) -> crate::error::StageError {
        crate::error::StageError::Invalid(e.to_string())
    }
}

/// Where messages are what a caller keeps (rejects, config issues), the error reads as one.
impl From<TokenizeError> for String {
    fn from(e: TokenizeError) -> String {
        e.to_string()
    }
}

/// A chat template (see `rules/templates/`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Template {
    /// Name recorded in the manifest.
    pub name: String,
    /// Other names it answers to.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// System prompt used when a sample has none ("" for none).
    pub default_system: String,
    /// Text before everything (e.g. `<|begin_of_text|>`).
    pub bos: String,
    /// System turn, with `{content}`.
    pub system: String,
    /// User turn.
    pub user: String,
    /// Tool result turn.
    pub observation: String,
    /// Assistant turn: the part after `{content}` is trained with the content.
    pub assistant: String,
    /// Tool call turn, trained like an assistant turn.
    pub function_call: String,
    /// Text after each assistant or function_call turn, never trained.
    pub after_assistant: String,
    /// Appended to documents (pretraining), trained.
    pub eos: String,
}

const BUILT_IN: &[(&str, &str)] = &[
    ("chatml", include_str!("../../rules/templates/chatml.toml")),
    ("llama3", include_str!("../../rules/templates/llama3.toml")),
    ("alpaca", include_str!("../../rules/templates/alpaca.toml")),
];

impl Template {
    /// Whether `name` is a built-in template's name or alias (not a file).
    pub fn is_builtin(name: &str) -> bool {
        BUILT_IN.iter().any(|(_, text)| {
            toml::from_str::<Template>(text)
                .is_ok_and(|t| t.name == name || t.aliases.iter().any(|a| a == name))
        })
    }

    /// A built-in template by name or alias, or a template file by path.
    pub fn load(name_or_path: &str) -> Result<Template, TokenizeError> {
        let bad = |message: String| TokenizeError::Template {
            name: name_or_path.to_string(),
            message,
        };
        for (_, text) in BUILT_IN {
            let t: Template =
                toml::from_str(text).map_err(|e| bad(format!("built-in template: {e}")))?;
            if t.name == name_or_path || t.aliases.iter().any(|a| a == name_or_path) {
                return Ok(t);
            }
        }
        let path = Path::new(name_or_path);
        if path.is_file() {
            let text = std::fs::read_to_string(path).map_err(|e| TokenizeError::File {
                path: path.to_path_buf(),
                source: e,
            })?;
            let t: Template = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
            t.check().map_err(bad)?;
            return Ok(t);
        }
        let names: Vec<&str> = BUILT_IN.iter().map(|(n, _)| *n).collect();
        Err(TokenizeError::UnknownTemplate {
            name: name_or_path.to_string(),
            known: names.iter().map(|n| n.to_string()).collect(),
        })
    }

    fn check(&self) -> Result<(), String> {
        for (field, s) in [
            ("system", &self.system),
            ("user", &self.user),
            ("observation", &self.observation),
            ("assistant", &self.assistant),
            ("function_call", &self.function_call),
        ] {
            if s.matches("{content}").count() != 1 {
                return Err(format!("`{field}` must contain {{content}} exactly once"));
            }
        }
        Ok(())
    }

    /// The system prompt of a sample: its own, else the override, else the template default.
    fn system_prompt<'a>(
        &'a self,
        system_override: Option<&'a str>,
        sample: &'a Sample,
    ) -> &'a str {
        sample
            .system
            .as_deref()
            .or(system_override)
            .unwrap_or(&self.default_system)
    }

    fn role(&self, role: Role) -> &str {
        match role {
            Role::User => &self.user,
            Role::Assistant => &self.assistant,
            Role::FunctionCall => &self.function_call,
            Role::Observation => &self.observation,
        }
    }
}

/// A tokenizer plus its identity (sha256 of its files) and vocabulary size.
pub struct TokenizerHandle {
    tok: tokenizers::Tokenizer,
    /// Template pieces (`<|im_start|>user\n`, …) encoded once: every sample repeats them.
    pieces: std::sync::RwLock<std::collections::HashMap<String, std::sync::Arc<[u32]>>>,
    /// sha256 of the tokenizer file(s), hex.
    pub sha256: String,
    /// Vocabulary size with added tokens.
    pub vocab_size: usize,
    /// Where it came from.
    pub source: String,
}

impl std::fmt::Debug for TokenizerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenizerHandle")
            .field("source", &self.source)
            .field("vocab_size", &self.vocab_size)
            .finish()
    }
}

fn sha256_files(paths: &[&Path]) -> Result<String, TokenizeError> {
    let mut h = Sha256::new();
    for p in paths {
        let bytes = std::fs::read(p).map_err(|e| TokenizeError::File {
            path: p.to_path_buf(),
            source: e,
        })?;
        h.update(&bytes);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

impl TokenizerHandle {
    /// Load an HF `tokenizer.json`.
    pub fn from_file(path: &Path) -> Result<TokenizerHandle, TokenizeError> {
        TokenizerHandle::from_file_within(path, None)
    }

    /// [`TokenizerHandle::from_file`], with the opened file checked against `roots` (a
    /// confined pipeline: a path swapped for a link after its check is not read). The file is
    /// read once: parsed and hashed from the same bytes.
    pub fn from_file_within(
        path: &Path,
        roots: Option<&[PathBuf]>,
    ) -> Result<TokenizerHandle, TokenizeError> {
        let bad = |message: String| TokenizeError::Tokenizer {
            from: path.display().to_string(),
            message,
        };
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(
            &mut crate::confine::open_confined(path, roots).map_err(|e| bad(e.to_string()))?,
            &mut bytes,
        )
        .map_err(|e| bad(e.to_string()))?;
        let tok = tokenizers::Tokenizer::from_bytes(&bytes).map_err(|e| bad(e.to_string()))?;
        Ok(TokenizerHandle {
            pieces: Default::default(),
            vocab_size: tok.get_vocab_size(true),
            sha256: Sha256::digest(&bytes)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
            source: path.display().to_string(),
            tok,
        })
    }

    /// Build a byte-level BPE tokenizer from `vocab.json` + `merges.txt` (GPT-2 / Qwen style),
    /// registering `special` strings as special added tokens.
    pub fn from_vocab_merges(
        vocab: &Path,
        merges: &Path,
        special: &[&str],
    ) -> Result<TokenizerHandle, TokenizeError> {
        use tokenizers::models::bpe::BPE;
        use tokenizers::pre_tokenizers::byte_level::ByteLevel;
        let v = vocab.to_string_lossy();
        let m = merges.to_string_lossy();
        let bpe = BPE::from_file(&v, &m)
            .build()
            .map_err(|e| TokenizeError::Tokenizer {
                from: format!("BPE from {v} and {m}"),
                message: e.to_string(),
            })?;
        let mut tok = tokenizers::Tokenizer::new(bpe);
        tok.with_pre_tokenizer(Some(ByteLevel::default().add_prefix_space(false)));
        tok.with_decoder(Some(ByteLevel::default()));
        let specials: Vec<tokenizers::AddedToken> = special
            .iter()
            .map(|s| tokenizers::AddedToken::from(s.to_string(), true))
            .collect();
        tok.add_special_tokens(&specials);
        Ok(TokenizerHandle {
            pieces: Default::default(),
            vocab_size: tok.get_vocab_size(true),
            sha256: sha256_files(&[vocab, merges])?,
            source: format!("{v} + {m}"),
            tok,
        })
    }

    /// Token ids of a text (special tokens in it are recognized, none are added). Offsets
    /// are not computed (`encode_fast`): the ids are the same.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizeError> {
        if text.is_empty() {
            return Ok(Vec::new());
        }
        self.tok
            .encode_fast(text, false)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| TokenizeError::Encode(e.to_string()))
    }

    /// Token ids of a template piece: short strings that every sample repeats are encoded
    /// once and remembered (at most 256 of them; longer or further ones are encoded each
    /// time).
    pub fn encode_piece(&self, text: &str) -> Result<std::sync::Arc<[u32]>, TokenizeError> {
        if let Some(ids) = self.pieces.read().ok().and_then(|m| m.get(text).cloned()) {
            return Ok(ids);
        }
        let ids: std::sync::Arc<[u32]> = self.encode(text)?.into();
        if text.len() <= 256 {
            if let Ok(mut m) = self.pieces.write() {
                if m.len() < 256 {
                    m.insert(text.to_string(), ids.clone());
                }
            }
        }
        Ok(ids)
    }

    /// The tokenizers crate's own tokenizer (for benchmarks that compare against it).
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.tok
    }

    /// Load a `tokenizer.json` once per process: every stage and sink naming the same file
    /// shares one handle.
    pub fn shared(path: &Path) -> Result<std::sync::Arc<TokenizerHandle>, TokenizeError> {
        TokenizerHandle::shared_within(path, None)
    }

    /// [`TokenizerHandle::shared`], loading with [`TokenizerHandle::from_file_within`].
    pub fn shared_within(
        path: &Path,
        roots: Option<&[PathBuf]>,
    ) -> Result<std::sync::Arc<TokenizerHandle>, TokenizeError> {
        use std::collections::HashMap;
        use std::sync::{Arc, Mutex, OnceLock};
        static CACHE: OnceLock<Mutex<HashMap<PathBuf, Arc<TokenizerHandle>>>> = OnceLock::new();
        let key = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        // A confined load never takes a handle cached for a file outside its roots.
        if let Some(roots) = roots {
            if !roots.iter().any(|r| key.starts_with(r)) {
                return Err(TokenizeError::Tokenizer {
                    from: path.display().to_string(),
                    message: "the file lies outside the data roots (the path changed after it \
                              was checked)"
                        .into(),
                });
            }
        }
        let cache = CACHE.get_or_init(Default::default);
        if let Some(h) = cache.lock().ok().and_then(|c| c.get(&key).cloned()) {
            return Ok(h);
        }
        let h = Arc::new(TokenizerHandle::from_file_within(path, roots)?);
        if let Ok(mut c) = cache.lock() {
            c.insert(key, h.clone());
        }
        Ok(h)
    }

    /// Token count of a text (no special tokens added).
    pub fn count(&self, text: &str) -> Result<usize, TokenizeError> {
        Ok(self.encode(text)?.len())
    }

    /// Byte offsets in `text` of each token's start.
    pub fn token_starts(&self, text: &str) -> Result<Vec<usize>, TokenizeError> {
        if text.is_empty() {
            return Ok(Vec::new());
        }
        self.tok
            .encode(text, false)
            .map(|e| e.get_offsets().iter().map(|o| o.0).collect())
            .map_err(|e| TokenizeError::Encode(e.to_string()))
    }

    /// Text of token ids (special tokens kept).
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizeError> {
        self.tok
            .decode(ids, false)
            .map_err(|e| TokenizeError::Encode(e.to_string()))
    }
}

/// Which assistant turns are trained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TrainOn {
    /// Every assistant and function_call turn.
    #[default]
    AllAssistant,
    /// Only the last assistant turn.
    LastAssistant,
}

/// Token budgets applied after templating.
#[derive(Debug, Clone, Copy, Default)]
pub struct Budget {
    /// Tokens before the final answer (system, history, last question), at most.
    pub max_source_tokens: Option<usize>,
    /// Tokens of the final answer, at most.
    pub max_target_tokens: Option<usize>,
}

/// A tokenized sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// Token ids.
    pub ids: Vec<u32>,
    /// 1 where trained.
    pub mask: Vec<u8>,
    /// Old turns dropped to fit the source budget.
    pub turns_dropped: usize,
    /// Whether content was cut inside a turn.
    pub cut: bool,
    /// Tokens of the sample's content before any cut, without template tokens: what
    /// [`TokenCounter::count`] gives with the same tokenizer (`None` where they could differ).
    pub content_tokens: Option<u64>,
}

/// One rendered turn: template prefix, content, template suffix, then untrained `after`.
struct Piece {
    prefix: std::sync::Arc<[u32]>,
    content: Vec<u32>,
    suffix: std::sync::Arc<[u32]>,
    after: Option<std::sync::Arc<[u32]>>,
    trained: bool,
}

impl Piece {
    fn after(&self) -> &[u32] {
        self.after.as_deref().unwrap_or_default()
    }

    fn len(&self) -> usize {
        self.prefix.len() + self.content.len() + self.suffix.len() + self.after().len()
    }
}

fn split_template(t: &str) -> (&str, &str) {
    t.split_once("{content}").unwrap_or((t, ""))
}

/// Render and tokenize a sample with a template, budgets and a training choice.
pub fn encode_sample(
    tok: &TokenizerHandle,
    tpl: &Template,
    system_override: Option<&str>,
    sample: &Sample,
    budget: Budget,
    train_on: TrainOn,
) -> Result<Encoded, String> {
    if let Some(text) = &sample.text {
        let mut ids = tok.encode(text)?;
        let content_tokens =
            (sample.turns.is_empty() && sample.system.is_none()).then_some(ids.len() as u64);
        let mut cut = false;
        let eos = tok.encode_piece(&tpl.eos)?;
        if let Some(max) = budget.max_target_tokens.or(budget.max_source_tokens) {
            if ids.len() + eos.len() > max {
                ids.truncate(max.saturating_sub(eos.len()));
                cut = true;
            }
        }
        ids.extend_from_slice(&eos);
        let mask = vec![1; ids.len()];
        return Ok(Encoded {
            ids,
            mask,
            turns_dropped: 0,
            cut,
            content_tokens,
        });
    }
    let last_model = sample.turns.iter().rposition(|t| t.role.is_model());
    let mut head: Vec<u32> = tok.encode_piece(&tpl.bos)?.to_vec();
    let mut content_tokens = 0u64;
    let system = tpl.system_prompt(system_override, sample);
    if !system.is_empty() {
        let (a, b) = split_template(&tpl.system);
        let ids = tok.encode(system)?;
        if sample.system.is_some() {
            content_tokens += ids.len() as u64;
        }
        head.extend_from_slice(&tok.encode_piece(a)?);
        head.extend(ids);
        head.extend_from_slice(&tok.encode_piece(b)?);
    }
    let mut pieces = Vec::with_capacity(sample.turns.len());
    for (i, t) in sample.turns.iter().enumerate() {
        let (a, b) = split_template(tpl.role(t.role));
        let model = t.role.is_model();
        let content = tok.encode(&t.content)?;
        content_tokens += content.len() as u64;
        pieces.push(Piece {
            prefix: tok.encode_piece(a)?,
            content,
            suffix: tok.encode_piece(b)?,
            after: if model {
                Some(tok.encode_piece(&tpl.after_assistant)?)
            } else {
                None
            },
            trained: model && (train_on == TrainOn::AllAssistant || Some(i) == last_model),
        });
    }
    let (mut turns_dropped, mut cut) = (0, false);
    // The final answer is the target; everything before it is the source.
    let target = last_model.unwrap_or(pieces.len().saturating_sub(1));
    if let Some(max) = budget.max_target_tokens {
        if let Some(p) = pieces.get_mut(target) {
            let fixed = p.prefix.len() + p.suffix.len();
            if p.content.len() + fixed > max {
                p.content.truncate(max.saturating_sub(fixed));
                cut = true;
            }
        }
    }
    if let Some(max) = budget.max_source_tokens {
        let source_len = |pieces: &[Piece], from: usize, to: usize| {
            head.len() + pieces[from..to].iter().map(Piece::len).sum::<usize>()
        };
        // Drop whole old exchanges (a user-side turn and its answer) first, newest kept.
        let mut from = 0;
        while source_len(&pieces, from, target) > max && target >= from + 3 {
            from += 2;
            turns_dropped += 2;
        }
        pieces.drain(..from);
        let target = target - from;
        let over = source_len(&pieces, 0, target).saturating_sub(max);
        if over > 0 && target > 0 {
            // One turn alone is over budget: cut the oldest content of the last question.
            let q = &mut pieces[target - 1];
            let keep = q.content.len().saturating_sub(over);
            q.content.drain(..q.content.len() - keep);
            cut = true;
        }
    }
    let total = head.len() + pieces.iter().map(Piece::len).sum::<usize>();
    let mut ids = Vec::with_capacity(total);
    let mut mask = Vec::with_capacity(total);
    ids.extend_from_slice(&head);
    mask.resize(head.len(), 0u8);
    for p in &pieces {
        let t = u8::from(p.trained);
        ids.extend_from_slice(&p.prefix);
        mask.extend(std::iter::repeat_n(0, p.prefix.len()));
        ids.extend_from_slice(&p.content);
        mask.extend(std::iter::repeat_n(t, p.content.len()));
        ids.extend_from_slice(&p.suffix);
        mask.extend(std::iter::repeat_n(t, p.suffix.len()));
        ids.extend_from_slice(p.after());
        mask.extend(std::iter::repeat_n(0, p.after().len()));
    }
    Ok(Encoded {
        ids,
        mask,
        turns_dropped,
        cut,
        content_tokens: Some(content_tokens),
    })
}

/// The whole rendered text of a sample (what the segments concatenate to).
pub fn render_text(tpl: &Template, system_override: Option<&str>, sample: &Sample) -> String {
    if let Some(text) = &sample.text {
        return format!("{text}{}", tpl.eos);
    }
    let mut out = tpl.bos.clone();
    let system = tpl.system_prompt(system_override, sample);
    if !system.is_empty() {
        out += &tpl.system.replacen("{content}", system, 1);
    }
    for t in &sample.turns {
        out += &tpl.role(t.role).replacen("{content}", &t.content, 1);
        if t.role.is_model() {
            out += &tpl.after_assistant;
        }
    }
    out
}

/// Counts tokens of samples: with a tokenizer, or approximately (one per CJK character, one
/// per four bytes of other words) when none is configured.
#[derive(Clone)]
pub enum TokenCounter {
    /// An HF tokenizer.
    Tokenizer {
        /// The tokenizer.
        handle: std::sync::Arc<TokenizerHandle>,
        /// How it is named in the catalog (`tokenizer.json:<first 12 hex of its sha256>`).
        name: String,
    },
    /// The approximation.
    Approx,
}

impl std::fmt::Debug for TokenCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

impl TokenCounter {
    /// A counter with the tokenizer at `path`, or the approximation for `None`.
    pub fn new(path: Option<&Path>) -> Result<TokenCounter, TokenizeError> {
        TokenCounter::new_within(path, None)
    }

    /// [`TokenCounter::new`], the tokenizer opened within `roots` (a confined pipeline).
    pub fn new_within(
        path: Option<&Path>,
        roots: Option<&[PathBuf]>,
    ) -> Result<TokenCounter, TokenizeError> {
        let Some(path) = path else {
            return Ok(TokenCounter::Approx);
        };
        let handle = TokenizerHandle::shared_within(path, roots)?;
        // The first 6 bytes of the file's sha256, from the bytes the handle was parsed from.
        let hex: String = handle.sha256.chars().take(12).collect();
        let file = path
            .file_name()
            .map_or_else(String::new, |f| f.to_string_lossy().into_owned());
        Ok(TokenCounter::Tokenizer {
            handle,
            name: format!("{file}:{hex}"),
        })
    }

    /// Whether this counter counts with `tok` (the same loaded tokenizer).
    pub fn uses(&self, tok: &TokenizerHandle) -> bool {
        matches!(self, TokenCounter::Tokenizer { handle, .. } if std::ptr::eq(handle.as_ref(), tok))
    }

    /// The name recorded in the catalog's `tokens_by` column.
    pub fn name(&self) -> String {
        match self {
            TokenCounter::Tokenizer { name, .. } => name.clone(),
            TokenCounter::Approx => "approx".into(),
        }
    }

    /// Tokens of a sample's content (system prompt, turns or text), without template tokens.
    pub fn count(&self, s: &Sample) -> u64 {
        s.content_parts()
            .map(|(_, text)| match self {
                TokenCounter::Tokenizer { handle, .. } => handle
                    .count(text)
                    .map_or_else(|_| approx_tokens(text), |n| n as u64),
                TokenCounter::Approx => approx_tokens(text),
            })
            .sum()
    }
}

/// One token per CJK character, about one per four bytes of other words, one per symbol.
pub fn approx_tokens(text: &str) -> u64 {
    let mut n = 0u64;
    let mut word = 0u64;
    for c in text.chars() {
        if c.is_alphanumeric() && (c as u32) < 0x2E80 {
            word += c.len_utf8() as u64;
            continue;
        }
        n += word.div_ceil(4);
        word = 0;
        if !c.is_whitespace() {
            n += 1;
        }
    }
    n + word.div_ceil(4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_templates_load_by_name_and_alias() {
        assert_eq!(Template::load("qwen2").expect("alias").name, "chatml");
        assert_eq!(
            Template::load("llama3").expect("name").bos,
            "<|begin_of_text|>"
        );
        let err = Template::load("vicuna").err();
        assert!(
            matches!(&err, Some(TokenizeError::UnknownTemplate { name, .. }) if name == "vicuna"),
            "{err:?}"
        );
        assert!(err.is_some_and(|e| e.to_string().contains("unknown template")));
        for (name, _) in BUILT_IN {
            assert!(Template::load(name).expect("loads").check().is_ok());
        }
    }
}
