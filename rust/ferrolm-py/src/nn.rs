//! Layers, the optimisers (AdamW, SGD) and tensor factories for Python.

use std::sync::Mutex;

use pyo3::exceptions::{PyOverflowError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyTuple;
use pyo3::wrap_pyfunction;

use ferrolm::nn::{self, Module};
use ferrolm::rng::Rng;
use ferrolm::{AdamW, Optimizer, ParamState, Sgd, Tensor};
use numpy::{IntoPyArray, PyArray1, PyReadonlyArray1};

use crate::errors::IntoPy;
use crate::tensor::{memo_copy, run, shape_args, to_ids, PyTensor};
use crate::{compute, compute_locked, locked};

/// One parameter's optimiser state as Python sees it: ([(buffer name, values)], steps).
type PyParamState<'py> = (Vec<(String, Bound<'py, PyArray1<f32>>)>, u64);
/// The same, as Python hands it back.
type PyParamStateIn<'py> = (Vec<(String, PyReadonlyArray1<'py, f32>)>, u64);

/// Named parameters of a core module as Python (name, Tensor) pairs.
pub fn named(m: &dyn Module) -> Vec<(String, PyTensor)> {
    m.named_parameters().into_iter().map(|(n, t)| (n, PyTensor(t))).collect()
}

/// A layer's parameters (`named`'s tensors), as Python tensors.
fn tensors(m: &dyn Module) -> Vec<PyTensor> {
    m.parameters().into_iter().map(PyTensor).collect()
}

/// A layer's parameter set to `value`: Python's `layer.weight -= step` changes the tensor in
/// place and then sets the attribute to it, which is the same tensor; any other is refused
/// (its values go in with `weight.copy_(...)`).
fn put_back(name: &str, current: Option<&Tensor>, value: &PyTensor) -> PyResult<()> {
    if current.is_some_and(|t| t.id() == value.0.id()) {
        return Ok(());
    }
    Err(pyo3::exceptions::PyAttributeError::new_err(format!(
        "a layer's {name} is not replaced: change its values in place (`with fl.no_grad(): layer.{name}.copy_(values)`)"
    )))
}

/// `y = x·Wᵀ + b` with W of shape (out_features, in_features).
#[pyclass(name = "Linear", module = "ferrolm", frozen)]
pub struct PyLinear(nn::Linear);

#[pymethods]
impl PyLinear {
    #[new]
    #[pyo3(signature = (in_features, out_features, bias = true, seed = None))]
    fn new(py: Python<'_>, in_features: usize, out_features: usize, bias: bool, seed: Option<Seed>) -> PyResult<Self> {
        let seed = seed_or_next(seed);
        compute(py, || nn::Linear::new(in_features, out_features, bias, seed)).py().map(PyLinear)
    }
    fn __call__(&self, py: Python<'_>, x: PyTensor) -> PyResult<PyTensor> {
        run(py, || self.0.forward(&x.0))
    }
    #[getter]
    fn weight(&self) -> PyTensor {
        PyTensor(self.0.weight.clone())
    }
    #[getter]
    fn bias(&self) -> Option<PyTensor> {
        self.0.bias.clone().map(PyTensor)
    }
    /// `layer.weight -= step` puts the same tensor back ([`put_back`]).
    #[setter]
    fn set_weight(&self, value: PyTensor) -> PyResult<()> {
        put_back("weight", Some(&self.0.weight), &value)
    }
    /// `layer.bias -= step` puts the same tensor back ([`put_back`]).
    #[setter]
    fn set_bias(&self, value: PyTensor) -> PyResult<()> {
        put_back("bias", self.0.bias.as_ref(), &value)
    }
    fn named_parameters(&self) -> Vec<(String, PyTensor)> {
        named(&self.0)
    }
    /// The tensors of named_parameters(), as PyTorch's `parameters()`.
    fn parameters(&self) -> Vec<PyTensor> {
        tensors(&self.0)
    }
    /// `copy.deepcopy`: a layer with its own copy of the weights.
    fn __deepcopy__(&self, memo: &Bound<'_, PyAny>) -> PyResult<Self> {
        let bias = self.0.bias.as_ref().map(|b| memo_copy(memo, b)).transpose()?;
        Ok(PyLinear(nn::Linear { weight: memo_copy(memo, &self.0.weight)?, bias }))
    }
    fn __repr__(&self) -> String {
        let shape = self.0.weight.shape();
        format!("Linear(in_features={}, out_features={}, bias={})", shape[1], shape[0], py_bool(self.0.bias.is_some()))
    }
}

