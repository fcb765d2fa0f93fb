import {
  ForeignKeyConstraintError,
  Op,
  QueryTypes,
  Transaction,
  type Model,
  type ModelStatic,
  type Sequelize,
  type WhereOptions,
} from 'sequelize';
import { NameTakenError, SiteInUseError, UnknownIdsError } from '../directory/errors.ts';
import type {
  AssignResult,
  DeviceAssignmentStore,
  GroupPatch,
  GroupStore,
  IdBatches,
  ListOptions,
  NewUser,
  Page,
  Site,
  SiteStore,
  User,
  UserGroup,
  UserListOptions,
  UserPatch,
  UserStore,
} from '../directory/store.ts';
import { chunked } from './command-store.ts';
import { decodeStringCursor } from './cursor.ts';
import type { Database } from './database.ts';
import {
  directoryModelsOf,
  type DirectoryModels,
  type GroupModel,
  type GroupRow,
  type SiteModel,
  type SiteRow,
  type UserModel,
  type UserRow,
} from './directory-models.ts';
import { modelsOf, toDate, toInt } from './models.ts';
import { clampLimit, dbId, dbIds, idString, keysetPage, likeAny } from './sql-kit.ts';

const IN_CHUNK = 500;
const ID_BATCH = 1000;

const byNumber = (a: number, b: number) => a - b;

/** The ids among `ids` with no row in `model`, in the order given, without duplicates. */
async function missingIds(
  model: ModelStatic<Model>,
  ids: readonly string[],
  t?: Transaction,
): Promise<string[]> {
  const unique = [...new Set(ids)];
  const numeric = dbIds(unique);
  const found = new Set<string>();
  for (const part of chunked(numeric, IN_CHUNK)) {
    const rows = await model.findAll({
      attributes: ['id'],
      where: { id: part },
      ...(t ? { transaction: t } : {}),
      raw: true,
    });
    for (const row of rows as unknown as { id: unknown }[]) found.add(idString(row.id));
  }
  return unique.filter((id) => !found.has(id));
}

/** Rethrows a foreign key violation (a referenced row deleted concurrently) as the unknown ids it names. */
async function unknownOnForeignKey<T>(
  run: () => Promise<T>,
  recheck: () => Promise<Record<string, string[]>>,
): Promise<T> {
  try {
    return await run();
  } catch (err) {
    if (!(err instanceof ForeignKeyConstraintError)) throw err;
    const unknown = Object.fromEntries(Object.entries(await recheck()).filter(([, ids]) => ids.length > 0));
    if (Object.keys(unknown).length === 0) throw err;
    throw new UnknownIdsError(unknown);
  }
}

function toSite(row: SiteModel): Site {
  const s = row.get({ plain: true });
  return { id: idString(s.id), name: s.name, createdAt: toDate(s.createdAt), updatedAt: toDate(s.updatedAt) };
}

function toUser(row: UserModel, siteIds: string[]): User {
  const u = row.get({ plain: true });
  return {
    id: idString(u.id),
    username: u.username,
    fullName: u.fullName,
    email: u.email,
    managedAppleId: u.managedAppleId,
    siteIds,
    hasPassword: u.passwordHash !== null,
    createdAt: toDate(u.createdAt),
    updatedAt: toDate(u.updatedAt),
  };
}

function toGroup(row: GroupModel, userCount: number): UserGroup {
  const g = row.get({ plain: true });
  return {
    id: idString(g.id),
    name: g.name,
    userCount,
    createdAt: toDate(g.createdAt),
    updatedAt: toDate(g.updatedAt),
  };
}

/** Usernames are unique and looked up regardless of case. */
export const usernameKey = (username: string) => username.toLowerCase();

export class SqlSiteStore implements SiteStore {
  private readonly m: DirectoryModels;

  constructor(private readonly db: Database) {
    this.m = directoryModelsOf(db.sequelize);
  }

  async create(name: string, now: Date): Promise<Site> {
    return this.db.write(
      async (t) => {
        await this.assertNameFree(name, null, t);
        return toSite(await this.m.Site.create({ name, createdAt: now, updatedAt: now }, { transaction: t }));
      },
      { retryOnConflict: true },
    );
  }

  async get(id: string): Promise<Site | null> {
    const n = dbId(id);
    const row = n === null ? null : await this.m.Site.findByPk(n);
    return row ? toSite(row) : null;
  }

