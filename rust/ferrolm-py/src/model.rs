//! `_core.Gpt`, `_core.Generation` and safetensors file I/O for Python.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Mutex;

use numpy::{IntoPyArray, PyArray1, PyArrayDyn, PyArrayMethods, PyReadonlyArrayDyn, PyUntypedArrayMethods};
use pyo3::exceptions::{PyKeyError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use pyo3::wrap_pyfunction;

use ferrolm::checkpoint::{from_safetensors_where, read_file, read_weights, write_safetensors, Stored, Weights};
use ferrolm::generate::{Generation, Sampling, TextStream};
use ferrolm::model::{Activation, Batch, Bert, BertConfig, Gpt, GptConfig};

use crate::errors::{IntoPy, ShapeError};
use crate::nn::{named, seed_or_next, Seed};
use crate::tensor::{mask_of_shape, to_ids, to_tensor, PyTensor};
use crate::tokenizer::PyTokenizer;
use crate::{compute, compute_locked, interruptible, locked};

/// JSON text (a model config) as the equivalent Python object.
fn json_to_py<'py>(py: Python<'py>, json: String) -> PyResult<Bound<'py, PyAny>> {
    py.import("json")?.call_method1("loads", (json,))
}

/// A GPT-2 language model (weights shared by clones; see `deep_clone`).
#[pyclass(name = "Gpt", module = "ferrolm._core", frozen)]
pub struct PyGpt(pub Gpt);

/// Token ids [B, T] with optional positions [B, T] and key mask [B, keys].
struct Inputs {
    ids: Vec<i64>,
    b: usize,
    t: usize,
    positions: Option<Vec<i64>>,
    mask: Option<Vec<bool>>,
    token_types: Option<Vec<i64>>,
}

impl Inputs {
    fn new(
        ids: &Bound<'_, PyAny>,
        positions: Option<&Bound<'_, PyAny>>,
        mask: Option<&Bound<'_, PyAny>>,
        token_types: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Inputs> {
        let (ids, shape) = to_ids(ids)?;
        let [b, t] = shape[..] else {
            return Err(ShapeError::new_err(format!("ids must be a 2-D [batch, tokens] array, got shape {shape:?}")));
        };
        // Per-token inputs must be laid out as the ids are (a transposed one has as many values).
        let per_token = |given: Option<&Bound<'_, PyAny>>, what: &str| -> PyResult<Option<Vec<i64>>> {
            let Some(given) = given else { return Ok(None) };
            let (values, given_shape) = to_ids(given)?;
            if given_shape != [b, t] {
                return Err(ShapeError::new_err(format!(
                    "{what} must have the ids' shape [{b}, {t}], got {given_shape:?}"
                )));
            }
            Ok(Some(values))
        };
        let positions = per_token(positions, "positions")?;
        let mask = mask_of_shape(mask, b, t, "attention_mask")?;
        let token_types = per_token(token_types, "token_type_ids")?;
        Ok(Inputs { ids, b, t, positions, mask, token_types })
    }

    fn batch(&self) -> Batch<'_> {
        Batch {
            positions: self.positions.as_deref(),
            key_mask: self.mask.as_deref(),
            token_types: self.token_types.as_deref(),
            ..Batch::new(&self.ids, self.b, self.t)
        }
    }
}

