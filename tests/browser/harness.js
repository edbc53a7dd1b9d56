// Plays one HLS URL to the end in hls.js or shaka-player and reports what happened:
// every player error (fatal or not), every stall, the decoded frame counts and the buffered ranges.
"use strict";

function bufferedRanges(video) {
  const out = [];
  for (let i = 0; i < video.buffered.length; i++) {
    out.push([video.buffered.start(i), video.buffered.end(i)]);
  }
  return out;
}

window.runPlayback = function (opts) {
  const { player, url, rate = 4, secondAudio = false, timeoutMs = 20000, stallMs = 3000, clearKeys = null } = opts;
  const video = document.getElementById("video");
  video.muted = true;
  const t0 = performance.now();
  const wall = () => Math.round(performance.now() - t0) / 1000;
  const report = {
    player, url, errors: [], stalls: [], events: [], audioTracks: [], audioSwitched: null,
    ended: false, timedOut: false, duration: null, currentTime: null, buffered: [],
    totalVideoFrames: null, droppedVideoFrames: null, version: null, elapsed: null,
  };
  let playing = false;
  let lastTime = -1;
  let lastProgressWall = 0;
  let hls = null;
  let shakaPlayer = null;

  const note = (kind, extra) => report.events.push(Object.assign({ kind, t: video.currentTime, wall: wall() }, extra || {}));
  const addError = (e) => report.errors.push(Object.assign({ t: video.currentTime, wall: wall() }, e));

  return new Promise((resolve) => {
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      clearInterval(watch);
      const q = video.getVideoPlaybackQuality();
      report.totalVideoFrames = q.totalVideoFrames;
      report.droppedVideoFrames = q.droppedVideoFrames;
      report.duration = video.duration;
      report.currentTime = video.currentTime;
      report.buffered = bufferedRanges(video);
      report.elapsed = wall();
      if (hls) report.audioTracks = hls.audioTracks.map((t) => t.lang || t.name);
      if (shakaPlayer) report.audioTracks = shakaPlayer.getAudioTracks().map((t) => t.language);
      const teardown = hls ? Promise.resolve(hls.destroy()) : shakaPlayer ? shakaPlayer.destroy() : Promise.resolve();
      teardown.catch(() => {}).then(() => resolve(report));
    };

    video.addEventListener("error", () => {
      const err = video.error;
      addError({ source: "video", fatal: true, code: err && err.code, message: err && err.message });
      finish();
    });
    video.addEventListener("playing", () => { playing = true; note("playing"); });
    video.addEventListener("waiting", () => {
      note("waiting");
      // the wait before the first frame is start-up, not a stall
      if (playing) report.stalls.push({ kind: "waiting", t: video.currentTime, wall: wall(), buffered: bufferedRanges(video) });
    });
    video.addEventListener("ended", () => { report.ended = true; note("ended"); finish(); });
    video.addEventListener("ratechange", () => note("ratechange", { rate: video.playbackRate }));

    const watch = setInterval(() => {
      const now = wall();
      if (video.currentTime !== lastTime) {
        lastTime = video.currentTime;
        lastProgressWall = now;
      } else if (playing && !video.paused && !video.ended && (now - lastProgressWall) * 1000 > stallMs) {
        report.stalls.push({ kind: "no-progress", t: video.currentTime, wall: now, buffered: bufferedRanges(video) });
        lastProgressWall = now; // report each stuck period once per stallMs
      }
      if (now * 1000 > timeoutMs) { report.timedOut = true; finish(); }
    }, 100);

    const start = () => {
      // the second audio language from the start: a switch during playback flushes the audio
      // buffer by design (a stall that says nothing about the media)
      if (secondAudio && shakaPlayer) {
        const other = shakaPlayer.getAudioTracks().filter((t) => !t.active);
        if (other.length) { shakaPlayer.selectAudioTrack(other[0]); report.audioSwitched = other[0].language; }
      }
      video.playbackRate = rate;
      video.defaultPlaybackRate = rate;
      const p = video.play();
      if (p) p.catch((e) => addError({ source: "video.play", fatal: true, message: String(e) }));
    };

    if (player === "hls.js") {
      report.version = Hls.version;
      if (!Hls.isSupported()) { addError({ source: "hls.js", fatal: true, message: "MSE not supported" }); finish(); return; }
      hls = new Hls({ debug: false, enableWorker: true });
      hls.on(Hls.Events.ERROR, (_, d) => {
        addError({
          source: "hls.js", type: d.type, details: d.details, fatal: d.fatal,
          url: d.frag ? d.frag.url : d.url || (d.context && d.context.url) || null,
          sn: d.frag ? d.frag.sn : null, level: d.frag ? d.frag.level : null,
          message: d.error ? String(d.error.message || d.error) : d.reason || null,
          buffered: bufferedRanges(video),
        });
        if (d.fatal) finish();
      });
      hls.on(Hls.Events.AUDIO_TRACKS_UPDATED, (_, d) => {
        if (secondAudio && report.audioSwitched === null && d.audioTracks.length > 1) {
          hls.audioTrack = 1;
          report.audioSwitched = d.audioTracks[1].lang || d.audioTracks[1].name;
        }
      });
      hls.on(Hls.Events.MANIFEST_PARSED, start);
      hls.on(Hls.Events.LEVEL_SWITCHED, (_, d) => note("level", { level: d.level }));
      hls.on(Hls.Events.AUDIO_TRACK_SWITCHED, (_, d) => note("audioTrack", { id: d.id }));
      hls.loadSource(url);
      hls.attachMedia(video);
    } else if (player === "shaka") {
      shaka.polyfill.installAll();
      report.version = shaka.Player.version;
      if (!shaka.Player.isBrowserSupported()) { addError({ source: "shaka", fatal: true, message: "browser not supported" }); finish(); return; }
      shakaPlayer = new shaka.Player();
      shakaPlayer.addEventListener("error", (ev) => {
        const e = ev.detail;
        addError({ source: "shaka", fatal: e.severity === 2, severity: e.severity, category: e.category, code: e.code, message: e.message || null, data: JSON.stringify(e.data).slice(0, 500) });
        if (e.severity === 2) finish();
      });
      shakaPlayer.addEventListener("buffering", (ev) => {
        note("buffering", { buffering: ev.buffering });
        if (ev.buffering && playing) report.stalls.push({ kind: "shaka-buffering", t: video.currentTime, wall: wall(), buffered: bufferedRanges(video) });
      });
      shakaPlayer.addEventListener("variantchanged", () => note("variant"));
      // ClearKey keys given up front (key id hex -> key hex): the EME CDM then decrypts whatever key each
      // fragment names (cbcs key rotation), which shaka's HLS "identity" key handling does not track
      if (clearKeys) shakaPlayer.configure({ drm: { clearKeys } });
      shakaPlayer.attach(video)
        .then(() => shakaPlayer.load(url))
        .then(() => {
          start();
        })
        .catch((e) => { addError({ source: "shaka.load", fatal: true, code: e.code, message: String(e.message || e), data: JSON.stringify(e.data || null).slice(0, 500) }); finish(); });
    } else {
      addError({ source: "harness", fatal: true, message: "unknown player " + player });
      finish();
    }
  });
};

