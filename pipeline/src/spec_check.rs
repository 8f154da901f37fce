//! Reading a pipeline file so that every problem is found in one pass.
//!
//! serde stops at the first unknown key or bad value. Here the file is read into a TOML table
//! once, then deserialized again and again: each error is recorded with its key and its own
//! line and column, the key at fault is taken out (a bad stage becomes a placeholder, so
//! later stages keep their numbers), and the next attempt goes on, until the table
//! deserializes or an error cannot be taken out (a missing required key).

use crate::error::ConfigIssue;
use serde::de::DeserializeOwned;

/// Most errors collected from one file.
const MAX_ISSUES: usize = 50;

/// What deserializing found: the value (when everything but the removed keys was valid), the
/// issues, and the stages that were replaced by placeholders.
pub struct Collected<T> {
    /// The value read, unless an issue could not be taken out.
    pub value: Option<T>,
    /// Every issue, each at its own key and place.
    pub issues: Vec<ConfigIssue>,
    /// Indexes of `[[stages]]` replaced by placeholders or with a key taken out (what
    /// compiling says about them is not about the file).
    pub placeholders: Vec<usize>,
}

/// A path segment of serde_path_to_error's path.
#[derive(Debug, Clone, PartialEq)]
enum Seg {
    Key(String),
    Index(usize),
}

fn segments(path: &str) -> Vec<Seg> {
    let mut out = Vec::new();
    for part in path.split('.') {
        if part.is_empty() || part == "?" {
            continue;
        }
        let (name, rest) = part.split_once('[').unwrap_or((part, ""));
        if !name.is_empty() {
            out.push(Seg::Key(name.to_string()));
        }
        for idx in rest.split('[') {
            if let Ok(i) = idx.trim_end_matches(']').parse::<usize>() {
                out.push(Seg::Index(i));
            }
        }
    }
    out
}

fn show(segs: &[Seg]) -> String {
    let mut s = String::new();
    for seg in segs {
        match seg {
            Seg::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

/// The table a path leads to.
fn table_at<'a>(root: &'a mut toml::Table, segs: &[Seg]) -> Option<&'a mut toml::Table> {
    let mut cur: &mut toml::Value = root.get_mut(match segs.first()? {
        Seg::Key(k) => k.as_str(),
        Seg::Index(_) => return None,
    })?;
    for seg in &segs[1..] {
        cur = match seg {
            Seg::Key(k) => cur.as_table_mut()?.get_mut(k)?,
            Seg::Index(i) => cur.as_array_mut()?.get_mut(*i)?,
        };
    }
    cur.as_table_mut()
}

/// Where a key is written: its line and column (1-based), found by walking the file's table
/// headers. `container` is the table's path (`inputs[1]`, `output.shards`, top level: empty).
fn locate(text: &str, container: &[Seg], key: &str) -> Option<(usize, usize)> {
    // The header that opens the container, and which occurrence of it (array tables).
    let mut header = String::new();
    let mut nth = 0usize;
    for seg in container {
        match seg {
            Seg::Key(k) => {
                if !header.is_empty() {
                    header.push('.');
                }
                header.push_str(k);
            }
            Seg::Index(i) => nth = *i,
        }
    }
    let mut inside = header.is_empty();
    let mut seen = 0usize;
    for (n, line) in text.lines().enumerate() {
        let t = line.trim_start();
        if let Some(h) = t.strip_prefix('[') {
            let array = h.starts_with('[');
            let name = h
                .trim_start_matches('[')
                .split(']')
                .next()
                .unwrap_or("")
                .trim();
            inside = false;
            if name == header {
                if array {
                    inside = seen == nth;
                    seen += 1;
                } else {
                    inside = true;
                }
            }
            continue;
        }
        if !inside {
            continue;
        }
        let bare = t.trim_start_matches(['"', '\'']);
        if let Some(after) = bare.strip_prefix(key) {
            let after = after.trim_start_matches(['"', '\'']).trim_start();
            if after.starts_with('=') || after.starts_with('.') {
                return Some((n + 1, line.len() - t.len() + 1));
            }
        }
    }
    None
}

/// The unknown key an error names, if it is an unknown-field error.
fn unknown_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    Some(rest.split('`').next()?.to_string())
}

