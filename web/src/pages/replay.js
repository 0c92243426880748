// #/recordings/<id>: an environment's session recordings; #/replay/<id>/<name>: play one back.

import { describeError, routes } from '../api.js';
import { h, replace } from '../dom.js';
import { viewOnlyDesktop } from './view.js';

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
  const getPath = async () => (await routes.replayToken(id, decodeURIComponent(name))).websocket;
  viewOnlyDesktop(root, ctx, id, getPath, 'replay');
}
