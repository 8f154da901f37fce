//! Text normalization shared by stages: the canonical form used for content hashing, and the
//! removal of spaces that some corpora (LCCC) put between CJK characters.
//!
//! Normalization here never changes what is written out; it only defines equality for hashing.

use unicode_normalization::UnicodeNormalization;

/// Append the canonical form of `text` to `out`: NFKC (full-width to half-width, compatibility
/// forms), Unicode lower case, and every run of whitespace folded to one space, trimmed.
pub fn canonical_into(text: &str, out: &mut String) {
    // Most text is already NFKC: the quick check avoids decomposing and recomposing it.
    match unicode_normalization::is_nfkc_quick(text.chars()) {
        unicode_normalization::IsNormalized::Yes => fold_into(text.chars(), out),
        _ => fold_into(text.nfkc(), out),
    }
}

fn fold_into(chars: impl Iterator<Item = char>, out: &mut String) {
    let mut pending_space = false;
    let start = out.len();
    for c in chars {
        if c.is_whitespace() {
            pending_space = out.len() > start;
            continue;
        }
        if pending_space {
            out.push(' ');
            pending_space = false;
        }
        if c.is_ascii() {
            out.push(c.to_ascii_lowercase());
        } else if ('\u{3000}'..'\u{A000}').contains(&c) {
            out.push(c); // CJK punctuation, kana and ideographs have no case
        } else {
            out.extend(c.to_lowercase());
        }
    }
}

/// The canonical form of `text` (see [`canonical_into`]).
pub fn canonical(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    canonical_into(text, &mut out);
    out
}

/// True for characters written without spaces between them: CJK ideographs, kana, hangul, and
/// CJK / full-width punctuation.
pub fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x3000..=0x303F   // CJK symbols and punctuation
        | 0x3040..=0x30FF // kana
        | 0x3400..=0x4DBF // extension A
        | 0x4E00..=0x9FFF // unified ideographs
        | 0xAC00..=0xD7AF // hangul
        | 0xF900..=0xFAFF // compatibility ideographs
        | 0xFF00..=0xFFEF // full-width forms
        | 0x20000..=0x3134F)
}

/// Remove spaces that touch a CJK character (`遭 淋 安 逸 了 ？` → `遭淋安逸了？`), keeping one
/// space between two non-CJK words (`我 用 iPhone 12` → `我用iPhone 12`), as Chinese is written.
pub fn remove_cjk_spaces(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == ' ' {
            let mut j = i;
            while j < chars.len() && chars[j] == ' ' {
                j += 1;
            }
            let before = out.chars().next_back();
            let after = chars.get(j).copied();
            let joinable = match (before, after) {
                (Some(b), Some(a)) => is_cjk(b) || is_cjk(a),
                _ => true, // leading or trailing spaces go
            };
            if !joinable {
                out.push(' ');
            }
            i = j;
            continue;
        }
        out.push(c);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_folds_width_case_and_whitespace() {
        assert_eq!(canonical("  Ｈｅｌｌｏ\t\n WORLD  "), "hello world");
        assert_eq!(canonical("你好，\u{3000}世界"), "你好, 世界");
        assert_eq!(canonical(""), "");
        // Both paths (already NFKC, and not) agree.
        assert_eq!(canonical("ÀB  ｃ"), canonical("A\u{300}b c"));
        assert_eq!(canonical("ΣΑΣ 金额"), "σασ 金额");
    }

    #[test]
    fn cjk_spaces_go_latin_spaces_stay() {
        assert_eq!(remove_cjk_spaces("遭 淋 安 逸 了 ？"), "遭淋安逸了？");
        assert_eq!(
            remove_cjk_spaces("我 用 iPhone 12 拍 的"),
            "我用iPhone 12拍的"
        );
        assert_eq!(remove_cjk_spaces("hello  world"), "hello world");
        assert_eq!(remove_cjk_spaces(" 前 后 "), "前后");
    }
}