#[pymethods]
impl PyGpt {
    #[new]
    #[pyo3(signature = (vocab_size, block_size, n_layer, n_head, n_embd, dropout = 0.0, bias = true, layer_norm_epsilon = 1e-5, seed = None, attn_dropout = None, activation_function = "gelu_new"))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        vocab_size: usize,
        block_size: usize,
        n_layer: usize,
        n_head: usize,
        n_embd: usize,
        dropout: f32,
        bias: bool,
        layer_norm_epsilon: f32,
        seed: Option<Seed>,
        attn_dropout: Option<f32>,
        activation_function: &str,
    ) -> PyResult<Self> {
        let (attn_dropout, activation) =
            (attn_dropout.unwrap_or(dropout), Activation::from_name(activation_function).py()?);
        let config = GptConfig {
            vocab_size,
            block_size,
            n_layer,
            n_head,
            n_embd,
            dropout,
            attn_dropout,
            bias,
            activation,
            layer_norm_epsilon,
            bos_token_id: None,
            eos_token_id: None,
        };
        let seed = seed_or_next(seed);
        compute(py, || Gpt::new(config, seed)).py().map(PyGpt)
    }

    /// Loads config.json + model.safetensors from a directory (ours or Hugging Face GPT-2).
    #[staticmethod]
    fn load(py: Python<'_>, dir: PathBuf) -> PyResult<Self> {
        compute(py, || Gpt::load(&dir)).py().map(PyGpt)
    }

    /// Writes config.json + model.safetensors into a directory, atomically.
    fn save(&self, py: Python<'_>, dir: PathBuf) -> PyResult<()> {
        compute(py, || self.0.save(&dir)).py()
    }

    /// The architecture as a Hugging Face style config dict.
    #[getter]
    fn config<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        json_to_py(py, self.0.config().to_json().to_string())
    }

    /// Final hidden states [B, T, C]; `dropout_seed` turns on training-mode dropout.
    #[pyo3(signature = (ids, positions = None, attention_mask = None, dropout_seed = None))]
    fn hidden(
        &self,
        py: Python<'_>,
        ids: &Bound<'_, PyAny>,
        positions: Option<&Bound<'_, PyAny>>,
        attention_mask: Option<&Bound<'_, PyAny>>,
        dropout_seed: Option<Seed>,
    ) -> PyResult<PyTensor> {
        let x = Inputs::new(ids, positions, attention_mask, None)?;
        compute(py, || self.0.hidden(&x.batch(), dropout_seed.map(|s| s.0), None)).py().map(PyTensor)
    }

    /// Next-token logits from hidden states (the head is tied to the token embedding).
    fn logits(&self, py: Python<'_>, hidden: PyTensor) -> PyResult<PyTensor> {
        compute(py, || self.0.logits(&hidden.0)).py().map(PyTensor)
    }

    /// Logits [B, T, V] for ids [B, T].
    #[pyo3(signature = (ids, positions = None, attention_mask = None, dropout_seed = None))]
    fn forward(
        &self,
        py: Python<'_>,
        ids: &Bound<'_, PyAny>,
        positions: Option<&Bound<'_, PyAny>>,
        attention_mask: Option<&Bound<'_, PyAny>>,
        dropout_seed: Option<Seed>,
    ) -> PyResult<PyTensor> {
        let x = Inputs::new(ids, positions, attention_mask, None)?;
        compute(py, || self.0.forward(&x.batch(), dropout_seed.map(|s| s.0), None)).py().map(PyTensor)
    }

    fn named_parameters(&self) -> Vec<(String, PyTensor)> {
        named(&self.0)
    }

    /// Log-probability of each token given the ones before it (n - 1 values), through a sliding
    /// window of the context, `stride` apart (default half the context), past its end.
    #[pyo3(signature = (ids, stride = None))]
    fn score<'py>(
        &self,
        py: Python<'py>,
        ids: &Bound<'_, PyAny>,
        stride: Option<usize>,
    ) -> PyResult<Bound<'py, PyArray1<f32>>> {
        let (ids, shape) = to_ids(ids)?;
        if shape.len() != 1 {
            return Err(ShapeError::new_err(format!("score takes one sequence of ids, got shape {shape:?}")));
        }
        // One window (a sentence) is quick: a watcher thread would cost more than the scoring.
        if ids.len() <= self.0.config().block_size {
            return compute(py, || self.0.score(&ids, stride)).py().map(|v| v.into_pyarray(py));
        }
        let stop = AtomicBool::new(false);
        interruptible(py, &stop, || self.0.score_until(&ids, stride, &stop)).map(|v| v.into_pyarray(py))
    }

    /// The model with a larger vocabulary (new token rows N(0, 0.02); other weights shared).
    #[pyo3(signature = (vocab_size, seed = Seed(0)), text_signature = "($self, vocab_size, seed=0)")]
    fn with_vocab(&self, py: Python<'_>, vocab_size: usize, seed: Seed) -> PyResult<PyGpt> {
        compute(py, || self.0.with_vocab(vocab_size, seed.0)).py().map(PyGpt)
    }

    /// The same model (weights shared) with other dropout rates; `attn_dropout` defaults to `dropout`.
    #[pyo3(signature = (dropout, attn_dropout = None))]
    fn with_dropout(&self, dropout: f32, attn_dropout: Option<f32>) -> PyResult<PyGpt> {
        self.0.with_dropout(dropout, attn_dropout.unwrap_or(dropout)).py().map(PyGpt)
    }

    /// An independent copy of the model (own weights, gradients and frozen parameters kept).
    fn deep_clone(&self, py: Python<'_>) -> PyResult<PyGpt> {
        compute(py, || self.0.deep_clone()).py().map(PyGpt)
    }

    /// `copy.deepcopy`: as `deep_clone`.
    fn __deepcopy__(&self, py: Python<'_>, _memo: &Bound<'_, PyAny>) -> PyResult<PyGpt> {
        self.deep_clone(py)
    }

    /// Starts generating from token-id prompts (of any lengths); see `Generation.step`. With
    /// a `tokenizer`, only ids it has are sampled (`Sampling::within`).
    // `text_signature`: pyo3 would render the `Vec::new()` and `Setting` defaults as `...`.
    #[pyo3(
        signature = (prompts, temperature = Setting(1.0), top_k = None, top_p = None, repetition_penalty = Setting(1.0), seed = None, stop_tokens = Vec::new(), tokenizer = None),
        text_signature = "($self, prompts, temperature=1.0, top_k=None, top_p=None, repetition_penalty=1.0, seed=None, stop_tokens=(), tokenizer=None)"
    )]
    #[allow(clippy::too_many_arguments)]
    fn generation(
        &self,
        py: Python<'_>,
        prompts: Vec<Vec<i64>>,
        temperature: Setting,
        top_k: Option<usize>,
        top_p: Option<Setting>,
        repetition_penalty: Setting,
        seed: Option<Seed>,
        stop_tokens: Vec<i64>,
        tokenizer: Option<PyRef<'_, PyTokenizer>>,
    ) -> PyResult<PyGeneration> {
        // Greedy decoding draws nothing: it leaves the stream as it was (as dropout at p=0 does).
        let seed = if temperature.0 > 0.0 { seed_or_next(seed) } else { seed.map_or(0, |s| s.0) };
        let mut sampling = sampling(temperature, top_k, top_p, repetition_penalty, seed);
        if let Some(tokenizer) = tokenizer {
            sampling = sampling.within(&tokenizer.get());
        }
        compute(py, || Generation::new(&self.0, &prompts, sampling, stop_tokens))
            .py()
            .map(|g| PyGeneration(Mutex::new(g)))
    }
}

