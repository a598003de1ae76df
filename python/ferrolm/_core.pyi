"""Type stubs for the Rust extension `ferrolm._core` (kept by hand; checked by stubtest).

`tests/test_stubs.py` runs `python -m mypy.stubtest ferrolm._core` against the built module, so
every name, signature and default here must match the bindings in `rust/ferrolm-py/src/`.
pyo3 classes are constructed by `__new__` and cannot be subclassed (hence `@final`).
"""

from os import PathLike
from pathlib import Path
from typing import Any, ClassVar, Collection, Iterable, Iterator, Literal, Mapping, Optional, Sequence, TypeVar, Union, final

import numpy as np
import numpy.typing as npt
from typing_extensions import Self

# Private aliases: stubtest would look for public ones in the runtime module.
_ArrayLike = Union["Tensor", float, int, npt.ArrayLike]
_IntArrayLike = npt.ArrayLike
_MaskLike = Union["Tensor", npt.ArrayLike]
_Path = Union[str, PathLike[str]]
_F32Array = npt.NDArray[np.float32]
_Tensors = TypeVar("_Tensors", bound=_ArrayLike)

# The runtime `__all__`, which pyo3 fills in registration order.
__all__ = [
    "ShapeError",
    "FormatError",
    "GradError",
    "Tensor",
    "neg",
    "exp",
    "log",
    "sqrt",
    "rsqrt",
    "tanh",
    "sigmoid",
    "log_sigmoid",
    "relu",
    "abs",
    "sin",
    "cos",
    "silu",
    "gelu",
    "gelu_erf",
    "add",
    "sub",
    "mul",
    "div",
    "maximum",
    "minimum",
    "matmul",
    "pow",
    "round",
    "clamp",
    "where",
    "masked_fill",
    "sum",
    "mean",
    "max",
    "reshape",
    "permute",
    "transpose",
    "narrow",
    "concat",
    "stack",
    "embedding",
    "index_select",
    "gather",
    "softmax",
    "log_softmax",
    "layer_norm",
    "linear",
    "dropout",
    "cross_entropy",
    "attention",
    "attention_qkv",
    "Linear",
    "Embedding",
    "LayerNorm",
    "Optimizer",
    "clip_grad_norm",
    "randn",
    "manual_seed",
    "rand",
    "full",
    "set_grad_enabled",
    "is_grad_enabled",
    "num_threads",
    "set_num_threads",
    "set_matmul_precision",
    "matmul_precision",
    "Gpt",
    "Bert",
    "Generation",
    "TextStream",
    "check_sampling",
    "save_safetensors",
    "load_model_weights",
    "model_weights_files",
    "load_safetensors",
    "Tokenizer",
    "PATTERNS",
    "chat_ids",
    "release_memory",
]

class ShapeError(ValueError):
    """Tensor shapes do not fit the operation."""

class FormatError(ValueError):
    """A file or buffer is truncated, corrupt or of the wrong schema."""

class GradError(RuntimeError):
    """Backpropagation was misused (non-scalar output, freed graph...)."""

# ---------------------------------------------------------------- tensors

