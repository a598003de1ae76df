"""WordPiece (BERT): equality with Hugging Face both ways, vocab.txt, decoding, options."""

from __future__ import annotations

import copy
import pickle
import warnings

import pytest

import ferrolm
from tokenizer_corpus import adversarial_corpus, shakespeare_path

hf = pytest.importorskip("tokenizers")
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, trainers  # noqa: E402

ADV = adversarial_corpus()
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    return ADV + [shakespeare_path().read_text(encoding="utf-8")]


@pytest.fixture(scope="module")
def eval_texts(corpus) -> list[str]:
    return ADV + corpus[-1].split("\n\n")[:1000]


def hf_wordpiece(corpus, vocab_size, lowercase=True):
    tok = hf.Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator(corpus, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, show_progress=False))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    return tok


@pytest.mark.parametrize("lowercase", [True, False])
def test_hf_trained_vocab_gives_identical_ids(corpus, eval_texts, lowercase):
    ref = hf_wordpiece(corpus, 2500, lowercase)
    ours = ferrolm.Tokenizer.from_str(ref.to_str())
    assert ours.kind == "wordpiece"
    for text in eval_texts:
        assert ours.encode(text) == ref.encode(text).ids, repr(text[:60])
        assert ours.encode(text, add_special_tokens=False) == ref.encode(text, add_special_tokens=False).ids


def test_a_files_truncation_and_padding_are_kept_and_said_to_be_unapplied(corpus, tmp_path):
    """Hugging Face's encode applies the file's truncation and padding; ferrolm takes them per
    call. It ignored them silently and saved the file without them."""
    ref = hf_wordpiece(corpus[:50], 300)
    ref.enable_truncation(6)
    ref.enable_padding(length=10, pad_id=0, pad_token="[PAD]")
    text = "to be or not to be, that is the question"
    with pytest.warns(UserWarning, match="sets truncation and padding .* does not apply it .*encode_batch_padded"):
        ours = ferrolm.Tokenizer.from_str(ref.to_str())
    assert ours.encode_batch_padded([text], max_length=6, truncation=True)[0][0].tolist() == \
        ref.encode(text, add_special_tokens=True).ids[:6]  # what the settings give, asked for per call
    ours.save(tmp_path / "tokenizer.json")
    again = hf.Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    assert again.truncation == ref.truncation and again.padding == ref.padding
    assert again.encode(text).ids == ref.encode(text).ids
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once, at load: not again for each copy or pickle (a worker each)
        for again in (pickle.loads(pickle.dumps(ours)), copy.deepcopy(ours), ours.copy()):
            assert again.encode(text) == ours.encode(text) and again.to_str() == ours.to_str()
    ref.no_truncation()
    ref.no_padding()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a file without them loads quietly
        ferrolm.Tokenizer.from_str(ref.to_str())


def test_one_long_text_trains_as_its_lines_do(corpus):
    """One long text is counted in pieces (it was one unit: one thread, 16 bytes a character,
    deaf to Ctrl-C), cut between words: it gives the vocabulary its lines give."""
    text = "\n".join(corpus)
    assert len(text) > 1 << 17
    one = ferrolm.Tokenizer.train_from_iterator([text], kind="wordpiece", vocab_size=1500)
    assert one.get_vocab() == ferrolm.Tokenizer.train_from_iterator(text.split("\n"), kind="wordpiece",
                                                                     vocab_size=1500).get_vocab()


def test_sentence_pairs_match_hf_both_ways(corpus):
    """BERT's pair framing, [CLS] a [SEP] b [SEP] with type ids 0 then 1, for a vocabulary
    trained by ferrolm (read by HF) and one trained by HF (read by ferrolm)."""
    ours = ferrolm.Tokenizer.train_from_iterator(corpus, kind="wordpiece", vocab_size=800)
    for tok, ref in ((ours, hf.Tokenizer.from_str(ours.to_str())), (None, hf_wordpiece(corpus, 800))):
        tok = tok or ferrolm.Tokenizer.from_str(ref.to_str())
        for a, b in (("To be, or not to be?", "That is the question."), ("", "x"), ("Ünïcödé", "[MASK] here")):
            enc = ref.encode(a, b)
            assert tok.encode_pair(a, b) == (enc.ids, enc.type_ids), (a, b)
            for n in range(3, len(enc.ids)):  # truncated as HF truncates: the longer text first
                ref.enable_truncation(max_length=n)
                cut = ref.encode(a, b)
                assert tok.encode_pair(a, b, max_length=n) == (cut.ids, cut.type_ids), (a, b, n)
                assert tok.encode_with_offsets(a, max_length=n) == (ref.encode(a).ids, [tuple(o) for o in ref.encode(a).offsets])
                ref.no_truncation()


