/**
 * The device-prompt store against each database: claims (one prompt per user, location and device,
 * also under concurrency), answers, withdrawals, and the reads of invitations, registrations and
 * devices that device delivery and Self Service make.
 */
import { randomUUID } from 'node:crypto';
import { expect } from 'chai';
import type { AuthenticateInput, TokenUpdateInput } from '../../server/checkin/store.ts';
import type { PromptClaim } from '../../server/delivery/store.ts';
import type { DistributionMethod } from '../../server/invitations/model.ts';
import { openDatabase, type Database } from '../../server/storage/database.ts';
import { SqlDeliveryStore } from '../../server/storage/delivery-store.ts';
import { SqlUserStore } from '../../server/storage/directory-store.ts';
import { SqlInvitationStore } from '../../server/storage/invitation-store.ts';
import { migrate } from '../../server/storage/migrate.ts';
import { SqlCommandStore, SqlDeviceStore } from '../../server/storage/stores.ts';
import { SqlVppStore } from '../../server/storage/vpp-store.ts';
import { testDatabases } from '../helpers/databases.ts';

const T0 = Date.UTC(2030, 0, 1, 12, 0, 0, 123);
const at = (s: number) => new Date(T0 + s * 1000);
const TEMPLATE = 'https://apple.example/invite?inviteCode=%25inviteCode%25&mt=8';

let counter = 0;
const uid = (prefix: string) => `${prefix}-${process.pid}-${++counter}`.toUpperCase();
const uuid = () => randomUUID().toUpperCase();

function authInput(udid: string, overrides: Partial<AuthenticateInput> = {}): AuthenticateInput {
  return {
    udid,
    platform: 'ios',
    osVersion: '17.4',
    buildVersion: '21E219',
    model: 'iPhone15,2',
    productName: 'iPhone15,2',
    serialNumber: null,
    deviceName: null,
    userEnrollment: false,
    topic: 'com.apple.mgmt.External.test',
    certFingerprint: `fp-${udid}`.toLowerCase(),
    ...overrides,
  };
}

function tokenInput(udid: string, overrides: Partial<TokenUpdateInput> = {}): TokenUpdateInput {
  return {
    enrollmentId: udid,
    udid,
    channel: 'device',
    appleUserId: null,
    userShortName: null,
    userLongName: null,
    topic: 'com.apple.mgmt.External.test',
    pushToken: 'aa'.repeat(32),
    pushMagic: `magic-${udid}`,
    unlockToken: null,
    ...overrides,
  };
}