/// A lookup table of `num_embeddings` vectors of size `embedding_dim`.
#[pyclass(name = "Embedding", module = "ferrolm", frozen)]
pub struct PyEmbedding(nn::Embedding);

#[pymethods]
impl PyEmbedding {
    #[new]
    #[pyo3(signature = (num_embeddings, embedding_dim, std = 1.0, seed = None))]
    fn new(
        py: Python<'_>,
        num_embeddings: usize,
        embedding_dim: usize,
        std: f32,
        seed: Option<Seed>,
    ) -> PyResult<Self> {
        let seed = seed_or_next(seed);
        compute(py, || nn::Embedding::new(num_embeddings, embedding_dim, std, seed)).py().map(PyEmbedding)
    }
    fn __call__(&self, py: Python<'_>, ids: &Bound<'_, PyAny>) -> PyResult<PyTensor> {
        let (ids, shape) = to_ids(ids)?;
        run(py, || self.0.forward(&ids, &shape))
    }
    #[getter]
    fn weight(&self) -> PyTensor {
        PyTensor(self.0.weight.clone())
    }
    /// `layer.weight -= step` puts the same tensor back ([`put_back`]).
    #[setter]
    fn set_weight(&self, value: PyTensor) -> PyResult<()> {
        put_back("weight", Some(&self.0.weight), &value)
    }
    fn named_parameters(&self) -> Vec<(String, PyTensor)> {
        named(&self.0)
    }
    /// The tensors of named_parameters(), as PyTorch's `parameters()`.
    fn parameters(&self) -> Vec<PyTensor> {
        tensors(&self.0)
    }
    /// `copy.deepcopy`: a table with its own copy of the vectors.
    fn __deepcopy__(&self, memo: &Bound<'_, PyAny>) -> PyResult<Self> {
        Ok(PyEmbedding(nn::Embedding { weight: memo_copy(memo, &self.0.weight)? }))
    }
    fn __repr__(&self) -> String {
        let shape = self.0.weight.shape();
        format!("Embedding({}, {})", shape[0], shape[1])
    }
}

/// Layer normalisation over the last axis.
#[pyclass(name = "LayerNorm", module = "ferrolm", frozen)]
pub struct PyLayerNorm(nn::LayerNorm);

#[pymethods]
impl PyLayerNorm {
    #[new]
    #[pyo3(signature = (dim, bias = true, eps = 1e-5))]
    fn new(dim: usize, bias: bool, eps: f32) -> PyResult<Self> {
        nn::LayerNorm::new(dim, bias, eps).py().map(PyLayerNorm)
    }
    fn __call__(&self, py: Python<'_>, x: PyTensor) -> PyResult<PyTensor> {
        run(py, || self.0.forward(&x.0))
    }
    #[getter]
    fn weight(&self) -> PyTensor {
        PyTensor(self.0.weight.clone())
    }
    #[getter]
    fn bias(&self) -> Option<PyTensor> {
        self.0.bias.clone().map(PyTensor)
    }
    /// `layer.weight -= step` puts the same tensor back ([`put_back`]).
    #[setter]
    fn set_weight(&self, value: PyTensor) -> PyResult<()> {
        put_back("weight", Some(&self.0.weight), &value)
    }
    /// `layer.bias -= step` puts the same tensor back ([`put_back`]).
    #[setter]
    fn set_bias(&self, value: PyTensor) -> PyResult<()> {
        put_back("bias", self.0.bias.as_ref(), &value)
    }
    fn named_parameters(&self) -> Vec<(String, PyTensor)> {
        named(&self.0)
    }
    /// The tensors of named_parameters(), as PyTorch's `parameters()`.
    fn parameters(&self) -> Vec<PyTensor> {
        tensors(&self.0)
    }
    /// `copy.deepcopy`: a layer with its own copy of the weights.
    fn __deepcopy__(&self, memo: &Bound<'_, PyAny>) -> PyResult<Self> {
        let l = &self.0;
        let bias = l.bias.as_ref().map(|b| memo_copy(memo, b)).transpose()?;
        Ok(PyLayerNorm(nn::LayerNorm { weight: memo_copy(memo, &l.weight)?, bias, eps: l.eps }))
    }
    fn __repr__(&self) -> String {
        let l = &self.0;
        format!("LayerNorm({}, eps={:e}, bias={})", l.weight.numel(), l.eps, py_bool(l.bias.is_some()))
    }
}

