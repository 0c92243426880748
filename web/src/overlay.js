// The bars around the desktop: environment and connection state, live viewer
// figures, and the actions (keyboard, input mode, clipboard, sound, files, Ctrl-Alt-Del,
// screenshot, fullscreen, share, suspend, resume, terminate), and a microphone
// button where the spec allows one (security.microphone), the Picture
// setting (tiles or video, picture.js) and, where the spec allows recording
// (security.recording), a Record button (record.js). A SPICE desktop
// (spice.js) gets Ctrl-Alt-Del, screenshot, fullscreen, reconnect and the
// lifecycle actions, and says why it has no share link. A signed-in RFB
// desktop also shows who has the keyboard and mouse (an agent or a person,
// GET .../computer/lease), a "Give back to agent" button while a person has
// it, and the agent's pending approvals with Approve / Decline.

import { describeError, routes } from './api.js';
import { flash, h, replace } from './dom.js';
import { acceptDrops, filesPanel } from './files.js';
import { ScreenKeyboard } from './keyboard.js';
import { MicrophoneChannel } from './microphone.js';
import { bandwidth, Picture, pictureControl } from './picture.js';
import { Recorder, recordPanel } from './record.js';
import { SoundChannel } from './sound.js';

const MODE_KEY = 'genos.inputMode';
// Share links are view-only, and SPICE is carried unparsed (input cannot be
// held back), so the gateway gives SPICE to control tokens only.
const SPICE_NO_SHARE = 'No share link: SPICE has no view-only mode, so every viewer could type and click.';

/**
 * @param {import('./desktop.js').DesktopSession|import('./spice.js').SpiceSession} desktop
 * @param {{envId: string, viewOnly: boolean, spice?: boolean, microphone?: boolean,
 *   recording?: boolean, onAction?: (verb: string) => Promise<void>}} options
 *   spice: `desktop` is a SpiceSession (no keyboard, touch modes, clipboard or share link).
 *   microphone: the spec allows a microphone (a Mic button; off until pressed).
 *   recording: the spec allows recording (a Record button).
 *   onAction: runs `suspend`, `resume` or `terminate` (the page owns the API call and the state).
 * @returns {{top: HTMLElement, bottom: HTMLElement, setEnvState: Function, setStats: Function}}
 */
