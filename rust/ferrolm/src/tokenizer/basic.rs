//! BERT's basic tokenization, ahead of WordPiece: the normalizer (control-character cleanup,
//! white space to plain spaces, spaces around CJK ideographs, accent stripping by NFD and mark
//! removal, lowercasing) and the pre-tokenizer (split on white space, punctuation on its own).
//!
//! The character classes are those of Hugging Face's `BertNormalizer` / `BertPreTokenizer`
//! (the `unicode_categories` tables and Rust's `char::is_whitespace`), so that both libraries
//! cut text identically. Every output character remembers the index of the input character it
//! came from, which gives the tokens' offsets in the original text.

use unicode_categories::UnicodeCategories;
use unicode_normalization::char::{canonical_combining_class, decompose_canonical};

/// Hugging Face's `BertNormalizer` options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BertNormalizer {
    /// Remove control characters and turn every kind of white space into `' '`.
    pub clean_text: bool,
    /// Put spaces around CJK ideographs so that each becomes a word.
    pub handle_chinese_chars: bool,
    /// Strip accents (NFD, then drop non-spacing marks); `None` follows `lowercase`.
    pub strip_accents: Option<bool>,
    /// Lowercase every character.
    pub lowercase: bool,
}

impl Default for BertNormalizer {
    fn default() -> Self {
        BertNormalizer { clean_text: true, handle_chinese_chars: true, strip_accents: None, lowercase: true }
    }
}

/// BERT's white space: `\t \n \r` and Unicode white space.
#[inline]
fn is_whitespace(c: char) -> bool {
    c.is_whitespace()
}

/// BERT's control characters (removed by `clean_text`): Unicode "other" categories, except the
/// three white-space controls.
#[inline]
fn is_control(c: char) -> bool {
    !matches!(c, '\t' | '\n' | '\r') && c.is_other()
}

/// CJK ideograph blocks that BERT splits into single-character words.
#[inline]
pub(crate) fn is_chinese_char(c: char) -> bool {
    matches!(c as u32,
        0x4E00..=0x9FFF | 0x3400..=0x4DBF | 0x20000..=0x2A6DF | 0x2A700..=0x2B73F
        | 0x2B740..=0x2B81F | 0x2B920..=0x2CEAF | 0xF900..=0xFAFF | 0x2F800..=0x2FA1F)
}

/// BERT's punctuation: ASCII punctuation (which includes symbols like `$` and `^`) and Unicode P*.
#[inline]
pub fn is_punctuation(c: char) -> bool {
    c.is_ascii_punctuation() || c.is_punctuation()
}

impl BertNormalizer {
    /// Normalizes `text`, appending (character, index of the source character in `text`).
    pub fn normalize(&self, text: &str, out: &mut Vec<(char, u32)>) {
        let strip = self.strip_accents.unwrap_or(self.lowercase);
        let start = out.len();
        for (i, c) in text.chars().enumerate() {
            let i = i as u32;
            if self.clean_text {
                if c == '\0' || c == '\u{FFFD}' || is_control(c) {
                    continue;
                }
                if is_whitespace(c) {
                    out.push((' ', i));
                    continue;
                }
            }
            if self.handle_chinese_chars && is_chinese_char(c) {
                // Spaced out, and still decomposed when stripping: compatibility ideographs
                // (U+F900 → U+8C48) have canonical decompositions.
                out.push((' ', i));
                if strip {
                    decompose_canonical(c, |d| out.push((d, i)));
                } else {
                    out.push((c, i));
                }
                out.push((' ', i));
            } else if strip {
                decompose_canonical(c, |d| out.push((d, i)));
            } else {
                out.push((c, i));
            }
        }
        if strip {
            canonical_order(&mut out[start..]);
            let mut w = start;
            for r in start..out.len() {
                if !out[r].0.is_mark_nonspacing() {
                    out[w] = out[r];
                    w += 1;
                }
            }
            out.truncate(w);
        }
        if self.lowercase
            && out[start..].iter().any(|&(c, _)| c.to_lowercase().len() != 1 || c.to_lowercase().next() != Some(c))
        {
            let lowered: Vec<(char, u32)> =
                out.drain(start..).flat_map(|(c, i)| c.to_lowercase().map(move |l| (l, i))).collect();
            out.extend(lowered);
        }
    }
}

/// NFD's canonical ordering: within each run of combining characters, a stable sort by
/// combining class.
fn canonical_order(chars: &mut [(char, u32)]) {
    let mut i = 0;
    while i < chars.len() {
        if canonical_combining_class(chars[i].0) == 0 {
            i += 1;
            continue;
        }
        let mut j = i;
        while j < chars.len() && canonical_combining_class(chars[j].0) != 0 {
            j += 1;
        }
        chars[i..j].sort_by_key(|&(c, _)| canonical_combining_class(c));
        i = j;
    }
}

/// BERT's pre-tokenizer over normalized characters: calls `word(start, end)` for each word
/// (indices into `chars`); white space separates words and is dropped, each punctuation
/// character is a word of its own.
pub fn split_words(chars: &[(char, u32)], mut word: impl FnMut(usize, usize)) {
    let mut start = None;
    for (i, &(c, _)) in chars.iter().enumerate() {
        if is_whitespace(c) {
            if let Some(s) = start.take() {
                word(s, i);
            }
        } else if is_punctuation(c) {
            if let Some(s) = start.take() {
                word(s, i);
            }
            word(i, i + 1);
        } else if start.is_none() {
            start = Some(i);
        }
    }
    if let Some(s) = start {
        word(s, chars.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(n: &BertNormalizer, text: &str) -> Vec<String> {
        let mut chars = Vec::new();
        n.normalize(text, &mut chars);
        let mut out = Vec::new();
        split_words(&chars, |a, b| out.push(chars[a..b].iter().map(|&(c, _)| c).collect()));
        out
    }

    #[test]
    fn bert_basic_tokenization() {
        let n = BertNormalizer::default();
        assert_eq!(words(&n, "Héllo, WORLD!\t中文 x\u{0}y"), ["hello", ",", "world", "!", "中", "文", "xy"]);
        let cased = BertNormalizer { lowercase: false, ..Default::default() };
        assert_eq!(words(&cased, "Héllo"), ["Héllo"]);
        let strip = BertNormalizer { lowercase: false, strip_accents: Some(true), ..Default::default() };
        assert_eq!(words(&strip, "Héllo"), ["Hello"]);
    }

    #[test]
    fn alignment_points_to_source_chars() {
        let mut chars = Vec::new();
        BertNormalizer::default().normalize("aÉ中", &mut chars);
        assert_eq!(chars, [('a', 0), ('e', 1), (' ', 2), ('中', 2), (' ', 2)]);
    }
}
