//! `sluice bench serve`: the service under previews and jobs.

use anyhow::Result;
use std::io::Write;

pub fn bench_serve(
    dir: &std::path::Path,
    runs: usize,
    previews: usize,
    jobs: usize,
    concurrency: usize,
) -> Result<()> {
    let _ = std::fs::remove_dir_all(dir);
    let data = dir.join("data");
    let out = dir.join("out");
    std::fs::create_dir_all(&data)?;
    sluice_pipeline::bench::synthetic_samples(&data.join("logs.jsonl"), 100)
        .map_err(anyhow::Error::msg)?;
    sluice_pipeline::bench::synthetic_catalog(&out, runs, runs as u64 * 10_000)
        .map_err(anyhow::Error::msg)?;
    let token = "load-test-token";
    let mut cfg = sluice_server::ServerConfig {
        listen: "127.0.0.1:0".into(),
        data_roots: vec![data.clone()],
        output_root: out,
        concurrency: 1,
        threads_per_job: Some(1),
        queue_limit: (jobs as i64).max(1) * 2,
        body_limit: 1 << 20,
        tokens: vec![sluice_server::config::TokenSpec {
            name: "load".into(),
            sha256: sluice_server::config::hash_token(token),
            scope: sluice_server::config::Scope::Write,
        }],
        timezone: None,
        allowed_urls: Vec::new(),
        max_glob_files: 100_000,
        min_schedule_interval: 60,
        anonymous_read: false,
        max_ablation_points: 8,
        max_train_steps: 5000,
        max_train_memory_mib: 8192,
        max_train_tokens: 1_000_000_000,
    };
    cfg.check()?;
    let state = sluice_server::State::open(cfg)?;
    let input = data.join("logs.jsonl").display().to_string();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let phases = rt.block_on(sluice_server::loadtest::run(
        state,
        token,
        &input,
        previews,
        jobs,
        concurrency,
    ))?;
    let mut o = std::io::stdout().lock();
    writeln!(
        o,
        "{:<32} {:>8} {:>7} {:>8} {:>9} {:>9} {:>9} {:>9}",
        "phase", "requests", "errors", "seconds", "req/s", "p50 ms", "p99 ms", "max ms"
    )?;
    for p in &phases {
        writeln!(
            o,
            "{:<32} {:>8} {:>7} {:>8.2} {:>9.0} {:>9.2} {:>9.2} {:>9.2}",
            p.name,
            p.requests,
            p.errors,
            p.seconds,
            p.requests as f64 / p.seconds.max(1e-9),
            p.p50_ms,
            p.p99_ms,
            p.max_ms
        )?;
    }
    writeln!(
        o,
        "catalog: {runs} runs, {} rows; concurrency {concurrency}",
        runs * 800
    )?;
    Ok(())
}
