"""An SSD tier of real files with a throttle that emulates a slower disk.

Every chunk of optimizer state is one plain binary file ``chunk_NNN.bin``: float32 values,
no header (the simplest layout; its length is known from the model). ``Disk.read`` and
``Disk.write`` really read and write those files (page cache or a real device), then sleep
until the *emulated* duration has passed:

    emulated seconds = latency_ms / 1000 + bytes / (bandwidth_mb_s * 1e6)

One lock makes the disk a single queue: a read and a write never overlap, as on one device
whose bandwidth is shared by both directions. ``bandwidth_mb_s=None`` turns the throttle off
(real NVMe at gpu scale): then only the real I/O time counts. Every transfer is logged in
``trace`` (op, chunk, start, end, bytes) for the cost model and the timelines.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class Transfer:
    op: str  # "read" | "write"
    chunk: int
    start: float  # perf_counter seconds
    end: float
    nbytes: int


@dataclass
class Disk:
    """A folder of chunk files behind one throttled queue. Use as a context manager (or call
    ``close``) to delete the folder."""

    root: Path
    bandwidth_mb_s: float | None = None  # None: no throttle (the real device's speed)
    latency_ms: float = 0.0
    trace: list[Transfer] = field(default_factory=list)
    _owned: bool = False

    def __post_init__(self) -> None:
        if self.bandwidth_mb_s is not None and self.bandwidth_mb_s <= 0:
            raise ValueError(f"bandwidth_mb_s: must be > 0 or None (no throttle), got {self.bandwidth_mb_s}")
        if self.latency_ms < 0:
            raise ValueError(f"latency_ms: must be >= 0, got {self.latency_ms}")
        self.root = Path(self.root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    @classmethod
    def temporary(cls, parent: str | Path | None = None, **kw) -> Disk:
        """A fresh folder under ``parent`` (default: the system temp dir), deleted by ``close``."""
        if parent is not None:
            Path(parent).mkdir(parents=True, exist_ok=True)
        disk = cls(Path(tempfile.mkdtemp(prefix="p37-ssd-", dir=parent)), **kw)
        disk._owned = True
        return disk

    def __enter__(self) -> Disk:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._owned and self.root.exists():
            shutil.rmtree(self.root)

    def path(self, chunk: int) -> Path:
        return self.root / f"chunk_{chunk:03d}.bin"

    def emulated_seconds(self, nbytes: int) -> float:
        """What one transfer of ``nbytes`` costs on the emulated disk (0 without a throttle)."""
        if self.bandwidth_mb_s is None:
            return 0.0
        return self.latency_ms / 1e3 + nbytes / (self.bandwidth_mb_s * 1e6)

    def create(self, chunk: int, values: np.ndarray) -> None:
        """Write the initial contents of a chunk (not throttled, not traced: set-up)."""
        np.ascontiguousarray(values, dtype=np.float32).tofile(self.path(chunk))

    def read(self, chunk: int, out: np.ndarray | None = None, n: int | None = None) -> np.ndarray:
        """The chunk's float32 values (into ``out`` when given)."""
        if out is None:
            out = np.empty(n if n is not None else self.path(chunk).stat().st_size // 4, dtype=np.float32)

        def io() -> None:
            with open(self.path(chunk), "rb", buffering=0) as f:
                got = f.readinto(memoryview(out).cast("B"))
            if got != out.nbytes:
                raise OSError(f"chunk {chunk}: read {got} of {out.nbytes} bytes from {self.path(chunk)}")

        self._transfer("read", chunk, out.nbytes, io)
        return out

    def write(self, chunk: int, values: np.ndarray) -> None:
        def io() -> None:
            with open(self.path(chunk), "r+b", buffering=0) as f:
                f.write(memoryview(values).cast("B"))

        self._transfer("write", chunk, values.nbytes, io)

    def _transfer(self, op: str, chunk: int, nbytes: int, io) -> None:
        with self._lock:  # one queue: transfers never overlap
            start = time.perf_counter()
            io()
            left = self.emulated_seconds(nbytes) - (time.perf_counter() - start)
            if left > 0:
                time.sleep(left)
            self.trace.append(Transfer(op, chunk, start, time.perf_counter(), nbytes))

    def files_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.root.glob("chunk_*.bin"))


def measure_real_rate(folder: str | Path, nbytes: int = 16 << 20, repeats: int = 3) -> float:
    """Bytes per second of an unthrottled read + write of one file in ``folder`` (the best of
    ``repeats``): what a transfer costs when the throttle asks for less than the real device."""
    with Disk.temporary(folder) as disk:
        data = np.ones(nbytes // 4, dtype=np.float32)
        disk.create(0, data)
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            disk.read(0, out=data)
            disk.write(0, data)
            best = min(best, time.perf_counter() - start)
    return 2 * nbytes / max(best, 1e-9)

