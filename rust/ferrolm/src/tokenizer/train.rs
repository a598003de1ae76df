//! Training: counting words over a corpus (in parallel, in bounded memory) and turning the
//! counts into a vocabulary for each model kind.
//!
//! Files are read in line-aligned chunks and every line is a unit of text, like Hugging Face's
//! `Tokenizer.train(files)`; in-memory texts are units as given, like `train_from_iterator`.
//! Special tokens found in the corpus are cut out before counting (they are atomic). Counts are
//! sums, so they, and the vocabulary, do not depend on how the work was split over threads.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use rayon::prelude::*;
use rustc_hash::FxHashMap;

use super::basic::is_chinese_char;
use super::basic::{split_words, BertNormalizer};
use super::bpe::{Bpe, BpeOptions};
use super::bpe_train::{check_stop, learn_merges, MergeTable};
use super::bytes::BYTE_TO_CHAR;
use super::chars::Chars;
use super::files::{for_each_chunk, split_long};
use super::pretokenize::PreTokenizer;
use super::special::{EncodeOptions, Segment, SpecialTokens};
use super::wordpiece::{train_vocab, WordPiece, WordPieceOptions};
use super::{Model, Template, Tokenizer};
use crate::{bail, Result};

/// Which model to train.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelKind {
    /// Byte-level BPE.
    Bpe,
    /// WordPiece.
    WordPiece,
    /// Characters.
    Chars,
}

impl std::str::FromStr for ModelKind {
    type Err = crate::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "bpe" => Ok(ModelKind::Bpe),
            "wordpiece" => Ok(ModelKind::WordPiece),
            "char" | "chars" => Ok(ModelKind::Chars),
            _ => bail!(Argument, "unknown tokenizer kind {s:?} (expected \"bpe\", \"wordpiece\" or \"char\")"),
        }
    }
}

/// Bytes from which a text is counted in pieces (see [`Trainer::feed`]).
const LONG_UNIT: usize = 1 << 16;

/// Training settings.
#[derive(Clone, Debug)]
pub struct TrainerConfig {
    /// Model kind.
    pub kind: ModelKind,
    /// Target vocabulary size, special tokens included. For characters, an upper bound
    /// (`0`: every character of the corpus).
    pub vocab_size: usize,
    /// Pairs seen fewer times are never merged.
    pub min_frequency: u64,
    /// Special tokens, given the first ids in this order.
    pub special_tokens: Vec<String>,
    /// BPE pre-tokenizer: one of [`PATTERN_NAMES`](super::PATTERN_NAMES) or a regex.
    pub pattern: String,
    /// WordPiece normalization.
    pub normalizer: BertNormalizer,
    /// WordPiece: keep only this many most frequent characters.
    pub limit_alphabet: Option<usize>,
    /// WordPiece: longer words encode as `[UNK]`.
    pub max_input_chars_per_word: usize,
    /// Bytes of file read per parallel step.
    pub chunk_bytes: usize,
    /// Set from any thread to stop the training early: it then ends with [`crate::Error::Interrupted`].
    pub stop: Arc<AtomicBool>,
}

impl TrainerConfig {
    /// Defaults for `kind`: GPT-2 pattern and `<|endoftext|>` for BPE, BERT's five special
    /// tokens for WordPiece, none for characters.
    pub fn new(kind: ModelKind, vocab_size: usize) -> Self {
        let special_tokens = match kind {
            ModelKind::Bpe => vec!["<|endoftext|>".to_string()],
            ModelKind::WordPiece => ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"].map(String::from).to_vec(),
            ModelKind::Chars => Vec::new(),
        };
        TrainerConfig {
            kind,
            vocab_size,
            min_frequency: 0,
            special_tokens,
            pattern: "gpt2".into(),
            normalizer: BertNormalizer::default(),
            limit_alphabet: None,
            max_input_chars_per_word: 100,
            chunk_bytes: 16 << 20,
            stop: Arc::default(),
        }
    }
}

/// Accumulates word counts from texts and files, then builds the tokenizer.
pub struct Trainer {
    config: TrainerConfig,
    pretokenizer: PreTokenizer,
    specials: SpecialTokens,
    /// Bytes from which a text is counted in pieces (`usize::MAX`: never).
    long_unit: usize,
    words: FxHashMap<Box<[u8]>, u64>,
    chars: FxHashMap<char, u64>,
}

