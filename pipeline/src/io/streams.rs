//! Byte streams under the readers: counting, cancelling, bounding a decompressor's expansion,
//! decoding GB18030 to UTF-8 a block at a time, and carrying a stream's fault to its reader.

use std::io::{self, BufRead, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Counts bytes read from the underlying file (before decompression), for progress and
/// throughput.
pub(super) struct Counting<R> {
    pub(super) inner: R,
    pub(super) count: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Fails once a decompressed stream has given more than `limit` times the compressed bytes it
/// consumed (checked past `EXPANSION_FLOOR`): what it gave before is read, then the file ends.
pub(super) struct Expansion<R> {
    pub(super) inner: R,
    pub(super) compressed: Arc<AtomicU64>,
    pub(super) out: u64,
    pub(super) limit: u64,
}

/// Output below which no expansion is too much (small files of repeated lines compress well).
pub(super) const EXPANSION_FLOOR: u64 = 64 << 20;

impl<R: Read> Read for Expansion<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.out += n as u64;
        let used = self.compressed.load(Ordering::Relaxed).max(1);
        if self.limit > 0 && self.out > EXPANSION_FLOOR && self.out > self.limit * used {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the stream expands more than max_expansion ({}x): {} MiB from {} KiB \
                     (a decompression bomb?); raise the input's max_expansion to read it",
                    self.limit,
                    self.out >> 20,
                    used >> 10
                ),
            ));
        }
        Ok(n)
    }
}

/// A decompressed stream that fails once the run is cancelled.
pub(super) struct Cancellable<'a> {
    pub(super) inner: Box<dyn Read + Send>,
    pub(super) cancel: &'a std::sync::atomic::AtomicBool,
}

impl Read for Cancellable<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.cancel.load(Ordering::Relaxed) {
            return Err(io::Error::new(
                io::ErrorKind::Interrupted,
                "the run was cancelled",
            ));
        }
        self.inner.read(buf)
    }
}

/// GB18030 bytes in, UTF-8 out, one buffered block at a time. Malformed sequences become
/// U+FFFD (the record then fails or carries the mark, never the whole file).
pub(super) struct Gb18030Reader<R: BufRead> {
    pub(super) inner: R,
    pub(super) decoder: encoding_rs::Decoder,
    pub(super) out: Vec<u8>,
    pub(super) pos: usize,
    pub(super) done: bool,
}

impl<R: BufRead> Read for Gb18030Reader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.out.len() {
            if self.done {
                return Ok(0);
            }
            let input = self.inner.fill_buf()?;
            let last = input.is_empty();
            let cap = self
                .decoder
                .max_utf8_buffer_length(input.len())
                .unwrap_or(input.len() * 3 + 16)
                .max(16);
            self.out.clear();
            self.out.resize(cap, 0);
            let (_, read, written, _) = self.decoder.decode_to_utf8(input, &mut self.out, last);
            self.inner.consume(read);
            self.out.truncate(written);
            self.pos = 0;
            self.done = last;
        }
        let n = buf.len().min(self.out.len() - self.pos);
        buf[..n].copy_from_slice(&self.out[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// A reader that fails once with the error it holds, then ends: what follows a stream's fault.
pub(super) struct Fails(pub(super) Option<io::Error>);

impl Read for Fails {
    fn read(&mut self, _buf: &mut [u8]) -> io::Result<usize> {
        match self.0.take() {
            Some(e) => Err(e),
            None => Ok(0),
        }
    }
}

/// Lines ended by a lone CR (old Mac exports) read as LF-ended lines.
pub(super) struct CrLines<R>(pub(super) R);

impl<R: Read> Read for CrLines<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.0.read(buf)?;
        for b in &mut buf[..n] {
            if *b == b'\r' {
                *b = b'\n';
            }
        }
        Ok(n)
    }
}
