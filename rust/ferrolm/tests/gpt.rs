//! GPT: whole-model gradients, KV-cache equivalence, batched generation, checkpoints.

use ferrolm::generate::{Generation, Sampling, TextGeneration};
use ferrolm::model::{Batch, Gpt, GptConfig};
use ferrolm::nn::{Embedding, Module};
use ferrolm::ops::KvCache;
use ferrolm::tokenizer::{ModelKind, Tokenizer, TrainerConfig};
use ferrolm::{no_grad, ops, Error, Tensor};

fn tiny(dropout: f32) -> Gpt {
    let config = GptConfig {
        vocab_size: 11,
        block_size: 8,
        n_layer: 2,
        n_head: 2,
        n_embd: 8,
        dropout,
        attn_dropout: dropout,
        bos_token_id: None,
        eos_token_id: None,
        ..GptConfig::default()
    };
    Gpt::new(config, 3).unwrap()
}

#[test]
fn the_default_config_is_hugging_faces_gpt2() {
    // openai-community/gpt2's config.json, its architecture's fields.
    let gpt2 = serde_json::json!({"activation_function": "gelu_new", "attn_pdrop": 0.1, "bos_token_id": 50256,
        "embd_pdrop": 0.1, "eos_token_id": 50256, "layer_norm_epsilon": 1e-05, "model_type": "gpt2", "n_ctx": 1024,
        "n_embd": 768, "n_head": 12, "n_layer": 12, "n_positions": 1024, "resid_pdrop": 0.1, "vocab_size": 50257});
    assert_eq!(GptConfig::from_json(&gpt2).unwrap(), GptConfig::default());
    // Debug shows the config and the parameter count, not every weight: wte (tied to the head,
    // counted once), wpe, two blocks (two LayerNorms, c_attn, attn_proj, c_fc, mlp_proj), ln_f.
    let model = tiny(0.0);
    let count = 11 * 8 + 8 * 8 + 2 * (2 * 16 + (8 * 24 + 24) + (8 * 8 + 8) + (8 * 32 + 32) + (32 * 8 + 8)) + 16;
    let shown = format!("{model:?}");
    assert!(
        shown.starts_with("Gpt { config: GptConfig { vocab_size: 11,")
            && shown.ends_with(&format!("parameters: {count} }}"))
    );
}

fn ids(b: usize, t: usize) -> Vec<i64> {
    (0..b * t).map(|i| ((i * 7 + 3) % 11) as i64).collect()
}

fn loss(model: &Gpt, x: &[i64], y: &[i64], b: usize, t: usize, seed: Option<u64>) -> Tensor {
    let logits = model.forward(&Batch::new(x, b, t), seed, None).unwrap();
    ops::cross_entropy(&logits, y, None, ops::Reduction::Mean).unwrap()
}

/// Finite differences on every parameter tensor of a tiny GPT (a few elements of each),
/// with dropout active (its mask is a function of the seed, so the loss is deterministic).
/// Activations here are O(0.02) (GPT-2 init), so the step is h = 1e-3 rather than gradcheck.rs's
/// 1e-2; rounding error ≈ ε·|L|/h ≈ 6e-8·2.4/1e-3 ≈ 1.5e-4, within the same tolerance.
#[test]
fn whole_model_gradients_match_finite_differences() {
    let model = tiny(0.1);
    let (b, t) = (2, 6);
    let (x, y) = (ids(b, t), ids(b, t).iter().map(|v| (v + 1) % 11).collect::<Vec<_>>());
    loss(&model, &x, &y, b, t, Some(5)).backward().unwrap();
    let h = 1e-3f32;
    for (name, p) in model.named_parameters() {
        let grad = p.grad().unwrap().to_vec();
        let base = p.to_vec();
        for i in (0..p.numel()).step_by(p.numel() / 4 + 1) {
            let at = |v: f32| {
                let mut d = base.clone();
                d[i] = v;
                p.assign(&d).unwrap();
                no_grad(|| loss(&model, &x, &y, b, t, Some(5))).item().unwrap() as f64
            };
            let numeric = (at(base[i] + h) - at(base[i] - h)) / (2.0 * h as f64);
            p.assign(&base).unwrap();
            let a = grad[i] as f64;
            assert!((a - numeric).abs() <= 1e-3 + 1e-2 * numeric.abs(), "{name}[{i}]: analytic {a}, numeric {numeric}");
        }
    }
}

