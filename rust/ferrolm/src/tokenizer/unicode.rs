//! Unicode character classes for the byte-level pre-tokenizers: letter (`\p{L}`), number
//! (`\p{N}`), white space (`\s`, the `White_Space` property) or other; o200k's table splits
//! letters by case and adds marks.
//!
//! The tables are built once from `regex-syntax`'s Unicode data, the same data the regex
//! engines use, so the hand-written pre-tokenizers classify every code point exactly as the
//! GPT-2 / cl100k / Qwen2 / o200k regular expressions do.

use std::sync::OnceLock;

/// Neither a letter, a number nor white space (punctuation, symbols, controls, and marks but
/// in o200k's table).
pub const OTHER: u8 = 0;
/// `\s`: a code point with the Unicode `White_Space` property.
pub const SPACE: u8 = 1;
/// `\p{L}`: any letter.
pub const LETTER: u8 = 2;
/// `\p{N}`: any number (decimal digits, letter numbers, other numbers).
pub const NUMBER: u8 = 3;

/// o200k's finer letter classes (its table has no `LETTER`): `\p{Lu}` and `\p{Lt}`.
pub const UPPER: u8 = 4;
/// o200k's `\p{Ll}`.
pub const LOWER: u8 = 5;
/// o200k's `\p{Lm}` and `\p{Lo}`: letters without case, in both of its case classes.
pub const CASELESS: u8 = 6;
/// o200k's `\p{M}`: marks, in both case classes but not letters (so also a word's prefix).
pub const MARK: u8 = 7;

/// Class lookup tables: one byte per code point of the Basic Multilingual Plane, and sorted
/// ranges for the supplementary planes (rare in text, so a binary search is fine there).
pub struct Classes {
    /// The ASCII part of `bmp` again, where English text is looked up.
    ascii: [u8; 128],
    bmp: Box<[u8]>,
    astral: Vec<(u32, u32, u8)>,
}

impl Classes {
    /// The GPT-2 and cl100k tables (`SPACE`, `LETTER`, `NUMBER`), built on first use (a few
    /// milliseconds).
    pub fn get() -> &'static Classes {
        static TABLES: OnceLock<Classes> = OnceLock::new();
        TABLES.get_or_init(|| Classes::build(&[(r"\s", SPACE), (r"\p{L}", LETTER), (r"\p{N}", NUMBER)]))
    }

    /// The o200k tables: `SPACE`, `NUMBER` and letters split by case (`UPPER`, `LOWER`,
    /// `CASELESS`), and `MARK`.
    pub fn o200k() -> &'static Classes {
        static TABLES: OnceLock<Classes> = OnceLock::new();
        TABLES.get_or_init(|| {
            Classes::build(&[
                (r"\s", SPACE),
                (r"\p{N}", NUMBER),
                (r"[\p{Lu}\p{Lt}]", UPPER),
                (r"\p{Ll}", LOWER),
                (r"[\p{Lm}\p{Lo}]", CASELESS),
                (r"\p{M}", MARK),
            ])
        })
    }

    /// Tables from disjoint one-class patterns and their classes (`OTHER` elsewhere).
    fn build(classes: &[(&str, u8)]) -> Classes {
        let mut bmp = vec![OTHER; 0x10000].into_boxed_slice();
        let mut astral = Vec::new();
        for &(pattern, class) in classes {
            for (lo, hi) in class_ranges(pattern) {
                for cp in lo..=hi.min(0xFFFF) {
                    bmp[cp as usize] = class;
                }
                if hi > 0xFFFF {
                    astral.push((lo.max(0x10000), hi, class));
                }
            }
        }
        astral.sort_unstable();
        let ascii = std::array::from_fn(|b| bmp[b]);
        Classes { ascii, bmp, astral }
    }

    /// The class of code point `cp`.
    #[inline]
    pub fn of(&self, cp: u32) -> u8 {
        if cp < 0x10000 {
            self.bmp[cp as usize]
        } else {
            match self.astral.binary_search_by(|&(lo, hi, _)| {
                if hi < cp {
                    std::cmp::Ordering::Less
                } else if lo > cp {
                    std::cmp::Ordering::Greater
                } else {
                    std::cmp::Ordering::Equal
                }
            }) {
                Ok(i) => self.astral[i].2,
                Err(_) => OTHER,
            }
        }
    }

    /// The class and byte length of the character starting at byte `i` of valid UTF-8 `s`.
    #[inline(always)]
    pub fn at(&self, s: &[u8], i: usize) -> (u8, usize) {
        let b0 = s[i];
        if b0 < 0x80 {
            return (self.ascii[b0 as usize], 1);
        }
        let (cp, len) = decode_utf8(s, i);
        (self.of(cp), len)
    }
}

