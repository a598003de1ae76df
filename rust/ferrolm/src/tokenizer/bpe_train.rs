//! Learning BPE merges from word counts, incrementally.
//!
//! Pairs of adjacent symbols are counted once (in parallel). Each step takes the most frequent
//! pair from a max-heap, rewrites only the words that contain it (the heap entry carries their
//! indices) and applies the resulting count changes to the neighbouring pairs; new pairs enter
//! the heap with the words they occur in. Heap entries whose count went stale are re-queued
//! with the current count when they surface. Ties go to the smallest (left id, right id) pair.
//! These are exactly the rules of Hugging Face's `BpeTrainer`, so the same word counts give
//! the same merges, whatever the number of threads.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::atomic::{self, AtomicBool};

use rayon::prelude::*;
use rustc_hash::FxHashMap;

use crate::{Error, Result};

/// Tokens being built by training (as bytes), with their reverse index and the merges so far.
#[derive(Default, Debug)]
pub(crate) struct MergeTable {
    tokens: Vec<Vec<u8>>,
    ids: FxHashMap<Vec<u8>, u32>,
    /// (left, right, merged) ids in the order learned.
    pub merges: Vec<(u32, u32, u32)>,
}

impl MergeTable {
    /// The id of `token`, adding it if new.
    pub fn intern(&mut self, token: &[u8]) -> u32 {
        if let Some(&id) = self.ids.get(token) {
            return id;
        }
        let id = self.tokens.len() as u32;
        self.tokens.push(token.to_vec());
        self.ids.insert(token.to_vec(), id);
        id
    }

    /// The id of `token`, if present.
    pub fn id(&self, token: &[u8]) -> Option<u32> {
        self.ids.get(token).copied()
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// The tokens in id order.
    pub fn into_tokens(self) -> Vec<Vec<u8>> {
        self.tokens
    }

    /// The tokens in id order, by reference.
    #[cfg(test)]
    pub fn tokens(&self) -> &[Vec<u8>] {
        &self.tokens
    }
}

#[inline(always)]
fn key(a: u32, b: u32) -> u64 {
    ((a as u64) << 32) | b as u64
}

/// A candidate merge: its count when queued and the words it was seen in.
struct Candidate {
    count: i64,
    pair: u64,
    words: Vec<u32>,
}

impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.count == other.count && self.pair == other.pair
    }
}
impl Eq for Candidate {}
impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Candidate {
    /// Max-heap order: higher count first, then the smaller pair.
    fn cmp(&self, other: &Self) -> Ordering {
        self.count.cmp(&other.count).then_with(|| other.pair.cmp(&self.pair))
    }
}

/// Learns merges until `table` holds `vocab_size` tokens or no pair reaches `min_frequency`.
/// `words` are symbol-id sequences with their corpus `counts`. With `prefix` (WordPiece's
/// `##`), the right part of a merge loses its prefix before concatenation. Setting `stop`
/// ends it with [`Error::Interrupted`].
pub fn learn_merges(
    table: &mut MergeTable,
    mut words: Vec<Vec<u32>>,
    counts: &[u64],
    vocab_size: usize,
    min_frequency: u64,
    prefix: Option<&[u8]>,
    stop: &AtomicBool,
) -> Result<()> {
    let (mut pair_counts, occurrences): CountMaps = words
        .par_iter()
        .enumerate()
        .fold(
            || (FxHashMap::default(), FxHashMap::default()),
            |(mut counts_acc, mut where_acc): CountMaps, (i, word)| {
                for w in word.windows(2) {
                    let k = key(w[0], w[1]);
                    *counts_acc.entry(k).or_insert(0) += counts[i] as i64;
                    let list: &mut Vec<u32> = where_acc.entry(k).or_default();
                    if list.last() != Some(&(i as u32)) {
                        list.push(i as u32);
                    }
                }
                (counts_acc, where_acc)
            },
        )
        .reduce(
            || (FxHashMap::default(), FxHashMap::default()),
            // Fold the smaller maps into the larger; counts add up and word lists are disjoint.
            |x, y| {
                if x.0.len() >= y.0.len() {
                    merge_counts(x, y)
                } else {
                    merge_counts(y, x)
                }
            },
        );

    let mut heap: BinaryHeap<Candidate> = occurrences
        .into_iter()
        .filter_map(|(pair, words)| {
            let count = pair_counts[&pair];
            (count > 0).then_some(Candidate { count, pair, words })
        })
        .collect();

    let mut changes: Vec<(u64, i32, u32)> = Vec::new();
    let mut fresh: FxHashMap<u64, Vec<u32>> = FxHashMap::default();
    while table.len() < vocab_size {
        check_stop(stop)?;
        let Some(mut top) = heap.pop() else { break };
        let current = pair_counts[&top.pair];
        if top.count != current {
            top.count = current;
            heap.push(top);
            continue;
        }
        if top.count < 1 || i64::try_from(min_frequency).unwrap_or(i64::MAX) > top.count {
            break;
        }
        let (a, b) = ((top.pair >> 32) as u32, top.pair as u32);
        let mut merged = table.tokens[a as usize].clone();
        let right = &table.tokens[b as usize];
        match prefix {
            Some(p) if right.starts_with(p) => merged.extend_from_slice(&right[p.len()..]),
            _ => merged.extend_from_slice(right),
        }
        let new_id = table.intern(&merged);
        table.merges.push((a, b, new_id));

        changes.clear();
        for &w in &top.words {
            merge_word(&mut words[w as usize], a, b, new_id, w, &mut changes);
        }
        for &(pair, delta, w) in &changes {
            *pair_counts.entry(pair).or_insert(0) += delta as i64 * counts[w as usize] as i64;
            if delta > 0 {
                let list = fresh.entry(pair).or_default();
                if list.last() != Some(&w) {
                    list.push(w);
                }
            }
        }
        for (pair, words) in fresh.drain() {
            let count = pair_counts[&pair];
            if count > 0 {
                heap.push(Candidate { count, pair, words });
            }
        }
    }
    Ok(())
}

