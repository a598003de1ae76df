//! Tokenizers through the public Rust API: train, save/load, encode/decode, batches, errors.

use ferrolm::tokenizer::{
    AllowedSpecial, EncodeOptions, ModelKind, PadOptions, Tokenizer, TrainerConfig, PATTERN_NAMES,
};
use ferrolm::{with_threads, Error};

fn corpus() -> Vec<String> {
    let base = [
        "The quick brown fox jumps over the lazy dog. It's 2024!",
        "  indented\tline with\ttabs\r\n and CRLF",
        "naïve café, Straße, İstanbul — Ελληνικά, кириллица, 中文文本, 日本語のテキスト",
        "emoji 👩‍👩‍👧‍👦 👍🏽 🏳️‍🌈 and combining e\u{301}\u{302}",
        "numbers 1234567890 ٣٤٥ ½ and contractions don't we'll THEY'VE",
        "control \u{0}\u{1b}\u{7f}\u{85}\u{200b}\u{feff} chars",
    ];
    (0..400).map(|i| format!("{} {}{}", base[i % base.len()], " ".repeat(i % 23), i)).collect()
}

fn tricky() -> Vec<String> {
    let mut v: Vec<String> = corpus().into_iter().take(12).collect();
    v.extend(["".into(), " ".repeat(10_000), "\n\n\n".into(), "\r\n".repeat(100), "x".repeat(5000)]);
    v.push("a<|endoftext|>b".into());
    v
}

