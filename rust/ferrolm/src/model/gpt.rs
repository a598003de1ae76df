//! GPT-2: learned positions, pre-LayerNorm blocks with fused causal attention and a GELU MLP,
//! a final LayerNorm and an LM head tied to the token embedding.
//!
//! Parameter names and the file layout are Hugging Face's `GPT2LMHeadModel`
//! (`transformer.h.0.attn.c_attn.weight`, Conv1D weights stored [in, out]), so a model saved
//! here loads in `transformers`, and a GPT-2 checkpoint from the Hub loads here.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::json;

use super::{copy_parameters, ensure_positive, normal, zeros, Batch, DropoutSites, Init, Site};
use crate::checkpoint::{decimal, ensure_tied_head, ensure_weights_fit, read_model_dir, ConfigFields, Layout};
use crate::nn::{join, Embedding, LayerNorm, Linear, Module};
use crate::ops::{self, KvCache};
use crate::rng::mix;
use crate::tensor::checked_numel;
use crate::{bail, ensure, Error, Result, Tensor};

/// An attention-mask buffer of Hugging Face's older GPT-2 files (not a parameter).
fn is_attention_mask(name: &str) -> bool {
    name.ends_with(".attn.bias") || name.ends_with(".attn.masked_bias")
}

/// The architecture's hyperparameters (field names as in Hugging Face's GPT2Config).
#[derive(Clone, Debug, PartialEq)]
pub struct GptConfig {
    /// Rows of the token embedding (and logits); may be padded past the tokenizer's size.
    pub vocab_size: usize,
    /// Context length (`n_positions`; nanoGPT's `block_size`).
    pub block_size: usize,
    /// Transformer blocks.
    pub n_layer: usize,
    /// Attention heads per block; `n_embd` must be a multiple of it.
    pub n_head: usize,
    /// Width of the residual stream (the MLP is 4 times as wide).
    pub n_embd: usize,
    /// Dropout on embeddings and residual branches while training (`resid_pdrop`, `embd_pdrop`).
    pub dropout: f32,
    /// Dropout on attention probabilities while training (`attn_pdrop`; nanoGPT uses one rate
    /// for both).
    pub attn_dropout: f32,
    /// Biases in linear layers and LayerNorms (GPT-2 has them).
    pub bias: bool,
    /// The MLP's nonlinearity: GPT-2's tanh GELU, or nanoGPT's exact one.
    pub activation: Activation,
    /// Hugging Face's beginning- and end-of-text ids (GPT-2's are 50256), kept for its
    /// `generate`; ferrolm itself stops where it is told to. None: the model has none, which
    /// config.json says (Hugging Face would otherwise assume 50256).
    pub bos_token_id: Option<usize>,
    pub eos_token_id: Option<usize>,
    /// LayerNorm's epsilon (GPT-2's 1e-5).
    pub layer_norm_epsilon: f32,
}

/// GPT-2 small, as Hugging Face's `GPT2Config()`: change what differs with
/// `GptConfig { n_layer: 4, ..GptConfig::default() }`.
impl Default for GptConfig {
    fn default() -> Self {
        GptConfig {
            vocab_size: 50257,
            block_size: 1024,
            n_layer: 12,
            n_head: 12,
            n_embd: 768,
            dropout: 0.1,
            attn_dropout: 0.1,
            bias: true,
            activation: Activation::GeluTanh,
            bos_token_id: Some(50256),
            eos_token_id: Some(50256),
            layer_norm_epsilon: 1e-5,
        }
    }
}

impl GptConfig {
    /// Checks sizes and rates (a model is only built from a valid config).
    pub fn validate(&self) -> Result<()> {
        let c = self;
        ensure_positive(
            "GPT",
            &[
                ("vocab_size", c.vocab_size),
                ("block_size", c.block_size),
                ("n_layer", c.n_layer),
                ("n_head", c.n_head),
                ("n_embd", c.n_embd),
            ],
        )?;
        ensure!(
            c.n_embd.is_multiple_of(c.n_head),
            Argument,
            "GPT config: n_embd ({}) must be divisible by n_head ({})",
            c.n_embd,
            c.n_head
        );
        for (name, p) in [("dropout", c.dropout), ("attn_dropout", c.attn_dropout)] {
            ensure!((0.0..1.0).contains(&p), Argument, "GPT config: {name} must be in [0, 1), got {p}");
        }
        ensure!(c.layer_norm_epsilon > 0.0, Argument, "GPT config: layer_norm_epsilon must be > 0");
        // The largest tables fit in memory's address space (a corrupt config.json can say anything).
        for shape in [[c.vocab_size, c.n_embd, 1], [c.block_size, c.n_embd, 1], [4, c.n_embd, c.n_embd]] {
            checked_numel(&shape)?;
        }
        Ok(())
    }

