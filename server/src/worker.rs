//! Job workers: `concurrency` threads that claim queued jobs and run them with the engine.
//!
//! A job's pipeline is compiled again at run time (relative paths against the first data root),
//! its inputs checked against the data roots, and its output forced to `<output_root>/<id>`.
//! Cancelling a running job, or stopping the service, stops the run at its next batch: a
//! cancelled job ends `cancelled`, a stopped one goes back to the queue.

use crate::State;
use sluice_pipeline::{config, confine, engine, Error};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where a submitted pipeline's relative paths start.
pub fn pipeline_base(state: &State) -> PathBuf {
    state.config.data_roots[0].join("submitted.toml")
}

/// The folders a job may write: its own output folder, and for a scheduled job the
/// schedule's state folder (its persistent minhash index).
pub struct JobFolders {
    /// `<output_root>/<job id>`.
    pub output: PathBuf,
    /// `<output_root>/schedules/<schedule id>`.
    pub schedule: Option<PathBuf>,
}

impl JobFolders {
    /// The folders of a submission not stored yet: no path it names can be its own folder.
    pub fn pending(state: &State) -> JobFolders {
        JobFolders {
            output: state.config.output_root.join(".pending"),
            schedule: None,
        }
    }
}

/// Compile a submitted pipeline confined to the data roots (reads), the job's folders
/// (writes) and the allowed URL prefixes, before any file is opened, listed or fetched.
/// `Err((status, field, message))`: 422 for an invalid pipeline, 403 for a path outside;
/// messages show paths relative to their root.
pub fn compile(
    state: &State,
    text: &str,
    folders: &JobFolders,
) -> Result<config::Plan, (u16, String, String)> {
    compile_with(state, text, folders, false).and_then(|p| {
        p.ok_or_else(|| (422, "pipeline".into(), "the pipeline reads no file".into()))
    })
}

/// [`compile`] for a schedule's pipeline before its folder has files: an input whose pattern
/// matches no file yet is not an error, every other problem is (`Ok(None)`: valid but for
/// that).
pub fn check_scheduled(
    state: &State,
    text: &str,
    folders: &JobFolders,
) -> Result<(), (u16, String, String)> {
    compile_with(state, text, folders, true).map(|_| ())
}

fn compile_with(
    state: &State,
    text: &str,
    folders: &JobFolders,
    files_may_be_missing: bool,
) -> Result<Option<config::Plan>, (u16, String, String)> {
    let mut writes = vec![folders.output.clone()];
    writes.extend(folders.schedule.clone());
    let opts = config::CompileOptions {
        confine: Some(confine::Confinement::new(
            &state.config.data_roots,
            &writes,
            &state.config.allowed_urls,
        )),
        limits: confine::Limits {
            max_files: state.config.max_glob_files,
            cancel: Some(state.stopping.clone()),
        },
        output_dir: Some(folders.output.clone()),
        // config::parse_with fetches URL inputs from object storage, once the confinement has
        // checked them against allowed_urls.
        fetch: None,
    };
    let shown = |m: &str| state.config.relative_paths(m);
    let no_files = |i: &sluice_pipeline::error::ConfigIssue| {
        files_may_be_missing && i.message.starts_with("no file matches")
    };
    let e = match config::parse_with(text, &pipeline_base(state), &opts) {
        Ok(plan) => return Ok(Some(plan)),
        Err(Error::Config { issues, .. }) if issues.iter().all(no_files) => return Ok(None),
        Err(e) => e,
    };
    Err(match e {
        Error::Config { mut issues, .. } => {
            issues.retain(|i| !no_files(i));
            // The key alone (`stages[0].type`); the message keeps its line and column.
            let field = issues
                .first()
                .map(|i| i.key.split(" (").next().unwrap_or("").to_string())
                .unwrap_or_default();
            let message = issues
                .iter()
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join("; ");
            (422, field, shown(&message))
        }
        Error::Forbidden { key, message } => {
            (403, key.clone(), shown(&format!("{key}: {message}")))
        }
        other => (422, "pipeline".into(), shown(&other.to_string())),
    })
}

/// Start the worker threads.
pub fn start(state: Arc<State>) -> Vec<std::thread::JoinHandle<()>> {
    (0..state.config.concurrency)
        .map(|n| {
            let state = state.clone();
            std::thread::Builder::new()
                .name(format!("sluice-worker-{n}"))
                .spawn(move || work(&state))
                .unwrap_or_else(|e| panic!("cannot start a worker thread: {e}"))
        })
        .collect()
}

