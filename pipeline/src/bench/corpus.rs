//! Long-document corpora for throughput and dedup benchmarks (`sluice bench corpus`): Chinese or
//! English dialogues or documents of a chosen length, built from real sentences, with spoken
//! fillers, the odd phone number, and a share of near duplicates whose source is known.
//!
//! The sentences come from files sluice reads (by default the bundled `examples/data`), so anyone
//! with the repository regenerates the same corpus from the same seed. A near duplicate copies an
//! earlier original and edits it: a few sentences replaced, dropped or inserted, a few characters
//! changed. The edit rate is drawn per copy, so the copies' Jaccard similarity to their source
//! spreads from ~0.6 to 1.0 and a dedup benchmark sees pairs on both sides of its threshold.

use crate::sample::{Role, Sample, Turn};
use std::path::{Path, PathBuf};

/// Language of a generated corpus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// Chinese (sentences split at 。！？; fillers 嗯, 那个, 呃).
    Zh,
    /// English (sentences split at . ! ?; fillers um, uh).
    En,
}

impl std::str::FromStr for Lang {
    type Err = String;
    fn from_str(s: &str) -> Result<Lang, String> {
        match s {
            "zh" => Ok(Lang::Zh),
            "en" => Ok(Lang::En),
            o => Err(format!("language {o:?}: zh or en")),
        }
    }
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Language.
    pub lang: Lang,
    /// Samples.
    pub docs: usize,
    /// Bytes of content per sample: drawn log-uniformly from this range (equal ends: fixed).
    pub bytes: (usize, usize),
    /// Share of samples that are near duplicates of an earlier one.
    pub near_dup: f64,
    /// Dialogues (user / assistant turns) or plain documents.
    pub dialogue: bool,
    /// Seed.
    pub seed: u64,
    /// Files the sentences come from (any format sluice reads).
    pub sources: Vec<PathBuf>,
}

impl Spec {
    /// The bundled sentence sources of a language, relative to the repository root.
    pub fn default_sources(lang: Lang) -> Vec<PathBuf> {
        let files: &[&str] = match lang {
            Lang::Zh => &[
                "examples/data/medicalgpt/medical_corpus.txt",
                "examples/data/medicalgpt/medical_sft_200.jsonl.gz",
                "examples/data/toyhom_medical/sample_IM_300.csv",
                "examples/data/crosswoz/crosswoz_100.jsonl.zst",
                "examples/data/cornucopia_fin/fin_data.jsonl",
            ],
            Lang::En => &["examples/data/c4/c4_demo_40.jsonl"],
        };
        files.iter().map(PathBuf::from).collect()
    }
}

/// One generated sample and, for a near duplicate, the index of the sample it copies.
pub struct Generated {
    /// The sample.
    pub sample: Sample,
    /// Index (in generation order) of the original this one was edited from.
    pub copy_of: Option<usize>,
}

/// The stages' SplitMix64, with the draws the generator needs.
struct Rng(crate::stages::SplitMix64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0.next_u64()
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn unit(&mut self) -> f64 {
        self.0.next_f64()
    }
    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
}

/// Sentences of the source files, each with its end mark, deduplicated, in file order.
pub fn sentences(lang: Lang, sources: &[PathBuf]) -> crate::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for path in sources {
        let (samples, _) = super::read_samples(path)?;
        for s in &samples {
            for (_, part) in s.content_parts() {
                for sentence in split_sentences(lang, part) {
                    if seen.insert(sentence.clone()) {
                        out.push(sentence);
                    }
                }
            }
        }
    }
    if out.len() < 50 {
        return Err(crate::Error::Input {
            path: sources.first().cloned().unwrap_or_default(),
            message: format!(
                "only {} sentences in the sources: a corpus needs at least 50",
                out.len()
            ),
        });
    }
    Ok(out)
}

