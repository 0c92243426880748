// An EnvironmentSpec (genos/v1) in words, row by row, with the composer's reasons.

const NETWORK = {
  none: 'No network',
  internet: 'Internet, outbound only',
  tor: 'Tor only: every connection goes through Tor',
};

const TIER = {
  container: 'Container (namespaces, seccomp, cgroups)',
  gvisor: 'gVisor (a user-space kernel)',
  microvm: 'Micro-VM (its own kernel)',
  vm: 'Virtual machine (its own kernel)',
};

const DIRECTION = {
  none: 'off',
  to_env: 'into the environment only',
  from_env: 'out of the environment only',
  both: 'both ways',
};

const RELEASES = { bookworm: 'Debian 12 (bookworm)', trixie: 'Debian 13 (trixie)' };

/** `3600` -> `1 h`, `5400` -> `1 h 30 min`, `86400*2` -> `2 days`. */
export function duration(seconds) {
  if (seconds === null || seconds === undefined) return 'never';
  if (seconds % 86400 === 0) return plural(seconds / 86400, 'day');
  const h = Math.floor(seconds / 3600);
  const m = Math.round((seconds % 3600) / 60);
  return [h ? `${h} h` : '', m ? `${m} min` : ''].filter(Boolean).join(' ') || `${seconds} s`;
}

/** `2048` -> `2 GiB`, `512` -> `512 MiB`. */
export function megabytes(mb) {
  return mb >= 1024 ? `${+(mb / 1024).toFixed(1)} GiB` : `${mb} MiB`;
}

function plural(n, word) {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

function network(net) {
  if (net.mode !== 'allowlist') return NETWORK[net.mode] ?? net.mode;
  const rules = [
    ...(net.domains ?? []),
    ...(net.allow ?? []).map((r) => `${r.cidr}${r.ports?.length ? `:${r.ports.join(',')}` : ''}/${r.protocol}`),
  ];
  return `Only ${rules.join(', ')}`;
}

function apps(spec) {
  if (spec.base?.image) return `Your own image ${spec.base.image}, as it is (nothing is installed into it)`;
  const names = (spec.apps ?? []).map((a) => `${a.name} (${a.packages.join(', ')})`);
  const extra = spec.extra_packages ?? [];
  const parts = [names.join(', ') || (spec.display?.headless ? 'A terminal' : 'A desktop, no apps')];
  if (extra.length) parts.push(`plus packages ${extra.join(', ')}`);
  return parts.join('; ');
}

function lifetime(life) {
  const idle = life.idle_timeout_seconds
    ? `; ${life.on_idle === 'terminate' ? 'ends' : 'suspends'} after ${duration(life.idle_timeout_seconds)} idle`
    : '';
  return `Ends after ${duration(life.ttl_seconds)}${idle}`;
}

function persistence(p) {
  if (p.mode !== 'volume') return 'Nothing is kept when it ends';
  return `Kept in volume ${p.volume}${p.encrypted ? ' (encrypted)' : ''}`;
}

function desktop(spec) {
  const d = spec.display ?? {};
  const r = d.resolution ?? {};
  const shell = d.headless ? 'terminal only' : d.window_manager;
  if (spec.base?.image) return `Your image ${spec.base.image}, ${String(d.protocol).toUpperCase()}`;
  return `${RELEASES[spec.base?.release] ?? spec.base?.release}, ${shell}, ${r.width}x${r.height}, ${String(d.protocol).toUpperCase()}`;
}

/**
 * The rows a person reads before launching: `[{key, label, text, why: [rationale]}]`.
 * `why` holds the composer's decisions whose field starts with one of the row's prefixes.
 */
export function describeSpec(spec) {
  const res = spec.resources ?? {};
  const rows = [
    ['apps', 'Apps', apps(spec), ['apps', 'extra_packages']],
    ['network', 'Network', network(spec.network ?? { mode: 'none' }), ['network']],
    ['tier', 'Isolation', TIER[spec.tier] ?? spec.tier, ['tier']],
    ['resources', 'Resources',
      `${plural(res.cpus, 'CPU')}, ${megabytes(res.memory_mb)} memory, ${megabytes(res.disk_mb)} disk`, ['resources']],
    ['lifetime', 'Lifetime', lifetime(spec.lifetime ?? {}), ['lifetime']],
    ['clipboard', 'Clipboard', cap(DIRECTION[spec.security?.clipboard] ?? 'off'), ['security.clipboard']],
    ['files', 'File transfer', cap(DIRECTION[spec.security?.file_transfer] ?? 'off'), ['security.file_transfer']],
    ['persistence', 'Storage', persistence(spec.persistence ?? { mode: 'ephemeral' }), ['persistence']],
    ['desktop', 'Desktop', desktop(spec), ['base', 'display']],
  ];
  if (spec.security?.recording) rows.push(['recording', 'Recording', 'The session is recorded', ['security.recording']]);
  const decisions = spec.provenance?.decisions ?? [];
  return rows.map(([key, label, text, prefixes]) => ({
    key,
    label,
    text,
    why: decisions
      .filter((d) => prefixes.some((p) => d.field === p || d.field.startsWith(`${p}.`)))
      .map((d) => d.rationale),
  }));
}

function cap(text) {
  return text.charAt(0).toUpperCase() + text.slice(1);
}
