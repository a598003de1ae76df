//! WordPiece (BERT): after basic tokenization each word is cut greedily into the longest
//! vocabulary entries from the left, pieces after the first carrying the `##` prefix; a word
//! that cannot be covered, or is longer than `max_input_chars_per_word`, becomes `[UNK]`.
//! Decoding joins pieces, gluing `##` pieces to the previous one (lossy: case, accents and
//! spacing are gone). Training learns merges over characters like BPE and keeps the tokens.

use std::sync::atomic::AtomicBool;

use rayon::prelude::*;
use rustc_hash::FxHashMap;

use super::basic::{split_words, BertNormalizer};
use super::bpe_train::{learn_merges, MergeTable};
use super::Encoding;
use crate::{bail, Result};

/// A WordPiece model with its BERT normalizer.
#[derive(Clone, Debug)]
pub struct WordPiece {
    vocab: Vec<Option<String>>,
    ids: FxHashMap<String, u32>,
    /// Continuation pieces, keyed without their prefix (so lookups borrow from the word).
    continuation: FxHashMap<String, u32>,
    unk: u32,
    prefix: String,
    max_chars: usize,
    /// Longest vocabulary entry in bytes (bounds the greedy search).
    longest: usize,
    pub(crate) normalizer: Option<BertNormalizer>,
    /// The decoder removes spaces before punctuation and in contractions (HF's `cleanup`).
    pub(crate) cleanup: bool,
}

/// Options of a WordPiece model.
#[derive(Clone, Debug)]
pub struct WordPieceOptions {
    /// Token for words that cannot be covered.
    pub unk_token: String,
    /// Prefix of pieces that continue a word.
    pub prefix: String,
    /// Longer words become the unknown token.
    pub max_input_chars_per_word: usize,
    /// Text normalization before splitting (`None`: text is used as is).
    pub normalizer: Option<BertNormalizer>,
    /// Decoder clean-up of tokenization spaces.
    pub cleanup: bool,
}

impl Default for WordPieceOptions {
    fn default() -> Self {
        WordPieceOptions {
            unk_token: "[UNK]".into(),
            prefix: "##".into(),
            max_input_chars_per_word: 100,
            normalizer: Some(BertNormalizer::default()),
            cleanup: true,
        }
    }
}

impl WordPiece {
    /// Builds a model from (token, id) pairs. The unknown token must be in the vocabulary.
    pub fn new(vocab: Vec<(String, u32)>, options: WordPieceOptions) -> Result<Self> {
        let size = super::id_table_size(vocab.iter().map(|&(_, id)| id), vocab.len())?;
        let mut table: Vec<Option<String>> = vec![None; size];
        let mut ids = FxHashMap::default();
        let mut continuation = FxHashMap::default();
        let mut longest = 0;
        for (token, id) in vocab {
            if let Some(old) = &table[id as usize] {
                bail!(Format, "vocabulary gives id {id} to both {old:?} and {token:?}");
            }
            // With an empty prefix every token can also continue a word, as in Hugging Face.
            if let Some(rest) = token.strip_prefix(options.prefix.as_str()) {
                continuation.insert(rest.to_string(), id);
            }
            longest = longest.max(token.len());
            ids.insert(token.clone(), id);
            table[id as usize] = Some(token);
        }
        let unk = match ids.get(&options.unk_token) {
            Some(&id) => id,
            None => bail!(Format, "WordPiece unknown token {:?} is not in the vocabulary", options.unk_token),
        };
        if options.max_input_chars_per_word == 0 {
            bail!(Argument, "max_input_chars_per_word must be positive");
        }
        Ok(WordPiece {
            vocab: table,
            ids,
            continuation,
            unk,
            prefix: options.prefix,
            max_chars: options.max_input_chars_per_word,
            longest,
            normalizer: options.normalizer,
            cleanup: options.cleanup,
        })
    }

