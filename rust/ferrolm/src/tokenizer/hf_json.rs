//! Hugging Face `tokenizer.json` (and GPT-2 `vocab.json` + `merges.txt`) reading and writing.
//!
//! Supported pipelines, which cover GPT-2/RoBERTa/GPT-4-style byte-level BPE, BERT and our
//! character tokenizers:
//! - byte-level BPE: no normalizer or `NFC` (GPT-NeoX, Qwen2); pre-tokenizer
//!   `ByteLevel(use_regex=true)` (GPT-2 pattern)
//!   or `Sequence[Split(Regex, Isolated), ByteLevel(use_regex=false)]`; ByteLevel decoder;
//! - WordPiece: `BertNormalizer` (or none), `BertPreTokenizer`, WordPiece decoder;
//! - characters: a BPE model without merges, normalizer or pre-tokenizer, `Fuse` decoder;
//!
//! (a normalizer, pre-tokenizer or decoder wrapped in a `Sequence` of one is read as that step),
//! with post-processors `ByteLevel`, `BertProcessing`, `RobertaProcessing` or single-sequence
//! `TemplateProcessing` (or a `Sequence` of them), including their `trim_offsets`, and added
//! tokens (special or not, with their `lstrip`, `rstrip` and `single_word`). Anything
//! else is refused with a message naming the unsupported part, rather than silently
//! tokenizing differently from Hugging Face. The file's top-level `truncation` and `padding`
//! are written back as read but not applied: ferrolm takes them per call (`max_length`,
//! `truncation`, `padding`), and says so when it loads a file that sets them.

use serde_json::Value;

use super::{
    BertNormalizer, Bpe, BpeOptions, Chars, Matching, Model, PairPiece, PreTokenizer, Template, Tokenizer, TrimOffsets,
    WordPiece, WordPieceOptions,
};
use crate::{bail, Error, Result};

fn fmt_err(msg: impl Into<String>) -> Error {
    Error::Format(msg.into())
}

/// Typed access to JSON fields with error messages that name the field.
trait Field {
    fn field<'a>(&'a self, name: &str) -> Option<&'a Value>;
    fn str_field(&self, ctx: &str, name: &str) -> Result<Option<&str>> {
        match self.field(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(fmt_err(format!("{ctx}.{name} must be a string"))),
        }
    }
    fn bool_field(&self, ctx: &str, name: &str, default: bool) -> Result<bool> {
        match self.field(name) {
            None | Some(Value::Null) => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(fmt_err(format!("{ctx}.{name} must be true or false"))),
        }
    }
    fn type_name(&self, ctx: &str) -> Result<&str> {
        self.str_field(ctx, "type")?.ok_or_else(|| fmt_err(format!("{ctx} has no \"type\"")))
    }
}

impl Field for Value {
    fn field<'a>(&'a self, name: &str) -> Option<&'a Value> {
        self.get(name)
    }
}

fn as_u32(v: &Value, ctx: &str) -> Result<u32> {
    v.as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| fmt_err(format!("{ctx} must be an integer from 0 to {}", u32::MAX)))
}

/// Reads `{"token": id, ...}`.
fn read_vocab(v: Option<&Value>, ctx: &str) -> Result<Vec<(String, u32)>> {
    let obj = v.and_then(Value::as_object).ok_or_else(|| fmt_err(format!("{ctx} must be an object of token: id")))?;
    let mut out = Vec::with_capacity(obj.len());
    for (token, id) in obj {
        out.push((token.clone(), as_u32(id, &format!("{ctx}[{token:?}]"))?));
    }
    out.sort_by_key(|&(_, id)| id);
    for w in out.windows(2) {
        if w[0].1 == w[1].1 {
            bail!(Format, "{ctx}: tokens {:?} and {:?} share id {}", w[0].0, w[1].0, w[0].1);
        }
    }
    Ok(out)
}

/// Reads merges as `["a b", ...]` (classic) or `[["a", "b"], ...]` (tokenizers ≥ 0.20).
fn read_merges(v: Option<&Value>) -> Result<Vec<(String, String)>> {
    let arr = match v {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(a)) => a,
        Some(_) => bail!(Format, "model.merges must be a list"),
    };
    arr.iter()
        .enumerate()
        .map(|(i, m)| match m {
            Value::String(s) => {
                split_merge_line(s).ok_or_else(|| fmt_err(format!("model.merges[{i}] {s:?} is not \"left right\"")))
            }
            Value::Array(p) if p.len() == 2 && p[0].is_string() && p[1].is_string() => {
                Ok((p[0].as_str().unwrap().to_string(), p[1].as_str().unwrap().to_string()))
            }
            _ => Err(fmt_err(format!("model.merges[{i}] must be \"left right\" or [left, right]"))),
        })
        .collect()
}

