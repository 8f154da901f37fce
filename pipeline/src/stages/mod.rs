//! The stage registry: one tagged enum of stage configs, the two stage traits, and the verdict
//! types. A new stage is a file in this folder plus one variant here; the compiler lists every
//! other place that must handle it.

pub mod classify;
pub mod decontaminate;
pub mod exact_dedup;
pub mod filler;
pub mod langid;
pub mod length_filter;
pub mod minhash;
pub mod mix;
pub mod pii;
pub mod quality;
pub mod rules;
pub mod sensitive;
pub mod split;
pub mod tags;
pub mod truncate;

use crate::sample::Sample;
use serde::Deserialize;

/// Read a stage's TOML data: the file at `path`, or the compiled-in default; errors name the
/// file (or `builtin <what>`).
pub fn load_toml<T: serde::de::DeserializeOwned>(
    path: Option<&std::path::Path>,
    builtin: &str,
    what: &str,
    roots: Option<&[std::path::PathBuf]>,
) -> Result<T, crate::error::StageError> {
    let (name, text) = match path {
        Some(p) => (
            p.to_path_buf(),
            crate::confine::read_to_string_within(p, roots).map_err(|e| {
                crate::error::StageError::File {
                    path: p.to_path_buf(),
                    message: e.to_string(),
                }
            })?,
        ),
        None => (
            std::path::PathBuf::from(format!("builtin {what}")),
            builtin.to_string(),
        ),
    };
    toml::from_str(&text).map_err(|e| crate::error::StageError::File {
        path: name,
        message: e.to_string(),
    })
}

pub use crate::decisions::{Decision, Decisions};
pub use crate::exchange::GlobalStage;
pub use crate::sample::{intern_code, DropReason, Verdict};

/// Per-worker context of record-wise stages: counters a stage may bump (summed into the report)
/// and a seeded random source that depends on the sample, never on the worker, so results do not
/// depend on the thread count.
#[derive(Debug, Default)]
pub struct StageCx {
    seed: u64,
    /// Named counters, e.g. how many samples a stage changed.
    pub counters: std::collections::BTreeMap<String, u64>,
    /// Measurements for the stage's length histograms (name, value), e.g. a sample's source
    /// tokens before truncation.
    pub observed: Vec<(&'static str, u64)>,
}

impl StageCx {
    /// A context for a run with this seed.
    pub fn new(seed: u64) -> StageCx {
        StageCx {
            seed,
            counters: Default::default(),
            observed: Vec::new(),
        }
    }

    /// Add `value` to the stage's histogram `name` (power-of-two buckets, in the report).
    pub fn observe(&mut self, name: &'static str, value: u64) {
        self.observed.push((name, value));
    }

    /// Add `n` to a named counter.
    pub fn count(&mut self, name: &str, n: u64) {
        match self.counters.get_mut(name) {
            Some(v) => *v += n,
            None => {
                self.counters.insert(name.to_string(), n);
            }
        }
    }

    /// A random source for one sample in one stage: the same for the same seed, stage and id.
    pub fn rng_for(&self, stage: &str, sample: &Sample) -> SplitMix64 {
        let mut h = xxhash_rust::xxh3::xxh3_64_with_seed(stage.as_bytes(), self.seed);
        h ^= xxhash_rust::xxh3::xxh3_64_with_seed(sample.id.as_bytes(), self.seed);
        SplitMix64(h)
    }
}

/// A tiny deterministic random generator (SplitMix64), enough for sampling decisions.
#[derive(Debug, Clone)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        Self::mix(self.0)
    }

    /// SplitMix64's finalizer: a bijection of 64-bit values that spreads every input bit.
    pub fn mix(mut z: u64) -> u64 {
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform float in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A stage that decides on one sample at a time; runs in parallel over batches.
pub trait RecordStage: Send + Sync {
    /// Never fails on bad data: a sample it cannot handle is dropped with a reason.
    fn process(&self, sample: Sample, cx: &mut StageCx) -> Verdict;
    /// Tags this stage sets that describe the data (user tags), for the catalog's dimensions.
    fn dimensions(&self) -> Vec<String> {
        Vec::new()
    }
}

/// Every stage's config: `type = "…"` selects the variant. Struct variants only, so unknown keys
/// are always errors.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StageConfig {
    /// Exact duplicate removal over normalized content.
    ExactDedup(exact_dedup::Config),
    /// Length bounds on characters and turns.
    LengthFilter(length_filter::Config),
    /// fastText classification: tags and drops by label.
    Classify(classify::Config),
    /// Near-duplicate removal with MinHash LSH.
    Minhash(minhash::Config),
    /// Train/valid/test assignment, stratified, groups kept whole.
    Split(split::Config),
    /// Drops samples sharing long n-grams with evaluation sets.
    Decontaminate(decontaminate::Config),
    /// Left-truncates dialogue history to a token budget.
    Truncate(truncate::Config),
    /// Smooths spoken fillers out of turns.
    Filler(filler::Config),
    /// Masks or drops personal data.
    Pii(pii::Config),
    /// Declarative business rules.
    Rules(rules::Config),
    /// Sensitive-word lists over normalized text.
    Sensitive(sensitive::Config),
    /// Heuristic quality filters.
    Quality(quality::Config),
    /// Language tag and filter.
    Langid(langid::Config),
    /// User profile tags joined on user_id.
    Tags(tags::Config),
    /// Domain/general mixing by ratio (a global stage; the last one).
    Mix(Box<mix::Config>),
}

