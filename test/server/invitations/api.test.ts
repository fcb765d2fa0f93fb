import { expect } from 'chai';
import { QueryTypes } from 'sequelize';
import { errorCode, vppFixture, waitFor, type ErrorBody, type VppFixture } from '../vpp/helpers.ts';
import {
  createInvitation,
  getInvitation,
  RecordingChannel,
  type InvitationJson,
  type UsageJson,
} from './helpers.ts';

const EMAIL = {
  senderName: 'IT',
  senderAddress: 'it@example.com',
  subject: 'Register',
  message: 'Open %@ to register.',
};
const STATUSES = ['pending', 'sent', 'acknowledged', 'registered', 'auto_registered', 'skipped', 'failed'];

describe('Invitations admin API (/api/v1/vpp-invitations)', function () {
  this.timeout(120_000);
  /** no SMTP; the development push certificate is in use */
  let f: VppFixture;
  /** SMTP configured; APNs is Apple's, so no push certificate at all */
  let g: VppFixture;
  let location: string;
  let autoLocation: string;
  let gLocation: string;
  let alice: string;
  let bob: string;
  let group: string;
  let n = 0;
  const user = (fx: VppFixture, extra: Record<string, unknown> = {}) => fx.addUser(`api.user.${++n}`, extra);
  const details = (res: { json: <T>() => T }) => res.json<ErrorBody>().error.details ?? {};
  const base = () => ({ name: 'Staff apps', locationId: location, distributionMethod: 'self_service_only' });

  before(async () => {
    f = await vppFixture({ service: { eventDelayMs: 10 } });
    g = await vppFixture({
      service: { eventDelayMs: 10 },
      env: { MDM_SMTP_URL: 'smtp://127.0.0.1:2525', MDM_APNS_URL: 'https://api.push.apple.com' },
    });
    location = (await f.addLocation()).id;
    autoLocation = (await f.addLocation()).id;
    const patched = await f.ts.api('PATCH', `/locations/${autoLocation}`, { autoRegisterManagedUsers: true });
    expect(patched.status).to.equal(200);
    gLocation = (await g.addLocation()).id;
    alice = await user(f, { email: 'alice@example.com' });
    bob = await user(f, { email: 'bob@example.com' });
    const res = await f.ts.api('POST', '/user-groups', { name: 'api group', userIds: [bob] });
    group = res.json<{ id: string }>().id;
  });
  after(async () => {
    await f?.cleanup();
    await g?.cleanup();
  });

  describe('authentication', () => {
    const routes: [string, string][] = [
      ['POST', '/vpp-invitations'],
      ['GET', '/vpp-invitations'],
      ['GET', '/vpp-invitations/1'],
      ['PATCH', '/vpp-invitations/1'],
      ['DELETE', '/vpp-invitations/1'],
      ['GET', '/vpp-invitations/1/usage'],
      ['GET', '/vpp-invitations/1/usage?format=csv'],
      ['POST', '/vpp-invitations/1/resend'],
    ];
    for (const [method, route] of routes) {
      it(`${method} ${route} without a token or with a wrong one → 401`, async () => {
        for (const token of [null, 'not-the-admin-token-at-all']) {
          const res = await f.ts.api(
            method,
            route,
            method === 'POST' || method === 'PATCH' ? {} : undefined,
            token,
          );
          expect(res.status).to.equal(401);
          expect(errorCode(res)).to.equal('unauthorized');
        }
      });
    }
  });

  describe('POST /vpp-invitations', () => {
    it('saves the invitation (201) with id, the location site, every count key and sending started', async () => {
      const res = await f.ts.api('POST', '/vpp-invitations', {
        ...base(),
        scope: { userIds: [bob, alice, alice], exclusions: { groupIds: [group] } },
      });
      expect(res.status).to.equal(201);
      const inv = res.json<InvitationJson>();
      expect(inv.id).to.be.a('string');
      expect(inv).to.deep.include({
        name: 'Staff apps',
        locationId: location,
        siteId: null,
        distributionMethod: 'self_service_only',
        autoRegisterManagedUsers: false,
        requireLogin: false,
        email: null,
      });
      expect(inv.scope).to.deep.equal({
        allUsers: false,
        userIds: [alice, bob].sort((a, b) => Number(a) - Number(b)),
        groupIds: [],
        exclusions: { userIds: [], groupIds: [group] },
      });
      expect(Object.keys(inv.counts)).to.have.members(STATUSES);
      // bob is excluded by his group: only alice is in scope, counted at once.
      expect(inv.counts.pending).to.equal(1);
      expect(inv.fanout.total).to.equal(1);
      expect(inv.createdAt).to.match(/^\d{4}-\d\d-\d\dT/);
    });

    it('accepts every method when its requirements are met', async () => {
      const prompt = await f.ts.api('POST', '/vpp-invitations', {
        ...base(),
        distributionMethod: 'prompt_and_self_service',
      });
      expect(prompt.status).to.equal(201);
      const auto = await f.ts.api('POST', '/vpp-invitations', {
        ...base(),
        locationId: autoLocation,
        distributionMethod: 'auto_register_only',
      });
      expect(auto.status).to.equal(201);
      const both = await f.ts.api('POST', '/vpp-invitations', {
        ...base(),
        locationId: autoLocation,
        autoRegisterManagedUsers: true,
      });
      expect(both.status).to.equal(201);
      const email = await g.ts.api('POST', '/vpp-invitations', {
        name: 'Mail',
        locationId: gLocation,
        distributionMethod: 'email',
        requireLogin: true,
        email: EMAIL,
      });
      expect(email.status).to.equal(201);
      expect(email.json<InvitationJson>()).to.deep.include({ requireLogin: true, email: EMAIL });
    });

    const invalid: [string, Record<string, unknown>, string][] = [
      ['name missing', { name: undefined }, 'name'],
      ['name empty', { name: '  ' }, 'name'],
      ['name too long', { name: 'x'.repeat(256) }, 'name'],
      ['locationId missing', { locationId: undefined }, 'locationId'],
      ['locationId not a string', { locationId: 7 }, 'locationId'],
      ['distributionMethod unknown', { distributionMethod: 'carrier_pigeon' }, 'distributionMethod'],
      [
        'autoRegisterManagedUsers not a boolean',
        { autoRegisterManagedUsers: 'yes' },
        'autoRegisterManagedUsers',
      ],
      ['requireLogin not a boolean', { requireLogin: 1 }, 'requireLogin'],
      ['email missing for the email method', { distributionMethod: 'email' }, 'email'],
      ['email null for the email method', { distributionMethod: 'email', email: null }, 'email'],
      ['email message without %@', { email: { ...EMAIL, message: 'no link' } }, 'email.message'],
      ['email sender address invalid', { email: { ...EMAIL, senderAddress: 'nope' } }, 'email.senderAddress'],
      ['email subject on two lines', { email: { ...EMAIL, subject: 'a\nb' } }, 'email.subject'],
      ['email subject missing', { email: { ...EMAIL, subject: undefined } }, 'email.subject'],
      ['scope not an object', { scope: [] }, 'scope'],
      ['scope.allUsers not a boolean', { scope: { allUsers: 'true' } }, 'scope.allUsers'],
      ['scope.userIds not a list', { scope: { userIds: '1' } }, 'scope.userIds'],
      ['scope.groupIds with an empty id', { scope: { groupIds: [''] } }, 'scope.groupIds.0'],
      [
        'scope.exclusions.userIds not a list',
        { scope: { exclusions: { userIds: 5 } } },
        'scope.exclusions.userIds',
      ],
      ['an unknown field', { color: 'red' }, 'body'],
    ];
    for (const [what, change, field] of invalid) {
      it(`400 when ${what} (details name ${field})`, async () => {
        const res = await f.ts.api('POST', '/vpp-invitations', { ...base(), ...change });
        expect(res.status, res.text).to.equal(400);
        expect(errorCode(res)).to.equal('invalid_request');
        expect(details(res)).to.have.property(field);
      });
    }

    it('400 unknown_ids naming unknown users and groups per scope field', async () => {
      const res = await f.ts.api('POST', '/vpp-invitations', {
        ...base(),
        scope: {
          userIds: [alice, '999999'],
          groupIds: ['888888'],
          exclusions: { userIds: ['777777'], groupIds: [group, 'x'] },
        },
      });
      expect(res.status).to.equal(400);
      expect(errorCode(res)).to.equal('unknown_ids');
      expect(details(res)).to.deep.equal({
        'scope.userIds': ['999999'],
        'scope.groupIds': ['888888'],
        'scope.exclusions.userIds': ['777777'],
        'scope.exclusions.groupIds': ['x'],
      });
    });

    it('409 location_not_found for an unknown location', async () => {
      for (const locationId of ['999999', 'abc']) {
        const res = await f.ts.api('POST', '/vpp-invitations', { ...base(), locationId });
        expect(res.status).to.equal(409);
        expect(errorCode(res)).to.equal('location_not_found');
      }
    });

    it('409 smtp_not_configured for email without SMTP', async () => {
      const res = await f.ts.api('POST', '/vpp-invitations', {
        ...base(),
        distributionMethod: 'email',
        email: EMAIL,
      });
      expect(res.status).to.equal(409);
      expect(errorCode(res)).to.equal('smtp_not_configured');
    });

    it('409 push_certificate_missing for prompt_and_self_service without a push certificate', async () => {
      const res = await g.ts.api('POST', '/vpp-invitations', {
        name: 'Prompt',
        locationId: gLocation,
        distributionMethod: 'prompt_and_self_service',
      });
      expect(res.status).to.equal(409);
      expect(errorCode(res)).to.equal('push_certificate_missing');
      // Self Service alone needs no push.
      const ss = await g.ts.api('POST', '/vpp-invitations', {
        name: 'SS',
        locationId: gLocation,
        distributionMethod: 'self_service_only',
      });
      expect(ss.status).to.equal(201);
    });

    it('409 auto_register_not_enabled_on_location for auto-registration on a location without it', async () => {
      for (const change of [
        { autoRegisterManagedUsers: true },
        { distributionMethod: 'auto_register_only' },
      ]) {
        const res = await f.ts.api('POST', '/vpp-invitations', { ...base(), ...change });
        expect(res.status).to.equal(409);
        expect(errorCode(res)).to.equal('auto_register_not_enabled_on_location');
      }
    });

    it('409 location_token_revoked / _expired while the location token does not work', async () => {
      const loc = await f.addLocation();
      for (const status of ['token_revoked', 'token_expired']) {
        await f.ts.server.db.sequelize.query('UPDATE vpp_locations SET status = :status WHERE id = :id', {
          type: QueryTypes.UPDATE,
          replacements: { status, id: Number(loc.id) },
        });
        const res = await f.ts.api('POST', '/vpp-invitations', { ...base(), locationId: loc.id });
        expect(res.status).to.equal(409);
        expect(errorCode(res)).to.equal(`location_${status}`);
      }
    });
  });

  describe('GET, PATCH, DELETE /vpp-invitations/{id}', () => {
    let inv: InvitationJson;
    before(async () => {
      inv = await createInvitation(f.ts, { ...base(), name: 'Crud', scope: { userIds: [alice] } });
    });

    it('lists invitations (paged, filtered by name and location) with counts', async () => {
      const all = await f.ts.api('GET', '/vpp-invitations?limit=1000');
      expect(all.status).to.equal(200);
      const items = all.json<{ items: InvitationJson[] }>().items;
      const found = items.find((i) => i.id === inv.id);
      expect(found?.counts).to.include.keys(STATUSES);
      const page = await f.ts.api('GET', '/vpp-invitations?limit=1');
      const first = page.json<{ items: InvitationJson[]; nextCursor?: string }>();
      expect(first.items).to.have.length(1);
      expect(first.nextCursor).to.be.a('string');
      const next = await f.ts.api('GET', `/vpp-invitations?limit=1&cursor=${first.nextCursor ?? ''}`);
      expect(next.json<{ items: InvitationJson[] }>().items[0]?.id).to.not.equal(first.items[0]?.id);
      const byName = await f.ts.api('GET', '/vpp-invitations?q=crud');
      expect(byName.json<{ items: InvitationJson[] }>().items.map((i) => i.id)).to.deep.equal([inv.id]);
      const byLocation = await f.ts.api('GET', `/vpp-invitations?locationId=${autoLocation}`);
      expect(
        byLocation.json<{ items: InvitationJson[] }>().items.every((i) => i.locationId === autoLocation),
      ).to.equal(true);
      expect((await f.ts.api('GET', '/vpp-invitations?limit=0')).status).to.equal(400);
      expect((await f.ts.api('GET', '/vpp-invitations?cursor=zzz')).status).to.equal(400);
    });

    it('reads one', async () => {
      const res = await f.ts.api('GET', `/vpp-invitations/${inv.id}`);
      expect(res.status).to.equal(200);
      expect(res.json<InvitationJson>()).to.deep.include({ id: inv.id, name: 'Crud' });
    });

    it('changes name, requireLogin and scope; {} changes nothing', async () => {
      const res = await f.ts.api('PATCH', `/vpp-invitations/${inv.id}`, {
        name: 'Crud 2',
        requireLogin: true,
        scope: { userIds: [alice, bob] },
        locationId: location,
        distributionMethod: 'self_service_only',
      });
      expect(res.status, res.text).to.equal(200);
      const got = res.json<InvitationJson>();
      expect(got).to.deep.include({ name: 'Crud 2', requireLogin: true });
      expect(got.scope.userIds).to.have.members([alice, bob]);
      expect(got.fanout.total).to.equal(2);
      const same = await f.ts.api('PATCH', `/vpp-invitations/${inv.id}`, {});
      expect(same.status).to.equal(200);
      expect(same.json<InvitationJson>().name).to.equal('Crud 2');
    });

    it('400 for invalid fields, immutable changes and unknown ids', async () => {
      const cases: [Record<string, unknown>, string, string][] = [
        [{ name: '' }, 'invalid_request', 'name'],
        [{ requireLogin: 'no' }, 'invalid_request', 'requireLogin'],
        [{ email: { ...EMAIL, message: 'x' } }, 'invalid_request', 'email.message'],
        [{ scope: { userIds: 3 } }, 'invalid_request', 'scope.userIds'],
        [{ id: '5' }, 'invalid_request', 'body'],
        [{ locationId: autoLocation }, 'immutable_field', 'locationId'],
        [{ distributionMethod: 'email' }, 'immutable_field', 'distributionMethod'],
        [{ autoRegisterManagedUsers: true }, 'immutable_field', 'autoRegisterManagedUsers'],
        [{ scope: { groupIds: ['424242'] } }, 'unknown_ids', 'scope.groupIds'],
      ];
      for (const [body, code, field] of cases) {
        const res = await f.ts.api('PATCH', `/vpp-invitations/${inv.id}`, body);
        expect(res.status, JSON.stringify(body)).to.equal(400);
        expect(errorCode(res)).to.equal(code);
        expect(details(res)).to.have.property(field);
      }
      const mail = await createInvitation(g.ts, {
        name: 'M',
        locationId: gLocation,
        distributionMethod: 'email',
        email: EMAIL,
      });
      const res = await g.ts.api('PATCH', `/vpp-invitations/${mail.id}`, { email: null });
      expect(res.status).to.equal(400);
      expect(details(res)).to.have.property('email');
    });

    it('404 for unknown ids on every route', async () => {
      for (const id of ['999999', 'nope']) {
        const calls: [string, string, unknown?][] = [
          ['GET', `/vpp-invitations/${id}`],
          ['PATCH', `/vpp-invitations/${id}`, { name: 'x' }],
          ['DELETE', `/vpp-invitations/${id}`],
          ['GET', `/vpp-invitations/${id}/usage`],
          ['GET', `/vpp-invitations/${id}/usage?format=csv`],
          ['POST', `/vpp-invitations/${id}/resend`, {}],
        ];
        for (const [method, route, body] of calls) {
          const res = await f.ts.api(method, route, body);
          expect(res.status, `${method} ${route}`).to.equal(404);
          expect(errorCode(res)).to.equal('not_found');
        }
      }
    });

    it('deletes (204), after which it is gone', async () => {
      const doomed = await createInvitation(f.ts, { ...base(), name: 'Doomed', scope: { userIds: [alice] } });
      const res = await f.ts.api('DELETE', `/vpp-invitations/${doomed.id}`);
      expect(res.status).to.equal(204);
      expect(res.text).to.equal('');
      expect((await f.ts.api('GET', `/vpp-invitations/${doomed.id}`)).status).to.equal(404);
      expect((await f.ts.api('DELETE', `/vpp-invitations/${doomed.id}`)).status).to.equal(404);
      await waitFor('the deleted invitation removed', async () => {
        const rows = await f.ts.server.db.sequelize.query('SELECT id FROM vpp_invitations WHERE id = :id', {
          type: QueryTypes.SELECT,
          replacements: { id: Number(doomed.id) },
        });
        return rows.length === 0;
      });
    });
  });

  describe('usage and resend', () => {
    let inv: InvitationJson;
    let channel: RecordingChannel;
    before(async () => {
      channel = new RecordingChannel('self_service_only');
      f.ts.server.invitations.channels.register(channel);
      inv = await createInvitation(f.ts, { ...base(), name: 'Usage', scope: { userIds: [alice, bob] } });
      await waitFor('both sent', async () => (await getInvitation(f.ts, inv.id)).counts.sent === 2);
    });
    after(() => f.ts.server.invitations.channels.unregister('self_service_only'));

    it('GET usage answers the usage items of api.md (paged, filtered by status)', async () => {
      const res = await f.ts.api('GET', `/vpp-invitations/${inv.id}/usage`);
      expect(res.status).to.equal(200);
      const body = res.json<{ items: UsageJson[]; nextCursor?: string }>();
      expect(body.items).to.have.length(2);
      expect(body).to.not.have.property('nextCursor');
      const a = body.items.find((i) => i.userId === alice);
      expect(a).to.include.keys(
        'id',
        'userId',
        'username',
        'email',
        'status',
        'lastAction',
        'lastActionAt',
        'sentAt',
        'reason',
        'devices',
        'invitationUrl',
      );
      expect(a).to.deep.include({ email: 'alice@example.com', status: 'sent', reason: null, devices: [] });
      expect(a?.id).to.be.a('string');
      expect(a?.sentAt).to.match(/^\d{4}-\d\d-\d\dT.*Z$/);
      expect(a?.invitationUrl).to.match(/inviteCode=/);
      const paged = await f.ts.api('GET', `/vpp-invitations/${inv.id}/usage?limit=1`);
      const first = paged.json<{ items: UsageJson[]; nextCursor?: string }>();
      expect(first.items).to.have.length(1);
      const second = await f.ts.api(
        'GET',
        `/vpp-invitations/${inv.id}/usage?limit=1&cursor=${first.nextCursor ?? ''}`,
      );
      expect(second.json<{ items: UsageJson[] }>().items[0]?.id).to.not.equal(first.items[0]?.id);
      const failed = await f.ts.api('GET', `/vpp-invitations/${inv.id}/usage?status=failed`);
      expect(failed.json<{ items: UsageJson[] }>().items).to.deep.equal([]);
      const bad = await f.ts.api('GET', `/vpp-invitations/${inv.id}/usage?status=lost`);
      expect(bad.status).to.equal(400);
      expect(details(bad)).to.have.property('status');
      expect((await f.ts.api('GET', `/vpp-invitations/${inv.id}/usage?format=xml`)).status).to.equal(400);
    });

    it('GET usage?format=csv answers text/csv with exactly the columns of api.md', async () => {
      const res = await f.ts.api('GET', `/vpp-invitations/${inv.id}/usage?format=csv`);
      expect(res.status).to.equal(200);
      expect(String(res.headers['content-type'])).to.match(/^text\/csv/);
      const lines = res.text.split('\r\n');
      expect(lines[0]).to.equal('id,username,email,status,lastAction,lastActionAt,sentAt,reason');
      expect(lines).to.have.length(4);
      expect(lines[3]).to.equal('');
    });

    it('POST resend answers {"resent": n}; 400 for bad input and users not in scope', async () => {
      const all = await f.ts.api('POST', `/vpp-invitations/${inv.id}/resend`);
      expect(all.status).to.equal(200);
      expect(all.json()).to.deep.equal({ resent: 2 });
      const failed = await f.ts.api('POST', `/vpp-invitations/${inv.id}/resend`, { cohort: 'failed' });
      expect(failed.json()).to.deep.equal({ resent: 0 });
      const one = await f.ts.api('POST', `/vpp-invitations/${inv.id}/resend`, { userIds: [alice] });
      expect(one.json()).to.deep.equal({ resent: 1 });
      const cases: [unknown, string, string][] = [
        [{ cohort: 'everyone' }, 'invalid_request', 'cohort'],
        [{ userIds: [] }, 'invalid_request', 'userIds'],
        [{ userIds: 'x' }, 'invalid_request', 'userIds'],
        [{ extra: 1 }, 'invalid_request', 'body'],
        [{ userIds: [alice, '999999'] }, 'not_in_scope', 'userIds'],
      ];
      for (const [body, code, field] of cases) {
        const res = await f.ts.api('POST', `/vpp-invitations/${inv.id}/resend`, body);
        expect(res.status, JSON.stringify(body)).to.equal(400);
        expect(errorCode(res)).to.equal(code);
        expect(details(res)).to.have.property(field);
      }
      const outside = await f.ts.api('POST', `/vpp-invitations/${inv.id}/resend`, { userIds: ['999999'] });
      expect(details(outside)).to.deep.equal({ userIds: ['999999'] });
    });
  });
});