    /// Values in the embedding tables and weight matrices (all parameters but biases and norms).
    pub fn matrix_parameters(&self) -> usize {
        let (c, l) = (self.n_embd, self.n_layer);
        let per_layer = c.saturating_mul(c).saturating_mul(12);
        (self.vocab_size.saturating_add(self.block_size)).saturating_mul(c).saturating_add(l.saturating_mul(per_layer))
    }

    /// The config as Hugging Face's `config.json` for GPT2LMHeadModel.
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "model_type": "gpt2",
            "architectures": ["GPT2LMHeadModel"],
            "vocab_size": self.vocab_size,
            "n_positions": self.block_size,
            "n_ctx": self.block_size,
            "n_layer": self.n_layer,
            "n_head": self.n_head,
            "n_embd": self.n_embd,
            "resid_pdrop": decimal(self.dropout),
            "embd_pdrop": decimal(self.dropout),
            "attn_pdrop": decimal(self.attn_dropout),
            "activation_function": self.activation.name(),
            "layer_norm_epsilon": decimal(self.layer_norm_epsilon),
            "bias": self.bias,
            "tie_word_embeddings": true,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
        })
    }

    /// Reads a Hugging Face style GPT-2 config (extra keys are ignored).
    pub fn from_json(v: &serde_json::Value) -> Result<GptConfig> {
        let f = ConfigFields(v, "config.json");
        f.expect_str("model_type", &["gpt2"])?;
        // Variants of GPT-2 that this model does not compute: refused rather than run wrongly.
        f.expect_bool("tie_word_embeddings", true)?;
        f.expect_bool("scale_attn_weights", true)?;
        f.expect_bool("scale_attn_by_inverse_layer_idx", false)?;
        f.expect_bool("add_cross_attention", false)?;
        let dropout = f.float_or("resid_pdrop", 0.0)?;
        let config = GptConfig {
            vocab_size: f.size(&["vocab_size"])?,
            // After GPT-2's names, the aliases Hugging Face's GPT2Config maps to them.
            block_size: f.size(&["n_positions", "block_size", "n_ctx", "max_position_embeddings"])?,
            n_layer: f.size(&["n_layer", "num_hidden_layers"])?,
            n_head: f.size(&["n_head", "num_attention_heads"])?,
            n_embd: f.size(&["n_embd", "hidden_size"])?,
            dropout,
            attn_dropout: f.float_or("attn_pdrop", dropout)?, // when absent, nanoGPT's one rate
            bos_token_id: f.size_opt("bos_token_id")?,
            eos_token_id: f.size_opt("eos_token_id")?,
            bias: f.bool_or("bias", true)?,
            activation: Activation::from_name(f.str_or("activation_function", "gelu_new")?)
                .map_err(|e| Error::Format(format!("config.json: {e}")))?,
            layer_norm_epsilon: f.float_or("layer_norm_epsilon", 1e-5)?,
        };
        config.validate().map_err(|e| Error::Format(format!("config.json: {e}")))?;
        let n_inner = f.size_or("n_inner", 4 * config.n_embd)?;
        ensure!(
            n_inner == 4 * config.n_embd,
            Format,
            "config.json: n_inner {n_inner} is not supported (the MLP is 4 × n_embd)"
        );
        Ok(config)
    }
}

/// The GELU of the MLP, by its Hugging Face name (`activation_function`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// The tanh approximation, GPT-2's `gelu_new` (also spelled `gelu_pytorch_tanh`).
    GeluTanh,
    /// Exact GELU, x·Φ(x): `gelu`, as nanoGPT's `nn.GELU()`.
    Gelu,
}

