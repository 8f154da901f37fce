//! The training loop: micro-batches with gradient accumulation, AdamW, the schedule, clipping,
//! validation and early stopping, checkpoints with exact resume, and spike rollback.

use crate::checkpoint::{self, dtype_named, load_tensors, save_tensors, write_text};
use crate::config::{ModelConfig, TrainConfig};
use crate::data::{Batch, Cursor, Loader};
use crate::model::{decays, masked_nll_sum, Model};
use crate::optim::{clip_to, learning_rate, AdamW};
use crate::rng::Rng;
use crate::{Error, Result};
use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// A rollback past a loss or gradient-norm spike.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollback {
    /// The step whose loss or gradient norm spiked (it was not applied).
    pub at_step: u64,
    /// The checkpoint step the run went back to.
    pub to_step: u64,
    /// Loss of the spiking step.
    pub loss: f64,
    /// Gradient norm of the spiking step (before clipping).
    pub grad_norm: f64,
    /// What tripped: `loss` or `grad_norm`, with the recent mean it was compared to.
    pub reason: String,
    /// First skipped position (the checkpoint's cursor).
    pub skipped_from: Cursor,
    /// First position read after the rollback (just past the spiking step's data).
    pub skipped_to: Cursor,
    /// Sequences skipped.
    pub skipped_sequences: u64,
}

/// Everything besides tensors that a checkpoint restores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// Optimizer steps done.
    pub step: u64,
    /// Where the training data continues.
    pub cursor: Cursor,
    /// Dropout generator state.
    pub rng: u64,
    /// AdamW's update count.
    pub adam_t: u64,
    /// (loss, grad norm) of recent steps, oldest first: the spike detector's window.
    pub recent: Vec<[f64; 2]>,
    /// Best validation loss so far and its step.
    pub best_valid: Option<(u64, f64)>,
    /// Evaluations since the best.
    pub evals_without_improvement: u64,
    /// Rollbacks so far.
    pub rollbacks: Vec<Rollback>,
    /// Input tokens trained on.
    pub tokens_seen: u64,
    /// Sequences longer than `data.seq_len`, cut at the end (make shards with `seq_len` or
    /// token budgets no longer than the trainer's to avoid it).
    #[serde(default)]
    pub truncated_sequences: u64,
}

/// What a run did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Steps completed in total (including those before a resume).
    pub steps: u64,
    /// Training loss of each step this process applied, in order.
    pub losses: Vec<f64>,
    /// Last validation loss, if validation ran.
    pub valid_loss: Option<f64>,
    /// Whether early stopping ended the run.
    pub stopped_early: bool,
    /// Every rollback of the run.
    pub rollbacks: Vec<Rollback>,
    /// Where the final weights are.
    pub final_dir: PathBuf,
    /// Input tokens per second over this process's steps.
    pub tokens_per_s: f64,
    /// Sequences cut to `data.seq_len` over the whole run.
    pub truncated_sequences: u64,
}

/// Pick the device named by the configuration.
pub fn device(spec: &str) -> Result<Device> {
    let cuda = |i: usize| {
        Device::new_cuda(i).map_err(|e| {
            Error::Config(format!(
                "device {spec:?}: {e} (build with `--features cuda` on a machine with CUDA)"
            ))
        })
    };
    match spec {
        "cpu" => Ok(Device::Cpu),
        "auto" if candle_core::utils::cuda_is_available() => cuda(0),
        "auto" => Ok(Device::Cpu),
        "cuda" => cuda(0),
        s if s.starts_with("cuda:") => cuda(
            s[5..]
                .parse()
                .map_err(|_| Error::Config(format!("device {s:?}: cuda:N expected")))?,
        ),
        other => Err(Error::Config(format!(
            "device {other:?}: cpu, cuda, cuda:N or auto"
        ))),
    }
}

/// A training run in progress.
pub struct Trainer {
    cfg: TrainConfig,
    model: Model,
    opt: AdamW,
    loader: Loader,
    rng: Rng,
    state: State,
    rank: usize,
    world: usize,
    has_valid: bool,
    metrics: std::fs::File,
    progress: Option<OnStep>,
    /// Set from outside to stop before the next step ([`Trainer::stop_when`]).
    stop: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
    /// The other ranks, when the world has more than one.
    comm: Option<crate::dist::Comm>,
    /// One single-thread pool per concurrent micro-batch (`train.accum_threads` > 1).
    pools: Vec<rayon::ThreadPool>,
}