/// A BERT encoder (with masked-LM head unless loaded from an encoder-only checkpoint).
#[pyclass(name = "Bert", module = "ferrolm._core", frozen)]
pub struct PyBert(pub Bert);

#[pymethods]
impl PyBert {
    #[new]
    #[pyo3(signature = (vocab_size, hidden_size, num_hidden_layers, num_attention_heads, intermediate_size,
                        max_position_embeddings = 512, type_vocab_size = 2, hidden_dropout_prob = 0.1,
                        layer_norm_eps = 1e-12, pad_token_id = 0, pooler = false, seed = None, attention_probs_dropout_prob = None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        vocab_size: usize,
        hidden_size: usize,
        num_hidden_layers: usize,
        num_attention_heads: usize,
        intermediate_size: usize,
        max_position_embeddings: usize,
        type_vocab_size: usize,
        hidden_dropout_prob: f32,
        layer_norm_eps: f32,
        pad_token_id: usize,
        pooler: bool,
        seed: Option<Seed>,
        attention_probs_dropout_prob: Option<f32>,
    ) -> PyResult<Self> {
        let config = BertConfig {
            vocab_size,
            hidden_size,
            num_hidden_layers,
            num_attention_heads,
            intermediate_size,
            max_position_embeddings,
            type_vocab_size,
            hidden_dropout_prob,
            attention_probs_dropout_prob: attention_probs_dropout_prob.unwrap_or(hidden_dropout_prob),
            layer_norm_eps,
            pad_token_id,
        };
        let seed = seed_or_next(seed);
        compute(py, || Bert::new(config, pooler, seed)).py().map(PyBert)
    }

    /// Loads a Hugging Face style BERT directory (config.json + model.safetensors).
    #[staticmethod]
    fn load(py: Python<'_>, dir: PathBuf) -> PyResult<Self> {
        compute(py, || Bert::load(&dir)).py().map(PyBert)
    }

    fn save(&self, py: Python<'_>, dir: PathBuf) -> PyResult<()> {
        compute(py, || self.0.save(&dir)).py()
    }

    /// The same model (weights shared) with other dropout rates; the attention rate defaults to the hidden one.
    #[pyo3(signature = (hidden_dropout_prob, attention_probs_dropout_prob = None))]
    fn with_dropout(&self, hidden_dropout_prob: f32, attention_probs_dropout_prob: Option<f32>) -> PyResult<PyBert> {
        let attention = attention_probs_dropout_prob.unwrap_or(hidden_dropout_prob);
        self.0.with_dropout(hidden_dropout_prob, attention).py().map(PyBert)
    }

    #[getter]
    fn config<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        json_to_py(py, self.0.config().to_json().to_string())
    }

    /// An independent copy of the model (own weights, gradients and frozen parameters kept).
    fn deep_clone(&self, py: Python<'_>) -> PyResult<PyBert> {
        compute(py, || self.0.deep_clone()).py().map(PyBert)
    }

    /// `copy.deepcopy`: as `deep_clone`.
    fn __deepcopy__(&self, py: Python<'_>, _memo: &Bound<'_, PyAny>) -> PyResult<PyBert> {
        self.deep_clone(py)
    }

    /// The same encoder (weights shared) with a freshly initialised pooler.
    #[pyo3(signature = (seed = Seed(0)), text_signature = "($self, seed=0)")]
    fn with_new_pooler(&self, py: Python<'_>, seed: Seed) -> PyResult<PyBert> {
        compute(py, || self.0.with_new_pooler(seed.0)).py().map(PyBert)
    }

    /// The same encoder (weights shared) with a freshly initialised masked-LM head.
    #[pyo3(signature = (seed = Seed(0)), text_signature = "($self, seed=0)")]
    fn with_new_mlm_head(&self, py: Python<'_>, seed: Seed) -> PyResult<PyBert> {
        compute(py, || self.0.with_new_mlm_head(seed.0)).py().map(PyBert)
    }

    #[getter]
    fn has_mlm_head(&self) -> bool {
        self.0.mlm.is_some()
    }

    #[getter]
    fn has_pooler(&self) -> bool {
        self.0.pooler.is_some()
    }

    /// Last hidden states [B, T, C]; `attention_mask` [B, T] is true (1) for real tokens.
    #[pyo3(signature = (ids, token_type_ids = None, attention_mask = None, dropout_seed = None))]
    fn hidden(
        &self,
        py: Python<'_>,
        ids: &Bound<'_, PyAny>,
        token_type_ids: Option<&Bound<'_, PyAny>>,
        attention_mask: Option<&Bound<'_, PyAny>>,
        dropout_seed: Option<Seed>,
    ) -> PyResult<PyTensor> {
        let x = Inputs::new(ids, None, attention_mask, token_type_ids)?;
        compute(py, || self.0.hidden(&x.batch(), dropout_seed.map(|s| s.0))).py().map(PyTensor)
    }

    /// Masked-LM logits [.., V] from hidden states.
    fn mlm_logits(&self, py: Python<'_>, hidden: PyTensor) -> PyResult<PyTensor> {
        compute(py, || self.0.mlm_logits(&hidden.0)).py().map(PyTensor)
    }

    /// The pooled [CLS] vector [B, C] (tanh of the pooler's dense layer).
    fn pooled(&self, py: Python<'_>, hidden: PyTensor) -> PyResult<PyTensor> {
        compute(py, || self.0.pooled(&hidden.0)).py().map(PyTensor)
    }

    fn named_parameters(&self) -> Vec<(String, PyTensor)> {
        named(&self.0)
    }
}

