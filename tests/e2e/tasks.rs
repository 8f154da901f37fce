//! Task-sharded runs: the same pipeline (minhash dedup, split, mix, shards) as one process and
//! as four processes with `--task-index/--tasks` (or the schedulers' variables) publishes the
//! same samples in the same order and the same shards, also when tasks are killed mid-run and
//! re-run.

use crate::common::{output_files, read_json, repo, shared_data};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub(crate) fn pipeline(dir: &Path, data: &Path) -> PathBuf {
    let ex = repo().join("examples/data");
    let body = format!(
        r#"
name = "tasks"
seed = 7
batch_size = 64
[[inputs]]
name = "medical_qa"
paths = ["{ex}/medicalgpt/medical_sft_200_users.jsonl.gz"]
domain = "medical"
task = "medical_qa"
[[inputs]]
name = "chitchat"
paths = ["{ex}/lccc/toy_data.json"]
domain = "general"
task = "chitchat"
cjk_despace = true
[[inputs]]
name = "identity"
paths = ["{ex}/llama_factory/identity.json"]
domain = "general"
task = "identity"
[[inputs]]
name = "tool_calls"
paths = ["{ex}/llama_factory/glaive_toolcall_zh_100.json"]
domain = "general"
task = "tool_use"
[[inputs]]
name = "docs"
paths = ["{ex}/c4/*.jsonl"]
kind = "pretrain"
[[stages]]
type = "length_filter"
min_chars = 20
[[stages]]
type = "minhash"
threshold = 0.8
[[stages]]
type = "split"
ratios = {{ train = 0.9, valid = 0.1 }}
[[stages]]
type = "mix"
mode = "sft"
ratio = "1:3"
task_cap = 150
pools.domain = {{ domain = "medical" }}
pools.general = {{ domain = "general" }}
[output]
dir = "out"
formats = ["parquet", "jsonl", "llamafactory"]
[output.shards]
tokenizer = "{tok}"
template = "chatml"
seq_len = 512
shard_size = "64KiB"
"#,
        ex = ex.to_string_lossy(),
        tok = data
            .join("tokenizers/minimind/tokenizer.json")
            .to_string_lossy()
    );
    let p = dir.join("pipeline.toml");
    std::fs::write(&p, body).expect("write");
    p
}

pub(crate) fn task(
    p: &Path,
    out: &Path,
    work: &Path,
    args: &[(&str, &str)],
    env: &[(&str, &str)],
) -> Child {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sluice"));
    c.args([
        "run",
        p.to_str().expect("utf8"),
        "--quiet",
        "--task-timeout",
        "300",
    ])
    .args(["--out", out.to_str().expect("utf8")])
    .args(["--work", work.to_str().expect("utf8")]);
    for (k, v) in args {
        c.args([k, v]);
    }
    for var in sluice_pipeline::tasks::SCHEDULER_VARS {
        c.env_remove(var);
    }
    c.envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sluice")
}

pub(crate) fn succeed(c: Child) {
    let out = c.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "task failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub(crate) fn single(p: &Path, out: &Path) -> BTreeMap<String, Vec<u8>> {
    let o = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["run", p.to_str().expect("utf8"), "--quiet"])
        .args(["--out", out.to_str().expect("utf8")])
        .output()
        .expect("run");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    output_files(out)
}

/// (folder, split, extension) of a curated or dropped part: `curated/train-00002-00000.jsonl`
/// (a task's part) and `curated/train-00000.jsonl` (one process) are both
/// `("curated", "train", "jsonl")`.
fn part_key(name: &str) -> Option<(String, String, String)> {
    let (dir, file) = name.split_once('/')?;
    if dir != "curated" && dir != "dropped" {
        return None;
    }
    let (stem, ext) = file.rsplit_once('.')?;
    let split = stem.split('-').next()?;
    Some((dir.into(), split.into(), ext.into()))
}

fn lines(bytes: &[u8]) -> Vec<&[u8]> {
    bytes
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect()
}

const LF: &str = "export/llamafactory/";

