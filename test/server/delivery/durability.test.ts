/**
 * What happens when the in-process events are missed (another instance answered, a crash, a restart):
 * the reconcile job reads the command results table, Apple's registrations, the device assignments and
 * the queue itself, and brings prompts and usage to what they should be.
 */
import { expect } from 'chai';
import { QueryTypes } from 'sequelize';
import { encodePlist } from '../../../shared/plist/index.ts';
import { DevicePrompts } from '../../../server/delivery/device-prompts.ts';
import type { JobContext } from '../../../server/jobs/job-runner.ts';
import { createLogger } from '../../../server/log.ts';
import { SqlDeliveryStore } from '../../../server/storage/delivery-store.ts';
import { SqlCommandStore, SqlDeviceStore } from '../../../server/storage/stores.ts';
import { randomSpec, seededRng } from '../../../simulator/device/device-spec.ts';
import type { SimulatedDevice } from '../../../simulator/device/sim-device.ts';
import { deliveryFixture, waitFor, type DeliveryFixture, type UsageItemJson } from './helpers.ts';

const rng = seededRng(99);
const job: JobContext = {
  id: 'test',
  kind: 'delivery.reconcile',
  key: null,
  payload: {},
  attempts: 0,
  stopping: false,
};

describe('device prompts: the reconcile job repairs what missed events leave', function () {
  this.timeout(180_000);
  let f: DeliveryFixture;
  let locationId: string;
  /** A second DevicePrompts on the same database, its clock two minutes ahead (past the grace period). */
  let reconciler: DevicePrompts;
  let commands: SqlCommandStore;
  let devices: SqlDeviceStore;

  before(async () => {
    f = await deliveryFixture();
    locationId = await f.addLocation();
    const db = f.ts.server.db;
    const store = f.ts.server.invitations.store;
    commands = new SqlCommandStore(db);
    devices = new SqlDeviceStore(db);
    reconciler = new DevicePrompts({
      store: new SqlDeliveryStore(db),
      commands,
      pusher: f.ts.server.pusher,
      reporter: {
        report: (r) => store.report(r, new Date()),
        setDevices: (usageId, d, now) => store.setDevices(usageId, d, now),
      },
      jobs: f.ts.server.jobs,
      devices,
      log: createLogger('silent'),
      now: () => new Date(Date.now() + 120_000),
    });
  });

  after(async () => {
    await reconciler?.stop();
    await f?.cleanup();
  });

  async function setup(
    name: string,
  ): Promise<{ userId: string; device: SimulatedDevice; invitationId: string; commandUuid: string }> {
    const userId = await f.addUser(name);
    const device = await f.enroll(randomSpec('ios', rng)); // never online: its command stays queued
    await f.assign(device, userId);
    const invitationId = await f.createInvitation({
      name,
      locationId,
      distributionMethod: 'prompt_and_self_service',
      scope: { allUsers: false, userIds: [userId], groupIds: [], exclusions: { userIds: [], groupIds: [] } },
    });
    const u = await usage(invitationId, userId, 'queued', (x) => x.devices[0]?.commandStatus === 'queued');
    return {
      userId,
      device,
      invitationId,
      commandUuid: (u.devices[0] as { commandUuid?: string }).commandUuid ?? '',
    };
  }

  async function usage(
    invitationId: string,
    userId: string,
    what: string,
    ok: (u: UsageItemJson) => boolean,
  ): Promise<UsageItemJson> {
    return waitFor(what, async () => {
      const u = (await f.usage(invitationId)).find((x) => x.userId === userId);
      return u && ok(u) ? u : undefined;
    });
  }

  it('a result stored without its event (another instance) is applied from the results table', async () => {
    const { userId, device, invitationId, commandUuid } = await setup('missed.result');
    expect(commandUuid).to.match(/^[0-9A-F-]{36}$/);
    // the answer lands in the results table, but no event reaches this process
    const stored = await commands.complete(
      {
        enrollmentId: device.udid,
        commandUuid,
        status: 'acknowledged',
        resultXml: encodePlist({
          UDID: device.udid,
          Status: 'Acknowledged',
          CommandUUID: commandUuid,
          InvitationResult: 'Acknowledged',
        }),
      },
      new Date(),
    );
    expect(stored).to.equal(true);
    await reconciler.reconcile(job);
    const u = await usage(invitationId, userId, 'acknowledged', (x) => x.status === 'acknowledged');
    expect(u.devices.map((d) => d.commandStatus)).to.deep.equal(['acknowledged']);
    expect(u.lastAction).to.equal(
      `InviteToProgram acknowledged on ${device.spec.productName} ${device.udid}`,
    );
  });

  it('a registration whose event was missed: the pending prompt is withdrawn', async () => {
    const { userId, device, invitationId, commandUuid } = await setup('missed.association');
    await f.ts.server.db.sequelize.query(
      "UPDATE vpp_registrations SET state = 'associated', id_hash = 'h' WHERE user_id = :userId AND location_id = :locationId",
      { replacements: { userId: Number(userId), locationId: Number(locationId) } },
    );
    await reconciler.reconcile(job);
    const u = await usage(
      invitationId,
      userId,
      'withdrawn',
      (x) => x.devices[0]?.commandStatus === 'withdrawn',
    );
    expect(u.devices.map((d) => d.commandUuid)).to.deep.equal([commandUuid]);
    const listed = await f.commandsOf(device);
    expect(listed.find((c) => c.commandUuid === commandUuid)?.status).to.equal('withdrawn');
  });

  it('a device that enrolls again (its queue cleared by Authenticate) is prompted again', async () => {
    const { userId, device, invitationId, commandUuid } = await setup('reenrolled');
    await device.enroll(f.enrollUrl); // a new identity, Authenticate (queue withdrawn), TokenUpdate
    const u = await usage(
      invitationId,
      userId,
      'a new prompt',
      (x) =>
        x.devices.length === 1 &&
        x.devices[0]?.commandStatus === 'queued' &&
        x.devices[0]?.commandUuid !== commandUuid,
    );
    const listed = await f.commandsOf(device);
    expect(listed.find((c) => c.commandUuid === commandUuid)?.status).to.equal('withdrawn');
    expect(listed.find((c) => c.commandUuid === u.devices[0]?.commandUuid)?.status).to.equal('queued');
  });

  it('a device assigned without its event gets its prompt; a command lost from the queue is sent again', async () => {
    const { userId, invitationId, commandUuid } = await setup('missed.assignment');
    const second = await f.enroll(randomSpec('ios', rng));
    await devices.assignUser(second.udid, userId); // straight in the database: no event
    // and the first device's command vanishes from the queue without a result (a crash in between)
    await f.ts.server.db.sequelize.query('DELETE FROM command_queue WHERE command_uuid = :commandUuid', {
      replacements: { commandUuid },
    });
    await reconciler.reconcile(job);
    const u = await usage(
      invitationId,
      userId,
      'two queued prompts',
      (x) => x.devices.length === 2 && x.devices.every((d) => d.commandStatus === 'queued'),
    );
    const uuids = u.devices.map((d) => d.commandUuid);
    expect(uuids).to.not.include(commandUuid);
    const queued = await f.ts.server.db.sequelize.query<{ n: number | string }>(
      "SELECT COUNT(*) AS n FROM command_queue q JOIN commands c ON c.command_uuid = q.command_uuid WHERE c.request_type = 'InviteToProgram' AND q.command_uuid IN (:uuids)",
      { type: QueryTypes.SELECT, replacements: { uuids } },
    );
    expect(Number(queued[0]?.n)).to.equal(2);
  });
});