/// A step callback (see [`Trainer::on_step`]).
pub type OnStep = Box<dyn FnMut(&StepProgress) + Send>;

/// One finished optimizer step, as a progress callback sees it.
#[derive(Debug, Clone)]
pub struct StepProgress {
    /// Steps done.
    pub step: u64,
    /// Steps this run goes to.
    pub stop: u64,
    /// The step's training loss.
    pub loss: f64,
    /// The step's learning rate.
    pub lr: f64,
    /// The gradient's global norm before clipping.
    pub grad_norm: f64,
    /// Tokens per second over this run so far.
    pub tokens_per_s: f64,
    /// Seconds left at this run's pace so far.
    pub eta_s: f64,
    /// The validation loss, on steps that evaluate.
    pub valid_loss: Option<f64>,
}

const DROPOUT_STREAM: u64 = 0x000D_5090;

impl Trainer {
    /// Build the model, optimizer and data stream; with `resume`, continue from the latest
    /// checkpoint under the output directory when there is one.
    pub fn new(mut cfg: TrainConfig, resume: bool) -> Result<Trainer> {
        cfg.validate()?;
        let (rank, world) = cfg.rank_world()?;
        // Data parallel: every rank reads its share of the shards and keeps its own metrics and
        // checkpoints (rank k > 0 under <output>/rank-k; the weights are the same everywhere,
        // the data cursors are not), and gradients are summed across ranks every step.
        let comm = if world > 1 {
            if rank > 0 {
                cfg.output = cfg.output.join(format!("rank-{rank}"));
            }
            Some(crate::dist::Comm::connect(rank, world, &cfg.master())?)
        } else {
            None
        };
        let dev = device(&cfg.train.device)?;
        let dtype = match cfg.train.precision.as_str() {
            "auto" if dev.is_cuda() => DType::BF16,
            "auto" => DType::F32,
            p => dtype_named(p)?,
        };
        let model_cfg = match &cfg.model.config {
            Some(p) => Some(ModelConfig::load(p)?),
            None => None,
        };
        let mut init_rng = Rng::new(cfg.train.seed);
        let mut model = match &cfg.model.weights {
            Some(dir) => Model::from_pretrained(dir, model_cfg, &dev, dtype, cfg.data.seq_len)?,
            None => Model::from_scratch(
                model_cfg.ok_or_else(|| Error::Config("model.config is required".into()))?,
                cfg.model.init_std,
                &mut init_rng,
                &dev,
                dtype,
                cfg.data.seq_len,
            )?,
        };
        if let Some(lora) = &cfg.lora {
            model.attach_lora(lora, &mut init_rng)?;
        }
        let loader = Loader::new(
            &cfg.data.shards,
            &cfg.data.train_split,
            rank,
            world,
            Cursor::default(),
        )?;
        let vocab = loader.manifest().tokenizer.vocab_size;
        if vocab > model.config.vocab_size as u64 {
            return Err(Error::Data(format!(
                "the shards' tokenizer has {vocab} ids, the model's vocabulary {}",
                model.config.vocab_size
            )));
        }
        let has_valid = cfg.train.eval_every > 0
            && loader
                .manifest()
                .splits
                .get(&cfg.data.valid_split)
                .is_some_and(|s| !s.shards.is_empty());
        let opt = AdamW::new(cfg.optim.clone(), model.trainable(), |_, shape| {
            decays(shape)
        })?;
        std::fs::create_dir_all(&cfg.output).map_err(|e| Error::Io(cfg.output.clone(), e))?;
        // Each rank its own dropout stream (rank 0's is the single-process one).
        let rng = Rng::new(cfg.train.seed ^ DROPOUT_STREAM ^ ((rank as u64) << 32));
        let state = State {
            step: 0,
            cursor: Cursor::default(),
            rng: rng.state(),
            adam_t: 0,
            recent: Vec::new(),
            best_valid: None,
            evals_without_improvement: 0,
            rollbacks: Vec::new(),
            tokens_seen: 0,
            truncated_sequences: 0,
        };
        let metrics_path = cfg.output.join("metrics.jsonl");
        let mut t = Trainer {
            metrics: open_metrics(&metrics_path, None)?,
            cfg,
            model,
            opt,
            loader,
            rng,
            state,
            rank,
            world,
            has_valid,
            progress: None,
            stop: None,
            comm,
            pools: Vec::new(),
        };
        if t.cfg.train.accum_threads > 1 {
            for _ in 0..t.cfg.train.accum_threads.min(t.cfg.data.grad_accum) {
                t.pools.push(
                    rayon::ThreadPoolBuilder::new()
                        .num_threads(1)
                        .build()
                        .map_err(|e| Error::Config(format!("a micro-batch thread: {e}")))?,
                );
            }
        }
        match checkpoint::latest(&t.cfg.output)? {
            Some(dir) if resume => {
                t.restore(&dir)?;
                t.metrics = open_metrics(&metrics_path, Some(t.state.step))?;
            }
            Some(dir) => {
                return Err(Error::Config(format!(
                    "{} holds checkpoint {}: resume it (--resume) or choose an empty output",
                    t.cfg.output.display(),
                    dir.display()
                )))
            }
            None => {
                t.metrics = open_metrics(&metrics_path, Some(0))?;
            }
        }
        if let Some(c) = t.comm.as_mut() {
            // Every rank must start from the same step (each resumed its own checkpoint).
            let mut steps = [t.state.step as f64];
            c.sum_f64(&mut steps)?;
            if steps[0] != t.state.step as f64 * world as f64 {
                return Err(Error::Config(format!(
                    "data parallel: rank {rank} is at step {}, other ranks elsewhere: resume every rank from the same checkpoint",
                    t.state.step
                )));
            }
        }
        Ok(t)
    }

