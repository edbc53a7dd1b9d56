"""The operator docs say what the servers do (issue 10, "Docs true to behaviour").

Each test puts a claim of docs/*.md next to what a real `vodgate serve` on 127.0.0.1 answers (or what the
real command prints): an origin with a shield, an admin secret, a partner with a rule, play events and a
disk tier, and an edge in front of it (and of a dead upstream) that probes its upstreams every 0.2 s.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import tomllib

from conftest import REPO, ServerProcess, free_port, hot_answers_in

DOCS = REPO / "docs"
SHIELD = "docs-truth-shield-secret-0001"
EDGE_SECRET = "docs-truth-edge-secret-00001"
ADMIN = "docs-truth-admin-secret-001"
PASS = {"X-Vodgate-Shield": SHIELD}
AUTH = {**PASS, "Authorization": f"Bearer {ADMIN}"}
SEGMENT = "/p/demo/e/h264_baseline/hls/main/seg-1.ts"
PROGRESSIVE = "/p/demo/e/h264_baseline/mp4/main.mp4"

# demo: open (an admin secret is no rule); bad: one rule, so its answers depend on who asks
PARTNERS = f"""
[partners.demo]
admin_secret = "{ADMIN}"
[partners.bad]
default_profile = "nobots"
[partners.bad.profiles.nobots]
rules = [{{ if = {{ user_agent = "(?i)bot" }}, then = [{{ block = "bots" }}] }}]
"""
CDN = f'[cdn]\nshield_secrets = ["{SHIELD}"]\nedge_secrets = ["{EDGE_SECRET}"]\n'


def doc(name: str) -> str:
    return (DOCS / name).read_text()


def paragraph(text: str, start: str) -> str:
    """The markdown paragraph, list item or table row of ``text`` that contains ``start``."""
    at = text.index(start)
    begin = max(text.rfind("\n\n", 0, at + 1), text.rfind("\n- ", 0, at + 2), text.rfind("\n|", 0, at + 1)) + 1
    ends = [i for i in (text.find("\n\n", at), text.find("\n- ", at), text.find("\n|", at)) if i != -1]
    return text[begin : min(ends) if ends else len(text)]


@pytest.fixture(scope="module")
def nodes(media_library, tmp_path_factory):
    folder = tmp_path_factory.mktemp("docs_truth")
    origin_toml = folder / "origin.toml"
    origin_toml.write_text(
        f'[server]\nmedia_root = "{media_library}"\nsegment_duration = 4\n'
        f'[cache]\ndisk_path = "{folder / "disk"}"\ndisk_mb = 64\n'
        f'[analytics]\nenabled = true\npath = "{folder / "events"}"\nflush_interval = 0.2\n' + CDN + PARTNERS
    )
    origin = ServerProcess(["--config", str(origin_toml)], folder / "origin.log")
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens: its probes fail
    edge_toml = folder / "edge.toml"
    edge_toml.write_text(
        f'[edge]\nrole = "edge"\nupstreams = ["{origin.base}", "{dead}"]\nhealth_interval = 0.2\ndown_seconds = 1\n'
        + CDN + PARTNERS
    )
    try:
        # two workers: every claim checked on the edge holds for a node of several processes too
        edge = ServerProcess(["--config", str(edge_toml), "--workers", "2"], folder / "edge.log")
    except Exception:
        origin.stop()
        raise
    yield {"origin": origin, "edge": edge, "dead": dead, "folder": folder}
    edge.stop()
    origin.stop()


# --------------------------------------------------------------------------- the admin purge route


def test_deployment_names_the_purge_route_that_exists(nodes):
    text = doc("DEPLOYMENT.md")
    named = set(re.findall(r"/admin/[A-Za-z0-9_<>{}/-]*", text))
    assert named <= {"/admin/partners/<partner>/purge", "/admin/partners/demo/purge", "/admin/"}, named
    for base in (nodes["origin"].base, nodes["edge"].base):
        wrong = httpx.post(f"{base}/admin/purge", headers=AUTH, json={"entry": "ladder"}, timeout=10)
        assert wrong.status_code == 404, wrong.text
        right = httpx.post(f"{base}/admin/partners/demo/purge", headers=AUTH, json={"entry": "ladder"}, timeout=10)
        assert right.status_code == 200 and right.json()["purged"] == "/p/demo/e/ladder/", right.text


# --------------------------------------------------------------------------- the shield


def test_only_healthz_is_open_on_a_shielded_node_and_the_docs_say_so(nodes):
    for base, ready in ((nodes["origin"].base, 200), (nodes["edge"].base, 503)):  # the edge: its dead upstream
        assert httpx.get(f"{base}/healthz", timeout=10).status_code == 200
        assert httpx.get(f"{base}/readyz", timeout=10).status_code == ready  # open: 503 is not 403
        for path in ("/metrics", "/admin/partners/demo/profiles", SEGMENT):
            refused = httpx.get(f"{base}{path}", headers={"Authorization": f"Bearer {ADMIN}"}, timeout=10)
            assert refused.status_code == 403 and refused.json()["error"] == "shield_required", (base, path)
            assert refused.headers["cache-control"] == "no-store"
        assert httpx.get(f"{base}/metrics", headers=PASS, timeout=10).status_code == 200
        assert httpx.get(f"{base}/admin/partners/demo/profiles", headers=AUTH, timeout=10).status_code == 200
    row = paragraph(doc("CONFIGURATION.md"), "| `shield_secrets` |")
    assert "`/metrics`" in row and "only `/healthz`" in row, row
    cdn = paragraph(doc("DEPLOYMENT.md"), "- **Origin shield**")
    assert "`/metrics`" in cdn and "Only `/healthz` and `/readyz` are open" in cdn, cdn
    assert "(`/metrics` too; `/healthz` never)" in doc("URLS.md")


# --------------------------------------------------------------------------- Cache-Control of errors


def test_client_errors_are_cached_briefly_unless_they_depend_on_who_asked(nodes):
    for base in (nodes["origin"].base, nodes["edge"].base):
        missing = httpx.get(f"{base}/p/demo/e/no_such_entry/hls/master.m3u8", headers=PASS, timeout=10)
        assert missing.status_code == 404 and missing.headers["cache-control"] == "public, max-age=10", base
        denied = httpx.get(f"{base}/p/bad/e/truncated/hls/master.m3u8", headers={**PASS, "User-Agent": "SomeBot/1"}, timeout=10)
        assert denied.status_code == 403 and denied.json()["error"] == "bots", denied.text
        assert denied.headers["cache-control"] == "no-store"
        unshielded = httpx.get(f"{base}/p/demo/e/ladder/hls/master.m3u8", timeout=10)
        assert unshielded.status_code == 403 and unshielded.headers["cache-control"] == "no-store"
        no_secret = httpx.get(f"{base}/admin/partners/demo/profiles", headers=PASS, timeout=10)
        assert no_secret.status_code == 401 and no_secret.headers["cache-control"] == "no-store"
    origin = nodes["origin"].base
    past_end = httpx.get(f"{origin}{SEGMENT}", headers={**PASS, "Range": "bytes=99999999-"}, timeout=10)
    assert past_end.status_code == 416 and past_end.headers["cache-control"] == "public, max-age=10"
    for name, row in (("URLS.md", "| 4xx errors |"), ("DEPLOYMENT.md", "| 4xx errors |")):
        text = paragraph(doc(name), row)
        assert "public, max-age=10" in text and "no-store" in text and "access denials" in text and "admin API" in text, (name, text)


# --------------------------------------------------------------------------- X-Cache


def test_x_cache_is_where_the_docs_say(nodes):
    origin, edge = nodes["origin"].base, nodes["edge"].base
    with httpx.Client(headers=PASS, timeout=10) as c:
        for url in (f"{origin}/p/demo/e/h264_baseline/hls/master.m3u8", f"{origin}/p/demo/e/h264_baseline/cmaf/main/init.mp4",
                    f"{origin}{SEGMENT}"):
            assert c.get(url).headers.get("x-cache") in ("HIT", "MISS", "COALESCED"), url
        assert c.head(f"{origin}/p/demo/e/h264_baseline/cmaf/main/init.mp4").headers.get("x-cache") == "HIT"
        assert "x-cache" not in c.head(f"{origin}{SEGMENT}").headers  # sized without the cache
        for answer in (c.get(f"{origin}{PROGRESSIVE}"), c.head(f"{origin}{PROGRESSIVE}"),
                       c.get(f"{origin}{PROGRESSIVE}", headers={"Range": "bytes=0-99"})):
            assert answer.status_code in (200, 206) and "x-cache" not in answer.headers
        etag = c.get(f"{origin}{SEGMENT}").headers["etag"]
        assert "x-cache" not in c.get(f"{origin}{SEGMENT}", headers={"If-None-Match": etag}).headers
        assert "x-cache" not in c.get(f"{origin}/p/demo/e/no_such_entry/hls/master.m3u8").headers
        # an edge: on every media answer
        for answer in (c.get(f"{edge}{SEGMENT}"), c.head(f"{edge}{SEGMENT}"), c.get(f"{edge}{PROGRESSIVE}"),
                       c.head(f"{edge}{PROGRESSIVE}"), c.get(f"{edge}{PROGRESSIVE}", headers={"Range": "bytes=0-99"}),
                       c.get(f"{edge}{SEGMENT}", headers={"If-None-Match": etag}),
                       c.get(f"{edge}/p/demo/e/no_such_entry/hls/master.m3u8")):
            assert answer.headers.get("x-cache") in ("HIT", "MISS", "COALESCED"), (answer.request.method, answer.url, answer.status_code)
    urls = doc("URLS.md")
    assert "Playlists and segments carry `X-Cache" not in urls
    said = paragraph(urls, "What the cache answered, `X-Cache")
    assert "progressive MP4" in said and "`HEAD`" in said and "carry none" in said, said
    deployment = doc("DEPLOYMENT.md")
    assert "`X-Cache` on every media response" not in deployment
    said = paragraph(deployment, "- `X-Cache`:")
    assert "An edge sends it on every media answer" in said and "progressive MP4" in said, said


# --------------------------------------------------------------------------- the hot lane and query strings


def hot_answers(base: str) -> int:
    return hot_answers_in(httpx.get(f"{base}/metrics", headers=PASS, timeout=10).text)


def test_a_query_string_stays_in_the_hot_lane_as_deployment_says(nodes):
    origin = nodes["origin"].base
    url = "/p/demo/e/h264_2997/hls/main/seg-2.ts"
    full = httpx.get(f"{origin}{url}?playSessionId=first", headers=PASS, timeout=10)
    for _ in range(3):  # a remembered answer lasts 1 s: when it lapsed in between, the retry counts
        before = hot_answers(origin)
        hot = httpx.get(f"{origin}{url}?playSessionId=s-42&foo=bar", headers=PASS, timeout=10)
        if hot_answers(origin) == before + 1:
            break
    else:
        raise AssertionError("a request with a query string was never answered by the hot lane")
    assert hot.content == full.content and hot.headers["x-cache"] == "HIT"
    before = hot_answers(origin)
    ranged = httpx.get(f"{origin}{url}?playSessionId=s-42", headers={**PASS, "Range": "bytes=0-187"}, timeout=10)
    assert ranged.status_code == 206 and hot_answers(origin) == before  # a Range header does leave it
    before = hot_answers(origin)
    tokened = httpx.get(f"{origin}{url}?playSessionId=s-42&token=whatever", headers=PASS, timeout=10)
    assert tokened.content == full.content and hot_answers(origin) == before  # so does a token (it may pin a clip)
    assert "a query string is fine unless it carries a token" in doc("DEPLOYMENT.md")
    performance = doc("PERFORMANCE.md")
    lane = paragraph(performance, "What the hot lane is")
    assert "A query string does not" in lane and "Authorization, a query string" not in lane, lane


def test_performance_points_only_at_sections_that_exist():
    text = doc("PERFORMANCE.md")
    headings = set(re.findall(r"^#+ (.+)$", text, re.MULTILINE))
    pointed = re.findall(r'see "([^"]+)"', text)
    assert all(title in headings for title in pointed), (pointed, headings)
    assert "Known issues" not in text
    # the sentence that pointed there said options right after `vodgate bench` were refused: they are not
    proc = subprocess.run([sys.executable, "-m", "cli.main", "bench", "--quick", "--help"], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0 and "--quick" in proc.stdout, proc.stderr


# --------------------------------------------------------------------------- vodgate access explain


def test_the_explain_example_is_what_the_command_prints(tmp_path):
    text = doc("ACCESS_CONTROL.md")
    config = re.search(r"## Configuration\n\n```toml\n(.*?)```", text, re.S).group(1)
    # the example as an operator would fill it in: real keys, and no GeoIP file (the example says so)
    config = re.sub(r'token_keys = \{[^}]*\}', 'token_keys = { k1 = "00112233445566778899aabbccddeeff", k2 = "ffeeddccbbaa99887766554433221100" }', config)
    config = "\n".join(line for line in config.splitlines() if not line.startswith(("geoip_database", "# ...")))
    (tmp_path / "vodgate.toml").write_text(config + "\n")
    example = re.search(r"```\n\$ (vodgate access explain [^\n]*)\n(.*?)```", text, re.S)
    command, shown = example.group(1), example.group(2)
    argv = command.split()[1:]
    proc = subprocess.run([sys.executable, "-m", "cli.main", *argv], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 1, proc.stderr  # a denial
    assert proc.stdout == shown, proc.stdout
    assert "entry window: inside the availability window" in shown


def test_the_user_agent_pattern_limits_are_the_codes():
    """ACCESS_CONTROL.md, "Size limits": the numbers are auth.rules' and the quoted refusal is the one given."""
    from auth.rules import MAX_PATTERN_LENGTH, MAX_PROFILE_PROGRAM_SIZE, MAX_PROGRAM_SIZE
    from config.partners import profile_from_dict
    from config.settings import ConfigError

    text = doc("ACCESS_CONTROL.md")
    limits = paragraph(text, "**Size limits.**")
    assert f"at most {MAX_PATTERN_LENGTH} characters" in limits
    assert f"at most {MAX_PROGRAM_SIZE:,}\ninstructions" in limits
    assert f"together compile to at most {MAX_PROFILE_PROGRAM_SIZE:,} instructions" in paragraph(text, "All the `user_agent` patterns")
    shown = re.search(r"```\nadmin API: [^\n]*? has value '\(\?i\)\[a-z\]\{0,1000\}', (which is too large[^\n]*)\n```", text).group(1)
    with pytest.raises(ConfigError) as refused:
        profile_from_dict("tv", {"rules": [{"if": {"user_agent": "(?i)[a-z]{0,1000}"}, "then": ["block"]}]}, geoip_configured=False)
    assert str(refused.value).endswith(shown), str(refused.value)