@final
class Tensor:
    """An n-dimensional float32 array that records operations for backpropagation."""

    # None makes numpy defer to Tensor in mixed arithmetic (`array + tensor` -> `Tensor.__radd__`).
    __array_ufunc__: ClassVar[None]
    def __new__(cls, data: _ArrayLike, requires_grad: bool = False) -> Self: ...
    @property
    def shape(self) -> tuple[int, ...]: ...
    @property
    def ndim(self) -> int: ...
    @property
    def dtype(self) -> Literal["float32"]: ...
    @property
    def uid(self) -> int: ...
    def __bool__(self) -> bool: ...
    def __getitem__(self, index: Union[int, slice, ellipsis, tuple[Union[int, slice, ellipsis], ...]], /) -> Tensor: ...
    def __setitem__(self, index: Union[slice, ellipsis, tuple[Union[slice, ellipsis], ...]], value: _ArrayLike, /) -> None:
        """`t[:] = y`: y's values, broadcast to t's shape, replace t's in place (as `t += y`); a part of t is refused."""
    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[Tensor]: ...
    def numel(self) -> int: ...
    def numpy(self) -> _F32Array: ...
    def __array__(self, dtype: Any = None, copy: Optional[bool] = None) -> np.ndarray: ...
    def item(self) -> float: ...
    def __float__(self) -> float: ...
    def __int__(self) -> int: ...
    def __format__(self, spec: str, /) -> str: ...
    def __copy__(self) -> Tensor: ...
    def __deepcopy__(self, memo: Any, /) -> Tensor: ...
    def tolist(self) -> Any: ...
    @property
    def requires_grad(self) -> bool: ...
    @requires_grad.setter
    def requires_grad(self, value: bool) -> None: ...
    def requires_grad_(self, requires_grad: bool = True) -> Self: ...
    @property
    def is_leaf(self) -> bool: ...
    @property
    def grad(self) -> Optional[Tensor]:
        """The accumulated gradient (None until backward reaches this leaf), as a copy: change it by
        assigning (`w.grad = w.grad * 0.5`, `w.grad = None`), not in place."""
    @grad.setter
    def grad(self, grad: Optional[_ArrayLike]) -> None: ...
    def zero_grad(self) -> None: ...
    def backward(self, gradient: Optional[_ArrayLike] = None) -> None: ...
    def detach(self) -> Tensor: ...
    def clone(self) -> Tensor:
        """A copy of the data that stays in the graph, as PyTorch's clone: the gradient flows back
        through it (`t.detach().clone()` is a copy cut off from the graph)."""
    def copy_(self, values: _ArrayLike) -> Tensor: ...
    def __eq__(self, other: object, /) -> Tensor:  # type: ignore[override]
        """Elementwise, as every comparison: a float32 tensor of 1.0 where it holds, 0.0 elsewhere,
        recording no graph (`(predicted == targets).mean()` is an accuracy)."""
    def __ne__(self, other: object, /) -> Tensor: ...  # type: ignore[override]
    def __lt__(self, other: _ArrayLike, /) -> Tensor: ...
    def __le__(self, other: _ArrayLike, /) -> Tensor: ...
    def __gt__(self, other: _ArrayLike, /) -> Tensor: ...
    def __ge__(self, other: _ArrayLike, /) -> Tensor: ...
    def __hash__(self) -> int:
        """By identity, as a PyTorch tensor's hash: `==` compares values."""
    def __add__(self, other: _ArrayLike, /) -> Tensor: ...
    def __radd__(self, other: _ArrayLike, /) -> Tensor: ...
    def __sub__(self, other: _ArrayLike, /) -> Tensor: ...
    def __rsub__(self, other: _ArrayLike, /) -> Tensor: ...
    def __mul__(self, other: _ArrayLike, /) -> Tensor: ...
    def __rmul__(self, other: _ArrayLike, /) -> Tensor: ...
    def __truediv__(self, other: _ArrayLike, /) -> Tensor: ...
    def __rtruediv__(self, other: _ArrayLike, /) -> Tensor: ...
    def __iadd__(self, other: _ArrayLike, /) -> Self:
        """`x += y` changes x's values in place (its shape stays; y broadcasts to it), as in
        PyTorch: every holder of x, a model or an optimizer, sees the change. GradError for a
        tensor that requires grad while gradients are recorded (update it inside `fl.no_grad()`)."""
    def __isub__(self, other: _ArrayLike, /) -> Self:
        """`x -= y` in place, as `__iadd__`."""
    def __imul__(self, other: _ArrayLike, /) -> Self:
        """`x *= y` in place, as `__iadd__`."""
    def __itruediv__(self, other: _ArrayLike, /) -> Self:
        """`x /= y` in place, as `__iadd__`."""
    def __matmul__(self, other: _ArrayLike, /) -> Tensor: ...
    def __rmatmul__(self, other: _ArrayLike, /) -> Tensor: ...
    def __pow__(self, exponent: float | _ArrayLike, modulo: None = None, /) -> Tensor: ...
    def __rpow__(self, base: float | _ArrayLike, modulo: None = None, /) -> Tensor: ...
    def __neg__(self) -> Tensor: ...
    def __pos__(self) -> Tensor: ...
    def __abs__(self) -> Tensor: ...
    def __round__(self, ndigits: Optional[int] = None) -> Tensor: ...
    def reshape(self, *shape: int | Sequence[int]) -> Tensor: ...
    def view(self, *shape: int | Sequence[int]) -> Tensor: ...
    def size(self, dim: Optional[int] = None) -> Union[tuple[int, ...], int]: ...
    def permute(self, *dims: int | Sequence[int]) -> Tensor: ...
    def transpose(self, dim0: int = -2, dim1: int = -1) -> Tensor: ...
    def sum(self, axis: Optional[int] = None, keepdim: bool = False, **numpy: None) -> Tensor: ...
    def mean(self, axis: Optional[int] = None, keepdim: bool = False, **numpy: None) -> Tensor: ...
    def max(self, axis: Optional[int] = None, keepdim: bool = False, **numpy: None) -> Tensor: ...
    def argmax(self, axis: Optional[int] = None, keepdim: bool = False) -> Union[int, npt.NDArray[np.int64]]:
        """Where along `axis` the largest elements are (all elements, flattened, when None), as
        int64: a numpy array shaped as `max(axis, keepdim)`, or with axis None an int (an
        array of ones with `keepdim`, as numpy's). The first on a tie."""
    def exp(self) -> Tensor: ...
    def log(self) -> Tensor: ...
    def abs(self) -> Tensor: ...
    def sqrt(self) -> Tensor: ...
    def tanh(self) -> Tensor: ...
    def sigmoid(self) -> Tensor: ...
    def relu(self) -> Tensor: ...
    def gelu(self) -> Tensor: ...
    def silu(self) -> Tensor: ...
    def sin(self) -> Tensor: ...
    def cos(self) -> Tensor: ...
    def pow(self, exponent: float | _ArrayLike) -> Tensor: ...
    def round(self, decimals: int = 0) -> Tensor: ...
    def clamp(self, min: Union[float, Tensor, None] = None, max: Union[float, Tensor, None] = None) -> Tensor: ...
    def matmul(self, other: _ArrayLike) -> Tensor: ...
    def softmax(self, axis: int = -1) -> Tensor: ...
    def log_softmax(self, axis: int = -1) -> Tensor: ...
    def min(self, axis: Optional[int] = None, keepdim: bool = False, **numpy: None) -> Tensor:
        """Minimum over `axis` (all elements when None): −max(−x), as `ferrolm.functional.min`."""
    def unsqueeze(self, axis: int) -> Tensor:
        """A dimension of size 1 inserted at `axis` (−1: last)."""
    def squeeze(self, axis: Optional[int] = None) -> Tensor:
        """Without the dimensions of size 1 (only `axis`, if given and of size 1, as PyTorch's)."""
    def flatten(self) -> Tensor:
        """The elements as one dimension."""
    @property
    def T(self) -> Tensor:
        """The dimensions reversed (a matrix's transpose), as numpy's and PyTorch's `.T`."""