    /// The model.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The run's configuration.
    pub fn config(&self) -> &TrainConfig {
        &self.cfg
    }

    /// The state.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// Micro-batches computed at once (`train.accum_threads`, at most `data.grad_accum`).
    pub fn micro_batches_at_once(&self) -> usize {
        self.pools.len().max(1)
    }

    /// What one micro-batch holds beyond weights and optimizer state, with activation
    /// checkpointing on or off ([`crate::estimate::step_memory`]).
    pub fn step_memory(&self, checkpointing: bool) -> crate::estimate::StepMemory {
        let m = &self.model;
        let shape = crate::estimate::StepShape {
            rows: self.cfg.data.batch_size,
            // A batch holds seq_len − 1 positions (inputs and their next-token targets).
            seq_len: self.cfg.data.seq_len - 1,
            precision_bytes: m.dtype().size_in_bytes(),
            fused: m.device().is_cpu() && m.dtype() == DType::F32,
            checkpointing,
            trainable_params: m.trainable().values().map(|v| v.elem_count()).sum(),
            lora: m.lora().cloned(),
        };
        crate::estimate::step_memory(&m.config, &shape)
    }

    fn spike_detection(&self) -> bool {
        self.cfg.train.spike_loss_factor > 0.0 || self.cfg.train.spike_grad_factor > 0.0
    }

    /// Call `f` after every optimizer step (the CLI prints a line per step from it).
    pub fn on_step(&mut self, f: OnStep) {
        self.progress = Some(f);
    }

    /// Stop before the next step once `flag` is set (a service cancelling or stopping): the run
    /// ends as an interruption does, with a checkpoint at the last step done, so a new
    /// [`Trainer`] resumes it.
    pub fn stop_when(&mut self, flag: std::sync::Arc<std::sync::atomic::AtomicBool>) {
        self.stop = Some(flag);
    }

    /// Train to the configured number of steps (or an early stop) and save the final model.
    pub fn run(&mut self) -> Result<Summary> {
        self.run_until(self.cfg.train.steps)
    }

