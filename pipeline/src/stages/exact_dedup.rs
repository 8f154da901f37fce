//! `exact_dedup`: drop samples whose normalized content equals an earlier sample's. Content is
//! hashed with xxh3-128 (fixed seed) over the canonical form (NFKC, case folded, whitespace
//! folded) of every part, labelled by role; the first occurrence in input order is kept and each
//! duplicate names the id it duplicated. Near duplicates are the `minhash` stage's job.

use super::{Decision, Decisions, DropReason, GlobalStage};
use crate::exchange::Records;
use crate::normalize::canonical_into;
use crate::sample::Sample;
use serde::Deserialize;

/// Config of `type = "exact_dedup"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// What is compared: `all` content (default), or `prompt`: system and user-side turns only,
    /// so the same question with different answers counts as a duplicate.
    #[serde(default)]
    pub scope: Scope,
}

/// Which content the hash covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// System, every turn, text.
    #[default]
    All,
    /// System and the user/observation turns (documents: their text).
    Prompt,
}

impl Scope {
    /// Whether content with this label (`system`, `user`, `assistant`, …, `text`) is included.
    pub fn includes(self, label: &str) -> bool {
        self == Scope::All || !matches!(label, "assistant" | "function_call")
    }

    /// The included content of a sample, parts joined by newlines.
    pub fn text(self, s: &Sample) -> String {
        s.content_parts()
            .filter(|(label, _)| self.includes(label))
            .map(|(_, c)| c)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Config {
    pub(crate) fn validate(&self) -> Vec<String> {
        Vec::new()
    }
}

/// The built stage.
#[derive(Debug)]
pub struct ExactDedup {
    scope: Scope,
}

/// Fixed seed of the content hash: changing it changes which records collide in tests only.
const SEED: u64 = 0x736c_7569_6365_0001;

impl ExactDedup {
    /// Build from config.
    pub fn new(cfg: &Config) -> ExactDedup {
        ExactDedup { scope: cfg.scope }
    }

    /// The 128-bit content hash of a sample under this stage's scope.
    pub fn content_hash(&self, sample: &Sample) -> u128 {
        let mut buf = String::new();
        for (label, part) in sample.content_parts() {
            if !self.scope.includes(label) {
                continue;
            }
            // Labels keep "user: a / assistant: b" apart from "user: a b"; the separator is a
            // control character that canonical text never contains.
            buf.push_str(label);
            buf.push('\u{1}');
            canonical_into(part, &mut buf);
            buf.push('\u{2}');
        }
        xxhash_rust::xxh3::xxh3_128_with_seed(buf.as_bytes(), SEED)
    }
}

impl GlobalStage for ExactDedup {
    type Record = String;
    type Reduced = Decisions;

    fn map(&self, sample: &Sample, emit: &mut dyn FnMut(u128)) -> Option<String> {
        emit(self.content_hash(sample));
        Some(sample.id.clone())
    }

    fn reduce(&self, _key: u128, members: &[u64], records: &Records<String>, out: &mut Decisions) {
        let Some((&first, rest)) = members.split_first() else {
            return;
        };
        let first_id = records.get(first).unwrap_or_default();
        for &pos in rest {
            out.insert(
                pos,
                Decision::drop(DropReason {
                    code: "duplicate",
                    detail: Some(format!("same normalized content as {first_id}")),
                    duplicate_of: Some(first_id.clone()),
                }),
            );
        }
    }

    fn finish(
        &self,
        parts: Vec<Decisions>,
        _: &Records<String>,
    ) -> Result<Decisions, crate::error::StageError> {
        Ok(Decisions::merge(parts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::{Kind, Role, Turn};

    fn sample(id: &str, q: &str, a: &str) -> Sample {
        Sample {
            id: id.into(),
            source: "t".into(),
            domain: "general".into(),
            task: "t".into(),
            kind: Kind::Sft,
            user_id: None,
            system: None,
            tools: None,
            turns: vec![Turn::new(Role::User, q), Turn::new(Role::Assistant, a)],
            text: None,
            tags: Default::default(),
        }
    }

    #[test]
    fn normalization_makes_width_case_and_spacing_irrelevant() {
        let d = ExactDedup::new(&Config { scope: Scope::All });
        let a = sample("a", "Ｈｅｌｌｏ  World", "你好，世界");
        let b = sample("b", "hello world", "你好,世界");
        let c = sample("c", "hello world", "你好世界");
        assert_eq!(d.content_hash(&a), d.content_hash(&b));
        assert_ne!(d.content_hash(&a), d.content_hash(&c));
    }

    #[test]
    fn role_boundaries_matter_and_prompt_scope_ignores_answers() {
        let all = ExactDedup::new(&Config { scope: Scope::All });
        let prompt = ExactDedup::new(&Config {
            scope: Scope::Prompt,
        });
        let a = sample("a", "ab", "c");
        let b = sample("b", "a", "bc");
        let c = sample("c", "ab", "other answer");
        assert_ne!(all.content_hash(&a), all.content_hash(&b));
        assert_ne!(all.content_hash(&a), all.content_hash(&c));
        assert_eq!(prompt.content_hash(&a), prompt.content_hash(&c));
    }

    #[test]
    fn the_first_is_kept_and_named_through_the_exchange() {
        let d = ExactDedup::new(&Config { scope: Scope::All });
        let dir = tempfile::tempdir().expect("tempdir");
        let mut w = crate::exchange::ExchangeWriter::create(&d, dir.path()).expect("create");
        let batch: Vec<(usize, Sample)> = [("x", "q"), ("o", "other"), ("y", "q"), ("z", "Q")]
            .iter()
            .map(|(id, q)| (0, sample(id, q, "a")))
            .collect();
        w.map(&batch[..2]).expect("map");
        w.map(&batch[2..]).expect("map");
        let out = w.finish().expect("finish").resolve(&d).expect("resolve");
        assert_eq!(out.keys().collect::<Vec<_>>(), vec![2, 3]);
        let Some(Decision { drop: Some(r), .. }) = out.get(&3) else {
            panic!("z not dropped")
        };
        assert_eq!(r.duplicate_of.as_deref(), Some("x"));
    }

    #[test]
    fn config_rejects_typos() {
        assert!(toml::from_str::<Config>("scope = \"prompt\"").is_ok());
        assert!(toml::from_str::<Config>("scop = \"prompt\"").is_err());
        assert!(toml::from_str::<Config>("scope = \"answers\"").is_err());
    }
}