/// Python's spelling of a bool, for reprs.
fn py_bool(b: bool) -> &'static str {
    if b {
        "True"
    } else {
        "False"
    }
}

/// The optimisers as Python drives them. The wrappers in `ferrolm.optim` (AdamW, SGD) build the
/// (tensor, weight_decay) pairs from param groups.
#[pyclass(name = "Optimizer", module = "ferrolm._core", frozen)]
pub struct PyOptimizer(Mutex<Box<dyn Optimizer>>);

fn pairs(params: Vec<(PyTensor, f32)>) -> Vec<(Tensor, f32)> {
    params.into_iter().map(|(t, wd)| (t.0, wd)).collect()
}

#[pymethods]
impl PyOptimizer {
    /// AdamW with decoupled weight decay and bias correction.
    #[staticmethod]
    fn adamw(params: Vec<(PyTensor, f32)>, lr: f32, betas: (f32, f32), eps: f32) -> PyResult<Self> {
        Ok(PyOptimizer(Mutex::new(Box::new(AdamW::new(pairs(params), lr, betas, eps).py()?))))
    }

    /// SGD with momentum (optionally Nesterov's) and L2 weight decay, as torch.optim.SGD.
    #[staticmethod]
    fn sgd(params: Vec<(PyTensor, f32)>, lr: f32, momentum: f32, nesterov: bool) -> PyResult<Self> {
        Ok(PyOptimizer(Mutex::new(Box::new(Sgd::new(pairs(params), lr, momentum, nesterov).py()?))))
    }

    #[getter]
    fn lr(&self, py: Python<'_>) -> f32 {
        locked(py, &self.0, |opt| opt.learning_rate().get())
    }

    #[setter]
    fn set_lr(&self, py: Python<'_>, lr: f32) -> PyResult<()> {
        locked(py, &self.0, |opt| opt.learning_rate().set(lr)).py()
    }

    fn step(&self, py: Python<'_>) {
        compute_locked(py, &self.0, |opt| opt.step());
    }

    fn zero_grad(&self, py: Python<'_>) {
        locked(py, &self.0, |opt| opt.zero_grad())
    }

    fn parameters(&self, py: Python<'_>) -> Vec<PyTensor> {
        locked(py, &self.0, |opt| opt.parameters()).into_iter().map(PyTensor).collect()
    }

    /// Every parameter's state, in parameter order: [([(buffer name, values)], steps)].
    fn state<'py>(&self, py: Python<'py>) -> Vec<PyParamState<'py>> {
        let state = locked(py, &self.0, |opt| opt.state());
        let buffers = |b: Vec<(String, Vec<f32>)>| b.into_iter().map(|(n, v)| (n, v.into_pyarray(py))).collect();
        state.into_iter().map(|s| (buffers(s.buffers), s.steps)).collect()
    }

    /// Restores a `state()` saved for the same parameters.
    fn load_state(&self, py: Python<'_>, state: Vec<PyParamStateIn<'_>>) -> PyResult<()> {
        let state = state
            .into_iter()
            .map(|(buffers, steps)| ParamState {
                buffers: buffers.into_iter().map(|(n, v)| (n, v.as_array().to_vec())).collect(),
                steps,
            })
            .collect();
        locked(py, &self.0, |opt| opt.load_state(state)).py()
    }
}

/// Scales gradients so their global norm is at most `max_norm`; returns the norm before.
/// `params` is any iterable of tensors (a list, or a generator as PyTorch's `parameters()`), or
/// one tensor.
#[pyfunction]
fn clip_grad_norm(py: Python<'_>, params: &Bound<'_, PyAny>, max_norm: f32) -> PyResult<f32> {
    let ts = match params.cast::<PyTensor>() {
        Ok(one) => vec![one.get().0.clone()], // not its rows: they are copies, without gradients
        Err(_) => params.try_iter()?.map(|p| Ok(p?.extract::<PyTensor>()?.0)).collect::<PyResult<Vec<Tensor>>>()?,
    };
    compute(py, || ferrolm::clip_grad_norm(&ts, max_norm)).py()
}

/// The seeds of calls that leave `seed` out (tensors, layers, dropout), drawn in turn from a
/// stream that `manual_seed` restarts: PyTorch's default generator, in effect. Two calls get
/// different numbers, and a script that draws in the same order gets the same ones each run.
static SEED_STREAM: Mutex<Rng> = Mutex::new(Rng::new(0));

