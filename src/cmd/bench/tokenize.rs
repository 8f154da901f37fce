//! `sluice bench tokenize`: chat-template rendering and tokenizing.

use anyhow::Result;
use std::io::Write;

pub fn bench_tokenize(
    input: &std::path::Path,
    tokenizer: &std::path::Path,
    template: &str,
    repeat: usize,
    dump: Option<&std::path::Path>,
) -> Result<()> {
    use sluice_pipeline::tokenize::{
        encode_sample, render_text, Budget, Template, TokenizerHandle, TrainOn,
    };
    let (samples, rejected) = sluice_pipeline::bench::read_samples(input)?;
    if rejected > 0 {
        writeln!(
            std::io::stderr(),
            "note: {rejected} records of {} could not be read and are not measured",
            input.display()
        )?;
    }
    let tok = TokenizerHandle::from_file(tokenizer).map_err(anyhow::Error::msg)?;
    let tpl = Template::load(template).map_err(anyhow::Error::msg)?;
    let rendered: Vec<String> = samples.iter().map(|s| render_text(&tpl, None, s)).collect();
    if let Some(path) = dump {
        sluice_pipeline::storage::write_atomic(path, &serde_json::to_vec(&rendered)?)?;
    }
    let dtype = sluice_shards::TokenDtype::for_vocab(tok.vocab_size);
    let (mut best_full, mut best_plain, mut best_fast, mut tokens) =
        (f64::MAX, f64::MAX, f64::MAX, 0usize);
    let dir = std::env::temp_dir().join(format!("sluice-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    for _ in 0..repeat {
        let t = std::time::Instant::now();
        let mut builder = sluice_shards::ShardBuilder::new(dtype);
        tokens = 0;
        for s in &samples {
            let e = encode_sample(
                &tok,
                &tpl,
                None,
                s,
                Budget::default(),
                TrainOn::AllAssistant,
            )
            .map_err(anyhow::Error::msg)?;
            tokens += e.ids.len();
            builder.push_sequence(&e.ids, &e.mask)?;
        }
        sluice_shards::native::write_shard(&mut builder, &dir.join("bench.bin"))?;
        best_full = best_full.min(t.elapsed().as_secs_f64());
        // The baselines: the tokenizers crate encoding each whole rendered string, with
        // offsets (`encode`, what most callers use) and without (`encode_fast`).
        let t = std::time::Instant::now();
        let mut plain = 0usize;
        for r in &rendered {
            plain += tok
                .inner()
                .encode(r.as_str(), false)
                .map_err(anyhow::Error::msg)?
                .len();
        }
        best_plain = best_plain.min(t.elapsed().as_secs_f64());
        let t = std::time::Instant::now();
        for r in &rendered {
            let e = tok
                .inner()
                .encode_fast(r.as_str(), false)
                .map_err(anyhow::Error::msg)?;
            std::hint::black_box(e.len());
        }
        best_fast = best_fast.min(t.elapsed().as_secs_f64());
        if plain != tokens {
            writeln!(
                std::io::stderr(),
                "note: whole-string encoding gives {plain} tokens, segment encoding {tokens}"
            )?;
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    let n = tokens as f64;
    writeln!(
        std::io::stdout(),
        "{} samples, {} tokens, one core, best of {repeat}:\n  sluice template + tokenize + mask + shard write: {:>10.0} tokens/s\n  tokenizers encode of the rendered strings:       {:>10.0} tokens/s  (sluice × {:.2})\n  tokenizers encode_fast of the rendered strings:  {:>10.0} tokens/s  (sluice × {:.2})",
        samples.len(),
        tokens,
        n / best_full,
        n / best_plain,
        best_plain / best_full,
        n / best_fast,
        best_fast / best_full
    )?;
    Ok(())
}
