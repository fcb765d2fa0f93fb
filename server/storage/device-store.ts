import { Op, type Model, type WhereOptions } from 'sequelize';
import type { ChannelType } from '../../shared/mdm/index.ts';
import type {
  AuthenticateInput,
  Device,
  DeviceStore,
  Enrollment,
  Platform,
  TokenUpdateInput,
} from '../checkin/store.ts';
import { chunked, withdrawQueued } from './command-store.ts';
import { decodeStringCursor } from './cursor.ts';
import type { Database } from './database.ts';
import {
  modelsOf,
  toBool,
  toDate,
  toDateOrNull,
  type DeviceRow,
  type EnrollmentRow,
  type Models,
} from './models.ts';
import { clampLimit, dbId, keysetPage, likeAny } from './sql-kit.ts';

const TOUCH_CHUNK = 500;

const PLATFORMS: readonly Platform[] = ['macos', 'ios', 'ipados'];
const CHANNELS: readonly ChannelType[] = [
  'device',
  'user',
  'shared_ipad_user',
  'user_enrollment_device',
  'user_enrollment_user',
];

export class SqlDeviceStore implements DeviceStore {
  private readonly m: Models;

  constructor(private readonly db: Database) {
    this.m = modelsOf(db.sequelize);
  }

  async getDevice(udid: string): Promise<Device | null> {
    const row = await this.m.Device.findByPk(udid);
    return row ? toDevice(row) : null;
  }

  async findDeviceByCert(fingerprint: string): Promise<Device | null> {
    const row = await this.m.Device.findOne({ where: { certFingerprint: fingerprint } });
    return row ? toDevice(row) : null;
  }

  async authenticate(input: AuthenticateInput, now: Date): Promise<Device> {
    return this.db.write(
      async (t) => {
        const { Device } = this.m;
        const attributes = {
          platform: input.platform,
          osVersion: input.osVersion,
          buildVersion: input.buildVersion,
          model: input.model,
          productName: input.productName,
          serialNumber: input.serialNumber,
          deviceName: input.deviceName,
          userEnrollment: input.userEnrollment,
          enrolled: false,
          certFingerprint: input.certFingerprint,
          updatedAt: now,
        };
        // No locking read here: on MariaDB a locking read of a missing row takes a gap lock, and
        // concurrent Authenticates of new devices would deadlock. Two inserts of the same UDID end in
        // a unique violation instead, and the retry (retryOnConflict) updates.
        const existing = await Device.findByPk(input.udid, { transaction: t, attributes: ['udid'] });
        if (existing) {
          await Device.update(attributes, { where: { udid: input.udid }, transaction: t });
        } else {
          await Device.create(
            {
              udid: input.udid,
              ...attributes,
              enrolledAt: null,
              checkedOutAt: null,
              lastSeenAt: null,
              userId: null,
              createdAt: now,
            },
            { transaction: t },
          );
        }
        await this.m.Enrollment.update(
          { enabled: false, updatedAt: now },
          { where: { udid: input.udid }, transaction: t },
        );
        await withdrawQueued(this.db, t, { udid: input.udid }, now);
        const row = await Device.findByPk(input.udid, { transaction: t });
        if (!row) throw new Error(`device ${input.udid} vanished during Authenticate`);
        return toDevice(row);
      },
      { retryOnConflict: true },
    );
  }