def randn(*shape: int | Sequence[int], mean: float = 0.0, std: float = 1.0, seed: Optional[int] = None, requires_grad: bool = False) -> Tensor: ...
def rand(*shape: int | Sequence[int], low: float = 0.0, high: float = 1.0, seed: Optional[int] = None, requires_grad: bool = False) -> Tensor: ...
def chat_ids(tokenizer: Tokenizer, turns: Sequence[tuple[str, str | bytes]], open: bool) -> list[int]:
    """A conversation's ids in the chat template (`ferrolm::chat`): a prompt with `open`, else whole exchanges."""
def release_memory() -> None:
    """Returns to the OS the freed memory (up to 1 GiB) the allocator keeps for reuse on glibc:
    training calls it at its end; call it after a loop of your own, in a long-lived process."""
def manual_seed(seed: int) -> None:
    """Restarts the generator behind every `seed=None` (randn, rand, Linear, Embedding, dropout,
    attention's dropout, GPT.create, BERT.create, sampling in generate), as torch.manual_seed
    does. An explicit seed is never affected."""
def full(shape: int | Sequence[int], fill_value: float, requires_grad: bool = False) -> Tensor: ...
def set_grad_enabled(enabled: bool) -> bool: ...
def is_grad_enabled() -> bool: ...
def num_threads() -> int:
    """The threads each computation runs on: as set_num_threads chose, or the compute pool's
    (one per CPU, or the RAYON_NUM_THREADS environment variable's count)."""
def set_num_threads(threads: Optional[int]) -> None:
    """Sets the threads later computations run on, process-wide, as torch.set_num_threads does
    (RAYON_NUM_THREADS only counts before ferrolm is imported); None goes back to the compute
    pool's size. Results do not depend on the count beyond float rounding."""
def set_matmul_precision(precision: str) -> str: ...
def matmul_precision() -> str: ...

# ---------------------------------------------------------------- functional ops

