//! `sluice eval run MODEL_DIR EVAL`: a model the bundled trainer loads (HF layout:
//! `config.json`, `*.safetensors`, `tokenizer.json`) scored on an evaluation set of
//! [`super::build`].
//!
//! Every item is rendered with the chat template the model was trained with, exactly as the
//! shards writer renders training samples ([`encode_sample`]): the context is everything before
//! the answer's content (system, history, question, the assistant turn's opening), the
//! continuation the answer's content tokens (not the template's closing tokens, which are the
//! same for every option).
//! - Open items: the reference's log-likelihood and perplexity; then greedy generation (up to
//!   `max_new_tokens`, stopping at the template's end of turn) scored against the reference by
//!   BLEU-4 (sacrebleu's `zh` tokenizer where the reference has CJK characters, `13a`
//!   elsewhere), ROUGE-L (characters for Chinese, words for English), exact match and token F1.
//! - Multiple choice: each option's log-likelihood; `acc` picks the highest, `acc_norm` the
//!   highest per character of the option (as lm-evaluation-harness's `acc_norm`).
//!
//! Results: `samples.jsonl` (one line per item) and `summary.json` (overall, per domain, task
//! and tag value); corpus BLEU of a group sums the n-gram counts of its pairs.

use super::{McItem, OpenItem};
use anyhow::{bail, Context, Result};
use serde::Serialize;
use sluice_pipeline::sample::Turn;
use sluice_pipeline::tokenize::{encode_sample, Budget, Template, TokenizerHandle, TrainOn};
use sluice_trainer::metrics::{self, BleuStats, BleuTokenizer};
use sluice_trainer::model::Model;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What `eval run` is asked for.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The model folder (HF layout).
    pub model: PathBuf,
    /// The evaluation folder (`open/`, `mc/`).
    pub eval: PathBuf,
    /// Where results go.
    pub out: PathBuf,
    /// The chat template the model was trained with.
    pub template: String,
    /// The tokenizer (default `<model>/tokenizer.json`).
    pub tokenizer: Option<PathBuf>,
    /// Longest generation in tokens (0: no generation, likelihoods only).
    pub max_new_tokens: usize,
    /// Items per file at most (0: all).
    pub limit: usize,
    /// `cpu`, `cuda`, `cuda:N` or `auto`.
    pub device: String,
    /// Tokens of context (system, history, question) at most: older turns are dropped first,
    /// as the shards writer does (None: everything).
    pub max_source_tokens: Option<usize>,
}

/// A model ready to score items with one tokenizer and template.
pub struct Scorer<'a> {
    /// The model.
    pub model: &'a Model,
    /// Its tokenizer.
    pub tok: &'a TokenizerHandle,
    /// The chat template.
    pub tpl: &'a Template,
    /// Tokens the template closes an assistant turn with (not scored).
    suffix: Vec<u32>,
    /// Most positions the model is given at once.
    pub max_positions: usize,
    /// Context budget ([`RunOptions::max_source_tokens`]).
    pub max_source_tokens: Option<usize>,
}

/// How one open item scored.
#[derive(Debug, Clone, Serialize)]
pub struct OpenScore {
    /// Log-likelihood of the reference's tokens.
    pub log_likelihood: f64,
    /// Its tokens.
    pub tokens: usize,
    /// `exp(−log_likelihood / tokens)`.
    pub perplexity: f64,
    /// The greedy generation, when generated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prediction: Option<String>,
    /// Sentence BLEU (effective order), 0–100.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bleu: Option<f64>,
    /// ROUGE-L F-measure, 0–1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rouge_l: Option<f64>,
    /// Exact match (SQuAD normalization), 0 or 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exact_match: Option<f64>,
    /// Token F1 (SQuAD), 0–1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub f1: Option<f64>,
    /// The BLEU counts, for corpus BLEU.
    #[serde(skip)]
    pub bleu_stats: Option<BleuStats>,
}

