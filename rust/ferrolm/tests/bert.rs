//! BERT: whole-model gradients with padding masks, padding invariance, checkpoints.

use ferrolm::model::{Batch, Bert, BertConfig};
use ferrolm::nn::Module;
use ferrolm::{no_grad, ops, Error};

fn tiny(dropout: f32) -> Bert {
    let config = BertConfig {
        vocab_size: 13,
        hidden_size: 8,
        num_hidden_layers: 2,
        num_attention_heads: 2,
        intermediate_size: 16,
        max_position_embeddings: 10,
        hidden_dropout_prob: dropout,
        attention_probs_dropout_prob: dropout,
        layer_norm_eps: 1e-5,
        ..BertConfig::default()
    };
    Bert::new(config, true, 9).unwrap()
}

#[test]
fn the_default_config_is_hugging_faces_bert_base() {
    // google-bert/bert-base-uncased's config.json, its architecture's fields.
    let base = serde_json::json!({"attention_probs_dropout_prob": 0.1, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
        "hidden_size": 768, "intermediate_size": 3072, "layer_norm_eps": 1e-12, "max_position_embeddings": 512,
        "model_type": "bert", "num_attention_heads": 12, "num_hidden_layers": 12, "pad_token_id": 0,
        "position_embedding_type": "absolute", "type_vocab_size": 2, "vocab_size": 30522});
    assert_eq!(BertConfig::from_json(&base).unwrap(), BertConfig::default());
}

const IDS: [i64; 12] = [2, 5, 7, 1, 3, 0, 2, 8, 9, 11, 4, 3];
const TYPES: [i64; 12] = [0, 0, 0, 1, 1, 0, 0, 0, 0, 1, 1, 1];
/// Row 0 has one padding position at the end.
const MASK: [bool; 12] = [true, true, true, true, true, false, true, true, true, true, true, true];

fn mlm_loss(model: &Bert, seed: Option<u64>) -> ferrolm::Tensor {
    let batch = Batch { key_mask: Some(&MASK), token_types: Some(&TYPES), ..Batch::new(&IDS, 2, 6) };
    let h = model.hidden(&batch, seed).unwrap();
    let logits = model.mlm_logits(&h).unwrap();
    // Labels on some positions, -100 (ignored) elsewhere and on padding, as an MLM batch.
    let labels = [-100, 6, -100, 2, -100, -100, 1, -100, 12, -100, -100, 5];
    let mlm = ops::cross_entropy(&logits, &labels, Some(-100), ops::Reduction::Mean).unwrap();
    let pooled = ops::mean_all(&model.pooled(&h).unwrap());
    ops::add(&mlm, &pooled).unwrap()
}

/// Finite differences on every parameter (a few elements each), dropout on; h = 1e-3 because
/// activations are O(0.02) at BERT's initialisation (see gpt.rs).
#[test]
fn whole_model_gradients_match_finite_differences() {
    let model = tiny(0.1);
    mlm_loss(&model, Some(3)).backward().unwrap();
    let h = 1e-3f32;
    for (name, p) in model.named_parameters() {
        let grad = p.grad().unwrap_or_else(|| panic!("{name} got no gradient")).to_vec();
        let base = p.to_vec();
        for i in (0..p.numel()).step_by(p.numel() / 3 + 1) {
            let at = |v: f32| {
                let mut d = base.clone();
                d[i] = v;
                p.assign(&d).unwrap();
                no_grad(|| mlm_loss(&model, Some(3))).item().unwrap() as f64
            };
            let numeric = (at(base[i] + h) - at(base[i] - h)) / (2.0 * h as f64);
            p.assign(&base).unwrap();
            let a = grad[i] as f64;
            assert!((a - numeric).abs() <= 1e-3 + 1e-2 * numeric.abs(), "{name}[{i}]: analytic {a}, numeric {numeric}");
        }
    }
}

#[test]
fn padding_does_not_change_real_tokens() {
    let model = tiny(0.0);
    let short = [2i64, 5, 7, 1, 3];
    let alone = no_grad(|| model.hidden(&Batch::new(&short, 1, 5), None)).unwrap().to_vec();
    let padded_ids = [2i64, 5, 7, 1, 3, 0, 0];
    let mask = [true, true, true, true, true, false, false];
    let batch = Batch { key_mask: Some(&mask), ..Batch::new(&padded_ids, 1, 7) };
    let padded = no_grad(|| model.hidden(&batch, None)).unwrap().to_vec();
    for (a, b) in alone.iter().zip(&padded[..alone.len()]) {
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    }
}

#[test]
fn matrix_parameters_counts_the_encoders_matrices() {
    let mut model = tiny(0.0);
    (model.pooler, model.mlm) = (None, None);
    let mut matrices = 0;
    model.visit("", &mut |_, t| matrices += if t.shape().len() == 2 { t.numel() } else { 0 });
    assert_eq!(model.config().matrix_parameters(), matrices);
}

#[test]
fn save_load_round_trip_and_bad_input() {
    let dir = std::env::temp_dir().join(format!("ferrolm-bert-test-{}", std::process::id()));
    let model = tiny(0.0);
    model.save(&dir).unwrap();
    let loaded = Bert::load(&dir).unwrap();
    let batch = Batch::new(&IDS, 2, 6);
    let a = no_grad(|| model.mlm_logits(&model.hidden(&batch, None).unwrap())).unwrap().to_vec();
    let b = no_grad(|| loaded.mlm_logits(&loaded.hidden(&batch, None).unwrap())).unwrap().to_vec();
    assert_eq!(a, b);
    assert!(loaded.pooler.is_some());
    let long: Vec<i64> = vec![1; 11];
    assert!(
        matches!(model.hidden(&Batch::new(&long, 1, 11), None), Err(Error::Index(m)) if m.contains("max_position_embeddings"))
    );
    assert!(matches!(model.hidden(&Batch::new(&[13], 1, 1), None), Err(Error::Index(_))));
    let config = std::fs::read_to_string(dir.join("config.json")).unwrap();
    std::fs::write(dir.join("config.json"), config.replace("\"vocab_size\": 13", "\"vocab_size\": 10000000000"))
        .unwrap();
    assert!(matches!(Bert::load(&dir), Err(Error::Format(m)) if m.contains("does config.json belong")));
    std::fs::remove_dir_all(&dir).unwrap();
}
