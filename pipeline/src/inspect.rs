//! What a run did to its samples, for `sluice inspect run`: the dropped samples with their
//! reasons (read from the run's `dropped/` files), and what the rewriting stages (filler, pii,
//! rules, truncate…) changed, shown as word-level diffs. Rewrites are not stored by a run (that
//! would copy every sample twice); they are found again by reading the inputs and applying the
//! pipeline's record stages in order, which gives the same result (the stages are
//! deterministic per sample).

use crate::config::Plan;
use crate::sample::Sample;
use crate::stages::{Stage, StageCx, Verdict};
use std::path::Path;
use std::sync::Arc;

/// Whether a stage (index and type) is the one a `--stage` filter names: `2`, `filler` or
/// `stages[2].filler`.
pub fn stage_matches(filter: &str, index: usize, kind: &str) -> bool {
    filter == index.to_string()
        || filter == kind
        || filter == format!("stages[{index}].{kind}")
        || filter == format!("stages[{index}]")
}

/// A dropped sample as the run wrote it.
#[derive(Debug, Clone)]
pub struct Dropped {
    /// The sample.
    pub sample: serde_json::Value,
    /// `stages[i].type`.
    pub stage: String,
    /// The reason code.
    pub reason: String,
    /// What exactly.
    pub detail: Option<String>,
    /// For duplicates: the sample kept in its place.
    pub duplicate_of: Option<String>,
}

/// The dropped samples of a run directory that pass the filters, in the order they were
/// written (at most `limit`), and how many matched in all.
pub fn dropped(
    run: &Path,
    stage: Option<&str>,
    reason: Option<&str>,
    id: Option<&str>,
    limit: usize,
) -> Result<(Vec<Dropped>, usize), String> {
    let dir = run.join("dropped");
    let mut files: Vec<_> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
            .collect(),
        Err(_) => Vec::new(),
    };
    files.sort();
    let mut out = Vec::new();
    let mut matched = 0;
    for f in files {
        let text = std::fs::read_to_string(&f).map_err(|e| format!("{}: {e}", f.display()))?;
        for (n, line) in text.lines().enumerate() {
            let v: serde_json::Value = serde_json::from_str(line)
                .map_err(|e| format!("{}:{}: {e}", f.display(), n + 1))?;
            let s = |k: &str| v["drop"][k].as_str().map(str::to_string);
            let st = s("stage").unwrap_or_default();
            let (index, kind) = parse_stage(&st);
            let ok = stage.is_none_or(|f| stage_matches(f, index, kind))
                && reason.is_none_or(|r| s("reason").as_deref() == Some(r))
                && id.is_none_or(|i| v["sample"]["id"].as_str() == Some(i));
            if !ok {
                continue;
            }
            matched += 1;
            if out.len() < limit {
                out.push(Dropped {
                    sample: v["sample"].clone(),
                    stage: st.clone(),
                    reason: s("reason").unwrap_or_default(),
                    detail: s("detail"),
                    duplicate_of: s("duplicate_of"),
                });
            }
        }
    }
    Ok((out, matched))
}