/// The key whose value an `invalid type` / `invalid value` error quotes, when the path stops
/// at the table (a stage: serde's tagged enums do not track the field): the one key of that
/// table whose value the message shows.
fn value_key(table: &toml::Table, segs: &[Seg], message: &str) -> Option<String> {
    if !(message.starts_with("invalid type") || message.starts_with("invalid value")) {
        return None;
    }
    let mut root = table.clone();
    let t = if segs.is_empty() {
        &mut root
    } else {
        table_at(&mut root, segs)?
    };
    let shown = |v: &toml::Value| match v {
        toml::Value::String(s) => format!("string {s:?}"),
        toml::Value::Integer(i) => format!("integer `{i}`"),
        toml::Value::Float(f) => format!("floating point `{f}`"),
        toml::Value::Boolean(b) => format!("boolean `{b}`"),
        toml::Value::Array(_) => "sequence".to_string(),
        toml::Value::Table(_) => "map".to_string(),
        toml::Value::Datetime(d) => d.to_string(),
    };
    let hits: Vec<&String> = t
        .iter()
        .filter(|(_, v)| message.contains(&shown(v)))
        .map(|(k, _)| k)
        .collect();
    match hits.as_slice() {
        [one] => Some((*one).clone()),
        _ => None,
    }
}

/// The key a missing-field error names.
fn missing_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("missing field `")?;
    Some(rest.split('`').next()?.to_string())
}

/// Deserialize `table` as `T`, collecting every error (see the module docs).
pub fn collect<T: DeserializeOwned>(text: &str, mut table: toml::Table) -> Collected<T> {
    let mut issues: Vec<ConfigIssue> = Vec::new();
    let mut placeholders = Vec::new();
    let mut replaced: Vec<usize> = Vec::new();
    let mut stood_in = false;
    loop {
        let value = toml::Value::Table(table.clone());
        let err = match serde_path_to_error::deserialize::<_, T>(value) {
            Ok(v) => {
                return Collected {
                    value: (!stood_in).then_some(v),
                    issues: by_line(issues),
                    placeholders,
                }
            }
            Err(e) => e,
        };
        let message = err.inner().message().to_string();
        let mut segs = segments(&err.path().to_string());
        let unknown = unknown_field(&message)
            .or_else(|| missing_field(&message))
            .or_else(|| value_key(&table, &segs, &message));
        // The key at fault and the table that holds it.
        let key = match (&unknown, segs.last()) {
            (Some(u), Some(Seg::Key(last))) if last == u => {
                segs.pop();
                Some(u.clone())
            }
            (Some(u), _) => Some(u.clone()),
            (None, Some(Seg::Key(_))) => match segs.pop() {
                Some(Seg::Key(k)) => Some(k),
                _ => None,
            },
            _ => None,
        };
        let at = key.as_deref().and_then(|k| locate(text, &segs, k));
        let mut full = segs.clone();
        if let Some(k) = &key {
            full.push(Seg::Key(k.clone()));
        }
        let shown = show(&full);
        let shown = if shown.is_empty() {
            "config".to_string()
        } else {
            shown
        };
        let label = match at {
            Some((line, col)) => format!("{shown} (line {line}, column {col})"),
            None => shown,
        };
        let issue = ConfigIssue {
            key: label,
            message: message.clone(),
        };
        let repeated = issues.contains(&issue);
        if !repeated {
            issues.push(issue);
        }
        // A stage of an unknown type cannot be read at all: straight to a placeholder.
        let bad_type = matches!(segs.as_slice(), [Seg::Key(s), Seg::Index(_)] if s == "stages")
            && key.as_deref() == Some("type");
        // Take the fault out and go on, where that is possible.
        let removed = !repeated
            && !bad_type
            && issues.len() < MAX_ISSUES
            && match (&key, message.starts_with("missing field")) {
                (Some(k), false) if segs.is_empty() => table.remove(k).is_some(),
                (Some(k), false) => table_at(&mut table, &segs)
                    .and_then(|t| t.remove(k))
                    .is_some(),
                _ => false,
            };
        if removed {
            // A stage with a key taken out is not what the file says: what compiling finds
            // about it would mislead.
            // (An unknown key taken out changes nothing the stage does.)
            if let [Seg::Key(st), Seg::Index(i), ..] = segs.as_slice() {
                if st == "stages" && !placeholders.contains(i) && unknown_field(&message).is_none()
                {
                    placeholders.push(*i);
                }
            }
            continue;
        }
        // A required key that is missing: a stand-in of whichever type fits lets the rest of
        // the file be checked; the value read is then not usable.
        if let (Some(k), true) = (&key, message.starts_with("missing field")) {
            if !repeated && !bad_type && issues.len() < MAX_ISSUES {
                let mut patched = false;
                for stand_in in [
                    toml::Value::String(String::new()),
                    toml::Value::Array(Vec::new()),
                    toml::Value::Table(toml::Table::new()),
                    toml::Value::Integer(1),
                    toml::Value::Float(0.5),
                    toml::Value::Boolean(false),
                ] {
                    let mut trial = table.clone();
                    let slot = if segs.is_empty() {
                        Some(&mut trial)
                    } else {
                        table_at(&mut trial, &segs)
                    };
                    let Some(slot) = slot else { break };
                    slot.insert(k.clone(), stand_in);
                    let same = match serde_path_to_error::deserialize::<_, T>(toml::Value::Table(
                        trial.clone(),
                    )) {
                        Ok(_) => false,
                        Err(e) => {
                            e.path().to_string() == err.path().to_string()
                                && e.inner().message() == message
                        }
                    };
                    if !same {
                        table = trial;
                        patched = true;
                        break;
                    }
                }
                if patched {
                    stood_in = true;
                    continue;
                }
            }
        }
        // A stage that cannot be read (a tagged enum names no field): a placeholder keeps the
        // numbering of the stages after it.
        if let [Seg::Key(s), Seg::Index(i)] = segs.as_slice() {
            if s == "stages" && !replaced.contains(i) && issues.len() < MAX_ISSUES {
                if let Some(stage) = table
                    .get_mut("stages")
                    .and_then(|v| v.as_array_mut())
                    .and_then(|a| a.get_mut(*i))
                {
                    let mut t = toml::Table::new();
                    t.insert("type".into(), toml::Value::String("exact_dedup".into()));
                    *stage = toml::Value::Table(t);
                    replaced.push(*i);
                    if !placeholders.contains(i) {
                        placeholders.push(*i);
                    }
                    continue;
                }
            }
        }
        return Collected {
            value: None,
            issues: by_line(issues),
            placeholders,
        };
    }
}

