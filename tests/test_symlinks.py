"""Libraries made of symbolic links (a folder of links into a storage mount): [server] follow_symlinks.

Default (true, as nginx): links to files and folders outside the media root are followed, and what they
point to is served bit-exactly. False: `vodgate check` and the startup listing flag them, and requests
answer 404 symlink_not_followed with the reason, never 502.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

import media_fixtures as mf
import oracle
from conftest import REPO, ServerProcess
from config.settings import ConfigError, parse_settings
from origin.storage import LocalStorage, StorageError

SOURCE = "h264_baseline"


@pytest.fixture(scope="module")
def linked_library(tmp_path_factory) -> Path:
    """ROOT (the media root) made of links into STORE, a folder outside it:

    * demo/linked/main.mp4 -> STORE/h264_baseline.mp4            (a flavor file link)
    * demo/linkdir -> STORE/entry                                 (an entry folder link; main.mp4 inside)
    * mount -> STORE/partner                                      (a partner folder link; e1/main.mp4 inside)
    * demo/plain/main.mp4                                         (a plain copy: always served)
    """
    base = tmp_path_factory.mktemp("links")
    store, root = base / "store", base / "root"
    source = mf.fixture_path(SOURCE)
    (store / "entry").mkdir(parents=True)
    (store / "partner" / "e1").mkdir(parents=True)
    shutil.copyfile(source, store / "h264_baseline.mp4")
    shutil.copyfile(source, store / "entry" / "main.mp4")
    shutil.copyfile(source, store / "partner" / "e1" / "main.mp4")
    (root / "demo" / "linked").mkdir(parents=True)
    (root / "demo" / "plain").mkdir(parents=True)
    (root / "demo" / "linked" / "main.mp4").symlink_to(store / "h264_baseline.mp4")
    (root / "demo" / "linkdir").symlink_to(store / "entry", target_is_directory=True)
    (root / "mount").symlink_to(store / "partner", target_is_directory=True)
    shutil.copyfile(source, root / "demo" / "plain" / "main.mp4")
    return root


LINKED = {"demo/linked": "flavor file", "demo/linkdir": "entry folder", "mount/e1": "partner folder"}


def _config(tmp_path: Path, root: Path, follow: str | None) -> Path:
    path = tmp_path / "vodgate.toml"
    lines = ["[server]", f'media_root = "{root}"', "segment_duration = 4"]
    if follow is not None:
        lines.append(f"follow_symlinks = {follow}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def following(linked_library, tmp_path_factory):
    """A server with the default configuration (no follow_symlinks key)."""
    folder = tmp_path_factory.mktemp("follow")
    proc = ServerProcess(["--config", str(_config(folder, linked_library, None))], folder / "server.log")
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def refusing(linked_library, tmp_path_factory):
    folder = tmp_path_factory.mktemp("nofollow")
    proc = ServerProcess(["--config", str(_config(folder, linked_library, "false"))], folder / "server.log")
    yield proc
    proc.stop()


@pytest.mark.parametrize("fmt", ["hls", "cmaf"])
@pytest.mark.parametrize("entry", sorted(LINKED))
def test_links_are_followed_by_default_and_decode_bit_exactly(entry, fmt, following):
    partner, entry_id = entry.split("/")
    url = f"{following.base}/p/{partner}/e/{entry_id}/{fmt}/master.m3u8"
    response = httpx.get(url, timeout=30)
    assert response.status_code == 200, response.text
    assert oracle.video_hashes(url) == oracle.video_hashes(mf.fixture_path(SOURCE))


def test_progressive_through_a_link(following):
    response = httpx.get(f"{following.base}/p/demo/e/linked/mp4/main.mp4", timeout=30)
    assert response.status_code == 200, response.text
    assert response.content == mf.fixture_path(SOURCE).read_bytes()


@pytest.mark.parametrize("entry", sorted(LINKED))
def test_links_refused_with_404_and_the_reason(entry, refusing):
    partner, entry_id = entry.split("/")
    for path in ("hls/master.m3u8", "cmaf/master.m3u8", "hls/main/index.m3u8", "hls/main/seg-1.ts", "mp4/main.mp4"):
        response = httpx.get(f"{refusing.base}/p/{partner}/e/{entry_id}/{path}", timeout=30)
        assert response.status_code == 404, (path, response.status_code, response.text)
        body = response.json()
        assert body["error"] == "symlink_not_followed", body
        assert f"{LINKED[entry]} " in body["detail"] and "is a symbolic link and [server] follow_symlinks = false" in body["detail"]


def test_plain_files_still_served_when_links_are_refused(refusing):
    assert httpx.get(f"{refusing.base}/p/demo/e/plain/hls/master.m3u8", timeout=30).status_code == 200


def _listing(server: ServerProcess) -> str:
    """What `vodgate serve` printed at start: the lines before uvicorn's own."""
    lines = server.log_path.read_text(errors="replace").splitlines()
    return "\n".join(line for line in lines if line.startswith(("vodgate:", "  ")))


