//! Tokenizers: byte-level BPE (GPT-2 / GPT-4 style), WordPiece (BERT) and characters, with
//! training, Hugging Face `tokenizer.json` interchange, special tokens, offsets and padding.
//!
//! ```
//! use ferrolm::tokenizer::{Tokenizer, TrainerConfig, ModelKind, EncodeOptions};
//! let mut cfg = TrainerConfig::new(ModelKind::Bpe, 300);
//! cfg.special_tokens = vec!["<|endoftext|>".into()];
//! let tok = Tokenizer::train_from_texts(&["hello hello world", "hello there"], cfg).unwrap();
//! let ids = tok.encode("hello world<|endoftext|>", &EncodeOptions::default()).unwrap();
//! assert_eq!(tok.decode(&ids, false).unwrap(), "hello world<|endoftext|>");
//! ```

mod basic; // BERT's normalizer and pre-tokenizer, ahead of WordPiece
mod bpe; // byte-level BPE encoding and decoding
mod bpe_train; // learning BPE merges from word counts (BPE's and WordPiece's training)
mod bytes; // GPT-2's byte ↔ printable-character map
mod chars; // one id per character (nanoGPT's shakespeare_char)
mod files; // reading corpus files in bounded memory
mod hf_json; // Hugging Face tokenizer.json, GPT-2 vocab.json + merges.txt
mod nfc; // NFC normalization aligned to the input, for offsets
mod pretokenize; // GPT-2 / cl100k / Qwen2 / o200k / regex pre-tokenization
mod special; // special tokens in text, EncodeOptions
mod tiktoken; // tiktoken encoding files
mod train; // counting words over a corpus, then building the vocabulary
mod unicode; // the Unicode classes the pre-tokenizers match
mod wordpiece; // WordPiece encoding and vocabulary training

use std::path::Path;
use std::sync::atomic::AtomicBool;

use rayon::prelude::*;

pub use basic::BertNormalizer;
pub use bpe::{Bpe, BpeOptions};
pub use chars::Chars;
pub use pretokenize::{PreTokenizer, CL100K_PATTERN, GPT2_PATTERN, PATTERN_NAMES};
pub use special::{AllowedSpecial, Disallowed, EncodeOptions, Matching, Segment, SpecialTokens};
pub use train::{ModelKind, Trainer, TrainerConfig};
pub use wordpiece::{WordPiece, WordPieceOptions};

use crate::{bail, ensure, Error, Result};

/// The model inside a [`Tokenizer`].
#[derive(Clone, Debug)]
pub enum Model {
    /// Byte-level BPE.
    Bpe(Bpe),
    /// BERT's WordPiece.
    WordPiece(WordPiece),
    /// One token per character.
    Chars(Chars),
}

/// The post-processor: special tokens added around every encoded text when
/// `add_special_tokens` is set (`[CLS] … [SEP]` for BERT), and how byte-level offsets are
/// reported.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Template {
    /// Ids put before the text.
    pub prefix: Vec<u32>,
    /// Ids put after the text.
    pub suffix: Vec<u32>,
    /// Byte-level BPE offsets leave out the spaces a token starts or ends with (Hugging
    /// Face's `trim_offsets`, set by RoBERTa).
    pub trim_offsets: Option<TrimOffsets>,
    /// How a pair of texts is framed, when not as BERT frames it (see [`Template::pair_pieces`]):
    /// RoBERTa's `<s> A </s></s> B </s>`, or a `TemplateProcessing`'s `pair`.
    pub pair: Option<Vec<PairPiece>>,
}

/// One piece of a pair's framing, with the token type id its tokens get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PairPiece {
    /// The first text's tokens.
    A(u32),
    /// The second text's tokens.
    B(u32),
    /// A special token.
    Special(u32, u32),
}

impl Template {
    /// Every id the template puts around texts, single or paired.
    pub fn special_ids(&self) -> impl Iterator<Item = u32> + '_ {
        let paired = self.pair.iter().flatten().filter_map(|p| match p {
            PairPiece::Special(id, _) => Some(*id),
            _ => None,
        });
        self.prefix.iter().chain(&self.suffix).copied().chain(paired)
    }

    /// A pair's framing: the template's own, else BERT's (Hugging Face's default for a single
    /// template): prefix A suffix, then B suffix with type id 1.
    pub fn pair_pieces(&self) -> Vec<PairPiece> {
        if let Some(pair) = &self.pair {
            return pair.clone();
        }
        let mut pieces: Vec<PairPiece> = self.prefix.iter().map(|&id| PairPiece::Special(id, 0)).collect();
        pieces.push(PairPiece::A(0));
        pieces.extend(self.suffix.iter().map(|&id| PairPiece::Special(id, 0)));
        pieces.push(PairPiece::B(1));
        pieces.extend(self.suffix.iter().map(|&id| PairPiece::Special(id, 1)));
        pieces
    }
}

/// How many tokens each text of a pair keeps (`a` and `b` long) within `room`, as Hugging
/// Face's `longest_first` truncation: the shorter text is kept whole when it fits in half the
/// room, the longer takes the rest; otherwise each gets half (the odd token to the longer, or
/// to `b` when they are as long).
fn longest_first(a: usize, b: usize, room: usize) -> (usize, usize) {
    if a + b <= room {
        return (a, b);
    }
    let short = a.min(b);
    let (short, long) = if short <= room / 2 { (short, room - short) } else { (room / 2, room - room / 2) };
    if a > b {
        (long, short)
    } else {
        (short, long)
    }
}

