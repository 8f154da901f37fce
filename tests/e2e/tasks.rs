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

fn task(p: &Path, out: &Path, work: &Path, args: &[(&str, &str)], env: &[(&str, &str)]) -> Child {
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

fn succeed(c: Child) {
    let out = c.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "task failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn single(p: &Path, out: &Path) -> BTreeMap<String, Vec<u8>> {
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
fn find_of_task(root: &Path, task: usize, name: &str) -> PathBuf {
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
fn run_folder(work: &Path) -> PathBuf {
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

/// Run `jobs` (task index, phase) through `slots` workers, each taking the next job when its
/// last one ended: a job array throttled to fewer slots than tasks (`--array=0-3%2`).
fn throttled(
    p: &Path,
    out: &Path,
    work: &Path,
    jobs: Vec<(usize, String)>,
    slots: usize,
) -> Vec<String> {
    let queue = std::sync::Mutex::new(jobs.into_iter());
    let said = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..slots {
            s.spawn(|| loop {
                let next = queue.lock().expect("queue").next();
                let Some((i, phase)) = next else { break };
                // Not quiet: what the phase did is on stderr.
                let o = Command::new(env!("CARGO_BIN_EXE_sluice"))
                    .args(["run", p.to_str().expect("utf8")])
                    .args(["--out", out.to_str().expect("utf8")])
                    .args(["--work", work.to_str().expect("utf8")])
                    .args(["--task-index", &i.to_string(), "--tasks", "4"])
                    .args(["--phase", &phase, "--task-timeout", "300"])
                    .output()
                    .expect("run");
                let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
                assert!(o.status.success(), "task {i} phase {phase}: {stderr}");
                said.lock().expect("said").push(stderr);
            });
        }
    });
    said.into_inner().expect("said")
}

/// A scheduler's pipeline of dependent job arrays: every phase runs as an array of 4 tasks on
/// 2 slots (highest index first: the run must not depend on task 0 going first), each phase
/// after the last one ended; then one process publishes. The run equals one process's.
#[test]
fn four_tasks_run_as_phases_on_two_slots_publish_what_one_process_does() {
    let Some(data) = shared_data() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let p = pipeline(dir.path(), &data);
    let one = single(&p, &dir.path().join("one"));
    let out = dir.path().join("phased");
    let work = dir.path().join("work");
    let listed = crate::common::sluice(&["run", p.to_str().expect("utf8"), "--phases"]);
    assert!(listed.status.success());
    let phases: Vec<String> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(
        phases,
        [
            "map-0", "reduce-0", "map-1", "reduce-1", "map-2", "reduce-2", "write", "shards",
            "publish"
        ]
    );

    // Out of order: reduce before any map fails soon and says what is missing.
    let early = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["run", p.to_str().expect("utf8"), "--quiet"])
        .args(["--out", out.to_str().expect("utf8")])
        .args(["--work", work.to_str().expect("utf8")])
        .args(["--task-index", "1", "--tasks", "4", "--phase", "reduce-0"])
        .args(["--task-timeout", "1"])
        .output()
        .expect("run");
    let said = String::from_utf8_lossy(&early.stderr);
    assert!(!early.status.success());
    assert!(
        said.contains("map-0") && said.contains("run the phases in order"),
        "{said}"
    );

    for phase in phases.iter().filter(|p| *p != "publish") {
        if phase == "map-1" {
            // An attempt killed wherever it is: the array runs the task again.
            let mut t = task(
                &p,
                &out,
                &work,
                &[("--task-index", "2"), ("--tasks", "4"), ("--phase", phase)],
                &[],
            );
            std::thread::sleep(Duration::from_millis(60));
            let _ = t.kill();
            let _ = t.wait();
        }
        let jobs = (0..4).rev().map(|i| (i, phase.clone())).collect();
        throttled(&p, &out, &work, jobs, 2);
        assert!(
            !out.exists(),
            "nothing is published before the publish phase"
        );
        if phase == "reduce-0" {
            // The task that finished the stage died before publishing the decisions: any
            // task's reduce, run again, publishes them.
            let run = run_folder(&work);
            std::fs::remove_dir_all(run.join("markers/reduce-0")).expect("rm marker");
            std::fs::remove_file(run.join("reduce-0/decisions.json")).expect("rm decisions");
            let said = throttled(&p, &out, &work, vec![(3, phase.clone())], 1);
            assert!(said[0].contains("published the decisions"), "{said:?}");
            assert!(run.join("reduce-0/decisions.json").is_file());
        }
    }
    // A phase submitted twice (a requeued job) does nothing the second time.
    let again = throttled(&p, &out, &work, vec![(2, "map-1".into())], 1);
    assert!(again[0].contains("phase map-1 done already"), "{again:?}");
    // Publish: task 0 publishes, any other index has nothing to do.
    let said = throttled(
        &p,
        &out,
        &work,
        vec![(1, "publish".into()), (0, "publish".into())],
        1,
    );
    assert!(said[0].contains("nothing to do"), "{said:?}");
    assert_equivalent(&one, &output_files(&out));
    assert!(
        std::fs::read_dir(&work).map_or(true, |mut d| d.next().is_none()),
        "the publishing process removes the run's intermediate files"
    );
}

/// A stand-in for `sbatch`: runs the array's elements at once, at most `%N` at a time and
/// highest index first, and logs each job with its dependency.
const FAKE_SBATCH: &str = r#"#!/bin/bash
set -u
log="$FAKE_SLURM_LOG"
id=$(( $(wc -l < "$log") + 100 ))
array="" dep="none"
while [ $# -gt 0 ]; do
  case "$1" in
    --array=*) array=${1#--array=} ;;
    --dependency=*) dep=${1#--dependency=} ;;
    --*) ;;
    *) break ;;
  esac
  shift
