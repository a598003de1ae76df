//! BERT: token + position + token-type embeddings, post-LayerNorm encoder blocks with
//! bidirectional attention over a key-padding mask, an optional pooler, and the masked-LM
//! head (dense + GELU + LayerNorm + decoder tied to the word embeddings).
//!
//! Names and layout are Hugging Face's `BertForMaskedLM` (`bert.encoder.layer.0.attention.
//! self.query.weight`, Linear weights [out, in]); files without the `bert.` prefix
//! (sentence-transformers exports) and with old `gamma`/`beta` LayerNorm names load too.

use std::path::Path;

use serde_json::json;

use super::{copy_parameters, ensure_positive, normal, zeros, Batch, DropoutSites, Init, Site};
use crate::checkpoint::{decimal, ensure_tied_head, ensure_weights_fit, read_model_dir, ConfigFields, Layout};
use crate::nn::{join, Embedding, LayerNorm, Linear, Module};
use crate::ops;
use crate::rng::mix;
use crate::{bail, ensure, Error, Result, Tensor};

/// The architecture's hyperparameters (Hugging Face's BertConfig names).
#[derive(Clone, Debug, PartialEq)]
pub struct BertConfig {
    /// Rows of the token embedding (and of the MLM head's logits).
    pub vocab_size: usize,
    /// Width of each layer's output; a multiple of `num_attention_heads`.
    pub hidden_size: usize,
    /// Encoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads per layer.
    pub num_attention_heads: usize,
    /// Width of the feed-forward layer inside each encoder layer (BERT's is 4 × hidden).
    pub intermediate_size: usize,
    /// Longest sequence the position embedding covers.
    pub max_position_embeddings: usize,
    /// Segment (token type) ids: 2, for sentence pairs.
    pub type_vocab_size: usize,
    /// Dropout on embeddings and each sublayer's output while training.
    pub hidden_dropout_prob: f32,
    /// Dropout on attention probabilities while training.
    pub attention_probs_dropout_prob: f32,
    /// LayerNorm's epsilon (BERT's 1e-12).
    pub layer_norm_eps: f32,
    /// The padding token's id, kept for Hugging Face (padding is masked by `Batch::key_mask`).
    pub pad_token_id: usize,
}

/// BERT base, as Hugging Face's `BertConfig()` (bert-base-uncased's sizes): change what
/// differs with `BertConfig { num_hidden_layers: 4, ..BertConfig::default() }`.
impl Default for BertConfig {
    fn default() -> Self {
        BertConfig {
            vocab_size: 30522,
            hidden_size: 768,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            intermediate_size: 3072,
            max_position_embeddings: 512,
            type_vocab_size: 2,
            hidden_dropout_prob: 0.1,
            attention_probs_dropout_prob: 0.1,
            layer_norm_eps: 1e-12,
            pad_token_id: 0,
        }
    }
}

impl BertConfig {
    /// Checks sizes and rates (a model is only built from a valid config).
    pub fn validate(&self) -> Result<()> {
        let c = self;
        ensure_positive(
            "BERT",
            &[
                ("vocab_size", c.vocab_size),
                ("hidden_size", c.hidden_size),
                ("num_hidden_layers", c.num_hidden_layers),
                ("intermediate_size", c.intermediate_size),
                ("max_position_embeddings", c.max_position_embeddings),
                ("type_vocab_size", c.type_vocab_size),
            ],
        )?;
        ensure!(
            c.num_attention_heads > 0 && c.hidden_size.is_multiple_of(c.num_attention_heads),
            Argument,
            "BERT config: hidden_size ({}) must be divisible by num_attention_heads ({})",
            c.hidden_size,
            c.num_attention_heads
        );
        for (name, p) in [
            ("hidden_dropout_prob", c.hidden_dropout_prob),
            ("attention_probs_dropout_prob", c.attention_probs_dropout_prob),
        ] {
            ensure!((0.0..1.0).contains(&p), Argument, "BERT config: {name} must be in [0, 1), got {p}");
        }
        ensure!(c.layer_norm_eps > 0.0, Argument, "BERT config: layer_norm_eps must be > 0");
        Ok(())
    }

