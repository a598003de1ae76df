//! The thread count chosen at run time (a test file of its own: the choice is process-wide).

use ferrolm::{compute, num_threads, set_num_threads, with_threads};

fn threads_of_a_compute_call() -> usize {
    compute(rayon::current_num_threads)
}

#[test]
fn compute_calls_run_on_the_chosen_number_of_threads() {
    assert!(ferrolm::init_thread_pool().unwrap(), "this thread drives, as Python's main thread does");
    let pool = rayon::current_num_threads();
    assert_eq!(threads_of_a_compute_call(), pool);
    for n in [1, 3] {
        set_num_threads(Some(n)).unwrap();
        assert_eq!(num_threads(), n);
        assert_eq!(threads_of_a_compute_call(), n);
        assert_eq!(std::thread::spawn(threads_of_a_compute_call).join().unwrap(), n);
        // A per-call count still wins, and a call nested in a compute call stays where it is.
        assert_eq!(with_threads(Some(2), threads_of_a_compute_call).unwrap(), 2);
        assert_eq!(compute(threads_of_a_compute_call), n);
    }
    for bad in [0, ferrolm::threads::MAX_THREADS + 1] {
        assert!(set_num_threads(Some(bad)).is_err());
        assert_eq!(num_threads(), 3, "a refused count changes nothing");
    }
    set_num_threads(None).unwrap();
    assert_eq!(num_threads(), pool);
    assert_eq!(threads_of_a_compute_call(), pool);
    // No count, from another thread, runs as compute does: on a pool's thread, with every
    // thread (it ran on the calling thread, outside any pool).
    let unset = || with_threads(None, || (rayon::current_thread_index(), rayon::current_num_threads())).unwrap();
    let (index, threads) = std::thread::spawn(unset).join().unwrap();
    assert!(index.is_some() && threads == pool);
}

/// With a one-thread compute pool, that thread being the driving one, another thread's model,
/// tokenizer, backward and optimizer calls must run through `compute` themselves: called as
/// they were, they waited for the driving thread to take pool work, which it only does while
/// it computes (here it waits for them: a hang). Run in a child process, whose pool has one
/// thread (the pool is process-wide).
#[test]
fn entry_points_called_from_another_thread_run_with_a_one_thread_pool() {
    const CHILD: &str = "FERROLM_ONE_THREAD_CHILD";
    if std::env::var_os(CHILD).is_some() {
        assert!(ferrolm::init_thread_pool().unwrap());
        assert_eq!(rayon::current_num_threads(), 1);
        std::thread::spawn(work_of_an_embedder).join().unwrap();
        return;
    }
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["entry_points_called_from_another_thread_run_with_a_one_thread_pool", "--exact", "--nocapture"])
        .env(CHILD, "1")
        .env("RAYON_NUM_THREADS", "1")
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > std::time::Duration::from_secs(120) {
            child.kill().unwrap();
            panic!("the calls from another thread hung");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(status.success());
}

/// The entry points a program calls that trains, saves, loads and tokenizes on a thread of its own.
fn work_of_an_embedder() {
    use ferrolm::model::{Batch, Bert, BertConfig, Gpt, GptConfig};
    use ferrolm::nn::Module;
    use ferrolm::optim::{AdamW, Optimizer};
    use ferrolm::tokenizer::{EncodeOptions, ModelKind, Tokenizer, TrainerConfig};

    let texts = ["the cat sat on the mat", "a dog ate the bone"];
    let tok = Tokenizer::train_from_texts(&texts, TrainerConfig::new(ModelKind::Bpe, 300)).unwrap();
    let ids = tok.encode_batch(&texts, &EncodeOptions::default()).unwrap();
    assert_eq!(tok.decode_batch(&ids, false).unwrap(), texts);
    let words = Tokenizer::train_from_texts(&texts, TrainerConfig::new(ModelKind::WordPiece, 100)).unwrap();
    assert!(!words.encode(texts[0], &EncodeOptions::default()).unwrap().is_empty());

    let config = GptConfig { vocab_size: 300, block_size: 8, n_layer: 1, n_head: 2, n_embd: 16, ..Default::default() };
    let model = Gpt::new(config, 0).unwrap();
    let x: Vec<i64> = ids[0].iter().take(8).map(|&i| i64::from(i)).collect();
    let mut optimizer =
        AdamW::new(model.parameters().into_iter().map(|p| (p, 0.0)).collect(), 1e-3, (0.9, 0.99), 1e-8).unwrap();
    let logits = model.forward(&Batch::new(&x, 1, x.len()), None, None).unwrap();
    // A tensor op called directly is the caller's to run through compute (see init_thread_pool).
    let loss = ferrolm::compute(|| ferrolm::ops::sum_all(&logits));
    loss.backward().unwrap();
    ferrolm::optim::clip_grad_norm(&model.parameters(), 1.0).unwrap();
    optimizer.step();
    let dir = std::env::temp_dir().join(format!("ferrolm-one-thread-{}", std::process::id()));
    model.save(&dir).unwrap();
    assert_eq!(Gpt::load(&dir).unwrap().config().n_layer, 1);
    std::fs::remove_dir_all(&dir).unwrap();

    let config = BertConfig {
        vocab_size: 100,
        hidden_size: 16,
        num_hidden_layers: 1,
        num_attention_heads: 2,
        intermediate_size: 32,
        ..Default::default()
    };
    let bert = Bert::new(config, true, 0).unwrap();
    let hidden = bert.hidden(&Batch::new(&[1, 2, 3], 1, 3), None).unwrap();
    bert.mlm_logits(&hidden).unwrap();
    bert.pooled(&hidden).unwrap();
    bert.with_new_pooler(1).unwrap().with_new_mlm_head(1).unwrap();
}