fn parse_stage(s: &str) -> (usize, &str) {
    let index = s
        .strip_prefix("stages[")
        .and_then(|r| r.split(']').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(usize::MAX);
    let kind = s.rsplit('.').next().unwrap_or(s);
    (index, kind)
}

/// What one stage changed in one sample: `(where, diff)` pairs, e.g. `("turn 2 (assistant)",
/// "好的[-嗯嗯-]，我帮您查")`.
#[derive(Debug, Clone)]
pub struct Rewrite {
    /// `stages[i].type`.
    pub stage: String,
    /// The sample.
    pub id: String,
    /// One entry per changed part.
    pub changes: Vec<(String, String)>,
    /// The stage dropped the sample (after what earlier stages did).
    pub dropped: Option<String>,
}

/// Read the inputs and apply the record stages in order, collecting what the stages that
/// match `stage` changed (every stage when `None`), for the sample `id` only when given, up to
/// `limit` rewrites.
pub fn rewrites(
    plan: &Plan,
    stage: Option<&str>,
    id: Option<&str>,
    limit: usize,
) -> Result<Vec<Rewrite>, String> {
    let mut built = Vec::new();
    for (i, cfg) in plan.stages.iter().enumerate() {
        let name = format!("stages[{i}].{}", cfg.type_name());
        let s = cfg.build(plan.seed).map_err(|e| format!("{name}: {e}"))?;
        if let Stage::Record(r) = s {
            built.push((i, cfg.type_name(), name, r));
        }
    }
    let mut out = Vec::new();
    let mut cx = StageCx::new(plan.seed);
    for input in &plan.inputs {
        let ip = Arc::new(input.clone());
        for (path, display) in &input.files {
            // Read as the run read it: ids and sources by the file's name in the pipeline.
            let mut samples = Vec::new();
            let src = crate::io::FileSource {
                input: 0,
                plan: &ip,
                path,
                display,
                max_record_bytes: plan.max_record_bytes,
                bytes_read: &Arc::new(std::sync::atomic::AtomicU64::new(0)),
                cancel: None,
            };
            let status = crate::io::read_file(&src, &mut |rec| {
                if let Ok((s, _)) = crate::io::convert::convert(&rec) {
                    samples.push(s);
                }
                Ok(())
            })
            .map_err(|e| e.to_string())?;
            if let Err(e) = status {
                return Err(format!("{display}: {e}"));
            }
            for sample in samples {
                if id.is_some_and(|want| sample.id != want) {
                    continue;
                }
                let mut cur = sample;
                for (i, kind, name, st) in &built {
                    let wanted = stage.is_none_or(|f| stage_matches(f, *i, kind));
                    let before = wanted.then(|| cur.clone());
                    let verdict = st.process(cur, &mut cx);
                    cx.observed.clear();
                    match verdict {
                        Verdict::Keep(after) => {
                            if let Some(b) = before {
                                let changes = changes(&b, &after);
                                if !changes.is_empty() {
                                    out.push(Rewrite {
                                        stage: name.clone(),
                                        id: after.id.clone(),
                                        changes,
                                        dropped: None,
                                    });
                                }
                            }
                            cur = after;
                        }
                        Verdict::Drop(s, reason) => {
                            if wanted && id.is_some() {
                                out.push(Rewrite {
                                    stage: name.clone(),
                                    id: s.id.clone(),
                                    changes: Vec::new(),
                                    dropped: Some(match reason.detail {
                                        Some(d) => format!("{}: {d}", reason.code),
                                        None => reason.code.to_string(),
                                    }),
                                });
                            }
                            break;
                        }
                    }
                    if out.len() >= limit {
                        return Ok(out);
                    }
                }
                if id.is_some() {
                    return Ok(out); // the one sample asked for
                }
            }
        }
    }
    Ok(out)
}

/// The parts of a sample that differ, each with a word diff.
fn changes(before: &Sample, after: &Sample) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if before.text != after.text {
        out.push((
            "text".to_string(),
            diff(
                before.text.as_deref().unwrap_or(""),
                after.text.as_deref().unwrap_or(""),
            ),
        ));
    }
    if before.system != after.system {
        out.push((
            "system".to_string(),
            diff(
                before.system.as_deref().unwrap_or(""),
                after.system.as_deref().unwrap_or(""),
            ),
        ));
    }
    if before.turns.len() != after.turns.len() {
        out.push((
            "turns".to_string(),
            format!(
                "{} turns → {} (history dropped from the start)",
                before.turns.len(),
                after.turns.len()
            ),
        ));
        // Turns kept are the last ones: compare them aligned at the end.
        let skip = before.turns.len().saturating_sub(after.turns.len());
        for (k, (b, a)) in before.turns[skip..].iter().zip(&after.turns).enumerate() {
            if b.content != a.content {
                out.push((
                    format!("turn {} ({})", k + 1, a.role.as_str()),
                    diff(&b.content, &a.content),
                ));
            }
        }
        return out;
    }
    for (k, (b, a)) in before.turns.iter().zip(&after.turns).enumerate() {
        if b.content != a.content {
            out.push((
                format!("turn {} ({})", k + 1, a.role.as_str()),
                diff(&b.content, &a.content),
            ));
        }
    }
    out
}

/// Tokens for a diff: each CJK character alone, runs of other letters and digits, and every
/// other character alone.
fn tokens(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start: Option<usize> = None;
    for (i, c) in s.char_indices() {
        let word = c.is_alphanumeric() && (c as u32) < 0x2E80;
        if word {
            start.get_or_insert(i);
            continue;
        }
        if let Some(st) = start.take() {
            out.push(&s[st..i]);
        }
        out.push(&s[i..i + c.len_utf8()]);
    }
    if let Some(st) = start {
        out.push(&s[st..]);
    }
    out
}

