"""The packager's one error vocabulary.

Every failure the packager can report is a subclass of :class:`PackagerError`;
edge/ maps each class to an HTTP status in one place (edge/errors.py).

    PackagerError
    ├── MediaError            the file is not something we can package
    │   ├── TruncatedMedia    a box runs past the end of the data
    │   ├── MalformedMedia    a box is internally inconsistent
    │   └── UnsupportedMedia  valid MP4, but a codec/feature we do not package
    └── NotFound
        ├── NeedsFmp4         a rendition HLS delivers in fMP4 only, asked for over MPEG-TS
        │   ├── OpusNeedsFmp4
        │   └── PreRollNeedsFmp4
        ├── SampleAesUnsupported  a codec SAMPLE-AES does not cover here
        │   └── CbcsTooManySubsamples  a frame of more slices than cbcs describes here
        └── SegmentNotFound   a segment number outside the media
"""

from __future__ import annotations


class PackagerError(Exception):
    code = "packager_error"


class MediaError(PackagerError):
    code = "bad_media"


class TruncatedMedia(MediaError):
    code = "truncated_media"


class MalformedMedia(MediaError):
    code = "malformed_media"


class UnsupportedMedia(MediaError):
    code = "unsupported_media"


class NotFound(PackagerError):
    code = "not_found"


class NeedsFmp4(NotFound):
    """HEVC over MPEG-TS: Apple's HLS Authoring Specification requires fMP4 for HEVC, so /hls/ (TS)
    does not offer it; /cmaf/ does. A 404 naming the way out, not a variant players may choke on."""

    code = "hevc_needs_cmaf"


class OpusNeedsFmp4(NeedsFmp4):
    """Opus over MPEG-TS needs its own framing (a control header before each packet, a DVB extension
    descriptor in the PMT) that few HLS players read, and Apple's HLS carries Opus in fMP4 only: /hls/
    leaves Opus renditions out, /cmaf/ offers them."""

    code = "opus_needs_cmaf"


class PreRollNeedsFmp4(NeedsFmp4):
    """A track whose decoded-but-not-presented start (:attr:`~packager.media.Track.pre_roll`: a start trim
    of a file with long GOPs) is longer than MPEG-TS timestamps leave room for before the presented origin
    (:data:`~packager.ts.timing.TIMESTAMP_OFFSET_90K`): its first timestamps would wrap the 33-bit clock to
    ~26.5 h. fMP4 carries any pre-roll (the init segment's edit list): /hls/ refuses it, /cmaf/ offers it."""

    code = "pre_roll_needs_cmaf"


class SampleAesUnsupported(NotFound):
    """SAMPLE-AES covers H.264 video and AAC audio here (TS and fMP4/cbcs); another codec of a SAMPLE-AES partner."""

    code = "sample_aes_unsupported_codec"


class CbcsTooManySubsamples(SampleAesUnsupported):
    """A video frame whose slices need more cbcs subsamples than one saiz byte describes (42): refused rather
    than leaving slices clear."""

    code = "cbcs_too_many_slices"


class SegmentNotFound(NotFound):
    code = "segment_not_found"