def test_our_vocab_loads_in_hf_with_identical_ids(corpus, eval_texts):
    ours = ferrolm.Tokenizer.train_from_iterator(corpus, kind="wordpiece", vocab_size=2500)
    ref = hf.Tokenizer.from_str(ours.to_str())
    for text in eval_texts:
        ids = ours.encode(text)
        assert ref.encode(text).ids == ids, repr(text[:60])
        assert ref.decode(ids, skip_special_tokens=True) == ours.decode(ids, skip_special_tokens=True)
        assert ref.decode(ids, skip_special_tokens=False) == ours.decode(ids)
    assert ours.vocab_size == 2500


def test_training_from_file_and_options(tmp_path):
    path = shakespeare_path()
    t = ferrolm.Tokenizer.train([str(path)], kind="wordpiece", vocab_size=1000, lowercase=False, limit_alphabet=100)
    assert t.token_to_id("[UNK]") == 1 and t.token_to_id("[CLS]") == 2
    ids = t.encode("ROMEO: Hello")
    assert ids[0] == t.token_to_id("[CLS]") and ids[-1] == t.token_to_id("[SEP]")
    assert t.decode(ids, skip_special_tokens=True) == "ROMEO : Hello"  # BERT's decoder keeps " :"
    t.save(str(tmp_path / "wp.json"))
    assert ferrolm.Tokenizer.from_file(str(tmp_path / "wp.json")).to_str() == t.to_str()


def test_bert_vocab_txt(tmp_path):
    vocab = SPECIALS + ["hello", "world", "un", "##aff", "##able", ",", "!", "a", "##b"]
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    t = ferrolm.Tokenizer.from_file(str(path))
    ids = t.encode("Hello, WORLD! unaffable xyz")
    assert [t.id_to_token(i) for i in ids] == ["[CLS]", "hello", ",", "world", "!", "un", "##aff", "##able", "[UNK]", "[SEP]"]
    ref = hf.Tokenizer.from_str(t.to_str())
    assert ref.encode("Hello, WORLD! unaffable xyz").ids == ids
    cased = ferrolm.Tokenizer.from_bert_vocab(str(path), lowercase=False)
    assert cased.encode("Hello", add_special_tokens=False) == [t.token_to_id("[UNK]")]
    # A directory's tokenizer_config.json says whether its vocab.txt is cased (as in HF).
    (tmp_path / "tokenizer_config.json").write_text('{"do_lower_case": false}')
    for where in (tmp_path, path):  # the directory, or its vocab.txt
        assert ferrolm.Tokenizer.from_file(str(where)).encode("Hello", add_special_tokens=False) == [t.token_to_id("[UNK]")]
    (tmp_path / "tokenizer_config.json").write_text('{"do_lower_case": true}')
    assert ferrolm.Tokenizer.from_file(str(tmp_path)).encode("Hello", add_special_tokens=False) == [t.token_to_id("hello")]
    # Lines as Hugging Face's WordPiece.from_file reads them: trailing whitespace is not the
    # token's ("hello " was never matched), and a blank line takes an id.
    path.write_text("\n".join(SPECIALS + ["hello \t", "", "world", "##s\r"]) + "\n", encoding="utf-8")
    ours = ferrolm.Tokenizer.from_bert_vocab(str(path))
    ref = hf.Tokenizer(models.WordPiece.from_file(str(path), unk_token="[UNK]"))
    ref.normalizer, ref.pre_tokenizer = normalizers.BertNormalizer(), pre_tokenizers.BertPreTokenizer()
    for text in ("hello worlds", "Hello, world!"):
        assert ours.encode(text, add_special_tokens=False) == ref.encode(text).ids
    assert ours.token_to_id("world") == ref.token_to_id("world") == len(SPECIALS) + 2
    with pytest.raises(IndexError, match="has no token"):  # the blank line's (Hugging Face's empty token)
        ours.decode([len(SPECIALS) + 1])


def test_offsets_point_into_original_text(corpus):
    t = ferrolm.Tokenizer.train_from_iterator(corpus, kind="wordpiece", vocab_size=1500)
    text = "Héllo, WÖRLD! 中文 unbelievable"
    ids, offsets = t.encode_with_offsets(text)
    assert offsets[0] == (0, 0) and offsets[-1] == (0, 0)  # [CLS], [SEP]
    words = [text[s:e] for s, e in offsets[1:-1]]
    assert words[:4] == ["Héllo", ",", "WÖRLD", "!"] or "".join(words).replace(" ", "") == text.replace(" ", "")
    ref = hf.Tokenizer.from_str(t.to_str()).encode(text)
    assert offsets == ref.offsets


