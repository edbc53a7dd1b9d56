"""Fragmented MP4 (CMAF-style) muxer for HLS: one track per init and media segment.

    init_segment(track) -> bytes            ftyp + moov (the EXT-X-MAP)
    media_segment(batch) -> bytes           styp + moof + mdat (a .m4s)
    media_segment_size(track, sizes) -> int len(media_segment(...)) from the sample sizes alone
                                            (or, given a sample count, without the sample bytes)
"""

from .fragment import media_segment, media_segment_size
from .init import init_segment

__all__ = ["init_segment", "media_segment", "media_segment_size"]
