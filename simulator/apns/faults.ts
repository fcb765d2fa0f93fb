/**
 * Fault injection for the APNs gateway: tokens answered 410 Unregistered, a share of 500/503 answers,
 * added latency and a window of 429 TooManyRequests. Changed at run time through `setFaults` (a patch:
 * fields left out keep their value) or the admin endpoint, which takes the same JSON.
 */
import { z } from 'zod';
import type { ApnsReason } from './reasons.ts';

export const DEVICE_TOKEN_PATTERN = /^[0-9a-fA-F]{64}$/;

/** A device token: 64 hex digits, normalised to lower case. */
export const deviceTokenSchema = z
  .string()
  .regex(DEVICE_TOKEN_PATTERN, 'a device token is 64 hex digits')
  .transform((s) => s.toLowerCase());

const latencyRangeSchema = z
  .object({ minMs: z.number().int().min(0).max(60_000), maxMs: z.number().int().min(0).max(60_000) })
  .strict()
  .refine((r) => r.minMs <= r.maxMs, { message: 'minMs must not exceed maxMs' });

export const faultPatchSchema = z
  .object({
    /** answered 410 Unregistered (replaces the current set) */
    unregisteredTokens: z.array(deviceTokenSchema).max(1_000_000).optional(),
    /** added to the set answered 410 Unregistered */
    addUnregisteredTokens: z.array(deviceTokenSchema).max(1_000_000).optional(),
    /** removed from the set answered 410 Unregistered */
    removeUnregisteredTokens: z.array(deviceTokenSchema).max(1_000_000).optional(),
    /** share (0..1) of otherwise acceptable pushes answered with one of `errorStatuses` */
    errorRate: z.number().min(0).max(1).optional(),
    /** 500 InternalServerError and/or 503 ServiceUnavailable, picked at random */
    errorStatuses: z
      .array(z.union([z.literal(500), z.literal(503)]))
      .min(1)
      .optional(),
    /** added before every answer: fixed milliseconds or a uniform random range */
    latencyMs: z.union([z.number().int().min(0).max(60_000), latencyRangeSchema]).optional(),
    /** answer 429 TooManyRequests for this long from now (0 ends a running window) */
    tooManyRequestsForMs: z.number().int().min(0).max(86_400_000).optional(),
  })
  .strict();

export type FaultPatch = z.input<typeof faultPatchSchema>;

export type Latency = number | { minMs: number; maxMs: number };

/** The faults in force, as JSON (the admin endpoint answers this). */
export interface FaultsView {
  unregisteredTokens: string[];
  errorRate: number;
  errorStatuses: Array<500 | 503>;
  latencyMs: Latency;
  /** ISO time until which pushes are answered 429, or null */
  tooManyRequestsUntil: string | null;
}

export class FaultState {
  /** token → when it became unregistered (ms since epoch), the 410 `timestamp` */
  private unregistered = new Map<string, number>();
  private errorRate = 0;
  private errorStatuses: Array<500 | 503> = [500, 503];
  private latency: Latency = 0;
  private tooManyUntil = 0;

  constructor(
    private readonly random: () => number,
    private readonly clock: () => number,
  ) {}

  /** Validates and applies a patch; throws a ZodError when it is invalid (nothing is changed then). */
  apply(input: unknown): void {
    const patch = faultPatchSchema.parse(input);
    const now = this.clock();
    if (patch.unregisteredTokens !== undefined) {
      const next = new Map<string, number>();
      for (const t of patch.unregisteredTokens) next.set(t, this.unregistered.get(t) ?? now);
      this.unregistered = next;
    }
    for (const t of patch.addUnregisteredTokens ?? []) {
      if (!this.unregistered.has(t)) this.unregistered.set(t, now);
    }
    for (const t of patch.removeUnregisteredTokens ?? []) this.unregistered.delete(t);
    if (patch.errorRate !== undefined) this.errorRate = patch.errorRate;
    if (patch.errorStatuses !== undefined) this.errorStatuses = [...new Set(patch.errorStatuses)];
    if (patch.latencyMs !== undefined) this.latency = patch.latencyMs;
    if (patch.tooManyRequestsForMs !== undefined)
      this.tooManyUntil = patch.tooManyRequestsForMs === 0 ? 0 : now + patch.tooManyRequestsForMs;
  }

  reset(): void {
    this.unregistered = new Map();
    this.errorRate = 0;
    this.errorStatuses = [500, 503];
    this.latency = 0;
    this.tooManyUntil = 0;
  }

  view(): FaultsView {
    return {
      unregisteredTokens: [...this.unregistered.keys()],
      errorRate: this.errorRate,
      errorStatuses: [...this.errorStatuses],
      latencyMs: typeof this.latency === 'number' ? this.latency : { ...this.latency },
      tooManyRequestsUntil:
        this.tooManyUntil > this.clock() ? new Date(this.tooManyUntil).toISOString() : null,
    };
  }

  /** Milliseconds to wait before answering (0: answer at once). */
  latencyMs(): number {
    const l = this.latency;
    if (typeof l === 'number') return l;
    return l.minMs + Math.floor(this.random() * (l.maxMs - l.minMs + 1));
  }

  /** An injected error for an otherwise acceptable push, or null. */
  injectedError(): ApnsReason | null {
    if (this.tooManyUntil !== 0 && this.clock() < this.tooManyUntil) return 'TooManyRequests';
    if (this.errorRate > 0 && this.random() < this.errorRate) {
      const pick = this.errorStatuses[Math.floor(this.random() * this.errorStatuses.length)] ?? 500;
      return pick === 500 ? 'InternalServerError' : 'ServiceUnavailable';
    }
    return null;
  }

  /** When the token became unregistered (ms since epoch), or undefined when it is not. */
  unregisteredAt(token: string): number | undefined {
    return this.unregistered.size === 0 ? undefined : this.unregistered.get(token);
  }
}
