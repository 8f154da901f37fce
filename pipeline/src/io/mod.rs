//! Input and output. Readers split a file into raw records with their location (cheap, on one
//! thread); [`convert`] turns a raw record into a [`Sample`](crate::sample::Sample) (parse,
//! decode, map the format; run in parallel by the engine). Writers live in [`writers`].
//!
//! Readers know nothing about stages; a record they cannot even split out (too long, broken
//! structure) still becomes a raw record carrying the error, so it is counted and rejected.

pub mod convert;
mod csv_in;
mod json_doc;
pub mod options;
mod parquet_in;
pub mod shard_sink;
pub mod writers;

use crate::io::options::{Compression, Encoding, InputPlan, ReaderKind, TextUnit};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Cursor, Read};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The text encoding a file was found to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextEncoding {
    /// UTF-8 (a BOM is skipped).
    Utf8,
    /// GB18030 (GBK, GB2312).
    Gb18030,
}

impl TextEncoding {
    /// The name used in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            TextEncoding::Utf8 => "utf-8",
            TextEncoding::Gb18030 => "gb18030",
        }
    }

    /// Check that bytes are valid UTF-8; `Err` says where the first invalid byte is.
    pub fn validate(self, bytes: &[u8]) -> Result<&str, String> {
        std::str::from_utf8(bytes).map_err(|e| {
            format!(
                "invalid UTF-8 at byte {} of the record (set `encoding` if the file is not UTF-8)",
                e.valid_up_to()
            )
        })
    }

    /// Decode bytes to text, malformed GB18030 sequences as U+FFFD; also how many were
    /// replaced. UTF-8 is validated as in [`TextEncoding::decode`].
    pub fn decode_lossy(self, bytes: &[u8]) -> Result<(String, usize), String> {
        match self {
            TextEncoding::Utf8 => self.validate(bytes).map(|t| (t.to_string(), 0)),
            TextEncoding::Gb18030 => {
                let (text, had_errors) = encoding_rs::GB18030.decode_without_bom_handling(bytes);
                let replaced = if had_errors {
                    text.matches('\u{FFFD}').count()
                } else {
                    0
                };
                Ok((text.into_owned(), replaced))
            }
        }
    }

    /// Decode bytes to text; `Err` says where the first invalid byte is.
    pub fn decode(self, bytes: &[u8]) -> Result<String, String> {
        match self {
            TextEncoding::Utf8 => self.validate(bytes).map(str::to_string),
            TextEncoding::Gb18030 => {
                let (text, had_errors) = encoding_rs::GB18030
                    .decode_without_bom_handling_and_without_replacement(bytes)
                    .map_or((None, true), |t| (Some(t), false));
                match (text, had_errors) {
                    (Some(t), false) => Ok(t.into_owned()),
                    _ => Err("invalid GB18030 byte sequence in the record".to_string()),
                }
            }
        }
    }
}

/// What every record of one file shares.
#[derive(Debug)]
pub struct FileCx {
    /// Index of the input in the plan.
    pub input: usize,
    /// The input's compiled options.
    pub plan: Arc<InputPlan>,
    /// The file's display name (relative to the config).
    pub file: Arc<str>,
    /// The encoding in use.
    pub encoding: TextEncoding,
    /// Why that encoding: set in the config, a byte-order mark, or what the file's head showed.
    pub encoding_why: Arc<str>,
    /// CSV header, decoded.
    pub headers: Option<Vec<String>>,
    /// The reader in use.
    pub reader: ReaderKind,
}

/// The undecoded content of one record.
#[derive(Debug)]
pub enum Payload {
    /// One JSON value, still in the file's encoding.
    Json(Vec<u8>),
    /// One JSON value already built (Parquet rows).
    Value(serde_json::Value),
    /// One CSV row, still in the file's encoding.
    Csv(csv::ByteRecord),
    /// One plain text document, still in the file's encoding.
    Text(Vec<u8>),
    /// The reader could not split a record out here; the message says why.
    Error(String),
}