    /// Reads BERT's `vocab.txt` contents: one token per line, the id is the line number. As
    /// Hugging Face reads it, a line's trailing whitespace is not part of its token, and a
    /// blank line's id is an empty token (never matched; here, no token).
    pub fn from_vocab_txt(contents: &str, options: WordPieceOptions) -> Result<Self> {
        let mut vocab = Vec::new();
        let mut seen = FxHashMap::default();
        for (i, line) in contents.lines().enumerate() {
            let token = line.trim_end();
            if token.is_empty() {
                continue;
            }
            if let Some(first) = seen.insert(token.to_string(), i) {
                bail!(Format, "vocab.txt line {}: token {token:?} already on line {}", i + 1, first + 1);
            }
            vocab.push((token.to_string(), i as u32));
        }
        if vocab.is_empty() {
            bail!(Format, "vocab.txt is empty");
        }
        Self::new(vocab, options)
    }

    /// The options this model was built with.
    pub fn options(&self) -> WordPieceOptions {
        WordPieceOptions {
            unk_token: self.vocab[self.unk as usize].clone().unwrap_or_default(),
            prefix: self.prefix.clone(),
            max_input_chars_per_word: self.max_chars,
            normalizer: self.normalizer.clone(),
            cleanup: self.cleanup,
        }
    }

    /// Number of ids (one past the largest).
    pub fn len(&self) -> usize {
        self.vocab.len()
    }

    /// Whether the vocabulary is empty.
    pub fn is_empty(&self) -> bool {
        self.vocab.is_empty()
    }

    /// The token of `id`.
    pub fn id_to_token(&self, id: u32) -> Option<&str> {
        self.vocab.get(id as usize).and_then(|s| s.as_deref())
    }

