//! Backpropagation semantics: accumulation, no_grad, detach, misuse errors, thread-count
//! independence, and an AdamW step against hand-computed numbers.

use ferrolm::nn::{LayerNorm, Linear, Module};
use ferrolm::{no_grad, ops, AdamW, Error, Optimizer, Tensor};

#[test]
fn gradients_accumulate_until_zeroed() {
    let w = Tensor::from_vec(vec![1.0, 2.0], &[2]).unwrap().with_grad();
    for _ in 0..2 {
        ops::sum_all(&ops::mul_scalar(&w, 3.0).unwrap()).backward().unwrap();
    }
    assert_eq!(w.grad().unwrap().to_vec(), vec![6.0, 6.0]);
    w.zero_grad();
    assert!(w.grad().is_none());
}

#[test]
fn shared_subexpression_gets_both_contributions() {
    let x = Tensor::from_vec(vec![3.0], &[1]).unwrap().with_grad();
    let y = ops::mul(&x, &x).unwrap(); // d(x²)/dx = 2x
    ops::sum_all(&ops::add(&y, &x).unwrap()).backward().unwrap();
    assert_eq!(x.grad().unwrap().to_vec(), vec![7.0]);
}

#[test]
fn no_grad_and_detach_cut_the_graph() {
    let w = Tensor::ones(&[2]).unwrap().with_grad();
    let y = no_grad(|| ops::exp(&w).unwrap());
    assert!(!y.requires_grad());
    assert!(matches!(ops::sum_all(&y).backward(), Err(Error::Grad(_))));
    let d = ops::exp(&w).unwrap().detach();
    assert!(!d.requires_grad() && d.is_leaf());
}

#[test]
fn misuse_is_an_error_not_a_panic() {
    let w = Tensor::ones(&[3]).unwrap().with_grad();
    let y = ops::exp(&w).unwrap();
    assert!(matches!(y.backward(), Err(Error::Grad(m)) if m.contains("one-element")));
    let loss = ops::sum_all(&y);
    loss.backward().unwrap();
    assert!(matches!(loss.backward(), Err(Error::Grad(m)) if m.contains("already freed")));
    assert!(matches!(ops::exp(&w).unwrap().set_requires_grad(true), Err(Error::Grad(_))));
    assert!(matches!(ops::add(&Tensor::ones(&[2, 3]).unwrap(), &Tensor::ones(&[4]).unwrap()), Err(Error::Shape(_))));
    assert!(matches!(ops::embedding(&Tensor::ones(&[4, 2]).unwrap(), &[4], &[1]), Err(Error::Index(_))));
    assert!(matches!(ops::embedding(&Tensor::ones(&[4, 2]).unwrap(), &[-1], &[1]), Err(Error::Index(_))));
    assert!(matches!(
        ops::cross_entropy(&Tensor::ones(&[2, 3]).unwrap(), &[0, 3], None, ops::Reduction::Mean),
        Err(Error::Index(_))
    ));
    assert!(matches!(ops::sum(&w, 1, false), Err(Error::Index(_))));
    assert!(matches!(Tensor::from_vec(vec![1.0; 5], &[2, 3]), Err(Error::Shape(_))));
}

#[test]
fn scalars_have_no_axes_and_empty_features_give_the_bias() {
    let s = Tensor::scalar(1.0);
    assert!(matches!(ops::sum(&s, 0, false), Err(Error::Index(_))));
    assert!(matches!(ops::softmax(&s, -1), Err(Error::Index(_))));
    assert!(matches!(ops::transpose(&s, 0, 0), Err(Error::Index(_))));
    // A linear layer with no input features maps every row to its bias.
    let layer = Linear::new(0, 2, true, 1).unwrap();
    let y = layer.forward(&Tensor::zeros(&[3, 0]).unwrap()).unwrap();
    assert_eq!(y.shape(), &[3, 2]);
    let bias = layer.bias.as_ref().unwrap().to_vec();
    assert_eq!(y.to_vec(), [&bias[..], &bias[..], &bias[..]].concat());
}

