import { QueryTypes, UniqueConstraintError, type Sequelize, type Transaction } from 'sequelize';
import { invitationUrlFrom, type AppleUser } from '../vpp/apple-client.ts';
import { LocationExistsError } from '../vpp/errors.ts';
import {
  publicStatus,
  type AddRegistrationsResult,
  type AppliedUsers,
  type EventOutcome,
  type Location,
  type LocationPatch,
  type LocationSecrets,
  type LocationStatus,
  type NewLocation,
  type OutstandingWork,
  type Page,
  type PendingRegistration,
  type Registration,
  type RegistrationState,
  type VppStore,
} from '../vpp/store.ts';
import { chunked } from './command-store.ts';
import { decodeStringCursor, invalidCursor } from './cursor.ts';
import type { Database } from './database.ts';
import { toBool, toDate, toDateOrNull, toInt, toIntOrNull } from './models.ts';
import { clampLimit, containsPattern, dbId, dbIds, exec, idString, keysetPage } from './sql-kit.ts';
import { vppModelsOf, type VppModels } from './vpp-models.ts';

const IN_CHUNK = 500;
/** users per transaction in `addRegistrations` */
const ADD_CHUNK = 1000;
const MAX_TEXT = 500;

const clip = (s: string | null) => (s === null ? null : s.slice(0, MAX_TEXT));

const LOCATION_STATUSES = new Set<LocationStatus>([
  'setting_up',
  'active',
  'token_expired',
  'token_revoked',
  'token_invalid',
]);
const STATES = new Set<RegistrationState>([
  'pending',
  'creating',
  'created',
  'lookup',
  'registered',
  'associated',
  'failed',
  'retired',
]);
/** States before Apple's answer is known. */
const BEFORE_REGISTERED: readonly RegistrationState[] = [
  'pending',
  'creating',
  'created',
  'lookup',
  'failed',
];

interface LocationQueryRow {
  id: unknown;
  name: string;
  s_token_sealed: string;
  organization_name: string;
  location_name: string | null;
  country_code: string | null;
  token_expiration: unknown;
  apple_uid: string | null;
  site_id: unknown;
  auto_register_managed_users: unknown;
  status: string;
  status_message: string | null;
  notification_token_hash: string | null;
  invitation_template: string | null;
  version_id: string | null;
  last_synced_at: unknown;
  last_sync_error: string | null;
  created_at: unknown;
  updated_at: unknown;
}

function toLocation(r: LocationQueryRow): Location & LocationSecrets {
  const status = LOCATION_STATUSES.has(r.status as LocationStatus) ? (r.status as LocationStatus) : 'active';
  return {
    id: idString(r.id),
    name: r.name,
    organizationName: r.organization_name,
    locationName: r.location_name,
    countryCode: r.country_code,
    tokenExpiration: toDateOrNull(r.token_expiration),
    appleUid: r.apple_uid,
    siteId: r.site_id === null || r.site_id === undefined ? null : idString(r.site_id),
    autoRegisterManagedUsers: toBool(r.auto_register_managed_users),
    status,
    statusMessage: r.status_message,
    invitationTemplate: r.invitation_template,
    versionId: r.version_id,
    lastSyncedAt: toDateOrNull(r.last_synced_at),
    lastSyncError: r.last_sync_error,
    createdAt: toDate(r.created_at),
    updatedAt: toDate(r.updated_at),
    sTokenSealed: r.s_token_sealed,
    notificationTokenHash: r.notification_token_hash,
  };
}

/** Drops the secrets (what leaves the store for presentation). */
function publicLocation(l: Location & LocationSecrets): Location {
  const { sTokenSealed: _s, notificationTokenHash: _n, ...rest } = l;
  return rest;
}

interface RegistrationQueryRow {
  id: unknown;
  location_id: unknown;
  user_id: unknown;
  client_user_id: string;
  state: string;
  managed: unknown;
  invite_code: string | null;
  invitation_url: string | null;
  id_hash: string | null;
  event_id: string | null;
  error_number: unknown;
  error_message: string | null;
  requested_at: unknown;
  sent_at: unknown;
  registered_at: unknown;
  associated_at: unknown;
  retired_at: unknown;
  created_at: unknown;
  updated_at: unknown;
}

const REGISTRATION_COLUMNS = `id, location_id, user_id, client_user_id, state, managed, invite_code, invitation_url,
  id_hash, event_id, error_number, error_message, requested_at, sent_at, registered_at, associated_at, retired_at,
  created_at, updated_at`;