fn split_sentences(lang: Lang, text: &str) -> Vec<String> {
    let ends: &[char] = match lang {
        Lang::Zh => &['。', '！', '？', '!', '?', '；'],
        Lang::En => &['.', '!', '?'],
    };
    let mut out = Vec::new();
    let mut cur = String::new();
    for c in text.chars() {
        if c == '\n' || c == '\r' {
            push_sentence(lang, &mut out, &mut cur);
            continue;
        }
        cur.push(c);
        if ends.contains(&c) {
            push_sentence(lang, &mut out, &mut cur);
        }
    }
    push_sentence(lang, &mut out, &mut cur);
    out
}

fn push_sentence(lang: Lang, out: &mut Vec<String>, cur: &mut String) {
    let s = cur.trim();
    let long_enough = match lang {
        Lang::Zh => s.chars().count() >= 8,
        Lang::En => s.split_whitespace().count() >= 5,
    };
    let right_script = match lang {
        Lang::Zh => s.chars().any(crate::normalize::is_cjk),
        Lang::En => s.is_ascii(),
    };
    if long_enough && right_script {
        out.push(s.to_string());
    }
    cur.clear();
}

/// Generate the corpus.
pub fn generate(spec: &Spec, pool: &[String]) -> Vec<Generated> {
    let mut rng = Rng(crate::stages::SplitMix64(spec.seed ^ 0x5105_c0de));
    let mut out: Vec<Generated> = Vec::with_capacity(spec.docs);
    let mut originals: Vec<usize> = Vec::new();
    let (lo, hi) = (spec.bytes.0.max(1), spec.bytes.1.max(spec.bytes.0).max(1));
    for i in 0..spec.docs {
        let id = format!("g{i:08}");
        if !originals.is_empty() && rng.chance(spec.near_dup) {
            let src = originals[rng.below(originals.len())];
            let sample = near_duplicate(&mut rng, spec.lang, pool, &out[src].sample, id);
            out.push(Generated {
                sample,
                copy_of: Some(src),
            });
            continue;
        }
        let target = if lo == hi {
            lo
        } else {
            (lo as f64 * (hi as f64 / lo as f64).powf(rng.unit())) as usize
        };
        let sample = if spec.dialogue {
            dialogue(&mut rng, spec.lang, pool, target, id)
        } else {
            let mut text = String::new();
            while text.len() < target {
                push_joined(spec.lang, &mut text, &pool[rng.below(pool.len())]);
            }
            Sample::document(id, text)
        };
        originals.push(i);
        out.push(Generated {
            sample,
            copy_of: None,
        });
    }
    out
}

fn push_joined(lang: Lang, text: &mut String, sentence: &str) {
    if lang == Lang::En && !text.is_empty() {
        text.push(' ');
    }
    text.push_str(sentence);
}

fn filler(rng: &mut Rng, lang: Lang) -> &'static str {
    let words: &[&str] = match lang {
        Lang::Zh => &["嗯，", "那个，", "呃", "嗯嗯，", "啊，", "就是，", "额…"],
        Lang::En => &["Um, ", "Uh, ", "Well, um, "],
    };
    words[rng.below(words.len())]
}

/// A customer-service style dialogue: short user turns (fillers, now and then a phone number)
/// and longer assistant answers, until `target` bytes.
fn dialogue(rng: &mut Rng, lang: Lang, pool: &[String], target: usize, id: String) -> Sample {
    let mut turns = Vec::new();
    let mut bytes = 0;
    while bytes < target || turns.len() < 2 {
        let mut user = String::new();
        if rng.chance(0.4) {
            user.push_str(filler(rng, lang));
        }
        for _ in 0..1 + rng.below(2) {
            push_joined(lang, &mut user, &pool[rng.below(pool.len())]);
        }
        if rng.chance(0.05) {
            let phone = format!("1{}{:09}", 3 + rng.below(7), rng.next() % 1_000_000_000);
            user.push_str(match lang {
                Lang::Zh => "我的电话是",
                Lang::En => " My phone is ",
            });
            user.push_str(&phone);
        }
        let mut answer = String::new();
        let want = (target.saturating_sub(bytes + user.len()) / 2).max(200);
        while answer.len() < want.min(2400) {
            push_joined(lang, &mut answer, &pool[rng.below(pool.len())]);
        }
        bytes += user.len() + answer.len();
        turns.push(Turn::new(Role::User, user));
        turns.push(Turn::new(Role::Assistant, answer));
    }
    Sample::dialogue(id, turns)
}

