import { expect } from 'chai';
import { QueryTypes } from 'sequelize';
import type { AuthenticateInput, TokenUpdateInput } from '../../server/checkin/store.ts';
import { openDatabase, type Database } from '../../server/storage/database.ts';
import { migrate } from '../../server/storage/migrate.ts';
import { migrations } from '../../server/storage/migrations.ts';
import { SqlCommandStore, SqlDeviceStore, SqlEnrollmentTokenStore } from '../../server/storage/stores.ts';
import { testDatabases } from '../helpers/databases.ts';

/** A fixed clock: second `s` (plus `ms`) after a fixed instant, with millisecond precision. */
const T0 = Date.UTC(2030, 0, 1, 12, 0, 0, 123);
const at = (s: number, ms = 0) => new Date(T0 + s * 1000 + ms);

let counter = 0;
/** Unique ids per test, so that tests sharing one database never see each other's rows. */
function uid(prefix: string): string {
  counter += 1;
  return `${prefix}-${process.pid}-${counter}`.toUpperCase();
}

function authInput(udid: string, overrides: Partial<AuthenticateInput> = {}): AuthenticateInput {
  return {
    udid,
    platform: 'ios',
    osVersion: '17.4',
    buildVersion: '21E219',
    model: 'iPhone15,2',
    productName: 'iPhone15,2',
    serialNumber: `SN${udid}`,
    deviceName: `Phone ${udid}`,
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

function body(uuid: string, requestType = 'DeviceInformation'): string {
  return `<plist><dict><key>CommandUUID</key><string>${uuid}</string><key>RequestType</key><string>${requestType}</string></dict></plist>`;
}

for (const target of testDatabases()) {
  describe(`storage contract (${target.name})`, function () {
    this.timeout(120_000);
    let url: string;
    let db: Database;
    let firstRun: string[];
    let tokens: SqlEnrollmentTokenStore;
    let devices: SqlDeviceStore;
    let commands: SqlCommandStore;

    before(async function () {
      url = await target.url();
      db = await openDatabase(url);
      firstRun = await migrate(db);
      tokens = new SqlEnrollmentTokenStore(db);
      devices = new SqlDeviceStore(db);
      commands = new SqlCommandStore(db);
    });

    after(async function () {
      await db?.close();
      await target.cleanup?.();
    });

    async function queueRows(enrollmentId: string): Promise<number> {
      const rows = await db.sequelize.query<{ n: unknown }>(
        'SELECT COUNT(*) AS n FROM command_queue WHERE enrollment_id = :enrollmentId',
        { type: QueryTypes.SELECT, replacements: { enrollmentId } },
      );
      return Number(rows[0]?.n);
    }

    /** An enrolled device (Authenticate + device-channel TokenUpdate). */
    async function enrolledDevice(now = at(0)): Promise<string> {
      const udid = uid('dev');
      await devices.authenticate(authInput(udid), now);
      await devices.tokenUpdate(tokenInput(udid), now);
      return udid;
    }

    describe('migrations', function () {
      it('apply every migration once, in order', function () {
        expect(firstRun).to.deep.equal(migrations.map((m) => m.id));
      });

      it('are idempotent: a second run applies nothing', async function () {
        expect(await migrate(db)).to.deep.equal([]);
      });

      it('are safe when several instances migrate the same database at once', async function () {
        const freshUrl = await target.url();
        const instances = await Promise.all([openDatabase(freshUrl), openDatabase(freshUrl)]);
        try {
          const [a, b] = instances;
          if (!a || !b) throw new Error('unreachable');
          const runs = await Promise.all([migrate(a), migrate(b), migrate(a), migrate(b)]);
          expect(runs.flat()).to.deep.equal(migrations.map((m) => m.id));
          const rows = await a.sequelize.query<{ id: string }>('SELECT id FROM schema_migrations', {
            type: QueryTypes.SELECT,
          });
          expect(rows.map((r) => r.id)).to.deep.equal(migrations.map((m) => m.id));
        } finally {
          await Promise.all(instances.map((i) => i.close()));
        }
      });
    });

    describe('enrollment tokens', function () {
      it('creates and reads a token', async function () {
        const token = uid('tok');
        const created = await tokens.create({ token, expiresAt: at(60), maxUses: 3, siteId: 'site-1' });
        expect(created).to.include({ token, maxUses: 3, uses: 0, siteId: 'site-1' });
        const read = await tokens.get(token);
        expect(read?.expiresAt?.getTime()).to.equal(at(60).getTime());
        expect(read).to.include({ token, maxUses: 3, uses: 0, siteId: 'site-1' });
        expect(await tokens.get(uid('missing'))).to.equal(null);
      });

      it('consumes until maxUses, then refuses', async function () {
        const token = uid('tok');
        await tokens.create({ token, expiresAt: null, maxUses: 2, siteId: null });
        expect((await tokens.consume(token, at(0)))?.uses).to.equal(1);
        expect((await tokens.consume(token, at(1)))?.uses).to.equal(2);
        expect(await tokens.consume(token, at(2))).to.equal(null);
        expect((await tokens.get(token))?.uses).to.equal(2);
      });

      it('refuses an expired token (expiry is exclusive) and an unknown one', async function () {
        const token = uid('tok');
        await tokens.create({ token, expiresAt: at(10), maxUses: null, siteId: null });
        expect((await tokens.consume(token, at(9, 999)))?.uses).to.equal(1);
        expect(await tokens.consume(token, at(10))).to.equal(null);
        expect(await tokens.consume(token, at(11))).to.equal(null);
        expect((await tokens.get(token))?.uses).to.equal(1);
        expect(await tokens.consume(uid('missing'), at(0))).to.equal(null);
      });

      it('compares tokens exactly (case-sensitive)', async function () {
        const token = `${uid('tok')}-abc`;
        await tokens.create({ token, expiresAt: null, maxUses: null, siteId: null });
        expect(await tokens.consume(token.toLowerCase(), at(0))).to.equal(null);
        expect(await tokens.get(token.toLowerCase())).to.equal(null);
      });

      it('lets exactly maxUses of 20 concurrent consumers through', async function () {
        const token = uid('tok');
        await tokens.create({ token, expiresAt: at(3600), maxUses: 5, siteId: null });
        const results = await Promise.all(Array.from({ length: 20 }, () => tokens.consume(token, at(0))));
        const granted = results.filter((r) => r !== null);
        expect(granted).to.have.length(5);
        expect(granted.map((r) => r?.uses).sort()).to.deep.equal([1, 2, 3, 4, 5]);
        expect((await tokens.get(token))?.uses).to.equal(5);
      });
    });

    describe('devices and enrollments', function () {
      it('Authenticate creates a device, not enrolled, bound to its certificate', async function () {
        const udid = uid('dev');
        const device = await devices.authenticate(authInput(udid), at(0));
        expect(device).to.include({
          udid,
          platform: 'ios',
          osVersion: '17.4',
          serialNumber: `SN${udid}`,
          enrolled: false,
          userEnrollment: false,
          certFingerprint: `fp-${udid}`.toLowerCase(),
          userId: null,
          enrolledAt: null,
          lastSeenAt: null,
        });
        expect(device.createdAt.getTime()).to.equal(at(0).getTime());
        expect((await devices.getDevice(udid))?.udid).to.equal(udid);
        expect((await devices.findDeviceByCert(`fp-${udid}`.toLowerCase()))?.udid).to.equal(udid);
        expect(await devices.findDeviceByCert('fp-nobody')).to.equal(null);
        expect(await devices.getDevice(uid('missing'))).to.equal(null);
      });

      it('the first device-channel TokenUpdate enrolls the device; later ones only refresh push info', async function () {
        const udid = uid('dev');
        await devices.authenticate(authInput(udid), at(0));
        const first = await devices.tokenUpdate(
          tokenInput(udid, { unlockToken: new Uint8Array([1, 2, 3]) }),
          at(1),
        );
        expect(first.firstForDevice).to.equal(true);
        expect(first.enrollment).to.include({
          id: udid,
          udid,
          channel: 'device',
          enabled: true,
          pushTokenDead: false,
          pushMagic: `magic-${udid}`,
        });
        expect([...(first.enrollment.unlockToken ?? [])]).to.deep.equal([1, 2, 3]);
        let device = await devices.getDevice(udid);
        expect(device?.enrolled).to.equal(true);
        expect(device?.enrolledAt?.getTime()).to.equal(at(1).getTime());

        const later = await devices.tokenUpdate(
          tokenInput(udid, { pushToken: 'bb'.repeat(32), pushMagic: 'new' }),
          at(2),
        );
        expect(later.firstForDevice).to.equal(false);
        expect(later.enrollment).to.include({ pushToken: 'bb'.repeat(32), pushMagic: 'new', enabled: true });
        expect(later.enrollment.tokenUpdatedAt?.getTime()).to.equal(at(2).getTime());
        // A later TokenUpdate without UnlockToken keeps the one we have.
        expect([...(later.enrollment.unlockToken ?? [])]).to.deep.equal([1, 2, 3]);
        device = await devices.getDevice(udid);
        expect(device?.enrolledAt?.getTime()).to.equal(at(1).getTime());
      });

      it('a user-channel TokenUpdate never enrolls the device by itself', async function () {
        const udid = uid('mac');
        await devices.authenticate(authInput(udid, { platform: 'macos' }), at(0));
        const userId = 'A1B2C3D4-0000-0000-0000-000000000001';
        const user = await devices.tokenUpdate(
          tokenInput(udid, {
            enrollmentId: `${udid}:${userId}`,
            channel: 'user',
            appleUserId: userId,
            userShortName: 'ann',
            userLongName: 'Ann Example',
          }),
          at(1),
        );
        expect(user.firstForDevice).to.equal(false);
        expect(user.enrollment).to.include({
          channel: 'user',
          appleUserId: userId,
          userShortName: 'ann',
          enabled: true,
        });
        expect((await devices.getDevice(udid))?.enrolled).to.equal(false);

        const dev = await devices.tokenUpdate(tokenInput(udid), at(2));
        expect(dev.firstForDevice).to.equal(true);
        const list = await devices.listEnrollments(udid);
        expect(list.map((e) => e.id)).to.deep.equal([udid, `${udid}:${userId}`]);
        expect(await devices.getEnrollment(`${udid}:${userId}`)).to.include({ userLongName: 'Ann Example' });
        expect(await devices.getEnrollment(uid('missing'))).to.equal(null);
      });

      it('User Enrollment: the user_enrollment_device channel enrolls the device', async function () {
        const enrollmentId = uid('ue');
        await devices.authenticate(
          authInput(enrollmentId, { userEnrollment: true, serialNumber: null }),
          at(0),
        );
        const r = await devices.tokenUpdate(
          tokenInput(enrollmentId, { channel: 'user_enrollment_device' }),
          at(1),
        );
        expect(r.firstForDevice).to.equal(true);
        expect(await devices.getDevice(enrollmentId)).to.include({ enrolled: true, userEnrollment: true });
      });

      it('refuses a TokenUpdate for a device that never authenticated', async function () {
        const udid = uid('ghost');
        let error: unknown = null;
        await devices.tokenUpdate(tokenInput(udid), at(0)).catch((err: unknown) => (error = err));
        expect(error).to.be.instanceOf(Error);
        expect(await devices.getEnrollment(udid)).to.equal(null);
      });

      it('CheckOut disables every enrollment and marks the device not enrolled', async function () {
        const udid = uid('dev');
        await devices.authenticate(authInput(udid), at(0));
        await devices.tokenUpdate(tokenInput(udid), at(1));
        await devices.tokenUpdate(
          tokenInput(udid, { enrollmentId: `${udid}:U`, channel: 'user', appleUserId: 'U' }),
          at(1),
        );
        await devices.checkOut(udid, at(5));
        const device = await devices.getDevice(udid);
        expect(device?.enrolled).to.equal(false);
        expect(device?.checkedOutAt?.getTime()).to.equal(at(5).getTime());
        expect((await devices.listEnrollments(udid)).map((e) => e.enabled)).to.deep.equal([false, false]);
      });

      it('re-Authenticate (re-enrollment without CheckOut) disables enrollments and withdraws queued commands', async function () {
        const udid = await enrolledDevice(at(0));
        await devices.tokenUpdate(
          tokenInput(udid, { unlockToken: new Uint8Array([9]), pushMagic: 'old-magic' }),
          at(0),
        );
        const userEnrollment = `${udid}:U1`;
        await devices.tokenUpdate(
          tokenInput(udid, { enrollmentId: userEnrollment, channel: 'user', appleUserId: 'U1' }),
          at(0),
        );
        const c1 = uid('cmd');
        const c2 = uid('cmd');
        await commands.enqueue(
          [
            {
              enrollmentId: udid,
              udid,
              commandUuid: c1,
              requestType: 'DeviceInformation',
              bodyXml: body(c1),
            },
            {
              enrollmentId: userEnrollment,
              udid,
              commandUuid: c2,
              requestType: 'ProfileList',
              bodyXml: body(c2),
            },
          ],
          at(1),
        );
        const device = await devices.authenticate(
          authInput(udid, { osVersion: '18.0', certFingerprint: `new-${udid}` }),
          at(2),
        );
        expect(device).to.include({ enrolled: false, osVersion: '18.0', certFingerprint: `new-${udid}` });
        expect(await devices.findDeviceByCert(`fp-${udid}`.toLowerCase())).to.equal(null);
        expect((await devices.listEnrollments(udid)).every((e) => !e.enabled)).to.equal(true);
        expect(await commands.next(udid, true, at(3))).to.equal(null);
        expect(await commands.next(userEnrollment, true, at(3))).to.equal(null);
        expect(await queueRows(udid)).to.equal(0);
        const listed = await commands.listForDevice(udid, { limit: 10, cursor: null });
        expect(listed.items.map((i) => [i.commandUuid, i.status])).to.have.deep.members([
          [c1, 'withdrawn'],
          [c2, 'withdrawn'],
        ]);
        // A late result for a withdrawn command is ignored.
        expect(
          await commands.complete(
            { enrollmentId: udid, commandUuid: c1, status: 'acknowledged', resultXml: '<r/>' },
            at(3),
          ),
        ).to.equal(false);

        // The first TokenUpdate after it enrolls again and overwrites the stale push info.
        const again = await devices.tokenUpdate(tokenInput(udid, { pushMagic: 'fresh-magic' }), at(4));
        expect(again.firstForDevice).to.equal(true);
        expect(again.enrollment).to.include({ pushMagic: 'fresh-magic', enabled: true, unlockToken: null });
        expect((await devices.getDevice(udid))?.enrolledAt?.getTime()).to.equal(at(4).getTime());
      });

      it('touch records lastSeenAt for many devices at once and never moves it back', async function () {
        const a = await enrolledDevice();
        const b = await enrolledDevice();
        const unknown = Array.from({ length: 1200 }, (_, i) => `NOPE-${i}`);
        await devices.touch([a, ...unknown, b, a], at(30));
        expect((await devices.getDevice(a))?.lastSeenAt?.getTime()).to.equal(at(30).getTime());
        expect((await devices.getDevice(b))?.lastSeenAt?.getTime()).to.equal(at(30).getTime());
        await devices.touch([a], at(20));
        expect((await devices.getDevice(a))?.lastSeenAt?.getTime()).to.equal(at(30).getTime());
        await devices.touch([], at(40));
      });

      it('assignUser sets and clears the directory user', async function () {
        const udid = await enrolledDevice();
        expect(await devices.assignUser(udid, 'user-42')).to.include({ udid, userId: 'user-42' });
        expect((await devices.getDevice(udid))?.userId).to.equal('user-42');
        expect(await devices.assignUser(udid, null)).to.include({ userId: null });
        expect(await devices.assignUser(uid('missing'), 'user-1')).to.equal(null);
      });

      it('listDevices pages by udid with a cursor and filters with q (case-insensitive, literal % and _)', async function () {
        const marker = uid('lst').toLowerCase().replace(/-/g, '');
        const udids: string[] = [];
        for (let i = 0; i < 7; i++) {
          const udid = `${marker}-${String(i).padStart(2, '0')}`.toUpperCase();
          udids.push(udid);
          await devices.authenticate(
            authInput(udid, {
              deviceName: i === 3 ? `Lab ${marker} 50% Off` : `Lab ${marker} 500`,
              serialNumber: `SN-${marker}-${i}`,
            }),
            at(0),
          );
        }
        const seen: string[] = [];
        let cursor: string | null = null;
        let pages = 0;
        do {
          const page: Awaited<ReturnType<typeof devices.listDevices>> = await devices.listDevices({
            limit: 3,
            cursor,
            q: marker.toUpperCase(),
          });
          expect(page.items.length).to.be.at.most(3);
          seen.push(...page.items.map((d) => d.udid));
          cursor = page.nextCursor;
          pages += 1;
        } while (cursor !== null && pages < 10);
        expect(pages).to.equal(3);
        expect(seen).to.deep.equal(udids);

        const percent = await devices.listDevices({ limit: 10, cursor: null, q: `${marker} 50%` });
        expect(percent.items.map((d) => d.udid)).to.deep.equal([udids[3]]);
        const underscore = await devices.listDevices({ limit: 10, cursor: null, q: `${marker} 5_0` });
        expect(underscore.items).to.deep.equal([]);
        const bySerial = await devices.listDevices({ limit: 100, cursor: null, q: `sn-${marker}-4` });
        expect(bySerial.items.map((d) => d.udid)).to.deep.equal([udids[4]]);

        let error: unknown = null;
        await devices
          .listDevices({ limit: 3, cursor: 'not a cursor', q: null })
          .catch((err: unknown) => (error = err));
        expect(error).to.have.property('code', 'invalid_cursor');
      });
    });

    describe('command queue', function () {
      it('enqueues one command for several enrollments and serves each its own copy', async function () {
        const a = await enrolledDevice();
        const b = await enrolledDevice();
        const uuid = uid('cmd');
        await commands.enqueue(
          [a, b].map((udid) => ({
            enrollmentId: udid,
            udid,
            commandUuid: uuid,
            requestType: 'ProfileList',
            bodyXml: body(uuid, 'ProfileList'),
          })),
          at(1),
        );
        for (const udid of [a, b]) {
          expect(await commands.next(udid, false, at(2))).to.deep.equal({
            commandUuid: uuid,
            requestType: 'ProfileList',
            bodyXml: body(uuid, 'ProfileList'),
          });
        }
        expect(
          await commands.complete(
            { enrollmentId: a, commandUuid: uuid, status: 'acknowledged', resultXml: '<a/>' },
            at(3),
          ),
        ).to.equal(true);
        expect(await commands.next(a, true, at(4))).to.equal(null);
        expect((await commands.next(b, true, at(4)))?.commandUuid).to.equal(uuid);
      });

      it('serves the oldest first, re-serves a sent command until answered, skips NotNow until Idle', async function () {
        const udid = await enrolledDevice();
        const [c1, c2, c3, c4] = [uid('c1'), uid('c2'), uid('c3'), uid('c4')];
        if (!c1 || !c2 || !c3 || !c4) throw new Error('unreachable');
        // c1 and c2 share one instant: they come out in the order given.
        await commands.enqueue(
          [c1, c2].map((c) => ({
            enrollmentId: udid,
            udid,
            commandUuid: c,
            requestType: 'DeviceInformation',
            bodyXml: body(c),
          })),
          at(1),
        );
        await commands.enqueue(
          [{ enrollmentId: udid, udid, commandUuid: c3, requestType: 'ProfileList', bodyXml: body(c3) }],
          at(2),
        );

        expect((await commands.next(udid, true, at(3)))?.commandUuid).to.equal(c1);
        let page = await commands.listForDevice(udid, { limit: 10, cursor: null });
        expect(page.items.find((i) => i.commandUuid === c1)?.status).to.equal('sent');
        // No answer yet (broken connection): the same command again.
        expect((await commands.next(udid, true, at(4)))?.commandUuid).to.equal(c1);
        expect(
          await commands.complete(
            { enrollmentId: udid, commandUuid: c1, status: 'acknowledged', resultXml: '<ok/>' },
            at(5),
          ),
        ).to.equal(true);

        expect((await commands.next(udid, false, at(5)))?.commandUuid).to.equal(c2);
        await commands.markNotNow(udid, c2, at(6));
        await commands.markNotNow(udid, uid('unknown'), at(6));
        page = await commands.listForDevice(udid, { limit: 10, cursor: null });
        expect(page.items.find((i) => i.commandUuid === c2)?.status).to.equal('not_now');

        // While the device keeps reporting, the NotNow command is skipped.
        expect((await commands.next(udid, false, at(6)))?.commandUuid).to.equal(c3);
        expect(
          await commands.complete(
            { enrollmentId: udid, commandUuid: c3, status: 'error', resultXml: '<err/>' },
            at(7),
          ),
        ).to.equal(true);
        expect(await commands.next(udid, false, at(7))).to.equal(null);

        // Newly queued commands are served, still skipping c2 until Idle.
        await commands.enqueue(
          [
            {
              enrollmentId: udid,
              udid,
              commandUuid: c4,
              requestType: 'DeviceInformation',
              bodyXml: body(c4),
            },
          ],
          at(8),
        );
        expect((await commands.next(udid, false, at(8)))?.commandUuid).to.equal(c4);
        expect(
          await commands.complete(
            { enrollmentId: udid, commandUuid: c4, status: 'command_format_error', resultXml: '<f/>' },
            at(9),
          ),
        ).to.equal(true);

        // Idle: c2 is offered again, and stays eligible afterwards (it is sent, not NotNow).
        expect((await commands.next(udid, true, at(10)))?.commandUuid).to.equal(c2);
        expect((await commands.next(udid, false, at(11)))?.commandUuid).to.equal(c2);
        expect(
          await commands.complete(
            { enrollmentId: udid, commandUuid: c2, status: 'acknowledged', resultXml: '<ok/>' },
            at(12),
          ),
        ).to.equal(true);
        expect(await commands.next(udid, true, at(13))).to.equal(null);

        // The hot table holds nothing for this enrollment; the results are all in the cold one.
        expect(await queueRows(udid)).to.equal(0);
        page = await commands.listForDevice(udid, { limit: 10, cursor: null });
        expect(page.items.map((i) => [i.commandUuid, i.status])).to.deep.equal([
          [c4, 'command_format_error'],
          [c3, 'error'],
          [c2, 'acknowledged'],
          [c1, 'acknowledged'],
        ]);
        const first = page.items[3];
        expect(first?.resultXml).to.equal('<ok/>');
        expect(first?.queuedAt.getTime()).to.equal(at(1).getTime());
        expect(first?.answeredAt?.getTime()).to.equal(at(5).getTime());
        expect(first?.requestType).to.equal('DeviceInformation');
      });

      it('stores a result once: duplicates, unknown commands and other enrollments are ignored', async function () {
        const udid = await enrolledDevice();
        const other = await enrolledDevice();
        const uuid = uid('cmd');
        await commands.enqueue(
          [
            {
              enrollmentId: udid,
              udid,
              commandUuid: uuid,
              requestType: 'DeviceInformation',
              bodyXml: body(uuid),
            },
          ],
          at(1),
        );
        await commands.next(udid, false, at(2));
        expect(
          await commands.complete(
            { enrollmentId: other, commandUuid: uuid, status: 'acknowledged', resultXml: '<x/>' },
            at(3),
          ),
        ).to.equal(false);
        expect(
          await commands.complete(
            { enrollmentId: udid, commandUuid: uid('unknown'), status: 'acknowledged', resultXml: '<x/>' },
            at(3),
          ),
        ).to.equal(false);
        expect(
          await commands.complete(
            { enrollmentId: udid, commandUuid: uuid, status: 'acknowledged', resultXml: '<first/>' },
            at(3),
          ),
        ).to.equal(true);
        expect(
          await commands.complete(
            { enrollmentId: udid, commandUuid: uuid, status: 'error', resultXml: '<second/>' },
            at(4),
          ),
        ).to.equal(false);
        const page = await commands.listForDevice(udid, { limit: 10, cursor: null });
        expect(page.items).to.have.length(1);
        expect(page.items[0]).to.include({ status: 'acknowledged', resultXml: '<first/>' });
        expect((await commands.listForDevice(other, { limit: 10, cursor: null })).items).to.deep.equal([]);
      });

      it('10 concurrent reports of the same result store exactly one', async function () {
        const udid = await enrolledDevice();
        const uuid = uid('cmd');
        await commands.enqueue(
          [
            {
              enrollmentId: udid,
              udid,
              commandUuid: uuid,
              requestType: 'DeviceInformation',
              bodyXml: body(uuid),
            },
          ],
          at(1),
        );
        await commands.next(udid, false, at(2));
        const outcomes = await Promise.all(
          Array.from({ length: 10 }, (_, i) =>
            commands.complete(
              { enrollmentId: udid, commandUuid: uuid, status: 'acknowledged', resultXml: `<r${i}/>` },
              at(3),
            ),
          ),
        );
        expect(outcomes.filter((o) => o)).to.have.length(1);
        expect(await queueRows(udid)).to.equal(0);
        expect((await commands.listForDevice(udid, { limit: 10, cursor: null })).items).to.have.length(1);
      });

      it('keeps large command bodies and results intact', async function () {
        const udid = await enrolledDevice();
        const uuid = uid('big');
        const big = `<plist>${'x'.repeat(3 * 1024 * 1024)}</plist>`;
        await commands.enqueue(
          [{ enrollmentId: udid, udid, commandUuid: uuid, requestType: 'InstallProfile', bodyXml: big }],
          at(1),
        );
        const next = await commands.next(udid, false, at(2));
        expect(next?.bodyXml.length).to.equal(big.length);
        expect(next?.bodyXml === big).to.equal(true);
        expect(
          await commands.complete(
            { enrollmentId: udid, commandUuid: uuid, status: 'acknowledged', resultXml: big },
            at(3),
          ),
        ).to.equal(true);
        const page = await commands.listForDevice(udid, { limit: 1, cursor: null });
        expect(page.items[0]?.resultXml === big).to.equal(true);
      });

      it('clearQueue withdraws the queued commands of the given enrollments only', async function () {
        const a = await enrolledDevice();
        const b = await enrolledDevice();
        const [ca, cb] = [uid('cmd'), uid('cmd')];
        await commands.enqueue(
          [
            {
              enrollmentId: a,
              udid: a,
              commandUuid: ca,
              requestType: 'DeviceInformation',
              bodyXml: body(ca),
            },
            {
              enrollmentId: b,
              udid: b,
              commandUuid: cb,
              requestType: 'DeviceInformation',
              bodyXml: body(cb),
            },
          ],
          at(1),
        );
        await commands.clearQueue([a]);
        await commands.clearQueue([]);
        expect(await commands.next(a, true, at(2))).to.equal(null);
        expect((await commands.next(b, true, at(2)))?.commandUuid).to.equal(cb);
        expect(
          (await commands.listForDevice(a, { limit: 5, cursor: null })).items.map((i) => i.status),
        ).to.deep.equal(['withdrawn']);
      });

      it('withdraw removes commands by UUID from every enrollment (sent or NotNow too), answered ones stay', async function () {
        const a = await enrolledDevice();
        const b = await enrolledDevice();
        const userChannel = `${a}:USER`;
        await devices.tokenUpdate(
          tokenInput(a, { enrollmentId: userChannel, channel: 'user', appleUserId: 'USER' }),
          at(0),
        );
        const [shared, sent, notNow, answered, other] = [
          uid('wd'),
          uid('wd'),
          uid('wd'),
          uid('wd'),
          uid('wd'),
        ];
        const queue = (enrollmentId: string, udid: string, uuid: string) => ({
          enrollmentId,
          udid,
          commandUuid: uuid,
          requestType: 'InviteToProgram',
          bodyXml: body(uuid, 'InviteToProgram'),
        });
        await commands.enqueue(
          [queue(a, a, shared), queue(userChannel, a, shared), queue(b, b, shared), queue(b, b, other)],
          at(1),
        );
        await commands.enqueue(
          [queue(a, a, sent), queue(userChannel, a, notNow), queue(b, b, answered)],
          at(2),
        );
        // `shared` is served to a first (then `sent`): a result for it after the withdrawal is ignored
        expect((await commands.next(a, false, at(3)))?.commandUuid).to.equal(shared);
        await commands.markNotNow(userChannel, notNow, at(3));
        expect(
          await commands.complete(
            { enrollmentId: b, commandUuid: answered, status: 'acknowledged', resultXml: '<plist/>' },
            at(3),
          ),
        ).to.equal(true);

        const withdrawn = await commands.withdraw([shared, sent, notNow, answered, uid('unknown')], at(4));
        const key = (w: { enrollmentId: string; commandUuid: string }) =>
          `${w.enrollmentId} ${w.commandUuid}`;
        expect(withdrawn.map(key).sort()).to.deep.equal(
          [
            { enrollmentId: a, commandUuid: shared },
            { enrollmentId: userChannel, commandUuid: shared },
            { enrollmentId: b, commandUuid: shared },
            { enrollmentId: a, commandUuid: sent },
            { enrollmentId: userChannel, commandUuid: notNow },
          ]
            .map(key)
            .sort(),
        );
        // never served again, on any channel; the other command still is
        expect(await commands.next(a, true, at(5))).to.equal(null);
        expect(await commands.next(userChannel, true, at(5))).to.equal(null);
        expect((await commands.next(b, true, at(5)))?.commandUuid).to.equal(other);
        expect(
          await commands.complete(
            { enrollmentId: a, commandUuid: shared, status: 'acknowledged', resultXml: '<plist/>' },
            at(6),
          ),
        ).to.equal(false);
        const listed = new Map(
          [
            ...(await commands.listForDevice(a, { limit: 50, cursor: null })).items,
            ...(await commands.listForDevice(b, { limit: 50, cursor: null })).items,
          ].map((i) => [`${i.enrollmentId} ${i.commandUuid}`, i.status]),
        );
        expect(listed.get(`${a} ${shared}`)).to.equal('withdrawn');
        expect(listed.get(`${userChannel} ${notNow}`)).to.equal('withdrawn');
        expect(listed.get(`${b} ${answered}`)).to.equal('acknowledged');
        expect(listed.get(`${b} ${other}`)).to.equal('sent');
        // idempotent
        expect(await commands.withdraw([shared, sent], at(7))).to.deep.equal([]);
        expect(await commands.withdraw([], at(7))).to.deep.equal([]);
      });

      it('withdraw and a concurrent result of the same command: exactly one of them wins', async function () {
        const udid = await enrolledDevice();
        const uuids = Array.from({ length: 20 }, () => uid('race'));
        await commands.enqueue(
          uuids.map((u) => ({
            enrollmentId: udid,
            udid,
            commandUuid: u,
            requestType: 'InviteToProgram',
            bodyXml: body(u, 'InviteToProgram'),
          })),
          at(1),
        );
        const [withdrawn, ...completed] = await Promise.all([
          commands.withdraw(uuids, at(2)),
          ...uuids.map((u) =>
            commands.complete(
              { enrollmentId: udid, commandUuid: u, status: 'acknowledged', resultXml: '<plist/>' },
              at(2),
            ),
          ),
        ]);
        const withdrawnSet = new Set((withdrawn ?? []).map((w) => w.commandUuid));
        uuids.forEach((u, i) => expect(withdrawnSet.has(u)).to.equal(!completed[i], u));
        const listed = (await commands.listForDevice(udid, { limit: 50, cursor: null })).items;
        for (const item of listed.filter((i) => uuids.includes(i.commandUuid))) {
          expect(item.status).to.equal(withdrawnSet.has(item.commandUuid) ? 'withdrawn' : 'acknowledged');
        }
      });

      it('listForDevice pages newest first over queued and answered commands with cursors', async function () {
        const udid = await enrolledDevice();
        const userChannel = `${udid}:USER`;
        await devices.tokenUpdate(
          tokenInput(udid, { enrollmentId: userChannel, channel: 'user', appleUserId: 'USER' }),
          at(0),
        );
        const expected: string[] = [];
        // 23 commands over 12 instants (pairs share an instant), on two channels; every third answered.
        for (let i = 0; i < 23; i++) {
          const uuid = `${uid('lfd')}-${String(i).padStart(2, '0')}`;
          const enrollmentId = i % 2 === 0 ? udid : userChannel;
          await commands.enqueue(
            [{ enrollmentId, udid, commandUuid: uuid, requestType: 'ProfileList', bodyXml: body(uuid) }],
            at(Math.floor(i / 2) + 1),
          );
          expected.unshift(uuid);
          if (i % 3 === 0) {
            expect(
              await commands.complete(
                { enrollmentId, commandUuid: uuid, status: 'acknowledged', resultXml: '<ok/>' },
                at(100),
              ),
            ).to.equal(true);
          }
        }
        const seen: string[] = [];
        const statuses = new Set<string>();
        let cursor: string | null = null;
        let pages = 0;
        do {
          const page: Awaited<ReturnType<typeof commands.listForDevice>> = await commands.listForDevice(
            udid,
            { limit: 5, cursor },
          );
          expect(page.items.length).to.be.at.most(5);
          seen.push(...page.items.map((i) => i.commandUuid));
          for (const item of page.items) statuses.add(item.status);
          cursor = page.nextCursor;
          pages += 1;
        } while (cursor !== null && pages < 20);
        expect(pages).to.equal(5);
        expect(seen).to.deep.equal(expected);
        expect([...statuses].sort()).to.deep.equal(['acknowledged', 'queued']);

        let error: unknown = null;
        await commands
          .listForDevice(udid, { limit: 5, cursor: 'bm9wZQ' })
          .catch((err: unknown) => (error = err));
        expect(error).to.have.property('code', 'invalid_cursor');
      });

      it(`runs 200 concurrent write operations without errors (no SQLITE_BUSY on SQLite)`, async function () {
        const udids = await Promise.all(Array.from({ length: 10 }, () => enrolledDevice()));
        const token = uid('tok');
        await tokens.create({ token, expiresAt: null, maxUses: null, siteId: null });
        const ops: Promise<unknown>[] = [];
        for (let i = 0; i < 200; i++) {
          const udid = udids[i % udids.length] ?? '';
          const uuid = `${uid('load')}-${i}`;
          switch (i % 5) {
            case 0:
              ops.push(
                commands.enqueue(
                  [
                    {
                      enrollmentId: udid,
                      udid,
                      commandUuid: uuid,
                      requestType: 'DeviceInformation',
                      bodyXml: body(uuid),
                    },
                  ],
                  at(1),
                ),
              );
              break;
            case 1:
              ops.push(commands.next(udid, i % 2 === 0, at(2)));
              break;
            case 2:
              ops.push(devices.tokenUpdate(tokenInput(udid, { pushMagic: `m${i}` }), at(3)));
              break;
            case 3:
              ops.push(devices.touch(udids, at(i)));
              break;
            default:
              ops.push(tokens.consume(token, at(4)));
          }
        }
        const settled = await Promise.allSettled(ops);
        const failures = settled.filter((s) => s.status === 'rejected');
        expect(failures.map((f) => String((f as PromiseRejectedResult).reason))).to.deep.equal([]);
        expect((await tokens.get(token))?.uses).to.equal(40);
      });
    });
  });
}
