//! Diversity and balance of a curated run, judged before training: per domain and task the
//! counts, length and turn distributions, a difficulty proxy, instruction types, near-duplicate
//! cluster sizes and topic clusters, with warnings when one task or cluster dominates.
//!
//! Definitions (every number in `diversity.json` follows them):
//! - length: characters of a sample's content (system, every turn, or the document);
//!   turns: user turns (0 for documents).
//! - tokens: jieba's words (English words lowercased, CJK words as jieba cuts them; tokens with
//!   no letter or digit dropped). A token is rare when at most `max(1, N / 10,000)` of the N
//!   samples contain it; a sample's rare share is its rare tokens over its tokens.
//! - difficulty: the mean of the sample's percentile ranks in length, turns and rare share
//!   across the run; easy below 1/3, hard from 2/3.
//! - instruction type: the first content word of the first user turn (of a document: its text)
//!   after greetings and politeness (`请`, `你好`, `please`, `can you`…): a leading verb or noun
//!   in English, a leading phrase (jieba word) in Chinese.
//! - near-duplicate clusters: the `minhash_cluster` tags of a `minhash` stage with
//!   `drop = false`; without them, computed on the topic sample (MinHash, Jaccard 0.8,
//!   verified on shingles).
//! - topics: TF-IDF over the sample (at most `sample` samples, the smallest by a seeded hash
//!   of their ids), terms in at least 2 samples and at most half of them, k-means (k-means++
//!   seeding, cosine) with `k` clusters; each with its size, top terms and the ids nearest its
//!   centre.
//!
//! Memory: per sample a few numbers (length, turns, rare share, group), the document frequency
//! of every token, and the topic sample's texts.

use anyhow::{bail, Result};
use serde::Serialize;
use sluice_pipeline::sample::{Role, Sample};
use sluice_pipeline::stages::exact_dedup::Scope;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::path::{Path, PathBuf};

/// What to compute.
#[derive(Debug, Clone)]
pub struct Options {
    /// The run folder.
    pub run: PathBuf,
    /// Only this split (and `<split>_*`); None: every curated file.
    pub split: Option<String>,
    /// Samples in the topic sample at most.
    pub sample: usize,
    /// Topic clusters.
    pub k: usize,
    /// A task, domain or cluster above this share of the samples is warned about.
    pub max_share: f64,
    /// Seed of the sample and of k-means.
    pub seed: u64,
}

/// A distribution's summary.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Dist {
    /// Mean.
    pub mean: f64,
    /// 10th percentile (nearest rank).
    pub p10: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// Largest.
    pub max: f64,
}

impl Dist {
    fn of(values: &mut [f64]) -> Dist {
        if values.is_empty() {
            return Dist::default();
        }
        values.sort_by(f64::total_cmp);
        let at = |q: f64| {
            let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
            values[rank - 1]
        };
        Dist {
            mean: values.iter().sum::<f64>() / values.len() as f64,
            p10: at(0.10),
            p50: at(0.50),
            p90: at(0.90),
            max: values[values.len() - 1],
        }
    }
}

/// Statistics of one group (a domain and task, or everything).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct GroupStats {
    /// Domain (`*`: every domain).
    pub domain: String,
    /// Task (`*`: every task).
    pub task: String,
    /// Samples.
    pub count: u64,
    /// Of the run's samples.
    pub share: f64,
    /// Characters of content.
    pub chars: Dist,
    /// Samples by number of user turns.
    pub turns: BTreeMap<u64, u64>,
    /// Share of rare tokens.
    pub rare_share: Dist,
    /// Samples by difficulty: easy, medium, hard.
    pub difficulty: BTreeMap<String, u64>,
    /// The most common instruction types, with counts (at most 10).
    pub instruction_types: Vec<(String, u64)>,
    /// Distinct instruction types.
    pub distinct_instruction_types: u64,
}

/// Near-duplicate clusters.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Clusters {
    /// `minhash_cluster tags` or `computed on the topic sample`.
    pub from: String,
    /// Samples looked at.
    pub samples: u64,
    /// Clusters by size: `1`, `2`, `3-5`, `6-10`, `11+`.
    pub sizes: BTreeMap<String, u64>,
    /// The largest clusters: size and up to 5 ids.
    pub largest: Vec<(u64, Vec<String>)>,
}

