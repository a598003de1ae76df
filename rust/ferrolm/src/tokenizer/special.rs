//! Special tokens (`<|endoftext|>`, `[MASK]`, chat markers, user-defined): exact strings that
//! always map to one id. They are found in the raw text before any normalization or
//! pre-tokenization (leftmost-longest, as Hugging Face does) and each call decides which of
//! them are allowed; a disallowed one is either refused with an error or encoded as plain text.
//!
//! Hugging Face's added tokens may also be ordinary (`"special": false`): matched the same way
//! but always, whatever a call allows, and kept when decoding skips special tokens.

use std::cell::Cell;
use std::sync::OnceLock;

use aho_corasick::{AhoCorasick, MatchKind};
use rustc_hash::{FxHashMap, FxHashSet};

use crate::{bail, Result};

/// The special tokens of a tokenizer, with a matcher over their contents.
#[derive(Clone, Debug, Default)]
pub struct SpecialTokens {
    list: Vec<(String, u32)>,
    by_content: FxHashMap<String, u32>,
    by_id: FxHashMap<u32, usize>,
    /// Added tokens that are not special (Hugging Face's `"special": false`).
    ordinary: FxHashSet<u32>,
    /// How added tokens that do not match as bare strings match, by id.
    matching: FxHashMap<u32, Matching>,
    /// Added tokens Hugging Face matches in normalized text (`"normalized": true`): in a second
    /// pass, in the text between the others. (Files where normalizing would change what they
    /// match are refused when read.)
    normalized: FxHashSet<u32>,
    /// Finds every occurrence, overlaps included ([`SpecialTokens::split`] picks among them).
    /// Built on first use after a change: registering n tokens one by one must not build it n
    /// times (8,000 tokens took 8.6 s).
    matcher: OnceLock<Option<AhoCorasick>>,
}

/// How an added token matches besides its string (Hugging Face's `AddedToken` flags): taking
/// the white space before it (`lstrip`) or after it (`rstrip`) into its span, which then encodes
/// as the token alone (RoBERTa's `<mask>` takes the space before it), or only as a whole word
/// (`single_word`: no word character, regex `\w`, right before or after it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Matching {
    pub lstrip: bool,
    pub rstrip: bool,
    pub single_word: bool,
}

/// Which special tokens one encode call recognises.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum AllowedSpecial {
    /// Every special token of the tokenizer (Hugging Face's behaviour).
    #[default]
    All,
    /// None: the text is ordinary text only.
    None,
    /// Only these ids (resolve names with [`SpecialTokens::resolve`]).
    Only(FxHashSet<u32>),
}

/// What to do with a special token's text that is present but not allowed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Disallowed {
    /// Fail with an error naming the token (tiktoken's default, a guard against prompt injection).
    #[default]
    Raise,
    /// Encode it like any other text.
    Text,
    /// Fail for these ids, allowed or not (resolve names with [`SpecialTokens::resolve`]);
    /// encode the text of the others that are not allowed like any other text.
    Only(FxHashSet<u32>),
}

impl Disallowed {
    /// Whether special token `id`'s text is an error: a token listed in `Only` is refused even
    /// when allowed, as tiktoken refuses it.
    fn raises(&self, id: u32, allowed: bool) -> bool {
        match self {
            Disallowed::Raise => !allowed,
            Disallowed::Text => false,
            Disallowed::Only(ids) => ids.contains(&id),
        }
    }
}

/// Options of one encode call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodeOptions {
    /// Special tokens recognised in the text.
    pub allowed_special: AllowedSpecial,
    /// Handling of special-token text that is not allowed.
    pub disallowed: Disallowed,
    /// Apply the post-processor template (e.g. BERT's `[CLS] … [SEP]`), as Hugging Face does.
    pub add_special_tokens: bool,
    /// Truncation as Hugging Face's `max_length` (strategy `longest_first`): at most this many
    /// ids, the template's included; the text loses its last tokens, a pair those of its
    /// longer text first. `None`: no limit.
    pub max_length: Option<usize>,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        EncodeOptions {
            allowed_special: AllowedSpecial::All,
            disallowed: Disallowed::Raise,
            add_special_tokens: true,
            max_length: None,
        }
    }
}

impl EncodeOptions {
    /// Plain text: no special token is recognised and none is added.
    pub fn ordinary() -> Self {
        EncodeOptions {
            allowed_special: AllowedSpecial::None,
            disallowed: Disallowed::Text,
            add_special_tokens: false,
            max_length: None,
        }
    }
}