def neg(x: Tensor) -> Tensor: ...
def exp(x: Tensor) -> Tensor: ...
def log(x: Tensor) -> Tensor: ...
def sqrt(x: Tensor) -> Tensor: ...
def rsqrt(x: Tensor) -> Tensor: ...
def tanh(x: Tensor) -> Tensor: ...
def sigmoid(x: Tensor) -> Tensor: ...
def log_sigmoid(x: Tensor) -> Tensor: ...
def relu(x: Tensor) -> Tensor: ...
def abs(x: Tensor) -> Tensor: ...
def sin(x: Tensor) -> Tensor: ...
def cos(x: Tensor) -> Tensor: ...
def silu(x: Tensor) -> Tensor: ...
def gelu(x: Tensor) -> Tensor: ...
def gelu_erf(x: Tensor) -> Tensor: ...
def add(a: _ArrayLike, b: _ArrayLike) -> Tensor: ...
def sub(a: _ArrayLike, b: _ArrayLike) -> Tensor: ...
def mul(a: _ArrayLike, b: _ArrayLike) -> Tensor: ...
def div(a: _ArrayLike, b: _ArrayLike) -> Tensor: ...
def maximum(a: _ArrayLike, b: _ArrayLike) -> Tensor: ...
def minimum(a: _ArrayLike, b: _ArrayLike) -> Tensor: ...
def matmul(a: _ArrayLike, b: _ArrayLike) -> Tensor: ...
def pow(x: _ArrayLike, exponent: float | _ArrayLike) -> Tensor: ...
def round(x: Tensor, decimals: int = 0) -> Tensor: ...
def clamp(x: Tensor, min: Union[float, Tensor, None] = None, max: Union[float, Tensor, None] = None) -> Tensor: ...
def where(cond: _MaskLike, a: _ArrayLike, b: _ArrayLike) -> Tensor: ...
def masked_fill(x: Tensor, mask: _MaskLike, value: Union[float, Tensor]) -> Tensor: ...
def sum(x: Tensor, axis: Optional[int] = None, keepdim: bool = False) -> Tensor: ...
def mean(x: Tensor, axis: Optional[int] = None, keepdim: bool = False) -> Tensor: ...
def max(x: Tensor, axis: Optional[int] = None, keepdim: bool = False) -> Tensor: ...
def reshape(x: Tensor, shape: Sequence[int]) -> Tensor: ...
def permute(x: Tensor, dims: Sequence[int]) -> Tensor: ...
def transpose(x: Tensor, dim0: int = -2, dim1: int = -1) -> Tensor: ...
def narrow(x: Tensor, axis: int, start: int, length: int) -> Tensor: ...
def concat(tensors: Sequence[Tensor], axis: int = 0) -> Tensor: ...
def stack(tensors: Sequence[Tensor], axis: int = 0) -> Tensor: ...
def embedding(weight: Tensor, ids: _IntArrayLike) -> Tensor: ...
def index_select(x: Tensor, axis: int, ids: _IntArrayLike) -> Tensor: ...
def gather(x: Tensor, axis: int, index: _IntArrayLike) -> Tensor: ...
def softmax(x: Tensor, axis: int = -1) -> Tensor: ...
def log_softmax(x: Tensor, axis: int = -1) -> Tensor: ...
def layer_norm(x: Tensor, weight: Optional[Tensor] = None, bias: Optional[Tensor] = None, eps: float = 1e-5) -> Tensor: ...
def linear(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None) -> Tensor: ...
def dropout(x: Tensor, p: float, seed: Optional[int] = None, training: bool = True) -> Tensor: ...
def cross_entropy(
    logits: Tensor,
    targets: _IntArrayLike,
    ignore_index: Optional[int] = -100,
    reduction: Literal["mean", "sum", "none"] = "mean",
) -> Tensor: ...
def attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    causal: bool = False,
    key_padding_mask: Optional[_MaskLike] = None,
    dropout_p: float = 0.0,
    seed: Optional[int] = None,
) -> Tensor: ...
def attention_qkv(
    qkv: Tensor,
    n_head: int,
    causal: bool = True,
    key_padding_mask: Optional[_MaskLike] = None,
    dropout_p: float = 0.0,
    seed: Optional[int] = None,
) -> Tensor: ...

# ---------------------------------------------------------------- layers and optimiser

@final
class Linear:
    """`y = x·Wᵀ + b` with W of shape (out_features, in_features)."""

    def __new__(cls, in_features: int, out_features: int, bias: bool = True, seed: Optional[int] = None) -> Self: ...
    def __call__(self, x: Tensor) -> Tensor: ...
    @property
    def weight(self) -> Tensor: ...
    @weight.setter
    def weight(self, value: Tensor) -> None: ...
    @property
    def bias(self) -> Optional[Tensor]: ...
    @bias.setter
    def bias(self, value: Tensor) -> None: ...
    def named_parameters(self) -> list[tuple[str, Tensor]]: ...
    def parameters(self) -> list[Tensor]:
        """The tensors of named_parameters(), as PyTorch's `parameters()`."""
    def __deepcopy__(self, memo: Any, /) -> Linear: ...

@final
class Embedding:
    """A lookup table of `num_embeddings` vectors of size `embedding_dim`."""

    def __new__(cls, num_embeddings: int, embedding_dim: int, std: float = 1.0, seed: Optional[int] = None) -> Self: ...
    def __call__(self, ids: _IntArrayLike) -> Tensor: ...
    @property
    def weight(self) -> Tensor: ...
    @weight.setter
    def weight(self, value: Tensor) -> None: ...
    def named_parameters(self) -> list[tuple[str, Tensor]]: ...
    def parameters(self) -> list[Tensor]:
        """The tensors of named_parameters(), as PyTorch's `parameters()`."""
    def __deepcopy__(self, memo: Any, /) -> Embedding: ...

