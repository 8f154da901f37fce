//! `sluice ablate run` on the real data of ../shared/data: three SFT ratios, each mixed, trained
//! (a tiny model, a few steps) and evaluated on held-out medical and general sets that no mix
//! contains; the recommendation follows the stated rule on the recorded numbers, and a second
//! run keeps every finished point.

use crate::common::*;
use std::collections::BTreeSet;
use std::path::Path;

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write");
}

fn files(dir: &Path, data: &Path) -> std::path::PathBuf {
    let d = data.display();
    setup(
        dir,
        &format!(
            r#"
seed = 3
[[inputs]]
name = "medical"
paths = ["{d}/sft/medicalgpt/medical_sft_1K_format.jsonl"]
domain = "medical"
task = "medical_qa"
[[inputs]]
name = "alpaca"
paths = ["{d}/sft/llama_factory/alpaca_zh_demo.json", "{d}/sft/llama_factory/alpaca_en_demo.json"]
domain = "general"
task = "alpaca"
[[stages]]
type = "minhash"
drop = false
[[stages]]
type = "split"
ratios = {{ train = 0.8, test = 0.2 }}
[[stages]]
type = "mix"
ratio = "1:1"
holdout = "split <> 'train'"
holdout_split_by_pool = true
pools.domain = {{ domain = "medical" }}
[output]
dir = "unused"
formats = ["jsonl"]
[output.shards]
tokenizer = "{d}/tokenizers/minimind/tokenizer.json"
template = "chatml"
max_source_tokens = 128
max_target_tokens = 128
"#
        ),
        r#"["1:1", "1:3", "1:5"]"#,
    )
}

/// The pipeline as given, a tiny model, a 3-step train file and an ablation over `ratios`.
fn setup(dir: &Path, pipeline: &str, ratios: &str) -> std::path::PathBuf {
    write(&dir.join("pipeline.toml"), pipeline);
    write(
        &dir.join("model.json"),
        r#"{"model_type": "llama", "vocab_size": 6400, "hidden_size": 32,
            "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
            "num_key_value_heads": 1, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
            "tie_word_embeddings": true}"#,
    );
    write(
        &dir.join("train.toml"),
        r#"
output = "unused"
[model]
config = "model.json"
[data]
shards = "unused"
seq_len = 256
batch_size = 2
[optim]
lr = 1e-2
[train]
steps = 3
seed = 1
device = "cpu"
"#,
    );
    let ablate = dir.join("ablate.toml");
    write(
        &ablate,
        &format!(
            r#"
output = "ablation"
pipeline = "pipeline.toml"
train = "train.toml"
tolerance = 0.02
eval_sequences = 12
[grid]
ratio = {ratios}
"#
        ),
    );
    ablate
}

