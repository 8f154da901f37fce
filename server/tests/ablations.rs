//! `POST /v1/ablations` as an attacker meets it: every path the pipeline or the train file
//! names is confined (a secret is planted outside the data root and must never come back),
//! what the service sets itself is refused, and every size is bounded before anything runs.

#![allow(clippy::disallowed_methods)] // tests write their fixtures directly

mod common;

use axum::http::StatusCode;
use common::*;
use std::path::Path;

const SECRET: &str = "PLANTED-ABLATION-SECRET-51c2";

const MODEL: &str = r#"{"model_type": "llama", "vocab_size": 6400, "hidden_size": 32,
    "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
    "num_key_value_heads": 1, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
    "tie_word_embeddings": true}"#;

const PIPELINE: &str = r#"
[[inputs]]
name = "logs"
paths = ["logs.jsonl"]
domain = "finance"
[[stages]]
type = "minhash"
drop = false
[[stages]]
type = "split"
ratios = { train = 0.8, test = 0.2 }
[[stages]]
type = "mix"
ratio = "1:1"
holdout = "split <> 'train'"
holdout_split_by_pool = true
pools.domain = { domain = "finance" }
[output]
dir = "out"
[output.shards]
tokenizer = "tokenizer.json"
template = "chatml"
"#;

const TRAIN: &str = r#"
[model]
config = "model.json"
[data]
seq_len = 64
batch_size = 2
[train]
steps = 3
seed = 1
"#;

/// The fixture's data root with a model and a tokenizer, and a planted model outside it.
fn setup() -> Fixture {
    let f = fixture_with(100, |c| c.body_limit = 1 << 20);
    let tokenizer = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/data/tokenizers/minimind/tokenizer.json");
    std::fs::copy(tokenizer, f.data.join("tokenizer.json")).expect("tokenizer");
    std::fs::write(f.data.join("model.json"), MODEL).expect("model");
    let planted = MODEL.replace("\"llama\"", &format!("\"{SECRET}\""));
    std::fs::write(f.outside.join("model.json"), &planted).expect("planted");
    std::fs::create_dir_all(f.outside.join("hf")).expect("hf");
    std::fs::write(f.outside.join("hf/config.json"), &planted).expect("planted");
    #[cfg(unix)]
    std::os::unix::fs::symlink(f.outside.join("model.json"), f.data.join("linked.json"))
        .expect("symlink");
    f
}

fn request(pipeline: &str, train: &str, grid: serde_json::Value) -> String {
    serde_json::json!({ "pipeline": pipeline, "train": train, "grid": grid }).to_string()
}

fn ratios() -> serde_json::Value {
    serde_json::json!({ "ratio": ["1:1", "1:3"] })
}

/// Submit; the answer must carry neither the secret nor a server path.
async fn submit(f: &Fixture, body: String) -> (StatusCode, serde_json::Value) {
    let (status, json) = call(&f.state, "POST", "/v1/ablations", Some(WRITE), Some(body)).await;
    let text = json.to_string();
    assert!(!text.contains(SECRET), "the secret came back: {text}");
    let root = f.data.parent().expect("tmp").to_string_lossy().to_string();
    assert!(!text.contains(&root), "a server path came back: {text}");
    (status, json)
}

