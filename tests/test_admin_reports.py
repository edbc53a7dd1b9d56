"""Analytics reports under /admin: authenticated per partner, and only that partner's plays."""

from __future__ import annotations

import time

import httpx
import pytest

from conftest import serving

ADMIN = {"Authorization": "Bearer reports-admin-secret-01"}


@pytest.fixture(scope="module")
def srv(media_library, tmp_path_factory):
    folder = tmp_path_factory.mktemp("reports")
    config = folder / "vodgate.toml"
    config.write_text(
        f'[server]\nmedia_root = "{media_library}"\nsegment_duration = 4\n'
        f'[analytics]\nenabled = true\npath = "{folder / "events"}"\nflush_interval = 0.2\n'
        '[partners.demo]\nadmin_secret = "reports-admin-secret-01"\n'
        '[partners.bad]\nadmin_secret = "other-partner-secret-01"\n'
    )
    yield from serving(["--config", str(config)], folder / "server.log")


def test_a_report_before_any_event_is_empty_not_an_error(srv):
    report = httpx.get(f"{srv.base}/admin/partners/demo/reports/summary", headers=ADMIN)
    assert report.status_code == 200, report.text
    assert report.json()["plays"] == 0


def test_reports_count_this_partners_plays_only(srv):
    for entry in ("ladder", "video_only"):
        assert httpx.get(f"{srv.base}/p/demo/e/{entry}/hls/master.m3u8").status_code == 200
    httpx.get(f"{srv.base}/p/bad/e/truncated/hls/master.m3u8")  # another partner's (failed) request
    deadline = time.monotonic() + 10
    while True:
        report = httpx.get(f"{srv.base}/admin/partners/demo/reports/summary", headers=ADMIN, params={"partner": "bad"})
        assert report.status_code == 200, report.text
        body = report.json()
        if body["plays"] >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert body["plays"] == 2  # the partner= in the query was overridden with the caller's partner
    assert httpx.get(f"{srv.base}/admin/partners/demo/reports/summary").status_code == 401
    wrong = httpx.get(f"{srv.base}/admin/partners/demo/reports/summary", headers={"Authorization": "Bearer other-partner-secret-01"})
    assert wrong.status_code == 403
    assert httpx.get(f"{srv.base}/admin/partners/demo/reports/nope", headers=ADMIN).status_code == 404


def test_metrics_are_exposed(srv):
    httpx.get(f"{srv.base}/p/demo/e/ladder/hls/lo/seg-1.ts")
    text = httpx.get(f"{srv.base}/metrics").text
    assert 'vodgate_http_requests_total{route="segment",status="200"}' in text
    assert "vodgate_packaging_seconds" in text
