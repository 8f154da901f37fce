//! Scheduled runs: a loop over the schedules table (durable, no scheduler of its own). Each
//! due tick lists the files under the schedule's input prefix, records them by path, size and
//! content hash, and queues one job over the files that no successful run of the schedule has
//! taken yet. A tick missed while the service was down runs once at start-up (the next tick is
//! computed from the last one, and `last_tick` becomes now). Scheduled pipelines deduplicate
//! against what earlier runs kept: their minhash stage gets a persistent index per schedule
//! (added when the pipeline has none).

use crate::State;
use chrono::{DateTime, FixedOffset, Offset, TimeZone, Utc};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// Parse a cron expression: 6 fields (seconds first), 7 (with year), or the classic 5.
pub fn parse_cron(expr: &str) -> Result<cron::Schedule, String> {
    let fields = expr.split_whitespace().count();
    let full = if fields == 5 {
        format!("0 {expr}")
    } else {
        expr.to_string()
    };
    cron::Schedule::from_str(&full).map_err(|e| format!("cron {expr:?}: {e}"))
}

/// The configured time zone as a fixed offset (`+08:00`; default UTC).
pub fn offset(tz: Option<&str>) -> Result<FixedOffset, String> {
    let Some(tz) = tz else {
        return FixedOffset::east_opt(0).ok_or_else(|| "offset".to_string());
    };
    let t = tz.trim();
    if t.eq_ignore_ascii_case("utc") || t == "Z" {
        return FixedOffset::east_opt(0).ok_or_else(|| "offset".to_string());
    }
    let (sign, rest) = match t.as_bytes().first() {
        Some(b'+') => (1, &t[1..]),
        Some(b'-') => (-1, &t[1..]),
        _ => {
            return Err(format!(
                "timezone {tz:?}: expected UTC or an offset such as +08:00"
            ))
        }
    };
    let (h, m) = rest.split_once(':').unwrap_or((rest, "0"));
    let (h, m): (i32, i32) = (
        h.parse()
            .map_err(|_| format!("timezone {tz:?}: bad hours"))?,
        m.parse()
            .map_err(|_| format!("timezone {tz:?}: bad minutes"))?,
    );
    FixedOffset::east_opt(sign * (h * 3600 + m * 60))
        .ok_or_else(|| format!("timezone {tz:?} out of range"))
}

/// The folder a schedule reads, checked against the data roots.
pub fn prefix_dir(state: &State, prefix: &str) -> Result<PathBuf, String> {
    let p = Path::new(prefix);
    let dir = if p.is_absolute() {
        p.to_path_buf()
    } else {
        state.config.data_roots[0].join(p)
    };
    if !state.config.allowed(&dir) {
        return Err(format!("{prefix} is outside the data roots"));
    }
    Ok(dir)
}

/// The pipeline of one scheduled run: the schedule's pipeline with its first input reading
/// exactly `files`, and a persistent minhash index under the output root.
pub fn pipeline_for(
    state: &State,
    schedule: &str,
    text: &str,
    files: &[String],
) -> Result<String, String> {
    let mut doc: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
    let inputs = doc
        .get_mut("inputs")
        .and_then(|v| v.as_array_mut())
        .ok_or("the pipeline needs an [[inputs]] section (its paths are the new files)")?;
    let first = inputs
        .first_mut()
        .and_then(|v| v.as_table_mut())
        .ok_or("the pipeline needs an [[inputs]] section")?;
    first.insert(
        "paths".into(),
        toml::Value::Array(
            files
                .iter()
                .map(|f| toml::Value::String(f.clone()))
                .collect(),
        ),
    );
    let index = state
        .config
        .output_root
        .join("schedules")
        .join(schedule)
        .join("minhash-index");
    let index = toml::Value::String(index.to_string_lossy().into_owned());
    let stages = doc
        .entry("stages")
        .or_insert_with(|| toml::Value::Array(Vec::new()));
    let stages = stages.as_array_mut().ok_or("stages must be an array")?;
    let is = |s: &toml::Value, t: &str| s.get("type").and_then(|v| v.as_str()) == Some(t);
    match stages.iter_mut().find(|s| is(s, "minhash")) {
        Some(m) => {
            if let Some(t) = m.as_table_mut() {
                t.entry("index").or_insert(index);
            }
        }
        None => {
            let mut m = toml::Table::new();
            m.insert("type".into(), toml::Value::String("minhash".into()));
            m.insert("index".into(), index);
            // Before a mix (which must stay the last global stage), else at the end.
            let at = stages
                .iter()
                .position(|s| is(s, "mix"))
                .unwrap_or(stages.len());
            stages.insert(at, toml::Value::Table(m));
        }
    }
    toml::to_string(&doc).map_err(|e| e.to_string())
}