impl Activation {
    pub fn name(self) -> &'static str {
        match self {
            Activation::GeluTanh => "gelu_new",
            Activation::Gelu => "gelu",
        }
    }

    pub fn from_name(name: &str) -> Result<Activation> {
        match name {
            "gelu_new" | "gelu_pytorch_tanh" => Ok(Activation::GeluTanh),
            "gelu" | "gelu_python" => Ok(Activation::Gelu),
            _ => bail!(
                Argument,
                "activation_function {name:?} is not supported (gelu_new, gelu_pytorch_tanh, gelu or gelu_python)"
            ),
        }
    }

    fn apply(self, x: &Tensor) -> Result<Tensor> {
        match self {
            Activation::GeluTanh => ops::gelu(x),
            Activation::Gelu => ops::gelu_erf(x),
        }
    }
}

/// One transformer block: x + attn(ln_1(x)), then + mlp(ln_2(x)).
#[derive(Clone, Debug)]
pub struct Block {
    pub ln_1: LayerNorm,
    pub c_attn: Linear,
    pub attn_proj: Linear,
    pub ln_2: LayerNorm,
    pub c_fc: Linear,
    pub mlp_proj: Linear,
}

/// A GPT-2 language model. `clone()` is cheap and shares the weights (training one trains
/// both); [`Gpt::deep_clone`] copies them. The weights are public for inspection and surgery;
/// the config is read-only ([`Gpt::config`]), as every shape and cache follows from it.
#[derive(Clone)]
pub struct Gpt {
    config: GptConfig,
    pub wte: Embedding,
    pub wpe: Embedding,
    pub blocks: Vec<Block>,
    pub ln_f: LayerNorm,
}

/// Weights for a Linear [out, in] from `init`, with zero bias (GPT-2's initialisation).
fn gpt_linear(i: usize, o: usize, bias: bool, std: f32, seed: u64, init: Init) -> Result<Linear> {
    Ok(Linear {
        weight: init(&[o, i], std, seed)?.with_grad(),
        bias: bias.then(|| Tensor::zeros(&[o])).transpose()?.map(Tensor::with_grad),
    })
}

impl Gpt {
    /// A freshly initialised model: weights N(0, 0.02), residual projections N(0, 0.02/√(2L)).
    pub fn new(config: GptConfig, seed: u64) -> Result<Gpt> {
        Self::build(config, seed, normal)
    }

    /// The architecture (use [`Gpt::with_vocab`] to grow the vocabulary).
    pub fn config(&self) -> &GptConfig {
        &self.config
    }

    fn build(config: GptConfig, seed: u64, init: Init) -> Result<Gpt> {
        crate::compute(move || {
            config.validate()?;
            let c = config.n_embd;
            let proj_std = 0.02 / (2.0 * config.n_layer as f32).sqrt();
            let s = |i: u64| mix(seed ^ mix(i));
            let blocks = (0..config.n_layer)
                .map(|l| {
                    let k = 10 + 10 * l as u64;
                    Ok(Block {
                        ln_1: LayerNorm::new(c, config.bias, config.layer_norm_epsilon)?,
                        c_attn: gpt_linear(c, 3 * c, config.bias, 0.02, s(k), init)?,
                        attn_proj: gpt_linear(c, c, config.bias, proj_std, s(k + 1), init)?,
                        ln_2: LayerNorm::new(c, config.bias, config.layer_norm_epsilon)?,
                        c_fc: gpt_linear(c, 4 * c, config.bias, 0.02, s(k + 2), init)?,
                        mlp_proj: gpt_linear(4 * c, c, config.bias, proj_std, s(k + 3), init)?,
                    })
                })
                .collect::<Result<_>>()?;
            Ok(Gpt {
                wte: Embedding { weight: init(&[config.vocab_size, c], 0.02, s(1))?.with_grad() },
                wpe: Embedding { weight: init(&[config.block_size, c], 0.02, s(2))?.with_grad() },
                blocks,
                ln_f: LayerNorm::new(c, config.bias, config.layer_norm_epsilon)?,
                config,
            })
        })
    }