/// Counts of one parallel task: words borrowed from the input (BPE) or owned (WordPiece,
/// whose words are normalized copies), or characters.
#[derive(Default)]
struct Local<'a> {
    borrowed: FxHashMap<&'a [u8], u64>,
    owned: FxHashMap<Box<[u8]>, u64>,
    chars: FxHashMap<char, u64>,
}

impl<'a> Local<'a> {
    fn absorb(mut self, mut other: Local<'a>) -> Local<'a> {
        if self.borrowed.len() + self.owned.len() < other.borrowed.len() + other.owned.len() {
            std::mem::swap(&mut self, &mut other);
        }
        for (k, v) in other.borrowed {
            *self.borrowed.entry(k).or_insert(0) += v;
        }
        for (k, v) in other.owned {
            *self.owned.entry(k).or_insert(0) += v;
        }
        for (k, v) in other.chars {
            *self.chars.entry(k).or_insert(0) += v;
        }
        self
    }
}

/// Its settings and how much it has counted.
impl std::fmt::Debug for Trainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trainer")
            .field("config", &self.config)
            .field("distinct_words", &self.words.len())
            .field("distinct_chars", &self.chars.len())
            .finish_non_exhaustive()
    }
}

impl Trainer {
    /// Checks the settings.
    pub fn new(config: TrainerConfig) -> Result<Self> {
        let mut specials = SpecialTokens::default();
        let mut distinct = Vec::new();
        for (i, s) in config.special_tokens.iter().enumerate() {
            if specials.id(s).is_none() {
                specials.insert(s, i as u32)?;
                distinct.push(s.clone());
            }
        }
        let config = TrainerConfig { special_tokens: distinct, ..config };
        if config.kind == ModelKind::Bpe {
            config.special_tokens.iter().try_for_each(|s| super::bytes::check_special_spelling(s))?;
        }
        if config.kind == ModelKind::Bpe && config.vocab_size < 256 + config.special_tokens.len() {
            bail!(
                Argument,
                "vocab_size {} is smaller than the byte alphabet: byte-level BPE needs at least 256 + {} special tokens = {}",
                config.vocab_size,
                config.special_tokens.len(),
                256 + config.special_tokens.len()
            );
        }
        if config.kind == ModelKind::WordPiece && config.max_input_chars_per_word == 0 {
            bail!(Argument, "max_input_chars_per_word must be positive");
        }
        let pretokenizer = PreTokenizer::from_pattern(&config.pattern)?;
        // Long texts are cut before a space that follows a word (`split_long`), where the built-in
        // pre-tokenizers and BERT's split too; a user's regex, or a special token holding
        // a space, may match across such a cut, so then texts stay whole.
        let regex = config.kind == ModelKind::Bpe && matches!(pretokenizer, PreTokenizer::Regex(..));
        let spaced_special = config.special_tokens.iter().any(|s| s.chars().any(char::is_whitespace));
        let long_unit = if regex || spaced_special { usize::MAX } else { LONG_UNIT };
        Ok(Trainer {
            config,
            pretokenizer,
            specials,
            long_unit,
            words: FxHashMap::default(),
            chars: FxHashMap::default(),
        })
    }

