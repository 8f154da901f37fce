//! The REST service (axum on tokio): jobs, mix previews, the catalog, the durable job store and
//! auth, exposed as [`app`]`(state) -> Router` so tests call routes without a socket, and
//! [`serve`] for `sluice serve --config server.toml`.
//!
//! Jobs run in worker threads (`concurrency` at once) through the same engine as `sluice run`;
//! their outputs go to `<output_root>/<job id>`, published atomically by the engine, so a job
//! interrupted by a crash is re-run from a clean state when the service starts again.

pub mod ablations;
pub mod config;
pub mod diversity;
pub mod loadtest;
pub mod routes;
pub mod schedule;
pub mod store;
pub mod ui;
pub mod worker;

pub use config::ServerConfig;
pub use routes::app;

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;

/// Shared state of the service.
pub struct State {
    /// The configuration.
    pub config: ServerConfig,
    /// The job store.
    pub store: store::Store,
    /// Wakes idle workers when a job is queued.
    pub wake: tokio::sync::Notify,
    /// Set when the service is stopping: running jobs stop at their next batch and go back to
    /// the queue.
    pub stopping: Arc<AtomicBool>,
    /// Requests served, by route class, for /metrics.
    pub metrics: Metrics,
    /// Previews computed at once (one per core): a fair queue instead of 200 threads fighting
    /// for 2 cores.
    pub preview_slots: tokio::sync::Semaphore,
    /// Preview answers by (catalog version, query), dropped when the catalog changes.
    pub preview_cache: std::sync::Mutex<std::collections::HashMap<(u64, String), String>>,
    /// Diversity statistics by (job, split): a succeeded job's samples never change.
    pub diversity_cache: std::sync::Mutex<
        std::collections::HashMap<(String, String), sluice_lab::diversity::Diversity>,
    >,
}

/// Prometheus counters.
#[derive(Default)]
pub struct Metrics {
    /// HTTP requests served.
    pub requests: AtomicU64,
    /// Requests answered with a 4xx.
    pub client_errors: AtomicU64,
    /// Mix previews served.
    pub previews: AtomicU64,
    /// Jobs finished by this process.
    pub jobs_finished: AtomicU64,
}

impl State {
    /// Open the store under the output root and recover jobs a crash left running.
    pub fn open(config: ServerConfig) -> anyhow::Result<Arc<State>> {
        std::fs::create_dir_all(&config.output_root)?;
        let store = store::Store::open(&config.output_root.join("jobs.db"))?;
        let recovered = store.recover()?;
        if !recovered.is_empty() {
            eprintln!(
                "sluice serve: {} job(s) interrupted by a stop will run again: {}",
                recovered.len(),
                recovered.join(", ")
            );
        }
        Ok(Arc::new(State {
            config,
            store,
            wake: tokio::sync::Notify::new(),
            stopping: Arc::new(AtomicBool::new(false)),
            metrics: Metrics::default(),
            preview_slots: tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(1, |n| n.get()),
            ),
            preview_cache: Default::default(),
            diversity_cache: Default::default(),
        }))
    }
}

/// Run the service until ctrl-c or SIGTERM: in-flight requests finish, running jobs stop at
/// their next batch and are queued again for the next start.
pub async fn serve(config: ServerConfig) -> anyhow::Result<()> {
    let listen = config.listen.clone();
    let state = State::open(config)?;
    let mut workers = worker::start(state.clone());
    workers.push(schedule::start(state.clone()));
    workers.push(ablations::start(state.clone()));
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    eprintln!(
        "sluice serve: listening on http://{}",
        listener.local_addr()?
    );
    let stopping = state.stopping.clone();
    axum::serve(listener, app(state.clone()))
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            stopping.store(true, std::sync::atomic::Ordering::SeqCst);
        })
        .await?;
    state.wake.notify_waiters();
    for w in workers {
        let _ = w.join();
    }
    eprintln!("sluice serve: stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
