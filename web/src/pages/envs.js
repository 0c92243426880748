// #/envs: the signed-in user's environments (every one for an admin), refreshed.

import { describeError, routes, session } from '../api.js';
import { flash, h, replace } from '../dom.js';

const REFRESH_MS = 3000;

const ACTIONS = {
  suspend: (s) => s === 'running',
  resume: (s) => s === 'suspended',
  terminate: (s) => !['terminated', 'failed', 'lost'].includes(s),
};

export function envsPage(root, _params, ctx) {
  const admin = session.user?.role === 'admin';
  const list = h('div', { class: 'env-list', testid: 'env-list' });
  const showAll = h('input', { type: 'checkbox', testid: 'envs-all', checked: admin });
  const showEnded = h('input', { type: 'checkbox', testid: 'envs-ended' });
  const refresh = async () => {
    try {
      const page = await routes.list(showAll.checked);
      if (ctx.signal.aborted) return;
      const items = page.items.filter((e) => showEnded.checked || !['terminated', 'failed', 'lost'].includes(e.state));
      replace(list, items.length ? items.map((env) => row(env, refresh))
        : h('p', { class: 'muted', testid: 'envs-empty' }, 'No environments yet. ', h('a', { href: '#/' }, 'Create one')));
    } catch (exc) {
      flash(describeError(exc));
    }
  };
  showAll.addEventListener('change', refresh);
  showEnded.addEventListener('change', refresh);
  root.append(h('div', { class: 'card' },
    h('div', { class: 'row spread' },
      h('h1', null, 'Environments'),
      h('a', { href: '#/', class: 'button primary', testid: 'envs-new' }, 'New')),
    h('div', { class: 'row' },
      admin ? h('label', { class: 'check' }, showAll, 'Everyone\'s') : null,
      h('label', { class: 'check' }, showEnded, 'Show ended')),
    list));
  refresh();
  ctx.every(REFRESH_MS, refresh);
}

function row(env, refresh) {
  const state = h('span', { class: 'badge', testid: 'env-state', dataset: { state: env.state } }, env.state);
  const act = (verb) => async (ev) => {
    const button = ev.currentTarget;
    if (verb === 'terminate' && button.dataset.armed !== 'true') {
      button.dataset.armed = 'true';
      button.textContent = 'Sure?';
      return;
    }
    button.disabled = true;
    try {
      await routes[verb](env.id);
      await refresh();
    } catch (exc) {
      flash(describeError(exc));
      button.disabled = false;
    }
  };
  return h('div', { class: 'env-row', testid: 'env-row', dataset: { envId: env.id, state: env.state } },
    h('div', { class: 'env-main' },
      h('a', { href: `#/env/${encodeURIComponent(env.id)}`, testid: 'env-open', class: 'env-name' },
        env.name || env.summary || env.id),
      h('div', { class: 'muted small' },
        state, ` ${env.id}`, env.owner_name ? ` · ${env.owner_name}` : '', ` · ${when(env.created)}`,
        env.queue_position ? ` · queue #${env.queue_position}` : '',
        env.tier_note ? h('span', { class: 'note' }, ` · ${env.tier_note}`) : null)),
    h('div', { class: 'env-actions' },
      h('a', { href: `#/env/${encodeURIComponent(env.id)}`, class: 'button', testid: 'env-action-open' }, 'Open'),
      env.spec?.security?.recording
        ? h('a', { href: `#/recordings/${encodeURIComponent(env.id)}`, class: 'button', testid: 'env-action-recordings' }, 'Recordings')
        : null,
      Object.entries(ACTIONS).map(([verb, allowed]) => h('button', {
        type: 'button', testid: `env-action-${verb}`, disabled: !allowed(env.state), onclick: act(verb),
      }, verb[0].toUpperCase() + verb.slice(1)))));
}

function when(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toLocaleString();
}
