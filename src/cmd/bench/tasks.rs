//! `sluice bench tasks`: a pipeline as 1, 2, 4, 8… local tasks (child processes meeting in a
//! work folder, as a Slurm array or a Kubernetes Indexed Job would), beside the same pipeline in
//! one process: wall time, CPU per task (task 0's share against the others'), the peak bytes the
//! work folder held, task 0's coordinated phases, and whether the outputs equal the one process
//! run's (shards, catalog and rejects byte for byte; the same records per part folder and split).

use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What one run of N tasks measured.
struct TaskRun {
    tasks: usize,
    wall: f64,
    /// CPU seconds per task, in task order (`None` where /proc could not say).
    cpu: Vec<Option<f64>>,
    /// Peak bytes under the work folder.
    work_peak: u64,
    /// Task 0's coordinated phases (report `timings.task_phase_seconds`).
    phases: BTreeMap<String, f64>,
    same: bool,
}

/// CPU seconds (user + system) of a process from `/proc/<pid>/stat`, and whether it has
/// exited (a zombie not yet reaped: its final figures are still readable).
fn proc_cpu(pid: u32) -> Option<(f64, bool)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at ") ".
    let rest = &stat[stat.rfind(") ")? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some((ticks / 100.0, f.first() == Some(&"Z")))
}

/// Bytes of every file under `dir` (a bounded walk: at most 100,000 entries).
fn tree_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    let mut seen = 0usize;
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            seen += 1;
            if seen > 100_000 {
                return total;
            }
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(t) if t.is_file() => total += e.metadata().map_or(0, |m| m.len()),
                _ => {}
            }
        }
    }
    total
}

/// Files by path, and records per part folder and split.
type Fingerprint = (BTreeMap<String, Vec<u8>>, BTreeMap<String, u64>);

/// What must not depend on the task count: the published files outside `curated/` and
/// `dropped/` (shards, catalog, rejects, LLaMA-Factory files: byte for byte), and the records
/// per part folder and split (tasks write their own Parquet/JSONL parts, so those are cut and
/// named by task).
/// Where LLaMA-Factory datasets are published.
const LF: &str = "export/llamafactory/";

fn fingerprint(out: &Path) -> Result<Fingerprint> {
    let mut files = published(out)?;
    files.retain(|k, _| !k.starts_with("curated/") && !k.starts_with("dropped/"));
    // LLaMA-Factory: one array per dataset in one process, a folder of per-task arrays in
    // tasks; compared as each dataset's records in order and the registry (file names made
    // folder-like).
    let lf: Vec<(String, Vec<u8>)> = files
        .iter()
        .filter(|(k, _)| k.starts_with(LF))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut datasets: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
    for (k, v) in lf {
        files.remove(&k);
        let rel = &k[LF.len()..];
        let mut json: serde_json::Value =
            serde_json::from_slice(&v).with_context(|| format!("reading {k}"))?;
        if rel == "dataset_info.json" {
            for e in json
                .as_object_mut()
                .into_iter()
                .flat_map(|m| m.values_mut())
            {
                let name = e["file_name"].as_str().unwrap_or_default().to_string();
                e["file_name"] = name.trim_end_matches(".json").into();
            }
            files.insert(k, serde_json::to_vec(&json)?);
            continue;
        }
        let dataset = match rel.split_once('/') {
            Some((folder, _)) => folder,
            None => rel.trim_end_matches(".json"),
        };
        if let serde_json::Value::Array(rows) = json {
            datasets
                .entry(dataset.to_string())
                .or_default()
                .extend(rows);
        }
    }
    for (name, rows) in datasets {
        files.insert(format!("{LF}{name} (records)"), serde_json::to_vec(&rows)?);
    }
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).context("the report")?)?;
    let mut rows = BTreeMap::new();
    for o in report["outputs"].as_array().into_iter().flatten() {
        let path = o["path"].as_str().unwrap_or_default();
        if let Some((dir, file)) = path.split_once('/') {
            if dir == "curated" || dir == "dropped" {
                let split = file.split(['-', '.']).next().unwrap_or_default();
                let ext = file.rsplit('.').next().unwrap_or_default();
                *rows.entry(format!("{dir}/{split}.{ext}")).or_default() +=
                    o["records"].as_u64().unwrap_or(0);
            }
        }
    }
    Ok((files, rows))
}

/// The published files (everything but the report, which holds timings).
fn published(out: &Path) -> Result<BTreeMap<String, Vec<u8>>> {
    let mut files = BTreeMap::new();
    let mut stack = vec![out.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("listing {}", d.display()))? {
            let e = e?;
            let p = e.path();
            if e.file_type()?.is_dir() {
                stack.push(p);
            } else {
                let rel = p
                    .strip_prefix(out)
                    .unwrap_or(&p)
                    .to_string_lossy()
                    .into_owned();
                // The marker of a task-sharded run names its run key.
                if rel != "report.json" && rel != sluice_pipeline::storage::RUN_MARKER {
                    files.insert(rel, std::fs::read(&p)?);
                }
            }
        }
    }
    Ok(files)
}