/// Continued pretraining: medical documents against web text at 5%, 15% and 30% of the tokens;
/// each point's training split keeps the domain's token share at most the ratio, and the
/// held-out documents of both pools are evaluated.
#[test]
fn a_cpt_ablation_varies_the_domain_token_share() {
    let Some(data) = shared_data() else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = data.display();
    let ablate = setup(
        tmp.path(),
        &format!(
            r#"
seed = 5
[[inputs]]
name = "medical_text"
paths = ["{d}/pretrain/medicalgpt/medical_corpus.txt"]
columns = {{ "答" = "text", "问" = "ignore" }}
domain = "medical"
task = "medical_text"
kind = "pretrain"
[[inputs]]
name = "web"
paths = ["{d}/pretrain/llama_factory/c4_demo.jsonl"]
domain = "general"
task = "web"
kind = "pretrain"
[[stages]]
type = "minhash"
drop = false
[[stages]]
type = "split"
ratios = {{ train = 0.8, test = 0.2 }}
[[stages]]
type = "mix"
mode = "cpt"
ratio = "0.15"
holdout = "split <> 'train'"
holdout_split_by_pool = true
pools.domain = {{ domain = "medical" }}
pools.general = {{ domain = "general" }}
[output]
dir = "unused"
formats = ["jsonl"]
[output.shards]
tokenizer = "{d}/tokenizers/minimind/tokenizer.json"
template = "chatml"
"#
        ),
        r#"["0.05", "0.15", "0.3"]"#,
    );
    let out = sluice(&["ablate", "run", ablate.to_str().expect("utf8")]);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let results: serde_json::Value = serde_json::from_slice(
        &std::fs::read(tmp.path().join("ablation/results.json")).expect("results.json"),
    )
    .expect("json");
    let points = results["points"].as_array().expect("points");
    assert_eq!(points.len(), 3);
    let mut shares = Vec::new();
    for p in points {
        assert!(p["domain_loss"].as_f64().is_some_and(f64::is_finite), "{p}");
        assert!(
            p["general_loss"].as_f64().is_some_and(f64::is_finite),
            "{p}"
        );
        let share: f64 = p["point"]["ratio"]
            .as_str()
            .expect("ratio")
            .parse()
            .expect("share");
        // The achieved domain share of tokens, from the point's own report.
        let report: serde_json::Value = serde_json::from_slice(
            &std::fs::read(
                tmp.path()
                    .join("ablation/points")
                    .join(p["label"].as_str().expect("label"))
                    .join("run/report.json"),
            )
            .expect("report"),
        )
        .expect("json");
        let mix = report["stages"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["type"] == "mix"))
            .expect("mix");
        let achieved = mix["details"]["achieved"]
            .as_array()
            .and_then(|a| a.iter().find(|r| r["pool"] == "domain"))
            .and_then(|r| r["share"].as_f64())
            .expect("domain share");
        assert!(
            achieved <= share + 1e-9 && achieved > share * 0.5,
            "{achieved} vs {share}"
        );
        assert!(mix["details"]["held_out"].as_u64().unwrap_or(0) > 0);
        shares.push(achieved);
    }
    assert!(shares.windows(2).all(|w| w[0] < w[1]), "{shares:?}");
}

