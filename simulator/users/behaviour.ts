/**
 * How a simulated user answers an invitation, drawn once per user from probabilities: accept (after a
 * random delay, on one device), ignore, decline (opens the page and declines), or accept with another
 * Apple ID than their own. Pure functions over an injected random source.
 */
import type { Rng } from '../device/device-spec.ts';

export const BEHAVIOURS = ['accept', 'ignore', 'decline', 'wrong_apple_id'] as const;
export type BehaviourKind = (typeof BEHAVIOURS)[number];

/** Probabilities of each behaviour; whatever they leave below 1 also means `ignore`. */
export interface BehaviourProbabilities {
  accept: number;
  ignore: number;
  decline: number;
  wrongAppleId: number;
}

export const DEFAULT_PROBABILITIES: Readonly<BehaviourProbabilities> = Object.freeze({
  accept: 0.8,
  ignore: 0.1,
  decline: 0.05,
  wrongAppleId: 0.05,
});

/** An inclusive range of whole numbers, e.g. milliseconds or a count. */
export interface IntRange {
  min: number;
  max: number;
}

/** `"200-2000"` or `"500"` → a range; null when it is not one (or min > max). */
export function parseRange(text: string): IntRange | null {
  const m = /^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$/.exec(text);
  if (!m) return null;
  const min = Number(m[1]);
  const max = m[2] === undefined ? min : Number(m[2]);
  if (!Number.isSafeInteger(min) || !Number.isSafeInteger(max) || min > max) return null;
  return { min, max };
}

export function formatRange(r: IntRange): string {
  return r.min === r.max ? String(r.min) : `${r.min}-${r.max}`;
}

/** A whole number drawn uniformly in [min, max]. */
export function drawInRange(range: IntRange, rng: Rng): number {
  return range.min + Math.min(range.max - range.min, Math.floor(rng() * (range.max - range.min + 1)));
}

/** Each problem with the probabilities (each in [0, 1], their sum at most 1), empty when fine. */
export function probabilityProblems(p: BehaviourProbabilities): string[] {
  const problems: string[] = [];
  const names: Record<keyof BehaviourProbabilities, string> = {
    accept: '--accept',
    ignore: '--ignore',
    decline: '--decline',
    wrongAppleId: '--wrong-apple-id',
  };
  for (const key of Object.keys(names) as (keyof BehaviourProbabilities)[]) {
    const v = p[key];
    if (!Number.isFinite(v) || v < 0 || v > 1) problems.push(`${names[key]}: must be between 0 and 1`);
  }
  const sum = p.accept + p.ignore + p.decline + p.wrongAppleId;
  if (problems.length === 0 && sum > 1 + 1e-9) {
    problems.push(
      `--accept, --ignore, --decline and --wrong-apple-id add up to ${Number(sum.toFixed(6))}: at most 1`,
    );
  }
  return problems;
}

/** One behaviour drawn from the probabilities; the remainder below 1 is `ignore`. */
export function drawBehaviour(p: BehaviourProbabilities, rng: Rng): BehaviourKind {
  const u = rng();
  if (u < p.accept) return 'accept';
  if (u < p.accept + p.decline) return 'decline';
  if (u < p.accept + p.decline + p.wrongAppleId) return 'wrong_apple_id';
  return 'ignore';
}

/** What a user will do, and how long they take to do it once they see an invitation. */
export interface UserBehaviour {
  kind: BehaviourKind;
  /** from first seeing the invitation to acting on it (accept, decline, wrong Apple ID) */
  delayMs: number;
}

export function drawUserBehaviour(p: BehaviourProbabilities, delay: IntRange, rng: Rng): UserBehaviour {
  const kind = drawBehaviour(p, rng);
  return { kind, delayMs: drawInRange(delay, rng) };
}