/// The LLaMA-Factory export as (registry with file names made folder-like, each dataset's
/// records in order): one process writes `<dataset>.json`, tasks a folder `<dataset>/` of
/// per-task arrays read in name order.
type Registry = (serde_json::Value, BTreeMap<String, Vec<serde_json::Value>>);
fn llamafactory(m: &BTreeMap<String, Vec<u8>>) -> Registry {
    let mut info: serde_json::Value = m
        .get(&format!("{LF}dataset_info.json"))
        .map_or(serde_json::Value::Null, |b| {
            serde_json::from_slice(b).expect("dataset_info")
        });
    if let Some(entries) = info.as_object_mut() {
        for e in entries.values_mut() {
            let name = e["file_name"].as_str().expect("file_name");
            e["file_name"] = name.trim_end_matches(".json").into();
        }
    }
    let mut data: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
    for (k, v) in m {
        let Some(rel) = k.strip_prefix(LF) else {
            continue;
        };
        if rel == "dataset_info.json" {
            continue;
        }
        let dataset = match rel.split_once('/') {
            Some((folder, _)) => folder,
            None => rel.trim_end_matches(".json"),
        };
        let rows: Vec<serde_json::Value> = serde_json::from_slice(v).expect("a JSON array");
        data.entry(dataset.to_string()).or_default().extend(rows);
    }
    (info, data)
}

/// A task-sharded run's outputs against one process's. Every task writes its own Parquet and
/// JSONL parts, so:
/// - curated JSONL holds, per split, the same lines in the same order (the tasks' parts in task
///   order are the input order);
/// - dropped JSONL holds the same lines (grouped by task rather than by stage);
/// - Parquet parts hold the same rows per split (by the report's counts);
/// - LLaMA-Factory datasets hold the same records in the same order (a folder of per-task
///   arrays in place of one file);
/// - everything else (shards, catalog, rejects) is the same bytes, and the report is the same
///   but for timings and the names of the parts.
pub(crate) fn assert_equivalent(one: &BTreeMap<String, Vec<u8>>, many: &BTreeMap<String, Vec<u8>>) {
    let whole = |m: &BTreeMap<String, Vec<u8>>| -> Vec<String> {
        m.keys()
            .filter(|k| part_key(k).is_none() && k.as_str() != "report.json")
            .filter(|k| !k.starts_with(LF))
            // A task-sharded run's marker names its run key.
            .filter(|k| k.as_str() != ".sluice-run")
            .cloned()
            .collect()
    };
    assert_eq!(
        llamafactory(one),
        llamafactory(many),
        "the same LLaMA-Factory datasets"
    );
    assert_eq!(whole(one), whole(many), "the same files beside the parts");
    for k in whole(one) {
        assert!(one[&k] == many[&k], "{k} differs");
    }
    let grouped = |m: &BTreeMap<String, Vec<u8>>| {
        let mut g: BTreeMap<(String, String, String), Vec<Vec<u8>>> = BTreeMap::new();
        for (k, v) in m {
            if let Some(key) = part_key(k) {
                if key.2 == "jsonl" {
                    g.entry(key)
                        .or_default()
                        .extend(lines(v).into_iter().map(<[u8]>::to_vec));
                }
            }
        }
        g
    };
    let (a, mut b) = (grouped(one), grouped(many));
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "the same splits"
    );
    for (key, lines_one) in &a {
        let lines_many = b.get_mut(key).expect("split");
        if key.0 == "dropped" {
            let mut x = lines_one.clone();
            x.sort();
            lines_many.sort();
            assert!(&x == lines_many, "{key:?}: other dropped samples");
        } else {
            assert!(
                lines_one == lines_many,
                "{key:?}: another sequence of samples"
            );
        }
    }
    let report = |m: &BTreeMap<String, Vec<u8>>| {
        let mut v: serde_json::Value = serde_json::from_slice(&m["report.json"]).expect("report");
        let mut rows: BTreeMap<(String, String, String), u64> = BTreeMap::new();
        for o in v["outputs"].as_array().expect("outputs") {
            let path = o["path"].as_str().expect("path");
            if let Some(key) = part_key(path) {
                *rows.entry(key).or_default() += o["records"].as_u64().expect("records");
            }
        }
        v["outputs"] = serde_json::Value::Null;
        v["timings"] = serde_json::Value::Null;
        (v, rows)
    };
    let (ra, rb) = (report(one), report(many));
    assert_eq!(ra.1, rb.1, "the same rows per part");
    assert_eq!(ra.0, rb.0, "the same report");
    assert!(
        many.keys()
            .any(|k| k.starts_with("curated/") && k.contains("-00001-")),
        "task 1 wrote its own parts: {:?}",
        many.keys().collect::<Vec<_>>()
    );
}