#[test]
fn an_ablation_records_every_point_holds_its_evaluation_sets_out_and_resumes() {
    let Some(data) = shared_data() else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let ablate = files(tmp.path(), &data);
    let out = sluice(&["ablate", "run", ablate.to_str().expect("utf8")]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results: serde_json::Value = serde_json::from_slice(
        &std::fs::read(tmp.path().join("ablation/results.json")).expect("results.json"),
    )
    .expect("json");
    let points = results["points"].as_array().expect("points");
    assert_eq!(points.len(), 3);
    let num = |p: &serde_json::Value, k: &str| p[k].as_f64().unwrap_or(f64::NAN);
    for p in points {
        for k in [
            "domain_loss",
            "general_loss",
            "base_domain_loss",
            "base_general_loss",
        ] {
            assert!(num(p, k).is_finite() && num(p, k) > 0.0, "{k} of {p}");
        }
        assert_eq!(p["steps"].as_u64(), Some(3));
    }
    // The ratio shaped each mix.
    let mixed = |i: usize, pool: &str| points[i]["mixed_samples"][pool].as_u64().unwrap_or(0);
    for (i, k) in [(0, 1), (1, 3), (2, 5)] {
        let (d, g) = (mixed(i, "domain"), mixed(i, "general"));
        assert!(
            d > 0 && (g as i64 - (k * d) as i64).abs() <= k as i64,
            "{d}:{g}"
        );
    }
    // The recommendation follows the rule on the recorded numbers.
    let tol = 0.02;
    let within: Vec<&serde_json::Value> = points
        .iter()
        .filter(|p| num(p, "general_loss") <= num(p, "base_general_loss") * (1.0 + tol))
        .collect();
    let expected = within
        .iter()
        .min_by(|a, b| num(a, "domain_loss").total_cmp(&num(b, "domain_loss")))
        .map(|p| p["label"].as_str().unwrap_or("").to_string());
    let chosen = results["recommendation"]["chosen"]
        .as_str()
        .map(str::to_string);
    assert_eq!(chosen, expected, "{}", results["recommendation"]);
    assert!(stdout.contains("recommended:"), "{stdout}");
    // The page: the same recommendation, a point per grid point, nothing to fetch or run.
    let html = std::fs::read_to_string(tmp.path().join("ablation/report.html")).expect("page");
    let named = expected.as_deref().unwrap_or("none");
    assert!(html.contains(&format!("Recommended: {named}")), "{html}");
    assert_eq!(html.matches("<circle").count(), 3);
    assert!(!html.contains("<script") && !html.contains("src=\""));
    // Every point's held-out sets are the same samples, and none is in any point's training
    // split, by id or by content.
    let mut held_sets = Vec::new();
    for p in points {
        let run = tmp
            .path()
            .join("ablation/points")
            .join(p["label"].as_str().expect("label"))
            .join("run");
        let rows = curated_rows(&run);
        let split = |r: &serde_json::Value| r["tags"]["split"].as_str().unwrap_or("").to_string();
        let base = |id: &str| id.split("#r").next().unwrap_or(id).to_string();
        let train_ids: BTreeSet<String> = rows
            .iter()
            .filter(|r| split(r) == "train")
            .map(|r| base(r["id"].as_str().unwrap_or("")))
            .collect();
        let train_texts: BTreeSet<String> = rows
            .iter()
            .filter(|r| split(r) == "train")
            .map(|r| r["turns"].to_string())
            .collect();
        let held: Vec<&serde_json::Value> = rows
            .iter()
            .filter(|r| split(r).starts_with("test_"))
            .collect();
        assert!(held.iter().any(|r| split(r) == "test_general"));
        assert!(held.iter().any(|r| split(r) == "test_domain"));
        for r in &held {
            assert!(!train_ids.contains(r["id"].as_str().unwrap_or("")), "{r}");
            assert!(!train_texts.contains(&r["turns"].to_string()), "{r}");
        }
        let ids: BTreeSet<String> = held
            .iter()
            .map(|r| r["id"].as_str().unwrap_or("").to_string())
            .collect();
        held_sets.push(ids);
    }
    assert!(
        held_sets.windows(2).all(|w| w[0] == w[1]),
        "the same held-out sets"
    );
    // A second run keeps every finished point.
    let again = sluice(&["ablate", "run", ablate.to_str().expect("utf8")]);
    assert!(again.status.success());
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert_eq!(stderr.matches("done earlier, kept").count(), 3, "{stderr}");
    let again_results: serde_json::Value = serde_json::from_slice(
        &std::fs::read(tmp.path().join("ablation/results.json")).expect("results.json"),
    )
    .expect("json");
    assert_eq!(again_results["points"], results["points"]);
    // The plan agrees with the run on what is done.
    let plan = sluice(&["ablate", "plan", ablate.to_str().expect("utf8")]);
    let listed = String::from_utf8_lossy(&plan.stdout).into_owned();
    assert_eq!(listed.matches(" done").count(), 3, "{listed}");
    // Only the train file changes: every point trains again on the mix it has.
    let train = tmp.path().join("train.toml");
    let text = std::fs::read_to_string(&train).expect("read");
    write(&train, &text.replace("steps = 3", "steps = 4"));
    let retrained = sluice(&["ablate", "run", ablate.to_str().expect("utf8")]);
    let stderr = String::from_utf8_lossy(&retrained.stderr);
    assert!(retrained.status.success(), "{stderr}");
    assert!(!stderr.contains("building the mix"), "{stderr}");
    assert_eq!(stderr.matches("training 4 steps").count(), 3, "{stderr}");
}

#[test]
fn an_ablation_whose_pipeline_mixes_its_evaluation_sets_is_refused_before_it_runs() {
    let Some(data) = shared_data() else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let ablate = files(tmp.path(), &data);
    let p = tmp.path().join("pipeline.toml");
    let text = std::fs::read_to_string(&p).expect("read");
    write(&p, &text.replace("holdout = \"split <> 'train'\"\n", ""));
    let out = sluice(&["ablate", "run", ablate.to_str().expect("utf8")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("holdout"),
        "{stderr}"
    );
    assert!(!tmp.path().join("ablation/points").exists(), "nothing ran");
    // The held-out split must come from the split stage.
    write(&p, &text.replace("test = 0.2", "valid = 0.2"));
    let out = sluice(&["ablate", "plan", ablate.to_str().expect("utf8")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("not the evaluation split \"test\""),
        "{stderr}"
    );
    // A model inside the points a rerun clears.
    write(&p, &text);
    let train = tmp.path().join("train.toml");
    let t = std::fs::read_to_string(&train).expect("read");
    write(
        &train,
        &t.replace(
            "config = \"model.json\"",
            "config = \"model.json\"\nweights = \"ablation/points/ratio-1_1/train/final\"",
        ),
    );
    std::fs::create_dir_all(tmp.path().join("ablation/points/ratio-1_1/train/final"))
        .expect("mkdir");
    let out = sluice(&["ablate", "run", ablate.to_str().expect("utf8")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("lies inside this ablation's points"),
        "{stderr}"
    );
    assert!(
        tmp.path()
            .join("ablation/points/ratio-1_1/train/final")
            .is_dir(),
        "nothing was cleared"
    );
}

/// Poll an ablation through the service until it is in one of `states`.
fn wait_ablation(addr: &str, id: &str, states: &[&str], secs: u64) -> serde_json::Value {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        let (status, body) = crate::serve::http(addr, "GET", &format!("/v1/ablations/{id}"), None);
        assert_eq!(status, 200, "{body}");
        let a: serde_json::Value = serde_json::from_str(&body).expect("json");
        if states.contains(&a["state"].as_str().unwrap_or("")) {
            return a;
        }
        assert!(
            std::time::Instant::now() < until,
            "still {}: {a}",
            a["state"]
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// `POST /v1/ablations` runs the same grid as `sluice ablate run` on the same files and
/// records the same numbers; its report is served with no server path in it; a running one
/// is cancelled at its next step.
#[test]
fn an_ablation_through_the_service_records_what_the_command_records() {
    let Some(data) = shared_data() else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("data");
    std::fs::create_dir_all(&root).expect("root");
    for (from, to) in [
        (
            "sft/medicalgpt/medical_sft_1K_format.jsonl",
            "medical.jsonl",
        ),
        ("sft/llama_factory/alpaca_zh_demo.json", "alpaca_zh.json"),
        ("sft/llama_factory/alpaca_en_demo.json", "alpaca_en.json"),
        ("tokenizers/minimind/tokenizer.json", "tokenizer.json"),
    ] {
        std::fs::copy(data.join(from), root.join(to)).expect("copy");
    }
    let pipeline = r#"
seed = 3
[[inputs]]
name = "medical"
paths = ["medical.jsonl"]
domain = "medical"
task = "medical_qa"
[[inputs]]
name = "alpaca"
paths = ["alpaca_zh.json", "alpaca_en.json"]
domain = "general"
task = "alpaca"
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
pools.domain = { domain = "medical" }
[output]
dir = "unused"
formats = ["jsonl"]
[output.shards]
tokenizer = "tokenizer.json"
template = "chatml"
max_source_tokens = 128
max_target_tokens = 128
"#;
    // The command's files live in the data root, so both resolve the same relative paths.
    let ablate = setup(&root, pipeline, r#"["1:1", "1:5"]"#);
    std::fs::write(
        &ablate,
        std::fs::read_to_string(&ablate)
            .expect("read")
            .replace("output = \"ablation\"", "output = \"../cli\""),
    )
    .expect("write");
    let out = sluice(&["ablate", "run", ablate.to_str().expect("utf8")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cli: serde_json::Value = serde_json::from_slice(
        &std::fs::read(tmp.path().join("cli/results.json")).expect("results"),
    )
    .expect("json");
    // An evaluation set from the command's first point, inside the data root: the service's
    // points are scored on it too.
    let out = sluice(&[
        "eval",
        "build",
        "--run",
        tmp.path()
            .join("cli/points/ratio-1_1/run")
            .to_str()
            .expect("utf8"),
        "--out",
        root.join("evalset").to_str().expect("utf8"),
        "--max-per-domain",
        "6",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The service is given the train file without what it sets itself.
    let train: String = std::fs::read_to_string(root.join("train.toml"))
        .expect("train")
        .lines()
        .filter(|l| !l.starts_with("output") && !l.starts_with("shards"))
        .map(|l| format!("{l}\n"))
        .collect();
    let config = tmp.path().join("server.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_roots = [\"data\"]\noutput_root = \"out\"\n\
             [[tokens]]\nname = \"t\"\nsha256 = \"{}\"\nscope = \"write\"\n",
            sluice_server::config::hash_token(crate::serve::TOKEN)
        ),
    )
    .expect("server.toml");
    let (mut child, addr) = crate::serve::start(&config);
    let request = |steps: u64, name: &str| {
        serde_json::json!({
            "name": name,
            "pipeline": pipeline,
            "train": train.replace("steps = 3", &format!("steps = {steps}")),
            "grid": { "ratio": ["1:1", "1:5"] },
            "tolerance": 0.02,
            "eval_sequences": 12,
            "eval_set": "evalset",
            "eval_max_new_tokens": 4,
        })
        .to_string()
    };
    let (status, body) = crate::serve::http(
        &addr,
        "POST",
        "/v1/ablations",
        Some(&request(3, "<b>svc</b>")),
    );
    assert_eq!(status, 201, "{body}");
    let id = serde_json::from_str::<serde_json::Value>(&body).expect("json")["id"]
        .as_str()
        .expect("id")
        .to_string();
    let done = wait_ablation(&addr, &id, &["succeeded", "failed", "cancelled"], 900);
    let tmp_path = tmp.path().to_string_lossy().to_string();
    assert!(!done.to_string().contains(&tmp_path), "{done}");
    assert_eq!(done["state"], "succeeded", "{done}");
    let points = done["points"].as_array().expect("points");
    assert_eq!(points.len(), 2);
    let cli_points = cli["points"].as_array().expect("points");
    for (p, c) in points.iter().zip(cli_points) {
        let r = &p["result"];
        assert_eq!(r["label"], c["label"]);
        assert_eq!(r["mixed_samples"], c["mixed_samples"], "the same mix");
        assert_eq!(r["tokens_seen"], c["tokens_seen"]);
        assert_eq!(r["eval"]["mc"], 12, "{r}");
        assert_eq!(r["eval"]["open"], 12, "{r}");
        assert!(r["eval"]["acc"].as_f64().is_some() && r["eval"]["bleu"].as_f64().is_some());
        for key in [
            "domain_loss",
            "general_loss",
            "base_domain_loss",
            "base_general_loss",
        ] {
            let (a, b) = (r[key].as_f64().expect("f64"), c[key].as_f64().expect("f64"));
            assert!((a - b).abs() <= 1e-4 * b.abs(), "{key}: {a} vs {b}");
        }
    }
    assert_eq!(
        done["results"]["recommendation"]["chosen"], cli["recommendation"]["chosen"],
        "the same rule on the same numbers"
    );
    let (status, html) = crate::serve::http_raw(
        &addr,
        "GET",
        &format!("/v1/ablations/{id}/report.html"),
        None,
    );
    assert_eq!(status, 200);
    assert!(
        html.contains("&lt;b&gt;svc&lt;/b&gt;") && !html.contains("<b>svc"),
        "escaped"
    );
    assert!(!html.contains(&tmp_path));
    assert!(
        html.contains("Evaluation set"),
        "the evaluation scores are in the report"
    );
    // A long one is cancelled while it trains, and leaves a checkpoint to resume from.
    let (status, body) =
        crate::serve::http(&addr, "POST", "/v1/ablations", Some(&request(5000, "long")));
    assert_eq!(status, 201, "{body}");
    let long = serde_json::from_str::<serde_json::Value>(&body).expect("json")["id"]
        .as_str()
        .expect("id")
        .to_string();
    let until = std::time::Instant::now() + std::time::Duration::from_secs(600);
    loop {
        let (_, body) = crate::serve::http(&addr, "GET", &format!("/v1/ablations/{long}"), None);
        if body.contains(": step ") {
            break;
        }
        assert!(std::time::Instant::now() < until, "never trained: {body}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let (status, body) =
        crate::serve::http(&addr, "POST", &format!("/v1/ablations/{long}/cancel"), None);
    assert_eq!(status, 200, "{body}");
    let cancelled = wait_ablation(&addr, &long, &["cancelled", "failed", "succeeded"], 120);
    assert_eq!(cancelled["state"], "cancelled", "{cancelled}");
    let train_dir = tmp
        .path()
        .join("out/ablations")
        .join(&long)
        .join("points/ratio-1_1/train");
    assert!(
        train_dir.join("checkpoints/latest").is_file(),
        "a checkpoint to resume from"
    );
    let _ = child.kill();
    let _ = child.wait();
}
