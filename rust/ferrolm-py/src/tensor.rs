//! `ferrolm.Tensor`: a Python handle to a core tensor, with numpy conversion and operators.

use numpy::{IntoPyArray, PyArray1, PyArrayDyn, PyArrayMethods, PyReadonlyArrayDyn, PyUntypedArrayMethods};
use pyo3::exceptions::{PyIndexError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::pyclass::CompareOp;
use pyo3::types::{IntoPyDict, PyBool, PyDict, PyFloat, PyInt, PySlice, PyTuple};

use ferrolm::tensor::{collected, row_major_copy};
use ferrolm::{ops, Tensor};

use crate::compute;
use crate::errors::{IntoPy, ShapeError};

/// An n-dimensional float32 array that records operations for backpropagation.
/// A reduction method's other keywords (numpy's `dtype` and `out`; see `PyTensor::reduction`).
type Numpy<'a, 'py> = &'a Bound<'py, PyDict>;

/// `iter(t)`: a tensor's rows, each copied out when the loop gets to it.
#[pyclass(module = "ferrolm")]
pub struct TensorRows {
    tensor: Py<PyTensor>,
    next: usize,
    rows: usize,
}

#[pymethods]
impl TensorRows {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        if self.next == self.rows {
            return Ok(None);
        }
        self.next += 1;
        self.tensor.bind(py).as_any().get_item(self.next - 1).map(Some)
    }
}

#[pyclass(name = "Tensor", module = "ferrolm", frozen, from_py_object)]
#[derive(Clone)]
pub struct PyTensor(pub Tensor);

/// Converts a numeric array-like (bool, integer or float) to a float32 numpy array; object,
/// string and datetime data are refused with TypeError instead of becoming NaNs or day counts.
fn as_f32_array<'py>(obj: &Bound<'py, PyAny>) -> PyResult<PyReadonlyArrayDyn<'py, f32>> {
    if let Ok(a) = obj.extract::<PyReadonlyArrayDyn<f32>>() {
        return Ok(a);
    }
    let np = obj.py().import("numpy")?;
    let arr = np.call_method1("asarray", (obj,))?;
    let dtype = arr.getattr("dtype")?;
    let kind: String = dtype.getattr("kind")?.extract()?;
    if !"biuf".contains(kind.as_str()) {
        // Integers beyond int64 also land here (numpy keeps them as objects).
        return Err(PyTypeError::new_err(format!(
            "tensor data must be numeric (bool, int64-range integers or floats), got dtype {dtype}"
        )));
    }
    arr.call_method1("astype", ("float32",))?.extract::<PyReadonlyArrayDyn<f32>>()
}

/// `copy.deepcopy`'s copy of `t`: a leaf with a copy of its data and gradient, collecting
/// gradients if `t` does; made once per tensor and kept in `memo` under its uid (Python objects
/// are not tensors: a layer's weight is a new object per read), so ties survive the copy.
pub(crate) fn memo_copy(memo: &Bound<'_, PyAny>, t: &Tensor) -> PyResult<Tensor> {
    let key = ("ferrolm.Tensor", t.id());
    if let Some(copy) = memo.call_method1("get", (key,))?.extract::<Option<PyTensor>>()? {
        return Ok(copy.0);
    }
    let copy = t.deep_clone();
    copy.set_grad(t.grad().as_ref()).py()?;
    let copy = if t.requires_grad() { copy.with_grad() } else { copy };
    memo.set_item(key, PyTensor(copy.clone()))?;
    Ok(copy)
}

/// A tensor from a Tensor, a Python number or an array-like.
pub fn to_tensor(obj: &Bound<'_, PyAny>) -> PyResult<Tensor> {
    if let Ok(t) = obj.cast::<PyTensor>() {
        return Ok(t.get().0.clone());
    }
    // Python numbers only: extracting an f64 from anything else calls its `__float__`, which
    // numpy before 2.4 gives every one-element array, so `[[5.0]]` lost its shape.
    if obj.is_instance_of::<PyFloat>() || obj.is_instance_of::<PyInt>() {
        return Ok(Tensor::scalar(obj.extract::<f64>()? as f32));
    }
    Tensor::from_ndarray(as_f32_array(obj)?.as_array()).py()
}

/// Integer ids (token ids, gather indices) as i64 with their shape; float arrays are refused
/// so that 1.7 never silently becomes token 1.
pub fn to_ids(obj: &Bound<'_, PyAny>) -> PyResult<(Vec<i64>, Vec<usize>)> {
    let np = obj.py().import("numpy")?;
    let arr = np.call_method1("asarray", (obj,))?;
    let kind: String = arr.getattr("dtype")?.getattr("kind")?.extract()?;
    let size: usize = arr.getattr("size")?.extract()?;
    // numpy reads `[]` as float64: an empty list is no indices.
    if kind != "i" && kind != "u" && !(size == 0 && kind == "f") {
        return Err(PyTypeError::new_err(format!(
            "indices must be an integer array, got dtype {}",
            arr.getattr("dtype")?
        )));
    }
    if kind == "u" && size > 0 && arr.getattr("itemsize")?.extract::<usize>()? == 8 {
        // uint64 above int64's range would wrap to negative ids (-100: an ignored target).
        let largest: u64 = arr.call_method0("max")?.extract()?;
        if largest > i64::MAX as u64 {
            return Err(PyIndexError::new_err(format!("index {largest} is out of range")));
        }
    }
    let no_copy = [("copy", false)].into_py_dict(obj.py())?;
    let arr = arr.call_method("astype", ("int64",), Some(&no_copy))?;
    let arr = arr.extract::<PyReadonlyArrayDyn<i64>>()?;
    Ok((collected(arr.as_array().iter().copied()).py()?, arr.shape().to_vec()))
}

