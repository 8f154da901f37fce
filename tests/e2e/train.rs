//! The pipeline's shards feed the bundled trainer: real dialogues and documents tokenized with
//! the minimind tokenizer, split into train/valid, packed; a tiny model trains on them through
//! `sluice train run`, is interrupted and resumed to the same bytes, and `sluice train
//! estimate` answers the practitioners' rule.

use crate::common::{pipeline, read_jsonl, repo, run_ok, shared_data, sluice};
use std::path::Path;

fn shards(dir: &Path, tokenizer: &Path) -> std::path::PathBuf {
    let ex = repo().join("examples/data");
    let body = format!(
        r#"
        seed = 3
        [[inputs]]
        name = "chat"
        paths = ["{ex}/lccc/toy_data.json"]
        cjk_despace = true
        [[inputs]]
        name = "medical"
        paths = ["{ex}/medicalgpt/medical_sft_200.jsonl.gz"]
        [[inputs]]
        name = "docs"
        paths = ["{ex}/c4/*.jsonl"]
        kind = "pretrain"
        [[stages]]
        type = "split"
        ratios = {{ train = 0.9, valid = 0.1 }}
        [output]
        dir = "out"
        formats = ["jsonl"]
        [output.shards]
        tokenizer = "{tok}"
        template = "chatml"
        seq_len = 256
        shard_size = "64KiB"
        "#,
        ex = ex.to_string_lossy(),
        tok = tokenizer.to_string_lossy()
    );
    let cfg = pipeline(dir, &body);
    let out = dir.join("out");
    run_ok(&cfg, &["--out", out.to_str().expect("utf8")]);
    out.join("shards")
}

fn train_file(dir: &Path, shards: &Path, name: &str) -> std::path::PathBuf {
    let model = repo().join("examples/models/tiny/config.json");
    let body = format!(
        r#"
output = "{name}"
[model]
config = "{model}"
[data]
shards = "{shards}"
seq_len = 256
batch_size = 4
[optim]
lr = 3e-3
warmup_steps = 4
[train]
steps = 24
seed = 1
device = "cpu"
eval_every = 8
checkpoint_every = 8
"#,
        model = model.to_string_lossy(),
        shards = shards.to_string_lossy()
    );
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(&p, body).expect("write");
    p
}

