import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { Client } from 'ldapts';
import {
  escapeFilterValue,
  LdapAuthenticator,
  LdapUnavailableError,
  type LdapSettings,
  type PasswordCheck,
  type PasswordChecker,
} from '../../../server/directory/ldap-authenticator.ts';
import { LocalPasswordChecker } from '../../../server/directory/local-password-checker.ts';
import { LoginService, LoginUnavailableError } from '../../../server/directory/login-service.ts';
import { UserService } from '../../../server/directory/user-service.ts';
import { createLogger } from '../../../server/log.ts';
import { openDatabase, type Database } from '../../../server/storage/database.ts';
import { SqlUserStore } from '../../../server/storage/directory-store.ts';
import { migrate } from '../../../server/storage/migrate.ts';
import { SLAPD_SKIP_MESSAGE, slapdAvailable, startSlapd, type Slapd } from '../../helpers/slapd.ts';

async function closedPort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => srv.close(() => resolve()));
  return port;
}

async function rejection(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (err) {
    return err;
  }
  throw new Error('expected a rejection');
}

describe('escapeFilterValue (RFC 4515)', () => {
  it('escapes the filter metacharacters and NUL, keeps UTF-8', () => {
    expect(escapeFilterValue('*)(uid=*')).to.equal('\\2a\\29\\28uid=\\2a');
    expect(escapeFilterValue('a\\b\u0000c')).to.equal('a\\5cb\\00c');
    expect(escapeFilterValue("jürgen.o'brien@example.test")).to.equal("jürgen.o'brien@example.test");
  });
});

describe('LdapAuthenticator against a real OpenLDAP slapd', function () {
  this.timeout(60_000);
  let slapd: Slapd;
  let settings: LdapSettings;
  let ldap: LdapAuthenticator;

  before(async function () {
    if (!slapdAvailable()) {
      console.warn(SLAPD_SKIP_MESSAGE);
      this.skip();
    }
    slapd = await startSlapd();
    settings = {
      url: slapd.url,
      bindDn: slapd.serviceDn,
      bindPassword: slapd.servicePassword,
      userBase: slapd.peopleBase,
      userFilter: '(&(objectClass=inetOrgPerson)(uid={{username}}))',
    };
    ldap = new LdapAuthenticator(settings, { connectTimeoutMs: 2000, operationTimeoutMs: 5000 });
  });
  after(async () => {
    await slapd?.stop();
  });

  it('right password → ok with the DN and attributes', async () => {
    const r = await ldap.verify('alice', 'alice-Secret-1');
    expect(r).to.deep.include({ ok: true, dn: slapd.dnOf('alice') });
    if (!r.ok) throw new Error('unreachable');
    expect(r.attributes.mail).to.deep.equal(['alice@example.test']);
    expect(r.attributes.cn).to.deep.equal(['Alice Liddell']);
  });

  it('usernames match as the directory matches them (case-insensitively for uid)', async () => {
    expect((await ldap.verify('ALICE', 'alice-Secret-1')).ok).to.equal(true);
  });

  it("wrong password, unknown user, another user's password → not ok", async () => {
    expect(await ldap.verify('alice', 'wrong-password')).to.deep.equal({ ok: false });
    expect(await ldap.verify('nobody', 'alice-Secret-1')).to.deep.equal({ ok: false });
    expect(await ldap.verify('alice', 'bob-Secret-2')).to.deep.equal({ ok: false });
  });

  it('a filter-injection attempt finds nothing', async () => {
    expect(await ldap.verify('*)(uid=*', 'alice-Secret-1')).to.deep.equal({ ok: false });
    expect(await ldap.verify('*', 'alice-Secret-1')).to.deep.equal({ ok: false });
    expect(await ldap.verify('alice)(|(uid=*', 'alice-Secret-1')).to.deep.equal({ ok: false });
    // Without escaping, `*` alone would have matched every user: the filter shows it is escaped.
    expect(ldap.filterFor('*)(uid=*')).to.equal('(&(objectClass=inetOrgPerson)(uid=\\2a\\29\\28uid=\\2a))');
  });

  it('an empty password is refused even though this server accepts it as an unauthenticated bind', async () => {
    // The trap is real on this server (`allow bind_anon_dn`, as Active Directory does):
    const raw = new Client({ url: slapd.url });
    try {
      await raw.bind(slapd.dnOf('alice'), '');
    } finally {
      await raw.unbind();
    }
    expect(await ldap.verify('alice', '')).to.deep.equal({ ok: false });
  });

  it('a filter matching several entries is not one account', async () => {
    const byMail = new LdapAuthenticator({ ...settings, userFilter: '(mail={{username}})' });
    expect(await byMail.verify('shared@example.test', 'carol-Secret-3')).to.deep.equal({ ok: false });
    expect((await byMail.verify('bob@example.test', 'bob-Secret-2')).ok).to.equal(true);
  });

  it('a wrong service password is an error, not "wrong credentials"', async () => {
    const misconfigured = new LdapAuthenticator({ ...settings, bindPassword: 'not-the-password' });
    const err = await rejection(misconfigured.verify('alice', 'alice-Secret-1'));
    expect(err).to.be.instanceOf(LdapUnavailableError);
    expect((err as LdapUnavailableError).message).to.match(/service bind/);
  });

  it('a directory that is down is an error, not false', async () => {
    const down = new LdapAuthenticator(
      { ...settings, url: `ldap://127.0.0.1:${await closedPort()}` },
      { connectTimeoutMs: 1000 },
    );
    const err = await rejection(down.verify('alice', 'alice-Secret-1'));
    expect(err).to.be.instanceOf(LdapUnavailableError);
    expect((err as LdapUnavailableError).status).to.equal(502);
  });

  it('a directory that stops answering times out as an error', async () => {
    // A TCP server that accepts and never answers.
    const sockets: net.Socket[] = [];
    const silent = net.createServer((s) => sockets.push(s));
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    try {
      const port = (silent.address() as net.AddressInfo).port;
      const slow = new LdapAuthenticator(
        { ...settings, url: `ldap://127.0.0.1:${port}` },
        { connectTimeoutMs: 1000, operationTimeoutMs: 500 },
      );
      const started = Date.now();
      expect(await rejection(slow.verify('alice', 'alice-Secret-1'))).to.be.instanceOf(LdapUnavailableError);
      expect(Date.now() - started).to.be.below(5000);
    } finally {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => silent.close(() => resolve()));
    }
  });

  it('closes every connection it opens (through a counting TCP proxy)', async () => {
    const target = new URL(slapd.url);
    let open = 0;
    let opened = 0;
    const proxy = net.createServer((client) => {
      open++;
      opened++;
      const upstream = net.connect(Number(target.port), target.hostname);
      client.pipe(upstream).pipe(client);
      const done = () => {
        client.destroy();
        upstream.destroy();
      };
      client.once('close', () => {
        open--;
        done();
      });
      upstream.once('close', done);
      client.on('error', done);
      upstream.on('error', done);
    });
    await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
    try {
      const port = (proxy.address() as net.AddressInfo).port;
      const proxied = new LdapAuthenticator({ ...settings, url: `ldap://127.0.0.1:${port}` });
      const results = await Promise.all(
        Array.from({ length: 10 }, (_, i) =>
          proxied.verify(i % 2 ? 'alice' : 'bob', i % 2 ? 'alice-Secret-1' : 'wrong'),
        ),
      );
      expect(results.filter((r) => r.ok)).to.have.length(5);
      expect(opened).to.equal(20); // one search connection and one user bind per check
      const deadline = Date.now() + 5000;
      while (open > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      expect(open).to.equal(0);
    } finally {
      await new Promise<void>((resolve) => proxy.close(() => resolve()));
    }
  });
});

