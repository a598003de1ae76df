"""Whether a training run, or a generation's key/value cache, fits in memory, checked before
it starts. Past that, the kernel's out-of-memory killer ends the process part-way through its
first step, with no message (or the machine swaps to a standstill)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from ferrolm import _core
from ferrolm.jsonl import is_count

#: What a step keeps for backward, per layer, token and unit of width, in float32s (a GPT step
#: measured 19-21; a lower figure, so that a run that fits is never refused).
ACTIVATION_FLOATS = 16
#: A step's logits and their gradient, per token and vocabulary entry, in bytes (measured 7.2).
LOGIT_BYTES = 6


def available_bytes() -> Optional[int]:
    """Memory the kernel can still give this process: Linux's MemAvailable (free memory and
    page cache it can drop) plus free swap, or less if a container's memory limit (its cgroup's,
    `cgroup_room`) or an address-space limit (`ulimit -v`) leaves less; None where /proc does
    not tell."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            fields = {name: value.split() for name, value in (line.split(":", 1) for line in f)}
        available = (int(fields["MemAvailable"][0]) + int(fields["SwapFree"][0])) * 1024
        import resource  # where /proc is, so is this (not on Windows)

        limit = resource.getrlimit(resource.RLIMIT_AS)[0]
        if limit != resource.RLIM_INFINITY:
            with open("/proc/self/statm", encoding="ascii") as f:
                mapped = int(f.read().split()[0]) * resource.getpagesize()
            available = min(available, max(0, limit - mapped))
    except (OSError, KeyError, ValueError, IndexError):
        return None
    room = cgroup_room()
    return available if room is None else min(available, room)


def cgroup_room(root: Path = Path("/")) -> Optional[int]:
    """What this process's memory cgroup (a container's, a systemd unit's) can still take before
    its out-of-memory killer acts: the tightest, over its own level and its ancestors', of the
    limit less what that level uses (page cache it can drop not counted as used). None without
    a limit, or where the files cannot be read. `root` is where /proc and /sys are (tests give
    a tree of their own)."""
    try:
        lines = (root / "proc/self/cgroup").read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    rooms = []
    for line in lines:
        hierarchy, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if hierarchy == "0" and not controllers:  # v2
            mount, files = root / "sys/fs/cgroup", ("memory.max", "memory.current", "inactive_file")
        elif "memory" in controllers.split(","):  # v1
            mount, files = root / "sys/fs/cgroup/memory", ("memory.limit_in_bytes", "memory.usage_in_bytes",
                                                          "total_inactive_file")
        else:
            continue
        rooms += [_room(d, *files) for d in _cgroup_directories(mount, path)]
    rooms = [r for r in rooms if r is not None]
    return min(rooms) if rooms else None


def _cgroup_directories(mount: Path, path: str) -> list[Path]:
    """The cgroup directories from the mount down to `path`'s, those that exist (inside a
    container, the mount is the container's own cgroup and the host's path is not there)."""
    directories = [mount]
    for part in Path(path.strip()).parts[1:]:
        directories.append(directories[-1] / part)
    return [d for d in directories if d.is_dir()] or [mount]


def _room(directory: Path, limit_file: str, usage_file: str, reclaimable: str) -> Optional[int]:
    """One level's limit less its usage that is not `reclaimable` page cache (memory.stat's
    entry); None without a limit ("max", or v1's huge number) or readable files."""
    try:
        limit = (directory / limit_file).read_text().strip()
        if limit == "max" or int(limit) >= 1 << 62:
            return None
        stat = dict(line.split(maxsplit=1) for line in (directory / "memory.stat").read_text().splitlines() if line.strip())
        used = int((directory / usage_file).read_text()) - int(stat.get(reclaimable, 0))
        return min(int(limit), max(0, int(limit) - used))  # stats may lag: never more than the limit
    except (OSError, ValueError):
        return None