impl SpecialTokens {
    /// Registers `content` with `id` (replacing an earlier registration of the same content).
    pub fn insert(&mut self, content: &str, id: u32) -> Result<()> {
        if content.is_empty() {
            bail!(Argument, "a special token cannot be the empty string");
        }
        if let Some(&idx) = self.by_id.get(&id) {
            if self.list[idx].0 == content {
                return Ok(());
            }
            bail!(Argument, "special tokens {:?} and {content:?} cannot share id {id}", self.list[idx].0);
        }
        if let Some(&old) = self.by_content.get(content) {
            let idx = self.by_id.remove(&old).expect("maps agree");
            self.list[idx].1 = id;
            self.by_id.insert(id, idx);
        } else {
            self.by_id.insert(id, self.list.len());
            self.list.push((content.to_string(), id));
        }
        self.by_content.insert(content.to_string(), id);
        self.matcher = OnceLock::new();
        Ok(())
    }

    fn matcher(&self) -> Option<&AhoCorasick> {
        self.matcher
            .get_or_init(|| {
                let patterns: Vec<&str> = self.list.iter().map(|(s, _)| s.as_str()).collect();
                (!patterns.is_empty()).then(|| {
                    AhoCorasick::builder()
                        .match_kind(MatchKind::Standard)
                        .build(&patterns)
                        .expect("special tokens form a valid automaton")
                })
            })
            .as_ref()
    }

