"""MP4 index: locate the moov box, parse it into a MediaIndex.

The parser never reads: :func:`index_reader` is a generator that yields the
byte ranges it needs and receives their bytes (nginx-vod-module's
"read_offset/read_size" protocol). origin/ drives it with async or sync reads
(see :func:`drive`), so one parser serves both without twin code paths.

Only the boxes we need are parsed (nginx-vod-module ``relevant_atoms_*``):
everything else, mdat included, is skipped by its header.
"""

from __future__ import annotations

import struct
from typing import Callable, Generator

import numpy as np

from ..errors import MalformedMedia, TruncatedMedia, UnsupportedMedia
from ..fmp4.boxes import U32_MAX
from ..media import ByteRange, MediaIndex, SkippedTrack, Track, TrackKind
from . import sample_table as st
from .boxes import BoxBudget, BoxHeader, children, fourcc, iter_boxes, parse_header, payload, printable
from .sample_entry import parse_sample_entry

HEAD_READ = 64 * 1024  # first read: usually ftyp + moov of a faststart file
TOP_LEVEL_TYPES = {"ftyp", "moov", "mdat", "free", "skip", "wide", "uuid", "pdin", "meta", "moof", "mfra", "styp", "sidx"}
HANDLERS: dict[str, TrackKind] = {"vide": "video", "soun": "audio"}
# Bounded work per index, whatever the file holds. Real files put a handful of boxes before moov
# (ftyp, free, mdat, uuid); each one past the first read costs a read of its header, so a file of
# millions of 8-byte boxes would hold a request for minutes.
MAX_BOXES_BEFORE_MOOV = 1024
# Every box header read inside moov, across all its walks (a track costs a few dozen).
MAX_BOXES_IN_MOOV = 10_000
# Left-out tracks an error names (a moov may hold hundreds): the error is logged and answered to every request.
SKIPPED_NAMED = 5

IndexReader = Generator[ByteRange, bytes, MediaIndex]


def index_reader(file_size: int) -> IndexReader:
    """Yield the byte ranges needed to index a file of ``file_size`` bytes; return its MediaIndex."""
    if file_size < 8:
        raise MalformedMedia(f"not an MP4 file: only {file_size} bytes")
    head = yield ByteRange(0, min(file_size, HEAD_READ))
    first_type = fourcc(bytes(head[4:8]))
    if first_type not in TOP_LEVEL_TYPES:
        raise MalformedMedia(f"not an MP4 file: it starts with '{printable(first_type)}', not an MP4 box")
    brand = "isom"
    offset = 0
    passed = 0  # boxes walked past while looking for moov
    while offset < file_size:
        if offset + 16 <= len(head):
            window, window_base = head, 0
        else:
            window_base = offset
            window = yield ByteRange(offset, min(16, file_size - offset))
        box = parse_header(window, offset - window_base, window_base, file_size)
        if box.type != "moov" and passed == MAX_BOXES_BEFORE_MOOV:
            raise MalformedMedia(
                f"more than {MAX_BOXES_BEFORE_MOOV} boxes before 'moov' (the next at offset {offset}): not walking them all"
            )
        passed += 1
        if box.type == "ftyp":
            brand = _major_brand(head, box)
        elif box.type == "moov":
            moov = head if box.end <= len(head) else (yield ByteRange(box.offset, box.size))
            base = 0 if moov is head else box.offset
            try:
                return parse_moov(moov, box, base, brand, file_size)
            except (struct.error, IndexError, ValueError, OverflowError) as exc:
                # a field read past a box's end or a nonsensical value that the
                # per-box checks did not name: still a clear media error
                raise MalformedMedia(f"'moov' box at offset {box.offset} is malformed: {exc}") from None
        elif box.type == "moof":
            raise UnsupportedMedia("fragmented MP4 (moof) input is not supported; remux it with faststart")
        offset = box.end
    raise MalformedMedia("no 'moov' box: this file has no index (was the upload cut short?)")


def drive(reader: IndexReader, read: Callable[[int, int], bytes]) -> MediaIndex:
    """Run an index reader with a synchronous ``read(offset, size)``."""
    try:
        request = next(reader)
        while True:
            request = reader.send(read(request.offset, request.size))
    except StopIteration as done:
        return done.value


def _major_brand(head: bytes, box: BoxHeader) -> str:
    if box.end > len(head) or box.size < box.header_size + 4:
        return "isom"
    return fourcc(head[box.payload_offset : box.payload_offset + 4])


