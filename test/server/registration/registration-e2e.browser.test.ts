import { expect } from 'chai';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import {
  BROWSER_SKIP_MESSAGE,
  browserAvailable,
  launchBrowser,
  newContext,
  screenshotPath,
} from '../../helpers/browser.ts';
import { SLAPD_SKIP_MESSAGE, slapdAvailable, startSlapd, type Slapd } from '../../helpers/slapd.ts';
import type { CapturedMail } from '../../helpers/smtp-capture.ts';
import { waitFor } from '../vpp/helpers.ts';
import { emailFixture, linkOf, messagesTo, type EmailFixture } from '../mail/helpers.ts';

const WRONG = 'The username or password is incorrect. Please try again.';

/**
 * End to end, everything real: the server sends the invitation emails to a real SMTP server, the
 * link from a captured message is opened in Chromium, the user logs in against OpenLDAP's slapd (or
 * with a local account), lands on the simulated Apple invitation page, accepts there with an Apple
 * ID, and the usage becomes `registered` from Apple's notification.
 */
describe('registration page end to end (SMTP, slapd, Chromium, simulated Apple)', function () {
  this.timeout(120_000);
  let slapd: Slapd | null = null;
  let f: EmailFixture;
  let browser: Browser;
  let context: BrowserContext;
  let page: Page;
  let invitationId: string;
  const users = new Map<string, string>();
  const cspViolations: string[] = [];

  const linkFor = (address: string): string => {
    const [mail] = messagesTo(f.smtp, address) as [CapturedMail | undefined];
    if (!mail) throw new Error(`no message to ${address}`);
    return linkOf(mail);
  };
  const statusOf = async (username: string) =>
    (await f.usage(invitationId)).find((u) => u.userId === users.get(username))?.status;

  /** Fills the login form and submits it; answers the HTTP status of the page that follows. */
  const login = async (username: string, password: string): Promise<number> => {
    await page.getByLabel('Username').fill(username);
    await page.getByLabel('Password').fill(password);
    const [res] = await Promise.all([
      page.waitForNavigation(),
      page.getByRole('button', { name: 'Sign in and continue' }).click(),
    ]);
    return res?.status() ?? 0;
  };

  /** On the simulated Apple page: accept with an Apple ID. */
  const acceptAtApple = async (appleId: string) => {
    expect(await page.locator('#title').textContent()).to.match(/^Sign in with your Apple ID to join /);
    await page.locator('#appleId').fill(appleId);
    await Promise.all([page.waitForNavigation(), page.getByRole('button', { name: 'Accept' }).click()]);
    expect(await page.locator('#title').textContent()).to.equal("You're in");
  };

  before(async function () {
    if (!browserAvailable()) {
      console.warn(BROWSER_SKIP_MESSAGE);
      this.skip();
    }
    const env: Record<string, string> = {};
    if (slapdAvailable()) {
      slapd = await startSlapd();
      Object.assign(env, {
        MDM_LDAP_URL: slapd.url,
        MDM_LDAP_BIND_DN: slapd.serviceDn,
        MDM_LDAP_BIND_PASSWORD: slapd.servicePassword,
        MDM_LDAP_USER_BASE: slapd.peopleBase,
      });
    } else {
      console.warn(SLAPD_SKIP_MESSAGE);
    }
    f = await emailFixture({ env });
    // alice, bob, carol and dave are directory (LDAP) accounts; lena has a local account only.
    for (const name of ['alice', 'bob', 'carol', 'dave']) {
      users.set(
        name,
        await f.addUser(name, { email: `${name}@example.test`, fullName: `${name} (directory)` }),
      );
    }
    users.set(
      'lena',
      await f.addUser('lena', { email: 'lena@example.test', password: 'lena-Local-Secret-9' }),
    );
    const inv = await f.invite([...users.values()], {
      name: 'Staff apps and books',
      requireLogin: true,
      email: {
        senderName: 'IT Department',
        senderAddress: 'it@example.test',
        subject: 'Register for apps and books',
        message: 'Hello,\n\nOpen %@ and sign in with your usual account to register.\n\nIT',
      },
    });
    invitationId = inv.id;
    await f.waitForStatus(invitationId, [...users.values()], ['sent'], 30_000);
    await f.smtp.waitForMessages(users.size);
    browser = await launchBrowser();
  });
  after(async () => {
    await browser?.close();
    await f?.cleanup();
    await slapd?.stop();
    expect(cspViolations, 'CSP violations').to.deep.equal([]);
  });
  beforeEach(async () => {
    if (!browser) return;
    context = await newContext(browser, { ignoreHTTPSErrors: true });
    page = await context.newPage();
    page.on('console', (msg) => {
      if (/Content.Security.Policy|Refused to/i.test(msg.text())) cspViolations.push(msg.text());
    });
  });
  afterEach(async () => {
    await context?.close();
  });

  it('LDAP: the emailed link → login form; wrong password and another user’s login refused; right one → Apple → accept → registered', async function () {
    if (!slapd) this.skip();
    const link = linkFor('alice@example.test');
    const first = await page.goto(link);
    expect(first?.status()).to.equal(200);
    expect(await page.title()).to.equal('Sign in to register');
    expect(first?.headers()['content-security-policy']).to.contain("frame-ancestors 'none'");
    expect(first?.headers()['x-frame-options']).to.equal('DENY');
    await page.screenshot({ path: screenshotPath('e2e-registration-login.png') });

    expect(await login('alice', 'not-her-password')).to.equal(200);
    expect(await page.getByRole('alert').textContent()).to.equal(WRONG);
    await page.screenshot({ path: screenshotPath('e2e-registration-login-error.png') });
    expect(await statusOf('alice')).to.equal('sent');

    // bob's own, correct directory credentials on alice's link: the same answer, nothing revealed.
    expect(await login('bob', 'bob-Secret-2')).to.equal(200);
    expect(await page.getByRole('alert').textContent()).to.equal(WRONG);

    await login('alice', 'alice-Secret-1');
    expect(new URL(page.url()).origin).to.equal(new URL(f.service.invitationEmailTemplate).origin);
    expect(await statusOf('alice')).to.equal('acknowledged');
    await page.screenshot({ path: screenshotPath('e2e-apple-invitation.png') });
    await acceptAtApple('alice.personal@icloud.example');
    await f.waitForStatus(invitationId, [users.get('alice')!], ['registered']);

    // The link again: already registered.
    const again = await page.goto(link);
    expect(again?.status()).to.equal(200);
    expect(await page.getByRole('heading', { level: 1 }).textContent()).to.equal("You're already registered");
    await page.screenshot({ path: screenshotPath('e2e-registration-registered.png') });
  });

  it('a local account: logs in with its own password → Apple → accept → registered', async () => {
    await page.goto(linkFor('lena@example.test'));
    expect(await login('lena', 'lena-Local-Secret-9')).to.equal(200);
    expect(page.url()).to.match(/\/invite\?inviteCode=/);
    await acceptAtApple('lena@icloud.example');
    await f.waitForStatus(invitationId, [users.get('lena')!], ['registered']);
    await page.goto(linkFor('lena@example.test'));
    expect(await page.getByRole('heading', { level: 1 }).textContent()).to.equal("You're already registered");
  });

  it('a form posted without its CSRF token → 403 (the page has expired), the usage unchanged', async () => {
    await page.goto(linkFor('carol@example.test'));
    await page.locator('input[name="csrfToken"]').evaluate((el) => el.remove());
    expect(await login('carol', 'whatever-it-is')).to.equal(403);
    expect(await page.getByRole('heading', { level: 1 }).textContent()).to.equal('This page has expired');
    await page.screenshot({ path: screenshotPath('e2e-registration-expired.png') });
    expect(await statusOf('carol')).to.equal('sent');
  });

  it('too many attempts on one link → 429 with Retry-After, even with the right password then', async () => {
    await page.goto(linkFor('dave@example.test'));
    for (let i = 0; i < 5; i++) expect(await login('dave', `wrong-${i}`)).to.equal(200);
    const [res] = await Promise.all([
      page.waitForNavigation(),
      (async () => {
        await page.getByLabel('Username').fill('dave');
        await page.getByLabel('Password').fill(slapd ? 'dave-Secret-4' : 'wrong-again');
        await page.getByRole('button', { name: 'Sign in and continue' }).click();
      })(),
    ]);
    expect(res?.status()).to.equal(429);
    expect(Number(res?.headers()['retry-after'])).to.be.greaterThan(0);
    expect(await page.getByRole('heading', { level: 1 }).textContent()).to.equal('Too many attempts');
    await page.screenshot({ path: screenshotPath('e2e-registration-throttled.png') });
    expect(await statusOf('dave')).to.equal('sent');
  });

  it('an unknown code, and the code of a deleted invitation → 404; without requireLogin the link goes straight to Apple', async () => {
    const unknown = await page.goto(`${f.ts.server.url}/register/${'x'.repeat(43)}`);
    expect(unknown?.status()).to.equal(404);
    expect(await page.getByRole('heading', { level: 1 }).textContent()).to.equal('This link is not valid');
    await page.screenshot({ path: screenshotPath('e2e-registration-not-found.png') });

    const erin = await f.addUser('erin', { email: 'erin@example.test' });
    const open = await f.invite([erin], { name: 'No login needed' });
    await f.waitForStatus(open.id, [erin], ['sent']);
    const link = await waitFor('erin’s message', () => messagesTo(f.smtp, 'erin@example.test')[0]);
    await page.goto(linkOf(link));
    expect(page.url()).to.match(/\/invite\?inviteCode=/);
    await f.waitForStatus(open.id, [erin], ['acknowledged']);

    expect((await f.ts.api('DELETE', `/vpp-invitations/${open.id}`)).status).to.equal(204);
    await waitFor(
      'the invitation removed',
      async () => (await f.ts.api('GET', `/vpp-invitations/${open.id}`)).status === 404,
    );
    const gone = await page.goto(linkOf(link));
    expect(gone?.status()).to.equal(404);
  });
});