export function createOverlay(desktop, {
  envId, viewOnly, spice = false, microphone = false, recording = false, onAction,
}) {
  const envState = h('span', { class: 'badge', testid: 'env-state' }, '');
  const conn = h('span', { class: 'conn', testid: 'conn-state' }, 'connecting');
  const stats = h('span', { class: 'stats', testid: 'overlay-stats' }, viewOnly ? 'view only' : '');
  const pictureStats = h('span', { class: 'stats picture-stats', testid: 'picture-stats', hidden: true });
  const control = h('span', { class: 'badge', testid: 'control-state', hidden: true }, '');
  const asks = h('div', { class: 'panel overlay-ui', testid: 'approvals', hidden: true });
  const panel = h('div', { class: 'panel overlay-ui', testid: 'overlay-panel', hidden: true });
  const keyboard = spice ? null : new ScreenKeyboard(() => desktop.rfb);
  const received = { text: '' };
  const buttons = {};

  const button = (name, label, onclick, title = label, cls = null) => {
    buttons[name] = h('button', { type: 'button', testid: `action-${name}`, title, onclick, class: cls }, label);
    return buttons[name];
  };
  const togglePanel = (name, build) => {
    if (!panel.hidden && panel.dataset.panel === name) {
      panel.hidden = true;
      return;
    }
    panel.dataset.panel = name;
    replace(panel, build());
    panel.hidden = false;
  };
  const act = (verb) => async () => {
    const b = buttons[verb];
    if (verb === 'terminate' && b.dataset.armed !== 'true') {
      b.dataset.armed = 'true';
      b.textContent = 'Sure? Terminate';
      setTimeout(() => {
        b.dataset.armed = 'false';
        b.textContent = 'Terminate';
      }, 4000);
      return;
    }
    b.disabled = true;
    try {
      await onAction(verb);
    } catch (exc) {
      flash(describeError(exc));
    } finally {
      b.disabled = false;
    }
  };

  // Sound (RFB desktops with control): its own WebSocket on a fresh display token.
  const sound = viewOnly || spice || !desktop.getPath ? null
    : new SoundChannel(async () => (await desktop.getPath()).replace('/display?', '/audio?'));
  if (sound) window.genosSound = sound;
  desktop.addEventListener('status', (ev) => {
    if (ev.detail.state === 'connected') sound?.start();
    if (ev.detail.state === 'disconnected') sound?.stop();
  });
  // The picture (RFB desktops with control): tiles or video, on a fresh display token.
  const picture = viewOnly || spice || !desktop.getPath ? null
    : new Picture(desktop, async () => (await desktop.getPath()).replace('/display?', '/video?'));
  if (picture) {
    window.genosVideo = picture;
    pictureStats.hidden = false;
    const showPicture = () => {
      pictureStats.textContent = picture.describe();
      pictureStats.dataset.mode = picture.mode;
    };
    picture.addEventListener('change', showPicture);
    showPicture();
  }
  const recorder = recording && !viewOnly && !spice ? new Recorder(envId) : null;
  const recordBox = recorder ? recordPanel(recorder) : null;
  recorder?.addEventListener('change', () => {
    buttons.record.textContent = recorder.label();
    buttons.record.dataset.state = recorder.state;
  });
  // Microphone (RFB desktops with control, where the spec allows it): off until pressed.
  const mic = viewOnly || spice || !microphone || !desktop.getPath ? null
    : new MicrophoneChannel(async () => (await desktop.getPath()).replace('/display?', '/microphone?'));
  if (mic) window.genosMic = mic;
  const showMic = () => {
    buttons.mic.textContent = mic.on ? 'Mic: on' : 'Mic: off';
    buttons.mic.dataset.on = String(mic.on);
  };
  mic?.addEventListener('closed', (ev) => {
    showMic();
    if (ev.detail.reason) flash(`Microphone closed: ${ev.detail.reason}`);
  });
  const toggleMic = async () => {
    if (mic.on) {
      mic.stop();
    } else {
      try {
        await mic.start();
      } catch (exc) {
        flash(`Microphone: ${exc.message ?? exc}`);
      }
    }
    showMic();
  };
  desktop.addEventListener('status', (ev) => {
    if (ev.detail.state === 'disconnected' && mic?.on) {
      mic.stop();
      showMic();
    }
  });
  const toggleSound = () => {
    sound.setMuted(!sound.muted);
    buttons.sound.textContent = sound.muted ? 'Sound: off' : 'Sound: on';
    buttons.sound.dataset.muted = String(sound.muted);
  };

  desktop.addEventListener('status', (ev) => {
    const { state, reason } = ev.detail;
    conn.textContent = reason && state !== 'connected' ? `${state}: ${reason}` : state;
    conn.dataset.state = state;
    if (buttons.reconnect) buttons.reconnect.classList.toggle('primary', state === 'closed');
  });
  desktop.addEventListener('clipboard', (ev) => {
    received.text = ev.detail.text;
    const out = panel.querySelector('[data-testid="clipboard-received"]');
    if (out) out.textContent = received.text;
  });

  const modeButton = () => {
    const mode = localStorage.getItem(MODE_KEY) === 'trackpad' ? 'trackpad' : 'direct';
    desktop.touch.mode = mode;
    const b = button('mode', modeLabel(mode), () => {
      const next = desktop.touch.mode === 'direct' ? 'trackpad' : 'direct';
      desktop.touch.mode = next;
      localStorage.setItem(MODE_KEY, next);
      b.textContent = modeLabel(next);
    }, 'Touch input: direct or trackpad', 'touch-only');
    return b;
  };

  const clipboardPanel = () => {
    const text = h('textarea', { testid: 'clipboard-send-text', rows: '3', placeholder: 'Text to paste into the desktop' });
    return [
      h('label', { class: 'field' }, 'Send to the desktop', text),
      h('button', {
        type: 'button', testid: 'clipboard-send', class: 'primary',
        onclick: () => {
          desktop.rfb?.clipboardPasteFrom(text.value);
          flash('Sent to the desktop clipboard.', 'info');
        },
      }, 'Send'),
      h('p', { class: 'muted' }, 'From the desktop:'),
      h('pre', { testid: 'clipboard-received', class: 'received' }, received.text || '(nothing copied yet)'),
    ];
  };

  const sharePanel = () => {
    const url = h('input', { testid: 'share-url', readOnly: true, value: 'creating a view-only link...' });
    const copy = h('button', { type: 'button', testid: 'share-copy', disabled: true }, 'Copy');
    copy.addEventListener('click', () => copyText(url));
    routes.displayToken(envId, 'view').then((tok) => {
      url.value = tok.share_url || `${location.origin}${location.pathname}#/view/${envId}/${tok.token}`;
      url.dataset.expires = tok.expires ?? '';
      copy.disabled = false;
      url.select();
    }, (exc) => {
      url.value = '';
      flash(describeError(exc));
    });
    return [h('label', { class: 'field' }, 'View-only link (anyone with it can watch)', url), copy];
  };

  const showLease = (lease) => {
    const holder = lease?.holder;
    control.hidden = !holder;
    control.dataset.kind = holder?.kind ?? '';
    control.textContent = !holder ? '' : holder.kind === 'agent'
      ? `agent ${holder.name} in control` : `${holder.name} in control`;
    if (buttons['give-back']) buttons['give-back'].hidden = holder?.kind !== 'person';
  };
  const showAsks = (pending) => {
    asks.hidden = !pending.length;
    replace(asks, pending.map((a) => h('div', { class: 'approval', testid: 'approval', 'data-id': a.id },
      h('span', {}, `${a.requested_by} asks: ${a.description}`),
      h('button', { type: 'button', testid: 'approve', class: 'primary', onclick: () => decide(a.id, 'approve') }, 'Approve'),
      h('button', { type: 'button', testid: 'decline', onclick: () => decide(a.id, 'decline') }, 'Decline'))));
  };
  const decide = async (approval, decision) => {
    try {
      await routes.decide(envId, approval, decision);
      showAsks(await routes.approvals(envId));
    } catch (exc) {
      flash(describeError(exc));
    }
  };
  const giveBack = async () => {
    try {
      showLease(await routes.giveBack(envId));
    } catch (exc) {
      flash(describeError(exc));
    }
  };
  // Poll while the overlay is on the page (a second and a half apart: both answers are tiny).
  function watchComputer() {
    let attached = false;
    const tick = async () => {
      if (document.body.contains(top)) attached = true;
      else if (attached) return;
      try {
        showLease(await routes.lease(envId));
        showAsks(await routes.approvals(envId));
      } catch {
        // not running yet, or gone: the page's own state shows that
      }
      setTimeout(tick, 1500);
    };
    setTimeout(tick, 0);
  }

  const top = h('div', { class: 'desk-top overlay-ui', testid: 'overlay' },
    h('a', { href: '#/envs', class: 'back', testid: 'action-close', title: 'Back to environments' }, '‹'),
    envState, conn, stats, pictureStats, control,
    h('button', {
      type: 'button', class: 'hide-bars', testid: 'action-hide', title: 'Hide the bars',
      onclick: () => document.body.classList.toggle('bars-hidden'),
    }, '⤢'));

  const lifecycle = () => [button('suspend', 'Suspend', act('suspend')),
    button('resume', 'Resume', act('resume')),
    button('terminate', 'Terminate', act('terminate'))];
  const common = () => [button('screenshot', 'Screenshot', () => screenshot(desktop, envId, picture)),
    button('fullscreen', 'Fullscreen', fullscreen)];
  let tools;
  if (viewOnly) {
    tools = common();
  } else if (spice) {
    stats.textContent = 'SPICE';
    tools = [button('cad', 'Ctrl-Alt-Del', () => desktop.sendCtrlAltDel()),
      ...common(),
      button('reconnect', 'Reconnect', () => desktop.reconnect(), 'Open the SPICE connection again'),
      h('span', { class: 'tools-note', testid: 'share-unavailable' }, SPICE_NO_SHARE),
      ...lifecycle()];
  } else {
    tools = [button('keyboard', 'Keyboard', () => keyboard.toggle(), 'On-screen keyboard', 'touch-only'),
      modeButton(),
      button('clipboard', 'Clipboard', () => togglePanel('clipboard', clipboardPanel)),
      sound?.supported ? button('sound', 'Sound: on', toggleSound, 'Mute or unmute the desktop') : null,
      mic?.supported ? button('mic', 'Mic: off', toggleMic, 'Send your microphone to the desktop') : null,
      picture ? pictureControl(picture) : null,
      recorder ? button('record', 'Record', () => togglePanel('record', () => recordBox),
        'Record the screen and its sound to an MP4 file') : null,
      button('files', 'Files', () => togglePanel('files', () => filesPanel(envId)), 'Upload and download files'),
      button('cad', 'Ctrl-Alt-Del', () => desktop.rfb?.sendCtrlAltDel()),
      ...common(),
      button('share', 'Share', () => togglePanel('share', sharePanel)),
      button('give-back', 'Give back to agent', () => giveBack(), 'Let the agent use the keyboard and mouse again'),
      ...lifecycle()];
    buttons['give-back'].hidden = true;
    watchComputer();
  }
  if (!viewOnly && !spice && desktop.container) acceptDrops(desktop.container, envId);
  const bottom = h('div', { class: 'desk-bottom overlay-ui' },
    keyboard?.keys, asks, panel, keyboard?.input, h('div', { class: 'tools', testid: 'overlay-tools' }, tools));

  return {
    top,
    bottom,
    setEnvState(state) {
      envState.textContent = state;
      envState.dataset.state = state;
      if (buttons.suspend) buttons.suspend.disabled = state !== 'running';
      if (buttons.resume) buttons.resume.disabled = state !== 'suspended';
    },
    /** Show one row of GET /connections (or null). */
    setStats(row) {
      if (!row) {
        stats.textContent = '';
        return;
      }
      stats.textContent = [
        row.rtt_ms !== null && row.rtt_ms !== undefined ? `${Math.round(row.rtt_ms)} ms` : null,
        row.fps !== null && row.fps !== undefined ? `${Math.round(row.fps)} fps` : null,
        row.kbps !== null && row.kbps !== undefined ? bandwidth(row.kbps) : null,
        row.quality !== null && row.quality !== undefined ? `q${row.quality}` : null,
      ].filter(Boolean).join(' · ');
      Object.assign(stats.dataset, { rtt: row.rtt_ms ?? '', fps: row.fps ?? '', kbps: row.kbps ?? '' });
    },
  };
}

function modeLabel(mode) {
  return mode === 'direct' ? 'Touch: direct' : 'Touch: trackpad';
}

function screenshot(desktop, envId, picture) {
  const url = picture?.screenshot() ?? desktop.screenshot();
  if (!url) return;
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  const a = h('a', { href: url, download: `genos-${envId}-${stamp}.png` });
  document.body.append(a);
  a.click();
  a.remove();
}

function fullscreen() {
  const doc = document;
  if (doc.fullscreenElement || doc.webkitFullscreenElement) {
    (doc.exitFullscreen ?? doc.webkitExitFullscreen).call(doc);
    return;
  }
  const root = doc.documentElement;
  const request = root.requestFullscreen ?? root.webkitRequestFullscreen;
  request?.call(root, { navigationUI: 'hide' })?.catch?.((exc) => flash(describeError(exc)));
}

async function copyText(input) {
  try {
    await navigator.clipboard.writeText(input.value);
    flash('Link copied.', 'info');
  } catch {
    input.select();
    flash('Select the link and copy it.', 'info');
  }
}
