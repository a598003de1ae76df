//! Byte-level BPE (GPT-2 style): pieces from the pre-tokenizer are split into bytes and
//! adjacent symbols are merged by rank (lowest first, leftmost on ties) until no listed merge
//! applies. Decoding concatenates the tokens' bytes, so `decode(encode(s)) == s` for any text.
//!
//! Speed comes from three things: the hand-written pre-tokenizer, a per-thread cache of
//! piece → ids (frequent words are encoded once), and a merge loop that is a linear scan for
//! ordinary pieces and a heap for long ones (say a run of ten thousand spaces).

use std::borrow::Cow;
use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use rustc_hash::FxHashMap;
use unicode_normalization::{is_nfc_quick, IsNormalized, UnicodeNormalization};

use super::bytes::{bytes_to_token, token_to_bytes};
use super::nfc::nfc_aligned;
use super::pretokenize::PreTokenizer;
use crate::{bail, Result};

const NO_MERGE: u64 = u64::MAX;
/// Pieces up to this many bytes use the quadratic scan; longer ones the heap.
const SCAN_LIMIT: usize = 128;
/// Pieces up to this many bytes are cached.
const CACHE_PIECE_LIMIT: usize = 64;
const CACHE_MAX_ENTRIES: usize = 1 << 18;

#[inline(always)]
fn pair_key(a: u32, b: u32) -> u64 {
    ((a as u64) << 32) | b as u64
}

/// A byte-level BPE model: vocabulary, ranked merges and the pre-tokenizer.
#[derive(Clone, Debug)]
pub struct Bpe {
    /// id → token bytes.
    bytes: TokenBytes,
    /// id → vocabulary string as stored in files (`Ġthe`); `None` for missing ids.
    strings: Vec<Option<String>>,
    string_ids: FxHashMap<String, u32>,
    /// byte → id of its one-byte token (`u32::MAX` when the vocabulary lacks it).
    byte_ids: Box<[u32; 256]>,
    /// (left, right) → rank << 32 | merged id.
    merges: FxHashMap<u64, u64>,
    /// Merges by rank, as (left, right) ids.
    merge_list: Vec<(u32, u32)>,
    /// bytes → id, only when `ignore_merges` (a whole piece in the vocabulary is one token).
    whole: Option<FxHashMap<Box<[u8]>, u32>>,
    unk: Option<u32>,
    pub(crate) pretokenizer: PreTokenizer,
    pub(crate) add_prefix_space: bool,
    /// Text is put in Unicode NFC before it is split (GPT-NeoX's and Qwen2's normalizer).
    pub(crate) nfc: bool,
    /// Identifies this model's entries in the per-thread piece cache.
    cache_owner: u64,
}

/// Every token's bytes in one buffer: decoding reads two compact tables (half a megabyte for a
/// 32k vocabulary) rather than one heap allocation per token.
#[derive(Clone, Debug)]
struct TokenBytes {
    /// The tokens' bytes, then `COPY` zeros, so that any token's first `COPY` bytes can be read.
    data: Vec<u8>,
    /// id → (start, length) in `data`; the length is `u32::MAX` for an id the vocabulary lacks.
    spans: Vec<(u32, u32)>,
}

impl TokenBytes {
    const MISSING: u32 = u32::MAX;
    /// Tokens up to this long are appended by one fixed-size copy.
    const COPY: usize = 16;

    /// From each id's bytes, present where `strings` has the id.
    fn new(bytes: &[Box<[u8]>], strings: &[Option<String>]) -> Result<Self> {
        debug_assert_eq!(bytes.len(), strings.len());
        let mut data = Vec::with_capacity(bytes.iter().map(|b| b.len()).sum::<usize>() + Self::COPY);
        let mut spans = Vec::with_capacity(bytes.len());
        for (b, s) in bytes.iter().zip(strings) {
            let start = u32::try_from(data.len()).map_err(|_| {
                crate::Error::Format("the vocabulary's tokens hold more than 4 GB of bytes".to_string())
            })?;
            spans.push(match s {
                Some(_) => (start, b.len() as u32),
                None => (0, Self::MISSING),
            });
            data.extend_from_slice(b);
        }
        data.resize(data.len() + Self::COPY, 0);
        Ok(TokenBytes { data, spans })
    }

