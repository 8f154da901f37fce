//! Reading shards for training: each rank of a world its share of a split's shards, shard order
//! reshuffled every epoch from the manifest's seed, one shard memory-mapped at a time, and a
//! cursor that says exactly where the stream is, so that a checkpoint can resume it.

use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use sluice_shards::{Manifest, Sequence, Shard, ShardEntry};
use std::path::{Path, PathBuf};

/// A position in a rank's data stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Cursor {
    /// Epoch.
    pub epoch: u64,
    /// Index into this rank's shard order of the epoch.
    pub shard: usize,
    /// Next sequence within that shard.
    pub sequence: usize,
}

/// The stream of training sequences of one rank.
pub struct Loader {
    dir: PathBuf,
    manifest: Manifest,
    split: String,
    rank: usize,
    world: usize,
    cursor: Cursor,
    order: Vec<ShardEntry>,
    order_epoch: Option<u64>,
    open: Option<(usize, Shard)>,
}

impl Loader {
    /// A loader of `split` for `rank` of `world`, starting at `cursor`.
    pub fn new(
        dir: &Path,
        split: &str,
        rank: usize,
        world: usize,
        cursor: Cursor,
    ) -> Result<Loader> {
        let manifest = Manifest::load(dir)?;
        let l = Loader {
            dir: dir.to_path_buf(),
            manifest,
            split: split.to_string(),
            rank,
            world,
            cursor,
            order: Vec::new(),
            order_epoch: None,
            open: None,
        };
        if l.manifest.shards_for(split, rank, world, 0)?.is_empty() {
            return Err(Error::Data(format!(
                "{}: split {split:?} has {} shard(s), none for rank {rank} of {world}",
                dir.display(),
                l.manifest.splits.get(split).map_or(0, |s| s.shards.len())
            )));
        }
        Ok(l)
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Where the next sequence comes from.
    pub fn cursor(&self) -> Cursor {
        self.cursor
    }

    /// Continue from `cursor`.
    pub fn seek(&mut self, cursor: Cursor) {
        self.cursor = cursor;
    }

    /// The next sequence, moving to the next shard or epoch as needed.
    pub fn next_sequence(&mut self) -> Result<Sequence> {
        let mut empty_in_a_row = 0usize;
        loop {
            if self.order_epoch != Some(self.cursor.epoch) {
                self.order = self
                    .manifest
                    .shards_for(&self.split, self.rank, self.world, self.cursor.epoch)?
                    .into_iter()
                    .cloned()
                    .collect();
                self.order_epoch = Some(self.cursor.epoch);
                self.open = None;
            }
            if self.cursor.shard >= self.order.len() {
                self.cursor = Cursor {
                    epoch: self.cursor.epoch + 1,
                    shard: 0,
                    sequence: 0,
                };
                continue;
            }
            if self.open.as_ref().map(|(i, _)| *i) != Some(self.cursor.shard) {
                // Drop the previous map before opening the next: one shard at a time.
                self.open = None;
                let path = self.dir.join(&self.order[self.cursor.shard].file);
                self.open = Some((self.cursor.shard, Shard::open(&path)?));
            }
            let Some((_, shard)) = self.open.as_ref() else {
                continue;
            };
            if let Some(seq) = shard.sequence(self.cursor.sequence) {
                self.cursor.sequence += 1;
                return Ok(seq);
            }
            empty_in_a_row += 1;
            if empty_in_a_row > self.order.len() + 1 {
                return Err(Error::Data(format!(
                    "{}: the shards of split {:?} for rank {} hold no sequences",
                    self.dir.display(),
                    self.split,
                    self.rank
                )));
            }
            self.cursor.shard += 1;
            self.cursor.sequence = 0;
        }
    }
}

/// Every sequence of a split for one rank, in shard order (at most `cap`, 0 = all): validation.
pub fn read_split(
    dir: &Path,
    split: &str,
    rank: usize,
    world: usize,
    cap: usize,
) -> Result<Vec<Sequence>> {
    let mut loader = Loader::new(dir, split, rank, world, Cursor::default())?;
    let mut out = Vec::new();
    loop {
        let seq = loader.next_sequence()?;
        if loader.cursor().epoch > 0 || (cap > 0 && out.len() >= cap) {
            return Ok(out);
        }
        out.push(seq);
    }
}

/// Marks padding in `Batch::segments`.
pub const PAD_SEGMENT: u32 = u32::MAX;

/// A micro-batch: `rows` sequences padded to `len` positions, flattened row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// Sequences.
    pub rows: usize,
    /// Positions per row.
    pub len: usize,
    /// Input ids.
    pub inputs: Vec<u32>,
    /// The id each position must predict.
    pub targets: Vec<u32>,
    /// 1 where the prediction is trained: the target is a trained token of the same sample.
    pub loss_mask: Vec<f32>,
    /// Position within its sample (RoPE restarts with every packed sample).
    pub positions: Vec<u32>,
    /// Which packed sample a position belongs to (`PAD_SEGMENT` for padding).
    pub segments: Vec<u32>,
    /// Real (non-padding) input tokens.
    pub tokens: usize,
}

