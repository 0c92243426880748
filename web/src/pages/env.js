// #/env/<id>: live progress from the event stream, then the desktop.

import { describeError, routes, session } from '../api.js';
import { DesktopSession } from '../desktop.js';
import { flash, h, replace } from '../dom.js';
import { followEvents } from '../events.js';
import { createOverlay } from '../overlay.js';
import { go } from '../router.js';
import { SpiceSession } from '../spice.js';

const FINAL = new Set(['terminated', 'failed', 'lost']);
const DESKTOP = new Set(['running', 'suspended']);

export function envPage(root, { id }, ctx) {
  const view = { env: null, state: null, step: null, messages: [], mode: null };
  const progress = progressCard(id);
  let desk = null;
  let reconcileTimer = null;
  let early = null;

  const update = () => {
    // Batch bursts (the stream replays history on connect) into one redraw.
    clearTimeout(reconcileTimer);
    reconcileTimer = setTimeout(reconcile, 40);
  };

  function reconcile() {
    if (ctx.signal.aborted || !view.state) return;
    if (DESKTOP.has(view.state)) {
      if (!desk) {
        desk = mountDesktop(root, id, ctx, setState, {
          early,
          spice: servesSpice(view.env),
          microphone: Boolean(view.env?.spec?.security?.microphone),
          recording: Boolean(view.env?.spec?.security?.recording),
        });
      }
      early = null;
      desk.show(view.state);
    } else {
      if (desk) {
        desk.destroy();
        desk = null;
      }
      if (!progress.el.isConnected) replace(root, progress.el);
      progress.draw(view);
    }
  }

  function setState(env) {
    view.env = env;
    view.state = env.state;
    update();
  }

  ctx.onCleanup(() => {
    clearTimeout(reconcileTimer);
    desk?.destroy();
  });

  // Ask for a display token alongside the record: a running desktop connects
  // one round trip sooner (a refused token is simply asked for again later).
  early = routes.displayToken(id, 'control').catch(() => null);
  routes.get(id, { signal: ctx.signal }).then((env) => {
    view.env = env;
    view.state = env.state;
    reconcile(); // at once: a running environment's desktop need not wait for the history
    followEvents(routes.eventsPath(id), {
      signal: ctx.signal,
      isDone: () => FINAL.has(view.state),
      onEvent(event) {
        if (event.state) view.state = event.state;
        if (event.data?.steps) view.step = event.data;
        if (event.message) view.messages.push(event);
        if (event.type === 'error' && event.message) view.failure = event.message;
        update();
      },
      onError(exc) {
        if (exc.status) flash(describeError(exc));
      },
    });
  }, (exc) => {
    if (exc.name === 'AbortError') return;
    replace(root, h('div', { class: 'card' }, h('h1', null, 'Environment not found'),
      h('p', null, describeError(exc)), h('a', { href: '#/envs' }, 'Your environments')));
  });
}

function progressCard(id) {
  const title = h('h1', null, `Environment ${id}`);
  const state = h('span', { class: 'badge', testid: 'env-state' }, '...');
  const bar = h('progress', { testid: 'progress', max: 1 });
  const label = h('p', { class: 'step', testid: 'progress-label' }, 'Waiting for the first event...');
  const log = h('ol', { class: 'log', testid: 'event-log' });
  const failure = h('p', { class: 'failure', testid: 'failure', hidden: true });
  const cancel = h('button', { type: 'button', testid: 'action-terminate' }, 'Cancel');
  const again = h('a', { href: '#/', class: 'button primary', hidden: true, testid: 'new-env' }, 'New environment');
  cancel.addEventListener('click', async () => {
    cancel.disabled = true;
    try {
      await routes.terminate(id);
    } catch (exc) {
      flash(describeError(exc));
    } finally {
      cancel.disabled = false;
    }
  });
  const el = h('div', { class: 'card progress-card', testid: 'progress-card' },
    title, h('div', { class: 'row' }, state), bar, label, failure, log,
    h('div', { class: 'row' }, cancel, again, h('a', { href: '#/envs' }, 'All environments')));

  return {
    el,
    draw(view) {
      const env = view.env;
      if (env?.summary) title.textContent = env.summary;
      state.textContent = view.state;
      state.dataset.state = view.state;
      const final = FINAL.has(view.state);
      let text = '';
      if (view.step?.steps) {
        bar.max = view.step.steps;
        bar.value = final && view.state === 'terminated' ? view.step.steps : view.step.step;
        text = `Step ${view.step.step} of ${view.step.steps}`;
      } else if (final) {
        bar.max = 1;
        bar.value = 1;
      }
      const last = view.messages.at(-1);
      if (last) text = text ? `${text}: ${last.message}` : last.message;
      if (view.state === 'queued' && env?.queue_position) text = `Queued, position ${env.queue_position}`;
      label.textContent = text || 'Waiting for the first event...';
      replace(log, view.messages.slice(-8).map((e) => h('li', { class: e.type },
        h('time', null, (e.time ?? '').slice(11, 19)), ' ', e.message)));
      const reason = view.failure ?? env?.failure_reason;
      failure.hidden = !['failed', 'lost'].includes(view.state) || !reason;
      failure.textContent = reason ?? '';
      cancel.hidden = final;
      again.hidden = !final;
    },
  };
}

