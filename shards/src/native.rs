//! sluice's native shard: one file holding token ids (u16 when the vocabulary fits, else u32),
//! a loss-mask byte per token, where each sample starts, and which samples are packed together
//! into one training sequence. Little-endian, every array 8-byte aligned, memory-mapped on read.
//!
//! ```text
//! offset  size  field
//! 0       8     magic "SLUISHRD"
//! 8       4     version (1)
//! 12      4     token width in bytes (2 or 4)
//! 16      8     samples S
//! 24      8     sequences Q
//! 32      8     tokens T
//! 40      8     byte offset of tokens      (T × width)
//! 48      8     byte offset of loss mask   (T bytes, 1 = trained)
//! 56      8     byte offset of sample starts   (u64 × (S+1), token index; last = T)
//! 64      8     byte offset of sequence starts (u64 × (Q+1), sample index; last = S)
//! 72      8     reserved (0)
//! ```

use crate::{Error, Result, TokenDtype};
use std::path::Path;

/// File magic.
pub const MAGIC: &[u8; 8] = b"SLUISHRD";
/// Format version.
pub const VERSION: u32 = 1;
const HEADER: usize = 80;

/// What a written shard holds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ShardStats {
    /// Samples.
    pub samples: u64,
    /// Training sequences (equal to samples unless packed).
    pub sequences: u64,
    /// Tokens.
    pub tokens: u64,
    /// Tokens with loss (mask 1).
    pub trained_tokens: u64,
}

/// Builds one shard in memory (bounded by the configured shard size) and writes it at once.
#[derive(Debug)]
pub struct ShardBuilder {
    dtype: TokenDtype,
    tokens: Vec<u32>,
    mask: Vec<u8>,
    sample_starts: Vec<u64>,
    sequence_starts: Vec<u64>,
    open_sequence: bool,
}

impl ShardBuilder {
    /// An empty shard for tokens of this width.
    pub fn new(dtype: TokenDtype) -> ShardBuilder {
        ShardBuilder {
            dtype,
            tokens: Vec::new(),
            mask: Vec::new(),
            sample_starts: vec![0],
            sequence_starts: vec![0],
            open_sequence: false,
        }
    }

    /// Append one sample to the current sequence. `mask[i]` is 1 where token i is trained.
    pub fn push_sample(&mut self, tokens: &[u32], mask: &[u8]) -> Result<()> {
        if tokens.len() != mask.len() {
            return Err(Error::Invalid(format!(
                "{} tokens but {} mask bytes",
                tokens.len(),
                mask.len()
            )));
        }
        if let Some(t) = tokens.iter().find(|&&t| !self.dtype.fits(t)) {
            return Err(Error::Invalid(format!(
                "token id {t} does not fit {:?}",
                self.dtype
            )));
        }
        self.tokens.extend_from_slice(tokens);
        self.mask.extend(mask.iter().map(|&m| u8::from(m != 0)));
        self.sample_starts.push(self.tokens.len() as u64);
        self.open_sequence = true;
        Ok(())
    }

    /// Close the current sequence (a no-op when it is empty).
    pub fn end_sequence(&mut self) {
        if self.open_sequence {
            self.sequence_starts
                .push(self.sample_starts.len() as u64 - 1);
            self.open_sequence = false;
        }
    }

    /// One sample as its own sequence.
    pub fn push_sequence(&mut self, tokens: &[u32], mask: &[u8]) -> Result<()> {
        self.end_sequence();
        self.push_sample(tokens, mask)?;
        self.end_sequence();
        Ok(())
    }

    /// Bytes the shard will take on disk.
    pub fn byte_size(&self) -> u64 {
        let t = self.tokens.len() as u64;
        HEADER as u64
            + t * self.dtype.width() as u64
            + t
            + 8 * (self.sample_starts.len() + self.sequence_starts.len()) as u64
            + 24
    }

    /// Samples so far.
    pub fn samples(&self) -> u64 {
        self.sample_starts.len() as u64 - 1
    }

    /// Serialize the shard.
    pub fn to_bytes(&mut self) -> (Vec<u8>, ShardStats) {
        self.end_sequence();
        let w = self.dtype.width();
        let t = self.tokens.len();
        let align = |n: usize| n.div_ceil(8) * 8;
        let tokens_at = HEADER;
        let mask_at = align(tokens_at + t * w);
        let samples_at = align(mask_at + t);
        let sequences_at = samples_at + 8 * self.sample_starts.len();
        let end = sequences_at + 8 * self.sequence_starts.len();
        let mut out = Vec::with_capacity(end);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&(w as u32).to_le_bytes());
        for v in [
            self.samples(),
            self.sequence_starts.len() as u64 - 1,
            t as u64,
            tokens_at as u64,
            mask_at as u64,
            samples_at as u64,
            sequences_at as u64,
            0,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for &tok in &self.tokens {
            match self.dtype {
                TokenDtype::U16 => out.extend_from_slice(&(tok as u16).to_le_bytes()),
                TokenDtype::U32 => out.extend_from_slice(&tok.to_le_bytes()),
            }
        }
        out.resize(mask_at, 0);
        out.extend_from_slice(&self.mask);
        out.resize(samples_at, 0);
        for s in self.sample_starts.iter().chain(&self.sequence_starts) {
            out.extend_from_slice(&s.to_le_bytes());
        }
        let stats = ShardStats {
            samples: self.samples(),
            sequences: self.sequence_starts.len() as u64 - 1,
            tokens: t as u64,
            trained_tokens: self.mask.iter().map(|&m| u64::from(m)).sum(),
        };
        (out, stats)
    }
}