    /// The id of `token`.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.ids.get(token).copied()
    }

    /// (token, id) pairs in id order.
    pub fn vocab(&self) -> impl Iterator<Item = (&str, u32)> {
        self.vocab.iter().enumerate().filter_map(|(i, s)| s.as_deref().map(|s| (s, i as u32)))
    }

    /// Encodes ordinary text; `offsets`, when given, receives each token's character span.
    pub fn encode_text(&self, text: &str, out: &mut Vec<u32>, mut offsets: Option<&mut Vec<(usize, usize)>>) {
        // In chunks cut just before a space that follows a non-space, or with BERT's CJK
        // handling before an ideograph (no word or normalisation spans either): normalised
        // characters take 8 bytes each (640 MB for an 80 MB corpus at once), and chunks of a
        // long text are encoded in parallel.
        let cjk = self.normalizer.as_ref().is_some_and(|n| n.handle_chinese_chars);
        let mut pieces = super::files::split_long(text, 1 << 16, |c| cjk && super::basic::is_chinese_char(c));
        let (first, second) = (pieces.next(), pieces.next());
        let Some(second) = second else {
            return self.encode_chunk(text, 0, out, offsets);
        };
        let chunks: Vec<&str> = first.into_iter().chain([second]).chain(pieces).collect();
        let want_offsets = offsets.is_some();
        // In parallel only here, for a long text: a short one's encoding (with the GIL held, from
        // Python) is never handed to another thread.
        let parts: Vec<Encoding> = crate::compute(|| {
            // Each chunk's first character in the whole text, for offsets (not counted without them).
            let counts: Vec<usize> =
                chunks.par_iter().map(|c| if want_offsets { c.chars().count() } else { 0 }).collect();
            let bases: Vec<usize> = counts.iter().scan(0, |at, &n| Some(std::mem::replace(at, *at + n))).collect();
            chunks
                .par_iter()
                .zip(&bases)
                .map(|(chunk, &base)| {
                    let mut part = Encoding::default();
                    self.encode_chunk(chunk, base, &mut part.ids, want_offsets.then_some(&mut part.offsets));
                    part
                })
                .collect()
        });
        for part in parts {
            out.extend(part.ids);
            if let Some(offsets) = offsets.as_deref_mut() {
                offsets.extend(part.offsets);
            }
        }
    }

    /// Encodes one chunk of text whose first character is character `base` of the text.
    fn encode_chunk(&self, text: &str, base: usize, out: &mut Vec<u32>, mut offsets: Option<&mut Vec<(usize, usize)>>) {
        let mut chars: Vec<(char, u32)> = Vec::with_capacity(text.len() + 8);
        match &self.normalizer {
            Some(n) => n.normalize(text, &mut chars),
            None => chars.extend(text.chars().enumerate().map(|(i, c)| (c, i as u32))),
        }
        let mut word = String::new();
        let mut bounds: Vec<usize> = Vec::new();
        split_words(&chars, |a, b| {
            word.clear();
            bounds.clear();
            for &(c, _) in &chars[a..b] {
                bounds.push(word.len());
                word.push(c);
            }
            bounds.push(word.len());
            let first = out.len();
            let mut piece_chars = Vec::new();
            self.encode_word(&word, &bounds, out, &mut piece_chars);
            if let Some(offsets) = offsets.as_deref_mut() {
                let src = |k: usize| base + chars[a + k].1 as usize;
                if out.len() - first == 1 && piece_chars.is_empty() {
                    offsets.push((src(0), src(b - a - 1) + 1));
                } else {
                    for &(s, e) in &piece_chars {
                        offsets.push((src(s), src(e - 1) + 1));
                    }
                }
            }
        });
    }

    /// Greedy longest-match-first over one word. `bounds` are the byte offsets of its
    /// characters (plus the end); `pieces` receives each piece's character range.
    fn encode_word(&self, word: &str, bounds: &[usize], out: &mut Vec<u32>, pieces: &mut Vec<(usize, usize)>) {
        let n = bounds.len() - 1;
        if n > self.max_chars {
            out.push(self.unk);
            return;
        }
        let first = out.len();
        let mut start = 0;
        while start < n {
            // Longest candidate end (in characters) whose byte length fits the longest token.
            let limit = bounds[start] + self.longest;
            let mut end = match bounds.binary_search(&limit) {
                Ok(k) => k,
                Err(k) => k - 1,
            }
            .min(n);
            let mut found = None;
            while end > start {
                let sub = &word[bounds[start]..bounds[end]];
                let id = if start == 0 { self.ids.get(sub) } else { self.continuation.get(sub) };
                if let Some(&id) = id {
                    found = Some(id);
                    break;
                }
                end -= 1;
            }
            match found {
                Some(id) => {
                    out.push(id);
                    pieces.push((start, end));
                    start = end;
                }
                None => {
                    out.truncate(first);
                    pieces.clear();
                    out.push(self.unk);
                    return;
                }
            }
        }
    }

    /// Joins tokens as Hugging Face's WordPiece decoder does.
    pub fn decode_tokens(&self, tokens: &[&str]) -> String {
        let mut text = String::new();
        for (i, token) in tokens.iter().enumerate() {
            let mut piece = if i == 0 {
                (*token).to_string()
            } else if let Some(rest) = token.strip_prefix(self.prefix.as_str()) {
                rest.to_string()
            } else {
                format!(" {token}")
            };
            if self.cleanup {
                piece = cleanup(&piece);
            }
            text.push_str(&piece);
        }
        text
    }
}

/// Removes the spaces tokenization put before punctuation and inside English contractions.
fn cleanup(s: &str) -> String {
    s.replace(" .", ".")
        .replace(" ?", "?")
        .replace(" !", "!")
        .replace(" ,", ",")
        .replace(" ' ", "'")
        .replace(" n't", "n't")
        .replace(" 'm", "'m")
        .replace(" do not", " don't")
        .replace(" 's", "'s")
        .replace(" 've", "'ve")
        .replace(" 're", "'re")
}