  async list(opts: ListOptions): Promise<Page<Site>> {
    const limit = clampLimit(opts.limit);
    const conditions: WhereOptions<SiteRow>[] = [];
    if (opts.cursor !== null) conditions.push({ name: { [Op.gt]: decodeStringCursor(opts.cursor) } });
    const q = opts.q?.trim() ?? '';
    if (q !== '') conditions.push(likeAny(this.db.sequelize, q, ['name']));
    const rows = await this.m.Site.findAll({
      where: { [Op.and]: conditions },
      order: [['name', 'ASC']],
      limit: limit + 1,
    });
    return keysetPage(rows.map(toSite), limit, (s) => s.name);
  }

  async rename(id: string, name: string, now: Date): Promise<Site | null> {
    const n = dbId(id);
    if (n === null) return null;
    return this.db.write(
      async (t) => {
        const row = await this.m.Site.findByPk(n, { transaction: t });
        if (!row) return null;
        if (row.get('name') === name) return toSite(row);
        await this.assertNameFree(name, n, t);
        await this.m.Site.update({ name, updatedAt: now }, { where: { id: n }, transaction: t });
        const updated = await this.m.Site.findByPk(n, { transaction: t });
        return updated ? toSite(updated) : null;
      },
      { retryOnConflict: true },
    );
  }

  async delete(id: string): Promise<boolean> {
    const n = dbId(id);
    if (n === null) return false;
    const locations = async () => {
      const rows = await this.db.sequelize.query<{ n: unknown }>(
        'SELECT COUNT(*) AS n FROM vpp_locations WHERE site_id = :n',
        { type: QueryTypes.SELECT, replacements: { n } },
      );
      return toInt(rows[0]?.n ?? 0);
    };
    const inUse = async () =>
      new SiteInUseError(await this.m.UserSite.count({ where: { siteId: n } }), await locations());
    try {
      return await this.db.write(async (t) => {
        if (!(await this.m.Site.findByPk(n, { transaction: t, attributes: ['id'] }))) return false;
        const users = await this.m.UserSite.count({ where: { siteId: n }, transaction: t });
        if (users > 0) throw new SiteInUseError(users);
        // Enrollment tokens only label the devices they enroll with a site: they let go of it.
        await modelsOf(this.db.sequelize).Token.update(
          { siteId: null },
          { where: { siteId: String(n) }, transaction: t },
        );
        await this.m.Site.destroy({ where: { id: n }, transaction: t });
        return true;
      });
    } catch (err) {
      // A location uses the site, or a user joined it concurrently: a RESTRICT foreign key refused.
      if (err instanceof ForeignKeyConstraintError) throw await inUse();
      throw err;
    }
  }

  missing(ids: readonly string[]): Promise<string[]> {
    return missingIds(this.m.Site, ids);
  }

  private async assertNameFree(name: string, self: number | null, t: Transaction): Promise<void> {
    const other = await this.m.Site.findOne({ where: { name }, attributes: ['id'], transaction: t });
    if (other && toInt(other.get('id')) !== self) throw new NameTakenError('site_name_taken', 'name', name);
  }
}

export class SqlUserStore implements UserStore {
  private readonly m: DirectoryModels;

  constructor(private readonly db: Database) {
    this.m = directoryModelsOf(db.sequelize);
  }

  async create(user: NewUser, now: Date): Promise<User> {
    const siteIds = [...new Set(user.siteIds)];
    return unknownOnForeignKey(
      () =>
        this.db.write(
          async (t) => {
            await this.assertUsernameFree(user.username, null, t);
            await this.assertSitesExist(siteIds, t);
            const row = await this.m.User.create(
              {
                username: user.username,
                usernameKey: usernameKey(user.username),
                fullName: user.fullName,
                email: user.email,
                managedAppleId: user.managedAppleId,
                passwordHash: user.passwordHash,
                createdAt: now,
                updatedAt: now,
              },
              { transaction: t },
            );
            const id = toInt(row.get('id'));
            await this.replaceSites(id, siteIds, t);
            return toUser(row, sortIds(siteIds));
          },
          { retryOnConflict: true },
        ),
      async () => ({ siteIds: await missingIds(this.m.Site, siteIds) }),
    );
  }

  async get(id: string): Promise<User | null> {
    const n = dbId(id);
    const row = n === null ? null : await this.m.User.findByPk(n);
    return row ? ((await this.withSites([row]))[0] ?? null) : null;
  }

