//! `rules`: declarative business rules from TOML files (e.g. `rules/business/ai_sales.toml`).
//!
//! A rule matches `keywords` (plain, case-insensitive, via aho-corasick) and/or a `regex`, in
//! the turns of the listed `roles` (the system prompt is role `system`; document text counts as
//! role `user`), of samples whose domain and task are listed (all when a list is empty). Actions:
//!
//! - `drop_sample`: the sample goes, naming the rule;
//! - `drop_turn`: the matching turn goes with its round (the user turn that opens it and every
//!   turn up to the next user turn; the system prompt alone), so the dialogue stays
//!   well-formed; a dialogue left without turns is dropped;
//! - `replace`: every match is replaced by `replacement`.
//!
//! Changed samples get the tag `rules` listing the rules applied.

use super::{DropReason, RecordStage, StageCx, Verdict};
use crate::sample::{Role, Sample};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Config of `type = "rules"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Rule files (relative to the pipeline file), applied in order.
    pub files: Vec<PathBuf>,
    /// Set by a confined compile: the folders its files must lie in when they are opened.
    #[serde(skip)]
    pub confined_to: Option<std::sync::Arc<[std::path::PathBuf]>>,
}

impl Config {
    pub(crate) fn validate(&self) -> Vec<String> {
        if self.files.is_empty() {
            return vec!["files is empty: name at least one rules file".into()];
        }
        Vec::new()
    }

    pub(crate) fn resolve_paths(&mut self, base: &Path) {
        for f in &mut self.files {
            *f = crate::confine::resolve(base, f);
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    rule: Vec<RuleSpec>,
}

/// A role a rule can scope to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Scope {
    User,
    Assistant,
    System,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Action {
    DropSample,
    DropTurn,
    Replace,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    name: String,
    /// For people reading the rules file; not used by the stage.
    #[serde(default, rename = "description")]
    _description: String,
    #[serde(default)]
    roles: Vec<Scope>,
    #[serde(default)]
    domains: Vec<String>,
    #[serde(default)]
    tasks: Vec<String>,
    #[serde(default)]
    keywords: Vec<String>,
    #[serde(default)]
    regex: Option<String>,
    action: Action,
    #[serde(default)]
    replacement: Option<String>,
}

struct Rule {
    name: String,
    roles: Vec<Scope>,
    domains: Vec<String>,
    tasks: Vec<String>,
    keywords: Option<aho_corasick::AhoCorasick>,
    regex: Option<regex::Regex>,
    action: Action,
    replacement: String,
}

impl Rule {
    fn applies(&self, s: &Sample) -> bool {
        (self.domains.is_empty() || self.domains.contains(&s.domain))
            && (self.tasks.is_empty() || self.tasks.contains(&s.task))
    }

    fn scoped(&self, role: Scope) -> bool {
        self.roles.is_empty() || self.roles.contains(&role)
    }

    /// Whether `text` has a (non-empty) match.
    fn is_match(&self, text: &str) -> bool {
        self.keywords.as_ref().is_some_and(|ac| ac.is_match(text))
            || self
                .regex
                .as_ref()
                .is_some_and(|re| re.find_iter(text).any(|m| !m.is_empty()))
    }

    /// Byte ranges of every match in `text`, sorted, overlaps merged.
    fn matches(&self, text: &str) -> Vec<(usize, usize)> {
        let mut out: Vec<(usize, usize)> = Vec::new();
        if let Some(ac) = &self.keywords {
            out.extend(ac.find_iter(text).map(|m| (m.start(), m.end())));
        }
        if let Some(re) = &self.regex {
            out.extend(
                re.find_iter(text)
                    .filter(|m| !m.is_empty())
                    .map(|m| (m.start(), m.end())),
            );
        }
        out.sort_unstable();
        let mut merged: Vec<(usize, usize)> = Vec::new();
        for (s, e) in out {
            match merged.last_mut() {
                Some(last) if s < last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        merged
    }

    fn replace(&self, text: &str) -> Option<String> {
        let m = self.matches(text);
        if m.is_empty() {
            return None;
        }
        let mut out = String::with_capacity(text.len());
        let mut last = 0;
        for (s, e) in m {
            out.push_str(&text[last..s]);
            out.push_str(&self.replacement);
            last = e;
        }
        out.push_str(&text[last..]);
        Some(out)
    }
}

/// The built stage.
pub struct Rules {
    rules: Vec<Rule>,
}

/// Every content field with the scope rules see it under: the system prompt as `system`,
/// document text as `user`, turns by role.
fn scoped_fields(s: &mut Sample) -> Vec<(Scope, &mut String)> {
    let mut out: Vec<(Scope, &mut String)> = Vec::with_capacity(s.turns.len() + 2);
    out.extend(s.system.as_mut().map(|t| (Scope::System, t)));
    out.extend(s.text.as_mut().map(|t| (Scope::User, t)));
    out.extend(
        s.turns
            .iter_mut()
            .map(|t| (role_scope(t.role), &mut t.content)),
    );
    out
}

fn role_scope(r: Role) -> Scope {
    match r {
        Role::User | Role::Observation => Scope::User,
        Role::Assistant | Role::FunctionCall => Scope::Assistant,
    }
}

impl Rules {
    /// Build from config: read every file and compile its rules.
    pub fn new(cfg: &Config) -> Result<Rules, crate::error::StageError> {
        let mut rules = Vec::new();
        for path in &cfg.files {
            let at = path.display();
            let text = crate::confine::read_to_string_within(path, cfg.confined_to.as_deref())
                .map_err(|e| format!("{at}: {e}"))?;
            let file: RulesFile = toml::from_str(&text).map_err(|e| format!("{at}: {e}"))?;
            for spec in file.rule {
                let ctx = format!("{at}: rule {}", spec.name);
                if spec.keywords.is_empty() && spec.regex.is_none() {
                    return Err(format!("{ctx}: give keywords or regex").into());
                }
                if (spec.action == Action::Replace) != spec.replacement.is_some() {
                    return Err(format!(
                        "{ctx}: `replacement` goes with action = \"replace\", and only with it"
                    )
                    .into());
                }
                let keywords = if spec.keywords.is_empty() {
                    None
                } else {
                    Some(
                        aho_corasick::AhoCorasick::builder()
                            .ascii_case_insensitive(true)
                            .match_kind(aho_corasick::MatchKind::LeftmostLongest)
                            .build(&spec.keywords)
                            .map_err(|e| format!("{ctx}: {e}"))?,
                    )
                };
                let regex = spec
                    .regex
                    .as_deref()
                    .map(regex::Regex::new)
                    .transpose()
                    .map_err(|e| format!("{ctx}: {e}"))?;
                rules.push(Rule {
                    name: spec.name,
                    roles: spec.roles,
                    domains: spec.domains,
                    tasks: spec.tasks,
                    keywords,
                    regex,
                    action: spec.action,
                    replacement: spec.replacement.unwrap_or_default(),
                });
            }
        }
        Ok(Rules { rules })
    }
}

impl RecordStage for Rules {
    fn process(&self, mut s: Sample, cx: &mut StageCx) -> Verdict {
        let mut applied: Vec<&str> = Vec::new();
        for rule in &self.rules {
            if !rule.applies(&s) {
                continue;
            }
            let mut hit = false;
            match rule.action {
                Action::DropSample => {
                    let found = scoped_fields(&mut s)
                        .into_iter()
                        .any(|(scope, t)| rule.scoped(scope) && rule.is_match(t));
                    if found {
                        cx.count(&format!("{}_dropped", rule.name), 1);
                        let detail = format!("rule {}", rule.name);
                        return Verdict::Drop(s, DropReason::new("business_rule", detail));
                    }
                }
                Action::Replace => {
                    for (scope, t) in scoped_fields(&mut s) {
                        if rule.scoped(scope) {
                            if let Some(r) = rule.replace(t) {
                                *t = r;
                                hit = true;
                            }
                        }
                    }
                }
                Action::DropTurn => {
                    if rule.scoped(Scope::System)
                        && s.system.as_deref().is_some_and(|t| rule.is_match(t))
                    {
                        s.system = None;
                        hit = true;
                    }
                    let n = s.turns.len();
                    let mut gone = vec![false; n];
                    for i in 0..n {
                        let t = &s.turns[i];
                        if !rule.scoped(role_scope(t.role)) || !rule.is_match(&t.content) {
                            continue;
                        }
                        // The whole round goes: from its user turn to the next user turn.
                        let start = (0..=i)
                            .rev()
                            .find(|&j| s.turns[j].role == Role::User)
                            .unwrap_or(0);
                        let end = (i + 1..n)
                            .find(|&j| s.turns[j].role == Role::User)
                            .unwrap_or(n);
                        for g in &mut gone[start..end] {
                            *g = true;
                        }
                    }
                    if gone.iter().any(|&g| g) {
                        hit = true;
                        let mut k = 0;
                        s.turns.retain(|_| {
                            k += 1;
                            !gone[k - 1]
                        });
                        cx.count(
                            &format!("{}_turns_dropped", rule.name),
                            gone.iter().filter(|&&g| g).count() as u64,
                        );
                        if s.turns.is_empty() && s.text.is_none() {
                            let detail = format!("rule {} removed every turn", rule.name);
                            return Verdict::Drop(s, DropReason::new("business_rule", detail));
                        }
                    }
                }
            }
            if hit {
                if rule.action == Action::Replace {
                    cx.count(&format!("{}_replaced", rule.name), 1);
                }
                applied.push(&rule.name);
            }
        }
        if !applied.is_empty() {
            cx.count("samples_changed", 1);
            s.tags.insert("rules".into(), applied.join(","));
        }
        Verdict::Keep(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::Turn;

    fn bundled() -> Rules {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules/business/ai_sales.toml");
        Rules::new(&Config {
            files: vec![path],
            confined_to: None,
        })
        .expect("bundled rules load")
    }

    fn sales(turns: &[(Role, &str)]) -> Sample {
        let mut s = Sample::dialogue("s", turns.iter().map(|(r, t)| Turn::new(*r, *t)).collect());
        s.task = "ai_sales".into();
        s
    }

    #[test]
    fn handoff_by_the_assistant_drops_an_ai_sales_sample_only() {
        let r = bundled();
        let s = sales(&[
            (Role::User, "这个理财产品收益多少？"),
            (Role::Assistant, "这个问题比较复杂，我帮您转人工客服处理。"),
        ]);
        assert!(matches!(
            r.process(s.clone(), &mut StageCx::new(0)),
            Verdict::Drop(_, d) if d.code == "business_rule"
        ));
        // The same words from the user, or in another task, are fine.
        let mut other = s.clone();
        other.task = "customer_service".into();
        assert!(matches!(
            r.process(other, &mut StageCx::new(0)),
            Verdict::Keep(_)
        ));
        let user_says = sales(&[
            (Role::User, "能不能帮我转人工客服？我想问问"),
            (Role::Assistant, "我就可以为您解答，请问您想了解什么？"),
        ]);
        assert!(matches!(
            r.process(user_says, &mut StageCx::new(0)),
            Verdict::Keep(_)
        ));
    }

    #[test]
    fn drop_turn_removes_whole_rounds_and_replace_rewrites() {
        let r = bundled();
        let s = sales(&[
            (Role::User, "转人工！"),
            (Role::Assistant, "我是智能顾问，很高兴为您服务。"),
            (Role::User, "基金怎么买"),
            (Role::Assistant, "已记录，工单号：AB1234567，稍后回电。"),
        ]);
        let Verdict::Keep(out) = r.process(s, &mut StageCx::new(0)) else {
            panic!("dropped")
        };
        let texts: Vec<&str> = out.turns.iter().map(|t| t.content.as_str()).collect();
        assert_eq!(texts, ["基金怎么买", "已记录，<TICKET>，稍后回电。"]);
        assert_eq!(out.tags["rules"], "ticket_refs,handoff_requests");
    }

    #[test]
    fn bad_rule_files_say_where() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("bad.toml");
        crate::storage::write_atomic(
            &p,
            b"[[rule]]\nname = \"x\"\nregex = \"(\"\naction = \"drop_sample\"\n",
        )
        .expect("write");
        let e = Rules::new(&Config {
            files: vec![p],
            confined_to: None,
        })
        .err()
        .expect("fails");
        assert!(e.to_string().contains("bad.toml: rule x"), "{e}");
    }
}
