"""Whether a training run fits in memory, checked before it starts. Past that, the kernel's
out-of-memory killer ends the process part-way through its first step, with no message (or
the machine swaps to a standstill)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from ferrolm import _core

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
    its out-of-memory killer acts: its limit less what it uses, its page cache that can be
    dropped not counted as used; the tightest of its own and its ancestors' limits (cgroup v2),
    or the hierarchical one (v1). None without a limit, or where the files cannot be read.
    `root` is where /proc and /sys are (tests give a tree of their own)."""
    try:
        lines = (root / "proc/self/cgroup").read_text(encoding="ascii").splitlines()
    except OSError:
        return None
    rooms = []
    for line in lines:
        hierarchy, controllers, path = line.split(":", 2)
        try:
            if hierarchy == "0" and not controllers:  # v2: a limit at each level of the path
                for d in _cgroup_directories(root / "sys/fs/cgroup", path):
                    if (d / "memory.max").exists():
                        stat = _stat(d)
                        rooms.append(_room((d / "memory.max").read_text(), (d / "memory.current").read_text(),
                                           stat.get("inactive_file", "0")))
            elif "memory" in controllers.split(","):  # v1: memory.stat has the hierarchy's limit
                d = _cgroup_directories(root / "sys/fs/cgroup/memory", path)[-1]
                stat = _stat(d)
                rooms.append(_room(stat.get("hierarchical_memory_limit", "max"), (d / "memory.usage_in_bytes").read_text(),
                                   stat.get("total_inactive_file", "0")))
        except (OSError, ValueError):
            continue
    rooms = [r for r in rooms if r is not None]
    return min(rooms) if rooms else None


def _cgroup_directories(mount: Path, path: str) -> list[Path]:
    """The cgroup directories from the mount down to `path`'s, those that exist (inside a
    container, the mount is the container's own cgroup and the host's path is not there)."""
    directories = [mount]
    for part in Path(path.strip()).parts[1:]:
        directories.append(directories[-1] / part)
    return [d for d in directories if d.is_dir()] or [mount]


def _stat(directory: Path) -> dict[str, str]:
    return dict(line.split(maxsplit=1) for line in (directory / "memory.stat").read_text().splitlines() if line.strip())


def _room(limit: str, usage: str, reclaimable: str) -> Optional[int]:
    """`limit` less `usage` that is not `reclaimable` page cache; None for no limit ("max", or
    v1's huge number)."""
    if limit.strip() == "max" or int(limit) >= 1 << 62:
        return None
    return max(0, int(limit) - (int(usage) - int(reclaimable)))


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
    the machine has available."""
    _core.release_memory()  # freed blocks the heap keeps (say, the corpus' preparation's) count as available
    available = available_bytes()
    if available is None:
        return
    need, parts = training_bytes(model, objective, trainable)
    if need > available:
        raise MemoryError(f"training needs at least {_gb(need)} more memory ({parts}), but {_gb(available)} is "
                          "available: use a smaller --batch-size (--grad-accum keeps the batch's effective size), "
                          "--block-size or model, or free memory")


def _gb(n: int) -> str:
    return f"{n / 2**30:.2f} GB"