@final
class LayerNorm:
    """Layer normalisation over the last axis."""

    def __new__(cls, dim: int, bias: bool = True, eps: float = 1e-5) -> Self: ...
    def __call__(self, x: Tensor) -> Tensor: ...
    @property
    def weight(self) -> Tensor: ...
    @weight.setter
    def weight(self, value: Tensor) -> None: ...
    @property
    def bias(self) -> Optional[Tensor]: ...
    @bias.setter
    def bias(self, value: Tensor) -> None: ...
    def named_parameters(self) -> list[tuple[str, Tensor]]: ...
    def parameters(self) -> list[Tensor]:
        """The tensors of named_parameters(), as PyTorch's `parameters()`."""
    def __deepcopy__(self, memo: Any, /) -> LayerNorm: ...

_ParamState = tuple[list[tuple[str, _F32Array]], int]

@final
class Optimizer:
    """The optimisers as Python drives them; `ferrolm.optim.AdamW` and `SGD` build the (tensor,
    weight_decay) pairs from param groups."""

    @staticmethod
    def adamw(params: Sequence[tuple[Tensor, float]], lr: float, betas: tuple[float, float], eps: float) -> Optimizer:
        """AdamW with decoupled weight decay and bias correction."""
    @staticmethod
    def sgd(params: Sequence[tuple[Tensor, float]], lr: float, momentum: float, nesterov: bool) -> Optimizer:
        """SGD with momentum (optionally Nesterov's) and L2 weight decay, as torch.optim.SGD."""
    @property
    def lr(self) -> float: ...
    @lr.setter
    def lr(self, lr: float) -> None: ...
    def step(self) -> None: ...
    def zero_grad(self) -> None: ...
    def parameters(self) -> list[Tensor]: ...
    def state(self) -> list[_ParamState]:
        """Every parameter's state, in parameter order: [([(buffer name, values)], steps)]."""
    def load_state(self, state: Sequence[tuple[Sequence[tuple[str, _F32Array]], int]]) -> None:
        """Restores a `state()` saved for the same parameters."""

def clip_grad_norm(params: Union[Tensor, Iterable[Tensor]], max_norm: float) -> float: ...

# ---------------------------------------------------------------- models

@final
class Gpt:
    """A GPT-2 language model (weights shared by clones; see `deep_clone`)."""

    def __new__(
        cls,
        vocab_size: int,
        block_size: int,
        n_layer: int,
        n_head: int,
        n_embd: int,
        dropout: float = 0.0,
        bias: bool = True,
        layer_norm_epsilon: float = 1e-5,
        seed: Optional[int] = None,
        attn_dropout: Optional[float] = None,
        activation_function: str = "gelu_new",
    ) -> Self: ...
    @staticmethod
    def load(dir: _Path) -> Gpt:
        """Loads config.json + model.safetensors from a directory (ours or Hugging Face GPT-2)."""
    def save(self, dir: _Path) -> None:
        """Writes config.json + model.safetensors into a directory, atomically."""
    @property
    def config(self) -> dict[str, Any]:
        """The architecture as a Hugging Face style config dict."""
    def hidden(
        self,
        ids: _IntArrayLike,
        positions: Optional[_IntArrayLike] = None,
        attention_mask: Optional[_MaskLike] = None,
        dropout_seed: Optional[int] = None,
    ) -> Tensor:
        """Final hidden states [B, T, C]; `dropout_seed` turns on training-mode dropout."""
    def logits(self, hidden: Tensor) -> Tensor:
        """Next-token logits from hidden states (the head is tied to the token embedding)."""
    def forward(
        self,
        ids: _IntArrayLike,
        positions: Optional[_IntArrayLike] = None,
        attention_mask: Optional[_MaskLike] = None,
        dropout_seed: Optional[int] = None,
    ) -> Tensor:
        """Logits [B, T, V] for ids [B, T]."""
    def named_parameters(self) -> list[tuple[str, Tensor]]: ...
    def score(self, ids: _IntArrayLike, stride: Optional[int] = None) -> _F32Array:
        """Log-probability of each token given the ones before it (n - 1 values), through a sliding
        window of the context, `stride` apart (default half the context), past its end."""
    def with_vocab(self, vocab_size: int, seed: int = 0) -> Gpt:
        """The model with a larger vocabulary (new token rows N(0, 0.02); other weights shared)."""
    def with_dropout(self, dropout: float, attn_dropout: Optional[float] = None) -> Gpt:
        """The same model (weights shared) with other dropout rates; `attn_dropout` defaults to `dropout`."""
    def deep_clone(self) -> Gpt:
        """An independent copy of the model (own weights, gradients and frozen parameters kept)."""
    def __deepcopy__(self, memo: Any, /) -> Gpt: ...
    def generation(
        self,
        prompts: Sequence[Sequence[int]],
        temperature: float = 1.0,
        top_k: Optional[int] = None,
        top_p: Optional[float] = None,
        repetition_penalty: float = 1.0,
        seed: Optional[int] = None,
        stop_tokens: Sequence[int] = (),
        tokenizer: Optional[Tokenizer] = None,
    ) -> Generation:
        """Starts generating from token-id prompts (of any lengths); see `Generation.step`. With
        a `tokenizer`, only ids it has are sampled (`Sampling::within`)."""

