// Sign in: username + password; the TOTP field appears when the API answers totp_required.

import { describeError, routes, session } from '../api.js';
import { flash, h } from '../dom.js';
import { go } from '../router.js';

export function loginPage(root, { next = '#/' } = {}) {
  const username = h('input', {
    testid: 'login-username', name: 'username', autocomplete: 'username', required: true,
    autocapitalize: 'none', spellcheck: 'false',
  });
  const password = h('input', {
    testid: 'login-password', name: 'password', type: 'password', autocomplete: 'current-password', required: true,
  });
  const totp = h('input', {
    testid: 'login-totp', name: 'totp', inputmode: 'numeric', autocomplete: 'one-time-code',
    pattern: '[0-9]{6,8}', maxlength: '8',
  });
  const totpRow = h('label', { class: 'field', hidden: true }, 'One-time code', totp);
  const remember = h('input', { type: 'checkbox', testid: 'login-remember' });
  const submit = h('button', { type: 'submit', class: 'primary', testid: 'login-submit' }, 'Sign in');

  const form = h('form', { class: 'card narrow', testid: 'login-form' },
    h('h1', null, 'Sign in'),
    h('label', { class: 'field' }, 'Username', username),
    h('label', { class: 'field' }, 'Password', password),
    totpRow,
    h('label', { class: 'check' }, remember, 'Stay signed in on this device'),
    submit);

  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    submit.disabled = true;
    flash(null);
    try {
      const answer = await routes.login(username.value.trim(), password.value, totp.value.trim() || undefined);
      session.save({ token: answer.token, user: answer.user }, remember.checked);
      go(next && !next.startsWith('#/login') ? next : '#/');
    } catch (exc) {
      if (exc.code === 'totp_required') {
        totpRow.hidden = false;
        totp.required = true;
        totp.focus();
        flash('Enter the one-time code from your authenticator app.', 'info');
      } else {
        flash(describeError(exc));
        if (exc.code === 'invalid_credentials' && !totpRow.hidden) totp.value = '';
      }
    } finally {
      submit.disabled = false;
    }
  });

  root.append(form);
  username.focus();
}