/// A generation in progress: each `step()` adds one token to every unfinished prompt.
#[pyclass(name = "Generation", module = "ferrolm._core", frozen)]
pub struct PyGeneration(Mutex<Generation>);

#[pymethods]
impl PyGeneration {
    /// The next token of each row (None for rows already finished by a stop token).
    fn step(&self, py: Python<'_>) -> PyResult<Vec<Option<i64>>> {
        compute_locked(py, &self.0, |g| g.step()).py()
    }

    /// Up to `max_new_tokens` more tokens per row, generated without returning to Python (but
    /// looking for Ctrl-C every few tokens, so a long run can be interrupted).
    fn run(&self, py: Python<'_>, max_new_tokens: usize) -> PyResult<Vec<Vec<i64>>> {
        const TOKENS_BETWEEN_SIGNAL_CHECKS: usize = 16;
        let mut generated: Vec<Vec<i64>> = Vec::new();
        let mut left = max_new_tokens;
        loop {
            let n = left.min(TOKENS_BETWEEN_SIGNAL_CHECKS);
            let (part, finished) = compute_locked(py, &self.0, |g| g.run(n).map(|part| (part, g.finished()))).py()?;
            generated.resize(part.len(), Vec::new());
            generated.iter_mut().zip(part).for_each(|(row, new)| row.extend(new));
            left -= n;
            if left == 0 || finished {
                return Ok(generated);
            }
            py.check_signals()?;
        }
    }