function toRegistration(r: RegistrationQueryRow): Registration {
  const state = STATES.has(r.state as RegistrationState) ? (r.state as RegistrationState) : 'pending';
  return {
    id: idString(r.id),
    locationId: idString(r.location_id),
    userId: idString(r.user_id),
    clientUserId: r.client_user_id,
    state,
    status: publicStatus(state),
    managed: toBool(r.managed),
    inviteCode: r.invite_code,
    invitationUrl: r.invitation_url,
    idHash: r.id_hash,
    eventId: r.event_id,
    errorNumber: toIntOrNull(r.error_number),
    errorMessage: r.error_message,
    requestedAt: toDate(r.requested_at),
    sentAt: toDateOrNull(r.sent_at),
    registeredAt: toDateOrNull(r.registered_at),
    associatedAt: toDateOrNull(r.associated_at),
    retiredAt: toDateOrNull(r.retired_at),
    createdAt: toDate(r.created_at),
    updatedAt: toDate(r.updated_at),
  };
}

/** `VppStore` with sequelize on SQLite, Postgres and MariaDB. */
export class SqlVppStore implements VppStore {
  private readonly m: VppModels;
  private readonly sequelize: Sequelize;

  constructor(private readonly db: Database) {
    this.m = vppModelsOf(db.sequelize);
    this.sequelize = db.sequelize;
  }

  // ---------- locations ----------

  async createLocation(input: NewLocation, seal: (id: string) => string, now: Date): Promise<Location> {
    try {
      return await this.db.write(async (t) => {
        const siteId = input.siteId === null ? null : dbId(input.siteId);
        const row = await this.m.Location.create(
          {
            name: input.name,
            sTokenSealed: '',
            organizationName: input.organizationName,
            locationName: input.locationName,
            countryCode: input.countryCode,
            tokenExpiration: input.tokenExpiration,
            appleUid: input.appleUid,
            siteId,
            autoRegisterManagedUsers: input.autoRegisterManagedUsers,
            status: 'setting_up',
            statusMessage: null,
            notificationTokenHash: input.notificationTokenHash,
            invitationTemplate: input.invitationTemplate,
            versionId: null,
            lastSyncedAt: null,
            lastSyncError: null,
            createdAt: now,
            updatedAt: now,
          },
          { transaction: t },
        );
        const id = idString(row.get('id'));
        await exec(this.sequelize, t, 'UPDATE vpp_locations SET s_token_sealed = :sealed WHERE id = :id', {
          sealed: seal(id),
          id: Number(id),
        });
        const created = await this.locationIn(id, t);
        if (!created) throw new Error('location vanished while being created');
        return publicLocation(created);
      });
    } catch (err) {
      if (err instanceof UniqueConstraintError && input.appleUid !== null) {
        const existing = await this.findLocationByAppleUid(input.appleUid);
        throw new LocationExistsError(existing?.id ?? null);
      }
      throw err;
    }
  }

  async getLocation(id: string): Promise<(Location & LocationSecrets) | null> {
    return this.locationIn(id);
  }

  async findLocationByAppleUid(appleUid: string): Promise<Location | null> {
    const rows = await this.sequelize.query<LocationQueryRow>(
      'SELECT * FROM vpp_locations WHERE apple_uid = :appleUid',
      {
        type: QueryTypes.SELECT,
        replacements: { appleUid },
      },
    );
    const row = rows[0];
    return row ? publicLocation(toLocation(row)) : null;
  }

  async listLocations(opts: {
    limit: number;
    cursor: string | null;
    q: string | null;
    siteId?: string | null;
  }): Promise<Page<Location>> {
    const limit = clampLimit(opts.limit);
    const where: string[] = [];
    const replacements: Record<string, unknown> = { limit: limit + 1 };
    if (opts.siteId !== undefined && opts.siteId !== null) {
      const site = dbId(opts.siteId);
      if (site === null) return { items: [], nextCursor: null };
      where.push('site_id = :site');
      replacements.site = site;
    }
    if (opts.cursor !== null) {
      const after = dbId(decodeStringCursor(opts.cursor));
      if (after === null) throw invalidCursor();
      where.push('id > :after');
      replacements.after = after;
    }
    const q = opts.q?.trim() ?? '';
    if (q !== '') {
      replacements.pattern = containsPattern(q);
      where.push(
        `(LOWER(name) LIKE :pattern ESCAPE '!' OR LOWER(location_name) LIKE :pattern ESCAPE '!'
          OR LOWER(organization_name) LIKE :pattern ESCAPE '!')`,
      );
    }
    const rows = await this.sequelize.query<LocationQueryRow>(
      `SELECT * FROM vpp_locations ${where.length > 0 ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY id LIMIT :limit`,
      { type: QueryTypes.SELECT, replacements },
    );
    return keysetPage(
      rows.map((r) => publicLocation(toLocation(r))),
      limit,
      (l) => l.id,
    );
  }

  async allLocationIds(): Promise<string[]> {
    const rows = await this.sequelize.query<{ id: unknown }>('SELECT id FROM vpp_locations ORDER BY id', {
      type: QueryTypes.SELECT,
    });
    return rows.map((r) => idString(r.id));
  }