    /// Train until step `stop` (at most the configured steps). The final model is saved only
    /// when the run is complete; stopping earlier is what an interruption looks like.
    pub fn run_until(&mut self, stop: u64) -> Result<Summary> {
        let stop = stop.min(self.cfg.train.steps);
        if self.spike_detection() && checkpoint::latest(&self.cfg.output)?.is_none() {
            self.save_checkpoint()?;
        }
        let mut losses = Vec::new();
        let mut valid_loss = None;
        let mut stopped_early = false;
        let started = Instant::now();
        let mut tokens = 0u64;
        let mut saved_at = checkpoint::latest(&self.cfg.output)?.map(|_| self.state.step);
        while self.state.step < stop {
            if self
                .stop
                .as_ref()
                .is_some_and(|f| f.load(std::sync::atomic::Ordering::SeqCst))
            {
                if saved_at != Some(self.state.step) {
                    self.save_checkpoint()?;
                }
                break;
            }
            let t0 = Instant::now();
            let from = self.loader.cursor();
            let out = match self.forward_backward() {
                // Stopped mid-step: the step is dropped; the last checkpoint stands.
                Err(Error::Interrupted) => break,
                r => r?,
            };
            let loss = out.loss;
            if let Some(reason) = self.spike(loss, out.grad_norm) {
                self.rollback(from, loss, out.grad_norm, reason)?;
                continue;
            }
            let mut grads = out.grads;
            clip_to(&mut grads, out.grad_norm, self.cfg.optim.clip)?;
            let lr = learning_rate(
                self.cfg.optim.lr,
                self.cfg.optim.min_lr_ratio,
                self.cfg.optim.warmup_steps,
                self.cfg.train.steps,
                self.state.step,
            );
            self.opt.step(self.model.trainable(), &grads, lr)?;
            self.state.step += 1;
            self.state.adam_t = self.opt.t;
            self.state.cursor = self.loader.cursor();
            self.state.rng = self.rng.state();
            self.state.tokens_seen += out.tokens as u64;
            self.state.truncated_sequences += out.truncated;
            self.state.recent.push([loss, out.grad_norm]);
            let window = self.cfg.train.spike_window.max(1);
            if self.state.recent.len() > window {
                self.state.recent.remove(0);
            }
            tokens += out.tokens as u64;
            losses.push(loss);
            let secs = t0.elapsed().as_secs_f64().max(1e-9);
            self.log(serde_json::json!({
                "step": self.state.step,
                "loss": loss,
                "lr": lr,
                "grad_norm": out.grad_norm,
                "tokens": out.tokens,
                "trained_tokens": out.trained,
                "tokens_per_s": out.tokens as f64 / secs,
                "truncated_sequences": out.truncated,
            }))?;
            let step = self.state.step;
            if self.has_valid && step.is_multiple_of(self.cfg.train.eval_every) {
                let v = self.validate()?;
                valid_loss = Some(v);
                let improved = self
                    .state
                    .best_valid
                    .is_none_or(|(_, best)| v < best - self.cfg.train.early_stop_min_delta);
                if improved {
                    self.state.best_valid = Some((step, v));
                    self.state.evals_without_improvement = 0;
                    if self.cfg.train.early_stop_patience > 0 {
                        self.save_model(&self.cfg.output.join("best"))?;
                    }
                } else {
                    self.state.evals_without_improvement += 1;
                }
                self.log(serde_json::json!({"step": step, "valid_loss": v}))?;
                if self.cfg.train.early_stop_patience > 0
                    && self.state.evals_without_improvement >= self.cfg.train.early_stop_patience
                {
                    stopped_early = true;
                    self.log(serde_json::json!({
                        "step": step, "event": "early_stop",
                        "best_step": self.state.best_valid.map(|b| b.0),
                        "best_valid_loss": self.state.best_valid.map(|b| b.1),
                    }))?;
                }
            }
            if let Some(f) = self.progress.as_mut() {
                let elapsed = started.elapsed().as_secs_f64().max(1e-9);
                let done = losses.len() as f64;
                f(&StepProgress {
                    step,
                    stop,
                    loss,
                    lr,
                    grad_norm: out.grad_norm,
                    tokens_per_s: tokens as f64 / elapsed,
                    eta_s: elapsed / done * stop.saturating_sub(step) as f64,
                    valid_loss: if self.has_valid && step.is_multiple_of(self.cfg.train.eval_every)
                    {
                        valid_loss
                    } else {
                        None
                    },
                });
            }
            let every = self.cfg.train.checkpoint_every;
            // Stopping before the end (`--until`) leaves a checkpoint where it stopped, so a
            // resumed run recomputes nothing.
            if stopped_early
                || (every > 0 && step.is_multiple_of(every))
                || step == self.cfg.train.steps
                || step == stop
            {
                self.save_checkpoint()?;
                saved_at = Some(step);
            }
            if stopped_early {
                break;
            }
        }
        let final_dir = self.cfg.output.join("final");
        if stopped_early || self.state.step >= self.cfg.train.steps {
            self.save_model(&final_dir)?;
        }
        let summary = Summary {
            steps: self.state.step,
            losses,
            valid_loss,
            stopped_early,
            rollbacks: self.state.rollbacks.clone(),
            final_dir,
            tokens_per_s: tokens as f64 / started.elapsed().as_secs_f64().max(1e-9),
            truncated_sequences: self.state.truncated_sequences,
        };
        if stopped_early || self.state.step >= self.cfg.train.steps {
            let mut text =
                serde_json::to_string_pretty(&summary).map_err(|e| Error::Data(e.to_string()))?;
            text.push('\n');
            write_text(&self.cfg.output.join("summary.json"), &text)?;
        }
        Ok(summary)
    }

