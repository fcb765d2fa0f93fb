import { Writable } from 'node:stream';
import { expect } from 'chai';
import { pino } from 'pino';
import { AppleVppService } from '../../../simulator/apple-vpp/service.ts';
import {
  AppleBatchError,
  AppleError,
  decodeServiceToken,
  HttpAppsAndBooks,
  invitationUrlFrom,
  parseAppleDate,
  parseRetryAfter,
} from '../../../server/vpp/apple-client.ts';
import { waitFor } from './helpers.ts';

async function rejection(p: Promise<unknown>): Promise<AppleError> {
  try {
    await p;
  } catch (err) {
    if (err instanceof AppleError) return err;
    throw err;
  }
  throw new Error('expected a rejection');
}

const ids = (n: number, prefix: string) =>
  Array.from({ length: n }, (_, i) => `${prefix}-${i}-${Math.random().toString(36).slice(2)}`);

describe('Apple Apps and Books client (against the simulated service over HTTP)', function () {
  this.timeout(60_000);
  let service: AppleVppService;
  let client: HttpAppsAndBooks;
  let sToken: string;
  const logLines: string[] = [];

  before(async () => {
    service = new AppleVppService({ port: 0, eventDelayMs: 50, usersPageSize: 100 });
    const { url } = await service.start();
    const sink = new Writable({
      write(chunk: Buffer, _enc, cb) {
        logLines.push(chunk.toString('utf8'));
        cb();
      },
    });
    client = new HttpAppsAndBooks({ baseUrl: url, log: pino({ level: 'debug' }, sink) });
    sToken = service.mintServiceToken({
      orgName: 'Client Test Org',
      locationName: 'HQ',
      countryISO2ACode: 'GB',
    });
  });
  afterEach(() => service.clearFaults());
  after(async () => {
    client?.close();
    await service?.stop();
  });

  it('reads the service configuration once and caches it', async () => {
    const before = service.stats().requests.byRoute['GET /service/config'] ?? 0;
    const a = await client.serviceConfig();
    const b = await client.serviceConfig();
    expect(a).to.equal(b);
    expect(a.limits.maxUsers).to.equal(100);
    expect(a.urls.invitationEmail).to.contain('%25inviteCode%25');
    expect((service.stats().requests.byRoute['GET /service/config'] ?? 0) - before).to.equal(1);
  });

  it('reads the client configuration of a token (location name, country, uId)', async () => {
    const c = await client.clientConfig(sToken);
    expect(c.locationName).to.equal('HQ');
    expect(c.countryISO2ACode).to.equal('GB');
    expect(c.uId).to.match(/^\d+$/);
    expect(c.mdmInfo).to.equal(undefined);
  });

  it('creates 250 users in 3 batches, follows their events and reads them back by version', async () => {
    const { versionId: v0 } = await client.users(sToken, { pageIndex: 0 });
    const clientUserIds = ids(250, 'u');
    const creates = service.stats().requests.byRoute['POST /users/create'] ?? 0;
    const batches = await client.createUsers(
      sToken,
      clientUserIds.map((clientUserId) => ({ clientUserId })),
    );
    expect(batches.map((b) => b.clientUserIds.length)).to.deep.equal([100, 100, 50]);
    expect(new Set(batches.map((b) => b.eventId)).size).to.equal(3);
    expect((service.stats().requests.byRoute['POST /users/create'] ?? 0) - creates).to.equal(3);
    for (const b of batches) {
      const status = await waitFor('event complete', async () => {
        const s = await client.eventStatus(sToken, b.eventId);
        return s.eventStatus === 'PENDING' ? undefined : s;
      });
      expect(status.eventStatus).to.equal('COMPLETE');
      expect(status.failures).to.deep.equal([]);
      expect(status.numCompleted).to.equal(b.clientUserIds.length);
    }
    // everything since v0, in pages of 100
    const seen = new Map<string, string | undefined>();
    let pageIndex: number | undefined = 0;
    let pages = 0;
    while (pageIndex !== undefined) {
      const page = await client.users(sToken, { sinceVersionId: v0 ?? '', pageIndex });
      for (const u of page.users) seen.set(u.clientUserId, u.inviteCode);
      pages += 1;
      pageIndex = page.nextPageIndex;
    }
    expect(pages).to.equal(3);
    expect(clientUserIds.every((id) => typeof seen.get(id) === 'string')).to.equal(true);
    // one user by clientUserId
    const one = await client.users(sToken, { clientUserId: clientUserIds[7] ?? '' });
    expect(one.users).to.have.length(1);
    expect(one.users[0]?.status).to.equal('Registered');
  });

  it('reports 9716 for an existing clientUserId in the event failures (asynchronously)', async () => {
    const [id] = ids(1, 'dup');
    const [first] = await client.createUsers(sToken, [{ clientUserId: id ?? '' }]);
    await waitFor(
      'first event',
      async () => (await client.eventStatus(sToken, first?.eventId ?? '')).eventStatus !== 'PENDING',
    );
    const [second] = await client.createUsers(sToken, [{ clientUserId: id ?? '' }]);
    const s = await waitFor('second event', async () => {
      const st = await client.eventStatus(sToken, second?.eventId ?? '');
      return st.eventStatus === 'PENDING' ? undefined : st;
    });
    expect(s.failures).to.deep.equal([
      {
        clientUserId: id,
        errorNumber: 9716,
        errorMessage: 'A registered user already exists with the specified clientUserId.',
      },
    ]);
  });

  it('retires users', async () => {
    const [id] = ids(1, 'retire');
    const [c] = await client.createUsers(sToken, [{ clientUserId: id ?? '' }]);
    await waitFor(
      'create',
      async () => (await client.eventStatus(sToken, c?.eventId ?? '')).eventStatus !== 'PENDING',
    );
    const [r] = await client.retireUsers(sToken, [id ?? '']);
    await waitFor(
      'retire',
      async () => (await client.eventStatus(sToken, r?.eventId ?? '')).eventStatus !== 'PENDING',
    );
    const page = await client.users(sToken, { clientUserId: id ?? '' });
    expect(page.users[0]?.status).to.equal('Retired');
  });

  it('a later batch failing carries the batches already accepted', async () => {
    // the second batch repeats a clientUserId: Apple refuses that request (9715), the first one stands
    const list = ids(150, 'b');
    list[149] = list[148] ?? '';
    const e = await rejection(
      client.createUsers(
        sToken,
        list.map((clientUserId) => ({ clientUserId })),
      ),
    );
    expect(e).to.be.instanceOf(AppleBatchError);
    expect(e.errorNumber).to.equal(9715);
    expect((e as AppleBatchError).accepted.map((b) => b.clientUserIds.length)).to.deep.equal([100]);
    // a server error is transient
    service.addFault({
      path: '/users/create',
      times: 1,
      action: { kind: 'error', errorNumber: 9603, status: 500 },
    });
    const e2 = await rejection(client.createUsers(sToken, [{ clientUserId: 'x-1' }]));
    expect(e2).to.not.be.instanceOf(AppleBatchError);
    expect([e2.errorNumber, e2.transient]).to.deep.equal([9603, true]);
  });

  it('maps token errors: 9621 expired, 9625 revoked, 9601 login required', async () => {
    const expired = service.mintServiceToken({ orgName: 'Old', expDate: new Date(Date.now() - 1000) });
    const e1 = await rejection(client.clientConfig(expired));
    expect([e1.errorNumber, e1.tokenProblem, e1.httpStatus]).to.deep.equal([9621, 'token_expired', 401]);
    const revoked = service.mintServiceToken({ orgName: 'Gone' });
    service.revokeServiceToken(revoked);
    const e2 = await rejection(client.clientConfig(revoked));
    expect([e2.errorNumber, e2.tokenProblem]).to.deep.equal([9625, 'token_revoked']);
    const unknown = Buffer.from(
      JSON.stringify({ token: 'nope', expDate: '2030-01-01T00:00:00+0000', orgName: 'X' }),
    ).toString('base64');
    const e3 = await rejection(client.clientConfig(unknown));
    expect([e3.errorNumber, e3.tokenProblem]).to.deep.equal([9601, 'token_invalid']);
    expect(e3.message).to.equal('Login required.');
  });

  it('rate limiting: 9646 (429) and 503 carry Retry-After as retryAfterMs', async () => {
    service.addFault({ path: '/users', times: 1, action: { kind: 'tooManyRequests', retryAfterSeconds: 3 } });
    const e1 = await rejection(client.users(sToken, { pageIndex: 0 }));
    expect([e1.errorNumber, e1.httpStatus, e1.retryAfterMs, e1.rateLimited]).to.deep.equal([
      9646,
      429,
      3000,
      true,
    ]);
    service.addFault({ path: '/users', times: 1, action: { kind: 'unavailable', retryAfterSeconds: 2 } });
    const e2 = await rejection(client.users(sToken, { pageIndex: 0 }));
    expect([e2.errorNumber, e2.httpStatus, e2.retryAfterMs, e2.rateLimited]).to.deep.equal([
      9729,
      503,
      2000,
      true,
    ]);
  });

  it('no answer (connection reset) is a transient error without an error number', async () => {
    service.addFault({ path: '/client/config', times: 1, action: { kind: 'reset' } });
    const e = await rejection(client.clientConfig(sToken));
    expect(e.errorNumber).to.equal(null);
    expect(e.transient).to.equal(true);
  });

  it('never logs the sToken', () => {
    expect(logLines.length).to.be.greaterThan(5);
    const secret = decodeServiceToken(sToken)?.token ?? 'missing';
    expect(logLines.join('\n')).to.not.contain(sToken);
    expect(logLines.join('\n')).to.not.contain(secret);
  });
});

