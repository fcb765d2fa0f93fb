import { existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium, type Browser, type BrowserContext } from 'playwright-core';

/**
 * A real browser for page tests: Debian's Chromium (`apt-get install chromium`, `.ci/run` does it)
 * driven by playwright-core. No browser is ever downloaded.
 */
export const CHROMIUM_PATH = '/usr/bin/chromium';
export const BROWSER_SKIP_MESSAGE =
  'skipping browser tests: Chromium is not installed (apt-get install chromium)';

/** Where tests write screenshots (gitignored). */
export const TEST_OUTPUT_DIR = path.resolve(
  path.dirname(fileURLToPath(import.meta.url)),
  '../../test-output',
);

export function browserAvailable(): boolean {
  return existsSync(CHROMIUM_PATH);
}

export async function launchBrowser(): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM_PATH,
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
    timeout: 30_000,
  });
}

/**
 * A fresh context (no cookies, no storage). Chromium takes no CA file: for the server's own HTTPS
 * with the development CA, `ignoreHTTPSErrors` is used (acceptable for a test server on localhost;
 * the pages' security does not depend on it).
 */
export async function newContext(
  browser: Browser,
  opts: { ignoreHTTPSErrors?: boolean } = {},
): Promise<BrowserContext> {
  return browser.newContext({
    ignoreHTTPSErrors: opts.ignoreHTTPSErrors ?? false,
    viewport: { width: 800, height: 700 },
    locale: 'en-US',
    javaScriptEnabled: true,
  });
}

/** `test-output/<name>` (the directory is made when missing). */
export function screenshotPath(name: string): string {
  mkdirSync(TEST_OUTPUT_DIR, { recursive: true });
  return path.join(TEST_OUTPUT_DIR, name);
}
