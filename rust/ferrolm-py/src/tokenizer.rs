//! `ferrolm.Tokenizer`: thin bindings over `ferrolm::tokenizer`. Arguments are converted here,
//! heavy calls (files, batches, training) run with the GIL released, errors map through
//! `errors::to_py`. No tokenization logic lives in this file.

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, RwLock};

use numpy::{PyArray1, PyArrayMethods, PyReadonlyArray1};
use pyo3::exceptions::{PyIndexError, PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyByteArray, PyBytes, PyDict, PyList, PyString, PyTuple};

use ferrolm::chat::{ChatTemplate, Role};
use ferrolm::tokenizer::{
    AllowedSpecial, BertNormalizer, Disallowed, EncodeOptions, ModelKind, PadOptions, SafeCuts, Tokenizer, Trainer,
    TrainerConfig,
};
use ferrolm::with_threads;

use crate::errors::IntoPy;
use crate::{compute, interruptible};

/// A text argument: `str` (unpaired surrogates rejected) or UTF-8 `bytes`.
fn text_arg<'a>(obj: &'a Bound<'_, PyAny>, what: &str) -> PyResult<Cow<'a, str>> {
    if let Ok(s) = obj.cast::<PyString>() {
        return s.to_cow().map(|c| Cow::Owned(c.into_owned())).map_err(|e| {
            PyValueError::new_err(format!(
                "{what} is not valid Unicode (it contains an unpaired surrogate, which has no UTF-8 form): {e}"
            ))
        });
    }
    if let Ok(b) = obj.cast::<PyBytes>() {
        return match std::str::from_utf8(b.as_bytes()) {
            Ok(s) => Ok(Cow::Owned(s.to_string())),
            Err(e) => {
                Err(PyValueError::new_err(format!("{what} is not valid UTF-8: bad byte at offset {}", e.valid_up_to())))
            }
        };
    }
    Err(PyTypeError::new_err(format!("{what} must be str or bytes, not {}", obj.get_type().name()?)))
}

/// About how many bytes of text `encode_batch` encodes between two looks for Ctrl-C.
const ENCODE_CHUNK_BYTES: usize = 1 << 22;

fn texts_arg(obj: &Bound<'_, PyAny>) -> PyResult<Vec<String>> {
    refuse_single(obj, "texts", "string")?;
    let mut out = Vec::new();
    for (i, item) in obj.try_iter()?.enumerate() {
        out.push(text_arg(&item?, &format!("texts[{i}]"))?.into_owned());
    }
    Ok(out)
}

/// Refuses a single string, bytes or path where a list of `of`s is expected (`what`: the
/// argument, named in the error): Python would iterate its characters.
fn refuse_single(obj: &Bound<'_, PyAny>, what: &str, of: &str) -> PyResult<()> {
    if obj.is_instance_of::<PyString>() || obj.is_instance_of::<PyBytes>() || obj.hasattr("__fspath__")? {
        return Err(PyTypeError::new_err(format!(
            "{what} must be a list of {of}s, not a single {of}: put it in a list"
        )));
    }
    Ok(())
}

/// A list of strings or of paths, as `refuse_single` takes them.
fn list_arg<'py, T: pyo3::conversion::FromPyObjectOwned<'py>>(
    obj: &Bound<'py, PyAny>,
    what: &str,
    of: &str,
) -> PyResult<Vec<T>> {
    refuse_single(obj, what, of)?;
    obj.extract().map_err(|_| PyTypeError::new_err(format!("{what} must be a list of {of}s")))
}

/// `from_tiktoken`'s {content: id} special tokens, each id checked.
fn special_ids(obj: &Bound<'_, PyAny>) -> PyResult<Vec<(String, u32)>> {
    let given: std::collections::HashMap<String, i128> = obj
        .extract()
        .map_err(|_| PyTypeError::new_err("special_tokens must be a dict of {token: id} (strings to integers)"))?;
    let mut out = Vec::with_capacity(given.len());
    for (token, id) in given {
        let id = u32::try_from(id).map_err(|_| {
            PyValueError::new_err(format!("special_tokens: {token:?} has id {id}, not a token id (0 to {})", u32::MAX))
        })?;
        out.push((token, id));
    }
    Ok(out)
}

/// Whether `obj` is an integer (a Python int or a numpy integer), bool aside.
fn is_integer(obj: &Bound<'_, PyAny>) -> bool {
    !obj.is_instance_of::<PyBool>() && obj.call_method0("__index__").is_ok()
}