/// One record as a reader found it, with its location.
#[derive(Debug)]
pub struct RawRecord {
    /// The file it came from.
    pub cx: Arc<FileCx>,
    /// 1-based line where the record starts (0 where lines do not apply, e.g. Parquet).
    pub line: u64,
    /// 1-based number of the record in its file (the row for CSV and Parquet).
    pub number: u64,
    /// Top-level key of a `{split: [records]}` JSON document.
    pub split: Option<Arc<str>>,
    /// The content.
    pub payload: Payload,
}

impl RawRecord {
    /// Bytes the record holds (what a batch is cut by).
    pub fn size(&self) -> usize {
        match &self.payload {
            Payload::Json(b) | Payload::Text(b) => b.len(),
            Payload::Csv(r) => r.as_slice().len() + 8 * r.len(),
            // Parquet rows: their JSON length is not known without writing it; the strings
            // dominate.
            Payload::Value(v) => value_size(v),
            Payload::Error(m) => m.len(),
        }
    }
}

/// Approximate bytes of a JSON value (strings and numbers, plus a little per node).
fn value_size(v: &serde_json::Value) -> usize {
    match v {
        serde_json::Value::String(s) => s.len() + 8,
        serde_json::Value::Array(a) => 8 + a.iter().map(value_size).sum::<usize>(),
        serde_json::Value::Object(o) => {
            8 + o
                .iter()
                .map(|(k, v)| k.len() + value_size(v))
                .sum::<usize>()
        }
        _ => 8,
    }
}

/// Counts bytes read from the underlying file (before decompression), for progress and
/// throughput.
struct Counting<R> {
    inner: R,
    count: Arc<AtomicU64>,
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
struct Expansion<R> {
    inner: R,
    compressed: Arc<AtomicU64>,
    out: u64,
    limit: u64,
}

/// Output below which no expansion is too much (small files of repeated lines compress well).
const EXPANSION_FLOOR: u64 = 64 << 20;

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

const SNIFF_BYTES: usize = 256 * 1024;

/// One file to read, and what it shares with the rest of the run.
#[derive(Clone, Copy)]
pub struct FileSource<'a> {
    /// Index of the input in the plan.
    pub input: usize,
    /// The input's options.
    pub plan: &'a Arc<InputPlan>,
    /// Where the file is.
    pub path: &'a Path,
    /// Its name in reports and rejects.
    pub display: &'a str,
    /// Longest record accepted.
    pub max_record_bytes: usize,
    /// Bytes read so far, across files (progress and throughput).
    pub bytes_read: &'a Arc<AtomicU64>,
    /// When set, reading stops (the file ends with an error) at the next block: a run is
    /// cancelled within a block even while the file gives no record (2 GiB of blank lines).
    pub cancel: Option<&'a std::sync::atomic::AtomicBool>,
}

/// A decompressed stream that fails once the run is cancelled.
struct Cancellable<'a> {
    inner: Box<dyn Read + Send>,
    cancel: &'a std::sync::atomic::AtomicBool,
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

/// Read one file, calling `emit` for each record in order. Problems with single records become
/// `Payload::Error` records; a problem that makes the rest of the file unusable (unreadable,
/// corrupt compression, broken structure) is emitted as one final `Payload::Error` record, in
/// order, and also returned as `Err` with its message.
pub fn read_file(
    src: &FileSource<'_>,
    emit: &mut dyn FnMut(RawRecord) -> crate::Result<()>,
) -> crate::Result<Result<(), String>> {
    let mut last: Option<(Arc<FileCx>, u64)> = None;
    let status = read_file_records(src, &mut |rec| {
        last = Some((rec.cx.clone(), rec.number));
        emit(rec)
    })?;
    if let Err(message) = &status {
        let (cx, number) = last.unwrap_or_else(|| {
            let cx = FileCx {
                input: src.input,
                plan: src.plan.clone(),
                file: Arc::from(src.display),
                encoding: TextEncoding::Utf8,
                encoding_why: Arc::from(""),
                headers: None,
                reader: src.plan.reader,
            };
            (Arc::new(cx), 0)
        });
        emit(RawRecord {
            cx,
            line: 0,
            number: number + 1,
            split: None,
            payload: Payload::Error(message.clone()),
        })?;
    }
    Ok(status)
}

