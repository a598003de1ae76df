//! Reverse-mode automatic differentiation.
//!
//! Each tracked op stores a `Node`: its inputs and a one-shot backward closure written next
//! to the op's forward code. [`Tensor::backward`] sorts the graph topologically, walks it from
//! the output back, hands each closure its output gradient and accumulates what it returns
//! into the inputs; a closure may return the output gradient itself (`Grad::Output`: adds,
//! reshapes), which is then shared rather than copied. Closures are consumed as they run, so
//! a graph is freed by its backward pass; walking it a second time is an error, as in
//! PyTorch without `retain_graph`.

use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::tensor::Tensor;
use crate::{bail, ensure, Result};

/// One input's gradient, as a backward closure returns it.
pub(crate) enum Grad {
    /// Values computed for the input.
    Values(Vec<f32>),
    /// The op's output gradient itself (adds, reshapes): shared, not copied.
    Output,
}

impl From<Vec<f32>> for Grad {
    fn from(values: Vec<f32>) -> Self {
        Grad::Values(values)
    }
}

/// Gradients for an op's inputs, in input order; `None` where an input needs none.
pub(crate) type Grads = Vec<Option<Grad>>;

/// The backward half of an op: output gradient in, input gradients out.
pub(crate) type BackwardFn = Box<dyn FnOnce(&Ctx) -> Result<Grads> + Send + Sync>;

/// How a tensor came to be.
pub(crate) enum Origin {
    /// Data, a parameter, or anything made while gradients were not tracked.
    Leaf,
    /// Made by a tracked op whose backward has not run yet.
    Op(Node),
    /// Made by a tracked op whose backward already ran (the graph was freed).
    Freed(&'static str),
}

pub(crate) struct Node {
    pub op: &'static str,
    pub inputs: Vec<Tensor>,
    /// The sum of the inputs' and the output's storage versions when the op ran: versions
    /// only grow, so the sum changes exactly when one of them was written (and needs no
    /// allocation per op). Only the output's for an op whose backward reads no input (a
    /// copy's): its inputs may change in place afterwards.
    pub versions: u64,
    pub watches_inputs: bool,
    pub backward: BackwardFn,
}

/// What a backward closure may look at.
pub(crate) struct Ctx<'a> {
    /// Gradient of the loss with respect to the op's output (output-shaped).
    pub grad: &'a [f32],
    /// The op's output values (so ops like exp or softmax need not save them).
    pub out: &'a [f32],
    pub inputs: &'a [Tensor],
}

impl Ctx<'_> {
    /// Whether input `i` wants a gradient (saves work for constants such as masks).
    pub fn needs(&self, i: usize) -> bool {
        self.inputs[i].requires_grad()
    }
}

thread_local! {
    static GRAD_ENABLED: Cell<bool> = const { Cell::new(true) };
}

/// Whether ops on this thread currently record a graph.
pub fn is_grad_enabled() -> bool {
    GRAD_ENABLED.with(|g| g.get())
}

/// Turns graph recording on or off for this thread; returns the previous setting.
pub fn set_grad_enabled(enabled: bool) -> bool {
    GRAD_ENABLED.with(|g| g.replace(enabled))
}

/// Runs `f` without recording a graph (inference, evaluation, optimiser arithmetic).
pub fn no_grad<R>(f: impl FnOnce() -> R) -> R {
    with_grad_enabled(false, f)
}

/// Runs `f` with graph recording set to `enabled` on this thread, then restores it (also if
/// `f` panics). Work moved to another thread takes its caller's setting along with this.
pub fn with_grad_enabled<R>(enabled: bool, f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            set_grad_enabled(self.0);
        }
    }
    let _restore = Restore(set_grad_enabled(enabled));
    f()
}

impl Tensor {
    /// Backpropagates from a one-element tensor (a loss), filling `.grad` of every leaf that
    /// requires grad. Gradients accumulate across calls until zeroed.
    pub fn backward(&self) -> Result<()> {
        ensure!(
            self.numel() == 1,
            Grad,
            "backward() without an output gradient needs a one-element tensor, got shape {:?}; \
             pass a gradient of the same shape (backward_with in Rust, backward(gradient) in Python)",
            self.shape()
        );
        self.backward_with(vec![1.0])
    }