  async updateLocation(id: string, patch: LocationPatch, now: Date): Promise<Location | null> {
    const key = dbId(id);
    if (key === null) return null;
    return this.db.write(async (t) => {
      const current = await this.locationIn(id, t);
      if (!current) return null;
      const values: Record<string, unknown> = { updatedAt: now };
      if (patch.name !== undefined) values.name = patch.name;
      if (patch.siteId !== undefined) values.siteId = patch.siteId === null ? null : dbId(patch.siteId);
      if (patch.autoRegisterManagedUsers !== undefined)
        values.autoRegisterManagedUsers = patch.autoRegisterManagedUsers;
      if (patch.status !== undefined) values.status = patch.status;
      if (patch.statusMessage !== undefined) values.statusMessage = clip(patch.statusMessage);
      if (patch.invitationTemplate !== undefined) values.invitationTemplate = patch.invitationTemplate;
      if (patch.renewal) {
        values.sTokenSealed = patch.renewal.seal(id);
        values.organizationName = patch.renewal.organizationName;
        values.locationName = patch.renewal.locationName;
        values.countryCode = patch.renewal.countryCode;
        values.tokenExpiration = patch.renewal.tokenExpiration;
      }
      await this.m.Location.update(values, { where: { id: key }, transaction: t });
      const updated = await this.locationIn(id, t);
      return updated ? publicLocation(updated) : null;
    });
  }

  async markLocationToken(
    id: string,
    sTokenSealed: string,
    status: LocationStatus,
    message: string,
    now: Date,
  ): Promise<void> {
    const key = dbId(id);
    if (key === null) return;
    await this.db.write(async (t) => {
      await this.m.Location.update(
        { status, statusMessage: clip(message), updatedAt: now },
        { where: { id: key, sTokenSealed }, transaction: t },
      );
    });
  }

  async setSyncState(
    id: string,
    state: { versionId?: string | null; syncedAt?: Date; error: string | null },
    now: Date,
  ): Promise<void> {
    const key = dbId(id);
    if (key === null) return;
    const values: Record<string, unknown> = { lastSyncError: clip(state.error), updatedAt: now };
    if (state.versionId !== undefined) values.versionId = state.versionId;
    if (state.syncedAt !== undefined) values.lastSyncedAt = state.syncedAt;
    await this.db.write(async (t) => {
      await this.m.Location.update(values, { where: { id: key }, transaction: t });
    });
  }

  async deleteLocation(id: string): Promise<boolean> {
    const key = dbId(id);
    if (key === null) return false;
    return this.db.write(async (t) => {
      // Children first (explicitly: not every connection may enforce the cascade).
      await exec(this.sequelize, t, 'DELETE FROM vpp_notifications WHERE location_id = :key', { key });
      await exec(this.sequelize, t, 'DELETE FROM vpp_registrations WHERE location_id = :key', { key });
      const removed = await this.m.Location.destroy({ where: { id: key }, transaction: t });
      return removed > 0;
    });
  }

  // ---------- registrations ----------

