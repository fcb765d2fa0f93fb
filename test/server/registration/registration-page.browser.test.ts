import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { expect } from 'chai';
import express from 'express';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { LocalPasswordChecker } from '../../../server/directory/local-password-checker.ts';
import { LoginService } from '../../../server/directory/login-service.ts';
import { hashPassword } from '../../../server/directory/password.ts';
import { createLogger } from '../../../server/log.ts';
import { InMemoryCsrfTokens } from '../../../server/registration/csrf-tokens.ts';
import { InMemoryLoginThrottle } from '../../../server/registration/login-throttle.ts';
import { registrationRouter } from '../../../server/registration/registration-router.ts';
import { newRegistrationCode } from '../../../server/registration/targets.ts';
import {
  BROWSER_SKIP_MESSAGE,
  browserAvailable,
  launchBrowser,
  newContext,
  screenshotPath,
} from '../../helpers/browser.ts';
import { FakeRegistrationTargets } from '../../helpers/fake-registration-targets.ts';

async function listen(app: express.Express): Promise<{ server: http.Server; base: string }> {
  const server = http.createServer(app);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, base: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
}

describe('registration page in a real browser (Chromium)', function () {
  this.timeout(60_000);
  let browser: Browser | null = null;
  let context: BrowserContext;
  let page: Page;
  let mdm: { server: http.Server; base: string };
  let apple: { server: http.Server; base: string };
  const targets = new FakeRegistrationTargets();
  const cspViolations: string[] = [];

  before(async function () {
    if (!browserAvailable()) {
      console.warn(BROWSER_SKIP_MESSAGE);
      this.skip();
    }
    // A fake "Apple" invitation page on another origin (as Apple's is).
    const appleApp = express();
    appleApp.get('/invite/:inviteCode', (req, res) => {
      res
        .type('html')
        .send(
          `<!DOCTYPE html><html lang="en"><title>Apple</title><h1 id="apple">Fake Apple invitation ${req.params.inviteCode}</h1>`,
        );
    });
    apple = await listen(appleApp);

    const hashes = new Map([['7', await hashPassword('correct horse battery')]]);
    const app = express();
    app.use(
      registrationRouter({
        targets,
        login: new LoginService({
          ldap: null,
          local: new LocalPasswordChecker({ getPasswordHash: async (id) => hashes.get(id) ?? null }),
          minFailureMs: 0,
        }),
        csrf: new InMemoryCsrfTokens(),
        throttle: new InMemoryLoginThrottle(),
        log: createLogger('silent'),
      }),
    );
    mdm = await listen(app);
    browser = await launchBrowser();
  });
  beforeEach(async () => {
    if (!browser) return;
    context = await newContext(browser);
    page = await context.newPage();
    page.on('console', (msg) => {
      if (/Content.Security.Policy|Refused to/i.test(msg.text())) cspViolations.push(msg.text());
    });
  });
  afterEach(async () => {
    await context?.close();
  });
  after(async () => {
    await browser?.close();
    for (const s of [mdm, apple])
      if (s) await new Promise<void>((resolve) => s.server.close(() => resolve()));
    expect(cspViolations, 'CSP violations').to.deep.equal([]);
  });

  it('login form → wrong password → the form again → right password → lands on Apple', async () => {
    const code = newRegistrationCode();
    targets.add(code, {
      userId: '7',
      username: 'jappleseed',
      requireLogin: true,
      orgName: 'Example Corp',
      invitationName: 'Staff apps and books',
      appleInvitationUrl: `${apple.base}/invite/XYZ123`,
    });
    const first = await page.goto(`${mdm.base}/register/${code}`);
    expect(first?.status()).to.equal(200);
    expect(await page.title()).to.equal('Sign in to register');
    expect(await page.getByLabel('Username').isVisible()).to.equal(true);
    expect(await page.getByLabel('Password').isVisible()).to.equal(true);
    await page.screenshot({ path: screenshotPath('registration-login.png') });

    await page.getByLabel('Username').fill('jappleseed');
    await page.getByLabel('Password').fill('wrong password');
    const [failed] = await Promise.all([
      page.waitForNavigation(),
      page.getByRole('button', { name: 'Sign in and continue' }).click(),
    ]);
    expect(failed?.status()).to.equal(200);
    expect(await page.getByRole('alert').textContent()).to.equal(
      'The username or password is incorrect. Please try again.',
    );
    expect(await page.getByLabel('Username').inputValue()).to.equal('jappleseed');
    await page.screenshot({ path: screenshotPath('registration-login-error.png') });
    expect(targets.opened).not.to.include(code);

    await page.getByLabel('Password').fill('correct horse battery');
    await Promise.all([
      page.waitForURL(`${apple.base}/invite/XYZ123`),
      page.getByRole('button', { name: 'Sign in and continue' }).click(),
    ]);
    expect(await page.textContent('#apple')).to.equal('Fake Apple invitation XYZ123');
    expect(targets.opened).to.include(code);
  });

  it('without requireLogin the link goes straight to Apple', async () => {
    const code = newRegistrationCode();
    targets.add(code, { requireLogin: false, appleInvitationUrl: `${apple.base}/invite/DIRECT` });
    await page.goto(`${mdm.base}/register/${code}`);
    expect(page.url()).to.equal(`${apple.base}/invite/DIRECT`);
    expect(await page.textContent('#apple')).to.equal('Fake Apple invitation DIRECT');
  });

  it('the already-registered, not-found and throttled pages', async () => {
    const registered = newRegistrationCode();
    targets.add(registered, {
      alreadyRegistered: true,
      orgName: 'Example Corp',
      invitationName: 'Staff apps and books',
    });
    const r = await page.goto(`${mdm.base}/register/${registered}`);
    expect(r?.status()).to.equal(200);
    expect(await page.getByRole('heading', { level: 1 }).textContent()).to.equal("You're already registered");
    await page.screenshot({ path: screenshotPath('registration-registered.png') });

    const missing = await page.goto(`${mdm.base}/register/${newRegistrationCode()}`);
    expect(missing?.status()).to.equal(404);
    expect(await page.getByRole('heading', { level: 1 }).textContent()).to.equal('This link is not valid');
    await page.screenshot({ path: screenshotPath('registration-not-found.png') });

    const code = newRegistrationCode();
    targets.add(code, { userId: '7', username: 'jappleseed', requireLogin: true, orgName: 'Example Corp' });
    await page.goto(`${mdm.base}/register/${code}`);
    let status = 0;
    for (let i = 0; i < 6 && status !== 429; i++) {
      await page.getByLabel('Username').fill('jappleseed');
      await page.getByLabel('Password').fill(`wrong ${i}`);
      const [res] = await Promise.all([
        page.waitForNavigation(),
        page.getByRole('button', { name: 'Sign in and continue' }).click(),
      ]);
      status = res?.status() ?? 0;
    }
    expect(status).to.equal(429);
    expect(await page.getByRole('heading', { level: 1 }).textContent()).to.equal('Too many attempts');
    await page.screenshot({ path: screenshotPath('registration-throttled.png') });
  });

  it('a narrow (phone) screen, light and dark', async () => {
    const code = newRegistrationCode();
    targets.add(code, {
      requireLogin: true,
      orgName: 'Example Corp',
      invitationName: 'Staff apps and books',
    });
    await page.setViewportSize({ width: 390, height: 700 });
    await page.goto(`${mdm.base}/register/${code}`);
    const overflow: unknown = await page.evaluate('document.documentElement.scrollWidth > window.innerWidth');
    expect(overflow).to.equal(false);
    await page.screenshot({ path: screenshotPath('registration-login-phone.png') });
    await page.emulateMedia({ colorScheme: 'dark' });
    await page.screenshot({ path: screenshotPath('registration-login-phone-dark.png') });
  });
});