/// Edit a copy of `src`: per sentence, with the copy's edit rate, replace, drop, or insert a
/// sentence, or change a few characters.
fn near_duplicate(rng: &mut Rng, lang: Lang, pool: &[String], src: &Sample, id: String) -> Sample {
    let rate = rng.unit() * 0.12;
    let mut edit = |text: &str| -> String {
        let mut out = String::with_capacity(text.len());
        for s in split_sentences(lang, text) {
            if !rng.chance(rate) {
                push_joined(lang, &mut out, &s);
                continue;
            }
            match rng.below(4) {
                0 => push_joined(lang, &mut out, &pool[rng.below(pool.len())]),
                1 => {}
                2 => {
                    push_joined(lang, &mut out, &s);
                    push_joined(lang, &mut out, &pool[rng.below(pool.len())]);
                }
                _ => {
                    let mut chars: Vec<char> = s.chars().collect();
                    for _ in 0..1 + rng.below(3) {
                        let at = rng.below(chars.len());
                        chars[at] = match lang {
                            Lang::Zh => '的',
                            Lang::En => 'x',
                        };
                    }
                    push_joined(lang, &mut out, &chars.into_iter().collect::<String>());
                }
            }
        }
        if out.is_empty() {
            text.to_string()
        } else {
            out
        }
    };
    let mut s = match &src.text {
        Some(t) => Sample::document(id, edit(t)),
        None => Sample::dialogue(
            id,
            src.turns
                .iter()
                .map(|t| Turn::new(t.role, edit(&t.content)))
                .collect(),
        ),
    };
    s.domain.clone_from(&src.domain);
    s
}

/// Write the corpus as JSONL (sluice's own sample format), atomically.
pub fn write_jsonl(path: &Path, corpus: &[Generated]) -> crate::Result<u64> {
    use std::io::Write;
    let mut f = crate::storage::AtomicFile::create(path)?;
    let io = |e| crate::Error::io(path, e);
    let mut bytes = 0u64;
    {
        let mut w = std::io::BufWriter::new(&mut f);
        for g in corpus {
            let s = &g.sample;
            let value = match &s.text {
                Some(text) => serde_json::json!({"id": s.id, "text": text}),
                None => serde_json::json!({"id": s.id, "turns": s.turns}),
            };
            let mut line = value.to_string().into_bytes();
            line.push(b'\n');
            bytes += line.len() as u64;
            w.write_all(&line).map_err(io)?;
        }
        w.flush().map_err(io)?;
    }
    f.commit()?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> Vec<String> {
        (0..200)
            .map(|i| format!("这是第{i}句关于信用卡还款和账单分期的说明。"))
            .collect()
    }

    #[test]
    fn same_seed_same_corpus_and_lengths_in_range() {
        let spec = Spec {
            lang: Lang::Zh,
            docs: 300,
            bytes: (500, 20_000),
            near_dup: 0.3,
            dialogue: true,
            seed: 3,
            sources: vec![],
        };
        let a = generate(&spec, &pool());
        let b = generate(&spec, &pool());
        let json = |g: &[Generated]| {
            g.iter()
                .map(|g| serde_json::to_string(&g.sample).expect("serializes"))
                .collect::<Vec<_>>()
        };
        assert_eq!(json(&a), json(&b));
        let dups = a.iter().filter(|g| g.copy_of.is_some()).count();
        assert!((50..130).contains(&dups), "{dups} near duplicates of 300");
        for g in a.iter().filter(|g| g.copy_of.is_none()) {
            let len: usize = g.sample.turns.iter().map(|t| t.content.len()).sum();
            assert!((500..20_000 + 6000).contains(&len), "{len} bytes");
        }
        let lens: Vec<usize> = a
            .iter()
            .map(|g| g.sample.turns.iter().map(|t| t.content.len()).sum())
            .collect();
        assert!(lens.iter().any(|&l| l < 1500) && lens.iter().any(|&l| l > 8000));
    }
}