# --------------------------------------------------------------------------- the example configuration


EXAMPLE = REPO / "config" / "vodgate.example.toml"


def test_the_example_config_names_every_section_and_key():
    """'A complete example': every section and every key appears, set or commented out."""
    from config.analytics import ANALYTICS_KEYS, METRICS_KEYS
    from config.partners import ACCESS_SERVER_KEYS, ENTRY_KEYS, PARTNER_KEYS, PROFILE_KEYS
    from config.settings import CACHE_KEYS, CDN_KEYS, REDIS_KEYS, SECTIONS, SERVER_KEYS
    from config.storage import STORAGE_KEYS
    from config.edge import EDGE_KEYS

    text = EXAMPLE.read_text()
    tables: dict[str, str] = {}
    current = ""
    for line in text.splitlines():
        head = re.match(r"^(?:# )?\[([a-z_.]+)\]", line)
        if head:
            current = head.group(1)
            tables.setdefault(current, "")
        elif current:
            tables[current] += line + "\n"

    def keys(table: str) -> set[str]:
        return set(re.findall(r"^(?:# )?([a-z0-9_]+) = ", tables.get(table, ""), re.MULTILINE))

    assert {name.split(".")[0] for name in tables} >= SECTIONS
    expected = {
        "server": SERVER_KEYS | ACCESS_SERVER_KEYS, "cache": CACHE_KEYS, "cdn": CDN_KEYS, "redis": REDIS_KEYS,
        "edge": EDGE_KEYS, "analytics": ANALYTICS_KEYS, "metrics": METRICS_KEYS, "storage": STORAGE_KEYS,
        "partners.demo": PARTNER_KEYS - {"profiles", "entries"}, "partners.demo.profiles.site": PROFILE_KEYS,
        "partners.demo.entries.ladder": ENTRY_KEYS,
    }
    for table, known in expected.items():
        assert keys(table) >= set(known), (table, set(known) - keys(table))


