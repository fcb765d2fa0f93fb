/** Counters of the APNs gateway and a per-second rate over the last few whole seconds. */
import type { ApnsReason } from './reasons.ts';

const WINDOW_SECONDS = 5;

/** Counts events per whole second in a small ring, for "how many per second lately". */
export class RateWindow {
  private readonly seconds = new Float64Array(WINDOW_SECONDS + 1);
  private readonly counts = new Float64Array(WINDOW_SECONDS + 1);

  constructor(private readonly startedAtMs: number) {}

  add(nowMs: number, n = 1): void {
    const sec = Math.floor(nowMs / 1000);
    const i = sec % this.seconds.length;
    if (this.seconds[i] !== sec) {
      this.seconds[i] = sec;
      this.counts[i] = 0;
    }
    this.counts[i] = (this.counts[i] ?? 0) + n;
  }

  /** Average per second over the last WINDOW_SECONDS whole seconds (fewer just after the start). */
  perSecond(nowMs: number): number {
    const sec = Math.floor(nowMs / 1000);
    const elapsed = Math.max(1, Math.min(WINDOW_SECONDS, sec - Math.floor(this.startedAtMs / 1000)));
    let sum = 0;
    for (let k = 1; k <= elapsed; k++) {
      const s = sec - k;
      const i = s % this.seconds.length;
      if (this.seconds[i] === s) sum += this.counts[i] ?? 0;
    }
    return sum / elapsed;
  }
}

export interface ApnsGatewayStats {
  /** requests to /3/device/ (each retry counts) */
  received: number;
  accepted: number;
  rejected: number;
  rejectedByReason: Partial<Record<ApnsReason, number>>;
  /** pushes handed to at least one subscriber */
  delivered: number;
  /** accepted pushes kept for a device that had no subscriber */
  stored: number;
  /** stored pushes replaced by a newer one for the same token */
  replaced: number;
  /** stored pushes whose expiration passed before delivery */
  expired: number;
  /** accepted pushes with no subscriber and nothing to store (apns-expiration 0, absent or past) */
  dropped: number;
  /** pushes waiting now */
  pending: number;
  /** tokens with at least one subscriber now */
  subscribedTokens: number;
  remoteSubscriptions: number;
  connections: number;
  /** averages over the last 5 whole seconds */
  perSecond: { received: number; accepted: number; delivered: number };
}

export class GatewayCounters {
  received = 0;
  accepted = 0;
  rejected = 0;
  readonly rejectedByReason = new Map<ApnsReason, number>();
  delivered = 0;
  stored = 0;
  replaced = 0;
  expired = 0;
  dropped = 0;
  readonly receivedRate: RateWindow;
  readonly acceptedRate: RateWindow;
  readonly deliveredRate: RateWindow;

  constructor(startedAtMs: number) {
    this.receivedRate = new RateWindow(startedAtMs);
    this.acceptedRate = new RateWindow(startedAtMs);
    this.deliveredRate = new RateWindow(startedAtMs);
  }

  reject(reason: ApnsReason): void {
    this.rejected++;
    this.rejectedByReason.set(reason, (this.rejectedByReason.get(reason) ?? 0) + 1);
  }

  byReason(): Partial<Record<ApnsReason, number>> {
    const out: Partial<Record<ApnsReason, number>> = {};
    for (const [k, v] of this.rejectedByReason) out[k] = v;
    return out;
  }
}