def test_max_input_chars_per_word(corpus):
    t = ferrolm.Tokenizer.train_from_iterator(corpus, kind="wordpiece", vocab_size=800)
    assert t.encode("a" * 101, add_special_tokens=False) == [t.token_to_id("[UNK]")]


def test_added_tokens_matched_in_normalized_text_are_refused():
    # HF's add_tokens makes normalized tokens: with BERT's lowercasing, "FooBar" is matched in
    # "foobar x" too; ferrolm matches added tokens in the raw text, so it refuses the file.
    ref = hf_wordpiece(ADV[:200], 300)
    ref.add_tokens(["FooBar"])
    with pytest.raises(ferrolm.FormatError, match="normalized"):
        ferrolm.Tokenizer.from_str(ref.to_str())
    # A normalizer that changes nothing (a cased BERT without cleaning) matches raw text too.
    cased = hf.Tokenizer(models.WordPiece(unk_token="[UNK]"))
    cased.normalizer = normalizers.BertNormalizer(clean_text=False, handle_chinese_chars=False, strip_accents=False,
                                                  lowercase=False)
    cased.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    cased.train_from_iterator(ADV[:200], trainers.WordPieceTrainer(vocab_size=300, special_tokens=SPECIALS, show_progress=False))
    cased.add_tokens(["<ent>"])
    ours = ferrolm.Tokenizer.from_str(cased.to_str())
    assert ours.encode("a <ent> b") == cased.encode("a <ent> b").ids


def test_compatibility_ideographs_are_decomposed_when_stripping_accents(tmp_path):
    """U+F900 (a CJK compatibility ideograph) decomposes canonically to U+8C48, which HF's
    BertNormalizer does on its Chinese-character path too."""
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(SPECIALS + ["\u8c48", "\uf900", "\U0002f800", "\u4e3d"]) + "\n", encoding="utf-8")
    for lowercase in (True, False):
        ours = ferrolm.Tokenizer.from_bert_vocab(str(path), lowercase=lowercase)
        ref = hf.Tokenizer.from_str(ours.to_str())
        for text in ["\uf900", "a\uf900b \U0002f800", "\u8c48"]:
            assert ours.encode(text) == ref.encode(text).ids, (text, lowercase)


def test_an_empty_continuing_prefix_lets_every_token_continue_a_word():
    ref = hf.Tokenizer(models.WordPiece({"[UNK]": 0, "a": 1, "b": 2, "ab": 3}, unk_token="[UNK]", continuing_subword_prefix=""))
    ref.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    ref.decoder = decoders.WordPiece(prefix="")
    ours = ferrolm.Tokenizer.from_str(ref.to_str())
    for text in ["aaa", "ba", "abab b", "abc"]:
        assert ours.encode(text) == ref.encode(text).ids, text
        assert ours.decode(ours.encode(text)) == ref.decode(ref.encode(text).ids)
    # A decoder whose prefix is not the model's decodes otherwise in HF ("a ##b" kept its "##"): refused, as ferrolm
    # decodes with the model's (it loaded silently).
    ref.decoder = decoders.WordPiece(prefix="##")
    with pytest.raises(ValueError, match="decoder.prefix \"##\" differs from model.continuing_subword_prefix \"\""):
        ferrolm.Tokenizer.from_str(ref.to_str())


def test_long_text_is_encoded_in_chunks_like_one(corpus):
    """Past 64 KiB the text is normalised a chunk at a time (cut before a space or newline):
    ids and offsets still equal HF's for the whole text."""
    t = ferrolm.Tokenizer.train_from_iterator(corpus, kind="wordpiece", vocab_size=1500)
    ref = hf.Tokenizer.from_str(t.to_str())
    text = corpus[-1][:300_000].replace("e", "é", 500) + " 中文\u0301 x" + "y" * 70_000 + " tail"
    ids, offsets = t.encode_with_offsets(text)
    enc = ref.encode(text)
    assert ids == enc.ids and offsets == [tuple(o) for o in enc.offsets]
    assert t.encode(text) == ids
    # Text without spaces (Chinese, Japanese) is cut before its ideographs, each a word of its own.
    text = "中文字符。日本語のテキストé\u0301x" * 8000 + "語"
    ids, offsets = t.encode_with_offsets(text)
    enc = ref.encode(text)
    assert ids == enc.ids and offsets == [tuple(o) for o in enc.offsets]