  async tokenUpdate(
    input: TokenUpdateInput,
    now: Date,
  ): Promise<{ firstForDevice: boolean; enrollment: Enrollment }> {
    return this.db.write(
      async (t) => {
        const { Device, Enrollment } = this.m;
        // Locking the device serialises the device and user channels' TokenUpdates of one device.
        const device = await Device.findByPk(input.udid, {
          transaction: t,
          lock: true,
          attributes: ['udid'],
        });
        if (!device) throw new Error(`TokenUpdate for unknown device ${input.udid}: Authenticate first`);
        // The device lock above already serialises this; no locking read (gap locks on MariaDB).
        const existing = (await Enrollment.findByPk(input.enrollmentId, { transaction: t }))?.get({
          plain: true,
        });
        if (existing && existing.udid !== input.udid) {
          throw new Error(`enrollment ${input.enrollmentId} belongs to another device`);
        }
        // The first TokenUpdate of an enrollment (since Authenticate) replaces everything; later ones may
        // leave out the UnlockToken, which then stays.
        const first = !existing || !toBool(existing.enabled);
        const unlockToken = input.unlockToken
          ? Buffer.from(input.unlockToken)
          : first
            ? null
            : (existing?.unlockToken ?? null);
        const values = {
          channel: input.channel,
          appleUserId: input.appleUserId,
          userShortName: input.userShortName,
          userLongName: input.userLongName,
          topic: input.topic,
          pushToken: input.pushToken,
          pushMagic: input.pushMagic,
          unlockToken,
          enabled: true,
          pushTokenDead: false,
          tokenUpdatedAt: now,
          updatedAt: now,
        };
        if (existing) {
          await Enrollment.update(values, { where: { id: input.enrollmentId }, transaction: t });
        } else {
          await Enrollment.create(
            { id: input.enrollmentId, udid: input.udid, ...values, createdAt: now },
            { transaction: t },
          );
        }
        let firstForDevice = false;
        if (input.channel === 'device' || input.channel === 'user_enrollment_device') {
          const [changed] = await Device.update(
            { enrolled: true, enrolledAt: now, checkedOutAt: null, updatedAt: now },
            { where: { udid: input.udid, enrolled: false }, transaction: t },
          );
          firstForDevice = changed === 1;
        }
        const row = await Enrollment.findByPk(input.enrollmentId, { transaction: t });
        if (!row) throw new Error(`enrollment ${input.enrollmentId} vanished during TokenUpdate`);
        return { firstForDevice, enrollment: toEnrollment(row) };
      },
      { retryOnConflict: true },
    );
  }

  async checkOut(udid: string, now: Date): Promise<void> {
    await this.db.write(async (t) => {
      await this.m.Enrollment.update({ enabled: false, updatedAt: now }, { where: { udid }, transaction: t });
      await this.m.Device.update(
        { enrolled: false, checkedOutAt: now, updatedAt: now },
        { where: { udid }, transaction: t },
      );
    });
  }

  async getEnrollment(id: string): Promise<Enrollment | null> {
    const row = await this.m.Enrollment.findByPk(id);
    return row ? toEnrollment(row) : null;
  }

  async listEnrollments(udid: string): Promise<Enrollment[]> {
    const rows = await this.m.Enrollment.findAll({ where: { udid }, order: [['id', 'ASC']] });
    return rows.map(toEnrollment);
  }

  async touch(udids: string[], now: Date): Promise<void> {
    const unique = [...new Set(udids)].sort();
    if (unique.length === 0) return;
    await this.db.write(async (t) => {
      for (const part of chunked(unique, TOUCH_CHUNK)) {
        if (this.db.dialect === 'postgres') {
          // Postgres locks an UPDATE's rows in scan (heap) order, which differs between two concurrent
          // touches: lock them in key order first, or they deadlock. (InnoDB walks the sorted IN list.)
          await this.m.Device.findAll({
            attributes: ['udid'],
            where: { udid: part },
            order: [['udid', 'ASC']],
            lock: true,
            transaction: t,
          });
        }
        await this.m.Device.update(
          { lastSeenAt: now },
          {
            where: { udid: part, [Op.or]: [{ lastSeenAt: null }, { lastSeenAt: { [Op.lt]: now } }] },
            transaction: t,
          },
        );
      }
    });
  }

