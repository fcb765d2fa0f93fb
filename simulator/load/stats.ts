/**
 * Counters and latencies of a simulation run, kept as raw samples (a run has at most a few hundred thousand
 * operations) and summarised by pure functions.
 */

export interface LatencySummary {
  count: number;
  minMs: number;
  p50Ms: number;
  p90Ms: number;
  p99Ms: number;
  maxMs: number;
  meanMs: number;
}

/** The q-quantile (0..1) of sorted samples, nearest-rank. */
export function quantile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return 0;
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[rank] ?? 0;
}

export function summarize(samples: readonly number[]): LatencySummary {
  if (samples.length === 0) return { count: 0, minMs: 0, p50Ms: 0, p90Ms: 0, p99Ms: 0, maxMs: 0, meanMs: 0 };
  const sorted = [...samples].sort((a, b) => a - b);
  const sum = sorted.reduce((a, b) => a + b, 0);
  return {
    count: sorted.length,
    minMs: sorted[0] ?? 0,
    p50Ms: quantile(sorted, 0.5),
    p90Ms: quantile(sorted, 0.9),
    p99Ms: quantile(sorted, 0.99),
    maxMs: sorted[sorted.length - 1] ?? 0,
    meanMs: sum / sorted.length,
  };
}

/** One kind of operation (enroll, connect, ...): successes with their latencies, failures by reason. */
export class OperationStats {
  readonly latenciesMs: number[] = [];
  readonly failures = new Map<string, number>();
  /** wall-clock span of the operations, for the rate */
  private firstStart = Number.POSITIVE_INFINITY;
  private lastEnd = 0;

  record(startedAt: number, durationMs: number): void {
    this.latenciesMs.push(durationMs);
    this.span(startedAt, durationMs);
  }

  fail(reason: string, startedAt: number, durationMs: number): void {
    this.failures.set(reason, (this.failures.get(reason) ?? 0) + 1);
    this.span(startedAt, durationMs);
  }

  private span(startedAt: number, durationMs: number): void {
    this.firstStart = Math.min(this.firstStart, startedAt);
    this.lastEnd = Math.max(this.lastEnd, startedAt + durationMs);
  }

  get ok(): number {
    return this.latenciesMs.length;
  }

  get failed(): number {
    let n = 0;
    for (const v of this.failures.values()) n += v;
    return n;
  }

  /** successful operations per second over the wall-clock span of all of them */
  get ratePerSecond(): number {
    const span = this.lastEnd - this.firstStart;
    if (!(span > 0)) return 0;
    return (this.ok * 1000) / span;
  }

  summary(): OperationSummary {
    return {
      ok: this.ok,
      failed: this.failed,
      failures: Object.fromEntries(this.failures),
      ratePerSecond: this.ratePerSecond,
      latency: summarize(this.latenciesMs),
    };
  }
}

export interface OperationSummary {
  ok: number;
  failed: number;
  failures: Record<string, number>;
  ratePerSecond: number;
  latency: LatencySummary;
}
