"""DASH: a static MPD over the fMP4 segments the HLS /cmaf/ URLs serve (no second muxer).

    build_mpd(media_set, uris) -> str            the MPD, every URL ending in QUERY_SLOT
    with_viewer_query(mpd, query) -> str         fill the slots for one viewer (or empty them)
"""

from .mpd import QUERY_SLOT, DashText, DashUris, build_mpd, with_viewer_query

__all__ = ["QUERY_SLOT", "DashText", "DashUris", "build_mpd", "with_viewer_query"]