#[test]
fn four_tasks_publish_what_one_process_does() {
    let Some(data) = shared_data() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let p = pipeline(dir.path(), &data);
    let one = single(&p, &dir.path().join("one"));
    assert!(one.keys().any(|n| n.starts_with("shards/")));
    let report = read_json(&dir.path().join("one/report.json"));
    assert!(
        report["stages"][1]["dropped"]["near_duplicate"]
            .as_u64()
            .unwrap_or(0)
            > 0
    );
    assert!(
        report["stages"][3]["dropped"]["not_selected"]
            .as_u64()
            .unwrap_or(0)
            > 0
    );

    // Tasks 0 and 1 from flags, 2 from a Slurm array (ids 5..8), 3 from a Kubernetes
    // Indexed Job: one run.
    let out = dir.path().join("four");
    let work = dir.path().join("work");
    let children = vec![
        task(
            &p,
            &out,
            &work,
            &[("--task-index", "0"), ("--tasks", "4")],
            &[],
        ),
        task(
            &p,
            &out,
            &work,
            &[("--task-index", "1"), ("--tasks", "4")],
            &[],
        ),
        task(
            &p,
            &out,
            &work,
            &[],
            &[
                ("SLURM_ARRAY_TASK_ID", "7"),
                ("SLURM_ARRAY_TASK_MIN", "5"),
                ("SLURM_ARRAY_TASK_COUNT", "4"),
            ],
        ),
        task(
            &p,
            &out,
            &work,
            &[],
            &[("JOB_COMPLETION_INDEX", "3"), ("SLUICE_TASKS", "4")],
        ),
    ];
    for c in children {
        succeed(c);
    }
    assert_equivalent(&one, &output_files(&out));
    assert!(
        std::fs::read_dir(&work).map_or(true, |mut d| d.next().is_none()),
        "task 0 removes the run's intermediate files"
    );
    // Every LLaMA-Factory dataset is a folder of JSON arrays, one per task that had samples
    // for it, which LLaMA-Factory's loader reads as one dataset.
    let lf = out.join("export/llamafactory");
    let info = read_json(&lf.join("dataset_info.json"));
    let entries = info.as_object().expect("registry");
    assert!(entries.len() >= 2, "{info}");
    for (name, e) in entries {
        let folder = lf.join(e["file_name"].as_str().expect("file_name"));
        let files: Vec<String> = std::fs::read_dir(&folder)
            .unwrap_or_else(|_| panic!("{name}: no folder {}", folder.display()))
            .flatten()
            .map(|f| f.file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            !files.is_empty() && files.iter().all(|f| f.ends_with(".json")),
            "{name}: {files:?}"
        );
    }
}

/// The file `name` of task `task` somewhere under the work folder `root` (the first found).
pub(crate) fn find_of_task(root: &Path, task: usize, name: &str) -> PathBuf {
    let of_task = format!("task-{task:05}");
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("ls").flatten() {
            let path = e.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.file_name().is_some_and(|n| n == name)
                && path.to_string_lossy().contains(&of_task)
            {
                return path;
            }
        }
    }
    panic!("no {name} of task {task} under {}", root.display())
}

/// The folder of the one run under a work folder (`<work>/<run key>`).
pub(crate) fn run_folder(work: &Path) -> PathBuf {
    std::fs::read_dir(work)
        .expect("work")
        .flatten()
        .next()
        .expect("the run's folder")
        .path()
}