    /// Values in the embedding tables and the encoder's weight matrices (all parameters but
    /// biases, norms and the optional pooler and MLM head).
    pub fn matrix_parameters(&self) -> usize {
        let (c, i) = (self.hidden_size, self.intermediate_size);
        let tables = self.vocab_size.saturating_add(self.max_position_embeddings).saturating_add(self.type_vocab_size);
        let per_layer = c.saturating_mul(c.saturating_mul(4).saturating_add(i.saturating_mul(2)));
        tables.saturating_mul(c).saturating_add(self.num_hidden_layers.saturating_mul(per_layer))
    }

    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "model_type": "bert",
            "architectures": ["BertForMaskedLM"],
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "intermediate_size": self.intermediate_size,
            "hidden_act": "gelu",
            "hidden_dropout_prob": decimal(self.hidden_dropout_prob),
            "attention_probs_dropout_prob": decimal(self.attention_probs_dropout_prob),
            "max_position_embeddings": self.max_position_embeddings,
            "type_vocab_size": self.type_vocab_size,
            "layer_norm_eps": decimal(self.layer_norm_eps),
            "pad_token_id": self.pad_token_id,
            "position_embedding_type": "absolute",
        })
    }

    pub fn from_json(v: &serde_json::Value) -> Result<BertConfig> {
        let f = ConfigFields(v, "config.json");
        f.expect_str("model_type", &["bert"])?;
        f.expect_str("hidden_act", &["gelu", "gelu_python"])?; // exact gelu, both
        f.expect_str("position_embedding_type", &["absolute"])?;
        f.expect_bool("tie_word_embeddings", true)?;
        f.expect_bool("is_decoder", false)?; // a causal BERT (BertLMHeadModel)
        f.expect_bool("add_cross_attention", false)?;
        let hidden_dropout_prob = f.float_or("hidden_dropout_prob", 0.1)?;
        let config = BertConfig {
            vocab_size: f.size(&["vocab_size"])?,
            hidden_size: f.size(&["hidden_size"])?,
            num_hidden_layers: f.size(&["num_hidden_layers"])?,
            num_attention_heads: f.size(&["num_attention_heads"])?,
            intermediate_size: f.size(&["intermediate_size"])?,
            max_position_embeddings: f.size(&["max_position_embeddings"])?,
            type_vocab_size: f.size_or("type_vocab_size", 2)?,
            hidden_dropout_prob,
            // When absent, the hidden rate (Hugging Face's defaults are equal).
            attention_probs_dropout_prob: f.float_or("attention_probs_dropout_prob", hidden_dropout_prob)?,
            layer_norm_eps: f.float_or("layer_norm_eps", 1e-12)?,
            pad_token_id: f.size_or("pad_token_id", 0)?,
        };
        config.validate().map_err(|e| Error::Format(format!("config.json: {e}")))?;
        Ok(config)
    }
}

/// One encoder layer: x = LN(x + attn(x)); x = LN(x + ffn(x)).
#[derive(Clone, Debug)]
pub struct EncoderLayer {
    pub query: Linear,
    pub key: Linear,
    pub value: Linear,
    pub attn_out: Linear,
    pub attn_norm: LayerNorm,
    pub intermediate: Linear,
    pub output: Linear,
    pub out_norm: LayerNorm,
}

/// The masked-LM head: dense + GELU + LayerNorm, then the tied decoder with its own bias.
#[derive(Clone, Debug)]
pub struct MlmHead {
    pub dense: Linear,
    pub norm: LayerNorm,
    pub bias: Tensor,
}

impl MlmHead {
    fn new(config: &BertConfig, seed: u64, init: Init) -> Result<MlmHead> {
        let c = config.hidden_size;
        Ok(MlmHead {
            dense: linear(c, c, seed, init)?,
            norm: LayerNorm::new(c, true, config.layer_norm_eps)?,
            bias: Tensor::zeros(&[config.vocab_size])?.with_grad(),
        })
    }
}

/// A BERT encoder with optional pooler and MLM head. `clone()` shares the weights.
#[derive(Clone)]
pub struct Bert {
    config: BertConfig,
    pub word_embeddings: Embedding,
    pub position_embeddings: Embedding,
    pub token_type_embeddings: Embedding,
    pub embeddings_norm: LayerNorm,
    pub layers: Vec<EncoderLayer>,
    pub pooler: Option<Linear>,
    pub mlm: Option<MlmHead>,
}

fn linear(i: usize, o: usize, seed: u64, init: Init) -> Result<Linear> {
    Ok(Linear { weight: init(&[o, i], 0.02, seed)?.with_grad(), bias: Some(Tensor::zeros(&[o])?.with_grad()) })
}

impl Bert {
    /// A new model (BERT's initialisation: N(0, 0.02) weights, zero biases), with an MLM head
    /// and, if asked, a pooler.
    pub fn new(config: BertConfig, pooler: bool, seed: u64) -> Result<Bert> {
        Self::build(config, pooler, seed, normal)
    }

