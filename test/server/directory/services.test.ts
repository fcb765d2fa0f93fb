import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import type { TokenUpdateInput } from '../../../server/checkin/store.ts';
import { DeviceAssigner } from '../../../server/directory/device-assigner.ts';
import { UnknownIdsError } from '../../../server/directory/errors.ts';
import { hashPassword, verifyPassword } from '../../../server/directory/password.ts';
import { UserService } from '../../../server/directory/user-service.ts';
import { NotFoundError } from '../../../server/errors.ts';
import { EventBus } from '../../../server/events.ts';
import { createLogger } from '../../../server/log.ts';
import { openDatabase, type Database } from '../../../server/storage/database.ts';
import { SqlDeviceAssignmentStore, SqlUserStore } from '../../../server/storage/directory-store.ts';
import { migrate } from '../../../server/storage/migrate.ts';
import { SqlDeviceStore } from '../../../server/storage/stores.ts';

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (err) {
    return err;
  }
  throw new Error('expected a rejection');
}

describe('directory services', function () {
  this.timeout(60_000);
  let dir: string;
  let db: Database;
  let users: SqlUserStore;
  let devices: SqlDeviceStore;
  let service: UserService;
  let assigner: DeviceAssigner;

  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'mdm-dir-'));
    db = await openDatabase(`sqlite:${path.join(dir, 'mdm.sqlite')}`);
    await migrate(db);
    users = new SqlUserStore(db);
    devices = new SqlDeviceStore(db);
    service = new UserService({ users });
    assigner = new DeviceAssigner({
      devices,
      users,
      assignments: new SqlDeviceAssignmentStore(db),
      log: createLogger('silent'),
    });
  });
  after(async () => {
    await db?.close();
    await rm(dir, { recursive: true, force: true });
  });

  describe('scrypt password hashes', () => {
    it('stores the parameters and a random salt with the hash, and verifies', async () => {
      const a = await hashPassword('hunter22hunter22');
      const b = await hashPassword('hunter22hunter22');
      expect(a).to.match(/^scrypt\$16384\$8\$1\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+$/);
      expect(a).to.not.equal(b); // salted
      expect(await verifyPassword('hunter22hunter22', a)).to.equal(true);
      expect(await verifyPassword('hunter22hunter23', a)).to.equal(false);
      expect(await verifyPassword('', a)).to.equal(false);
    });

    it('verifies with the parameters stored in the hash (not the current defaults)', async () => {
      const { scryptSync, randomBytes } = await import('node:crypto');
      const salt = randomBytes(16);
      const key = scryptSync('old password', salt, 32, { N: 1024, r: 4, p: 2 });
      const stored = `scrypt$1024$4$2$${salt.toString('base64')}$${key.toString('base64')}`;
      expect(await verifyPassword('old password', stored)).to.equal(true);
      expect(await verifyPassword('old passwort', stored)).to.equal(false);
    });

    it('refuses malformed or hostile stored hashes instead of throwing', async () => {
      const good = await hashPassword('whatever-123');
      const parts = good.split('$');
      for (const stored of [
        '',
        'plain',
        `bcrypt$${parts.slice(1).join('$')}`,
        `scrypt$1000$8$1$${parts[4]}$${parts[5]}`, // N not a power of two
        `scrypt$${2 ** 30}$8$1$${parts[4]}$${parts[5]}`, // too much memory
        `scrypt$16384$8$1$$${parts[5]}`,
        `${good}$extra`,
      ]) {
        expect(await verifyPassword('whatever-123', stored), stored).to.equal(false);
      }
    });

    it('verifyLocalPassword: only the right password of a user with a local account', async () => {
      const withPassword = await service.create({ username: 'local-user', password: 'sesame-open-1' });
      const without = await service.create({ username: 'ldap-user' });
      expect(withPassword.hasPassword).to.equal(true);
      expect(without.hasPassword).to.equal(false);
      expect(await service.verifyLocalPassword(withPassword.id, 'sesame-open-1')).to.equal(true);
      expect(await service.verifyLocalPassword(withPassword.id, 'sesame-open-2')).to.equal(false);
      expect(await service.verifyLocalPassword(without.id, 'sesame-open-1')).to.equal(false);
      expect(await service.verifyLocalPassword('424242', 'sesame-open-1')).to.equal(false);
      await service.setPassword(without.id, 'now-a-local-one');
      expect(await service.verifyLocalPassword(without.id, 'now-a-local-one')).to.equal(true);
      expect(await rejection(service.setPassword('424242', 'whatever-123'))).to.be.instanceOf(NotFoundError);
      expect(await rejection(service.update('424242', { fullName: 'x' }))).to.be.instanceOf(NotFoundError);
    });
  });

  describe('DeviceAssigner', () => {
    let n = 0;
    async function mac(): Promise<string> {
      n += 1;
      const udid = `ASSIGN-${n}`;
      const now = new Date();
      await devices.authenticate(
        {
          udid,
          platform: 'macos',
          osVersion: '14.5',
          buildVersion: null,
          model: null,
          productName: null,
          serialNumber: null,
          deviceName: null,
          userEnrollment: false,
          topic: 't',
          certFingerprint: `fp-${udid}`,
        },
        now,
      );
      await devices.tokenUpdate(token(udid, { enrollmentId: udid, channel: 'device' }), now);
      return udid;
    }
    function token(udid: string, overrides: Partial<TokenUpdateInput>): TokenUpdateInput {
      return {
        enrollmentId: `${udid}:USER`,
        udid,
        channel: 'user',
        appleUserId: 'USER',
        userShortName: null,
        userLongName: null,
        topic: 't',
        pushToken: 'ab'.repeat(32),
        pushMagic: 'm',
        unlockToken: null,
        ...overrides,
      };
    }
    /** A user-channel TokenUpdate stored, then handed to the assigner as the event would. */
    async function userChannel(
      udid: string,
      shortName: string | null,
      channel: TokenUpdateInput['channel'] = 'user',
    ) {
      const { enrollment } = await devices.tokenUpdate(
        token(udid, { userShortName: shortName, channel }),
        new Date(),
      );
      return assigner.onTokenUpdated({ enrollmentId: enrollment.id, udid });
    }
    const userIdOf = async (udid: string) => (await devices.getDevice(udid))?.userId;

    it('assigns an unassigned Mac to the user whose username is the short name (any case)', async () => {
      const erin = await service.create({ username: 'Erin' });
      const udid = await mac();
      expect(await userChannel(udid, 'erin')).to.equal(erin.id);
      expect(await userIdOf(udid)).to.equal(erin.id);
    });

    it('leaves a device that already has a user alone', async () => {
      const [fay, gus] = [
        await service.create({ username: 'fay' }),
        await service.create({ username: 'gus' }),
      ];
      const udid = await mac();
      await assigner.assign(udid, fay.id);
      expect(await userChannel(udid, 'gus')).to.equal(null);
      expect(await userIdOf(udid)).to.equal(fay.id);
      expect(gus.id).to.not.equal(fay.id);
    });

    it('does nothing for an unknown short name, the device channel, or a non-user channel', async () => {
      await service.create({ username: 'hal' });
      const udid = await mac();
      expect(await userChannel(udid, 'nobody-here')).to.equal(null);
      expect(await userChannel(udid, null)).to.equal(null);
      expect(await assigner.onTokenUpdated({ enrollmentId: udid, udid })).to.equal(null);
      expect(await userChannel(udid, 'hal', 'shared_ipad_user')).to.equal(null);
      expect(await assigner.onTokenUpdated({ enrollmentId: 'missing', udid })).to.equal(null);
      expect(await userIdOf(udid)).to.equal(null);
    });

    it('is wired to enrollment.token_updated by listen()', async () => {
      const ida = await service.create({ username: 'ida' });
      const udid = await mac();
      const { enrollment } = await devices.tokenUpdate(token(udid, { userShortName: 'ida' }), new Date());
      const events = new EventBus();
      const stop = assigner.listen(events);
      try {
        events.emit('enrollment.token_updated', { enrollmentId: enrollment.id, udid, first: false });
        const deadline = Date.now() + 5000;
        while ((await userIdOf(udid)) === null && Date.now() < deadline) {
          await new Promise((resolve) => setTimeout(resolve, 10));
        }
        expect(await userIdOf(udid)).to.equal(ida.id);
      } finally {
        stop();
      }
    });

    it('assign(): unknown device is a 404, unknown user a 400 naming it', async () => {
      const udid = await mac();
      const err = await rejection(assigner.assign(udid, '987654'));
      expect(err).to.be.instanceOf(UnknownIdsError);
      expect((err as UnknownIdsError).details).to.deep.equal({ userId: ['987654'] });
      expect(await rejection(assigner.assign('NOPE', null))).to.be.instanceOf(NotFoundError);
      expect((await assigner.assign(udid, null)).userId).to.equal(null);
    });
  });
});
