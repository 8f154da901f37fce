//! A bounded CSV/TSV reader. Records are cut from the byte stream one physical line at a time,
//! so memory never exceeds `max_record_bytes` whatever the input (a 2 GB field of zeros, an
//! unclosed quote before gigabytes of text): a header or record over the bound is rejected
//! without being held. A quoted field may span lines, at most `max_quoted_lines` of them; a
//! quote still open at that limit, at the size bound or at the end of the file becomes a
//! reject at the line it opened on, and reading resumes at the next line, so one stray quote
//! costs one row, not the rows after it. Line numbers count `\n`, so CRLF files number right.

use super::lines::too_long;
use super::{FileCx, Payload, RawRecord};
use std::collections::VecDeque;
use std::io::{self, BufRead};
use std::sync::Arc;

/// One logical record as cut from the stream.
enum Cut {
    /// A whole record (without its final newline), starting at `line`.
    Record(u64, Vec<u8>),
    /// A record over the size bound (`n` bytes and counting when it was dropped).
    TooLong(u64, usize),
    /// A quote opened at `line` that did not close.
    Unclosed(u64, String),
}

/// A physical line: its number, and its bytes or (over the bound) its size.
type PhysLine = (u64, Result<Vec<u8>, usize>);

struct Splitter<'a> {
    r: &'a mut dyn BufRead,
    delimiter: u8,
    /// Lines read but given back (after an unclosed quote), with their numbers.
    pending: VecDeque<PhysLine>,
    line: u64,
    max: usize,
    /// Lines a quoted field may span.
    max_lines: usize,
}

impl Splitter<'_> {
    /// The next physical line (without `\n` or `\r\n`): its number and its bytes, or its size
    /// when over the bound.
    fn next_line(&mut self) -> io::Result<Option<PhysLine>> {
        if let Some(l) = self.pending.pop_front() {
            return Ok(Some(l));
        }
        let mut buf = Vec::new();
        let got = super::lines::read_line_bounded(self.r, self.max, &mut buf)?;
        Ok(got.map(|l| {
            self.line += 1;
            match l {
                super::lines::Line::Ok => (self.line, Ok(buf)),
                super::lines::Line::TooLong(n) => (self.line, Err(n)),
            }
        }))
    }

    fn cut(&mut self) -> io::Result<Option<Cut>> {
        let Some((start, first)) = self.next_line()? else {
            return Ok(None);
        };
        let mut rec = match first {
            Ok(bytes) => bytes,
            Err(n) => return Ok(Some(Cut::TooLong(start, n))),
        };
        let mut open = opens_quote(&rec, self.delimiter, false);
        if !open {
            return Ok(Some(Cut::Record(start, rec)));
        }
        // A quoted field goes on over the next lines.
        let mut taken: Vec<PhysLine> = Vec::new();
        let why = loop {
            if taken.len() >= self.max_lines {
                break format!(
                    "a quoted field opened on this line is still open {} lines later (raise the input's max_quoted_lines if fields are that long)",
                    self.max_lines
                );
            }
            let Some((n, next)) = self.next_line()? else {
                break "a quoted field opened on this line never closes".to_string();
            };
            match &next {
                Ok(bytes) if rec.len() + 1 + bytes.len() <= self.max => {
                    open = opens_quote(bytes, self.delimiter, open);
                    rec.push(b'\n');
                    rec.extend_from_slice(bytes);
                    taken.push((n, next));
                    if !open {
                        return Ok(Some(Cut::Record(start, rec)));
                    }
                }
                _ => {
                    taken.push((n, next));
                    break format!(
                        "a quoted field opened on this line runs past max_record_bytes ({})",
                        self.max
                    );
                }
            }
        };
        // Give the lines back: reading resumes at the line after the opening one.
        for l in taken.into_iter().rev() {
            self.pending.push_front(l);
        }
        Ok(Some(Cut::Unclosed(start, why)))
    }
}

