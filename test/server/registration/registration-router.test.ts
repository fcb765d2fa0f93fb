import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { expect } from 'chai';
import express from 'express';
import type { PasswordCheck, PasswordChecker } from '../../../server/directory/ldap-authenticator.ts';
import { LdapUnavailableError } from '../../../server/directory/ldap-authenticator.ts';
import { LoginService } from '../../../server/directory/login-service.ts';
import { createLogger } from '../../../server/log.ts';
import { InMemoryCsrfTokens } from '../../../server/registration/csrf-tokens.ts';
import { InMemoryLoginThrottle } from '../../../server/registration/login-throttle.ts';
import { LOGIN_FAILED_MESSAGE } from '../../../server/registration/pages.ts';
import { registrationRouter, SESSION_COOKIE } from '../../../server/registration/registration-router.ts';
import { newRegistrationCode } from '../../../server/registration/targets.ts';
import { FakeRegistrationTargets } from '../../helpers/fake-registration-targets.ts';

const APPLE = 'https://apple.example.test/invite/ABC';

/** A directory with two accounts; can be switched "down". */
class FakeDirectory implements PasswordChecker {
  down = false;
  private readonly accounts = new Map([
    ['alice', 'alice-pw'],
    ['bob', 'bob-pw'],
  ]);
  async verify(username: string, password: string): Promise<PasswordCheck> {
    if (this.down) throw new LdapUnavailableError('connect ECONNREFUSED');
    const expected = this.accounts.get(username.toLowerCase());
    return expected !== undefined && expected === password
      ? { ok: true, dn: `uid=${username},ou=people`, attributes: {} }
      : { ok: false };
  }
}

interface Answer {
  status: number;
  headers: Headers;
  text: string;
}