    #[inline]
    fn span(&self, id: u32) -> Option<(usize, usize)> {
        match self.spans.get(id as usize) {
            Some(&(start, len)) if len != Self::MISSING => Some((start as usize, len as usize)),
            _ => None,
        }
    }

    #[inline]
    fn get(&self, id: u32) -> Option<&[u8]> {
        self.span(id).map(|(start, len)| &self.data[start..start + len])
    }

    /// Appends the bytes of `id` to `out`; false for an id the vocabulary lacks. A short token
    /// is copied as a fixed `COPY` bytes and the excess cut off: one vector move, where a
    /// call to memcpy per token took a sixth of decoding's time.
    #[inline]
    fn append(&self, id: u32, out: &mut Vec<u8>) -> bool {
        let Some((start, len)) = self.span(id) else { return false };
        if len <= Self::COPY {
            let end = out.len() + len;
            let chunk: &[u8; Self::COPY] = self.data[start..start + Self::COPY].try_into().expect("COPY bytes");
            out.extend_from_slice(chunk);
            out.truncate(end);
        } else {
            out.extend_from_slice(&self.data[start..start + len]);
        }
        true
    }
}

/// Options of a BPE model that `tokenizer.json` can carry.
#[derive(Clone, Debug, Default)]
pub struct BpeOptions {
    /// Look a whole piece up in the vocabulary before merging (Llama-3 style).
    pub ignore_merges: bool,
    /// Token used for bytes missing from the vocabulary (otherwise they are dropped, as in HF).
    pub unk_token: Option<String>,
    /// Prepend a space to text that does not start with one (RoBERTa style).
    pub add_prefix_space: bool,
    /// Put text in Unicode NFC first (Hugging Face's `NFC` normalizer).
    pub nfc: bool,
}

fn next_cache_owner() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

impl Bpe {
    /// Builds a model from a vocabulary of byte-level strings (`Ġthe` → id) and merges given as
    /// pairs of vocabulary strings, in rank order. Missing merge parts are format errors.
    pub fn new(
        vocab: Vec<(String, u32)>,
        merges: &[(String, String)],
        pretokenizer: PreTokenizer,
        options: BpeOptions,
    ) -> Result<Self> {
        let size = super::id_table_size(vocab.iter().map(|&(_, id)| id), vocab.len())?;
        let mut bytes: Vec<Box<[u8]>> = vec![Box::default(); size];
        let mut strings: Vec<Option<String>> = vec![None; size];
        let mut string_ids = FxHashMap::default();
        string_ids.reserve(vocab.len());
        for (token, id) in vocab {
            if let Some(old) = &strings[id as usize] {
                bail!(Format, "vocabulary gives id {id} to both {old:?} and {token:?}");
            }
            // Tokens outside the byte map (say a special token stored in the model's vocabulary)
            // decode to their UTF-8 text, as Hugging Face's ByteLevel decoder does.
            bytes[id as usize] = token_to_bytes(&token).unwrap_or_else(|| token.as_bytes().to_vec()).into();
            string_ids.insert(token.clone(), id);
            strings[id as usize] = Some(token);
        }
        let mut merge_ids = Vec::with_capacity(merges.len());
        for (rank, (a, b)) in merges.iter().enumerate() {
            let find = |t: &str| {
                string_ids.get(t).copied().ok_or_else(|| {
                    crate::Error::Format(format!("merge #{rank} ({a:?}, {b:?}): token {t:?} is not in the vocabulary"))
                })
            };
            let (ia, ib) = (find(a)?, find(b)?);
            let merged = find(&format!("{a}{b}"))?;
            merge_ids.push((ia, ib, merged));
        }
        Self::assemble(bytes, strings, string_ids, &merge_ids, pretokenizer, options)
    }