  async addRegistrations(
    locationId: string,
    userIds: readonly string[],
    opts: { managed: boolean },
    newClientUserId: () => string,
    now: Date,
  ): Promise<AddRegistrationsResult> {
    const loc = dbId(locationId);
    const users = dbIds(userIds).sort((a, b) => a - b);
    const result: AddRegistrationsResult = { queued: [], existing: [] };
    if (loc === null || users.length === 0) return result;
    for (const part of chunked(users, ADD_CHUNK)) {
      const r = await this.db.write(async (t) => {
        const queued: string[] = [];
        const existing: string[] = [];
        const rows: { id: unknown; user_id: unknown; state: string; managed: unknown }[] = [];
        for (const ids of chunked(part, IN_CHUNK)) {
          rows.push(
            ...(await this.sequelize.query<{
              id: unknown;
              user_id: unknown;
              state: string;
              managed: unknown;
            }>(
              `SELECT id, user_id, state, managed FROM vpp_registrations
                WHERE location_id = :loc AND user_id IN (:ids)`,
              { type: QueryTypes.SELECT, replacements: { loc, ids }, transaction: t },
            )),
          );
        }
        const byUser = new Map(rows.map((r) => [toInt(r.user_id), r]));
        const missing = part.filter((u) => !byUser.has(u));
        const inserted = new Map<string, number>();
        for (const ids of chunked(missing, IN_CHUNK)) {
          const values = ids.map((userId) => {
            const clientUserId = newClientUserId();
            inserted.set(clientUserId, userId);
            return {
              locationId: loc,
              userId,
              clientUserId,
              state: 'pending',
              managed: opts.managed,
              inviteCode: null,
              invitationUrl: null,
              idHash: null,
              eventId: null,
              errorNumber: null,
              errorMessage: null,
              requestedAt: now,
              sentAt: null,
              registeredAt: null,
              associatedAt: null,
              retiredAt: null,
              createdAt: now,
              updatedAt: now,
            };
          });
          // A concurrent call may insert the same (location, user): that row wins.
          await this.m.Registration.bulkCreate(values, { transaction: t, ignoreDuplicates: true });
        }
        if (inserted.size > 0) {
          const found = new Set<string>();
          for (const ids of chunked([...inserted.keys()], IN_CHUNK)) {
            const got = await this.sequelize.query<{ client_user_id: string }>(
              'SELECT client_user_id FROM vpp_registrations WHERE client_user_id IN (:ids)',
              { type: QueryTypes.SELECT, replacements: { ids }, transaction: t },
            );
            for (const g of got) found.add(g.client_user_id);
          }
          for (const [clientUserId, userId] of inserted) {
            (found.has(clientUserId) ? queued : existing).push(String(userId));
          }
        }
        const restartFailed: number[] = [];
        const upgradeManaged: number[] = [];
        for (const userId of part) {
          const row = byUser.get(userId);
          if (!row) continue;
          if (row.state === 'retired') {
            // A new registration: a new clientUserId (Apple keeps the retired one).
            await exec(
              this.sequelize,
              t,
              `UPDATE vpp_registrations SET client_user_id = :cid, state = 'pending', managed = :managed,
                      invite_code = NULL, invitation_url = NULL, id_hash = NULL, event_id = NULL,
                      error_number = NULL, error_message = NULL, requested_at = :now, sent_at = NULL,
                      registered_at = NULL, associated_at = NULL, retired_at = NULL, updated_at = :now
                WHERE id = :id AND state = 'retired'`,
              { cid: newClientUserId(), managed: opts.managed, now, id: toInt(row.id) },
            );
            queued.push(String(userId));
          } else if (row.state === 'failed') {
            restartFailed.push(toInt(row.id));
            queued.push(String(userId));
          } else {
            if (opts.managed && row.state === 'pending' && !toBool(row.managed))
              upgradeManaged.push(toInt(row.id));
            existing.push(String(userId));
          }
        }
        for (const ids of chunked(restartFailed, IN_CHUNK)) {
          // Same clientUserId: if Apple did create it after all, the create answers 9716 and we read it.
          await exec(
            this.sequelize,
            t,
            `UPDATE vpp_registrations SET state = 'pending', managed = :managed, event_id = NULL, error_number = NULL,
                    error_message = NULL, requested_at = :now, updated_at = :now
              WHERE id IN (:ids) AND state = 'failed'`,
            { managed: opts.managed, now, ids },
          );
        }
        for (const ids of chunked(upgradeManaged, IN_CHUNK)) {
          await exec(
            this.sequelize,
            t,
            `UPDATE vpp_registrations SET managed = :yes, updated_at = :now WHERE id IN (:ids) AND state = 'pending'`,
            { yes: true, now, ids },
          );
        }
        return { queued, existing };
      });
      result.queued.push(...r.queued);
      result.existing.push(...r.existing);
    }
    return result;
  }

  async getRegistration(userId: string, locationId: string): Promise<Registration | null> {
    const user = dbId(userId);
    const loc = dbId(locationId);
    if (user === null || loc === null) return null;
    const rows = await this.sequelize.query<RegistrationQueryRow>(
      `SELECT ${REGISTRATION_COLUMNS} FROM vpp_registrations WHERE location_id = :loc AND user_id = :user`,
      { type: QueryTypes.SELECT, replacements: { loc, user } },
    );
    const row = rows[0];
    return row ? toRegistration(row) : null;
  }

  async registrationsOfUser(userId: string): Promise<Registration[]> {
    const user = dbId(userId);
    if (user === null) return [];
    const rows = await this.sequelize.query<RegistrationQueryRow>(
      `SELECT ${REGISTRATION_COLUMNS} FROM vpp_registrations WHERE user_id = :user ORDER BY location_id`,
      { type: QueryTypes.SELECT, replacements: { user } },
    );
    return rows.map(toRegistration);
  }

  async registrationsAt(locationId: string, userIds: readonly string[]): Promise<Registration[]> {
    const loc = dbId(locationId);
    const users = dbIds(userIds);
    if (loc === null || users.length === 0) return [];
    const out: Registration[] = [];
    for (const ids of chunked(users, IN_CHUNK)) {
      const rows = await this.sequelize.query<RegistrationQueryRow>(
        `SELECT ${REGISTRATION_COLUMNS} FROM vpp_registrations WHERE location_id = :loc AND user_id IN (:ids)`,
        { type: QueryTypes.SELECT, replacements: { loc, ids } },
      );
      out.push(...rows.map(toRegistration));
    }
    return out;
  }