def test_startup_listing_flags_links(refusing, following):
    refused = _listing(refusing)
    for entry in ("demo/linked", "demo/linkdir"):
        assert f"  {entry}: symbolic links not followed (server.follow_symlinks = false), answered 404" in refused
    assert "/p/demo/e/plain/hls/master.m3u8" in refused
    assert "/p/demo/e/linked/hls/master.m3u8" not in refused
    followed = _listing(following)
    assert "not followed" not in followed and "/p/demo/e/linked/hls/master.m3u8" in followed


def _check(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli.main", "check", str(root), *args], cwd=REPO, capture_output=True, text=True, timeout=120)


def test_check_follows_by_default_and_flags_links_when_configured(linked_library, tmp_path):
    default = _check(linked_library)
    assert default.returncode == 0, default.stdout + default.stderr
    assert "4 files: 4 ok" in default.stdout and "symbolic link" not in default.stdout
    refused = _check(linked_library, "--config", str(_config(tmp_path, linked_library, "false")))
    assert refused.returncode == 1, refused.stdout + refused.stderr
    for name, kind in (("demo/linked/main.mp4", "flavor file main.mp4"), ("demo/linkdir/main.mp4", "entry folder linkdir"),
                       ("mount/e1/main.mp4", "partner folder mount")):
        assert f"FAIL  {name}" in refused.stdout
        assert f"error: {kind} is a symbolic link and [server] follow_symlinks = false" in refused.stdout
    assert "OK    demo/plain/main.mp4" in refused.stdout
    assert "4 files: 1 ok, 0 with warnings, 3 unplayable" in refused.stdout


@pytest.mark.parametrize("value", ['"yes"', "1", '"false"'])
def test_follow_symlinks_must_be_a_boolean(value):
    import tomllib

    with pytest.raises(ConfigError, match=r"server\.follow_symlinks has value .*; expected true or false"):
        parse_settings(tomllib.loads(f"[server]\nfollow_symlinks = {value}\n"))
    assert parse_settings({}).follow_symlinks is True
    assert parse_settings({"server": {"follow_symlinks": False}}).follow_symlinks is False


def test_storage_keys_cannot_climb_out_of_the_root(linked_library):
    for follow in (True, False):
        storage = LocalStorage(linked_library, follow_symlinks=follow)
        for key in ("../store/entry/main.mp4", "/etc/passwd", "demo/../../store/h264_baseline.mp4"):
            with pytest.raises(StorageError, match="not a path inside the media root"):
                storage.path(key)
    assert LocalStorage(linked_library).path("demo/linked/main.mp4").name == "h264_baseline.mp4"
    with pytest.raises(StorageError, match="symbolic link"):
        LocalStorage(linked_library, follow_symlinks=False).path("demo/linked/main.mp4")


def test_a_relinked_or_moved_target_is_picked_up_like_a_replaced_file(tmp_path, media_fixture_paths):
    """A link pointed at another file (a takedown, a re-encode) is served within the stat window, and a
    moved old target does not leave the flavor failing: links are resolved again at every stat."""
    import time

    import httpx

    store, root = tmp_path / "store", tmp_path / "lib"
    store.mkdir()
    (root / "open" / "ln").mkdir(parents=True)
    first, second = store / "a.mp4", store / "b.mp4"
    first.write_bytes(media_fixture_paths["ladder_hi"].read_bytes())
    second.write_bytes(media_fixture_paths["ladder_lo"].read_bytes())
    link = root / "open" / "ln" / "v.mp4"
    link.symlink_to(first)
    server = ServerProcess(["--media", str(root), "--segment-duration", "4"], tmp_path / "server.log")
    try:
        url = f"{server.base}/p/open/e/ln/mp4/v.mp4"
        assert httpx.get(url, timeout=30).content == first.read_bytes()
        link.unlink()
        link.symlink_to(second)
        time.sleep(1.5)  # past MediaService's stat window (origin.media.STAT_TTL)
        assert httpx.get(url, timeout=30).content == second.read_bytes()
        assert "RESOLUTION=320x180" in httpx.get(f"{server.base}/p/open/e/ln/hls/master.m3u8", timeout=30).text
        first.rename(store / "a-old.mp4")
        time.sleep(1.5)
        assert httpx.get(f"{server.base}/p/open/e/ln/hls/v/seg-2.ts", timeout=30).status_code == 200
    finally:
        server.stop()


def test_a_folder_named_like_a_flavor_is_not_a_flavor(tmp_path, media_fixture_paths):
    import httpx

    entry = tmp_path / "lib" / "open" / "mixed"
    entry.mkdir(parents=True)
    (entry / "lo.mp4").write_bytes(media_fixture_paths["ladder_lo"].read_bytes())
    (entry / "x.mp4").mkdir()
    server = ServerProcess(["--media", str(tmp_path / "lib"), "--segment-duration", "4"], tmp_path / "server.log")
    try:
        master = httpx.get(f"{server.base}/p/open/e/mixed/hls/master.m3u8", timeout=30)
        assert master.status_code == 200 and "lo/index.m3u8" in master.text and "x/" not in master.text
        missing = httpx.get(f"{server.base}/p/open/e/mixed/mp4/x.mp4", timeout=30)
        assert missing.status_code == 404, missing.text
    finally:
        server.stop()
    assert "Traceback" not in server.log()