    /// Builds a model from (vocabulary string, raw bytes) entries with ids `0..n`, and merges as
    /// (left, right, merged) ids in rank order. Used by the trainer.
    pub fn from_entries(
        entries: Vec<(String, Box<[u8]>)>,
        merges: &[(u32, u32, u32)],
        pretokenizer: PreTokenizer,
        options: BpeOptions,
    ) -> Result<Self> {
        let string_ids = entries.iter().enumerate().map(|(i, (s, _))| (s.clone(), i as u32)).collect();
        let (strings, bytes): (Vec<String>, Vec<Box<[u8]>>) = entries.into_iter().unzip();
        let strings = strings.into_iter().map(Some).collect();
        Self::assemble(bytes, strings, string_ids, merges, pretokenizer, options)
    }

    fn assemble(
        bytes: Vec<Box<[u8]>>,
        strings: Vec<Option<String>>,
        string_ids: FxHashMap<String, u32>,
        merge_ids: &[(u32, u32, u32)],
        pretokenizer: PreTokenizer,
        options: BpeOptions,
    ) -> Result<Self> {
        let mut byte_ids = Box::new([u32::MAX; 256]);
        for (b, slot) in byte_ids.iter_mut().enumerate() {
            if let Some(&id) = string_ids.get(&bytes_to_token(&[b as u8])) {
                *slot = id;
            }
        }
        let mut merges = FxHashMap::default();
        merges.reserve(merge_ids.len());
        for (rank, &(a, b, m)) in merge_ids.iter().enumerate() {
            // A repeated pair keeps its last rank, as Hugging Face's loader does.
            merges.insert(pair_key(a, b), ((rank as u64) << 32) | m as u64);
        }
        let merge_list = merge_ids.iter().map(|&(a, b, _)| (a, b)).collect();
        let whole = options.ignore_merges.then(|| {
            bytes.iter().enumerate().filter(|(_, b)| !b.is_empty()).map(|(i, b)| (b.clone(), i as u32)).collect()
        });
        let bytes = TokenBytes::new(&bytes, &strings)?;
        let unk = match &options.unk_token {
            Some(t) => match string_ids.get(t) {
                Some(&id) => Some(id),
                None => bail!(Format, "unk_token {t:?} is not in the vocabulary"),
            },
            None => None,
        };
        Ok(Bpe {
            bytes,
            strings,
            string_ids,
            byte_ids,
            merges,
            merge_list,
            whole,
            unk,
            pretokenizer,
            add_prefix_space: options.add_prefix_space,
            nfc: options.nfc,
            cache_owner: next_cache_owner(),
        })
    }

    /// Number of ids (one past the largest).
    pub fn len(&self) -> usize {
        self.strings.len()
    }

    /// Whether the vocabulary is empty.
    pub fn is_empty(&self) -> bool {
        self.strings.is_empty()
    }

    /// The vocabulary string of `id` (`Ġthe`).
    pub fn id_to_token(&self, id: u32) -> Option<&str> {
        self.strings.get(id as usize).and_then(|s| s.as_deref())
    }

