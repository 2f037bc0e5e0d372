import { CONFIG_KEYS, keyApplies, ONE_OFF_TASK_NAMES, PROCESS_NAMES, ProcessName, SERVICES } from './config';

/** Marks a one-off task (no service) in the tables of DEPLOYING.md. */
export const ONE_OFF_MARK = '(task)';

const label = (name: ProcessName) =>
  `\`${name}\`${(ONE_OFF_TASK_NAMES as readonly string[]).includes(name) ? ` ${ONE_OFF_MARK}` : ''}`;

/** The config-key table of DEPLOYING.md, generated from `CONFIG_KEYS` so the two cannot drift. */
export function configTableMarkdown(): string {
  const lines = ['| Key | Value | Processes |', '| --- | --- | --- |'];
  for (const key of CONFIG_KEYS) {
    const processes = PROCESS_NAMES.filter((s) => keyApplies(key, SERVICES[s].capabilities));
    lines.push(`| \`${key.key}\` | ${key.secret ? '**secret**: ' : ''}${key.source} | ${processes.map(label).join(', ')} |`);
  }
  return lines.join('\n');
}