    fn spike(&self, loss: f64, grad: f64) -> Option<String> {
        let t = &self.cfg.train;
        if !self.spike_detection() || self.state.recent.len() < t.spike_window {
            return None;
        }
        let n = self.state.recent.len() as f64;
        let mean_loss = self.state.recent.iter().map(|r| r[0]).sum::<f64>() / n;
        let mean_grad = self.state.recent.iter().map(|r| r[1]).sum::<f64>() / n;
        if !loss.is_finite()
            || (t.spike_loss_factor > 0.0 && loss > t.spike_loss_factor * mean_loss)
        {
            return Some(format!(
                "loss {loss:.4} against a recent mean of {mean_loss:.4}"
            ));
        }
        if !grad.is_finite()
            || (t.spike_grad_factor > 0.0 && grad > t.spike_grad_factor * mean_grad)
        {
            return Some(format!(
                "grad_norm {grad:.4} against a recent mean of {mean_grad:.4}"
            ));
        }
        None
    }

    fn rollback(&mut self, from: Cursor, loss: f64, grad: f64, reason: String) -> Result<()> {
        let skipped_to = self.loader.cursor();
        let dir = checkpoint::latest(&self.cfg.output)?.ok_or_else(|| {
            Error::Data("a spike needs a checkpoint to roll back to and there is none".into())
        })?;
        let mut rollbacks = self.state.rollbacks.clone();
        let at_step = self.state.step + 1;
        self.restore(&dir)?;
        let skipped_from = self.state.cursor;
        let skipped = self.count_between(skipped_from, skipped_to)?;
        debug_assert!(from >= skipped_from);
        let rb = Rollback {
            at_step,
            to_step: self.state.step,
            loss,
            grad_norm: grad,
            reason,
            skipped_from,
            skipped_to,
            skipped_sequences: skipped,
        };
        self.log(serde_json::json!({"step": at_step, "event": "rollback", "rollback": &rb}))?;
        rollbacks.push(rb);
        if rollbacks.len() > self.cfg.train.max_rollbacks {
            return Err(Error::Diverged(format!(
                "{} rollbacks, more than train.max_rollbacks = {}; the last: {:?}",
                rollbacks.len(),
                self.cfg.train.max_rollbacks,
                rollbacks.last()
            )));
        }
        self.state.rollbacks = rollbacks;
        self.state.cursor = skipped_to;
        self.loader.seek(skipped_to);
        Ok(())
    }

    fn count_between(&self, from: Cursor, to: Cursor) -> Result<u64> {
        let mut l = Loader::new(
            &self.cfg.data.shards,
            &self.cfg.data.train_split,
            self.rank,
            self.world,
            from,
        )?;
        let mut n = 0;
        while l.cursor() < to {
            l.next_sequence()?;
            n += 1;
        }
        Ok(n)
    }

