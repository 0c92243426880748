// #/view/<id>/<token>: a shared view-only link; no sign-in, the token is the key.

import { routes } from '../api.js';
import { DesktopSession } from '../desktop.js';
import { h, replace } from '../dom.js';
import { createOverlay } from '../overlay.js';

export function viewPage(root, { id, token }, ctx) {
  viewOnlyDesktop(root, ctx, id, async () => routes.displayPath(id, token), 'view only');
}

/** A desktop that only shows (a share link, a replay): canvas, overlay, cleanup. */
export function viewOnlyDesktop(root, ctx, id, getPath, label) {
  const container = h('div', { class: 'desktop', testid: 'desktop' });
  const desktop = new DesktopSession(container, { getPath, viewOnly: true });
  const overlay = createOverlay(desktop, { envId: id, viewOnly: true });
  overlay.setEnvState(label);
  replace(root, h('div', { class: 'desk view-only' }, overlay.top, container, overlay.bottom));
  document.body.classList.add('desktop-mode');
  desktop.start();
  ctx.onCleanup(() => {
    desktop.destroy();
    document.body.classList.remove('desktop-mode', 'bars-hidden');
  });
}
