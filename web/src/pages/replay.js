// #/recordings/<id>: an environment's session recordings; #/replay/<id>/<name>: play one back.

import { describeError, routes } from '../api.js';
import { DesktopSession } from '../desktop.js';
import { h, replace } from '../dom.js';
import { createOverlay } from '../overlay.js';

export function recordingsPage(root, { id }, ctx) {
  const list = h('ul', { class: 'recordings', testid: 'recordings' });
  replace(root, h('div', { class: 'card' }, h('h1', null, `Recordings of ${id}`), list,
    h('a', { href: '#/envs' }, 'All environments')));
  routes.recordings(id).then((items) => {
    if (ctx.signal.aborted) return;
    replace(list, items.length
      ? items.map((r) => h('li', null, h('a', {
        href: `#/replay/${id}/${encodeURIComponent(r.name)}`, testid: 'recording',
      }, r.name), ` (${Math.ceil(r.bytes / 1024)} KiB)`))
      : [h('li', null, 'No recordings (the spec turns them on with security.recording).')]);
  }, (exc) => replace(list, h('li', { class: 'failure' }, describeError(exc))));
}

export function replayPage(root, { id, name }, ctx) {
  const container = h('div', { class: 'desktop', testid: 'desktop' });
  const desktop = new DesktopSession(container, {
    getPath: async () => (await routes.replayToken(id, decodeURIComponent(name))).websocket,
    viewOnly: true,
  });
  const overlay = createOverlay(desktop, { envId: id, viewOnly: true });
  overlay.setEnvState('replay');
  replace(root, h('div', { class: 'desk view-only' }, overlay.top, container, overlay.bottom));
  document.body.classList.add('desktop-mode');
  desktop.start();
  ctx.onCleanup(() => {
    desktop.destroy();
    document.body.classList.remove('desktop-mode', 'bars-hidden');
  });
}