def test_the_example_config_parses_as_it_stands_and_with_its_partner_uncommented(tmp_path):
    from config.settings import load_settings, parse_settings
    from config.edge import parse_edge_section

    settings = load_settings(EXAMPLE)  # as shipped: nothing commented changes behaviour
    assert settings.access is None or not settings.access.partners
    assert settings.redis_url is None and not settings.shield_secrets and settings.storage.type == "local"
    assert not settings.analytics.enabled and settings.metrics.enabled
    assert parse_edge_section(settings.edge_table, "example") == ("all", None)
    lines = EXAMPLE.read_text().splitlines()
    start = lines.index("# [partners.demo]")
    block = []
    for line in lines[start:]:
        if not line.startswith("#"):
            break
        block.append(line[2:] if line.startswith("# ") else "")
    block = [line.replace("<16+ random characters>", "x" * 20).replace("<32+ hex digits>", "00" * 16) for line in block]
    access = parse_settings(tomllib.loads("\n".join(block)), "example").access
    demo = access.partners["demo"]
    assert demo.default_profile == "site" and len(demo.profiles["site"].rules) == 2


# --------------------------------------------------------------------------- metrics


def metric_names(text: str) -> set[str]:
    """Names as Prometheus shows them: a counter is the series ``x_total`` (whichever way the TYPE line names it)."""
    names = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE):
        names.add(f"{name}_total" if kind == "counter" and not name.endswith("_total") else name)
    return names