#[test]
fn kv_cache_logits_equal_full_forward() {
    let model = tiny(0.0);
    let (b, t) = (2, 8);
    let x = ids(b, t);
    let full = no_grad(|| model.forward(&Batch::new(&x, b, t), None, None)).unwrap().to_vec();
    let mut cache = model.new_cache(b).unwrap();
    // Prefill 3 tokens, then feed the rest one at a time.
    let mut cached = vec![0.0; full.len()];
    let v = 11;
    let mut pos = 0;
    for chunk in [3, 1, 1, 1, 1, 1] {
        let part: Vec<i64> = (0..b).flat_map(|r| x[r * t + pos..r * t + pos + chunk].to_vec()).collect();
        let logits = no_grad(|| model.forward(&Batch::new(&part, b, chunk), None, Some(&mut cache))).unwrap().to_vec();
        for r in 0..b {
            for j in 0..chunk {
                let (src, dst) = ((r * chunk + j) * v, (r * t + pos + j) * v);
                cached[dst..dst + v].copy_from_slice(&logits[src..src + v]);
            }
        }
        pos += chunk;
    }
    for (a, c) in full.iter().zip(&cached) {
        assert!((a - c).abs() < 1e-5, "{a} vs {c}");
    }
}

/// A step that fails leaves every row as it was: a model whose position 2 is NaN gives the
/// second prompt (3 tokens) NaN logits, and after its refused step the first row (1 token)
/// has not kept the token it drew.
#[test]
fn a_failed_step_leaves_the_rows_as_they_were() {
    let model = tiny(0.0);
    model.wpe.weight.write()[2 * 8..3 * 8].fill(f32::NAN);
    let sampling = Sampling { temperature: 1.0, ..Sampling::default() };
    let mut g = Generation::new(&model, &[vec![1], vec![5, 3, 4]], sampling, vec![]).unwrap();
    let before = g.tokens();
    for _ in 0..2 {
        let err = g.step().unwrap_err().to_string();
        assert!(err.contains("NaN or infinite"), "{err}");
        assert_eq!(g.tokens(), before);
    }
}

#[test]
fn batched_generation_equals_one_prompt_at_a_time() {
    let model = tiny(0.0);
    let prompts = vec![vec![1, 2, 3], vec![7], vec![9, 9, 2]];
    let greedy = Sampling { temperature: 0.0, ..Sampling::default() };
    // Within the context (3 + 5 = 8 tokens) left padding must not change any row.
    let together = Generation::new(&model, &prompts, greedy.clone(), vec![]).unwrap().run(5).unwrap();
    for (p, expected) in prompts.iter().zip(&together) {
        let alone = Generation::new(&model, std::slice::from_ref(p), greedy.clone(), vec![]).unwrap().run(5).unwrap();
        assert_eq!(&alone[0], expected);
        // Greedy decoding with the cache equals argmax of a full forward pass at each step.
        let mut seq = p.clone();
        for _ in 0..5 {
            let logits = no_grad(|| model.forward(&Batch::new(&seq, 1, seq.len()), None, None)).unwrap().to_vec();
            let last = &logits[(seq.len() - 1) * 11..];
            seq.push((0..11).fold(0, |b, i| if last[i] > last[b] { i } else { b }) as i64);
        }
        assert_eq!(&seq[p.len()..], &expected[..]);
    }
    // Past the context the cache is rebuilt from the last half; generation goes on, and each
    // row of a batch is cut only when it reaches the context itself: it continues as alone.
    let long = Generation::new(&model, &[vec![1]], greedy.clone(), vec![]).unwrap().run(30).unwrap();
    assert_eq!(long[0].len(), 30);
    // (Weights scaled up, so that what the context holds changes the greedy choice.)
    let sharp = tiny(0.0);
    for (_, p) in sharp.named_parameters() {
        p.write().iter_mut().for_each(|w| *w *= 40.0);
    }
    let uneven = vec![vec![1, 2, 3, 4, 5, 6, 7], vec![7], vec![9, 2, 4, 1], vec![5, 3]];
    let together = Generation::new(&sharp, &uneven, greedy.clone(), vec![]).unwrap().run(30).unwrap();
    for (p, expected) in uneven.iter().zip(&together) {
        let alone = Generation::new(&sharp, std::slice::from_ref(p), greedy.clone(), vec![]).unwrap().run(30).unwrap();
        assert_eq!(&alone[0], expected);
        // Each token is the argmax of a full forward pass over the window the cache holds:
        // it grows to the context (8), then restarts from the last half (4 tokens).
        let (mut seq, mut start) = (p.clone(), 0);
        for _ in 0..30 {
            let window = &seq[start..];
            let logits = no_grad(|| sharp.forward(&Batch::new(window, 1, window.len()), None, None)).unwrap().to_vec();
            let last = &logits[(window.len() - 1) * 11..];
            let full = window.len() == 8;
            seq.push((0..11).fold(0, |b, i| if last[i] > last[b] { i } else { b }) as i64);
            if full {
                start = seq.len() - 4;
            }
        }
        assert_eq!(&seq[p.len()..], &expected[..]);
    }
    // Sampling is seeded: the same seed gives the same text.
    let s = Sampling {
        temperature: 0.9,
        top_k: Some(5),
        top_p: Some(0.9),
        repetition_penalty: 1.2,
        seed: 42,
        ..Sampling::default()
    };
    let a = Generation::new(&model, &prompts, s.clone(), vec![]).unwrap().run(10).unwrap();
    let b = Generation::new(&model, &prompts, s, vec![]).unwrap().run(10).unwrap();
    assert_eq!(a, b);
}