    #[getter]
    fn finished(&self, py: Python<'_>) -> bool {
        locked(py, &self.0, |g| g.finished())
    }

    /// Continues a one-prompt generation with more token ids (a chat's next turn), run through
    /// the cache after what it holds; a stop token that finished it is dropped first. ValueError
    /// for a batch, or ids that do not fit in `room`; IndexError for ids outside the vocabulary.
    fn extend(&self, py: Python<'_>, ids: Vec<i64>) -> PyResult<()> {
        compute_locked(py, &self.0, |g| g.extend(&ids)).py()
    }

    /// Free positions in the cache: how many token ids `extend` can add.
    #[getter]
    fn room(&self, py: Python<'_>) -> usize {
        locked(py, &self.0, |g| g.room())
    }

    /// Whether the cache has dropped old tokens to make room (rows go on from a window).
    #[getter]
    fn windowed(&self, py: Python<'_>) -> bool {
        locked(py, &self.0, |g| g.windowed())
    }
}

/// Generated token ids turned into text as they come, held back at a possible stop string and
/// ended by one (see `ferrolm::generate::TextStream`).
#[pyclass(name = "TextStream", module = "ferrolm._core")]
pub struct PyTextStream(TextStream);

#[pymethods]
impl PyTextStream {
    /// A stream of the text generated after `prompt` (its ids), ending at a stop string or token.
    #[new]
    #[pyo3(signature = (stops = Vec::new(), stop_tokens = Vec::new(), prompt = Vec::new()))]
    fn new(stops: Vec<String>, stop_tokens: Vec<u32>, prompt: Vec<u32>) -> PyResult<Self> {
        Ok(PyTextStream(TextStream::new(&stops, &stop_tokens).py()?.after(&prompt)))
    }