/// Every regular file under `dir` (recursively, sorted) with its size and content hash.
pub fn list_files(dir: &Path) -> Result<Vec<(String, i64, String)>, String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(|e| format!("{}: {e}", d.display()))?;
        for e in entries.flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue; // files being written by an exporter, editors' temp files
            }
            let Ok(meta) = std::fs::metadata(&p) else {
                continue;
            };
            if meta.is_dir() {
                stack.push(p);
            } else if meta.is_file() {
                let bytes = std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?;
                let hash = format!("{:032x}", xxhash_rust::xxh3::xxh3_128(&bytes));
                out.push((p.to_string_lossy().into_owned(), meta.len() as i64, hash));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Run one schedule's tick now: queue a job over its new files (None: nothing new).
pub fn tick(state: &State, s: &crate::store::Schedule) -> Result<Option<String>, String> {
    let dir = prefix_dir(state, &s.input_prefix)?;
    let files = list_files(&dir)?;
    let job = state
        .store
        .tick(&s.id, &files, &state.config.output_root, &|new| {
            pipeline_for(state, &s.id, &s.pipeline, new)
        })
        .map_err(|e| e.to_string())??;
    Ok(job.map(|j| j.id))
}

/// Whether a schedule is due at `now`.
pub fn due(s: &crate::store::Schedule, tz: FixedOffset, now: DateTime<Utc>) -> bool {
    let Ok(cron) = parse_cron(&s.cron) else {
        return false;
    };
    let base = s.last_tick.unwrap_or(s.created_at);
    let Some(base) = tz.timestamp_opt(base, 0).single() else {
        return false;
    };
    cron.after(&base).next().is_some_and(|next| next <= now)
}

/// Start the scheduler thread.
pub fn start(state: Arc<State>) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("sluice-scheduler".into())
        .spawn(move || {
            let tz = offset(state.config.timezone.as_deref()).unwrap_or_else(|_| Utc.fix());
            while !state.stopping.load(Ordering::SeqCst) {
                for s in state.store.schedules().unwrap_or_default() {
                    if due(&s, tz, Utc::now()) {
                        match tick(&state, &s) {
                            Ok(Some(job)) => {
                                eprintln!("sluice serve: schedule {}: queued {job}", s.id)
                            }
                            Ok(None) => {}
                            Err(e) => eprintln!("sluice serve: schedule {}: {e}", s.id),
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(250));
            }
        })
        .unwrap_or_else(|e| panic!("cannot start the scheduler thread: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Schedule;

    fn sched(cron: &str, created: i64, last_tick: Option<i64>) -> Schedule {
        Schedule {
            id: "s-0001".into(),
            cron: cron.into(),
            pipeline: String::new(),
            input_prefix: "in".into(),
            created_at: created,
            last_tick,
            last_success: None,
        }
    }

    #[test]
    fn a_tick_missed_while_down_is_due_once_at_start_up() {
        let tz = offset(Some("+08:00")).expect("offset");
        let now = Utc::now();
        let day = 86_400;
        // Daily at 02:00 (+08:00); the service was down for three days.
        let s = sched(
            "0 2 * * *",
            now.timestamp() - 10 * day,
            Some(now.timestamp() - 3 * day),
        );
        assert!(due(&s, tz, now), "missed ticks make the schedule due");
        // After the catch-up tick (last_tick = now) it is not due again until the next 02:00.
        let s = sched(
            "0 2 * * *",
            now.timestamp() - 10 * day,
            Some(now.timestamp()),
        );
        assert!(!due(&s, tz, now));
        assert!(parse_cron("every day").is_err());
        assert!(offset(Some("Asia/Shanghai")).is_err());
        assert_eq!(
            offset(Some("-05:30")).map(|o| o.local_minus_utc()),
            Ok(-(5 * 3600 + 1800))
        );
    }
}
