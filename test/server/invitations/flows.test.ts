import { expect } from 'chai';
import { testDatabases } from '../../helpers/databases.ts';
import { vppFixture, waitFor, type VppFixture } from '../vpp/helpers.ts';
import {
  bulkUsers,
  createInvitation,
  getInvitation,
  RecordingChannel,
  usageOf,
  type InvitationJson,
  type UsageJson,
} from './helpers.ts';

/**
 * Sending on save, channels, Apple's word, scope and site changes, resend and export, end to end: on
 * SQLite, and on PostgreSQL / MariaDB when `MDM_TEST_POSTGRES_URL` / `MDM_TEST_MARIADB_URL` are set.
 */
for (const target of testDatabases('invitation end-to-end')) {
  describe(`Invitations: sending, scope, site, resend, export (${target.name})`, function () {
    this.timeout(120_000);
    let f: VppFixture;
    let n = 0;
    const user = (extra: Record<string, unknown> = {}) => f.addUser(`flow.${++n}`, extra);
    const creates = () => f.service.stats().requests.byRoute['POST /users/create'] ?? 0;
    const byUser = (items: UsageJson[]) => new Map(items.map((i) => [i.userId, i]));
    const done = (id: string) =>
      waitFor(`invitation ${id} fan-out done`, async () => {
        const inv = await getInvitation(f.ts, id);
        return inv.fanout.state === 'done' ? inv : false;
      });
    const channel = (method: 'self_service_only' | 'prompt_and_self_service' | 'email') => {
      const c = new RecordingChannel(method);
      f.ts.server.invitations.channels.register(c);
      return c;
    };

    before(async () => {
      const env: Record<string, string> =
        target.name === 'sqlite' ? {} : { MDM_DATABASE_URL: await target.url() };
      f = await vppFixture({ service: { eventDelayMs: 10 }, env });
    });
    afterEach(() => {
      f.service.clearFaults();
      for (const m of ['self_service_only', 'prompt_and_self_service', 'email'] as const) {
        f.ts.server.invitations.channels.unregister(m);
      }
    });
    after(async () => {
      await f?.cleanup();
      await target.cleanup?.();
    });

    it('sends on save: each user registered once with Apple, handed to the channel, counted', async () => {
      const loc = await f.addLocation();
      const ids = await bulkUsers(f.ts.server.db, 120, 'send');
      const group = await f.ts.api('POST', '/user-groups', { name: 'send group', userIds: ids.slice(0, 80) });
      const ch = channel('self_service_only');
      const before = creates();
      const inv = await createInvitation(f.ts, {
        name: 'Send',
        locationId: loc.id,
        distributionMethod: 'self_service_only',
        scope: { userIds: ids.slice(60, 120), groupIds: [group.json<{ id: string }>().id] },
      });
      expect(inv.counts.pending).to.equal(120);
      const finished = await done(inv.id);
      expect(finished.counts).to.deep.equal({
        pending: 0,
        sent: 120,
        acknowledged: 0,
        registered: 0,
        auto_registered: 0,
        skipped: 0,
        failed: 0,
      });
      expect(finished.fanout).to.deep.include({ state: 'done', processed: 120, total: 120 });
      expect(ch.deliveredTo(inv.id)).to.deep.equal(new Set(ids));
      expect(ch.delivered).to.have.length(120);
      const apple = f.service.users(loc.sToken);
      expect(apple).to.have.length(120);
      expect(new Set(apple.map((u) => u.clientUserId)).size).to.equal(120);
      expect(creates() - before).to.equal(2);
      const item = ch.delivered[0]?.item;
      expect(item?.inviteCode).to.match(/^\w+$/);
      expect(item?.invitationUrl).to.contain(`inviteCode=${item?.inviteCode ?? ''}`);
      expect(item?.registrationUrl).to.equal(`${f.ts.server.url}/register/${item?.registrationCode ?? ''}`);
      const usage = await usageOf(f.ts, inv.id);
      expect(
        usage.every((u) => u.status === 'sent' && u.sentAt !== null && u.invitationUrl !== null),
      ).to.equal(true);
    });

    it('shares the registration between invitations of a location; a registered user is registered in both', async () => {
      const loc = await f.addLocation();
      const users = [await user(), await user(), await user()];
      const ch = channel('self_service_only');
      const a = await createInvitation(f.ts, {
        name: 'A',
        locationId: loc.id,
        distributionMethod: 'self_service_only',
        scope: { userIds: users },
      });
      await done(a.id);
      const before = creates();
      const b = await createInvitation(f.ts, {
        name: 'B',
        locationId: loc.id,
        distributionMethod: 'self_service_only',
        scope: { userIds: users },
      });
      await done(b.id);
      expect(creates()).to.equal(before);
      expect(f.service.users(loc.sToken)).to.have.length(3);
      const codeA = ch.delivered.find((d) => d.invitationId === a.id && d.item.userId === users[0])?.item
        .inviteCode;
      const codeB = ch.delivered.find((d) => d.invitationId === b.id && d.item.userId === users[0])?.item
        .inviteCode;
      expect(codeA).to.be.a('string');
      expect(codeB).to.equal(codeA);

      const accepted = f.service.acceptInvitation(codeA ?? '', 'someone@icloud.example');
      expect(accepted.result).to.equal('associated');
      for (const inv of [a, b]) {
        await waitFor(
          'registered',
          async () => byUser(await usageOf(f.ts, inv.id)).get(users[0] ?? '')?.status === 'registered',
        );
      }
      const row = byUser(await usageOf(f.ts, a.id)).get(users[0] ?? '');
      expect(row?.lastAction).to.match(/Registered with Apple/);
      // The channel is told (its prompts for that user are withdrawn), once per invitation.
      await waitFor(
        'withdrawn as registered',
        () => ch.withdrawn.filter((w) => w.reason === 'registered' && w.ref.userId === users[0]).length === 2,
      );
      expect((await getInvitation(f.ts, b.id)).counts).to.include({ registered: 1, sent: 2 });
    });

    it('without a channel users wait in pending; they are handed over once a channel is registered', async () => {
      f.ts.server.invitations.channels.unregister('prompt_and_self_service');
      const loc = await f.addLocation();
      const users = [await user(), await user()];
      const inv = await createInvitation(f.ts, {
        name: 'Prompt',
        locationId: loc.id,
        distributionMethod: 'prompt_and_self_service',
        scope: { userIds: users },
      });
      const waiting = await waitFor('waiting for the channel', async () => {
        const got = await getInvitation(f.ts, inv.id);
        return got.fanout.state === 'waiting_for_channel' ? got : false;
      });
      expect(waiting.counts.pending).to.equal(2);
      expect(waiting.fanout.waitingForChannel).to.equal(2);
      for (const u of await usageOf(f.ts, inv.id)) {
        expect(u).to.deep.include({ status: 'pending', sentAt: null });
        expect(u.lastAction).to.match(/Waiting for the device prompt and Self Service channel/);
        expect(u.invitationUrl).to.match(/inviteCode=/);
      }
      const ch = channel('prompt_and_self_service');
      await waitFor('handed over', () => ch.deliveredTo(inv.id).size === 2);
      expect((await done(inv.id)).counts.sent).to.equal(2);
    });

    it('auto_register_only: Managed Apple IDs are registered silently; users without one are skipped', async () => {
      const loc = await f.addLocation();
      await f.ts.api('PATCH', `/locations/${loc.id}`, { autoRegisterManagedUsers: true });
      const managed = [
        await user({ managedAppleId: `m${n}@corp.example` }),
        await user({ managedAppleId: `m${n}x@corp.example` }),
      ];
      const plain = await user();
      const ch = channel('self_service_only');
      const inv = await createInvitation(f.ts, {
        name: 'Auto',
        locationId: loc.id,
        distributionMethod: 'auto_register_only',
        scope: { userIds: [...managed, plain] },
      });
      const finished = await done(inv.id);
      expect(finished.counts).to.include({ auto_registered: 2, skipped: 1, pending: 0 });
      const rows = byUser(await usageOf(f.ts, inv.id));
      expect(rows.get(plain)).to.deep.include({ status: 'skipped', reason: 'no_managed_apple_id' });
      expect(rows.get(managed[0] ?? '')?.lastAction).to.match(/Managed Apple ID/);
      expect(ch.delivered).to.have.length(0);
      expect(f.service.users(loc.sToken).map((u) => u.status)).to.deep.equal(['Associated', 'Associated']);
    });

    it('autoRegisterManagedUsers: managed users are auto-registered, the others invited by the method', async () => {
      const loc = await f.addLocation();
      await f.ts.api('PATCH', `/locations/${loc.id}`, { autoRegisterManagedUsers: true });
      const managed = await user({ managedAppleId: `mm${n}@corp.example` });
      const plain = await user();
      const ch = channel('self_service_only');
      const inv = await createInvitation(f.ts, {
        name: 'Both',
        locationId: loc.id,
        distributionMethod: 'self_service_only',
        autoRegisterManagedUsers: true,
        scope: { userIds: [managed, plain] },
      });
      const finished = await done(inv.id);
      expect(finished.counts).to.include({ auto_registered: 1, sent: 1 });
      expect(ch.deliveredTo(inv.id)).to.deep.equal(new Set([plain]));
      // auto_registered is final: Apple reporting the user associated again changes nothing.
      await f.ts.api('POST', `/locations/${loc.id}/sync`);
      await f.ts.server.invitations.fanout.reconcile({
        id: 'x',
        kind: 'invitations.reconcile',
        key: null,
        payload: {},
        attempts: 0,
        stopping: false,
      });
      expect(byUser(await usageOf(f.ts, inv.id)).get(managed)?.status).to.equal('auto_registered');
    });

    it('a scope change invites new users at once and withdraws what is pending for users who left', async () => {
      const loc = await f.addLocation();
      const [a, b, c, d] = [await user(), await user(), await user(), await user()];
      const ch = channel('self_service_only');
      ch.outcome = () => ({ status: 'pending', lastAction: 'Listed in Self Service' });
      const inv = await createInvitation(f.ts, {
        name: 'Scope',
        locationId: loc.id,
        distributionMethod: 'self_service_only',
        scope: { userIds: [a, b, c] },
      });
      await done(inv.id);
      expect(ch.deliveredTo(inv.id)).to.deep.equal(new Set([a, b, c]));
      const res = await f.ts.api('PATCH', `/vpp-invitations/${inv.id}`, { scope: { userIds: [b, c, d] } });
      expect(res.status).to.equal(200);
      const patched = res.json<InvitationJson>();
      expect(patched.fanout.total).to.equal(3);
      await waitFor('d invited', () => ch.deliveredTo(inv.id).has(d ?? ''));
      expect(ch.withdrawn.filter((w) => w.invitationId === inv.id)).to.deep.equal([
        {
          invitationId: inv.id,
          ref: { usageId: ch.withdrawn[0]?.ref.usageId, userId: a },
          reason: 'left_scope',
        },
      ]);
      const usage = await usageOf(f.ts, inv.id);
      expect(usage.map((u) => u.userId).sort()).to.deep.equal([b, c, d].sort());
      expect(byUser(usage).get(b ?? '')?.lastAction).to.equal('Listed in Self Service');
      expect(ch.delivered.filter((x) => x.invitationId === inv.id)).to.have.length(4);
    });

    it('deleting an invitation withdraws everything pending', async () => {
      const loc = await f.addLocation();
      const users = [await user(), await user()];
      const ch = channel('self_service_only');
      const inv = await createInvitation(f.ts, {
        name: 'Delete',
        locationId: loc.id,
        distributionMethod: 'self_service_only',
        scope: { userIds: users },
      });
      await done(inv.id);
      const res = await f.ts.api('DELETE', `/vpp-invitations/${inv.id}`);
      expect(res.status).to.equal(204);
      await waitFor('withdrawn', () => ch.withdrawn.filter((w) => w.invitationId === inv.id).length === 2);
      expect(
        ch.withdrawn.every((w) => w.invitationId !== inv.id || w.reason === 'invitation_deleted'),
      ).to.equal(true);
      expect((await f.ts.api('GET', `/vpp-invitations/${inv.id}/usage`)).status).to.equal(404);
    });

    it("a location's site change removes users outside the site from its invitations and withdraws their prompts", async () => {
      const north = (await f.ts.api('POST', '/sites', { name: 'North' })).json<{ id: string }>().id;
      const south = (await f.ts.api('POST', '/sites', { name: 'South' })).json<{ id: string }>().id;
      const [n1, n2] = [await user({ siteIds: [north] }), await user({ siteIds: [north] })];
      const [s1, s2] = [await user({ siteIds: [south] }), await user({ siteIds: [south] })];
      const group = (await f.ts.api('POST', '/user-groups', { name: 'mixed', userIds: [n2, s2] })).json<{
        id: string;
      }>().id;
      const loc = await f.addLocation();
      const ch = channel('self_service_only');
      const inv = await createInvitation(f.ts, {
        name: 'Sites',
        locationId: loc.id,
        distributionMethod: 'self_service_only',
        scope: { userIds: [n1, s1], groupIds: [group] },
      });
      expect(inv.siteId).to.equal(null);
      await done(inv.id);
      expect(ch.deliveredTo(inv.id)).to.deep.equal(new Set([n1, n2, s1, s2]));

      expect((await f.ts.api('PATCH', `/locations/${loc.id}`, { siteId: north })).status).to.equal(200);
      const moved = await waitFor('pruned to North', async () => {
        const got = await getInvitation(f.ts, inv.id);
        return got.siteId === north && got.fanout.state === 'done' && got.fanout.total === 2 ? got : false;
      });
      expect(moved.scope.userIds).to.deep.equal([n1]);
      expect(moved.scope.groupIds).to.deep.equal([group]);
      expect((await usageOf(f.ts, inv.id)).map((u) => u.userId).sort()).to.deep.equal([n1, n2].sort());
      const withdrawn = ch.withdrawn.filter((w) => w.invitationId === inv.id);
      expect(withdrawn.map((w) => w.ref.userId).sort()).to.deep.equal([s1, s2].sort());
      expect(withdrawn.every((w) => w.reason === 'left_scope')).to.equal(true);

      // Saved on a site: explicit users of other sites are removed from the scope at once.
      const onSite = await createInvitation(f.ts, {
        name: 'On site',
        locationId: loc.id,
        distributionMethod: 'self_service_only',
        scope: { userIds: [n1, s1], groupIds: [group] },
      });
      expect(onSite.siteId).to.equal(north);
      expect(onSite.scope.userIds).to.deep.equal([n1]);
      expect(onSite.fanout.total).to.equal(2);
    });

    it('resends to a cohort or chosen users, reusing the registration and invite code', async () => {
      const loc = await f.addLocation();
      const [ok, bad, noMail, reg] = [await user(), await user(), await user(), await user()];
      const ch = channel('self_service_only');
      ch.outcome = (item) =>
        item.userId === bad
          ? { status: 'failed', reason: '550 mailbox unavailable' }
          : item.userId === noMail
            ? { status: 'skipped', reason: 'no_email' }
            : { status: 'sent' };
      const inv = await createInvitation(f.ts, {
        name: 'Resend',
        locationId: loc.id,
        distributionMethod: 'self_service_only',
        scope: { userIds: [ok, bad, noMail, reg] },
      });
      await done(inv.id);
      const code = ch.delivered.find((d) => d.item.userId === reg)?.item.inviteCode ?? '';
      f.service.acceptInvitation(code, 'reg@icloud.example');
      await waitFor('registered', async () => (await getInvitation(f.ts, inv.id)).counts.registered === 1);
      expect((await getInvitation(f.ts, inv.id)).counts).to.include({ sent: 1, failed: 1, skipped: 1 });
      const before = creates();
      const resend = async (body: unknown) => {
        const res = await f.ts.api('POST', `/vpp-invitations/${inv.id}/resend`, body);
        expect(res.status, res.text).to.equal(200);
        return res.json<{ resent: number }>().resent;
      };
      let seen = 0;
      /** The users the channel was asked to resend to since the last look (waits for `count` of them). */
      const resentTo = async (count: number) => {
        await waitFor(`${count} resent`, () => ch.resent.length === seen + count);
        await done(inv.id);
        const fresh = ch.resent
          .slice(seen)
          .map((r) => r.item.userId)
          .sort();
        seen = ch.resent.length;
        return fresh;
      };

      expect(await resend({ cohort: 'failed' })).to.equal(1);
      expect(await resentTo(1)).to.deep.equal([bad]);
      expect(byUser(await usageOf(f.ts, inv.id)).get(bad ?? '')).to.deep.include({ status: 'failed' });

      ch.outcome = () => ({ status: 'sent' });
      expect(await resend({ cohort: 'never_sent' })).to.equal(2);
      expect(await resentTo(2)).to.deep.equal([bad, noMail].sort());

      expect(await resend({})).to.equal(3);
      expect(await resentTo(3)).to.deep.equal([ok, bad, noMail].sort());
      expect(await resend({ userIds: [reg] })).to.equal(0);
      expect(await resend({ userIds: [ok], cohort: 'not_registered' })).to.equal(1);
      expect(await resentTo(1)).to.deep.equal([ok]);

      // Same registration and invite code; never a second users/create.
      const first = ch.delivered.find((d) => d.item.userId === ok)?.item;
      const again = ch.resent.filter((r) => r.item.userId === ok).map((r) => r.item);
      for (const r of again)
        expect({ c: r.clientUserId, i: r.inviteCode }).to.deep.equal({
          c: first?.clientUserId,
          i: first?.inviteCode,
        });
      expect(creates()).to.equal(before);
      const final = await getInvitation(f.ts, inv.id);
      expect(final.counts).to.include({ sent: 3, registered: 1, failed: 0, skipped: 0 });
    });

    it("Apple refusing a registration fails the user with Apple's reason; a resend registers again", async () => {
      const loc = await f.addLocation();
      const users = [await user(), await user()];
      const ch = channel('self_service_only');
      f.service.addFault({
        path: '/users/create',
        sToken: loc.sToken,
        times: 1,
        action: { kind: 'error', errorNumber: 9717, errorMessage: 'Invalid email address' },
      });
      const inv = await createInvitation(f.ts, {
        name: 'Refused',
        locationId: loc.id,
        distributionMethod: 'self_service_only',
        scope: { userIds: users },
      });
      const failed = await done(inv.id);
      expect(failed.counts.failed).to.equal(2);
      for (const u of await usageOf(f.ts, inv.id)) {
        expect(u.status).to.equal('failed');
        expect(u.reason).to.match(/9717/);
      }
      const res = await f.ts.api('POST', `/vpp-invitations/${inv.id}/resend`, { cohort: 'failed' });
      expect(res.json()).to.deep.equal({ resent: 2 });
      await waitFor('delivered after the resend', () => ch.deliveredTo(inv.id).size === 2);
      expect((await done(inv.id)).counts.sent).to.equal(2);
    });

    it('exports the whole usage as CSV (RFC 4180), across pages', async () => {
      const loc = await f.addLocation();
      const ids = await bulkUsers(f.ts.server.db, 1100, 'csv');
      const tricky = await user({ email: 'tricky@example.com' });
      const ch = channel('self_service_only');
      ch.outcome = (item) =>
        item.userId === tricky
          ? { status: 'skipped', reason: 'no "eligible", device', lastAction: 'Line one\nline two' }
          : { status: 'sent' };
      const inv = await createInvitation(f.ts, {
        name: 'CSV',
        locationId: loc.id,
        distributionMethod: 'self_service_only',
        scope: { userIds: [...ids, tricky] },
      });
      await done(inv.id);
      const res = await f.ts.api('GET', `/vpp-invitations/${inv.id}/usage?format=csv`);
      expect(res.status).to.equal(200);
      expect(res.headers['content-type']).to.equal('text/csv; charset=utf-8');
      expect(
        res.text.startsWith('id,username,email,status,lastAction,lastActionAt,sentAt,reason\r\n'),
      ).to.equal(true);
      const records = parseCsv(res.text);
      expect(records).to.have.length(1 + 1101);
      const usage = byUser(await usageOf(f.ts, inv.id));
      const t = usage.get(tricky);
      const row = records.find((r) => r[0] === t?.id);
      expect(row).to.deep.equal([
        t?.id,
        t?.username,
        'tricky@example.com',
        'skipped',
        'Line one\nline two',
        t?.lastActionAt,
        '',
        'no "eligible", device',
      ]);
      expect(res.text).to.contain('"no ""eligible"", device"');
      const sent = records.filter((r) => r[3] === 'sent');
      expect(sent).to.have.length(1100);
      expect(sent.every((r) => r.length === 8 && r[6] !== '' && r[2] === '')).to.equal(true);
      const filtered = await f.ts.api('GET', `/vpp-invitations/${inv.id}/usage?format=csv&status=skipped`);
      expect(parseCsv(filtered.text)).to.have.length(2);
    });

    it('serves the registration page its view of a code and records the opening', async () => {
      const loc = await f.addLocation({ orgName: 'Acme Corp' });
      const u = await user();
      channel('self_service_only');
      const inv = await createInvitation(f.ts, {
        name: 'Page',
        locationId: loc.id,
        distributionMethod: 'self_service_only',
        requireLogin: true,
        scope: { userIds: [u] },
      });
      await done(inv.id);
      const [row] = await f.ts.server.invitations.store
        .listUsage(inv.id, {
          limit: 10,
          cursor: null,
          status: null,
          q: null,
          withDevices: false,
        })
        .then((p) => p.items);
      const targets = f.ts.server.invitations.registrationTargets;
      const target = await targets.resolve(row?.registrationCode ?? '');
      expect(target).to.deep.include({
        userId: u,
        invitationName: 'Page',
        orgName: 'Acme Corp',
        requireLogin: true,
        alreadyRegistered: false,
      });
      expect(target?.appleInvitationUrl).to.match(/inviteCode=/);
      await targets.recordOpened(row?.registrationCode ?? '');
      expect(byUser(await usageOf(f.ts, inv.id)).get(u)).to.deep.include({
        status: 'acknowledged',
        lastAction: 'Opened the registration link',
      });
      expect(await targets.resolve('AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA')).to.equal(null);
    });
  });
}

/** A strict RFC 4180 parser (CRLF records, quoted fields with doubled quotes). */
function parseCsv(text: string): string[][] {
  const records: string[][] = [];
  let field = '';
  let record: string[] = [];
  let i = 0;
  let quoted = false;
  while (i < text.length) {
    const ch = text[i];
    if (quoted) {
      if (ch === '"' && text[i + 1] === '"') {
        field += '"';
        i += 2;
      } else if (ch === '"') {
        quoted = false;
        i += 1;
      } else {
        field += ch;
        i += 1;
      }
    } else if (ch === '"') {
      quoted = true;
      i += 1;
    } else if (ch === ',') {
      record.push(field);
      field = '';
      i += 1;
    } else if (ch === '\r' && text[i + 1] === '\n') {
      record.push(field);
      records.push(record);
      record = [];
      field = '';
      i += 2;
    } else {
      field += ch;
      i += 1;
    }
  }
  if (field !== '' || record.length > 0) throw new Error('CSV does not end with CRLF');
  return records;
}
