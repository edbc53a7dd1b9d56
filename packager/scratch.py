"""A buffer per thread for the muxers' full-size intermediates.

Muxing and encryption run in a thread pool, one segment at a time per thread. A fresh multi-MB buffer costs a
page fault per 4 KiB on its first write (the allocator hands big blocks back to the kernel when they are freed),
which measured more than the copies into it; a buffer the thread keeps from segment to segment faults once.
So intermediates go into :func:`scratch`, and only the returned ``bytes`` is a fresh allocation.
"""

from __future__ import annotations

import threading

import numpy as np

# Buffers above this size are used once and not kept, so a thread holds at most this much between segments
# (idle pool threads exit, and their buffer with them).
SCRATCH_KEEP_BYTES = 32 << 20
_local = threading.local()


def scratch(size: int) -> np.ndarray:
    """A uint8 buffer of at least ``size`` bytes, owned by the calling thread and reused by its next call:
    contents undefined, valid until this thread calls again (so copy out what is returned)."""
    buffer = getattr(_local, "buffer", None)
    if buffer is not None and buffer.shape[0] >= size:
        return buffer
    buffer = np.empty(size, dtype=np.uint8)
    if size <= SCRATCH_KEEP_BYTES:
        _local.buffer = buffer
    return buffer