// Decoded pictures at given times, for comparing two packagings of the same media (e.g. clear and SAMPLE-AES):
// hls.js pinned to its highest level loads the whole entry, then for each time seeks there (paused) and draws the
// picture to a canvas; reports per time the SHA-256 of its RGBA pixels and a 16x9 thumbnail of block-mean luma.
window.captureFrames = function (opts) {
  const { url, times, timeoutMs = 20000 } = opts;
  const video = document.getElementById("video");
  video.muted = true;
  const report = { url, frames: [], errors: [], level: null, width: null, height: null };
  let hls = null;
  const fail = (e) => report.errors.push(e);
  const grab = async () => {
    const w = video.videoWidth, h = video.videoHeight;
    const canvas = document.createElement("canvas");
    canvas.width = w; canvas.height = h;
    const ctx = canvas.getContext("2d", { willReadFrequently: true });
    ctx.drawImage(video, 0, 0, w, h);
    const px = ctx.getImageData(0, 0, w, h).data;
    const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", px));
    const thumb = new Array(16 * 9).fill(0), count = new Array(16 * 9).fill(0);
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const i = (y * w + x) * 4, b = Math.floor((y * 9) / h) * 16 + Math.floor((x * 16) / w);
        thumb[b] += 0.299 * px[i] + 0.587 * px[i + 1] + 0.114 * px[i + 2];
        count[b]++;
      }
    }
    report.width = w; report.height = h;
    return { sha256: Array.from(digest, (v) => v.toString(16).padStart(2, "0")).join(""),
             thumb: thumb.map((v, i) => Math.round((v / count[i]) * 10) / 10) };
  };
  const run = new Promise((resolve) => {
    hls = new Hls({ debug: false, enableWorker: true, capLevelToPlayerSize: false, maxBufferLength: 600,
                    maxMaxBufferLength: 600, backBufferLength: Infinity });
    hls.on(Hls.Events.ERROR, (_, d) => {
      fail({ type: d.type, details: d.details, fatal: d.fatal, message: d.error ? String(d.error.message || d.error) : null });
      if (d.fatal) resolve();
    });
    hls.on(Hls.Events.MANIFEST_PARSED, (_, d) => {
      let best = 0;
      d.levels.forEach((l, i) => { if (l.height > d.levels[best].height) best = i; });
      report.level = best;
      hls.currentLevel = best;
    });
    let grabbing = false;
    hls.on(Hls.Events.BUFFER_EOS, async () => {
      // once every track is buffered to the end (BUFFER_EOS comes per track)
      if (grabbing || !(video.buffered.length && video.buffered.end(video.buffered.length - 1) >= video.duration - 0.1)) return;
      grabbing = true;
      try {
        for (const t of times) {
          // 'seeked' can come before the sought picture reaches the compositor (drawImage then draws the
          // previous one): wait for both, the picture's presentation reported by requestVideoFrameCallback
          const shown = await new Promise((resolve) => {
            let seeked = false, meta = null;
            const check = () => { if (seeked && meta) resolve(meta); };
            video.requestVideoFrameCallback((_, m) => { meta = m; check(); });
            video.addEventListener("seeked", () => { seeked = true; check(); }, { once: true });
            video.currentTime = t;
            setTimeout(() => resolve(meta), 5000);
          });
          report.frames.push(Object.assign({ t: video.currentTime, mediaTime: shown ? shown.mediaTime : null }, await grab()));
        }
      } catch (e) {
        fail({ message: String(e) });
      }
      resolve();
    });
    hls.loadSource(url);
    hls.attachMedia(video);
  });
  const timer = new Promise((resolve) => setTimeout(() => { fail({ message: "timeout" }); resolve(); }, timeoutMs));
  return Promise.race([run, timer]).then(() => Promise.resolve(hls && hls.destroy()).catch(() => {}).then(() => report));
};