/// Token ids from a list of ints or a 1-D integer numpy array.
fn ids_arg(obj: &Bound<'_, PyAny>) -> PyResult<Vec<u32>> {
    if let Ok(a) = obj.extract::<PyReadonlyArray1<'_, u32>>() {
        return Ok(a.as_array().to_vec());
    }
    let check = |v: i64| u32::try_from(v).map_err(|_| PyIndexError::new_err(format!("token id {v} is out of range")));
    if let Ok(a) = obj.extract::<PyReadonlyArray1<'_, i64>>() {
        return a.as_array().iter().map(|&v| check(v)).collect();
    }
    if let Ok(a) = obj.extract::<PyReadonlyArray1<'_, i32>>() {
        return a.as_array().iter().map(|&v| check(v as i64)).collect();
    }
    if obj.is_instance_of::<PyString>() || obj.is_instance_of::<PyBytes>() || obj.is_instance_of::<PyByteArray>() {
        // Bytes iterate as ints: their byte values were decoded as ids.
        let kind = obj.get_type().name().map_or_else(|_| "?".to_string(), |n| n.to_string());
        return Err(PyTypeError::new_err(format!(
            "ids must be a sequence of ints, not {kind} (text is encoded first)"
        )));
    }
    let id = |item: Bound<'_, PyAny>| {
        if item.is_instance_of::<PyBool>() {
            return Err(PyTypeError::new_err("ids must be integers, got a bool"));
        }
        let v: i64 = item.extract().map_err(|_| {
            if is_integer(&item) {
                return PyIndexError::new_err(format!("token id {item} is out of range"));
                // beyond 64 bits
            }
            let kind = item.get_type().name().map_or_else(|_| "?".to_string(), |n| n.to_string());
            PyTypeError::new_err(format!("ids must be a flat sequence of integers, got an item of type {kind}"))
        })?;
        check(v)
    };
    if let Some(ids) = obj.cast_exact::<PyList>().ok().and_then(plain_list_ids) {
        return Ok(ids);
    }
    obj.try_iter()?.map(|item| id(item?)).collect()
}

/// The ids of a list of plain ints in `u32` range (the usual argument), read with two C calls
/// an item where pyo3's iteration and conversion make eight (reference counts, type checks,
/// overflow checks): they took half of decoding's time. None when an item is anything else, for
/// the general path to read or explain.
fn plain_list_ids(list: &Bound<'_, PyList>) -> Option<Vec<u32>> {
    // The critical section (a no-op where there is a GIL) keeps other threads from changing
    // the list under a free-threaded Python.
    pyo3::sync::critical_section::with_critical_section(list.as_any(), || {
        let n = list.len();
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            // SAFETY: `i` is within the list, which cannot change meanwhile: no other thread may
            // (the GIL or the critical section) and no Python code runs (converting an exact int
            // calls none), so the borrowed item stays alive.
            let v = unsafe {
                let item = ffi::PyList_GetItem(list.as_ptr(), i as ffi::Py_ssize_t);
                if item.is_null() {
                    ffi::PyErr_Clear();
                    return None;
                }
                if ffi::Py_TYPE(item) != std::ptr::addr_of_mut!(ffi::PyLong_Type) {
                    return None;
                }
                let v = ffi::PyLong_AsLongLong(item);
                if v == -1 && !ffi::PyErr_Occurred().is_null() {
                    ffi::PyErr_Clear(); // beyond 64 bits
                    return None;
                }
                v
            };
            out.push(u32::try_from(v).ok()?);
        }
        Some(out)
    })
}

/// Encode options from the Python keywords. `allowed_special`: None or "all" (every special
/// token), "none", or special-token strings. `disallowed_special` (for special-token text not
/// allowed): None or "raise" (an error), "text" (read as text); or in tiktoken's spellings, which
/// make `allowed_special` default to none as in tiktoken: "all" (an error), an empty collection
/// (read as text), or the special-token strings that raise, allowed or not.
fn options(
    tok: &Tokenizer,
    allowed: Option<&Bound<'_, PyAny>>,
    disallowed: Option<&Bound<'_, PyAny>>,
    add_special_tokens: bool,
    max_length: Option<usize>,
) -> PyResult<EncodeOptions> {
    let specials = tok.special_tokens();
    let modes = "\"raise\", \"all\", \"text\"";
    let disallowed = disallowed.map(|d| Choice::of(d, "disallowed_special", modes)).transpose()?;
    // tiktoken's spellings of disallowed_special come with tiktoken's default allowed_special:
    // none (special-token text is text unless allowed).
    let tiktoken_style =
        matches!(&disallowed, Some(Choice::Tokens(_))) || matches!(&disallowed, Some(Choice::Mode(s)) if s == "all");
    let allowed_special = match allowed.map(|a| Choice::of(a, "allowed_special", "\"all\", \"none\"")).transpose()? {
        None if tiktoken_style => AllowedSpecial::None,
        None => AllowedSpecial::All,
        Some(Choice::Mode(s)) if s == "all" => AllowedSpecial::All,
        Some(Choice::Mode(s)) if s == "none" => AllowedSpecial::None,
        Some(Choice::Mode(s)) => AllowedSpecial::Only(specials.resolve(&[s]).py()?), // one token's string
        Some(Choice::Tokens(names)) => AllowedSpecial::Only(specials.resolve(&names).py()?),
    };
    let disallowed = match disallowed {
        None => Disallowed::Raise,
        Some(Choice::Mode(s)) if s == "raise" || s == "all" => Disallowed::Raise,
        Some(Choice::Mode(s)) if s == "text" => Disallowed::Text,
        Some(Choice::Mode(s)) => {
            return Err(PyValueError::new_err(format!(
                "disallowed_special must be {modes} or a collection of special-token strings, not {s:?}"
            )))
        }
        Some(Choice::Tokens(names)) if names.is_empty() => Disallowed::Text,
        Some(Choice::Tokens(names)) => Disallowed::Only(specials.resolve(&names).py()?),
    };
    Ok(EncodeOptions { allowed_special, disallowed, add_special_tokens, max_length })
}