  async getUsersByIds(ids: readonly string[]): Promise<User[]> {
    const numeric = [...new Set(ids.map(dbId).filter((n): n is number => n !== null))];
    const byId = new Map<string, User>();
    for (const part of chunked(numeric, IN_CHUNK)) {
      for (const user of await this.withSites(await this.m.User.findAll({ where: { id: part } }))) {
        byId.set(user.id, user);
      }
    }
    const out: User[] = [];
    for (const id of new Set(ids)) {
      const user = byId.get(id);
      if (user) out.push(user);
    }
    return out;
  }

  async findByUsername(username: string): Promise<User | null> {
    const row = await this.m.User.findOne({ where: { usernameKey: usernameKey(username) } });
    return row ? ((await this.withSites([row]))[0] ?? null) : null;
  }

  async list(opts: UserListOptions): Promise<Page<User>> {
    const limit = clampLimit(opts.limit);
    const conditions: WhereOptions<UserRow>[] = [];
    if (opts.cursor !== null) conditions.push({ usernameKey: { [Op.gt]: decodeStringCursor(opts.cursor) } });
    const q = opts.q?.trim() ?? '';
    if (q !== '') conditions.push(likeAny(this.db.sequelize, q, ['username_key', 'full_name', 'email']));
    for (const [filter, sql] of [
      [opts.siteId, 'SELECT user_id FROM user_sites WHERE site_id = '],
      [opts.groupId, 'SELECT user_id FROM user_group_members WHERE group_id = '],
    ] as const) {
      if (filter === null) continue;
      const n = dbId(filter);
      if (n === null) return { items: [], nextCursor: null };
      conditions.push({ id: { [Op.in]: this.db.sequelize.literal(`(${sql}${n})`) } });
    }
    const rows = await this.m.User.findAll({
      where: { [Op.and]: conditions },
      order: [['usernameKey', 'ASC']],
      limit: limit + 1,
    });
    return keysetPage(await this.withSites(rows), limit, (u) => usernameKey(u.username));
  }

  async update(id: string, patch: UserPatch, now: Date): Promise<User | null> {
    const n = dbId(id);
    if (n === null) return null;
    const siteIds = patch.siteIds === undefined ? undefined : [...new Set(patch.siteIds)];
    return unknownOnForeignKey(
      () =>
        this.db.write(
          async (t) => {
            const row = await this.m.User.findByPk(n, { transaction: t });
            if (!row) return null;
            if (patch.username !== undefined && patch.username !== row.get('username')) {
              await this.assertUsernameFree(patch.username, n, t);
            }
            if (siteIds !== undefined) await this.assertSitesExist(siteIds, t);
            const values: Partial<UserRow> = { updatedAt: now };
            if (patch.username !== undefined) {
              values.username = patch.username;
              values.usernameKey = usernameKey(patch.username);
            }
            if (patch.fullName !== undefined) values.fullName = patch.fullName;
            if (patch.email !== undefined) values.email = patch.email;
            if (patch.managedAppleId !== undefined) values.managedAppleId = patch.managedAppleId;
            if (patch.passwordHash !== undefined) values.passwordHash = patch.passwordHash;
            await this.m.User.update(values, { where: { id: n }, transaction: t });
            if (siteIds !== undefined) await this.replaceSites(n, siteIds, t);
            const updated = await this.m.User.findByPk(n, { transaction: t });
            if (!updated) return null;
            const sites = (await this.siteIdsOf([n], t)).get(n) ?? [];
            return toUser(updated, sites);
          },
          { retryOnConflict: true },
        ),
      async () => ({ siteIds: await missingIds(this.m.Site, siteIds ?? []) }),
    );
  }

  async delete(id: string, now: Date): Promise<boolean> {
    const n = dbId(id);
    if (n === null) return false;
    return this.db.write(async (t) => {
      // Its devices become unassigned; site and group memberships go with it (ON DELETE CASCADE).
      await modelsOf(this.db.sequelize).Device.update(
        { userId: null, updatedAt: now },
        { where: { userId: String(n) }, transaction: t },
      );
      return (await this.m.User.destroy({ where: { id: n }, transaction: t })) > 0;
    });
  }

  async getPasswordHash(id: string): Promise<string | null> {
    const n = dbId(id);
    if (n === null) return null;
    const row = await this.m.User.findByPk(n, { attributes: ['passwordHash'] });
    return row?.get({ plain: true }).passwordHash ?? null;
  }

