// A minimal service worker so GenOS can be installed as an app. It caches
// nothing: every request (pages, API calls, the display WebSocket) goes to
// the network as if there were no worker (it has no fetch handler).
self.addEventListener('install', () => self.skipWaiting());
self.addEventListener('activate', (event) => event.waitUntil(self.clients.claim()));