fn work(state: &State) {
    while !state.stopping.load(Ordering::SeqCst) {
        match state.store.claim() {
            Ok(Some(job)) => {
                let folders = JobFolders {
                    output: PathBuf::from(&job.output),
                    schedule: job
                        .schedule
                        .as_ref()
                        .map(|s| crate::schedule::state_dir(state, s)),
                };
                let ok = run_job(state, &job.id, &job.pipeline, &folders);
                if let Some(s) = &job.schedule {
                    let failed = || {
                        state
                            .store
                            .get(&job.id)
                            .ok()
                            .flatten()
                            .is_some_and(|j| j.state == "failed")
                    };
                    let recorded = if ok {
                        state.store.schedule_job_done(s, &job.id)
                    } else if failed() {
                        state
                            .store
                            .schedule_job_failed(s, state.config.min_schedule_interval)
                    } else {
                        Ok(())
                    };
                    if let Err(e) = recorded {
                        eprintln!("sluice serve: schedule {s}: {e}");
                    }
                }
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => {
                eprintln!("sluice serve: job store: {e}");
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}

/// Run one claimed job; true when it succeeded.
fn run_job(state: &State, id: &str, pipeline: &str, folders: &JobFolders) -> bool {
    let output = folders.output.as_path();
    let plan = match compile(state, pipeline, folders) {
        // A pipeline that does not name itself runs under the job's id (not the file name
        // submissions are compiled as), so its report and catalog entry say which job it was.
        Ok(mut p) => {
            let named =
                toml::from_str::<toml::Table>(pipeline).is_ok_and(|t| t.contains_key("name"));
            if !named {
                if p.llamafactory_name == p.name {
                    p.llamafactory_name = id.to_string();
                }
                p.name = id.to_string();
            }
            p
        }
        Err((_, _, message)) => {
            let _ = state.store.finish(id, "failed", Some(&message), None);
            return false;
        }
    };
    let cancel = Arc::new(AtomicBool::new(false));
    let _ = state.store.progress(
        id,
        &serde_json::json!({ "phase": "starting", "records": 0, "bytes": 0, "percent": 0.0 }),
    );
    // The first batch reports at once; later ones at most every 200 ms.
    let (store_id, last) = (
        id.to_string(),
        std::sync::Mutex::new(Instant::now().checked_sub(Duration::from_secs(1))),
    );
    let state_ref: &State = state;
    // The progress callback must be 'static: it only sends progress; the watcher below turns
    // a cancel request or a stop into the engine's cancel flag.
    let threads = state.config.threads_per_job.or_else(|| {
        std::thread::available_parallelism()
            .ok()
            .map(|n| (n.get() / state.config.concurrency).max(1))
    });
    let (tx, rx) = std::sync::mpsc::channel::<serde_json::Value>();
    let opts = engine::RunOptions {
        threads,
        max_reject_ratio: None,
        output_dir: Some(output.to_path_buf()),
        progress: Some(Box::new(move |p: &engine::Progress| {
            let mut last = last
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if last.is_none_or(|l| l.elapsed() >= Duration::from_millis(200)) {
                *last = Some(Instant::now());
                let percent = if p.total_bytes > 0 {
                    (p.bytes as f64 * 100.0 / p.total_bytes as f64).min(100.0)
                } else {
                    0.0
                };
                let _ = tx.send(serde_json::json!({
                    "phase": p.phase,
                    "records": p.records,
                    "bytes": p.bytes,
                    "total_bytes": p.total_bytes,
                    "percent": (percent * 10.0).round() / 10.0,
                }));
            }
        })),
        cancel: Some(cancel.clone()),
        task: None,
        limit: None,
    };
    // The engine runs on this thread; a watcher thread records progress and turns a cancel
    // request in the store into the engine's cancel flag.
    let done = Arc::new(AtomicBool::new(false));
    let result = std::thread::scope(|scope| {
        let done_w = done.clone();
        let cancel_w = cancel.clone();
        scope.spawn(move || {
            while !done_w.load(Ordering::SeqCst) {
                while let Ok(p) = rx.try_recv() {
                    let _ = state_ref.store.progress(&store_id, &p);
                }
                if state_ref.store.cancel_requested(&store_id)
                    || state_ref.stopping.load(Ordering::SeqCst)
                {
                    cancel_w.store(true, Ordering::SeqCst);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let r = engine::run(&plan, opts);
        done.store(true, Ordering::SeqCst);
        r
    });
    state.metrics.jobs_finished.fetch_add(1, Ordering::Relaxed);
    let succeeded = result.is_ok();
    let outcome = match result {
        Ok(report) => {
            // The last word on progress is the run's own totals, not the last batch seen.
            let _ = state.store.progress(
                id,
                &serde_json::json!({
                    "phase": "done",
                    "records": report.totals.read,
                    "bytes": report.inputs.iter().flat_map(|i| &i.files).map(|f| f.bytes).sum::<u64>(),
                    "kept": report.totals.kept,
                    "dropped": report.totals.dropped,
                    "rejected": report.totals.rejected,
                    "percent": 100.0,
                }),
            );
            match serde_json::to_string(&report) {
                Ok(json) => state.store.finish(id, "succeeded", None, Some(&json)),
                Err(e) => state.store.finish(
                    id,
                    "failed",
                    Some(&format!("the report could not be written: {e}")),
                    None,
                ),
            }
        }
        Err(Error::Cancelled) if state.stopping.load(Ordering::SeqCst) => state.store.requeue(id),
        Err(Error::Cancelled) => state.store.finish(id, "cancelled", None, None),
        Err(e) => state.store.finish(
            id,
            "failed",
            Some(&state.config.relative_paths(&e.to_string())),
            None,
        ),
    };
    if let Err(e) = outcome {
        eprintln!("sluice serve: job {id}: cannot record the outcome: {e}");
    }
    succeeded
}
