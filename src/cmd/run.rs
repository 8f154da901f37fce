//! `sluice run`: run a pipeline (or one task of it) and publish its outputs.

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use sluice_pipeline::{config, engine, Error};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

/// Run a pipeline and publish its outputs.
#[derive(clap::Args)]
pub struct Args {
    /// The pipeline file (TOML).
    pub pipeline: PathBuf,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Fail when more than this share of records is rejected (overrides the pipeline).
    #[arg(long)]
    pub max_reject_ratio: Option<f64>,
    /// Output directory (overrides the pipeline's output.dir).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// No progress bar or summary.
    #[arg(long, short)]
    pub quiet: bool,
    /// A trial: only the first N records of each input, published to `<output>.trial`
    /// (outside the catalog) unless --out says where.
    #[arg(long)]
    pub limit: Option<u64>,
    /// Run as task I of a task-sharded run (also from SLURM_ARRAY_TASK_ID or
    /// JOB_COMPLETION_INDEX).
    #[arg(long, requires = "tasks")]
    pub task_index: Option<usize>,
    /// Number of tasks (also from SLURM_ARRAY_TASK_COUNT or SLUICE_TASKS).
    #[arg(long)]
    pub tasks: Option<usize>,
    /// Work directory every task shares (default: <out>.tasks next to the output).
    #[arg(long)]
    pub work: Option<PathBuf>,
    /// Seconds a task waits for the others at a phase boundary.
    #[arg(long, default_value_t = 86_400)]
    pub task_timeout: u64,
    /// Run only this phase of this task, then exit: a step of a scheduler's pipeline of
    /// dependent job arrays or DAG (`map-0`, `reduce-0`, … `write`, `shards`, `publish`;
    /// `--phases` lists them). Without it a task runs every phase, waiting for the others.
    #[arg(long)]
    pub phase: Option<String>,
    /// Print the phases of a task-sharded run of this pipeline, in order, and exit.
    #[arg(long, conflicts_with = "phase")]
    pub phases: bool,
}