/** A `vm` whose spec asks for SPICE: its desktop opens in spice-html5, not noVNC. */
export function servesSpice(env) {
  return env?.spec?.tier === 'vm' && env.spec.display?.protocol === 'spice';
}

/**
 * The desktop view: noVNC (or spice-html5 for a SPICE VM), the overlay,
 * connection figures; `show(state)` follows the env.
 */
function mountDesktop(root, id, ctx, setState, {
  early = null, spice = false, microphone = false, recording = false,
} = {}) {
  const container = h('div', { class: 'desktop', testid: 'desktop' });
  const veil = h('div', { class: 'veil', testid: 'veil', hidden: true });
  let prefetched = early;
  const getPath = async () => {
    let ready = prefetched && (await prefetched);
    prefetched = null;
    // Fetched when the page opened: a long provisioning may have outlived it.
    if (ready && !(Date.parse(ready.expires) - Date.now() > 30_000)) ready = null;
    const path = (ready ?? (await routes.displayToken(id, 'control'))).websocket;
    return spice ? routes.spicePath(path) : path;
  };
  const desktop = spice ? new SpiceSession(container, { getPath }) : new DesktopSession(container, { getPath });
  const overlay = createOverlay(desktop, {
    envId: id,
    viewOnly: false,
    spice,
    microphone,
    recording,
    async onAction(verb) {
      const env = await routes[verb](id);
      setState(env);
      if (verb === 'terminate') go('#/envs');
    },
  });
  container.append(veil);
  replace(root, h('div', { class: 'desk' }, overlay.top, container, overlay.bottom));
  document.body.classList.add('desktop-mode');

  const me = session.user;
  let polling = !spice; // the gateway's figures are of RFB viewers; SPICE passes through unparsed
  const poll = async () => {
    if (!polling || desktop.state !== 'connected') return;
    try {
      const rows = await routes.connections(id, { signal: ctx.signal });
      overlay.setStats(pickRow(rows, me));
    } catch {
      // figures are best-effort; the state line says when the link is down
    }
  };
  const timer = setInterval(poll, 1000);

  return {
    show(state) {
      overlay.setEnvState(state);
      if (state === 'running') {
        veil.hidden = true;
        desktop.start();
      } else {
        desktop.stop(state);
        overlay.setStats(null);
        replace(veil, h('p', null, `This environment is ${state}.`),
          h('button', {
            type: 'button', class: 'primary', testid: 'veil-resume',
            onclick: () => routes.resume(id).then(setState, (exc) => flash(describeError(exc))),
          }, 'Resume'));
        veil.hidden = false;
      }
    },
    destroy() {
      polling = false;
      clearInterval(timer);
      desktop.destroy();
      document.body.classList.remove('desktop-mode', 'bars-hidden');
    },
  };
}

/** This viewer's row of GET /connections: ours by user and permission, newest last. */
export function pickRow(rows, me, permission = 'control') {
  if (!Array.isArray(rows) || !rows.length) return null;
  const mine = rows.filter((r) => (!me || r.user_id === me.id || r.user_id === undefined) && r.permission === permission);
  return (mine.length ? mine : rows).at(-1);
}