/// A mask that holds values other than 0 and 1: an additive mask (0 keeps, -inf or -1e4
/// drops: PyTorch's float `attn_mask`, Hugging Face's extended mask) would be read the other
/// way round as "nonzero is true", silently.
fn not_a_mask(value: impl std::fmt::Display) -> PyErr {
    PyValueError::new_err(format!(
        "a mask holds booleans, or 0 and 1, got {value}: an additive mask (0 keeps, -inf drops, as PyTorch's float \
         attn_mask) would be read the other way round; pass `mask == 0` for one"
    ))
}

/// A boolean mask (any array-like of booleans, or of 0 and 1) with its shape.
pub fn to_mask(obj: &Bound<'_, PyAny>) -> PyResult<(Vec<bool>, Vec<usize>)> {
    if let Ok(t) = obj.cast::<PyTensor>() {
        let t = &t.get().0;
        let values = t.read();
        if let Some(v) = values.iter().find(|&&v| v != 0.0 && v != 1.0) {
            return Err(not_a_mask(v));
        }
        return Ok((collected(values.iter().map(|&v| v != 0.0)).py()?, t.shape().to_vec()));
    }
    let arr = obj.py().import("numpy")?.call_method1("asarray", (obj,))?;
    // Booleans or numbers only: numpy reads None as False and any string as True.
    let kind: String = arr.getattr("dtype")?.getattr("kind")?.extract()?;
    if !"biuf".contains(kind.as_str()) {
        let what = obj.get_type().name()?;
        return Err(PyTypeError::new_err(format!(
            "a mask must hold booleans or numbers, got {what} (dtype kind {kind:?})"
        )));
    }
    if kind != "b" {
        let zero_or_one = arr.rich_compare(0, CompareOp::Eq)?.bitor(arr.rich_compare(1, CompareOp::Eq)?)?;
        if !zero_or_one.call_method0("all")?.is_truthy()? {
            let odd = arr.get_item(zero_or_one.call_method0("__invert__")?)?.get_item(0)?;
            return Err(not_a_mask(odd));
        }
    }
    let no_copy = [("copy", false)].into_py_dict(obj.py())?;
    let arr = arr.call_method("astype", ("bool",), Some(&no_copy))?;
    let arr = arr.extract::<PyReadonlyArrayDyn<bool>>()?;
    Ok((collected(arr.as_array().iter().copied()).py()?, arr.shape().to_vec()))
}

/// An optional mask that must have shape `[b, t]` (`name` says which, in the error).
pub fn mask_of_shape(mask: Option<&Bound<'_, PyAny>>, b: usize, t: usize, name: &str) -> PyResult<Option<Vec<bool>>> {
    let Some(mask) = mask else { return Ok(None) };
    let (m, shape) = to_mask(mask)?;
    if shape != [b, t] {
        return Err(ShapeError::new_err(format!("{name} must have shape ({b}, {t}), got {shape:?}")));
    }
    Ok(Some(m))
}

/// Shape arguments given either as `f(2, 3)` or `f((2, 3))`.
pub fn shape_args(args: &Bound<'_, PyTuple>) -> PyResult<Vec<isize>> {
    if args.len() == 1 {
        if let Ok(v) = args.get_item(0)?.extract::<Vec<isize>>() {
            return Ok(v);
        }
    }
    args.extract::<Vec<isize>>()
}

/// An axis argument: an int, never a bool. Python's True is the int 1, and `sum(x, True)`
/// (keepdim meant) would sum over axis 1; numpy and PyTorch refuse it too.
#[derive(Clone, Copy)]
pub struct Axis(pub isize);

impl<'a, 'py> FromPyObject<'a, 'py> for Axis {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        if obj.is_instance_of::<PyBool>() {
            return Err(PyTypeError::new_err("an axis must be an int, not a bool"));
        }
        Ok(Axis(obj.extract()?))
    }
}

/// A number an op takes as a constant (a fill value, a bound): a Python number, or a one-element
/// tensor read as one. A tensor that requires grad is refused while gradients are recorded: it
/// would be read as a number, and its gradient silently lost.
#[derive(Clone, Copy)]
pub struct Constant(pub f32);

impl<'a, 'py> FromPyObject<'a, 'py> for Constant {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        if let Ok(t) = obj.cast::<PyTensor>() {
            refuse_recorded_operand(&t.get().0, || {
                "a tensor that requires grad is read here as a number, so no gradient would reach it: use where, \
                 maximum or minimum of ferrolm.functional with the tensor"
                    .to_string()
            })?;
        }
        // A tensor or array of several values read as a number said "item() needs a tensor
        // with one element" or "only 0-dimensional arrays can be converted"; other errors stay.
        obj.extract().map(Constant).map_err(|e: PyErr| match obj.getattr("shape") {
            Ok(shape) => {
                let kind = obj.get_type().name().map(|n| n.to_string()).unwrap_or_default();
                PyTypeError::new_err(format!(
                    "a number is expected here, got {kind} of shape {shape} (elementwise values: where, maximum or \
                     minimum of ferrolm.functional)"
                ))
            }
            Err(_) => e,
        })
    }
}

/// A grad error (`message`) when `operand` requires grad and gradients are recorded, for an op
/// that does not record it.
fn refuse_recorded_operand(operand: &Tensor, message: impl FnOnce() -> String) -> PyResult<()> {
    if operand.requires_grad() && ferrolm::is_grad_enabled() {
        return Err(ferrolm::Error::Grad(message())).py();
    }
    Ok(())
}

/// Dimensions for a tensor of rank `rank`, negative ones counted from the end.
pub fn dims_arg(dims: &[isize], rank: usize) -> PyResult<Vec<usize>> {
    dims.iter()
        .map(|&d| {
            let resolved = if d < 0 { d + rank as isize } else { d };
            usize::try_from(resolved).map_err(|_| {
                PyIndexError::new_err(format!("dimension {d} is out of range for a tensor of rank {rank}"))
            })
        })
        .collect()
}