    fn forward_backward(&mut self) -> Result<StepOut> {
        let d = &self.cfg.data;
        let mut batches = Vec::with_capacity(d.grad_accum);
        let mut truncated = 0u64;
        let stop = self.stop.clone();
        let stopped = || {
            stop.as_ref()
                .is_some_and(|f| f.load(std::sync::atomic::Ordering::SeqCst))
        };
        for _ in 0..d.grad_accum {
            if stopped() {
                return Err(Error::Interrupted);
            }
            let seqs = (0..d.batch_size)
                .map(|_| self.loader.next_sequence())
                .collect::<Result<Vec<_>>>()?;
            truncated += seqs.iter().filter(|s| s.tokens.len() > d.seq_len).count() as u64;
            batches.push(Batch::new(&seqs, d.seq_len, self.model.config.vocab_size)?);
        }
        let mut trained: usize = batches.iter().map(Batch::trained).sum();
        let mut all_tokens: usize = batches.iter().map(|b| b.tokens).sum();
        if let Some(c) = self.comm.as_mut() {
            // The loss is a mean over every rank's trained tokens: each rank scales its sum by
            // the global count, so the summed gradients are the gradient of the whole batch.
            let mut counts = [trained as f64, all_tokens as f64];
            c.sum_f64(&mut counts)?;
            trained = counts[0] as usize;
            all_tokens = counts[1] as usize;
        }
        let denom = trained.max(1) as f64;
        let mut grads: BTreeMap<String, Tensor> = BTreeMap::new();
        let mut loss = 0f64;
        let mut tokens: usize = batches.iter().map(|b| b.tokens).sum();
        let recompute = self.cfg.train.activation_checkpointing;
        let inputs = batches
            .iter()
            .map(|b| self.targets(b))
            .collect::<Result<Vec<_>>>()?;
        // Summed in micro-batch order, however they were computed; one at a time, one
        // micro-batch's gradients are added as soon as they exist (never grad_accum sets held).
        if self.pools.len() > 1 && batches.len() > 1 {
            for (l, g) in self.concurrent_micro_batches(&batches, &inputs, denom, recompute)? {
                loss += l;
                for (name, g) in g {
                    crate::grads::add(&mut grads, name, g)?;
                }
            }
        } else {
            for (b, (targets, mask)) in batches.iter().zip(&inputs) {
                if stopped() {
                    return Err(Error::Interrupted);
                }
                let (l, g) = self.model.loss_and_grads(
                    b,
                    targets,
                    mask,
                    denom,
                    Some(&mut self.rng),
                    recompute,
                )?;
                loss += l;
                for (name, g) in g {
                    crate::grads::add(&mut grads, name, g)?;
                }
            }
        }
        if self.comm.is_some() {
            grads = self.sum_across_ranks(grads)?;
            tokens = all_tokens;
            let mut l = [loss];
            if let Some(c) = self.comm.as_mut() {
                c.sum_f64(&mut l)?;
            }
            loss = l[0];
        }
        let grad_norm = crate::optim::grad_norm(&grads)?;
        Ok(StepOut {
            loss,
            grad_norm,
            grads,
            tokens,
            trained,
            truncated,
        })
    }

    /// Each micro-batch's loss and gradients, computed `pools.len()` at a time: consecutive
    /// micro-batches per thread, each thread inside its own single-thread pool, results in
    /// micro-batch order. Each micro-batch draws LoRA dropout from a generator seeded from the
    /// run's, so the outcome does not depend on scheduling.
    fn concurrent_micro_batches(
        &mut self,
        batches: &[Batch],
        inputs: &[(Tensor, Tensor)],
        denom: f64,
        recompute: bool,
    ) -> Result<Vec<(f64, crate::grads::Grads)>> {
        let seeds: Vec<u64> = batches.iter().map(|_| self.rng.next_u64()).collect();
        let per = batches.len().div_ceil(self.pools.len());
        let model = &self.model;
        std::thread::scope(|scope| {
            let handles: Vec<_> = batches
                .chunks(per)
                .zip(inputs.chunks(per))
                .zip(seeds.chunks(per))
                .zip(&self.pools)
                .map(|(((bs, ins), seeds), pool)| {
                    scope.spawn(move || {
                        pool.install(|| {
                            bs.iter()
                                .zip(ins)
                                .zip(seeds)
                                .map(|((b, (targets, mask)), &seed)| {
                                    let mut rng = Rng::new(seed);
                                    model.loss_and_grads(
                                        b,
                                        targets,
                                        mask,
                                        denom,
                                        Some(&mut rng),
                                        recompute,
                                    )
                                })
                                .collect::<Result<Vec<_>>>()
                        })
                    })
                })
                .collect();
            let mut out = Vec::with_capacity(batches.len());
            for h in handles {
                let part = h
                    .join()
                    .map_err(|_| Error::Data("a micro-batch thread panicked".into()))??;
                out.extend(part);
            }
            Ok(out)
        })
    }

