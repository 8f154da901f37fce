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
    let shape = "5 fields (minute hour day-of-month month day-of-week, e.g. \"0 2 * * *\"), or 6 with seconds first";
    let full = match fields {
        5 => format!("0 {expr}"),
        6 | 7 => expr.to_string(),
        n => return Err(format!("cron {expr:?} has {n} field(s): expected {shape}")),
    };
    cron::Schedule::from_str(&full).map_err(|e| format!("cron {expr:?}: {e} (expected {shape})"))
}

/// Parse a cron expression and check that no two of its next ticks come closer than
/// `min_secs` seconds.
pub fn parse_cron_spaced(expr: &str, min_secs: u64) -> Result<cron::Schedule, String> {
    let cron = parse_cron(expr)?;
    let ticks: Vec<DateTime<Utc>> = cron.upcoming(Utc).take(50).collect();
    if ticks.is_empty() {
        return Err(format!("cron {expr:?} never fires"));
    }
    for w in ticks.windows(2) {
        let gap = (w[1] - w[0]).num_seconds();
        if gap < min_secs as i64 {
            return Err(format!(
                "cron {expr:?} fires {gap} s apart; schedules may fire at most every {min_secs} s (server.toml min_schedule_interval)"
            ));
        }
    }
    Ok(cron)
}

/// A schedule's state folder under the output root (its persistent minhash index).
pub fn state_dir(state: &State, schedule: &str) -> PathBuf {
    state.config.output_root.join("schedules").join(schedule)
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
    if sluice_pipeline::remote::is_url(prefix)
        || prefix.starts_with(sluice_pipeline::confine::BUNDLED_PREFIX)
    {
        return Err(format!(
            "{prefix} is not a folder inside a data root (schedules read local folders)"
        ));
    }
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
    let index = state_dir(state, schedule).join("minhash-index");
    let index = toml::Value::String(index.to_string_lossy().into_owned());
    let stages = doc
        .entry("stages")
        .or_insert_with(|| toml::Value::Array(Vec::new()));
    let stages = stages.as_array_mut().ok_or("stages must be an array")?;
    let is = |s: &toml::Value, t: &str| s.get("type").and_then(|v| v.as_str()) == Some(t);
    match stages.iter_mut().find(|s| is(s, "minhash")) {
        Some(m) => {
            // The schedule keeps its own index: a pipeline cannot point it elsewhere.
            if let Some(t) = m.as_table_mut() {
                t.insert("index".into(), index);
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
/// Symbolic links are not followed (a link loop cannot grow the walk; a link out of the data
/// roots is never read), and the walk stops with an error past `max_files` files.
pub fn list_files(dir: &Path, max_files: usize) -> Result<Vec<(String, i64, String)>, String> {
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
            let Ok(kind) = e.file_type() else {
                continue;
            };
            if kind.is_dir() {
                stack.push(p);
            } else if kind.is_file() {
                if out.len() >= max_files {
                    return Err(format!(
                        "more than {max_files} files under the input prefix (server.toml max_glob_files)"
                    ));
                }
                let (size, hash) = hash_file(&p)?;
                out.push((p.to_string_lossy().into_owned(), size, hash));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Size and xxh3-128 of a file, read in blocks.
fn hash_file(p: &Path) -> Result<(i64, String), String> {
    use std::io::Read;
    let mut f = std::fs::File::open(p).map_err(|e| format!("{}: {e}", p.display()))?;
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0i64;
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| format!("{}: {e}", p.display()))?;
        if n == 0 {
            break;
        }
        size += n as i64;
        h.update(&buf[..n]);
    }
    Ok((size, format!("{:032x}", h.digest128())))
}

/// Run one schedule's tick now: queue a job over its new files (None: nothing new).
pub fn tick(state: &State, s: &crate::store::Schedule) -> Result<Option<String>, String> {
    // A full queue takes no scheduled job either: the tick is skipped, its files wait.
    if state.store.queued().map_err(|e| e.to_string())? >= state.config.queue_limit {
        state.store.skip_tick(&s.id).map_err(|e| e.to_string())?;
        return Err("the job queue is full: tick skipped".into());
    }
    // A prefix that became unusable (removed, or a link out of the roots) or cannot be listed
    // backs off like a failed run instead of being retried at every pass of the scheduler.
    // A folder that does not exist yet (and is no dangling link) has no new files: the
    // schedule waits for it without counting a failure.
    let listed = prefix_dir(state, &s.input_prefix).and_then(|dir| {
        if dir.symlink_metadata().is_err() {
            Ok(Vec::new())
        } else {
            list_files(&dir, state.config.max_glob_files)
        }
    });
    let files = match listed {
        Ok(f) => f,
        Err(e) => {
            state.store.skip_tick(&s.id).map_err(|e| e.to_string())?;
            state
                .store
                .schedule_job_failed(&s.id, state.config.min_schedule_interval)
                .map_err(|e| e.to_string())?;
            return Err(e);
        }
    };
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
    if s.retry_at.is_some_and(|t| t > now.timestamp()) {
        return false; // backing off after failed runs
    }
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
            failures: 0,
            retry_at: None,
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