/// Python's three-argument pow, which tensors do not have.
fn no_modulus(modulo: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
    match modulo {
        Some(_) => Err(PyTypeError::new_err("pow() with a modulus is not supported for tensors")),
        None => Ok(()),
    }
}

/// Runs a core computation without the GIL and wraps the resulting tensor.
pub fn run(py: Python<'_>, f: impl FnOnce() -> ferrolm::Result<Tensor> + Send) -> PyResult<PyTensor> {
    compute(py, f).py().map(PyTensor)
}

impl PyTensor {
    /// `copy.copy` and `copy.deepcopy`'s copy (`how`: what the refusal calls it).
    fn leaf_copy(&self, how: &str, memo: &Bound<'_, PyAny>) -> PyResult<PyTensor> {
        if !self.0.is_leaf() {
            return Err(PyTypeError::new_err(format!(
                "only leaf tensors can be {how} (an operation's result is part of a graph): use t.detach().clone()"
            )));
        }
        memo_copy(memo, &self.0).map(PyTensor)
    }

    /// An elementwise op of the core, run with the GIL released.
    fn unary(&self, py: Python<'_>, op: fn(&Tensor) -> ferrolm::Result<Tensor>) -> PyResult<PyTensor> {
        run(py, || op(&self.0))
    }

    /// `self op= other`, in place: the values change, the shape stays (other must broadcast to
    /// it), and every holder of this tensor sees the change (a model's parameter stays one), as
    /// in PyTorch. Refused for a tensor that requires grad while gradients are recorded: an
    /// update belongs in `fl.no_grad()`, and `x = x + y` records a new result.
    fn in_place(
        &self,
        py: Python<'_>,
        other: &Bound<'_, PyAny>,
        op: fn(&Tensor, &Tensor) -> ferrolm::Result<Tensor>,
        symbol: &str,
    ) -> PyResult<()> {
        if self.0.requires_grad() && ferrolm::is_grad_enabled() {
            return Err(ferrolm::Error::Grad(format!(
                "x {symbol}= y changes x in place, which requires grad: inside `with fl.no_grad():` (an update \
                 of a parameter), or write x = x {symbol} y for a new result"
            )))
            .py();
        }
        let o = to_tensor(other)?;
        refuse_recorded_operand(&o, || {
            format!(
                "y requires grad, and x {symbol}= y changes x in place without recording it: write x = x {symbol} y \
                 for a result that backward follows to y"
            )
        })?;
        let result = run(py, || ferrolm::no_grad(|| op(&self.0, &o)))?.0;
        if result.shape() != self.0.shape() {
            return Err(ShapeError::new_err(format!(
                "x {symbol}= y keeps x's shape {:?}, but the result has shape {:?}",
                self.0.shape(),
                result.shape()
            )));
        }
        let assigned = self.0.assign(&result.read());
        assigned.py()
    }

    /// Overwrites the values with `values` broadcast to this shape, not tracked (`copy_`,
    /// `t[:] = y`, spelled so in the errors). Its own values in its own shape (the last step of
    /// `t[:] -= y`, whose `t[:]` shares t's data and was written already) change nothing.
    fn write_values(&self, py: Python<'_>, values: &Bound<'_, PyAny>, spelled: &str) -> PyResult<()> {
        let shared = values.cast::<PyTensor>().is_ok(); // a tensor may share this one's storage
        let (v, target) = (to_tensor(values)?, self.0.clone());
        refuse_recorded_operand(&v, || {
            format!(
                "the values given to {spelled} require grad, and {spelled} copies values without recording it: do \
                 it inside fl.no_grad(), or give them .detach()"
            )
        })?;
        if v.shares_data(&target) && v.shape() == target.shape() {
            return Ok(());
        }
        if v.shape() == target.shape() && !shared {
            // Loading a checkpoint: the array's tensor is written straight in, without the GIL.
            return compute(py, || target.assign(&v.read())).py();
        }
        // Copied out first: a shared storage is read under the lock its write takes.
        let values = if v.shape() == target.shape() {
            v.to_vec()
        } else {
            let v = v.to_ndarray();
            let broadcast = v.broadcast(target.shape()).ok_or_else(|| {
                ShapeError::new_err(format!(
                    "{spelled}: shape {:?} does not broadcast to {:?}",
                    v.shape(),
                    target.shape()
                ))
            })?;
            row_major_copy(broadcast).py()?
        };
        target.assign(&values).py()
    }

    /// A reduction method: `reduce` of this tensor, keeping the reduced axis or not. numpy's
    /// reductions (`np.sum(t)`, `np.mean(t, axis=0, keepdims=True)`) call the method with
    /// `dtype=None, out=None` and numpy's `keepdims`, taken as PyTorch's tensors take them;
    /// other values, or other keywords, are refused.
    fn reduction(
        &self,
        py: Python<'_>,
        mut keepdim: bool,
        numpy: Option<Numpy>,
        reduce: impl FnOnce(&Tensor, bool) -> ferrolm::Result<Tensor> + Send,
    ) -> PyResult<PyTensor> {
        for (key, value) in numpy.into_iter().flatten() {
            let key: String = key.extract()?;
            if key == "keepdims" {
                keepdim |= value.extract::<bool>()?;
                continue;
            }
            if !matches!(key.as_str(), "dtype" | "out") {
                return Err(PyTypeError::new_err(format!("unexpected keyword argument {key:?}")));
            }
            if !value.is_none() {
                return Err(PyTypeError::new_err(
                    "ferrolm tensors are float32 and reductions return new tensors: dtype= and out= must be None \
                     (use np.asarray(t) for numpy's)",
                ));
            }
        }
        run(py, || reduce(&self.0, keepdim))
    }
}