#[tokio::test]
async fn a_valid_ablation_is_queued_and_shown_with_its_points() {
    let f = setup();
    let (status, a) = submit(&f, request(PIPELINE, TRAIN, ratios())).await;
    assert_eq!(status, StatusCode::CREATED, "{a}");
    assert_eq!(a["state"], "queued");
    assert_eq!(a["output"], "ablations/a-000001");
    let (status, one) = call(&f.state, "GET", "/v1/ablations/a-000001", Some(READ), None).await;
    assert_eq!(status, StatusCode::OK);
    let labels: Vec<&str> = one["points"]
        .as_array()
        .expect("points")
        .iter()
        .map(|p| p["label"].as_str().expect("label"))
        .collect();
    assert_eq!(labels, ["ratio-1_1", "ratio-1_3"]);
    let (status, _) = call(
        &f.state,
        "GET",
        "/v1/ablations/a-000001/report.html",
        Some(READ),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "no report before it ran");
    let (status, list) = call(&f.state, "GET", "/v1/ablations", Some(READ), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["ablations"].as_array().map(Vec::len), Some(1));
    let (status, c) = call(
        &f.state,
        "POST",
        "/v1/ablations/a-000001/cancel",
        Some(WRITE),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(c["state"], "cancelled");
}

#[tokio::test]
async fn only_a_write_token_submits_and_unknown_ids_are_404() {
    let f = setup();
    let body = request(PIPELINE, TRAIN, ratios());
    let (s, _) = call(&f.state, "POST", "/v1/ablations", None, Some(body.clone())).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = call(&f.state, "POST", "/v1/ablations", Some(READ), Some(body)).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = call(&f.state, "GET", "/v1/ablations", None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    for (method, uri) in [
        ("GET", "/v1/ablations/a-999999"),
        ("POST", "/v1/ablations/a-999999/cancel"),
        ("GET", "/v1/ablations/a-999999/report.html"),
        ("GET", "/v1/ablations/..%2f..%2fjobs.db"),
    ] {
        let (s, _) = call(&f.state, method, uri, Some(WRITE), None).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{method} {uri}");
    }
}

#[tokio::test]
async fn the_pipeline_of_every_point_is_confined() {
    let f = setup();
    let outside = f.outside.display().to_string();
    for input in [
        "../outside/secret.jsonl".to_string(),
        format!("{outside}/secret.jsonl"),
        "link.jsonl".to_string(),
    ] {
        let p = PIPELINE.replace("\"logs.jsonl\"", &format!("{input:?}"));
        let (s, body) = submit(&f, request(&p, TRAIN, ratios())).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{input}: {body}");
    }
    // The tokenizer of the shards, and a stage's file.
    let p = PIPELINE.replace(
        "tokenizer = \"tokenizer.json\"",
        &format!("tokenizer = \"{outside}/model.json\""),
    );
    let (s, body) = submit(&f, request(&p, TRAIN, ratios())).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    // An output folder elsewhere is not where a point writes: the point's folder is.
    let p = PIPELINE.replace("dir = \"out\"", &format!("dir = \"{outside}/written\""));
    let (s, body) = submit(&f, request(&p, TRAIN, ratios())).await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    assert!(!f.outside.join("written").exists());
}

#[tokio::test]
async fn the_train_file_reads_its_model_only_inside_the_data_roots() {
    let f = setup();
    let outside = f.outside.display().to_string();
    for (model, key) in [
        (format!("config = \"{outside}/model.json\""), "model.config"),
        (
            "config = \"../outside/model.json\"".to_string(),
            "model.config",
        ),
        ("config = \"linked.json\"".to_string(), "model.config"),
        (format!("weights = \"{outside}/hf\""), "model.weights"),
        ("weights = \"../outside/hf\"".to_string(), "model.weights"),
    ] {
        let t = TRAIN.replace("config = \"model.json\"", &model);
        let (s, body) = submit(&f, request(PIPELINE, &t, ratios())).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{model}: {body}");
        assert_eq!(body["field"], format!("train.{key}"), "{body}");
    }
    // A model folder inside whose config links out.
    std::fs::create_dir_all(f.data.join("hf")).expect("hf");
    #[cfg(unix)]
    std::os::unix::fs::symlink(
        f.outside.join("hf/config.json"),
        f.data.join("hf/config.json"),
    )
    .expect("symlink");
    let t = TRAIN.replace("config = \"model.json\"", "weights = \"hf\"");
    let (s, body) = submit(&f, request(PIPELINE, &t, ratios())).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
}

#[tokio::test]
async fn what_the_service_sets_and_distributed_settings_are_refused() {
    let f = setup();
    let outside = f.outside.display().to_string();
    for (extra, field) in [
        (
            format!("output = \"{outside}/train\"\n{TRAIN}"),
            "train.output",
        ),
        (
            TRAIN.replace("[data]\n", &format!("[data]\nshards = \"{outside}\"\n")),
            "train.data.shards",
        ),
        (
            TRAIN.replace("[train]\n", "[train]\nmaster = \"10.0.0.1:29500\"\n"),
            "train.train.master",
        ),
        (
            TRAIN.replace("[train]\n", "[train]\nworld = 2\nrank = 1\n"),
            "train.train.rank",
        ),
    ] {
        let (s, body) = submit(&f, request(PIPELINE, &extra, ratios())).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(body["field"], field, "{body}");
    }
    assert!(!f.outside.join("train").exists());
}

#[tokio::test]
async fn sizes_are_bounded_before_anything_runs() {
    let f = setup();
    // Nine points where eight are allowed; a grid that multiplies to millions.
    let nine =
        serde_json::json!({ "ratio": ["1:1", "1:2", "1:3"], "max_source_tokens": [64, 128, 256] });
    let (s, body) = submit(&f, request(PIPELINE, TRAIN, nine)).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["detail"].as_str().unwrap_or("").contains("9 points"),
        "{body}"
    );
    let many: Vec<String> = (1..=200).map(|i| format!("1:{i}")).collect();
    let budgets: Vec<usize> = (1..=200).collect();
    let huge =
        serde_json::json!({ "ratio": many, "max_source_tokens": budgets, "filler": [true, false] });
    let (s, _) = submit(&f, request(PIPELINE, TRAIN, huge)).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    // Steps over max_train_steps; a model far over max_train_memory_mib.
    let t = TRAIN.replace("steps = 3", "steps = 1000000");
    let (s, body) = submit(&f, request(PIPELINE, &t, ratios())).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["field"], "train.train.steps");
    std::fs::write(
        f.data.join("big.json"),
        MODEL
            .replace("\"hidden_size\": 32", "\"hidden_size\": 8192")
            .replace("\"num_hidden_layers\": 1", "\"num_hidden_layers\": 80")
            .replace("\"intermediate_size\": 64", "\"intermediate_size\": 28672")
            .replace("\"num_attention_heads\": 2", "\"num_attention_heads\": 64")
            .replace("\"num_key_value_heads\": 1", "\"num_key_value_heads\": 8"),
    )
    .expect("big");
    let t = TRAIN.replace("model.json", "big.json");
    let (s, body) = submit(&f, request(PIPELINE, &t, ratios())).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or("")
            .contains("max_train_memory_mib"),
        "{body}"
    );
    // Batches far too long for the memory allowed.
    let t = TRAIN.replace("seq_len = 64", "seq_len = 4000000");
    let (s, body) = submit(&f, request(PIPELINE, &t, ratios())).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    for split in ["../../x", "", "a/b", "x\u{0}"] {
        let body = serde_json::json!({ "pipeline": PIPELINE, "train": TRAIN, "grid": ratios(), "eval_split": split }).to_string();
        let (s, _) = submit(&f, body).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{split:?}");
    }
    let body = serde_json::json!({ "pipeline": PIPELINE, "train": TRAIN, "grid": ratios(), "tolerance": -1.0 }).to_string();
    assert_eq!(submit(&f, body).await.0, StatusCode::UNPROCESSABLE_ENTITY);
    let body = serde_json::json!({ "pipeline": PIPELINE, "train": TRAIN, "grid": ratios(), "name": "x".repeat(300) }).to_string();
    assert_eq!(submit(&f, body).await.0, StatusCode::UNPROCESSABLE_ENTITY);
    // A pipeline that does not hold its evaluation sets out is no ablation.
    let p = PIPELINE.replace("holdout = \"split <> 'train'\"\n", "");
    let (s, body) = submit(&f, request(&p, TRAIN, ratios())).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
}