    /// The id of vocabulary string `token`.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.string_ids.get(token).copied()
    }

    /// The raw bytes of `id`.
    #[inline]
    pub fn token_bytes(&self, id: u32) -> Option<&[u8]> {
        self.bytes.get(id)
    }

    /// Spare capacity `append_token_bytes` wants beyond the bytes it appends (else `out` grows).
    pub const APPEND_SLACK: usize = TokenBytes::COPY;

    /// Appends the raw bytes of `id` to `out`; false for an id the vocabulary lacks.
    #[inline]
    pub fn append_token_bytes(&self, id: u32, out: &mut Vec<u8>) -> bool {
        self.bytes.append(id, out)
    }

    /// (string, id) pairs in id order.
    pub fn vocab(&self) -> impl Iterator<Item = (&str, u32)> {
        self.strings.iter().enumerate().filter_map(|(i, s)| s.as_deref().map(|s| (s, i as u32)))
    }

    /// Merges in rank order, as (left, right) ids.
    pub fn merges(&self) -> &[(u32, u32)] {
        &self.merge_list
    }

    /// Options needed to rebuild this model.
    pub fn options(&self) -> BpeOptions {
        BpeOptions {
            ignore_merges: self.whole.is_some(),
            unk_token: self.unk.and_then(|id| self.id_to_token(id)).map(str::to_string),
            add_prefix_space: self.add_prefix_space,
            nfc: self.nfc,
        }
    }

    /// Encodes ordinary text (no special tokens), appending ids to `out`.
    pub fn encode_text(&self, text: &str, out: &mut Vec<u32>) -> Result<()> {
        self.encode_text_until(text, out, &AtomicBool::new(false))
    }

    /// `encode_text`, ending with [`crate::Error::Interrupted`] once `stop` is set (by another
    /// thread), as [`PreTokenizer::split_until`] sees it.
    pub(crate) fn encode_text_until(&self, text: &str, out: &mut Vec<u32>, stop: &AtomicBool) -> Result<()> {
        self.encode_normalized(&self.normalize(text), out, stop)
    }

    /// `text` as the model splits it: in NFC if the model normalizes (no alignment: for ids).
    pub(crate) fn normalize<'a>(&self, text: &'a str) -> Cow<'a, str> {
        if self.nfc && is_nfc_quick(text.chars()) != IsNormalized::Yes {
            Cow::Owned(text.nfc().collect())
        } else {
            Cow::Borrowed(text)
        }
    }

    /// Normalized `text` as the pre-tokenizer gets it: with a space before it when the model
    /// adds one (`add_prefix_space`) and it has none.
    pub(crate) fn prefixed<'a>(&self, text: &'a str) -> Cow<'a, str> {
        if self.add_prefix_space && !text.starts_with(' ') && !text.is_empty() {
            Cow::Owned(format!(" {text}"))
        } else {
            Cow::Borrowed(text)
        }
    }

    fn encode_normalized(&self, text: &str, out: &mut Vec<u32>, stop: &AtomicBool) -> Result<()> {
        let text = self.prefixed(text);
        let bytes = text.as_bytes();
        CACHE.with(|cell| {
            let mut cache = cell.borrow_mut();
            cache.claim(self.cache_owner);
            self.pretokenizer.split_until(&text, stop, |a, b| self.encode_piece(&bytes[a..b], out, &mut cache))
        })
    }

    /// Encodes ordinary text and reports each token's byte span in `text`. After NFC a span is
    /// that of the original characters its normalized ones are aligned to.
    pub fn encode_text_with_offsets(
        &self,
        text: &str,
        out: &mut Vec<u32>,
        spans: &mut Vec<(usize, usize)>,
    ) -> Result<()> {
        let Some((normalized, origin)) = self.nfc.then(|| nfc_aligned(text)).flatten() else {
            return self.encode_normalized_with_offsets(text, out, spans);
        };
        let first = spans.len();
        self.encode_normalized_with_offsets(&normalized, out, spans)?;
        for span in &mut spans[first..] {
            let start = origin.get(span.0).map_or(text.len(), |o| o.0);
            *span = (start, if span.1 > span.0 { origin[span.1 - 1].1 } else { start });
        }
        Ok(())
    }

    fn encode_normalized_with_offsets(
        &self,
        text: &str,
        out: &mut Vec<u32>,
        spans: &mut Vec<(usize, usize)>,
    ) -> Result<()> {
        let prefixed = self.prefixed(text);
        let (shift, text) = (prefixed.len() - text.len(), prefixed); // the added space, if any
        let bytes = text.as_bytes();
        let original_len = bytes.len() - shift;
        // The added space stands for the text's first character, as in Hugging Face (a token
        // that is only that space spans the character).
        let first_char = text[shift..].chars().next().map_or(0, char::len_utf8);
        CACHE.with(|cell| {
            let mut cache = cell.borrow_mut();
            cache.claim(self.cache_owner);
            self.pretokenizer.split(&text, |a, b| {
                let first = out.len();
                self.encode_piece(&bytes[a..b], out, &mut cache);
                let missing = |p: usize| p < b && self.byte_ids[bytes[p] as usize] == u32::MAX;
                let mut pos = a;
                for &id in &out[first..] {
                    if self.unk.is_none() {
                        while missing(pos) {
                            pos += 1; // a byte the vocabulary lacks was dropped
                        }
                    }
                    // The unknown token stands for one missing byte, whatever its own spelling.
                    let len = if Some(id) == self.unk && missing(pos) {
                        1
                    } else {
                        self.bytes.get(id).map_or(1, |t| t.len().max(1))
                    };
                    let end = (pos + len).min(b);
                    let clamp = |p: usize| p.saturating_sub(shift).min(original_len);
                    spans.push((clamp(pos), if end <= shift { first_char } else { clamp(end) }));
                    pos = end;
                }
            })
        })
    }

    /// Encodes one pre-tokenized piece.
    #[inline]
    fn encode_piece(&self, piece: &[u8], out: &mut Vec<u32>, cache: &mut PieceCache) {
        if piece.len() == 1 {
            self.push_byte(piece[0], out);
            return;
        }
        if let Some(whole) = &self.whole {
            if let Some(&id) = whole.get(piece) {
                out.push(id);
                return;
            }
        }
        if piece.len() < 16 {
            // Short pieces (most words) are keyed by value: no pointer chasing, no memcmp.
            let key = small_key(piece);
            if let Some(&span) = cache.small.get(&key) {
                cache.push(span, out);
                return;
            }
            let first = out.len();
            self.merge_piece(piece, out, &mut cache.scratch);
            let span = cache.store(&out[first..]);
            cache.small.insert(key, span);
        } else if piece.len() <= CACHE_PIECE_LIMIT {
            if let Some(&span) = cache.map.get(piece) {
                cache.push(span, out);
                return;
            }
            let first = out.len();
            self.merge_piece(piece, out, &mut cache.scratch);
            let span = cache.store(&out[first..]);
            cache.map.insert(piece.into(), span);
        } else {
            self.merge_piece(piece, out, &mut cache.scratch);
        }
    }

    #[inline]
    fn push_byte(&self, b: u8, out: &mut Vec<u32>) {
        let id = self.byte_ids[b as usize];
        if id != u32::MAX {
            out.push(id);
        } else if let Some(unk) = self.unk {
            out.push(unk);
        }
    }

    #[inline]
    fn rank(&self, a: u32, b: u32) -> u64 {
        match self.merges.get(&pair_key(a, b)) {
            Some(&v) => v,
            None => NO_MERGE,
        }
    }

    /// Applies the merges to one piece (no cache).
    fn merge_piece(&self, piece: &[u8], out: &mut Vec<u32>, scratch: &mut Scratch) {
        let mut syms = std::mem::take(&mut scratch.syms);
        syms.clear();
        for &b in piece {
            self.push_byte(b, &mut syms);
        }
        if syms.len() <= SCAN_LIMIT {
            self.merge_scan(&mut syms, &mut scratch.ranks);
            out.extend_from_slice(&syms);
        } else {
            self.merge_heap(&syms, out, scratch);
        }
        scratch.syms = syms;
    }

    /// Quadratic but cache-friendly: find the lowest-ranked pair, merge it, update neighbours.
    fn merge_scan(&self, syms: &mut Vec<u32>, ranks: &mut Vec<u64>) {
        if syms.len() < 2 {
            return;
        }
        ranks.clear();
        ranks.extend(syms.windows(2).map(|w| self.rank(w[0], w[1])));
        loop {
            let mut best = NO_MERGE;
            let mut at = 0;
            for (i, &r) in ranks.iter().enumerate() {
                // Rank in the high bits: the smallest value is the lowest rank, leftmost first.
                if r < best {
                    best = r;
                    at = i;
                }
            }
            if best == NO_MERGE {
                break;
            }
            syms[at] = best as u32;
            syms.remove(at + 1);
            ranks.remove(at);
            if at + 1 < syms.len() {
                ranks[at] = self.rank(syms[at], syms[at + 1]);
            }
            if at > 0 {
                ranks[at - 1] = self.rank(syms[at - 1], syms[at]);
            }
        }
    }

    /// O(n log n) merging for long pieces: a min-heap of (rank, position) over a linked list.
    fn merge_heap(&self, syms: &[u32], out: &mut Vec<u32>, scratch: &mut Scratch) {
        let n = syms.len();
        let mut ids = syms.to_vec();
        let next = &mut scratch.next;
        let prev = &mut scratch.prev;
        next.clear();
        prev.clear();
        next.extend((1..=n).map(|i| i as u32));
        prev.extend((0..n).map(|i| (i as u32).wrapping_sub(1)));
        let mut alive = vec![true; n];
        let mut heap = BinaryHeap::with_capacity(n);
        for i in 0..n - 1 {
            let r = self.rank(ids[i], ids[i + 1]);
            if r != NO_MERGE {
                heap.push(Reverse((r, i as u32)));
            }
        }
        while let Some(Reverse((r, i))) = heap.pop() {
            let i = i as usize;
            if !alive[i] || next[i] as usize >= n {
                continue;
            }
            let j = next[i] as usize;
            // Stale entry: the pair at i changed since it was pushed.
            if self.rank(ids[i], ids[j]) != r {
                continue;
            }
            ids[i] = r as u32;
            alive[j] = false;
            next[i] = next[j];
            if (next[j] as usize) < n {
                prev[next[j] as usize] = i as u32;
            }
            if prev[i] != u32::MAX {
                let p = prev[i] as usize;
                let rp = self.rank(ids[p], ids[i]);
                if rp != NO_MERGE {
                    heap.push(Reverse((rp, p as u32)));
                }
            }
            if (next[i] as usize) < n {
                let rn = self.rank(ids[i], ids[next[i] as usize]);
                if rn != NO_MERGE {
                    heap.push(Reverse((rn, i as u32)));
                }
            }
        }
        out.extend(ids.iter().zip(&alive).filter(|(_, &a)| a).map(|(&id, _)| id));
    }
}

