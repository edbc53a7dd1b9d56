"""A partner's content protection applied to one entry's (or clip's) HLS resources: which key each segment is
under, what its URLs are marked with, and which cipher makes its bytes (docs/CONTENT_PROTECTION.md).

Keys come from a KeySet (auth/content_keys: derived from master secrets, or imported, edge/key_store.py); the ciphers are the packager's: whole-segment
AES-128 (packager/encryption.py), SAMPLE-AES over TS (packager/ts/sample_aes.py) and 'cbcs' over fMP4
(packager/fmp4/cbcs.py). Nothing here knows HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from auth.content_keys import AES_128, SAMPLE_AES, KeySet, Protection, period_of
from packager.encryption import encrypt_segment, encrypted_size, sequence_iv
from packager.fmp4 import init_segment, media_segment
from packager.fmp4 import cbcs
from packager.formats import SegmentFormat
from packager.errors import SampleAesUnsupported
from packager.media import SampleBatch, Segment, Track
from packager.media_set import MediaSet
from packager.ts import mux_segment as ts_mux
from packager.ts import sample_aes


CBCS_IV = 1  # the constant IV of every cbcs key (Keying.explicit_iv)


@dataclass(frozen=True)
class Keying:
    """``protection`` with the ``keys`` of one entry or clip (edge/key_store.ContentKeys.keys_for)."""

    protection: Protection
    keys: KeySet

    @property
    def encrypts(self) -> bool:
        return self.protection.encrypts

    @property
    def method(self) -> str:
        return self.protection.method

    @property
    def marker(self) -> str | None:
        """The -k marker of segment and init URLs (auth/content_keys.Protection.marker); None when clear."""
        return self.protection.marker(self.keys)

    def period(self, segment_number: int) -> int:
        return period_of(segment_number, self.protection.rotation_segments)

    @property
    def tag(self) -> str | None:
        """What the bytes of protected resources depend on (auth/content_keys.Protection.tag); None when clear."""
        return self.protection.tag(self.keys) if self.encrypts else None

    def kid(self, segment_number: int) -> str:
        return self.keys.kid(self.period(segment_number))

    def key(self, segment_number: int) -> bytes:
        return self.keys.key(self.period(segment_number))

    def explicit_iv(self, segment_number: int, fmt: SegmentFormat) -> int | None:
        """The EXT-X-KEY IV of SAMPLE-AES; AES-128 writes none (the IV is the media sequence number).

        Over TS: the media sequence number of the first segment of the key's period, one IV per key. Players
        that decrypt after demuxing (ffmpeg) decrypt a segment's last access units once they read the next
        segment: with an IV per segment those would fail wherever the IV changes; so only where the key does.
        Over fMP4 (cbcs): 1 for every key. The IV is also in the init's tenc and each fragment's seig, and
        readers that take it from tenc alone (ffmpeg) then decrypt every period right (an IV is reused only
        under different keys, which is harmless)."""
        if self.method != SAMPLE_AES:
            return None
        if fmt.has_init:
            return CBCS_IV
        return self.period(segment_number) * self.protection.rotation_segments + 1

    def check_track(self, track: Track, fmt: SegmentFormat) -> None:
        """SampleAesUnsupported (404) for a codec SAMPLE-AES does not cover here, per format."""
        if self.method == SAMPLE_AES:
            (cbcs.check_track if fmt.has_init else sample_aes.check_track)(track)

    def playable(self, media_set: MediaSet, fmt: SegmentFormat) -> MediaSet:
        """``media_set`` without the renditions :meth:`check_track` refuses, so a master lists only what plays;
        SampleAesUnsupported when that leaves no video of an entry that has video (or no audio of audio only)."""
        if self.method != SAMPLE_AES:
            return media_set
        videos = tuple(v for v in media_set.videos if self._covers(v.track, fmt))
        audios = tuple(a for a in media_set.audios if self._covers(a.track, fmt))
        if media_set.videos and not videos:
            self.check_track(media_set.videos[0].track, fmt)
        if not media_set.videos and media_set.audios and not audios:
            self.check_track(media_set.audios[0].track, fmt)
        return replace(media_set, videos=videos, audios=audios)

    def _covers(self, track: Track, fmt: SegmentFormat) -> bool:
        try:
            self.check_track(track, fmt)
        except SampleAesUnsupported:
            return False
        return True

    def init(self, track: Track) -> bytes:
        """The fMP4 init: clear under AES-128 (RFC 8216 4.3.2.4: the key applies to segments after EXT-X-MAP);
        under SAMPLE-AES (cbcs) it declares the encryption, with the first key's KID and IV."""
        return init_segment(track, self._cbcs_key(1) if self.method == SAMPLE_AES else None)

    def segment(self, fmt: SegmentFormat, batch: SampleBatch, number: int) -> bytes:
        """Segment ``number``'s bytes from its samples: muxed, then encrypted as the method says."""
        if self.method == SAMPLE_AES and fmt.has_init:
            return media_segment(batch, self._cbcs_key(number))
        if self.method == SAMPLE_AES:
            iv = sequence_iv(self.explicit_iv(number, fmt))  # type: ignore[arg-type]
            return ts_mux(batch, encryptor=sample_aes.SampleEncryptor(self.key(number), iv))
        if self.method == AES_128:  # the IV is the media sequence number, which is the segment number
            return encrypt_segment(fmt.mux(batch), self.key(number), number)
        return fmt.mux(batch)

    def known_size(self, fmt: SegmentFormat, track: Track, segment: Segment) -> int | None:
        """A segment's size without packaging it, or None where it depends on the bytes: SAMPLE-AES TS video
        (emulation prevention of the ciphertext), cbcs video (senc lists each slice)."""
        if self.method == SAMPLE_AES and (track.kind == "video" or fmt.has_init):
            return None
        size = fmt.segment_size(track, segment)
        return encrypted_size(size) if self.method == AES_128 else size

    def _cbcs_key(self, segment_number: int) -> cbcs.CbcsKey:
        kid = self.keys.cenc_kid(self.period(segment_number))
        return cbcs.CbcsKey(self.key(segment_number), kid, sequence_iv(CBCS_IV))