    /// The gradients summed over the ranks: one f32 buffer in parameter-name order (a
    /// parameter a rank got no gradient for counts as zeros there).
    fn sum_across_ranks(
        &mut self,
        mut grads: BTreeMap<String, Tensor>,
    ) -> Result<BTreeMap<String, Tensor>> {
        let mut flat: Vec<f32> = Vec::new();
        let mut shapes = Vec::new();
        for (name, var) in self.model.trainable() {
            let n = var.elem_count();
            match grads.remove(name) {
                Some(g) => flat.extend(g.flatten_all()?.to_vec1::<f32>()?),
                None => flat.extend(std::iter::repeat_n(0f32, n)),
            }
            shapes.push((name.clone(), var.dims().to_vec(), n));
        }
        if let Some(c) = self.comm.as_mut() {
            c.sum_f32(&mut flat)?;
        }
        let dev = self.model.device().clone();
        let mut out = BTreeMap::new();
        let mut at = 0;
        for (name, dims, n) in shapes {
            out.insert(
                name,
                Tensor::from_slice(&flat[at..at + n], dims.as_slice(), &dev)?,
            );
            at += n;
        }
        Ok(out)
    }

    fn targets(&self, b: &Batch) -> Result<(Tensor, Tensor)> {
        let n = b.rows * b.len;
        let dev = self.model.device();
        Ok((
            Tensor::from_slice(&b.targets, n, dev)?,
            Tensor::from_slice(&b.loss_mask, n, dev)?,
        ))
    }

    /// Mean loss per trained token over the validation split (capped by `eval_sequences`).
    pub fn validate(&mut self) -> Result<f64> {
        let split = self.cfg.data.valid_split.clone();
        self.evaluate(&split, self.cfg.train.eval_sequences)
    }

