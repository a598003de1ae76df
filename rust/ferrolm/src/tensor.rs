//! `Tensor`: an n-dimensional, row-major f32 array that can take part in backpropagation.
//!
//! A tensor is a cheap handle (`Arc`) to its shape, its storage and — when it was made by an
//! op from inputs that need gradients — the graph node that knows how to send gradients back
//! (see [`crate::autograd`]). Storage is always contiguous; `reshape` and `detach` share it,
//! everything else writes a fresh buffer.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use ndarray::{ArrayD, ArrayViewD, Axis, IxDyn};
use parking_lot::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use rayon::prelude::*;

use crate::autograd::{BackwardFn, Grad, Node, Origin};
use crate::rng::Rng;
use crate::{ensure, Error, Result};

/// Contiguous element storage, shared by a tensor and its reshaped views.
pub(crate) type Storage = Arc<Elements>;

/// The elements, and how many times they were written in place: a backward pass refuses values
/// changed since its forward pass read them (it would compute wrong gradients silently).
pub(crate) struct Elements {
    data: RwLock<Vec<f32>>,
    version: AtomicU64,
    /// The elements rounded to bfloat16, and the version they were rounded from
    /// ([`Tensor::bf16_copy`]).
    bf16: Mutex<Option<(u64, Arc<Vec<u16>>)>>,
}

impl Elements {
    pub(crate) fn new(data: Vec<f32>) -> Storage {
        Arc::new(Elements { data: RwLock::new(data), version: AtomicU64::new(0), bf16: Mutex::new(None) })
    }

    pub(crate) fn version(&self) -> u64 {
        self.version.load(Ordering::Relaxed)
    }
}

/// A tensor's elements, writable in place ([`Tensor::write`]).
pub struct ElementsMut<'a>(RwLockWriteGuard<'a, Vec<f32>>);

impl std::ops::Deref for ElementsMut<'_> {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.0
    }
}

impl std::ops::DerefMut for ElementsMut<'_> {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.0
    }
}

/// A handle to an n-dimensional f32 array; cloning it is cheap and shares the data.
#[derive(Clone)]
pub struct Tensor(Arc<Inner>);

pub(crate) struct Inner {
    id: u64,
    shape: Vec<usize>,
    storage: Storage,
    requires_grad: AtomicBool,
    grad: Mutex<Option<Vec<f32>>>,
    pub(crate) origin: Mutex<Origin>,
}

/// A graph is freed in a loop, not by recursion: a chain of ops never backpropagated (a running
/// `total = total + loss`) is as deep as it is long, and 150k ops overflowed the stack when
/// its last tensor was dropped.
impl Drop for Inner {
    fn drop(&mut self) {
        let mut inputs = match take_origin(self) {
            Origin::Op(node) => node.inputs,
            _ => return,
        };
        while let Some(Tensor(input)) = inputs.pop() {
            // The last handle to an input: its own inputs join the loop, and it drops as a leaf.
            if let Some(mut inner) = Arc::into_inner(input) {
                if let Origin::Op(node) = take_origin(&mut inner) {
                    inputs.extend(node.inputs);
                }
            }
        }
    }
}

fn take_origin(inner: &mut Inner) -> Origin {
    std::mem::replace(inner.origin.get_mut().unwrap_or_else(|e| e.into_inner()), Origin::Leaf)
}

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// Number of elements of a shape (1 for a scalar's empty shape). For the shape of an existing
/// tensor (constructors check with [`checked_numel`], and ops whose output can outgrow their
/// inputs allocate it with `zeros_for`); a shape from outside must be checked with
/// `checked_numel`.
pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// Number of elements of a shape, or an error when that many f32 could not be addressed. The
/// non-zero dimensions must be addressable too, as numpy requires: an empty tensor of shape
/// (0, 2⁶²) would pass the count, then overflow every stride and buffer sized by its other axes.
pub fn checked_numel(shape: &[usize]) -> Result<usize> {
    let limit = isize::MAX as usize / size_of::<f32>();
    let nonzero = shape.iter().filter(|&&d| d > 0).try_fold(1usize, |n, &d| n.checked_mul(d));
    match nonzero.filter(|&n| n <= limit) {
        Some(n) => Ok(if shape.contains(&0) { 0 } else { n }),
        None => Err(Error::Memory(format!("a tensor of shape {shape:?} has too many elements to address"))),
    }
}