  async setPasswordHash(id: string, hash: string | null, now: Date): Promise<boolean> {
    const n = dbId(id);
    if (n === null) return false;
    return this.db.write(async (t) => {
      // Not the affected-row count: MariaDB counts only rows that changed.
      if (!(await this.m.User.findByPk(n, { attributes: ['id'], transaction: t }))) return false;
      await this.m.User.update({ passwordHash: hash, updatedAt: now }, { where: { id: n }, transaction: t });
      return true;
    });
  }

  missing(ids: readonly string[]): Promise<string[]> {
    return missingIds(this.m.User, ids);
  }

  async *allUserIds(batchSize = ID_BATCH): IdBatches {
    yield* idBatches(this.db.sequelize, 'SELECT id FROM users', 'id', {}, batchSize);
  }

  async *listUserIdsInSite(siteId: string, batchSize = ID_BATCH): IdBatches {
    const n = dbId(siteId);
    if (n === null) return;
    yield* idBatches(
      this.db.sequelize,
      'SELECT user_id AS id FROM user_sites WHERE site_id = :siteId',
      'user_id',
      { siteId: n },
      batchSize,
    );
  }

  private async assertUsernameFree(username: string, self: number | null, t: Transaction): Promise<void> {
    const other = await this.m.User.findOne({
      where: { usernameKey: usernameKey(username) },
      attributes: ['id'],
      transaction: t,
    });
    if (other && toInt(other.get('id')) !== self) {
      throw new NameTakenError('username_taken', 'username', username);
    }
  }

  private async assertSitesExist(siteIds: readonly string[], t: Transaction): Promise<void> {
    const unknown = await missingIds(this.m.Site, siteIds, t);
    if (unknown.length > 0) throw new UnknownIdsError({ siteIds: unknown });
  }

  private async replaceSites(userId: number, siteIds: readonly string[], t: Transaction): Promise<void> {
    await this.m.UserSite.destroy({ where: { userId }, transaction: t });
    const rows = siteIds.map((s) => ({ userId, siteId: dbId(s) as number }));
    if (rows.length > 0) await this.m.UserSite.bulkCreate(rows, { transaction: t });
  }

  private async siteIdsOf(userIds: readonly number[], t?: Transaction): Promise<Map<number, string[]>> {
    const out = new Map<number, number[]>();
    for (const part of chunked(userIds, IN_CHUNK)) {
      const rows = await this.m.UserSite.findAll({
        where: { userId: part },
        ...(t ? { transaction: t } : {}),
        raw: true,
      });
      for (const row of rows as unknown as { userId: unknown; siteId: unknown }[]) {
        const userId = toInt(row.userId);
        const list = out.get(userId) ?? [];
        list.push(toInt(row.siteId));
        out.set(userId, list);
      }
    }
    return new Map([...out].map(([userId, sites]) => [userId, sites.sort(byNumber).map(String)]));
  }

  private async withSites(rows: UserModel[]): Promise<User[]> {
    const ids = rows.map((r) => toInt(r.get('id')));
    const sites = await this.siteIdsOf(ids);
    return rows.map((row, i) => toUser(row, sites.get(ids[i] as number) ?? []));
  }
}

export class SqlGroupStore implements GroupStore {
  private readonly m: DirectoryModels;

  constructor(private readonly db: Database) {
    this.m = directoryModelsOf(db.sequelize);
  }

  async create(group: { name: string; userIds: string[] }, now: Date): Promise<UserGroup> {
    const userIds = [...new Set(group.userIds)];
    return unknownOnForeignKey(
      () =>
        this.db.write(
          async (t) => {
            await this.assertNameFree(group.name, null, t);
            await this.assertUsersExist({ userIds }, t);
            const row = await this.m.Group.create(
              { name: group.name, createdAt: now, updatedAt: now },
              { transaction: t },
            );
            await this.addMembers(
              toInt(row.get('id')),
              userIds.map((u) => dbId(u) as number),
              t,
            );
            return toGroup(row, userIds.length);
          },
          { retryOnConflict: true },
        ),
      async () => ({ userIds: await missingIds(this.m.User, userIds) }),
    );
  }

  async get(id: string): Promise<UserGroup | null> {
    const n = dbId(id);
    if (n === null) return null;
    const row = await this.m.Group.findByPk(n);
    return row ? toGroup(row, (await this.counts([n])).get(n) ?? 0) : null;
  }