#[test]
fn stop_tokens_end_a_row() {
    let model = tiny(0.0);
    let greedy = Sampling { temperature: 0.0, ..Sampling::default() };
    let free = Generation::new(&model, &[vec![1, 2]], greedy.clone(), vec![]).unwrap().run(6).unwrap();
    let stop = free[0][2];
    let stopped = Generation::new(&model, &[vec![1, 2]], greedy, vec![stop]).unwrap().run(6).unwrap();
    assert_eq!(stopped[0], free[0][..=free[0].iter().position(|&t| t == stop).unwrap()].to_vec());
}

#[test]
fn extend_continues_as_a_fresh_generation_from_the_same_tokens() {
    let model = tiny(0.0);
    for (_, p) in model.named_parameters() {
        p.write().iter_mut().for_each(|w| *w *= 40.0); // so that every token held changes the choice
    }
    let greedy = Sampling { temperature: 0.0, ..Sampling::default() };
    let fresh = |prompt: &[i64], n: usize| {
        Generation::new(&model, &[prompt.to_vec()], greedy.clone(), vec![]).unwrap().run(n).unwrap().remove(0)
    };
    let mut g = Generation::new(&model, &[vec![1, 2]], greedy.clone(), vec![]).unwrap();
    g.run(2).unwrap();
    assert_eq!(g.room(), 4); // 2 prompt tokens and 2 generated, of a context of 8
    assert!(matches!(g.extend(&[5; 5]), Err(Error::Argument(m)) if m.contains("4 free positions")));
    g.extend(&[5, 6]).unwrap();
    assert_eq!(g.room(), 2);
    let history = g.tokens().remove(0);
    assert_eq!(history[4..], [5, 6]);
    assert_eq!(g.run(2).unwrap()[0], fresh(&history, 2));
    // A stop token that ended the row was never run through the model: it is replaced.
    let first = fresh(&[1, 2], 1)[0];
    let mut stopped = Generation::new(&model, &[vec![1, 2]], greedy.clone(), vec![first]).unwrap();
    assert_eq!(stopped.run(3).unwrap()[0], [first]);
    stopped.extend(&[4]).unwrap();
    assert_eq!(stopped.tokens()[0], [1, 2, 4]);
    assert!(!stopped.finished());
    let again = Generation::new(&model, &[vec![1, 2, 4]], greedy.clone(), vec![first]).unwrap().run(3).unwrap();
    assert_eq!(stopped.run(3).unwrap(), again);
    // Past the context the cache keeps a window, and says so; extend goes on after it.
    assert!(!g.windowed());
    g.run(6).unwrap();
    assert!(g.windowed());
    g.extend(&[3]).unwrap();
    let (row, held) = (g.tokens().remove(0), 8 - g.room()); // the cache holds the row's last `held` tokens
    assert_eq!(g.run(2).unwrap()[0], fresh(&row[row.len() - held..], 2));
    // A clone goes on as the original would, with a cache of its own: a prompt prefilled once
    // serves several continuations.
    let sampled = Sampling { temperature: 1.0, seed: 7, ..Sampling::default() };
    let prefilled = Generation::new(&model, &[vec![1, 2, 3]], sampled.clone(), vec![]).unwrap();
    let (mut one, mut other) = (prefilled.clone(), prefilled.clone());
    one.extend(&[4, 5, 6]).unwrap();
    one.run(2).unwrap(); // written into its own cache only
    let fresh_with = |seed: u64, prompts: &[Vec<i64>], n: usize| {
        let sampling = Sampling { seed, ..sampled.clone() };
        Generation::new(&model, prompts, sampling, vec![]).unwrap().run(n).unwrap()
    };
    assert_eq!(other.run(3).unwrap(), fresh_with(7, &[vec![1, 2, 3]], 3));
    // Reseeded, a clone draws as a generation of that seed; a batch of 3 rows (its weights
    // packed, the packed copies shared by the clones) too.
    let mut reseeded = prefilled.clone();
    reseeded.reseed(8);
    assert_eq!(reseeded.run(3).unwrap(), fresh_with(8, &[vec![1, 2, 3]], 3));
    let rows = [vec![1, 2], vec![3], vec![4, 5, 6]];
    let mut batch = Generation::new(&model, &rows, Sampling { seed: 9, ..sampled.clone() }, vec![]).unwrap();
    let first = batch.run(1).unwrap(); // packs the weights, which the clones share
    let (mut a, mut b) = (batch.clone(), batch.clone());
    a.run(2).unwrap();
    let then: Vec<Vec<i64>> = first.iter().zip(b.run(3).unwrap()).map(|(f, b)| [f.clone(), b].concat()).collect();
    assert_eq!(then, fresh_with(9, &rows, 4));
    // One sequence only, of known tokens.
    let mut batch = Generation::new(&model, &[vec![1], vec![2]], greedy.clone(), vec![]).unwrap();
    assert!(matches!(batch.extend(&[3]), Err(Error::Argument(m)) if m.contains("batch of 2")));
    assert!(matches!(g.extend(&[11]), Err(Error::Index(_))));
    assert!(matches!(g.extend(&[]), Err(Error::Argument(_))));
}