/// Whether a quoted field is still open at the end of `line`, given whether one was open at
/// its start. A quote opens a field only at the field's start (elsewhere it is a character,
/// as in `小三阳"如何`); inside a quoted field `""` is a quote and `"` closes it.
fn opens_quote(line: &[u8], delimiter: u8, mut quoted: bool) -> bool {
    let mut at_start = !quoted;
    let mut i = 0;
    while i < line.len() {
        let b = line[i];
        if quoted {
            if b == b'"' {
                if line.get(i + 1) == Some(&b'"') {
                    i += 1;
                } else {
                    quoted = false;
                }
            }
        } else if b == delimiter {
            at_start = true;
            i += 1;
            continue;
        } else if b == b'"' && at_start {
            quoted = true;
        }
        at_start = false;
        i += 1;
    }
    quoted
}

/// The fields of one record: delimiter-separated, double-quoted fields unquoted (`""` is a
/// quote). Text after a closing quote is kept, as the csv crate does.
fn fields(bytes: &[u8], delimiter: u8) -> csv::ByteRecord {
    let mut rec = csv::ByteRecord::new();
    let mut field = Vec::new();
    let (mut i, mut quoted, mut at_start) = (0, false, true);
    while i < bytes.len() {
        let b = bytes[i];
        if quoted {
            if b == b'"' {
                if bytes.get(i + 1) == Some(&b'"') {
                    field.push(b'"');
                    i += 1;
                } else {
                    quoted = false;
                }
            } else {
                field.push(b);
            }
        } else if b == delimiter {
            rec.push_field(&field);
            field.clear();
            at_start = true;
            i += 1;
            continue;
        } else if b == b'"' && at_start {
            quoted = true;
        } else {
            field.push(b);
        }
        at_start = false;
        i += 1;
    }
    rec.push_field(&field);
    rec
}

