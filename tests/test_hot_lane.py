"""The hot lane (edge/hot.py, edge/hot_protocol.py): warm segments answered before ASGI, never wrongly.

Servers run as real processes. Whether an answer came from the hot lane is
read from ``vodgate_hot_lane_answers_total`` on /metrics; everything else is
compared with what the full path answers for the same URL.
"""

from __future__ import annotations

import re
import shutil
import socket
import time

import httpx
import m3u8
import pytest

from conftest import ServerProcess, hot_answers_in

ADMIN = "hot-admin-secret-0123456789"
SHIELD = "cdn-secret-abcdefghijklmnop"
ENTRY = "/p/demo/e/clip"

CONFIG = """
[server]
media_root = "{library}"
segment_duration = 2
log_level = "info"  # the access log is written for hot answers too

[partners.demo]
admin_secret = "{admin}"
default_profile = "open"

[partners.demo.profiles.open]
rules = []
{extra}
"""


def _library(root, media_fixture_paths):
    (root / "demo" / "clip").mkdir(parents=True)
    shutil.copy(media_fixture_paths["h264_2997"], root / "demo" / "clip" / "main.mp4")
    return root


def _start(tmp_path_factory, media_fixture_paths, name: str, extra: str = "") -> ServerProcess:
    d = tmp_path_factory.mktemp(name)
    library = _library(d / "lib", media_fixture_paths)
    config = d / "vodgate.toml"
    config.write_text(CONFIG.format(library=library, admin=ADMIN, extra=extra))
    return ServerProcess(["--config", str(config)], d / "server.log")


@pytest.fixture(scope="module")
def hot_server(tmp_path_factory, media_fixture_paths):
    proc = _start(tmp_path_factory, media_fixture_paths, "hot")
    proc.library = proc.log_path.parent / "lib"
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def http(hot_server):
    with httpx.Client(base_url=hot_server.base, timeout=30) as c:
        yield c


def hot_answers(http: httpx.Client) -> int:
    return hot_answers_in(http.get("/metrics").text)


def hot_get(http: httpx.Client, url: str, **kwargs) -> httpx.Response:
    """GET that the hot lane must answer. A remembered answer lapses after 1 s and the full path then
    remembers it again, so when one lapses between two calls, the retry is the one that counts."""
    for _ in range(2):
        before = hot_answers(http)
        response = http.get(url, **kwargs)
        if hot_answers(http) == before + 1:
            return response
    raise AssertionError(f"{url} was not answered by the hot lane twice in a row")


def segment_urls(http: httpx.Client, fmt: str = "hls") -> list[str]:
    media = m3u8.loads(http.get(f"{ENTRY}/{fmt}/main/index.m3u8").text)
    return [f"{ENTRY}/{fmt}/main/{s.uri}" for s in media.segments]


def without_date(headers: httpx.Headers) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k not in ("date", "x-cache")}


def test_second_plain_request_is_answered_by_the_hot_lane_with_the_same_bytes(http):
    url = segment_urls(http)[1]
    first = http.get(url)
    assert first.status_code == 200
    second = hot_get(http, url)
    assert second.status_code == 200 and second.content == first.content
    assert second.headers["x-cache"] == "HIT"
    assert without_date(second.headers) == without_date(first.headers)
    assert "date" in second.headers and "server" in second.headers


def test_hot_answers_are_in_the_access_log(http, hot_server):
    url = segment_urls(http)[3]
    line = f'"GET {url} HTTP/1.1" 200'
    http.get(url)
    time.sleep(0.2)
    logged = hot_server.log().count(line)
    hot_get(http, url)
    time.sleep(0.2)
    log = hot_server.log()
    assert log.count(line) > logged, log[-2000:]
    assert "Traceback" not in log


def test_fmp4_init_and_segments_are_hot_too(http):
    init = f"{ENTRY}/cmaf/main/init.mp4"
    seg = segment_urls(http, "cmaf")[0]
    for url in (init, seg):
        full = http.get(url)
        assert full.status_code == 200
        again = hot_get(http, url)
        assert again.content == full.content and again.headers["content-type"] == full.headers["content-type"]


def test_conditional_range_and_head_requests_take_the_full_path(http):
    url = segment_urls(http)[0]
    full = http.get(url)
    http.get(url)  # now hot
    before = hot_answers(http)
    not_modified = http.get(url, headers={"If-None-Match": full.headers["etag"]})
    assert not_modified.status_code == 304 and not_modified.content == b""
    part = http.get(url, headers={"Range": "bytes=188-375"})
    assert part.status_code == 206 and part.content == full.content[188:376]
    head = http.head(url)
    assert head.status_code == 200 and head.headers["content-length"] == str(len(full.content))
    cors = http.get(url, headers={"Origin": "https://player.example"})
    assert cors.headers["access-control-allow-origin"] == "*" and cors.content == full.content
    assert hot_answers(http) == before, "none of these may be answered by the hot lane"