def training_bytes(model: Any, objective: Any, trainable: int) -> tuple[int, str]:
    """A low estimate of the memory training adds to what the model holds already, and what it
    is made of: each of the `trainable` parameters' gradient and AdamW's two moments; for a
    GPT or BERT whose objective states its batch shape (its `batch_size` and `block_size`
    settings), the activations a step keeps for backward, and a GPT's logits."""
    need, parts = 12 * trainable, [f"gradients and AdamW state of {trainable:,} parameters: {_gb(12 * trainable)}"]
    config = getattr(model, "config", None)
    settings = objective.state()
    if isinstance(config, dict) and isinstance(settings, dict):
        layers = config.get("n_layer", config.get("num_hidden_layers"))
        width = config.get("n_embd", config.get("hidden_size"))
        batch, context = settings.get("batch_size"), settings.get("block_size")
        if all(isinstance(v, int) for v in (layers, width, batch, context)):
            # A GPT predicts every position; BERT's MLM only the masked ones, so its logits are left out.
            vocab = config.get("vocab_size", 0) if "n_layer" in config else 0
            activations = batch * context * (4 * ACTIVATION_FLOATS * layers * width + LOGIT_BYTES * vocab)
            need += activations
            parts.append(f"activations of a {batch} x {context} batch: {_gb(activations)}")
    return need, "; ".join(parts)


def check_memory(model: Any, objective: Any, trainable: int) -> None:
    """MemoryError, before anything is written, when training would need more memory than
    is available (`available_bytes`)."""
    need, parts = training_bytes(model, objective, trainable)
    available = _short_of(need)
    if available is not None:
        raise MemoryError(f"training needs at least {_gb(need)} more memory ({parts}), but {_gb(available)} is "
                          "available: use a smaller --batch-size (--grad-accum keeps the batch's effective size), "
                          "--block-size or model, or free memory")


def check_model_memory(layers: Any, width: Any, *embeddings: Any, feed_forward: Any = None) -> None:
    """MemoryError, before a new model's weights are drawn, when they need more memory than is
    available: `layers` blocks of `width` with `feed_forward` units (default 4 × width), and
    tables of `embeddings` rows (tokens, positions). Each tensor is granted on its own, and
    writing them would end the process. Sizes that are not counts are left to the model to
    refuse."""
    if not all(map(is_count, (layers, width, *embeddings))) or not (feed_forward is None or is_count(feed_forward)):
        return
    feed_forward = 4 * width if feed_forward is None else feed_forward
    need = 4 * (layers * (4 * width + 2 * feed_forward) + sum(embeddings)) * width  # float32 weights
    available = _short_of(need)
    if available is not None:
        raise MemoryError(f"the model's weights need {_gb(need)}, but {_gb(available)} is available: make it smaller")


def check_generation_memory(config: dict, rows: int, reach: int = 0) -> None:
    """MemoryError, before anything is allocated, when generating `rows` rows at once with a
    GPT of `config` needs a key/value cache larger than the memory available. The allocator
    grants each layer's buffers on their own, and writing them would end the process. When a
    row may reach past the context (`reach`: its prompt and new tokens), counted with the cache
    of the last half context that decoding then recomputes."""
    context = config["n_positions"]
    positions = context + (max(context // 2 - 1, 0) if reach > context else 0)
    need = 2 * config["n_layer"] * rows * positions * config["n_embd"] * 4  # keys and values, float32
    available = _short_of(need)
    if available is not None:
        raise MemoryError(f"generating {rows} rows at once needs a key/value cache of {_gb(need)}, but {_gb(available)} "
                          "is available: generate fewer rows at a time")


def _short_of(need: int) -> Optional[int]:
    """The bytes available when `need` is more (None when it fits, or where the memory
    available is unknown), counted after the heap gives back freed blocks it keeps (the corpus
    preparation's, an earlier generation's cache)."""
    available = available_bytes()
    if available is not None and need > available:
        _core.release_memory()
        available = available_bytes()
    return available if available is not None and need > available else None


def _gb(n: int) -> str:
    return f"{n / 2**30:.2f} GB"
