import { CONFIG_KEYS, isPlanned, keyApplies, SERVICE_NAMES, SERVICES } from './config';

/** Marks a planned service (no binary yet) in the tables of DEPLOYING.md. */
export const PLANNED_MARK = '(planned)';

/**
 * The config-key table of DEPLOYING.md, generated from `CONFIG_KEYS` so the two cannot drift.
 * Planned services are marked `(planned)`; a key only planned services receive is marked
 * `planned:` in its value column (provisional until the binary exists).
 */
export function configTableMarkdown(): string {
  const lines = ['| Key | Value | Services |', '| --- | --- | --- |'];
  for (const key of CONFIG_KEYS) {
    const services = SERVICE_NAMES.filter((s) => keyApplies(key, SERVICES[s].capabilities));
    const who =
      services.length === SERVICE_NAMES.length
        ? 'all'
        : services.map((s) => `\`${s}\`${isPlanned(s) ? ` ${PLANNED_MARK}` : ''}`).join(', ');
    const planned = services.every(isPlanned) ? '*planned:* ' : '';
    lines.push(`| \`${key.key}\` | ${planned}${key.secret ? '**secret**: ' : ''}${key.source} | ${who} |`);
  }
  return lines.join('\n');
}