    /// The added tokens (special or not), in registration order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u32)> {
        self.list.iter().map(|(s, id)| (s.as_str(), *id))
    }

    /// Whether added token `id` is special (skipped by `skip_special_tokens`, subject to
    /// `allowed_special`); false for ordinary added tokens and for ids not added.
    pub fn is_special(&self, id: u32) -> bool {
        self.by_id.contains_key(&id) && !self.ordinary.contains(&id)
    }

    /// Makes added token `id` ordinary (Hugging Face's `"special": false`) or special again.
    pub fn set_special(&mut self, id: u32, special: bool) -> Result<()> {
        if !self.by_id.contains_key(&id) {
            bail!(Argument, "id {id} is not an added token");
        }
        if special {
            self.ordinary.remove(&id);
        } else {
            self.ordinary.insert(id);
        }
        Ok(())
    }

    /// Sets how added token `id` matches (see [`Matching`]).
    pub fn set_matching(&mut self, id: u32, matching: Matching) -> Result<()> {
        if !self.by_id.contains_key(&id) {
            bail!(Argument, "id {id} is not an added token");
        }
        if matching == Matching::default() {
            self.matching.remove(&id);
        } else {
            self.matching.insert(id, matching);
        }
        Ok(())
    }

    /// How added token `id` matches.
    pub fn matching(&self, id: u32) -> Matching {
        self.matching.get(&id).copied().unwrap_or_default()
    }

    /// Whether added token `id` is matched in a second pass (Hugging Face's `"normalized": true`).
    pub fn is_normalized(&self, id: u32) -> bool {
        self.normalized.contains(&id)
    }

    /// Makes added token `id` match in the second pass, or in the first.
    pub fn set_normalized(&mut self, id: u32, normalized: bool) -> Result<()> {
        if !self.by_id.contains_key(&id) {
            bail!(Argument, "id {id} is not an added token");
        }
        if normalized {
            self.normalized.insert(id);
        } else {
            self.normalized.remove(&id);
        }
        Ok(())
    }

    /// Number of special tokens.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The id of special token `content`.
    pub fn id(&self, content: &str) -> Option<u32> {
        self.by_content.get(content).copied()
    }

    /// The content of special token `id`.
    pub fn content(&self, id: u32) -> Option<&str> {
        self.by_id.get(&id).map(|&i| self.list[i].0.as_str())
    }

    /// Largest special id, if any.
    pub fn max_id(&self) -> Option<u32> {
        self.list.iter().map(|&(_, id)| id).max()
    }

    /// The ids of special-token names (for [`AllowedSpecial::Only`], [`Disallowed::Only`]);
    /// unknown names are errors.
    pub fn resolve<S: AsRef<str>>(&self, names: &[S]) -> Result<FxHashSet<u32>> {
        let mut ids = FxHashSet::default();
        for name in names {
            let name = name.as_ref();
            match self.id(name) {
                Some(id) => {
                    ids.insert(id);
                }
                None => {
                    let known: Vec<&str> = self.list.iter().map(|(s, _)| s.as_str()).collect();
                    bail!(Argument, "unknown special token {name:?}; this tokenizer's special tokens are {known:?}")
                }
            }
        }
        Ok(ids)
    }

    /// Splits `text` into ordinary spans and allowed special tokens, calling `segment` for each
    /// in text order (byte offsets).
    pub fn split(
        &self,
        text: &str,
        opts: &EncodeOptions,
        mut segment: impl FnMut(Segment) -> Result<()>,
    ) -> Result<()> {
        let plain_text = opts.allowed_special == AllowedSpecial::None && opts.disallowed == Disallowed::Text;
        if (plain_text && self.ordinary.is_empty()) || self.matcher().is_none() {
            return if text.is_empty() { Ok(()) } else { segment(Segment::Text(0, text.len())) };
        }
        // Hugging Face's two passes: the tokens matched in the text as given, then the
        // normalized ones in each stretch of text left between those (when the first pass saw
        // any: a match in a stretch is a match in the whole).
        let late_seen = Cell::new(false);
        self.split_pass(text, 0, opts, false, &late_seen, &mut |seg| match seg {
            Segment::Text(a, b) if late_seen.get() => {
                self.split_pass(&text[a..b], a, opts, true, &Cell::new(false), &mut segment)
            }
            seg => segment(seg),
        })
    }

    /// One pass of [`SpecialTokens::split`] over `text`, which starts at byte `base` of the
    /// whole: the tokens matched in the second pass (`late`) or the first; `other_seen` is set
    /// when a token of the other pass occurs.
    fn split_pass(
        &self,
        text: &str,
        base: usize,
        opts: &EncodeOptions,
        late: bool,
        other_seen: &Cell<bool>,
        segment: &mut dyn FnMut(Segment) -> Result<()>,
    ) -> Result<()> {
        let allowed = |id: &u32| {
            self.ordinary.contains(id)
                || match &opts.allowed_special {
                    AllowedSpecial::All => true,
                    AllowedSpecial::None => false,
                    AllowedSpecial::Only(ids) => ids.contains(id),
                }
        };
        // Leftmost-longest among the allowed tokens alone, from every occurrence: a token that
        // is not allowed is refused wherever it occurs, also inside an allowed one (as tiktoken
        // does), or read as text without hiding an allowed token that overlaps it. (tiktoken
        // takes the leftmost token of all, moving on a byte when it is not allowed; the two
        // agree unless one token is a prefix of another, where tiktoken's choice follows its
        // hash order.) A `single_word` token inside a word is text, but hides the tokens that
        // overlap it, as in Hugging Face (`None` below).
        let matcher = self.matcher().expect("split found the tokens' matcher");
        let mut found: Vec<(usize, usize, Option<u32>)> = Vec::new();
        for m in matcher.find_overlapping_iter(text) {
            let (content, id) = &self.list[m.pattern().as_usize()];
            if self.normalized.contains(id) != late {
                other_seen.set(true);
                continue;
            }
            let is_allowed = allowed(id);
            if self.matching(*id).single_word && !is_whole_word(text, m.start(), m.end()) {
                if is_allowed {
                    found.push((m.start(), m.end(), None));
                }
                continue;
            }
            if opts.disallowed.raises(*id, is_allowed) {
                bail!(
                    Argument,
                    "the text contains the special token {content:?} (at byte {}), which this call does not allow; \
                     allow it with allowed_special, or encode it as plain text with disallowed_special=\"text\"",
                    base + m.start()
                );
            }
            if is_allowed {
                found.push((m.start(), m.end(), Some(*id)));
            }
        }
        found.sort_unstable_by_key(|&(s, e, _)| (s, std::cmp::Reverse(e)));
        let (mut start, mut taken) = (0, 0); // text given out up to `start`; matches end at `taken`
        for (s, e, id) in found {
            if s < taken {
                continue; // overlaps the match before it
            }
            taken = e;
            let Some(id) = id else { continue };
            // White space the token takes, never what a token before it took. A token may start
            // in white space the one before took on its right (their spans overlap, as in
            // Hugging Face).
            let m = self.matching(id);
            let s = if m.lstrip { start.max(text[..s].trim_end().len()) } else { s };
            let e = if m.rstrip { text.len() - text[e..].trim_start().len() } else { e };
            if s > start {
                segment(Segment::Text(base + start, base + s))?;
            }
            segment(Segment::Special(id, base + s, base + e))?;
            start = start.max(e);
        }
        if start < text.len() {
            segment(Segment::Text(base + start, base + text.len()))?;
        }
        Ok(())
    }
}