fn split_merge_line(s: &str) -> Option<(String, String)> {
    let mut parts = s.split(' ');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(a), Some(b), None) if !a.is_empty() && !b.is_empty() => Some((a.to_string(), b.to_string())),
        _ => None,
    }
}

/// A `Sequence` of one step (its steps under `list`) as that step, as Hugging Face runs it
/// (some files wrap a single normalizer or pre-tokenizer so); an empty one of normalizers or
/// pre-tokenizers as none. Not an empty decoder Sequence: it joins tokens as they are, where
/// no decoder joins them with spaces, and is refused as other unsupported decoders are.
fn single_step<'a>(v: &'a Value, list: &str) -> &'a Value {
    static NONE: Value = Value::Null;
    match (v.get("type").and_then(Value::as_str), v.get(list).and_then(Value::as_array).map(Vec::as_slice)) {
        (Some("Sequence"), Some([])) if list != "decoders" => &NONE,
        (Some("Sequence"), Some([step])) => step,
        _ => v,
    }
}

/// The byte-level pre-tokenizer described by `pre_tokenizer`: (pattern, add_prefix_space), or
/// `None` when there is no ByteLevel step.
fn byte_level_pretokenizer(v: &Value) -> Result<Option<(PreTokenizer, bool)>> {
    if v.is_null() {
        return Ok(None);
    }
    let ctx = "pre_tokenizer";
    match v.type_name(ctx)? {
        "ByteLevel" => {
            if !v.bool_field(ctx, "use_regex", true)? {
                bail!(Format, "pre_tokenizer ByteLevel(use_regex=false) without a Split step is not supported");
            }
            Ok(Some((PreTokenizer::Gpt2, v.bool_field(ctx, "add_prefix_space", false)?)))
        }
        "Sequence" => {
            let steps = v
                .get("pretokenizers")
                .and_then(Value::as_array)
                .ok_or_else(|| fmt_err("pre_tokenizer.pretokenizers must be a list"))?;
            match steps.as_slice() {
                [split, bl] if split.type_name(ctx)? == "Split" && bl.type_name(ctx)? == "ByteLevel" => {
                    let sctx = "pre_tokenizer.pretokenizers[0]";
                    if split.str_field(sctx, "behavior")? != Some("Isolated")
                        || split.bool_field(sctx, "invert", false)?
                    {
                        bail!(Format, "{sctx}: only Split(behavior=\"Isolated\", invert=false) is supported");
                    }
                    if bl.bool_field(ctx, "use_regex", true)? {
                        bail!(Format, "pre_tokenizer: a Split followed by ByteLevel(use_regex=true) is not supported");
                    }
                    // HF adds the prefix space to every piece the Split made, not to the text.
                    if bl.bool_field(ctx, "add_prefix_space", false)? {
                        bail!(
                            Format,
                            "pre_tokenizer: a Split followed by ByteLevel(add_prefix_space=true) is not supported"
                        );
                    }
                    let pattern = split.get("pattern").ok_or_else(|| fmt_err(format!("{sctx} has no pattern")))?;
                    let regex = match (pattern.str_field(sctx, "Regex")?, pattern.str_field(sctx, "String")?) {
                        (Some(r), _) => r.to_string(),
                        (None, Some(s)) => regex_syntax::escape(s),
                        _ => bail!(Format, "{sctx}.pattern must be {{\"Regex\": ...}} or {{\"String\": ...}}"),
                    };
                    let pre = PreTokenizer::from_pattern(&regex).map_err(|e| fmt_err(e.to_string()))?;
                    Ok(Some((pre, false)))
                }
                _ => bail!(Format, "pre_tokenizer Sequence is supported only as [Split, ByteLevel]"),
            }
        }
        other => bail!(
            Format,
            "pre_tokenizer type {other:?} is not supported with a BPE model (byte-level BPE needs ByteLevel)"
        ),
    }
}