/// `n` copies of `value`, or an error when the allocator refuses the buffer (instead of the
/// process aborting, as `vec!` would).
fn filled_buffer(n: usize, value: f32) -> Result<Vec<f32>> {
    if value.to_bits() == 0 {
        return zeroed(n);
    }
    let mut data = reserved(n)?;
    data.resize(n, value);
    Ok(data)
}

/// `n` zeros from the allocator's zeroed memory (`calloc`: large buffers are mapped lazily, so
/// pages never written cost nothing), or an error when it is refused.
pub(crate) fn zeroed(n: usize) -> Result<Vec<f32>> {
    if n == 0 {
        return Ok(Vec::new());
    }
    let layout = std::alloc::Layout::array::<f32>(n).map_err(|_| cannot_allocate(n))?;
    // SAFETY: the layout's size is non-zero (n > 0).
    let ptr = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<f32>();
    if ptr.is_null() {
        return Err(cannot_allocate(n));
    }
    // SAFETY: `ptr` comes from the global allocator with the layout of `n` f32, all of them
    // initialised (all-zero bits are 0.0), as `Vec::from_raw_parts` requires.
    Ok(unsafe { Vec::from_raw_parts(ptr, n, n) })
}

/// Zeros for a new op's output of `shape`: checked and allocated fallibly, for outputs that can
/// be far larger than their inputs (broadcasts, outer products, gathers).
pub(crate) fn zeros_for(shape: &[usize]) -> Result<Vec<f32>> {
    zeroed(checked_numel(shape)?)
}

/// An empty vector with room for `n` items, or an error when the allocator refuses it: what
/// ops keep besides tensors (ids, per-row statistics) fails as a tensor's buffer does, not by
/// aborting.
pub(crate) fn reserved<T>(n: usize) -> Result<Vec<T>> {
    let mut data = Vec::new();
    data.try_reserve_exact(n).map_err(|_| cannot_allocate(n.saturating_mul(size_of::<T>()) / size_of::<f32>()))?;
    Ok(data)
}

/// `n` copies of `value` (see `reserved`).
pub(crate) fn filled_with<T: Clone>(n: usize, value: T) -> Result<Vec<T>> {
    let mut data = reserved(n)?;
    data.resize(n, value);
    Ok(data)
}

/// A copy of `items` (see `reserved`).
pub(crate) fn copied<T: Copy>(items: &[T]) -> Result<Vec<T>> {
    let mut data = reserved(items.len())?;
    data.extend_from_slice(items);
    Ok(data)
}

/// The items of `items` in a vector, or [`Error::Memory`] when it cannot be allocated (see
/// `reserved`): for copies whose size comes from outside, as a broadcast array's, which can be
/// far larger than the memory it takes.
pub fn collected<T>(items: impl ExactSizeIterator<Item = T>) -> Result<Vec<T>> {
    let mut data = reserved(items.len())?;
    // Internal iteration: ndarray's iterators then walk a strided array row by row (`extend`
    // stepped element by element, 7–60× slower on a transposed or reversed one).
    items.for_each(|x| data.push(x));
    Ok(data)
}