// Plays an HLS URL to the end in hls.js (at 4x, muted) with one subtitle track selected, and reports every cue
// the player put on the video's text tracks: {language, label, cues: [{start, end, text}]} per track.
window.captureCues = function (opts) {
  const { url, language, rate = 4, timeoutMs = 20000 } = opts;
  const video = document.getElementById("video");
  video.muted = true;
  return new Promise((resolve) => {
    const errors = [];
    const hls = new Hls({ debug: false, enableWorker: true, renderTextTracksNatively: true });
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      const tracks = [];
      for (let i = 0; i < video.textTracks.length; i++) {
        const track = video.textTracks[i];
        const cues = [];
        for (let j = 0; track.cues && j < track.cues.length; j++) {
          const cue = track.cues[j];
          cues.push({ start: cue.startTime, end: cue.endTime, text: cue.text });
        }
        tracks.push({ language: track.language, label: track.label, mode: track.mode, cues });
      }
      hls.destroy();
      resolve({ tracks, errors, ended: video.ended, currentTime: video.currentTime });
    };
    hls.on(Hls.Events.ERROR, (_, d) => { errors.push({ type: d.type, details: d.details, fatal: d.fatal }); if (d.fatal) finish(); });
    // hls.js lists subtitle tracks after MANIFEST_PARSED and may pick one itself then: choose ours once they are there
    const choose = setInterval(() => {
      const index = hls.subtitleTracks.findIndex((t) => t.lang === language);
      if (index >= 0 && hls.subtitleTrack !== index) {
        hls.subtitleDisplay = true;
        hls.subtitleTrack = index;
      }
    }, 50);
    video.addEventListener("ended", () => clearInterval(choose));
    hls.on(Hls.Events.MANIFEST_PARSED, () => {
      video.playbackRate = rate;
      const p = video.play();
      if (p) p.catch((e) => errors.push({ type: "play", details: String(e) }));
    });
    video.addEventListener("ended", () => setTimeout(finish, 300));
    setTimeout(finish, timeoutMs);
    hls.loadSource(url);
    hls.attachMedia(video);
  });
};