describe('Apple helpers', () => {
  it('decodes sTokens and refuses anything else', () => {
    const t = Buffer.from(
      JSON.stringify({ token: 'abc', expDate: '2030-11-08T22:33:22+0000', orgName: 'Org' }),
    ).toString('base64');
    expect(decodeServiceToken(t)).to.deep.equal({
      token: 'abc',
      expDate: '2030-11-08T22:33:22+0000',
      orgName: 'Org',
    });
    expect(decodeServiceToken('not a token!')).to.equal(null);
    expect(decodeServiceToken(Buffer.from('{"token":1}').toString('base64'))).to.equal(null);
    expect(decodeServiceToken('')).to.equal(null);
  });

  it("parses Apple's dates, Retry-After and builds invitation URLs", () => {
    expect(parseAppleDate('2030-11-08T22:33:22+0000')?.toISOString()).to.equal('2030-11-08T22:33:22.000Z');
    expect(parseAppleDate('garbage')).to.equal(null);
    expect(parseRetryAfter('7')).to.equal(7000);
    expect(parseRetryAfter(new Date(10_000).toUTCString(), 4000)).to.equal(6000);
    expect(parseRetryAfter(undefined)).to.equal(null);
    expect(invitationUrlFrom('https://x/a?inviteCode=%25inviteCode%25&mt=8', 'c 1')).to.equal(
      'https://x/a?inviteCode=c%201&mt=8',
    );
    expect(invitationUrlFrom('https://x/a?code=%inviteCode%', 'abc')).to.equal('https://x/a?code=abc');
  });
});