done
script=$1; shift
range=${array%%%*}; slots=${array#*%}; [ "$slots" = "$array" ] && slots=1
lo=${range%-*}; hi=${range#*-}
echo "$id $SLUICE_PHASE array=$array after=$dep" >> "$log"
seq "$hi" -1 "$lo" | xargs -P "$slots" -I{} env SLURM_JOB_ID="$id" SLURM_ARRAY_TASK_ID={} \
  SLURM_ARRAY_TASK_MIN="$lo" SLURM_ARRAY_TASK_COUNT=$(( hi - lo + 1 )) \
  bash "$script" "$@" >> "$log.out" 2>&1 || { echo "job $id failed" >&2; exit 1; }
echo "$id;cluster"
"#;

/// `deploy/slurm/sluice-phases.sh` submits one array per phase, each after the last, with 4
/// tasks on 2 slots; the run equals one process's.
#[test]
fn the_slurm_phase_chain_runs_four_tasks_on_two_slots() {
    let Some(data) = shared_data() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let p = pipeline(dir.path(), &data);
    let one = single(&p, &dir.path().join("one"));
    let sbatch = dir.path().join("sbatch");
    std::fs::write(&sbatch, FAKE_SBATCH).expect("write");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&sbatch, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let log = dir.path().join("slurm.log");
    std::fs::write(&log, "").expect("write");
    let out = dir.path().join("chain");
    let o = Command::new("bash")
        .arg(repo().join("deploy/slurm/sluice-phases.sh"))
        .args([
            p.as_os_str(),
            out.as_os_str(),
            dir.path().join("w").as_os_str(),
        ])
        .args(["4", "2"])
        .env("SLUICE", env!("CARGO_BIN_EXE_sluice"))
        .env("SBATCH", &sbatch)
        .env("FAKE_SLURM_LOG", &log)
        .env("TMPDIR", dir.path())
        .env("SLURM_CPUS_PER_TASK", "1")
        .output()
        .expect("run");
    let logged = std::fs::read_to_string(&log).expect("log");
    assert!(
        o.status.success(),
        "{}{}\n{logged}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
        std::fs::read_to_string(log.with_extension("log.out")).unwrap_or_default()
    );
    let jobs: Vec<Vec<&str>> = logged
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    let phases: Vec<&str> = jobs.iter().map(|j| j[1]).collect();
    assert_eq!(
        phases,
        [
            "map-0", "reduce-0", "map-1", "reduce-1", "map-2", "reduce-2", "write", "shards",
            "publish"
        ]
    );
    for (k, j) in jobs.iter().enumerate() {
        let array = if j[1] == "publish" { "0" } else { "0-3%2" };
        assert_eq!(j[2], format!("array={array}"));
        let after = match k {
            0 => "after=none".to_string(),
            _ => format!("after=afterok:{}", jobs[k - 1][0]),
        };
        assert_eq!(j[3], after, "each phase waits for the one before");
    }
    assert_equivalent(&one, &output_files(&out));
}

/// The Argo example lists, as its steps, the phases `sluice run --phases` gives for the
/// pipeline it names (examples/mix_sft.toml, work folder in S3).
#[test]
fn the_argo_example_runs_the_phases_of_its_pipeline() {
    let text = std::fs::read_to_string(repo().join("deploy/kubernetes/sluice-argo-phases.yaml"))
        .expect("read");
    let steps: Vec<&str> = text
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("- - name: "))
        .filter(|name| *name != "task")
        .collect();
    let o = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .current_dir(repo())
        .args(["run", "examples/mix_sft.toml", "--phases"])
        .args(["--work", "s3://curated/sluice-work"])
        .output()
        .expect("run");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let listed = String::from_utf8_lossy(&o.stdout);
    assert_eq!(steps, listed.lines().collect::<Vec<_>>());
}

/// What a map phase leaves in the shared work folder for the next phase of its task is
/// checked before use: a spill line past the record limit and a checkpoint that is a link to
/// another file are refused, and nothing is published.
#[test]
fn a_phase_refuses_a_tampered_resume_folder() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ex = repo().join("examples/data");
    let p = dir.path().join("p.toml");
    std::fs::write(
        &p,
        format!(
            "max_record_bytes = 100000\n[[inputs]]\npaths = [\"{}\", \"{}\"]\n\
             [[stages]]\ntype = \"minhash\"\n[output]\ndir = \"out\"\nformats = [\"jsonl\"]\n",
            ex.join("medicalgpt/medical_sft_200.jsonl.gz").display(),
            ex.join("llama_factory/identity.json").display()
        ),
    )
    .expect("write");
    let out = dir.path().join("out");
    let work = dir.path().join("work");
    let step = |i: usize, phase: &str| {
        Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["run", p.to_str().expect("utf8"), "--quiet"])
            .args(["--out", out.to_str().expect("utf8")])
            .args(["--work", work.to_str().expect("utf8")])
            .args(["--task-index", &i.to_string(), "--tasks", "2"])
            .args(["--phase", phase, "--task-timeout", "2"])
            .output()
            .expect("run")
    };
    for phase in ["map-0", "reduce-0"] {
        for i in 0..2 {
            let o = step(i, phase);
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        }
    }
    let resume = |task: usize| -> PathBuf {
        find_of_task(&run_folder(&work), task, "checkpoint.json")
            .parent()
            .expect("resume folder")
            .to_path_buf()
    };
    // Task 1's map marker swapped for a link to an endless file: no marker, refused at once.
    #[cfg(unix)]
    {
        let marker = run_folder(&work).join("markers/map-0/task-00001.done");
        let saved = std::fs::read(&marker).expect("read");
        std::fs::remove_file(&marker).expect("rm");
        std::os::unix::fs::symlink("/dev/zero", &marker).expect("symlink");
        let o = step(1, "write");
        assert!(!o.status.success());
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("has not run phase map-0"),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        std::fs::remove_file(&marker).expect("rm");
        std::fs::write(&marker, saved).expect("restore");
    }
    // Task 1: a line of 2 MB without an end.
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(resume(1).join("spill-0.jsonl"))
            .expect("open");
        f.write_all(b"0\t").expect("write");
        f.write_all(&vec![b'x'; 2 << 20]).expect("write");
    }
    let o = step(1, "write");
    let said = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(said.contains("bytes: refused"), "{said}");
    // Task 0: its checkpoint swapped for a link to a file outside.
    #[cfg(unix)]
    {
        let secret = dir.path().join("secret.json");
        std::fs::write(&secret, "{}").expect("write");
        let cp = resume(0).join("checkpoint.json");
        std::fs::remove_file(&cp).expect("rm");
        std::os::unix::fs::symlink(&secret, &cp).expect("symlink");
        let o = step(0, "write");
        let said = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success());
        assert!(said.contains("not a regular file"), "{said}");
    }
    assert!(!out.exists(), "nothing is published");
}

