//! Tokenized shards: sluice's native memory-mappable format (tokens, loss mask, sample and
//! sequence boundaries) with its `manifest.json`, and Megatron-LM's `.bin/.idx`. The pipeline
//! writes them; the trainer reads them one shard at a time, each rank of a world its own share.
//! Deliberately free of polars, tokio and tokenizers, so the trainer builds light.

pub mod atomic;
pub mod megatron;
pub mod native;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use native::{Sequence, Shard, ShardBuilder, ShardStats};

/// Errors of shard reading and writing.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O failure on a file.
    #[error("{path}: {err}", path = .0.display(), err = .1)]
    Io(PathBuf, #[source] std::io::Error),
    /// A file that is not what it claims to be.
    #[error("{path}: {why}", path = .0.display(), why = .1)]
    Corrupt(PathBuf, String),
    /// Data that cannot be written in the format.
    #[error("{0}")]
    Invalid(String),
}

/// The shards crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Width of stored token ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenDtype {
    /// 2 bytes: vocabularies of at most 65,536 ids.
    U16,
    /// 4 bytes.
    U32,
}

impl TokenDtype {
    /// The narrowest width that holds every id of a vocabulary of this size.
    pub fn for_vocab(vocab_size: usize) -> TokenDtype {
        if vocab_size <= 1 << 16 {
            TokenDtype::U16
        } else {
            TokenDtype::U32
        }
    }

    /// Bytes per token.
    pub fn width(self) -> usize {
        match self {
            TokenDtype::U16 => 2,
            TokenDtype::U32 => 4,
        }
    }

    /// Whether an id fits.
    pub fn fits(self, id: u32) -> bool {
        self == TokenDtype::U32 || id <= u32::from(u16::MAX)
    }
}

/// The tokenizer the shards were made with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenizerInfo {
    /// sha256 of the tokenizer file(s), hex.
    pub sha256: String,
    /// Vocabulary size including added tokens.
    pub vocab_size: u64,
    /// End-of-sequence id appended to documents.
    pub eos_id: Option<u32>,
    /// Where the tokenizer was loaded from, for tools that decode (`sluice inspect`).
    #[serde(default)]
    pub source: Option<String>,
}

/// One shard file in a split.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardEntry {
    /// File name, relative to the manifest.
    pub file: String,
    /// What it holds.
    #[serde(flatten)]
    pub stats: ShardStats,
}

/// One split (train, valid, test).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitInfo {
    /// Shards in order.
    pub shards: Vec<ShardEntry>,
    /// Samples.
    pub samples: u64,
    /// Training sequences.
    pub sequences: u64,
    /// Tokens.
    pub tokens: u64,
    /// Tokens with loss.
    pub trained_tokens: u64,
    /// Old dialogue turns dropped to fit the source budget.
    #[serde(default)]
    pub dropped_turns: u64,
    /// Samples whose content was cut inside a turn to fit a budget.
    #[serde(default)]
    pub truncated_samples: u64,
}

/// `manifest.json` of a shard directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always `sluice-shards`.
    pub format: String,
    /// Format version (1).
    pub version: u32,
    /// Tokenizer identity.
    pub tokenizer: TokenizerInfo,
    /// Chat template name (`chatml`, `llama3`, …), `none` for documents only.
    pub template: String,
    /// Stored token width.
    pub dtype: TokenDtype,
    /// Sequence length when packed.
    pub seq_len: Option<u64>,
    /// Seed of the global shuffle.
    pub seed: u64,
    /// Splits by name.
    pub splits: BTreeMap<String, SplitInfo>,
}