/// One topic cluster.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Topic {
    /// Samples of the topic sample in it.
    pub size: u64,
    /// Of the topic sample.
    pub share: f64,
    /// Its heaviest terms.
    pub terms: Vec<String>,
    /// The ids nearest its centre.
    pub examples: Vec<String>,
}

/// `diversity.json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Diversity {
    /// The run.
    pub run: String,
    /// Files read.
    pub files: Vec<String>,
    /// Every sample.
    pub overall: GroupStats,
    /// Per domain and task.
    pub groups: Vec<GroupStats>,
    /// Near-duplicate clusters.
    pub duplicate_clusters: Clusters,
    /// Samples in the topic sample.
    pub topic_sample: u64,
    /// Topic clusters, largest first.
    pub topics: Vec<Topic>,
    /// What dominates.
    pub warnings: Vec<String>,
}

/// Words that open requests without saying what is asked.
const POLITE: [&str; 24] = [
    "请", "请问", "你好", "您好", "麻烦", "帮", "帮我", "能否", "可以", "我想", "能", "给",
    "please", "can", "could", "would", "hi", "hello", "hey", "kindly", "help", "want", "to", "me",
];

/// Question words count as an instruction type although jieba tags them as pronouns.
const QUESTION: [&str; 16] = [
    "什么",
    "怎么",
    "怎么样",
    "如何",
    "为什么",
    "哪",
    "哪里",
    "哪些",
    "多少",
    "是否",
    "what",
    "how",
    "why",
    "which",
    "who",
    "when",
];

/// Common verbs too general to name a topic.
const GENERAL_VERBS: [&str; 20] = [
    "是", "有", "会", "要", "能", "可以", "没有", "就", "说", "去", "来", "做", "到", "让", "给",
    "看", "想", "知道", "觉得", "得",
];

fn is_word(t: &str) -> bool {
    t.chars().any(char::is_alphanumeric)
}

/// The sample's tokens (see the module's definitions).
fn tokens(jieba: &jieba_rs::Jieba, text: &str) -> Vec<String> {
    jieba
        .cut(text, false)
        .into_iter()
        .filter(|t| is_word(t))
        .map(str::to_lowercase)
        .collect()
}

/// Content words: nouns, verbs, adjectives, idioms and English words, without digits, the
/// most general verbs and English function words (for topics).
pub(crate) fn content_words(jieba: &jieba_rs::Jieba, text: &str) -> Vec<String> {
    const EN_STOP: [&str; 24] = [
        "the", "a", "an", "and", "or", "of", "to", "in", "on", "for", "is", "are", "be", "it",
        "this", "that", "with", "as", "i", "you", "we", "he", "she", "they",
    ];
    jieba
        .tag(text, false)
        .into_iter()
        .filter(|t| {
            let w = t.word;
            let kind = t.tag;
            is_word(w)
                && !w.chars().all(|c| c.is_ascii_digit())
                && !GENERAL_VERBS.contains(&w)
                && (kind.starts_with('n')
                    || kind.starts_with('v')
                    || kind.starts_with('a')
                    || matches!(kind, "eng" | "l" | "i" | "j"))
        })
        .map(|t| t.word.to_lowercase())
        .filter(|w| !EN_STOP.contains(&w.as_str()))
        .collect()
}

/// The instruction type of a sample: the first verb, noun or question word of its first user
/// turn (of a document, its text), after politeness and the most general verbs (是, 有, 想…).
pub fn instruction_type(jieba: &jieba_rs::Jieba, s: &Sample) -> String {
    let first = s
        .turns
        .iter()
        .find(|t| t.role == Role::User)
        .map(|t| t.content.as_str())
        .or(s.text.as_deref())
        .unwrap_or("");
    let head: String = first.chars().take(64).collect();
    for t in jieba.tag(&head, false) {
        let w = t.word.trim().to_lowercase();
        if !is_word(&w) || POLITE.contains(&w.as_str()) || GENERAL_VERBS.contains(&w.as_str()) {
            continue;
        }
        let kind = t.tag;
        if QUESTION.contains(&w.as_str())
            || kind.starts_with('v')
            || kind.starts_with('n')
            || (kind == "eng"
                && !matches!(w.as_str(), "i" | "you" | "we" | "it" | "is" | "the" | "a"))
        {
            return w;
        }
    }
    "(none)".into()
}