  async list(opts: ListOptions): Promise<Page<UserGroup>> {
    const limit = clampLimit(opts.limit);
    const conditions: WhereOptions<GroupRow>[] = [];
    if (opts.cursor !== null) conditions.push({ name: { [Op.gt]: decodeStringCursor(opts.cursor) } });
    const q = opts.q?.trim() ?? '';
    if (q !== '') conditions.push(likeAny(this.db.sequelize, q, ['name']));
    const rows = await this.m.Group.findAll({
      where: { [Op.and]: conditions },
      order: [['name', 'ASC']],
      limit: limit + 1,
    });
    const counts = await this.counts(rows.map((r) => toInt(r.get('id'))));
    const groups = rows.map((r) => toGroup(r, counts.get(toInt(r.get('id'))) ?? 0));
    return keysetPage(groups, limit, (g) => g.name);
  }

  async update(id: string, patch: GroupPatch, now: Date): Promise<UserGroup | null> {
    const n = dbId(id);
    if (n === null) return null;
    const fields = {
      ...(patch.userIds ? { userIds: [...new Set(patch.userIds)] } : {}),
      ...(patch.addUserIds ? { addUserIds: [...new Set(patch.addUserIds)] } : {}),
      ...(patch.removeUserIds ? { removeUserIds: [...new Set(patch.removeUserIds)] } : {}),
    };
    return unknownOnForeignKey(
      () =>
        this.db.write(
          async (t) => {
            const row = await this.m.Group.findByPk(n, { transaction: t });
            if (!row) return null;
            if (patch.name !== undefined && patch.name !== row.get('name')) {
              await this.assertNameFree(patch.name, n, t);
            }
            await this.assertUsersExist(fields, t);
            await this.m.Group.update(
              { ...(patch.name !== undefined ? { name: patch.name } : {}), updatedAt: now },
              { where: { id: n }, transaction: t },
            );
            const toNumbers = (ids: readonly string[]) => ids.map((u) => dbId(u) as number);
            if (fields.userIds) {
              const wanted = new Set(toNumbers(fields.userIds));
              const current = await this.memberIds(n, t);
              await this.removeMembers(
                n,
                current.filter((u) => !wanted.has(u)),
                t,
              );
              const have = new Set(current);
              await this.addMembers(
                n,
                [...wanted].filter((u) => !have.has(u)),
                t,
              );
            }
            if (fields.removeUserIds) await this.removeMembers(n, toNumbers(fields.removeUserIds), t);
            if (fields.addUserIds) {
              const have = new Set(await this.memberIds(n, t));
              await this.addMembers(
                n,
                toNumbers(fields.addUserIds).filter((u) => !have.has(u)),
                t,
              );
            }
            const updated = await this.m.Group.findByPk(n, { transaction: t });
            return updated ? toGroup(updated, (await this.counts([n], t)).get(n) ?? 0) : null;
          },
          { retryOnConflict: true },
        ),
      async () =>
        Object.fromEntries(
          await Promise.all(
            Object.entries(fields).map(async ([k, ids]) => [k, await missingIds(this.m.User, ids)] as const),
          ),
        ),
    );
  }

  async delete(id: string): Promise<boolean> {
    const n = dbId(id);
    if (n === null) return false;
    // Members go with it (ON DELETE CASCADE).
    return this.db.write(async (t) => (await this.m.Group.destroy({ where: { id: n }, transaction: t })) > 0);
  }

  missing(ids: readonly string[]): Promise<string[]> {
    return missingIds(this.m.Group, ids);
  }

  async *listMemberIds(groupIds: readonly string[], batchSize = ID_BATCH): IdBatches {
    const groups = [...new Set(groupIds.map(dbId).filter((n): n is number => n !== null))];
    if (groups.length === 0) return;
    yield* idBatches(
      this.db.sequelize,
      'SELECT DISTINCT user_id AS id FROM user_group_members WHERE group_id IN (:groups)',
      'user_id',
      { groups },
      batchSize,
    );
  }

  private async assertNameFree(name: string, self: number | null, t: Transaction): Promise<void> {
    const other = await this.m.Group.findOne({ where: { name }, attributes: ['id'], transaction: t });
    if (other && toInt(other.get('id')) !== self) {
      throw new NameTakenError('user_group_name_taken', 'name', name);
    }
  }

