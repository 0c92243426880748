// The prompt box: compose, show the spec in words, answer clarifications, launch.

import { describeError, routes } from '../api.js';
import { flash, h, replace } from '../dom.js';
import { describeSpec } from '../describe.js';
import { go } from '../router.js';

const EXAMPLES = [
  'I need a Linux environment with Tor browser for secure browsing',
  'Debian with LibreOffice and no network',
  'A Python IDE with internet access',
];

export function composePage(root, _params, ctx) {
  const prompt = h('textarea', {
    testid: 'prompt-input', rows: '3', maxlength: '4096', required: true,
    placeholder: 'Describe the computer you need, e.g. "Debian with Firefox and no network"',
  });
  const submit = h('button', { type: 'submit', class: 'primary', testid: 'compose-submit' }, 'Compose');
  const result = h('section', { class: 'result', 'aria-live': 'polite' });
  let answers = {};

  const form = h('form', { class: 'card', testid: 'compose-form' },
    h('h1', null, 'What do you need?'),
    prompt,
    h('div', { class: 'row' },
      submit,
      h('div', { class: 'examples' }, h('span', { class: 'muted' }, 'Try:'), EXAMPLES.map((text) => h('button', {
        type: 'button', class: 'link', onclick: () => { prompt.value = text; prompt.focus(); },
      }, text)))));

  async function compose() {
    const text = prompt.value.trim();
    if (!text) return;
    submit.disabled = true;
    flash(null);
    try {
      const answer = await routes.compose(text, answers);
      if (ctx.signal.aborted) return;
      showResult(result, answer, {
        onAnswer: (field, option) => {
          answers = { ...answers, [field]: option };
          compose();
        },
        onLaunch: launch,
      });
    } catch (exc) {
      flash(describeError(exc));
    } finally {
      submit.disabled = false;
    }
  }

  async function launch(spec, button) {
    button.disabled = true;
    flash(null);
    try {
      const env = await routes.launch(spec);
      go(`#/env/${encodeURIComponent(env.id)}`);
    } catch (exc) {
      flash(describeError(exc));
      button.disabled = false;
    }
  }

  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    answers = {};
    compose();
  });
  prompt.addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && (ev.ctrlKey || ev.metaKey)) form.requestSubmit();
  });

  root.append(form, result);
  prompt.focus();
}

function showResult(el, answer, { onAnswer, onLaunch }) {
  if (answer.outcome === 'reject') {
    replace(el, h('div', { class: 'card rejected', testid: 'rejections' },
      h('h2', null, 'GenOS cannot build this'),
      h('ul', null, answer.violations.map((v) => h('li', { testid: 'rejection', dataset: { field: v.field } },
        h('span', { class: 'reason' }, v.reason),
        v.field && v.field !== 'prompt' ? h('code', null, v.field) : null)))));
    return;
  }
  const parts = [];
  if (answer.outcome === 'clarify') {
    parts.push(h('div', { class: 'card clarify', testid: 'clarifications' },
      h('h2', null, 'One more thing'),
      answer.clarifications.map((q) => h('div', { class: 'question', dataset: { field: q.field } },
        h('p', null, q.question),
        h('div', { class: 'options' }, q.options.map((option) => h('button', {
          type: 'button',
          class: option === q.default ? 'option default' : 'option',
          testid: 'clarify-option',
          dataset: { field: q.field, option },
          onclick: () => onAnswer(q.field, option),
        }, option)))))));
  }
  if (answer.spec) parts.push(specCard(answer.spec, answer.outcome === 'spec', onLaunch));
  replace(el, parts);
}

/** The spec in words, each row with the composer's reasons, and the Launch button. */
export function specCard(spec, launchable, onLaunch) {
  const rows = describeSpec(spec);
  const launch = launchable
    ? h('button', { type: 'button', class: 'primary big', testid: 'launch' }, 'Launch')
    : null;
  launch?.addEventListener('click', () => onLaunch(spec, launch));
  const decisions = spec.provenance?.decisions ?? [];
  return h('div', { class: 'card spec', testid: 'spec-summary' },
    h('h2', null, launchable ? 'Here is what you will get' : 'Draft (answer above to continue)'),
    h('dl', { class: 'spec-rows' }, rows.map((row) => [
      h('dt', null, row.label),
      h('dd', { testid: `spec-${row.key}` },
        h('span', null, row.text),
        row.why.length
          ? h('details', { class: 'why' }, h('summary', null, 'why'), row.why.map((w) => h('p', null, w)))
          : null),
    ])),
    decisions.length
      ? h('details', { class: 'decisions', testid: 'spec-decisions' },
        h('summary', null, `All ${decisions.length} decisions`),
        h('ul', null, decisions.map((d) => h('li', null, h('code', null, d.field), ` = ${d.value}: `, d.rationale))))
      : null,
    launch);
}
