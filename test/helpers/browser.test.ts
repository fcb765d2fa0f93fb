import { statSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { expect } from 'chai';
import express from 'express';
import type { Browser } from 'playwright-core';
import {
  BROWSER_SKIP_MESSAGE,
  browserAvailable,
  launchBrowser,
  newContext,
  screenshotPath,
} from './browser.ts';

describe('browser harness (Debian Chromium through playwright-core)', function () {
  this.timeout(60_000);
  let browser: Browser | null = null;
  let server: http.Server;
  let base: string;

  before(async function () {
    if (!browserAvailable()) {
      console.warn(BROWSER_SKIP_MESSAGE);
      this.skip();
    }
    const app = express();
    app.get('/hello', (_req, res) => {
      res
        .type('html')
        .send('<!DOCTYPE html><html lang="en"><title>Hello</title><h1 id="greeting">Hello from express</h1>');
    });
    server = http.createServer(app);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    browser = await launchBrowser();
  });
  after(async () => {
    await browser?.close();
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  it('opens a page served on localhost, reads its text and takes a screenshot', async () => {
    if (!browser) throw new Error('no browser');
    const context = await newContext(browser);
    try {
      const page = await context.newPage();
      const response = await page.goto(`${base}/hello`);
      expect(response?.status()).to.equal(200);
      expect(await page.title()).to.equal('Hello');
      expect(await page.textContent('#greeting')).to.equal('Hello from express');
      const file = screenshotPath('browser-harness.png');
      await page.screenshot({ path: file });
      expect(statSync(file).size).to.be.above(1000);
    } finally {
      await context.close();
    }
  });
});