/// Reusable buffers for the merge loops.
#[derive(Default)]
struct Scratch {
    syms: Vec<u32>,
    ranks: Vec<u64>,
    next: Vec<u32>,
    prev: Vec<u32>,
}

/// A piece of at most 15 bytes packed with its length into one integer: its bytes in order
/// from the lowest, the length in the top byte. Read as two fixed-size words that may overlap
/// (a variable-length copy into a buffer is a call to memcpy, a tenth of encoding's time).
#[inline(always)]
fn small_key(piece: &[u8]) -> u128 {
    let n = piece.len();
    debug_assert!(n < 16);
    let bytes = if n >= 8 {
        let head = u64::from_le_bytes(piece[..8].try_into().expect("8 bytes")) as u128;
        let tail = u64::from_le_bytes(piece[n - 8..].try_into().expect("8 bytes")) as u128;
        head | (tail >> (8 * (16 - n))) << 64 // bytes 8..n
    } else if n >= 4 {
        let head = u32::from_le_bytes(piece[..4].try_into().expect("4 bytes")) as u128;
        let tail = u32::from_le_bytes(piece[n - 4..].try_into().expect("4 bytes")) as u128;
        head | (tail >> (8 * (8 - n))) << 32 // bytes 4..n
    } else {
        piece.iter().rev().fold(0, |key, &b| key << 8 | b as u128)
    };
    bytes | (n as u128) << 120
}

