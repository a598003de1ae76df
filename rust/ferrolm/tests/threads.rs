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