    /// The architecture (read-only: every shape follows from it).
    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    /// The same model (weights shared, as with `clone`) with other dropout rates.
    pub fn with_dropout(&self, hidden_dropout_prob: f32, attention_probs_dropout_prob: f32) -> Result<Bert> {
        let config = BertConfig { hidden_dropout_prob, attention_probs_dropout_prob, ..self.config.clone() };
        config.validate()?;
        Ok(Bert { config, ..self.clone() })
    }

    fn build(config: BertConfig, pooler: bool, seed: u64, init: Init) -> Result<Bert> {
        crate::compute(move || {
            config.validate()?;
            let (c, eps) = (config.hidden_size, config.layer_norm_eps);
            let s = |i: u64| mix(seed ^ mix(i));
            let layers = (0..config.num_hidden_layers)
                .map(|l| {
                    let k = 100 + 10 * l as u64;
                    Ok(EncoderLayer {
                        query: linear(c, c, s(k), init)?,
                        key: linear(c, c, s(k + 1), init)?,
                        value: linear(c, c, s(k + 2), init)?,
                        attn_out: linear(c, c, s(k + 3), init)?,
                        attn_norm: LayerNorm::new(c, true, eps)?,
                        intermediate: linear(c, config.intermediate_size, s(k + 4), init)?,
                        output: linear(config.intermediate_size, c, s(k + 5), init)?,
                        out_norm: LayerNorm::new(c, true, eps)?,
                    })
                })
                .collect::<Result<_>>()?;
            Ok(Bert {
                word_embeddings: Embedding { weight: init(&[config.vocab_size, c], 0.02, s(1))?.with_grad() },
                position_embeddings: Embedding {
                    weight: init(&[config.max_position_embeddings, c], 0.02, s(2))?.with_grad(),
                },
                token_type_embeddings: Embedding {
                    weight: init(&[config.type_vocab_size, c], 0.02, s(3))?.with_grad(),
                },
                embeddings_norm: LayerNorm::new(c, true, eps)?,
                layers,
                pooler: pooler.then(|| linear(c, c, s(4), init)).transpose()?,
                mlm: Some(MlmHead::new(&config, s(5), init)?),
                config,
            })
        })
    }

    /// An independent copy (own storage, gradients and frozen parameters kept), e.g. a
    /// reference model.
    pub fn deep_clone(&self) -> Result<Bert> {
        crate::compute(move || {
            let mut copy = Bert::build(self.config.clone(), self.pooler.is_some(), 0, zeros)?;
            if self.mlm.is_none() {
                copy.mlm = None;
            }
            copy_parameters(&copy, self)?;
            Ok(copy)
        })
    }

    /// The same encoder (weights shared) with a freshly initialised pooler, as Hugging Face
    /// gives a checkpoint without one loaded for sequence classification.
    pub fn with_new_pooler(&self, seed: u64) -> Result<Bert> {
        let c = self.config.hidden_size;
        let pooler = crate::compute(|| linear(c, c, mix(seed ^ mix(4)), normal))?; // its draws are parallel
        Ok(Bert { pooler: Some(pooler), ..self.clone() })
    }

    /// The same encoder (weights shared) with a freshly initialised masked-LM head, as Hugging
    /// Face gives an encoder-only checkpoint loaded for masked-LM training.
    pub fn with_new_mlm_head(&self, seed: u64) -> Result<Bert> {
        let head = crate::compute(|| MlmHead::new(&self.config, mix(seed ^ mix(5)), normal))?;
        Ok(Bert { mlm: Some(head), ..self.clone() })
    }