/// Run it.
pub fn run(args: Args) -> Result<ExitCode> {
    let Args {
        pipeline,
        threads,
        max_reject_ratio,
        out,
        quiet,
        limit,
        task_index,
        tasks,
        work,
        task_timeout,
        phase,
        phases,
    } = args;
    if limit == Some(0) {
        bail!("--limit must be at least 1 record");
    }
    if limit.is_some() && (task_index.is_some() || tasks.is_some()) {
        bail!("--limit is a trial in one process: it does not combine with --tasks");
    }
    if let Some(r) = max_reject_ratio {
        if !(0.0..=1.0).contains(&r) {
            bail!("--max-reject-ratio {r} is not a share between 0 and 1");
        }
    }
    let mut plan = config::load(&pipeline)?;
    let shared_fs = !work
        .as_ref()
        .is_some_and(|w| sluice_pipeline::remote::is_url(&w.to_string_lossy()));
    if phases {
        // The phases of a run of more than one task (one task has none to schedule).
        for p in engine::phases(&plan, tasks.unwrap_or(2).max(2), shared_fs) {
            println!("{}", p.name());
        }
        return Ok(ExitCode::SUCCESS);
    }
    // `--out s3://…`: build in a local staging folder, upload when published.
    let out = match out {
        Some(o) if sluice_pipeline::remote::is_url(&o.to_string_lossy()) => {
            let url = o.to_string_lossy().into_owned();
            plan.output_dir = sluice_pipeline::remote::staging_dir(&url);
            plan.output_url = Some(url);
            None
        }
        o => o,
    };
    let show = !quiet && std::io::stderr().is_terminal();
    let bar = show.then(|| {
        let total: u64 = plan
            .inputs
            .iter()
            .flat_map(|i| &i.files)
            .map(|(p, _)| std::fs::metadata(p).map_or(0, |m| m.len()))
            .sum();
        let b = ProgressBar::new(total);
        b.set_style(
            ProgressStyle::with_template(
                "{spinner} {msg:30} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b
    });
    let progress_bar = bar.clone();
    // A trial never replaces the real run, and stays out of the catalog.
    let out = match (limit, out) {
        (Some(_), None) if plan.output_url.is_none() => {
            let mut trial = plan.output_dir.as_os_str().to_owned();
            trial.push(".trial");
            Some(PathBuf::from(trial))
        }
        (_, o) => o,
    };
    let out_dir = out.clone().unwrap_or_else(|| plan.output_dir.clone());
    let spec =
        sluice_pipeline::tasks::TaskSpec::resolve(task_index, tasks, &|k| std::env::var(k).ok())
            .map_err(anyhow::Error::msg)?;
    let phase = match phase {
        None => None,
        Some(_) if spec.count < 2 => {
            bail!("--phase is a step of a task-sharded run: give --tasks N (N ≥ 2) and --task-index I")
        }
        Some(name) => Some(
            sluice_pipeline::tasks::Phase::parse(
                &name,
                &engine::phases(&plan, spec.count, shared_fs),
            )
            .map_err(anyhow::Error::msg)?,
        ),
    };
    let task = if spec.count > 1 {
        let files: Vec<(PathBuf, u64)> = plan
            .inputs
            .iter()
            .flat_map(|i| &i.files)
            .map(|(p, _)| (p.clone(), std::fs::metadata(p).map_or(0, |m| m.len())))
            .collect();
        let text =
            std::fs::read(&pipeline).with_context(|| format!("reading {}", pipeline.display()))?;
        let key = sluice_pipeline::tasks::run_key(
            &text,
            &files,
            &plan.files_read(),
            spec.count,
            &out_dir,
        );
        let work = work.unwrap_or_else(|| {
            let mut w = out_dir.as_os_str().to_owned();
            w.push(".tasks");
            PathBuf::from(w)
        });
        let work_s = work.to_string_lossy().into_owned();
        // A URL work folder (tasks without a shared filesystem): local scratch in the
        // cache, shared files under the URL.
        let (local, shared) = if sluice_pipeline::remote::is_url(&work_s) {
            (
                sluice_pipeline::remote::cache_dir()
                    .join("work")
                    .join(&key[..16]),
                Some(format!("{}/{}", work_s.trim_end_matches('/'), &key[..16])),
            )
        } else {
            (work.join(&key[..16]), None)
        };
        Some(engine::TaskRun {
            spec,
            work: local,
            run_key: key,
            timeout: std::time::Duration::from_secs(task_timeout),
            shared,
            phase,
        })
    } else {
        None
    };
    let task_no = task.as_ref().map(|t| t.spec);
    let opts = engine::RunOptions {
        threads,
        max_reject_ratio,
        output_dir: out,
        progress: progress_bar.map(|b| {
            Box::new(move |p: &engine::Progress| {
                b.set_position(p.bytes);
                b.set_message(format!("{} ({} records)", p.phase, p.records));
            }) as Box<dyn Fn(&engine::Progress) + Send + Sync>
        }),
        cancel: None,
        task,
        limit,
    };
    let result = engine::run(&plan, opts);
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    match result {
        Ok(report) => {
            let publishes = phase.is_none_or(|p| p == sluice_pipeline::tasks::Phase::Publish)
                && task_no.is_none_or(|s| s.index == 0);
            if quiet {
            } else if phase.is_some() && (!publishes || report.status.starts_with("task ")) {
                if report.totals.read > 0 {
                    eprintln!(
                        "{} ({} records read so far)",
                        report.status, report.totals.read
                    );
                } else {
                    eprintln!("{}", report.status);
                }
            } else if let Some(s) = task_no.filter(|s| s.index != 0) {
                eprintln!(
                    "task {} of {}: its part is done ({} records read); task 0 publishes {}",
                    s.index,
                    s.count,
                    report.totals.read,
                    out_dir.display()
                );
            } else {
                eprint!("{}", report.summary());
                if let Some(n) = limit {
                    eprintln!("  trial: at most the first {n} records of each input were read");
                }
                match &plan.output_url {
                    Some(url) => eprintln!("  outputs in {url}"),
                    None => eprintln!("  outputs in {}", out_dir.display()),
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e @ Error::TooManyRejects { .. }) => {
            eprintln!("error: {e}");
            Ok(ExitCode::from(2))
        }
        Err(e) => Err(e).with_context(|| format!("running {}", pipeline.display())),
    }
}