/// A `TemplateProcessing`'s `single` or `pair` list: sequences and special tokens (each of
/// which may stand for several ids), with their type ids.
fn template_pieces(v: &Value, list: &[Value], name: &str) -> Result<Vec<PairPiece>> {
    let ctx = "post_processor";
    let specials = v.get("special_tokens").and_then(Value::as_object);
    let type_id = |p: &Value, i: usize| -> Result<u32> {
        p.get("type_id").map_or(Ok(0), |t| as_u32(t, &format!("{ctx}.{name}[{i}].type_id")))
    };
    let mut pieces = Vec::new();
    for (i, piece) in list.iter().enumerate() {
        if let Some(seq) = piece.get("Sequence") {
            let t = type_id(seq, i)?;
            match seq.get("id").and_then(Value::as_str) {
                Some("A") => pieces.push(PairPiece::A(t)),
                Some("B") => pieces.push(PairPiece::B(t)),
                _ => bail!(Format, "{ctx}.{name}[{i}]: a sequence must be $A or $B"),
            }
        } else if let Some(sp) = piece.get("SpecialToken") {
            let token =
                sp.get("id").and_then(Value::as_str).ok_or_else(|| fmt_err(format!("{ctx}.{name}[{i}] has no id")))?;
            let ids = specials
                .and_then(|m| m.get(token))
                .and_then(|s| s.get("ids"))
                .and_then(Value::as_array)
                .ok_or_else(|| fmt_err(format!("{ctx}.special_tokens has no ids for {token:?}")))?;
            let t = type_id(sp, i)?;
            for id in ids {
                pieces.push(PairPiece::Special(as_u32(id, &format!("{ctx}.special_tokens[{token:?}].ids"))?, t));
            }
        } else {
            bail!(Format, "{ctx}.{name}[{i}] must be a Sequence or a SpecialToken");
        }
    }
    Ok(pieces)
}

/// Post-processor → template (ids before and after the text, and a pair's framing).
fn read_template(v: &Value) -> Result<Template> {
    if v.is_null() {
        return Ok(Template::default());
    }
    let ctx = "post_processor";
    let pair_id = |p: Option<&Value>, name: &str| -> Result<u32> {
        match p.and_then(Value::as_array).map(Vec::as_slice) {
            Some([Value::String(_), id]) => as_u32(id, &format!("{ctx}.{name}[1]")),
            _ => Err(fmt_err(format!("{ctx}.{name} must be [token, id]"))),
        }
    };
    // HF's defaults for both processors that trim: trim_offsets and add_prefix_space true.
    let trim = |v: &Value| -> Result<Option<TrimOffsets>> {
        Ok(v.bool_field(ctx, "trim_offsets", true)?
            .then_some(TrimOffsets { add_prefix_space: v.bool_field(ctx, "add_prefix_space", true)? }))
    };
    match v.type_name(ctx)? {
        "ByteLevel" => Ok(Template { trim_offsets: trim(v)?, ..Template::default() }),
        kind @ ("BertProcessing" | "RobertaProcessing") => {
            let (cls, sep) = (pair_id(v.get("cls"), "cls")?, pair_id(v.get("sep"), "sep")?);
            let roberta = kind == "RobertaProcessing";
            use PairPiece::{Special, A, B};
            Ok(Template {
                prefix: vec![cls],
                suffix: vec![sep],
                trim_offsets: if roberta { trim(v)? } else { None },
                // RoBERTa: <s> A </s></s> B </s>, every token of type 0.
                pair: roberta
                    .then(|| vec![Special(cls, 0), A(0), Special(sep, 0), Special(sep, 0), B(0), Special(sep, 0)]),
            })
        }
        "TemplateProcessing" => {
            let single = v
                .get("single")
                .and_then(Value::as_array)
                .ok_or_else(|| fmt_err("post_processor.single must be a list"))?;
            let mut t = Template::default();
            let mut seen_sequence = false;
            for piece in template_pieces(v, single, "single")? {
                match piece {
                    PairPiece::A(_) if !seen_sequence => seen_sequence = true,
                    PairPiece::Special(id, _) if seen_sequence => t.suffix.push(id),
                    PairPiece::Special(id, _) => t.prefix.push(id),
                    _ => bail!(Format, "{ctx}.single: only one sequence, $A, is supported"),
                }
            }
            if let Some(pair) = v.get("pair").and_then(Value::as_array) {
                let pieces = template_pieces(v, pair, "pair")?; // in any order, as Hugging Face takes it
                t.pair = Some(pieces).filter(|p| *p != t.pair_pieces());
            }
            Ok(t)
        }
        "Sequence" => {
            let steps = v
                .get("processors")
                .and_then(Value::as_array)
                .ok_or_else(|| fmt_err("post_processor.processors must be a list"))?;
            let mut t = Template::default();
            for step in steps {
                let s = read_template(step)?;
                t.prefix.extend(s.prefix);
                t.suffix.extend(s.suffix);
                t.trim_offsets = t.trim_offsets.or(s.trim_offsets);
                t.pair = t.pair.or(s.pair);
            }
            Ok(t)
        }
        other => bail!(Format, "post_processor type {other:?} is not supported"),
    }
}

