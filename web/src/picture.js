// Which picture a desktop shows: noVNC's tiles (RFB) or H.264 video
// (video.js), as the viewer's setting says: Auto, Tiles or Video. Input goes
// by RFB whatever shows: noVNC stays connected, its canvas stays in place
// (transparent, still taking the pointer and keys) under our video canvas,
// and while the video shows noVNC asks for no pictures (updates.js).
// window.genosVideo is the Picture of the open desktop (framesDrawn, mode,
// levels, setting), for tests.

import { h } from './dom.js';
import { UpdateGate } from './updates.js';
import { VideoChannel, videoSupport } from './video.js';

const SETTING_KEY = 'genos.picture';
export const SETTINGS = { auto: 'Auto', rfb: 'Tiles (RFB)', video: 'Video' };

// The Auto rule. Every SAMPLE_MS the picture on screen (noVNC's canvas, or
// ours while the video shows) is point-sampled on a THUMB_W x THUMB_H grid and
// compared with the sample before; the grid is cut in CELL x CELL cells, and a
// cell has changed when any of its points moved by more than POINT_DIFF
// (|dR| + |dG| + |dB|: above the video's coding noise). A sample's share is
// the fraction of changed cells: the part of the screen that changed, as RFB's
// damage would say, at a cell's granularity (a 32 px square at 1280x800).
// - Tiles -> video: for BUSY_MS, at least 3/4 of the samples have a share of
//   BUSY_SHARE or more: a large part of the screen is moving several times a
//   second (a film, a game, scrolling), where RFB's tiles cost the most.
// - Video -> tiles: for STILL_MS, every sample has a share under STILL_SHARE:
//   the picture is still, and tiles are sharp and cost nothing when idle.
// The gap between the two shares, the longer still period and HOLD_MS after
// any switch keep it from flapping. Video that gives no frame within
// VIDEO_WAIT_MS (no encoder: a VM) is not tried again for BLOCK_MS.
const SAMPLE_MS = 250;
const THUMB_W = 320;
const THUMB_H = 200;
const CELL = 8;
const POINT_DIFF = 60;
const BUSY_SHARE = 0.3;
const BUSY_MS = 2000;
const STILL_SHARE = 0.02;
const STILL_MS = 3000;
const HOLD_MS = 4000;
const VIDEO_WAIT_MS = 8000;
const BLOCK_MS = 30000;

export class Picture extends EventTarget {
  /**
   * @param {import('./desktop.js').DesktopSession} desktop
   * @param {() => Promise<string>} getPath the video WebSocket path with a fresh token.
   * Events: `change` when the mode, the levels or the support changed.
   */
  constructor(desktop, getPath) {
    super();
    this.desktop = desktop;
    const saved = localStorage.getItem(SETTING_KEY);
    this.setting = saved in SETTINGS ? saved : 'auto';
    this.mode = 'rfb'; // what is on screen
    this.autoWant = 'rfb'; // Auto's choice
    this.support = null; // {ok, why} once the browser has answered
    this.gate = null;
    this.rfbUpdates = 0;
    this.switches = [];
    this.samples = [];
    this.lastShare = 0;
    // In the page only while video is on (the desktop keeps one canvas otherwise).
    this.canvas = h('canvas', { class: 'video-screen', testid: 'video-screen', hidden: true, 'aria-hidden': 'true' });
    this.video = new VideoChannel(this.canvas, getPath);
    this.video.addEventListener('frame', () => this.framed());
    this.video.addEventListener('levels', () => this.changed());
    this.video.addEventListener('closed', (ev) => this.closed(ev.detail));
    this.thumb = new OffscreenCanvas(THUMB_W, THUMB_H).getContext('2d', { willReadFrequently: true });
    this.thumb.imageSmoothingEnabled = false; // points, not averages: a changed glyph counts
    desktop.addEventListener('status', (ev) => this.status(ev.detail.state));
    this.resizeObserver = new ResizeObserver(() => this.resized());
    this.resizeObserver.observe(desktop.container);
    videoSupport().then((support) => {
      this.support = support;
      this.apply();
    });
  }

  get framesDrawn() {
    return this.video.framesDrawn;
  }

  get levels() {
    return this.video.levels;
  }

  /** Choose Auto, Tiles or Video (kept for next time). */
  set(setting) {
    if (!(setting in SETTINGS)) return;
    this.setting = setting;
    this.autoWant = this.mode;
    localStorage.setItem(SETTING_KEY, setting);
    this.apply();
  }

