//! Regex pre-tokenization for byte-level BPE: text is cut into pieces (words with their leading
//! space, runs of digits, punctuation, white space) and BPE never merges across pieces.
//!
//! The GPT-2 and GPT-4 (cl100k) patterns are implemented by hand, as small state machines that
//! reproduce the regexes' leftmost-first alternation, greedy runs, `(?!\S)` look-ahead and
//! backtracking exactly (tested against `fancy-regex` on adversarial text); they run several
//! times faster than a backtracking regex engine. A user's own pattern runs on `fancy-regex`
//! with Hugging Face's `Split(behavior="Isolated")` semantics: matches and the gaps between
//! them both become pieces, so no text is ever dropped.

use std::cell::RefCell;
use std::rc::Rc;

use super::unicode::{Classes, LETTER, NUMBER, OTHER, SPACE};
use crate::{bail, Result};

/// GPT-2's pattern (also Hugging Face's `ByteLevel(use_regex=True)` pre-tokenizer).
pub const GPT2_PATTERN: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

/// GPT-4's cl100k_base pattern, as written in tokenizer.json files.
pub const CL100K_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The same language as [`CL100K_PATTERN`], in tiktoken's newer spelling (possessive quantifiers).
pub const CL100K_PATTERN_TIKTOKEN: &str =
    r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+";

/// Which rule splits text into pieces.
#[derive(Clone, Debug)]
pub enum PreTokenizer {
    /// GPT-2's pattern, hand-written.
    Gpt2,
    /// GPT-4's cl100k pattern, hand-written.
    Cl100k,
    /// A user's regex (fancy-regex syntax); the original pattern text is kept for saving.
    Regex(Box<fancy_regex::Regex>, String),
}

impl PreTokenizer {
    /// A pre-tokenizer from a name (`"gpt2"`, `"cl100k"`) or a regex pattern. Patterns equal to
    /// a built-in one get the fast hand-written matcher.
    pub fn from_pattern(name_or_pattern: &str) -> Result<Self> {
        match name_or_pattern {
            "gpt2" | GPT2_PATTERN => Ok(PreTokenizer::Gpt2),
            "cl100k" | CL100K_PATTERN | CL100K_PATTERN_TIKTOKEN => Ok(PreTokenizer::Cl100k),
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
            PreTokenizer::Regex(_, p) => p,
        }
    }