#[test]
fn bpe_train_save_load_round_trip() {
    for pattern in PATTERN_NAMES {
        // Small enough for every pattern's pieces of this corpus (Qwen2's single digits merge less).
        let mut cfg = TrainerConfig::new(ModelKind::Bpe, 480);
        cfg.pattern = pattern.into();
        let tok = Tokenizer::train_from_texts(&corpus(), cfg).unwrap();
        assert_eq!(tok.vocab_size(), 480, "{pattern}");
        let json = tok.to_json();
        let again = Tokenizer::from_json(&json).unwrap();
        assert_eq!(again.to_json(), json);
        let opts = EncodeOptions::default();
        for text in tricky() {
            let ids = tok.encode(&text, &opts).unwrap();
            assert_eq!(again.encode(&text, &opts).unwrap(), ids);
            assert_eq!(tok.decode(&ids, false).unwrap(), text);
        }
        let dir = std::env::temp_dir().join(format!("ferrolm-tok-{}-{pattern}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tokenizer.json");
        tok.save(&path).unwrap();
        assert_eq!(Tokenizer::from_file(&path).unwrap().to_json(), json);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "no temporary file left behind");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn encode_does_not_depend_on_thread_count() {
    let tok = Tokenizer::train_from_texts(&corpus(), TrainerConfig::new(ModelKind::Bpe, 800)).unwrap();
    let texts = corpus();
    let opts = EncodeOptions::default();
    let one = with_threads(Some(1), || tok.encode_batch(&texts, &opts)).unwrap().unwrap();
    let two = with_threads(Some(2), || tok.encode_batch(&texts, &opts)).unwrap().unwrap();
    let serial: Vec<Vec<u32>> = texts.iter().map(|t| tok.encode(t, &opts).unwrap()).collect();
    assert_eq!(one, two);
    assert_eq!(one, serial);
    let trained_one = with_threads(Some(1), || {
        Tokenizer::train_from_texts(&texts, TrainerConfig::new(ModelKind::WordPiece, 300)).unwrap().to_json()
    })
    .unwrap();
    let trained_two = with_threads(Some(2), || {
        Tokenizer::train_from_texts(&texts, TrainerConfig::new(ModelKind::WordPiece, 300)).unwrap().to_json()
    })
    .unwrap();
    assert_eq!(trained_one, trained_two);
}

#[test]
fn wordpiece_and_chars() {
    let wp = Tokenizer::train_from_texts(&corpus(), TrainerConfig::new(ModelKind::WordPiece, 400)).unwrap();
    let ids = wp.encode("The quick brown fox", &EncodeOptions::default()).unwrap();
    assert_eq!(ids.first(), wp.token_to_id("[CLS]").as_ref());
    assert_eq!(ids.last(), wp.token_to_id("[SEP]").as_ref());
    assert_eq!(wp.decode(&ids, true).unwrap(), "the quick brown fox");
    assert_eq!(Tokenizer::from_json(&wp.to_json()).unwrap().to_json(), wp.to_json());

    let chars = Tokenizer::train_from_texts(&["hello world"], TrainerConfig::new(ModelKind::Chars, 0)).unwrap();
    assert_eq!(chars.vocab_size(), 8);
    let ids = chars.encode("hello", &EncodeOptions::default()).unwrap();
    assert_eq!(ids.len(), 5);
    assert_eq!(chars.decode(&ids, false).unwrap(), "hello");
    assert!(matches!(chars.encode("z", &EncodeOptions::default()), Err(Error::Argument(_))));
}

#[test]
fn special_tokens_padding_and_errors() {
    let mut cfg = TrainerConfig::new(ModelKind::Bpe, 500);
    cfg.special_tokens = vec!["<|endoftext|>".into(), "<|pad|>".into()];
    let tok = Tokenizer::train_from_texts(&corpus(), cfg).unwrap();
    let refuse = EncodeOptions { allowed_special: AllowedSpecial::None, ..Default::default() };
    assert!(matches!(tok.encode("x<|endoftext|>", &refuse), Err(Error::Argument(m)) if m.contains("<|endoftext|>")));
    assert!(matches!(tok.decode(&[0, 99_999], false), Err(Error::Index(_))));
    assert!(matches!(Tokenizer::from_json("{\"model\": 3}"), Err(Error::Format(_))));
    assert!(matches!(Tokenizer::from_file("/nonexistent/tokenizer.json"), Err(Error::Io { .. })));

    let pad = PadOptions { max_length: Some(6), truncation: true, ..Default::default() };
    let batch =
        tok.encode_batch_padded(&["a", "a much longer text than six tokens"], &EncodeOptions::default(), &pad).unwrap();
    assert_eq!((batch.rows, batch.cols), (2, 6));
    assert_eq!(batch.ids[1..6], [tok.pad_id(); 5]);
    assert_eq!(tok.pad_id(), 1);
    assert_eq!(batch.attention_mask, [1, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1]);

    let enc = tok.encode_with_offsets("héllo 👍🏽!", &EncodeOptions::default()).unwrap();
    assert_eq!(enc.ids.len(), enc.offsets.len());
    assert_eq!(enc.offsets.first().unwrap().0, 0);
    assert_eq!(enc.offsets.last().unwrap().1, "héllo 👍🏽!".chars().count());
}

#[test]
fn a_training_stops_when_asked() {
    // Ctrl-C in Python sets the flag from another thread while training runs; set up front,
    // counting (texts and files) and learning both stop with Interrupted.
    for kind in [ModelKind::Bpe, ModelKind::WordPiece] {
        let config = TrainerConfig::new(kind, 500);
        config.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let texts = corpus();
        assert!(matches!(Tokenizer::train_from_texts(&texts, config.clone()), Err(Error::Interrupted)));
        let path = std::env::temp_dir().join(format!("ferrolm-stop-{}-{kind:?}.txt", std::process::id()));
        std::fs::write(&path, texts.join("\n")).unwrap();
        assert!(matches!(Tokenizer::train_from_files(&[&path], config), Err(Error::Interrupted)));
        std::fs::remove_file(path).unwrap();
    }
    // Learning alone, on counts already taken.
    let config = TrainerConfig::new(ModelKind::Bpe, 500);
    let stop = config.stop.clone();
    let mut trainer = ferrolm::tokenizer::Trainer::new(config).unwrap();
    trainer.feed(&corpus()).unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(matches!(trainer.finish(), Err(Error::Interrupted)));
}