def documented_metrics() -> set[str]:
    """Every backticked name in the rows of docs/ANALYTICS.md's metrics table, braces expanded."""
    text = doc("ANALYTICS.md")
    table = text[text.index("## Metrics (`GET /metrics`"):]
    table = table[: table.index("\n\n", table.index("| metric |"))]
    names: set[str] = set()
    for token in re.findall(r"`(vodgate_[^`]+)`", table):
        token = re.sub(r'\{[a-z_,="A-Z]+\}$', "", token)  # labels: {route,status}, {result="HIT"}
        expanded = [token]
        while any("{" in t for t in expanded):
            t = next(t for t in expanded if "{" in t)
            expanded.remove(t)
            head, rest = t.split("{", 1)
            options, tail = rest.split("}", 1)
            expanded += [head + option + tail for option in options.split(",")]
        names.update(expanded)
    return names


def test_every_metric_a_node_exports_is_documented(nodes):
    origin, edge = nodes["origin"].base, nodes["edge"].base
    with httpx.Client(headers=PASS, timeout=10) as c:
        for base in (origin, edge):  # some traffic: every family has its series
            for _ in range(3):
                c.get(f"{base}{SEGMENT}")
            c.get(f"{base}/p/bad/e/truncated/hls/master.m3u8", headers={"User-Agent": "bot"})
        emitted = {base: metric_names(c.get(f"{base}/metrics").text) for base in (origin, edge)}
    assert {"vodgate_hot_lane_answers_total", "vodgate_hot_lane_paths", "vodgate_segment_cache_disk_bytes",
            "vodgate_analytics_events_queued"} <= emitted[origin]
    assert "vodgate_workers" in emitted[edge] and "vodgate_upstream_up" in emitted[edge]
    documented = documented_metrics()
    for base, names in emitted.items():
        assert names <= documented, f"{base} exports metrics docs/ANALYTICS.md does not list: {sorted(names - documented)}"