/// A word diff: `[-removed-]` and `{+added+}` marked inside the common text. Common ends are
/// trimmed first; a middle too long for an exact diff is shown as one replacement.
pub fn diff(before: &str, after: &str) -> String {
    let (a, b) = (tokens(before), tokens(after));
    let pre = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let suf = a[pre..]
        .iter()
        .rev()
        .zip(b[pre..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let (ma, mb) = (&a[pre..a.len() - suf], &b[pre..b.len() - suf]);
    let mut out = String::new();
    let before_change = &a[..pre];
    if before_change.len() > CONTEXT {
        out.push('…');
        out.push_str(&before_change[pre - CONTEXT..].concat());
    } else {
        out.push_str(&before_change.concat());
    }
    let mark = |out: &mut String, removed: &[&str], added: &[&str]| {
        if !removed.is_empty() {
            out.push_str("[-");
            out.push_str(&removed.concat());
            out.push_str("-]");
        }
        if !added.is_empty() {
            out.push_str("{+");
            out.push_str(&added.concat());
            out.push_str("+}");
        }
    };
    if ma.len() * mb.len() > 4_000_000 {
        mark(&mut out, ma, mb);
    } else {
        // Longest common subsequence over the middle.
        let (n, m) = (ma.len(), mb.len());
        let mut t = vec![0u32; (n + 1) * (m + 1)];
        for i in (0..n).rev() {
            for j in (0..m).rev() {
                t[i * (m + 1) + j] = if ma[i] == mb[j] {
                    t[(i + 1) * (m + 1) + j + 1] + 1
                } else {
                    t[(i + 1) * (m + 1) + j].max(t[i * (m + 1) + j + 1])
                };
            }
        }
        let (mut i, mut j) = (0, 0);
        let (mut rem, mut add): (Vec<&str>, Vec<&str>) = (Vec::new(), Vec::new());
        let mut same: Vec<&str> = Vec::new();
        let flush_same = |out: &mut String, same: &mut Vec<&str>| {
            if same.len() > 2 * CONTEXT + 1 {
                out.push_str(&same[..CONTEXT].concat());
                out.push('…');
                out.push_str(&same[same.len() - CONTEXT..].concat());
            } else {
                out.push_str(&same.concat());
            }
            same.clear();
        };
        while i < n || j < m {
            if i < n && j < m && ma[i] == mb[j] {
                mark(&mut out, &rem, &add);
                rem.clear();
                add.clear();
                same.push(ma[i]);
                i += 1;
                j += 1;
            } else if j < m && (i == n || t[i * (m + 1) + j + 1] >= t[(i + 1) * (m + 1) + j]) {
                flush_same(&mut out, &mut same);
                add.push(mb[j]);
                j += 1;
            } else {
                flush_same(&mut out, &mut same);
                rem.push(ma[i]);
                i += 1;
            }
        }
        flush_same(&mut out, &mut same);
        mark(&mut out, &rem, &add);
    }
    let after_change = &a[a.len() - suf..];
    if after_change.len() > CONTEXT {
        out.push_str(&after_change[..CONTEXT].concat());
        out.push('…');
    } else {
        out.push_str(&after_change.concat());
    }
    out
}

/// Unchanged tokens shown on each side of a change.
const CONTEXT: usize = 24;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diffs_mark_what_a_stage_took_out_and_put_in() {
        let long = "长".repeat(100);
        let d = diff(&format!("{long}嗯{long}"), &format!("{long}{long}"));
        assert_eq!(
            d,
            format!("…{}[-嗯-]{}…", "长".repeat(CONTEXT), "长".repeat(CONTEXT))
        );
        assert_eq!(
            diff("嗯嗯，好的我帮您查", "好的我帮您查"),
            "[-嗯嗯，-]好的我帮您查"
        );
        assert_eq!(
            diff("call 13812345678 now", "call [PHONE] now"),
            "call [-13812345678-]{+[PHONE]+} now"
        );
        assert_eq!(diff("same", "same"), "same");
        assert_eq!(diff("", "new"), "{+new+}");
        assert_eq!(diff("a b c", "a c"), "a [-b -]c");
        assert_eq!(diff("x a b y", "z a b w"), "[-x-]{+z+} a b [-y-]{+w+}");
    }

    #[test]
    fn stage_filters_take_index_type_or_key() {
        assert!(stage_matches("2", 2, "filler"));
        assert!(stage_matches("filler", 2, "filler"));
        assert!(stage_matches("stages[2].filler", 2, "filler"));
        assert!(!stage_matches("pii", 2, "filler"));
        assert_eq!(parse_stage("stages[7].exact_dedup"), (7, "exact_dedup"));
    }
}
