import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository root, from this file's place in it (test/shared/plist/). */
export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
/** Third-party device messages beside the repository (never copied into it); absent outside CI. */
export const VECTORS_DIR = path.resolve(REPO_ROOT, '../shared/vectors');
/** Fixtures written for this project. */
export const FIXTURES_DIR = path.resolve(REPO_ROOT, 'test/fixtures/plist');

export function vectorsAvailable(): boolean {
  return existsSync(VECTORS_DIR);
}

/** In a `before` hook: skip the suite, visibly, when ../shared/vectors is absent. */
export function skipWithoutVectors(ctx: Mocha.Context): void {
  if (vectorsAvailable()) return;
  console.warn(
    `\n  ⚠ SKIPPED: test vectors not found at ${VECTORS_DIR} (they live beside the repository, not in it)\n`,
  );
  ctx.skip();
}

/** Paths relative to `dir` of every file below it whose name ends with one of `extensions`. */
export function listFiles(dir: string, extensions: readonly string[]): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { recursive: true, encoding: 'utf8' })
    .filter((name) => extensions.some((ext) => name.endsWith(ext)))
    .map((name) => name.split(path.sep).join('/'))
    .sort();
}

export function readVector(relative: string): Buffer {
  return readFileSync(path.join(VECTORS_DIR, relative));
}

export function readFixture(relative: string): Buffer {
  return readFileSync(path.join(FIXTURES_DIR, relative));
}
