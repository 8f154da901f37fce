//! What a file is: its compression extension, text encoding (with the reason, for the report)
//! and layout, from its name and the head of its content.

use super::TextEncoding;
use crate::io::options::ReaderKind;

pub(super) const SNIFF_BYTES: usize = 256 * 1024;

pub(super) fn strip_compression_ext(name: &str) -> &str {
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
pub(super) fn sniff_encoding(head: &[u8]) -> (TextEncoding, String) {
    // What was looked at: the whole (decompressed) file when it is shorter than the sniff.
    let scope = if head.len() < SNIFF_BYTES {
        "the file".to_string()
    } else {
        format!("the first {} KiB", SNIFF_BYTES / 1024)
    };
    // Ignore a multi-byte character cut at the end of the head.
    let cut = head.len().saturating_sub(4);
    let valid = || (TextEncoding::Utf8, format!("{scope} is valid UTF-8"));
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
    // their records are tagged): malformed sequences up to 5% of the non-ASCII lines (and at
    // least 2) are tolerated. (At 1%, an export with one broken line in a hundred was read as
    // UTF-8 and every record rejected.)
    let (decoded, had_errors) = encoding_rs::GB18030.decode_without_bom_handling(whole);
    let malformed = if had_errors {
        decoded.matches('\u{FFFD}').count()
    } else {
        0
    };
    let allowed = (non_ascii / 20).max(2);
    let gb_ok = malformed <= allowed;
    let lines = format!("{invalid} of {non_ascii} non-ASCII lines in {scope} are not UTF-8");
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
pub(super) fn sniff_reader(ext: &str, head: &[u8]) -> Option<ReaderKind> {
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
            "2 of 2 non-ASCII lines in the file are not UTF-8; GB18030 decodes them all"
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
            (TextEncoding::Utf8, "the file is valid UTF-8".to_string())
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

    /// Regression (attacker walk of #18): one broken line in a hundred made a GB18030 export
    /// read as UTF-8 and every record rejected; up to 5% malformed sequences are tolerated.
    #[test]
    fn a_gb18030_export_with_some_broken_lines_stays_gb18030() {
        let mut bytes = Vec::new();
        for i in 0..1000 {
            let mut line = encoding_rs::GB18030
                .encode(&format!("你好，请问我的银行卡怎么挂失？{i}\n"))
                .0
                .into_owned();
            if i % 33 == 0 {
                line.insert(6, 0xFF);
            }
            bytes.extend(line);
        }
        let (enc, why) = sniff_encoding(&bytes);
        assert_eq!(enc, TextEncoding::Gb18030, "{why}");
    }
}