#[test]
fn work_moved_to_other_threads_keeps_the_callers_grad_mode() {
    let w = Tensor::ones(&[3]).unwrap().with_grad();
    let y = no_grad(|| ferrolm::with_threads(Some(2), || ops::exp(&w).unwrap()).unwrap());
    assert!(!y.requires_grad());
    let y = ferrolm::with_threads(Some(2), || ops::exp(&w).unwrap()).unwrap();
    assert!(y.requires_grad());
}

#[test]
fn sizes_that_overflow_or_cannot_be_allocated_are_errors() {
    // 2⁶² + 1 rows of 4 wraps to 4 elements in unchecked arithmetic.
    assert!(matches!(Tensor::full(&[(1 << 62) + 1, 4], 0.0), Err(Error::Memory(_))));
    assert!(matches!(Tensor::from_vec(vec![0.0; 4], &[(1 << 62) + 1, 4]), Err(Error::Memory(_))));
    // 256 TiB: a valid size, but more than a 48-bit address space holds, so no allocator
    // grants it whatever the overcommit policy (the process must not abort).
    assert!(matches!(Tensor::zeros(&[1 << 46]), Err(Error::Memory(_))));
    assert!(matches!(Tensor::randn(&[1 << 23, 1 << 23], 0.0, 1.0, 0), Err(Error::Memory(_))));
    // A reshape to a shape whose size wraps around to the element count.
    let four = Tensor::ones(&[4]).unwrap();
    assert!(matches!(ops::reshape(&four, &[(1 << 62) + 1, 4]), Err(Error::Shape(_))));
}

#[test]
fn empty_tensors_flow_through() {
    let e = Tensor::zeros(&[0, 4]).unwrap().with_grad();
    let w = Tensor::ones(&[3, 4]).unwrap().with_grad();
    let y = ops::linear(&e, &w, None).unwrap();
    assert_eq!(y.shape(), &[0, 3]);
    ops::sum_all(&y).backward().unwrap();
    assert_eq!(w.grad().unwrap().to_vec(), vec![0.0; 12]);
}

#[test]
fn a_thread_reading_a_tensor_reads_it_again_while_a_writer_waits() {
    // An op reading `w` while holding a read of it (`w * w` takes two; a forward pass holds
    // its output while backward reads the inputs), as an optimizer step in another thread
    // waits to write `w`. With std's lock, which queues new readers behind a waiting writer,
    // the second read and the writer waited for each other forever.
    let w = Tensor::from_vec(vec![3.0], &[1]).unwrap();
    let (done, finished) = std::sync::mpsc::channel();
    let reader = w.clone();
    std::thread::spawn(move || {
        let held = reader.read();
        let writer = reader.clone();
        let step = std::thread::spawn(move || writer.write()[0] = 1.0);
        std::thread::sleep(std::time::Duration::from_millis(200)); // the step is waiting
        let square = ops::mul(&reader, &reader).unwrap().to_vec();
        drop(held);
        step.join().unwrap();
        done.send(square).unwrap();
    });
    let square = finished.recv_timeout(std::time::Duration::from_secs(20)).expect("the reads and the write deadlocked");
    assert_eq!((square, w.to_vec()), (vec![9.0], vec![1.0]));
}

#[test]
fn a_deep_graph_never_backpropagated_is_freed_without_overflowing_the_stack() {
    // A running total of tracked values (`total = total + loss`) is a chain as deep as it is
    // long; dropping it freed one node inside the other's drop, and 150k ops overflowed an
    // 8 MB stack (this test thread's is 2 MB).
    let x = Tensor::ones(&[2]).unwrap().with_grad();
    let mut total = x.clone();
    for _ in 0..300_000 {
        total = ops::add_scalar(&total, 1.0).unwrap();
    }
    assert_eq!(total.to_vec(), vec![300_001.0; 2]);
    drop(total);
    // A shared input outlives the graph that used it.
    assert_eq!(ops::mul_scalar(&x, 2.0).unwrap().to_vec(), vec![2.0; 2]);
}

