//! Unicode NFC with each output character aligned to an input character, as Hugging Face's
//! `NFC` normalizer aligns them (GPT-NeoX/Pythia and Qwen2 byte-level BPEs use it), so token
//! offsets point at the original text. Each character carries a change count through the
//! steps, as in Hugging Face: 0, or +1 for each extra part of a decomposition; canonical
//! reordering moves characters with their counts; a composition adds its parts' counts, minus
//! one. The output then walks the input: a character with a count of −n takes the next n + 1
//! input characters (aligned to the first), one with +1 is aligned where the one before it is.
//!
//! The tables are those of the `unicode-normalization` crate (Unicode 18). Hugging Face's are
//! older: about 190 combining marks (U+07FD, U+0C3C TELUGU SIGN NUKTA, ...) have another class
//! there, so text holding them can normalize, and encode, differently.

use unicode_normalization::char::{canonical_combining_class, compose, decompose_canonical};
use unicode_normalization::{is_nfc_quick, IsNormalized};

/// `text` in NFC, and for each of its bytes the byte range in `text` of the character it is
/// aligned to; None when `text` is already NFC (the common case, checked quickly).
pub fn nfc_aligned(text: &str) -> Option<(String, Vec<(usize, usize)>)> {
    if is_nfc_quick(text.chars()) == IsNormalized::Yes {
        return None;
    }
    let mut chars: Vec<(char, i32)> = Vec::with_capacity(text.len());
    for c in text.chars() {
        let first = chars.len();
        decompose_canonical(c, |d| chars.push((d, i32::from(chars.len() > first))));
    }
    reorder_marks(&mut chars);
    let composed = recompose(&chars);
    if composed.iter().map(|&(c, _)| c).eq(text.chars()) {
        return None; // NFC already, where the quick check could not tell
    }
    let input: Vec<(usize, usize)> = text.char_indices().map(|(at, c)| (at, at + c.len_utf8())).collect();
    let (mut out, mut origin) = (String::with_capacity(text.len()), Vec::with_capacity(text.len()));
    let mut next: usize = 0; // the next input character to take
    for (c, change) in composed {
        let at = if change > 0 { next.saturating_sub(1) } else { next };
        if change <= 0 {
            next += 1 + change.unsigned_abs() as usize;
        }
        out.push(c);
        origin.extend(std::iter::repeat_n(input[at.min(input.len() - 1)], c.len_utf8()));
    }
    Some((out, origin))
}

/// Canonical ordering: each run of combining marks sorted (stably) by combining class.
fn reorder_marks(chars: &mut [(char, i32)]) {
    let mut i = 0;
    while i < chars.len() {
        let run = chars[i..].iter().take_while(|&&(c, _)| canonical_combining_class(c) != 0).count();
        chars[i..i + run].sort_by_key(|&(c, _)| canonical_combining_class(c));
        i += run.max(1);
    }
}

/// Canonical composition: a character joins the last starter unless blocked (a character
/// between them of class 0 or of a class at least its own).
fn recompose(chars: &[(char, i32)]) -> Vec<(char, i32)> {
    let mut out: Vec<(char, i32)> = Vec::with_capacity(chars.len());
    let mut starter: Option<usize> = None;
    let mut last_class: Option<u8> = None; // of the last character kept after the starter
    for &(c, change) in chars {
        let class = canonical_combining_class(c);
        if let Some(s) = starter {
            let blocked = last_class.is_some_and(|last| last == 0 || last >= class);
            if !blocked {
                if let Some(joined) = compose(out[s].0, c) {
                    out[s] = (joined, out[s].1 + change - 1);
                    continue;
                }
            }
        }
        if class == 0 {
            starter = Some(out.len());
            last_class = None;
        } else {
            last_class = Some(class);
        }
        out.push((c, change));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use unicode_normalization::UnicodeNormalization;

    #[test]
    fn equals_the_crates_nfc_with_hugging_faces_alignment() {
        // (text, the original character each output character is aligned to), checked
        // against Hugging Face's offsets.
        let cases: [(&str, &[usize]); 7] = [
            ("cafe\u{301} x", &[0, 1, 2, 3, 5, 6]),
            ("e\u{301}\u{302}", &[0, 2]),
            ("a\u{323}\u{302}b", &[0, 3]),
            ("\u{1100}\u{1161}\u{11a8}", &[0]),
            ("q\u{307}\u{323}", &[0, 1, 2]),
            ("\u{344}", &[0, 0]),
            ("\u{e9}\u{323}\u{323}", &[0, 2, 2]),
        ];
        for (text, aligned) in cases {
            let (out, origin) = nfc_aligned(text).expect("not NFC");
            assert_eq!(out, text.nfc().collect::<String>(), "{text:?}");
            let char_of = |byte: usize| text[..byte].chars().count();
            let got: Vec<usize> = out.char_indices().map(|(at, _)| char_of(origin[at].0)).collect();
            assert_eq!(got, aligned, "{text:?}");
        }
        assert!(nfc_aligned("already composed: café, 각").is_none());
    }

    #[test]
    fn every_code_point_and_mark_sequence_equals_the_crates_nfc() {
        let marks = ['\u{301}', '\u{323}', '\u{308}', '\u{302}', '\u{307}', '\u{b3e}', '\u{1161}', '\u{11a8}'];
        for cp in (0..0x3_0000).step_by(7) {
            let Some(c) = char::from_u32(cp) else { continue };
            for m in marks {
                let text: String = [c, m, marks[cp as usize % marks.len()]].iter().collect();
                let expected: String = text.nfc().collect();
                let got = nfc_aligned(&text).map_or(text.clone(), |(s, _)| s);
                assert_eq!(got, expected, "{text:?}");
            }
        }
    }
}
