//! Regex pre-tokenization for byte-level BPE: text is cut into pieces (words with their leading
//! space, runs of digits, punctuation, white space) and BPE never merges across pieces.
//!
//! The GPT-2, GPT-4 (cl100k, also Llama 3's, and as tiktoken spells it), Qwen2 and GPT-4o (o200k)
//! patterns are implemented by hand, as small state machines that reproduce the regexes'
//! leftmost-first alternation, greedy runs, `(?!\S)` look-ahead and backtracking exactly (tested against `fancy-regex` on adversarial and random
//! text); they run several times faster than a backtracking regex engine. A user's own pattern
//! runs on `fancy-regex` with Hugging Face's `Split(behavior="Isolated")` semantics: matches and
//! the gaps between them both become pieces, so no text is ever dropped.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::unicode::{Classes, CASELESS, LETTER, LOWER, MARK, NUMBER, OTHER, SPACE, UPPER};
use crate::{bail, Result};

/// GPT-2's pattern (also Hugging Face's `ByteLevel(use_regex=True)` pre-tokenizer).
pub const GPT2_PATTERN: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

/// GPT-2's pattern as tiktoken writes it (r50k_base, p50k_base): the same language.
pub const R50K_PATTERN: &str = r"'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s";

/// GPT-4's cl100k_base pattern, as written in tokenizer.json files.
pub const CL100K_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The same language as [`CL100K_PATTERN`], in tiktoken's newer spelling (possessive quantifiers).
pub const CL100K_PATTERN_TIKTOKEN: &str =
    r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+";

/// cl100k_base's pattern as tiktoken writes it now: cl100k's, but for a white-space run that
/// reaches the end of the text, which is one piece (`\s++$`) where cl100k's gives its line breaks
/// a piece of their own.
pub const CL100K_BASE_PATTERN: &str = concat!(
    r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]",
    r"|\s+(?!\S)|\s"
);

/// [`CL100K_BASE_PATTERN`]'s language as tokenizer.json files record it: Hugging Face's regex
/// engine (Oniguruma, Ruby syntax) reads `{1,3}+` as a repetition, not a possessive count, and `$`
/// as the end of a line.
pub const CL100K_BASE_PATTERN_HF: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s+\z|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Qwen2's pattern (also Qwen2.5's and Qwen3's): cl100k's with numbers one digit at a time.
pub const QWEN2_PATTERN: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// GPT-4o's o200k_base pattern, as tiktoken writes it (words split at case changes, contractions
/// kept on their word).
pub const O200K_PATTERN: &str = concat!(
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"|\p{N}{1,3}",
    r"| ?[^\s\p{L}\p{N}]+[\r\n/]*",
    r"|\s*[\r\n]+",
    r"|\s+(?!\S)",
    r"|\s+",
);

/// The built-in patterns' names, as [`PreTokenizer::from_pattern`] takes them.
pub const PATTERN_NAMES: [&str; 5] = ["gpt2", "cl100k", "cl100k_base", "qwen2", "o200k"];

/// Which rule splits text into pieces.
#[derive(Clone, Debug)]
pub enum PreTokenizer {
    /// GPT-2's pattern, hand-written.
    Gpt2,
    /// GPT-4's cl100k pattern, hand-written.
    Cl100k,
    /// cl100k's pattern as tiktoken writes it now ([`CL100K_BASE_PATTERN`]), hand-written.
    Cl100kBase,
    /// Qwen2's pattern, hand-written.
    Qwen2,
    /// GPT-4o's o200k pattern, hand-written.
    O200k,
    /// A user's regex (fancy-regex syntax); the original pattern text is kept for saving.
    Regex(Box<fancy_regex::Regex>, String),
}

impl PreTokenizer {
    /// A pre-tokenizer from a name ([`PATTERN_NAMES`]) or a regex pattern. Patterns equal to a
    /// built-in one (in any spelling listed here) get the fast hand-written matcher.
    pub fn from_pattern(name_or_pattern: &str) -> Result<Self> {
        match name_or_pattern {
            "gpt2" | GPT2_PATTERN | R50K_PATTERN => Ok(PreTokenizer::Gpt2),
            "cl100k" | CL100K_PATTERN | CL100K_PATTERN_TIKTOKEN => Ok(PreTokenizer::Cl100k),
            "cl100k_base" | CL100K_BASE_PATTERN | CL100K_BASE_PATTERN_HF => Ok(PreTokenizer::Cl100kBase),
            "qwen2" | QWEN2_PATTERN => Ok(PreTokenizer::Qwen2),
            "o200k" | O200K_PATTERN => Ok(PreTokenizer::O200k),
            "" => bail!(Argument, "empty pre-tokenizer pattern"),
            pattern => match fancy_regex::Regex::new(pattern) {
                Ok(re) => Ok(PreTokenizer::Regex(Box::new(re), pattern.to_string())),
                Err(e) => bail!(Argument, "invalid pre-tokenizer regex {pattern:?}: {e}"),
            },
        }
    }

