//! tiktoken's encodings (`cl100k_base.tiktoken`, `o200k_base.tiktoken`...): one token per
//! line as `base64(bytes) rank`, the rank doubling as the id. tiktoken has no merge list: it
//! merges the adjacent pair whose concatenation has the lowest rank. That is BPE with merges
//! ranked by the token they make, so each token's merge is recovered by running that rule on
//! its bytes with the tokens ranked below it, and the result is an ordinary byte-level BPE.

use rustc_hash::FxHashMap;

use super::bytes::bytes_to_token;
use super::{Bpe, BpeOptions, Model, PreTokenizer, Template, Tokenizer};
use crate::{bail, Error, Result};

/// What an OpenAI encoding's file does not record: its pre-tokenizer (a
/// [`PreTokenizer::from_pattern`] name) and special tokens.
#[derive(Clone, Copy, Debug)]
pub struct OpenAiEncoding {
    pub pattern: &'static str,
    pub specials: &'static [(&'static str, u32)],
}

/// OpenAI's encodings by the number of ranks their files list (tiktoken_ext's definitions):
/// r50k_base, p50k_base, cl100k_base (as tiktoken spells its pattern now) and o200k_base.
const ENCODINGS: [(usize, OpenAiEncoding); 4] = [
    (50_256, OpenAiEncoding { pattern: "gpt2", specials: &[("<|endoftext|>", 50_256)] }),
    (50_280, OpenAiEncoding { pattern: "gpt2", specials: &[("<|endoftext|>", 50_256)] }),
    (
        100_256,
        OpenAiEncoding {
            pattern: "cl100k_base",
            specials: &[
                ("<|endoftext|>", 100_257),
                ("<|fim_prefix|>", 100_258),
                ("<|fim_middle|>", 100_259),
                ("<|fim_suffix|>", 100_260),
                ("<|endofprompt|>", 100_276),
            ],
        },
    ),
    (
        199_998,
        OpenAiEncoding { pattern: "o200k", specials: &[("<|endoftext|>", 199_999), ("<|endofprompt|>", 200_018)] },
    ),
];

/// The OpenAI encoding whose file these `ranks` are, if any: as many, each rank once, from 0 up
/// but for the ids its special tokens take among them (p50k's `<|endoftext|>`).
pub fn openai_encoding(ranks: &[(Vec<u8>, u32)]) -> Option<OpenAiEncoding> {
    let (_, known) = ENCODINGS.iter().find(|(n, _)| *n == ranks.len())?;
    let taken: Vec<usize> = known.specials.iter().map(|s| s.1 as usize).filter(|&id| id < ranks.len()).collect();
    let mut seen = vec![false; ranks.len() + taken.len()];
    for &(_, r) in ranks {
        let r = r as usize;
        if r >= seen.len() || seen[r] || taken.contains(&r) {
            return None;
        }
        seen[r] = true;
    }
    Some(*known)
}

/// Parses a `.tiktoken` file: `base64 rank` per line (blank lines skipped).
pub fn parse_ranks(text: &str) -> Result<Vec<(Vec<u8>, u32)>> {
    let mut ranks = Vec::new();
    for (number, line) in text.lines().enumerate().map(|(i, l)| (i + 1, l.trim_end_matches('\r'))) {
        if line.is_empty() {
            continue;
        }
        let bad = || Error::Format(format!("line {number}: {line:?} is not \"base64 rank\""));
        let (token, rank) = line.split_once(' ').ok_or_else(bad)?;
        ranks.push((decode_base64(token).ok_or_else(bad)?, rank.parse().map_err(|_| bad())?));
    }
    Ok(ranks)
}

/// Standard base64 (`A-Z a-z 0-9 + /`, `=` padding).
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let body = text.trim_end_matches('=');
    if !text.len().is_multiple_of(4) || text.len() - body.len() > 2 || body.is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(body.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for &c in body.as_bytes() {
        acc = (acc << 6) | value(c)? as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

/// The byte-level BPE tokenizer of tiktoken ranks, with `pattern`'s pre-tokenizer and
/// `specials` as (content, id) special tokens.
pub fn from_ranks(ranks: Vec<(Vec<u8>, u32)>, pattern: PreTokenizer, specials: &[(String, u32)]) -> Result<Tokenizer> {
    if ranks.is_empty() {
        bail!(Format, "no tokens: a tiktoken encoding lists `base64(token) rank` lines");
    }
    let by_bytes: FxHashMap<&[u8], u32> = ranks.iter().map(|(b, r)| (b.as_slice(), *r)).collect();
    if by_bytes.len() != ranks.len() {
        bail!(Format, "a token is listed twice");
    }
    let mut ordered: Vec<&(Vec<u8>, u32)> = ranks.iter().filter(|(b, _)| b.len() > 1).collect();
    ordered.sort_unstable_by_key(|(_, r)| *r);
    let mut merges = Vec::with_capacity(ordered.len());
    for (token, rank) in ordered {
        let split = last_merge(token, *rank, &by_bytes).ok_or_else(|| {
            Error::Format(format!(
                "token {:?} (rank {rank}) cannot be made from tokens ranked below it",
                bytes_to_token(token)
            ))
        })?;
        merges.push((bytes_to_token(&token[..split]), bytes_to_token(&token[split..])));
    }
    // tiktoken makes any text from its byte tokens (and fails on a byte it lacks); BPE would drop
    // it. Bytes that UTF-8 text never holds (0xC0, 0xC1, 0xF5-0xFF) may lack one.
    let in_text = |b: u8| b < 0xC0 || (0xC2..=0xF4).contains(&b);
    if let Some(b) = (0..=255u8).find(|&b| in_text(b) && !by_bytes.contains_key(&[b][..])) {
        bail!(
            Format,
            "byte {b:#04x} has no token: a tiktoken encoding ranks every byte text holds (tiktoken fails on it)"
        );
    }
    let vocab = ranks.iter().map(|(b, r)| (bytes_to_token(b), *r)).collect();
    let model = Bpe::new(vocab, &merges, pattern, BpeOptions::default())?;
    Tokenizer::new(Model::Bpe(model), specials, Template::default())
}

/// Where tiktoken's rule splits `token` last: merge the lowest-ranked adjacent pair among
/// tokens ranked below `rank` until two parts are left; `None` if it gets stuck.
fn last_merge(token: &[u8], rank: u32, ranks: &FxHashMap<&[u8], u32>) -> Option<usize> {
    let mut starts: Vec<usize> = (0..token.len()).collect(); // part k is token[starts[k]..starts[k + 1]]
    let end = |starts: &[usize], k: usize| starts.get(k + 1).copied().unwrap_or(token.len());
    while starts.len() > 2 {
        let (_, k) = (0..starts.len() - 1)
            .filter_map(|k| {
                let r = *ranks.get(&token[starts[k]..end(&starts, k + 1)])?;
                (r < rank).then_some((r, k))
            })
            .min()?;
        starts.remove(k + 1);
    }
    let below = |k: usize| ranks.get(&token[starts[k]..end(&starts, k)]).is_some_and(|&r| r < rank);
    (starts.len() == 2 && below(0) && below(1)).then(|| starts[1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_and_refuses_garbage() {
        assert_eq!(decode_base64("aGVsbG8="), Some(b"hello".to_vec()));
        assert_eq!(decode_base64("IA=="), Some(b" ".to_vec()));
        assert_eq!(decode_base64("aGk="), Some(b"hi".to_vec()));
        for bad in ["", "a", "aGk", "a*==", "===="] {
            assert_eq!(decode_base64(bad), None, "{bad}");
        }
    }
}