describe('local accounts and LoginService', function () {
  this.timeout(60_000);
  let dir: string;
  let db: Database;
  let users: SqlUserStore;
  let local: LocalPasswordChecker;
  let aliceId: string;
  let bobId: string;
  let noPasswordId: string;

  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'mdm-login-'));
    db = await openDatabase(`sqlite:${path.join(dir, 'mdm.sqlite')}`);
    await migrate(db);
    users = new SqlUserStore(db);
    const service = new UserService({ users });
    aliceId = (await service.create({ username: 'alice', password: 'local-alice-pw' })).id;
    bobId = (await service.create({ username: 'bob', password: 'local-bob-pw' })).id;
    noPasswordId = (await service.create({ username: 'nopass' })).id;
    local = new LocalPasswordChecker(users);
  });
  after(async () => {
    await db?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('LocalPasswordChecker verifies the scrypt hash set through the user service', async () => {
    expect(await local.verifyUserPassword(aliceId, 'local-alice-pw')).to.equal(true);
    expect(await local.verifyUserPassword(aliceId, 'local-bob-pw')).to.equal(false);
    expect(await local.verifyUserPassword(aliceId, '')).to.equal(false);
    expect(await local.verifyUserPassword(noPasswordId, 'anything')).to.equal(false);
    expect(await local.verifyUserPassword('999999', 'anything')).to.equal(false);
    expect(await local.hasLocalAccount(aliceId)).to.equal(true);
    expect(await local.hasLocalAccount(noPasswordId)).to.equal(false);
  });

  it("local login: only the invited user's own username and password", async () => {
    const login = new LoginService({ ldap: null, local, minFailureMs: 0 });
    const alice = { id: aliceId, username: 'alice' };
    expect(await login.login(alice, { username: 'alice', password: 'local-alice-pw' })).to.deep.equal({
      ok: true,
      method: 'local',
    });
    expect((await login.login(alice, { username: ' Alice ', password: 'local-alice-pw' })).ok).to.equal(true);
    expect(await login.login(alice, { username: 'alice', password: 'wrong' })).to.deep.equal({ ok: false });
    // Bob's correct credentials do not open Alice's invitation.
    expect(await login.login(alice, { username: 'bob', password: 'local-bob-pw' })).to.deep.equal({
      ok: false,
    });
    // Alice's password typed with another username does not either.
    expect(await login.login(alice, { username: 'bob', password: 'local-alice-pw' })).to.deep.equal({
      ok: false,
    });
    expect(
      (await login.login({ id: bobId, username: 'bob' }, { username: 'bob', password: 'local-bob-pw' })).ok,
    ).to.equal(true);
  });

  it('failures take at least the floor, whichever part failed', async () => {
    const login = new LoginService({ ldap: null, local, minFailureMs: 200 });
    for (const attempt of [
      { username: 'alice', password: 'wrong' },
      { username: 'bob', password: 'local-bob-pw' },
      { username: 'nobody', password: 'x' },
    ]) {
      const started = performance.now();
      expect((await login.login({ id: aliceId, username: 'alice' }, attempt)).ok).to.equal(false);
      expect(performance.now() - started).to.be.at.least(195);
    }
  });

  describe('with LDAP (real slapd)', () => {
    let slapd: Slapd;
    let ldap: LdapAuthenticator;

    before(async function () {
      if (!slapdAvailable()) {
        console.warn(SLAPD_SKIP_MESSAGE);
        this.skip();
      }
      slapd = await startSlapd();
      ldap = new LdapAuthenticator({
        url: slapd.url,
        bindDn: slapd.serviceDn,
        bindPassword: slapd.servicePassword,
        userBase: slapd.peopleBase,
        userFilter: '(uid={{username}})',
      });
    });
    after(async () => {
      await slapd?.stop();
    });

    it('LDAP login: right credentials of the invited user (username case-insensitive)', async () => {
      const login = new LoginService({ ldap, local, minFailureMs: 0 });
      const alice = { id: aliceId, username: 'Alice' };
      expect(await login.login(alice, { username: 'alice', password: 'alice-Secret-1' })).to.deep.equal({
        ok: true,
        method: 'ldap',
      });
      // The local password still works too.
      expect(await login.login(alice, { username: 'alice', password: 'local-alice-pw' })).to.deep.equal({
        ok: true,
        method: 'local',
      });
    });

    it("another directory user's right credentials do not open the invitation", async () => {
      const login = new LoginService({ ldap, local, minFailureMs: 0 });
      expect(
        await login.login({ id: aliceId, username: 'alice' }, { username: 'bob', password: 'bob-Secret-2' }),
      ).to.deep.equal({ ok: false });
      expect(
        await login.login(
          { id: aliceId, username: 'alice' },
          { username: '*)(uid=*', password: 'alice-Secret-1' },
        ),
      ).to.deep.equal({ ok: false });
      expect(
        await login.login({ id: aliceId, username: 'alice' }, { username: 'alice', password: '' }),
      ).to.deep.equal({ ok: false });
    });

    it('LDAP down: an error (503 login_unavailable) unless the local account logs in', async () => {
      const down = new LdapAuthenticator(
        {
          url: `ldap://127.0.0.1:${await closedPort()}`,
          bindDn: null,
          bindPassword: null,
          userBase: slapd.peopleBase,
          userFilter: '(uid={{username}})',
        },
        { connectTimeoutMs: 1000 },
      );
      const login = new LoginService({ ldap: down, local, minFailureMs: 0, log: createLogger('silent') });
      const err = await rejection(
        login.login({ id: aliceId, username: 'alice' }, { username: 'alice', password: 'alice-Secret-1' }),
      );
      expect(err).to.be.instanceOf(LoginUnavailableError);
      expect((err as LoginUnavailableError).status).to.equal(503);
      expect(
        await login.login(
          { id: aliceId, username: 'alice' },
          { username: 'alice', password: 'local-alice-pw' },
        ),
      ).to.deep.equal({ ok: true, method: 'local' });
    });
  });

  it('a PasswordChecker fake composes the same way (no LDAP needed)', async () => {
    const fake: PasswordChecker = {
      async verify(username, password): Promise<PasswordCheck> {
        return username === 'carol' && password === 'pw'
          ? { ok: true, dn: 'uid=carol', attributes: {} }
          : { ok: false };
      },
    };
    const login = new LoginService({ ldap: fake, local: null, minFailureMs: 0 });
    expect(
      (await login.login({ id: '1', username: 'CAROL' }, { username: 'carol', password: 'pw' })).ok,
    ).to.equal(true);
    expect(
      (await login.login({ id: '1', username: 'dave' }, { username: 'carol', password: 'pw' })).ok,
    ).to.equal(false);
  });
});