    /// Counts one unit of text into `local`.
    fn count_unit<'a>(&self, text: &'a str, local: &mut Local<'a>) -> Result<()> {
        let opts = EncodeOptions::default();
        self.specials.split(text, &opts, |seg| {
            let Segment::Text(a, b) = seg else {
                return Ok(());
            };
            let part = &text[a..b];
            match self.config.kind {
                ModelKind::Bpe => {
                    let bytes = part.as_bytes();
                    self.pretokenizer.split(part, |s, e| *local.borrowed.entry(&bytes[s..e]).or_insert(0) += 1)
                }
                ModelKind::WordPiece => {
                    let mut chars = Vec::with_capacity(part.len());
                    self.config.normalizer.normalize(part, &mut chars);
                    let mut word = String::new();
                    split_words(&chars, |s, e| {
                        word.clear();
                        word.extend(chars[s..e].iter().map(|&(c, _)| c));
                        match local.owned.get_mut(word.as_bytes()) {
                            Some(n) => *n += 1,
                            None => {
                                local.owned.insert(word.as_bytes().into(), 1);
                            }
                        }
                    });
                    Ok(())
                }
                ModelKind::Chars => {
                    for c in part.chars() {
                        *local.chars.entry(c).or_insert(0) += 1;
                    }
                    Ok(())
                }
            }
        })
    }

    fn absorb(&mut self, local: Local<'_>) {
        for (k, v) in local.borrowed {
            match self.words.get_mut(k) {
                Some(n) => *n += v,
                None => {
                    self.words.insert(k.into(), v);
                }
            }
        }
        for (k, v) in local.owned {
            *self.words.entry(k).or_insert(0) += v;
        }
        for (k, v) in local.chars {
            *self.chars.entry(k).or_insert(0) += v;
        }
    }

    fn count_units<'a>(&self, units: &[&'a str]) -> Result<Local<'a>> {
        units
            .par_iter()
            .with_min_len(64)
            .try_fold(Local::default, |mut local, unit| {
                check_stop(&self.config.stop)?;
                self.count_unit(unit, &mut local)?;
                Ok(local)
            })
            .try_reduce(Local::default, |a, b| Ok(a.absorb(b)))
    }

    /// Counts texts, each pre-tokenized as a whole. A long one is counted in pieces that
    /// pre-tokenize as the whole does (see `pieces`), so it is counted on every thread, in
    /// memory proportional to a piece, and a stop is seen between pieces.
    pub fn feed<S: AsRef<str> + Sync>(&mut self, texts: &[S]) -> Result<()> {
        crate::compute(move || {
            let units: Vec<&str> = texts.iter().flat_map(|t| self.pieces(t.as_ref())).collect();
            let local = self.count_units(&units)?;
            self.absorb(local);
            Ok(())
        })
    }

    /// `text` in the pieces it is counted in (see `long_unit`); WordPiece's with CJK handling
    /// are cut before an ideograph too, each being a word of its own.
    fn pieces<'a>(&self, text: &'a str) -> impl Iterator<Item = &'a str> {
        let cjk = self.config.kind == ModelKind::WordPiece && self.config.normalizer.handle_chinese_chars;
        split_long(text, self.long_unit, move |c| cjk && is_chinese_char(c))
    }

    /// Counts a UTF-8 text file, line by line, streaming it in chunks.
    pub fn feed_file(&mut self, path: &Path) -> Result<()> {
        crate::compute(move || {
            let chunk = self.config.chunk_bytes;
            for_each_chunk(path, chunk, |text| {
                // A line is a unit, and a unit is counted on one thread in memory proportional to it
                // (WordPiece: 16 bytes a character): a file of one 80 MB line took 1.4 GB.
                let lines: Vec<&str> = text.split_inclusive('\n').flat_map(|line| self.pieces(line)).collect();
                let local = self.count_units(&lines)?;
                self.absorb(local);
                Ok(())
            })
        })
    }

    /// Builds the vocabulary from the counts.
    pub fn finish(self) -> Result<Tokenizer> {
        crate::compute(move || {
            let cfg = &self.config;
            // A vocabulary of the alphabet alone is no use, and a corpus read from a pipe could
            // not be checked before (characters: below, where special tokens count too).
            if cfg.kind != ModelKind::Chars && self.words.is_empty() {
                bail!(Argument, "no words to train on: the corpus is empty (or holds only special tokens or spaces)");
            }
            let specials: Vec<(String, u32)> =
                cfg.special_tokens.iter().enumerate().map(|(i, s)| (s.clone(), i as u32)).collect();
            // Sorted words make word indices, and so everything after, independent of hashing.
            let mut words: Vec<(Box<[u8]>, u64)> = self.words.into_iter().collect();
            words.sort_unstable();
            match cfg.kind {
                ModelKind::Bpe => {
                    let mut table = MergeTable::default();
                    for s in &cfg.special_tokens {
                        table.intern(s.as_bytes());
                    }
                    // The 256 byte tokens, ordered by the character that stands for them (as HF).
                    let mut order: Vec<u8> = (0..=255).collect();
                    order.sort_by_key(|&b| BYTE_TO_CHAR[b as usize]);
                    let mut byte_id = [0u32; 256];
                    for b in order {
                        byte_id[b as usize] = table.intern(&[b]);
                    }
                    if table.len() != 256 + cfg.special_tokens.len() {
                        bail!(Argument, "a special token is a single byte, which collides with the byte alphabet");
                    }
                    let counts: Vec<u64> = words.iter().map(|w| w.1).collect();
                    let symbols = words.iter().map(|(w, _)| w.iter().map(|&b| byte_id[b as usize]).collect()).collect();
                    drop(words);
                    learn_merges(&mut table, symbols, &counts, cfg.vocab_size, cfg.min_frequency, None, &cfg.stop)?;
                    let merges = std::mem::take(&mut table.merges);
                    let n_special = cfg.special_tokens.len();
                    let entries = table
                        .into_tokens()
                        .into_iter()
                        .enumerate()
                        .map(|(i, t)| {
                            let name = if i < n_special {
                                cfg.special_tokens[i].clone()
                            } else {
                                super::bytes::bytes_to_token(&t)
                            };
                            (name, t.into_boxed_slice())
                        })
                        .collect();
                    let model = Bpe::from_entries(entries, &merges, self.pretokenizer, BpeOptions::default())?;
                    Tokenizer::new(Model::Bpe(model), &specials, Template::default())
                }
                ModelKind::WordPiece => {
                    let mut specials_list = cfg.special_tokens.clone();
                    if !specials_list.iter().any(|s| s == "[UNK]") {
                        specials_list.push("[UNK]".into());
                    }
                    let vocab = train_vocab(
                        &words,
                        &specials_list,
                        cfg.vocab_size,
                        cfg.min_frequency,
                        cfg.limit_alphabet,
                        "##",
                        &cfg.stop,
                    )?;
                    let options = WordPieceOptions {
                        normalizer: Some(cfg.normalizer.clone()),
                        max_input_chars_per_word: cfg.max_input_chars_per_word,
                        ..Default::default()
                    };
                    let model =
                        WordPiece::new(vocab.into_iter().enumerate().map(|(i, t)| (t, i as u32)).collect(), options)?;
                    let specials: Vec<(String, u32)> =
                        specials_list.iter().enumerate().map(|(i, s)| (s.clone(), i as u32)).collect();
                    let template = match (model.token_to_id("[CLS]"), model.token_to_id("[SEP]")) {
                        (Some(c), Some(s)) => Template { prefix: vec![c], suffix: vec![s], ..Template::default() },
                        _ => Template::default(),
                    };
                    Tokenizer::new(Model::WordPiece(model), &specials, template)
                }
                ModelKind::Chars => {
                    let n = specials.len();
                    let max_chars = match cfg.vocab_size {
                        0 => None,
                        v if v <= n + 1 => {
                            bail!(Argument, "vocab_size {v} leaves no room for characters after {n} special tokens")
                        }
                        v => Some(v - n),
                    };
                    let mut counts = self.chars;
                    for (s, _) in &specials {
                        let mut it = s.chars();
                        if let (Some(c), None) = (it.next(), it.next()) {
                            counts.remove(&c);
                        }
                    }
                    if counts.is_empty() && specials.is_empty() {
                        bail!(Argument, "no characters to train on (is the text empty?)");
                    }
                    // The unknown token among the special ones, in its common spellings; else one
                    // named [UNK] is added if the vocabulary must leave characters out.
                    let unk = specials.iter().find(|(s, _)| UNK_SPELLINGS.contains(&s.as_str()));
                    let unk_token = unk.map_or("[UNK]", |(s, _)| s.as_str());
                    let model = Chars::from_counts(&counts, n as u32, max_chars, unk_token, unk.map(|&(_, id)| id))?;
                    Tokenizer::new(Model::Chars(model), &specials, Template::default())
                }
            }
        })
    }
}

/// Special tokens a character vocabulary takes as its unknown token (BERT's, SentencePiece's,
/// and the tiktoken-style spelling).
const UNK_SPELLINGS: [&str; 3] = ["[UNK]", "<unk>", "<|unk|>"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_vocab_is_an_error() {
        let err = Trainer::new(TrainerConfig::new(ModelKind::Bpe, 200)).err().unwrap().to_string();
        assert!(err.contains("smaller than the byte alphabet"), "{err}");
    }

    #[test]
    fn thread_count_does_not_matter() {
        let texts: Vec<String> =
            (0..2000).map(|i| format!("word{} the quick brown fox {} jumps", i % 37, i % 11)).collect();
        let train = |threads| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| {
                Tokenizer::train_from_texts(&texts, TrainerConfig::new(ModelKind::Bpe, 400)).unwrap().to_json()
            })
        };
        assert_eq!(train(1), train(2));
    }
}
