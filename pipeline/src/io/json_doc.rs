//! A streaming splitter for JSON documents: a top-level array of records, a single record,
//! concatenated records, or `{"train": [...], "valid": [...]}` split documents (LCCC). Each
//! record's bytes are cut out without parsing them, so one broken record is rejected alone and
//! memory is bounded by the largest record, not the file.

use super::lines::too_long;
use super::{FileCx, Payload, RawRecord};
use std::io::{self, BufRead};
use std::sync::Arc;

/// Keys that mark a top-level object as a set of splits rather than one record.
const SPLIT_KEYS: &[&str] = &["train", "valid", "validation", "dev", "test", "eval"];

struct Scanner<'a> {
    r: &'a mut dyn BufRead,
    line: u64,
}

impl Scanner<'_> {
    fn peek(&mut self) -> io::Result<Option<u8>> {
        Ok(self.r.fill_buf()?.first().copied())
    }

    fn bump(&mut self) {
        self.r.consume(1);
    }

    fn skip_ws(&mut self) -> io::Result<Option<u8>> {
        loop {
            let avail = self.r.fill_buf()?;
            if avail.is_empty() {
                return Ok(None);
            }
            let mut i = 0;
            while i < avail.len() && avail[i].is_ascii_whitespace() {
                if avail[i] == b'\n' {
                    self.line += 1;
                }
                i += 1;
            }
            let found = avail.get(i).copied();
            self.r.consume(i);
            if found.is_some() {
                return Ok(found);
            }
        }
    }

    /// Copy one JSON value into `out` (up to `max` bytes; beyond that only its length is
    /// counted). `depth` > 0 continues inside an already opened container. Returns the value's
    /// length, or `None` when the input ends inside it.
    fn scan_value(
        &mut self,
        out: &mut Vec<u8>,
        max: usize,
        mut depth: usize,
    ) -> io::Result<Option<usize>> {
        let mut len = out.len();
        let (mut in_str, mut esc) = (false, false);
        let scalar = depth == 0 && !matches!(self.peek()?, Some(b'{' | b'[' | b'"'));
        loop {
            let avail = self.r.fill_buf()?;
            if avail.is_empty() {
                return Ok(if scalar && len > 0 { Some(len) } else { None });
            }
            let mut end = None;
            let mut i = 0;
            while i < avail.len() {
                if esc {
                    esc = false;
                    i += 1;
                    continue;
                }
                if in_str {
                    // Jump to the next quote or backslash: most bytes of a record are text.
                    match memchr::memchr2(b'"', b'\\', &avail[i..]) {
                        None => i = avail.len(),
                        Some(off) => {
                            i += off;
                            if avail[i] == b'\\' {
                                esc = true;
                            } else {
                                in_str = false;
                                if depth == 0 {
                                    end = Some(i + 1);
                                    break;
                                }
                            }
                            i += 1;
                        }
                    }
                    continue;
                }
                let b = avail[i];
                if scalar {
                    if matches!(b, b',' | b']' | b'}') || b.is_ascii_whitespace() {
                        end = Some(i);
                        break;
                    }
                    i += 1;
                    continue;
                }
                match b {
                    b'"' => in_str = true,
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth = depth.saturating_sub(1);
                        if depth == 0 {
                            end = Some(i + 1);
                            break;
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            let take = end.unwrap_or(avail.len());
            self.line += memchr::memchr_iter(b'\n', &avail[..take]).count() as u64;
            len += take;
            if len <= max {
                out.extend_from_slice(&avail[..take]);
            }
            self.r.consume(take);
            if end.is_some() {
                return Ok(Some(len));
            }
        }
    }

    /// Read a JSON string token (the opening quote is next) and return its raw bytes.
    fn read_key(&mut self) -> io::Result<Option<Vec<u8>>> {
        let mut out = Vec::new();
        match self.scan_value(&mut out, 4096, 0)? {
            Some(_) if out.first() == Some(&b'"') => Ok(Some(out)),
            _ => Ok(None),
        }
    }
}

struct Splitter<'a, 'e> {
    cx: Arc<FileCx>,
    max: usize,
    number: u64,
    emit: &'e mut dyn FnMut(RawRecord) -> crate::Result<()>,
    s: Scanner<'a>,
}

type Step = crate::Result<Result<(), String>>;

impl Splitter<'_, '_> {
    fn record(
        &mut self,
        split: Option<Arc<str>>,
        depth: usize,
        prefix: Vec<u8>,
        start_line: Option<u64>,
    ) -> crate::Result<Option<()>> {
        let line = start_line.unwrap_or(self.s.line);
        let mut buf = prefix;
        let scanned = match self.s.scan_value(&mut buf, self.max, depth) {
            Ok(v) => v,
            Err(e) => {
                return Err(crate::Error::Input {
                    path: self.cx.file.as_ref().into(),
                    message: format!("read failed at line {line}: {e}"),
                })
            }
        };
        self.number += 1;
        let payload = match scanned {
            None => Payload::Error(format!(
                "the file ends inside this record (started at line {line}): truncated JSON"
            )),
            Some(n) if n > self.max => Payload::Error(too_long(n, self.max)),
            Some(_) => Payload::Json(buf),
        };
        let end = matches!(payload, Payload::Error(_)) && scanned.is_none();
        (self.emit)(RawRecord {
            cx: self.cx.clone(),
            line,
            number: self.number,
            split,
            payload,
        })?;
        Ok((!end).then_some(()))
    }

    /// The elements of an array whose `[` was just consumed.
    fn array(&mut self, split: Option<Arc<str>>) -> Step {
        if self.ws()? == Some(b']') {
            self.s.bump();
            return Ok(Ok(()));
        }
        loop {
            if self.record(split.clone(), 0, Vec::new(), None)?.is_none() {
                return Ok(Ok(()));
            }
            match self.ws()? {
                Some(b',') => {
                    self.s.bump();
                    if self.ws()? == Some(b']') {
                        self.s.bump(); // tolerate a trailing comma
                        return Ok(Ok(()));
                    }
                }
                Some(b']') => {
                    self.s.bump();
                    return Ok(Ok(()));
                }
                Some(b) => {
                    return Ok(Err(format!(
                        "expected ',' or ']' after record {} but found {:?} at line {}: the rest of the file cannot be split into records",
                        self.number, b as char, self.s.line
                    )))
                }
                None => {
                    return Ok(Err(format!(
                        "the file ends inside the top-level array after record {} (missing ']')",
                        self.number
                    )))
                }
            }
        }
    }

    fn ws(&mut self) -> crate::Result<Option<u8>> {
        self.s.skip_ws().map_err(|e| crate::Error::Input {
            path: self.cx.file.as_ref().into(),
            message: format!("read failed at line {}: {e}", self.s.line),
        })
    }

    fn read_key(&mut self) -> crate::Result<Option<Vec<u8>>> {
        let line = self.s.line;
        self.s.read_key().map_err(|e| crate::Error::Input {
            path: self.cx.file.as_ref().into(),
            message: format!("read failed at line {line}: {e}"),
        })
    }

    /// A top-level object whose `{` is next: either `{split: [records], …}` or one record.
    fn object(&mut self) -> Step {
        let open_line = Some(self.s.line);
        self.s.bump();
        let mut prefix = b"{".to_vec();
        if self.ws()? != Some(b'"') {
            // `{}` or broken: hand it to the record path, which rejects it with a clear error.
            return Ok(self.record(None, 1, prefix, open_line)?.map_or(Ok(()), Ok));
        }
        let key_line = self.s.line;
        let key = match self.read_key()? {
            Some(k) => k,
            None => return Ok(Err(format!("unterminated key at line {key_line}"))),
        };
        let name = serde_json::from_slice::<String>(&key).unwrap_or_default();
        let colon = self.ws()?;
        if colon == Some(b':') {
            self.s.bump();
        }
        let next = self.ws()?;
        let is_split = colon == Some(b':')
            && next == Some(b'[')
            && SPLIT_KEYS.contains(&name.to_ascii_lowercase().as_str());
        if !is_split {
            prefix.extend_from_slice(&key);
            if colon == Some(b':') {
                prefix.push(b':');
            }
            return Ok(self.record(None, 1, prefix, open_line)?.map_or(Ok(()), Ok));
        }
        let mut name = name;
        loop {
            self.s.bump(); // the '['
            if let Err(e) = self.array(Some(Arc::from(name.as_str())))? {
                return Ok(Err(e));
            }
            match self.ws()? {
                Some(b',') => self.s.bump(),
                Some(b'}') => {
                    self.s.bump();
                    return Ok(Ok(()));
                }
                _ => {
                    return Ok(Err(format!(
                        "expected ',' or '}}' after split {name:?} at line {}",
                        self.s.line
                    )))
                }
            }
            if self.ws()? != Some(b'"') {
                return Ok(Err(format!(
                    "expected a split name at line {}",
                    self.s.line
                )));
            }
            let key = self.read_key()?.unwrap_or_default();
            name = serde_json::from_slice::<String>(&key).unwrap_or_default();
            if self.ws()? != Some(b':') {
                return Ok(Err(format!(
                    "expected ':' after split {name:?} at line {}",
                    self.s.line
                )));
            }
            self.s.bump();
            if self.ws()? != Some(b'[') {
                return Ok(Err(format!(
                    "split {name:?} at line {} is not an array of records",
                    self.s.line
                )));
            }
        }
    }
}

/// Split a JSON document into records. A read fault (a corrupt compressed stream) ends the
/// file as one error after the records before it, never the run.
pub(super) fn read(
    cx: Arc<FileCx>,
    r: &mut dyn BufRead,
    max: usize,
    emit: &mut dyn FnMut(RawRecord) -> crate::Result<()>,
) -> Step {
    let file = cx.file.clone();
    match split_all(cx, r, max, emit) {
        Err(crate::Error::Input { path, message }) if *path == *file.as_ref() => Ok(Err(message)),
        other => other,
    }
}

fn split_all(
    cx: Arc<FileCx>,
    r: &mut dyn BufRead,
    max: usize,
    emit: &mut dyn FnMut(RawRecord) -> crate::Result<()>,
) -> Step {
    let mut sp = Splitter {
        cx,
        max,
        number: 0,
        emit,
        s: Scanner { r, line: 1 },
    };
    // A UTF-8 byte order mark is not part of the document.
    if sp
        .s
        .r
        .fill_buf()
        .is_ok_and(|b| b.starts_with(b"\xEF\xBB\xBF"))
    {
        sp.s.r.consume(3);
    }
    loop {
        let step = match sp.ws()? {
            None => return Ok(Ok(())),
            Some(b @ (b']' | b'}' | b',' | b':')) => {
                // Stray closers and separators outside any record: one reject for a run of
                // them (a file of `]` costs one reject, not one per byte), and the reader moves
                // past it (every step consumes input, so every file ends).
                let line = sp.s.line;
                sp.s.bump();
                let mut more = 0u64;
                while let Some(b']' | b'}' | b',' | b':') = sp.ws()? {
                    sp.s.bump();
                    more += 1;
                }
                sp.number += 1;
                let and_more = if more > 0 {
                    format!(" and {more} more stray closers or separators after it")
                } else {
                    String::new()
                };
                (sp.emit)(RawRecord {
                    cx: sp.cx.clone(),
                    line,
                    number: sp.number,
                    split: None,
                    payload: Payload::Error(format!(
                        "unexpected {:?} at line {line}{and_more}, outside any record",
                        b as char
                    )),
                })?;
                Ok(())
            }
            Some(b'[') => {
                sp.s.bump();
                sp.array(None)?
            }
            Some(b'{') => sp.object()?,
            Some(_) => match sp.record(None, 0, Vec::new(), None)? {
                Some(()) => Ok(()),
                None => return Ok(Ok(())),
            },
        };
        if let Err(e) = step {
            return Ok(Err(e));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::options::{Encoding, InputPlan, ReaderKind};
    use crate::io::TextEncoding;

    type Split = (Vec<(u64, Option<String>, String)>, Result<(), String>);

    fn split(doc: &str, max: usize) -> Split {
        let plan = Arc::new(InputPlan {
            reader: ReaderKind::Json,
            encoding: Encoding::Utf8,
            ..InputPlan::new("t")
        });
        let cx = Arc::new(FileCx {
            input: 0,
            plan,
            file: Arc::from("t.json"),
            encoding: TextEncoding::Utf8,
            encoding_why: Arc::from(""),
            headers: None,
            reader: ReaderKind::Json,
        });
        let mut out = Vec::new();
        let mut r = io::BufReader::with_capacity(7, doc.as_bytes());
        let res = read(cx, &mut r, max, &mut |rec| {
            let body = match rec.payload {
                Payload::Json(b) => String::from_utf8(b).expect("utf8"),
                Payload::Error(e) => format!("ERR {e}"),
                _ => unreachable!(),
            };
            out.push((rec.line, rec.split.map(|s| s.to_string()), body));
            Ok(())
        })
        .expect("no fatal error");
        (out, res)
    }

    #[test]
    fn arrays_split_into_records_with_lines() {
        let (recs, res) = split(
            "[\n {\"a\": \"x]}\\\"\"},\n {\"b\": [1, {\"c\": 2}]}\n]\n",
            1000,
        );
        assert!(res.is_ok());
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0], (2, None, "{\"a\": \"x]}\\\"\"}".to_string()));
        assert_eq!(recs[1].0, 3);
        assert_eq!(recs[1].2, "{\"b\": [1, {\"c\": 2}]}");
    }

    #[test]
    fn split_documents_tag_each_record_with_its_split() {
        let (recs, res) = split(
            "{\"train\": [[\"a\", \"b\"]], \"test\": [[\"c\", \"d\"], [\"e\", \"f\"]]}",
            1000,
        );
        assert!(res.is_ok(), "{res:?}");
        let splits: Vec<_> = recs
            .iter()
            .map(|r| r.1.clone().unwrap_or_default())
            .collect();
        assert_eq!(splits, ["train", "test", "test"]);
        assert_eq!(recs[2].2, "[\"e\", \"f\"]");
    }

    #[test]
    fn a_single_object_is_one_record() {
        let doc = "\n{\"conversations\":\n [{\"from\": \"human\"}]}";
        let (recs, res) = split(doc, 1000);
        assert!(res.is_ok());
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].0, 2, "the record starts where its brace is");
        let got: serde_json::Value = serde_json::from_str(&recs[0].2).expect("valid JSON");
        let want: serde_json::Value = serde_json::from_str(doc).expect("valid JSON");
        assert_eq!(got, want);
    }

    #[test]
    fn oversize_and_truncated_records_become_errors() {
        let (recs, res) = split(
            "[{\"a\": \"0123456789\"}, {\"b\": 1}, {\"c\": \"never closed",
            15,
        );
        assert!(res.is_ok());
        assert!(
            recs[0].2.starts_with("ERR record is 19 bytes"),
            "{:?}",
            recs[0]
        );
        assert_eq!(recs[1].2, "{\"b\": 1}");
        assert!(recs[2].2.contains("truncated"), "{:?}", recs[2]);
    }

    /// Regression (the fuzzer's endless loop): stray closers and separators at the top level
    /// cost one reject per run of them (a 3 KB gzip of `]` wrote 3.1M rejects), and the reader
    /// ends.
    #[test]
    fn stray_top_level_bytes_are_rejected_and_the_reader_ends() {
        for (doc, records, rejects) in [
            ("[{\"text\":\"hello world\"}]]", 1, 1),
            ("{\"text\":\"a\"}}", 1, 1),
            (",", 0, 1),
            ("[{\"a\": 1}],[{\"b\": 2}]", 2, 1),
            ("]]]]", 0, 1),
            ("] ]\n,}:", 0, 1),
            ("][{\"a\": 1}]]", 1, 2),
            ("\u{feff}[{\"a\": 1}]", 1, 0),
            ("\u{feff}{\"a\": 1}", 1, 0),
            // `d`, `a` and `b` are cut out as values and rejected when parsed.
            ("[d]\na,b\n", 3, 1),
        ] {
            let (recs, _) = split(doc, 100);
            let errs = recs.iter().filter(|r| r.2.starts_with("ERR")).count();
            assert_eq!(
                (recs.len() - errs, errs),
                (records, rejects),
                "{doc:?}: {recs:?}"
            );
        }
    }

    #[test]
    fn garbage_between_records_stops_the_file_with_a_location() {
        let (recs, res) = split("[{\"a\": 1}\n {\"b\": 2}]", 100);
        assert_eq!(recs.len(), 1);
        let err = res.expect_err("structural error");
        assert!(err.contains("line 2"), "{err}");
    }
}