/// The elements of an ndarray array of any layout in row-major order; [`Error::Memory`] when the
/// copy cannot be allocated (a broadcast view can be far larger than its data).
pub fn row_major_copy(array: ArrayViewD<'_, f32>) -> Result<Vec<f32>> {
    if let Some(contiguous) = array.as_slice() {
        return copied(contiguous);
    }
    // Row by row (an array that is not contiguous has an axis): a reversed or broadcast array's
    // rows are slices, a transposed one's are not.
    let mut data = reserved(array.len())?;
    for row in array.lanes(Axis(array.ndim() - 1)) {
        match row.as_slice() {
            Some(row) => data.extend_from_slice(row),
            None => row.iter().for_each(|&x| data.push(x)),
        }
    }
    Ok(data)
}

pub(crate) fn cannot_allocate(n: usize) -> Error {
    Error::Memory(format!("cannot allocate {} MB for a tensor", n.saturating_mul(size_of::<f32>()) >> 20))
}

/// Resolves a possibly negative axis (`-1` is the last) against a rank.
pub fn resolve_axis(axis: isize, rank: usize) -> Result<usize> {
    let r = rank as isize;
    ensure!(axis >= -r && axis < r, Index, "axis {axis} is out of range for a tensor of rank {rank}");
    Ok(if axis < 0 { (axis + r) as usize } else { axis as usize })
}

impl Tensor {
    fn build(shape: Vec<usize>, storage: Storage, requires_grad: bool, origin: Origin) -> Tensor {
        Tensor(Arc::new(Inner {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            shape,
            storage,
            requires_grad: AtomicBool::new(requires_grad),
            grad: Mutex::new(None),
            origin: Mutex::new(origin),
        }))
    }

    /// A leaf tensor owning `data`, laid out row-major in `shape`.
    pub fn from_vec(data: Vec<f32>, shape: &[usize]) -> Result<Tensor> {
        let n = checked_numel(shape)?;
        ensure!(
            data.len() == n,
            Shape,
            "{} values cannot fill a tensor of shape {:?} ({} elements)",
            data.len(),
            shape,
            n
        );
        Ok(Tensor::build(shape.to_vec(), Elements::new(data), false, Origin::Leaf))
    }

    /// A leaf tensor copied from an ndarray array of any layout ([`row_major_copy`]).
    pub fn from_ndarray(array: ArrayViewD<'_, f32>) -> Result<Tensor> {
        Tensor::from_vec(row_major_copy(array.view())?, array.shape())
    }

    /// A copy of the data as an ndarray array.
    pub fn to_ndarray(&self) -> ArrayD<f32> {
        ArrayD::from_shape_vec(IxDyn(self.shape()), self.to_vec()).expect("shape and data agree")
    }

    pub fn scalar(value: f32) -> Tensor {
        Tensor::build(Vec::new(), Elements::new(vec![value]), false, Origin::Leaf)
    }

    /// A tensor of `shape` filled with `value`; sizes that overflow or cannot be allocated
    /// give [`Error::Memory`].
    pub fn full(shape: &[usize], value: f32) -> Result<Tensor> {
        Tensor::from_vec(filled_buffer(checked_numel(shape)?, value)?, shape)
    }

    pub fn zeros(shape: &[usize]) -> Result<Tensor> {
        Tensor::full(shape, 0.0)
    }

    pub fn ones(shape: &[usize]) -> Result<Tensor> {
        Tensor::full(shape, 1.0)
    }

    /// Normal(mean, std) samples from a seeded generator: the same seed, the same tensor (at
    /// any thread count: chunks are drawn in parallel from their places in one stream).
    pub fn randn(shape: &[usize], mean: f32, std: f32, seed: u64) -> Result<Tensor> {
        ensure!(
            mean.is_finite() && std.is_finite() && std >= 0.0,
            Argument,
            "randn: mean must be finite and std a finite number >= 0, got mean {mean} and std {std}"
        );
        Tensor::sampled(shape, seed, 2, |rng| mean + std * rng.normal())
    }