/// A shard opened for reading (memory-mapped, validated).
pub struct Shard {
    map: memmap2::Mmap,
    dtype: TokenDtype,
    samples: usize,
    sequences: usize,
    tokens: usize,
    tokens_at: usize,
    mask_at: usize,
    samples_at: usize,
    sequences_at: usize,
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// A training sequence: one sample, or several packed, with where each starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sequence {
    /// Token ids.
    pub tokens: Vec<u32>,
    /// Loss mask, 1 = trained.
    pub mask: Vec<u8>,
    /// Start of each sample within `tokens` (first is 0): reset attention and positions there.
    pub sample_starts: Vec<usize>,
}

impl Shard {
    /// Open and validate a shard file.
    pub fn open(path: &Path) -> Result<Shard> {
        let file = std::fs::File::open(path).map_err(|e| Error::Io(path.to_path_buf(), e))?;
        // SAFETY: the map is read-only and sluice never modifies a published shard in place
        // (shards are written under a temporary name and renamed); a concurrent truncation by
        // another program is outside what any mmap-based reader can defend against.
        #[allow(unsafe_code)]
        let map =
            unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::Io(path.to_path_buf(), e))?;
        let bad = |why: String| Error::Corrupt(path.to_path_buf(), why);
        if map.len() < HEADER || &map[..8] != MAGIC {
            return Err(bad("not a sluice shard (bad magic)".into()));
        }
        let version = u32::from_le_bytes([map[8], map[9], map[10], map[11]]);
        if version != VERSION {
            return Err(bad(format!("version {version}, expected {VERSION}")));
        }
        let dtype = match u32::from_le_bytes([map[12], map[13], map[14], map[15]]) {
            2 => TokenDtype::U16,
            4 => TokenDtype::U32,
            w => return Err(bad(format!("token width {w}"))),
        };
        let field = |i: usize| usize::try_from(u64_at(&map, 16 + 8 * i)).unwrap_or(usize::MAX);
        let (samples, sequences, tokens) = (field(0), field(1), field(2));
        let (tokens_at, mask_at, samples_at, sequences_at) =
            (field(3), field(4), field(5), field(6));
        let need = [
            (tokens_at, tokens.saturating_mul(dtype.width())),
            (mask_at, tokens),
            (samples_at, samples.saturating_add(1).saturating_mul(8)),
            (sequences_at, sequences.saturating_add(1).saturating_mul(8)),
        ];
        for (at, len) in need {
            if at.checked_add(len).is_none_or(|end| end > map.len()) {
                return Err(bad(format!(
                    "array at byte {at} of {len} bytes runs past the end ({} bytes)",
                    map.len()
                )));
            }
        }
        let shard = Shard {
            map,
            dtype,
            samples,
            sequences,
            tokens,
            tokens_at,
            mask_at,
            samples_at,
            sequences_at,
        };
        let mut prev = 0;
        for i in 0..=samples {
            let s = shard.sample_start(i);
            if s < prev
                || s > tokens as u64
                || (i == 0 && s != 0)
                || (i == samples && s != tokens as u64)
            {
                return Err(bad(format!(
                    "sample offsets are not monotone from 0 to {tokens} at {i}"
                )));
            }
            prev = s;
        }
        let mut prev = 0;
        for i in 0..=sequences {
            let s = shard.sequence_start(i);
            if s < prev || (i == 0 && s != 0) || (i == sequences && s != samples as u64) {
                return Err(bad(format!(
                    "sequence offsets are not monotone from 0 to {samples} at {i}"
                )));
            }
            prev = s;
        }
        Ok(shard)
    }

    fn sample_start(&self, i: usize) -> u64 {
        u64_at(&self.map, self.samples_at + 8 * i)
    }

    fn sequence_start(&self, i: usize) -> u64 {
        u64_at(&self.map, self.sequences_at + 8 * i)
    }

    /// Token width.
    pub fn dtype(&self) -> TokenDtype {
        self.dtype
    }

    /// Samples in the shard.
    pub fn samples(&self) -> usize {
        self.samples
    }

    /// Training sequences in the shard.
    pub fn sequences(&self) -> usize {
        self.sequences
    }

    /// Tokens in the shard.
    pub fn tokens(&self) -> usize {
        self.tokens
    }

    fn token_range(&self, from: usize, to: usize) -> Vec<u32> {
        let w = self.dtype.width();
        let bytes = &self.map[self.tokens_at + from * w..self.tokens_at + to * w];
        match self.dtype {
            TokenDtype::U16 => bytes
                .chunks_exact(2)
                .map(|c| u32::from(u16::from_le_bytes([c[0], c[1]])))
                .collect(),
            TokenDtype::U32 => bytes
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        }
    }

    /// Tokens and mask of sample `i`.
    pub fn sample(&self, i: usize) -> Option<(Vec<u32>, &[u8])> {
        if i >= self.samples {
            return None;
        }
        let (a, b) = (
            self.sample_start(i) as usize,
            self.sample_start(i + 1) as usize,
        );
        Some((
            self.token_range(a, b),
            &self.map[self.mask_at + a..self.mask_at + b],
        ))
    }

    /// Training sequence `i` with its sample boundaries.
    pub fn sequence(&self, i: usize) -> Option<Sequence> {
        if i >= self.sequences {
            return None;
        }
        let (s0, s1) = (
            self.sequence_start(i) as usize,
            self.sequence_start(i + 1) as usize,
        );
        let (a, b) = (
            self.sample_start(s0) as usize,
            self.sample_start(s1) as usize,
        );
        Some(Sequence {
            tokens: self.token_range(a, b),
            mask: self.map[self.mask_at + a..self.mask_at + b].to_vec(),
            sample_starts: (s0..s1)
                .map(|s| self.sample_start(s) as usize - a)
                .collect(),
        })
    }
}

