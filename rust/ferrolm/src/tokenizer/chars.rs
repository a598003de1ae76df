//! Character-level tokenizer (nanoGPT's `shakespeare_char`): one id per Unicode character, ids
//! in code point order. Characters outside the vocabulary are an error, or the unknown token
//! when the vocabulary has one (it does when training had to leave rare characters out).

use rustc_hash::FxHashMap;

use crate::{bail, Result};

/// A character vocabulary.
#[derive(Clone, Debug)]
pub struct Chars {
    chars: Vec<Option<char>>,
    ids: FxHashMap<char, u32>,
    /// Direct lookup for ASCII (`u32::MAX` when absent).
    ascii: Box<[u32; 128]>,
    unk: Option<u32>,
    unk_token: Option<String>,
}

impl Chars {
    /// A vocabulary from (character, id) pairs; `unk` is the unknown token's (string, id).
    pub fn new(entries: Vec<(char, u32)>, unk: Option<(String, u32)>) -> Result<Self> {
        let ids = entries.iter().map(|&(_, id)| id).chain(unk.iter().map(|(_, id)| *id));
        let size = super::id_table_size(ids, entries.len() + usize::from(unk.is_some()))?;
        let mut chars = vec![None; size];
        let mut ids = FxHashMap::default();
        let mut ascii = Box::new([u32::MAX; 128]);
        for (c, id) in entries {
            if chars[id as usize].is_some() || ids.contains_key(&c) {
                bail!(Format, "character vocabulary repeats id {id} or character {c:?}");
            }
            chars[id as usize] = Some(c);
            ids.insert(c, id);
            if (c as u32) < 128 {
                ascii[c as usize] = id;
            }
        }
        Ok(Chars { chars, ids, ascii, unk: unk.as_ref().map(|u| u.1), unk_token: unk.map(|u| u.0) })
    }

    /// The vocabulary of `text`: every distinct character, sorted, at most `max_chars` of them
    /// (the most frequent; the rest map to an unknown token). The unknown token is added after
    /// them, or is `unk_id` when the tokenizer already has it (a special `[UNK]`, which then
    /// also stands for characters never seen in training).
    pub fn from_counts(
        counts: &FxHashMap<char, u64>,
        first_id: u32,
        max_chars: Option<usize>,
        unk_token: &str,
        unk_id: Option<u32>,
    ) -> Result<Self> {
        let mut all: Vec<(char, u64)> = counts.iter().map(|(&c, &n)| (c, n)).collect();
        let mut unk = unk_id.map(|_| unk_token.to_string());
        if let Some(max) = max_chars {
            if all.len() > max {
                let keep = if unk_id.is_some() { max } else { max.saturating_sub(1) };
                if keep < 1 {
                    bail!(Argument, "vocab_size leaves room for {max} characters; need at least 2");
                }
                all.sort_unstable_by_key(|&(c, n)| (std::cmp::Reverse(n), c));
                all.truncate(keep);
                unk = Some(unk_token.to_string());
            }
        }
        all.sort_unstable_by_key(|&(c, _)| c);
        let n = all.len() as u32;
        let entries = all.into_iter().enumerate().map(|(i, (c, _))| (c, first_id + i as u32)).collect();
        Self::new(entries, unk.map(|u| (u, unk_id.unwrap_or(first_id + n))))
    }

    /// Number of ids (one past the largest).
    pub fn len(&self) -> usize {
        self.chars.len()
    }

    /// Whether the vocabulary is empty.
    pub fn is_empty(&self) -> bool {
        self.chars.is_empty()
    }

    /// The unknown token, if any: (string, id).
    pub fn unk(&self) -> Option<(&str, u32)> {
        Some((self.unk_token.as_deref()?, self.unk?))
    }

    /// (character, id) pairs in id order.
    pub fn entries(&self) -> impl Iterator<Item = (char, u32)> + '_ {
        self.chars.iter().enumerate().filter_map(|(i, c)| c.map(|c| (c, i as u32)))
    }

    /// The token string of `id`.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        match self.chars.get(id as usize) {
            Some(Some(c)) => Some(c.to_string()),
            _ if self.unk == Some(id) => self.unk_token.clone(),
            _ => None,
        }
    }

    /// The id of a one-character token string (or the unknown token's string).
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        let mut it = token.chars();
        match (it.next(), it.next()) {
            (Some(c), None) => self.ids.get(&c).copied(),
            _ if self.unk_token.as_deref() == Some(token) => self.unk,
            _ => None,
        }
    }

    /// Encodes ordinary text, one id per character.
    pub fn encode_text(&self, text: &str, out: &mut Vec<u32>) -> Result<()> {
        out.reserve(text.len());
        for c in text.chars() {
            let id =
                if (c as u32) < 128 { self.ascii[c as usize] } else { self.ids.get(&c).copied().unwrap_or(u32::MAX) };
            if id != u32::MAX {
                out.push(id);
            } else if let Some(unk) = self.unk {
                out.push(unk);
            } else {
                bail!(Argument, "character {c:?} (U+{:04X}) is not in this character tokenizer's vocabulary", c as u32);
            }
        }
        Ok(())
    }

    /// Appends the text of ordinary token `id`; false (nothing appended) for an id it lacks.
    pub fn decode_into(&self, id: u32, out: &mut String) -> bool {
        match self.chars.get(id as usize) {
            Some(Some(c)) => out.push(*c),
            _ if self.unk == Some(id) => out.push_str(self.unk_token.as_deref().unwrap_or_default()),
            _ => return false,
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn char_round_trip_and_unknown() {
        let mut counts = FxHashMap::default();
        for c in "hello wörld".chars() {
            *counts.entry(c).or_insert(0) += 1;
        }
        let m = Chars::from_counts(&counts, 0, None, "<unk>", None).unwrap();
        let mut ids = Vec::new();
        m.encode_text("hello", &mut ids).unwrap();
        let mut s = String::new();
        for id in &ids {
            assert!(m.decode_into(*id, &mut s));
        }
        assert_eq!(s, "hello");
        assert!(m.encode_text("z", &mut ids).unwrap_err().to_string().contains("'z'"));
        let small = Chars::from_counts(&counts, 0, Some(3), "<unk>", None).unwrap();
        let mut ids = Vec::new();
        small.encode_text("lz", &mut ids).unwrap();
        assert_eq!(ids, [1, 2]); // kept: the two most frequent, " " and "l"
    }
}