# --------------------------------------------------------------------------- admin reports


def test_the_admin_report_does_not_show_the_servers_folder(nodes):
    origin, folder = nodes["origin"].base, nodes["folder"]
    assert httpx.get(f"{origin}/p/demo/e/ladder/hls/master.m3u8", headers=PASS, timeout=10).status_code == 200
    url = f"{origin}/admin/partners/demo/reports/summary"
    deadline = time.monotonic() + 10
    while True:
        report = httpx.get(url, headers=AUTH, timeout=10)
        assert report.status_code == 200, report.text
        if report.json()["plays"] >= 1 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    body = report.json()
    assert body["plays"] >= 1 and body["source"] == "jsonl" and body["partner"] == "demo"
    for fmt in ("json", "csv", "table"):
        answer = httpx.get(url, headers=AUTH, params={"format": fmt}, timeout=10)
        assert answer.status_code == 200 and answer.headers["cache-control"] == "no-store"
        assert str(folder) not in answer.text, (fmt, answer.text[:300])
        assert "jsonl" in answer.text
    assert httpx.get(url, headers=AUTH, params={"format": "xml"}, timeout=10).status_code == 400


# --------------------------------------------------------------------------- health probe logging


def test_an_edge_does_not_log_its_successful_health_probes(nodes):
    origin, edge, dead = nodes["origin"], nodes["edge"], nodes["dead"]
    httpx.get(f"{edge.base}/p/demo/e/video_only/hls/main/seg-1.ts", headers=PASS, timeout=10)  # one upstream fetch
    time.sleep(1.5)  # 7 probe rounds at 0.2 s
    probes = origin.log_path.read_text(errors="replace").count('"GET /healthz HTTP/1.1" 200')
    assert probes >= 5, "the edge did not probe its origin"
    log = edge.log_path.read_text(errors="replace")
    upstream_lines = [line for line in log.splitlines() if "HTTP Request:" in line]  # httpx's line per request sent
    assert not [line for line in upstream_lines if "/healthz" in line], log[-3000:]
    assert f"HTTP Request: GET {origin.base}/p/demo/e/video_only/hls/main/seg-1.ts" in log  # other requests still are
    assert f"upstream {dead} marked down: health probe failed" in log  # and a failing probe is still said