  /** The mode the setting asks for now. */
  get wanted() {
    if (!this.support?.ok || this.desktop.state !== 'connected') return 'rfb';
    if (this.setting === 'auto') return Date.now() < (this.blockedUntil ?? 0) ? 'rfb' : this.autoWant;
    return this.setting;
  }

  apply() {
    if (this.wanted === 'video') {
      if (!this.video.active) this.waitingSince = Date.now();
      if (!this.canvas.isConnected) this.desktop.container.append(this.canvas);
      this.video.start();
    } else {
      this.video.stop();
      this.problem = null;
      if (this.mode === 'video') this.showTiles();
      else if (!this.revealing) this.canvas.remove();
    }
    this.changed();
  }

  status(state) {
    if (state === 'connected') {
      this.gate = new UpdateGate(this.desktop.rfb);
      this.gate.onUpdate = () => this.rfbUpdated();
      if (this.mode === 'video') this.gate.pause();
      this.timer ??= setInterval(() => this.sample(), SAMPLE_MS);
    } else {
      this.gate = null;
    }
    if (state === 'disconnected') {
      clearInterval(this.timer);
      this.timer = null;
    }
    this.apply();
  }

  /** The video channel closed (it tries again by itself while wanted). */
  closed({ code, reason }) {
    if (!this.video.active) return;
    this.problem = reason || (code ? `closed (${code})` : 'closed');
    this.changed();
  }

  framed() {
    if (this.problem) {
      this.problem = null;
      this.changed();
    }
    if (this.wanted === 'video' && this.mode !== 'video') this.showVideo();
    if (this.mode === 'video') this.place();
  }

  showVideo() {
    this.mode = 'video';
    this.revealing = false;
    this.switched();
    this.canvas.hidden = false;
    this.desktop.container.classList.add('video-mode');
    this.gate?.pause();
  }

  /** Back to tiles: ask noVNC for the whole screen, and keep the video up until it has it. */
  showTiles() {
    this.mode = 'rfb';
    this.switched();
    if (this.gate?.paused) {
      this.revealing = true;
      this.gate.resume();
      clearTimeout(this.revealTimer);
      this.revealTimer = setTimeout(() => this.reveal(), 2000);
    } else {
      this.reveal();
    }
  }

  reveal() {
    this.revealing = false;
    clearTimeout(this.revealTimer);
    if (this.mode !== 'rfb') return;
    this.canvas.hidden = true;
    this.desktop.container.classList.remove('video-mode');
    if (!this.video.active) this.canvas.remove();
  }

  rfbUpdated() {
    this.rfbUpdates += 1;
    if (this.revealing) requestAnimationFrame(() => this.reveal());
  }

  switched() {
    this.samples = [];
    this.previous = null;
    this.switches.push({ mode: this.mode, at: Date.now() });
    this.changed();
  }

  changed() {
    this.dispatchEvent(new CustomEvent('change'));
  }

  /** noVNC's canvas (where input goes). */
  get screen() {
    return this.desktop.rfb?._canvas ?? this.desktop.container.querySelector('.screen-host canvas');
  }

  /** Lay our canvas exactly over noVNC's: same box, same zoom transform, pixel for pixel. */
  place() {
    const screen = this.screen;
    if (!screen?.width) return;
    let x = 0;
    let y = 0;
    for (let el = screen; el && el !== this.desktop.container; el = el.offsetParent) {
      x += el.offsetLeft;
      y += el.offsetTop;
    }
    const sx = screen.offsetWidth / screen.width;
    const sy = screen.offsetHeight / screen.height;
    const style = {
      left: `${x}px`,
      top: `${y}px`,
      width: `${this.canvas.width * sx}px`,
      height: `${this.canvas.height * sy}px`,
      transform: screen.style.transform,
      transformOrigin: screen.style.transformOrigin,
    };
    for (const [key, value] of Object.entries(style)) {
      if (this.canvas.style[key] !== value) this.canvas.style[key] = value;
    }
    // The video is the screen rounded down to even sizes; anything else means
    // the screen changed size and noVNC, asking for nothing, has not heard yet.
    const stale = Math.abs(screen.width - this.canvas.width) > 1 || Math.abs(screen.height - this.canvas.height) > 1;
    if (stale && Date.now() - (this.poked ?? 0) > 1000) {
      this.poked = Date.now();
      this.gate?.poke();
    }
  }

  resized() {
    if (this.mode !== 'video') return;
    this.place();
    // noVNC asks for the new size 0.5 s after a resize; the answer comes with an update.
    clearTimeout(this.resizeTimer);
    this.resizeTimer = setTimeout(() => this.gate?.poke(), 1200);
  }