  private async assertUsersExist(fields: Record<string, readonly string[]>, t: Transaction): Promise<void> {
    const unknown: Record<string, string[]> = {};
    for (const [field, ids] of Object.entries(fields)) {
      const missing = await missingIds(this.m.User, ids, t);
      if (missing.length > 0) unknown[field] = missing;
    }
    if (Object.keys(unknown).length > 0) throw new UnknownIdsError(unknown);
  }

  private async memberIds(groupId: number, t: Transaction): Promise<number[]> {
    const rows = await this.m.GroupMember.findAll({
      attributes: ['userId'],
      where: { groupId },
      transaction: t,
      raw: true,
    });
    return (rows as unknown as { userId: unknown }[]).map((r) => toInt(r.userId));
  }

  private async addMembers(groupId: number, userIds: readonly number[], t: Transaction): Promise<void> {
    // In key order, so concurrent changes of one group lock rows in the same order.
    for (const part of chunked([...userIds].sort(byNumber), IN_CHUNK)) {
      await this.m.GroupMember.bulkCreate(
        part.map((userId) => ({ groupId, userId })),
        { transaction: t },
      );
    }
  }

  private async removeMembers(groupId: number, userIds: readonly number[], t: Transaction): Promise<void> {
    for (const part of chunked([...userIds].sort(byNumber), IN_CHUNK)) {
      await this.m.GroupMember.destroy({ where: { groupId, userId: part }, transaction: t });
    }
  }

  private async counts(groupIds: readonly number[], t?: Transaction): Promise<Map<number, number>> {
    const out = new Map<number, number>();
    for (const part of chunked(groupIds, IN_CHUNK)) {
      const rows = await this.db.sequelize.query<{ group_id: unknown; n: unknown }>(
        'SELECT group_id, COUNT(*) AS n FROM user_group_members WHERE group_id IN (:part) GROUP BY group_id',
        { type: QueryTypes.SELECT, replacements: { part }, ...(t ? { transaction: t } : {}) },
      );
      for (const row of rows) out.set(toInt(row.group_id), toInt(row.n));
    }
    return out;
  }
}

/**
 * Keyset-paged ids of `select` (which yields a column `id`, filtered on `column`), ascending: one query
 * per batch, each an index range scan, so a directory of any size streams in bounded memory.
 */
async function* idBatches(
  sequelize: Sequelize,
  select: string,
  column: string,
  replacements: Record<string, unknown>,
  batchSize: number,
): IdBatches {
  const size = Math.max(1, Math.trunc(batchSize));
  const joiner = /\bWHERE\b/i.test(select) ? 'AND' : 'WHERE';
  let after = 0;
  for (;;) {
    const rows = await sequelize.query<{ id: unknown }>(
      `${select} ${joiner} ${column} > :after ORDER BY ${column} LIMIT ${size}`,
      { type: QueryTypes.SELECT, replacements: { ...replacements, after } },
    );
    const ids = rows.map((r) => toInt(r.id));
    const last = ids[ids.length - 1];
    if (last === undefined) return;
    yield ids.map(String);
    if (ids.length < size) return;
    after = last;
  }
}

function sortIds(ids: readonly string[]): string[] {
  return [...ids].sort((a, b) => Number(a) - Number(b));
}

export class SqlDeviceAssignmentStore implements DeviceAssignmentStore {
  private readonly m: DirectoryModels;

  constructor(private readonly db: Database) {
    this.m = directoryModelsOf(db.sequelize);
  }

  async assign(
    udid: string,
    userId: string | null,
    opts: { onlyIfUnassigned: boolean },
    now: Date,
  ): Promise<AssignResult> {
    const { Device } = modelsOf(this.db.sequelize);
    return this.db.write(async (t) => {
      const device = await Device.findByPk(udid, { attributes: ['udid', 'userId'], transaction: t });
      if (!device) return 'device_not_found';
      if (userId !== null) {
        const n = dbId(userId);
        // A shared lock holds off a concurrent delete of the user (which unassigns its devices).
        const user =
          n === null
            ? null
            : await this.m.User.findByPk(n, {
                attributes: ['id'],
                transaction: t,
                lock: Transaction.LOCK.SHARE,
              });
        if (!user) return 'user_not_found';
      }
      if (opts.onlyIfUnassigned && device.get('userId') !== null) return 'unchanged';
      await Device.update(
        { userId, updatedAt: now },
        { where: opts.onlyIfUnassigned ? { udid, userId: null } : { udid }, transaction: t },
      );
      return 'assigned';
    });
  }
}