    /// Calls `piece(start, end)` with the byte range of each piece of `text`, in order. The
    /// pieces cover the whole text. Only a user regex can fail (backtrack limit).
    #[inline]
    pub fn split(&self, text: &str, mut piece: impl FnMut(usize, usize)) -> Result<()> {
        let s = text.as_bytes();
        match self {
            PreTokenizer::Gpt2 => {
                let classes = Classes::get();
                let mut i = 0;
                while i < s.len() {
                    let end = gpt2_piece(classes, s, i);
                    piece(i, end);
                    i = end;
                }
            }
            PreTokenizer::Cl100k => {
                let classes = Classes::get();
                let mut i = 0;
                while i < s.len() {
                    let end = cl100k_piece(classes, s, i);
                    piece(i, end);
                    i = end;
                }
            }
            PreTokenizer::Regex(re, pattern) => {
                let re = this_threads_copy(re, pattern);
                let mut last = 0;
                for m in re.find_iter(text) {
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

/// End of the maximal run of characters of class `class` starting at `i`.
#[inline(always)]
fn run(c: &Classes, s: &[u8], mut i: usize, class: u8) -> usize {
    while i < s.len() {
        let (k, len) = c.at(s, i);
        if k != class {
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

/// Handles a white-space run starting at `i` the way `\s+(?!\S)|\s+` does: a run that is
/// followed by a non-space gives up its last character (it will lead the next piece), unless
/// the run is a single character.
#[inline]
fn space_run(c: &Classes, s: &[u8], i: usize) -> usize {
    let mut j = i;
    let mut last_start = i;
    while j < s.len() {
        let (k, len) = c.at(s, j);
        if k != SPACE {
            break;
        }
        last_start = j;
        j += len;
    }
    if j < s.len() && last_start > i {
        last_start
    } else {
        j
    }
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
        SPACE => space_run(c, s, i),
        _ if body == i => run(c, s, i + len, class),
        _ => run(c, s, body, class),
    }
}

/// One piece of the cl100k pattern starting at byte `i`; returns its end.
#[inline]
fn cl100k_piece(c: &Classes, s: &[u8], i: usize) -> usize {
    let b = s[i];
    if b == b'\'' {
        if let Some(n) = contraction(s, i + 1, true) {
            return i + 1 + n;
        }
    }
    let (class, len) = c.at(s, i);
    // `[^\r\n\p{L}\p{N}]?\p{L}+`
    if class == LETTER {
        return run(c, s, i + len, LETTER);
    }
    if class != NUMBER && b != b'\r' && b != b'\n' && i + len < s.len() && c.at(s, i + len).0 == LETTER {
        return run(c, s, i + len, LETTER);
    }
    // `\p{N}{1,3}`
    if class == NUMBER {
        let mut j = i + len;
        for _ in 0..2 {
            if j >= s.len() {
                break;
            }
            let (k, l) = c.at(s, j);
            if k != NUMBER {
                break;
            }
            j += l;
        }
        return j;
    }
    // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
    let body = if class == OTHER {
        Some(i + len)
    } else if b == b' ' && i + 1 < s.len() && c.at(s, i + 1).0 == OTHER {
        Some(i + 1)
    } else {
        None
    };
    if let Some(body) = body {
        let mut j = run(c, s, body, OTHER);
        while j < s.len() && (s[j] == b'\r' || s[j] == b'\n') {
            j += 1;
        }
        return j;
    }
    // Here the character is white space. `\s*[\r\n]+`: up to the run's last line break.
    let mut j = i;
    let mut after_newline = None;
    while j < s.len() {
        let (k, l) = c.at(s, j);
        if k != SPACE {
            break;
        }
        if s[j] == b'\r' || s[j] == b'\n' {
            after_newline = Some(j + 1);
        }
        j += l;
    }
    if let Some(end) = after_newline {
        return end;
    }
    space_run(c, s, i)
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
        }
    }

    #[test]
    fn cl100k_matches_regex() {
        let p = PreTokenizer::Cl100k;
        for s in SAMPLES {
            assert_eq!(pieces(&p, s), regex_pieces(CL100K_PATTERN, s), "{s:?}");
            assert_eq!(pieces(&p, s), regex_pieces(CL100K_PATTERN_TIKTOKEN, s), "{s:?}");
        }
    }

    #[test]
    fn matches_regex_on_random_text() {
        // Small pseudo-random strings over an alphabet of tricky characters.
        let alphabet: Vec<char> =
            " \t\n\r'sStTlLvVeErRdDmMaZ09٣½!?.,-()\u{a0}\u{3000}\u{85}é中😀\u{301}\u{200d}ſ\u{b}_".chars().collect();
        let mut state = 0x2545F4914F6CDD1Du64;
        for _ in 0..20000 {
            let mut s = String::new();
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let n = (state % 12) as usize;
            for _ in 0..n {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                s.push(alphabet[(state % alphabet.len() as u64) as usize]);
            }
            assert_eq!(pieces(&PreTokenizer::Gpt2, &s), regex_pieces(GPT2_PATTERN, &s), "{s:?}");
            assert_eq!(pieces(&PreTokenizer::Cl100k, &s), regex_pieces(CL100K_PATTERN, &s), "{s:?}");
        }
    }

    #[test]
    fn custom_regex_keeps_gaps() {
        let p = PreTokenizer::from_pattern(r"\d+").unwrap();
        assert_eq!(pieces(&p, "ab12cd3"), ["ab", "12", "cd", "3"]);
        assert!(PreTokenizer::from_pattern("(").is_err());
        assert!(matches!(PreTokenizer::from_pattern("gpt2").unwrap(), PreTokenizer::Gpt2));
        assert!(matches!(PreTokenizer::from_pattern(CL100K_PATTERN_TIKTOKEN).unwrap(), PreTokenizer::Cl100k));
    }
}