fn wait_for_marker(work: &Path, phase: &str, task: usize, within: Duration) -> bool {
    let started = Instant::now();
    let name = format!("task-{task:05}.done");
    while started.elapsed() < within {
        if let Ok(runs) = std::fs::read_dir(work) {
            for r in runs.flatten() {
                if r.path().join("markers").join(phase).join(&name).is_file() {
                    return true;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn tasks_killed_mid_run_and_re_run_leave_the_outputs_unchanged() {
    let Some(data) = shared_data() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let p = pipeline(dir.path(), &data);
    let one = single(&p, &dir.path().join("one"));
    let out = dir.path().join("four");
    let work = dir.path().join("work");
    let flags = |i: &'static str| [("--task-index", i), ("--tasks", "4")];

    // Task 2 maps its part of the minhash stage, then waits for the reduce: killed there.
    let mut t2 = task(&p, &out, &work, &flags("2"), &[]);
    assert!(
        wait_for_marker(&work, "map-0", 2, Duration::from_secs(120)),
        "task 2 reached the minhash exchange"
    );
    t2.kill().expect("kill task 2");
    let _ = t2.wait();
    // Task 1 killed early, wherever it is (reading, stages, writing its exchange).
    let mut t1 = task(&p, &out, &work, &flags("1"), &[]);
    std::thread::sleep(Duration::from_millis(150));
    t1.kill().expect("kill task 1");
    let _ = t1.wait();
    assert!(
        !out.exists(),
        "nothing is published while tasks are missing"
    );

    // The scheduler re-runs the failed tasks; the others run once.
    let children = vec![
        task(&p, &out, &work, &flags("0"), &[]),
        task(&p, &out, &work, &flags("3"), &[]),
        task(&p, &out, &work, &flags("1"), &[]),
        task(&p, &out, &work, &flags("2"), &[]),
    ];
    for c in children {
        succeed(c);
    }
    assert_equivalent(&one, &output_files(&out));
}

#[test]
fn a_bad_task_spec_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("p.toml");
    std::fs::write(
        &p,
        "[[inputs]]\npaths = [\"x.jsonl\"]\n[output]\ndir = \"out\"\n",
    )
    .expect("w");
    std::fs::write(dir.path().join("x.jsonl"), "{\"text\": \"hello\"}\n").expect("w");
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args([
            "run",
            p.to_str().expect("utf8"),
            "--task-index",
            "4",
            "--tasks",
            "4",
        ])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("task 4 is not one of 4 tasks"));
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["run", p.to_str().expect("utf8")])
        .env("JOB_COMPLETION_INDEX", "1")
        .env_remove("SLUICE_TASKS")
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("SLUICE_TASKS"));
}

#[test]
fn the_slurm_array_script_runs_the_pipeline_as_four_tasks() {
    let Some(data) = shared_data() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let p = pipeline(dir.path(), &data);
    let one = single(&p, &dir.path().join("one"));
    let out = dir.path().join("array");
    let script = repo().join("deploy/slurm/sluice-array.sh");
    let children: Vec<Child> = (0..4)
        .map(|i| {
            Command::new("bash")
                .arg(&script)
                .args([
                    p.as_os_str(),
                    out.as_os_str(),
                    dir.path().join("w").as_os_str(),
                ])
                .env("SLUICE", env!("CARGO_BIN_EXE_sluice"))
                .env("SLURM_JOB_ID", "4242")
                .env("SLURM_ARRAY_TASK_ID", (10 + i).to_string())
                .env("SLURM_ARRAY_TASK_MIN", "10")
                .env("SLURM_ARRAY_TASK_COUNT", "4")
                .env("SLURM_CPUS_PER_TASK", "1")
                .env("TMPDIR", dir.path())
                .env_remove("JOB_COMPLETION_INDEX")
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn")
        })
        .collect();
    for c in children {
        succeed(c);
    }
    assert_equivalent(&one, &output_files(&out));
}

/// `sluice bench tasks` runs the pipeline as one process and as 2 tasks, reads each task's
/// CPU, and says whether the published files are the same.
#[test]
fn the_task_benchmark_compares_task_counts_with_one_process() {
    let Some(data) = shared_data() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let p = pipeline(dir.path(), &data);
    let o = crate::common::sluice(&[
        "bench",
        "tasks",
        p.to_str().expect("utf8"),
        "--tasks",
        "2",
        "--slots",
        "1",
    ]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let row = text
        .lines()
        .find(|l| l.trim_start().starts_with("2 "))
        .unwrap_or_else(|| panic!("no row for 2 tasks: {text}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols.last(), Some(&"yes"), "{text}");
    // Task 0's and task 1's CPU were read.
    let t0: f64 = cols[2].parse().unwrap_or_else(|_| panic!("{text}"));
    assert!(t0 > 0.0, "{text}");
    assert!(text.contains("finish stages["), "{text}");
    // In phases, one process at a time: the same outputs.
    let phased = text
        .split("in phases")
        .nth(1)
        .unwrap_or_else(|| panic!("no phases table: {text}"));
    let row = phased
        .lines()
        .find(|l| l.trim_start().starts_with("2 "))
        .unwrap_or_else(|| panic!("no phased row for 2 tasks: {text}"));
    assert!(row.trim_end().ends_with("yes"), "{text}");
}

/// A minhash index from an earlier run is preloaded by task 0 and read with every task's map
/// output in place: samples the index holds are dropped as duplicates, as in one process.
#[test]
fn tasks_dedup_against_an_earlier_runs_index_as_one_process_does() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ex = repo().join("examples/data");
    let lines: Vec<String> = {
        use std::io::Read;
        let mut s = String::new();
        flate2::read::GzDecoder::new(
            std::fs::File::open(ex.join("medicalgpt/medical_sft_200.jsonl.gz")).expect("open"),
        )
        .read_to_string(&mut s)
        .expect("gunzip");
        s.lines().map(str::to_string).collect()
    };
    // The first run sees 60 samples; the second 200 in four files, the first 60 again. The
    // second runs twice, as one process and as two tasks, each in a folder of its own with
    // the same pipeline file (the catalog names the run) and a copy of the first run's index.
    let base = dir.path().join("first");
    std::fs::create_dir_all(&base).expect("mkdir");
    std::fs::write(base.join("old.jsonl"), lines[..60].join("\n")).expect("write");
    let cfg = |at: &Path, files: &str| {
        let p = at.join("second.toml");
        std::fs::write(
            &p,
            format!(
                "[[inputs]]\npaths = [{files}]\n[[stages]]\ntype = \"minhash\"\nindex = \"state\"\n\
                 [output]\ndir = \"out\"\nformats = [\"jsonl\"]\n"
            ),
        )
        .expect("write");
        p
    };
    let first = cfg(&base, "\"old.jsonl\"");
    let o = crate::common::sluice(&["run", first.to_str().expect("utf8"), "--quiet"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut paths = Vec::new();
    for way in ["one", "tasks", "phases"] {
        let at = dir.path().join(way);
        std::fs::create_dir_all(at.join("state")).expect("mkdir");
        std::fs::copy(
            base.join("state/minhash.index"),
            at.join("state/minhash.index"),
        )
        .expect("copy");
        for (i, chunk) in lines.chunks(50).enumerate() {
            std::fs::write(at.join(format!("new-{i}.jsonl")), chunk.join("\n")).expect("write");
        }
        paths.push(cfg(&at, "\"new-*.jsonl\""));
    }
    let one = single(&paths[0], &dir.path().join("one/out"));
    let out = dir.path().join("tasks/out");
    let work = dir.path().join("work");
    let children: Vec<Child> = (0..2)
        .map(|i| {
            task(
                &paths[1],
                &out,
                &work,
                &[("--task-index", &i.to_string()), ("--tasks", "2")],
                &[],
            )
        })
        .collect();
    for c in children {
        succeed(c);
    }
    let many = output_files(&out);
    assert_equivalent(&one, &many);
    let report = read_json(&out.join("report.json"));
    let dups = report["stages"][0]["dropped"]["near_duplicate"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        dups >= 60,
        "the earlier run's samples are duplicates: {dups}"
    );
    assert_eq!(
        std::fs::read(dir.path().join("one/state/minhash.index")).expect("index"),
        std::fs::read(dir.path().join("tasks/state/minhash.index")).expect("index"),
        "the same index after both"
    );
    // In phases: the reduce's last task finishes and leaves the next index for the process
    // that publishes, which commits it.
    let out = dir.path().join("phases/out");
    let work = dir.path().join("phases-work");
    for phase in ["map-0", "reduce-0", "write", "shards", "publish"] {
        for i in [1, 0] {
            let o = Command::new(env!("CARGO_BIN_EXE_sluice"))
                .args(["run", paths[2].to_str().expect("utf8"), "--quiet"])
                .args(["--out", out.to_str().expect("utf8")])
                .args(["--work", work.to_str().expect("utf8")])
                .args(["--task-index", &i.to_string(), "--tasks", "2"])
                .args(["--phase", phase])
                .output()
                .expect("run");
            if phase == "shards" {
                // No shards in this pipeline: no such phase.
                assert!(!o.status.success());
                assert!(
                    String::from_utf8_lossy(&o.stderr).contains("map-0 reduce-0 write publish"),
                    "{}",
                    String::from_utf8_lossy(&o.stderr)
                );
                continue;
            }
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        }
    }
    assert_equivalent(&one, &output_files(&out));
    assert_eq!(
        std::fs::read(dir.path().join("one/state/minhash.index")).expect("index"),
        std::fs::read(dir.path().join("phases/state/minhash.index")).expect("index"),
        "the same index in phases"
    );
}

/// Regression (attacker walk of #21): the shared work folder may be writable by a less trusted
/// party. What task 1 left there is tampered with before task 0 merges; task 0 refuses, and a
/// secret outside the work folder never reaches an output.
#[cfg(unix)]
#[test]
fn task_zero_refuses_a_tampered_work_folder() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ex = repo().join("examples/data");
    let secret_dir = dir.path().join("secret");
    std::fs::create_dir_all(&secret_dir).expect("mkdir");
    let token = "SECRET-TOKEN-5b1f0c";
    std::fs::write(secret_dir.join("SECRET.txt"), format!("{token}\n")).expect("write");
    let p = dir.path().join("p.toml");
    std::fs::write(
        &p,
        format!(
            "[[inputs]]\npaths = [\"{}\", \"{}\"]\n[[stages]]\ntype = \"length_filter\"\nmin_chars = 5\n\
             [output]\ndir = \"out\"\nformats = [\"jsonl\"]\n[output.shards]\ntokenizer = \"{}\"\ntemplate = \"chatml\"\n",
            ex.join("c4/c4_demo_40.jsonl").display(),
            ex.join("llama_factory/identity.json").display(),
            ex.join("tokenizers/minimind/tokenizer.json").display()
        ),
    )
    .expect("write");
    type Tamper = Box<dyn Fn(&Path)>;
    let secret = secret_dir.join("SECRET.txt");
    let tampers: Vec<(&str, Tamper, &str)> = vec![
        (
            "a marker naming a folder outside the work folder",
            Box::new({
                let secret_dir = secret_dir.clone();
                move |work: &Path| {
                    let marker = find_of_task(work, 1, "task-00001.done");
                    let text = std::fs::read_to_string(&marker).expect("marker");
                    let mut v: serde_json::Value = serde_json::from_str(&text).expect("json");
                    v["payload"]["dir"] = serde_json::json!(secret_dir.to_string_lossy());
                    std::fs::write(&marker, v.to_string()).expect("write");
                }
            }),
            "not one of its attempt folders",
        ),
        (
            "rejects.jsonl linked to a file outside",
            Box::new({
                let secret = secret.clone();
                move |work: &Path| {
                    let rejects = find_of_task(work, 1, "rejects.jsonl");
                    std::fs::remove_file(&rejects).expect("rm");
                    std::os::unix::fs::symlink(&secret, &rejects).expect("symlink");
                }
            }),
            "not a regular file",
        ),
        (
            "task 1 naming task 0's part as its own",
            Box::new(|work: &Path| {
                let partial = find_of_task(work, 1, "partial.json");
                let text = std::fs::read_to_string(&partial).expect("partial");
                let mut v: serde_json::Value = serde_json::from_str(&text).expect("json");
                let outputs = v["outputs"].as_array_mut().expect("outputs");
                let first = outputs[0]["path"].as_str().expect("path").to_string();
                outputs[0]["path"] = serde_json::json!(first.replace("-00001-", "-00000-"));
                std::fs::write(&partial, v.to_string()).expect("write");
            }),
            "not one of its parts",
        ),
    ];
    for (i, (what, tamper, says)) in tampers.iter().enumerate() {
        let out = dir.path().join(format!("out-{i}"));
        let work = dir.path().join(format!("work-{i}"));
        let start = |index: &str| {
            task(
                &p,
                &out,
                &work,
                &[("--task-index", index), ("--tasks", "2")],
                &[],
            )
        };
        // Task 1 does its part and waits for task 0 (the shards are written by both).
        let mut t1 = start("1");
        assert!(
            wait_for_marker(&work, "done", 1, Duration::from_secs(120)),
            "{what}: task 1 is done"
        );
        tamper(&work);
        let t0 = start("0").wait_with_output().expect("wait");
        let _ = t1.kill();
        let _ = t1.wait();
        let err = String::from_utf8_lossy(&t0.stderr);
        assert!(!t0.status.success(), "{what}: task 0 must refuse");
        assert!(err.contains(says), "{what}: {err}");
        assert!(!err.contains("panicked"), "{what}: {err}");
        // Everything task 0 published or staged (the work folder holds the planted link).
        for (name, bytes) in output_files(dir.path()) {
            if !name.starts_with("secret/") && !name.starts_with("work-") {
                assert!(
                    !String::from_utf8_lossy(&bytes).contains(token),
                    "{what}: the secret reached {name}"
                );
            }
        }
        assert_eq!(
            std::fs::read_to_string(&secret).expect("secret"),
            format!("{token}\n"),
            "{what}: the secret file is untouched"
        );
    }
}