/// Per-thread memo of piece → ids for one model at a time. Values are spans of `ids`.
#[derive(Default)]
struct PieceCache {
    owner: u64,
    small: FxHashMap<u128, (u32, u32)>,
    map: FxHashMap<Box<[u8]>, (u32, u32)>,
    ids: Vec<u32>,
    scratch: Scratch,
}

impl PieceCache {
    fn claim(&mut self, owner: u64) {
        if self.owner != owner {
            self.owner = owner;
            self.clear();
        }
    }

    fn clear(&mut self) {
        self.small.clear();
        self.map.clear();
        self.ids.clear();
    }

    /// Appends the ids of `span` to `out`. Most pieces are one token: pushed as such, where a
    /// one-id `extend_from_slice` is a call to memcpy.
    #[inline(always)]
    fn push(&self, (start, len): (u32, u32), out: &mut Vec<u32>) {
        match &self.ids[start as usize..(start + len) as usize] {
            [id] => out.push(*id),
            ids => out.extend_from_slice(ids),
        }
    }

    /// Keeps `ids` and returns their span; forgets everything when the cache is full.
    fn store(&mut self, ids: &[u32]) -> (u32, u32) {
        if self.small.len() + self.map.len() >= CACHE_MAX_ENTRIES {
            self.clear();
        }
        let span = (self.ids.len() as u32, ids.len() as u32);
        self.ids.extend_from_slice(ids);
        span
    }
}

