import { expect } from 'chai';
import { InMemoryCsrfTokens } from '../../../server/registration/csrf-tokens.ts';
import { InMemoryLoginThrottle } from '../../../server/registration/login-throttle.ts';
import { contentSecurityPolicy } from '../../../server/registration/security-headers.ts';
import {
  newRegistrationCode,
  REGISTRATION_CODE_PATTERN,
  registrationUrl,
} from '../../../server/registration/targets.ts';

describe('InMemoryCsrfTokens', () => {
  it('issues random 256-bit tokens, each valid once, for its binding only', async () => {
    const tokens = new InMemoryCsrfTokens();
    const a = await tokens.issue('code-1\nsession-1');
    const b = await tokens.issue('code-1\nsession-1');
    expect(a).to.match(/^[A-Za-z0-9_-]{43}$/);
    expect(a).not.to.equal(b);
    expect(await tokens.consume('code-1\nsession-1', a)).to.equal(true);
    expect(await tokens.consume('code-1\nsession-1', a)).to.equal(false); // single use
    expect(await tokens.consume('code-2\nsession-1', b)).to.equal(false); // another binding...
    expect(await tokens.consume('code-1\nsession-1', b)).to.equal(false); // ...spends it
    expect(await tokens.consume('code-1\nsession-1', '')).to.equal(false);
    expect(await tokens.consume('code-1\nsession-1', 'not-issued')).to.equal(false);
  });

  it('expires tokens and bounds memory', async () => {
    let now = 1_000_000;
    const tokens = new InMemoryCsrfTokens({ ttlMs: 1000, maxTokens: 3, now: () => now });
    const t = await tokens.issue('x');
    now += 1001;
    expect(await tokens.consume('x', t)).to.equal(false);
    for (let i = 0; i < 10; i++) await tokens.issue(`b${i}`);
    expect(tokens.size).to.be.at.most(3);
  });
});

describe('InMemoryLoginThrottle', () => {
  const key = { code: 'c1', address: '192.0.2.1' };

  it('allows 5 failures per code in 15 minutes, then refuses with the wait; the window slides', async () => {
    let now = 0;
    const throttle = new InMemoryLoginThrottle({ now: () => now });
    for (let i = 0; i < 5; i++) {
      expect(await throttle.acquire(key)).to.deep.equal({ allowed: true });
      now += 60_000;
    }
    // Attempts at 0, 1, 2, 3, 4 minutes; now = 5 minutes: the first frees up at 15 minutes.
    expect(await throttle.acquire(key)).to.deep.equal({ allowed: false, retryAfterSeconds: 600 });
    now = 15 * 60_000 + 1;
    expect(await throttle.acquire(key)).to.deep.equal({ allowed: true });
    expect((await throttle.acquire(key)).allowed).to.equal(false);
  });

  it("a success forgets the code's failures; forget takes one attempt back", async () => {
    const throttle = new InMemoryLoginThrottle();
    for (let i = 0; i < 4; i++) await throttle.acquire(key);
    await throttle.acquire(key);
    await throttle.forget(key);
    expect((await throttle.acquire(key)).allowed).to.equal(true); // the 5th again
    expect((await throttle.acquire(key)).allowed).to.equal(false);
    await throttle.succeeded(key);
    expect((await throttle.acquire(key)).allowed).to.equal(true);
  });

  it('counts per address across codes, with its own limit', async () => {
    const throttle = new InMemoryLoginThrottle({ limits: { perAddress: 3 } });
    for (let i = 0; i < 3; i++)
      expect((await throttle.acquire({ code: `c${i}`, address: 'a' })).allowed).to.equal(true);
    expect((await throttle.acquire({ code: 'c9', address: 'a' })).allowed).to.equal(false);
    expect((await throttle.acquire({ code: 'c9', address: 'b' })).allowed).to.equal(true);
  });

  it('concurrent attempts cannot slip past the limit', async () => {
    const throttle = new InMemoryLoginThrottle();
    const decisions = await Promise.all(Array.from({ length: 20 }, () => throttle.acquire(key)));
    expect(decisions.filter((d) => d.allowed)).to.have.length(5);
  });
});

describe('registration codes and CSP', () => {
  it('codes are 256-bit base64url and accepted by the page pattern', () => {
    const codes = new Set(Array.from({ length: 100 }, () => newRegistrationCode()));
    expect(codes.size).to.equal(100);
    for (const c of codes) {
      expect(Buffer.from(c, 'base64url')).to.have.length(32);
      expect(REGISTRATION_CODE_PATTERN.test(c)).to.equal(true);
    }
    expect(registrationUrl('https://mdm.example.com/', 'abc')).to.equal(
      'https://mdm.example.com/register/abc',
    );
  });

  it('the CSP allows only the nonce-d style and the form redirect target', () => {
    expect(contentSecurityPolicy('n0nce', ['https://apple.example'])).to.equal(
      "default-src 'none'; style-src 'nonce-n0nce'; form-action 'self' https://apple.example; frame-ancestors 'none'; base-uri 'none'",
    );
  });
});