/// Read one file outside a run (benchmarks, classifier data): [`read_file`] with the path as
/// its display name and a private byte counter.
pub fn read_path(
    plan: &Arc<InputPlan>,
    path: &Path,
    max_record_bytes: usize,
    emit: &mut dyn FnMut(RawRecord) -> crate::Result<()>,
) -> crate::Result<Result<(), String>> {
    let display = path.to_string_lossy().into_owned();
    let bytes_read = Arc::new(AtomicU64::new(0));
    let src = FileSource {
        input: 0,
        plan,
        path,
        display: &display,
        max_record_bytes,
        bytes_read: &bytes_read,
        cancel: None,
    };
    read_file(&src, emit)
}

fn read_file_records(
    src: &FileSource<'_>,
    emit: &mut dyn FnMut(RawRecord) -> crate::Result<()>,
) -> crate::Result<Result<(), String>> {
    let FileSource {
        input,
        plan,
        path,
        display,
        max_record_bytes,
        bytes_read,
        cancel,
    } = *src;
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) => return Ok(Err(format!("cannot open: {e}"))),
    };
    let compressed = Arc::new(AtomicU64::new(0));
    let mut raw = BufReader::with_capacity(
        256 * 1024,
        Counting {
            inner: Counting {
                inner: file,
                count: compressed.clone(),
            },
            count: bytes_read.clone(),
        },
    );
    let magic = match raw.fill_buf() {
        Ok(b) => b.get(..4).map(|m| [m[0], m[1], m[2], m[3]]),
        Err(e) => return Ok(Err(format!("cannot read: {e}"))),
    };
    let compression = match plan.compression {
        Compression::Auto => match magic {
            Some([0x1f, 0x8b, _, _]) => Compression::Gzip,
            Some([0x28, 0xb5, 0x2f, 0xfd]) => Compression::Zstd,
            _ => Compression::None,
        },
        c => c,
    };
    let stripped = strip_compression_ext(display);
    let ext = Path::new(stripped)
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();

    let is_parquet = plan.reader == ReaderKind::Parquet
        || (plan.reader == ReaderKind::Auto
            && compression == Compression::None
            && (magic == Some(*b"PAR1") || ext == "parquet" || ext == "pq"));
    if is_parquet {
        drop(raw);
        let cx = Arc::new(FileCx {
            input,
            plan: plan.clone(),
            file: Arc::from(display),
            encoding: TextEncoding::Utf8,
            encoding_why: Arc::from("Parquet strings are UTF-8"),
            headers: None,
            reader: ReaderKind::Parquet,
        });
        return parquet_in::read(path, cx, max_record_bytes, bytes_read, emit);
    }

    let mut stream: Box<dyn Read + Send> = match compression {
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(raw)),
        Compression::Zstd => match zstd::stream::read::Decoder::with_buffer(raw) {
            Ok(d) => Box::new(d),
            Err(e) => return Ok(Err(format!("cannot start zstd decoding: {e}"))),
        },
        Compression::None | Compression::Auto => Box::new(raw),
    };
    if matches!(compression, Compression::Gzip | Compression::Zstd) {
        stream = Box::new(Expansion {
            inner: stream,
            compressed,
            out: 0,
            limit: u64::from(plan.max_expansion),
        });
    }

    // Sniff the decompressed head, then read it again followed by the rest.
    let mut head = Vec::with_capacity(SNIFF_BYTES);
    if let Err(e) = (&mut stream)
        .take(SNIFF_BYTES as u64)
        .read_to_end(&mut head)
    {
        // A corrupt or truncated stream: what decoded before the fault is read (its records
        // kept), then the fault ends the file as one error.
        if head.is_empty() {
            return Ok(Err(format!("cannot read ({compression:?} stream): {e}")));
        }
        stream = Box::new(Fails(Some(io::Error::new(
            e.kind(),
            format!("{compression:?} stream: {e}"),
        ))));
    }
    let mut skip = 0;
    let bom = head.starts_with(&[0xEF, 0xBB, 0xBF]);
    if bom {
        skip = 3;
    } else if head.starts_with(&[0xFF, 0xFE]) || head.starts_with(&[0xFE, 0xFF]) {
        return Ok(Err(
            "UTF-16 text is not supported: convert the file to UTF-8".to_string(),
        ));
    }
    let (encoding, encoding_why) = match plan.encoding {
        Encoding::Utf8 => (TextEncoding::Utf8, "set in the config".to_string()),
        Encoding::Gb18030 => (TextEncoding::Gb18030, "set in the config".to_string()),
        Encoding::Auto if bom => (TextEncoding::Utf8, "a UTF-8 byte-order mark".to_string()),
        Encoding::Auto => sniff_encoding(&head[skip..]),
    };
    let reader = match plan.reader {
        ReaderKind::Auto => match sniff_reader(&ext, &head[skip..]) {
            Some(r) => r,
            None => {
                return Ok(Err(format!(
                    "cannot tell how the file is laid out from its extension {ext:?} or content: set `reader` (jsonl, json, csv, tsv, parquet, text)"
                )))
            }
        },
        r => r,
    };
    // The BOM is not text. (Consuming it from a BufReader that has not filled yet skipped
    // nothing: the first record or header kept it.)
    head.drain(..skip.min(head.len()));
    let stream: Box<dyn Read + Send + '_> = match cancel {
        Some(c) => Box::new(Cancellable {
            inner: stream,
            cancel: c,
        }),
        None => stream,
    };
    let mut body = BufReader::with_capacity(256 * 1024, Cursor::new(head).chain(stream));
    let cx = FileCx {
        input,
        plan: plan.clone(),
        file: Arc::from(display),
        encoding,
        encoding_why: Arc::from(encoding_why),
        headers: None,
        reader,
    };
    let result = match reader {
        ReaderKind::Jsonl => read_jsonl(Arc::new(cx), &mut body, max_record_bytes, emit)?,
        ReaderKind::Json => {
            let cx = Arc::new(cx);
            if encoding == TextEncoding::Gb18030 {
                // GB18030 trail bytes include `\`, so the document is decoded before splitting:
                // as a stream, a block at a time (memory stays bounded by the record bound).
                let mut utf8 = BufReader::with_capacity(
                    256 * 1024,
                    Gb18030Reader {
                        inner: body,
                        decoder: encoding_rs::GB18030.new_decoder_without_bom_handling(),
                        out: Vec::new(),
                        pos: 0,
                        done: false,
                    },
                );
                json_doc::read(cx, &mut utf8, max_record_bytes, emit)?
            } else {
                json_doc::read(cx, &mut body, max_record_bytes, emit)?
            }
        }
        ReaderKind::Csv | ReaderKind::Tsv => {
            let delim = if reader == ReaderKind::Tsv {
                b'\t'
            } else {
                b','
            };
            csv_in::read(cx, &mut body, delim, max_record_bytes, emit)?
        }
        ReaderKind::Text => read_text(Arc::new(cx), &mut body, max_record_bytes, emit)?,
        ReaderKind::Parquet | ReaderKind::Auto => {
            Err("compressed Parquet files are not supported: Parquet compresses internally".into())
        }
    };
    Ok(result)
}