    /// The regex this pre-tokenizer implements (what `tokenizer.json` records).
    pub fn pattern(&self) -> &str {
        match self {
            PreTokenizer::Gpt2 => GPT2_PATTERN,
            PreTokenizer::Cl100k => CL100K_PATTERN,
            PreTokenizer::Cl100kBase => CL100K_BASE_PATTERN_HF,
            PreTokenizer::Qwen2 => QWEN2_PATTERN,
            PreTokenizer::O200k => O200K_PATTERN,
            PreTokenizer::Regex(_, p) => p,
        }
    }

    /// How this pre-tokenizer is given back to [`Self::from_pattern`]: a built-in one's name
    /// ([`PATTERN_NAMES`]), else the user's regex.
    pub fn name(&self) -> &str {
        match self {
            PreTokenizer::Gpt2 => "gpt2",
            PreTokenizer::Cl100k => "cl100k",
            PreTokenizer::Cl100kBase => "cl100k_base",
            PreTokenizer::Qwen2 => "qwen2",
            PreTokenizer::O200k => "o200k",
            PreTokenizer::Regex(_, p) => p,
        }
    }

    /// Calls `piece(start, end)` with the byte range of each piece of `text`, in order. The
    /// pieces cover the whole text. Only a user regex can fail (backtrack limit).
    #[inline]
    pub fn split(&self, text: &str, piece: impl FnMut(usize, usize)) -> Result<()> {
        self.split_until(text, &AtomicBool::new(false), piece)
    }

    /// `split`, ending with [`crate::Error::Interrupted`] once `stop` is set (by another thread).
    /// A user's regex, which finds 10–20 MB of pieces a second, looks at it between pieces; the
    /// built-in patterns (~100 MB/s) run to the end.
    #[inline]
    pub fn split_until(&self, text: &str, stop: &AtomicBool, mut piece: impl FnMut(usize, usize)) -> Result<()> {
        let s = text.as_bytes();
        match self {
            PreTokenizer::Gpt2 => {
                let c = Classes::get();
                cut(s, |i| gpt2_piece(c, s, i), piece)
            }
            PreTokenizer::Cl100k => {
                let c = Classes::get();
                cut(s, |i| cl100k_piece::<3, false>(c, s, i), piece)
            }
            PreTokenizer::Cl100kBase => {
                let c = Classes::get();
                cut(s, |i| cl100k_piece::<3, true>(c, s, i), piece)
            }
            PreTokenizer::Qwen2 => {
                let c = Classes::get();
                cut(s, |i| cl100k_piece::<1, false>(c, s, i), piece)
            }
            PreTokenizer::O200k => {
                let c = Classes::o200k();
                cut(s, |i| o200k_piece(c, s, i), piece)
            }
            PreTokenizer::Regex(re, pattern) => {
                let re = this_threads_copy(re, pattern);
                let mut last = 0;
                for m in re.find_iter(text) {
                    if stop.load(Ordering::Relaxed) {
                        return Err(crate::Error::Interrupted);
                    }
                    let m = match m {
                        Ok(m) => m,
                        Err(e) => bail!(Argument, "pre-tokenizer regex {pattern:?} failed: {e}"),
                    };
                    if m.start() > last {
                        piece(last, m.start());
                    }
                    if m.end() > m.start() {
                        piece(m.start(), m.end());
                    }
                    last = m.end();
                }
                if last < s.len() {
                    piece(last, s.len());
                }
            }
        }
        Ok(())
    }
}

/// Calls `piece` with each piece of `s` in order, `next_end(start)` giving a piece's end.
#[inline(always)]
fn cut(s: &[u8], next_end: impl Fn(usize) -> usize, mut piece: impl FnMut(usize, usize)) {
    let mut i = 0;
    while i < s.len() {
        let end = next_end(i);
        piece(i, end);
        i = end;
    }
}