/// Where a long text may be cut into pieces whose ids, joined, are the whole text's (corpus
/// preparation encodes big texts a piece at a time). Ordered from the fewest cuts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SafeCuts {
    /// Nowhere: a user's regex, an added token that holds white space beside other characters,
    /// or one that takes the white space after it (`rstrip`), may span any point.
    Nowhere,
    /// Only before a space between two non-spaces: BPE with `add_prefix_space` puts a space
    /// before a piece that lacks one, and an `lstrip` token takes the line break before it.
    Spaces,
    /// Before such a space, and after a line break between a non-space and a non-space other
    /// than `/`: the built-in pre-tokenizers, WordPiece's and characters end a token there
    /// (o200k's punctuation pieces take the line breaks and slashes after them), and no run of
    /// white space crosses them (so neither do added tokens of white space, GPT-NeoX's).
    SpacesAndLineBreaks,
}

/// Hugging Face's `trim_offsets` of the `ByteLevel` and `RobertaProcessing` post-processors.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrimOffsets {
    /// The post-processor's `add_prefix_space`: the first token's single leading space is
    /// taken to be the one the pre-tokenizer added, and is not trimmed.
    pub add_prefix_space: bool,
}

impl TrimOffsets {
    /// The span `(start, end)` of a token without the `leading` and `trailing` spaces it
    /// carries (in the span's units); `first`: the text's first token, or one starting at 0.
    fn trim(self, (leading, trailing): (usize, usize), (start, end): (usize, usize), first: bool) -> (usize, usize) {
        let start = if leading > 0 && !(first && self.add_prefix_space && leading == 1) {
            (start + leading).min(end)
        } else {
            start
        };
        let end = if trailing > 0 && end >= trailing { (end - trailing).max(start) } else { end };
        (start, end)
    }
}

/// Ids with the character span of each token in the source text (Python string indices).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Encoding {
    /// Token ids.
    pub ids: Vec<u32>,
    /// `(start, end)` character offsets; `(0, 0)` for tokens added by the template.
    pub offsets: Vec<(usize, usize)>,
}

/// Padding and truncation of a batch.
#[derive(Clone, Debug, Default)]
pub struct PadOptions {
    /// Row length limit (with `truncation`) and target (with `pad_to_max_length`).
    pub max_length: Option<usize>,
    /// Pad every row to `max_length` rather than to the longest row.
    pub pad_to_max_length: bool,
    /// Cut rows longer than `max_length` (template tokens are kept).
    pub truncation: bool,
    /// Id used for padding (default: [`Tokenizer::pad_id`]).
    pub pad_id: Option<u32>,
}

/// A padded batch: `rows × cols` ids and attention mask (1 for tokens, 0 for padding).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaddedBatch {
    /// Row-major ids.
    pub ids: Vec<u32>,
    /// Row-major mask.
    pub attention_mask: Vec<u8>,
    /// Number of texts.
    pub rows: usize,
    /// Common row length.
    pub cols: usize,
}

/// Length of an id-indexed table for `count` entries with these ids. Vocabularies are dense;
/// ids far beyond the entry count (a corrupt `{"a": 4294967295}`) are refused instead of
/// sizing a table of billions of slots.
pub(crate) fn id_table_size(ids: impl Iterator<Item = u32>, count: usize) -> Result<usize> {
    let size = ids.map(|id| id as usize + 1).max().unwrap_or(0);
    ensure!(
        size <= count.saturating_mul(4).max(count.saturating_add(1 << 20)),
        Format,
        "vocabulary ids go up to {} for only {count} entries (ids must be close to 0..{count})",
        size - 1
    );
    Ok(size)
}

/// A tokenizer: a model, its special tokens and its post-processing template. Immutable once
/// built (except for [`Tokenizer::add_special_tokens`]) and shareable across threads.
#[derive(Clone, Debug)]
pub struct Tokenizer {
    model: Model,
    specials: SpecialTokens,
    template: Template,
    /// What the tokenizer.json this was read from says that ferrolm writes back as read.
    pub(crate) hf_kept: HfKept,
}

/// Parts of a tokenizer.json kept as read, to be written back: the `post_processor` when the
/// template would not write it as it was (a `Sequence`, its other settings, its keys' order);
/// `truncation` and `padding`
/// are the file's defaults for Hugging Face's encode calls, which ferrolm does not apply (its
/// calls take `max_length`, `truncation` and `padding` each time).
#[derive(Clone, Debug, Default)]
pub(crate) struct HfKept {
    pub post_processor: Option<serde_json::Value>,
    pub truncation: Option<serde_json::Value>,
    pub padding: Option<serde_json::Value>,
}

impl Tokenizer {
    /// Assembles a tokenizer. Special tokens are (content, id) pairs.
    pub fn new(model: Model, specials: &[(String, u32)], template: Template) -> Result<Self> {
        let mut sp = SpecialTokens::default();
        for (content, id) in specials {
            ensure!(sp.id(content).is_none(), Format, "added token {content:?} is listed twice");
            sp.insert(content, *id)?;
        }
        let tok = Tokenizer { model, specials: sp, template, hf_kept: HfKept::default() };
        // An added token may reuse the vocabulary's id for the same token (BERT's [PAD], or a
        // run of spaces that byte-level BPE spells "ĠĠ"); with other content the id would
        // decode as one and encode from both.
        for (content, id) in tok.specials.iter() {
            let same_bytes = match &tok.model {
                Model::Bpe(m) => m.token_bytes(id) == Some(content.as_bytes()),
                _ => false,
            };
            if let Some(other) = tok.model_token(id).filter(|other| *other != content && !same_bytes) {
                bail!(Format, "added token {content:?} has id {id}, which the vocabulary gives to {other:?}");
            }
        }
        // Added tokens follow the model's ids; one far beyond (a corrupt file) would size
        // every id-indexed table, and a model's embedding, by it.
        let model_len = tok.model_len();
        id_table_size(tok.specials.iter().map(|(_, id)| id), model_len + specials.len())?;
        for id in tok.template.special_ids() {
            if !tok.contains_id(id) {
                bail!(Format, "post-processor template uses id {id}, which is not in the vocabulary");
            }
        }
        Ok(tok)
    }

