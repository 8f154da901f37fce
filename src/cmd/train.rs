//! `sluice train …` and `sluice bench train`: the command-line face of the trainer crate.

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use sluice_shards::{native::write_shard, Manifest, ShardBuilder, ShardEntry, SplitInfo};
use sluice_trainer::estimate::{estimate, Method, Optimizer, Settings, Shape};
use sluice_trainer::{ModelConfig, TrainConfig, Trainer};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `sluice train` subcommands.
#[derive(Subcommand)]
pub enum TrainCommand {
    /// Train on shards as a train file (TOML) says: SFT or continued pretraining, full or LoRA.
    Run {
        /// The train file.
        config: PathBuf,
        /// Continue from the latest checkpoint under the output directory.
        #[arg(long)]
        resume: bool,
        /// Stop after this step (the run can be resumed later); default: the configured steps.
        #[arg(long)]
        until: Option<u64>,
    },
    /// Estimate GPU memory for full fine-tuning, LoRA or QLoRA.
    Estimate {
        /// The model's config.json (file or directory); or give --params.
        #[arg(long, conflicts_with = "params")]
        model: Option<PathBuf>,
        /// Parameters, e.g. 7b, 13b, 560m, or a plain number.
        #[arg(long, required_unless_present = "model")]
        params: Option<String>,
        /// full, lora or qlora.
        #[arg(long, default_value = "full")]
        method: String,
        /// adamw, adamw8bit or sgd.
        #[arg(long, default_value = "adamw")]
        optimizer: String,
        /// bf16, fp16 or f32.
        #[arg(long, default_value = "bf16")]
        precision: String,
        /// Sequence length.
        #[arg(long, default_value_t = 2048)]
        seq_len: u64,
        /// Micro-batch size per GPU.
        #[arg(long, default_value_t = 1)]
        batch: u64,
        /// Without activation checkpointing.
        #[arg(long)]
        no_checkpointing: bool,
        /// LoRA rank.
        #[arg(long, default_value_t = 8)]
        lora_rank: u64,
        /// Projections with adapters, of the seven per layer.
        #[arg(long, default_value_t = 4)]
        lora_projections: u64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// A training step allocates and frees buffers of up to tens of MiB (logits, attention scores,
/// their gradients) many times. glibc serves those with mmap and returns them on free, so every
/// step pays fresh page faults and, with several threads, TLB shootdowns on every core
/// (`bench train` on 2 threads: 527-559 ms/step, 400-490k faults; with this 456-468 ms, 130k).
/// Here freed blocks up to 32 MiB stay in the heap for the next step. Only the training
/// commands set this: the process's peak memory stays what the step needs, while a long-running
/// service keeps glibc's defaults.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn keep_freed_buffers() {
    // SAFETY: mallopt only changes allocator parameters; it is called before training starts
    // its threads, and glibc guards its state with the arena locks either way.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_freed_buffers() {}

/// With micro-batches on threads of their own, candle's element-wise ops should run on the
/// calling thread: its barrier pool (CANDLE_NUM_THREADS, default one per core) serves one caller
/// at a time. Set before candle's first op; an explicit CANDLE_NUM_THREADS wins.
fn one_thread_per_micro_batch(accum_threads: usize) {
    if accum_threads > 1 && std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
}

/// Run a `sluice train` subcommand.
pub fn run(cmd: TrainCommand) -> Result<ExitCode> {
    if matches!(cmd, TrainCommand::Run { .. }) {
        keep_freed_buffers();
    }
    match cmd {
        TrainCommand::Run {
            config,
            resume,
            until,
        } => {
            let cfg = TrainConfig::load(&config)?;
            one_thread_per_micro_batch(cfg.train.accum_threads);
            let steps = cfg.train.steps;
            let mut trainer = Trainer::new(cfg, resume)?;
            // Rank k > 0 of a data-parallel run writes under <output>/rank-k.
            let output = trainer.config().output.clone();
            eprintln!(
                "training {} parameters ({} trained) from step {} to {}; metrics in {}",
                trainer.model().config.parameters(),
                trainer
                    .model()
                    .trainable()
                    .values()
                    .map(|v| v.elem_count() as u64)
                    .sum::<u64>(),
                trainer.state().step,
                until.unwrap_or(steps).min(steps),
                output.join("metrics.jsonl").display()
            );
            let c = trainer.config();
            let on = c.train.activation_checkpointing;
            let at_once = trainer.micro_batches_at_once();
            let mib = |b: f64| at_once as f64 * b / 1048576.0;
            eprintln!(
                "memory for activations and gradients: at most about {:.0} MiB, for {} of {} \
                 sequences of {} tokens (shorter batches need less); activation \
                 checkpointing {}, {} it about {:.0} MiB{}",
                mib(trainer.step_memory(on).total),
                if at_once > 1 {
                    format!("{at_once} micro-batches at once")
                } else {
                    "a micro-batch".to_string()
                },
                c.data.batch_size,
                c.data.seq_len,
                if on { "on" } else { "off" },
                if on { "without" } else { "with" },
                mib(trainer.step_memory(!on).total),
                if trainer.model().lora().is_some() {
                    "; with LoRA up to about 1.3 times that (candle also keeps gradients in \
                     the layers below the first adapter)"
                } else {
                    ""
                }
            );
            // One line per step on a terminal; in a log, about a hundred lines a run.
            let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
            let stop = until.unwrap_or(steps).min(steps).max(1);
            let every = if terminal { 1 } else { (stop / 100).max(1) };
            trainer.on_step(Box::new(move |p: &sluice_trainer::StepProgress| {
                if p.step.is_multiple_of(every) || p.step == p.stop {
                    let valid = p
                        .valid_loss
                        .map_or(String::new(), |v| format!("  valid {v:.4}"));
                    let eta = p.eta_s.round() as u64;
                    eprintln!(
                        "step {:>6}/{}  loss {:.4}{valid}  lr {:.2e}  grad norm {:.3}  {:>7.0} tokens/s  eta {}m{:02}s",
                        p.step,
                        p.stop,
                        p.loss,
                        p.lr,
                        p.grad_norm,
                        p.tokens_per_s,
                        eta / 60,
                        eta % 60
                    );
                }
            }));
            let s = trainer.run_until(until.unwrap_or(steps))?;
            write_training_report(&output)?;
            let mut out = std::io::stdout().lock();
            writeln!(
                out,
                "steps {}  last loss {}  valid loss {}  {:.0} tokens/s  rollbacks {}{}",
                s.steps,
                s.losses
                    .last()
                    .map_or("-".to_string(), |l| format!("{l:.4}")),
                s.valid_loss.map_or("-".to_string(), |l| format!("{l:.4}")),
                s.tokens_per_s,
                s.rollbacks.len(),
                if s.stopped_early {
                    "  (stopped early)"
                } else {
                    ""
                }
            )?;
            if s.truncated_sequences > 0 {
                writeln!(
                    out,
                    "{} sequences were longer than data.seq_len and cut at the end",
                    s.truncated_sequences
                )?;
            }
            if s.steps >= steps || s.stopped_early {
                writeln!(out, "final model: {}", s.final_dir.display())?;
            } else {
                writeln!(out, "stopped at step {}: resume with --resume", s.steps)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        TrainCommand::Estimate {
            model,
            params,
            method,
            optimizer,
            precision,
            seq_len,
            batch,
            no_checkpointing,
            lora_rank,
            lora_projections,
            json,
        } => {
            let shape = match (&model, &params) {
                (Some(path), _) => {
                    let c = ModelConfig::load(path)?;
                    Shape {
                        params: c.parameters() as f64,
                        hidden: c.hidden_size as f64,
                        layers: c.num_hidden_layers as f64,
                        heads: c.num_attention_heads as f64,
                        vocab: c.vocab_size as f64,
                    }
                }
                (None, Some(p)) => Shape::from_params(parse_count(p)?),
                (None, None) => bail!("give --model or --params"),
            };
            let settings = Settings {
                method: match method.as_str() {
                    "full" => Method::Full,
                    "lora" => Method::Lora,
                    "qlora" => Method::Qlora,
                    m => bail!("--method {m:?}: full, lora or qlora"),
                },
                optimizer: match optimizer.as_str() {
                    "adamw" => Optimizer::Adamw,
                    "adamw8bit" => Optimizer::Adamw8bit,
                    "sgd" => Optimizer::Sgd,
                    o => bail!("--optimizer {o:?}: adamw, adamw8bit or sgd"),
                },
                precision_bytes: match precision.as_str() {
                    "bf16" | "fp16" | "f16" => 2.0,
                    "f32" | "fp32" => 4.0,
                    p => bail!("--precision {p:?}: bf16, fp16 or f32"),
                },
                seq_len: seq_len as f64,
                batch: batch as f64,
                checkpointing: !no_checkpointing,
                lora_rank: lora_rank as f64,
                lora_coverage: (lora_projections.clamp(1, 7)) as f64 / 7.0,
            };
            let e = estimate(&shape, &settings);
            let mut out = std::io::stdout().lock();
            if json {
                serde_json::to_writer_pretty(
                    &mut out,
                    &serde_json::json!({"shape": shape, "settings": settings, "estimate": e}),
                )?;
                writeln!(out)?;
                return Ok(ExitCode::SUCCESS);
            }
            let gb = |b: f64| b / 1e9;
            writeln!(
                out,
                "{:.2}B parameters (hidden {:.0}, {:.0} layers), {method}, {optimizer}, {precision}, \
                 seq {seq_len} × batch {batch}, checkpointing {}",
                shape.params / 1e9,
                shape.hidden,
                shape.layers,
                if no_checkpointing { "off" } else { "on" }
            )?;
            for (what, v) in [
                ("weights", e.weights),
                ("gradients", e.gradients),
                ("master weights (f32)", e.master_weights),
                ("optimizer moments", e.optimizer),
                ("activations", e.activations),
                ("overhead", e.overhead),
            ] {
                writeln!(out, "  {what:<22} {:>9.1} GB", gb(v))?;
            }
            writeln!(
                out,
                "  {:<22} {:>9.1} GB  ({:.1} GB per billion parameters; {:.0}M trained)",
                "total",
                gb(e.total),
                gb(e.total) / (shape.params / 1e9),
                e.trainable_params / 1e6
            )?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn parse_count(s: &str) -> Result<f64> {
    let t = s.trim().to_ascii_lowercase();
    let (num, mul) = match t.chars().last() {
        Some('b') => (&t[..t.len() - 1], 1e9),
        Some('m') => (&t[..t.len() - 1], 1e6),
        Some('k') => (&t[..t.len() - 1], 1e3),
        _ => (t.as_str(), 1.0),
    };
    let v: f64 = num
        .parse()
        .with_context(|| format!("--params {s:?}: a number such as 7b or 560m"))?;
    if v.is_nan() || v <= 0.0 {
        bail!("--params {s:?} must be positive");
    }
    Ok(v * mul)
}

/// `sluice bench train` options.
#[derive(clap::Args)]
pub struct BenchTrainArgs {
    /// Scratch folder (shards, model config, outputs; a PyTorch comparison reads it too).
    #[arg(long)]
    pub dir: PathBuf,
    /// Residual width.
    #[arg(long, default_value_t = 256)]
    pub hidden: usize,
    /// Layers.
    #[arg(long, default_value_t = 4)]
    pub layers: usize,
    /// Attention heads.
    #[arg(long, default_value_t = 8)]
    pub heads: usize,
    /// Key/value heads.
    #[arg(long, default_value_t = 4)]
    pub kv_heads: usize,
    /// Vocabulary.
    #[arg(long, default_value_t = 8192)]
    pub vocab: usize,
    /// Tokens per sequence.
    #[arg(long, default_value_t = 256)]
    pub seq_len: usize,
    /// Sequences per step.
    #[arg(long, default_value_t = 4)]
    pub batch: usize,
    /// Timed steps (after two warm-up steps).
    #[arg(long, default_value_t = 10)]
    pub steps: u64,
    /// With activation checkpointing (each layer recomputed in the backward pass).
    #[arg(long)]
    pub checkpointing: bool,
    /// Also time data parallel on this machine: this many processes (ranks) splitting the batch
    /// and the threads (RAYON_NUM_THREADS, default all cores), gradients summed over loopback TCP.
    #[arg(long, default_value_t = 1)]
    pub ranks: usize,
    /// Split the batch into this many micro-batches computed at once, one thread each
    /// (`train.accum_threads`; the one-process timing then uses this).
    #[arg(long, default_value_t = 1)]
    pub accum_threads: usize,
}

/// Training tokens per second on this machine for a small Llama-shaped model.
pub fn bench_train(a: &BenchTrainArgs) -> Result<()> {
    keep_freed_buffers();
    // Every check before any timing.
    if a.accum_threads == 0 || a.ranks == 0 {
        bail!("--accum-threads and --ranks must be at least 1");
    }
    for (what, n) in [("--accum-threads", a.accum_threads), ("--ranks", a.ranks)] {
        if !a.batch.is_multiple_of(n) {
            bail!("--batch {} does not split into {what} {n}", a.batch);
        }
    }
    if a.ranks > 1 && a.accum_threads > 1 {
        bail!("give --ranks or --accum-threads, not both");
    }
    one_thread_per_micro_batch(a.accum_threads);
    #[allow(clippy::disallowed_methods)] // a scratch folder of the benchmark
    {
        std::fs::create_dir_all(&a.dir)?;
        let intermediate = (a.hidden * 8 / 3).div_ceil(64) * 64;
        let config = serde_json::json!({
            "model_type": "llama",
            "vocab_size": a.vocab,
            "hidden_size": a.hidden,
            "intermediate_size": intermediate,
            "num_hidden_layers": a.layers,
            "num_attention_heads": a.heads,
            "num_key_value_heads": a.kv_heads,
            "rms_norm_eps": 1e-5,
            "rope_theta": 10000.0,
            "tie_word_embeddings": false,
            "hidden_act": "silu",
        });
        std::fs::write(a.dir.join("config.json"), config.to_string())?;
        let warmup = 2u64;
        let total = warmup + a.steps;
        write_random_shards(&a.dir.join("shards"), a, (total as usize) * a.batch)?;
        for scratch in ["out", "init"] {
            let d = a.dir.join(scratch);
            if d.exists() {
                std::fs::remove_dir_all(&d)?;
            }
        }
        let toml = bench_train_file(
            a,
            (a.batch / a.accum_threads, a.accum_threads),
            total,
            &format!("accum_threads = {}\n", a.accum_threads),
        );
        std::fs::write(a.dir.join("train.toml"), toml)?;
    }
    let cfg = TrainConfig::load(&a.dir.join("train.toml"))?;
    let params = ModelConfig::load(&a.dir.join("config.json"))?.parameters();
    let mut trainer = Trainer::new(cfg, false)?;
    trainer.save_model(&a.dir.join("init"))?;
    let started = std::time::Instant::now();
    trainer.run_until(2)?;
    let t0 = std::time::Instant::now();
    let s = trainer.run()?;
    let secs = t0.elapsed().as_secs_f64();
    let tokens = a.steps as f64 * (a.batch * (a.seq_len - 1)) as f64;
    println!(
        "sluice (candle, CPU, f32, {} threads{}{}): {:.1}M parameters, batch {} × {} tokens: \
         {:.0} tokens/s, {:.0} ms/step (forward, backward, clip, AdamW); loss {:.4} -> {:.4}; \
         {:.1} s in all; a micro-batch holds about {:.0} MiB (estimate)",
        candle_core_threads(),
        if a.accum_threads > 1 {
            format!(", {} micro-batches at once", a.accum_threads)
        } else {
            String::new()
        },
        if a.checkpointing {
            ", activation checkpointing"
        } else {
            ""
        },
        params as f64 / 1e6,
        a.batch,
        a.seq_len,
        tokens / secs,
        secs * 1e3 / a.steps as f64,
        s.losses.first().copied().unwrap_or(f64::NAN),
        s.losses.last().copied().unwrap_or(f64::NAN),
        started.elapsed().as_secs_f64(),
        trainer.step_memory(a.checkpointing).total / 1048576.0
    );
    if a.ranks > 1 {
        bench_ranks(a, s.losses.first().copied())?;
    }
    println!(
        "baseline: python3 trainer/bench/torch_step.py {} (same model, batch and step in PyTorch)",
        a.dir.display()
    );
    Ok(())
}

/// The same steps as `a.ranks` processes of `batch / ranks` sequences each (one shard per rank
/// holding its part of every batch, so the ranks together train on the one-process batches) and
/// `threads / ranks` threads each; the step time is rank 0's, from its metrics.
fn bench_ranks(a: &BenchTrainArgs, single_first_loss: Option<f64>) -> Result<()> {
    let n = a.ranks;
    let threads = (candle_core_threads() / n).max(1);
    let dir = a.dir.join(format!("ranks-{n}"));
    #[allow(clippy::disallowed_methods)] // a scratch folder of the benchmark
    {
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(&dir)?;
        std::fs::copy(a.dir.join("config.json"), dir.join("config.json"))?;
    }
    let total = 2 + a.steps;
    let seqs = random_sequences(a, total as usize * a.batch);
    let per = a.batch / n;
    let parts: Vec<Vec<Vec<u32>>> = (0..n)
        .map(|k| {
            seqs.chunks(a.batch)
                .flat_map(|batch| batch[k * per..(k + 1) * per].to_vec())
                .collect()
        })
        .collect();
    write_shards(&dir.join("shards"), a, &parts)?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let exe = std::env::current_exe()?;
    let mut children = Vec::new();
    for k in 0..n {
        let toml = bench_train_file(
            a,
            (per, 1),
            total,
            &format!("rank = {k}\nworld = {n}\nmaster = \"127.0.0.1:{port}\"\n"),
        );
        let file = dir.join(format!("train-rank-{k}.toml"));
        #[allow(clippy::disallowed_methods)]
        std::fs::write(&file, toml)?;
        children.push(
            std::process::Command::new(&exe)
                .arg("train")
                .arg("run")
                .arg(&file)
                .env("RAYON_NUM_THREADS", threads.to_string())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .with_context(|| format!("starting rank {k}"))?,
        );
    }
    for (k, c) in children.into_iter().enumerate() {
        let out = c.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "rank {k} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    let metrics = std::fs::read_to_string(dir.join("out/metrics.jsonl"))?;
    let steps: Vec<serde_json::Value> = metrics
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.get("tokens_per_s").is_some())
        .collect();
    let timed: Vec<f64> = steps
        .iter()
        .filter(|v| v["step"].as_u64().is_some_and(|s| s > 2))
        .filter_map(|v| Some(v["tokens"].as_f64()? / v["tokens_per_s"].as_f64()?))
        .collect();
    if timed.is_empty() {
        bail!("rank 0 logged no timed steps");
    }
    let secs = timed.iter().sum::<f64>() / timed.len() as f64;
    // The first timed step's loss: the one-process run's first timed step trained the same
    // sequences.
    let first = steps
        .iter()
        .find(|v| v["step"].as_u64() == Some(3))
        .and_then(|v| v["loss"].as_f64());
    println!(
        "sluice, {n} ranks x {threads} thread(s) (data parallel over loopback TCP): batch {} × {} \
         tokens: {:.0} tokens/s, {:.0} ms/step (rank 0's steps 3..{total}, the sum of gradients \
         included); step 3 loss {:.4} (one process: {:.4})",
        a.batch,
        a.seq_len,
        (a.batch * (a.seq_len - 1)) as f64 / secs,
        secs * 1e3,
        first.unwrap_or(f64::NAN),
        single_first_loss.unwrap_or(f64::NAN)
    );
    Ok(())
}

fn candle_core_threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
}

/// The benchmark's train file: micro-batches of `batch_size` sequences, `grad_accum` of them a
/// step, `steps` steps, `extra` lines appended to `[train]`.
fn bench_train_file(
    a: &BenchTrainArgs,
    (batch_size, grad_accum): (usize, usize),
    steps: u64,
    extra: &str,
) -> String {
    format!(
        "output = \"out\"\n[model]\nconfig = \"config.json\"\n[data]\nshards = \"shards\"\n\
         seq_len = {}\nbatch_size = {batch_size}\ngrad_accum = {grad_accum}\n[optim]\nlr = 1e-3\n[train]\nsteps = {steps}\n\
         device = \"cpu\"\nprecision = \"f32\"\nactivation_checkpointing = {}\n{extra}",
        a.seq_len, a.checkpointing
    )
}

/// `count` random sequences of `a.seq_len` tokens (a fixed generator: the same every run).
fn random_sequences(a: &BenchTrainArgs, count: usize) -> Vec<Vec<u32>> {
    let mut state = 0x5eed_u64;
    (0..count)
        .map(|_| {
            (0..a.seq_len)
                .map(|_| {
                    state = state
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1_442_695_040_888_963_407);
                    ((state >> 33) % a.vocab as u64) as u32
                })
                .collect()
        })
        .collect()
}

fn write_random_shards(dir: &Path, a: &BenchTrainArgs, sequences: usize) -> Result<()> {
    write_shards(dir, a, &[random_sequences(a, sequences)])
}

/// One native shard per part (`train-0000k.bin`) and the manifest of their train split.
fn write_shards(dir: &Path, a: &BenchTrainArgs, parts: &[Vec<Vec<u32>>]) -> Result<()> {
    #[allow(clippy::disallowed_methods)]
    std::fs::create_dir_all(dir)?;
    let mut split = SplitInfo::default();
    for (k, part) in parts.iter().enumerate() {
        let mut b = ShardBuilder::new(sluice_shards::TokenDtype::for_vocab(a.vocab));
        for tokens in part {
            b.push_sequence(tokens, &vec![1; tokens.len()])?;
        }
        let file = format!("train-{k:05}.bin");
        let stats = write_shard(&mut b, &dir.join(&file))?;
        split.samples += stats.samples;
        split.sequences += stats.sequences;
        split.tokens += stats.tokens;
        split.trained_tokens += stats.trained_tokens;
        split.shards.push(ShardEntry { file, stats });
    }
    Manifest {
        format: "sluice-shards".into(),
        version: 1,
        tokenizer: sluice_shards::TokenizerInfo {
            sha256: "random".into(),
            vocab_size: a.vocab as u64,
            eos_id: None,
            source: None,
        },
        template: "none".into(),
        dtype: sluice_shards::TokenDtype::for_vocab(a.vocab),
        seq_len: Some(a.seq_len as u64),
        seed: 0,
        splits: [("train".to_string(), split)].into(),
    }
    .save(dir)?;
    Ok(())
}

/// `report.html` beside `metrics.jsonl`: the run's curves and events as one page (written after
/// every `sluice train run`, resumed runs included, from the whole metrics file).
fn write_training_report(output: &std::path::Path) -> Result<()> {
    let path = output.join("metrics.jsonl");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let lines: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let name = output
        .file_name()
        .map_or("run".into(), |n| n.to_string_lossy().into_owned());
    let page = sluice_pipeline::report_html::training(&name, &lines);
    sluice_pipeline::storage::write_atomic(&output.join("report.html"), page.as_bytes())?;
    Ok(())
}