fn sluice(pipeline: &Path, out: &Path, threads: usize) -> Command {
    let mut c = Command::new(std::env::current_exe().unwrap_or_else(|_| "sluice".into()));
    c.arg("run")
        .arg(pipeline)
        .arg("--quiet")
        .arg("--out")
        .arg(out)
        .args(["--threads", &threads.to_string()]);
    for var in sluice_pipeline::tasks::SCHEDULER_VARS {
        c.env_remove(var);
    }
    c.stdout(Stdio::null()).stderr(Stdio::piped());
    c
}

/// Wait for every child, reading each one's CPU time once it has exited and before reaping
/// it, and the work folder's size meanwhile.
fn wait_all(mut children: Vec<Child>, work: &Path) -> Result<(Vec<Option<f64>>, u64)> {
    let mut cpu: Vec<Option<f64>> = vec![None; children.len()];
    let mut done = vec![false; children.len()];
    let mut peak = 0u64;
    let mut last_walk = Instant::now() - Duration::from_secs(1);
    while done.iter().any(|d| !d) {
        if last_walk.elapsed() >= Duration::from_millis(100) {
            peak = peak.max(tree_bytes(work));
            last_walk = Instant::now();
        }
        for (i, c) in children.iter_mut().enumerate() {
            if done[i] {
                continue;
            }
            let seen = proc_cpu(c.id());
            if let Some((secs, _)) = seen {
                cpu[i] = Some(secs);
            }
            // Reap only an exited child (or one /proc cannot show).
            if seen.is_none_or(|(_, zombie)| zombie) {
                if let Some(status) = c.try_wait()? {
                    done[i] = true;
                    if !status.success() {
                        let mut err = String::new();
                        if let Some(mut e) = c.stderr.take() {
                            use std::io::Read;
                            let _ = e.read_to_string(&mut err);
                        }
                        bail!("task {i} failed ({status}): {}", err.trim());
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok((cpu, peak))
}

/// A scratch folder, removed when dropped.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Run the benchmark.
pub fn bench_tasks(
    pipeline: &Path,
    counts: &[usize],
    threads: usize,
    slots: Option<usize>,
) -> Result<()> {
    if !pipeline.is_file() {
        bail!("{}: no such pipeline file", pipeline.display());
    }
    if counts.is_empty() || counts.iter().any(|&n| n == 0 || n > 64) {
        bail!("--tasks: task counts between 1 and 64");
    }
    let scratch =
        Scratch(std::env::temp_dir().join(format!("sluice-bench-tasks-{}", std::process::id())));
    let o = &mut std::io::stdout();
    // One process, the baseline.
    let single_out = scratch.path().join("single");
    let started = Instant::now();
    let child = sluice(pipeline, &single_out, threads)
        .spawn()
        .context("starting sluice")?;
    let (cpu, _) = wait_all(vec![child], scratch.path())?;
    let single_wall = started.elapsed().as_secs_f64();
    let single_cpu = cpu[0];
    let all = published(&single_out)?;
    let curated_bytes: u64 = all
        .iter()
        .filter(|(k, _)| k.starts_with("curated/"))
        .map(|(_, v)| v.len() as u64)
        .sum();
    let reference = fingerprint(&single_out)?;
    writeln!(
        o,
        "{}: one process on {threads} thread(s): {single_wall:.2} s wall, {} CPU; {} published files ({:.1} MB curated)",
        pipeline.display(),
        single_cpu.map_or("-".into(), |c| format!("{c:.2} s")),
        all.len(),
        curated_bytes as f64 / 1e6
    )?;
    let mut runs = Vec::new();
    for &n in counts {
        let out = scratch.path().join(format!("out-{n}"));
        let work = scratch.path().join(format!("work-{n}"));
        let started = Instant::now();
        let children = (0..n)
            .map(|i| {
                sluice(pipeline, &out, threads)
                    .args(["--tasks", &n.to_string()])
                    .args(["--task-index", &i.to_string()])
                    .arg("--work")
                    .arg(&work)
                    .spawn()
                    .context("starting a task")
            })
            .collect::<Result<Vec<_>>>()?;
        let (cpu, work_peak) = wait_all(children, &work)?;
        let wall = started.elapsed().as_secs_f64();
        let report: serde_json::Value = serde_json::from_slice(
            &std::fs::read(out.join("report.json")).context("task 0's report")?,
        )?;
        let phases = report["timings"]["task_phase_seconds"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_f64()?)))
                    .collect()
            })
            .unwrap_or_default();
        let same = fingerprint(&out)? == reference;
        runs.push(TaskRun {
            tasks: n,
            wall,
            cpu,
            work_peak,
            phases,
            same,
        });
        let _ = std::fs::remove_dir_all(&out);
    }
    writeln!(
        o,
        "tasks   wall s   task 0 CPU s   others CPU s (min-max)   task 0 / others   work peak MB   same output"
    )?;
    for r in &runs {
        let t0 = r.cpu.first().copied().flatten();
        let others: Vec<f64> = r.cpu.iter().skip(1).flatten().copied().collect();
        let (lo, hi) = others
            .iter()
            .fold((f64::MAX, 0.0f64), |(lo, hi), &c| (lo.min(c), hi.max(c)));
        let mean = others.iter().sum::<f64>() / others.len().max(1) as f64;
        writeln!(
            o,
            "{:>5} {:>8.2} {:>14} {:>24} {:>17} {:>14.1} {:>12}",
            r.tasks,
            r.wall,
            t0.map_or("-".into(), |c| format!("{c:.2}")),
            if others.is_empty() {
                "-".into()
            } else {
                format!("{mean:.2} ({lo:.2}-{hi:.2})")
            },
            match (t0, others.is_empty()) {
                (Some(c), false) => format!("{:.2}", c / mean.max(1e-9)),
                _ => "-".into(),
            },
            r.work_peak as f64 / 1e6,
            if r.same { "yes" } else { "NO" },
        )?;
    }
    writeln!(o, "task 0's coordinated phases (wall s):")?;
    // One task runs as one process: no coordinated phases.
    for r in runs.iter().filter(|r| !r.phases.is_empty()) {
        let list: Vec<String> = r
            .phases
            .iter()
            .map(|(k, v)| format!("{k} {v:.2}"))
            .collect();
        writeln!(o, "  {} tasks: {}", r.tasks, list.join(", "))?;
    }
    if let Some(slots) = slots {
        in_phases(
            pipeline,
            counts,
            threads,
            slots.max(1),
            scratch.path(),
            &reference,
            o,
        )?;
    }
    Ok(())
}

/// Each task count in phases: every phase's tasks in groups of at most `slots` processes
/// (highest index first), phase after phase, then the publish; CPU per task summed over its
/// phases (task 0's includes the publish).
fn in_phases(
    pipeline: &Path,
    counts: &[usize],
    threads: usize,
    slots: usize,
    scratch: &Path,
    reference: &Fingerprint,
    o: &mut impl Write,
) -> Result<()> {
    let listed = Command::new(std::env::current_exe().unwrap_or_else(|_| "sluice".into()))
        .arg("run")
        .arg(pipeline)
        .arg("--phases")
        .output()
        .context("listing the phases")?;
    let phases: Vec<String> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    writeln!(
        o,
        "in phases ({}), at most {slots} processes at once:",
        phases.join(" ")
    )?;
    writeln!(
        o,
        "tasks   wall s   processes   task 0 CPU s   others CPU s (min-max)   task 0 / others   work peak MB   same output"
    )?;
    for &n in counts.iter().filter(|&&n| n > 1) {
        let out = scratch.join(format!("phased-{n}"));
        let work = scratch.join(format!("phased-work-{n}"));
        let mut cpu = vec![0.0f64; n];
        let mut processes = 0;
        let mut work_peak = 0u64;
        let started = Instant::now();
        for phase in &phases {
            let tasks: Vec<usize> = if phase == "publish" {
                vec![0]
            } else {
                (0..n).rev().collect()
            };
            for group in tasks.chunks(slots) {
                let children = group
                    .iter()
                    .map(|&i| {
                        sluice(pipeline, &out, threads)
                            .args(["--tasks", &n.to_string()])
                            .args(["--task-index", &i.to_string()])
                            .args(["--phase", phase])
                            .arg("--work")
                            .arg(&work)
                            .spawn()
                            .context("starting a phase")
                    })
                    .collect::<Result<Vec<_>>>()?;
                processes += children.len();
                let (spent, peak) = wait_all(children, &work)?;
                work_peak = work_peak.max(peak);
                for (&i, c) in group.iter().zip(spent) {
                    cpu[i] += c.unwrap_or(0.0);
                }
            }
        }
        let wall = started.elapsed().as_secs_f64();
        let same = fingerprint(&out)? == *reference;
        let others = &cpu[1..];
        let mean = others.iter().sum::<f64>() / others.len() as f64;
        let (lo, hi) = others
            .iter()
            .fold((f64::MAX, 0.0f64), |(lo, hi), &c| (lo.min(c), hi.max(c)));
        writeln!(
            o,
            "{n:>5} {wall:>8.2} {processes:>11} {:>14.2} {:>24} {:>17.2} {:>14.1} {:>12}",
            cpu[0],
            format!("{mean:.2} ({lo:.2}-{hi:.2})"),
            cpu[0] / mean.max(1e-9),
            work_peak as f64 / 1e6,
            if same { "yes" } else { "NO" },
        )?;
        let _ = std::fs::remove_dir_all(&out);
        let _ = std::fs::remove_dir_all(&work);
    }
    Ok(())
}
