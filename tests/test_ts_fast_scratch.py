"""The muxers' per-thread scratch buffer (packager/scratch.py) as the TS muxer and AES-128 use it.

mux_segment lays the PES bytes out and builds the packets in a buffer each
thread keeps from segment to segment, so only the returned bytes are freshly
allocated. What must hold: a segment's bytes never depend on what the thread
muxed before (a larger segment's leftovers in the buffer, a smaller one that
grew it), threads never see each other's buffer, the returned bytes do not
alias it, and segments above SCRATCH_KEEP_BYTES are muxed but not kept.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from packager import scratch
from packager.encryption import encrypt_segment
from packager.ts import mux_segment
from test_ts_muxer import audio_batch, audio_track, demux, video_batch, video_track


def _video(n: int, size: int, seed: int):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(size // 2, size, n).tolist()
    keys = [i % 25 == 0 for i in range(n)]
    batch, expected = video_batch(video_track(n=n), sizes, keys, np.arange(n) * 512)
    return batch, expected


def _fresh(batch, *args, **kw) -> bytes:
    """``mux_segment`` in a thread of its own, so with a scratch buffer no other segment touched."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(mux_segment, batch, *args, **kw).result()


def test_segment_does_not_depend_on_previous_segments_of_the_thread():
    big, _ = _video(120, 40_000, 1)
    small, expected = _video(9, 3_000, 2)
    audio = audio_batch(audio_track(), [300 + (i * 37) % 400 for i in range(200)])
    alone = {name: _fresh(b) for name, b in (("big", big), ("small", small), ("audio", audio))}
    # small after big: the buffer holds the big segment's bytes past the small one's end
    for order in (("big", "small", "audio"), ("small", "audio", "big", "small"), ("audio", "big", "audio")):
        batches = {"big": big, "small": small, "audio": audio}
        assert [mux_segment(batches[name]) for name in order] == [alone[name] for name in order]
    assert [p.payload for p in demux(alone["small"])] == expected


def test_returned_bytes_do_not_alias_the_scratch():
    first, _ = _video(30, 20_000, 3)
    second, _ = _video(30, 20_000, 4)
    out = mux_segment(first)
    kept = bytes(out)
    mux_segment(second)  # rewrites the thread's buffer
    assert isinstance(out, bytes) and out == kept


def test_threads_mux_concurrently_like_one_at_a_time():
    batches = [_video(20 + 7 * i, 5_000 + 3_000 * i, 10 + i)[0] for i in range(8)]
    batches += [audio_batch(audio_track(), [200 + 50 * i] * (40 + 30 * i)) for i in range(4)]
    expected = [mux_segment(b, 5) for b in batches]
    start = threading.Barrier(4)

    def worker(offset: int) -> list[bytes]:
        start.wait()
        order = batches[offset:] + batches[:offset]
        return [mux_segment(b, 5) for b in order * 3]

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(worker, range(4)))
    for offset, got in enumerate(results):
        assert got == (expected[offset:] + expected[:offset]) * 3


def test_segments_above_the_keep_limit_are_muxed_but_not_kept(monkeypatch: pytest.MonkeyPatch):
    batch, expected = _video(40, 10_000, 5)
    reference = _fresh(batch)

    def in_new_thread() -> tuple[bytes, object]:
        out = mux_segment(batch)
        return out, getattr(scratch._local, "buffer", None)

    monkeypatch.setattr(scratch, "SCRATCH_KEEP_BYTES", 1 << 16)  # far below this segment's scratch
    with ThreadPoolExecutor(1) as pool:
        out, kept = pool.submit(in_new_thread).result()
    assert out == reference and kept is None
    assert [p.payload for p in demux(out)] == expected


def test_aes_128_output_is_independent_of_the_scratch_and_decrypts():
    """encrypt_segment writes into the same scratch the muxer used a moment before: its output is the
    segment's own, whatever the buffer held, and does not alias it."""
    from cryptography.hazmat.primitives import padding
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    key = bytes(range(16))
    big, _ = _video(60, 20_000, 7)
    segment = mux_segment(big)
    for body in (segment, segment[:1000], b"", segment[:4096]):  # shorter after longer: leftovers in the buffer
        encrypted = encrypt_segment(body, key, 3)
        mux_segment(big)  # the thread's next use overwrites the scratch
        decryptor = Cipher(algorithms.AES(key), modes.CBC((3).to_bytes(16, "big"))).decryptor()
        unpadder = padding.PKCS7(128).unpadder()
        clear = decryptor.update(encrypted) + decryptor.finalize()
        assert unpadder.update(clear) + unpadder.finalize() == body