/// How one multiple-choice item scored.
#[derive(Debug, Clone, Serialize)]
pub struct McScore {
    /// Each option's log-likelihood.
    pub log_likelihoods: Vec<f64>,
    /// Each option's length in characters (the `acc_norm` divisor).
    pub chars: Vec<usize>,
    /// The option with the highest log-likelihood.
    pub pred: usize,
    /// The option with the highest log-likelihood per character.
    pub pred_norm: usize,
    /// `pred == gold`.
    pub acc: f64,
    /// `pred_norm == gold`.
    pub acc_norm: f64,
}

/// The BLEU tokenizer of a reference: `zh` where it has CJK ideographs, else `13a`.
pub fn bleu_tokenizer(reference: &str) -> BleuTokenizer {
    BleuTokenizer::for_text(reference)
}

impl<'a> Scorer<'a> {
    /// A scorer; `max_positions` bounds context plus answer.
    pub fn new(
        model: &'a Model,
        tok: &'a TokenizerHandle,
        tpl: &'a Template,
        max_positions: usize,
    ) -> Result<Scorer<'a>> {
        let suffix = tpl.assistant.split_once("{content}").map_or("", |(_, s)| s);
        let suffix = tok.encode_piece(suffix)?.to_vec();
        Ok(Scorer {
            model,
            tok,
            tpl,
            suffix,
            max_positions,
            max_source_tokens: None,
        })
    }

    /// Context and answer tokens of a dialogue ending in `answer`.
    fn split(
        &self,
        system: Option<&str>,
        history: &[Turn],
        prompt: &str,
        answer: &str,
    ) -> Result<(Vec<u32>, Vec<u32>)> {
        let sample = super::dialogue("", "", "", system, history, prompt, answer);
        let enc = encode_sample(
            self.tok,
            self.tpl,
            None,
            &sample,
            Budget {
                max_source_tokens: self.max_source_tokens,
                max_target_tokens: None,
            },
            TrainOn::LastAssistant,
        )
        .map_err(anyhow::Error::msg)?;
        let Some(start) = enc.mask.iter().position(|&m| m == 1) else {
            bail!("the template trains no token of the answer");
        };
        let end = enc
            .mask
            .iter()
            .rposition(|&m| m == 1)
            .map_or(start, |e| e + 1);
        // The closing tokens follow the content inside the trained span.
        let content_end = if enc.ids[start..end].ends_with(&self.suffix) {
            end - self.suffix.len()
        } else {
            end
        };
        Ok((
            enc.ids[..start].to_vec(),
            enc.ids[start..content_end].to_vec(),
        ))
    }

    fn fits(&self, context: usize, answer: usize) -> Result<()> {
        if context + answer > self.max_positions {
            bail!(
                "{} tokens of context and answer; the model takes {}",
                context + answer,
                self.max_positions
            );
        }
        Ok(())
    }

    /// Score an open item; generate when `max_new_tokens > 0`.
    pub fn open(&self, it: &OpenItem, max_new_tokens: usize) -> Result<OpenScore> {
        let (context, answer) =
            self.split(it.system.as_deref(), &it.history, &it.prompt, &it.reference)?;
        if answer.is_empty() {
            bail!("the reference has no tokens");
        }
        self.fits(context.len(), answer.len())?;
        let c = self.model.score_continuation(&context, &answer)?;
        let mut s = OpenScore {
            log_likelihood: c.log_likelihood,
            tokens: answer.len(),
            perplexity: (-c.log_likelihood / answer.len() as f64).exp(),
            prediction: None,
            bleu: None,
            rouge_l: None,
            exact_match: None,
            f1: None,
            bleu_stats: None,
        };
        if max_new_tokens > 0 {
            let room = self.max_positions.saturating_sub(context.len());
            let mut ids = self.model.generate_greedy(
                &context,
                max_new_tokens.min(room),
                self.suffix.first().copied(),
            )?;
            if self.suffix.first().is_some_and(|&e| ids.last() == Some(&e)) {
                ids.pop();
            }
            let pred = self.tok.decode(&ids)?;
            let tok = bleu_tokenizer(&it.reference);
            let stats = metrics::bleu_stats(&pred, &it.reference, tok);
            s.bleu = Some(metrics::bleu_score(&stats, true));
            s.bleu_stats = Some(stats);
            s.rouge_l = Some(metrics::rouge_l(&pred, &it.reference));
            s.exact_match = Some(metrics::exact_match(&pred, &it.reference));
            s.f1 = Some(metrics::token_f1(&pred, &it.reference));
            s.prediction = Some(pred);
        }
        Ok(s)
    }

    /// Score a multiple-choice item.
    pub fn mc(&self, it: &McItem) -> Result<McScore> {
        let mut lls = Vec::with_capacity(it.choices.len());
        let mut chars = Vec::with_capacity(it.choices.len());
        for choice in &it.choices {
            let (context, answer) = self.split(None, &it.history, &it.prompt, choice)?;
            if answer.is_empty() {
                bail!("option {choice:?} has no tokens");
            }
            self.fits(context.len(), answer.len())?;
            lls.push(
                self.model
                    .score_continuation(&context, &answer)?
                    .log_likelihood,
            );
            chars.push(choice.chars().count());
        }
        let scored: Vec<(f64, usize)> = lls.iter().copied().zip(chars.iter().copied()).collect();
        let (pred, pred_norm) =
            sluice_trainer::score::choose(&scored).context("an item without options")?;
        Ok(McScore {
            acc: f64::from(u8::from(pred == it.gold)),
            acc_norm: f64::from(u8::from(pred_norm == it.gold)),
            log_likelihoods: lls,
            chars,
            pred,
            pred_norm,
        })
    }
}