/// A seed as Python passes it: an int from 0 to 2**64 − 1. Others are a ValueError that says so,
/// where a plain u64 argument's OverflowError ("can't convert negative int to unsigned") names
/// no seed.
#[derive(Clone, Copy)]
pub struct Seed(pub u64);

impl<'a, 'py> FromPyObject<'a, 'py> for Seed {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        let n = match obj.extract::<i128>() {
            Err(e) if !e.is_instance_of::<PyOverflowError>(obj.py()) => return Err(e),
            n => n.ok().and_then(|n| u64::try_from(n).ok()),
        };
        n.map(Seed).ok_or_else(|| {
            // str() refuses ints of more than 4300 digits (and Display would print its traceback).
            let shown = obj.str().map_or_else(|_| "an integer too long to print".to_string(), |s| s.to_string());
            PyValueError::new_err(format!("a seed must be an integer from 0 to 2**64 - 1, got {shown}"))
        })
    }
}

/// `seed`, or when None the stream's next seed.
pub fn seed_or_next(seed: Option<Seed>) -> u64 {
    seed.map_or_else(|| SEED_STREAM.lock().unwrap_or_else(|e| e.into_inner()).next_u64(), |s| s.0)
}

/// Restarts the generator behind every `seed=None` (randn, rand, Linear, Embedding, dropout, attention's dropout,
/// GPT.create, BERT.create, sampling in generate),
/// as torch.manual_seed does. An explicit seed is never affected.
#[pyfunction]
fn manual_seed(seed: Seed) {
    *SEED_STREAM.lock().unwrap_or_else(|e| e.into_inner()) = Rng::new(seed.0);
}

/// A tensor of Normal(mean, std) samples shaped `*shape` (`randn(2, 3)` or `randn((2, 3))`), drawn from a seeded
/// generator: the same seed gives the same tensor, at any thread count. Without a seed, the next seed of the stream
/// manual_seed restarts. requires_grad=True makes the new (leaf) tensor collect gradients.
#[pyfunction]
#[pyo3(signature = (*shape, mean = 0.0, std = 1.0, seed = None, requires_grad = false))]
fn randn(
    py: Python<'_>,
    shape: &Bound<'_, PyTuple>,
    mean: f32,
    std: f32,
    seed: Option<Seed>,
    requires_grad: bool,
) -> PyResult<PyTensor> {
    let seed = seed_or_next(seed);
    leaf(py, shape_args(shape)?, requires_grad, |s| Tensor::randn(s, mean, std, seed))
}

/// A tensor of uniform samples in [low, high) shaped `*shape` (`rand(2, 3)` or `rand((2, 3))`), drawn from a seeded
/// generator: the same seed gives the same tensor, at any thread count. Without a seed, the next seed of the stream
/// manual_seed restarts. requires_grad=True makes the new (leaf) tensor collect gradients.
#[pyfunction]
#[pyo3(signature = (*shape, low = 0.0, high = 1.0, seed = None, requires_grad = false))]
fn rand(
    py: Python<'_>,
    shape: &Bound<'_, PyTuple>,
    low: f32,
    high: f32,
    seed: Option<Seed>,
    requires_grad: bool,
) -> PyResult<PyTensor> {
    let seed = seed_or_next(seed);
    leaf(py, shape_args(shape)?, requires_grad, |s| Tensor::rand(s, low, high, seed))
}

/// A tensor shaped `shape` (an int or a sequence of ints) filled with `fill_value`, as numpy's and torch's `full`
/// (`full((2, 3), 7.0)`, `full(4, 7)`). requires_grad=True makes the new (leaf) tensor collect gradients.
#[pyfunction]
#[pyo3(signature = (shape, fill_value, requires_grad = false))]
fn full(py: Python<'_>, shape: &Bound<'_, PyAny>, fill_value: f32, requires_grad: bool) -> PyResult<PyTensor> {
    let shape = shape_args(&PyTuple::new(py, [shape])?)?; // one argument: an int, or a sequence of ints
    leaf(py, shape, requires_grad, |s| Tensor::full(s, fill_value))
}

/// A new leaf tensor of `shape`, made by `make` without the GIL.
fn leaf(
    py: Python<'_>,
    shape: Vec<isize>,
    requires_grad: bool,
    make: impl FnOnce(&[usize]) -> ferrolm::Result<Tensor> + Send,
) -> PyResult<PyTensor> {
    let shape = to_usize(shape)?;
    let t = compute(py, || make(&shape)).py()?;
    t.set_requires_grad(requires_grad).py()?;
    Ok(PyTensor(t))
}