  /** One Auto sample (see the rule above). */
  sample() {
    const now = Date.now();
    if (this.setting !== 'auto' || !this.support?.ok || document.hidden) return;
    if (this.wanted === 'video' && this.mode === 'rfb') {
      if (now - this.waitingSince > VIDEO_WAIT_MS) {
        this.blockedUntil = now + BLOCK_MS;
        this.autoWant = 'rfb';
        this.apply();
      }
      return;
    }
    const share = this.measure(this.mode === 'video' ? this.canvas : this.screen);
    if (share === null) return;
    this.lastShare = share;
    this.samples.push({ at: now, share });
    while (this.samples.length && now - this.samples[0].at > Math.max(BUSY_MS, STILL_MS)) this.samples.shift();
    if (now - (this.switches.at(-1)?.at ?? 0) < HOLD_MS) return;
    if (this.mode === 'rfb' && this.busy(now)) {
      this.autoWant = 'video';
      this.apply();
    } else if (this.mode === 'video' && this.still(now)) {
      this.autoWant = 'rfb';
      this.apply();
    }
  }

  busy(now) {
    const recent = this.covering(now, BUSY_MS);
    return recent !== null && recent.filter((s) => s.share >= BUSY_SHARE).length >= recent.length * 0.75;
  }

  still(now) {
    const recent = this.covering(now, STILL_MS);
    return recent !== null && recent.every((s) => s.share < STILL_SHARE);
  }

  /** The samples of the last `ms`, or null if they do not span it yet. */
  covering(now, ms) {
    if (!this.samples.length || now - this.samples[0].at < ms - SAMPLE_MS) return null;
    return this.samples.filter((s) => now - s.at <= ms);
  }

  /** The share of cells that changed since the last call (null: nothing to compare yet). */
  measure(source) {
    if (!source?.width || !source.height) return null;
    this.thumb.drawImage(source, 0, 0, THUMB_W, THUMB_H);
    const data = this.thumb.getImageData(0, 0, THUMB_W, THUMB_H).data;
    const before = this.previous;
    this.previous = data;
    if (!before) return null;
    const cols = THUMB_W / CELL;
    const changed = new Uint8Array(cols * (THUMB_H / CELL));
    for (let y = 0; y < THUMB_H; y++) {
      for (let x = 0; x < THUMB_W; x++) {
        const i = (y * THUMB_W + x) * 4;
        const diff = Math.abs(data[i] - before[i]) + Math.abs(data[i + 1] - before[i + 1])
          + Math.abs(data[i + 2] - before[i + 2]);
        if (diff > POINT_DIFF) changed[Math.floor(y / CELL) * cols + Math.floor(x / CELL)] = 1;
      }
    }
    return changed.reduce((n, c) => n + c, 0) / changed.length;
  }

  /** What shows, for the overlay's stats. */
  describe() {
    const prefix = this.setting === 'auto' ? 'Auto: ' : '';
    if (this.mode !== 'video') {
      const trouble = this.wanted === 'video' && this.problem ? ` (video: ${this.problem})` : '';
      return `${prefix}tiles${trouble}`;
    }
    const lv = this.levels;
    return lv ? `${prefix}video ${lv.fps} fps · ${bandwidth(lv.kbps)}` : `${prefix}video`;
  }

  /** The video picture as a PNG data URL while it shows (else null: noVNC's is right). */
  screenshot() {
    return this.mode === 'video' ? this.canvas.toDataURL('image/png') : null;
  }
}

export function bandwidth(kbps) {
  return kbps >= 1000 ? `${(kbps / 1000).toFixed(1)} Mbit/s` : `${Math.round(kbps)} kbit/s`;
}

/** The Picture setting for the overlay's tools: a select, and a note when video cannot work here. */
export function pictureControl(picture) {
  const select = h('select', {
    testid: 'picture-setting',
    title: 'Picture: Auto switches to video while much of the screen moves',
    onchange: () => picture.set(select.value),
  }, Object.entries(SETTINGS).map(([value, label]) => h('option', { value }, `Picture: ${label}`)));
  select.value = picture.setting;
  const note = h('span', { class: 'tools-note', testid: 'picture-note', hidden: true });
  const show = () => {
    const unsupported = picture.support && !picture.support.ok;
    for (const option of select.options) option.disabled = unsupported && option.value !== 'rfb';
    select.value = unsupported ? 'rfb' : picture.setting;
    note.hidden = !unsupported;
    note.textContent = unsupported ? `Tiles only: ${picture.support.why}.` : '';
  };
  picture.addEventListener('change', show);
  show();
  return [select, note];
}
