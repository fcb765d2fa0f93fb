/**
 * Progress on stderr: a redrawn bar on a terminal, plain periodic lines otherwise (CI logs, pipes).
 */
import type { FleetProgress } from '../fleet.ts';

export interface ProgressStream {
  isTTY?: boolean;
  columns?: number;
  write(chunk: string): boolean;
}

const LABELS: Record<FleetProgress['phase'], string> = {
  load: 'loading',
  create: 'creating',
  enroll: 'enrolling',
  connect: 'connecting',
};

export class ProgressReporter {
  private lastLineAt = 0;
  private lastPhase: FleetProgress['phase'] | null = null;
  private lastDrawAt = 0;
  private drawn = false;
  private readonly started = new Map<FleetProgress['phase'], number>();

  constructor(
    private readonly out: ProgressStream,
    private readonly options: { intervalMs?: number; now?: () => number } = {},
  ) {}

  private now(): number {
    return this.options.now?.() ?? Date.now();
  }

  update(p: FleetProgress): void {
    const now = this.now();
    if (!this.started.has(p.phase)) this.started.set(p.phase, now);
    const finished = p.done + p.failed >= p.total;
    if (this.out.isTTY) {
      if (!finished && now - this.lastDrawAt < 100 && this.lastPhase === p.phase) return;
      this.lastDrawAt = now;
      this.lastPhase = p.phase;
      this.out.write(`\r${this.bar(p, now)}\x1b[K`);
      this.drawn = true;
      if (finished) this.end();
      return;
    }
    const interval = this.options.intervalMs ?? 2000;
    if (finished || p.phase !== this.lastPhase || now - this.lastLineAt >= interval) {
      this.lastLineAt = now;
      this.lastPhase = p.phase;
      this.out.write(`${this.line(p, now)}\n`);
    }
  }

  /** Ends a redrawn bar with a newline. */
  end(): void {
    if (this.drawn) this.out.write('\n');
    this.drawn = false;
  }

  private rate(p: FleetProgress, now: number): string {
    const elapsed = (now - (this.started.get(p.phase) ?? now)) / 1000;
    return elapsed > 0 ? `${((p.done + p.failed) / elapsed).toFixed(1)}/s` : '-';
  }

  line(p: FleetProgress, now = this.now()): string {
    const pct = p.total === 0 ? 100 : Math.floor(((p.done + p.failed) * 100) / p.total);
    return `${LABELS[p.phase]}: ${p.done + p.failed}/${p.total} (${pct}%) ok ${p.done} failed ${p.failed} ${this.rate(p, now)}`;
  }

  bar(p: FleetProgress, now = this.now()): string {
    const width = Math.max(10, Math.min(40, (this.out.columns ?? 80) - 60));
    const frac = p.total === 0 ? 1 : (p.done + p.failed) / p.total;
    const full = Math.round(frac * width);
    return `${LABELS[p.phase].padEnd(10)} [${'#'.repeat(full)}${'.'.repeat(width - full)}] ${p.done + p.failed}/${p.total} failed ${p.failed} ${this.rate(p, now)}`;
  }
}