  async pendingRegistrations(locationId: string, limit: number): Promise<PendingRegistration[]> {
    const loc = dbId(locationId);
    if (loc === null) return [];
    const rows = await this.sequelize.query<{
      id: unknown;
      user_id: unknown;
      client_user_id: string;
      managed: unknown;
      managed_apple_id: string | null;
    }>(
      `SELECT r.id, r.user_id, r.client_user_id, r.managed, u.managed_apple_id
         FROM vpp_registrations r JOIN users u ON u.id = r.user_id
        WHERE r.location_id = :loc AND r.state = 'pending'
        ORDER BY r.id
        LIMIT :limit`,
      { type: QueryTypes.SELECT, replacements: { loc, limit } },
    );
    return rows.map((r) => {
      const managed = toBool(r.managed);
      return {
        id: idString(r.id),
        userId: idString(r.user_id),
        clientUserId: r.client_user_id,
        managed,
        managedAppleId: managed ? r.managed_apple_id : null,
      };
    });
  }

  async markCreating(ids: readonly string[], eventId: string, now: Date): Promise<void> {
    const keys = ids.map(dbId).filter((n): n is number => n !== null);
    if (keys.length === 0) return;
    await this.db.write(async (t) => {
      for (const part of chunked(keys, IN_CHUNK)) {
        await exec(
          this.sequelize,
          t,
          `UPDATE vpp_registrations SET state = 'creating', event_id = :eventId, sent_at = :now, updated_at = :now
            WHERE id IN (:ids) AND state = 'pending'`,
          { eventId, now, ids: part },
        );
      }
    });
  }

  async failRegistrations(
    ids: readonly string[],
    error: { errorNumber: number | null; errorMessage: string },
    now: Date,
  ): Promise<{ userId: string; clientUserId: string }[]> {
    const keys = ids.map(dbId).filter((n): n is number => n !== null);
    if (keys.length === 0) return [];
    return this.db.write(async (t) => {
      const out: { userId: string; clientUserId: string }[] = [];
      for (const part of chunked(keys, IN_CHUNK)) {
        const rows = await this.sequelize.query<{ user_id: unknown; client_user_id: string }>(
          `SELECT user_id, client_user_id FROM vpp_registrations WHERE id IN (:ids) AND state IN ('pending', 'creating')`,
          { type: QueryTypes.SELECT, replacements: { ids: part }, transaction: t },
        );
        out.push(...rows.map((r) => ({ userId: idString(r.user_id), clientUserId: r.client_user_id })));
        await exec(
          this.sequelize,
          t,
          `UPDATE vpp_registrations SET state = 'failed', error_number = :num, error_message = :msg, event_id = NULL,
                  updated_at = :now
            WHERE id IN (:ids) AND state IN ('pending', 'creating')`,
          { num: error.errorNumber, msg: clip(error.errorMessage), now, ids: part },
        );
      }
      return out;
    });
  }

  async openEvents(
    locationId: string,
    sentBefore: Date,
    limit: number,
  ): Promise<{ eventId: string; sentAt: Date }[]> {
    const loc = dbId(locationId);
    if (loc === null) return [];
    const rows = await this.sequelize.query<{ event_id: string; first_sent: unknown }>(
      `SELECT event_id, MIN(sent_at) AS first_sent FROM vpp_registrations
        WHERE location_id = :loc AND state = 'creating' AND event_id IS NOT NULL
        GROUP BY event_id
        HAVING MIN(sent_at) <= :sentBefore
        ORDER BY first_sent
        LIMIT :limit`,
      { type: QueryTypes.SELECT, replacements: { loc, sentBefore, limit } },
    );
    return rows.map((r) => ({ eventId: r.event_id, sentAt: toDate(r.first_sent) }));
  }