/// This thread's copy of a user's regex. A regex shared by threads lends each search a cache
/// from a pool, without a lock only to the thread that used it first (the regex crate's design):
/// a model trained on the thread pool then spent 44% of Python's encoding time in that pool's
/// lock. A copy has a pool of its own; a few patterns' copies are kept per thread.
fn this_threads_copy(re: &fancy_regex::Regex, pattern: &str) -> Rc<fancy_regex::Regex> {
    const KEPT: usize = 8;
    thread_local! {
        static COPIES: RefCell<Vec<(String, Rc<fancy_regex::Regex>)>> = const { RefCell::new(Vec::new()) };
    }
    COPIES.with_borrow_mut(|copies| {
        if let Some((_, copy)) = copies.iter().find(|(p, _)| p == pattern) {
            return copy.clone();
        }
        if copies.len() == KEPT {
            copies.remove(0);
        }
        let copy = Rc::new(re.clone()); // the same program, a new pool
        copies.push((pattern.to_string(), copy.clone()));
        copy
    })
}

/// End of the run of characters whose class satisfies `keep`, from `i`.
#[inline(always)]
fn run_where(c: &Classes, s: &[u8], mut i: usize, keep: impl Fn(u8) -> bool) -> usize {
    while i < s.len() {
        let (k, len) = c.at(s, i);
        if !keep(k) {
            break;
        }
        i += len;
    }
    i
}

/// Length of a contraction suffix (`s t m d ll ve re`) right after an apostrophe at `i - 1`.
#[inline]
fn contraction(s: &[u8], i: usize, ignore_case: bool) -> Option<usize> {
    let lower = |b: u8| {
        if ignore_case {
            b.to_ascii_lowercase()
        } else {
            b
        }
    };
    let a = lower(*s.get(i)?);
    match a {
        b's' | b't' | b'm' | b'd' => return Some(1),
        _ => {}
    }
    // `(?i)s` also matches U+017F LATIN SMALL LETTER LONG S (simple case folding).
    if ignore_case && s[i..].starts_with("ſ".as_bytes()) {
        return Some(2);
    }
    let b = lower(*s.get(i + 1)?);
    match (a, b) {
        (b'l', b'l') | (b'v', b'e') | (b'r', b'e') => Some(2),
        _ => None,
    }
}

/// A white-space piece at `i`. With `line_breaks` (cl100k's and o200k's patterns) first
/// `\s*[\r\n]+`: up to the run's last line break. Then `\s+(?!\S)|\s+`: a run that is followed
/// by a non-space gives up its last character (it will lead the next piece), unless the run is
/// a single character.
#[inline]
fn space_piece(c: &Classes, s: &[u8], i: usize, line_breaks: bool) -> usize {
    let (mut j, mut last_start, mut after_newline) = (i, i, None);
    while j < s.len() {
        let (k, len) = c.at(s, j);
        if k != SPACE {
            break;
        }
        if s[j] == b'\r' || s[j] == b'\n' {
            after_newline = Some(j + 1);
        }
        last_start = j;
        j += len;
    }
    match after_newline {
        Some(end) if line_breaks => end,
        _ if j < s.len() && last_start > i => last_start,
        _ => j,
    }
}

/// `\p{N}{1,MOST}` after its first number, which ends at `i`.
#[inline]
fn numbers_up_to<const MOST: usize>(c: &Classes, s: &[u8], mut i: usize) -> usize {
    for _ in 1..MOST {
        match s.get(i).map(|_| c.at(s, i)) {
            Some((NUMBER, len)) => i += len,
            _ => break,
        }
    }
    i
}

/// ` ?[^\s\p{L}\p{N}]+` then any of the bytes `trailing`, at `i` (of class `class`), where
/// `punct` tells the classes of that run; None when it starts neither at `i` nor after a space
/// there.
#[inline]
fn punct_piece(
    c: &Classes,
    s: &[u8],
    i: usize,
    class: u8,
    punct: impl Fn(u8) -> bool,
    trailing: &[u8],
) -> Option<usize> {
    let body = if punct(class) {
        i
    } else if s[i] == b' ' && i + 1 < s.len() && punct(c.at(s, i + 1).0) {
        i + 1
    } else {
        return None;
    };
    let mut j = run_where(c, s, body, &punct);
    while j < s.len() && trailing.contains(&s[j]) {
        j += 1;
    }
    Some(j)
}