@final
class Bert:
    """A BERT encoder (with masked-LM head unless loaded from an encoder-only checkpoint)."""

    def __new__(
        cls,
        vocab_size: int,
        hidden_size: int,
        num_hidden_layers: int,
        num_attention_heads: int,
        intermediate_size: int,
        max_position_embeddings: int = 512,
        type_vocab_size: int = 2,
        hidden_dropout_prob: float = 0.1,
        layer_norm_eps: float = 1e-12,
        pad_token_id: int = 0,
        pooler: bool = False,
        seed: Optional[int] = None,
        attention_probs_dropout_prob: Optional[float] = None,
    ) -> Self: ...
    @staticmethod
    def load(dir: _Path) -> Bert:
        """Loads a Hugging Face style BERT directory (config.json + model.safetensors)."""
    def save(self, dir: _Path) -> None: ...
    def with_dropout(self, hidden_dropout_prob: float, attention_probs_dropout_prob: Optional[float] = None) -> Bert:
        """The same model (weights shared) with other dropout rates; the attention rate defaults to the hidden one."""
    @property
    def config(self) -> dict[str, Any]: ...
    def with_new_pooler(self, seed: int = 0) -> Bert:
        """The same encoder (weights shared) with a freshly initialised pooler."""
    def with_new_mlm_head(self, seed: int = 0) -> Bert:
        """The same encoder (weights shared) with a freshly initialised masked-LM head."""
    @property
    def has_mlm_head(self) -> bool: ...
    @property
    def has_pooler(self) -> bool: ...
    def hidden(
        self,
        ids: _IntArrayLike,
        token_type_ids: Optional[_IntArrayLike] = None,
        attention_mask: Optional[_MaskLike] = None,
        dropout_seed: Optional[int] = None,
    ) -> Tensor:
        """Last hidden states [B, T, C]; `attention_mask` [B, T] is true (1) for real tokens."""
    def mlm_logits(self, hidden: Tensor) -> Tensor:
        """Masked-LM logits [.., V] from hidden states."""
    def pooled(self, hidden: Tensor) -> Tensor:
        """The pooled [CLS] vector [B, C] (tanh of the pooler's dense layer)."""
    def named_parameters(self) -> list[tuple[str, Tensor]]: ...
    def deep_clone(self) -> Bert:
        """An independent copy of the model (own weights, gradients and frozen parameters kept)."""
    def __deepcopy__(self, memo: Any, /) -> Bert: ...

@final
class Generation:
    """A generation in progress (made by `Gpt.generation`): each `step()` adds one token to every unfinished prompt."""

    def step(self) -> list[Optional[int]]:
        """The next token of each row (None for rows already finished by a stop token)."""
    def run(self, max_new_tokens: int) -> list[list[int]]:
        """Up to `max_new_tokens` more tokens per row, generated without returning to Python."""
    @property
    def finished(self) -> bool: ...
    def extend(self, ids: Sequence[int]) -> None:
        """Continues a one-prompt generation with more token ids (a chat's next turn), run through
        the cache after what it holds; a stop token that finished it is dropped first. ValueError
        for a batch, or ids that do not fit in `room`; IndexError for ids outside the vocabulary."""
    @property
    def room(self) -> int:
        """Free positions in the cache: how many token ids `extend` can add."""
    @property
    def windowed(self) -> bool:
        """Whether the cache has dropped old tokens to make room (rows go on from a window)."""

@final
class TextStream:
    """Generated token ids turned into text as they come, held back at a possible stop string
    and ended by one (or by a stop token)."""

    def __new__(cls, stops: Sequence[str] = ..., stop_tokens: Sequence[int] = ..., prompt: Sequence[int] = ...) -> Self:
        """A stream of the text generated after `prompt` (its ids), ending at a stop string or token."""
    def push(self, tokenizer: Tokenizer, token: int) -> str:
        """Adds a generated token; returns the text that became final."""
    def flush(self) -> str:
        """Ends the stream; returns everything not yet returned."""
    @property
    def text(self) -> str: ...
    @property
    def done(self) -> bool: ...
    @property
    def stopped_by_string(self) -> bool:
        """Whether a stop string ended the text (its tokens were generated; the text drops them)."""