/// Issues in the order of the file (those without a line last, as found).
fn by_line(mut issues: Vec<ConfigIssue>) -> Vec<ConfigIssue> {
    let line = |i: &ConfigIssue| {
        i.key
            .split("(line ")
            .nth(1)
            .and_then(|r| r.split(',').next())
            .and_then(|n| n.trim().parse::<usize>().ok())
            .unwrap_or(usize::MAX)
    };
    issues.sort_by_key(line);
    issues
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_into_keys_and_indexes() {
        assert_eq!(
            segments("inputs[0].columns.ask"),
            vec![
                Seg::Key("inputs".into()),
                Seg::Index(0),
                Seg::Key("columns".into()),
                Seg::Key("ask".into())
            ]
        );
        assert_eq!(
            show(&segments("stages[2].min_chars")),
            "stages[2].min_chars"
        );
    }

    #[test]
    fn keys_are_found_under_their_own_header() {
        let text = "name = \"x\"\n[[inputs]]\npaths = [\"a\"]\n[[inputs]]\n  paths = [\"b\"]\n  domian = \"f\"\n[output]\ndirr = \"o\"\n";
        let inputs1 = [Seg::Key("inputs".into()), Seg::Index(1)];
        assert_eq!(locate(text, &inputs1, "domian"), Some((6, 3)));
        assert_eq!(locate(text, &inputs1, "paths"), Some((5, 3)));
        assert_eq!(
            locate(text, &[Seg::Key("output".into())], "dirr"),
            Some((8, 1))
        );
        assert_eq!(locate(text, &[], "name"), Some((1, 1)));
        assert_eq!(locate(text, &[], "nope"), None);
    }
}
