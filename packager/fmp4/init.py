"""The fMP4 init segment (HLS ``EXT-X-MAP``): ftyp + moov for one track.

The moov has no samples (empty stts/stsc/stsz/stco, zero durations) and an
mvex/trex announcing fragments. The track's sample entry (avc1/hvc1/mp4a with
its avcC/hvcC/esds...) is copied verbatim from the source file.

The edit list. Media segments carry presentation times plus the track's
``pre_roll`` (see :mod:`packager.fmp4.fragment`); when that is not 0 the init
carries one edit whose media_time takes it off again -- what the source's own
edit list did -- so players that honour edit lists (ffmpeg, AVPlayer,
ExoPlayer) present the source's frames from the source's first presented one.
A track without pre-roll (no start trim, no priming) gets no edit list.
"""

from __future__ import annotations

import struct

from packager.errors import MalformedMedia
from packager.media import Track

from .cbcs import CbcsKey

from . import cbcs
from .boxes import (
    ChunkOffsetBox,
    DataEntryUrlBox,
    DataInformationBox,
    DataReferenceBox,
    EditBox,
    EditListBox,
    FileTypeBox,
    HandlerBox,
    MediaBox,
    MediaHeaderBox,
    MediaInformationBox,
    MovieBox,
    MovieExtendsBox,
    MovieHeaderBox,
    SampleDescriptionBox,
    SampleSizeBox,
    SampleTableBox,
    SampleToChunkBox,
    SoundMediaHeaderBox,
    TimeToSampleBox,
    TrackBox,
    TrackExtendsBox,
    TrackHeaderBox,
    U32_MAX,
    VideoMediaHeaderBox,
)

MOVIE_TIMESCALE = 1000  # mvhd's clock; nothing is timed in it (durations are 0)

#: ftyp of init segments: ISO BMFF 6 (tfdt v1, trun v1 signed offsets), CMAF structure.
INIT_FILE_TYPE = FileTypeBox(
    major_brand=b"iso6",
    minor_version=0,
    compatible_brands=(b"iso6", b"cmfc", b"mp41"),
)


def _check_sample_entry(track: Track) -> bytes:
    entry = bytes(track.sample_entry)
    if len(entry) < 8:
        raise MalformedMedia(f"track {track.track_id}: sample entry of {len(entry)} bytes")
    size, fourcc = struct.unpack_from(">I4s", entry)
    if size != len(entry):
        raise MalformedMedia(
            f"track {track.track_id}: sample entry {fourcc!r} says {size} bytes, has {len(entry)}"
        )
    return entry


def init_boxes(track: Track, key: CbcsKey | None = None) -> tuple[FileTypeBox, MovieBox]:
    """The init segment as boxes (ftyp, moov): :func:`init_segment` serialises them. With ``key`` the track is
    declared 'cbcs'-encrypted under it (packager/fmp4/cbcs.py): encv/enca + sinf, and a common pssh."""
    if not 1 <= track.track_id < U32_MAX:
        raise MalformedMedia(f"track_ID {track.track_id} out of range")
    if track.timescale <= 0:
        raise MalformedMedia(f"track {track.track_id}: timescale {track.timescale}")
    entry = _check_sample_entry(track) if key is None else cbcs.protected_sample_entry(track, key)

    sample_table = SampleTableBox(
        (
            SampleDescriptionBox((entry,)),
            TimeToSampleBox(),
            SampleToChunkBox(),
            SampleSizeBox(),
            ChunkOffsetBox(),
        )
    )
    header, media = track_header_and_media(track, sample_table)
    edits = edit_list(track)
    movie = MovieBox(
        (
            MovieHeaderBox(MOVIE_TIMESCALE, next_track_id=track.track_id + 1),
            TrackBox((header, EditBox((edits,)), media) if edits else (header, media)),
            MovieExtendsBox((TrackExtendsBox(track.track_id),)),
            *((cbcs.ProtectionSystemHeaderBox((key.kid,)),) if key is not None else ()),
        )
    )
    return INIT_FILE_TYPE, movie


def edit_list(track: Track) -> EditListBox | None:
    """The init's elst: one edit starting at the track's pre-roll, or None without one.

    Its segment_duration is 0: a fragmented track's length is not known from the
    init (ISO/IEC 14496-12 8.6.6: the edit then runs to the end of the media), as
    ffmpeg's fragmenting muxer writes it.
    """
    return EditListBox(((0, track.pre_roll),)) if track.pre_roll else None


def track_header_and_media(
    track: Track, sample_table: SampleTableBox, *, duration: int = 0, media_duration: int = 0,
    enabled: bool = True, alternate_group: int = 0,
) -> tuple[TrackHeaderBox, MediaBox]:
    """tkhd and mdia (mdhd, hdlr, minf with vmhd/smhd, dinf, the given stbl) of a video or audio track.

    Shared by the init segment (durations 0: fragmented) and the clipped progressive MP4 (packager.mp4.writer).
    """
    if track.kind == "video":
        width, height = (track.video.width, track.video.height) if track.video else (0, 0)
        header = TrackHeaderBox(track.track_id, width=width, height=height, duration=duration, enabled=enabled,
                                alternate_group=alternate_group)
        handler = HandlerBox(HandlerBox.VIDEO, "VideoHandler")
        media_header: VideoMediaHeaderBox | SoundMediaHeaderBox = VideoMediaHeaderBox()
    else:
        header = TrackHeaderBox(track.track_id, volume=0x0100, duration=duration, enabled=enabled,
                                alternate_group=alternate_group)
        handler = HandlerBox(HandlerBox.SOUND, "SoundHandler")
        media_header = SoundMediaHeaderBox()
    media = MediaBox(
        (
            MediaHeaderBox(track.timescale, track.language, duration=media_duration),
            handler,
            MediaInformationBox(
                (
                    media_header,
                    DataInformationBox((DataReferenceBox((DataEntryUrlBox(),)),)),
                    sample_table,
                )
            ),
        )
    )
    return header, media


def init_segment(track: Track, key: CbcsKey | None = None) -> bytes:
    """ftyp + moov for ``track`` alone: the bytes behind an HLS EXT-X-MAP URI (``key``: see init_boxes)."""
    return b"".join(chunk for box in init_boxes(track, key) for chunk in box.chunks())
