//! Packed copies of the weights a batch's decoding steps multiply by, kept for one generation.
//!
//! A decoding step multiplies every weight by one row per prompt. One or two rows go best
//! through `gemm`'s in-place path, which reads the weight as it is; more rows go faster
//! through the blocked product, but that packs B first, the same work at every token. A
//! generation runs its decoding steps in a [`PackedWeights::scope`]; inside it, `linear`
//! packs each weight once ([`PackedB`]) for products of [`MIN_ROWS`] rows or more and reads the
//! packed copy at every later step, until the weight is written. The copies live as long as
//! the `PackedWeights` (one more copy of the weights: half of it under bf16 precision), so a
//! generation that ends frees them.
//!
//! Measured per decoding step of the 6-layer, 384-wide model on 2 threads, against the
//! in-place path (up to 15 rows) and packing at every step (16 rows and more): f32 4 rows
//! 1.1×, 8–15 rows 1.3×, 16 rows 1.6×, 64 rows 1.2× faster; bf16 4 rows 1.2×, 8–15 rows
//! 1.5–1.8×, 16–32 rows 1.5–1.7×. A row's sums then come from the blocked product, so its
//! numbers can differ by rounding from the same prompt decoded alone (and under bf16 its
//! activations are rounded too, as in every blocked bf16 product).

use std::cell::RefCell;
use std::sync::Arc;

use crate::gemm::{MatRef, PackedB};
use crate::tensor::{Storage, Tensor};
use crate::{Error, Result};

/// The fewest rows a product reads a packed weight for. Per decoding step of the 6-layer model,
/// the in-place path is faster for one row (1.8× in f32, 1.1× in bf16) and even for two;
/// from three rows the packed weights are as fast (f32) or faster (bf16: 1.4×).
const MIN_ROWS: usize = 3;

/// Weights packed for products by them (`linear`'s `x·Wᵀ`), each with the storage and version
/// it was packed from. A clone shares the packed copies, which are never written.
#[derive(Clone, Default)]
pub struct PackedWeights(Vec<(Storage, u64, Arc<PackedB>)>);

thread_local! {
    /// The `PackedWeights` of the scope running on this thread.
    static IN_SCOPE: RefCell<Option<PackedWeights>> = const { RefCell::new(None) };
}

impl PackedWeights {
    /// Runs `f` with this thread's products by weights of 3 rows or more (`MIN_ROWS`) reading
    /// (and making) the packed copies kept here.
    pub fn scope<R>(&mut self, f: impl FnOnce() -> R) -> R {
        /// Takes the copies back, even when `f` panics.
        struct Restore<'a>(&'a mut PackedWeights, Option<PackedWeights>);
        impl Drop for Restore<'_> {
            fn drop(&mut self) {
                *self.0 = IN_SCOPE.replace(self.1.take()).unwrap_or_default();
            }
        }
        let outer = IN_SCOPE.replace(Some(std::mem::take(self)));
        let _restore = Restore(self, outer);
        f()
    }

    /// The bytes the packed copies take.
    pub fn bytes(&self) -> usize {
        self.0.iter().map(|(_, _, p)| p.bytes()).sum()
    }
}

