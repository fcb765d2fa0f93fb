/**
 * Fault injection for the Apps and Books API (`/mdm/v2/...`): each rule matches calls by path, method
 * and sToken, applies to the next `times` matching calls (or until removed), and answers an error,
 * a 503 with Retry-After, a 429 (9646), added latency, or a reset connection.
 */
import { randomUUID } from 'node:crypto';
import { z } from 'zod';

export const faultActionSchema = z.discriminatedUnion('kind', [
  z.object({
    kind: z.literal('error'),
    errorNumber: z.number().int(),
    /** default: Apple's status for the number (400 when unknown) */
    status: z.number().int().min(400).max(599).optional(),
    errorMessage: z.string().optional(),
    retryAfterSeconds: z.number().int().nonnegative().optional(),
  }),
  /** 503, `Retry-After: n`, error 9729 */
  z.object({ kind: z.literal('unavailable'), retryAfterSeconds: z.number().int().nonnegative() }),
  /** 429, error 9646, with `Retry-After` when given */
  z.object({
    kind: z.literal('tooManyRequests'),
    retryAfterSeconds: z.number().int().nonnegative().optional(),
  }),
  /** waits, then answers normally */
  z.object({ kind: z.literal('latency'), ms: z.number().int().nonnegative().max(600_000) }),
  /** destroys the connection without an answer */
  z.object({ kind: z.literal('reset') }),
]);
export type FaultAction = z.infer<typeof faultActionSchema>;

export const faultSpecSchema = z.object({
  /** path below `/mdm/v2`, e.g. `/users/create`; omitted or `*` matches every call */
  path: z.string().optional(),
  method: z
    .string()
    .transform((m) => m.toUpperCase())
    .optional(),
  /** only calls carrying this sToken */
  sToken: z.string().optional(),
  /** the next N matching calls; omitted: until removed */
  times: z.number().int().positive().optional(),
  action: faultActionSchema,
});
export type FaultSpec = z.input<typeof faultSpecSchema>;

export interface FaultRule {
  id: string;
  path?: string;
  method?: string;
  sToken?: string;
  /** calls left; undefined: unlimited */
  remaining?: number;
  action: FaultAction;
  hits: number;
}

export class FaultInjector {
  private rules: FaultRule[] = [];

  add(spec: FaultSpec): string {
    const parsed = faultSpecSchema.parse(spec);
    const rule: FaultRule = { id: randomUUID(), action: parsed.action, hits: 0 };
    if (parsed.path !== undefined && parsed.path !== '*') rule.path = parsed.path;
    if (parsed.method !== undefined) rule.method = parsed.method;
    if (parsed.sToken !== undefined) rule.sToken = parsed.sToken;
    if (parsed.times !== undefined) rule.remaining = parsed.times;
    this.rules.push(rule);
    return rule.id;
  }

  remove(id: string): boolean {
    const before = this.rules.length;
    this.rules = this.rules.filter((r) => r.id !== id);
    return this.rules.length !== before;
  }

  clear(): void {
    this.rules = [];
  }

  list(): FaultRule[] {
    return this.rules.map((r) => ({ ...r }));
  }

  /** The first rule matching the call, consuming one of its uses. */
  take(call: { method: string; path: string; sToken: string | null }): FaultAction | null {
    const rule = this.rules.find(
      (r) =>
        (r.path === undefined || r.path === call.path) &&
        (r.method === undefined || r.method === call.method.toUpperCase()) &&
        (r.sToken === undefined || r.sToken === call.sToken),
    );
    if (!rule) return null;
    rule.hits += 1;
    if (rule.remaining !== undefined) {
      rule.remaining -= 1;
      if (rule.remaining <= 0) this.rules = this.rules.filter((r) => r !== rule);
    }
    return rule.action;
  }
}
