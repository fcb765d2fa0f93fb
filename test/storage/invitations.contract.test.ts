import { randomUUID } from 'node:crypto';
import { expect } from 'chai';
import { QueryTypes } from 'sequelize';
import type { NewUser } from '../../server/directory/store.ts';
import type { NewInvitation, ScopeDefinition } from '../../server/invitations/model.ts';
import { newRegistrationCode } from '../../server/registration/targets.ts';
import { openDatabase, type Database } from '../../server/storage/database.ts';
import { SqlSiteStore, SqlUserStore } from '../../server/storage/directory-store.ts';
import { SqlInvitationStore } from '../../server/storage/invitation-store.ts';
import { migrate } from '../../server/storage/migrate.ts';
import { SqlVppStore } from '../../server/storage/vpp-store.ts';
import type { NewLocation } from '../../server/vpp/store.ts';
import { testDatabases } from '../helpers/databases.ts';

const T0 = Date.UTC(2030, 0, 1, 12, 0, 0, 123);
const at = (s: number) => new Date(T0 + s * 1000);

let counter = 0;
const uid = (prefix: string) => `${prefix}-${process.pid}-${++counter}`;

const EMPTY_SCOPE: ScopeDefinition = {
  allUsers: false,
  userIds: [],
  groupIds: [],
  exclusions: { userIds: [], groupIds: [] },
};

function newUser(username: string, overrides: Partial<NewUser> = {}): NewUser {
  return {
    username,
    fullName: null,
    email: null,
    managedAppleId: null,
    siteIds: [],
    passwordHash: null,
    ...overrides,
  };
}

function newLocation(overrides: Partial<NewLocation> = {}): NewLocation {
  return {
    name: uid('loc'),
    organizationName: 'Org',
    locationName: 'Apple Loc',
    countryCode: 'US',
    tokenExpiration: at(86_400),
    appleUid: uid('uid'),
    siteId: null,
    autoRegisterManagedUsers: false,
    invitationTemplate: 'https://apple.example/invite?inviteCode=%25inviteCode%25&mt=8',
    notificationTokenHash: 'ab'.repeat(32),
    ...overrides,
  };
}