def test_a_query_string_does_not_change_a_segment_and_is_logged_redacted(http, hot_server):
    url = segment_urls(http)[0]
    full = http.get(url)
    tagged = hot_get(http, url, params={"playSessionId": "abc"})
    assert tagged.content == full.content
    # a token may narrow what it grants (a clip claim): the full path answers it, never the hot lane
    before = hot_answers(http)
    tokened = http.get(url, params={"playSessionId": "abc", "token": "vg1.secret-token-value"})
    assert tokened.content == full.content and hot_answers(http) == before
    time.sleep(0.2)
    log = hot_server.log()
    assert "secret-token-value" not in log
    assert f"{url}?playSessionId=abc" in log


def test_purge_empties_the_hot_lane(http):
    url = segment_urls(http)[2]
    http.get(url)
    assert http.get(url).headers["x-cache"] == "HIT"
    r = http.post("/admin/partners/demo/purge", json={"entry": "clip"}, headers={"Authorization": f"Bearer {ADMIN}"})
    assert r.status_code == 200, r.text
    before = hot_answers(http)
    after = http.get(url)
    assert after.headers["x-cache"] == "MISS"
    assert hot_answers(http) == before


def test_a_new_access_rule_applies_to_the_very_next_request(http):
    url = segment_urls(http)[0]
    http.get(url)
    assert http.get(url).status_code == 200  # hot
    auth = {"Authorization": f"Bearer {ADMIN}"}
    put = http.put("/admin/partners/demo/profiles/open", headers=auth, json={"rules": [{"then": [{"block": "maintenance"}]}]})
    assert put.status_code == 200, put.text
    try:
        before = hot_answers(http)
        blocked = http.get(url)
        assert blocked.status_code == 403 and blocked.json()["error"] == "maintenance"
        assert hot_answers(http) == before
    finally:
        assert http.put("/admin/partners/demo/profiles/open", headers=auth, json={"rules": []}).status_code == 200
    assert http.get(url).status_code == 200


def test_a_replaced_file_is_served_within_the_freshness_window(http, hot_server, media_fixture_paths):
    url = segment_urls(http)[0]
    old = http.get(url).content
    assert http.get(url).content == old  # hot
    target = hot_server.library / "demo" / "clip" / "main.mp4"

    def replace_with(fixture: str) -> None:
        tmp = target.with_suffix(".new")
        shutil.copy(media_fixture_paths[fixture], tmp)
        tmp.replace(target)  # atomic, as docs/CONFIGURATION.md asks of operators

    def served_until(done) -> list[httpx.Response]:
        seen, deadline = [], time.monotonic() + 10
        while time.monotonic() < deadline:
            seen.append(http.get(url))
            if done(seen[-1]):
                return seen
            time.sleep(0.1)
        raise AssertionError(f"still not changed after 10 s: {[r.status_code for r in seen]}")

    replace_with("h264_high_bframes")
    try:
        seen = served_until(lambda r: r.status_code == 200 and r.content != old)
        # in between: the old bytes (hot or not) or a 502 for a read that noticed the change; never a mix
        for r in seen:
            assert r.content == old or r.status_code == 502 or r is seen[-1], r.status_code
    finally:
        replace_with("h264_2997")
        served_until(lambda r: r.status_code == 200 and r.content == old)