def check_sampling(temperature: float = 1.0, top_k: Optional[int] = None, top_p: Optional[float] = None,
                   repetition_penalty: float = 1.0) -> None:
    """Refuses sampling settings that `Gpt.generation` would refuse (ValueError), without starting one."""

def save_safetensors(path: _Path, tensors: dict[str, _Tensors], metadata: Optional[dict[str, str]] = None) -> None:
    """Writes named tensors (Tensors or array-likes, stored as float32) and string metadata to a
    safetensors file, atomically."""

def load_safetensors(path: _Path, names: Optional[list[str]] = None) -> tuple[dict[str, _F32Array], dict[str, str]]:
    """Reads a safetensors file: ({name: float32 array}, metadata); with `names`, only those tensors (KeyError for a
    name the file does not hold)."""

def load_model_weights(path: _Path, names: Optional[list[str]] = None) -> dict[str, _F32Array]:
    """Reads a model directory's tensors, from model.safetensors or the shards its
    model.safetensors.index.json names: {name: float32 array}; with `names`, only those."""

def model_weights_files(path: _Path) -> list[Path]:
    """The files holding a model directory's weights: model.safetensors, or the shard index and the
    shards it names (index first); [] when there are none. FormatError for a bad index, or for
    weights only in another format (pytorch_model.bin)."""

# ---------------------------------------------------------------- tokenizers

_Text = Union[str, bytes]
_Ids = Union[Sequence[int], npt.NDArray[np.integer]]
_Allowed = Union[Literal["all", "none"], Collection[str], None]
_Disallowed = Union[Literal["raise", "all", "text"], Collection[str], None]

#: The built-in BPE pre-tokenizer patterns' names (any other string is used as a regex).
PATTERNS: tuple[str, ...]