  async listDevices(opts: {
    limit: number;
    cursor: string | null;
    q: string | null;
    siteId?: string | null;
  }): Promise<{ items: Device[]; nextCursor: string | null }> {
    const limit = clampLimit(opts.limit);
    const conditions: WhereOptions<DeviceRow>[] = [];
    if (opts.siteId !== undefined && opts.siteId !== null) {
      const site = dbId(opts.siteId);
      if (site === null) return { items: [], nextCursor: null };
      // devices.user_id is text, user_sites.user_id a number: compare as text on all three databases.
      const asText = this.db.dialect === 'mariadb' ? 'CAST(us.user_id AS CHAR)' : 'CAST(us.user_id AS TEXT)';
      conditions.push(
        this.db.sequelize.literal(
          `user_id IN (SELECT ${asText} FROM user_sites us WHERE us.site_id = ${this.db.sequelize.escape(site)})`,
        ),
      );
    }
    if (opts.cursor !== null) conditions.push({ udid: { [Op.gt]: decodeStringCursor(opts.cursor) } });
    const q = opts.q?.trim() ?? '';
    if (q !== '') {
      conditions.push(likeAny(this.db.sequelize, q, ['udid', 'serial_number', 'device_name']));
    }
    const rows = await this.m.Device.findAll({
      where: { [Op.and]: conditions },
      order: [['udid', 'ASC']],
      limit: limit + 1,
    });
    const page = keysetPage(rows, limit, (row) => row.get({ plain: true }).udid);
    return { items: page.items.map(toDevice), nextCursor: page.nextCursor };
  }

  async assignUser(udid: string, userId: string | null): Promise<Device | null> {
    return this.db.write(async (t) => {
      const [changed] = await this.m.Device.update(
        { userId, updatedAt: new Date() },
        { where: { udid }, transaction: t },
      );
      if (changed === 0) return null;
      const row = await this.m.Device.findByPk(udid, { transaction: t });
      return row ? toDevice(row) : null;
    });
  }
}

function toPlatform(value: string): Platform {
  const platform = PLATFORMS.find((p) => p === value);
  if (!platform) throw new Error(`unknown platform in the database: ${value}`);
  return platform;
}

function toChannel(value: string): ChannelType {
  const channel = CHANNELS.find((c) => c === value);
  if (!channel) throw new Error(`unknown channel in the database: ${value}`);
  return channel;
}

function toDevice(row: Model<DeviceRow>): Device {
  const d = row.get({ plain: true });
  return {
    udid: d.udid,
    platform: toPlatform(d.platform),
    osVersion: d.osVersion,
    buildVersion: d.buildVersion,
    model: d.model,
    productName: d.productName,
    serialNumber: d.serialNumber,
    deviceName: d.deviceName,
    userEnrollment: toBool(d.userEnrollment),
    enrolled: toBool(d.enrolled),
    enrolledAt: toDateOrNull(d.enrolledAt),
    checkedOutAt: toDateOrNull(d.checkedOutAt),
    lastSeenAt: toDateOrNull(d.lastSeenAt),
    userId: d.userId,
    certFingerprint: d.certFingerprint,
    createdAt: toDate(d.createdAt),
    updatedAt: toDate(d.updatedAt),
  };
}

function toEnrollment(row: Model<EnrollmentRow>): Enrollment {
  const e = row.get({ plain: true });
  return {
    id: e.id,
    udid: e.udid,
    channel: toChannel(e.channel),
    appleUserId: e.appleUserId,
    userShortName: e.userShortName,
    userLongName: e.userLongName,
    topic: e.topic,
    pushToken: e.pushToken,
    pushMagic: e.pushMagic,
    unlockToken: e.unlockToken === null ? null : new Uint8Array(e.unlockToken),
    enabled: toBool(e.enabled),
    pushTokenDead: toBool(e.pushTokenDead),
    tokenUpdatedAt: toDateOrNull(e.tokenUpdatedAt),
    createdAt: toDate(e.createdAt),
    updatedAt: toDate(e.updatedAt),
  };
}