fn read_bert_normalizer(v: &Value) -> Result<Option<BertNormalizer>> {
    if v.is_null() {
        return Ok(None);
    }
    let ctx = "normalizer";
    match v.type_name(ctx)? {
        "BertNormalizer" => Ok(Some(BertNormalizer {
            clean_text: v.bool_field(ctx, "clean_text", true)?,
            handle_chinese_chars: v.bool_field(ctx, "handle_chinese_chars", true)?,
            strip_accents: match v.get("strip_accents") {
                None | Some(Value::Null) => None,
                Some(Value::Bool(b)) => Some(*b),
                Some(_) => bail!(Format, "normalizer.strip_accents must be true, false or null"),
            },
            lowercase: v.bool_field(ctx, "lowercase", true)?,
        })),
        other => bail!(Format, "normalizer type {other:?} is not supported with WordPiece (use BertNormalizer)"),
    }
}

/// Parses `tokenizer.json` text (a byte-order mark at its start is skipped, as `parse_json` does).
pub fn from_json(text: &str) -> Result<Tokenizer> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let root: Value = serde_json::from_str(text).map_err(|e| fmt_err(format!("not valid JSON: {e}")))?;
    if !root.is_object() {
        bail!(Format, "tokenizer.json must be a JSON object");
    }
    let null = Value::Null;
    let model =
        root.get("model").filter(|m| m.is_object()).ok_or_else(|| fmt_err("tokenizer.json has no \"model\" object"))?;
    let normalizer = single_step(root.get("normalizer").unwrap_or(&null), "normalizers");
    let pre = single_step(root.get("pre_tokenizer").unwrap_or(&null), "pretokenizers");
    let post = root.get("post_processor").unwrap_or(&null);
    let decoder = single_step(root.get("decoder").unwrap_or(&null), "decoders");

    // Whether the normalizer changes text (strip_accents: null follows lowercase).
    let normalizer_type = normalizer.get("type").and_then(Value::as_str);
    let normalizes = normalizer_type == Some("BertNormalizer")
        && ["clean_text", "handle_chinese_chars", "lowercase"]
            .iter()
            .chain(normalizer.get("strip_accents").filter(|v| !v.is_null()).map(|_| &"strip_accents"))
            .any(|k| normalizer.get(*k).is_none_or(|v| v.as_bool() != Some(false)));
    let mut specials: Vec<(String, u32)> = Vec::new();
    let mut ordinary: Vec<u32> = Vec::new();
    let mut normalized: Vec<u32> = Vec::new();
    let mut matching: Vec<(u32, Matching)> = Vec::new();
    match root.get("added_tokens") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for (i, t) in items.iter().enumerate() {
                let ctx = format!("added_tokens[{i}]");
                let content = t.str_field(&ctx, "content")?.ok_or_else(|| fmt_err(format!("{ctx} has no content")))?;
                let id = as_u32(t.get("id").unwrap_or(&null), &format!("{ctx}.id"))?;
                let how = Matching {
                    lstrip: t.bool_field(&ctx, "lstrip", false)?,
                    rstrip: t.bool_field(&ctx, "rstrip", false)?,
                    single_word: t.bool_field(&ctx, "single_word", false)?,
                };
                if how != Matching::default() {
                    matching.push((id, how));
                }
                let special = t.bool_field(&ctx, "special", true)?;
                // HF matches `normalized` added tokens in normalized text, which ferrolm matches
                // in the text as given: the same where normalizing cannot change what they
                // match (no normalizer; NFC, for white space, which it neither changes nor
                // composes with), refused elsewhere (BERT's lowercasing).
                let in_normalized = t.bool_field(&ctx, "normalized", !special)?;
                let unchanged = match normalizer_type {
                    _ if normalizer.is_null() => true,
                    Some("BertNormalizer") => !normalizes,
                    Some("NFC") => content.chars().all(char::is_whitespace),
                    _ => false,
                };
                if in_normalized && !unchanged {
                    bail!(
                        Format,
                        "{ctx} ({content:?}) is matched in normalized text, which ferrolm does not implement"
                    );
                }
                if !special {
                    ordinary.push(id);
                }
                if in_normalized {
                    normalized.push(id);
                }
                specials.push((content.to_string(), id));
            }
        }
        Some(_) => bail!(Format, "added_tokens must be a list"),
    }

    let vocab_end =
        model.get("vocab").and_then(Value::as_object).and_then(|v| v.values().filter_map(Value::as_u64).max());
    let mctx = "model";
    let model = match model.type_name(mctx)? {
        "BPE" => {
            for opt in ["continuing_subword_prefix", "end_of_word_suffix"] {
                if model.str_field(mctx, opt)?.is_some_and(|s| !s.is_empty()) {
                    bail!(Format, "model.{opt} is not supported for byte-level BPE");
                }
            }
            if model.bool_field(mctx, "byte_fallback", false)? {
                bail!(Format, "model.byte_fallback (SentencePiece-style BPE) is not supported");
            }
            if model.get("dropout").and_then(Value::as_f64).is_some_and(|p| p > 0.0) {
                bail!(Format, "model.dropout (BPE-dropout, random merges while encoding) is not supported");
            }
            let vocab = read_vocab(model.get("vocab"), "model.vocab")?;
            let merges = read_merges(model.get("merges"))?;
            let unk = model.str_field(mctx, "unk_token")?.map(str::to_string);
            if unk.is_some() && model.bool_field(mctx, "fuse_unk", false)? {
                bail!(Format, "model.fuse_unk (one unknown token for a run of unknown ones) is not supported");
            }
            match byte_level_pretokenizer(pre)? {
                Some((pretok, add_prefix_space)) => {
                    let nfc = match normalizer_type {
                        _ if normalizer.is_null() => false,
                        Some("NFC") => true,
                        _ => bail!(Format, "normalizer {normalizer} with byte-level BPE is not supported (NFC is)"),
                    };
                    expect_decoder(decoder, "ByteLevel")?;
                    let ignore_merges = model.bool_field(mctx, "ignore_merges", false)?;
                    let options = BpeOptions { ignore_merges, unk_token: unk, add_prefix_space, nfc };
                    Model::Bpe(Bpe::new(vocab, &merges, pretok, options)?)
                }
                None if merges.is_empty() && normalizer.is_null() => {
                    // A character model: every ordinary vocabulary entry is one character.
                    expect_decoder(decoder, "Fuse")?;
                    let mut entries = Vec::new();
                    let mut unk_entry = None;
                    for (token, id) in vocab {
                        let mut it = token.chars();
                        match (it.next(), it.next()) {
                            // First: an unknown token of one character ("?") stands for unknown ones too.
                            _ if unk.as_deref() == Some(token.as_str()) => unk_entry = Some((token, id)),
                            (Some(c), None) => entries.push((c, id)),
                            _ if specials.iter().any(|(s, _)| *s == token) => {}
                            _ => bail!(Format, "BPE model without pre-tokenizer is read as a character model, but token {token:?} is not one character"),
                        }
                    }
                    if let Some(unk) = unk.as_ref().filter(|_| unk_entry.is_none()) {
                        bail!(Format, "model.unk_token {unk:?} is not in model.vocab");
                    }
                    Model::Chars(Chars::new(entries, unk_entry)?)
                }
                None => bail!(Format, "BPE without a ByteLevel pre-tokenizer is not supported (only byte-level BPE, WordPiece and character models are)"),
            }
        }
        "WordPiece" => {
            let ctx = "pre_tokenizer";
            if pre.is_null() || pre.type_name(ctx)? != "BertPreTokenizer" {
                bail!(Format, "WordPiece is supported with the BertPreTokenizer pre-tokenizer only");
            }
            expect_decoder(decoder, "WordPiece")?;
            let cleanup = if decoder.is_null() { true } else { decoder.bool_field("decoder", "cleanup", true)? };
            let prefix = model.str_field(mctx, "continuing_subword_prefix")?.unwrap_or("##");
            // ferrolm decodes with the model's prefix; Hugging Face strips the decoder's own.
            let decoded =
                if decoder.is_null() { prefix } else { decoder.str_field("decoder", "prefix")?.unwrap_or("##") };
            if decoded != prefix {
                bail!(Format, "decoder.prefix {decoded:?} differs from model.continuing_subword_prefix {prefix:?}");
            }
            let options = WordPieceOptions {
                unk_token: model.str_field(mctx, "unk_token")?.unwrap_or("[UNK]").to_string(),
                prefix: prefix.to_string(),
                max_input_chars_per_word: match model.get("max_input_chars_per_word") {
                    None | Some(Value::Null) => 100,
                    Some(v) => as_u32(v, "model.max_input_chars_per_word")? as usize,
                },
                normalizer: read_bert_normalizer(normalizer)?,
                cleanup,
            };
            Model::WordPiece(WordPiece::new(read_vocab(model.get("vocab"), "model.vocab")?, options)?)
        }
        other => bail!(Format, "model type {other:?} is not supported (BPE and WordPiece are)"),
    };
    let mut tok = Tokenizer::new(model, &specials, read_template(post)?)?;
    // Kept only when the template would write it otherwise (keys in the file's order otherwise).
    if !post.is_null() {
        let mut rebuilt = String::new();
        template_json(&tok).write(&mut rebuilt, 0);
        if serde_json::from_str::<Value>(&rebuilt).ok().as_ref() != Some(post) {
            tok.hf_kept.post_processor = Some(post.clone());
        }
    }
    tok.hf_kept.truncation = root.get("truncation").filter(|v| !v.is_null()).cloned();
    tok.hf_kept.padding = root.get("padding").filter(|v| !v.is_null()).cloned();
    for id in ordinary {
        tok.specials.set_special(id, false)?;
    }
    for (id, how) in matching {
        tok.specials.set_matching(id, how)?;
    }
    for id in normalized {
        tok.specials.set_normalized(id, true)?;
    }
    ensure_no_gap(&tok, vocab_end, "model.vocab")?;
    Ok(tok)
}