/// One piece of GPT-2's pattern starting at byte `i`; returns its end.
#[inline]
fn gpt2_piece(c: &Classes, s: &[u8], i: usize) -> usize {
    if s[i] == b'\'' {
        if let Some(n) = contraction(s, i + 1, false) {
            return i + 1 + n;
        }
    }
    // ` ?\p{L}+ | ?\p{N}+ | ?[^\s\p{L}\p{N}]+`: an optional space, then a run of one class.
    let (mut class, len) = c.at(s, i);
    let mut body = i;
    if s[i] == b' ' && i + 1 < s.len() {
        let (next, _) = c.at(s, i + 1);
        if next != SPACE {
            class = next;
            body = i + 1;
        }
    }
    match class {
        SPACE => space_piece(c, s, i, false),
        _ if body == i => run_where(c, s, i + len, |k| k == class),
        _ => run_where(c, s, body, |k| k == class),
    }
}

/// One piece of the cl100k pattern starting at byte `i`; returns its end. Qwen2's with `DIGITS`
/// = 1; tiktoken's spelling with `WHOLE_END`: white space to the end of the text is one piece.
#[inline]
fn cl100k_piece<const DIGITS: usize, const WHOLE_END: bool>(c: &Classes, s: &[u8], i: usize) -> usize {
    let b = s[i];
    if b == b'\'' {
        if let Some(n) = contraction(s, i + 1, true) {
            return i + 1 + n;
        }
    }
    let (class, len) = c.at(s, i);
    // `[^\r\n\p{L}\p{N}]?\p{L}+`
    if class == LETTER {
        return run_where(c, s, i + len, |k| k == LETTER);
    }
    if class != NUMBER && b != b'\r' && b != b'\n' && i + len < s.len() && c.at(s, i + len).0 == LETTER {
        return run_where(c, s, i + len, |k| k == LETTER);
    }
    if class == NUMBER {
        return numbers_up_to::<DIGITS>(c, s, i + len);
    }
    // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
    if let Some(end) = punct_piece(c, s, i, class, |k| k == OTHER, b"\r\n") {
        return end;
    }
    // Here the character is white space.
    if WHOLE_END {
        // `\s++$`
        let end = run_where(c, s, i, |k| k == SPACE);
        if end == s.len() {
            return end;
        }
    }
    space_piece(c, s, i, true)
}

/// One piece of the o200k pattern starting at byte `i`; returns its end.
#[inline]
fn o200k_piece(c: &Classes, s: &[u8], i: usize) -> usize {
    let (class, len) = c.at(s, i);
    // `[^\r\n\p{L}\p{N}]?` then a cased word, contraction optional. Each of the two word
    // alternatives is tried with the prefix, then without it (the regex backtracks to no
    // prefix before it tries the next alternative).
    let prefix = matches!(class, OTHER | MARK) || (class == SPACE && s[i] != b'\r' && s[i] != b'\n');
    let starts = if prefix { &[i + len, i][..] } else { &[i][..] };
    let word = starts
        .iter()
        .find_map(|&p| o200k_lower_word(c, s, p))
        .or_else(|| starts.iter().find_map(|&p| o200k_upper_word(c, s, p)));
    if let Some(end) = word {
        return match s.get(end) {
            Some(b'\'') => contraction(s, end + 1, true).map_or(end, |n| end + 1 + n),
            _ => end,
        };
    }
    if class == NUMBER {
        return numbers_up_to::<3>(c, s, i + len);
    }
    // ` ?[^\s\p{L}\p{N}]+[\r\n/]*` (marks are in that class too)
    if let Some(end) = punct_piece(c, s, i, class, |k| matches!(k, OTHER | MARK), b"\r\n/") {
        return end;
    }
    // Here the character is white space.
    space_piece(c, s, i, true)
}

/// o200k's `[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]`.
fn upper_set(k: u8) -> bool {
    matches!(k, UPPER | CASELESS | MARK)
}

/// o200k's `[\p{Ll}\p{Lm}\p{Lo}\p{M}]`.
fn lower_set(k: u8) -> bool {
    matches!(k, LOWER | CASELESS | MARK)
}

