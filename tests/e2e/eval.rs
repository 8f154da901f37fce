//! `sluice eval build` on the bundled data: the evaluation sets share no id and no near
//! duplicate with the training output of the same pipeline, nor with the training split of
//! another run named with `--against` (which does hold some of them); the same build twice
//! writes the same bytes.

use crate::common::*;
use std::collections::HashSet;
use std::path::Path;

/// examples/ablate_pipeline.toml with absolute data paths, the split's seed set, without shards.
pub(crate) fn pipeline(dir: &Path, seed: u64) -> std::path::PathBuf {
    let text =
        std::fs::read_to_string(repo().join("examples/ablate_pipeline.toml")).expect("pipeline");
    let text = text
        .replace(
            "\"data/",
            &format!("\"{}/", repo().join("examples/data").display()),
        )
        .replace(
            "ratios = { train = 0.8, test = 0.2 }",
            &format!("ratios = {{ train = 0.8, test = 0.2 }}\nseed = {seed}"),
        );
    let text = text
        .split("[output.shards]")
        .next()
        .expect("head")
        .to_string();
    let path = dir.join(format!("pipeline-{seed}.toml"));
    std::fs::write(&path, text).expect("write");
    path
}

pub(crate) fn run(dir: &Path, seed: u64) -> std::path::PathBuf {
    let out = dir.join(format!("run-{seed}"));
    let p = pipeline(dir, seed);
    let o = sluice(&[
        "run",
        "-q",
        p.to_str().expect("utf8"),
        "--out",
        out.to_str().expect("utf8"),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    out
}

/// Every JSON line of the run's curated files of one split.
pub(crate) fn split_lines(run: &Path, split: &str) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(run.join("curated"))
        .expect("curated")
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(&format!("{split}-")) {
            for l in std::fs::read_to_string(e.path()).expect("read").lines() {
                out.push(serde_json::from_str(l).expect("json"));
            }
        }
    }
    out
}

/// The text of a curated sample or an open item: every turn's content (and the system).
fn text(v: &serde_json::Value) -> String {
    let mut parts = Vec::new();
    if let Some(s) = v["system"].as_str() {
        parts.push(s.to_string());
    }
    for key in ["turns", "history"] {
        for t in v[key].as_array().into_iter().flatten() {
            parts.push(t["content"].as_str().unwrap_or("").to_string());
        }
    }
    for key in ["prompt", "reference", "text"] {
        if let Some(s) = v[key].as_str() {
            parts.push(s.to_string());
        }
    }
    parts.join("\n")
}

/// Character 5-grams (whitespace dropped, lowercase), as sorted hashes.
fn grams(t: &str) -> Vec<u64> {
    use std::hash::{Hash, Hasher};
    let chars: Vec<char> = t
        .to_lowercase()
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let mut out: Vec<u64> = chars
        .windows(5.min(chars.len().max(1)))
        .map(|w| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            w.hash(&mut h);
            h.finish()
        })
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

fn jaccard(a: &[u64], b: &[u64]) -> f64 {
    let (mut i, mut j, mut both) = (0, 0, 0usize);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                both += 1;
                i += 1;
                j += 1;
            }
        }
    }
    both as f64 / (a.len() + b.len() - both).max(1) as f64
}

fn items(set: &Path) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for form in ["open", "mc"] {
        for e in std::fs::read_dir(set.join(form))
            .into_iter()
            .flatten()
            .flatten()
        {
            if e.path().extension().is_some_and(|x| x == "jsonl") {
                for l in std::fs::read_to_string(e.path()).expect("read").lines() {
                    let mut v: serde_json::Value = serde_json::from_str(l).expect("json");
                    v["form"] = form.into();
                    out.push(v);
                }
            }
        }
    }
    out
}

/// No item has the id of a training sample or a near duplicate among them (independent count:
/// character 5-grams, exact Jaccard).
fn assert_apart(set: &Path, train: &[serde_json::Value]) {
    let ids: HashSet<&str> = train.iter().filter_map(|s| s["id"].as_str()).collect();
    let train_grams: Vec<Vec<u64>> = train.iter().map(|s| grams(&text(s))).collect();
    let all = items(set);
    assert!(!all.is_empty());
    for it in &all {
        let id = it["id"].as_str().expect("id");
        let source_id = id.strip_suffix("#mc").unwrap_or(id);
        assert!(!ids.contains(source_id), "{id} is in the training split");
        if it["form"] == "open" {
            let g = grams(&text(it));
            for (k, tg) in train_grams.iter().enumerate() {
                let j = jaccard(&g, tg);
                assert!(j < 0.8, "{id} ~ {} (Jaccard {j:.2})", train[k]["id"]);
            }
        }
    }
}

#[test]
fn evaluation_sets_share_no_id_and_no_near_duplicate_with_any_training_split() {
    let tmp = tempfile::tempdir().expect("tmp");
    let a = run(tmp.path(), 42);
    let b = run(tmp.path(), 7);
    let set = tmp.path().join("set");
    let build = |out: &Path, extra: &[&str]| {
        let mut args = vec![
            "eval",
            "build",
            "--run",
            a.to_str().expect("utf8"),
            "--out",
            out.to_str().expect("utf8"),
        ];
        args.extend_from_slice(extra);
        let o = sluice(&args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice::<serde_json::Value>(
            &std::fs::read(out.join("manifest.json")).expect("manifest"),
        )
        .expect("json")
    };
    let m = build(&set, &[]);
    let train_a = split_lines(&a, "train");
    assert_apart(&set, &train_a);
    // Both forms and both pools; the synthetic options flagged.
    let written: Vec<&str> = m["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|f| f["path"].as_str().expect("path"))
        .collect();
    for p in [
        "open/medical.jsonl",
        "open/general.jsonl",
        "mc/medical.jsonl",
        "mc/general.jsonl",
    ] {
        assert!(written.contains(&p), "{written:?}");
        assert!(set.join(format!("{p}.meta.json")).is_file());
    }
    assert!(items(&set)
        .iter()
        .filter(|i| i["form"] == "mc")
        .all(|i| i["synthetic"] == true
            && i["choices"][i["gold"].as_u64().expect("gold") as usize]
                == i[i["answer"].as_str().expect("letter")]));
    // The same build again: the same bytes.
    let again = tmp.path().join("again");
    build(&again, &[]);
    for p in &written {
        assert_eq!(
            std::fs::read(set.join(p)).expect("a"),
            std::fs::read(again.join(p)).expect("b"),
            "{p}"
        );
    }
    // Another split of the same data trains on some of these held-out samples: named with
    // --against, they are left out.
    let guarded = tmp.path().join("guarded");
    let m2 = build(&guarded, &["--against", b.to_str().expect("utf8")]);
    let same_id = m2["left_out"]["same_id"].as_u64().unwrap_or(0);
    assert!(same_id > 0, "{}", m2["left_out"]);
    let train_b = split_lines(&b, "train");
    let before = items(&set).len();
    assert!(items(&guarded).len() < before);
    assert_apart(&guarded, &train_a);
    assert_apart(&guarded, &train_b);
}