/// Whether `text[start..end]` has no word character (`\w`) right before or after it.
fn is_whole_word(text: &str, start: usize, end: usize) -> bool {
    let word = |c: Option<char>| c.is_some_and(super::unicode::is_word_char);
    !word(text[..start].chars().next_back()) && !word(text[end..].chars().next())
}

/// A span of text found by [`SpecialTokens::split`] (byte offsets).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Segment {
    /// Ordinary text `start..end`.
    Text(usize, usize),
    /// Special token `id` at `start..end`.
    Special(u32, usize, usize),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(sp: &SpecialTokens, text: &str, opts: &EncodeOptions) -> Result<Vec<String>> {
        let mut out = Vec::new();
        sp.split(text, opts, |seg| {
            out.push(match seg {
                Segment::Text(a, b) => text[a..b].to_string(),
                Segment::Special(id, _, _) => format!("#{id}"),
            });
            Ok(())
        })?;
        Ok(out)
    }

    #[test]
    fn split_allow_refuse() {
        let mut sp = SpecialTokens::default();
        sp.insert("<|endoftext|>", 7).unwrap();
        sp.insert("<|end|>", 8).unwrap();
        let text = "a<|endoftext|>b<|end|>";
        assert_eq!(run(&sp, text, &EncodeOptions::default()).unwrap(), ["a", "#7", "b", "#8"]);
        assert_eq!(run(&sp, text, &EncodeOptions::ordinary()).unwrap(), [text]);
        let only = EncodeOptions {
            allowed_special: AllowedSpecial::Only(sp.resolve(&["<|end|>"]).unwrap()),
            ..Default::default()
        };
        let err = run(&sp, text, &only).unwrap_err().to_string();
        assert!(err.contains("<|endoftext|>"), "{err}");
        let only_text = EncodeOptions { disallowed: Disallowed::Text, ..only };
        assert_eq!(run(&sp, text, &only_text).unwrap(), ["a<|endoftext|>b", "#8"]);
        assert!(sp.resolve(&["<|nope|>"]).unwrap_err().to_string().contains("<|nope|>"));
        // A token read as text does not hide an allowed one that overlaps it (tiktoken's rule).
        sp.insert("<|end|>x", 9).unwrap();
        let end_only = EncodeOptions {
            allowed_special: AllowedSpecial::Only(sp.resolve(&["<|end|>"]).unwrap()),
            ..only_text.clone()
        };
        assert_eq!(run(&sp, "a<|end|>x<|end|>", &end_only).unwrap(), ["a", "#8", "x", "#8"]);
        // All allowed: the longest match.
        assert_eq!(run(&sp, "a<|end|>x", &EncodeOptions::default()).unwrap(), ["a", "#9"]);
        // Refusing: a token that is not allowed is found inside an allowed one too (tiktoken's rule).
        let longer_only = EncodeOptions {
            allowed_special: AllowedSpecial::Only(sp.resolve(&["<|end|>x"]).unwrap()),
            ..Default::default()
        };
        let err = run(&sp, "a<|end|>x", &longer_only).unwrap_err().to_string();
        assert!(err.contains("\"<|end|>\""), "{err}");
        let with_all = EncodeOptions {
            allowed_special: AllowedSpecial::Only(sp.resolve(&["<|end|>x", "<|end|>", "<|endoftext|>"]).unwrap()),
            ..Default::default()
        };
        assert_eq!(run(&sp, "a<|end|>x", &with_all).unwrap(), ["a", "#9"]);
        assert!(sp.insert("", 3).is_err());
        assert!(sp.insert("x", 7).is_err());
    }

    #[test]
    fn moving_a_token_onto_another_tokens_id_is_refused() {
        let mut sp = SpecialTokens::default();
        sp.insert("a", 1).unwrap();
        sp.insert("b", 2).unwrap();
        let err = sp.insert("a", 2).unwrap_err().to_string();
        assert!(err.contains("cannot share id 2"), "{err}");
        sp.insert("b", 2).unwrap(); // the same registration again is fine
        sp.insert("a", 4).unwrap(); // and so is moving to a free id
        assert_eq!((sp.id("a"), sp.id("b")), (Some(4), Some(2)));
        assert_eq!(sp.content(2), Some("b"));
    }
}
