//! Megatron-LM's indexed dataset (`MMIDIDX`, version 1): `.bin` holds the tokens of every
//! sequence back to back with no header; `.idx` holds
//!
//! ```text
//! b"MMIDIDX\x00\x00"   9 bytes
//! u64 version = 1
//! u8  dtype code (1 u8, 2 i8, 3 i16, 4 i32, 5 i64, 6 f64, 7 f32, 8 u16)
//! u64 N  sequences
//! u64 D  document index length (documents + 1)
//! i32[N] sequence lengths in tokens
//! i64[N] byte offsets of the sequences in .bin
//! i64[D] document index: sequence number where each document starts, ending with N
//! ```
//!
//! little-endian, arrays starting at byte 34 (unaligned). Tokens are u16 when the vocabulary is
//! below 65,500 (Megatron's own rule), else i32. Each document written here is one sequence.

use crate::{Error, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The `.idx` magic.
pub const MAGIC: &[u8; 9] = b"MMIDIDX\x00\x00";

/// Token type of a Megatron dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MegatronDtype {
    /// u16, code 8.
    U16,
    /// i32, code 4.
    I32,
}

impl MegatronDtype {
    /// Megatron's `best_fitting_dtype`: u16 below 65,500 tokens of vocabulary, else i32.
    pub fn for_vocab(vocab_size: usize) -> MegatronDtype {
        if vocab_size < 65_500 {
            MegatronDtype::U16
        } else {
            MegatronDtype::I32
        }
    }

    /// The dtype code in the `.idx` header.
    pub fn code(self) -> u8 {
        match self {
            MegatronDtype::U16 => 8,
            MegatronDtype::I32 => 4,
        }
    }

    fn width(self) -> usize {
        match self {
            MegatronDtype::U16 => 2,
            MegatronDtype::I32 => 4,
        }
    }
}

/// Writes `<prefix>.bin` and `<prefix>.idx` (both under temporary names until `finish`).
pub struct MegatronWriter {
    prefix: PathBuf,
    dtype: MegatronDtype,
    bin: crate::atomic::AtomicFile,
    sizes: Vec<i32>,
    pointers: Vec<i64>,
    offset: i64,
}

fn with_ext(prefix: &Path, ext: &str) -> PathBuf {
    let mut p = prefix.as_os_str().to_owned();
    p.push(ext);
    PathBuf::from(p)
}

impl MegatronWriter {
    /// Start a dataset at `prefix` (writes `prefix.bin` and `prefix.idx`).
    pub fn create(prefix: &Path, dtype: MegatronDtype) -> Result<MegatronWriter> {
        let bin = with_ext(prefix, ".bin");
        let file = crate::atomic::AtomicFile::create(&bin).map_err(|e| Error::Io(bin, e))?;
        Ok(MegatronWriter {
            prefix: prefix.to_path_buf(),
            dtype,
            bin: file,
            sizes: Vec::new(),
            pointers: Vec::new(),
            offset: 0,
        })
    }

    /// Append one document (one sequence).
    pub fn add_document(&mut self, tokens: &[u32]) -> Result<()> {
        let path = with_ext(&self.prefix, ".bin");
        let len = i32::try_from(tokens.len()).map_err(|_| {
            Error::Invalid(format!(
                "a document of {} tokens is too long for Megatron's int32 sizes",
                tokens.len()
            ))
        })?;
        for &t in tokens {
            let r = match self.dtype {
                MegatronDtype::U16 => {
                    let t = u16::try_from(t)
                        .map_err(|_| Error::Invalid(format!("token id {t} does not fit u16")))?;
                    self.bin.write_all(&t.to_le_bytes())
                }
                MegatronDtype::I32 => {
                    let t = i32::try_from(t)
                        .map_err(|_| Error::Invalid(format!("token id {t} does not fit i32")))?;
                    self.bin.write_all(&t.to_le_bytes())
                }
            };
            r.map_err(|e| Error::Io(path.clone(), e))?;
        }
        self.sizes.push(len);
        self.pointers.push(self.offset);
        self.offset += i64::from(len) * self.dtype.width() as i64;
        Ok(())
    }

    /// Write the index and move both files into place; returns the sequence count.
    pub fn finish(self) -> Result<u64> {
        let bin = with_ext(&self.prefix, ".bin");
        let n = self.sizes.len();
        let doc_idx: Vec<i64> = (0..=n as i64).collect();
        let idx = index_bytes(self.dtype, &self.sizes, &self.pointers, &doc_idx);
        crate::native::write_atomic(&with_ext(&self.prefix, ".idx"), &idx)?;
        self.bin.commit().map_err(|e| Error::Io(bin, e))?;
        Ok(n as u64)
    }
}