    /// Loads `tokenizer.json`; GPT-2's `vocab.json` or `merges.txt` (read with the other one
    /// beside it); BERT's `vocab.txt` (by extension); a tiktoken `.tiktoken` file
    /// ([`Tokenizer::from_tiktoken_file`] with its defaults); or a directory holding `tokenizer.json`,
    /// `vocab.json` + `merges.txt`, or `vocab.txt`. A `vocab.txt` is normalised as the
    /// `tokenizer_config.json` beside it says (a cased BERT sets `do_lower_case` false). A
    /// directory's save that was killed while moving its files in is finished first
    /// ([`crate::checkpoint::finish_interrupted_save`]), so loading may rename files in it.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        if path.is_dir() {
            crate::checkpoint::finish_interrupted_save(path)?; // a model directory's save cut short
            for name in ["tokenizer.json", "vocab.json", "vocab.txt"] {
                let p = path.join(name);
                // A directory or FIFO by that name is an error when read, not skipped.
                if p.exists() {
                    return Self::from_one_file(&p);
                }
            }
            let none = "no tokenizer.json, vocab.json or vocab.txt in this directory";
            return Err(Error::io(path.display().to_string(), std::io::Error::new(std::io::ErrorKind::NotFound, none)));
        }
        Self::from_one_file(path)
    }

    /// One file of [`Tokenizer::from_file`]'s.
    fn from_one_file(path: &Path) -> Result<Self> {
        let dir = path.parent().unwrap_or(Path::new("."));
        let pair = match path.file_name().and_then(|n| n.to_str()) {
            Some("vocab.json") => Some((path.to_path_buf(), dir.join("merges.txt"))),
            Some("merges.txt") => Some((dir.join("vocab.json"), path.to_path_buf())),
            _ => None,
        };
        if let Some((vocab, merges)) = pair {
            if let Some(missing) = [&vocab, &merges].into_iter().find(|p| !p.exists()) {
                let why = "no such file (GPT-2's vocab.json and merges.txt are read together, from one directory)";
                let error = std::io::Error::new(std::io::ErrorKind::NotFound, why);
                return Err(Error::io(missing.display().to_string(), error));
            }
            return Self::from_vocab_merges(vocab, merges, "gpt2");
        }
        if path.extension().is_some_and(|e| e == "tiktoken") {
            return Self::from_tiktoken_file(path, None, None);
        }
        let text = files::read_text(path)?;
        if path.extension().is_some_and(|e| e == "txt") {
            let normalizer = bert_normalizer_in(dir)?;
            return Self::from_bert_vocab(&text, normalizer).map_err(|e| match e {
                // Any .txt is read as BERT's vocab.txt: say so when one named otherwise fails.
                Error::Format(m) if path.file_name().is_none_or(|n| n != "vocab.txt") => in_file(
                    path,
                    Error::Format(format!("{m} (a .txt file is read as a WordPiece vocab.txt, one token per line)")),
                ),
                e => in_file(path, e),
            });
        }
        Self::from_json(&text).map_err(|e| in_file(path, e))
    }

    /// Parses the contents of a Hugging Face `tokenizer.json`.
    pub fn from_json(json: &str) -> Result<Self> {
        hf_json::from_json(json)
    }

    /// The settings of the tokenizer.json this was read from that ferrolm keeps in the file but
    /// does not apply: `"truncation"` and `"padding"`, Hugging Face's defaults for its encode
    /// calls (ferrolm's take them per call).
    pub fn unapplied_settings(&self) -> Vec<&'static str> {
        let kept = &self.hf_kept;
        [("truncation", &kept.truncation), ("padding", &kept.padding)]
            .into_iter()
            .filter_map(|(name, v)| v.is_some().then_some(name))
            .collect()
    }

    /// Serializes to Hugging Face `tokenizer.json` text.
    pub fn to_json(&self) -> String {
        hf_json::to_json(self)
    }

    /// Writes Hugging Face `tokenizer.json` text to the file `path` (atomically); a model
    /// directory's is `dir/tokenizer.json`.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        crate::checkpoint::write_atomic(path.as_ref(), self.to_json().as_bytes())
    }

    /// Loads GPT-2-style `vocab.json` + `merges.txt`. `pattern` is one of [`PATTERN_NAMES`] or a
    /// regex. A `<|endoftext|>` entry of the vocabulary becomes a special token.
    pub fn from_vocab_merges(vocab: impl AsRef<Path>, merges: impl AsRef<Path>, pattern: &str) -> Result<Self> {
        let (vocab, merges) = (vocab.as_ref(), merges.as_ref());
        let vocab_text = files::read_text(vocab)?;
        let merges_text = files::read_text(merges)?;
        hf_json::from_vocab_merges(&vocab_text, &merges_text, PreTokenizer::from_pattern(pattern)?)
            .map_err(|e| in_file(Path::new(&format!("{} + {}", vocab.display(), merges.display())), e))
    }

    /// Loads a tiktoken encoding file (`cl100k_base.tiktoken`: `base64(bytes) rank` per line)
    /// as byte-level BPE. The file records neither the pre-tokenizer nor the special tokens:
    /// `pattern` is one of [`PATTERN_NAMES`] or the encoding's regex, and `specials` are
    /// (content, id) pairs. Left `None`, they are those of the OpenAI encoding with the same ranks
    /// (r50k_base, p50k_base, cl100k_base, o200k_base: as many, from 0 up), else `"cl100k"` and none.
    pub fn from_tiktoken_file(
        path: impl AsRef<Path>,
        pattern: Option<&str>,
        specials: Option<&[(String, u32)]>,
    ) -> Result<Self> {
        let path = path.as_ref();
        let text = files::read_text(path)?;
        let build = |ranks: Vec<(Vec<u8>, u32)>| {
            let known = tiktoken::openai_encoding(&ranks);
            let pattern = pattern.or(known.map(|k| k.pattern)).unwrap_or("cl100k");
            let known_specials: Vec<(String, u32)> =
                known.map_or(&[][..], |k| k.specials).iter().map(|&(s, id)| (s.to_string(), id)).collect();
            Self::from_tiktoken_ranks(ranks, pattern, specials.unwrap_or(&known_specials))
        };
        tiktoken::parse_ranks(&text).and_then(build).map_err(|e| in_file(path, e))
    }

    /// A tokenizer from tiktoken's mergeable ranks, (token bytes, rank) pairs; see
    /// [`Tokenizer::from_tiktoken_file`].
    pub fn from_tiktoken_ranks(ranks: Vec<(Vec<u8>, u32)>, pattern: &str, specials: &[(String, u32)]) -> Result<Self> {
        tiktoken::from_ranks(ranks, PreTokenizer::from_pattern(pattern)?, specials)
    }

    /// Builds a WordPiece tokenizer from BERT's `vocab.txt` contents. `[PAD] [UNK] [CLS] [SEP]
    /// [MASK]` become special tokens when present, and `[CLS] … [SEP]` the template.
    pub fn from_bert_vocab(contents: &str, normalizer: BertNormalizer) -> Result<Self> {
        let options = WordPieceOptions { normalizer: Some(normalizer), ..Default::default() };
        let model = WordPiece::from_vocab_txt(contents, options)?;
        let specials: Vec<(String, u32)> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
            .iter()
            .filter_map(|s| model.token_to_id(s).map(|id| (s.to_string(), id)))
            .collect();
        let template = match (model.token_to_id("[CLS]"), model.token_to_id("[SEP]")) {
            (Some(c), Some(s)) => Template { prefix: vec![c], suffix: vec![s], ..Template::default() },
            _ => Template::default(),
        };
        Self::new(Model::WordPiece(model), &specials, template)
    }

    /// Trains on in-memory texts (each text is one unit, like one line of a file).
    pub fn train_from_texts<S: AsRef<str> + Sync>(texts: &[S], config: TrainerConfig) -> Result<Self> {
        let mut trainer = Trainer::new(config)?;
        trainer.feed(texts)?;
        trainer.finish()
    }

    /// Trains on text files, read line by line in bounded memory.
    pub fn train_from_files<P: AsRef<Path>>(paths: &[P], config: TrainerConfig) -> Result<Self> {
        let mut trainer = Trainer::new(config)?;
        for p in paths {
            trainer.feed_file(p.as_ref())?;
        }
        trainer.finish()
    }

    /// The model.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// BPE's pre-tokenizer as [`PreTokenizer::name`] gives it (a built-in one's name, else the
    /// regex); `None` for WordPiece and characters.
    pub fn pattern(&self) -> Option<&str> {
        match &self.model {
            Model::Bpe(m) => Some(m.pretokenizer.name()),
            _ => None,
        }
    }

    /// Whether BPE puts a space before a text that does not start with one (RoBERTa's
    /// `add_prefix_space`), so a text and its pieces may differ by that space.
    pub fn add_prefix_space(&self) -> bool {
        matches!(&self.model, Model::Bpe(m) if m.add_prefix_space)
    }

    /// Where a long text may be cut without changing its ids (see [`SafeCuts`]).
    pub fn safe_cuts(&self) -> SafeCuts {
        // `spans`: may cross any cut; `takes_line_break`: may cross the cut after a line break.
        let cuts = |spans: bool, takes_line_break: bool| match (spans, takes_line_break) {
            (true, _) => SafeCuts::Nowhere,
            (false, true) => SafeCuts::Spaces,
            (false, false) => SafeCuts::SpacesAndLineBreaks,
        };
        let regex = matches!(&self.model, Model::Bpe(m) if matches!(m.pretokenizer, PreTokenizer::Regex(..)));
        let by_token = |(content, id): (&str, u32)| {
            let m = self.specials.matching(id);
            let mixed = content.contains(char::is_whitespace) && !content.chars().all(char::is_whitespace);
            cuts(m.rstrip || mixed, m.lstrip)
        };
        self.specials.iter().map(by_token).fold(cuts(regex, self.add_prefix_space()), Ord::min)
    }

    /// The special tokens.
    pub fn special_tokens(&self) -> &SpecialTokens {
        &self.specials
    }

    /// The post-processing template.
    pub fn template(&self) -> &Template {
        &self.template
    }

    /// `"bpe"`, `"wordpiece"` or `"char"`.
    pub fn kind(&self) -> &'static str {
        match self.model {
            Model::Bpe(_) => "bpe",
            Model::WordPiece(_) => "wordpiece",
            Model::Chars(_) => "char",
        }
    }

    /// Number of ids: one past the largest id of the model or a special token (the size of an
    /// embedding table).
    pub fn vocab_size(&self) -> usize {
        self.model_len().max(self.specials.max_id().map_or(0, |m| m as usize + 1))
    }

    /// The error for an id that neither the model nor an added token has: past the vocabulary,
    /// or in a gap of it (added tokens above the model's ids, a blank line of a vocab.txt).
    fn unknown_id(&self, id: u32) -> Error {
        let size = self.vocab_size();
        if (id as usize) < size {
            Error::Index(format!("token id {id} has no token: the vocabulary (size {size}) leaves it unused"))
        } else {
            Error::Index(format!("token id {id} is not in the vocabulary (size {size})"))
        }
    }

    /// Ids of the model's own vocabulary (without added tokens beyond it).
    fn model_len(&self) -> usize {
        match &self.model {
            Model::Bpe(m) => m.len(),
            Model::WordPiece(m) => m.len(),
            Model::Chars(m) => m.len(),
        }
    }

    fn contains_id(&self, id: u32) -> bool {
        self.specials.content(id).is_some()
            || match &self.model {
                Model::Bpe(m) => m.id_to_token(id).is_some(),
                Model::WordPiece(m) => m.id_to_token(id).is_some(),
                Model::Chars(m) => m.id_to_token(id).is_some(),
            }
    }

    /// The ids below [`Tokenizer::vocab_size`] that have no token, in order: gaps a file may
    /// leave (added tokens above the model's ids, a blank line of a vocab.txt, tiktoken's ids
    /// around its special tokens). Text cannot hold them, so text generation never samples them.
    pub fn unused_ids(&self) -> Vec<u32> {
        (0..self.vocab_size() as u32).filter(|&id| !self.contains_id(id)).collect()
    }

    /// The id of a token string (vocabulary form, e.g. `Ġthe` for byte-level BPE).
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        if let Some(id) = self.specials.id(token) {
            return Some(id);
        }
        match &self.model {
            Model::Bpe(m) => m.token_to_id(token),
            Model::WordPiece(m) => m.token_to_id(token),
            Model::Chars(m) => m.token_to_id(token),
        }
    }

    /// The token string of `id`.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        match self.specials.content(id) {
            Some(s) => Some(s.to_string()),
            None => self.model_token(id),
        }
    }

    /// The model's own token string of `id` (added tokens aside).
    fn model_token(&self, id: u32) -> Option<String> {
        match &self.model {
            Model::Bpe(m) => m.id_to_token(id).map(str::to_string),
            Model::WordPiece(m) => m.id_to_token(id).map(str::to_string),
            Model::Chars(m) => m.id_to_token(id),
        }
    }

    /// Registers special tokens, reusing a token's existing id when it is already in the
    /// vocabulary and appending new ids otherwise. Returns how many were new to the tokenizer.
    pub fn add_special_tokens<S: AsRef<str>>(&mut self, tokens: &[S]) -> Result<usize> {
        let mut added = 0;
        for t in tokens {
            let t = t.as_ref();
            if let Some(id) = self.specials.id(t) {
                self.specials.set_special(id, true)?; // an ordinary added token becomes special
                continue;
            }
            if matches!(self.model, Model::Bpe(_)) {
                bytes::check_special_spelling(t)?;
            }
            let id = match self.token_to_id(t) {
                Some(id) => id,
                None => self.vocab_size() as u32,
            };
            self.specials.insert(t, id)?;
            added += 1;
        }
        Ok(added)
    }

    /// The id used to pad batches: `[PAD]`, `<pad>`, `<|pad|>` or `<|endoftext|>` if present, else 0.
    pub fn pad_id(&self) -> u32 {
        ["[PAD]", "<pad>", "<|pad|>", "<|endoftext|>"].iter().find_map(|t| self.specials.id(t)).unwrap_or(0)
    }

    /// The pieces ordinary text is cut into before the model runs: regex pieces for BPE,
    /// normalized words for WordPiece, characters for the character model. For inspection.
    pub fn pre_tokenize(&self, text: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        match &self.model {
            Model::Bpe(m) => {
                let normalized = m.normalize(text);
                let text = m.prefixed(&normalized); // the prefix space too, as encoding adds it
                m.pretokenizer.split(&text, |a, b| out.push(text[a..b].to_string()))?
            }
            Model::WordPiece(m) => {
                let mut chars = Vec::new();
                match &m.normalizer {
                    Some(n) => n.normalize(text, &mut chars),
                    None => chars.extend(text.chars().map(|c| (c, 0))),
                }
                basic::split_words(&chars, |a, b| out.push(chars[a..b].iter().map(|&(c, _)| c).collect()));
            }
            Model::Chars(_) => out.extend(text.chars().map(String::from)),
        }
        Ok(out)
    }

    /// Encodes ordinary text (no special tokens) with the model; a BPE with a user's regex ends
    /// once `stop` is set (the other models and patterns encode ~100 MB a second or more).
    fn encode_ordinary(&self, text: &str, ids: &mut Vec<u32>, stop: &AtomicBool) -> Result<()> {
        match &self.model {
            Model::Bpe(m) => m.encode_text_until(text, ids, stop),
            Model::WordPiece(m) => {
                m.encode_text(text, ids, None);
                Ok(())
            }
            Model::Chars(m) => m.encode_text(text, ids),
        }
    }

    /// The template tokens framing one text (`pair` false) or a pair, as `opts` adds them.
    fn frame_len(&self, opts: &EncodeOptions, pair: bool) -> usize {
        match (opts.add_special_tokens, pair) {
            (false, _) => 0,
            (true, false) => self.template.prefix.len() + self.template.suffix.len(),
            (true, true) => self.template.pair_pieces().iter().filter(|p| matches!(p, PairPiece::Special(..))).count(),
        }
    }

    /// How many text tokens `opts.max_length` leaves beside `frame` template tokens (None: no limit).
    fn room(opts: &EncodeOptions, frame: usize) -> Result<Option<usize>> {
        let Some(max) = opts.max_length else { return Ok(None) };
        ensure!(max > 0, Argument, "max_length must be at least 1");
        let room = max.checked_sub(frame).ok_or_else(|| {
            Error::Argument(format!("max_length {max} leaves no room for the {frame} template tokens"))
        })?;
        Ok(Some(room))
    }

    /// Encodes `text` to ids.
    pub fn encode(&self, text: &str, opts: &EncodeOptions) -> Result<Vec<u32>> {
        self.encode_until(text, opts, &AtomicBool::new(false))
    }

    /// `encode`, ending with [`Error::Interrupted`] soon after `stop` is set (by another thread:
    /// Ctrl-C, for a long text) when the pre-tokenizer is a user's regex (at 10–20 MB a second;
    /// see [`PreTokenizer::split_until`]).
    pub fn encode_until(&self, text: &str, opts: &EncodeOptions, stop: &AtomicBool) -> Result<Vec<u32>> {
        let room = Self::room(opts, self.frame_len(opts, false))?;
        let mut ids = Vec::with_capacity(text.len() / 3 + 4);
        if opts.add_special_tokens {
            ids.extend_from_slice(&self.template.prefix);
        }
        let start = ids.len();
        self.specials.split(text, opts, |seg| match seg {
            Segment::Text(a, b) => self.encode_ordinary(&text[a..b], &mut ids, stop),
            Segment::Special(id, _, _) => {
                ids.push(id);
                Ok(())
            }
        })?;
        if let Some(room) = room {
            ids.truncate(start + room);
        }
        if opts.add_special_tokens {
            ids.extend_from_slice(&self.template.suffix);
        }
        Ok(ids)
    }

    /// Encodes a pair of texts (a question and a passage, two sentences) framed as the template
    /// frames pairs: the ids, and each one's token type id (0 for the first text's part, 1 for
    /// the second's, in BERT).
    pub fn encode_pair(&self, a: &str, b: &str, opts: &EncodeOptions) -> Result<(Vec<u32>, Vec<u32>)> {
        let room = Self::room(opts, self.frame_len(opts, true))?;
        let bare = EncodeOptions { add_special_tokens: false, max_length: None, ..opts.clone() };
        let (mut a, mut b) = (self.encode(a, &bare)?, self.encode(b, &bare)?);
        if let Some(room) = room {
            let (keep_a, keep_b) = longest_first(a.len(), b.len(), room);
            a.truncate(keep_a);
            b.truncate(keep_b);
        }
        let mut pieces = self.template.pair_pieces();
        if !opts.add_special_tokens {
            pieces.retain(|p| !matches!(p, PairPiece::Special(..))); // the texts keep their type ids
        }
        let (mut ids, mut types) = (Vec::new(), Vec::new());
        for piece in pieces {
            let (part, type_id): (&[u32], u32) = match piece {
                PairPiece::A(t) => (&a, t),
                PairPiece::B(t) => (&b, t),
                PairPiece::Special(id, t) => {
                    ids.push(id);
                    types.push(t);
                    continue;
                }
            };
            ids.extend_from_slice(part);
            types.extend(std::iter::repeat_n(type_id, part.len()));
        }
        Ok((ids, types))
    }

    /// Encodes `text` and gives each token's character span in it.
    pub fn encode_with_offsets(&self, text: &str, opts: &EncodeOptions) -> Result<Encoding> {
        let room = Self::room(opts, self.frame_len(opts, false))?;
        let mut enc = Encoding::default();
        if opts.add_special_tokens {
            enc.ids.extend_from_slice(&self.template.prefix);
            enc.offsets.extend(self.template.prefix.iter().map(|_| (0, 0)));
        }
        let text_start = enc.ids.len();
        let mut chars = CharIndex::new(text);
        self.specials.split(text, opts, |seg| {
            match seg {
                Segment::Text(a, b) => {
                    let base = chars.char_at(a);
                    let seg_text = &text[a..b];
                    let first = enc.offsets.len();
                    match &self.model {
                        Model::Bpe(m) => {
                            let mut spans = Vec::new();
                            m.encode_text_with_offsets(seg_text, &mut enc.ids, &mut spans)?;
                            let mut local = CharIndex::new(seg_text);
                            for (s, e) in spans {
                                let start = local.char_containing(s);
                                let end = local.char_at(e).max(start + usize::from(e > s));
                                enc.offsets.push((start, end));
                            }
                            if let Some(trim) = self.template.trim_offsets {
                                // In characters, as HF counts (a leading space's span may be a
                                // whole multi-byte first character).
                                for k in first..enc.offsets.len() {
                                    let bytes = m.token_bytes(enc.ids[k]).unwrap_or_default();
                                    let leading = bytes.iter().take_while(|&&b| b == b' ').count();
                                    let trailing = bytes.iter().rev().take_while(|&&b| b == b' ').count();
                                    let is_first = k == text_start || base + enc.offsets[k].0 == 0;
                                    enc.offsets[k] = trim.trim((leading, trailing), enc.offsets[k], is_first);
                                }
                            }
                        }
                        Model::WordPiece(m) => m.encode_text(seg_text, &mut enc.ids, Some(&mut enc.offsets)),
                        Model::Chars(m) => {
                            let before = enc.ids.len();
                            m.encode_text(seg_text, &mut enc.ids)?;
                            enc.offsets.extend((0..enc.ids.len() - before).map(|i| (i, i + 1)));
                        }
                    }
                    for o in &mut enc.offsets[first..] {
                        *o = (o.0 + base, o.1 + base);
                    }
                }
                Segment::Special(id, a, b) => {
                    let mut span = (chars.char_at(a), chars.char_at(b));
                    if let (Some(trim), Model::Bpe(_)) = (self.template.trim_offsets, &self.model) {
                        // An added token's spaces are characters of its text (HF counts `Ġ` too).
                        let space = |c: &char| c.is_whitespace() || *c == 'Ġ';
                        let content = &text[a..b];
                        let counts = (
                            content.chars().take_while(space).count(),
                            content.chars().rev().take_while(space).count(),
                        );
                        span = trim.trim(counts, span, enc.ids.len() == text_start || a == 0);
                    }
                    enc.ids.push(id);
                    enc.offsets.push(span);
                }
            }
            Ok(())
        })?;
        if let Some(room) = room {
            enc.ids.truncate(text_start + room);
            enc.offsets.truncate(text_start + room);
        }
        if opts.add_special_tokens {
            enc.ids.extend_from_slice(&self.template.suffix);
            enc.offsets.extend(self.template.suffix.iter().map(|_| (0, 0)));
        }
        Ok(enc)
    }

    /// Encodes many texts in parallel (rayon); the result does not depend on the thread count.
    pub fn encode_batch<S: AsRef<str> + Sync>(&self, texts: &[S], opts: &EncodeOptions) -> Result<Vec<Vec<u32>>> {
        crate::compute(move || texts.par_iter().map(|t| self.encode(t.as_ref(), opts)).collect())
    }

    /// Encodes, truncates and pads a batch into a rectangle with an attention mask.
    /// Truncation keeps the template's tokens (`[CLS] … [SEP]`) and cuts the text.
    pub fn encode_batch_padded<S: AsRef<str> + Sync>(
        &self,
        texts: &[S],
        opts: &EncodeOptions,
        pad: &PadOptions,
    ) -> Result<PaddedBatch> {
        crate::compute(move || {
            if pad.pad_to_max_length && pad.max_length.is_none() {
                bail!(Argument, "padding to max_length needs max_length");
            }
            ensure!(pad.max_length != Some(0), Argument, "max_length must be at least 1");
            let truncated = EncodeOptions { max_length: pad.max_length.filter(|_| pad.truncation), ..opts.clone() };
            Self::room(&truncated, self.frame_len(&truncated, false))?; // checked for an empty batch too
            let rows = self.encode_batch(texts, &truncated)?;
            let longest = rows.iter().map(Vec::len).max().unwrap_or(0);
            let cols = if pad.pad_to_max_length { pad.max_length.unwrap_or(longest) } else { longest };
            let limit = pad.max_length.unwrap_or(cols).min(cols);
            if let Some((i, r)) = rows.iter().enumerate().find(|(_, r)| r.len() > limit) {
                bail!(Argument, "text {i} has {} tokens, more than max_length {limit}; pass truncation=True", r.len());
            }
            let pad_id = pad.pad_id.unwrap_or_else(|| self.pad_id());
            ensure!(
                (pad_id as usize) < self.vocab_size(),
                Argument,
                "pad_id {pad_id} is outside the vocabulary of {} tokens",
                self.vocab_size()
            );
            // max_length comes from the caller: a huge one must be an error, not an aborted process.
            let too_large = || Error::Memory(format!("a padded batch of {} × {cols} tokens is too large", rows.len()));
            let len = rows.len().checked_mul(cols).ok_or_else(too_large)?;
            let (mut ids, mut mask) = (Vec::new(), Vec::new());
            ids.try_reserve_exact(len).map_err(|_| too_large())?;
            mask.try_reserve_exact(len).map_err(|_| too_large())?;
            for r in &rows {
                ids.extend_from_slice(r);
                ids.resize(ids.len() + cols - r.len(), pad_id);
                mask.resize(mask.len() + r.len(), 1);
                mask.resize(mask.len() + cols - r.len(), 0);
            }
            Ok(PaddedBatch { ids, attention_mask: mask, rows: rows.len(), cols })
        })
    }

    /// Decodes ids to bytes (byte-level BPE may produce partial UTF-8 for a partial sequence).
    pub fn decode_bytes(&self, ids: &[u32], skip_special_tokens: bool) -> Result<Vec<u8>> {
        match &self.model {
            Model::Bpe(m) => {
                let skip = |id| skip_special_tokens && self.specials.is_special(id);
                // An added token spelled like a vocabulary entry ("¶", the byte 0xB6) has
                // that entry's id, which the model also emits: it decodes as the entry.
                // The added tokens (a hash lookup) are asked only for ids the model lacks.
                let added = |id| self.specials.content(id).map(str::as_bytes).ok_or_else(|| self.unknown_id(id));
                // Sized first, so that megabytes of text are not copied as a guessed buffer grows.
                let mut len = Bpe::APPEND_SLACK;
                for &id in ids {
                    if !skip(id) {
                        len += match m.token_bytes(id) {
                            Some(bytes) => bytes.len(),
                            None => added(id)?.len(),
                        };
                    }
                }
                let mut out = Vec::with_capacity(len);
                for &id in ids {
                    if !skip(id) && !m.append_token_bytes(id, &mut out) {
                        out.extend_from_slice(added(id)?);
                    }
                }
                Ok(out)
            }
            _ => self.decode(ids, skip_special_tokens).map(String::into_bytes),
        }
    }

    /// Decodes ids to text. Byte-level BPE is lossless (invalid UTF-8 from a partial sequence
    /// becomes U+FFFD); WordPiece joins pieces as BERT does; characters concatenate.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        match &self.model {
            Model::Bpe(_) => {
                let bytes = self.decode_bytes(ids, skip_special_tokens)?;
                Ok(match String::from_utf8(bytes) {
                    Ok(s) => s,
                    Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
                })
            }
            Model::Chars(m) => {
                let mut out = String::with_capacity(ids.len());
                for &id in ids {
                    if let Some(s) = self.specials.content(id) {
                        if !(skip_special_tokens && self.specials.is_special(id)) {
                            out.push_str(s);
                        }
                    } else if !m.decode_into(id, &mut out) {
                        return Err(self.unknown_id(id));
                    }
                }
                Ok(out)
            }
            Model::WordPiece(m) => {
                let mut tokens = Vec::with_capacity(ids.len());
                for &id in ids {
                    if let Some(s) = self.specials.content(id) {
                        if !(skip_special_tokens && self.specials.is_special(id)) {
                            tokens.push(s);
                        }
                    } else {
                        match m.id_to_token(id) {
                            Some(t) => tokens.push(t),
                            None => return Err(self.unknown_id(id)),
                        }
                    }
                }
                Ok(m.decode_tokens(&tokens))
            }
        }
    }

    /// Decodes many id sequences in parallel.
    pub fn decode_batch<V: AsRef<[u32]> + Sync>(&self, batch: &[V], skip_special_tokens: bool) -> Result<Vec<String>> {
        crate::compute(move || batch.par_iter().map(|ids| self.decode(ids.as_ref(), skip_special_tokens)).collect())
    }
}