impl Manifest {
    /// Read `dir/manifest.json`.
    pub fn load(dir: &Path) -> Result<Manifest> {
        let path = dir.join("manifest.json");
        let bytes = std::fs::read(&path).map_err(|e| Error::Io(path.clone(), e))?;
        let m: Manifest = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Corrupt(path.clone(), e.to_string()))?;
        if m.format != "sluice-shards" || m.version != 1 {
            return Err(Error::Corrupt(
                path,
                format!(
                    "format {} version {}, expected sluice-shards 1",
                    m.format, m.version
                ),
            ));
        }
        Ok(m)
    }

    /// Write `dir/manifest.json` atomically.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let mut bytes =
            serde_json::to_vec_pretty(self).map_err(|e| Error::Invalid(e.to_string()))?;
        bytes.push(b'\n');
        native::write_atomic(&dir.join("manifest.json"), &bytes)
    }

    /// The shards that rank `rank` of `world` reads in `epoch`, in order: the split's shard
    /// order is reshuffled every epoch from the seed, then dealt round-robin to ranks.
    pub fn shards_for(
        &self,
        split: &str,
        rank: usize,
        world: usize,
        epoch: u64,
    ) -> Result<Vec<&ShardEntry>> {
        if world == 0 || rank >= world {
            return Err(Error::Invalid(format!(
                "rank {rank} is not in a world of {world}"
            )));
        }
        let info = self.splits.get(split).ok_or_else(|| {
            Error::Invalid(format!(
                "no split {split:?}; the manifest has {:?}",
                self.splits.keys().collect::<Vec<_>>()
            ))
        })?;
        let order = permutation(
            info.shards.len(),
            self.seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        Ok(order
            .into_iter()
            .skip(rank)
            .step_by(world)
            .map(|i| &info.shards[i])
            .collect())
    }
}

/// A deterministic permutation of `0..n` (Fisher–Yates with SplitMix64).
pub fn permutation(n: usize, seed: u64) -> Vec<usize> {
    let mut state = seed;
    let mut next = || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut v: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(shards: usize) -> Manifest {
        let entry = |i: usize| ShardEntry {
            file: format!("train-{i:05}.bin"),
            stats: ShardStats {
                samples: 1,
                sequences: 1,
                tokens: 1,
                trained_tokens: 1,
            },
        };
        Manifest {
            format: "sluice-shards".into(),
            version: 1,
            tokenizer: TokenizerInfo {
                sha256: "x".into(),
                vocab_size: 6400,
                eos_id: Some(2),
                source: None,
            },
            template: "chatml".into(),
            dtype: TokenDtype::U16,
            seq_len: None,
            seed: 7,
            splits: BTreeMap::from([(
                "train".to_string(),
                SplitInfo {
                    shards: (0..shards).map(entry).collect(),
                    ..Default::default()
                },
            )]),
        }
    }

    #[test]
    fn ranks_partition_the_shards_and_epochs_reshuffle() {
        let m = manifest(10);
        let mut seen: Vec<String> = Vec::new();
        for rank in 0..3 {
            seen.extend(
                m.shards_for("train", rank, 3, 0)
                    .expect("ok")
                    .into_iter()
                    .map(|e| e.file.clone()),
            );
        }
        seen.sort();
        assert_eq!(
            seen,
            (0..10)
                .map(|i| format!("train-{i:05}.bin"))
                .collect::<Vec<_>>(),
            "every shard exactly once"
        );
        let e0: Vec<_> = m
            .shards_for("train", 0, 1, 0)
            .expect("ok")
            .into_iter()
            .map(|e| e.file.clone())
            .collect();
        let e1: Vec<_> = m
            .shards_for("train", 0, 1, 1)
            .expect("ok")
            .into_iter()
            .map(|e| e.file.clone())
            .collect();
        assert_ne!(e0, e1, "epochs reshuffle");
        assert_eq!(
            e0,
            m.shards_for("train", 0, 1, 0)
                .expect("ok")
                .into_iter()
                .map(|e| e.file.clone())
                .collect::<Vec<_>>(),
            "same epoch same order"
        );
        assert!(m.shards_for("valid", 0, 1, 0).is_err());
        assert!(m.shards_for("train", 3, 3, 0).is_err());
    }

    #[test]
    fn manifest_round_trips() {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = manifest(2);
        m.save(dir.path()).expect("save");
        assert_eq!(Manifest::load(dir.path()).expect("load"), m);
    }

    #[test]
    fn dtype_follows_vocabulary_size() {
        assert_eq!(TokenDtype::for_vocab(6400), TokenDtype::U16);
        assert_eq!(TokenDtype::for_vocab(65_536), TokenDtype::U16);
        assert_eq!(TokenDtype::for_vocab(151_646), TokenDtype::U32);
    }
}