@final
class Tokenizer:
    """Byte-level BPE, WordPiece or character tokenizer; reads and writes HF tokenizer.json."""

    @staticmethod
    def from_file(path: _Path) -> Tokenizer: ...
    @staticmethod
    def from_str(json: str) -> Tokenizer: ...
    @staticmethod
    def from_vocab_merges(vocab: _Path, merges: _Path, pattern: str = "gpt2") -> Tokenizer: ...
    @staticmethod
    def from_tiktoken(
        source: Any, *, pattern: Optional[str] = None, special_tokens: Optional[Mapping[str, int]] = None
    ) -> Tokenizer: ...
    @staticmethod
    def from_bert_vocab(
        path: _Path,
        lowercase: bool = True,
        strip_accents: Optional[bool] = None,
        clean_text: bool = True,
        handle_chinese_chars: bool = True,
    ) -> Tokenizer: ...
    @staticmethod
    def train(
        files: Sequence[_Path],
        *,
        kind: Literal["bpe", "wordpiece", "char"] = "bpe",
        vocab_size: int = 32000,
        min_frequency: int = 0,
        special_tokens: Optional[Sequence[str]] = None,
        pattern: str = "gpt2",
        lowercase: bool = True,
        strip_accents: Optional[bool] = None,
        limit_alphabet: Optional[int] = None,
    ) -> Tokenizer:
        """Trains on text files (read line by line).

        `kind`: "bpe" (byte-level), "wordpiece" or "char"; `vocab_size` counts special tokens (for
        "char" an upper bound: when it leaves characters out, an `[UNK]` token stands for them;
        when every character fits there is none, and encoding an unseen one is a ValueError);
        BPE and WordPiece never merge pairs seen fewer than
        `min_frequency` times; `special_tokens` default to the kind's (BPE `<|endoftext|>`, char none, WordPiece BERT's
        `[PAD]` `[UNK]` `[CLS]` `[SEP]` `[MASK]`). BPE only: `pattern` (one of `PATTERNS`, or a
        regex). WordPiece only: `lowercase`, `strip_accents` (default: as `lowercase`) and
        `limit_alphabet` (keep the most frequent characters), as Hugging Face's BertNormalizer
        and WordPieceTrainer. Ctrl-C stops a training within about a second."""
    @staticmethod
    def train_from_iterator(
        iterator: Iterable[Union[_Text, Sequence[_Text]]],
        *,
        kind: Literal["bpe", "wordpiece", "char"] = "bpe",
        vocab_size: int = 32000,
        min_frequency: int = 0,
        special_tokens: Optional[Sequence[str]] = None,
        pattern: str = "gpt2",
        lowercase: bool = True,
        strip_accents: Optional[bool] = None,
        limit_alphabet: Optional[int] = None,
    ) -> Tokenizer:
        """Trains on an iterable of strings (each one a unit of text), or of lists of them (batches,
        as Hugging Face's iterators may yield), counted about 8 MB at a time; the arguments are
        `train`'s."""
    def save(self, path: _Path) -> None: ...
    def copy(self) -> Tokenizer:
        """An independent copy (special tokens added to one are not added to the other)."""
    def __copy__(self) -> Tokenizer: ...
    def __deepcopy__(self, _memo: Any, /) -> Tokenizer: ...
    def to_str(self) -> str: ...
    def encode(
        self,
        text: _Text,
        *,
        allowed_special: _Allowed = None,
        disallowed_special: _Disallowed = None,
        add_special_tokens: bool = True,
        max_length: Optional[int] = None,
    ) -> list[int]:
        """Encodes text (str or UTF-8 bytes) to a list of ids. Special tokens in the text:
        `allowed_special` ("all", the default, "none", or token strings) are recognised; the
        text of the others raises ValueError, or with `disallowed_special="text"` is ordinary
        text. tiktoken's spellings (`disallowed_special=()`, `"all"`, or the tokens that raise)
        mean what they mean in tiktoken, whose `allowed_special` defaults to none.
        `max_length` truncates as Hugging Face's `truncation=True`: at most that many ids, the
        template's `[CLS]`/`[SEP]` kept; the text loses its end (for a pair, the longer text first)."""
    def encode_pair(
        self,
        a: _Text,
        b: _Text,
        *,
        allowed_special: _Allowed = None,
        disallowed_special: _Disallowed = None,
        add_special_tokens: bool = True,
        max_length: Optional[int] = None,
    ) -> tuple[list[int], list[int]]:
        """Encodes a pair of texts framed as the tokenizer frames pairs (BERT: [CLS] a [SEP] b [SEP]):
        (ids, token type ids): the template's, for BERT 0 for the first text's part and 1 for the second's.
        `max_length` truncates as Hugging Face's `longest_first`: the longer text loses its last
        tokens first (each keeps half when both are long), the template's tokens are kept."""
    def encode_array(
        self,
        text: _Text,
        *,
        allowed_special: _Allowed = None,
        disallowed_special: _Disallowed = None,
        add_special_tokens: bool = True,
        max_length: Optional[int] = None,
    ) -> npt.NDArray[np.uint32]: ...
    def encode_with_offsets(
        self,
        text: _Text,
        *,
        allowed_special: _Allowed = None,
        disallowed_special: _Disallowed = None,
        add_special_tokens: bool = True,
        max_length: Optional[int] = None,
    ) -> tuple[list[int], list[tuple[int, int]]]: ...
    def encode_batch(
        self,
        texts: Sequence[_Text],
        *,
        allowed_special: _Allowed = None,
        disallowed_special: _Disallowed = None,
        add_special_tokens: bool = True,
        max_length: Optional[int] = None,
        num_threads: Optional[int] = None,
    ) -> list[list[int]]: ...
    def encode_batch_padded(
        self,
        texts: Sequence[_Text],
        *,
        max_length: Optional[int] = None,
        padding: Literal["longest", "max_length"] = "longest",
        truncation: bool = True,
        pad_id: Optional[int] = None,
        allowed_special: _Allowed = None,
        disallowed_special: _Disallowed = None,
        add_special_tokens: bool = True,
        num_threads: Optional[int] = None,
    ) -> tuple[npt.NDArray[np.uint32], npt.NDArray[np.uint8]]: ...
    def decode(self, ids: _Ids, *, skip_special_tokens: bool = False) -> str: ...
    def decode_bytes(self, ids: _Ids, *, skip_special_tokens: bool = False) -> bytes: ...
    def decode_batch(
        self, batch: Iterable[_Ids], *, skip_special_tokens: bool = False, num_threads: Optional[int] = None
    ) -> list[str]: ...
    def pre_tokenize(self, text: _Text) -> list[str]: ...
    def token_to_id(self, token: str) -> Optional[int]: ...
    def id_to_token(self, id: int) -> Optional[str]: ...
    def unused_ids(self) -> list[int]:
        """The ids below vocab_size that have no token, in order: gaps a file may leave (added
        tokens above the model's ids, tiktoken's ids around its special tokens). Text generation
        never samples them."""
    @property
    def vocab_size(self) -> int: ...
    @property
    def kind(self) -> Literal["bpe", "wordpiece", "char"]: ...
    @property
    def pattern(self) -> Optional[str]: ...
    @property
    def add_prefix_space(self) -> bool: ...
    @property
    def safe_cuts(self) -> Optional[Literal["spaces and line breaks", "spaces"]]: ...
    @property
    def special_tokens(self) -> dict[str, int]: ...
    @property
    def pad_id(self) -> int: ...
    def get_vocab(self) -> dict[str, int]: ...
    def add_special_tokens(self, tokens: Sequence[str]) -> int: ...
    def __len__(self) -> int: ...
    def __reduce__(self) -> tuple[Any, tuple[str]]: ...