/// The bytes of an `.idx` file.
pub fn index_bytes(
    dtype: MegatronDtype,
    sizes: &[i32],
    pointers: &[i64],
    doc_idx: &[i64],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(34 + sizes.len() * 12 + doc_idx.len() * 8);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&1u64.to_le_bytes());
    out.push(dtype.code());
    out.extend_from_slice(&(sizes.len() as u64).to_le_bytes());
    out.extend_from_slice(&(doc_idx.len() as u64).to_le_bytes());
    for s in sizes {
        out.extend_from_slice(&s.to_le_bytes());
    }
    for p in pointers {
        out.extend_from_slice(&p.to_le_bytes());
    }
    for d in doc_idx {
        out.extend_from_slice(&d.to_le_bytes());
    }
    out
}

/// A parsed `.idx`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MegatronIndex {
    /// dtype code.
    pub dtype_code: u8,
    /// Sequence lengths.
    pub sizes: Vec<i32>,
    /// Byte offsets in `.bin`.
    pub pointers: Vec<i64>,
    /// Document index.
    pub doc_idx: Vec<i64>,
}

/// Read and check an `.idx` file.
pub fn read_index(path: &Path) -> Result<MegatronIndex> {
    let b = std::fs::read(path).map_err(|e| Error::Io(path.to_path_buf(), e))?;
    let bad = |why: &str| Error::Corrupt(path.to_path_buf(), why.to_string());
    if b.len() < 34 || &b[..9] != MAGIC {
        return Err(bad("not a Megatron MMIDIDX index (bad magic)"));
    }
    let u64_at = |at: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[at..at + 8]);
        u64::from_le_bytes(a)
    };
    if u64_at(9) != 1 {
        return Err(bad("unsupported version"));
    }
    let (n, d) = (u64_at(18) as usize, u64_at(26) as usize);
    if b.len() != 34 + n * 12 + d * 8 {
        return Err(bad("length does not match the header's counts"));
    }
    let sizes = (0..n)
        .map(|i| i32::from_le_bytes([b[34 + 4 * i], b[35 + 4 * i], b[36 + 4 * i], b[37 + 4 * i]]))
        .collect();
    let p0 = 34 + 4 * n;
    let pointers = (0..n).map(|i| u64_at(p0 + 8 * i) as i64).collect();
    let d0 = p0 + 8 * n;
    let doc_idx = (0..d).map(|i| u64_at(d0 + 8 * i) as i64).collect();
    Ok(MegatronIndex {
        dtype_code: b[17],
        sizes,
        pointers,
        doc_idx,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The golden example: two documents [1, 2, 3] and [65_499, 7] in u16.
    #[test]
    fn idx_has_megatrons_byte_layout() {
        let dir = tempfile::tempdir().expect("tempdir");
        let prefix = dir.path().join("tiny");
        let mut w =
            MegatronWriter::create(&prefix, MegatronDtype::for_vocab(6400)).expect("create");
        w.add_document(&[1, 2, 3]).expect("doc");
        w.add_document(&[65_499, 7]).expect("doc");
        assert_eq!(w.finish().expect("finish"), 2);
        #[rustfmt::skip]
        let golden: Vec<u8> = vec![
            b'M', b'M', b'I', b'D', b'I', b'D', b'X', 0, 0, // magic
            1, 0, 0, 0, 0, 0, 0, 0,                         // version 1
            8,                                              // dtype code 8 = u16
            2, 0, 0, 0, 0, 0, 0, 0,                         // N = 2 sequences
            3, 0, 0, 0, 0, 0, 0, 0,                         // D = 3 (documents + 1)
            3, 0, 0, 0,   2, 0, 0, 0,                       // sizes int32
            0, 0, 0, 0, 0, 0, 0, 0,   6, 0, 0, 0, 0, 0, 0, 0, // pointers int64 (bytes)
            0, 0, 0, 0, 0, 0, 0, 0,   1, 0, 0, 0, 0, 0, 0, 0,   2, 0, 0, 0, 0, 0, 0, 0, // doc index
        ];
        assert_eq!(
            std::fs::read(dir.path().join("tiny.idx")).expect("idx"),
            golden
        );
        assert_eq!(
            std::fs::read(dir.path().join("tiny.bin")).expect("bin"),
            [1, 0, 2, 0, 3, 0, 0xdb, 0xff, 7, 0]
        );
        let idx = read_index(&dir.path().join("tiny.idx")).expect("read");
        assert_eq!(idx.sizes, [3, 2]);
        assert_eq!(idx.doc_idx, [0, 1, 2]);
        assert!(!dir.path().join("tiny.bin.tmp").exists());
    }

    #[test]
    fn large_vocabularies_use_int32() {
        assert_eq!(MegatronDtype::for_vocab(151_646), MegatronDtype::I32);
        assert_eq!(MegatronDtype::for_vocab(65_499), MegatronDtype::U16);
        assert_eq!(MegatronDtype::for_vocab(65_500), MegatronDtype::I32);
        let dir = tempfile::tempdir().expect("tempdir");
        let mut w =
            MegatronWriter::create(&dir.path().join("q"), MegatronDtype::U16).expect("create");
        assert!(w.add_document(&[151_644]).is_err());
    }
}