/// BERT's normalizer as `dir/tokenizer_config.json` sets it (`do_lower_case`, `strip_accents`,
/// `tokenize_chinese_chars`, as Hugging Face's BertTokenizer reads them); lowercasing without one.
fn bert_normalizer_in(dir: &Path) -> Result<BertNormalizer> {
    let path = dir.join("tokenizer_config.json");
    let mut normalizer = BertNormalizer::default();
    if !path.exists() {
        return Ok(normalizer);
    }
    let config = crate::checkpoint::parse_json(&crate::checkpoint::read_file(&path)?, "tokenizer_config.json")?;
    let f = crate::checkpoint::ConfigFields(&config, "tokenizer_config.json");
    normalizer.lowercase = f.bool_or("do_lower_case", true)?;
    normalizer.strip_accents = f.bool("strip_accents")?;
    normalizer.handle_chinese_chars = f.bool_or("tokenize_chinese_chars", true)?;
    Ok(normalizer)
}

/// Adds the file name to an error's message.
fn in_file(path: &Path, e: Error) -> Error {
    match e {
        Error::Io { .. } => e, // names the file already
        other => other.context(path.display()),
    }
}

/// Byte offset → character index over one text, counting only the bytes between one query
/// and the next (in either direction: after normalisation spans may start before the previous
/// one ended, and counting again from the start made such texts quadratic).
struct CharIndex<'a> {
    bytes: &'a [u8],
    byte: usize,
    chars: usize,
}

