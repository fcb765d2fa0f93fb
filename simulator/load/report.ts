/** The end-of-run summary as a plain text table. */
import type { FleetSummary } from '../fleet.ts';
import type { OperationSummary } from './stats.ts';

function ms(v: number): string {
  return v >= 1000 ? `${(v / 1000).toFixed(2)} s` : `${v.toFixed(1)} ms`;
}

function table(rows: string[][]): string {
  const widths: number[] = [];
  for (const row of rows) row.forEach((cell, i) => (widths[i] = Math.max(widths[i] ?? 0, cell.length)));
  return rows
    .map((row) =>
      row
        .map((cell, i) => cell.padEnd(widths[i] ?? 0))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

function opRow(name: string, s: OperationSummary): string[] {
  return [
    name,
    String(s.ok),
    String(s.failed),
    s.ok > 0 ? `${s.ratePerSecond.toFixed(1)}/s` : '-',
    s.ok > 0 ? ms(s.latency.p50Ms) : '-',
    s.ok > 0 ? ms(s.latency.p99Ms) : '-',
    s.ok > 0 ? ms(s.latency.maxMs) : '-',
  ];
}

export function formatSummary(
  summary: FleetSummary,
  options: { wallMs?: number; maxFailureReasons?: number } = {},
): string {
  const lines: string[] = [];
  const p = summary.byPlatform;
  lines.push(
    `devices: ${summary.devices} (macOS ${p.macos}, iOS ${p.ios}, iPadOS ${p.ipados}), enrolled ${summary.enrolled}` +
      (options.wallMs !== undefined ? `, run ${ms(options.wallMs)}` : ''),
  );
  lines.push('');
  lines.push(
    table([
      ['operation', 'ok', 'failed', 'rate', 'p50', 'p99', 'max'],
      opRow('enroll', summary.enroll),
      opRow('connect', summary.connect),
    ]),
  );
  const commandRows = Object.entries(summary.commands)
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([type, byStatus]) => [
      type,
      Object.entries(byStatus)
        .map(([status, n]) => `${status} ${n}`)
        .join(', '),
    ]);
  if (commandRows.length > 0) {
    lines.push('');
    lines.push(table([['command', 'results'], ...commandRows]));
  }
  if (summary.failures.length > 0) {
    const byReason = new Map<string, number>();
    for (const f of summary.failures) {
      const key = `${f.operation}: ${f.reason}`;
      byReason.set(key, (byReason.get(key) ?? 0) + 1);
    }
    const max = options.maxFailureReasons ?? 10;
    const sorted = [...byReason.entries()].sort((a, b) => b[1] - a[1]);
    lines.push('');
    lines.push(`failures: ${summary.failures.length}`);
    for (const [reason, n] of sorted.slice(0, max)) lines.push(`  ${String(n).padStart(5)}  ${reason}`);
    if (sorted.length > max) lines.push(`  ... and ${sorted.length - max} other reasons`);
  }
  return lines.join('\n');
}