    /// Mean loss per trained token over a split of the shards (its first `cap` sequences; 0:
    /// all), with the current weights.
    pub fn evaluate(&mut self, split: &str, cap: usize) -> Result<f64> {
        let d = &self.cfg.data;
        let mut loader = Loader::new(&d.shards, split, self.rank, self.world, Cursor::default())?;
        let (mut sum, mut count, mut read) = (0f64, 0usize, 0usize);
        'outer: loop {
            let mut seqs = Vec::with_capacity(d.batch_size);
            while seqs.len() < d.batch_size {
                let s = loader.next_sequence()?;
                if loader.cursor().epoch > 0 || (cap > 0 && read >= cap) {
                    if seqs.is_empty() {
                        break 'outer;
                    }
                    break;
                }
                read += 1;
                seqs.push(s);
            }
            let b = Batch::new(&seqs, d.seq_len, self.model.config.vocab_size)?;
            let logits = self.model.forward(&b, None)?.detach();
            let (targets, mask) = self.targets(&b)?;
            sum += masked_nll_sum(&logits, &targets, &mask)?.to_scalar::<f32>()? as f64;
            count += b.trained();
            if seqs.len() < d.batch_size {
                break;
            }
        }
        if let Some(c) = self.comm.as_mut() {
            // Each rank evaluated its share of the split: the mean over all of it.
            let mut both = [sum, count as f64];
            c.sum_f64(&mut both)?;
            return Ok(both[0] / both[1].max(1.0));
        }
        Ok(sum / count.max(1) as f64)
    }

    fn log(&mut self, line: serde_json::Value) -> Result<()> {
        let path = self.cfg.output.join("metrics.jsonl");
        writeln!(self.metrics, "{line}").map_err(|e| Error::Io(path, e))
    }

    fn save_checkpoint(&mut self) -> Result<()> {
        self.state.rng = self.rng.state();
        self.state.adam_t = self.opt.t;
        let weights = self.model.trainable_tensors();
        let mut moments = BTreeMap::new();
        for (k, t) in &self.opt.m {
            moments.insert(format!("m.{k}"), t.clone());
        }
        for (k, t) in &self.opt.v {
            moments.insert(format!("v.{k}"), t.clone());
        }
        let mut state =
            serde_json::to_string_pretty(&self.state).map_err(|e| Error::Data(e.to_string()))?;
        state.push('\n');
        let config = self.model.config.to_json();
        checkpoint::publish(
            &self.cfg.output,
            self.state.step,
            self.cfg.train.keep_checkpoints,
            |dir| {
                save_tensors(&dir.join("model.safetensors"), &weights, DType::F32)?;
                save_tensors(&dir.join("optimizer.safetensors"), &moments, DType::F32)?;
                write_text(&dir.join("config.json"), &config)?;
                write_text(&dir.join("state.json"), &state)
            },
        )?;
        self.metrics
            .flush()
            .map_err(|e| Error::Io(self.cfg.output.join("metrics.jsonl"), e))
    }

    fn restore(&mut self, dir: &Path) -> Result<()> {
        let dev = self.model.device().clone();
        let weights = load_tensors(&dir.join("model.safetensors"), &dev)?;
        self.model.set_trainable(&weights)?;
        let moments = load_tensors(&dir.join("optimizer.safetensors"), &dev)?;
        for (prefix, target) in [("m.", &mut self.opt.m), ("v.", &mut self.opt.v)] {
            for (k, t) in target.iter_mut() {
                *t = moments
                    .get(&format!("{prefix}{k}"))
                    .ok_or_else(|| {
                        Error::Weights(format!(
                            "{}: no optimizer moment {prefix}{k}",
                            dir.display()
                        ))
                    })?
                    .clone();
            }
        }
        let path = dir.join("state.json");
        let text = std::fs::read_to_string(&path).map_err(|e| Error::Io(path.clone(), e))?;
        let state: State = serde_json::from_str(&text)
            .map_err(|e| Error::Data(format!("{}: {e}", path.display())))?;
        self.opt.t = state.adam_t;
        self.rng = Rng::new(state.rng);
        self.loader.seek(state.cursor);
        self.state = state;
        Ok(())
    }

    /// Save the model in the HF layout (`config.json` + `model.safetensors`), adapters merged;
    /// with LoRA also the adapters alone under `adapter/` in PEFT's naming.
    pub fn save_model(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::Io(dir.to_path_buf(), e))?;
        let dtype = match self.cfg.train.save_dtype.as_str() {
            "auto" => self.model.loaded_dtype,
            d => dtype_named(d)?,
        };
        save_tensors(
            &dir.join("model.safetensors"),
            &self.model.merged_weights()?,
            dtype,
        )?;
        write_text(&dir.join("config.json"), &self.model.config.to_json())?;
        // The tokenizer the shards were made with, when it is a tokenizer.json on this
        // machine: the saved directory then loads as a whole in HF tools.
        if let Some(src) = &self.loader.manifest().tokenizer.source {
            // Relative to the shards (sluice copies the tokenizer beside its manifest).
            let src = self.cfg.data.shards.join(src);
            let src = src.as_path();
            if src.is_file() && src.file_name().is_some_and(|n| n == "tokenizer.json") {
                let text =
                    std::fs::read_to_string(src).map_err(|e| Error::Io(src.to_path_buf(), e))?;
                write_text(&dir.join("tokenizer.json"), &text)?;
            }
        }
        if let (Some(lora), Some(spec)) = (self.model.lora(), &self.cfg.lora) {
            let adir = dir.join("adapter");
            std::fs::create_dir_all(&adir).map_err(|e| Error::Io(adir.clone(), e))?;
            let adapters: BTreeMap<String, Tensor> = self
                .model
                .trainable_tensors()
                .into_iter()
                .map(|(k, t)| (format!("base_model.model.{k}"), t))
                .collect();
            save_tensors(&adir.join("adapter_model.safetensors"), &adapters, dtype)?;
            let cfg = serde_json::json!({
                "peft_type": "LORA",
                "task_type": "CAUSAL_LM",
                "r": lora.rank,
                "lora_alpha": spec.alpha,
                "lora_dropout": spec.dropout,
                "target_modules": spec.targets,
                "bias": "none",
                "base_model_name_or_path": self.cfg.model.weights.as_ref().map(|p| p.display().to_string()),
            });
            write_text(
                &adir.join("adapter_config.json"),
                &format!(
                    "{}\n",
                    serde_json::to_string_pretty(&cfg).unwrap_or_default()
                ),
            )?;
        }
        Ok(())
    }
}

struct StepOut {
    loss: f64,
    grad_norm: f64,
    grads: BTreeMap<String, Tensor>,
    tokens: usize,
    trained: usize,
    truncated: u64,
}

/// Open `metrics.jsonl` for appending, first dropping lines past `keep_through` (a resumed run
/// rewrites the steps after its checkpoint).
fn open_metrics(path: &Path, keep_through: Option<u64>) -> Result<std::fs::File> {
    let io = |e| Error::Io(path.to_path_buf(), e);
    if let Some(limit) = keep_through {
        let kept: String = match std::fs::read_to_string(path) {
            Ok(text) => text
                .lines()
                .filter(|l| {
                    serde_json::from_str::<serde_json::Value>(l)
                        .ok()
                        .and_then(|v| v.get("step").and_then(|s| s.as_u64()))
                        .is_some_and(|s| s <= limit && limit > 0)
                })
                .map(|l| format!("{l}\n"))
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(io(e)),
        };
        write_text(path, &kept)?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io)
}