    /// Adds a generated token; returns the text that became final.
    fn push(&mut self, tokenizer: PyRef<'_, PyTokenizer>, token: u32) -> PyResult<String> {
        self.0.push(&tokenizer.get(), token).py()
    }

    /// Ends the stream; returns everything not yet returned.
    fn flush(&mut self) -> String {
        self.0.flush()
    }

    /// The whole text so far (cut at a stop string).
    #[getter]
    fn text(&self) -> &str {
        self.0.text()
    }

    /// Whether the text has ended (a stop string, a stop token, or flush()).
    #[getter]
    fn done(&self) -> bool {
        self.0.is_done()
    }

    /// Whether a stop string ended the text (its tokens were generated; the text drops them).
    #[getter]
    fn stopped_by_string(&self) -> bool {
        self.0.stopped_by_string()
    }
}

/// Writes named tensors (Tensors or array-likes, stored as float32) and string metadata to a
/// safetensors file, atomically.
#[pyfunction]
#[pyo3(signature = (path, tensors, metadata = None))]
fn save_safetensors(
    path: PathBuf,
    tensors: &Bound<'_, PyDict>,
    metadata: Option<HashMap<String, String>>,
) -> PyResult<()> {
    // C-contiguous float32 arrays (an optimizer's state_dict) are written from their memory;
    // anything else (tensors, other dtypes, views) is converted first.
    enum Data<'py> {
        Borrowed(PyReadonlyArrayDyn<'py, f32>),
        Owned(Vec<f32>),
    }
    let mut items = Vec::new();
    for (k, v) in tensors.iter() {
        let borrowed = v.cast::<PyArrayDyn<f32>>().ok().map(|a| a.readonly()).filter(|a| a.is_c_contiguous());
        let (shape, data) = match borrowed {
            Some(a) => (a.shape().to_vec(), Data::Borrowed(a)),
            None => {
                let t = to_tensor(&v)?;
                (t.shape().to_vec(), Data::Owned(t.to_vec()))
            }
        };
        items.push((k.extract::<String>()?, shape, data));
    }
    let refs = items
        .iter()
        .map(|(name, shape, data)| {
            let values = match data {
                Data::Borrowed(a) => a.as_slice().map_err(|e| PyValueError::new_err(e.to_string()))?,
                Data::Owned(v) => &v[..],
            };
            Ok((name.clone(), shape.clone(), values))
        })
        .collect::<PyResult<Vec<_>>>()?;
    let metadata: BTreeMap<String, String> = metadata.unwrap_or_default().into_iter().collect();
    // The GIL stays held: the arrays are borrowed from Python, which must not change them meanwhile.
    write_safetensors(&path, &refs, metadata).py()
}

/// Reads a safetensors file: ({name: float32 array}, metadata); with `names`, only those tensors (KeyError for a
/// name the file does not hold).
#[pyfunction]
#[pyo3(signature = (path, names = None))]
fn load_safetensors<'py>(
    py: Python<'py>,
    path: PathBuf,
    names: Option<Vec<String>>,
) -> PyResult<(Bound<'py, PyDict>, HashMap<String, String>)> {
    let what = path.display().to_string();
    let wanted = |name: &str| names.as_ref().is_none_or(|n| n.iter().any(|w| w == name));
    let (tensors, metadata) =
        compute(py, || read_file(&path).and_then(|b| from_safetensors_where(&b, &what, wanted))).py()?;
    if let Some(missing) = names.iter().flatten().find(|n| !tensors.contains_key(*n)) {
        return Err(PyKeyError::new_err(format!("{what} holds no tensor named {missing:?}")));
    }
    Ok((arrays(py, tensors)?, metadata.into_iter().collect()))
}