/// GB18030 bytes in, UTF-8 out, one buffered block at a time. Malformed sequences become
/// U+FFFD (the record then fails or carries the mark, never the whole file).
struct Gb18030Reader<R: BufRead> {
    inner: R,
    decoder: encoding_rs::Decoder,
    out: Vec<u8>,
    pos: usize,
    done: bool,
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
struct Fails(Option<io::Error>);

impl Read for Fails {
    fn read(&mut self, _buf: &mut [u8]) -> io::Result<usize> {
        match self.0.take() {
            Some(e) => Err(e),
            None => Ok(0),
        }
    }
}

fn strip_compression_ext(name: &str) -> &str {
    for ext in [".gz", ".gzip", ".zst", ".zstd"] {
        if let Some(s) = name.strip_suffix(ext) {
            return s;
        }
    }
    name
}

/// UTF-8 unless the head is not UTF-8, most of its non-ASCII lines are invalid UTF-8, and it
/// decodes as GB18030 without error. A UTF-8 file with a few broken lines stays UTF-8 (those
/// lines are rejected); a GB18030 export is decoded. Also says why, for the report.
fn sniff_encoding(head: &[u8]) -> (TextEncoding, String) {
    let kib = head.len().div_ceil(1024);
    // Ignore a multi-byte character cut at the end of the head.
    let cut = head.len().saturating_sub(4);
    let valid = || {
        (
            TextEncoding::Utf8,
            format!("the first {kib} KiB are valid UTF-8"),
        )
    };
    let probe = match std::str::from_utf8(head) {
        Ok(_) if head.is_empty() => return (TextEncoding::Utf8, "empty: UTF-8".into()),
        Ok(_) => return valid(),
        Err(e) if e.valid_up_to() >= cut && e.error_len().is_none() => return valid(),
        Err(_) => head,
    };
    let (mut non_ascii, mut invalid) = (0usize, 0usize);
    for line in probe.split(|&b| b == b'\n') {
        if line.iter().any(|b| !b.is_ascii()) {
            non_ascii += 1;
            if std::str::from_utf8(line).is_err() {
                invalid += 1;
            }
        }
    }
    // Drop the last (possibly cut) line from the GB18030 check.
    let whole = match probe.iter().rposition(|&b| b == b'\n') {
        Some(i) if probe.len() == SNIFF_BYTES => &probe[..i],
        _ => probe,
    };
    // A GB18030 export with a few broken bytes is still GB18030 (they decode as U+FFFD and
    // their records are tagged): at most 1% of the non-ASCII lines, and at least 2, may hold a
    // malformed sequence.
    let (decoded, had_errors) = encoding_rs::GB18030.decode_without_bom_handling(whole);
    let malformed = if had_errors {
        decoded.matches('\u{FFFD}').count()
    } else {
        0
    };
    let allowed = (non_ascii / 100).max(2);
    let gb_ok = malformed <= allowed;
    let lines =
        format!("{invalid} of {non_ascii} non-ASCII lines in the first {kib} KiB are not UTF-8");
    if gb_ok && invalid * 2 >= non_ascii {
        let how = if malformed == 0 {
            "GB18030 decodes them all".to_string()
        } else {
            format!("GB18030 decodes them but {malformed} sequences (at most {allowed} allowed)")
        };
        (TextEncoding::Gb18030, format!("{lines}; {how}"))
    } else if !gb_ok {
        (
            TextEncoding::Utf8,
            format!(
                "{lines}; GB18030 does not fit either ({malformed} malformed sequences, over \
                 {allowed}): UTF-8, broken lines rejected"
            ),
        )
    } else {
        (
            TextEncoding::Utf8,
            format!("{lines}, a minority: UTF-8, broken lines rejected"),
        )
    }
}

/// The reader for a file from its extension, checked against its content.
fn sniff_reader(ext: &str, head: &[u8]) -> Option<ReaderKind> {
    let first = head.iter().copied().find(|b| !b.is_ascii_whitespace());
    let first_line_is_json = || {
        let start = head
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .unwrap_or(0);
        let rest = &head[start..];
        let end = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
        serde_json::from_slice::<serde::de::IgnoredAny>(&rest[..end]).is_ok()
    };
    match ext {
        "jsonl" | "ndjson" => Some(ReaderKind::Jsonl),
        "csv" => Some(ReaderKind::Csv),
        "tsv" => Some(ReaderKind::Tsv),
        "json" => Some(match first {
            Some(b'{') if first_line_is_json() => ReaderKind::Jsonl,
            _ => ReaderKind::Json,
        }),
        "txt" | "text" | "md" => Some(match first {
            Some(b'{') if first_line_is_json() => ReaderKind::Jsonl,
            _ => ReaderKind::Text,
        }),
        _ => match first {
            Some(b'[') => Some(ReaderKind::Json),
            Some(b'{') if first_line_is_json() => Some(ReaderKind::Jsonl),
            Some(b'{') => Some(ReaderKind::Json),
            _ => None,
        },
    }
}

/// Outcome of reading one line with a size bound.
enum Line {
    /// A whole line is in the buffer (without its newline).
    Ok,
    /// The line had this many bytes, over the bound; nothing was kept.
    TooLong(usize),
}

/// Read the next line into `buf` (cleared first) without ever holding more than `max` bytes.
fn read_line_bounded(
    r: &mut dyn BufRead,
    max: usize,
    buf: &mut Vec<u8>,
) -> io::Result<Option<Line>> {
    buf.clear();
    let mut total = 0usize;
    let mut any = false;
    loop {
        let avail = r.fill_buf()?;
        if avail.is_empty() {
            if !any {
                return Ok(None);
            }
            break;
        }
        any = true;
        let (chunk, done) = match memchr::memchr(b'\n', avail) {
            Some(i) => (&avail[..i], Some(i + 1)),
            None => (avail, None),
        };
        total += chunk.len();
        if total <= max {
            buf.extend_from_slice(chunk);
        } else {
            buf.clear();
        }
        let used = done.unwrap_or(chunk.len());
        r.consume(used);
        if done.is_some() {
            break;
        }
    }
    if total > max {
        return Ok(Some(Line::TooLong(total)));
    }
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    Ok(Some(Line::Ok))
}

fn too_long(n: usize, max: usize) -> String {
    format!("record is {n} bytes, over max_record_bytes ({max})")
}

fn read_jsonl(
    cx: Arc<FileCx>,
    r: &mut dyn BufRead,
    max: usize,
    emit: &mut dyn FnMut(RawRecord) -> crate::Result<()>,
) -> crate::Result<Result<(), String>> {
    let mut buf = Vec::new();
    let (mut line, mut number) = (0u64, 0u64);
    loop {
        let got = match read_line_bounded(r, max, &mut buf) {
            Ok(Some(l)) => l,
            Ok(None) => return Ok(Ok(())),
            Err(e) => return Ok(Err(format!("read failed after line {line}: {e}"))),
        };
        line += 1;
        let payload = match got {
            Line::TooLong(n) => Payload::Error(too_long(n, max)),
            Line::Ok if buf.iter().all(|b| b.is_ascii_whitespace()) => continue,
            Line::Ok => Payload::Json(std::mem::take(&mut buf)),
        };
        number += 1;
        emit(RawRecord {
            cx: cx.clone(),
            line,
            number,
            split: None,
            payload,
        })?;
    }
}

fn read_text(
    cx: Arc<FileCx>,
    r: &mut dyn BufRead,
    max: usize,
    emit: &mut dyn FnMut(RawRecord) -> crate::Result<()>,
) -> crate::Result<Result<(), String>> {
    let unit = cx.plan.text_unit;
    let mut buf = Vec::new();
    let mut doc: Vec<u8> = Vec::new();
    let mut doc_line = 0u64;
    let mut doc_over: Option<usize> = None;
    let (mut line, mut number) = (0u64, 0u64);
    let mut flush = |doc: &mut Vec<u8>, over: &mut Option<usize>, at: u64, number: &mut u64| {
        if doc.is_empty() && over.is_none() {
            return Ok(());
        }
        *number += 1;
        let payload = match over.take() {
            Some(n) => Payload::Error(too_long(n, max)),
            None => Payload::Text(std::mem::take(doc)),
        };
        doc.clear();
        emit(RawRecord {
            cx: cx.clone(),
            line: at,
            number: *number,
            split: None,
            payload,
        })
    };
    loop {
        let got = match read_line_bounded(r, max, &mut buf) {
            Ok(Some(l)) => l,
            Ok(None) => break,
            Err(e) => return Ok(Err(format!("read failed after line {line}: {e}"))),
        };
        line += 1;
        let blank = matches!(got, Line::Ok) && buf.iter().all(|b| b.is_ascii_whitespace());
        match unit {
            TextUnit::Line => {
                if blank {
                    continue;
                }
                let mut over = match got {
                    Line::TooLong(n) => Some(n),
                    Line::Ok => None,
                };
                let mut d = std::mem::take(&mut buf);
                flush(&mut d, &mut over, line, &mut number)?;
            }
            TextUnit::Paragraph | TextUnit::File => {
                if blank && unit == TextUnit::Paragraph {
                    flush(&mut doc, &mut doc_over, doc_line, &mut number)?;
                    continue;
                }
                if doc.is_empty() && doc_over.is_none() {
                    doc_line = line;
                }
                let add = match got {
                    Line::TooLong(n) => n,
                    Line::Ok => buf.len(),
                };
                match doc_over {
                    Some(ref mut n) => *n += add + 1,
                    None if doc.len() + add + 1 > max => {
                        doc_over = Some(doc.len() + add + 1);
                        doc.clear();
                    }
                    None => {
                        if !doc.is_empty() {
                            doc.push(b'\n');
                        }
                        doc.extend_from_slice(&buf);
                    }
                }
            }
        }
    }
    flush(&mut doc, &mut doc_over, doc_line, &mut number)?;
    Ok(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_sniff_tells_gb18030_from_broken_utf8() {
        let (gb, _, _) =
            encoding_rs::GB18030.encode("科室,问题\n心血管科,高血压患者能吃党参吗？\n");
        let (enc, why) = sniff_encoding(&gb);
        assert_eq!(enc, TextEncoding::Gb18030);
        assert_eq!(
            why,
            "2 of 2 non-ASCII lines in the first 1 KiB are not UTF-8; GB18030 decodes them all"
        );
        let mut mostly_utf8 = "你好\n世界\n再见\n".repeat(10).into_bytes();
        mostly_utf8.extend_from_slice(b"bad \xff\xfe line\n");
        let (enc, why) = sniff_encoding(&mostly_utf8);
        assert_eq!(enc, TextEncoding::Utf8);
        assert!(why.starts_with("1 of 31 non-ASCII lines"), "{why}");
        assert!(
            why.ends_with("a minority: UTF-8, broken lines rejected"),
            "{why}"
        );
        assert_eq!(
            sniff_encoding("纯 UTF-8 文本".as_bytes()),
            (
                TextEncoding::Utf8,
                "the first 1 KiB are valid UTF-8".to_string()
            )
        );
    }

    #[test]
    fn reader_sniff_follows_content_for_ambiguous_extensions() {
        assert_eq!(sniff_reader("json", b"[{\"a\":1}]"), Some(ReaderKind::Json));
        assert_eq!(
            sniff_reader("json", b"{\"a\":1}\n{\"a\":2}\n"),
            Some(ReaderKind::Jsonl)
        );
        assert_eq!(
            sniff_reader("json", b"{\n \"a\": 1\n}\n"),
            Some(ReaderKind::Json)
        );
        assert_eq!(
            sniff_reader("txt", b"{\"q\":\"a\"}\n"),
            Some(ReaderKind::Jsonl)
        );
        assert_eq!(
            sniff_reader("txt", b"Once upon a time\n"),
            Some(ReaderKind::Text)
        );
        assert_eq!(sniff_reader("dat", b"hello"), None);
    }

    #[test]
    fn bounded_lines_never_hold_more_than_the_bound() {
        let data = format!("short\n{}\nlast", "x".repeat(100));
        let mut r = BufReader::with_capacity(8, data.as_bytes());
        let mut buf = Vec::new();
        assert!(matches!(
            read_line_bounded(&mut r, 50, &mut buf),
            Ok(Some(Line::Ok))
        ));
        assert_eq!(buf, b"short");
        assert!(matches!(
            read_line_bounded(&mut r, 50, &mut buf),
            Ok(Some(Line::TooLong(100)))
        ));
        assert!(buf.len() <= 50);
        assert!(matches!(
            read_line_bounded(&mut r, 50, &mut buf),
            Ok(Some(Line::Ok))
        ));
        assert_eq!(buf, b"last");
        assert!(matches!(read_line_bounded(&mut r, 50, &mut buf), Ok(None)));
    }
}