def _read_response(sock_file) -> tuple[int, dict[str, str], bytes]:
    status_line = sock_file.readline()
    status = int(status_line.split()[1])
    headers = {}
    while (line := sock_file.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    body = sock_file.read(int(headers.get("content-length", "0")))
    return status, headers, body


def test_pipelined_requests_are_answered_in_order(http, hot_server):
    urls = segment_urls(http)[:2]
    bodies = [http.get(u).content for u in urls]
    for u in urls:
        http.get(u)  # both hot now
    playlist = f"{ENTRY}/hls/main/index.m3u8"
    requests = [urls[0], playlist, urls[1], urls[0]]
    raw = b"".join(f"GET {u} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for u in requests)
    with socket.create_connection(("127.0.0.1", hot_server.port), timeout=10) as s:
        s.sendall(raw)
        f = s.makefile("rb")
        answers = [_read_response(f) for _ in requests]
    assert [a[0] for a in answers] == [200, 200, 200, 200]
    assert answers[0][2] == bodies[0] and answers[2][2] == bodies[1] and answers[3][2] == bodies[0]
    assert answers[1][2].startswith(b"#EXTM3U")


def test_connection_close_is_honoured(http, hot_server):
    url = segment_urls(http)[0]
    body = http.get(url).content
    http.get(url)
    with socket.create_connection(("127.0.0.1", hot_server.port), timeout=10) as s:
        s.sendall(f"GET {url} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        f = s.makefile("rb")
        status, headers, got = _read_response(f)
        assert status == 200 and got == body and headers.get("connection") == "close"
        assert f.read() == b"", "the server must close the connection"


def test_shielded_origin_checks_the_secret_on_every_hot_answer(tmp_path_factory, media_fixture_paths):
    extra = f'\n[cdn]\nshield_secrets = ["old-secret-0000000000", "{SHIELD}"]\n'
    proc = _start(tmp_path_factory, media_fixture_paths, "shield", extra)
    try:
        with httpx.Client(base_url=proc.base, timeout=30) as c:
            cdn = {"X-Vodgate-Shield": SHIELD}
            playlist = c.get(f"{ENTRY}/hls/main/index.m3u8", headers=cdn)
            url = f"{ENTRY}/hls/main/{m3u8.loads(playlist.text).segments[0].uri}"
            full = c.get(url, headers=cdn)
            assert c.get(url, headers=cdn).content == full.content  # hot
            for headers in ({}, {"X-Vodgate-Shield": "wrong"}, {"X-Vodgate-Shield": SHIELD[:-1]}):
                refused = c.get(url, headers=headers)
                assert refused.status_code == 403 and refused.json()["error"] == "shield_required"
            assert c.get(url, headers={"X-Vodgate-Shield": "old-secret-0000000000"}).content == full.content
    finally:
        proc.stop()


def test_hot_lane_can_be_turned_off(tmp_path_factory, media_fixture_paths):
    proc = _start(tmp_path_factory, media_fixture_paths, "cold", "\n[cache]\nhot_lane = false\n")
    try:
        with httpx.Client(base_url=proc.base, timeout=30) as c:
            url = segment_urls(c)[0]
            first, second = c.get(url), c.get(url)
            assert first.status_code == second.status_code == 200 and second.headers["x-cache"] == "HIT"
            assert "vodgate_hot_lane_answers_total" not in c.get("/metrics").text
    finally:
        proc.stop()


def test_hot_answers_are_play_events_like_any_other(tmp_path_factory, media_fixture_paths):
    import json

    events_dir = tmp_path_factory.mktemp("events")
    extra = f'\n[analytics]\nenabled = true\nsinks = ["jsonl"]\npath = "{events_dir}"\n'
    proc = _start(tmp_path_factory, media_fixture_paths, "events", extra)
    try:
        with httpx.Client(base_url=proc.base, timeout=30) as c:
            url = segment_urls(c)[1]
            ua = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0", "Referer": "https://news.example.com/a"}
            for _ in range(3):
                assert c.get(url, headers=ua, params={"playSessionId": "viewer-7"}).status_code == 200
            assert hot_answers(c) >= 1  # (both, unless the machine stalled past the 1 s a remembered answer lives)
    finally:
        proc.stop()  # SIGTERM: every queued event is flushed
    events = [json.loads(line) for f in sorted(events_dir.glob("*.jsonl")) for line in f.read_text().splitlines()]
    served = [e for e in events if e["kind"] == "segment_served"]
    assert [e["cache"] for e in served] == ["MISS", "HIT", "HIT"]
    first, hot = served[0], served[1:]
    for e in hot:  # the same viewer, segment and media time as the full path recorded
        for field in ("partner", "entry", "flavor", "session", "segment", "media_start", "referrer", "ua"):
            assert e[field] == first[field], field
        assert e["session"] == "viewer-7"
        assert e["bytes"] == first["bytes"]


def test_keep_alive_idle_timeout_counts_from_the_last_hot_answer(http, hot_server):
    """uvicorn closes a connection idle for 5 s; the hot lane keeps one timer per connection, re-armed lazily."""
    url = segment_urls(http)[0]
    body = http.get(url).content
    http.get(url)
    # the metrics below go through a client of their own: the shared one must not sit idle right up to the
    # server's keep-alive close while this test waits for it (the next test would race that close)
    http = httpx.Client(base_url=hot_server.base, timeout=30)
    with http, socket.create_connection(("127.0.0.1", hot_server.port), timeout=15) as s:
        f = s.makefile("rb")
        for pause in (0, 3.5, 3.5):  # busy past the first 5 s: must stay open
            time.sleep(pause)
            for _ in range(2):  # as hot_get: the retry counts when a remembered answer lapsed in between
                before = hot_answers(http)
                s.sendall(f"GET {url} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                assert _read_response(f)[2] == body
                if hot_answers(http) == before + 1:
                    break
            else:
                raise AssertionError("the hot lane did not answer on this connection")
        started = time.monotonic()
        assert f.read() == b"", "an idle connection must be closed"
        assert 4 <= time.monotonic() - started <= 8


def _metric(text: str, name: str, labels: str) -> float:
    m = re.search(rf"^{name}\{{{labels}\}} (\S+)$", text, re.MULTILINE)
    return float(m.group(1)) if m else 0.0


def test_hot_answers_count_in_the_request_metrics(http):
    url = segment_urls(http)[2]
    size = len(http.get(url).content)
    http.get(url)
    text = http.get("/metrics").text
    requests = _metric(text, "vodgate_http_requests_total", 'route="segment",status="200"')
    sent = _metric(text, "vodgate_http_response_bytes_total", 'class="segment"')
    hot = hot_answers(http)
    for _ in range(5):
        http.get(url)
    text = http.get("/metrics").text
    assert hot_answers(http) - hot >= 4  # one may fall on a re-validation second
    assert _metric(text, "vodgate_http_requests_total", 'route="segment",status="200"') == requests + 5
    assert _metric(text, "vodgate_http_response_bytes_total", 'class="segment"') == sent + 5 * size