describe('registration page (GET/POST /register/:code) over real HTTP', function () {
  this.timeout(30_000);
  let server: http.Server;
  let base: string;
  let targets: FakeRegistrationTargets;
  let directory: FakeDirectory;
  let csrf: InMemoryCsrfTokens;

  before(async () => {
    targets = new FakeRegistrationTargets();
    directory = new FakeDirectory();
    csrf = new InMemoryCsrfTokens();
    const app = express();
    app.use(
      registrationRouter({
        targets,
        login: new LoginService({ ldap: directory, local: null, minFailureMs: 0 }),
        csrf,
        throttle: new InMemoryLoginThrottle(),
        log: createLogger('silent'),
      }),
    );
    server = http.createServer(app);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(async () => {
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
  beforeEach(() => {
    directory.down = false;
    targets.failWith = null;
  });

  async function request(
    method: string,
    path: string,
    opts: { cookie?: string; form?: Record<string, string>; body?: string; contentType?: string } = {},
  ): Promise<Answer> {
    const headers: Record<string, string> = {};
    if (opts.cookie) headers.cookie = opts.cookie;
    let body: string | undefined = opts.body;
    if (opts.form) {
      body = new URLSearchParams(opts.form).toString();
      headers['content-type'] = 'application/x-www-form-urlencoded';
    }
    if (opts.contentType) headers['content-type'] = opts.contentType;
    const res = await fetch(`${base}${path}`, { method, headers, body, redirect: 'manual' });
    return { status: res.status, headers: res.headers, text: method === 'HEAD' ? '' : await res.text() };
  }

  /** Opens the login form: its session cookie and CSRF token. */
  async function openForm(
    code: string,
    cookie?: string,
  ): Promise<{ cookie: string; token: string; page: Answer }> {
    const page = await request('GET', `/register/${code}`, cookie ? { cookie } : {});
    expect(page.status).to.equal(200);
    const token = /name="csrfToken" value="([^"]+)"/.exec(page.text)?.[1];
    if (!token) throw new Error('no CSRF token in the form');
    const setCookie = page.headers.get('set-cookie');
    const session = setCookie ? setCookie.split(';')[0] : cookie;
    if (!session) throw new Error('no session cookie');
    return { cookie: session, token, page };
  }

  function expectSecurityHeaders(a: Answer) {
    const csp = a.headers.get('content-security-policy') ?? '';
    expect(csp).to.include("default-src 'none'");
    expect(csp).to.match(/style-src 'nonce-[A-Za-z0-9+/=]+'/);
    expect(csp).to.include("form-action 'self'");
    expect(csp).to.include("frame-ancestors 'none'");
    expect(a.headers.get('x-content-type-options')).to.equal('nosniff');
    expect(a.headers.get('referrer-policy')).to.equal('no-referrer');
    expect(a.headers.get('cache-control')).to.equal('no-store');
    expect(a.headers.get('x-frame-options')).to.equal('DENY');
  }

  it('unknown or malformed code → 404 page with security headers', async () => {
    for (const code of [newRegistrationCode(), 'short', 'has%20space-but-long-enough']) {
      const a = await request('GET', `/register/${code}`);
      expect(a.status).to.equal(404);
      expect(a.headers.get('content-type')).to.match(/^text\/html; charset=utf-8/);
      expect(a.text).to.include('This link is not valid');
      expect(a.text).to.include('<html lang="en">');
      expectSecurityHeaders(a);
      const nonce = /style-src 'nonce-([^']+)'/.exec(a.headers.get('content-security-policy') ?? '')?.[1];
      expect(a.text).to.include(`<style nonce="${nonce}">`);
      expect(a.text).not.to.match(/<script|<img|<link|https?:\/\//);
    }
    expect(
      (await request('POST', `/register/${newRegistrationCode()}`, { form: { csrfToken: 'x' } })).status,
    ).to.equal(404);
  });

  it('a registered user sees a 200 page saying so (GET and POST)', async () => {
    const code = newRegistrationCode();
    targets.add(code, { alreadyRegistered: true, requireLogin: true, invitationName: 'Books <2025>' });
    const a = await request('GET', `/register/${code}`);
    expect(a.status).to.equal(200);
    expect(a.text).to.include("You're already registered");
    expect(a.text).to.include('Books &lt;2025&gt;');
    expectSecurityHeaders(a);
    expect((await request('POST', `/register/${code}`, { form: {} })).status).to.equal(200);
    expect(targets.opened).not.to.include(code);
  });

  it('without requireLogin: 303 to the Apple invitation URL, the opening recorded (not for HEAD)', async () => {
    const code = newRegistrationCode();
    targets.add(code, { requireLogin: false });
    const head = await request('HEAD', `/register/${code}`);
    expect(head.status).to.equal(303);
    expect(targets.opened.filter((c) => c === code)).to.have.length(0);
    const a = await request('GET', `/register/${code}`);
    expect(a.status).to.equal(303);
    expect(a.headers.get('location')).to.equal(APPLE);
    expect(a.headers.get('referrer-policy')).to.equal('no-referrer');
    expect(targets.opened.filter((c) => c === code)).to.have.length(1);
  });

  it('an Apple URL not known yet → 503 "almost ready" with Retry-After', async () => {
    const code = newRegistrationCode();
    targets.add(code, { appleInvitationUrl: null });
    const a = await request('GET', `/register/${code}`);
    expect(a.status).to.equal(503);
    expect(a.headers.get('retry-after')).to.equal('300');
    expect(a.text).to.include('Almost ready');
  });

  it('with requireLogin: 200 form posting username, password and a hidden CSRF token to the same URL', async () => {
    const code = newRegistrationCode();
    targets.add(code, { requireLogin: true, orgName: 'Acme & Co' });
    const { page } = await openForm(code);
    expectSecurityHeaders(page);
    expect(page.headers.get('content-security-policy')).to.include(
      "form-action 'self' https://apple.example.test",
    );
    expect(page.text).to.match(/<form method="post">/); // no action: the page's own URL
    expect(page.text).to.include('name="username"');
    expect(page.text).to.include('name="password" type="password"');
    expect(page.text).to.match(/<input type="hidden" name="csrfToken" value="[A-Za-z0-9_-]{43}">/);
    expect(page.text).to.include('<label for="username">');
    expect(page.text).to.include('<label for="password">');
    expect(page.text).to.include('Acme &amp; Co');
    const cookie = page.headers.get('set-cookie') ?? '';
    expect(cookie).to.match(new RegExp(`^${SESSION_COOKIE}=[A-Za-z0-9_-]{43};`));
    expect(cookie).to.match(/HttpOnly/i);
    expect(cookie).to.match(/SameSite=Strict/i);
    expect(cookie).to.match(/Path=\/register/);
    expect(targets.opened).not.to.include(code);
  });

  it("the invited user's right credentials → 303 to Apple and the opening recorded", async () => {
    const code = newRegistrationCode();
    targets.add(code, { requireLogin: true, username: 'Alice' });
    const { cookie, token } = await openForm(code);
    const a = await request('POST', `/register/${code}`, {
      cookie,
      form: { username: 'alice', password: 'alice-pw', csrfToken: token },
    });
    expect(a.status).to.equal(303);
    expect(a.headers.get('location')).to.equal(APPLE);
    expect(targets.opened.filter((c) => c === code)).to.have.length(1);
  });

  it('wrong credentials → 200, the form again with a message that reveals nothing, and a new token', async () => {
    const code = newRegistrationCode();
    targets.add(code, { requireLogin: true, username: 'alice' });
    const bodies: string[] = [];
    for (const creds of [
      { username: 'alice', password: 'wrong' }, // wrong password
      { username: 'nobody', password: 'x' }, // unknown user
      { username: 'bob', password: 'bob-pw' }, // another user's right credentials
    ]) {
      const { cookie, token } = await openForm(code);
      const a = await request('POST', `/register/${code}`, { cookie, form: { ...creds, csrfToken: token } });
      expect(a.status).to.equal(200);
      expect(a.text).to.include(LOGIN_FAILED_MESSAGE);
      expect(a.text).to.include('role="alert"');
      const again = /name="csrfToken" value="([^"]+)"/.exec(a.text)?.[1];
      expect(again).to.be.a('string').and.not.equal(token);
      const message = /<p class="error"[^>]*>([^<]*)<\/p>/.exec(a.text)?.[1];
      bodies.push(message ?? '');
    }
    expect(new Set(bodies).size).to.equal(1);
    expect(targets.opened).not.to.include(code);
  });

  it('a POST without a valid CSRF token → 403 (missing, no cookie, reused, another code, another session)', async () => {
    const code = newRegistrationCode();
    const other = newRegistrationCode();
    targets.add(code, { requireLogin: true });
    targets.add(other, { requireLogin: true });
    const creds = { username: 'alice', password: 'alice-pw' };

    const first = await openForm(code);
    expect(
      (await request('POST', `/register/${code}`, { cookie: first.cookie, form: creds })).status,
    ).to.equal(403);
    expect(
      (await request('POST', `/register/${code}`, { form: { ...creds, csrfToken: first.token } })).status,
    ).to.equal(403);

    const forOther = await openForm(other, first.cookie);
    expect(
      (
        await request('POST', `/register/${code}`, {
          cookie: first.cookie,
          form: { ...creds, csrfToken: forOther.token },
        })
      ).status,
    ).to.equal(403);

    const second = await openForm(code);
    const third = await openForm(code);
    expect(
      (
        await request('POST', `/register/${code}`, {
          cookie: third.cookie,
          form: { ...creds, csrfToken: second.token },
        })
      ).status,
    ).to.equal(403);

    const fresh = await openForm(code);
    const ok = await request('POST', `/register/${code}`, {
      cookie: fresh.cookie,
      form: { ...creds, csrfToken: fresh.token },
    });
    expect(ok.status).to.equal(303);
    const reused = await request('POST', `/register/${code}`, {
      cookie: fresh.cookie,
      form: { ...creds, csrfToken: fresh.token },
    });
    expect(reused.status).to.equal(403);
    expect(reused.text).to.include('This page has expired');
    expectSecurityHeaders(reused);
    // JSON or other bodies carry no token either.
    expect(
      (
        await request('POST', `/register/${code}`, {
          cookie: fresh.cookie,
          body: JSON.stringify({ ...creds, csrfToken: 'x' }),
          contentType: 'application/json',
        })
      ).status,
    ).to.equal(403);
  });

  it('5 failures per code are allowed; the 6th attempt → 429 with Retry-After, even with the right password', async () => {
    const code = newRegistrationCode();
    targets.add(code, { requireLogin: true });
    for (let i = 1; i <= 5; i++) {
      const { cookie, token } = await openForm(code);
      const a = await request('POST', `/register/${code}`, {
        cookie,
        form: { username: 'alice', password: `wrong-${i}`, csrfToken: token },
      });
      expect(a.status, `attempt ${i}`).to.equal(200);
    }
    const { cookie, token } = await openForm(code);
    const sixth = await request('POST', `/register/${code}`, {
      cookie,
      form: { username: 'alice', password: 'alice-pw', csrfToken: token },
    });
    expect(sixth.status).to.equal(429);
    expect(Number(sixth.headers.get('retry-after'))).to.be.within(1, 15 * 60);
    expect(sixth.text).to.include('Too many attempts');
    expectSecurityHeaders(sixth);
    expect(targets.opened).not.to.include(code);

    // Another code (same address) is not affected.
    const other = newRegistrationCode();
    targets.add(other, { requireLogin: true });
    const f = await openForm(other);
    const a = await request('POST', `/register/${other}`, {
      cookie: f.cookie,
      form: { username: 'alice', password: 'alice-pw', csrfToken: f.token },
    });
    expect(a.status).to.equal(303);
  });

  it('a directory that is down → 503 and the form again saying sign-in is unavailable (not counted)', async () => {
    const code = newRegistrationCode();
    targets.add(code, { requireLogin: true });
    directory.down = true;
    for (let i = 0; i < 6; i++) {
      const { cookie, token } = await openForm(code);
      const a = await request('POST', `/register/${code}`, {
        cookie,
        form: { username: 'alice', password: 'alice-pw', csrfToken: token },
      });
      expect(a.status).to.equal(503);
      expect(a.text).to.include('temporarily unavailable');
    }
    directory.down = false;
    const { cookie, token } = await openForm(code);
    const a = await request('POST', `/register/${code}`, {
      cookie,
      form: { username: 'alice', password: 'alice-pw', csrfToken: token },
    });
    expect(a.status).to.equal(303);
  });

  it('an internal failure → 500 HTML page that leaks nothing', async () => {
    targets.failWith = new Error('database is on fire: secret-detail');
    const a = await request('GET', `/register/${newRegistrationCode()}`);
    expect(a.status).to.equal(500);
    expect(a.headers.get('content-type')).to.match(/^text\/html/);
    expect(a.text).to.include('Something went wrong');
    expect(a.text).not.to.include('secret-detail');
  });

  it('an oversized form → 413 HTML page', async () => {
    const code = newRegistrationCode();
    targets.add(code, { requireLogin: true });
    const { cookie, token } = await openForm(code);
    const a = await request('POST', `/register/${code}`, {
      cookie,
      form: { username: 'alice', password: 'x'.repeat(40_000), csrfToken: token },
    });
    expect(a.status).to.equal(413);
    expect(a.headers.get('content-type')).to.match(/^text\/html/);
  });
});