/// A small transformer-like step computed on a pool of `threads` threads (with more threads
/// than batches, attention splits heads rather than batches).
fn step_with_threads(threads: usize) -> (f32, Vec<Vec<f32>>) {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    pool.install(|| {
        let (b, t, c, h) = (3, 16, 32, 4);
        let qkv = Linear::new(c, 3 * c, true, 1).unwrap();
        let norm = LayerNorm::new(c, true, 1e-5).unwrap();
        let head = Linear::new(c, 11, false, 2).unwrap();
        let x = Tensor::randn(&[b, t, c], 0.0, 1.0, 3).unwrap();
        let a = ops::attention_qkv(&qkv.forward(&norm.forward(&x).unwrap()).unwrap(), h, true, None, None).unwrap();
        let logits = head.forward(&ops::gelu(&a).unwrap()).unwrap();
        let targets: Vec<i64> = (0..b * t).map(|i| (i * 7 % 11) as i64).collect();
        let loss = ops::cross_entropy(&logits, &targets, None, ops::Reduction::Mean).unwrap();
        loss.backward().unwrap();
        let grads = [qkv.parameters(), norm.parameters(), head.parameters()]
            .concat()
            .iter()
            .map(|p| p.grad().unwrap().to_vec())
            .collect();
        (loss.item().unwrap(), grads)
    })
}

#[test]
fn results_do_not_depend_on_thread_count() {
    let (l1, g1) = step_with_threads(1);
    for threads in [2, 4] {
        let (l2, g2) = step_with_threads(threads);
        assert!((l1 - l2).abs() <= 1e-6 * l1.abs(), "{threads} threads: loss {l1} vs {l2}");
        for (a, b) in g1.iter().flatten().zip(g2.iter().flatten()) {
            assert!((a - b).abs() <= 1e-5 * (1.0 + a.abs()), "{threads} threads: grad {a} vs {b}");
        }
    }
}

#[test]
fn adamw_step_matches_hand_computation() {
    let p = Tensor::from_vec(vec![1.0, -2.0], &[2]).unwrap().with_grad();
    let mut opt = AdamW::new(vec![(p.clone(), 0.1)], 0.01, (0.9, 0.999), 1e-8).unwrap();
    ops::sum_all(&ops::mul(&p, &Tensor::from_vec(vec![0.5, -3.0], &[2]).unwrap()).unwrap()).backward().unwrap();
    opt.step();
    // Step 1: m̂ = g, v̂ = g², so the update is lr·sign(g) (up to eps), after decay p·(1 − lr·wd).
    let expected = [1.0 * (1.0 - 0.001) - 0.01, -2.0 * (1.0 - 0.001) + 0.01];
    for (a, e) in p.to_vec().iter().zip(expected) {
        assert!((a - e).abs() < 1e-6, "{a} vs {e}");
    }
    // Clipping scales the global norm down to max_norm.
    let norm = ferrolm::clip_grad_norm(std::slice::from_ref(&p), 0.1).unwrap();
    assert!((norm - (0.25f32 + 9.0).sqrt()).abs() < 1e-5);
    let g = p.grad().unwrap().to_vec();
    assert!(((g[0] * g[0] + g[1] * g[1]).sqrt() - 0.1).abs() < 1e-4);
    // A tensor listed twice (tied weights) is counted and scaled once.
    let norm = ferrolm::clip_grad_norm(&[p.clone(), p.clone()], 0.05).unwrap();
    assert!((norm - 0.1).abs() < 1e-4);
    let g = p.grad().unwrap().to_vec();
    assert!(((g[0] * g[0] + g[1] * g[1]).sqrt() - 0.05).abs() < 1e-4);
}

#[test]
fn random_tensors_are_one_stream_at_any_thread_count() {
    // Drawn in parallel chunks, yet the sequential stream's values.
    let mut rng = ferrolm::rng::Rng::new(5);
    let sequential: Vec<f32> = (0..300_001).map(|_| 0.5 + 2.0 * rng.normal()).collect();
    for threads in [1, 3] {
        let t = ferrolm::with_threads(Some(threads), || Tensor::randn(&[300_001], 0.5, 2.0, 5)).unwrap().unwrap();
        assert_eq!(t.to_vec(), sequential);
    }
}