/// Totals of a group of items.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct Group {
    /// Open items scored.
    pub open: usize,
    /// Mean log-likelihood per reference token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_likelihood_per_token: Option<f64>,
    /// `exp(−Σ log-likelihood / Σ tokens)`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub perplexity: Option<f64>,
    /// Corpus BLEU-4 (the pairs' n-gram counts summed), 0–100.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bleu: Option<f64>,
    /// Mean ROUGE-L F-measure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rouge_l: Option<f64>,
    /// Mean exact match.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exact_match: Option<f64>,
    /// Mean token F1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub f1: Option<f64>,
    /// Multiple-choice items scored.
    pub mc: usize,
    /// Of which synthetic.
    pub mc_synthetic: usize,
    /// Accuracy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acc: Option<f64>,
    /// Length-normalized accuracy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acc_norm: Option<f64>,
    #[serde(skip)]
    sums: Sums,
}

#[derive(Debug, Clone, Default, PartialEq)]
struct Sums {
    ll: f64,
    tokens: usize,
    generated: usize,
    rouge: f64,
    em: f64,
    f1: f64,
    bleu: BleuStats,
    acc: f64,
    acc_norm: f64,
}

impl Group {
    fn add_open(&mut self, s: &OpenScore) {
        self.open += 1;
        self.sums.ll += s.log_likelihood;
        self.sums.tokens += s.tokens;
        if let Some(st) = &s.bleu_stats {
            self.sums.generated += 1;
            self.sums.rouge += s.rouge_l.unwrap_or(0.0);
            self.sums.em += s.exact_match.unwrap_or(0.0);
            self.sums.f1 += s.f1.unwrap_or(0.0);
            let b = &mut self.sums.bleu;
            for n in 0..4 {
                b.correct[n] += st.correct[n];
                b.total[n] += st.total[n];
            }
            b.sys_len += st.sys_len;
            b.ref_len += st.ref_len;
        }
    }

