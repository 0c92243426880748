// GenOS web client: wire the routes and the top bar, register the service worker.

import { routes as api, session } from './api.js';
import { composePage } from './pages/compose.js';
import { envPage } from './pages/env.js';
import { envsPage } from './pages/envs.js';
import { loginPage } from './pages/login.js';
import { recordingsPage, replayPage } from './pages/replay.js';
import { viewPage } from './pages/view.js';
import { go, route, start } from './router.js';

route('#/', composePage);
route('#/login', (root, _params, ctx) => loginPage(root, { next: '#/' }, ctx), { auth: false });
route('#/envs', envsPage);
route('#/env/:id', envPage);
route('#/view/:id/:token', viewPage, { auth: false });
route('#/recordings/:id', recordingsPage);
route('#/replay/:id/:name', replayPage);

document.getElementById('signout')?.addEventListener('click', async () => {
  try {
    await api.logout();
  } catch {
    // the session ends here either way
  }
  session.clear();
  go('#/');
});

/**
 * `genos up` prints `#/env/<id>?login=<code>`: a one-time sign-in code. Redeem
 * it for a session, drop it from the address bar, then route as usual.
 */
async function redeemSignInLink() {
  const [path, query] = location.hash.split('?', 2);
  const code = new URLSearchParams(query ?? '').get('login');
  if (!code) return;
  history.replaceState(null, '', `${location.pathname}${path}`);
  try {
    const answer = await api.redeemLink(code);
    session.save({ token: answer.token, user: answer.user });
  } catch {
    // used or expired: the sign-in page follows
  }
}

redeemSignInLink().finally(() => start(document.getElementById('app'), loginPage));

if ('serviceWorker' in navigator && window.isSecureContext) {
  navigator.serviceWorker.register('sw.js').catch(() => {});
}