/// A Format error when an id below `last` (the model vocabulary's largest) has no token, in
/// the vocabulary or the added tokens: a damaged file. A model would sample that id, which no
/// text holds (generation failed part-way).
fn ensure_no_gap(tok: &Tokenizer, last: Option<u64>, ctx: &str) -> Result<()> {
    let Some(last) = last.and_then(|n| u32::try_from(n).ok()) else { return Ok(()) };
    match (0..last).find(|&id| tok.id_to_token(id).is_none()) {
        Some(id) => bail!(Format, "{ctx} has no token for id {id}, below its largest id {last} (a damaged file?)"),
        None => Ok(()),
    }
}

/// A decoder other than the model's own would decode differently from Hugging Face. None
/// (`null`: a file built without one) decodes as the model's own does, where Hugging Face
/// joins the tokens' strings with spaces ("ĠHello Ġworld"): the README says so; the ids are
/// the same, and a file saved again names the decoder.
fn expect_decoder(decoder: &Value, expected: &str) -> Result<()> {
    match decoder.get("type").and_then(Value::as_str) {
        _ if decoder.is_null() => Ok(()),
        Some(t) if t == expected => Ok(()),
        Some(t) => bail!(Format, "decoder {t:?} is not supported with this model (its decoder is {expected})"),
        None => bail!(Format, "decoder has no \"type\""),
    }
}