describe('per-address throttling across codes', function () {
  this.timeout(30_000);
  it('an address failing on many codes is throttled at its own limit', async () => {
    const targets = new FakeRegistrationTargets();
    const app = express();
    app.use(
      registrationRouter({
        targets,
        login: new LoginService({ ldap: new FakeDirectory(), local: null, minFailureMs: 0 }),
        csrf: new InMemoryCsrfTokens(),
        throttle: new InMemoryLoginThrottle({ limits: { perAddress: 3 } }),
        log: createLogger('silent'),
      }),
    );
    const server = http.createServer(app);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    try {
      const statuses: number[] = [];
      for (let i = 0; i < 4; i++) {
        const code = newRegistrationCode();
        targets.add(code, { requireLogin: true });
        const page = await fetch(`${base}/register/${code}`);
        const html = await page.text();
        const token = /name="csrfToken" value="([^"]+)"/.exec(html)?.[1] ?? '';
        const cookie = (page.headers.get('set-cookie') ?? '').split(';')[0] ?? '';
        const res = await fetch(`${base}/register/${code}`, {
          method: 'POST',
          redirect: 'manual',
          headers: { cookie, 'content-type': 'application/x-www-form-urlencoded' },
          body: new URLSearchParams({ username: 'alice', password: 'wrong', csrfToken: token }).toString(),
        });
        statuses.push(res.status);
        await res.text();
      }
      expect(statuses).to.deep.equal([200, 200, 200, 429]);
    } finally {
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });
});