    /// Uniform [low, high) samples from a seeded generator.
    pub fn rand(shape: &[usize], low: f32, high: f32, seed: u64) -> Result<Tensor> {
        ensure!(
            low.is_finite() && high.is_finite() && low <= high,
            Argument,
            "rand: low and high must be finite with low <= high, got [{low}, {high})"
        );
        Tensor::sampled(shape, seed, 1, |rng| low + (high - low) * rng.uniform())
    }

    /// A tensor of `sample(rng)` values, each taking `draws` draws of the stream `seed`.
    fn sampled(shape: &[usize], seed: u64, draws: u64, sample: impl Fn(&mut Rng) -> f32 + Sync) -> Result<Tensor> {
        const CHUNK: usize = 1 << 16;
        let mut data = filled_buffer(checked_numel(shape)?, 0.0)?;
        data.par_chunks_mut(CHUNK).enumerate().for_each(|(c, chunk)| {
            let mut rng = Rng::new(seed);
            rng.skip((c * CHUNK) as u64 * draws);
            chunk.iter_mut().for_each(|x| *x = sample(&mut rng));
        });
        Tensor::from_vec(data, shape)
    }

    /// The result of an op: records `backward` in the graph when gradients are being tracked
    /// (grad mode on and some input requires grad), otherwise drops it.
    pub(crate) fn from_op<G: Into<Grad>>(
        data: Vec<f32>,
        shape: Vec<usize>,
        op: &'static str,
        inputs: &[&Tensor],
        backward: impl FnOnce(&crate::autograd::Ctx) -> Result<Vec<Option<G>>> + Send + Sync + 'static,
    ) -> Tensor {
        Tensor::from_op_watching(data, shape, op, inputs, backward, true)
    }

    /// `from_op`; `watches_inputs` false for an op whose backward reads no input (a copy's): its
    /// inputs may change in place afterwards, as in PyTorch (its output may not).
    pub(crate) fn from_op_watching<G: Into<Grad>>(
        data: Vec<f32>,
        shape: Vec<usize>,
        op: &'static str,
        inputs: &[&Tensor],
        backward: impl FnOnce(&crate::autograd::Ctx) -> Result<Vec<Option<G>>> + Send + Sync + 'static,
        watches_inputs: bool,
    ) -> Tensor {
        debug_assert_eq!(data.len(), numel(&shape), "{op} produced a wrong-sized buffer");
        let backward: BackwardFn = Box::new(|ctx| Ok(backward(ctx)?.into_iter().map(|g| g.map(Into::into)).collect()));
        Tensor::recorded(Elements::new(data), shape, op, inputs, backward, watches_inputs)
    }

    pub(crate) fn with_storage(
        storage: Storage,
        shape: Vec<usize>,
        op: &'static str,
        inputs: &[&Tensor],
        backward: BackwardFn,
    ) -> Tensor {
        Tensor::recorded(storage, shape, op, inputs, backward, true)
    }

    /// `with_storage`; `watches_inputs`: whether backward refuses inputs changed in place since
    /// (an output changed in place is always refused; see `Node::versions`).
    fn recorded(
        storage: Storage,
        shape: Vec<usize>,
        op: &'static str,
        inputs: &[&Tensor],
        backward: BackwardFn,
        watches_inputs: bool,
    ) -> Tensor {
        let track = crate::autograd::is_grad_enabled() && inputs.iter().any(|t| t.requires_grad());
        if track {
            let watched = if watches_inputs { inputs } else { &[] };
            let versions = watched.iter().map(|t| t.storage().version()).sum::<u64>() + storage.version();
            let inputs = inputs.iter().map(|t| (*t).clone()).collect();
            let node = Node { op, inputs, versions, backward, watches_inputs };
            Tensor::build(shape, storage, true, Origin::Op(node))
        } else {
            Tensor::build(shape, storage, false, Origin::Leaf)
        }
    }

    /// A unique id for the lifetime of the process (used to key gradients during backward).
    pub fn id(&self) -> u64 {
        self.0.id
    }

    pub fn shape(&self) -> &[usize] {
        &self.0.shape
    }