for (const target of testDatabases('delivery store')) {
  describe(`device delivery storage contract (${target.name})`, function () {
    this.timeout(120_000);
    let db: Database;
    let store: SqlDeliveryStore;
    let users: SqlUserStore;
    let vpp: SqlVppStore;
    let invitations: SqlInvitationStore;
    let devices: SqlDeviceStore;
    let commands: SqlCommandStore;

    before(async function () {
      db = await openDatabase(await target.url());
      await migrate(db);
      store = new SqlDeliveryStore(db);
      users = new SqlUserStore(db);
      vpp = new SqlVppStore(db);
      invitations = new SqlInvitationStore(db);
      devices = new SqlDeviceStore(db);
      commands = new SqlCommandStore(db);
    });

    after(async function () {
      await db?.close();
      await target.cleanup?.();
    });

    async function user(extra: { email?: string; managedAppleId?: string } = {}): Promise<string> {
      const u = await users.create(
        {
          username: uid('user').toLowerCase(),
          fullName: null,
          email: extra.email ?? null,
          managedAppleId: extra.managedAppleId ?? null,
          siteIds: [],
          passwordHash: null,
        },
        at(0),
      );
      return u.id;
    }

    async function location(): Promise<string> {
      const loc = await vpp.createLocation(
        {
          name: uid('loc'),
          organizationName: 'Org',
          locationName: 'Apple Location',
          countryCode: 'US',
          tokenExpiration: at(86_400),
          appleUid: uid('apple'),
          siteId: null,
          autoRegisterManagedUsers: false,
          invitationTemplate: TEMPLATE,
          notificationTokenHash: 'ab'.repeat(32),
        },
        (id) => `sealed:${id}`,
        at(0),
      );
      return loc.id;
    }

    /** A registration in `state` with an invite code (raw: the VPP flow is tested elsewhere). */
    async function registration(locationId: string, userId: string, state: string): Promise<string> {
      const code = uid('code');
      await db.write((t) =>
        db.sequelize.getQueryInterface().bulkInsert(
          'vpp_registrations',
          [
            {
              location_id: Number(locationId),
              user_id: Number(userId),
              client_user_id: randomUUID(),
              state,
              managed: false,
              invite_code: code,
              invitation_url: null,
              requested_at: at(0),
              created_at: at(0),
              updated_at: at(0),
            },
          ],
          { transaction: t },
        ),
      );
      return code;
    }

    /** An invitation with a usage row per user, handed to its channel. */
    async function invitation(
      locationId: string,
      userIds: string[],
      method: DistributionMethod = 'prompt_and_self_service',
    ): Promise<{ id: string; usage: Map<string, string> }> {
      const inv = await invitations.createInvitation(
        {
          name: uid('inv'),
          locationId,
          siteId: null,
          distributionMethod: method,
          autoRegisterManagedUsers: false,
          requireLogin: false,
          email: null,
          scope: { allUsers: false, userIds, groupIds: [], exclusions: { userIds: [], groupIds: [] } },
        },
        at(0),
      );
      await invitations.addUsage(inv.id, locationId, userIds, () => randomUUID(), at(0));
      const refs = await invitations.usageOfUsers(inv.id, userIds);
      await invitations.changeStage({
        usageIds: refs.map((r) => r.usageId),
        from: ['register'],
        to: 'handed',
        status: 'sent',
        at: at(1),
      });
      return { id: inv.id, usage: new Map(refs.map((r) => [r.userId, r.usageId])) };
    }

    async function device(
      userId: string | null,
      overrides: Partial<AuthenticateInput> = {},
      userChannels: { id: string; shortName: string; at: number }[] = [],
    ): Promise<string> {
      const udid = uid('dev');
      await devices.authenticate(authInput(udid, overrides), at(0));
      await devices.tokenUpdate(tokenInput(udid), at(0));
      for (const c of userChannels) {
        await devices.tokenUpdate(
          tokenInput(udid, {
            enrollmentId: `${udid}:${c.id}`,
            channel: 'user',
            appleUserId: c.id,
            userShortName: c.shortName,
          }),
          at(c.at),
        );
      }
      if (userId) await devices.assignUser(udid, userId);
      return udid;
    }

    function promptClaim(
      userId: string,
      locationId: string,
      udid: string,
      inviteCode: string,
      enrollmentId = udid,
    ): PromptClaim & { kind: 'prompt' } {
      return { userId, locationId, udid, kind: 'prompt', enrollmentId, inviteCode, newCommandUuid: uuid() };
    }

    it('reads the devices of users with their channels, and the users', async function () {
      const [u1, u2] = [await user({ managedAppleId: 'm@appleid.example' }), await user()];
      const mac = await device(u1, { platform: 'macos', osVersion: '14.5', deviceName: 'Mac of u1' }, [
        { id: 'A', shortName: 'someone', at: 1 },
      ]);
      const phone = await device(u1);
      await device(u2);
      await device(null);
      const of = await store.devicesOfUsers([u1]);
      expect(of.map((d) => d.udid).sort()).to.deep.equal([mac, phone].sort());
      const m = of.find((d) => d.udid === mac);
      expect(m).to.include({
        platform: 'macos',
        osVersion: '14.5',
        userId: u1,
        enrolled: true,
        userEnrollment: false,
      });
      expect(m?.channels.map((c) => [c.id, c.channel, c.userShortName, c.enabled])).to.deep.equal([
        [mac, 'device', null, true],
        [`${mac}:A`, 'user', 'someone', true],
      ]);
      expect((await store.promptDevice(phone))?.channels.map((c) => c.id)).to.deep.equal([phone]);
      expect(await store.promptDevice('NO-SUCH-DEVICE')).to.equal(null);
      const [pu] = await store.promptUsers([u1]);
      expect(pu).to.include({ userId: u1, managedAppleId: 'm@appleid.example' });
    });

    it('claims one prompt per (user, location, device): new, kept, replaced by a new code, again after an answer', async function () {
      const [u, loc] = [await user(), await location()];
      const udid = await device(u);
      const first = promptClaim(u, loc, udid, 'CODE-1');
      const a = await store.claim([first], at(2));
      expect(a.queued).to.deep.equal([
        { userId: u, locationId: loc, udid, enrollmentId: udid, commandUuid: first.newCommandUuid },
      ]);
      expect(a.kept).to.deep.equal([]);
      // the same code again (another invitation of the location, a resend): kept, no new command
      const b = await store.claim([promptClaim(u, loc, udid, 'CODE-1')], at(3));
      expect(b.queued).to.deep.equal([]);
      expect(b.kept.map((k) => k.commandUuid)).to.deep.equal([first.newCommandUuid]);
      // a skip never replaces a prompt
      await store.claim([{ userId: u, locationId: loc, udid, kind: 'skip', reason: 'os_too_old' }], at(3));
      // a new invite code: the pending prompt is replaced
      const third = promptClaim(u, loc, udid, 'CODE-2');
      const c = await store.claim([third], at(4));
      expect(c.replaced).to.deep.equal([first.newCommandUuid]);
      expect(c.queued.map((q) => q.commandUuid)).to.deep.equal([third.newCommandUuid]);
      const [row] = await store.promptsOf([{ userId: u, locationId: loc }]);
      expect(row).to.include({
        state: 'queued',
        commandStatus: 'queued',
        inviteCode: 'CODE-2',
        commandUuid: third.newCommandUuid,
        enrollmentId: udid,
      });
      expect(row?.deviceLabel).to.equal(`iPhone15,2 ${udid}`);
      // answered: the next claim makes a new prompt
      await store.applyResults(
        [
          {
            commandUuid: third.newCommandUuid,
            enrollmentId: udid,
            state: 'acknowledged',
            commandStatus: 'acknowledged',
            reason: null,
          },
        ],
        at(5),
      );
      const fourth = promptClaim(u, loc, udid, 'CODE-2');
      const d = await store.claim([fourth], at(6));
      expect(d.queued.map((q) => q.commandUuid)).to.deep.equal([fourth.newCommandUuid]);
      expect(d.replaced).to.deep.equal([]);
    });

    it('records skips (and updates their reason) without touching prompts', async function () {
      const [u, loc] = [await user(), await location()];
      const udid = await device(u);
      await store.claim(
        [{ userId: u, locationId: loc, udid, kind: 'skip', reason: 'no_user_channel' }],
        at(1),
      );
      await store.claim([{ userId: u, locationId: loc, udid, kind: 'skip', reason: 'os_too_old' }], at(2));
      const [row] = await store.promptsOf([{ userId: u, locationId: loc }]);
      expect(row).to.include({
        state: 'skipped',
        reason: 'os_too_old',
        commandUuid: null,
        commandStatus: null,
      });
      // a prompt replaces the skip
      const p = promptClaim(u, loc, udid, 'CODE');
      expect((await store.claim([p], at(3))).queued).to.have.length(1);
    });

    it('20 concurrent claims of one device for one code end in exactly one prompt', async function () {
      const [u, loc] = [await user(), await location()];
      const udid = await device(u);
      const claims = Array.from({ length: 20 }, () => promptClaim(u, loc, udid, 'CODE'));
      const results = await Promise.all(claims.map((c) => store.claim([c], at(1))));
      const queued = results.flatMap((r) => r.queued);
      expect(queued).to.have.length(1);
      expect(results.flatMap((r) => r.kept)).to.have.length(19);
      const rows = await store.promptsOf([{ userId: u, locationId: loc }]);
      expect(rows.map((r) => r.commandUuid)).to.deep.equal([queued[0]?.commandUuid]);
    });

    it('applies answers only to active prompts of the same enrollment; NotNow only to queued ones', async function () {
      const [u, loc] = [await user(), await location()];
      const udid = await device(u);
      const c = promptClaim(u, loc, udid, 'CODE');
      await store.claim([c], at(1));
      const uuid0 = c.newCommandUuid;
      const result = (state: 'not_now' | 'acknowledged' | 'failed', enrollmentId = udid) => ({
        commandUuid: uuid0,
        enrollmentId,
        state,
        commandStatus: state === 'failed' ? ('error' as const) : state,
        reason: state === 'failed' ? 'Error 12079' : null,
      });
      expect(await store.applyResults([result('acknowledged', 'OTHER-ENROLLMENT')], at(2))).to.deep.equal([]);
      expect((await store.applyResults([result('not_now')], at(2))).map((r) => r.state)).to.deep.equal([
        'not_now',
      ]);
      expect(await store.applyResults([result('not_now')], at(3))).to.deep.equal([]);
      const failed = await store.applyResults([result('failed')], at(4));
      expect(failed.map((r) => [r.state, r.commandStatus, r.reason])).to.deep.equal([
        ['failed', 'error', 'Error 12079'],
      ]);
      expect(await store.applyResults([result('acknowledged')], at(5))).to.deep.equal([]);
      expect(
        await store.applyResults([{ ...result('acknowledged'), commandUuid: uuid() }], at(5)),
      ).to.deep.equal([]);
      const [row] = await store.promptsOf([{ userId: u, locationId: loc }]);
      expect(row).to.include({ state: 'failed', commandStatus: 'error' });
      expect(row?.answeredAt?.getTime()).to.equal(at(4).getTime());
    });

    it('markWithdrawn changes active prompts only', async function () {
      const [u, loc, loc2] = [await user(), await location(), await location()];
      const udid = await device(u);
      const [a, b] = [promptClaim(u, loc, udid, 'A'), promptClaim(u, loc2, udid, 'B')];
      await store.claim([a], at(1));
      await store.claim([b], at(1));
      await store.applyResults(
        [
          {
            commandUuid: b.newCommandUuid,
            enrollmentId: udid,
            state: 'acknowledged',
            commandStatus: 'acknowledged',
            reason: null,
          },
        ],
        at(2),
      );
      const changed = await store.markWithdrawn(
        [a.newCommandUuid, b.newCommandUuid],
        'the user registered',
        at(3),
      );
      expect(changed.map((r) => [r.commandUuid, r.state, r.commandStatus, r.reason])).to.deep.equal([
        [a.newCommandUuid, 'withdrawn', 'withdrawn', 'the user registered'],
      ]);
      expect(await store.markWithdrawn([a.newCommandUuid], 'again', at(4))).to.deep.equal([]);
      expect(await store.markWithdrawn([], 'nothing', at(4))).to.deep.equal([]);
    });

    it('reads usage of live invitations by method, the prompt work of a user and what Self Service lists', async function () {
      const loc = await location();
      const [alice, bob, carol] = [await user(), await user(), await user()];
      const aliceCode = await registration(loc, alice, 'registered');
      await registration(loc, bob, 'associated');
      await registration(loc, carol, 'created'); // no invite code yet in the Apple sense
      const prompt = await invitation(loc, [alice, bob, carol]);
      const selfOnly = await invitation(loc, [alice], 'self_service_only');
      const email = await invitation(loc, [alice], 'email');
      const deleted = await invitation(loc, [alice]);
      await invitations.markInvitationDeleted(deleted.id, at(2));
      await invitations.markRegistered({ locationId: loc, userIds: [bob] }, false, 'Registered', at(3));

      const usages = await store.usagesOf([{ userId: alice, locationId: loc }], ['prompt_and_self_service']);
      expect(usages.map((u) => u.usageId)).to.deep.equal([prompt.usage.get(alice)]);
      const both = await store.usagesOf(
        [
          { userId: alice, locationId: loc },
          { userId: bob, locationId: loc },
        ],
        ['prompt_and_self_service', 'self_service_only'],
      );
      expect(both.map((u) => u.usageId).sort()).to.deep.equal(
        [prompt.usage.get(alice), selfOnly.usage.get(alice), prompt.usage.get(bob)].sort(),
      );
      expect(both.find((u) => u.userId === bob)).to.include({
        status: 'registered',
        stage: 'notify_registered',
      });

      const work = await store.promptWorkForUser(alice);
      expect(work).to.deep.equal([
        {
          userId: alice,
          locationId: loc,
          inviteCode: aliceCode,
          invitationUrl: `https://apple.example/invite?inviteCode=${aliceCode}&mt=8`,
          usages: [{ usageId: prompt.usage.get(alice), status: 'sent' }],
        },
      ]);
      expect(await store.promptWorkForUser(bob)).to.deep.equal([]); // registered
      expect(await store.promptWorkForUser(carol)).to.deep.equal([]); // no invite code

      const listed = await store.selfServiceItems(alice);
      expect(listed.map((i) => [i.usageId, i.registered, i.locationName])).to.deep.equal([
        [prompt.usage.get(alice), false, 'Apple Location'],
        [selfOnly.usage.get(alice), false, 'Apple Location'],
      ]);
      expect(listed[0]?.invitationUrl).to.equal(`https://apple.example/invite?inviteCode=${aliceCode}&mt=8`);
      expect(
        (await store.selfServiceItems(bob)).map((i) => [i.usageId, i.status, i.registered]),
      ).to.deep.equal([[prompt.usage.get(bob), 'registered', true]]);
      expect(await store.selfServiceItems(carol)).to.deep.equal([]);
      expect((await store.selfServiceItem(selfOnly.usage.get(alice) ?? ''))?.userId).to.equal(alice);
      expect(await store.selfServiceItem(email.usage.get(alice) ?? '')).to.equal(null);
      expect(await store.selfServiceItem('not-an-id')).to.equal(null);
    });

    it('finds orphaned prompts (with their result), prompts of associated users, stray devices and devices missing prompts', async function () {
      const loc = await location();
      const [u1, u2, u3] = [await user(), await user(), await user()];
      await registration(loc, u1, 'registered');
      await registration(loc, u2, 'associated');
      await registration(loc, u3, 'registered');
      await invitation(loc, [u1, u2, u3]);
      const [d1, d2, d3] = [await device(u1), await device(u2), await device(u1)];
      const c1 = promptClaim(u1, loc, d1, 'C1');
      const c2 = promptClaim(u2, loc, d2, 'C2');
      const c3 = promptClaim(u1, loc, d3, 'C1');
      await store.claim([c1, c3], at(1));
      await store.claim([c2], at(1));
      // c1's command was answered (in the results table only), c2's and c3's are queued
      const queue = (c: PromptClaim & { kind: 'prompt' }) => ({
        enrollmentId: c.enrollmentId,
        udid: c.udid,
        commandUuid: c.newCommandUuid,
        requestType: 'InviteToProgram',
        bodyXml: '<plist/>',
      });
      await commands.enqueue([queue(c1), queue(c2), queue(c3)], at(1));
      await commands.complete(
        {
          enrollmentId: d1,
          commandUuid: c1.newCommandUuid,
          status: 'acknowledged',
          resultXml: '<plist><dict/></plist>',
        },
        at(2),
      );
      const orphans = await store.orphanedPrompts(at(10), 100);
      const mine = orphans.filter((o) => [c1, c2, c3].some((c) => c.newCommandUuid === o.prompt.commandUuid));
      expect(mine.map((o) => [o.prompt.commandUuid, o.result?.status])).to.deep.equal([
        [c1.newCommandUuid, 'acknowledged'],
      ]);
      expect(
        (await store.orphanedPrompts(at(0), 100)).some((o) => o.prompt.commandUuid === c1.newCommandUuid),
      ).to.equal(false);

      const associated = await store.activePromptsOfAssociated(100);
      expect(associated.filter((p) => p.locationId === loc).map((p) => p.commandUuid)).to.deep.equal([
        c2.newCommandUuid,
      ]);

      // d3 goes to another user: its active prompt for u1 is stray
      await devices.assignUser(d3, u3);
      expect(await store.devicesWithStrayPrompts(1000))
        .to.include(d3)
        .and.not.include(d1);
      // u3 has prompt work and d3 has no row for (u3, loc); u1's devices have rows
      const missing = await store.devicesMissingPrompts(1000);
      expect(missing).to.include(d3).and.not.include(d1).and.not.include(d2);
    });
  });
}