fn content(s: &Sample) -> String {
    Scope::All.text(s)
}

fn user_turns(s: &Sample) -> u64 {
    s.turns.iter().filter(|t| t.role == Role::User).count() as u64
}

/// Per sample, what pass 2 keeps.
struct Row {
    group: usize,
    chars: f64,
    turns: f64,
    rare: f64,
}

fn size_bucket(n: u64) -> &'static str {
    match n {
        1 => "1",
        2 => "2",
        3..=5 => "3-5",
        6..=10 => "6-10",
        _ => "11+",
    }
}

/// Percentile rank of `v` in sorted `all` (share of values below, ties counted half).
fn rank(all: &[f64], v: f64) -> f64 {
    let below = all.partition_point(|x| *x < v);
    let upto = all.partition_point(|x| *x <= v);
    (below as f64 + (upto - below) as f64 / 2.0) / all.len().max(1) as f64
}

/// Compute the statistics of a run.
pub fn compute(opts: &Options) -> Result<Diversity> {
    if opts.k == 0 || opts.k > 100 {
        bail!("k {}: from 1 to 100 topic clusters", opts.k);
    }
    if !(opts.max_share > 0.0 && opts.max_share <= 1.0) {
        bail!("max share {}: within (0, 1]", opts.max_share);
    }
    let files = crate::curated::files(&opts.run, &|s| match &opts.split {
        None => true,
        Some(split) => s == split || s.starts_with(&format!("{split}_")),
    })?;
    if files.is_empty() {
        bail!(
            "{}: no curated file{}",
            opts.run.display(),
            match &opts.split {
                Some(s) => format!(" of split {s:?}"),
                None => String::new(),
            }
        );
    }
    let jieba = jieba_rs::Jieba::new();
    // Pass 1: document frequencies, groups, clusters, the topic sample.
    let mut df: HashMap<String, u32> = HashMap::new();
    let mut n = 0u64;
    let mut group_of: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut cluster_members: HashMap<String, Vec<String>> = HashMap::new();
    let mut tagged = 0u64;
    // The topic sample: the `sample` smallest seeded hashes of ids.
    let mut heap: BinaryHeap<(u64, String, String)> = BinaryHeap::new();
    for f in &files {
        crate::eval::build::read_samples(f, &mut |s| {
            n += 1;
            let text = content(&s);
            let toks: HashSet<String> = tokens(&jieba, &text).into_iter().collect();
            for t in toks {
                *df.entry(t).or_default() += 1;
            }
            let next = group_of.len();
            group_of
                .entry((s.domain.clone(), s.task.clone()))
                .or_insert(next);
            match s.tags.get("minhash_cluster") {
                Some(c) => {
                    tagged += 1;
                    cluster_members
                        .entry(c.clone())
                        .or_default()
                        .push(s.id.clone());
                }
                None => cluster_members
                    .entry(format!("\u{0}{}", s.id))
                    .or_default()
                    .push(s.id.clone()),
            }
            let h = crate::eval::build::rank(opts.seed, &s.id);
            if heap.len() < opts.sample {
                heap.push((h, s.id.clone(), text));
            } else if heap.peek().is_some_and(|top| h < top.0) {
                heap.pop();
                heap.push((h, s.id.clone(), text));
            }
        })?;
    }
    if n == 0 {
        bail!("{}: the curated files hold no sample", opts.run.display());
    }
    let rare_df = (n / 10_000).max(1);
    // Pass 2: per-sample numbers and instruction types.
    let groups_n = group_of.len();
    let mut rows: Vec<Row> = Vec::with_capacity(n as usize);
    let mut types: Vec<HashMap<String, u64>> = vec![HashMap::new(); groups_n];
    for f in &files {
        crate::eval::build::read_samples(f, &mut |s| {
            let text = content(&s);
            let toks = tokens(&jieba, &text);
            let rare = toks
                .iter()
                .filter(|t| df.get(*t).is_some_and(|d| u64::from(*d) <= rare_df))
                .count();
            let group = group_of[&(s.domain.clone(), s.task.clone())];
            *types[group]
                .entry(instruction_type(&jieba, &s))
                .or_default() += 1;
            rows.push(Row {
                group,
                chars: text.chars().count() as f64,
                turns: user_turns(&s) as f64,
                rare: if toks.is_empty() {
                    0.0
                } else {
                    rare as f64 / toks.len() as f64
                },
            });
        })?;
    }
    let sorted = |f: &dyn Fn(&Row) -> f64| {
        let mut v: Vec<f64> = rows.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v
    };
    let (all_chars, all_turns, all_rare) = (
        sorted(&|r| r.chars),
        sorted(&|r| r.turns),
        sorted(&|r| r.rare),
    );
    let difficulty = |r: &Row| {
        let d =
            (rank(&all_chars, r.chars) + rank(&all_turns, r.turns) + rank(&all_rare, r.rare)) / 3.0;
        if d < 1.0 / 3.0 {
            "easy"
        } else if d < 2.0 / 3.0 {
            "medium"
        } else {
            "hard"
        }
    };
    let stats = |domain: &str, task: &str, members: &[&Row], types: &HashMap<String, u64>| {
        let mut chars: Vec<f64> = members.iter().map(|r| r.chars).collect();
        let mut rare: Vec<f64> = members.iter().map(|r| r.rare).collect();
        let mut turns = BTreeMap::new();
        let mut diff: BTreeMap<String, u64> = ["easy", "medium", "hard"]
            .iter()
            .map(|d| (d.to_string(), 0))
            .collect();
        for r in members {
            *turns.entry(r.turns as u64).or_default() += 1;
            *diff.entry(difficulty(r).to_string()).or_default() += 1;
        }
        let mut top: Vec<(String, u64)> = types.iter().map(|(k, v)| (k.clone(), *v)).collect();
        top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let distinct = top.len() as u64;
        top.truncate(10);
        GroupStats {
            domain: domain.to_string(),
            task: task.to_string(),
            count: members.len() as u64,
            share: members.len() as f64 / n as f64,
            chars: Dist::of(&mut chars),
            turns,
            rare_share: Dist::of(&mut rare),
            difficulty: diff,
            instruction_types: top,
            distinct_instruction_types: distinct,
        }
    };
    let mut groups = Vec::new();
    for ((domain, task), &g) in &group_of {
        let members: Vec<&Row> = rows.iter().filter(|r| r.group == g).collect();
        groups.push(stats(domain, task, &members, &types[g]));
    }
    let mut all_types: HashMap<String, u64> = HashMap::new();
    for t in &types {
        for (k, v) in t {
            *all_types.entry(k.clone()).or_default() += v;
        }
    }
    let everyone: Vec<&Row> = rows.iter().collect();
    let overall = stats("*", "*", &everyone, &all_types);
    // The topic sample, in id order.
    let mut sample: Vec<(String, String)> = heap.into_iter().map(|(_, id, t)| (id, t)).collect();
    sample.sort();
    let duplicate_clusters = if tagged > 0 {
        clusters_of(
            "minhash_cluster tags",
            n,
            cluster_members.into_values().collect(),
        )
    } else {
        clusters_of(
            "computed on the topic sample",
            sample.len() as u64,
            near_duplicates(&sample),
        )
    };
    let topics = crate::diversity_topics::topics(&jieba, &sample, opts.k, opts.seed);
    let mut warnings = Vec::new();
    let mut by_domain: BTreeMap<&str, u64> = BTreeMap::new();
    let mut by_task: BTreeMap<&str, u64> = BTreeMap::new();
    for g in &groups {
        *by_domain.entry(&g.domain).or_default() += g.count;
        *by_task.entry(&g.task).or_default() += g.count;
    }
    for (what, counts) in [("domain", &by_domain), ("task", &by_task)] {
        if counts.len() > 1 {
            for (name, c) in counts {
                let share = *c as f64 / n as f64;
                if share > opts.max_share {
                    warnings.push(format!(
                        "{what} {name:?} is {:.0}% of the samples (more than {:.0}%)",
                        share * 100.0,
                        opts.max_share * 100.0
                    ));
                }
            }
        }
    }
    for (i, t) in topics.iter().enumerate() {
        if topics.len() > 1 && t.share > opts.max_share {
            warnings.push(format!(
                "topic {} ({}) is {:.0}% of the topic sample (more than {:.0}%)",
                i + 1,
                t.terms
                    .iter()
                    .take(4)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
                t.share * 100.0,
                opts.max_share * 100.0
            ));
        }
    }
    if let Some((size, ids)) = duplicate_clusters.largest.first() {
        let share = *size as f64 / duplicate_clusters.samples.max(1) as f64;
        if *size > 1 && share > opts.max_share {
            warnings.push(format!(
                "one near-duplicate cluster ({}, …) holds {:.0}% of the samples",
                ids.first().cloned().unwrap_or_default(),
                share * 100.0
            ));
        }
    }
    Ok(Diversity {
        run: opts.run.display().to_string(),
        files: files.iter().map(|p| p.display().to_string()).collect(),
        overall,
        groups,
        duplicate_clusters,
        topic_sample: sample.len() as u64,
        topics,
        warnings,
    })
}

