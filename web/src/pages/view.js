// #/view/<id>/<token>: a shared view-only link; no sign-in, the token is the key.

import { routes } from '../api.js';
import { DesktopSession } from '../desktop.js';
import { h, replace } from '../dom.js';
import { createOverlay } from '../overlay.js';

export function viewPage(root, { id, token }, ctx) {
  const container = h('div', { class: 'desktop', testid: 'desktop' });
  const desktop = new DesktopSession(container, {
    getPath: async () => routes.displayPath(id, token),
    viewOnly: true,
  });
  const overlay = createOverlay(desktop, { envId: id, viewOnly: true });
  overlay.setEnvState('view only');
  replace(root, h('div', { class: 'desk view-only' }, overlay.top, container, overlay.bottom));
  document.body.classList.add('desktop-mode');
  desktop.start();
  ctx.onCleanup(() => {
    desktop.destroy();
    document.body.classList.remove('desktop-mode', 'bars-hidden');
  });
}