/// [`Error::Interrupted`] once `stop` is set (a training's [`TrainerConfig::stop`]).
///
/// [`TrainerConfig::stop`]: super::TrainerConfig::stop
pub(crate) fn check_stop(stop: &AtomicBool) -> Result<()> {
    match stop.load(atomic::Ordering::Relaxed) {
        true => Err(Error::Interrupted),
        false => Ok(()),
    }
}

type CountMaps = (FxHashMap<u64, i64>, FxHashMap<u64, Vec<u32>>);

fn merge_counts((mut c1, mut w1): CountMaps, (c2, w2): CountMaps) -> CountMaps {
    for (k, v) in c2 {
        *c1.entry(k).or_insert(0) += v;
    }
    for (k, v) in w2 {
        w1.entry(k).or_default().extend(v);
    }
    (c1, w1)
}

/// Replaces every non-overlapping `a b` (left to right) in `word` by `new`, recording the
/// pair-count changes around each replacement (as Hugging Face's `Word::merge`).
fn merge_word(word: &mut Vec<u32>, a: u32, b: u32, new: u32, w: u32, changes: &mut Vec<(u64, i32, u32)>) {
    let n = word.len();
    let mut out = 0;
    let mut i = 0;
    while i < n {
        if word[i] == a && i + 1 < n && word[i + 1] == b {
            if out > 0 {
                let prev = word[out - 1];
                changes.push((key(prev, a), -1, w));
                changes.push((key(prev, new), 1, w));
            }
            word[out] = new;
            out += 1;
            i += 2;
            if i < n {
                let next = word[i];
                changes.push((key(b, next), -1, w));
                changes.push((key(new, next), 1, w));
            }
        } else {
            word[out] = word[i];
            out += 1;
            i += 1;
        }
    }
    word.truncate(out);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hugging Face's own `test_train` example: same counts, same vocabulary and merges.
    #[test]
    fn matches_hf_trainer_example() {
        let corpus = [
            ("roses", 1),
            ("are", 2),
            ("red", 1),
            ("voilets", 1),
            ("blue", 1),
            ("BERT", 1),
            ("is", 2),
            ("big", 1),
            ("and", 1),
            ("so", 1),
            ("GPT-2", 1),
        ];
        let mut table = MergeTable::default();
        let mut alphabet: Vec<char> = corpus.iter().flat_map(|(w, _)| w.chars()).collect();
        alphabet.sort();
        alphabet.dedup();
        for c in &alphabet {
            table.intern(c.to_string().as_bytes());
        }
        let words = corpus.iter().map(|(w, _)| w.bytes().map(|b| table.id(&[b]).unwrap()).collect()).collect();
        let counts: Vec<u64> = corpus.iter().map(|&(_, n)| n).collect();
        learn_merges(&mut table, words, &counts, 30000, 2, None, &AtomicBool::new(false)).unwrap();
        let learned: Vec<&[u8]> = table.tokens()[alphabet.len()..].iter().map(|t| t.as_slice()).collect();
        assert_eq!(learned, [b"re".as_slice(), b"are", b"is"]);
        assert_eq!(table.merges, [(17, 11, 22), (8, 22, 23), (13, 18, 24)]);
    }

    #[test]
    fn merge_word_changes() {
        let mut word = vec![0, 1, 2, 2, 3];
        let mut changes = Vec::new();
        merge_word(&mut word, 2, 2, 4, 0, &mut changes);
        assert_eq!(word, [0, 1, 4, 3]);
        assert_eq!(changes, [(key(1, 2), -1, 0), (key(1, 4), 1, 0), (key(2, 3), -1, 0), (key(4, 3), 1, 0)]);
    }
}