/// Reads GPT-2 `vocab.json` + `merges.txt` contents.
pub fn from_vocab_merges(vocab_json: &str, merges_txt: &str, pretok: PreTokenizer) -> Result<Tokenizer> {
    let v: Value =
        serde_json::from_str(vocab_json).map_err(|e| fmt_err(format!("vocab.json is not valid JSON: {e}")))?;
    let vocab = read_vocab(Some(&v), "vocab.json")?;
    let last = vocab.last().map(|&(_, id)| u64::from(id));
    let mut merges = Vec::new();
    for (i, line) in merges_txt.lines().enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if (i == 0 && line.starts_with("#version")) || line.is_empty() {
            continue;
        }
        merges.push(
            split_merge_line(line)
                .ok_or_else(|| fmt_err(format!("merges.txt line {}: {line:?} is not \"left right\"", i + 1)))?,
        );
    }
    let specials: Vec<(String, u32)> = vocab.iter().filter(|(t, _)| t == "<|endoftext|>").cloned().collect();
    let model = Bpe::new(vocab, &merges, pretok, BpeOptions::default())?;
    let tok = Tokenizer::new(Model::Bpe(model), &specials, Template::default())?;
    ensure_no_gap(&tok, last, "vocab.json")?;
    Ok(tok)
}

