//! Job workers: `concurrency` threads that claim queued jobs and run them with the engine.
//!
//! A job's pipeline is compiled again at run time (relative paths against the first data root),
//! its inputs checked against the data roots, and its output forced to `<output_root>/<id>`.
//! Cancelling a running job, or stopping the service, stops the run at its next batch: a
//! cancelled job ends `cancelled`, a stopped one goes back to the queue.

use crate::State;
use sluice_pipeline::{config, engine, Error};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where a submitted pipeline's relative paths start.
pub fn pipeline_base(state: &State) -> PathBuf {
    state.config.data_roots[0].join("submitted.toml")
}

/// Compile a submitted pipeline and check that every input lies inside the data roots.
/// `Err((status, field, message))`: 422 for an invalid pipeline, 403 for a path outside.
pub fn compile(state: &State, text: &str) -> Result<config::Plan, (u16, String, String)> {
    let plan = config::parse(text, &pipeline_base(state)).map_err(|e| match e {
        Error::Config { issues, .. } => {
            let field = issues.first().map(|i| i.key.clone()).unwrap_or_default();
            let message = issues
                .iter()
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join("; ");
            (422, field, message)
        }
        other => (422, "pipeline".into(), other.to_string()),
    })?;
    for (i, input) in plan.inputs.iter().enumerate() {
        for (path, shown) in &input.files {
            if !state.config.allowed(path) {
                return Err((
                    403,
                    format!("inputs[{i}].paths"),
                    format!("{shown} is outside the data roots"),
                ));
            }
        }
    }
    Ok(plan)
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
                let ok = run_job(state, &job.id, &job.pipeline, Path::new(&job.output));
                if let (true, Some(s)) = (ok, &job.schedule) {
                    if let Err(e) = state.store.schedule_job_done(s, &job.id) {
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
fn run_job(state: &State, id: &str, pipeline: &str, output: &Path) -> bool {
    let plan = match compile(state, pipeline) {
        Ok(p) => p,
        Err((_, field, message)) => {
            let _ = state
                .store
                .finish(id, "failed", Some(&format!("{field}: {message}")), None);
            return false;
        }
    };
    let cancel = Arc::new(AtomicBool::new(false));
    let (store_id, last) = (id.to_string(), std::sync::Mutex::new(Instant::now()));
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
            if last.elapsed() >= Duration::from_millis(200) {
                *last = Instant::now();
                let _ = tx.send(serde_json::json!({
                    "phase": p.phase,
                    "records": p.records,
                    "bytes": p.bytes,
                    "total_bytes": p.total_bytes,
                }));
            }
        })),
        cancel: Some(cancel.clone()),
        task: None,
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
            let json = serde_json::to_string(&report).unwrap_or_default();
            state.store.finish(id, "succeeded", None, Some(&json))
        }
        Err(Error::Cancelled) if state.stopping.load(Ordering::SeqCst) => state.store.requeue(id),
        Err(Error::Cancelled) => state.store.finish(id, "cancelled", None, None),
        Err(e) => state.store.finish(id, "failed", Some(&e.to_string()), None),
    };
    if let Err(e) = outcome {
        eprintln!("sluice serve: job {id}: cannot record the outcome: {e}");
    }
    succeeded
}