/// Learns a WordPiece vocabulary from word counts (words already normalized and split), as
/// Hugging Face's `WordPieceTrainer` does: characters (the `limit_alphabet` most frequent),
/// their `##` continuation forms, then BPE merges until `vocab_size`. Special tokens come first.
/// Setting `stop` ends it with [`crate::Error::Interrupted`].
#[allow(clippy::too_many_arguments)]
pub fn train_vocab(
    words: &[(Box<[u8]>, u64)],
    specials: &[String],
    vocab_size: usize,
    min_frequency: u64,
    limit_alphabet: Option<usize>,
    prefix: &str,
    stop: &AtomicBool,
) -> Result<Vec<String>> {
    let mut table = MergeTable::default();
    for s in specials {
        table.intern(s.as_bytes());
    }
    // Alphabet: character frequencies, optionally keeping only the most frequent.
    let mut freq: FxHashMap<char, u64> = FxHashMap::default();
    for (w, count) in words {
        for c in std::str::from_utf8(w).expect("words are UTF-8").chars() {
            *freq.entry(c).or_default() += count;
        }
    }
    let mut alphabet: Vec<(char, u64)> = freq.into_iter().collect();
    if let Some(limit) = limit_alphabet {
        if alphabet.len() > limit {
            alphabet.sort_unstable_by_key(|&(c, n)| (std::cmp::Reverse(n), c));
            alphabet.truncate(limit);
        }
    }
    alphabet.sort_unstable_by_key(|&(c, _)| c);
    let kept: rustc_hash::FxHashSet<char> = alphabet.iter().map(|&(c, _)| c).collect();
    for &(c, _) in &alphabet {
        table.intern(c.to_string().as_bytes());
    }
    // Continuation forms of the characters that occur inside words, in code point order.
    let mut inner: Vec<char> = Vec::new();
    for (w, _) in words {
        inner.extend(std::str::from_utf8(w).unwrap().chars().skip(1).filter(|c| kept.contains(c)));
    }
    inner.sort_unstable();
    inner.dedup();
    for c in inner {
        table.intern(format!("{prefix}{c}").as_bytes());
    }
    if vocab_size < table.len() {
        bail!(
            Argument,
            "vocab_size {vocab_size} is smaller than the {} special tokens and characters the corpus needs \
             (raise vocab_size or set limit_alphabet)",
            table.len()
        );
    }
    let mut symbols = Vec::with_capacity(words.len());
    let mut counts = Vec::with_capacity(words.len());
    for (w, count) in words {
        let word: Vec<u32> = std::str::from_utf8(w)
            .unwrap()
            .chars()
            .enumerate()
            .filter(|(_, c)| kept.contains(c))
            .map(|(i, c)| {
                let s = if i == 0 { c.to_string() } else { format!("{prefix}{c}") };
                table.id(s.as_bytes()).expect("alphabet interned")
            })
            .collect();
        symbols.push(word);
        counts.push(*count);
    }
    learn_merges(&mut table, symbols, &counts, vocab_size, min_frequency, Some(prefix.as_bytes()), stop)?;
    Ok(table.into_tokens().into_iter().map(|t| String::from_utf8(t).expect("UTF-8 pieces")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> WordPiece {
        let vocab = ["[UNK]", "[CLS]", "un", "##aff", "##able", "a", "##b", ",", "hello", "##s"];
        WordPiece::new(vocab.iter().enumerate().map(|(i, t)| (t.to_string(), i as u32)).collect(), Default::default())
            .unwrap()
    }

    #[test]
    fn greedy_longest_match() {
        let m = model();
        let mut out = Vec::new();
        let mut offs = Vec::new();
        m.encode_text("Unaffable, hellos xyz", &mut out, Some(&mut offs));
        assert_eq!(out, [2, 3, 4, 7, 8, 9, 0]);
        assert_eq!(offs, [(0, 2), (2, 5), (5, 9), (9, 10), (11, 16), (16, 17), (18, 21)]);
        let tokens: Vec<&str> = out.iter().map(|&i| m.id_to_token(i).unwrap()).collect();
        assert_eq!(m.decode_tokens(&tokens), "unaffable, hellos [UNK]");
    }

    #[test]
    fn long_words_and_bad_vocab() {
        let m = model();
        let mut out = Vec::new();
        m.encode_text(&"a".repeat(101), &mut out, None);
        assert_eq!(out, [0]);
        assert!(WordPiece::new(vec![("a".into(), 0)], Default::default()).is_err());
        assert!(WordPiece::from_vocab_txt("a\n\nb\n", Default::default()).is_err());
        assert!(WordPiece::from_vocab_txt("[UNK]\na\na\n", Default::default()).is_err());
    }
}