/// Reads a model directory's tensors, from model.safetensors or the shards its
/// model.safetensors.index.json names: {name: float32 array}; with `names`, only those.
#[pyfunction]
#[pyo3(signature = (path, names = None))]
fn load_model_weights<'py>(py: Python<'py>, path: PathBuf, names: Option<Vec<String>>) -> PyResult<Bound<'py, PyDict>> {
    let wanted = |name: &str| names.as_ref().is_none_or(|n| n.iter().any(|w| w == name));
    arrays(py, compute(py, || read_weights(&path, wanted)).py()?.tensors)
}

/// The files holding a model directory's weights: model.safetensors, or the shard index and the
/// shards it names (index first); [] when there are none. FormatError for a bad index, or for
/// weights only in another format (pytorch_model.bin).
#[pyfunction]
fn model_weights_files(path: PathBuf) -> PyResult<Vec<PathBuf>> {
    Ok(Weights::locate(&path).py()?.files())
}

/// Stored tensors as {name: float32 array of their shape}.
fn arrays(py: Python<'_>, tensors: BTreeMap<String, Stored>) -> PyResult<Bound<'_, PyDict>> {
    let out = PyDict::new(py);
    for (name, s) in tensors {
        let arr: Bound<'_, PyArray1<f32>> = s.data.into_pyarray(py);
        out.set_item(name, arr.reshape(s.shape)?)?;
    }
    Ok(out)
}

/// A sampling setting (a Python float) in float32, kept on its side of 0 and infinity: a valid
/// value (`top_p=1e-50`, a temperature of 1e39) became 0 or inf in float32 and was refused as
/// if it had been given so. NaN, infinities and 0 stay as they are, for `Sampling::validate`.
#[derive(Clone, Copy)]
struct Setting(f32);

impl<'a, 'py> FromPyObject<'a, 'py> for Setting {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        let x: f64 = obj.extract()?;
        if !x.is_finite() || x == 0.0 {
            return Ok(Setting(x as f32));
        }
        Ok(Setting((x.abs().clamp(f64::from(f32::MIN_POSITIVE), f64::from(f32::MAX)) as f32).copysign(x as f32)))
    }
}

/// Refuses sampling settings that `Gpt.generation` would refuse (ValueError), without starting
/// a generation: for what checks them before its first one (a chat).
#[pyfunction]
#[pyo3(
    signature = (temperature = Setting(1.0), top_k = None, top_p = None, repetition_penalty = Setting(1.0)),
    text_signature = "(temperature=1.0, top_k=None, top_p=None, repetition_penalty=1.0)"
)]
fn check_sampling(
    temperature: Setting,
    top_k: Option<usize>,
    top_p: Option<Setting>,
    repetition_penalty: Setting,
) -> PyResult<()> {
    sampling(temperature, top_k, top_p, repetition_penalty, 0).validate().py()
}

/// The `Sampling` of Python's settings.
fn sampling(
    temperature: Setting,
    top_k: Option<usize>,
    top_p: Option<Setting>,
    repetition_penalty: Setting,
    seed: u64,
) -> Sampling {
    let (temperature, top_p, repetition_penalty) = (temperature.0, top_p.map(|p| p.0), repetition_penalty.0);
    Sampling { temperature, top_k, top_p, repetition_penalty, seed, ..Sampling::default() }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyGpt>()?;
    m.add_class::<PyBert>()?;
    m.add_class::<PyGeneration>()?;
    m.add_class::<PyTextStream>()?;
    m.add_function(wrap_pyfunction!(check_sampling, m)?)?;
    m.add_function(wrap_pyfunction!(save_safetensors, m)?)?;
    m.add_function(wrap_pyfunction!(load_safetensors, m)?)?;
    m.add_function(wrap_pyfunction!(load_model_weights, m)?)?;
    m.add_function(wrap_pyfunction!(model_weights_files, m)?)?;
    Ok(())
}