/// What schedulers do to phases, beyond running them once in order (attacker walk of the
/// phases): a publish that failed half way is run again; a duplicate of a running phase or
/// publish is refused while the first holds its lock; a publish run again after it succeeded
/// does nothing; a tokenizer edited between phases makes another run instead of mixing two
/// tokenizations; counts that do not reconcile are not published.
#[test]
fn phases_survive_failed_publishes_duplicates_reruns_and_edits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ex = repo().join("examples/data");
    let tok = dir.path().join("tokenizer.json");
    std::fs::copy(ex.join("tokenizers/minimind/tokenizer.json"), &tok).expect("copy");
    let p = dir.path().join("p.toml");
    std::fs::write(
        &p,
        format!(
            "[[inputs]]\npaths = [\"{}\", \"{}\"]\n[[stages]]\ntype = \"minhash\"\n\
             [output]\ndir = \"out\"\nformats = [\"jsonl\"]\n\
             [output.shards]\ntokenizer = \"tokenizer.json\"\ntemplate = \"chatml\"\n",
            ex.join("medicalgpt/medical_sft_200.jsonl.gz").display(),
            ex.join("llama_factory/identity.json").display()
        ),
    )
    .expect("write");
    let one = single(&p, &dir.path().join("one"));
    let out = dir.path().join("out");
    let work = dir.path().join("work");
    let step = |i: usize, phase: &str| {
        Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["run", p.to_str().expect("utf8")])
            .args(["--out", out.to_str().expect("utf8")])
            .args(["--work", work.to_str().expect("utf8")])
            .args(["--task-index", &i.to_string(), "--tasks", "2"])
            .args(["--phase", phase, "--task-timeout", "2"])
            .output()
            .expect("run")
    };
    let ok = |o: std::process::Output| {
        let said = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(o.status.success(), "{said}");
        said
    };
    let fails = |o: std::process::Output, says: &str| {
        let said = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(!o.status.success(), "must fail: {said}");
        assert!(said.contains(says), "{says:?} not in: {said}");
        assert!(!said.contains("panicked"), "{said}");
    };
    for i in 0..2 {
        ok(step(i, "map-0"));
    }
    let run = run_folder(&work);
    // The tokenizer edited between phases: another run, which says why it finds no map.
    let original = std::fs::read(&tok).expect("read");
    let mut edited = original.clone();
    edited.push(b'\n');
    std::fs::write(&tok, &edited).expect("edit");
    fails(step(0, "reduce-0"), "other run(s)");
    std::fs::write(&tok, &original).expect("restore");
    for other in std::fs::read_dir(&work).expect("ls").flatten() {
        if other.path() != run {
            std::fs::remove_dir_all(other.path()).expect("rm the other run's folder");
        }
    }
    // A duplicate of a phase while the first runs: refused (the test holds task 1's lock).
    {
        let lock = std::fs::File::create(run.join("task-00001.lock")).expect("lock file");
        lock.try_lock().expect("lock");
        fails(
            step(1, "reduce-0"),
            "another process is running a phase of task 1",
        );
    }
    for phase in ["reduce-0", "write", "shards"] {
        for i in 0..2 {
            ok(step(i, phase));
        }
    }
    // A publish that fails half way (task 1's list of shards is missing once its parts are
    // in the staging folder), then runs again: the parts are still there.
    let list = find_of_task(&run, 1, "shards.json");
    let saved = std::fs::read(&list).expect("read");
    std::fs::remove_file(&list).expect("rm");
    fails(step(0, "publish"), "shards.json");
    std::fs::write(&list, &saved).expect("restore");
    // Counts that do not reconcile are not published.
    let partial = find_of_task(&run, 1, "partial.json");
    let text = std::fs::read_to_string(&partial).expect("read");
    let mut v: serde_json::Value = serde_json::from_str(&text).expect("json");
    let read = v["tally"]["inputs"][0]["read"].as_u64().expect("read");
    v["tally"]["inputs"][0]["read"] = (read + 1000).into();
    std::fs::write(&partial, v.to_string()).expect("write");
    fails(step(0, "publish"), "refused");
    std::fs::write(&partial, &text).expect("restore");
    // A second publish while one runs: refused.
    {
        let lock = std::fs::File::create(run.join("publish.lock")).expect("lock file");
        lock.try_lock().expect("lock");
        fails(step(0, "publish"), "another process is publishing this run");
    }
    // Two publishes 20 ms apart (a requeue racing the first): one publishes, the other is
    // refused or finds the run published; never a run without its parts. (The lock used to
    // be dropped before the run was in place.)
    let first = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["run", p.to_str().expect("utf8"), "--quiet"])
        .args(["--out", out.to_str().expect("utf8")])
        .args(["--work", work.to_str().expect("utf8")])
        .args(["--task-index", "0", "--tasks", "2", "--phase", "publish"])
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    std::thread::sleep(Duration::from_millis(20));
    let second = step(0, "publish");
    let first = first.wait_with_output().expect("wait");
    for o in [&first, &second] {
        let said = String::from_utf8_lossy(&o.stderr);
        assert!(
            o.status.success() || said.contains("another process is publishing"),
            "{said}"
        );
    }
    assert!(first.status.success() || second.status.success());
    assert_equivalent(&one, &output_files(&out));
    // Run again after it succeeded (a requeued job): nothing to do, and nothing left behind.
    let said = ok(step(0, "publish"));
    assert!(said.contains("holds this run already"), "{said}");
    assert!(
        std::fs::read_dir(&work).map_or(true, |mut d| d.next().is_none()),
        "no work files left"
    );
    assert_equivalent(&one, &output_files(&out));
}