    /// Final hidden states [B, T, C] (after ln_f). `dropout_seed` is `Some` in training mode;
    /// with a `cache`, keys and values are appended to it and attention reads the prefix from it.
    /// Records the graph for `backward` (every activation kept) unless run inside
    /// [`crate::no_grad`], as inference should be.
    pub fn hidden(&self, x: &Batch, dropout_seed: Option<u64>, cache: Option<&mut KvCache>) -> Result<Tensor> {
        crate::compute(move || {
            let mut cache = cache;

            let (b, t, cfg) = (x.batch, x.len, &self.config);
            x.check("GPT", cfg.vocab_size)?;
            ensure!(
                dropout_seed.is_none() || cache.is_none(),
                Argument,
                "GPT: dropout (training) and a KV cache (inference) cannot be used together"
            );
            let positions = x.positions_from(cache.as_ref().map_or(0, |c| c.len()));
            if let Some(&p) = positions.iter().find(|&&p| p < 0 || p as usize >= cfg.block_size) {
                bail!(Index, "GPT: position {p} is outside the context of {} tokens (block_size)", cfg.block_size);
            }
            let sites = DropoutSites(dropout_seed);
            let tok = self.wte.forward(x.ids, &[b, t])?;
            let pos = self.wpe.forward(&positions, &[b, t])?;
            let mut h = sites.apply(ops::add(&tok, &pos)?, cfg.dropout, Site::Embeddings)?;
            for (l, block) in self.blocks.iter().enumerate() {
                let qkv = block.c_attn.forward(&block.ln_1.forward(&h)?)?;
                let a = match cache.as_deref_mut() {
                    Some(cache) => ops::attention_cached(&qkv, cfg.n_head, cache, l, x.key_mask)?,
                    None => {
                        let probs = sites.mask(cfg.attn_dropout, Site::Probabilities(l))?;
                        ops::attention_qkv(&qkv, cfg.n_head, true, x.key_mask, probs)?
                    }
                };
                h = ops::add(&h, &sites.apply(block.attn_proj.forward(&a)?, cfg.dropout, Site::AttentionOut(l))?)?;
                let m = cfg.activation.apply(&block.c_fc.forward(&block.ln_2.forward(&h)?)?)?;
                h = ops::add(&h, &sites.apply(block.mlp_proj.forward(&m)?, cfg.dropout, Site::MlpOut(l))?)?;
            }
            if let Some(cache) = cache {
                cache.advance(t)?;
            }
            self.ln_f.forward(&h)
        })
    }

    /// The weights are public for surgery, so a cache (and so a generation) is made only for
    /// tables and layers that still have the config's shapes: its layers and the logits'
    /// width follow the config (forward passes without a cache get shape errors anyway).
    fn check_weights(&self) -> Result<()> {
        let c = &self.config;
        for (name, table, rows) in [("wte", &self.wte, c.vocab_size), ("wpe", &self.wpe, c.block_size)] {
            ensure!(
                table.weight.shape() == [rows, c.n_embd],
                Shape,
                "GPT: {name} has shape {:?}, the config says [{rows}, {}] (change the vocabulary with with_vocab)",
                table.weight.shape(),
                c.n_embd
            );
        }
        ensure!(
            self.blocks.len() == c.n_layer,
            Shape,
            "GPT: {} blocks, the config says n_layer {}",
            self.blocks.len(),
            c.n_layer
        );
        Ok(())
    }

    /// Log-probability of each token of `ids` given the ones before it: `ids.len() − 1` values
    /// (the first token has no prediction). Text longer than the context is scored through a
    /// sliding window, as Hugging Face's perplexity guide does: windows of `block_size` tokens,
    /// `stride` apart (default half the context), each scoring only the tokens the previous one
    /// did not, so every token is predicted from at least `block_size − stride` tokens before
    /// it (all of them near the start). The last window ends at the text's end, so its tokens
    /// may see more context than in the guide's script, which steps its last window by `stride`
    /// too.
    pub fn score(&self, ids: &[i64], stride: Option<usize>) -> Result<Vec<f32>> {
        self.score_until(ids, stride, &AtomicBool::new(false))
    }

    /// [`Gpt::score`], ending with [`crate::Error::Interrupted`] at the next window once `stop`
    /// is set (from another thread: a Ctrl-C watcher, say). It runs through [`crate::compute`],
    /// as generation does, so any thread may call it.
    pub fn score_until(&self, ids: &[i64], stride: Option<usize>, stop: &AtomicBool) -> Result<Vec<f32>> {
        crate::compute(|| self.score_here(ids, stride, stop))
    }