fn to_usize(shape: Vec<isize>) -> PyResult<Vec<usize>> {
    shape
        .into_iter()
        .map(|d| {
            usize::try_from(d).map_err(|_| pyo3::exceptions::PyValueError::new_err(format!("negative dimension {d}")))
        })
        .collect()
}

/// Turns graph recording on or off for this thread; returns the previous setting.
#[pyfunction]
fn set_grad_enabled(enabled: bool) -> bool {
    ferrolm::set_grad_enabled(enabled)
}

/// Whether graph recording is on for this thread (see set_grad_enabled).
#[pyfunction]
fn is_grad_enabled() -> bool {
    ferrolm::is_grad_enabled()
}

/// Sets the arithmetic of matrix products, process-wide: "float32", or "bfloat16" (operands
/// rounded to bfloat16, sums and results in float32; the products run about twice as fast on
/// CPUs with AVX512-BF16). Token-by-token generation then reads a bfloat16 copy of each layer's
/// weight (kept with it until it changes), its activations staying float32: about twice as
/// fast where the weights outgrow the cache. Returns the previous setting. Warns when the CPU
/// lacks AVX512-BF16 (products then stay float32).
#[pyfunction]
fn set_matmul_precision(py: Python<'_>, precision: &str) -> PyResult<&'static str> {
    use ferrolm::gemm::{self, MatmulPrecision};
    // PyTorch's names too: "highest" and "high" keep float32 accuracy, "medium" is bfloat16.
    let new = match precision {
        "float32" | "highest" | "high" => MatmulPrecision::F32,
        "bfloat16" | "medium" => MatmulPrecision::Bf16,
        other => {
            return Err(pyo3::exceptions::PyValueError::new_err(format!(
                "matmul precision must be 'float32' or 'bfloat16' (PyTorch's 'highest', 'high', 'medium' are \
                 read as float32, float32, bfloat16), got {other:?}"
            )))
        }
    };
    if new == MatmulPrecision::Bf16 && !gemm::bf16_supported() {
        let warning = py.get_type::<pyo3::exceptions::PyUserWarning>();
        PyErr::warn(py, &warning, c"this CPU has no AVX512-BF16: matrix products stay float32", 1)?;
    }
    let old = matmul_precision();
    gemm::set_matmul_precision(new);
    Ok(old)
}

/// The arithmetic of matrix products: "float32" or "bfloat16" (see set_matmul_precision).
#[pyfunction]
fn matmul_precision() -> &'static str {
    match ferrolm::gemm::matmul_precision() {
        ferrolm::gemm::MatmulPrecision::F32 => "float32",
        ferrolm::gemm::MatmulPrecision::Bf16 => "bfloat16",
    }
}

/// The threads each computation runs on: as set_num_threads chose, or the compute pool's
/// (one per CPU, or the RAYON_NUM_THREADS environment variable's count).
#[pyfunction]
fn num_threads() -> usize {
    ferrolm::num_threads()
}

/// Sets the threads later computations run on, process-wide, as torch.set_num_threads does
/// (RAYON_NUM_THREADS only counts before ferrolm is imported); None goes back to the compute
/// pool's size. Results do not depend on the count beyond float rounding.
#[pyfunction]
fn set_num_threads(threads: Option<i64>) -> PyResult<()> {
    let negative =
        |n| pyo3::exceptions::PyValueError::new_err(format!("the number of threads must be at least 1, got {n}"));
    let count = threads.map(|n| usize::try_from(n).map_err(|_| negative(n))).transpose()?;
    ferrolm::set_num_threads(count).py()
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyLinear>()?;
    m.add_class::<PyEmbedding>()?;
    m.add_class::<PyLayerNorm>()?;
    m.add_class::<PyOptimizer>()?;
    for f in [
        wrap_pyfunction!(clip_grad_norm, m)?,
        wrap_pyfunction!(randn, m)?,
        wrap_pyfunction!(rand, m)?,
        wrap_pyfunction!(full, m)?,
        wrap_pyfunction!(set_grad_enabled, m)?,
        wrap_pyfunction!(manual_seed, m)?,
        wrap_pyfunction!(is_grad_enabled, m)?,
        wrap_pyfunction!(num_threads, m)?,
        wrap_pyfunction!(set_num_threads, m)?,
        wrap_pyfunction!(set_matmul_precision, m)?,
        wrap_pyfunction!(matmul_precision, m)?,
    ] {
        m.add_function(f)?;
    }
    Ok(())
}
