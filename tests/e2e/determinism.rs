//! Same input, config and seed give byte-identical outputs, whatever the thread count.

use crate::common::*;

#[test]
fn one_and_four_threads_write_identical_bytes() {
    let data = repo().join("examples/data");
    let dir = tempfile::tempdir().expect("tempdir");
    // Small batches and parts so that batches cross file boundaries and outputs rotate; a stage
    // after the global one exercises the spill-and-apply path.
    let body = format!(
        r#"
        name = "det"
        batch_size = 97
        [[inputs]]
        name = "sharegpt"
        paths = ["{d}/medicalgpt/*.jsonl.gz", "{d}/crosswoz/*.zst"]
        domain = "medical"
        [[inputs]]
        name = "gb_csv"
        paths = ["{d}/toyhom_medical/*.csv"]
        columns = {{ ask = "user", answer = "assistant" }}
        [[inputs]]
        name = "lccc"
        paths = ["{d}/lccc/toy_data.json"]
        cjk_despace = true
        [[inputs]]
        name = "docs"
        paths = ["{d}/c4/*.jsonl"]
        [[stages]]
        type = "length_filter"
        min_chars = 8
        [[stages]]
        type = "exact_dedup"
        scope = "prompt"
        [[stages]]
        type = "minhash"
        threshold = 0.5
        ngram = 3
        index = "index-{{run}}"
        [[stages]]
        type = "split"
        ratios = {{ train = 0.9, valid = 0.05, test = 0.05 }}
        [[stages]]
        type = "length_filter"
        max_chars = 3000
        [output]
        dir = "out"
        rows_per_file = 500
        formats = ["parquet", "jsonl", "llamafactory"]
        [output.shards]
        tokenizer = "{d}/tokenizers/minimind/tokenizer.json"
        template = "chatml"
        max_source_tokens = 256
        seq_len = 512
        shard_size = "256KiB"
        megatron = true
        "#,
        d = data.to_string_lossy()
    );
    // Each run has its own minhash index, so neither deduplicates against the other.
    let cfg1 = dir.path().join("one.toml");
    let cfg4 = dir.path().join("four.toml");
    std::fs::write(&cfg1, body.replace("{run}", "one")).expect("write");
    std::fs::write(&cfg4, body.replace("{run}", "four")).expect("write");
    let one = dir.path().join("one");
    let four = dir.path().join("four");
    let r1 = run_ok(
        &cfg1,
        &["--out", one.to_str().expect("utf8"), "--threads", "1"],
    );
    let r4 = run_ok(
        &cfg4,
        &["--out", four.to_str().expect("utf8"), "--threads", "4"],
    );
    let index = |run: &str| {
        std::fs::read(dir.path().join(format!("index-{run}/minhash.index"))).expect("index")
    };
    assert!(
        index("one") == index("four"),
        "the minhash index differs between 1 and 4 threads"
    );
    assert_reconciles(&r1);
    assert_eq!(r4["timings"]["threads"], 4);
    let (a, b) = (output_files(&one), output_files(&four));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (name, bytes) in &a {
        assert!(bytes == &b[name], "{name} differs between 1 and 4 threads");
    }
    assert!(
        a.keys()
            .any(|k| k.starts_with("curated/") && k.ends_with("-00001.parquet")),
        "outputs rotated: {:?}",
        a.keys()
    );
    assert!(
        a.contains_key("shards/train-00001.bin"),
        "shards rotated: {:?}",
        a.keys()
    );
    assert!(a.contains_key("shards/megatron/train_text_document.idx"));
    // Every stage saw work, so the comparison covers them all.
    for st in r1["stages"].as_array().expect("stages") {
        if st["type"] == "split" {
            continue; // assigns, never drops
        }
        assert!(
            st["dropped"].as_object().is_some_and(|d| !d.is_empty()),
            "{st}"
        );
    }
}