fn train(args: &[&str]) -> String {
    let mut all = vec!["train", "run"];
    all.extend_from_slice(args);
    let out = sluice(&all);
    assert!(
        out.status.success(),
        "sluice train run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn pipeline_shards_train_a_model_that_learns_and_resumes_exactly() {
    let Some(data) = shared_data() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let shards = shards(dir.path(), &data.join("tokenizers/minimind/tokenizer.json"));
    let manifest = sluice_shards::Manifest::load(&shards).expect("manifest");
    assert!(manifest.splits.contains_key("valid"));
    // Regression: the manifest named the tokenizer relative to the folder the run started in,
    // so training from elsewhere saved a model without tokenizer.json. It travels with the
    // shards now.
    assert_eq!(manifest.tokenizer.source.as_deref(), Some("tokenizer.json"));
    assert!(shards.join("tokenizer.json").is_file());

    let straight = train_file(dir.path(), &shards, "straight");
    let stdout = train(&[straight.to_str().expect("utf8")]);
    assert!(stdout.contains("final model"), "{stdout}");
    assert!(
        dir.path().join("straight/final/tokenizer.json").is_file(),
        "the shards' tokenizer travels with the model"
    );
    let metrics = read_jsonl(&dir.path().join("straight/metrics.jsonl"));
    let losses: Vec<f64> = metrics
        .iter()
        .filter_map(|m| m.get("loss").and_then(|l| l.as_f64()))
        .collect();
    assert_eq!(losses.len(), 24);
    // A fresh model predicts uniformly over 6,400 ids: ln 6400 ≈ 8.76.
    assert!(
        (losses[0] - 6400f64.ln()).abs() < 0.3,
        "first loss {}",
        losses[0]
    );
    // The split (by sample id; ids include the absolute input paths here) changes with the
    // checkout's location, and the loss curve with it: ask for a clear fall, not a figure.
    let tail = losses[20..].iter().sum::<f64>() / 4.0;
    assert!(
        tail < losses[0] - 1.0,
        "loss {} -> {tail}: did not learn",
        losses[0]
    );
    let valid: Vec<f64> = metrics
        .iter()
        .filter_map(|m| m.get("valid_loss").and_then(|l| l.as_f64()))
        .collect();
    assert_eq!(valid.len(), 3);
    assert!(valid[2] < valid[0], "validation loss falls: {valid:?}");
    // report.html beside the metrics: the curves and the run's figures.
    let page =
        std::fs::read_to_string(dir.path().join("straight/report.html")).expect("report.html");
    assert_eq!(
        page.matches("<svg").count(),
        3,
        "loss, learning rate, gradient norm"
    );
    let best = valid.iter().copied().fold(f64::MAX, f64::min);
    assert!(
        page.contains(&format!(
            "<td>24</td><td>{:.4}</td><td>{best:.4}",
            losses[23]
        )),
        "{page}"
    );
    assert!(!page.contains("<script"));

    // Interrupted at step 12 (after the step-8 checkpoint), then resumed.
    let resumed = train_file(dir.path(), &shards, "resumed");
    let r = resumed.to_str().expect("utf8");
    let stdout = train(&[r, "--until", "12"]);
    assert!(stdout.contains("resume with --resume"), "{stdout}");
    let again = sluice(&["train", "run", r]);
    assert!(
        !again.status.success(),
        "a fresh start over checkpoints is refused"
    );
    assert!(String::from_utf8_lossy(&again.stderr).contains("--resume"));
    train(&[r, "--resume"]);
    let a = std::fs::read(dir.path().join("straight/final/model.safetensors")).expect("a");
    let b = std::fs::read(dir.path().join("resumed/final/model.safetensors")).expect("b");
    assert!(a == b, "a resumed run ends with the same weights");
}

#[test]
fn estimate_follows_the_16_to_20_n_gb_rule() {
    let out = sluice(&["train", "estimate", "--params", "7b", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let gb = v["estimate"]["total"].as_f64().expect("total") / 1e9;
    assert!((16.0 * 7.0..=20.0 * 7.0).contains(&gb), "{gb} GB");
    let lora = sluice(&[
        "train", "estimate", "--params", "7b", "--method", "lora", "--json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&lora.stdout).expect("json");
    assert!(v["estimate"]["total"].as_f64().expect("total") / 1e9 < 24.0);
    let bad = sluice(&["train", "estimate", "--params", "seven"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--params"));
}

#[test]
fn a_train_file_with_mistakes_lists_them_all() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("bad.toml");
    std::fs::write(
        &p,
        "output = \"o\"\n[model]\n[data]\nshards = \"s\"\nbatch_size = 0\n[train]\nsteps = 0\nprecision = \"fp8\"\n",
    )
    .expect("write");
    let out = sluice(&["train", "run", p.to_str().expect("utf8")]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for part in ["model:", "batch_size", "train.steps", "precision"] {
        assert!(err.contains(part), "{part} missing from: {err}");
    }
}

/// `bench train` with `--ranks 2` starts two `train run` processes that split each batch and
/// sum their gradients over loopback: their first timed step trains on the same sequences as
/// the one-process run, so the losses agree. With `--checkpointing` both paths recompute layers.
#[test]
fn bench_train_times_data_parallel_ranks_on_the_same_batches() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().join("bench");
    let out = sluice(&[
        "bench",
        "train",
        "--dir",
        d.to_str().expect("utf8"),
        "--hidden",
        "32",
        "--layers",
        "2",
        "--heads",
        "4",
        "--kv-heads",
        "2",
        "--vocab",
        "64",
        "--seq-len",
        "16",
        "--batch",
        "4",
        "--steps",
        "3",
        "--ranks",
        "2",
        "--checkpointing",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find(|l| l.contains("2 ranks x"))
        .unwrap_or_else(|| panic!("no ranks line in {stdout}"));
    let loss = |tag: &str| -> f64 {
        let at = line.find(tag).unwrap_or_else(|| panic!("{tag} in {line}")) + tag.len();
        line[at..]
            .split([' ', ')'])
            .find(|w| !w.is_empty())
            .and_then(|w| w.parse().ok())
            .unwrap_or_else(|| panic!("a number after {tag} in {line}"))
    };
    let (ranks, single) = (loss("step 3 loss "), loss("one process: "));
    assert!(
        (ranks - single).abs() < 1e-3,
        "two ranks trained other batches: {line}"
    );
    assert!(d.join("ranks-2/out/rank-1/metrics.jsonl").is_file());
    // Bad values are refused before any timing, each named.
    for (args, says) in [
        (
            vec!["--ranks", "0"],
            "--accum-threads and --ranks must be at least 1",
        ),
        (
            vec!["--ranks", "3"],
            "--batch 4 does not split into --ranks 3",
        ),
        (
            vec!["--accum-threads", "3"],
            "does not split into --accum-threads 3",
        ),
        (vec!["--accum-threads", "2", "--ranks", "2"], "not both"),
    ] {
        let mut all = vec!["bench", "train", "--dir", d.to_str().expect("utf8")];
        all.extend(args.iter().copied());
        let out = sluice(&all);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains(says),
            "{args:?}: {stderr}"
        );
        assert!(
            String::from_utf8_lossy(&out.stdout).is_empty(),
            "{args:?} timed something"
        );
    }
}