    fn score_here(&self, ids: &[i64], stride: Option<usize>, stop: &AtomicBool) -> Result<Vec<f32>> {
        let (n, block) = (ids.len(), self.config.block_size);
        ensure!(n >= 2, Argument, "score needs at least two tokens, got {n}");
        if let Some(stride) = stride {
            ensure!(
                (1..block).contains(&stride),
                Argument,
                "stride must be between 1 and block_size - 1 ({}), got {stride}",
                block - 1
            );
        }
        ensure!(n <= block || block >= 2, Argument, "score: a context of one token cannot slide over {n} tokens");
        let stride = stride.unwrap_or((block / 2).max(1));
        let mut out = Vec::with_capacity(n - 1);
        let mut end = n.min(block);
        crate::no_grad(|| loop {
            if stop.load(Ordering::Relaxed) {
                return Err(Error::Interrupted);
            }
            // The window ids[begin..end] scores tokens out.len() + 1 .. end - 1, from its rows
            // before them: only those rows go through the head.
            let begin = end - block.min(end);
            let window = &ids[begin..end];
            let first = out.len() - begin; // the row predicting token out.len() + 1
            let hidden = self.hidden(&Batch::new(window, 1, window.len()), None, None)?;
            let logits = self.logits(&ops::narrow(&hidden, 1, first, window.len() - 1 - first)?)?;
            let nll = ops::cross_entropy(&logits, &window[first + 1..], None, ops::Reduction::None)?;
            out.extend(nll.read().iter().map(|&l| -l));
            if end == n {
                ensure!(
                    out.iter().all(|l| l.is_finite()),
                    Argument,
                    "score: the model's log-probabilities hold NaN or infinite values (are its weights damaged or \
                     diverged?)"
                );
                return Ok(out);
            }
            end = (end + stride).min(n);
        })
    }