#[test]
fn generation_rejects_bad_prompts() {
    let model = tiny(0.0);
    let s = Sampling::default();
    assert!(
        matches!(Generation::new(&model, &[vec![]], s.clone(), vec![]), Err(Error::Argument(m)) if m.contains("empty"))
    );
    assert!(
        matches!(Generation::new(&model, &[vec![1; 9]], s.clone(), vec![]), Err(Error::Argument(m)) if m.contains("context"))
    );
    assert!(matches!(Generation::new(&model, &[vec![11]], s.clone(), vec![]), Err(Error::Index(_))));
    let bad = Sampling { top_p: Some(1.5), ..Sampling::default() };
    assert!(matches!(Generation::new(&model, &[vec![1]], bad, vec![]), Err(Error::Argument(_))));
    // A cache for more sequences than memory holds is an error, not an abort.
    assert!(matches!(model.new_cache(1 << 40), Err(Error::Memory(_))));
}

#[test]
fn batches_whose_sizes_overflow_are_refused() {
    let model = tiny(0.0);
    // 2^63 × 2 wraps to 0 ids in unchecked arithmetic, matching the empty slice.
    assert!(matches!(model.hidden(&Batch::new(&[], 1 << 63, 2), None, None), Err(Error::Shape(_))));
    let ids = [1i64, 2];
    let short = [0i64];
    let batch = Batch { positions: Some(&short), ..Batch::new(&ids, 1, 2) };
    assert!(matches!(model.hidden(&batch, None, None), Err(Error::Shape(m)) if m.contains("1 positions")));
}

#[test]
fn a_one_token_context_generates_past_it() {
    // nanoGPT's bigram model: every step refills the cache with the last token.
    let config = GptConfig { block_size: 1, ..tiny(0.0).config().clone() };
    let model = Gpt::new(config, 5).unwrap();
    let tokens = Generation::new(&model, &[vec![3]], Sampling::default(), vec![]).unwrap().run(5).unwrap();
    assert_eq!(tokens[0].len(), 5);
}

#[test]
fn matrix_parameters_counts_the_models_matrices() {
    let model = tiny(0.0);
    let mut matrices = 0;
    model.visit("", &mut |_, t| matrices += if t.shape().len() == 2 { t.numel() } else { 0 });
    assert_eq!(model.config().matrix_parameters(), matrices);
}