    /// Hidden states [B, T, C] of the last layer. `dropout_seed` is `Some` in training mode.
    /// Records the graph for `backward` (every activation kept) unless run inside
    /// [`crate::no_grad`], as inference should be.
    pub fn hidden(&self, x: &Batch, dropout_seed: Option<u64>) -> Result<Tensor> {
        crate::compute(move || {
            let (b, t, cfg) = (x.batch, x.len, &self.config);
            x.check("BERT", cfg.vocab_size)?;
            ensure!(
                t <= cfg.max_position_embeddings,
                Index,
                "BERT: sequence of {t} tokens is longer than max_position_embeddings ({})",
                cfg.max_position_embeddings
            );
            let types = x.token_types.map_or_else(|| vec![0; b * t], <[i64]>::to_vec);
            if let Some(&bad) = types.iter().find(|&&s| s < 0 || s as usize >= cfg.type_vocab_size) {
                bail!(
                    Index,
                    "BERT: token type {bad} is outside the model's type_vocab_size of {}",
                    cfg.type_vocab_size
                );
            }
            let positions = x.positions_from(0);
            let sites = DropoutSites(dropout_seed);
            let p = cfg.hidden_dropout_prob;
            let e = ops::add(
                &ops::add(
                    &self.word_embeddings.forward(x.ids, &[b, t])?,
                    &self.position_embeddings.forward(&positions, &[b, t])?,
                )?,
                &self.token_type_embeddings.forward(&types, &[b, t])?,
            )?;
            let mut h = sites.apply(self.embeddings_norm.forward(&e)?, p, Site::Embeddings)?;
            let heads = cfg.num_attention_heads;
            for (l, layer) in self.layers.iter().enumerate() {
                // One packed projection: the three weights are concatenated (gradients flow back
                // to each), so the fused kernel reads heads in place.
                let w = ops::concat(
                    &[layer.query.weight.clone(), layer.key.weight.clone(), layer.value.weight.clone()],
                    0,
                )?;
                let biases: Vec<Tensor> =
                    [&layer.query, &layer.key, &layer.value].iter().filter_map(|m| m.bias.clone()).collect();
                let bias = if biases.len() == 3 { Some(ops::concat(&biases, 0)?) } else { None };
                let qkv = ops::linear(&h, &w, bias.as_ref())?;
                let probs = sites.mask(cfg.attention_probs_dropout_prob, Site::Probabilities(l))?;
                let a = ops::attention_qkv(&qkv, heads, false, x.key_mask, probs)?;
                let a = sites.apply(layer.attn_out.forward(&a)?, p, Site::AttentionOut(l))?;
                h = layer.attn_norm.forward(&ops::add(&h, &a)?)?;
                let m = sites.apply(
                    layer.output.forward(&ops::gelu_erf(&layer.intermediate.forward(&h)?)?)?,
                    p,
                    Site::MlpOut(l),
                )?;
                h = layer.out_norm.forward(&ops::add(&h, &m)?)?;
            }
            Ok(h)
        })
    }

    /// Masked-LM logits [.., V] from hidden states.
    pub fn mlm_logits(&self, hidden: &Tensor) -> Result<Tensor> {
        crate::compute(move || {
            let head = self.mlm.as_ref().ok_or_else(|| {
                Error::Argument("this BERT has no masked-LM head (an encoder-only checkpoint)".into())
            })?;
            let t = head.norm.forward(&ops::gelu_erf(&head.dense.forward(hidden)?)?)?;
            ops::linear(&t, &self.word_embeddings.weight, Some(&head.bias))
        })
    }

    /// `tanh(dense(h[:, 0]))`: BERT's pooled `[CLS]` representation `[B, C]`.
    pub fn pooled(&self, hidden: &Tensor) -> Result<Tensor> {
        crate::compute(move || {
            let pooler = self.pooler.as_ref().ok_or_else(|| Error::Argument("this BERT has no pooler".into()))?;
            let cls = ops::narrow(hidden, 1, 0, 1)?;
            let c = self.config.hidden_size as isize;
            ops::tanh(&pooler.forward(&ops::reshape(&cls, &[-1, c])?)?)
        })
    }

    fn layout(f: impl FnOnce(&Layout) -> Result<()>) -> Result<()> {
        let aliases = |n: &str| {
            let mut out = Vec::new();
            if let Some(base) = n.strip_suffix("LayerNorm.weight") {
                out.push(format!("{base}LayerNorm.gamma"));
            }
            if let Some(base) = n.strip_suffix("LayerNorm.bias") {
                out.push(format!("{base}LayerNorm.beta"));
            }
            if n == "cls.predictions.bias" {
                out.push("cls.predictions.decoder.bias".to_string());
            }
            out
        };
        // Buffers, the tied decoder's copy, and heads this encoder does not run (Hugging Face's
        // AutoModel loads the encoder of each): next-sentence prediction, a classifier's
        // (Python's TextClassifier reads a sequence classifier's) and question answering's.
        let ignorable = |n: &str| {
            n.ends_with("embeddings.position_ids")
                || n.ends_with("embeddings.token_type_ids") // a buffer of zeros some exporters store
                || n.starts_with("cls.seq_relationship.")
                || n.starts_with("cls.predictions.decoder.")
                || n.starts_with("classifier.")
                || n.starts_with("qa_outputs.")
        };
        f(&Layout { optional_prefixes: &["bert."], transposed: &|_| false, aliases: &aliases, ignorable: &ignorable })
    }