  async finishEvent(
    locationId: string,
    eventId: string,
    failures: readonly { clientUserId: string; errorNumber: number; errorMessage: string }[],
    now: Date,
  ): Promise<EventOutcome> {
    const loc = dbId(locationId);
    const outcome: EventOutcome = { lookups: 0, failed: [], created: 0 };
    if (loc === null) return outcome;
    const byClient = new Map(failures.map((f) => [f.clientUserId, f]));
    return this.db.write(async (t) => {
      const rows = await this.sequelize.query<{ id: unknown; user_id: unknown; client_user_id: string }>(
        `SELECT id, user_id, client_user_id FROM vpp_registrations
          WHERE location_id = :loc AND event_id = :eventId AND state = 'creating' ORDER BY id`,
        { type: QueryTypes.SELECT, replacements: { loc, eventId }, transaction: t },
      );
      const lookup: number[] = [];
      const created: number[] = [];
      for (const r of rows) {
        const f = byClient.get(r.client_user_id);
        if (!f) created.push(toInt(r.id));
        else if (f.errorNumber === 9716) lookup.push(toInt(r.id));
        else {
          await exec(
            this.sequelize,
            t,
            `UPDATE vpp_registrations SET state = 'failed', event_id = NULL, error_number = :num, error_message = :msg,
                    updated_at = :now WHERE id = :id`,
            { num: f.errorNumber, msg: clip(f.errorMessage), now, id: toInt(r.id) },
          );
          outcome.failed.push({
            userId: idString(r.user_id),
            clientUserId: r.client_user_id,
            errorNumber: f.errorNumber,
            errorMessage: f.errorMessage,
          });
        }
      }
      for (const part of chunked(lookup, IN_CHUNK)) {
        await exec(
          this.sequelize,
          t,
          `UPDATE vpp_registrations SET state = 'lookup', event_id = NULL, updated_at = :now WHERE id IN (:ids)`,
          { now, ids: part },
        );
      }
      for (const part of chunked(created, IN_CHUNK)) {
        await exec(
          this.sequelize,
          t,
          `UPDATE vpp_registrations SET state = 'created', event_id = NULL, updated_at = :now WHERE id IN (:ids)`,
          { now, ids: part },
        );
      }
      outcome.lookups = lookup.length;
      outcome.created = created.length;
      return outcome;
    });
  }

  async lookups(locationId: string, limit: number): Promise<{ id: string; clientUserId: string }[]> {
    const loc = dbId(locationId);
    if (loc === null) return [];
    const rows = await this.sequelize.query<{ id: unknown; client_user_id: string }>(
      `SELECT id, client_user_id FROM vpp_registrations WHERE location_id = :loc AND state = 'lookup' ORDER BY id
        LIMIT :limit`,
      { type: QueryTypes.SELECT, replacements: { loc, limit } },
    );
    return rows.map((r) => ({ id: idString(r.id), clientUserId: r.client_user_id }));
  }

  async markLookup(locationId: string, clientUserIds: readonly string[], now: Date): Promise<number> {
    const loc = dbId(locationId);
    if (loc === null || clientUserIds.length === 0) return 0;
    return this.db.write(async (t) => this.markLookupIn(t, loc, clientUserIds, now));
  }

  private async markLookupIn(
    t: Transaction,
    loc: number,
    clientUserIds: readonly string[],
    now: Date,
  ): Promise<number> {
    let n = 0;
    for (const part of chunked([...new Set(clientUserIds)].sort(), IN_CHUNK)) {
      const rows = await this.sequelize.query<{ id: unknown }>(
        `SELECT id FROM vpp_registrations
          WHERE location_id = :loc AND client_user_id IN (:ids) AND state IN ('creating', 'created', 'failed')`,
        { type: QueryTypes.SELECT, replacements: { loc, ids: part }, transaction: t },
      );
      if (rows.length === 0) continue;
      n += rows.length;
      await exec(
        this.sequelize,
        t,
        `UPDATE vpp_registrations SET state = 'lookup', event_id = NULL, updated_at = :now WHERE id IN (:ids)`,
        { now, ids: rows.map((r) => toInt(r.id)) },
      );
    }
    return n;
  }

  async restartRegistration(id: string, newClientUserId: string | null, now: Date): Promise<void> {
    const key = dbId(id);
    if (key === null) return;
    await this.db.write(async (t) => {
      await exec(
        this.sequelize,
        t,
        `UPDATE vpp_registrations SET state = 'pending', client_user_id = COALESCE(:cid, client_user_id),
                event_id = NULL, error_number = NULL, error_message = NULL, updated_at = :now
          WHERE id = :id AND state = 'lookup'`,
        { cid: newClientUserId, now, id: key },
      );
    });
  }

  async lookupStaleCreated(locationId: string, before: Date): Promise<number> {
    const loc = dbId(locationId);
    if (loc === null) return 0;
    const rows = await this.sequelize.query<{ id: unknown }>(
      `SELECT id FROM vpp_registrations WHERE location_id = :loc AND state = 'created' AND updated_at < :before`,
      { type: QueryTypes.SELECT, replacements: { loc, before } },
    );
    if (rows.length === 0) return 0;
    const ids = rows.map((r) => toInt(r.id));
    await this.db.write(async (t) => {
      for (const part of chunked(ids, IN_CHUNK)) {
        await exec(
          this.sequelize,
          t,
          `UPDATE vpp_registrations SET state = 'lookup', updated_at = :now WHERE id IN (:ids) AND state = 'created'`,
          { now: new Date(), ids: part },
        );
      }
    });
    return ids.length;
  }

