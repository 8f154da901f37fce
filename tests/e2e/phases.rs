//! Task-sharded runs in phases (`sluice run --phase`): a scheduler's dependent job arrays on
//! fewer slots than tasks, the Slurm chain and the Argo example, and what schedulers and a
//! less trusted work folder do to phases. Each run is checked against one process.

use crate::common::shared_data;
use crate::common::{output_files, repo};
use crate::tasks::{assert_equivalent, find_of_task, pipeline, run_folder, single, task};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// `sluice run P --phase PHASE` for task `i` of `n` (not quiet: what the phase did, or why it
/// failed, is on stderr), waiting at most `patience` seconds for markers.
fn phase_cmd(
    p: &Path,
    out: &Path,
    work: &Path,
    (i, n): (usize, usize),
    phase: &str,
    patience: u64,
) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sluice"));
    c.args(["run", p.to_str().expect("utf8")])
        .args(["--out", out.to_str().expect("utf8")])
        .args(["--work", work.to_str().expect("utf8")])
        .args(["--task-index", &i.to_string(), "--tasks", &n.to_string()])
        .args(["--phase", phase, "--task-timeout", &patience.to_string()]);
    c
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
                let o = phase_cmd(p, out, work, (i, 4), &phase, 300)
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
    let early = phase_cmd(&p, &out, &work, (1, 4), "reduce-0", 1)
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
    // With the task count a script has at hand (no task index): the same list (regression of
    // the newcomer walk: clap asked for --task-index).
    let with_count = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .current_dir(repo())
        .args(["run", "examples/mix_sft.toml", "--phases", "--tasks", "8"])
        .args(["--work", "s3://curated/sluice-work"])
        .output()
        .expect("run");
    assert!(
        with_count.status.success(),
        "{}",
        String::from_utf8_lossy(&with_count.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&with_count.stdout), listed);
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
        phase_cmd(&p, &out, &work, (i, 2), phase, 2)
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
        phase_cmd(&p, &out, &work, (i, 2), phase, 2)
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
    let first = phase_cmd(&p, &out, &work, (0, 2), "publish", 2)
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