#[pymethods]
impl PyTensor {
    /// Tensor(data, requires_grad=False): a float32 tensor copied from an array-like.
    #[new]
    #[pyo3(signature = (data, requires_grad = false))]
    fn new(data: &Bound<'_, PyAny>, requires_grad: bool) -> PyResult<Self> {
        let t = to_tensor(data)?;
        let t = if data.is_instance_of::<PyTensor>() { t.deep_clone() } else { t };
        t.set_requires_grad(requires_grad).py()?;
        Ok(PyTensor(t))
    }

    /// Makes numpy defer to Tensor in mixed arithmetic (`array + tensor` calls
    /// `Tensor.__radd__`), so a numpy operand never silently drops the graph.
    #[classattr]
    fn __array_ufunc__(py: Python<'_>) -> Py<PyAny> {
        py.None()
    }

    #[getter]
    fn shape<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, self.0.shape())
    }

    #[getter]
    fn ndim(&self) -> usize {
        self.0.rank()
    }

    #[getter]
    fn dtype(&self) -> &'static str {
        "float32"
    }

    /// The truth of a one-element tensor (others are ambiguous, as in numpy).
    fn __bool__(&self) -> PyResult<bool> {
        if self.0.numel() != 1 {
            return Err(PyValueError::new_err(format!(
                "the truth value of a tensor of shape {:?} is ambiguous; use (t != 0) logic on t.numpy()",
                self.0.shape()
            )));
        }
        Ok(self.0.item().py()? != 0.0)
    }

    /// `t[i]`, `t[a:b]`, `t[i, a:b]`, `t[..., i]`: integers and step-1 slices over the leading
    /// axes, or the trailing ones after one `...` (every axis it stands for taken whole),
    /// differentiable (narrow, then a reshape that drops the integer-indexed axes). A copy,
    /// unless every index is a bare `:` or `...`.
    fn __getitem__(&self, py: Python<'_>, index: &Bound<'_, PyAny>) -> PyResult<PyTensor> {
        let mut items: Vec<Bound<'_, PyAny>> = match index.cast::<PyTuple>() {
            Ok(t) => t.iter().collect(),
            Err(_) => vec![index.clone()],
        };
        let shape = self.0.shape().to_vec();
        let ellipses: Vec<usize> = (0..items.len()).filter(|&i| items[i].is(py.Ellipsis())).collect();
        let indices = items.len() - ellipses.len();
        if ellipses.len() > 1 {
            return Err(PyIndexError::new_err("an index can only have a single ellipsis ('...')"));
        }
        if indices > shape.len() {
            return Err(PyIndexError::new_err(format!("{indices} indices for a tensor of rank {}", shape.len())));
        }
        if let Some(&at) = ellipses.first() {
            let whole = PySlice::full(py).into_any();
            items.splice(at..=at, std::iter::repeat_n(whole, shape.len() - indices));
        }
        let mut cuts = Vec::new(); // (axis, start, len)
        let mut kept: Vec<usize> = Vec::new();
        for (axis, item) in items.iter().enumerate() {
            let n = shape[axis];
            if let Ok(slice) = item.cast::<PySlice>() {
                let s = slice.indices(n as isize)?;
                if s.step != 1 {
                    return Err(PyIndexError::new_err(
                        "only step-1 slices are supported; use F.index_select for others",
                    ));
                }
                let (start, len) = (s.start.max(0) as usize, s.slicelength);
                // A bare `:` shares the data; any bounds copy, even bounds that take the whole
                // axis, so whether a slice shares never depends on the tensor's size.
                let bare = ["start", "stop"].iter().all(|a| slice.getattr(*a).is_ok_and(|v| v.is_none()));
                if !bare {
                    cuts.push((axis, start, len));
                }
                kept.push(len);
            } else if item.is_instance_of::<pyo3::types::PyBool>() {
                return Err(PyTypeError::new_err(
                    "tensors are not indexed by booleans (numpy reads them as a new axis)",
                ));
            } else if let Ok(i) = item.extract::<isize>() {
                let at = if i < 0 { i + n as isize } else { i };
                if at < 0 || at >= n as isize {
                    return Err(PyIndexError::new_err(format!(
                        "index {i} is out of range for axis {axis} of size {n}"
                    )));
                }
                cuts.push((axis, at as usize, 1));
            } else if item.is_instance_of::<PyInt>() {
                return Err(PyIndexError::new_err(format!("index {item} is out of range for axis {axis} of size {n}")));
            } else {
                return Err(PyTypeError::new_err(format!(
                    "tensors are indexed by integers and slices, not {}",
                    item.get_type().name()?
                )));
            }
        }
        kept.extend(&shape[items.len()..]);
        let x = self.0.clone();
        run(py, move || {
            let mut y = x;
            for (axis, start, len) in cuts {
                y = ops::narrow(&y, axis as isize, start, len)?;
            }
            let shape: Vec<isize> = kept.iter().map(|&d| d as isize).collect();
            ops::reshape(&y, &shape)
        })
    }

    /// `t[:] = y` or `t[...] = y`: y's values, broadcast to t's shape, replace t's in place (as
    /// `copy_`, under `x += y`'s rule: inside `no_grad` when t requires grad); also the last
    /// step of `t[:] -= y`. A part (`t[0] = y`, `t[1:3] = y`) is refused before anything
    /// changes: `t[i]` is a copy, so `t[i] -= y` changed only that copy.
    fn __setitem__(slf: &Bound<'_, Self>, index: &Bound<'_, PyAny>, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let this = slf.get();
        if !this.__getitem__(slf.py(), index)?.0.shares_data(&this.0) {
            return Err(PyTypeError::new_err(
                "only a whole tensor is assigned by index (t[:] = y, t[:] -= y): a part of it, t[i] or t[a:b], is \
                 a copy; make a new tensor (F.where, F.concat), or assign the whole",
            ));
        }
        if this.0.requires_grad() && ferrolm::is_grad_enabled() {
            return Err(ferrolm::Error::Grad(
                "x[:] = y changes x in place, which requires grad: inside `with fl.no_grad():` (an update of a \
                 parameter), or use y itself"
                    .to_string(),
            ))
            .py();
        }
        this.write_values(slf.py(), value, "x[:] = y")
    }

    fn __len__(&self) -> PyResult<usize> {
        self.0.shape().first().copied().ok_or_else(|| PyTypeError::new_err("len() of a 0-d tensor"))
    }

    /// The rows `t[0]`, `t[1]`, ..., each taken when asked for; a 0-d tensor has none to give
    /// (TypeError, as numpy's).
    fn __iter__(slf: &Bound<'_, Self>) -> PyResult<TensorRows> {
        let rows = slf.get().0.shape().first().copied();
        let rows = rows.ok_or_else(|| PyTypeError::new_err("iteration over a 0-d tensor"))?;
        Ok(TensorRows { tensor: slf.clone().unbind(), next: 0, rows })
    }

    /// Number of elements.
    fn numel(&self) -> usize {
        self.0.numel()
    }

    /// A float32 numpy copy of the data.
    fn numpy<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
        Ok(self.0.to_ndarray().into_pyarray(py))
    }

    #[pyo3(signature = (dtype = None, copy = None))]
    fn __array__<'py>(
        &self,
        py: Python<'py>,
        dtype: Option<Bound<'py, PyAny>>,
        copy: Option<bool>,
    ) -> PyResult<Bound<'py, PyAny>> {
        if copy == Some(false) {
            return Err(PyValueError::new_err(
                "a ferrolm Tensor cannot be viewed as a numpy array without a copy (its storage is shared \
                 with the graph); use np.asarray(t) or t.numpy()",
            ));
        }
        let arr = self.numpy(py)?.into_any();
        match dtype {
            Some(d) => arr.call_method1("astype", (d,)),
            None => Ok(arr),
        }
    }

    /// The value of a one-element tensor as a Python float.
    fn item(&self) -> PyResult<f32> {
        self.0.item().py()
    }

    /// `float(t)` for a one-element tensor, as `item()`.
    fn __float__(&self) -> PyResult<f32> {
        self.item()
    }

    /// `int(t)` for a one-element tensor: its value truncated, as `int(t.item())`.
    fn __int__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        PyFloat::new(py, self.item()?.into()).call_method0("__int__")
    }

    /// `f"{loss:.4f}"` formats a 0-d tensor's value, as PyTorch does; `f"{t}"` any tensor.
    fn __format__(&self, py: Python<'_>, spec: &str) -> PyResult<String> {
        if self.0.rank() == 0 {
            return PyFloat::new(py, self.item()?.into()).call_method1("__format__", (spec,))?.extract();
        }
        if spec.is_empty() {
            return self.__repr__(py);
        }
        Err(PyTypeError::new_err(format!(
            "format spec {spec:?} needs a 0-d tensor (a loss, t.sum()), not one of shape {:?}: format t.item() or \
             t.numpy()'s values",
            self.0.shape()
        )))
    }

    /// `copy.copy(t)`: as `copy.deepcopy(t)` (numpy's copy.copy copies the data too).
    fn __copy__(&self, py: Python<'_>) -> PyResult<PyTensor> {
        self.leaf_copy("copied", &PyDict::new(py).into_any())
    }

    /// `copy.deepcopy(t)`: a new leaf with a copy of the data, the gradient and `requires_grad`,
    /// as PyTorch copies tensors the user made (a graph's results are refused, as there); one
    /// copy per tensor in a deepcopy, so tied weights stay tied.
    fn __deepcopy__(&self, memo: &Bound<'_, PyAny>) -> PyResult<PyTensor> {
        self.leaf_copy("deep-copied", memo)
    }

    fn tolist<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.numpy(py)?.call_method0("tolist")
    }

    #[getter]
    fn requires_grad(&self) -> bool {
        self.0.requires_grad()
    }

    #[setter]
    fn set_requires_grad(&self, value: bool) -> PyResult<()> {
        self.0.set_requires_grad(value).py()
    }

    /// Marks the tensor as needing gradients; returns it (for chaining).
    #[pyo3(signature = (requires_grad = true))]
    fn requires_grad_(slf: Bound<'_, Self>, requires_grad: bool) -> PyResult<Bound<'_, Self>> {
        slf.get().0.set_requires_grad(requires_grad).py()?;
        Ok(slf)
    }

    /// An integer naming this tensor for the life of the process: two Python objects for one
    /// tensor (a layer's weight read twice, tied weights) have the same uid.
    #[getter]
    fn uid(&self) -> u64 {
        self.0.id()
    }

    #[getter]
    fn is_leaf(&self) -> bool {
        self.0.is_leaf()
    }

    /// The accumulated gradient (None until backward reaches this leaf), as a copy: change it by
    /// assigning (`w.grad = w.grad * 0.5`, `w.grad = None`), not in place.
    #[getter]
    fn grad(&self) -> Option<PyTensor> {
        self.0.grad().map(PyTensor)
    }

    #[setter(grad)]
    fn set_grad(&self, py: Python<'_>, grad: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let grad = grad.map(to_tensor).transpose()?; // None forgets it
        compute(py, || self.0.set_grad(grad.as_ref())).py()
    }

    fn zero_grad(&self) {
        self.0.zero_grad()
    }

    /// Backpropagates from this tensor. Without `gradient` it must have one element.
    #[pyo3(signature = (gradient = None))]
    fn backward(&self, py: Python<'_>, gradient: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let t = self.0.clone();
        match gradient {
            None => compute(py, || t.backward()).py(),
            Some(g) => {
                let g = to_tensor(g)?;
                if g.shape() != t.shape() {
                    return Err(ShapeError::new_err(format!(
                        "gradient shape {:?} differs from tensor shape {:?}",
                        g.shape(),
                        t.shape()
                    )));
                }
                compute(py, || t.backward_with(g.to_vec())).py()
            }
        }
    }

    /// A tensor sharing this data, cut off from the graph.
    fn detach(&self) -> PyTensor {
        PyTensor(self.0.detach())
    }

    /// A copy of the data that stays in the graph, as PyTorch's clone: the gradient flows back
    /// through it (`t.detach().clone()` is a copy cut off from the graph).
    fn clone(&self, py: Python<'_>) -> PyResult<PyTensor> {
        run(py, || ops::copy(&self.0))
    }

    /// Overwrites the values in place with `values` broadcast to this shape, as torch's `copy_`
    /// (for initialisation and loading; not tracked). Returns the tensor.
    fn copy_<'py>(slf: Bound<'py, Self>, values: &Bound<'py, PyAny>) -> PyResult<Bound<'py, Self>> {
        slf.get().write_values(slf.py(), values, "copy_")?;
        Ok(slf)
    }

    /// `Tensor([[...]], requires_grad=True)`, values printed by numpy.
    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let np = py.import("numpy")?;
        let kwargs = PyDict::new(py);
        kwargs.set_item("precision", 4)?;
        kwargs.set_item("threshold", 64)?;
        kwargs.set_item("separator", ", ")?;
        kwargs.set_item("prefix", "Tensor(")?;
        let body: String = np.call_method("array2string", (self.numpy(py)?,), Some(&kwargs))?.extract()?;
        let grad = if self.0.requires_grad() { ", requires_grad=True" } else { "" };
        // An empty tensor prints as [] whatever its shape: say the shape, as PyTorch does.
        let size = match self.0.shape() {
            _ if self.0.numel() > 0 => String::new(),
            [n] => format!(", size=({n},)"),
            shape => format!(", size=({})", shape.iter().map(usize::to_string).collect::<Vec<_>>().join(", ")),
        };
        Ok(format!("Tensor({body}{size}{grad})"))
    }

    /// `==`, `!=`, `<`, `<=`, `>`, `>=` elementwise (broadcast; tensors, arrays or numbers): a
    /// float32 tensor of 1.0 where it holds and 0.0 elsewhere, recording no graph, so that
    /// `(predicted == targets).mean()` is an accuracy. A value that is not numeric compares
    /// unequal.
    fn __richcmp__(&self, py: Python<'_>, other: &Bound<'_, PyAny>, op: CompareOp) -> PyResult<Py<PyAny>> {
        let Ok(o) = to_tensor(other) else { return Ok(py.NotImplemented()) };
        let holds: fn(f32, f32) -> bool = match op {
            CompareOp::Eq => |a, b| a == b,
            CompareOp::Ne => |a, b| a != b,
            CompareOp::Lt => |a, b| a < b,
            CompareOp::Le => |a, b| a <= b,
            CompareOp::Gt => |a, b| a > b,
            CompareOp::Ge => |a, b| a >= b,
        };
        Ok(run(py, || ops::compare(&self.0, &o, holds))?.into_pyobject(py)?.into_any().unbind())
    }

    /// By identity of the Python object, as a PyTorch tensor's hash: `==` compares values. (Not
    /// by the tensor's uid: a layer's weight is a new object per read, and two objects with one
    /// hash would be told apart by `==`.)
    fn __hash__(slf: &Bound<'_, Self>) -> isize {
        slf.as_ptr() as isize
    }

    /// Where along `axis` the largest elements are (all elements, flattened, when None), as
    /// int64: a numpy array shaped as `max(axis, keepdim)`, or with axis None an int (an
    /// array of ones with `keepdim`, as numpy's). The first on a tie.
    #[pyo3(signature = (axis = None, keepdim = false))]
    fn argmax<'py>(&self, py: Python<'py>, axis: Option<Axis>, keepdim: bool) -> PyResult<Bound<'py, PyAny>> {
        let axis = axis.map(|a| a.0);
        let (at, shape) = compute(py, || match axis {
            None => ops::argmax(&ops::reshape(&self.0, &[-1])?, 0, false),
            Some(axis) => ops::argmax(&self.0, axis, keepdim),
        })
        .py()?;
        let at: Vec<i64> = at.into_iter().map(|i| i as i64).collect();
        match (axis, keepdim) {
            (None, false) => Ok(at[0].into_pyobject(py)?.into_any()),
            (None, true) => Ok(PyArray1::from_vec(py, at).reshape(vec![1; self.0.rank()])?.into_any()),
            _ => Ok(PyArray1::from_vec(py, at).reshape(shape)?.into_any()),
        }
    }

    fn __add__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<PyTensor> {
        let o = to_tensor(other)?;
        run(py, || ops::add(&self.0, &o))
    }
    fn __radd__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<PyTensor> {
        self.__add__(py, other)
    }
    fn __iadd__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<()> {
        self.in_place(py, other, ops::add, "+")
    }
    fn __isub__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<()> {
        self.in_place(py, other, ops::sub, "-")
    }
    fn __imul__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<()> {
        self.in_place(py, other, ops::mul, "*")
    }
    fn __itruediv__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<()> {
        self.in_place(py, other, ops::div, "/")
    }
    fn __sub__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<PyTensor> {
        let o = to_tensor(other)?;
        run(py, || ops::sub(&self.0, &o))
    }
    fn __rsub__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<PyTensor> {
        let o = to_tensor(other)?;
        run(py, || ops::sub(&o, &self.0))
    }
    fn __mul__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<PyTensor> {
        let o = to_tensor(other)?;
        run(py, || ops::mul(&self.0, &o))
    }
    fn __rmul__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<PyTensor> {
        self.__mul__(py, other)
    }
    fn __truediv__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<PyTensor> {
        let o = to_tensor(other)?;
        run(py, || ops::div(&self.0, &o))
    }
    fn __rtruediv__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<PyTensor> {
        let o = to_tensor(other)?;
        run(py, || ops::div(&o, &self.0))
    }
    fn __matmul__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<PyTensor> {
        let o = to_tensor(other)?;
        run(py, || ops::matmul(&self.0, &o))
    }
    fn __rmatmul__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<PyTensor> {
        let o = to_tensor(other)?;
        run(py, || ops::matmul(&o, &self.0))
    }
    fn __pow__(
        slf: &Bound<'_, Self>,
        exponent: &Bound<'_, PyAny>,
        modulo: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyTensor> {
        no_modulus(modulo)?;
        crate::functional::pow(slf.py(), slf.as_any(), exponent)
    }
    fn __rpow__(
        &self,
        py: Python<'_>,
        base: &Bound<'_, PyAny>,
        modulo: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyTensor> {
        no_modulus(modulo)?;
        let base = to_tensor(base)?;
        run(py, || ops::power(&base, &self.0))
    }
    fn __neg__(&self, py: Python<'_>) -> PyResult<PyTensor> {
        run(py, || ops::neg(&self.0))
    }

    /// `+t`: t itself, as in PyTorch.
    fn __pos__(&self) -> PyTensor {
        PyTensor(self.0.clone())
    }

    /// `abs(t)`: `t.abs()`.
    fn __abs__(&self, py: Python<'_>) -> PyResult<PyTensor> {
        self.abs(py)
    }

    /// `round(t)` and `round(t, ndigits)`: `t.round(decimals=ndigits)`, a Tensor (as in PyTorch).
    #[pyo3(signature = (ndigits = None))]
    fn __round__(&self, py: Python<'_>, ndigits: Option<i32>) -> PyResult<PyTensor> {
        self.round(py, ndigits.unwrap_or(0))
    }

    /// reshape(*shape): the same elements in a new shape (one dimension may be -1).
    #[pyo3(signature = (*shape))]
    fn reshape(&self, py: Python<'_>, shape: &Bound<'_, PyTuple>) -> PyResult<PyTensor> {
        let shape = shape_args(shape)?;
        run(py, || ops::reshape(&self.0, &shape))
    }

    /// permute(*dims): reorders the dimensions.
    #[pyo3(signature = (*dims))]
    fn permute(&self, py: Python<'_>, dims: &Bound<'_, PyTuple>) -> PyResult<PyTensor> {
        let dims = dims_arg(&shape_args(dims)?, self.0.rank())?;
        run(py, || ops::permute(&self.0, &dims))
    }

    // pyo3 renders negative defaults as `...` in `__text_signature__`; `text_signature` spells them out
    // (the stubs in python/ferrolm/_core.pyi are checked against it by stubtest).
    #[pyo3(signature = (dim0 = Axis(-2), dim1 = Axis(-1)), text_signature = "($self, dim0=-2, dim1=-1)")]
    fn transpose(&self, py: Python<'_>, dim0: Axis, dim1: Axis) -> PyResult<PyTensor> {
        run(py, || ops::transpose(&self.0, dim0.0, dim1.0))
    }

    /// Sum over `axis` (all elements when None), as `ferrolm.functional.sum`.
    #[pyo3(signature = (axis = None, keepdim = false, **numpy))]
    fn sum(&self, py: Python<'_>, axis: Option<Axis>, keepdim: bool, numpy: Option<Numpy>) -> PyResult<PyTensor> {
        self.reduction(py, keepdim, numpy, |t, keep| ops::reduce(t, ops::Reduce::Sum, axis.map(|a| a.0), keep))
    }

    /// Mean over `axis` (all elements when None), as `ferrolm.functional.mean`.
    #[pyo3(signature = (axis = None, keepdim = false, **numpy))]
    fn mean(&self, py: Python<'_>, axis: Option<Axis>, keepdim: bool, numpy: Option<Numpy>) -> PyResult<PyTensor> {
        self.reduction(py, keepdim, numpy, |t, keep| ops::reduce(t, ops::Reduce::Mean, axis.map(|a| a.0), keep))
    }

    /// Maximum over `axis` (all elements when None), as `ferrolm.functional.max`.
    #[pyo3(signature = (axis = None, keepdim = false, **numpy))]
    fn max(&self, py: Python<'_>, axis: Option<Axis>, keepdim: bool, numpy: Option<Numpy>) -> PyResult<PyTensor> {
        self.reduction(py, keepdim, numpy, |t, keep| ops::reduce(t, ops::Reduce::Max, axis.map(|a| a.0), keep))
    }

    fn exp(&self, py: Python<'_>) -> PyResult<PyTensor> {
        self.unary(py, ops::exp)
    }

    fn log(&self, py: Python<'_>) -> PyResult<PyTensor> {
        self.unary(py, ops::log)
    }

    // What PyTorch users reach for as methods: each is the `ferrolm.functional` op of its name.

    fn abs(&self, py: Python<'_>) -> PyResult<PyTensor> {
        self.unary(py, ops::abs)
    }

    fn sqrt(&self, py: Python<'_>) -> PyResult<PyTensor> {
        self.unary(py, ops::sqrt)
    }

    fn tanh(&self, py: Python<'_>) -> PyResult<PyTensor> {
        self.unary(py, ops::tanh)
    }

    fn sigmoid(&self, py: Python<'_>) -> PyResult<PyTensor> {
        self.unary(py, ops::sigmoid)
    }

    fn relu(&self, py: Python<'_>) -> PyResult<PyTensor> {
        self.unary(py, ops::relu)
    }

    /// GPT-2's tanh GELU (F.gelu; F.gelu_erf is the exact form).
    fn gelu(&self, py: Python<'_>) -> PyResult<PyTensor> {
        self.unary(py, ops::gelu)
    }

    fn silu(&self, py: Python<'_>) -> PyResult<PyTensor> {
        self.unary(py, ops::silu)
    }

    fn sin(&self, py: Python<'_>) -> PyResult<PyTensor> {
        self.unary(py, ops::sin)
    }

    fn cos(&self, py: Python<'_>) -> PyResult<PyTensor> {
        self.unary(py, ops::cos)
    }

    /// `self ** exponent` (F.pow).
    fn pow(slf: &Bound<'_, Self>, exponent: &Bound<'_, PyAny>) -> PyResult<PyTensor> {
        crate::functional::pow(slf.py(), slf.as_any(), exponent)
    }

    /// Rounds to `decimals` decimal places, halves to even (F.round).
    #[pyo3(signature = (decimals = 0))]
    fn round(&self, py: Python<'_>, decimals: i32) -> PyResult<PyTensor> {
        run(py, || ops::round(&self.0, decimals))
    }

    /// Limits the values to [min, max] (F.clamp); either bound may be None.
    #[pyo3(signature = (min = None, max = None))]
    fn clamp(&self, py: Python<'_>, min: Option<Constant>, max: Option<Constant>) -> PyResult<PyTensor> {
        run(py, || ops::clamp(&self.0, min.map(|c| c.0), max.map(|c| c.0)))
    }

    /// `self @ other` (F.matmul).
    fn matmul(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<PyTensor> {
        self.__matmul__(py, other)
    }

    /// PyTorch's name for `reshape`: the same data in another shape (it shares them, as reshape does).
    #[pyo3(signature = (*shape))]
    fn view(&self, py: Python<'_>, shape: &Bound<'_, PyTuple>) -> PyResult<PyTensor> {
        self.reshape(py, shape)
    }

    /// The shape as a tuple, or with `dim` that dimension's size, as PyTorch's `size()`.
    #[pyo3(signature = (dim = None))]
    fn size<'py>(&self, py: Python<'py>, dim: Option<Axis>) -> PyResult<Bound<'py, PyAny>> {
        let shape = self.0.shape();
        match dim {
            None => Ok(PyTuple::new(py, shape)?.into_any()),
            Some(d) => Ok(shape[ferrolm::tensor::resolve_axis(d.0, shape.len()).py()?].into_pyobject(py)?.into_any()),
        }
    }

    #[pyo3(signature = (axis = Axis(-1)), text_signature = "($self, axis=-1)")]
    fn softmax(&self, py: Python<'_>, axis: Axis) -> PyResult<PyTensor> {
        run(py, || ops::softmax(&self.0, axis.0))
    }

    #[pyo3(signature = (axis = Axis(-1)), text_signature = "($self, axis=-1)")]
    fn log_softmax(&self, py: Python<'_>, axis: Axis) -> PyResult<PyTensor> {
        run(py, || ops::log_softmax(&self.0, axis.0))
    }

    /// Minimum over `axis` (all elements when None): −max(−x), as `ferrolm.functional.min`.
    #[pyo3(signature = (axis = None, keepdim = false, **numpy))]
    fn min(&self, py: Python<'_>, axis: Option<Axis>, keepdim: bool, numpy: Option<Numpy>) -> PyResult<PyTensor> {
        let axis = axis.map(|a| a.0);
        self.reduction(py, keepdim, numpy, |t, keep| {
            ops::neg(&ops::reduce(&ops::neg(t)?, ops::Reduce::Max, axis, keep)?)
        })
    }

    /// A dimension of size 1 inserted at `axis` (−1: last).
    fn unsqueeze(&self, py: Python<'_>, axis: Axis) -> PyResult<PyTensor> {
        let axis = axis.0;
        let mut shape: Vec<isize> = self.0.shape().iter().map(|&d| d as isize).collect();
        let at = dims_arg(&[axis], shape.len() + 1)?[0];
        if at > shape.len() {
            return Err(PyIndexError::new_err(format!(
                "unsqueeze: dimension {axis} is out of range for a result of rank {}",
                shape.len() + 1
            )));
        }
        shape.insert(at, 1);
        run(py, || ops::reshape(&self.0, &shape))
    }

    /// Without the dimensions of size 1 (only `axis`, if given and of size 1, as PyTorch's).
    #[pyo3(signature = (axis = None))]
    fn squeeze(&self, py: Python<'_>, axis: Option<Axis>) -> PyResult<PyTensor> {
        let axis = axis.map(|a| a.0);
        let dims = self.0.shape();
        let rank = dims.len().max(1); // a scalar takes 0 and -1, as in PyTorch
        let only = axis.map(|a| dims_arg(&[a], rank)).transpose()?.map(|d| d[0]);
        if let (Some(a), Some(given)) = (only, axis) {
            if a >= rank {
                return Err(PyIndexError::new_err(format!(
                    "squeeze: dimension {given} is out of range for a tensor of rank {}",
                    dims.len()
                )));
            }
        }
        let shape: Vec<isize> = (0..dims.len())
            .filter(|&i| dims[i] != 1 || only.is_some_and(|a| a != i))
            .map(|i| dims[i] as isize)
            .collect();
        run(py, || ops::reshape(&self.0, &shape))
    }

    /// The elements as one dimension.
    fn flatten(&self, py: Python<'_>) -> PyResult<PyTensor> {
        run(py, || ops::reshape(&self.0, &[-1]))
    }

    /// The dimensions reversed (a matrix's transpose), as numpy's and PyTorch's `.T`.
    #[getter(T)]
    fn reversed(&self, py: Python<'_>) -> PyResult<PyTensor> {
        let dims: Vec<usize> = (0..self.0.rank()).rev().collect();
        run(py, || ops::permute(&self.0, &dims))
    }
}