/// JSON for writing, with object keys kept in the order given (Hugging Face's layout: small
/// settings objects as HF writes them, vocabularies in id order).
#[derive(Clone, Debug)]
enum J {
    Null,
    Bool(bool),
    Num(u64),
    Str(String),
    Arr(Vec<J>),
    Obj(Vec<(&'static str, J)>),
    /// An object with owned keys (vocabularies).
    Map(Vec<(String, J)>),
    /// A number that is not a u64, written as given.
    Raw(String),
}

impl From<&Value> for J {
    fn from(v: &Value) -> J {
        match v {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Number(n) => n.as_u64().map_or_else(|| J::Raw(n.to_string()), J::Num),
            Value::String(s) => J::Str(s.clone()),
            Value::Array(items) => J::Arr(items.iter().map(J::from).collect()),
            Value::Object(fields) => J::Map(fields.iter().map(|(k, v)| (k.clone(), J::from(v))).collect()),
        }
    }
}

impl From<bool> for J {
    fn from(b: bool) -> J {
        J::Bool(b)
    }
}
impl From<u32> for J {
    fn from(n: u32) -> J {
        J::Num(n as u64)
    }
}
impl From<usize> for J {
    fn from(n: usize) -> J {
        J::Num(n as u64)
    }
}
impl From<&str> for J {
    fn from(s: &str) -> J {
        J::Str(s.to_string())
    }
}
impl From<String> for J {
    fn from(s: String) -> J {
        J::Str(s)
    }
}
impl<T: Into<J>> From<Option<T>> for J {
    fn from(v: Option<T>) -> J {
        v.map_or(J::Null, Into::into)
    }
}
impl From<Vec<J>> for J {
    fn from(v: Vec<J>) -> J {
        J::Arr(v)
    }
}

/// `obj!{"key": value, ...}` builds an ordered [`J::Obj`].
macro_rules! obj {
    ($($k:literal : $v:expr),* $(,)?) => { J::Obj(vec![$(($k, J::from($v))),*]) };
}

impl J {
    /// Pretty-prints with two-space indentation (the layout of `serde_json::to_string_pretty`).
    fn write(&self, out: &mut String, indent: usize) {
        let pad = |out: &mut String, n: usize| out.extend(std::iter::repeat_n(' ', n));
        let key = |out: &mut String, k: &str| {
            out.push_str(&serde_json::to_string(k).expect("strings serialize"));
            out.push_str(": ");
        };
        match self {
            J::Null => out.push_str("null"),
            J::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            J::Num(n) => out.push_str(&n.to_string()),
            J::Raw(s) => out.push_str(s),
            J::Str(s) => out.push_str(&serde_json::to_string(s).expect("strings serialize")),
            J::Arr(items) if items.is_empty() => out.push_str("[]"),
            J::Arr(items) => {
                out.push_str("[\n");
                for (i, item) in items.iter().enumerate() {
                    pad(out, indent + 2);
                    item.write(out, indent + 2);
                    out.push_str(if i + 1 < items.len() { ",\n" } else { "\n" });
                }
                pad(out, indent);
                out.push(']');
            }
            J::Obj(fields) if fields.is_empty() => out.push_str("{}"),
            J::Map(fields) if fields.is_empty() => out.push_str("{}"),
            J::Obj(_) | J::Map(_) => {
                let fields: Vec<(&str, &J)> = match self {
                    J::Obj(f) => f.iter().map(|(k, v)| (*k, v)).collect(),
                    J::Map(f) => f.iter().map(|(k, v)| (k.as_str(), v)).collect(),
                    _ => unreachable!(),
                };
                out.push_str("{\n");
                for (i, (k, v)) in fields.iter().enumerate() {
                    pad(out, indent + 2);
                    key(out, k);
                    v.write(out, indent + 2);
                    out.push_str(if i + 1 < fields.len() { ",\n" } else { "\n" });
                }
                pad(out, indent);
                out.push('}');
            }
        }
    }
}

fn vocab_json<'a>(entries: impl Iterator<Item = (&'a str, u32)>) -> J {
    J::Map(entries.map(|(s, id)| (s.to_string(), J::from(id))).collect())
}

fn template_json(tok: &Tokenizer) -> J {
    let t = tok.template();
    let byte_level = obj! {"type": "ByteLevel", "add_prefix_space": t.trim_offsets.is_none_or(|t| t.add_prefix_space),
    "trim_offsets": t.trim_offsets.is_some(), "use_regex": true};
    if t.prefix.is_empty() && t.suffix.is_empty() {
        return match tok.model() {
            Model::Bpe(_) => byte_level,
            _ => J::Null,
        };
    }
    let name = |id: u32| tok.id_to_token(id).unwrap_or_default();
    let special = |id: u32, type_id: u32| obj! {"SpecialToken": obj! {"id": name(id), "type_id": type_id}};
    let seq = |s: &str, type_id: u32| obj! {"Sequence": obj! {"id": s, "type_id": type_id}};
    let mut single: Vec<J> = t.prefix.iter().map(|&i| special(i, 0)).collect();
    single.push(seq("A", 0));
    single.extend(t.suffix.iter().map(|&i| special(i, 0)));
    let pieces = t.pair_pieces();
    let pair: Vec<J> = pieces
        .iter()
        .map(|&p| match p {
            PairPiece::A(type_id) => seq("A", type_id),
            PairPiece::B(type_id) => seq("B", type_id),
            PairPiece::Special(id, type_id) => special(id, type_id),
        })
        .collect();
    let mut specials: Vec<(String, J)> = Vec::new();
    for id in t.special_ids() {
        if !specials.iter().any(|(k, _)| *k == name(id)) {
            let entry = obj! {"id": name(id), "ids": vec![J::from(id)], "tokens": vec![J::from(name(id))]};
            specials.push((name(id), entry));
        }
    }
    let template =
        obj! {"type": "TemplateProcessing", "single": single, "pair": pair, "special_tokens": J::Map(specials)};
    match (tok.model(), t.trim_offsets) {
        (Model::Bpe(_), Some(_)) => obj! {"type": "Sequence", "processors": vec![byte_level, template]},
        _ => template,
    }
}

