import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { QueryTypes } from 'sequelize';
import { ensureDevPki } from '../../../certs/dev-pki.ts';
import { toInt } from '../../../server/storage/models.ts';
import { AppleVppService } from '../../../simulator/apple-vpp/service.ts';
import { startTestServer, type TestServer } from '../../helpers/test-server.ts';
import { waitFor } from '../vpp/helpers.ts';
import { bulkUsers, createInvitation, getInvitation, RecordingChannel } from './helpers.ts';

/**
 * 2,000 users against the simulated Apps and Books service, with the server stopped halfway through
 * the fan-out and a new one started on the same data dir (and port, so Apple's notifications reach
 * it): the job resumes, every user is registered exactly once and handed to a channel, none is missed.
 */
describe('Invitation fan-out of 2,000 users with a restart halfway', function () {
  this.timeout(180_000);
  const USERS = 2000;
  let dataDir: string;
  let service: AppleVppService;
  let ts: TestServer | null = null;

  before(async () => {
    dataDir = await mkdtemp(path.join(os.tmpdir(), 'mdm-fanout-'));
    const pki = await ensureDevPki(path.join(dataDir, 'certs'), { hostnames: ['127.0.0.1'] });
    service = new AppleVppService({
      port: 0,
      tlsCertPem: pki.simulatorCertPem,
      tlsKeyPem: pki.simulatorKeyPem,
      notificationCaPems: [pki.caCertPem],
      eventDelayMs: 20,
      notificationRetry: { maxAttempts: 3, initialDelayMs: 100, maxDelayMs: 500 },
    });
    await service.start();
  });
  after(async () => {
    await ts?.stop();
    await service?.stop();
    await rm(dataDir, { recursive: true, force: true });
  });

  it('finishes after the restart: each user registered once, all handed to a channel, counts right', async () => {
    ts = await startTestServer({ MDM_DATA_DIR: dataDir, MDM_VPP_URL: service.url });
    const first = ts;
    const port = first.server.port;
    const publicUrl = first.server.url;
    const firstChannel = new RecordingChannel('self_service_only');
    first.server.invitations.channels.register(firstChannel);

    const sToken = service.mintServiceToken({ orgName: 'Restart Org' });
    const loc = await first.api('POST', '/locations', { name: 'restart', serviceToken: sToken });
    expect(loc.status, loc.text).to.equal(201);
    const locationId = loc.json<{ id: string }>().id;
    const userIds = await bulkUsers(first.server.db, USERS, 'restart');
    // Slow Apple down a little so that the stop lands in the middle of the work.
    service.addFault({ path: '/users/create', action: { kind: 'latency', ms: 150 } });

    const started = Date.now();
    const inv = await createInvitation(first, {
      name: 'Everyone',
      locationId,
      distributionMethod: 'self_service_only',
      scope: { allUsers: true },
    });
    expect(inv.counts.pending).to.equal(USERS);

    await waitFor(
      'some users registered at Apple',
      () => (service.location(sToken)?.users.total ?? 0) >= 400,
      60_000,
    );
    await first.stop();
    ts = null;
    const atStop = {
      apple: service.users(sToken).length,
      delivered: firstChannel.deliveredTo(inv.id).size,
    };
    expect(atStop.apple, 'stopped before Apple had everyone').to.be.below(USERS);
    expect(atStop.delivered, 'stopped before everyone was handed over').to.be.below(USERS);

    const second = await startTestServer({
      MDM_DATA_DIR: dataDir,
      MDM_VPP_URL: service.url,
      MDM_PORT: String(port),
      MDM_PUBLIC_URL: publicUrl,
    });
    ts = second;
    // (The server's own Self Service channel may take a few users before this one replaces it: those
    // are `skipped`, no device. What matters is that every user reached a channel exactly as planned.)
    const secondChannel = new RecordingChannel('self_service_only');
    second.server.invitations.channels.register(secondChannel);
    service.clearFaults();

    const finished = await waitFor(
      'the fan-out finished on the new server',
      async () => {
        const got = await getInvitation(second, inv.id);
        return got.fanout.state === 'done' && got.fanout.processed === USERS ? got : false;
      },
      90_000,
    );
    const elapsed = Date.now() - started;

    // Apple: every user in scope exactly once (a second users/create of a clientUserId would show).
    const apple = service.users(sToken);
    const created = new Map<string, number>();
    for (const u of apple) created.set(u.clientUserId, (created.get(u.clientUserId) ?? 0) + 1);
    expect(apple).to.have.length(USERS);
    expect([...created.values()].every((c) => c === 1)).to.equal(true);
    expect(apple.every((u) => u.status === 'Registered')).to.equal(true);
    const regs = await second.server.db.sequelize.query<{
      user_id: unknown;
      client_user_id: string;
      state: string;
    }>('SELECT user_id, client_user_id, state FROM vpp_registrations WHERE location_id = :loc', {
      type: QueryTypes.SELECT,
      replacements: { loc: Number(locationId) },
    });
    expect(regs).to.have.length(USERS);
    expect(new Set(regs.map((r) => String(toInt(r.user_id))))).to.deep.equal(new Set(userIds));
    expect(regs.every((r) => created.get(r.client_user_id) === 1 && r.state === 'registered')).to.equal(true);

    // Every user handed to a channel (by one server or the other), none missed, none failed.
    const stages = await second.server.db.sequelize.query<{ stage: string; n: unknown }>(
      'SELECT stage, COUNT(*) AS n FROM invitation_usage WHERE invitation_id = :inv GROUP BY stage',
      { type: QueryTypes.SELECT, replacements: { inv: Number(inv.id) } },
    );
    expect(stages.map((r) => [r.stage, toInt(r.n)])).to.deep.equal([['handed', USERS]]);
    const handedBefore = firstChannel.deliveredTo(inv.id);
    const handedAfter = secondChannel.deliveredTo(inv.id);
    expect([...handedBefore].some((u) => handedAfter.has(u))).to.equal(false);
    expect(finished.counts).to.include({ pending: 0, failed: 0, registered: 0 });
    expect((finished.counts.sent ?? 0) + (finished.counts.skipped ?? 0)).to.equal(USERS);
    expect(finished.counts.sent).to.be.at.least(handedBefore.size + handedAfter.size);
    expect(finished.fanout).to.deep.include({ state: 'done', processed: USERS, total: USERS });
    const usage = await second.server.db.sequelize.query<{ n: unknown }>(
      'SELECT COUNT(*) AS n FROM invitation_usage WHERE invitation_id = :inv',
      { type: QueryTypes.SELECT, replacements: { inv: Number(inv.id) } },
    );
    expect(toInt(usage[0]?.n)).to.equal(USERS);
    console.log(
      `      fan-out of ${USERS} users with a restart: ${(elapsed / 1000).toFixed(1)} s ` +
        `(stopped with ${atStop.apple} at Apple, ${atStop.delivered} handed over)`,
    );
  });
});
