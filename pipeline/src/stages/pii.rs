//! `pii`: find personal data (mainland mobile and landline numbers, 18-digit resident ID numbers
//! with a valid check digit, bank cards passing Luhn, emails, IPv4/IPv6 addresses) and mask it
//! with a typed placeholder (`<PHONE>`, `<ID>`, …), drop the sample, or keep it, per type.
//!
//! Patterns live in `rules/pii.toml` (compiled in as the default); the checks that a regex
//! cannot express (ID check digit, Luhn) are named there and implemented here. A match touching
//! an ASCII letter or digit on either side is not PII (it is part of a longer number or word).
//! Every content field is scanned: system prompt, turns and document text. Changed samples get
//! the tag `pii_masked` (e.g. `phone:2,email:1`); counters count each type.

use super::{DropReason, RecordStage, StageCx, Verdict};
use crate::sample::Sample;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The bundled patterns.
pub const BUILTIN_RULES: &str = include_str!("../../../rules/pii.toml");

/// What to do with one PII type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Replace it with the type's placeholder (default).
    #[default]
    Mask,
    /// Drop the whole sample.
    Drop,
    /// Leave it (still counted).
    Keep,
}

/// Config of `type = "pii"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// A patterns file like `rules/pii.toml` (relative to the pipeline file); bundled if absent.
    #[serde(default)]
    pub rules: Option<PathBuf>,
    /// Action per type name (`phone`, `id`, `bank_card`, `email`, `ip`); `mask` when unnamed.
    #[serde(default)]
    pub actions: BTreeMap<String, Action>,
    /// Set by a confined compile: the folders its files must lie in when they are opened.
    #[serde(skip)]
    pub confined_to: Option<std::sync::Arc<[std::path::PathBuf]>>,
}

impl Config {
    pub(crate) fn validate(&self) -> Vec<String> {
        Vec::new()
    }