/// Read a CSV (or TSV) file: the header, then one record per row.
pub(super) fn read(
    mut cx: FileCx,
    r: &mut dyn BufRead,
    delimiter: u8,
    max: usize,
    emit: &mut dyn FnMut(RawRecord) -> crate::Result<()>,
) -> crate::Result<Result<(), String>> {
    let mut sp = Splitter {
        r,
        delimiter,
        pending: VecDeque::new(),
        line: 0,
        max,
        max_lines: cx.plan.max_quoted_lines.max(1),
    };
    let read_err = |line: u64, e: io::Error| format!("read failed after line {line}: {e}");
    // The header: the first line that is not blank.
    let header = loop {
        match sp.cut() {
            Ok(None) => return Ok(Ok(())),
            Ok(Some(Cut::Record(_, b))) if b.iter().all(u8::is_ascii_whitespace) => continue,
            Ok(Some(Cut::Record(_, b))) => break b,
            Ok(Some(Cut::TooLong(line, n))) => {
                return Ok(Err(format!(
                    "the CSV header (line {line}) is {n} bytes, over max_record_bytes ({max})"
                )))
            }
            Ok(Some(Cut::Unclosed(line, why))) => {
                return Ok(Err(format!("the CSV header (line {line}): {why}")))
            }
            Err(e) => return Ok(Err(read_err(sp.line, e))),
        }
    };
    let headers = fields(&header, delimiter);
    let mut names = Vec::with_capacity(headers.len());
    for (i, h) in headers.iter().enumerate() {
        match cx.encoding.decode(h) {
            Ok(s) => names.push(s.trim().to_string()),
            Err(e) => return Ok(Err(format!("CSV header column {}: {e}", i + 1))),
        }
    }
    let width = names.len();
    cx.headers = Some(names);
    let cx = Arc::new(cx);
    let mut number = 0u64;
    loop {
        let cut = match sp.cut() {
            Ok(Some(c)) => c,
            Ok(None) => return Ok(Ok(())),
            Err(e) => return Ok(Err(read_err(sp.line, e))),
        };
        let (line, payload) = match cut {
            Cut::Record(_, b) if b.iter().all(u8::is_ascii_whitespace) => continue,
            Cut::Record(line, b) => {
                let rec = fields(&b, delimiter);
                if rec.len() == width {
                    (line, Payload::Csv(rec))
                } else {
                    (
                        line,
                        Payload::Error(format!(
                            "row has {} fields, the header has {width}",
                            rec.len()
                        )),
                    )
                }
            }
            Cut::TooLong(line, n) => (line, Payload::Error(too_long(n, max))),
            Cut::Unclosed(line, why) => (line, Payload::Error(why)),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::options::{Encoding, InputPlan, ReaderKind};
    use crate::io::TextEncoding;

    fn rows(text: &str, max: usize) -> (Vec<(u64, String)>, Result<(), String>) {
        let plan = Arc::new(InputPlan {
            reader: ReaderKind::Csv,
            encoding: Encoding::Utf8,
            ..InputPlan::new("t")
        });
        let cx = FileCx {
            input: 0,
            plan,
            file: Arc::from("t.csv"),
            encoding: TextEncoding::Utf8,
            encoding_why: Arc::from(""),
            headers: None,
            reader: ReaderKind::Csv,
        };
        let mut out = Vec::new();
        let mut r = io::BufReader::with_capacity(5, text.as_bytes());
        let res = read(cx, &mut r, b',', max, &mut |rec| {
            let body = match rec.payload {
                Payload::Csv(b) => b
                    .iter()
                    .map(|f| String::from_utf8_lossy(f).into_owned())
                    .collect::<Vec<_>>()
                    .join("|"),
                Payload::Error(e) => format!("ERR {e}"),
                _ => unreachable!(),
            };
            out.push((rec.line, body));
            Ok(())
        })
        .expect("no fatal error");
        (out, res)
    }

    #[test]
    fn quoted_fields_span_lines_and_unquote() {
        let (r, res) = rows(
            "q,a\nq1,\"line one\nline two\"\n\"say \"\"hi\"\"\",x\r\nq3,a3\r\n",
            1000,
        );
        assert!(res.is_ok());
        assert_eq!(
            r,
            vec![
                (2, "q1|line one\nline two".into()),
                (4, "say \"hi\"|x".into()),
                (5, "q3|a3".into())
            ]
        );
    }

    /// Regressions from the fuzzer: a stray quote merged the next row into an answer (or
    /// swallowed rows until the file's end); CRLF rejects were numbered one too low.
    #[test]
    fn an_unclosed_quote_costs_its_own_row_only() {
        let (r, _) = rows("q,a\nq1,a1\nq2,\"a2\nq3,a3\n", 1000);
        assert_eq!(r[0], (2, "q1|a1".into()));
        assert_eq!(r[1].0, 3);
        assert!(
            r[1].1.starts_with("ERR") && r[1].1.contains("never closes"),
            "{r:?}"
        );
        assert_eq!(r[2], (4, "q3|a3".into()));
        let (r, _) = rows("q,a\r\nq1,a1\r\nq2,a2,extra\r\nq3,a3\r\n", 1000);
        assert_eq!(r[1].0, 3, "CRLF lines are numbered right: {r:?}");
        assert!(r[1].1.contains("3 fields"));
    }

    #[test]
    fn a_quote_inside_an_unquoted_field_is_a_character() {
        let (r, _) = rows("q,a\nq1,小三阳\"如何治疗,x\nq2,a2\n", 1000);
        assert_eq!(r.len(), 2, "{r:?}");
        assert_eq!(r[1], (3, "q2|a2".into()));
    }

    #[test]
    fn nothing_over_the_bound_is_held() {
        // A header of 10,000 zeros and no newline: an error naming the bound, not a silent
        // `read 0`.
        let (r, res) = rows(&"0".repeat(10_000), 100);
        assert!(r.is_empty());
        assert!(res
            .expect_err("header too long")
            .contains("over max_record_bytes"));
        // A quote opened before a long tail: one reject at its line, the rows after it read.
        let text = format!("q,a\nq1,\"{}\nq2,a2\n", "x".repeat(500));
        let (r, _) = rows(&text, 100);
        assert_eq!(r.len(), 2, "{r:?}");
        assert!(r[0].1.starts_with("ERR"));
        assert_eq!(r[1], (3, "q2|a2".into()));
        let mut many = String::from("q,a\nq0,\"open\n");
        for i in 0..(crate::io::options::DEFAULT_MAX_QUOTED_LINES + 5) {
            many += &format!("q{i},a{i}\n");
        }
        let (r, _) = rows(&many, 1 << 20);
        assert!(r[0].1.contains("still open"), "{:?}", r[0]);
        assert_eq!(r.len(), crate::io::options::DEFAULT_MAX_QUOTED_LINES + 6);
        assert_eq!(r[1], (3, "q0|a0".into()));
    }
}
