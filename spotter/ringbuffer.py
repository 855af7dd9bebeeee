"""Single-producer single-consumer float32 ring buffer between an audio callback and the spotter thread.

Positions are absolute sample counts since the start of the stream (`total_written`, `total_read`), so
the consumer always knows the stream time of what it reads, gaps from overruns included.

Locking: with overwrite-oldest semantics the producer may overwrite the very samples the consumer is
copying, so the two copies (np.copyto into/out of preallocated slices) and the index updates are done
under one lock. A copy is a memcpy of one block (a few microseconds for thousands of samples) and the
consumer never waits while holding the lock (Condition.wait releases it), so the audio callback can only
ever wait for one such short copy; it never allocates and never blocks on the consumer's speed.
"""
from __future__ import annotations

import threading

import numpy as np


class RingBuffer:
    """Preallocated float32 ring; the oldest samples are overwritten (and counted) when the consumer lags."""

    def __init__(self, capacity_samples: int):
        if capacity_samples <= 0:
            raise ValueError(f"capacity must be positive, got {capacity_samples}")
        self.capacity = int(capacity_samples)
        self._data = np.zeros(self.capacity, dtype=np.float32)
        self._cond = threading.Condition(threading.Lock())
        self._write_pos = 0         # absolute index of the next sample to write
        self._read_pos = 0          # absolute index of the next sample to read (skips lost samples)
        self._closed = False
        self.overrun_samples = 0    # samples overwritten before they were read
        self.overrun_events = 0     # writes that overwrote unread samples
        self.last_read_pos = 0      # absolute index of the first sample returned by the last read (consumer side)

    # --- producer ------------------------------------------------------------------------------------
    def write(self, block: np.ndarray) -> None:
        """Append samples (1-D float array, or a (n, 1) column); called from the audio callback, no allocation."""
        if block.ndim == 2:
            block = block[:, 0]
        n = block.shape[0]
        if n == 0:
            return
        cap = self.capacity
        with self._cond:
            if self._closed:
                return
            if n > cap:                     # only the newest `cap` samples can be kept
                skipped = n - cap
                block = block[skipped:]
                self._write_pos += skipped
                n = cap
            start = self._write_pos % cap
            first = min(n, cap - start)
            np.copyto(self._data[start:start + first], block[:first])
            if first < n:
                np.copyto(self._data[:n - first], block[first:])
            self._write_pos += n
            oldest = self._write_pos - cap
            if self._read_pos < oldest:
                self.overrun_samples += oldest - self._read_pos
                self.overrun_events += 1
                self._read_pos = oldest
            self._cond.notify()

    def close(self) -> None:
        """End the stream: wake readers; further writes are ignored, remaining samples can still be read."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    # --- consumer ------------------------------------------------------------------------------------
    def read_into(self, out: np.ndarray, timeout: float | None = None) -> int:
        """Fill `out` (1-D float32) with the next len(out) samples; return how many were copied.

        Blocks until len(out) samples are available. Returns 0 on timeout; after close() it returns the
        remaining samples (possibly fewer than len(out)) and then 0. `last_read_pos` gives their position.
        """
        n = out.shape[0]
        if n > self.capacity:
            raise ValueError(f"cannot read {n} samples at once from a ring of {self.capacity}")
        with self._cond:
            if not self._cond.wait_for(lambda: self._write_pos - self._read_pos >= n or self._closed, timeout):
                return 0
            n = min(n, self._write_pos - self._read_pos)
            if n <= 0:
                return 0
            cap = self.capacity
            start = self._read_pos % cap
            first = min(n, cap - start)
            np.copyto(out[:first], self._data[start:start + first])
            if first < n:
                np.copyto(out[first:n], self._data[:n - first])
            self.last_read_pos = self._read_pos
            self._read_pos += n
            return n

    def read(self, n: int, timeout: float | None = None) -> np.ndarray | None:
        """Next n samples (new array), None on timeout or when closed and drained (may be short after close)."""
        out = np.empty(n, dtype=np.float32)
        got = self.read_into(out, timeout)
        return out[:got] if got else None

    # --- state ---------------------------------------------------------------------------------------
    @property
    def total_written(self) -> int:
        """Samples ever written (stream position of the next write)."""
        return self._write_pos

    @property
    def total_read(self) -> int:
        """Stream position of the next sample to read: samples read plus samples lost to overruns."""
        return self._read_pos

    @property
    def available(self) -> int:
        with self._cond:
            return self._write_pos - self._read_pos

    @property
    def closed(self) -> bool:
        return self._closed