thread_local! {
    static CACHE: RefCell<PieceCache> = RefCell::new(PieceCache::default());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Vocabulary: 256 bytes + "ab", "abc", "aa", "bc".
    fn toy() -> Bpe {
        let mut tokens: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        let id = |t: &[u8], toks: &Vec<Vec<u8>>| toks.iter().position(|x| x == t).unwrap() as u32;
        tokens.push(b"ab".to_vec()); // 256
        tokens.push(b"abc".to_vec()); // 257
        tokens.push(b"aa".to_vec()); // 258
        tokens.push(b"bc".to_vec()); // 259
        let merges = vec![
            (id(b"a", &tokens), id(b"b", &tokens), 256),
            (256, id(b"c", &tokens), 257),
            (id(b"a", &tokens), id(b"a", &tokens), 258),
            (id(b"b", &tokens), id(b"c", &tokens), 259),
        ];
        let entries = tokens.into_iter().map(|t| (bytes_to_token(&t), t.into_boxed_slice())).collect();
        Bpe::from_entries(entries, &merges, PreTokenizer::Gpt2, BpeOptions::default()).unwrap()
    }

    fn enc(m: &Bpe, s: &str) -> Vec<u32> {
        let mut out = Vec::new();
        m.encode_text(s, &mut out).unwrap();
        out
    }

    #[test]
    fn merges_by_rank_leftmost() {
        let m = toy();
        assert_eq!(enc(&m, "abc"), [257]);
        assert_eq!(enc(&m, "aaa"), [258, 97]);
        assert_eq!(enc(&m, "aabc"), [97, 257]);
        assert_eq!(enc(&m, "xbc"), [120, 259]);
    }

    #[test]
    fn heap_and_scan_agree() {
        let m = toy();
        let long: String = "aabcabcbcaaab".repeat(40);
        let mut scratch = Scratch::default();
        let mut a = Vec::new();
        m.merge_piece(long.as_bytes(), &mut a, &mut scratch);
        let mut syms: Vec<u32> = long.bytes().map(|b| b as u32).collect();
        m.merge_scan(&mut syms, &mut Vec::new());
        assert_eq!(a, syms);
    }

    #[test]
    fn small_key_holds_each_byte_and_the_length() {
        let bytes: Vec<u8> = (0..15u8).map(|i| i.wrapping_mul(37) ^ 0xA5).collect();
        for n in 0..16 {
            let mut want = [0u8; 16];
            want[..n].copy_from_slice(&bytes[..n]);
            want[15] = n as u8;
            assert_eq!(small_key(&bytes[..n]), u128::from_le_bytes(want), "{n} bytes");
        }
    }

    #[test]
    fn round_trip_bytes() {
        let m = toy();
        for s in ["", "héllo 👩‍👩‍👧 wörld\r\n\t  x", "\u{0}\u{1f}"] {
            let ids = enc(&m, s);
            let out: Vec<u8> = ids.iter().flat_map(|&id| m.token_bytes(id).unwrap().to_vec()).collect();
            assert_eq!(out, s.as_bytes());
        }
        assert!(m.token_bytes(9999).is_none());
    }
}