    fn add_mc(&mut self, s: &McScore, synthetic: bool) {
        self.mc += 1;
        self.mc_synthetic += usize::from(synthetic);
        self.sums.acc += s.acc;
        self.sums.acc_norm += s.acc_norm;
    }

    fn finish(&mut self) {
        let s = &self.sums;
        if s.tokens > 0 {
            let per = s.ll / s.tokens as f64;
            self.log_likelihood_per_token = Some(per);
            self.perplexity = Some((-per).exp());
        }
        if s.generated > 0 {
            let n = s.generated as f64;
            self.bleu = Some(metrics::bleu_score(&s.bleu, false));
            self.rouge_l = Some(s.rouge / n);
            self.exact_match = Some(s.em / n);
            self.f1 = Some(s.f1 / n);
        }
        if self.mc > 0 {
            self.acc = Some(s.acc / self.mc as f64);
            self.acc_norm = Some(s.acc_norm / self.mc as f64);
        }
    }
}

/// `summary.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// The model folder.
    pub model: String,
    /// The evaluation folder.
    pub eval: String,
    /// The template.
    pub template: String,
    /// Every item.
    pub overall: Group,
    /// By domain.
    pub by_domain: BTreeMap<String, Group>,
    /// By task.
    pub by_task: BTreeMap<String, Group>,
    /// By `tag=value`.
    pub by_tag: BTreeMap<String, Group>,
    /// Items not scored, with why (too long for the model, no tokens).
    pub skipped: Vec<String>,
}

fn read_jsonl<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).with_context(|| format!("{}: line {}", path.display(), i + 1))
        })
        .collect()
}

fn set_files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    out.sort();
    out
}

/// Score every item of an evaluation folder with a scorer; writes `samples.jsonl` and
/// `summary.json` under `out` and returns the summary.
pub fn score_folder(
    scorer: &Scorer<'_>,
    eval: &Path,
    out: &Path,
    max_new_tokens: usize,
    limit: usize,
    progress: &mut dyn FnMut(&str),
) -> Result<Summary> {
    let open_files = set_files(&eval.join("open"));
    let mc_files = set_files(&eval.join("mc"));
    if open_files.is_empty() && mc_files.is_empty() {
        bail!(
            "{}: no open/*.jsonl or mc/*.jsonl (make one with `sluice eval build`)",
            eval.display()
        );
    }
    let mut lines = Vec::new();
    let mut overall = Group::default();
    let mut by_domain: BTreeMap<String, Group> = BTreeMap::new();
    let mut by_task: BTreeMap<String, Group> = BTreeMap::new();
    let mut by_tag: BTreeMap<String, Group> = BTreeMap::new();
    let mut skipped = Vec::new();
    let cap = |n: usize| if limit == 0 { n } else { n.min(limit) };
    for f in &open_files {
        let items: Vec<OpenItem> = read_jsonl(f)?;
        let n = cap(items.len());
        for (k, it) in items.iter().take(n).enumerate() {
            let s = match scorer.open(it, max_new_tokens) {
                Ok(s) => s,
                Err(e) => {
                    skipped.push(format!("open {}: {e:#}", it.id));
                    continue;
                }
            };
            overall.add_open(&s);
            by_domain.entry(it.domain.clone()).or_default().add_open(&s);
            by_task.entry(it.task.clone()).or_default().add_open(&s);
            for (key, v) in &it.tags {
                by_tag.entry(format!("{key}={v}")).or_default().add_open(&s);
            }
            let mut line = serde_json::json!({
                "form": "open", "id": it.id, "domain": it.domain, "task": it.task,
                "reference": it.reference,
            });
            if let (Some(obj), Ok(serde_json::Value::Object(more))) =
                (line.as_object_mut(), serde_json::to_value(&s))
            {
                obj.extend(more);
            }
            lines.push(line);
            progress(&format!("{}: {}/{n}", f.display(), k + 1));
        }
    }
    for f in &mc_files {
        let items: Vec<McItem> = read_jsonl(f)?;
        let n = cap(items.len());
        for (k, it) in items.iter().take(n).enumerate() {
            let s = match scorer.mc(it) {
                Ok(s) => s,
                Err(e) => {
                    skipped.push(format!("mc {}: {e:#}", it.id));
                    continue;
                }
            };
            overall.add_mc(&s, it.synthetic);
            by_domain
                .entry(it.domain.clone())
                .or_default()
                .add_mc(&s, it.synthetic);
            by_task
                .entry(it.task.clone())
                .or_default()
                .add_mc(&s, it.synthetic);
            for (key, v) in &it.tags {
                by_tag
                    .entry(format!("{key}={v}"))
                    .or_default()
                    .add_mc(&s, it.synthetic);
            }
            let mut line = serde_json::json!({
                "form": "mc", "id": it.id, "domain": it.domain, "task": it.task,
                "gold": it.gold, "synthetic": it.synthetic,
            });
            if let (Some(obj), Ok(serde_json::Value::Object(more))) =
                (line.as_object_mut(), serde_json::to_value(&s))
            {
                obj.extend(more);
            }
            lines.push(line);
            progress(&format!("{}: {}/{n}", f.display(), k + 1));
        }
    }
    overall.finish();
    for g in by_domain
        .values_mut()
        .chain(by_task.values_mut())
        .chain(by_tag.values_mut())
    {
        g.finish();
    }
    let mut text = String::new();
    for l in &lines {
        text.push_str(&l.to_string());
        text.push('\n');
    }
    sluice_pipeline::storage::write_atomic(&out.join("samples.jsonl"), text.as_bytes())?;
    let summary = Summary {
        model: String::new(),
        eval: eval.display().to_string(),
        template: scorer.tpl.name.clone(),
        overall,
        by_domain,
        by_task,
        by_tag,
        skipped,
    };
    Ok(summary)
}