/// A special-token keyword's value: a mode, or a collection of special-token strings.
enum Choice {
    Mode(String),
    Tokens(Vec<String>),
}

impl Choice {
    fn of(obj: &Bound<'_, PyAny>, name: &str, modes: &str) -> PyResult<Choice> {
        if let Ok(s) = obj.extract::<String>() {
            return Ok(Choice::Mode(s));
        }
        obj.try_iter().and_then(|it| it.map(|x| x?.extract::<String>()).collect()).map(Choice::Tokens).map_err(|_| {
            PyTypeError::new_err(format!("{name} must be {modes} or a collection of special-token strings"))
        })
    }
}

/// Ids with (start, end) character offsets.
type IdsAndOffsets = (Vec<u32>, Vec<(usize, usize)>);

/// Tokenizer: byte-level BPE, WordPiece or characters, compatible with Hugging Face tokenizer.json.
#[pyclass(name = "Tokenizer", module = "ferrolm", frozen)]
pub struct PyTokenizer {
    inner: RwLock<Arc<Tokenizer>>,
    /// One Python int per id, shared by every returned list: building a list is then a
    /// reference-count increment per token instead of an int allocation.
    ints: Mutex<Arc<Vec<Py<PyAny>>>>,
}

impl PyTokenizer {
    fn wrap(t: Tokenizer) -> Self {
        PyTokenizer { inner: RwLock::new(Arc::new(t)), ints: Mutex::new(Arc::new(Vec::new())) }
    }

