// Files in and out of a desktop: uploads land in ~/Uploads (a button or a drop
// onto the desktop), downloads come from ~/Downloads (a picker). The server
// allows each direction only as the spec's security.file_transfer says.

import { ApiError, authHeaders, decode, describeError } from './api.js';
import { flash, h, replace } from './dom.js';

const base = (envId) => `/v1/environments/${encodeURIComponent(envId)}`;

/**
 * Upload one file with progress (XHR: fetch has no upload progress).
 * @param {string} envId
 * @param {File} file
 * @param {(fraction: number) => void} onProgress
 * @returns {Promise<{name: string, size: number, path: string}>}
 */
export function uploadFile(envId, file, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', `${base(envId)}/uploads?name=${encodeURIComponent(file.name)}`);
    for (const [k, v] of Object.entries(authHeaders({ Accept: 'application/json' }))) {
      xhr.setRequestHeader(k, v);
    }
    xhr.setRequestHeader('Content-Type', 'application/octet-stream');
    xhr.upload.addEventListener('progress', (ev) => {
      if (ev.lengthComputable) onProgress(ev.loaded / ev.total);
    });
    xhr.addEventListener('load', () => {
      const res = new Response(xhr.responseText, { status: xhr.status });
      decode(res).then(resolve, reject);
    });
    xhr.addEventListener('error', () => reject(new ApiError(0, 'network', 'the upload was cut off')));
    xhr.send(file);
  });
}

/** Upload files one after another, each with a progress bar in `list`. */
export async function uploadAll(envId, files, list) {
  for (const file of files) {
    const bar = h('progress', { max: '1', value: '0', testid: 'upload-progress' });
    const row = h('li', { 'data-name': file.name }, `${file.name} `, bar);
    list?.append(row);
    try {
      const stored = await uploadFile(envId, file, (f) => { bar.value = f; });
      bar.value = 1;
      row.dataset.state = 'stored';
      row.append(` → ${stored.path}`);
      flash(`Uploaded to ${stored.path}`, 'info');
    } catch (exc) {
      row.dataset.state = 'refused';
      row.append(` ✗ ${describeError(exc)}`);
      flash(describeError(exc));
    }
  }
}

async function download(envId, name) {
  const res = await fetch(`${base(envId)}/downloads/${encodeURIComponent(name)}`, {
    headers: authHeaders(), cache: 'no-store',
  });
  if (!res.ok) await decode(res);
  const url = URL.createObjectURL(await res.blob());
  const a = h('a', { href: url, download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

/** The overlay panel: an upload button with progress, and the ~/Downloads picker. */
export function filesPanel(envId) {
  const uploads = h('ul', { class: 'uploads', testid: 'upload-list' });
  const input = h('input', { type: 'file', multiple: true, testid: 'upload-input', hidden: true });
  input.addEventListener('change', () => {
    uploadAll(envId, [...input.files], uploads);
    input.value = '';
  });
  const pick = h('button', { type: 'button', testid: 'upload-pick', class: 'primary', onclick: () => input.click() },
    'Upload to ~/Uploads');
  const listing = h('ul', { class: 'downloads', testid: 'download-list' }, h('li', {}, 'loading ~/Downloads...'));
  const refresh = async () => {
    try {
      const { items } = await fetchJson(`${base(envId)}/downloads`);
      replace(listing, items.length ? items.map((item) => h('li', {},
        h('button', {
          type: 'button', testid: 'download-item', 'data-name': item.name,
          onclick: () => download(envId, item.name).catch((exc) => flash(describeError(exc))),
        }, item.name), ` ${size(item.size)}`)) : [h('li', {}, '~/Downloads is empty')]);
    } catch (exc) {
      replace(listing, [h('li', { testid: 'downloads-refused' }, describeError(exc))]);
    }
  };
  refresh();
  return [
    h('div', { class: 'files-up' }, pick, input, h('span', { class: 'hint' }, ' or drop files on the desktop'), uploads),
    h('div', { class: 'files-down' },
      h('button', { type: 'button', testid: 'downloads-refresh', onclick: refresh }, 'Refresh ~/Downloads'), listing),
  ];
}

async function fetchJson(path) {
  let res;
  try {
    res = await fetch(path, { headers: authHeaders({ Accept: 'application/json' }), cache: 'no-store' });
  } catch {
    throw new ApiError(0, 'network', 'cannot reach the GenOS server');
  }
  return decode(res);
}

/** Uploads for files dropped onto `target` (the desktop). */
export function acceptDrops(target, envId) {
  target.addEventListener('dragover', (ev) => {
    if ([...(ev.dataTransfer?.types ?? [])].includes('Files')) ev.preventDefault();
  });
  target.addEventListener('drop', (ev) => {
    const dropped = [...(ev.dataTransfer?.files ?? [])];
    if (!dropped.length) return;
    ev.preventDefault();
    uploadAll(envId, dropped, null);
  });
}

function size(bytes) {
  if (bytes >= 1 << 20) return `${(bytes / (1 << 20)).toFixed(1)} MiB`;
  if (bytes >= 1024) return `${Math.round(bytes / 1024)} KiB`;
  return `${bytes} B`;
}