for (const target of testDatabases()) {
  describe(`Invitations storage contract (${target.name})`, function () {
    this.timeout(120_000);
    let db: Database;
    let store: SqlInvitationStore;
    let vpp: SqlVppStore;
    let users: SqlUserStore;
    let sites: SqlSiteStore;

    const makeUsers = async (count: number, overrides: Partial<NewUser> = {}) => {
      const ids: string[] = [];
      for (let i = 0; i < count; i++) ids.push((await users.create(newUser(uid('u'), overrides), at(0))).id);
      return ids;
    };
    const location = async (overrides: Partial<NewLocation> = {}) =>
      vpp.createLocation(newLocation(overrides), (id) => `sealed:${id}`, at(0));
    const invitation = async (locationId: string, overrides: Partial<NewInvitation> = {}) =>
      store.createInvitation(
        {
          name: uid('inv'),
          locationId,
          siteId: null,
          distributionMethod: 'self_service_only',
          autoRegisterManagedUsers: false,
          requireLogin: false,
          email: null,
          scope: EMPTY_SCOPE,
          ...overrides,
        },
        at(0),
      );
    /** Registers users at Apple's word: `registered` (invite code) or `associated`. */
    const registerAtApple = async (
      locationId: string,
      userIds: string[],
      status: 'Registered' | 'Associated',
      opts: { managed?: boolean } = {},
    ) => {
      await vpp.addRegistrations(locationId, userIds, { managed: opts.managed ?? false }, randomUUID, at(1));
      const regs = await vpp.registrationsAt(locationId, userIds);
      await vpp.applyAppleUsers(
        locationId,
        regs.map((r) => ({
          clientUserId: r.clientUserId,
          status,
          inviteCode: `code-${r.userId}`,
          ...(status === 'Associated' ? { idHash: `hash-${r.userId}` } : {}),
        })),
        at(2),
      );
    };
    const usageRow = async (invitationId: string, userId: string) => {
      const page = await store.listUsage(invitationId, {
        limit: 1000,
        cursor: null,
        status: null,
        q: null,
        withDevices: true,
      });
      const item = page.items.find((i) => i.userId === userId);
      if (!item) throw new Error(`no usage for user ${userId}`);
      return item;
    };
    const stageOf = async (usageId: string) => {
      const rows = await db.sequelize.query<{ stage: string }>(
        'SELECT stage FROM invitation_usage WHERE id = :id',
        {
          type: QueryTypes.SELECT,
          replacements: { id: Number(usageId) },
        },
      );
      return rows[0]?.stage;
    };

    before(async () => {
      db = await openDatabase(await target.url());
      await migrate(db);
      store = new SqlInvitationStore(db);
      vpp = new SqlVppStore(db);
      users = new SqlUserStore(db);
      sites = new SqlSiteStore(db);
    });
    after(async () => {
      await db?.close();
      await target.cleanup?.();
    });

    describe('invitations', () => {
      it('creates, reads, lists, updates (guarded by generation) and deletes', async () => {
        const loc = await location();
        const site = await sites.create(uid('site'), at(0));
        const email = {
          senderName: 'IT',
          senderAddress: 'it@example.com',
          subject: 'Hi',
          message: 'Open %@',
        };
        const scope: ScopeDefinition = {
          allUsers: false,
          userIds: ['3', '1'],
          groupIds: ['2'],
          exclusions: { userIds: ['4'], groupIds: [] },
        };
        const a = await invitation(loc.id, {
          name: 'Staff apps',
          siteId: site.id,
          distributionMethod: 'email',
          requireLogin: true,
          email,
          scope,
        });
        expect(a).to.deep.include({
          name: 'Staff apps',
          locationId: loc.id,
          siteId: site.id,
          distributionMethod: 'email',
          requireLogin: true,
          email,
          scope,
          scopeGeneration: 1,
          computedGeneration: 0,
          deletedAt: null,
        });
        expect(a.fanoutStartedAt?.getTime()).to.equal(at(0).getTime());
        expect(await store.getInvitation(a.id)).to.deep.equal(a);
        expect(await store.getInvitation('nope')).to.equal(null);

        const b = await invitation(loc.id, { name: 'Books 100%' });
        const other = await location();
        const c = await invitation(other.id, { name: 'Other' });
        const mine = await store.listInvitations({ limit: 1, cursor: null, q: null, locationId: loc.id });
        expect(mine.items.map((i) => i.id)).to.deep.equal([a.id]);
        expect(mine.nextCursor).to.be.a('string');
        const next = await store.listInvitations({
          limit: 1,
          cursor: mine.nextCursor,
          q: null,
          locationId: loc.id,
        });
        expect(next.items.map((i) => i.id)).to.deep.equal([b.id]);
        expect(next.nextCursor).to.equal(null);
        const byName = await store.listInvitations({ limit: 10, cursor: null, q: '100%', locationId: null });
        expect(byName.items.map((i) => i.id)).to.deep.equal([b.id]);
        expect((await store.invitationsOfLocation(other.id)).map((i) => i.id)).to.deep.equal([c.id]);

        const renamed = await store.updateInvitation(
          a.id,
          { name: 'Renamed', email: null, rescope: true },
          at(5),
        );
        expect(renamed).to.deep.include({ name: 'Renamed', email: null, scopeGeneration: 2 });
        expect(renamed?.updatedAt.getTime()).to.equal(at(5).getTime());
        expect(await store.updateInvitation(a.id, { name: 'x' }, at(6), { ifGeneration: 1 })).to.equal(null);
        expect(await store.markComputed(a.id, 1, at(6))).to.equal(false);
        expect(await store.markComputed(a.id, 2, at(6))).to.equal(true);
        expect((await store.getInvitation(a.id))?.computedGeneration).to.equal(2);

        expect(await store.markInvitationDeleted(b.id, at(7))).to.equal(true);
        expect(await store.markInvitationDeleted(b.id, at(7))).to.equal(false);
        expect((await store.getInvitation(b.id))?.deletedAt?.getTime()).to.equal(at(7).getTime());
        expect(await store.updateInvitation(b.id, { name: 'x' }, at(8))).to.equal(null);
        const live = await store.listInvitations({ limit: 10, cursor: null, q: null, locationId: loc.id });
        expect(live.items.map((i) => i.id)).to.deep.equal([a.id]);
        expect(await store.invitationsNeedingWork([])).to.include(b.id);
        await store.removeInvitation(b.id);
        expect(await store.getInvitation(b.id)).to.equal(null);
      });

      it('finds work: scopes to compute, rows in active stages, waiting rows, orphans and stale sites', async () => {
        const loc = await location();
        const [u1] = await makeUsers(1);
        const inv = await invitation(loc.id);
        expect(await store.invitationsNeedingWork([])).to.include(inv.id);
        await store.markComputed(inv.id, 1, at(1));
        expect(await store.invitationsNeedingWork([])).to.not.include(inv.id);
        await store.addUsage(inv.id, loc.id, [u1 ?? ''], newRegistrationCode, at(1));
        expect(await store.invitationsNeedingWork([])).to.include(inv.id);
        await store.changeStageAll(inv.id, 'register', 'waiting_channel', 'waiting', at(2));
        expect(await store.invitationsNeedingWork([])).to.not.include(inv.id);
        expect(await store.invitationsNeedingWork(['self_service_only'])).to.include(inv.id);
        expect(await store.invitationsWaitingFor('self_service_only')).to.include(inv.id);
        expect(await store.invitationsWaitingFor('email')).to.not.include(inv.id);

        const ids = await store.rescopeAll(at(3));
        expect(ids).to.include(inv.id);
        expect((await store.getInvitation(inv.id))?.scopeGeneration).to.equal(2);

        const site = await sites.create(uid('site'), at(0));
        expect(await store.locationsWithStaleSite()).to.not.include(loc.id);
        await vpp.updateLocation(loc.id, { siteId: site.id }, at(4));
        expect(await store.locationsWithStaleSite()).to.include(loc.id);
        await store.updateInvitation(inv.id, { siteId: site.id }, at(5));
        expect(await store.locationsWithStaleSite()).to.not.include(loc.id);

        expect(await store.orphanedInvitations()).to.not.include(inv.id);
        await vpp.deleteLocation(loc.id);
        expect(await store.orphanedInvitations()).to.include(inv.id);
      });
    });

    describe('usage', () => {
      it('adds rows once with distinct 256-bit codes, lists ids, counts and removes', async () => {
        const loc = await location();
        const inv = await invitation(loc.id);
        const ids = await makeUsers(5);
        expect(await store.addUsage(inv.id, loc.id, ids.slice(0, 3), newRegistrationCode, at(1))).to.equal(3);
        expect(await store.addUsage(inv.id, loc.id, ids, newRegistrationCode, at(2))).to.equal(2);
        expect(await store.addUsage(inv.id, loc.id, ids, newRegistrationCode, at(3))).to.equal(0);
        expect(await store.usageUserIds(inv.id)).to.deep.equal(
          [...ids].sort((a, b) => Number(a) - Number(b)),
        );
        const page = await store.listUsage(inv.id, {
          limit: 10,
          cursor: null,
          status: null,
          q: null,
          withDevices: true,
        });
        expect(page.items).to.have.length(5);
        const codes = new Set(page.items.map((i) => i.registrationCode));
        expect(codes.size).to.equal(5);
        for (const code of codes) expect(code).to.match(/^[A-Za-z0-9_-]{43}$/);
        expect(page.items[0]).to.deep.include({
          status: 'pending',
          reason: null,
          lastAction: 'Added to the scope',
          sentAt: null,
          invitationUrl: null,
          devices: [],
        });
        const counts = (await store.counts([inv.id, 'nope'])).get(inv.id);
        expect(counts?.total).to.equal(5);
        expect(counts?.byStatus).to.deep.equal({
          pending: 5,
          sent: 0,
          acknowledged: 0,
          registered: 0,
          auto_registered: 0,
          skipped: 0,
          failed: 0,
        });
        expect(counts?.byStage.register).to.equal(5);

        const first = await store.usageInStage(inv.id, 'register', null, 2);
        const second = await store.usageInStage(inv.id, 'register', first[1]?.usageId ?? null, 10);
        expect(first.length + second.length).to.equal(5);
        const refs = await store.usageOfUsers(inv.id, [ids[0] ?? '', ids[1] ?? '', '999999']);
        expect(refs.map((r) => r.userId).sort()).to.deep.equal([ids[0], ids[1]].sort());
        expect(await store.notInScope(inv.id, [ids[0] ?? '', '999999', 'x'])).to.deep.equal(['999999', 'x']);
        expect(await store.deleteUsage(refs.map((r) => r.usageId))).to.equal(2);
        expect(await store.usageUserIds(inv.id)).to.have.length(3);
        // A user deleted from the directory leaves the usage.
        await users.delete(ids[4] ?? '', at(4));
        expect(await store.usageUserIds(inv.id)).to.have.length(2);
      });

      it('moves rows between stages only from the stages named', async () => {
        const loc = await location();
        const inv = await invitation(loc.id);
        const ids = await makeUsers(2);
        await store.addUsage(inv.id, loc.id, ids, newRegistrationCode, at(1));
        const refs = await store.usageInStage(inv.id, 'register', null, 10);
        const usageIds = refs.map((r) => r.usageId);
        expect(
          await store.changeStage({ usageIds, from: ['apple'], to: 'deliver', lastAction: 'x', at: at(2) }),
        ).to.equal(0);
        expect(
          await store.changeStage({
            usageIds,
            from: ['register'],
            to: 'apple',
            lastAction: 'asked',
            at: at(2),
          }),
        ).to.equal(2);
        expect(await stageOf(usageIds[0] ?? '')).to.equal('apple');
        await store.changeStage({
          usageIds: [usageIds[0] ?? ''],
          from: ['apple'],
          to: 'done',
          status: 'failed',
          reason: 'Apple 9717: invalid email',
          lastAction: 'refused',
          at: at(3),
        });
        const failed = await usageRow(inv.id, refs[0]?.userId ?? '');
        expect(failed).to.deep.include({
          status: 'failed',
          reason: 'Apple 9717: invalid email',
          lastAction: 'refused',
        });
        expect(failed.lastActionAt?.getTime()).to.equal(at(3).getTime());
      });

      it('follows Apple: invite codes, registrations (shared by invitations of a location), failures, retirement', async () => {
        const loc = await location();
        const a = await invitation(loc.id);
        const b = await invitation(loc.id);
        const ids = await makeUsers(4);
        const [u0, u1, u2, u3] = ids.map((x) => x);
        for (const inv of [a, b]) {
          await store.addUsage(inv.id, loc.id, ids, newRegistrationCode, at(1));
          const refs = await store.usageInStage(inv.id, 'register', null, 10);
          await store.changeStage({
            usageIds: refs.map((r) => r.usageId),
            from: ['register'],
            to: 'apple',
            lastAction: 'asked',
            at: at(1),
          });
        }
        await registerAtApple(loc.id, [u0 ?? '', u1 ?? ''], 'Registered');
        const views = await store.registrationViews(
          a.id,
          (await store.usageOfUsers(a.id, ids)).map((r) => r.usageId),
        );
        expect(views.find((v) => v.userId === u0)?.registration?.state).to.equal('registered');
        expect(views.find((v) => v.userId === u2)?.registration).to.equal(null);

        const touched = await store.advanceRegistered(loc.id, [u0 ?? '', u1 ?? ''], at(3));
        expect(touched.sort()).to.deep.equal([a.id, b.id].sort());
        const rows = await store.deliveryRows(a.id, 'deliver', null, 10);
        expect(rows.map((r) => r.userId).sort()).to.deep.equal([u0, u1].sort());
        expect(rows[0]).to.deep.include({
          registrationState: 'registered',
          hasPassword: false,
          sentAt: null,
        });
        expect(rows[0]?.invitationUrl).to.match(
          /^https:\/\/apple\.example\/invite\?inviteCode=code-\d+&mt=8$/,
        );
        expect(rows[0]?.clientUserId).to.be.a('string');

        // u0 handed to the channel in a; then Apple says associated: a's row must be told to the channel.
        const [r0] = await store.usageOfUsers(a.id, [u0 ?? '']);
        await store.applyOutcomes(
          'deliver',
          [r0?.usageId ?? ''],
          [],
          {
            sentAction: 's',
            pendingAction: 'handed',
            failedAction: 'f',
            skippedAction: 'k',
          },
          at(4),
        );
        expect(await stageOf(r0?.usageId ?? '')).to.equal('handed');
        await registerAtApple(loc.id, [u0 ?? ''], 'Associated');
        expect(await store.unregisteredButAssociated(100)).to.have.length(2);
        const notified = await store.markRegistered(
          { locationId: loc.id, userIds: [u0 ?? ''] },
          false,
          'Registered',
          at(5),
        );
        expect(notified.sort()).to.deep.equal([a.id, b.id].sort());
        expect(await stageOf(r0?.usageId ?? '')).to.equal('notify_registered');
        for (const inv of [a, b]) {
          expect(await usageRow(inv.id, u0 ?? '')).to.deep.include({
            status: 'registered',
            lastAction: 'Registered',
          });
        }
        expect(await store.unregisteredButAssociated(100)).to.have.length(0);

        // Managed Apple ID: auto_registered is final.
        await registerAtApple(loc.id, [u2 ?? ''], 'Associated', { managed: true });
        const [r2] = await store.usageOfUsers(b.id, [u2 ?? '']);
        await store.markRegistered({ usageIds: [r2?.usageId ?? ''] }, true, 'Auto', at(6));
        expect(
          await store.markRegistered({ usageIds: [r2?.usageId ?? ''] }, false, 'Again', at(7)),
        ).to.deep.equal([]);
        expect(await usageRow(b.id, u2 ?? '')).to.deep.include({
          status: 'auto_registered',
          lastAction: 'Auto',
        });
        expect(await stageOf(r2?.usageId ?? '')).to.equal('done');

        expect(await store.failAtApple(loc.id, [u3 ?? ''], 'Apple 9717: bad', at(8))).to.have.length(2);
        expect(await usageRow(a.id, u3 ?? '')).to.deep.include({
          status: 'failed',
          reason: 'Apple 9717: bad',
        });

        expect(await store.retireUsage(loc.id, u0 ?? '', at(9))).to.equal(2);
        const retired = await usageRow(a.id, u0 ?? '');
        expect(retired).to.deep.include({ status: 'pending', reason: null });
        expect(await stageOf(retired.id)).to.equal('retired');
      });

      it('records channel outcomes, never over a registration', async () => {
        const loc = await location();
        const inv = await invitation(loc.id);
        const ids = await makeUsers(5);
        await store.addUsage(inv.id, loc.id, ids, newRegistrationCode, at(1));
        const refs = await store.usageInStage(inv.id, 'register', null, 10);
        const usageIds = refs.map((r) => r.usageId);
        await store.changeStage({
          usageIds,
          from: ['register'],
          to: 'deliver',
          lastAction: 'ready',
          at: at(1),
        });
        await store.markRegistered({ usageIds: [usageIds[4] ?? ''] }, false, 'Registered', at(2));
        const defaults = {
          sentAction: 'Sent',
          pendingAction: 'Handed',
          failedAction: 'Failed',
          skippedAction: 'Skipped',
        };
        const n = await store.applyOutcomes(
          'deliver',
          usageIds,
          [
            { usageId: usageIds[0] ?? '', status: 'sent', at: at(3) },
            { usageId: usageIds[1] ?? '', status: 'failed', reason: '550 no such user' },
            {
              usageId: usageIds[2] ?? '',
              status: 'skipped',
              reason: 'no_email',
              lastAction: 'No email address',
            },
            { usageId: usageIds[4] ?? '', status: 'sent' },
          ],
          defaults,
          at(4),
        );
        expect(n).to.equal(4);
        const item = async (i: number) => usageRow(inv.id, refs[i]?.userId ?? '');
        const sent = await item(0);
        expect(sent).to.deep.include({ status: 'sent', lastAction: 'Sent', reason: null });
        expect(sent.sentAt?.getTime()).to.equal(at(3).getTime());
        expect(await item(1)).to.deep.include({
          status: 'failed',
          reason: '550 no such user',
          lastAction: 'Failed',
        });
        expect(await item(2)).to.deep.include({
          status: 'skipped',
          reason: 'no_email',
          lastAction: 'No email address',
        });
        expect(await item(3)).to.deep.include({ status: 'pending', lastAction: 'Handed', sentAt: null });
        expect(await item(4)).to.deep.include({ status: 'registered', lastAction: 'Registered' });
        for (const i of [0, 1, 2, 3]) expect(await stageOf(usageIds[i] ?? '')).to.equal('handed');

        // Reports from a channel: forward only, never over a registration.
        expect(
          await store.report(
            [
              { usageId: usageIds[0] ?? '', status: 'acknowledged', lastAction: 'Opened', at: at(5) },
              { usageId: usageIds[4] ?? '', status: 'sent', lastAction: 'Sent again', at: at(5) },
            ],
            at(5),
          ),
        ).to.equal(1);
        expect(
          await store.report(
            [{ usageId: usageIds[0] ?? '', status: 'sent', lastAction: 'Late', at: at(6) }],
            at(6),
          ),
        ).to.equal(0);
        expect(await item(0)).to.deep.include({ status: 'acknowledged', lastAction: 'Opened' });
        expect(
          await store.report(
            [{ usageId: usageIds[3] ?? '', status: 'sent', lastAction: 'Mailed', at: at(7), sentAt: at(6) }],
            at(7),
          ),
        ).to.equal(1);
        const mailed = await item(3);
        expect(mailed).to.deep.include({ status: 'sent', lastAction: 'Mailed' });
        expect(mailed.sentAt?.getTime()).to.equal(at(6).getTime());

        await store.setDevices(
          usageIds[0] ?? '',
          [
            { udid: 'UDID-1', enrollmentId: 'UDID-1', commandUuid: 'c1', commandStatus: 'queued' },
            { udid: 'UDID-2', enrollmentId: 'UDID-2:501', commandUuid: null, commandStatus: null },
          ],
          at(8),
        );
        expect((await item(0)).devices).to.deep.equal([
          { udid: 'UDID-1', enrollmentId: 'UDID-1', commandUuid: 'c1', commandStatus: 'queued' },
          { udid: 'UDID-2', enrollmentId: 'UDID-2:501', commandUuid: null, commandStatus: null },
        ]);
        await store.setDevices(usageIds[0] ?? '', [], at(9));
        expect((await item(0)).devices).to.deep.equal([]);
      });

      it('marks resend cohorts: handed rows to resend, stopped rows to register again', async () => {
        const loc = await location();
        const inv = await invitation(loc.id);
        const ids = await makeUsers(6);
        await store.addUsage(inv.id, loc.id, ids, newRegistrationCode, at(1));
        const refs = await store.usageInStage(inv.id, 'register', null, 10);
        const u = refs.map((r) => r.usageId);
        const defaults = {
          sentAction: 'Sent',
          pendingAction: 'Handed',
          failedAction: 'Failed',
          skippedAction: 'Skipped',
        };
        await store.changeStage({
          usageIds: u.slice(0, 4),
          from: ['register'],
          to: 'deliver',
          lastAction: 'r',
          at: at(1),
        });
        await store.applyOutcomes(
          'deliver',
          u.slice(0, 4),
          [
            { usageId: u[0] ?? '', status: 'sent' },
            { usageId: u[1] ?? '', status: 'failed', reason: 'x' },
            { usageId: u[2] ?? '', status: 'pending' },
            { usageId: u[3] ?? '', status: 'sent' },
          ],
          defaults,
          at(2),
        );
        await store.markRegistered({ usageIds: [u[3] ?? ''] }, false, 'Registered', at(3));
        // u4: failed at Apple (done); u5: still waiting for Apple.
        await store.changeStage({
          usageIds: [u[4] ?? ''],
          from: ['register'],
          to: 'done',
          status: 'failed',
          reason: 'Apple',
          lastAction: 'f',
          at: at(3),
        });
        await store.changeStage({
          usageIds: [u[5] ?? ''],
          from: ['register'],
          to: 'apple',
          lastAction: 'a',
          at: at(3),
        });

        expect(await store.markResend(inv.id, { cohort: 'failed', userIds: null }, at(4))).to.equal(2);
        expect(await stageOf(u[1] ?? '')).to.equal('resend');
        expect(await stageOf(u[4] ?? '')).to.equal('register');
        expect(await stageOf(u[0] ?? '')).to.equal('handed');

        expect(await store.markResend(inv.id, { cohort: 'never_sent', userIds: null }, at(5))).to.equal(4);
        expect(await stageOf(u[2] ?? '')).to.equal('resend');
        expect(await stageOf(u[5] ?? '')).to.equal('apple');
        expect(await stageOf(u[0] ?? '')).to.equal('handed');

        expect(await store.markResend(inv.id, { cohort: 'not_registered', userIds: null }, at(6))).to.equal(
          5,
        );
        expect(await stageOf(u[0] ?? '')).to.equal('resend');
        expect(await stageOf(u[3] ?? '')).to.equal('notify_registered');

        const one = await store.markResend(
          inv.id,
          { cohort: 'not_registered', userIds: [refs[0]?.userId ?? '', refs[3]?.userId ?? ''] },
          at(7),
        );
        expect(one).to.equal(1);
      });

      it('pages the usage by id, filtered by status and by name or email', async () => {
        const loc = await location();
        const inv = await invitation(loc.id);
        const ids = [
          (
            await users.create(
              newUser(uid('alice'), { email: 'alice@example.com', fullName: 'Alice A' }),
              at(0),
            )
          ).id,
          (await users.create(newUser(uid('bob'), { email: 'bob@example.com' }), at(0))).id,
          ...(await makeUsers(3)),
        ];
        await store.addUsage(inv.id, loc.id, ids, newRegistrationCode, at(1));
        const seen: string[] = [];
        let cursor: string | null = null;
        for (;;) {
          const page: Awaited<ReturnType<SqlInvitationStore['listUsage']>> = await store.listUsage(inv.id, {
            limit: 2,
            cursor,
            status: null,
            q: null,
            withDevices: false,
          });
          seen.push(...page.items.map((i) => i.userId));
          if (!page.nextCursor) break;
          cursor = page.nextCursor;
        }
        expect(seen).to.deep.equal(ids);
        const bob = await store.listUsage(inv.id, {
          limit: 10,
          cursor: null,
          status: null,
          q: 'BOB@',
          withDevices: false,
        });
        expect(bob.items.map((i) => i.userId)).to.deep.equal([ids[1]]);
        expect(bob.items[0]).to.deep.include({ email: 'bob@example.com' });
        const alice = await store.listUsage(inv.id, {
          limit: 10,
          cursor: null,
          status: null,
          q: 'alice a',
          withDevices: false,
        });
        expect(alice.items.map((i) => i.userId)).to.deep.equal([ids[0]]);
        const refs = await store.usageOfUsers(inv.id, [ids[2] ?? '']);
        await store.changeStage({
          usageIds: refs.map((r) => r.usageId),
          from: ['register'],
          to: 'done',
          status: 'skipped',
          reason: 'no_managed_apple_id',
          lastAction: 's',
          at: at(2),
        });
        const skipped = await store.listUsage(inv.id, {
          limit: 10,
          cursor: null,
          status: 'skipped',
          q: null,
          withDevices: false,
        });
        expect(skipped.items.map((i) => i.userId)).to.deep.equal([ids[2]]);
        let threw: unknown = null;
        try {
          await store.listUsage(inv.id, {
            limit: 10,
            cursor: 'garbage',
            status: null,
            q: null,
            withDevices: false,
          });
        } catch (err) {
          threw = err;
        }
        expect(threw).to.have.property('code', 'invalid_cursor');
      });

      it('resolves registration codes (not those of a deleted invitation) and records openings', async () => {
        const loc = await location({ organizationName: 'Acme' });
        const inv = await invitation(loc.id, { name: 'Staff', requireLogin: true });
        const [u] = await makeUsers(1);
        await store.addUsage(inv.id, loc.id, [u ?? ''], newRegistrationCode, at(1));
        const item = await usageRow(inv.id, u ?? '');
        const target = await store.findByCode(item.registrationCode);
        expect(target).to.deep.include({
          usageId: item.id,
          userId: u,
          invitationName: 'Staff',
          orgName: 'Acme',
          requireLogin: true,
          status: 'pending',
          registrationState: null,
          invitationUrl: null,
        });
        await registerAtApple(loc.id, [u ?? ''], 'Registered');
        expect((await store.findByCode(item.registrationCode))?.invitationUrl).to.match(/inviteCode=code-/);
        expect(await store.recordOpened(item.registrationCode, 'Opened the link', at(3))).to.equal(true);
        expect(await usageRow(inv.id, u ?? '')).to.deep.include({
          status: 'acknowledged',
          lastAction: 'Opened the link',
        });
        expect(await store.recordOpened('unknown-code-unknown-code', 'x', at(3))).to.equal(false);
        expect(await store.findByCode('unknown-code-unknown-code')).to.equal(null);
        await store.markInvitationDeleted(inv.id, at(4));
        expect(await store.findByCode(item.registrationCode)).to.equal(null);
      });
    });
  });
}