    /// Ids as a Python list of (shared) ints. The list is built after the lock is released:
    /// allocating it can run the garbage collector, and so any Python code (a finalizer that
    /// encodes, or one that lets another thread in to encode), which would wait for the lock.
    fn id_list<'py>(&self, py: Python<'py>, ids: &[u32]) -> PyResult<Bound<'py, PyList>> {
        let needed = ids.iter().copied().max().map_or(0, |m| m as usize + 1);
        let ints = {
            let mut shared = self.ints.lock().unwrap_or_else(|e| e.into_inner());
            if shared.len() < needed {
                // Making ints allocates no container, so it cannot run the collector.
                let mut grown: Vec<Py<PyAny>> = shared.iter().map(|i| i.clone_ref(py)).collect();
                for next in grown.len()..needed.max(2 * grown.len()) {
                    grown.push(next.into_pyobject(py)?.into_any().unbind());
                }
                *shared = Arc::new(grown);
            }
            shared.clone()
        };
        PyList::new(py, ids.iter().map(|&i| ints[i as usize].bind(py)))
    }
    pub(crate) fn get(&self) -> Arc<Tokenizer> {
        self.inner.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[allow(clippy::too_many_arguments)]
fn trainer_config(
    kind: &str,
    vocab_size: usize,
    min_frequency: u64,
    special_tokens: Option<&Bound<'_, PyAny>>,
    pattern: &str,
    lowercase: bool,
    strip_accents: Option<bool>,
    limit_alphabet: Option<usize>,
) -> PyResult<TrainerConfig> {
    let kind: ModelKind = kind.parse().py()?;
    let mut cfg = TrainerConfig::new(kind, vocab_size);
    cfg.min_frequency = min_frequency;
    if let Some(s) = special_tokens {
        cfg.special_tokens = list_arg(s, "special_tokens", "string")?;
    }
    cfg.pattern = pattern.to_string();
    cfg.normalizer = BertNormalizer { lowercase, strip_accents, ..Default::default() };
    cfg.limit_alphabet = limit_alphabet;
    Ok(cfg)
}

/// A tokenizer read from a file, with a warning when the file sets defaults ferrolm does not
/// apply: a user of Hugging Face's encode would otherwise get other ids without a word.
fn loaded(py: Python<'_>, tok: Tokenizer) -> PyResult<PyTokenizer> {
    let unapplied = tok.unapplied_settings();
    if !unapplied.is_empty() {
        let message = format!(
            "this tokenizer.json sets {} for Hugging Face's encode calls: ferrolm keeps the setting in the file but \
             does not apply it (give max_length, truncation and padding to encode_batch_padded)",
            unapplied.join(" and ")
        );
        let warning = py.get_type::<pyo3::exceptions::PyUserWarning>();
        PyErr::warn(py, &warning, &std::ffi::CString::new(message)?, 1)?;
    }
    Ok(PyTokenizer::wrap(tok))
}

#[pymethods]
impl PyTokenizer {
    /// Loads tokenizer.json, GPT-2 vocab.json or merges.txt (with the other one beside it), BERT
    /// vocab.txt, a .tiktoken file (as `from_tiktoken` reads it), or a directory holding
    /// tokenizer.json, vocab.json + merges.txt or vocab.txt.
    #[staticmethod]
    fn from_file(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        loaded(py, compute(py, || Tokenizer::from_file(&path)).py()?)
    }

    /// Parses tokenizer.json contents.
    #[staticmethod]
    fn from_str(py: Python<'_>, json: &str) -> PyResult<Self> {
        loaded(py, compute(py, || Tokenizer::from_json(json)).py()?)
    }

    /// Loads GPT-2-style vocab.json + merges.txt; pattern is one of `PATTERNS` or a regex.
    #[staticmethod]
    #[pyo3(signature = (vocab, merges, pattern = "gpt2"))]
    fn from_vocab_merges(py: Python<'_>, vocab: PathBuf, merges: PathBuf, pattern: &str) -> PyResult<Self> {
        compute(py, || Tokenizer::from_vocab_merges(&vocab, &merges, pattern)).py().map(Self::wrap)
    }

    /// A tiktoken encoding as byte-level BPE: `source` is a `.tiktoken` file (`base64 rank` per
    /// line) or a `tiktoken.Encoding`, whose ranks, pattern and special tokens are read.
    /// `pattern` (one of `PATTERNS` or a regex) and `special_tokens` ({content: id}) default to
    /// the Encoding's, or for a file (which records neither) to those of the OpenAI encoding with
    /// as many ranks (r50k_base, p50k_base, cl100k_base, o200k_base), else to "cl100k" and none.
    #[staticmethod]
    #[pyo3(signature = (source, *, pattern = None, special_tokens = None))]
    fn from_tiktoken(
        py: Python<'_>,
        source: &Bound<'_, PyAny>,
        pattern: Option<String>,
        special_tokens: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let specials: Option<Vec<(String, u32)>> = special_tokens.map(special_ids).transpose()?;
        if source.hasattr("_mergeable_ranks")? {
            let specials = match specials {
                Some(s) => s,
                None => source
                    .getattr("_special_tokens")?
                    .extract::<std::collections::HashMap<String, u32>>()?
                    .into_iter()
                    .collect(),
            };
            let pattern: String = match pattern {
                Some(p) => p,
                None => source.getattr("_pat_str")?.extract()?,
            };
            let ranks: Vec<(Vec<u8>, u32)> = source
                .getattr("_mergeable_ranks")?
                .extract::<std::collections::HashMap<Vec<u8>, u32>>()?
                .into_iter()
                .collect();
            return compute(py, || Tokenizer::from_tiktoken_ranks(ranks, &pattern, &specials)).py().map(Self::wrap);
        }
        let path: PathBuf = source.extract().map_err(|_| {
            PyTypeError::new_err(format!(
                "source must be a .tiktoken file path or a tiktoken.Encoding, not {}",
                source.get_type().name().map_or_else(|_| "?".to_string(), |n| n.to_string())
            ))
        })?;
        compute(py, || Tokenizer::from_tiktoken_file(&path, pattern.as_deref(), specials.as_deref()))
            .map_err(|e| match e {
                // Most often an encoding's name, as tiktoken.get_encoding takes.
                ferrolm::Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                    ferrolm::Error::io(
                        format!(
                        "{}: no such file; ferrolm downloads nothing: give a .tiktoken file's path, or an encoding: \
                         Tokenizer.from_tiktoken(tiktoken.get_encoding(\"cl100k_base\"))",
                        path.display()
                    ),
                        source,
                    )
                }
                e => e,
            })
            .py()
            .map(Self::wrap)
    }

    /// Loads BERT's vocab.txt as a WordPiece tokenizer.
    #[staticmethod]
    #[pyo3(signature = (path, lowercase = true, strip_accents = None, clean_text = true, handle_chinese_chars = true))]
    fn from_bert_vocab(
        py: Python<'_>,
        path: PathBuf,
        lowercase: bool,
        strip_accents: Option<bool>,
        clean_text: bool,
        handle_chinese_chars: bool,
    ) -> PyResult<Self> {
        let norm = BertNormalizer { clean_text, handle_chinese_chars, strip_accents, lowercase };
        compute(py, || {
            let text =
                std::fs::read(&path).map_err(|e| ferrolm::Error::io(format!("reading {}", path.display()), e))?;
            let text = String::from_utf8(text).map_err(|e| {
                ferrolm::Error::Format(format!(
                    "{}: invalid UTF-8 at byte {}",
                    path.display(),
                    e.utf8_error().valid_up_to()
                ))
            })?;
            Tokenizer::from_bert_vocab(&text, norm).map_err(|e| e.context(path.display()))
        })
        .py()
        .map(Self::wrap)
    }

    /// Trains on text files (read line by line).
    ///
    /// `kind`: "bpe" (byte-level), "wordpiece" or "char"; `vocab_size` counts special tokens (for
    /// "char" an upper bound: when it leaves characters out, an `[UNK]` token stands for them;
    /// when every character fits there is none, and encoding an unseen one is a ValueError);
    /// BPE and WordPiece never merge pairs seen fewer than
    /// `min_frequency` times; `special_tokens` default to the kind's (BPE `<|endoftext|>`, char none, WordPiece BERT's
    /// `[PAD]` `[UNK]` `[CLS]` `[SEP]` `[MASK]`). BPE only: `pattern` (one of `PATTERNS`, or a
    /// regex). WordPiece only: `lowercase`, `strip_accents` (default: as `lowercase`) and
    /// `limit_alphabet` (keep the most frequent characters), as Hugging Face's BertNormalizer
    /// and WordPieceTrainer. Ctrl-C stops a training within about a second.
    #[staticmethod]
    #[pyo3(signature = (files, *, kind = "bpe", vocab_size = 32000, min_frequency = 0, special_tokens = None,
                        pattern = "gpt2", lowercase = true, strip_accents = None, limit_alphabet = None))]
    #[allow(clippy::too_many_arguments)]
    fn train(
        py: Python<'_>,
        files: &Bound<'_, PyAny>,
        kind: &str,
        vocab_size: usize,
        min_frequency: u64,
        special_tokens: Option<&Bound<'_, PyAny>>,
        pattern: &str,
        lowercase: bool,
        strip_accents: Option<bool>,
        limit_alphabet: Option<usize>,
    ) -> PyResult<Self> {
        let cfg = trainer_config(
            kind,
            vocab_size,
            min_frequency,
            special_tokens,
            pattern,
            lowercase,
            strip_accents,
            limit_alphabet,
        )?;
        let files: Vec<PathBuf> = list_arg(files, "files", "path")?;
        if files.is_empty() {
            return Err(PyValueError::new_err("train needs at least one file"));
        }
        let stop = cfg.stop.clone();
        interruptible(py, &stop, || Tokenizer::train_from_files(&files, cfg)).map(Self::wrap)
    }

    /// Trains on an iterable of strings (each one a unit of text), or of lists of them (batches,
    /// as Hugging Face's iterators may yield), counted about 8 MB at a time; the arguments are
    /// `train`'s.
    #[staticmethod]
    #[pyo3(signature = (iterator, *, kind = "bpe", vocab_size = 32000, min_frequency = 0, special_tokens = None,
                        pattern = "gpt2", lowercase = true, strip_accents = None, limit_alphabet = None))]
    #[allow(clippy::too_many_arguments)]
    fn train_from_iterator(
        py: Python<'_>,
        iterator: &Bound<'_, PyAny>,
        kind: &str,
        vocab_size: usize,
        min_frequency: u64,
        special_tokens: Option<&Bound<'_, PyAny>>,
        pattern: &str,
        lowercase: bool,
        strip_accents: Option<bool>,
        limit_alphabet: Option<usize>,
    ) -> PyResult<Self> {
        let cfg = trainer_config(
            kind,
            vocab_size,
            min_frequency,
            special_tokens,
            pattern,
            lowercase,
            strip_accents,
            limit_alphabet,
        )?;
        let stop = cfg.stop.clone();
        let mut trainer = Trainer::new(cfg).py()?;
        if iterator.is_instance_of::<PyString>() {
            return Err(PyTypeError::new_err("train_from_iterator needs an iterable of strings, not a single string"));
        }
        // Batches of about 8 MB keep memory bounded while the counting runs without the GIL.
        let mut batch: Vec<String> = Vec::new();
        let mut bytes = 0;
        for (i, item) in iterator.try_iter()?.enumerate() {
            let item = item?;
            // Hugging Face's iterators may yield batches (lists of texts) as well as texts.
            let texts: Vec<String> = if item.is_instance_of::<PyList>() || item.is_instance_of::<PyTuple>() {
                let each = |(j, text): (usize, PyResult<Bound<'_, PyAny>>)| {
                    Ok(text_arg(&text?, &format!("item {i}[{j}]"))?.into_owned())
                };
                item.try_iter()?.enumerate().map(each).collect::<PyResult<_>>()?
            } else {
                vec![text_arg(&item, &format!("item {i}"))?.into_owned()]
            };
            bytes += texts.iter().map(String::len).sum::<usize>();
            batch.extend(texts);
            if bytes >= 8 << 20 {
                interruptible(py, &stop, || trainer.feed(&batch))?;
                batch.clear();
                bytes = 0;
            }
        }
        interruptible(py, &stop, || {
            trainer.feed(&batch)?;
            trainer.finish()
        })
        .map(Self::wrap)
    }

    /// Writes tokenizer.json (atomically).
    fn save(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        let t = self.get();
        compute(py, || t.save(&path)).py()
    }

    /// The tokenizer.json text.
    fn to_str(&self) -> String {
        self.get().to_json()
    }

    /// Encodes text (str or UTF-8 bytes) to a list of ids. Special tokens in the text:
    /// `allowed_special` ("all", the default, "none", or token strings) are recognised; the
    /// text of the others raises ValueError, or with `disallowed_special="text"` is ordinary
    /// text. tiktoken's spellings (`disallowed_special=()`, `"all"`, or the tokens that raise)
    /// mean what they mean in tiktoken, whose `allowed_special` defaults to none.
    /// `max_length` truncates as Hugging Face's `truncation=True`: at most that many ids, the
    /// template's `[CLS]`/`[SEP]` kept; the text loses its end (for a pair, the longer text first).
    #[pyo3(signature = (text, *, allowed_special = None, disallowed_special = None, add_special_tokens = true,
                        max_length = None))]
    fn encode<'py>(
        &self,
        py: Python<'py>,
        text: &Bound<'py, PyAny>,
        allowed_special: Option<&Bound<'py, PyAny>>,
        disallowed_special: Option<&Bound<'py, PyAny>>,
        add_special_tokens: bool,
        max_length: Option<usize>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let t = self.get();
        let opts = options(&t, allowed_special, disallowed_special, add_special_tokens, max_length)?;
        let text = text_arg(text, "text")?;
        // Releasing the GIL costs more than encoding a short text.
        let ids = if text.len() > 1 << 14 { compute(py, || t.encode(&text, &opts)) } else { t.encode(&text, &opts) };
        self.id_list(py, &ids.py()?).map(Bound::into_any)
    }

    /// Encodes a pair of texts framed as the tokenizer frames pairs (BERT: [CLS] a [SEP] b [SEP]):
    /// (ids, token type ids): the template's, for BERT 0 for the first text's part and 1 for the second's.
    /// `max_length` truncates as Hugging Face's `longest_first`: the longer text loses its last
    /// tokens first (each keeps half when both are long), the template's tokens are kept.
    #[pyo3(signature = (a, b, *, allowed_special = None, disallowed_special = None, add_special_tokens = true,
                        max_length = None))]
    #[allow(clippy::too_many_arguments)]
    fn encode_pair(
        &self,
        py: Python<'_>,
        a: &Bound<'_, PyAny>,
        b: &Bound<'_, PyAny>,
        allowed_special: Option<&Bound<'_, PyAny>>,
        disallowed_special: Option<&Bound<'_, PyAny>>,
        add_special_tokens: bool,
        max_length: Option<usize>,
    ) -> PyResult<(Vec<u32>, Vec<u32>)> {
        let t = self.get();
        let opts = options(&t, allowed_special, disallowed_special, add_special_tokens, max_length)?;
        let (a, b) = (text_arg(a, "a")?, text_arg(b, "b")?);
        compute(py, || t.encode_pair(&a, &b, &opts)).py()
    }

    /// Encodes text to a numpy uint32 array.
    #[pyo3(signature = (text, *, allowed_special = None, disallowed_special = None, add_special_tokens = true,
                        max_length = None))]
    fn encode_array<'py>(
        &self,
        py: Python<'py>,
        text: &Bound<'py, PyAny>,
        allowed_special: Option<&Bound<'py, PyAny>>,
        disallowed_special: Option<&Bound<'py, PyAny>>,
        add_special_tokens: bool,
        max_length: Option<usize>,
    ) -> PyResult<Bound<'py, PyArray1<u32>>> {
        let t = self.get();
        let opts = options(&t, allowed_special, disallowed_special, add_special_tokens, max_length)?;
        let text = text_arg(text, "text")?;
        let ids = if text.len() > 1 << 20 {
            // A long text (a corpus file a user's regex may forbid cutting) stops at Ctrl-C.
            let stop = AtomicBool::new(false);
            interruptible(py, &stop, || t.encode_until(&text, &opts, &stop))?
        } else {
            compute(py, || t.encode(&text, &opts)).py()?
        };
        Ok(PyArray1::from_vec(py, ids))
    }

    /// Encodes text; returns (ids, offsets) with (start, end) character offsets per token.
    #[pyo3(signature = (text, *, allowed_special = None, disallowed_special = None, add_special_tokens = true,
                        max_length = None))]
    fn encode_with_offsets(
        &self,
        py: Python<'_>,
        text: &Bound<'_, PyAny>,
        allowed_special: Option<&Bound<'_, PyAny>>,
        disallowed_special: Option<&Bound<'_, PyAny>>,
        add_special_tokens: bool,
        max_length: Option<usize>,
    ) -> PyResult<IdsAndOffsets> {
        let t = self.get();
        let opts = options(&t, allowed_special, disallowed_special, add_special_tokens, max_length)?;
        let text = text_arg(text, "text")?;
        let enc = compute(py, || t.encode_with_offsets(&text, &opts)).py()?;
        Ok((enc.ids, enc.offsets))
    }

    /// Encodes many texts in parallel with the GIL released.
    #[pyo3(signature = (texts, *, allowed_special = None, disallowed_special = None, add_special_tokens = true,
                        max_length = None, num_threads = None))]
    #[allow(clippy::too_many_arguments)]
    fn encode_batch<'py>(
        &self,
        py: Python<'py>,
        texts: &Bound<'py, PyAny>,
        allowed_special: Option<&Bound<'py, PyAny>>,
        disallowed_special: Option<&Bound<'py, PyAny>>,
        add_special_tokens: bool,
        max_length: Option<usize>,
        num_threads: Option<usize>,
    ) -> PyResult<Bound<'py, PyList>> {
        let t = self.get();
        let opts = options(&t, allowed_special, disallowed_special, add_special_tokens, max_length)?;
        let texts = texts_arg(texts)?;
        // In chunks of a few megabytes, so that Ctrl-C is seen between them rather than after
        // the whole batch (encoding and building the lists of a gigabyte takes tens of seconds).
        // An empty batch is one empty chunk, so that its arguments are checked all the same.
        let mut rows = Vec::with_capacity(texts.len());
        let mut start = 0;
        loop {
            let (mut end, mut bytes) = (start, 0);
            while end < texts.len() && (end == start || bytes < ENCODE_CHUNK_BYTES) {
                bytes += texts[end].len();
                end += 1;
            }
            let chunk = &texts[start..end];
            let batch =
                compute(py, || with_threads(num_threads, || t.encode_batch(chunk, &opts)).and_then(|r| r)).py()?;
            for ids in batch {
                rows.push(self.id_list(py, &ids)?);
            }
            if end == texts.len() {
                return PyList::new(py, rows);
            }
            py.check_signals()?;
            start = end;
        }
    }

    /// Encodes, truncates and pads a batch: returns (ids [B, T] uint32, attention_mask [B, T] uint8).
    /// padding: "longest" or "max_length".
    #[pyo3(signature = (texts, *, max_length = None, padding = "longest", truncation = true, pad_id = None,
                        allowed_special = None, disallowed_special = None, add_special_tokens = true, num_threads = None))]
    #[allow(clippy::too_many_arguments)]
    fn encode_batch_padded<'py>(
        &self,
        py: Python<'py>,
        texts: &Bound<'py, PyAny>,
        max_length: Option<usize>,
        padding: &str,
        truncation: bool,
        pad_id: Option<u32>,
        allowed_special: Option<&Bound<'py, PyAny>>,
        disallowed_special: Option<&Bound<'py, PyAny>>,
        add_special_tokens: bool,
        num_threads: Option<usize>,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let t = self.get();
        let opts = options(&t, allowed_special, disallowed_special, add_special_tokens, None)?;
        let pad_to_max_length = match padding {
            "longest" => false,
            "max_length" => true,
            other => {
                return Err(PyValueError::new_err(format!(
                    "padding must be \"longest\" or \"max_length\", not {other:?}"
                )))
            }
        };
        let pad = PadOptions { max_length, pad_to_max_length, truncation, pad_id };
        let texts = texts_arg(texts)?;
        let b =
            compute(py, || with_threads(num_threads, || t.encode_batch_padded(&texts, &opts, &pad)).and_then(|r| r))
                .py()?;
        let ids = PyArray1::from_vec(py, b.ids).reshape([b.rows, b.cols])?;
        let mask = PyArray1::from_vec(py, b.attention_mask).reshape([b.rows, b.cols])?;
        PyTuple::new(py, [ids.into_any(), mask.into_any()])
    }

    /// Decodes ids (list or numpy array) to text. Special tokens are kept unless
    /// `skip_special_tokens` (as tiktoken does; Hugging Face's `decode` skips them by default).
    #[pyo3(signature = (ids, *, skip_special_tokens = false))]
    fn decode(&self, py: Python<'_>, ids: &Bound<'_, PyAny>, skip_special_tokens: bool) -> PyResult<String> {
        let t = self.get();
        let ids = ids_arg(ids)?;
        compute(py, || t.decode(&ids, skip_special_tokens)).py()
    }

    /// Decodes ids to raw bytes (exact even for a sequence that cuts a character).
    #[pyo3(signature = (ids, *, skip_special_tokens = false))]
    fn decode_bytes<'py>(
        &self,
        py: Python<'py>,
        ids: &Bound<'py, PyAny>,
        skip_special_tokens: bool,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let t = self.get();
        let ids = ids_arg(ids)?;
        let bytes = compute(py, || t.decode_bytes(&ids, skip_special_tokens)).py()?;
        Ok(PyBytes::new(py, &bytes))
    }

    /// Decodes many id sequences in parallel.
    #[pyo3(signature = (batch, *, skip_special_tokens = false, num_threads = None))]
    fn decode_batch(
        &self,
        py: Python<'_>,
        batch: &Bound<'_, PyAny>,
        skip_special_tokens: bool,
        num_threads: Option<usize>,
    ) -> PyResult<Vec<String>> {
        let t = self.get();
        let batch: Vec<Vec<u32>> = batch.try_iter()?.map(|x| ids_arg(&x?)).collect::<PyResult<_>>()?;
        compute(py, || with_threads(num_threads, || t.decode_batch(&batch, skip_special_tokens)).and_then(|r| r)).py()
    }

    /// The pieces text is cut into before the model runs (regex pieces, normalized words or characters).
    fn pre_tokenize(&self, text: &Bound<'_, PyAny>) -> PyResult<Vec<String>> {
        let text = text_arg(text, "text")?;
        self.get().pre_tokenize(&text).py()
    }

    /// The id of a token string (vocabulary form), or None.
    fn token_to_id(&self, token: &str) -> Option<u32> {
        self.get().token_to_id(token)
    }

    /// The token string of an id, or None (also for any integer outside the vocabulary).
    fn id_to_token(&self, id: &Bound<'_, PyAny>) -> PyResult<Option<String>> {
        if let (Ok(id), false) = (id.extract::<u32>(), id.is_instance_of::<PyBool>()) {
            return Ok(self.get().id_to_token(id));
        }
        if is_integer(id) {
            return Ok(None); // negative, or beyond 32 bits
        }
        Err(PyTypeError::new_err(format!("id must be an integer, not {}", id.get_type().name()?)))
    }

    /// The ids below vocab_size that have no token, in order: gaps a file may leave (added
    /// tokens above the model's ids, tiktoken's ids around its special tokens). Text generation
    /// never samples them.
    fn unused_ids(&self) -> Vec<u32> {
        self.get().unused_ids()
    }

    /// Number of ids (one past the largest id).
    #[getter]
    fn vocab_size(&self) -> usize {
        self.get().vocab_size()
    }

    /// "bpe", "wordpiece" or "char".
    #[getter]
    fn kind(&self) -> &'static str {
        self.get().kind()
    }

    /// BPE's pre-tokenizer: a built-in pattern's name (`PATTERNS`), else the regex; None for
    /// WordPiece and characters.
    #[getter]
    fn pattern(&self) -> Option<String> {
        self.get().pattern().map(str::to_string)
    }

    /// Whether BPE puts a space before a text that does not start with one (RoBERTa's setting).
    #[getter]
    fn add_prefix_space(&self) -> bool {
        self.get().add_prefix_space()
    }

    /// Where a long text may be cut into pieces whose ids, joined, are the whole text's:
    /// "spaces and line breaks" (before a space between non-spaces, after a line break between
    /// non-spaces, but before a slash), "spaces" (add_prefix_space, an lstrip added token) or None
    /// (a user's regex, an added token mixing white space with other characters, or an rstrip one,
    /// may span any point).
    #[getter]
    fn safe_cuts(&self) -> Option<&'static str> {
        match self.get().safe_cuts() {
            SafeCuts::SpacesAndLineBreaks => Some("spaces and line breaks"),
            SafeCuts::Spaces => Some("spaces"),
            SafeCuts::Nowhere => None,
        }
    }

    /// The special tokens as {token: id}.
    #[getter]
    fn special_tokens<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        let tok = self.get();
        let specials = tok.special_tokens();
        for (s, id) in specials.iter().filter(|&(_, id)| specials.is_special(id)) {
            d.set_item(s, id)?;
        }
        Ok(d)
    }

    /// The default padding id.
    #[getter]
    fn pad_id(&self) -> u32 {
        self.get().pad_id()
    }

    /// The whole vocabulary as {token: id}.
    fn get_vocab<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let t = self.get();
        let d = PyDict::new(py);
        for id in 0..t.vocab_size() as u32 {
            if let Some(s) = t.id_to_token(id) {
                d.set_item(s, id)?;
            }
        }
        Ok(d)
    }

    /// Registers special tokens (new ones get new ids); returns how many were added.
    fn add_special_tokens(&self, tokens: &Bound<'_, PyAny>) -> PyResult<usize> {
        let tokens: Vec<String> = list_arg(tokens, "tokens", "string")?;
        let mut guard = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let mut t = (**guard).clone();
        let n = t.add_special_tokens(&tokens).py()?;
        *guard = Arc::new(t);
        Ok(n)
    }

    fn __len__(&self) -> usize {
        self.get().vocab_size()
    }

    fn __repr__(&self) -> String {
        let t = self.get();
        format!(
            "Tokenizer(kind={:?}, vocab_size={}, special_tokens={})",
            t.kind(),
            t.vocab_size(),
            t.special_tokens().len()
        )
    }

    /// An independent copy (special tokens added to one are not added to the other).
    fn copy(&self) -> Self {
        // One immutable tokenizer shared: add_special_tokens replaces a copy's, not the other's.
        PyTokenizer { inner: RwLock::new(self.get()), ints: Mutex::new(Arc::new(Vec::new())) }
    }

    fn __copy__(&self) -> Self {
        self.copy()
    }

    fn __deepcopy__(&self, _memo: &Bound<'_, PyAny>) -> Self {
        self.copy()
    }

    /// Pickling support (for multiprocessing data loaders): rebuilt from tokenizer.json text.
    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<(Bound<'py, PyAny>, (String,))> {
        let ctor = slf.get_type().getattr("_unpickle")?;
        Ok((ctor, (slf.get().get().to_json(),)))
    }

    /// `from_str` without its warning about the file's settings: the tokenizer that was pickled
    /// gave it when it was loaded.
    #[staticmethod]
    fn _unpickle(py: Python<'_>, json: &str) -> PyResult<Self> {
        compute(py, || Tokenizer::from_json(json)).py().map(Self::wrap)
    }
}

/// The ids of a conversation of (role, text) turns in `tokenizer`'s chat template
/// (`ferrolm::chat`): with `open`, a prompt ending with `<|assistant|>`; else whole exchanges.
/// Python's `ChatTemplate` renders through it.
#[pyfunction]
fn chat_ids(tokenizer: &PyTokenizer, turns: Vec<(String, Bound<'_, PyAny>)>, open: bool) -> PyResult<Vec<u32>> {
    let tok = tokenizer.get();
    let turns = (turns.iter())
        .map(|(role, text)| Ok((role.parse::<Role>().py()?, text_arg(text, "text")?)))
        .collect::<PyResult<Vec<_>>>()?;
    let turns: Vec<(Role, &str)> = turns.iter().map(|(role, text)| (*role, text.as_ref())).collect();
    ChatTemplate::new(&tok).and_then(|t| t.conversation_ids(&tok, &turns, open)).py()
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyTokenizer>()?;
    m.add("PATTERNS", PyTuple::new(m.py(), ferrolm::tokenizer::PATTERN_NAMES)?)?;
    m.add_function(wrap_pyfunction!(chat_ids, m)?)
}