// The same with shaka-player (a DASH MPD, or HLS): the cues its text displayer put on the video's text tracks.
window.captureShakaCues = function (opts) {
  const { url, language, rate = 4, timeoutMs = 20000 } = opts;
  const video = document.getElementById("video");
  video.muted = true;
  shaka.polyfill.installAll();
  const player = new shaka.Player();
  // without shaka's UI, cues go onto the video element's own text track (NativeTextDisplayer), where this reads them
  let displayer = null;
  player.configure("textDisplayFactory", () => (displayer = new shaka.text.NativeTextDisplayer(player)));
  const errors = [];
  player.addEventListener("error", (ev) => errors.push({ code: ev.detail.code, severity: ev.detail.severity }));
  const seen = new Map(); // the displayer may drop cues behind the playhead: keep every one it showed
  const collect = () => {
    for (let i = 0; i < video.textTracks.length; i++) {
      const track = video.textTracks[i];
      for (let j = 0; track.cues && j < track.cues.length; j++) {
        const c = track.cues[j];
        seen.set(`${c.startTime}|${c.endTime}|${c.text}`, { start: c.startTime, end: c.endTime, text: c.text, track: track.label });
      }
    }
  };
  const poll = setInterval(collect, 50);
  return new Promise((resolve) => {
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      clearInterval(poll);
      collect();
      const tracks = [{ language, label: "seen", cues: [...seen.values()] }];
      for (let i = 0; i < video.textTracks.length; i++) {
        const track = video.textTracks[i];
        const cues = [];
        for (let j = 0; track.cues && j < track.cues.length; j++) {
          cues.push({ start: track.cues[j].startTime, end: track.cues[j].endTime, text: track.cues[j].text });
        }
        tracks.push({ language: track.language, label: track.label, cues, all: true });
      }
      const listed = player.getTextTracks().map((t) => ({ language: t.language, active: t.active, roles: t.roles }));
      player.destroy().catch(() => {}).then(() => resolve({ tracks, listed, errors, ended: video.ended }));
    };
    video.addEventListener("ended", () => setTimeout(finish, 300));
    setTimeout(finish, timeoutMs);
    player.attach(video)
      .then(() => player.load(url))
      .then(() => {
        const chosen = player.getTextTracks().find((t) => t.language === language);
        if (chosen) player.selectTextTrack(chosen);
        if (displayer) displayer.setTextVisibility(true);
        video.playbackRate = rate;
        return video.play();
      })
      .catch((e) => { errors.push({ code: e.code, message: String(e.message || e) }); finish(); });
  });
};