/// Load the model and tokenizer of `opts` and score the evaluation folder.
pub fn run(opts: &RunOptions, progress: &mut dyn FnMut(&str)) -> Result<Summary> {
    let tpl = Template::load(&opts.template).map_err(anyhow::Error::msg)?;
    let tok_path = opts
        .tokenizer
        .clone()
        .unwrap_or_else(|| opts.model.join("tokenizer.json"));
    let tok = TokenizerHandle::from_file(&tok_path)
        .map_err(|e| anyhow::anyhow!("{e} (give --tokenizer when the model folder has none)"))?;
    let config = sluice_trainer::ModelConfig::load(&opts.model)
        .with_context(|| format!("{}: config.json", opts.model.display()))?;
    if tok.vocab_size > config.vocab_size {
        bail!(
            "the tokenizer has {} ids, the model's vocabulary {}: not this model's tokenizer",
            tok.vocab_size,
            config.vocab_size
        );
    }
    let max_positions = config
        .raw
        .get("max_position_embeddings")
        .and_then(|v| v.as_u64())
        .map_or(4096, |v| v.clamp(16, 1 << 20) as usize);
    let device = sluice_trainer::train::device(&opts.device)?;
    let model = Model::from_pretrained(
        &opts.model,
        Some(config),
        &device,
        sluice_trainer::DType::F32,
        max_positions,
    )?;
    let mut scorer = Scorer::new(&model, &tok, &tpl, max_positions)?;
    scorer.max_source_tokens = opts.max_source_tokens;
    let mut summary = score_folder(
        &scorer,
        &opts.eval,
        &opts.out,
        opts.max_new_tokens,
        opts.limit,
        progress,
    )?;
    summary.model = opts.model.display().to_string();
    let mut text = serde_json::to_string_pretty(&summary)?;
    text.push('\n');
    sluice_pipeline::storage::write_atomic(&opts.out.join("summary.json"), text.as_bytes())?;
    Ok(summary)
}
