import { CONFIG_KEYS, keyApplies, SERVICE_NAMES, SERVICES } from './config';

/** The config-key table of DEPLOYING.md, generated from `CONFIG_KEYS` so the two cannot drift. */
export function configTableMarkdown(): string {
  const lines = ['| Key | Value | Services |', '| --- | --- | --- |'];
  for (const key of CONFIG_KEYS) {
    const services = SERVICE_NAMES.filter((s) => keyApplies(key, SERVICES[s].capabilities));
    const who = services.length === SERVICE_NAMES.length ? 'all' : services.map((s) => `\`${s}\``).join(', ');
    lines.push(`| \`${key.key}\` | ${key.secret ? '**secret**: ' : ''}${key.source} | ${who} |`);
  }
  return lines.join('\n');
}