    pub(crate) fn resolve_paths(&mut self, base: &Path) {
        if let Some(p) = &mut self.rules {
            *p = crate::confine::resolve(base, p);
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    types: Vec<TypeSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TypeSpec {
    name: String,
    placeholder: String,
    #[serde(default)]
    validate: Validate,
    patterns: Vec<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq)]
#[serde(rename_all = "snake_case")]
enum Validate {
    #[default]
    None,
    IdChecksum,
    Luhn,
}

struct PiiType {
    name: String,
    placeholder: String,
    validate: Validate,
    regex: regex::Regex,
    action: Action,
}

/// The built stage.
pub struct Pii {
    types: Vec<PiiType>,
}

/// GB 11643-1999 check digit of an 18-character resident ID number.
pub fn id_checksum_ok(id: &str) -> bool {
    const W: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    const CHECK: &[u8; 11] = b"10X98765432";
    let b = id.as_bytes();
    if b.len() != 18 || !b[..17].iter().all(u8::is_ascii_digit) {
        return false;
    }
    let sum: u32 = b[..17]
        .iter()
        .zip(W)
        .map(|(d, w)| u32::from(d - b'0') * w)
        .sum();
    CHECK[(sum % 11) as usize] == b[17].to_ascii_uppercase()
}

/// Luhn check over the digits of `s` (separators ignored).
pub fn luhn_ok(s: &str) -> bool {
    let digits: Vec<u32> = s.chars().filter_map(|c| c.to_digit(10)).collect();
    if digits.len() < 12 {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 {
                    x - 9
                } else {
                    x
                }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

impl Pii {
    /// Build from config: read and compile the patterns.
    pub fn new(cfg: &Config) -> Result<Pii, crate::error::StageError> {
        let name = cfg
            .rules
            .as_ref()
            .map_or("builtin pii rules".into(), |p| p.display().to_string());
        let file: RulesFile = super::load_toml(
            cfg.rules.as_deref(),
            BUILTIN_RULES,
            "pii rules",
            cfg.confined_to.as_deref(),
        )?;
        for k in cfg.actions.keys() {
            if !file.types.iter().any(|t| &t.name == k) {
                let known: Vec<&str> = file.types.iter().map(|t| t.name.as_str()).collect();
                return Err(format!(
                    "actions.{k}: no such PII type in {name} (types: {})",
                    known.join(", ")
                )
                .into());
            }
        }
        let types = file
            .types
            .into_iter()
            .map(|t| {
                let joined = t
                    .patterns
                    .iter()
                    .map(|p| format!("(?:{p})"))
                    .collect::<Vec<_>>()
                    .join("|");
                let regex = regex::Regex::new(&joined)
                    .map_err(|e| format!("{name}: type {}: {e}", t.name))?;
                Ok(PiiType {
                    action: cfg.actions.get(&t.name).copied().unwrap_or_default(),
                    name: t.name,
                    placeholder: t.placeholder,
                    validate: t.validate,
                    regex,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Pii { types })
    }

    /// Scan and mask one text; `found` counts matches per type index.
    fn scan(&self, text: &str, found: &mut [usize]) -> Option<String> {
        let mut current: Option<String> = None;
        for (ti, t) in self.types.iter().enumerate() {
            let hay = current.as_deref().unwrap_or(text);
            let mut out = String::new();
            let mut last = 0;
            let mut any = false;
            for m in t.regex.find_iter(hay) {
                let before = hay[..m.start()].chars().next_back();
                let after = hay[m.end()..].chars().next();
                let after2 = hay[m.end()..].chars().nth(1);
                let touches = before.is_some_and(|c| c.is_ascii_alphanumeric())
                    || after.is_some_and(|c| c.is_ascii_alphanumeric())
                    || (after == Some('.') && after2.is_some_and(|c| c.is_ascii_digit()));
                if touches {
                    continue;
                }
                let ok = match t.validate {
                    Validate::None => true,
                    Validate::IdChecksum => id_checksum_ok(m.as_str()),
                    Validate::Luhn => luhn_ok(m.as_str()),
                };
                if !ok {
                    continue;
                }
                found[ti] += 1;
                if t.action == Action::Mask {
                    out.push_str(&hay[last..m.start()]);
                    out.push_str(&t.placeholder);
                    last = m.end();
                    any = true;
                }
            }
            if any {
                out.push_str(&hay[last..]);
                current = Some(out);
            }
        }
        current
    }
}

impl RecordStage for Pii {
    fn process(&self, mut sample: Sample, cx: &mut StageCx) -> Verdict {
        let mut found = vec![0usize; self.types.len()];
        for f in sample.content_mut() {
            if let Some(masked) = self.scan(f, &mut found) {
                *f = masked;
            }
        }
        let mut summary = Vec::new();
        for (t, &n) in self.types.iter().zip(&found) {
            if n == 0 {
                continue;
            }
            cx.count(&format!("{}_found", t.name), n as u64);
            if t.action == Action::Drop {
                return Verdict::Drop(
                    sample,
                    DropReason::new("pii", format!("{n} × {} (action drop)", t.name)),
                );
            }
            if t.action == Action::Mask {
                summary.push(format!("{}:{n}", t.name));
            }
        }
        if !summary.is_empty() {
            cx.count("samples_masked", 1);
            sample.tags.insert("pii_masked".into(), summary.join(","));
        }
        Verdict::Keep(sample)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::{Role, Turn};

    fn stage(actions: &[(&str, Action)]) -> Pii {
        Pii::new(&Config {
            confined_to: None,
            rules: None,
            actions: actions.iter().map(|(k, a)| (k.to_string(), *a)).collect(),
        })
        .expect("builtin rules")
    }

    fn mask(p: &Pii, text: &str) -> String {
        let mut found = vec![0; p.types.len()];
        p.scan(text, &mut found).unwrap_or_else(|| text.to_string())
    }

    #[test]
    fn each_type_is_masked_with_its_placeholder() {
        let p = stage(&[]);
        assert_eq!(mask(&p, "我的手机是13812345678，"), "我的手机是<PHONE>，");
        assert_eq!(mask(&p, "call +86 138 1234 5678 now"), "call <PHONE> now");
        assert_eq!(mask(&p, "座机010-62345678转"), "座机<PHONE>转");
        assert_eq!(
            mask(&p, "（0755）不是; (0755)82345678"),
            "（0755）不是; <PHONE>"
        );
        assert_eq!(mask(&p, "身份证11010519491231002X"), "身份证<ID>");
        assert_eq!(
            mask(&p, "卡号6222 0202 0000 0000 009"),
            "卡号6222 0202 0000 0000 009",
            "fails Luhn"
        );
        assert_eq!(mask(&p, "卡号4111 1111 1111 1111"), "卡号<BANK_CARD>");
        assert_eq!(
            mask(&p, "邮箱 zhang.san@example.com.cn 联系"),
            "邮箱 <EMAIL> 联系"
        );
        assert_eq!(mask(&p, "IP 192.168.1.10 被封"), "IP <IP> 被封");
    }

    #[test]
    fn look_alikes_are_left_alone() {
        let p = stage(&[]);
        // 18 digits with a wrong check digit, a 12-digit order number, a version string, an
        // amount, a phone number inside a longer digit run.
        for s in [
            "身份证110105194912310021",
            "订单号202311230001",
            "版本 1.2.3.4.5",
            "金额 13812345678.50 元",
            "流水号913812345678123",
            "IP 256.1.1.1",
        ] {
            assert_eq!(mask(&p, s), s, "{s}");
        }
    }

    #[test]
    fn actions_per_type() {
        let p = stage(&[("email", Action::Drop), ("phone", Action::Keep)]);
        let mut s = Sample::dialogue(
            "d",
            vec![
                Turn::new(Role::User, "电话13812345678"),
                Turn::new(Role::Assistant, "好的"),
            ],
        );
        let Verdict::Keep(kept) = p.process(s.clone(), &mut StageCx::new(0)) else {
            panic!("dropped")
        };
        assert_eq!(kept.turns[0].content, "电话13812345678");
        s.turns[1].content = "发到 a@b.cn".into();
        assert!(matches!(
            p.process(s, &mut StageCx::new(0)),
            Verdict::Drop(_, r) if r.code == "pii"
        ));
        assert!(Pii::new(&Config {
            confined_to: None,
            rules: None,
            actions: [("passport".to_string(), Action::Mask)].into()
        })
        .is_err());
    }
}