def parse_moov(buf: bytes, moov: BoxHeader, base: int, brand: str, file_size: int) -> MediaIndex:
    budget = BoxBudget(MAX_BOXES_IN_MOOV, f"the 'moov' box at offset {moov.offset}")
    boxes = children(buf, moov, base=base, budget=budget)
    mvhd = boxes.get("mvhd")
    if mvhd is None:
        raise MalformedMedia("'moov' has no 'mvhd' box")
    movie_timescale = _timescale(payload(buf, mvhd, base), "mvhd")
    tracks: list[Track] = []
    skipped: list[SkippedTrack] = []
    for trak in iter_boxes(buf, moov.payload_offset - base, moov.end - base, base, budget):
        if trak.type == "trak":
            track = _parse_trak(buf, trak, base, movie_timescale, file_size, budget)
            if isinstance(track, SkippedTrack):
                skipped.append(track)
            elif track is not None:
                tracks.append(track)
    if not tracks:
        if skipped:  # nothing left to play: the file fails with what was left out (the first few: errors are logged and answered)
            more = f"; and {len(skipped) - SKIPPED_NAMED} more tracks" if len(skipped) > SKIPPED_NAMED else ""
            raise UnsupportedMedia("; ".join(s.describe() for s in skipped[:SKIPPED_NAMED]) + more)
        raise UnsupportedMedia("no video or audio track")
    return MediaIndex(tuple(tracks), movie_timescale, brand, moov.offset, moov.size, file_size, tuple(skipped))


def _timescale(body: memoryview, name: str) -> int:
    """mvhd/mdhd: version 0 has 32-bit times, version 1 64-bit; timescale follows creation/modification."""
    if len(body) < 4:
        raise TruncatedMedia(f"'{name}' box is cut short")
    at = 20 if body[0] == 1 else 12
    if len(body) < at + 4:
        raise TruncatedMedia(f"'{name}' box is cut short")
    (timescale,) = struct.unpack_from(">I", body, at)
    if timescale == 0:
        raise MalformedMedia(f"'{name}' timescale is 0")
    return timescale


def _language(mdhd: memoryview) -> str:
    at = 32 if mdhd[0] == 1 else 20
    if len(mdhd) < at + 2:
        return "und"
    (packed,) = struct.unpack_from(">H", mdhd, at)
    # ISO 639-2/T packed as three 5-bit letters offset by 0x60.
    letters = "".join(chr(((packed >> shift) & 0x1F) + 0x60) for shift in (10, 5, 0))
    return letters if letters.isalpha() else "und"


def _require(boxes: dict[str, BoxHeader], name: str, where: str) -> BoxHeader:
    if name not in boxes:
        raise MalformedMedia(f"'{where}' has no '{name}' box")
    return boxes[name]


def _parse_trak(
    buf: bytes, trak: BoxHeader, base: int, movie_timescale: int, file_size: int, budget: BoxBudget
) -> Track | SkippedTrack | None:
    """The track, None for a kind we do not package (subtitles...), or a SkippedTrack for an audio track
    whose codec we cannot package: one such track must not make the video and the other audio unplayable.
    A video codec we cannot package still fails the file (there is no picture to offer without it)."""
    trak_boxes = children(buf, trak, base=base, budget=budget)
    tkhd = payload(buf, _require(trak_boxes, "tkhd", "trak"), base)
    track_id = struct.unpack_from(">I", tkhd, 20 if tkhd[0] == 1 else 12)[0]
    mdia = children(buf, _require(trak_boxes, "mdia", "trak"), base=base, budget=budget)
    hdlr = payload(buf, _require(mdia, "hdlr", "mdia"), base)
    kind = HANDLERS.get(fourcc(bytes(hdlr[8:12])))
    if kind is None:  # subtitles, timecode, hint tracks: not ours to package
        return None
    mdhd = payload(buf, _require(mdia, "mdhd", "mdia"), base)
    timescale = _timescale(mdhd, "mdhd")
    minf = children(buf, _require(mdia, "minf", "mdia"), base=base, budget=budget)
    stbl_box = _require(minf, "stbl", "minf")
    stbl = children(buf, stbl_box, base=base, budget=budget)
    stsd_box = _require(stbl, "stsd", "stbl")
    stsd = payload(buf, stsd_box, base)
    try:
        description = parse_sample_entry(stsd, stsd_box.payload_offset, budget)
    except UnsupportedMedia as exc:
        if kind != "audio":
            raise
        return SkippedTrack(track_id, kind, _entry_type(stsd), str(exc))

    def body(name: str) -> memoryview | None:
        return payload(buf, stbl[name], base) if name in stbl else None

    sizes = st.sample_sizes(body("stsz"), body("stz2"), file_size)
    count = sizes.shape[0]
    durations = st.decode_durations(payload(buf, _require(stbl, "stts", "stbl"), base), count)
    offsets = st.sample_offsets(payload(buf, _require(stbl, "stsc", "stbl"), base), st.chunk_offsets(body("stco"), body("co64")), sizes)
    if count and int((offsets + sizes).max()) > file_size:
        raise TruncatedMedia(
            f"track {track_id}: samples reach offset {int((offsets + sizes).max())} but the file ends at {file_size}"
        )
    dts = st.decode_times(durations)
    cts_offsets = st.composition_offsets(body("ctts"), count)
    shift, edit_end = _edit_list(buf, trak_boxes.get("edts"), base, movie_timescale, timescale, budget, int(durations.sum()))
    _check_start(track_id, shift, dts, cts_offsets, durations, timescale)
    if edit_end is not None and count and edit_end > shift + int((dts + cts_offsets + durations).max()):
        edit_end = None  # an edit running on past the media's end ends nothing (and may not fit int64: u64 at timescale 1)
    return Track(
        track_id=track_id,
        kind=kind,
        fourcc=description.fourcc,
        codec_string=description.codec_string,
        timescale=timescale,
        language=_language(mdhd),
        sample_entry=description.raw,
        video=description.video,
        audio=description.audio,
        dts=dts,
        cts_offsets=cts_offsets,
        durations=durations,
        sizes=sizes,
        offsets=offsets,
        keyframes=st.sync_samples(body("stss"), count),
        presentation_shift=shift,
        edit_end=edit_end,
    )