    /// Next-token logits [.., V] from hidden states (the head shares the token embedding).
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        crate::compute(move || ops::linear(hidden, &self.wte.weight, None))
    }

    /// Logits [B, T, V] for a batch of ids (a graph recorded as [`Gpt::hidden`] says).
    pub fn forward(&self, x: &Batch, dropout_seed: Option<u64>, cache: Option<&mut KvCache>) -> Result<Tensor> {
        self.logits(&self.hidden(x, dropout_seed, cache)?)
    }

    /// An empty key/value cache able to hold `batch` sequences of the full context
    /// ([`crate::Error::Memory`] when that does not fit in memory).
    pub fn new_cache(&self, batch: usize) -> Result<KvCache> {
        self.check_weights()?;
        let c = &self.config;
        KvCache::new(c.n_layer, batch, c.n_head, c.block_size, c.n_embd / c.n_head)
    }

    /// Hugging Face's GPT-2 file layout: Conv1D weights are stored [in, out]; GPT2Model files
    /// drop the `transformer.` prefix; old files carry attention-mask buffers and the tied head.
    fn layout(f: impl FnOnce(&Layout) -> Result<()>) -> Result<()> {
        let transposed = |n: &str| {
            [".attn.c_attn.weight", ".attn.c_proj.weight", ".mlp.c_fc.weight", ".mlp.c_proj.weight"]
                .iter()
                .any(|s| n.ends_with(s))
        };
        // Buffers, the tied head's copy, and heads this model does not run (Hugging Face's
        // AutoModelForCausalLM loads the model under each): a sequence classifier's (TRL's reward
        // models), a token classifier's, GPT2DoubleHeadsModel's multiple-choice head.
        let ignorable = |n: &str| {
            is_attention_mask(n)
                || n == "lm_head.weight"
                || ["score.", "classifier.", "multiple_choice_head."].iter().any(|head| n.starts_with(head))
        };
        f(&Layout {
            optional_prefixes: &["transformer."],
            transposed: &transposed,
            aliases: &|_| Vec::new(),
            ignorable: &ignorable,
        })
    }

    /// Writes `config.json` and `model.safetensors` into `dir` (created if missing), as one set:
    /// a failed or killed save leaves the previous files whole (the next load finishes a save
    /// killed while moving its files in). No tokenizer is written: save it beside them with
    /// [`crate::tokenizer::Tokenizer::save`].
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
        crate::compute(move || {
            Self::layout(|layout| layout.save(dir, &self.named_parameters(), &self.config.to_json()))
        })
    }

    /// Loads `config.json` and `model.safetensors` (or a sharded `model.safetensors.index.json`
    /// and its shards) from `dir`: our files or a Hugging Face GPT-2 checkpoint. Every
    /// parameter must be present with the right shape; unknown tensors are refused. A save that
    /// was killed while moving its files in is finished first
    /// ([`crate::checkpoint::finish_interrupted_save`]), so loading may rename files in `dir`.
    pub fn load(dir: impl AsRef<Path>) -> Result<Gpt> {
        let dir = dir.as_ref();
        crate::compute(move || {
            // Old Hugging Face files' attention masks (1024² floats a layer) are not even read.
            let (config, mut stored) = read_model_dir(dir, |n| !is_attention_mask(n))?;
            let mut config = GptConfig::from_json(&config)?;
            ensure_tied_head(&stored, "lm_head.weight", &["transformer.wte.weight", "wte.weight"])?;
            if !config.bias {
                // Hugging Face's GPT-2 has biases: it loads a bias-free model with zero biases and
                // saves them (keeping config.json's `bias`), trained if it fine-tuned the model.
                // Zero biases are the same model; trained ones are computed with, as there.
                let bias = |name: &str| name.ends_with(".bias") && !name.starts_with("score.");
                let mut biases = stored.tensors.iter().filter(|(name, _)| bias(name));
                if biases.all(|(_, t)| t.data.iter().all(|&x| x == 0.0)) {
                    stored.tensors.retain(|name, _| !bias(name));
                } else {
                    config.bias = true;
                }
            }
            ensure_weights_fit(config.matrix_parameters(), &stored)?;
            let model = Gpt::build(config, 0, zeros)?;
            Self::layout(|layout| layout.load(&model.named_parameters(), &mut stored))?;
            Ok(model)
        })
    }

    /// The same model with a vocabulary of `vocab_size` tokens (≥ the current one), e.g. after
    /// chat special tokens were added to the tokenizer: existing embedding rows are kept, new
    /// ones drawn from N(0, 0.02). All other weights are shared with `self`.
    pub fn with_vocab(&self, vocab_size: usize, seed: u64) -> Result<Gpt> {
        crate::compute(move || {
            let (old, c) = (self.config.vocab_size, self.config.n_embd);
            ensure!(vocab_size >= old, Argument, "with_vocab: cannot shrink the vocabulary from {old} to {vocab_size}");
            let mut data = self.wte.weight.to_vec();
            data.extend(Tensor::randn(&[vocab_size - old, c], 0.0, 0.02, seed)?.read().iter());
            let mut model = self.clone();
            model.config.vocab_size = vocab_size;
            model.wte = Embedding { weight: Tensor::from_vec(data, &[vocab_size, c])?.with_grad() };
            Ok(model)
        })
    }

    /// The same model (weights shared, as with `clone`) with other dropout rates, e.g. to
    /// fine-tune with dropout a model trained without it.
    pub fn with_dropout(&self, dropout: f32, attn_dropout: f32) -> Result<Gpt> {
        let config = GptConfig { dropout, attn_dropout, ..self.config.clone() };
        config.validate()?;
        Ok(Gpt { config, ..self.clone() })
    }

    /// An independent copy (own storage, gradients and frozen parameters kept), e.g. a
    /// reference model.
    pub fn deep_clone(&self) -> Result<Gpt> {
        crate::compute(move || {
            let copy = Gpt::build(self.config.clone(), 0, zeros)?;
            copy_parameters(&copy, self)?;
            Ok(copy)
        })
    }
}

/// The config and the parameter count (the weights are `named_parameters`).
impl std::fmt::Debug for Gpt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpt").field("config", &self.config).field("parameters", &self.num_parameters()).finish()
    }
}

impl Module for Gpt {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(String, &Tensor)) {
        let p = join(prefix, "transformer");
        self.wte.visit(&join(&p, "wte"), f);
        self.wpe.visit(&join(&p, "wpe"), f);
        for (i, b) in self.blocks.iter().enumerate() {
            let h = join(&p, &format!("h.{i}"));
            b.ln_1.visit(&join(&h, "ln_1"), f);
            b.c_attn.visit(&join(&h, "attn.c_attn"), f);
            b.attn_proj.visit(&join(&h, "attn.c_proj"), f);
            b.ln_2.visit(&join(&h, "ln_2"), f);
            b.c_fc.visit(&join(&h, "mlp.c_fc"), f);
            b.mlp_proj.visit(&join(&h, "mlp.c_proj"), f);
        }
        self.ln_f.visit(&join(&p, "ln_f"), f);
    }
}