impl Batch {
    /// Build a batch from sequences cut to `seq_len` tokens; checks ids against the vocabulary.
    pub fn new(seqs: &[Sequence], seq_len: usize, vocab: usize) -> Result<Batch> {
        let lens: Vec<usize> = seqs
            .iter()
            .map(|s| s.tokens.len().min(seq_len).saturating_sub(1))
            .collect();
        let len = lens.iter().copied().max().unwrap_or(0).max(1);
        let rows = seqs.len();
        let mut b = Batch {
            rows,
            len,
            inputs: vec![0; rows * len],
            targets: vec![0; rows * len],
            loss_mask: vec![0.0; rows * len],
            positions: vec![0; rows * len],
            segments: vec![PAD_SEGMENT; rows * len],
            tokens: 0,
        };
        for (r, (seq, &n)) in seqs.iter().zip(&lens).enumerate() {
            if let Some(&bad) = seq
                .tokens
                .iter()
                .take(n + 1)
                .find(|&&t| t as usize >= vocab)
            {
                return Err(Error::Data(format!(
                    "token id {bad} is outside the model's vocabulary of {vocab}: shards and model disagree"
                )));
            }
            let mut seg = vec![0u32; n + 1];
            let mut start = vec![0usize; n + 1];
            for (k, &s) in seq.sample_starts.iter().enumerate() {
                for i in s.min(n + 1)..n + 1 {
                    seg[i] = k as u32;
                    start[i] = s;
                }
            }
            for i in 0..n {
                let at = r * len + i;
                b.inputs[at] = seq.tokens[i];
                b.targets[at] = seq.tokens[i + 1];
                b.positions[at] = (i - start[i]) as u32;
                b.segments[at] = seg[i];
                if seq.mask.get(i + 1).copied().unwrap_or(0) != 0 && seg[i] == seg[i + 1] {
                    b.loss_mask[at] = 1.0;
                }
            }
            b.tokens += n;
        }
        Ok(b)
    }

    /// Trained positions.
    pub fn trained(&self) -> usize {
        self.loss_mask.iter().filter(|&&m| m != 0.0).count()
    }

    /// Additive attention bias [rows, 1, len, len]: 0 where position i may attend to j (same
    /// packed sample, j ≤ i; a padding position attends only to itself), a large negative
    /// number elsewhere.
    pub fn attention_bias(&self) -> Vec<f32> {
        let (b, t) = (self.rows, self.len);
        let mut out = vec![-1e9f32; b * t * t];
        for r in 0..b {
            for i in 0..t {
                let si = self.segments[r * t + i];
                let row = &mut out[(r * t + i) * t..(r * t + i + 1) * t];
                row[i] = 0.0;
                if si == PAD_SEGMENT {
                    continue;
                }
                for j in (0..i).rev() {
                    if self.segments[r * t + j] != si {
                        break;
                    }
                    row[j] = 0.0;
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_samples_restart_positions_and_do_not_see_each_other() {
        let seq = Sequence {
            tokens: vec![1, 2, 3, 4, 5, 6],
            mask: vec![0, 1, 1, 0, 1, 1],
            sample_starts: vec![0, 3],
        };
        let b = Batch::new(&[seq], 16, 10).expect("batch");
        assert_eq!(b.len, 5);
        assert_eq!(b.inputs, vec![1, 2, 3, 4, 5]);
        assert_eq!(b.targets, vec![2, 3, 4, 5, 6]);
        assert_eq!(b.positions, vec![0, 1, 2, 0, 1]);
        // Position 2 (last of sample 0) must not learn to predict sample 1's first token.
        assert_eq!(b.loss_mask, vec![1.0, 1.0, 0.0, 1.0, 1.0]);
        let bias = b.attention_bias();
        let allowed = |i: usize, j: usize| bias[i * 5 + j] == 0.0;
        assert!(allowed(2, 0) && allowed(2, 2) && !allowed(2, 3));
        assert!(allowed(4, 3) && !allowed(4, 2) && !allowed(3, 4));
        assert!(Batch::new(
            &[Sequence {
                tokens: vec![1, 99],
                mask: vec![1, 1],
                sample_starts: vec![0]
            }],
            8,
            10
        )
        .is_err());
    }
}