/// Decodes the (valid, non-ASCII) UTF-8 character starting at byte `i`: (code point, length).
#[inline(always)]
pub fn decode_utf8(s: &[u8], i: usize) -> (u32, usize) {
    let b0 = s[i] as u32;
    if b0 < 0xE0 {
        (((b0 & 0x1F) << 6) | (s[i + 1] as u32 & 0x3F), 2)
    } else if b0 < 0xF0 {
        (((b0 & 0x0F) << 12) | ((s[i + 1] as u32 & 0x3F) << 6) | (s[i + 2] as u32 & 0x3F), 3)
    } else {
        let cp = ((b0 & 0x07) << 18)
            | ((s[i + 1] as u32 & 0x3F) << 12)
            | ((s[i + 2] as u32 & 0x3F) << 6)
            | (s[i + 3] as u32 & 0x3F);
        (cp, 4)
    }
}

/// Whether `c` is a word character, regex `\w` (letters, marks, decimal digits, connector
/// punctuation, joiners), as Hugging Face's `single_word` added tokens test it.
pub fn is_word_char(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_alphanumeric() || c == '_';
    }
    static WORD: OnceLock<Vec<(u32, u32)>> = OnceLock::new();
    let ranges = WORD.get_or_init(|| class_ranges(r"\w"));
    let cp = c as u32;
    let i = ranges.partition_point(|&(_, hi)| hi < cp); // the first range that does not end before cp
    ranges.get(i).is_some_and(|&(lo, _)| lo <= cp)
}

/// The code point ranges of a one-class regex such as `\p{L}`, from regex-syntax's tables.
fn class_ranges(pattern: &str) -> Vec<(u32, u32)> {
    use regex_syntax::hir::{Class, HirKind};
    let hir = regex_syntax::Parser::new().parse(pattern).expect("built-in class pattern parses");
    match hir.kind() {
        HirKind::Class(Class::Unicode(class)) => {
            class.ranges().iter().map(|r| (r.start() as u32, r.end() as u32)).collect()
        }
        _ => unreachable!("{pattern} is a Unicode class"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_agree_with_examples() {
        let c = Classes::get();
        assert_eq!(c.of('a' as u32), LETTER);
        assert_eq!(c.of('é' as u32), LETTER);
        assert_eq!(c.of('中' as u32), LETTER);
        assert_eq!(c.of('٣' as u32), NUMBER);
        assert_eq!(c.of('½' as u32), NUMBER);
        assert_eq!(c.of(0x3000), SPACE);
        assert_eq!(c.of(0x85), SPACE);
        assert_eq!(c.of(0x1C), OTHER);
        assert_eq!(c.of(0x200B), OTHER);
        assert_eq!(c.of('😀' as u32), OTHER);
        assert_eq!(c.of(0x20000), LETTER);
        assert_eq!(c.of(0x1D7CE), NUMBER);
        for b in 0..128u8 {
            assert_eq!(c.at(&[b], 0), (c.of(b as u32), 1), "byte {b}");
        }
        let o = Classes::o200k();
        for (ch, class) in [
            ('A', UPPER),
            ('ǅ', UPPER), // Lt
            ('a', LOWER),
            ('ß', LOWER),
            ('ʰ', CASELESS), // Lm
            ('中', CASELESS),
            ('\u{301}', MARK),
            ('٣', NUMBER),
            ('\u{3000}', SPACE),
            ('!', OTHER),
            ('😀', OTHER),
        ] {
            assert_eq!(o.of(ch as u32), class, "{ch:?}");
        }
    }
}