/// Write bytes to `path` through a temporary name ([`crate::atomic`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    crate::atomic::write_atomic(path, bytes).map_err(|e| Error::Io(path.to_path_buf(), e))
}

/// Write a builder's shard to `path` atomically.
pub fn write_shard(builder: &mut ShardBuilder, path: &Path) -> Result<ShardStats> {
    let (bytes, stats) = builder.to_bytes();
    write_atomic(path, &bytes)?;
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_and_packed_sequences_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.bin");
        let mut b = ShardBuilder::new(TokenDtype::U16);
        b.push_sequence(&[1, 2, 3], &[0, 1, 1]).expect("push");
        b.push_sample(&[4, 5], &[0, 1]).expect("push");
        b.push_sample(&[6], &[1]).expect("push");
        b.end_sequence();
        let stats = write_shard(&mut b, &path).expect("write");
        assert_eq!(
            stats,
            ShardStats {
                samples: 3,
                sequences: 2,
                tokens: 6,
                trained_tokens: 4
            }
        );
        let s = Shard::open(&path).expect("open");
        assert_eq!((s.samples(), s.sequences(), s.tokens()), (3, 2, 6));
        assert_eq!(s.sample(1), Some((vec![4, 5], &[0u8, 1][..])));
        let q = s.sequence(1).expect("seq");
        assert_eq!(q.tokens, [4, 5, 6]);
        assert_eq!(q.mask, [0, 1, 1]);
        assert_eq!(q.sample_starts, [0, 2]);
        assert!(s.sequence(2).is_none());
        // File size matches the layout: 80 header + 12 tokens (→ 96) + 6 mask (→ 104) + 4×8 + 3×8.
        assert_eq!(std::fs::metadata(&path).expect("meta").len(), 104 + 32 + 24);
    }

    #[test]
    fn wide_vocabularies_use_u32_and_narrow_ones_reject_big_ids() {
        let mut b = ShardBuilder::new(TokenDtype::U16);
        assert!(b.push_sample(&[70_000], &[1]).is_err());
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("w.bin");
        let mut b = ShardBuilder::new(TokenDtype::U32);
        b.push_sequence(&[151_644, 872, 151_645], &[0, 0, 1])
            .expect("push");
        write_shard(&mut b, &path).expect("write");
        let s = Shard::open(&path).expect("open");
        assert_eq!(s.sample(0).map(|x| x.0), Some(vec![151_644, 872, 151_645]));
    }

    #[test]
    fn corrupt_files_are_refused_with_a_reason() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.bin");
        write_atomic(
            &path,
            b"definitely not a shard, but long enough to have a header of eighty bytes......",
        )
        .expect("write");
        assert!(Shard::open(&path)
            .err()
            .is_some_and(|e| e.to_string().contains("bad magic")));
        let mut b = ShardBuilder::new(TokenDtype::U16);
        b.push_sequence(&[1, 2], &[1, 1]).expect("push");
        let (mut bytes, _) = b.to_bytes();
        bytes.truncate(bytes.len() - 4);
        write_atomic(&path, &bytes).expect("write");
        assert!(Shard::open(&path)
            .err()
            .is_some_and(|e| e.to_string().contains("past the end")));
    }
}