    /// Writes `config.json` + `model.safetensors` in Hugging Face's BertForMaskedLM layout (a
    /// `BertModel` without the MLM head), as one set, as [`crate::model::Gpt::save`] does.
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
        let mut config = self.config.to_json();
        if self.mlm.is_none() {
            // Hugging Face goes by this name: a BertForMaskedLM would be given a random head.
            config["architectures"] = json!(["BertModel"]);
        }
        crate::compute(move || Self::layout(|layout| layout.save(dir, &self.named_parameters(), &config)))
    }

    /// Loads our files or a Hugging Face BERT checkpoint (with or without the `bert.` prefix,
    /// with or without pooler and MLM head; sharded too), finishing an interrupted save first
    /// as [`crate::model::Gpt::load`] does. A classifier's or question answering's head is left
    /// out: this is the encoder (Python's `TextClassifier` reads a sequence classifier's head).
    pub fn load(dir: impl AsRef<Path>) -> Result<Bert> {
        let dir = dir.as_ref();
        crate::compute(move || {
            let (config, mut stored) = read_model_dir(dir, |_| true)?;
            let config = BertConfig::from_json(&config)?;
            ensure_weights_fit(config.matrix_parameters(), &stored)?;
            let embedding = ["bert.embeddings.word_embeddings.weight", "embeddings.word_embeddings.weight"];
            ensure_tied_head(&stored, "cls.predictions.decoder.weight", &embedding)?;
            // The head has one bias: a file whose decoder's differs from it (an edited or untied
            // one) is computed by Hugging Face with the decoder's; refused rather than run with the other.
            let bias = |name| stored.tensors.get(name).map(|t| &t.data);
            if let (Some(decoder), Some(head)) = (bias("cls.predictions.decoder.bias"), bias("cls.predictions.bias")) {
                ensure!(
                    decoder == head,
                    Format,
                    "{}: cls.predictions.decoder.bias differs from cls.predictions.bias (an untied head is not \
                     supported)",
                    stored.source
                );
            }
            let has = |suffix: &str| stored.tensors.keys().any(|k| k.ends_with(suffix));
            let has_pooler = has("pooler.dense.weight");
            let has_mlm = has("cls.predictions.transform.dense.weight");
            let mut model = Bert::build(config, has_pooler, 0, zeros)?;
            if !has_mlm {
                model.mlm = None;
            }
            Self::layout(|layout| layout.load(&model.named_parameters(), &mut stored))?;
            Ok(model)
        })
    }
}

/// The config, which heads it has, and the parameter count (the weights are `named_parameters`).
impl std::fmt::Debug for Bert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bert")
            .field("config", &self.config)
            .field("pooler", &self.pooler.is_some())
            .field("mlm_head", &self.mlm.is_some())
            .field("parameters", &self.num_parameters())
            .finish()
    }
}

impl Module for Bert {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(String, &Tensor)) {
        let p = join(prefix, "bert");
        let e = join(&p, "embeddings");
        self.word_embeddings.visit(&join(&e, "word_embeddings"), f);
        self.position_embeddings.visit(&join(&e, "position_embeddings"), f);
        self.token_type_embeddings.visit(&join(&e, "token_type_embeddings"), f);
        self.embeddings_norm.visit(&join(&e, "LayerNorm"), f);
        for (i, l) in self.layers.iter().enumerate() {
            let h = join(&p, &format!("encoder.layer.{i}"));
            l.query.visit(&join(&h, "attention.self.query"), f);
            l.key.visit(&join(&h, "attention.self.key"), f);
            l.value.visit(&join(&h, "attention.self.value"), f);
            l.attn_out.visit(&join(&h, "attention.output.dense"), f);
            l.attn_norm.visit(&join(&h, "attention.output.LayerNorm"), f);
            l.intermediate.visit(&join(&h, "intermediate.dense"), f);
            l.output.visit(&join(&h, "output.dense"), f);
            l.out_norm.visit(&join(&h, "output.LayerNorm"), f);
        }
        if let Some(pooler) = &self.pooler {
            pooler.visit(&join(&p, "pooler.dense"), f);
        }
        if let Some(head) = &self.mlm {
            let c = join(prefix, "cls.predictions");
            head.dense.visit(&join(&c, "transform.dense"), f);
            head.norm.visit(&join(&c, "transform.LayerNorm"), f);
            f(join(&c, "bias"), &head.bias);
        }
    }
}