    pub fn rank(&self) -> usize {
        self.0.shape.len()
    }

    pub fn numel(&self) -> usize {
        numel(&self.0.shape)
    }

    /// Size of `axis` (negative counts from the end).
    pub fn dim(&self, axis: isize) -> Result<usize> {
        Ok(self.0.shape[resolve_axis(axis, self.rank())?])
    }

    /// Read access to the elements, row-major. A thread may read a tensor it is already reading
    /// (`x * x`) even while another waits to write it: a lock that queued the second read behind
    /// the waiting writer, as std's does, would leave both waiting forever.
    pub fn read(&self) -> RwLockReadGuard<'_, Vec<f32>> {
        self.0.storage.data.read_recursive()
    }

    /// Write access to the elements: for optimisers and initialisers, never inside a graph. A
    /// slice, so the element count always matches the shape. It waits while this thread or
    /// another holds a [`Tensor::read`] of the same storage.
    pub fn write(&self) -> ElementsMut<'_> {
        let storage = &self.0.storage;
        let elements = storage.data.write();
        // Counted once the lock is held, so a reader holding the read lock sees the version of
        // the data it reads (`bf16_copy` relies on that).
        storage.version.fetch_add(1, Ordering::Relaxed);
        // A bf16 copy is stale now: freed at once, unless it is being made (`bf16_copy` holds its
        // lock while it waits to read: waiting here would deadlock; it sees the new version).
        if let Ok(mut copy) = storage.bf16.try_lock() {
            *copy = None;
        }
        ElementsMut(elements)
    }

    /// The elements rounded to bfloat16 (as bits), kept with the storage until its next write:
    /// decoding under bf16 precision reads a weight's copy, half the bytes of its f32 values.
    pub(crate) fn bf16_copy(&self) -> Result<Arc<Vec<u16>>> {
        let storage = &self.0.storage;
        let mut copy = storage.bf16.lock().unwrap_or_else(|e| e.into_inner());
        let data = self.read();
        let version = storage.version();
        if let Some((made_from, bits)) = &*copy {
            if *made_from == version {
                return Ok(bits.clone());
            }
        }
        *copy = None; // the stale copy is freed before the new one is made
        let mut bits = Vec::new();
        bits.try_reserve_exact(data.len()).map_err(|_| cannot_allocate(data.len() / 2))?;
        // On this thread: a parallel loop could run another task here, which might wait for the
        // lock this thread holds.
        crate::simd::vectorized(
            #[inline(always)]
            || bits.extend(data.iter().map(|&x| crate::gemm::to_bf16(x))),
        );
        let bits = Arc::new(bits);
        *copy = Some((version, bits.clone()));
        Ok(bits)
    }

    pub(crate) fn storage(&self) -> &Storage {
        &self.0.storage
    }

    pub fn to_vec(&self) -> Vec<f32> {
        self.read().clone()
    }

    /// The single value of a one-element tensor.
    pub fn item(&self) -> Result<f32> {
        ensure!(self.numel() == 1, Shape, "item() needs a tensor with one element, got shape {:?}", self.shape());
        Ok(self.read()[0])
    }

    pub fn requires_grad(&self) -> bool {
        self.0.requires_grad.load(Ordering::Relaxed)
    }

    /// Marks a leaf tensor as a parameter whose gradient `backward` should fill.
    pub fn set_requires_grad(&self, requires_grad: bool) -> Result<()> {
        ensure!(
            self.is_leaf(),
            Grad,
            "requires_grad can only be set on leaf tensors; use detach() to make a leaf from a result"
        );
        self.0.requires_grad.store(requires_grad, Ordering::Relaxed);
        Ok(())
    }

    /// Builder form of [`Tensor::set_requires_grad`] for freshly made leaves.
    pub fn with_grad(self) -> Tensor {
        self.0.requires_grad.store(true, Ordering::Relaxed);
        self
    }

    /// True when the tensor was not made by a tracked op (data, parameters, detached results).
    pub fn is_leaf(&self) -> bool {
        matches!(*self.origin(), Origin::Leaf)
    }

    pub(crate) fn origin(&self) -> MutexGuard<'_, Origin> {
        self.0.origin.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The accumulated gradient of a leaf, if backward has reached it since the last zeroing.
    pub fn grad(&self) -> Option<Tensor> {
        let g = self.grad_slot();
        g.as_ref().map(|g| Tensor::from_vec(g.clone(), self.shape()).expect("grad has the tensor's shape"))
    }

    /// Replaces the accumulated gradient (None forgets it, as [`Tensor::zero_grad`]): for code
    /// that scales or clips gradients itself. The gradient must have the tensor's shape.
    pub fn set_grad(&self, grad: Option<&Tensor>) -> Result<()> {
        if let Some(g) = grad {
            ensure!(
                g.shape() == self.shape(),
                Shape,
                "a gradient of shape {:?} for a tensor of shape {:?}",
                g.shape(),
                self.shape()
            );
        }
        *self.grad_slot() = grad.map(Tensor::to_vec);
        Ok(())
    }

    /// Direct access to the gradient buffer (for optimisers: no copy). Crate-private: a buffer
    /// of another length would break every reader.
    pub(crate) fn grad_slot(&self) -> MutexGuard<'_, Option<Vec<f32>>> {
        self.0.grad.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forgets the accumulated gradient.
    pub fn zero_grad(&self) {
        *self.grad_slot() = None;
    }

    pub(crate) fn accumulate_grad(&self, mut g: Vec<f32>) {
        // The sum runs outside the lock: a parallel add may run another rayon job on this
        // thread, and that job may be accumulating into this same gradient.
        loop {
            let mut slot = self.grad_slot();
            let Some(previous) = slot.take() else {
                *slot = Some(g);
                return;
            };
            drop(slot);
            crate::ops::add_assign(&mut g, &previous);
        }
    }

    /// A leaf sharing this tensor's data but cut off from the graph.
    pub fn detach(&self) -> Tensor {
        Tensor::build(self.shape().to_vec(), self.storage().clone(), false, Origin::Leaf)
    }

    /// Whether the two tensors hold the same data (one is a view of the other: a reshape,
    /// `detach`, a bare `t[:]`).
    pub fn shares_data(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(self.storage(), other.storage())
    }

    /// A leaf with its own copy of the data.
    pub fn deep_clone(&self) -> Tensor {
        Tensor::from_vec(self.to_vec(), self.shape()).expect("same shape")
    }

    /// Overwrites the values of this tensor with `values` (same number of elements). The values
    /// must not be borrowed from this tensor's storage (`t.assign(&t.read())`, or a reshape's
    /// or `detach`'s): the write would wait for that read forever. Copy them first (`to_vec`).
    pub fn assign(&self, values: &[f32]) -> Result<()> {
        ensure!(
            values.len() == self.numel(),
            Shape,
            "cannot assign {} values to a tensor of shape {:?}",
            values.len(),
            self.shape()
        );
        self.write().copy_from_slice(values);
        Ok(())
    }

    /// Errors unless the tensor has exactly `expected` as its shape.
    pub fn expect_shape(&self, expected: &[usize], what: &str) -> Result<()> {
        if self.shape() != expected {
            return Err(Error::Shape(format!("{what} must have shape {expected:?}, got {:?}", self.shape())));
        }
        Ok(())
    }
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let data = self.read();
        let shown: Vec<String> = data.iter().take(8).map(|v| format!("{v:.4}")).collect();
        let more = if data.len() > 8 { ", ..." } else { "" };
        write!(f, "Tensor(shape={:?}, data=[{}{}]", self.shape(), shown.join(", "), more)?;
        if self.requires_grad() {
            write!(f, ", requires_grad=True")?;
        }
        write!(f, ")")
    }
}