/// A built stage, ready to run.
pub enum Stage {
    /// Runs per sample, in parallel.
    Record(Box<dyn RecordStage>),
    /// Needs keys from all data: map → exchange → reduce → finish (see [`GlobalStage`]).
    Global(Box<dyn crate::exchange::GlobalOp>),
}

impl Stage {
    /// After a successful publish: let global stages persist their state.
    pub fn commit(&self) -> Result<(), crate::error::StageError> {
        match self {
            Stage::Record(_) => Ok(()),
            Stage::Global(g) => g.commit(),
        }
    }
}

impl StageConfig {
    /// Whether the stage selects and upsamples a mix: the catalog then marks the run as a mix,
    /// so its samples are not counted again as a source's.
    pub fn makes_a_mix(&self) -> bool {
        matches!(self, StageConfig::Mix(_))
    }

    /// Whether the stage is global (needs keys from all data: it ends a segment and, in a
    /// task-sharded run, is reduced across the tasks). Agrees with [`StageConfig::build`].
    pub fn is_global(&self) -> bool {
        matches!(
            self,
            StageConfig::ExactDedup(_)
                | StageConfig::Minhash(_)
                | StageConfig::Split(_)
                | StageConfig::Mix(_)
        )
    }

    /// The stage's `type` as written.
    pub fn type_name(&self) -> &'static str {
        match self {
            StageConfig::ExactDedup(_) => "exact_dedup",
            StageConfig::LengthFilter(_) => "length_filter",
            StageConfig::Classify(_) => "classify",
            StageConfig::Minhash(_) => "minhash",
            StageConfig::Split(_) => "split",
            StageConfig::Decontaminate(_) => "decontaminate",
            StageConfig::Truncate(_) => "truncate",
            StageConfig::Filler(_) => "filler",
            StageConfig::Pii(_) => "pii",
            StageConfig::Rules(_) => "rules",
            StageConfig::Sensitive(_) => "sensitive",
            StageConfig::Quality(_) => "quality",
            StageConfig::Langid(_) => "langid",
            StageConfig::Tags(_) => "tags",
            StageConfig::Mix(_) => "mix",
        }
    }

    /// Problems with the values (ranges, combinations), each as a message.
    pub fn validate(&self) -> Vec<String> {
        match self {
            StageConfig::ExactDedup(c) => c.validate(),
            StageConfig::LengthFilter(c) => c.validate(),
            StageConfig::Classify(c) => c.validate(),
            StageConfig::Minhash(c) => c.validate(),
            StageConfig::Split(c) => c.validate(),
            StageConfig::Decontaminate(c) => c.validate(),
            StageConfig::Truncate(c) => c.validate(),
            StageConfig::Filler(c) => c.validate(),
            StageConfig::Pii(c) => c.validate(),
            StageConfig::Rules(c) => c.validate(),
            StageConfig::Sensitive(c) => c.validate(),
            StageConfig::Quality(c) => c.validate(),
            StageConfig::Langid(c) => c.validate(),
            StageConfig::Tags(c) => c.validate(),
            StageConfig::Mix(c) => c.validate(),
        }
    }

    /// A confined compile: the files the stage loads (tokenizers, rules, word lists,
    /// profiles, evaluation sets) are checked on the opened file against `roots`
    /// ([`crate::confine::open_confined`]).
    pub fn confine_reads(&mut self, roots: &std::sync::Arc<[std::path::PathBuf]>) {
        match self {
            StageConfig::Truncate(c) => c.confined_to = Some(roots.clone()),
            StageConfig::Mix(c) => c.confined_to = Some(roots.clone()),
            StageConfig::Rules(c) => c.confined_to = Some(roots.clone()),
            StageConfig::Sensitive(c) => c.confined_to = Some(roots.clone()),
            StageConfig::Tags(c) => c.confined_to = Some(roots.clone()),
            StageConfig::Decontaminate(c) => c.confined_to = Some(roots.clone()),
            StageConfig::Filler(c) => c.confined_to = Some(roots.clone()),
            StageConfig::Pii(c) => c.confined_to = Some(roots.clone()),
            StageConfig::Quality(c) => c.confined_to = Some(roots.clone()),
            _ => {}
        }
    }

    /// Make relative paths in the stage's config relative to the pipeline file's directory.
    pub fn resolve_paths(&mut self, base: &std::path::Path) {
        match self {
            StageConfig::Classify(c) => c.resolve_paths(base),
            StageConfig::Decontaminate(c) => c.resolve_paths(base),
            StageConfig::Minhash(c) => c.resolve_paths(base),
            StageConfig::Truncate(c) => c.resolve_paths(base),
            StageConfig::Filler(c) => c.resolve_paths(base),
            StageConfig::Pii(c) => c.resolve_paths(base),
            StageConfig::Rules(c) => c.resolve_paths(base),
            StageConfig::Sensitive(c) => c.resolve_paths(base),
            StageConfig::Quality(c) => c.resolve_paths(base),
            StageConfig::Tags(c) => c.resolve_paths(base),
            StageConfig::Mix(c) => c.resolve_paths(base),
            StageConfig::ExactDedup(_)
            | StageConfig::LengthFilter(_)
            | StageConfig::Split(_)
            | StageConfig::Langid(_) => {}
        }
    }

    /// Every path the stage names (after [`StageConfig::resolve_paths`]), with its field and
    /// what the stage does with it: what a confined pipeline checks before anything is read.
    pub fn paths(&self) -> Vec<crate::confine::NamedPath> {
        use crate::confine::{Access, NamedPath};
        let one = |field: &str, p: &Option<std::path::PathBuf>, access| {
            p.iter()
                .map(|p| NamedPath::new(field, p, access))
                .collect::<Vec<_>>()
        };
        let each = |field: &str, ps: &[std::path::PathBuf]| {
            ps.iter()
                .enumerate()
                .map(|(i, p)| NamedPath::new(format!("{field}[{i}]"), p, Access::Read))
                .collect::<Vec<_>>()
        };
        match self {
            StageConfig::Classify(c) => vec![NamedPath::new("model", &c.model, Access::Read)],
            StageConfig::Decontaminate(c) => each("eval", &c.eval),
            // The index is read at the start and written once the run is published.
            StageConfig::Minhash(c) => one("index", &c.index, Access::Write),
            StageConfig::Truncate(c) => one("tokenizer", &c.tokenizer, Access::Read),
            StageConfig::Filler(c) => one("rules", &c.rules, Access::Read),
            StageConfig::Pii(c) => one("rules", &c.rules, Access::Read),
            StageConfig::Quality(c) => one("rules", &c.rules, Access::Read),
            StageConfig::Rules(c) => each("files", &c.files),
            StageConfig::Sensitive(c) => vec![
                NamedPath::new("dir", &c.dir, Access::ReadDir),
                NamedPath::new("allow", &c.dir.join(&c.allow), Access::Read),
            ],
            StageConfig::Tags(c) => vec![NamedPath::new("profiles", &c.profiles, Access::Read)],
            StageConfig::Mix(c) => one("tokenizer", &c.tokenizer, Access::Read),
            StageConfig::ExactDedup(_)
            | StageConfig::LengthFilter(_)
            | StageConfig::Split(_)
            | StageConfig::Langid(_) => Vec::new(),
        }
    }

    /// Build the stage (loading models and the like); `Err` says what is wrong. `seed` is the
    /// pipeline's.
    pub fn build(&self, seed: u64) -> Result<Stage, crate::error::StageError> {
        Ok(match self {
            StageConfig::ExactDedup(c) => Stage::Global(Box::new(exact_dedup::ExactDedup::new(c))),
            StageConfig::LengthFilter(c) => {
                Stage::Record(Box::new(length_filter::LengthFilter::new(c)))
            }
            StageConfig::Classify(c) => Stage::Record(Box::new(classify::Classify::new(c)?)),
            StageConfig::Minhash(c) => Stage::Global(Box::new(minhash::MinHash::new(c)?)),
            StageConfig::Split(c) => Stage::Global(Box::new(split::Split::new(c))),
            StageConfig::Decontaminate(c) => {
                Stage::Record(Box::new(decontaminate::Decontaminate::new(c)?))
            }
            StageConfig::Truncate(c) => Stage::Record(Box::new(truncate::Truncate::new(c)?)),
            StageConfig::Filler(c) => Stage::Record(Box::new(filler::Filler::new(c)?)),
            StageConfig::Pii(c) => Stage::Record(Box::new(pii::Pii::new(c)?)),
            StageConfig::Rules(c) => Stage::Record(Box::new(rules::Rules::new(c)?)),
            StageConfig::Sensitive(c) => Stage::Record(Box::new(sensitive::Sensitive::new(c)?)),
            StageConfig::Quality(c) => Stage::Record(Box::new(quality::Quality::new(c)?)),
            StageConfig::Langid(c) => Stage::Record(Box::new(langid::LangId::new(c)?)),
            StageConfig::Tags(c) => Stage::Record(Box::new(tags::Tags::new(c)?)),
            StageConfig::Mix(c) => Stage::Global(Box::new(mix::Mix::new(c, seed)?)),
        })
    }
}
