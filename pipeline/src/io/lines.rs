//! Line-based readers (JSONL and plain text), with a line bound that never holds more than
//! `max_record_bytes` of a line.

use super::{FileCx, Payload, RawRecord};
use crate::io::options::TextUnit;
use std::io::{self, BufRead};
use std::sync::Arc;

/// Outcome of reading one line with a size bound.
pub(super) enum Line {
    /// A whole line is in the buffer (without its newline).
    Ok,
    /// The line had this many bytes, over the bound; nothing was kept.
    TooLong(usize),
}

/// Read the next line into `buf` (cleared first) without ever holding more than `max` bytes.
pub(super) fn read_line_bounded(
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

pub(super) fn too_long(n: usize, max: usize) -> String {
    format!("record is {n} bytes, over max_record_bytes ({max})")
}

pub(super) fn read_jsonl(
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

pub(super) fn read_text(
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
    use std::io::BufReader;
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