/// Files can change between the submission and the run: the checks run again when it starts.
#[tokio::test]
async fn a_model_that_links_out_after_the_submission_fails_the_run_without_reading_it() {
    let f = setup();
    let (status, a) = submit(&f, request(PIPELINE, TRAIN, ratios())).await;
    assert_eq!(status, StatusCode::CREATED, "{a}");
    std::fs::remove_file(f.data.join("model.json")).expect("rm");
    #[cfg(unix)]
    std::os::unix::fs::symlink(f.outside.join("model.json"), f.data.join("model.json"))
        .expect("symlink");
    let worker = sluice_server::ablations::start(f.state.clone());
    let mut row = serde_json::Value::Null;
    for _ in 0..600 {
        let (_, r) = call(&f.state, "GET", "/v1/ablations/a-000001", Some(READ), None).await;
        row = r;
        if ["failed", "succeeded", "cancelled"].contains(&row["state"].as_str().unwrap_or("")) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    f.state
        .stopping
        .store(true, std::sync::atomic::Ordering::SeqCst);
    worker.join().expect("worker");
    assert_eq!(row["state"], "failed", "{row}");
    let text = row.to_string();
    assert!(text.contains("outside the data roots"), "{text}");
    assert!(!text.contains(SECRET), "{text}");
    let root = f.data.parent().expect("tmp").to_string_lossy().to_string();
    assert!(!text.contains(&root), "{text}");
}

#[tokio::test]
async fn an_evaluation_set_is_read_only_inside_the_data_roots() {
    let f = setup();
    let with_set = |set: &str| {
        serde_json::json!({ "pipeline": PIPELINE, "train": TRAIN, "grid": ratios(), "eval_set": set })
            .to_string()
    };
    // Outside, by `..`, by an absolute path, by a link.
    std::fs::create_dir_all(f.outside.join("evalset/mc")).expect("mc");
    std::fs::write(
        f.outside.join("evalset/mc/x.jsonl"),
        format!("{{\"question\": \"{SECRET}\"}}\n"),
    )
    .expect("w");
    let outside = f.outside.join("evalset").display().to_string();
    #[cfg(unix)]
    std::os::unix::fs::symlink(f.outside.join("evalset"), f.data.join("linked-set"))
        .expect("symlink");
    for set in ["../outside/evalset", outside.as_str(), "linked-set"] {
        let (s, body) = submit(&f, with_set(set)).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{set}: {body}");
        assert_eq!(body["field"], "eval_set");
    }
    // A folder inside whose files link out.
    std::fs::create_dir_all(f.data.join("evalset/mc")).expect("mc");
    #[cfg(unix)]
    std::os::unix::fs::symlink(
        f.outside.join("evalset/mc/x.jsonl"),
        f.data.join("evalset/mc/x.jsonl"),
    )
    .expect("symlink");
    let (s, body) = submit(&f, with_set("evalset")).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    // A folder that is no evaluation set.
    std::fs::create_dir_all(f.data.join("empty")).expect("empty");
    let (s, body) = submit(&f, with_set("empty")).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    // Bounds.
    let body = serde_json::json!({ "pipeline": PIPELINE, "train": TRAIN, "grid": ratios(), "eval_limit": 1_000_000 }).to_string();
    assert_eq!(submit(&f, body).await.0, StatusCode::UNPROCESSABLE_ENTITY);
    let body = serde_json::json!({ "pipeline": PIPELINE, "train": TRAIN, "grid": ratios(), "eval_max_new_tokens": 1_000_000 }).to_string();
    assert_eq!(submit(&f, body).await.0, StatusCode::UNPROCESSABLE_ENTITY);
}

/// Regressions of the second attacker walk: work per step, adapters, checkpoints, repeated
/// grid values and a model whose size overflows were each accepted (or crashed the request).
#[tokio::test]
async fn work_per_step_adapters_checkpoints_and_repeats_are_bounded() {
    let f = setup();
    for (train, field) in [
        // Over the memory of a step's loaded batches, and over the tokens of a point.
        (
            TRAIN.replace("[data]\n", "[data]\ngrad_accum = 100000000\n"),
            "train",
        ),
        (
            TRAIN
                .replace("steps = 3", "steps = 5000")
                .replace("[data]\n", "[data]\ngrad_accum = 2000\n"),
            "train.data",
        ),
        (
            format!("{TRAIN}[lora]\nrank = 1000000\n"),
            "train.lora.rank",
        ),
        (
            TRAIN.replace("[train]\n", "[train]\nkeep_checkpoints = 1000000\n"),
            "train.train.keep_checkpoints",
        ),
        (
            TRAIN
                .replace("steps = 3", "steps = 5000")
                .replace("[train]\n", "[train]\ncheckpoint_every = 1\n"),
            "train.train.checkpoint_every",
        ),
    ] {
        let (s, body) = submit(&f, request(PIPELINE, &train, ratios())).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{train}: {body}");
        assert_eq!(body["field"], field, "{body}");
    }
    for grid in [
        serde_json::json!({ "ratio": ["1:1", "1:1"] }),
        serde_json::json!({ "ratio": ["1 : 1", "1:1"] }),
        serde_json::json!({ "ratio": ["1:1"], "max_source_tokens": [64, 64] }),
    ] {
        let (s, body) = submit(&f, request(PIPELINE, TRAIN, grid.clone())).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{grid}: {body}");
    }
    std::fs::write(
        f.data.join("huge.json"),
        MODEL
            .replace("\"hidden_size\": 32", "\"hidden_size\": 2147483648")
            .replace(
                "\"intermediate_size\": 64",
                "\"intermediate_size\": 2147483648",
            ),
    )
    .expect("huge");
    let t = TRAIN.replace("model.json", "huge.json");
    let (s, body) = submit(&f, request(PIPELINE, &t, ratios())).await;
    assert_eq!(
        s,
        StatusCode::UNPROCESSABLE_ENTITY,
        "no overflow, a refusal: {body}"
    );
}