  async outstanding(locationId: string): Promise<OutstandingWork> {
    const loc = dbId(locationId);
    const out: OutstandingWork = { pending: 0, creating: 0, created: 0, lookup: 0 };
    if (loc === null) return out;
    const rows = await this.sequelize.query<{ state: string; n: unknown }>(
      `SELECT state, COUNT(*) AS n FROM vpp_registrations
        WHERE location_id = :loc AND state IN ('pending', 'creating', 'created', 'lookup')
        GROUP BY state`,
      { type: QueryTypes.SELECT, replacements: { loc } },
    );
    for (const r of rows) {
      if (r.state === 'pending' || r.state === 'creating' || r.state === 'created' || r.state === 'lookup') {
        out[r.state] = toInt(r.n);
      }
    }
    return out;
  }

  async applyAppleUsers(
    locationId: string,
    users: readonly AppleUser[],
    now: Date,
    opts: {
      notification?: { id: string; type: string };
      failures?: readonly { clientUserId: string; errorNumber: number; errorMessage: string }[];
    } = {},
  ): Promise<AppliedUsers & { duplicate: boolean; failed: EventOutcome['failed']; failedLookups: number }> {
    const empty = () => ({
      registered: [],
      associated: [],
      retired: [],
      unknown: 0,
      lookups: 0,
      duplicate: false,
      failed: [],
      failedLookups: 0,
    });
    const loc = dbId(locationId);
    if (loc === null) return { ...empty(), unknown: users.length };
    return this.db.write(
      async (t) => {
        const out: AppliedUsers & {
          duplicate: boolean;
          failed: EventOutcome['failed'];
          failedLookups: number;
        } = empty();
        if (opts.notification) {
          const seen = await this.sequelize.query<{ notification_id: string }>(
            'SELECT notification_id FROM vpp_notifications WHERE notification_id = :id',
            { type: QueryTypes.SELECT, replacements: { id: opts.notification.id }, transaction: t },
          );
          if (seen.length > 0) return { ...out, duplicate: true };
          await this.m.Notification.create(
            {
              notificationId: opts.notification.id,
              locationId: loc,
              notificationType: opts.notification.type.slice(0, 64),
              receivedAt: now,
            },
            { transaction: t },
          );
        }
        const template = (
          await this.sequelize.query<{ invitation_template: string | null }>(
            'SELECT invitation_template FROM vpp_locations WHERE id = :loc',
            { type: QueryTypes.SELECT, replacements: { loc }, transaction: t },
          )
        )[0]?.invitation_template;
        const urlOf = (code: string) => (template ? invitationUrlFrom(template, code) : null);

        const wanted = [
          ...new Set([
            ...users.map((u) => u.clientUserId),
            ...(opts.failures ?? []).map((f) => f.clientUserId),
          ]),
        ];
        const rows = new Map<string, RegistrationQueryRow>();
        for (const part of chunked(wanted.sort(), IN_CHUNK)) {
          const got = await this.sequelize.query<RegistrationQueryRow>(
            `SELECT ${REGISTRATION_COLUMNS} FROM vpp_registrations WHERE location_id = :loc AND client_user_id IN (:ids)`,
            { type: QueryTypes.SELECT, replacements: { loc, ids: part }, transaction: t },
          );
          for (const g of got) rows.set(g.client_user_id, g);
        }

        const toLookup: string[] = [];
        for (const u of users) {
          const row = rows.get(u.clientUserId);
          if (!row) {
            out.unknown += 1;
            continue;
          }
          const state = row.state as RegistrationState;
          if (state === 'retired') continue;
          const id = toInt(row.id);
          const ref = { userId: idString(row.user_id), clientUserId: row.client_user_id };
          const status = u.status ?? (u.idHash ? 'Associated' : u.inviteCode ? 'Registered' : undefined);
          if (status === 'Retired') {
            await exec(
              this.sequelize,
              t,
              `UPDATE vpp_registrations SET state = 'retired', event_id = NULL, retired_at = :now, updated_at = :now
                WHERE id = :id`,
              { now, id },
            );
            row.state = 'retired';
            out.retired.push(ref);
          } else if (status === 'Associated') {
            const inviteCode = u.inviteCode ?? row.invite_code;
            const idHash = u.idHash ?? row.id_hash;
            if (state === 'associated' && (idHash === row.id_hash || !u.idHash)) continue;
            await exec(
              this.sequelize,
              t,
              `UPDATE vpp_registrations SET state = 'associated', id_hash = :idHash, invite_code = :inviteCode,
                      invitation_url = :url, event_id = NULL, error_number = NULL, error_message = NULL,
                      registered_at = COALESCE(registered_at, :now), associated_at = COALESCE(associated_at, :now),
                      updated_at = :now
                WHERE id = :id`,
              {
                idHash,
                inviteCode,
                url: inviteCode ? (urlOf(inviteCode) ?? row.invitation_url) : row.invitation_url,
                now,
                id,
              },
            );
            row.state = 'associated';
            if (state !== 'associated' && idHash) out.associated.push({ ...ref, idHash });
          } else if (status === 'Registered') {
            if (state === 'associated' || state === 'registered') {
              if (state === 'registered' && u.inviteCode && u.inviteCode !== row.invite_code) {
                await exec(
                  this.sequelize,
                  t,
                  `UPDATE vpp_registrations SET invite_code = :code, invitation_url = :url, updated_at = :now WHERE id = :id`,
                  { code: u.inviteCode, url: urlOf(u.inviteCode), now, id },
                );
              }
              continue;
            }
            if (!u.inviteCode) {
              if (state !== 'lookup' && state !== 'pending') toLookup.push(row.client_user_id);
              continue;
            }
            await exec(
              this.sequelize,
              t,
              `UPDATE vpp_registrations SET state = 'registered', invite_code = :code, invitation_url = :url,
                      event_id = NULL, error_number = NULL, error_message = NULL,
                      registered_at = COALESCE(registered_at, :now), updated_at = :now
                WHERE id = :id`,
              { code: u.inviteCode, url: urlOf(u.inviteCode), now, id },
            );
            row.state = 'registered';
            out.registered.push(ref);
          }
        }

        for (const f of opts.failures ?? []) {
          const row = rows.get(f.clientUserId);
          if (!row || !BEFORE_REGISTERED.includes(row.state as RegistrationState) || row.state === 'failed')
            continue;
          if (row.state === 'pending') continue; // not sent (again) yet: this failure is about an older request
          if (f.errorNumber === 9716) {
            toLookup.push(row.client_user_id);
            continue;
          }
          await exec(
            this.sequelize,
            t,
            `UPDATE vpp_registrations SET state = 'failed', event_id = NULL, error_number = :num, error_message = :msg,
                    updated_at = :now WHERE id = :id`,
            { num: f.errorNumber, msg: clip(f.errorMessage), now, id: toInt(row.id) },
          );
          row.state = 'failed';
          out.failed.push({
            userId: idString(row.user_id),
            clientUserId: row.client_user_id,
            errorNumber: f.errorNumber,
            errorMessage: f.errorMessage,
          });
        }
        if (toLookup.length > 0) {
          const n = await this.markLookupIn(t, loc, toLookup, now);
          out.lookups += n;
          out.failedLookups = n;
        }
        return out;
      },
      { retryOnConflict: true },
    );
  }