/// `[U]*[L]+` at `p`, as the regex matches it: the upper-set run, then a lower-set run if a
/// lower-case letter follows; else the run backtracks to its last caseless letter or mark
/// (in both sets), which ends the match. None when there is none.
fn o200k_lower_word(c: &Classes, s: &[u8], p: usize) -> Option<usize> {
    let mut q = p;
    let mut after_both = None;
    while q < s.len() {
        let (k, len) = c.at(s, q);
        if !upper_set(k) {
            break;
        }
        q += len;
        if k != UPPER {
            after_both = Some(q);
        }
    }
    if q < s.len() && c.at(s, q).0 == LOWER {
        return Some(run_where(c, s, q, lower_set));
    }
    after_both
}

/// `[U]+[L]*` at `p`: the upper-set run (at least one), then the lower-set run after it.
fn o200k_upper_word(c: &Classes, s: &[u8], p: usize) -> Option<usize> {
    let q = run_where(c, s, p, upper_set);
    (q > p).then(|| run_where(c, s, q, lower_set))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(p: &PreTokenizer, text: &str) -> Vec<String> {
        let mut out = Vec::new();
        p.split(text, |a, b| out.push(text[a..b].to_string())).unwrap();
        out
    }

    fn regex_pieces(pattern: &str, text: &str) -> Vec<String> {
        thread_local! {
            static COMPILED: std::cell::RefCell<Vec<(String, fancy_regex::Regex)>> = Default::default();
        }
        let re = COMPILED.with(|c| {
            let mut c = c.borrow_mut();
            if let Some((_, re)) = c.iter().find(|(p, _)| p == pattern) {
                return re.clone();
            }
            let re = fancy_regex::Regex::new(pattern).unwrap();
            c.push((pattern.to_string(), re.clone()));
            re
        });
        re.find_iter(text).map(|m| m.unwrap().as_str().to_string()).collect()
    }

    const SAMPLES: &[&str] = &[
        "Hello world, it's 2024! I'VE   got  12345 apples\n\n\tand   \r\n  more'S stuff.",
        "  leading spaces and trailing   ",
        "a\u{3000}\u{3000}b \u{a0}x\u{85}\u{85}y\u{2028}z",
        "don't 'll 're've 'd 'm 't ' 'x '' ſ 'ſ 'LL 'Re",
        "emoji 👩‍👩‍👧‍👦 family 👍🏽 and 🇫🇷 flag",
        "日本語のテキスト、中文文本。한국어 텍스트",
        "combining e\u{301}\u{302} marks\u{300} and \u{200d}zwj",
        "numbers 1234567 ٣٤٥٦ ½¾ x²³",
        "\r\n\r\n  \n\t\t\n   x\n\n",
        "!!!??? ...\n\n--- ((a)) [b] {c}\n",
        "tabs\t\tand\u{b}vertical\u{c}feeds\u{1c}\u{1f}",
        " ",
        "",
        "\n",
        "a",
        "   ",
        "x  \n  y",
        "end with space ",
        "$$$ 100% #hash @at",
    ];

    #[test]
    fn gpt2_matches_regex() {
        let p = PreTokenizer::Gpt2;
        for s in SAMPLES {
            assert_eq!(pieces(&p, s), regex_pieces(GPT2_PATTERN, s), "{s:?}");
            assert_eq!(pieces(&p, s), regex_pieces(R50K_PATTERN, s), "{s:?}");
        }
    }

    #[test]
    fn cl100k_matches_regex() {
        let p = PreTokenizer::Cl100k;
        for s in SAMPLES {
            assert_eq!(pieces(&p, s), regex_pieces(CL100K_PATTERN, s), "{s:?}");
            assert_eq!(pieces(&p, s), regex_pieces(CL100K_PATTERN_TIKTOKEN, s), "{s:?}");
            let base = PreTokenizer::Cl100kBase;
            assert_eq!(pieces(&base, s), regex_pieces(CL100K_BASE_PATTERN, s), "{s:?}");
            assert_eq!(pieces(&base, s), regex_pieces(CL100K_BASE_PATTERN_HF, s), "{s:?}");
        }
        // The spellings part where white space with a line break ends the text.
        assert_eq!(pieces(&p, "x \n  "), ["x", " \n", "  "]);
        assert_eq!(pieces(&PreTokenizer::Cl100kBase, "x \n  "), ["x", " \n  "]);
    }

    #[test]
    fn qwen2_matches_regex() {
        for s in SAMPLES {
            assert_eq!(pieces(&PreTokenizer::Qwen2, s), regex_pieces(QWEN2_PATTERN, s), "{s:?}");
        }
    }

    #[test]
    fn o200k_matches_regex() {
        let p = PreTokenizer::O200k;
        let extra = ["CamelCaseWords and HTTPServer's XMLHttpRequest iPhone ǅemal ʰa", "a/b\\c //x\n/ 'S'T's ÀÉ ßẞ"];
        for s in SAMPLES.iter().chain(&extra) {
            assert_eq!(pieces(&p, s), regex_pieces(O200K_PATTERN, s), "{s:?}");
        }
        // Random strings over an alphabet of each class of the pattern.
        let alphabet = " \t\n\r'sStTlLdDaAZzǅʰ中ß09٣Ⅻ!/.-\u{a0}\u{3000}é\u{301}\u{200d}ſK😀_";
        for s in random_strings(alphabet, 0x9E37_79B9_7F4A_7C15, 40000) {
            assert_eq!(pieces(&p, &s), regex_pieces(O200K_PATTERN, &s), "{s:?}");
        }
    }

    /// `count` strings of 0 to 11 characters drawn from `alphabet` by a xorshift generator.
    fn random_strings(alphabet: &str, mut state: u64, count: usize) -> impl Iterator<Item = String> {
        let alphabet: Vec<char> = alphabet.chars().collect();
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        (0..count).map(move |_| {
            let n = next() % 12;
            (0..n).map(|_| alphabet[(next() % alphabet.len() as u64) as usize]).collect()
        })
    }

    #[test]
    fn matches_regex_on_random_text() {
        // Small pseudo-random strings over an alphabet of tricky characters.
        let alphabet = " \t\n\r'sStTlLvVeErRdDmMaZ09٣½!?.,-()\u{a0}\u{3000}\u{85}é中😀\u{301}\u{200d}ſ\u{b}_";
        for s in random_strings(alphabet, 0x2545F4914F6CDD1D, 20000) {
            assert_eq!(pieces(&PreTokenizer::Gpt2, &s), regex_pieces(GPT2_PATTERN, &s), "{s:?}");
            assert_eq!(pieces(&PreTokenizer::Cl100k, &s), regex_pieces(CL100K_PATTERN, &s), "{s:?}");
            assert_eq!(pieces(&PreTokenizer::Qwen2, &s), regex_pieces(QWEN2_PATTERN, &s), "{s:?}");
            assert_eq!(pieces(&PreTokenizer::Gpt2, &s), regex_pieces(R50K_PATTERN, &s), "{s:?}");
            assert_eq!(pieces(&PreTokenizer::Cl100kBase, &s), regex_pieces(CL100K_BASE_PATTERN, &s), "{s:?}");
            assert_eq!(pieces(&PreTokenizer::Cl100kBase, &s), regex_pieces(CL100K_BASE_PATTERN_HF, &s), "{s:?}");
        }
    }

    #[test]
    fn custom_regex_keeps_gaps() {
        let p = PreTokenizer::from_pattern(r"\d+").unwrap();
        assert_eq!(pieces(&p, "ab12cd3"), ["ab", "12", "cd", "3"]);
        assert!(PreTokenizer::from_pattern("(").is_err());
        assert!(matches!(PreTokenizer::from_pattern("gpt2").unwrap(), PreTokenizer::Gpt2));
        assert!(matches!(PreTokenizer::from_pattern(CL100K_PATTERN_TIKTOKEN).unwrap(), PreTokenizer::Cl100k));
        assert!(matches!(PreTokenizer::from_pattern(O200K_PATTERN).unwrap(), PreTokenizer::O200k));
        assert!(matches!(PreTokenizer::from_pattern(QWEN2_PATTERN).unwrap(), PreTokenizer::Qwen2));
        assert!(matches!(PreTokenizer::from_pattern(R50K_PATTERN).unwrap(), PreTokenizer::Gpt2));
        assert!(matches!(PreTokenizer::from_pattern(CL100K_BASE_PATTERN).unwrap(), PreTokenizer::Cl100kBase));
        for name in PATTERN_NAMES {
            assert_eq!(PreTokenizer::from_pattern(name).unwrap().name(), name);
        }
    }
}