impl<'a> CharIndex<'a> {
    fn new(text: &'a str) -> Self {
        CharIndex { bytes: text.as_bytes(), byte: 0, chars: 0 }
    }

    /// Number of characters that start before byte `b`.
    fn char_at(&mut self, b: usize) -> usize {
        let b = b.min(self.bytes.len());
        let starts = |bytes: &[u8]| bytes.iter().filter(|&&x| (x as i8) >= -0x40).count();
        if b < self.byte {
            self.chars -= starts(&self.bytes[b..self.byte]);
        } else {
            self.chars += starts(&self.bytes[self.byte..b]);
        }
        self.byte = b;
        self.chars
    }

    /// Index of the character that contains byte `b`.
    fn char_containing(&mut self, b: usize) -> usize {
        let n = self.char_at(b);
        if b < self.bytes.len() && (self.bytes[b] as i8) < -0x40 {
            n - 1
        } else {
            n
        }
    }
}

#[cfg(test)]
mod tests {
    use super::CharIndex;

    /// Queries in any order (a normalised text's spans may step back) give the characters
    /// before each byte, as counting from the start does.
    #[test]
    fn char_index_answers_queries_in_any_order() {
        let text = "aé€😀b\u{95B}c";
        let mut index = CharIndex::new(text);
        for b in [0, 3, 1, 10, 6, 6, 14, 2, 16, 0, 15, 100] {
            let b = b.min(text.len());
            let want = text.as_bytes()[..b].iter().filter(|&&x| (x as i8) >= -0x40).count();
            assert_eq!(index.char_at(b), want, "byte {b}");
        }
    }
}