  async recordNotification(
    locationId: string,
    notificationId: string,
    type: string,
    now: Date,
  ): Promise<boolean> {
    const loc = dbId(locationId);
    if (loc === null) return false;
    return this.db.write(
      async (t) => {
        const seen = await this.sequelize.query<{ notification_id: string }>(
          'SELECT notification_id FROM vpp_notifications WHERE notification_id = :id',
          { type: QueryTypes.SELECT, replacements: { id: notificationId }, transaction: t },
        );
        if (seen.length > 0) return false;
        await this.m.Notification.create(
          { notificationId, locationId: loc, notificationType: type.slice(0, 64), receivedAt: now },
          { transaction: t },
        );
        return true;
      },
      { retryOnConflict: true },
    );
  }

  async retireRegistration(id: string, now: Date): Promise<Registration | null> {
    const key = dbId(id);
    if (key === null) return null;
    return this.db.write(async (t) => {
      await exec(
        this.sequelize,
        t,
        `UPDATE vpp_registrations SET state = 'retired', event_id = NULL, retired_at = :now, updated_at = :now
          WHERE id = :id`,
        { now, id: key },
      );
      const rows = await this.sequelize.query<RegistrationQueryRow>(
        `SELECT ${REGISTRATION_COLUMNS} FROM vpp_registrations WHERE id = :id`,
        { type: QueryTypes.SELECT, replacements: { id: key }, transaction: t },
      );
      const row = rows[0];
      return row ? toRegistration(row) : null;
    });
  }

  async purgeNotifications(before: Date): Promise<number> {
    const [row] = await this.sequelize.query<{ n: unknown }>(
      'SELECT COUNT(*) AS n FROM vpp_notifications WHERE received_at < :before',
      { type: QueryTypes.SELECT, replacements: { before } },
    );
    const n = toInt(row?.n ?? 0);
    if (n === 0) return 0;
    await this.db.write(async (t) => {
      await exec(this.sequelize, t, 'DELETE FROM vpp_notifications WHERE received_at < :before', { before });
    });
    return n;
  }

  // ---------- internals ----------

  private async locationIn(id: string, t?: Transaction): Promise<(Location & LocationSecrets) | null> {
    const key = dbId(id);
    if (key === null) return null;
    const rows = await this.sequelize.query<LocationQueryRow>('SELECT * FROM vpp_locations WHERE id = :key', {
      type: QueryTypes.SELECT,
      replacements: { key },
      ...(t ? { transaction: t } : {}),
    });
    const row = rows[0];
    return row ? toLocation(row) : null;
  }
}