    /// Backpropagates with an explicit gradient of this tensor's shape.
    pub fn backward_with(&self, grad: Vec<f32>) -> Result<()> {
        crate::compute(move || {
            ensure!(
                grad.len() == self.numel(),
                Shape,
                "output gradient has {} values, the tensor has shape {:?}",
                grad.len(),
                self.shape()
            );
            ensure!(
                self.requires_grad(),
                Grad,
                "this tensor does not require grad: no input of the computation had requires_grad=True \
             (or it was computed under no_grad)"
            );
            let order = topological_order(self)?;
            // Gradients waiting for their tensor's turn, shared where an op passes one on as is;
            // `make_mut` copies a shared one only if more is then added to it.
            let mut pending: HashMap<u64, Arc<Vec<f32>>> = HashMap::new();
            pending.insert(self.id(), Arc::new(grad));
            for tensor in order.iter().rev() {
                let Some(grad) = pending.remove(&tensor.id()) else {
                    continue;
                };
                // Taken and marked freed under one lock: another thread's backward through the same
                // graph must find it freed, never a leaf (it took a gradient and stopped there).
                let origin = {
                    let mut slot = tensor.origin();
                    let freed = match &*slot {
                        Origin::Op(node) => Origin::Freed(node.op),
                        Origin::Freed(op) => Origin::Freed(op),
                        Origin::Leaf => Origin::Leaf,
                    };
                    std::mem::replace(&mut *slot, freed)
                };
                match origin {
                    Origin::Leaf => {
                        if tensor.requires_grad() {
                            tensor.accumulate_grad(Arc::unwrap_or_clone(grad));
                        }
                    }
                    Origin::Freed(op) => bail!(Grad, "{}", freed_message(op)),
                    Origin::Op(node) => {
                        let input_grads = {
                            let out = tensor.read();
                            let ctx = Ctx { grad: &grad, out: &out, inputs: &node.inputs };
                            (node.backward)(&ctx)?
                        };
                        for (input, g) in node.inputs.iter().zip(input_grads) {
                            let Some(g) = g else { continue };
                            if !input.requires_grad() {
                                continue;
                            }
                            let g = match g {
                                Grad::Values(values) => Arc::new(values),
                                Grad::Output => grad.clone(),
                            };
                            debug_assert_eq!(g.len(), input.numel(), "{} returned a wrong-sized grad", node.op);
                            match pending.get_mut(&input.id()) {
                                Some(acc) => crate::ops::add_assign(Arc::<Vec<f32>>::make_mut(acc), &g),
                                None => {
                                    pending.insert(input.id(), g);
                                }
                            }
                        }
                    }
                }
            }
            Ok(())
        })
    }
}

fn freed_message(op: &str) -> String {
    format!(
        "backward through a graph that was already freed (at op `{op}`): each forward pass \
         supports one backward pass; run the forward again"
    )
}

/// Refuses a node whose inputs or output were written in place since it ran: its backward
/// would read changed values. Checked for the whole graph before any gradient is added, so a
/// refused backward leaves every `.grad` as it was. (Stricter than PyTorch, which checks only
/// the values an op's backward reads: `add` reads none.)
fn ensure_unmodified(node: &Node, output: &Tensor) -> Result<()> {
    let watched = if node.watches_inputs { &node.inputs[..] } else { &[] };
    let now: u64 = watched.iter().chain([output]).map(|t| t.storage().version()).sum();
    ensure!(
        now == node.versions,
        Grad,
        "a tensor that `{}` used was modified in place (copy_, an optimizer step...) after the forward pass and \
         before backward; run the forward again",
        node.op
    );
    Ok(())
}

/// Tensors reachable from `root` through tracked ops, each after all of its inputs (every
/// node checked with [`ensure_unmodified`]).
fn topological_order(root: &Tensor) -> Result<Vec<Tensor>> {
    let mut order = Vec::new();
    let mut seen = HashSet::new();
    // Iterative DFS (graphs can be thousands of ops deep): (tensor, inputs already pushed?).
    let mut stack = vec![(root.clone(), false)];
    while let Some((t, expanded)) = stack.pop() {
        if expanded {
            order.push(t);
            continue;
        }
        if !seen.insert(t.id()) {
            continue;
        }
        let inputs: Vec<Tensor> = match &*t.origin() {
            Origin::Op(node) => {
                ensure_unmodified(node, &t)?;
                node.inputs.iter().filter(|i| i.requires_grad()).cloned().collect()
            }
            Origin::Freed(op) => bail!(Grad, "{}", freed_message(op)),
            Origin::Leaf => Vec::new(),
        };
        stack.push((t, true));
        stack.extend(inputs.into_iter().filter(|i| !seen.contains(&i.id())).map(|i| (i, false)));
    }
    Ok(order)
}