/// Serializes a tokenizer to `tokenizer.json` text (pretty-printed, vocabulary in id order).
pub fn to_json(tok: &Tokenizer) -> String {
    let added: Vec<J> = {
        let mut sp: Vec<(&str, u32)> = tok.special_tokens().iter().collect();
        sp.sort_by_key(|&(_, id)| id);
        sp.into_iter()
            .map(|(content, id)| {
                let how = tok.special_tokens().matching(id);
                let sp = tok.special_tokens();
                obj! {"id": id, "content": content, "single_word": how.single_word, "lstrip": how.lstrip,
                "rstrip": how.rstrip, "normalized": sp.is_normalized(id), "special": sp.is_special(id)}
            })
            .collect()
    };
    let byte_level = |add_prefix_space: bool, use_regex: bool| {
        obj! {"type": "ByteLevel", "add_prefix_space": add_prefix_space, "trim_offsets": true, "use_regex": use_regex}
    };
    let (normalizer, pre_tokenizer, decoder, model) = match tok.model() {
        Model::Bpe(m) => {
            let name = |id: u32| m.id_to_token(id).unwrap_or_default();
            // Classic "left right" strings when unambiguous (readable by every HF version).
            let spaced = m.merges().iter().any(|&(a, b)| name(a).contains(' ') || name(b).contains(' '));
            let merges: Vec<J> = m
                .merges()
                .iter()
                .map(|&(a, b)| {
                    if spaced {
                        J::Arr(vec![name(a).into(), name(b).into()])
                    } else {
                        J::from(format!("{} {}", name(a), name(b)))
                    }
                })
                .collect();
            let pre = match &m.pretokenizer {
                PreTokenizer::Gpt2 => byte_level(m.add_prefix_space, true),
                other => obj! {"type": "Sequence", "pretokenizers": vec![
                    obj! {"type": "Split", "pattern": obj! {"Regex": other.pattern()}, "behavior": "Isolated", "invert": false},
                    byte_level(m.add_prefix_space, false),
                ]},
            };
            let opts = m.options();
            let model = obj! {
                "type": "BPE", "dropout": J::Null, "unk_token": opts.unk_token, "continuing_subword_prefix": J::Null,
                "end_of_word_suffix": J::Null, "fuse_unk": false, "byte_fallback": false,
                "ignore_merges": opts.ignore_merges, "vocab": vocab_json(m.vocab()), "merges": merges,
            };
            let normalizer = if opts.nfc {
                obj! {"type": "NFC"}
            } else {
                J::Null
            };
            (normalizer, pre, byte_level(true, true), model)
        }
        Model::WordPiece(m) => {
            let opts = m.options();
            let normalizer = match &opts.normalizer {
                Some(n) => obj! {"type": "BertNormalizer", "clean_text": n.clean_text,
                "handle_chinese_chars": n.handle_chinese_chars, "strip_accents": n.strip_accents, "lowercase": n.lowercase},
                None => J::Null,
            };
            let model = obj! {"type": "WordPiece", "unk_token": opts.unk_token, "continuing_subword_prefix": opts.prefix.clone(),
            "max_input_chars_per_word": opts.max_input_chars_per_word, "vocab": vocab_json(m.vocab())};
            let decoder = obj! {"type": "WordPiece", "prefix": opts.prefix, "cleanup": opts.cleanup};
            (normalizer, obj! {"type": "BertPreTokenizer"}, decoder, model)
        }
        Model::Chars(m) => {
            let mut entries: Vec<(String, u32)> = m.entries().map(|(c, id)| (c.to_string(), id)).collect();
            entries.extend(m.unk().map(|(s, id)| (s.to_string(), id)));
            entries.extend(tok.special_tokens().iter().map(|(s, id)| (s.to_string(), id)));
            entries.sort_by_key(|&(_, id)| id);
            entries.dedup_by_key(|e| e.1);
            let model = obj! {
                "type": "BPE", "dropout": J::Null, "unk_token": m.unk().map(|u| u.0), "continuing_subword_prefix": J::Null,
                "end_of_word_suffix": J::Null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                "vocab": vocab_json(entries.iter().map(|(s, id)| (s.as_str(), *id))), "merges": Vec::<J>::new(),
            };
            (J::Null, J::Null, obj! {"type": "Fuse"}, model)
        }
    };
    let root = obj! {
        "version": "1.0",
        "truncation": tok.hf_kept.truncation.as_ref().map_or(J::Null, J::from),
        "padding": tok.hf_kept.padding.as_ref().map_or(J::Null, J::from),
        "added_tokens": added,
        "normalizer": normalizer,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": tok.hf_kept.post_processor.as_ref().map_or_else(|| template_json(tok), J::from),
        "decoder": decoder,
        "model": model,
    };
    let mut out = String::with_capacity(1 << 16);
    root.write(&mut out, 0);
    out
}