/// The packed copy of the `[out, in]` weight `w` for a product `x·Wᵀ` of `rows` rows, inside a
/// [`PackedWeights::scope`] and for [`MIN_ROWS`] rows or more; `None` otherwise, or when there
/// is no memory for the copy (the product then packs as it goes).
pub(super) fn packed_weight(w: &Tensor, rows: usize) -> Result<Option<Arc<PackedB>>> {
    if rows < MIN_ROWS || IN_SCOPE.with_borrow(Option::is_none) {
        return Ok(None);
    }
    let (storage, (out_f, in_f)) = (w.storage(), (w.shape()[0], w.shape()[1]));
    let is_copy = |(s, v, p): &(Storage, u64, Arc<PackedB>), version| {
        Arc::ptr_eq(s, storage) && *v == version && p.dims() == (in_f, out_f) && p.is_current()
    };
    // The version is read under the read lock, which a write holds while it counts one more.
    let data = w.read();
    let version = storage.version();
    let kept = IN_SCOPE.with_borrow(|scope| Some(scope.as_ref()?.0.iter().find(|e| is_copy(e, version))?.2.clone()));
    if kept.is_some() {
        return Ok(kept);
    }
    // Packed outside the borrow: packing runs on the pool, and while it waits this thread may
    // run another task that multiplies by a weight.
    let packed = match PackedB::new(MatRef::new(&data, out_f, in_f).t()) {
        Err(Error::Memory(_)) => return Ok(None),
        packed => Arc::new(packed?),
    };
    IN_SCOPE.with_borrow_mut(|scope| {
        if let Some(scope) = scope {
            // Stale copies go: of this weight, and of weights no one else holds any more.
            scope.0.retain(|(s, _, _)| !Arc::ptr_eq(s, storage) && Arc::strong_count(s) > 1);
            scope.0.push((storage.clone(), version, packed.clone()));
        }
    });
    Ok(Some(packed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::linear;

    fn close(a: &Tensor, b: &Tensor) -> bool {
        a.to_vec().iter().zip(b.to_vec()).all(|(x, y)| (x - y).abs() <= 1e-5 * (1.0 + y.abs()))
    }

    /// In a scope, a weight is packed at its first product of enough rows, read packed at the
    /// next ones, and packed again after it is written; a product outside the scope gives the
    /// same values (to rounding), and smaller products pack nothing.
    #[test]
    fn a_scope_packs_each_weight_once_until_it_is_written() {
        let x = Tensor::randn(&[2, 2, 300], 0.0, 1.0, 1).unwrap(); // 4 rows
        let (w, b) = (Tensor::randn(&[500, 300], 0.0, 0.1, 2).unwrap(), Tensor::randn(&[500], 0.0, 1.0, 3).unwrap());
        let mut packed = PackedWeights::default();
        let first = packed.scope(|| linear(&x, &w, Some(&b))).unwrap();
        assert!(close(&first, &linear(&x, &w, Some(&b)).unwrap()));
        let bytes = packed.bytes();
        assert!(bytes >= 500 * 300 * 4, "packed {bytes} bytes");
        let again = packed.scope(|| linear(&x, &w, None)).unwrap();
        assert!(close(&again, &linear(&x, &w, None).unwrap()));
        let few = Tensor::randn(&[MIN_ROWS - 1, 300], 0.0, 1.0, 4).unwrap();
        packed.scope(|| linear(&few, &w, None)).unwrap();
        assert_eq!(packed.bytes(), bytes, "one copy of the weight, none for fewer rows");

        w.write().iter_mut().for_each(|v| *v = -*v);
        let after = packed.scope(|| linear(&x, &w, Some(&b))).unwrap();
        assert!(close(&after, &linear(&x, &w, Some(&b)).unwrap()), "a written weight is packed again");
        assert!(!close(&after, &first));
        assert_eq!(packed.bytes(), bytes, "the stale copy was dropped");

        // A weight no one holds any more leaves with the next packing.
        let other = Tensor::randn(&[200, 300], 0.0, 0.1, 5).unwrap();
        packed.scope(|| linear(&x, &other, None)).unwrap();
        assert_eq!(packed.0.len(), 2);
        drop(other);
        packed.scope(|| linear(&x, &Tensor::randn(&[100, 300], 0.0, 0.1, 6).unwrap(), None)).unwrap();
        assert_eq!(packed.0.len(), 2, "the dropped weight's copy went, the new one's came");

        // Outside a scope nothing is kept, and a scope's copies stay with their owner.
        linear(&x, &w, None).unwrap();
        assert_eq!(PackedWeights::default().scope(|| IN_SCOPE.with_borrow(|s| s.as_ref().map(|s| s.0.len()))), Some(0));
        assert!(IN_SCOPE.with_borrow(Option::is_none));
    }
}