fn clusters_of(from: &str, samples: u64, mut members: Vec<Vec<String>>) -> Clusters {
    for m in &mut members {
        m.sort();
    }
    members.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
    let mut sizes: BTreeMap<String, u64> = BTreeMap::new();
    for m in &members {
        *sizes
            .entry(size_bucket(m.len() as u64).to_string())
            .or_default() += 1;
    }
    Clusters {
        from: from.to_string(),
        samples,
        sizes,
        largest: members
            .iter()
            .filter(|m| m.len() > 1)
            .take(10)
            .map(|m| (m.len() as u64, m.iter().take(5).cloned().collect()))
            .collect(),
    }
}

/// Near-duplicate clusters of a sample of texts: LSH candidates verified on shingles, joined.
fn near_duplicates(sample: &[(String, String)]) -> Vec<Vec<String>> {
    use sluice_pipeline::stages::minhash::{sketch_jaccard, MinHasher};
    let hasher = MinHasher::new(0.8, 128, 5, None, 0x5eed_d1e5);
    let sigs: Vec<Option<(Vec<u32>, Vec<u32>)>> = sample
        .iter()
        .map(|(_, t)| hasher.signature_and_sketch(t))
        .collect();
    let mut parent: Vec<usize> = (0..sample.len()).collect();
    fn find(p: &mut [usize], mut i: usize) -> usize {
        while p[i] != i {
            p[i] = p[p[i]];
            i = p[i];
        }
        i
    }
    let mut buckets: HashMap<u128, Vec<usize>> = HashMap::new();
    for (i, s) in sigs.iter().enumerate() {
        if let Some((sig, _)) = s {
            for k in hasher.band_keys(sig) {
                buckets.entry(k).or_default().push(i);
            }
        }
    }
    for members in buckets.values() {
        for (x, &i) in members.iter().enumerate() {
            for &j in &members[x + 1..] {
                let (a, b) = (find(&mut parent, i), find(&mut parent, j));
                if a == b {
                    continue;
                }
                if let (Some((_, si)), Some((_, sj))) = (&sigs[i], &sigs[j]) {
                    if sketch_jaccard(si, sj) >= 0.8 {
                        parent[a.max(b)] = a.min(b);
                    }
                }
            }
        }
    }
    let mut out: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for (i, (id, _)) in sample.iter().enumerate() {
        let r = find(&mut parent, i);
        out.entry(r).or_default().push(id.clone());
    }
    out.into_values().collect()
}

/// Write `diversity.json` and `diversity.html` into `dir`; returns the JSON's path.
pub fn write(dir: &Path, d: &Diversity) -> Result<PathBuf> {
    let path = dir.join("diversity.json");
    let mut text = serde_json::to_string_pretty(d)?;
    text.push('\n');
    sluice_pipeline::storage::write_atomic(&path, text.as_bytes())?;
    sluice_pipeline::storage::write_atomic(
        &dir.join("diversity.html"),
        crate::diversity_html::html(d).as_bytes(),
    )?;
    Ok(path)
}
