import { expect } from 'chai';
import type { NewEmailMessage } from '../../../server/mail/email-store.ts';
import { newRegistrationCode } from '../../../server/registration/targets.ts';
import { openDatabase, type Database } from '../../../server/storage/database.ts';
import { SqlUserStore } from '../../../server/storage/directory-store.ts';
import { SqlEmailStore } from '../../../server/storage/email-store.ts';
import { SqlInvitationStore } from '../../../server/storage/invitation-store.ts';
import { migrate } from '../../../server/storage/migrate.ts';
import { SqlCsrfTokens, SqlLoginThrottle } from '../../../server/storage/registration-store.ts';
import { testDatabases } from '../../helpers/databases.ts';

const T0 = Date.UTC(2030, 0, 1, 12, 0, 0, 123);
let counter = 0;

/**
 * The database-backed parts of email invitations and the registration page (migration `0007_email`),
 * on every database: CSRF tokens, the login throttle, and the email channel's messages.
 */
for (const target of testDatabases('registration store')) {
  describe(`registration and email stores (${target.name})`, function () {
    this.timeout(120_000);
    let db: Database;
    let clock = T0;
    const now = () => clock;

    before(async () => {
      db = await openDatabase(await target.url());
      await migrate(db);
    });
    after(async () => {
      await db?.close();
      await target.cleanup?.();
    });
    beforeEach(() => {
      clock = T0;
    });

    describe('SqlCsrfTokens', () => {
      it('a token is accepted once, for its binding only, until it expires', async () => {
        const csrf = new SqlCsrfTokens(db, { ttlMs: 60_000, now });
        const token = await csrf.issue('code-1\nsession-1');
        expect(token).to.match(/^[A-Za-z0-9_-]{43}$/);
        expect(await csrf.consume('code-1\nsession-1', token)).to.equal(true);
        expect(await csrf.consume('code-1\nsession-1', token)).to.equal(false);

        const other = await csrf.issue('code-1\nsession-1');
        expect(await csrf.consume('code-2\nsession-1', other)).to.equal(false);
        expect(await csrf.consume('code-1\nsession-1', other), 'spent by the wrong binding').to.equal(false);

        const old = await csrf.issue('code-1\nsession-1');
        clock += 60_001;
        expect(await csrf.consume('code-1\nsession-1', old)).to.equal(false);
        expect(await csrf.consume('code-1\nsession-1', 'never-issued')).to.equal(false);
        expect(await csrf.consume('code-1\nsession-1', '')).to.equal(false);
      });

      it('issued by one instance, accepted by another; of concurrent posts of one token exactly one wins', async () => {
        const a = new SqlCsrfTokens(db, { now });
        const b = new SqlCsrfTokens(db, { now });
        expect(await b.consume('c\ns', await a.issue('c\ns'))).to.equal(true);
        const token = await a.issue('c\ns');
        const results = await Promise.all(Array.from({ length: 8 }, () => b.consume('c\ns', token)));
        expect(results.filter(Boolean)).to.have.length(1);
      });
    });

    describe('SqlLoginThrottle', () => {
      const key = (code: string, address = `10.0.0.${++counter % 250}`) => ({ code, address });

      it('allows 5 attempts per code in the window, then answers when to come back', async () => {
        const throttle = new SqlLoginThrottle(db, { now });
        const k = key(`code-${++counter}`);
        for (let i = 0; i < 5; i++) {
          expect(await throttle.acquire(k)).to.deep.equal({ allowed: true });
          clock += 1000;
        }
        const refused = await throttle.acquire(k);
        expect(refused.allowed).to.equal(false);
        if (!refused.allowed) expect(refused.retryAfterSeconds).to.equal(15 * 60 - 5);
        // Another code from the same address is still allowed.
        expect((await throttle.acquire({ code: `code-${++counter}`, address: k.address })).allowed).to.equal(
          true,
        );
        // The window slides.
        clock += 15 * 60_000;
        expect((await throttle.acquire(k)).allowed).to.equal(true);
      });

      it('a success forgets the code’s failures; an attempt that could not be judged is taken back', async () => {
        const throttle = new SqlLoginThrottle(db, { now });
        const k = key(`code-${++counter}`);
        for (let i = 0; i < 4; i++) await throttle.acquire(k);
        await throttle.acquire(k);
        await throttle.forget(k);
        expect((await throttle.acquire(k)).allowed, 'the fifth again').to.equal(true);
        await throttle.succeeded(k);
        for (let i = 0; i < 5; i++) expect((await throttle.acquire(k)).allowed).to.equal(true);
        expect((await throttle.acquire(k)).allowed).to.equal(false);
      });

      it('limits per address across codes, and across instances', async () => {
        const a = new SqlLoginThrottle(db, { now, limits: { perAddress: 3 } });
        const b = new SqlLoginThrottle(db, { now, limits: { perAddress: 3 } });
        const address = `192.0.2.${++counter % 250}`;
        expect((await a.acquire({ code: `x-${++counter}`, address })).allowed).to.equal(true);
        expect((await b.acquire({ code: `x-${++counter}`, address })).allowed).to.equal(true);
        expect((await a.acquire({ code: `x-${++counter}`, address })).allowed).to.equal(true);
        expect((await b.acquire({ code: `x-${++counter}`, address })).allowed).to.equal(false);
      });

      it('concurrent attempts cannot slip past the limit', async () => {
        const instances = [new SqlLoginThrottle(db, { now }), new SqlLoginThrottle(db, { now })];
        const code = `race-${++counter}`;
        const results = await Promise.all(
          Array.from({ length: 12 }, (_, i) =>
            instances[i % 2]!.acquire({ code, address: `198.51.100.${i}` }),
          ),
        );
        expect(results.filter((r) => r.allowed)).to.have.length(5);
      });
    });

    describe('SqlEmailStore', () => {
      let usageIds: string[];
      let invitationId: string;

      before(async () => {
        const users = new SqlUserStore(db);
        const userIds: string[] = [];
        for (let i = 0; i < 3; i++) {
          const u = await users.create(
            {
              username: `mail-${target.name}-${i}`,
              fullName: null,
              email: `m${i}@example.test`,
              managedAppleId: null,
              siteIds: [],
              passwordHash: null,
            },
            new Date(T0),
          );
          userIds.push(u.id);
        }
        const invitations = new SqlInvitationStore(db);
        const inv = await invitations.createInvitation(
          {
            name: 'mail',
            locationId: '1',
            siteId: null,
            distributionMethod: 'email',
            autoRegisterManagedUsers: false,
            requireLogin: false,
            email: { senderName: 'IT', senderAddress: 'it@example.test', subject: 's', message: '%@' },
            scope: { allUsers: false, userIds, groupIds: [], exclusions: { userIds: [], groupIds: [] } },
          },
          new Date(T0),
        );
        invitationId = inv.id;
        await invitations.addUsage(inv.id, '1', userIds, newRegistrationCode, new Date(T0));
        usageIds = (await invitations.usageOfUsers(inv.id, userIds)).map((r) => r.usageId);
      });

      const message = (usageId: string, kind: 'invite' | 'resend' = 'invite'): NewEmailMessage => ({
        usageId,
        invitationId,
        kind,
        inviteCode: 'CODE-1',
        toAddress: 'm@example.test',
        toName: 'M',
        registrationUrl: 'https://mdm.example.test/register/abc',
      });

      it('numbers the messages of a usage, keeps their Message-ID, and walks them through their states', async () => {
        const store = new SqlEmailStore(db);
        const [u1, u2] = usageIds as [string, string];
        const first = await store.add(
          [message(u1), message(u2)],
          (m, seq) => `<${m.usageId}.${seq}@x>`,
          new Date(T0),
        );
        expect(first.map((m) => [m.usageId, m.seq, m.status, m.messageId])).to.deep.equal([
          [u1, 1, 'queued', `<${u1}.1@x>`],
          [u2, 1, 'queued', `<${u2}.1@x>`],
        ]);
        const id = first[0]!.id;
        expect(await store.markSending(id, new Date(T0 + 1))).to.equal(true);
        await store.markRetrying(id, '421 try later', new Date(T0 + 2));
        expect(await store.get(id)).to.include({ status: 'queued', attempts: 1, lastError: '421 try later' });
        expect(await store.markSending(id, new Date(T0 + 3))).to.equal(true);
        expect(await store.markSending(id, new Date(T0 + 4)), 'an interrupted try').to.equal(true);
        await store.markSent(id, '250 OK', new Date(T0 + 5));
        const sent = await store.get(id);
        expect(sent).to.include({ status: 'sent', attempts: 3, smtpResponse: '250 OK', lastError: null });
        expect(sent?.sentAt?.getTime()).to.equal(T0 + 5);
        expect(await store.markSending(id, new Date(T0 + 6)), 'never again once sent').to.equal(false);

        const [second] = await store.add(
          [message(u1, 'resend')],
          (m, seq) => `<${m.usageId}.${seq}@x>`,
          new Date(T0 + 7),
        );
        expect(second).to.include({ seq: 2, kind: 'resend', status: 'queued' });
        const latest = await store.latest([u1, u2, '999999']);
        expect([...latest.keys()].sort()).to.deep.equal([u1, u2].sort());
        expect(latest.get(u1)?.seq).to.equal(2);

        // Withdrawn: only queued messages are cancelled.
        expect(await store.cancelQueued([u1, u2], new Date(T0 + 8))).to.equal(2);
        expect((await store.get(second!.id))?.status).to.equal('cancelled');
        expect(await store.markSending(second!.id, new Date(T0 + 9))).to.equal(false);
        expect((await store.get(id))?.status).to.equal('sent');
      });

      it('a message goes with its usage', async () => {
        const store = new SqlEmailStore(db);
        const u3 = usageIds[2]!;
        const [m] = await store.add([message(u3)], (x, seq) => `<${x.usageId}.${seq}@x>`, new Date(T0));
        await new SqlInvitationStore(db).deleteUsage([u3]);
        expect(await store.get(m!.id)).to.equal(null);
      });
    });
  });
}