def _entry_type(stsd: memoryview) -> str:
    """The first sample entry's type, for messages (printable: it comes from the file)."""
    return printable(fourcc(bytes(stsd[12:16]))) if len(stsd) >= 16 else "?"


def _check_start(
    track_id: int, shift: int, dts: np.ndarray, cts_offsets: np.ndarray, durations: np.ndarray, timescale: int
) -> None:
    """Refuse a track whose first frame presents so late (a leading empty edit of days) that it cannot be held.

    HLS segments present a late track's first frame from 0 and lengthen its duration by the delay
    (:attr:`Track.late_start`, :func:`packager.samples.make_batch`), and an fMP4 sample duration is 32 bits.
    Checked in Python ints before the shift meets numpy: a 64-bit empty edit would overflow int64.
    """
    if dts.size == 0:
        return
    start = shift + int((dts + cts_offsets).min())  # the first presentation: Track.late_start when > 0
    if start + int(durations[0]) > U32_MAX:  # the first frame's lengthened duration
        raise UnsupportedMedia(
            f"track {track_id}: its edit list delays it by {start / timescale:.0f} s: its first frame, held from 0, "
            f"would last more than a 32-bit sample duration holds ({U32_MAX} at timescale {timescale})"
        )


def _edit_list(
    buf: bytes, edts: BoxHeader | None, base: int, movie_ts: int, track_ts: int, budget: BoxBudget | None = None,
    media_duration: int | None = None,
) -> tuple[int, int | None]:
    """(presentation shift, presentation end) in track timescale from edts/elst.

    Leading empty edits (media_time -1) delay the track; the first media edit's
    media_time trims its start and its duration bounds its end. Later edits
    (rare outside editing tools) are ignored: the track plays to its end.
    A media_time below -1, or at or past the end of the media (``media_duration``,
    the sum of its sample durations), is refused: nothing of the track would be
    presented, and its playlists would list frames at negative times.
    """
    if edts is None:
        return 0, None
    elst_box = children(buf, edts, base=base, budget=budget).get("elst")
    if elst_box is None:
        return 0, None
    elst = payload(buf, elst_box, base)
    version = elst[0]
    row = np.dtype([("duration", ">u8"), ("time", ">i8"), ("rate", ">i4")] if version == 1 else [("duration", ">u4"), ("time", ">i4"), ("rate", ">i4")])
    if len(elst) < 8:
        raise TruncatedMedia("'elst' box is cut short")
    (count,) = struct.unpack_from(">I", elst, 4)
    if 8 + count * row.itemsize > len(elst):
        raise TruncatedMedia(f"'elst' box holds {count} entries but is cut short")
    entries = np.frombuffer(elst, dtype=row, count=count, offset=8)
    # the leading empty edits in one pass (a file may hold a million: a row at a time took seconds, on the event loop)
    media_edits = np.flatnonzero(entries["time"] != -1)
    first = int(media_edits[0]) if media_edits.size else count
    delay = sum(duration * track_ts // movie_ts for duration in entries["duration"][:first].tolist())
    if first == count:
        return delay, None
    duration = int(entries["duration"][first]) * track_ts // movie_ts
    media_time = int(entries["time"][first])
    if media_time < -1:
        raise MalformedMedia(f"'elst' media_time {media_time} is neither -1 (an empty edit) nor a media time")
    if media_duration and media_time >= media_duration:
        raise MalformedMedia(
            f"'elst' starts the track at media time {media_time}, past the end of its media ({media_duration}): "
            "nothing of it would be presented"
        )
    end = delay + duration if duration else None
    return delay - media_time, end