#[test]
fn loading_finishes_a_save_from_python_cut_short_while_its_files_were_moved_in() {
    // Python writes a model directory's files whole into .files-written/, then moves them in,
    // config.json last; a process killed in between leaves new weights beside an old config.
    let dir = std::env::temp_dir().join(format!("ferrolm-gpt-cut-save-{}", std::process::id()));
    let (old, new) = (tiny(0.0), Gpt::new(GptConfig { n_layer: 1, ..tiny(0.0).config().clone() }, 4).unwrap());
    old.save(&dir).unwrap();
    let written = dir.join(".files-written");
    new.save(&written).unwrap();
    std::fs::rename(written.join("model.safetensors"), dir.join("model.safetensors")).unwrap(); // moved, then killed
    let loaded = Gpt::load(&dir).unwrap();
    assert_eq!(loaded.config().n_layer, 1);
    let x = ids(1, 8);
    let logits = |m: &Gpt| no_grad(|| m.forward(&Batch::new(&x, 1, 8), None, None)).unwrap().to_vec();
    assert_eq!(logits(&loaded), logits(&new));
    assert!(!written.exists());
    // A side directory that is a link is not followed: its target's files stay where they are.
    #[cfg(unix)]
    {
        let elsewhere = dir.with_extension("elsewhere");
        std::fs::create_dir_all(&elsewhere).unwrap();
        std::fs::write(elsewhere.join("config.json"), "{}").unwrap();
        std::os::unix::fs::symlink(&elsewhere, &written).unwrap();
        assert_eq!(Gpt::load(&dir).unwrap().config().n_layer, 1);
        assert!(elsewhere.join("config.json").exists());
        std::fs::remove_dir_all(&elsewhere).unwrap();
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn save_load_round_trip_and_bad_files() {
    let dir = std::env::temp_dir().join(format!("ferrolm-gpt-test-{}", std::process::id()));
    let model = tiny(0.0);
    model.save(&dir).unwrap();
    let loaded = Gpt::load(&dir).unwrap();
    let x = ids(1, 8);
    let a = no_grad(|| model.forward(&Batch::new(&x, 1, 8), None, None)).unwrap().to_vec();
    let b = no_grad(|| loaded.forward(&Batch::new(&x, 1, 8), None, None)).unwrap().to_vec();
    assert_eq!(a, b);
    // The files are moved in as one set: nothing else is left in the directory.
    let mut names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    names.sort();
    assert_eq!(names, ["config.json", "model.safetensors"]);
    // A save that fails leaves the previous set whole (here its side directory cannot be made).
    std::fs::write(dir.join(".files-being-written"), "in the way").unwrap();
    let other = Gpt::new(GptConfig { n_layer: 1, ..model.config().clone() }, 9).unwrap();
    assert!(matches!(other.save(&dir), Err(Error::Io { .. })));
    assert_eq!(Gpt::load(&dir).unwrap().config().n_layer, model.config().n_layer);
    std::fs::remove_file(dir.join(".files-being-written")).unwrap();

    // A truncated weights file.
    let weights = std::fs::read(dir.join("model.safetensors")).unwrap();
    std::fs::write(dir.join("model.safetensors"), &weights[..weights.len() / 2]).unwrap();
    assert!(matches!(Gpt::load(&dir), Err(Error::Format(_))));
    // A config that does not match the weights.
    std::fs::write(dir.join("model.safetensors"), &weights).unwrap();
    let config = std::fs::read_to_string(dir.join("config.json")).unwrap();
    std::fs::write(dir.join("config.json"), config.replace("\"vocab_size\": 11", "\"vocab_size\": 12")).unwrap();
    assert!(matches!(Gpt::load(&dir), Err(Error::Shape(m)) if m.contains("wte")));
    // A corrupt config far larger than the weights is refused before it is allocated.
    std::fs::write(dir.join("config.json"), config.replace("\"vocab_size\": 11", "\"vocab_size\": 10000000000"))
        .unwrap();
    assert!(matches!(Gpt::load(&dir), Err(Error::Format(m)) if m.contains("does config.json belong")));
    std::fs::write(dir.join("config.json"), "{not json").unwrap();
    assert!(matches!(Gpt::load(&dir), Err(Error::Format(_))));
    // A missing file.
    std::fs::remove_file(dir.join("config.json")).unwrap();
    assert!(matches!(Gpt::load(&dir), Err(Error::Io { .. })));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A model saved in shards (Hugging Face's model.safetensors.index.json beside them) loads as
/// the one file would; the index must name files in the directory.
#[test]
fn a_model_in_shards_loads() {
    use ferrolm::checkpoint::{from_safetensors, write_safetensors};
    let dir = std::env::temp_dir().join(format!("ferrolm-gpt-shards-{}", std::process::id()));
    let model = tiny(0.0);
    model.save(&dir).unwrap();
    let (tensors, _) = from_safetensors(&std::fs::read(dir.join("model.safetensors")).unwrap(), "test").unwrap();
    let mut weight_map = serde_json::Map::new();
    for (i, part) in tensors.iter().collect::<Vec<_>>().chunks(tensors.len().div_ceil(2)).enumerate() {
        let file = format!("model-{:05}-of-00002.safetensors", i + 1);
        let part: Vec<_> = part.iter().map(|(n, s)| (n.to_string(), s.shape.clone(), &s.data[..])).collect();
        write_safetensors(&dir.join(&file), &part, Default::default()).unwrap();
        part.iter().for_each(|(n, ..)| drop(weight_map.insert(n.clone(), file.clone().into())));
    }
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    let index = |map: &serde_json::Map<String, serde_json::Value>| {
        let json = serde_json::json!({ "metadata": {}, "weight_map": map });
        std::fs::write(dir.join("model.safetensors.index.json"), json.to_string()).unwrap();
    };
    index(&weight_map);
    let x = ids(1, 8);
    let a = no_grad(|| model.forward(&Batch::new(&x, 1, 8), None, None)).unwrap().to_vec();
    let b = no_grad(|| Gpt::load(&dir).unwrap().forward(&Batch::new(&x, 1, 8), None, None)).unwrap().to_vec();
    assert_eq!(a, b);
    let mut outside = weight_map.clone();
    outside.insert("wte.weight".into(), "../model-00001-of-00002.safetensors".into());
    index(&outside);
    assert!(matches!(Gpt::load(&dir), Err(Error::Format(m)) if m.contains("not a file name in the directory")));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// log p(ids[t] | ids[begin..t]) by a full forward pass over that window.
fn logprob_after(model: &Gpt, ids: &[i64], begin: usize, t: usize) -> f32 {
    let window = &ids[begin..t];
    let logits = no_grad(|| model.forward(&Batch::new(window, 1, window.len()), None, None)).unwrap();
    let logp = ops::log_softmax(&logits, -1).unwrap().to_vec();
    let v = model.config().vocab_size;
    logp[(window.len() - 1) * v + ids[t] as usize]
}

#[test]
fn score_gives_each_tokens_log_prob_and_slides_past_the_context() {
    let model = tiny(0.0);
    let ids = ids(1, 20);
    // Within the context: every token from all the ones before it.
    let short = model.score(&ids[..8], None).unwrap();
    assert_eq!(short.len(), 7);
    for (t, &lp) in short.iter().enumerate().map(|(i, lp)| (i + 1, lp)) {
        assert!((lp - logprob_after(&model, &ids, 0, t)).abs() < 1e-5, "token {t}");
    }
    // Stride 1: each token past the context from the 7 before it.
    let slid = model.score(&ids, Some(1)).unwrap();
    assert_eq!(slid.len(), 19);
    for t in 8..20 {
        assert!((slid[t - 1] - logprob_after(&model, &ids, t - 7, t)).abs() < 1e-5, "token {t}");
    }
    // Default stride 4: token t is scored by the first window that covers it.
    let strided = model.score(&ids, None).unwrap();
    for (t, end) in [(8, 12), (11, 12), (12, 16), (16, 20), (19, 20)] {
        assert!((strided[t - 1] - logprob_after(&model, &ids, end - 8, t)).abs() < 1e-5, "token {t}");
    }
    assert!(matches!(model.score(&ids[..1], None), Err(Error::Argument(m)) if m.contains("two tokens")));
    assert!(matches!(model.score(&ids, Some(8)), Err(Error::Argument(m)) if m.contains("stride")));
    assert!(matches!(model.score(&[1, 11], None), Err(Error::Index(_))));
}

#[test]
fn text_generation_is_the_token_generation_decoded_and_cut_at_a_stop_string() {
    let tok = Tokenizer::train_from_texts(&["abcdefgh"], TrainerConfig::new(ModelKind::Chars, 100)).unwrap();
    assert!(tok.vocab_size() < 11); // the model's vocabulary is padded past the tokenizer's
    let model = tiny(0.0);
    let greedy = Sampling { temperature: 0.0, ..Sampling::default() };
    let text = |stops: &[String], stop_tokens: &[u32]| {
        TextGeneration::new(&model, &tok, "abc", 30, greedy.clone(), stops, stop_tokens)
            .unwrap()
            .collect::<ferrolm::Result<String>>()
    };
    let full = text(&[], &[]).unwrap();
    let prompt: Vec<i64> = tok.encode("abc", &Default::default()).unwrap().into_iter().map(i64::from).collect();
    let limited = Sampling { vocab_limit: Some(tok.vocab_size()), ..greedy.clone() };
    let ids = Generation::new(&model, &[prompt], limited, vec![]).unwrap().run(30).unwrap();
    let ids: Vec<u32> = ids[0].iter().map(|&i| i as u32).collect();
    assert_eq!(full, tok.decode(&ids, false).unwrap());
    assert_eq!(full.chars().count(), 30);
    let stop = full[12..14].to_string();
    assert!(full.find(&stop).unwrap() > 0, "the stop string must cut some text off, not all of it");
    assert_eq!(text(std::slice::from_ref(&stop), &[]).unwrap(), full[..full.find(&stop).unwrap()]);
    // A stop token ends the text before it, at its first occurrence.
    let (at, &token) = ids.iter().enumerate().skip(1).find(|&(i, t)| !ids[..i].contains(t)).unwrap();
    assert_eq!(text(&[], &[token]).unwrap(), full.chars().take(at).collect::<String>());
    let empty = TextGeneration::new(&model, &tok, "", 5, greedy.clone(), &[], &[]);
    assert!(matches!(empty, Err(Error::Argument(m)) if m.contains("no tokens")));
    let outside = TextGeneration::new(&model, &tok, "abc", 5, greedy.clone(), &[], &[11]);
    assert!(matches!(outside, Err(Error::Index(m)) if m.contains("stop_tokens")));
    let nothing = TextGeneration::new(&model, &tok, "abc", 5, greedy, &["c".into(), String::new()], &[]);
    assert!(matches!(nothing, Err(Error::Argument(m)) if m.contains("empty stop string")));
}

#[test]
fn weights_that_no_longer_match_the_config_are_an_error_not_a_panic() {
    let mut model = tiny(0.0);
    model.wte = Embedding::new(9, 8, 0.02, 0).unwrap(); // surgery: the config still says 11
    let e = Generation::new(&model, &[vec![1]], Sampling::default(), vec![]).err().unwrap();
    assert!(matches!(&e, Error::Shape(m) if m.contains("wte")), "{e}");
    assert!(model.score(&[1, 10], None).is_err()); // an id the smaller table has no row for
                                                   // A corrupt config's sizes overflow: an error, not an arithmetic panic.
    let huge = GptConfig { n_embd: 1 << 62, n_head: 1, ..tiny(0.0).config().clone() };
    assert!(matches!(Gpt::new(huge, 0), Err(Error::Memory(_))));
    let json = serde_json::json!({"model_type": "gpt2", "vocab_size": 11, "n_positions": 8, "n_layer": 1, "n_head": 1, "n_embd": 1u64 << 62});
    assert!(matches!(GptConfig::from_json(&json), Err(Error::Format(_))));
    // A cache with no room.
    assert!(matches!(KvCache::new(1, 1, 1, 0, 8), Err(Error::Argument(_))));
    // Sizes a caller gives that overflow: errors, not wrapped arithmetic (a count past the
    // cache, a shape of 2^64 elements taken as 0 and written as such).
    let mut cache = KvCache::new(1, 1, 1, 4, 8).unwrap();
    cache.advance(2).unwrap();
    assert!(matches!(cache.advance(usize::MAX), Err(Error::Index(_))));
    assert_eq!(cache.len(), 2);
    let file = std::env::temp_dir().join(format!("ferrolm-overflow-{}.safetensors", std::process::id()));
    let huge = [("w".to_string(), vec![1usize << 32, 1 << 32], &[][..])];
    let written = ferrolm::checkpoint::write_safetensors(&file, &huge, Default::default());
    assert!(matches!(written, Err(Error::Shape(_))) && !file.exists());
}
