//! Input and output. Readers split a file into raw records with their location (cheap, on one
//! thread); [`convert`] turns a raw record into a [`Sample`](crate::sample::Sample) (parse,
//! decode, map the format; run in parallel by the engine). Writers live in [`writers`].
//!
//! Readers know nothing about stages; a record they cannot even split out (too long, broken
//! structure) still becomes a raw record carrying the error, so it is counted and rejected.

pub mod convert;
mod csv_in;
mod detect;
mod json_doc;
mod lines;
pub mod options;
mod parquet_in;
pub mod shard_sink;
mod streams;
pub mod writers;

use crate::io::options::{Compression, Encoding, InputPlan, ReaderKind};
use detect::{sniff_encoding, sniff_reader, strip_compression_ext, SNIFF_BYTES};
use lines::{read_jsonl, read_text};
use std::io::{self, BufRead, BufReader, Cursor, Read};
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use streams::{Cancellable, Counting, CrLines, Expansion, Fails, Gb18030Reader};

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
    let file = match crate::confine::open_confined(path, plan.confined_to.as_deref()) {
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
            // A zstd stream may open with a skippable frame (magic 0x184D2A50..5F).
            Some([0x50..=0x5f, 0x2a, 0x4d, 0x18]) => Compression::Zstd,
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
    // GB18030's own byte-order mark (U+FEFF encoded in GB18030).
    let gb_bom = head.starts_with(&[0x84, 0x31, 0x95, 0x33]);
    if bom {
        skip = 3;
    } else if gb_bom {
        skip = 4;
    } else if head.starts_with(&[0xFF, 0xFE]) || head.starts_with(&[0xFE, 0xFF]) {
        return Ok(Err(
            "UTF-16 text is not supported: convert the file to UTF-8".to_string(),
        ));
    }
    let (encoding, encoding_why) = match plan.encoding {
        Encoding::Utf8 => (TextEncoding::Utf8, "set in the config".to_string()),
        Encoding::Gb18030 => (TextEncoding::Gb18030, "set in the config".to_string()),
        Encoding::Auto if bom => (TextEncoding::Utf8, "a UTF-8 byte-order mark".to_string()),
        Encoding::Auto if gb_bom => (
            TextEncoding::Gb18030,
            "a GB18030 byte-order mark".to_string(),
        ),
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
    // Old Mac exports end lines with a lone CR: without a single LF in the head, every CR of a
    // line-based file is a line end (otherwise the whole file is one line: no row at all).
    let cr_lines = matches!(
        reader,
        ReaderKind::Csv | ReaderKind::Tsv | ReaderKind::Jsonl | ReaderKind::Text
    ) && head.contains(&b'\r')
        && !head.contains(&b'\n');
    let joined: Box<dyn Read + Send + '_> = if cr_lines {
        Box::new(CrLines(Cursor::new(head).chain(stream)))
    } else {
        Box::new(Cursor::new(head).chain(stream))
    };
    let mut body = BufReader::with_capacity(256 * 1024, joined);
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
