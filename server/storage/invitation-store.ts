import { Op, type Sequelize, type Transaction, type WhereOptions } from 'sequelize';
import type { DeliveryOutcome, UsageDeviceReport, UsageRef, UsageReport } from '../invitations/channels.ts';
import {
  ACTIVE_STAGES,
  DISTRIBUTION_METHODS,
  emptyCounts,
  FINAL_STATUSES,
  USAGE_STAGES,
  USAGE_STATUSES,
  type DistributionMethod,
  type Invitation,
  type InvitationPatch,
  type NewInvitation,
  type Page,
  type ResendCohort,
  type UsageCounts,
  type UsageDevice,
  type UsageItem,
  type UsageStage,
  type UsageStatus,
} from '../invitations/model.ts';
import { storedEmail, storedScope } from '../invitations/schemas.ts';
import type {
  CodeTarget,
  DeliveryRow,
  InvitationListOptions,
  InvitationStore,
  StageChange,
  UsageListOptions,
  UsageRegistrationView,
} from '../invitations/store.ts';
import { invitationUrlFrom } from '../vpp/apple-client.ts';
import type { RegistrationState } from '../vpp/store.ts';
import { chunked } from './command-store.ts';
import { decodeStringCursor, invalidCursor } from './cursor.ts';
import type { Database } from './database.ts';
import { invitationModelsOf, type InvitationModels, type InvitationRow } from './invitation-models.ts';
import { toBool, toDate, toDateOrNull, toInt, toIntOrNull } from './models.ts';
import {
  clampLimit,
  containsPattern,
  dbId,
  dbIds,
  exec,
  execCount,
  idString,
  keysetPage,
  likeAny,
  select,
} from './sql-kit.ts';

const IN_CHUNK = 500;
/** users per write transaction when adding usage rows */
const ADD_CHUNK = 1000;
const MAX_TEXT = 500;

const clip = (s: string | null | undefined) => (s === null || s === undefined ? null : s.slice(0, MAX_TEXT));

const STATUS_SET = new Set<string>(USAGE_STATUSES);
const STAGE_SET = new Set<string>(USAGE_STAGES);
const METHOD_SET = new Set<string>(DISTRIBUTION_METHODS);
const asStatus = (s: string): UsageStatus => (STATUS_SET.has(s) ? (s as UsageStatus) : 'pending');
const asStage = (s: string): UsageStage => (STAGE_SET.has(s) ? (s as UsageStage) : 'register');
const REGISTRATION_STATES = new Set<string>([
  'pending',
  'creating',
  'created',
  'lookup',
  'registered',
  'associated',
  'failed',
  'retired',
]);
const asRegistrationState = (s: unknown): RegistrationState | null =>
  typeof s === 'string' && REGISTRATION_STATES.has(s) ? (s as RegistrationState) : null;

/** Stages whose rows a channel has (or may have) seen: a registration must be told to it. */
const CHANNEL_STAGES: readonly UsageStage[] = ['deliver', 'handed', 'resend', 'notify_registered'];

/** Which statuses each reported status may replace (a report never goes backwards). */
const REPORT_FROM: Record<UsageReport['status'], readonly UsageStatus[]> = {
  pending: ['pending', 'failed', 'skipped'],
  sent: ['pending', 'sent', 'failed', 'skipped'],
  acknowledged: ['pending', 'sent', 'acknowledged', 'failed', 'skipped'],
  failed: ['pending', 'sent', 'failed', 'skipped'],
  skipped: ['pending', 'sent', 'failed', 'skipped'],
};

const COHORT_STATUSES: Record<ResendCohort, readonly UsageStatus[]> = {
  not_registered: ['pending', 'sent', 'acknowledged', 'skipped', 'failed'],
  never_sent: ['pending', 'skipped', 'failed'],
  failed: ['failed'],
};

interface UsageListRow {
  id: unknown;
  invitation_id: unknown;
  user_id: unknown;
  status: string;
  reason: string | null;
  last_action: string | null;
  last_action_at: unknown;
  sent_at: unknown;
  registration_code: string;
  username: string;
  full_name: string | null;
  email: string | null;
  reg_state: string | null;
  invite_code: string | null;
  invitation_url: string | null;
  invitation_template: string | null;
}

/** The Apple invitation URL of a registration that has one (registered or associated). */
function appleUrl(
  state: string | null,
  inviteCode: string | null,
  url: string | null,
  template: string | null,
): string | null {
  if (state !== 'registered' && state !== 'associated') return null;
  if (url) return url;
  return inviteCode && template ? invitationUrlFrom(template, inviteCode) : null;
}

/** `InvitationStore` with sequelize on SQLite, Postgres and MariaDB. */
export class SqlInvitationStore implements InvitationStore {
  private readonly m: InvitationModels;
  private readonly sequelize: Sequelize;

  constructor(private readonly db: Database) {
    this.m = invitationModelsOf(db.sequelize);
    this.sequelize = db.sequelize;
  }

  // ---------- invitations ----------

  async createInvitation(input: NewInvitation, now: Date): Promise<Invitation> {
    const locationId = dbId(input.locationId);
    if (locationId === null) throw new Error('invalid location id');
    return this.db.write(async (t) => {
      const row = await this.m.Invitation.create(
        {
          name: input.name,
          locationId,
          siteId: input.siteId === null ? null : dbId(input.siteId),
          distributionMethod: input.distributionMethod,
          autoRegisterManagedUsers: input.autoRegisterManagedUsers,
          requireLogin: input.requireLogin,
          emailJson: input.email ? JSON.stringify(input.email) : null,
          scopeJson: JSON.stringify(input.scope),
          scopeGeneration: 1,
          computedGeneration: 0,
          fanoutStartedAt: now,
          fanoutFinishedAt: null,
          fanoutError: null,
          deletedAt: null,
          createdAt: now,
          updatedAt: now,
        },
        { transaction: t },
      );
      const created = await this.invitationIn(idString(row.get('id')), t);
      if (!created) throw new Error('invitation vanished while being created');
      return created;
    });
  }

  getInvitation(id: string): Promise<Invitation | null> {
    return this.invitationIn(id);
  }

  async listInvitations(opts: InvitationListOptions): Promise<Page<Invitation>> {
    const limit = clampLimit(opts.limit);
    const where: WhereOptions[] = [{ deletedAt: null }];
    if (opts.cursor !== null) {
      const after = dbId(decodeStringCursor(opts.cursor));
      if (after === null) throw invalidCursor();
      where.push({ id: { [Op.gt]: after } });
    }
    if (opts.locationId !== null) {
      const loc = dbId(opts.locationId);
      if (loc === null) return { items: [], nextCursor: null };
      where.push({ locationId: loc });
    }
    if (opts.siteId !== undefined && opts.siteId !== null) {
      const site = dbId(opts.siteId);
      if (site === null) return { items: [], nextCursor: null };
      where.push({ siteId: site });
    }
    const q = opts.q?.trim() ?? '';
    if (q !== '') {
      where.push(likeAny(this.sequelize, q, ['name']));
    }
    const rows = await this.m.Invitation.findAll({
      where: { [Op.and]: where },
      order: [['id', 'ASC']],
      limit: limit + 1,
      raw: true,
    });
    const items = rows.map((r) => toInvitation(r as unknown as InvitationRow));
    return keysetPage(items, limit, (i) => i.id);
  }

  async updateInvitation(
    id: string,
    patch: InvitationPatch,
    now: Date,
    opts: { ifGeneration?: number } = {},
  ): Promise<Invitation | null> {
    const key = dbId(id);
    if (key === null) return null;
    return this.db.write(async (t) => {
      // The row is locked (Postgres/MariaDB; SQLite has one writer) until the update commits.
      const current = await this.invitationIn(id, t, true);
      if (!current || current.deletedAt !== null) return null;
      if (opts.ifGeneration !== undefined && current.scopeGeneration !== opts.ifGeneration) return null;
      const values: Partial<InvitationRow> = { updatedAt: now };
      if (patch.name !== undefined) values.name = patch.name;
      if (patch.requireLogin !== undefined) values.requireLogin = patch.requireLogin;
      if (patch.email !== undefined) values.emailJson = patch.email ? JSON.stringify(patch.email) : null;
      if (patch.scope !== undefined) values.scopeJson = JSON.stringify(patch.scope);
      if (patch.siteId !== undefined) values.siteId = patch.siteId === null ? null : dbId(patch.siteId);
      await this.m.Invitation.update(
        {
          ...values,
          ...(patch.rescope ? { scopeGeneration: this.sequelize.literal('scope_generation + 1') } : {}),
        },
        { where: { id: key }, transaction: t },
      );
      return this.invitationIn(id, t);
    });
  }

  async markInvitationDeleted(id: string, now: Date): Promise<boolean> {
    const key = dbId(id);
    if (key === null) return false;
    return this.db.write(async (t) => {
      const current = await this.invitationIn(id, t);
      if (!current || current.deletedAt !== null) return false;
      await this.m.Invitation.update(
        { deletedAt: now, updatedAt: now, fanoutFinishedAt: null },
        { where: { id: key }, transaction: t },
      );
      return true;
    });
  }

  async removeInvitation(id: string): Promise<void> {
    const key = dbId(id);
    if (key === null) return;
    await this.db.write(async (t) => {
      await exec(
        this.sequelize,
        t,
        'DELETE FROM invitation_usage_devices WHERE usage_id IN (SELECT id FROM invitation_usage WHERE invitation_id = :key)',
        { key },
      );
      await exec(this.sequelize, t, 'DELETE FROM invitation_usage WHERE invitation_id = :key', { key });
      await exec(this.sequelize, t, 'DELETE FROM vpp_invitations WHERE id = :key', { key });
    });
  }

  async invitationsOfLocation(locationId: string): Promise<Invitation[]> {
    const loc = dbId(locationId);
    if (loc === null) return [];
    const rows = await this.m.Invitation.findAll({
      where: { locationId: loc, deletedAt: null },
      order: [['id', 'ASC']],
      raw: true,
    });
    return rows.map((r) => toInvitation(r as unknown as InvitationRow));
  }

  async markComputed(id: string, generation: number, _now: Date): Promise<boolean> {
    const key = dbId(id);
    if (key === null) return false;
    return this.db.write(
      async (t) =>
        (await execCount(
          this.sequelize,
          t,
          `UPDATE vpp_invitations SET computed_generation = :generation
            WHERE id = :key AND scope_generation = :generation AND computed_generation < :generation`,
          { key, generation },
        )) > 0,
    );
  }

  async setFanout(
    id: string,
    values: { startedAt?: Date | null; finishedAt?: Date | null; error?: string | null },
    _now: Date,
  ): Promise<void> {
    const key = dbId(id);
    if (key === null) return;
    const update: Partial<InvitationRow> = {};
    if (values.startedAt !== undefined) update.fanoutStartedAt = values.startedAt;
    if (values.finishedAt !== undefined) update.fanoutFinishedAt = values.finishedAt;
    if (values.error !== undefined) update.fanoutError = clip(values.error);
    if (Object.keys(update).length === 0) return;
    await this.db.write(async (t) => {
      await this.m.Invitation.update(update, { where: { id: key }, transaction: t });
    });
  }

  async rescopeAll(_now: Date): Promise<string[]> {
    return this.db.write(async (t) => {
      const rows = await select<{ id: unknown }>(
        this.sequelize,
        'SELECT id FROM vpp_invitations WHERE deleted_at IS NULL ORDER BY id',
        {},
        t,
      );
      if (rows.length === 0) return [];
      await exec(
        this.sequelize,
        t,
        'UPDATE vpp_invitations SET scope_generation = scope_generation + 1 WHERE deleted_at IS NULL',
        {},
      );
      return rows.map((r) => idString(r.id));
    });
  }

  async invitationsNeedingWork(channelMethods: readonly string[]): Promise<string[]> {
    const out = new Set<string>();
    const first = await select<{ id: unknown }>(
      this.sequelize,
      `SELECT id FROM vpp_invitations
        WHERE deleted_at IS NOT NULL OR computed_generation < scope_generation
           OR EXISTS (SELECT 1 FROM invitation_usage u WHERE u.invitation_id = vpp_invitations.id AND u.stage IN (:active))`,
      { active: ACTIVE_STAGES },
    );
    for (const r of first) out.add(idString(r.id));
    const methods = channelMethods.filter((m) => METHOD_SET.has(m));
    if (methods.length > 0) {
      for (const m of methods) for (const id of await this.invitationsWaitingFor(m)) out.add(id);
    }
    return [...out].sort((a, b) => Number(a) - Number(b));
  }

  async invitationsWaitingFor(method: string): Promise<string[]> {
    const rows = await select<{ id: unknown }>(
      this.sequelize,
      `SELECT id FROM vpp_invitations
        WHERE deleted_at IS NULL AND distribution_method = :method
          AND EXISTS (SELECT 1 FROM invitation_usage u WHERE u.invitation_id = vpp_invitations.id AND u.stage = 'waiting_channel')
        ORDER BY id`,
      { method },
    );
    return rows.map((r) => idString(r.id));
  }

  async locationsWithStaleSite(): Promise<string[]> {
    const rows = await select<{ location_id: unknown }>(
      this.sequelize,
      `SELECT DISTINCT i.location_id FROM vpp_invitations i JOIN vpp_locations l ON l.id = i.location_id
        WHERE i.deleted_at IS NULL
          AND ((i.site_id IS NULL AND l.site_id IS NOT NULL) OR (i.site_id IS NOT NULL AND l.site_id IS NULL)
               OR i.site_id <> l.site_id)`,
      {},
    );
    return rows.map((r) => idString(r.location_id));
  }

  async orphanedInvitations(): Promise<string[]> {
    const rows = await select<{ id: unknown }>(
      this.sequelize,
      `SELECT i.id FROM vpp_invitations i LEFT JOIN vpp_locations l ON l.id = i.location_id
        WHERE i.deleted_at IS NULL AND l.id IS NULL ORDER BY i.id`,
      {},
    );
    return rows.map((r) => idString(r.id));
  }

  async counts(invitationIds: readonly string[]): Promise<Map<string, UsageCounts>> {
    const out = new Map<string, UsageCounts>();
    for (const id of invitationIds) out.set(id, emptyCounts());
    for (const part of chunked(dbIds(invitationIds), IN_CHUNK)) {
      const rows = await select<{ invitation_id: unknown; status: string; stage: string; n: unknown }>(
        this.sequelize,
        `SELECT invitation_id, status, stage, COUNT(*) AS n FROM invitation_usage
          WHERE invitation_id IN (:ids) GROUP BY invitation_id, status, stage`,
        { ids: part },
      );
      for (const r of rows) {
        const c = out.get(idString(r.invitation_id));
        if (!c) continue;
        const n = toInt(r.n);
        c.total += n;
        c.byStatus[asStatus(r.status)] += n;
        c.byStage[asStage(r.stage)] += n;
      }
    }
    return out;
  }

  // ---------- usage (fan-out) ----------

  async usageUserIds(invitationId: string): Promise<string[]> {
    const inv = dbId(invitationId);
    if (inv === null) return [];
    const rows = await select<{ user_id: unknown }>(
      this.sequelize,
      'SELECT user_id FROM invitation_usage WHERE invitation_id = :inv ORDER BY user_id',
      { inv },
    );
    return rows.map((r) => idString(r.user_id));
  }

  async addUsage(
    invitationId: string,
    locationId: string,
    userIds: readonly string[],
    newCode: () => string,
    now: Date,
  ): Promise<number> {
    const inv = dbId(invitationId);
    const loc = dbId(locationId);
    const users = dbIds(userIds).sort((a, b) => a - b);
    if (inv === null || loc === null || users.length === 0) return 0;
    let added = 0;
    for (const part of chunked(users, ADD_CHUNK)) {
      added += await this.db.write(async (t) => {
        const present = new Set<number>();
        for (const ids of chunked(part, IN_CHUNK)) {
          const rows = await select<{ user_id: unknown }>(
            this.sequelize,
            'SELECT user_id FROM invitation_usage WHERE invitation_id = :inv AND user_id IN (:ids)',
            { inv, ids },
            t,
          );
          for (const r of rows) present.add(toInt(r.user_id));
        }
        const missing = part.filter((u) => !present.has(u));
        for (const ids of chunked(missing, IN_CHUNK)) {
          await this.m.Usage.bulkCreate(
            ids.map((userId) => ({
              invitationId: inv,
              locationId: loc,
              userId,
              status: 'pending',
              stage: 'register',
              reason: null,
              lastAction: 'Added to the scope',
              lastActionAt: now,
              sentAt: null,
              registrationCode: newCode(),
              createdAt: now,
              updatedAt: now,
            })),
            // A concurrent run may insert the same (invitation, user): that row wins.
            { transaction: t, ignoreDuplicates: true },
          );
        }
        return missing.length;
      });
    }
    return added;
  }

  async usageOfUsers(invitationId: string, userIds: readonly string[]): Promise<UsageRef[]> {
    const inv = dbId(invitationId);
    if (inv === null) return [];
    const out: UsageRef[] = [];
    for (const ids of chunked(dbIds(userIds), IN_CHUNK)) {
      const rows = await select<{ id: unknown; user_id: unknown }>(
        this.sequelize,
        'SELECT id, user_id FROM invitation_usage WHERE invitation_id = :inv AND user_id IN (:ids) ORDER BY id',
        { inv, ids },
      );
      out.push(...rows.map((r) => ({ usageId: idString(r.id), userId: idString(r.user_id) })));
    }
    return out;
  }

  async usagePage(invitationId: string, afterId: string | null, limit: number): Promise<UsageRef[]> {
    const inv = dbId(invitationId);
    if (inv === null) return [];
    const rows = await select<{ id: unknown; user_id: unknown }>(
      this.sequelize,
      `SELECT id, user_id FROM invitation_usage WHERE invitation_id = :inv AND id > :after ORDER BY id LIMIT ${Math.max(1, Math.trunc(limit))}`,
      { inv, after: afterId === null ? 0 : (dbId(afterId) ?? 0) },
    );
    return rows.map((r) => ({ usageId: idString(r.id), userId: idString(r.user_id) }));
  }

  async deleteUsage(usageIds: readonly string[]): Promise<number> {
    const ids = dbIds(usageIds);
    if (ids.length === 0) return 0;
    return this.db.write(async (t) => {
      let n = 0;
      for (const part of chunked(ids, IN_CHUNK)) {
        await exec(this.sequelize, t, 'DELETE FROM invitation_usage_devices WHERE usage_id IN (:ids)', {
          ids: part,
        });
        n += await this.m.Usage.destroy({ where: { id: part }, transaction: t });
      }
      return n;
    });
  }

  async usageInStage(
    invitationId: string,
    stage: UsageStage,
    afterId: string | null,
    limit: number,
  ): Promise<UsageRef[]> {
    const inv = dbId(invitationId);
    if (inv === null) return [];
    const rows = await select<{ id: unknown; user_id: unknown }>(
      this.sequelize,
      `SELECT id, user_id FROM invitation_usage WHERE invitation_id = :inv AND stage = :stage AND id > :after
        ORDER BY id LIMIT ${Math.max(1, Math.trunc(limit))}`,
      { inv, stage, after: afterId === null ? 0 : (dbId(afterId) ?? 0) },
    );
    return rows.map((r) => ({ usageId: idString(r.id), userId: idString(r.user_id) }));
  }

  async registrationViews(
    invitationId: string,
    usageIds: readonly string[],
  ): Promise<UsageRegistrationView[]> {
    const inv = dbId(invitationId);
    if (inv === null) return [];
    const out: UsageRegistrationView[] = [];
    for (const ids of chunked(dbIds(usageIds), IN_CHUNK)) {
      const rows = await select<{
        id: unknown;
        user_id: unknown;
        stage: string;
        status: string;
        state: string | null;
        managed: unknown;
        error_number: unknown;
        error_message: string | null;
      }>(
        this.sequelize,
        `SELECT u.id, u.user_id, u.stage, u.status, r.state, r.managed, r.error_number, r.error_message
           FROM invitation_usage u
           LEFT JOIN vpp_registrations r ON r.location_id = u.location_id AND r.user_id = u.user_id
          WHERE u.invitation_id = :inv AND u.id IN (:ids) ORDER BY u.id`,
        { inv, ids },
      );
      for (const r of rows) {
        const state = asRegistrationState(r.state);
        out.push({
          usageId: idString(r.id),
          userId: idString(r.user_id),
          stage: asStage(r.stage),
          status: asStatus(r.status),
          registration:
            state === null
              ? null
              : {
                  state,
                  managed: toBool(r.managed),
                  errorNumber: toIntOrNull(r.error_number),
                  errorMessage: r.error_message,
                },
        });
      }
    }
    return out;
  }

  async deliveryRows(
    invitationId: string,
    stage: UsageStage,
    afterId: string | null,
    limit: number,
  ): Promise<DeliveryRow[]> {
    const inv = dbId(invitationId);
    if (inv === null) return [];
    const rows = await select<{
      id: unknown;
      user_id: unknown;
      status: string;
      sent_at: unknown;
      registration_code: string;
      username: string;
      full_name: string | null;
      email: string | null;
      has_password: unknown;
      state: string | null;
      client_user_id: string | null;
      invite_code: string | null;
      invitation_url: string | null;
      invitation_template: string | null;
    }>(
      this.sequelize,
      `SELECT u.id, u.user_id, u.status, u.sent_at, u.registration_code, usr.username, usr.full_name, usr.email,
              CASE WHEN usr.password_hash IS NULL THEN 0 ELSE 1 END AS has_password,
              r.state, r.client_user_id, r.invite_code, r.invitation_url, l.invitation_template
         FROM invitation_usage u
         JOIN users usr ON usr.id = u.user_id
         LEFT JOIN vpp_registrations r ON r.location_id = u.location_id AND r.user_id = u.user_id
         LEFT JOIN vpp_locations l ON l.id = u.location_id
        WHERE u.invitation_id = :inv AND u.stage = :stage AND u.id > :after
        ORDER BY u.id LIMIT ${Math.max(1, Math.trunc(limit))}`,
      { inv, stage, after: afterId === null ? 0 : (dbId(afterId) ?? 0) },
    );
    return rows.map((r) => ({
      usageId: idString(r.id),
      userId: idString(r.user_id),
      username: r.username,
      fullName: r.full_name,
      email: r.email,
      hasPassword: toBool(r.has_password),
      registrationCode: r.registration_code,
      sentAt: toDateOrNull(r.sent_at),
      status: asStatus(r.status),
      registrationState: asRegistrationState(r.state),
      clientUserId: r.client_user_id,
      inviteCode: r.invite_code,
      invitationUrl: appleUrl(r.state, r.invite_code, r.invitation_url, r.invitation_template),
    }));
  }

  async changeStage(change: StageChange): Promise<number> {
    const ids = dbIds(change.usageIds);
    if (ids.length === 0 || change.from.length === 0) return 0;
    const values: Record<string, unknown> = { stage: change.to, updatedAt: change.at };
    if (change.lastAction !== undefined) {
      values.lastAction = clip(change.lastAction);
      values.lastActionAt = change.at;
    }
    if (change.status !== undefined) {
      values.status = change.status;
      values.reason = clip(change.reason ?? null);
    }
    const guardFinal = change.status !== undefined && !FINAL_STATUSES.includes(change.status);
    return this.db.write(async (t) => {
      let n = 0;
      for (const part of chunked(ids, IN_CHUNK)) {
        const [count] = await this.m.Usage.update(values, {
          where: {
            id: part,
            stage: [...change.from],
            ...(guardFinal ? { status: { [Op.notIn]: [...FINAL_STATUSES] } } : {}),
          },
          transaction: t,
        });
        n += count;
      }
      return n;
    });
  }

  async changeStageAll(
    invitationId: string,
    from: UsageStage,
    to: UsageStage,
    lastAction: string,
    now: Date,
  ): Promise<number> {
    const inv = dbId(invitationId);
    if (inv === null) return 0;
    // Usually there is nothing to move: a read costs no write transaction.
    const any = await select<{ id: unknown }>(
      this.sequelize,
      'SELECT id FROM invitation_usage WHERE invitation_id = :inv AND stage = :from LIMIT 1',
      { inv, from },
    );
    if (any.length === 0) return 0;
    return this.db.write(async (t) => {
      const [count] = await this.m.Usage.update(
        { stage: to, lastAction: clip(lastAction), lastActionAt: now, updatedAt: now },
        { where: { invitationId: inv, stage: from }, transaction: t },
      );
      return count;
    });
  }

  async applyOutcomes(
    from: UsageStage,
    usageIds: readonly string[],
    outcomes: readonly DeliveryOutcome[],
    defaults: { sentAction: string; pendingAction: string; failedAction: string; skippedAction: string },
    now: Date,
  ): Promise<number> {
    const byId = new Map<string, DeliveryOutcome>();
    for (const o of outcomes) byId.set(o.usageId, o);
    // One UPDATE per distinct (status, reason, lastAction, time): usually one per batch.
    const groups = new Map<
      string,
      { outcome: DeliveryOutcome; at: Date; lastAction: string; ids: number[] }
    >();
    for (const usageId of usageIds) {
      const key = dbId(usageId);
      if (key === null) continue;
      const o = byId.get(usageId) ?? { usageId, status: 'pending' as const };
      const at = o.at ?? now;
      const lastAction =
        o.lastAction ??
        (o.status === 'sent'
          ? defaults.sentAction
          : o.status === 'failed'
            ? defaults.failedAction
            : o.status === 'skipped'
              ? defaults.skippedAction
              : defaults.pendingAction);
      const reason = o.status === 'failed' || o.status === 'skipped' ? (o.reason ?? null) : null;
      const g = JSON.stringify([o.status, reason, lastAction, at.getTime()]);
      const group = groups.get(g) ?? { outcome: { ...o, reason }, at, lastAction, ids: [] };
      group.ids.push(key);
      groups.set(g, group);
    }
    if (groups.size === 0) return 0;
    return this.db.write(async (t) => {
      let n = 0;
      for (const g of groups.values()) {
        const o = g.outcome;
        for (const part of chunked(g.ids, IN_CHUNK)) {
          const common = {
            now,
            at: g.at,
            lastAction: clip(g.lastAction),
            ids: part,
            from,
            finals: FINAL_STATUSES,
          };
          const where = 'WHERE id IN (:ids) AND stage = :from AND status NOT IN (:finals)';
          let sql: string;
          if (o.status === 'sent') {
            sql = `UPDATE invitation_usage SET status = 'sent', reason = NULL, sent_at = :at, stage = 'handed',
                          last_action = :lastAction, last_action_at = :at, updated_at = :now ${where}`;
          } else if (o.status === 'pending') {
            sql = `UPDATE invitation_usage SET status = CASE WHEN status IN ('failed', 'skipped') THEN 'pending' ELSE status END,
                          reason = NULL, stage = 'handed', last_action = :lastAction, last_action_at = :at,
                          updated_at = :now ${where}`;
          } else {
            sql = `UPDATE invitation_usage SET status = :status, reason = :reason, stage = 'handed',
                          last_action = :lastAction, last_action_at = :at, updated_at = :now ${where}`;
          }
          n += await execCount(this.sequelize, t, sql, {
            ...common,
            status: o.status,
            reason: clip(o.reason ?? (o.status === 'failed' ? 'failed' : 'skipped')),
          });
        }
      }
      return n;
    });
  }

  // ---------- usage (Apple's word) ----------

  async markRegistered(
    where: { locationId: string; userIds: readonly string[] } | { usageIds: readonly string[] },
    managed: boolean,
    lastAction: string,
    now: Date,
  ): Promise<string[]> {
    const status: UsageStatus = managed ? 'auto_registered' : 'registered';
    let filter: string;
    let parts: { key: string; ids: number[] }[];
    const extra: Record<string, unknown> = {};
    if ('usageIds' in where) {
      filter = 'id IN (:ids)';
      parts = chunked(dbIds(where.usageIds), IN_CHUNK).map((ids) => ({ key: 'ids', ids }));
    } else {
      const loc = dbId(where.locationId);
      if (loc === null) return [];
      extra.loc = loc;
      filter = 'location_id = :loc AND user_id IN (:ids)';
      parts = chunked(dbIds(where.userIds), IN_CHUNK).map((ids) => ({ key: 'ids', ids }));
    }
    if (parts.length === 0) return [];
    return this.db.write(async (t) => {
      const touched = new Set<string>();
      for (const part of parts) {
        const repl = { ...extra, ids: part.ids, finals: FINAL_STATUSES, channelStages: CHANNEL_STAGES };
        const rows = await select<{ invitation_id: unknown }>(
          this.sequelize,
          `SELECT DISTINCT invitation_id FROM invitation_usage
            WHERE ${filter} AND status NOT IN (:finals) AND stage IN (:channelStages)`,
          repl,
          t,
        );
        for (const r of rows) touched.add(idString(r.invitation_id));
        await exec(
          this.sequelize,
          t,
          `UPDATE invitation_usage
              SET status = :status, reason = NULL,
                  stage = CASE WHEN stage IN (:channelStages) THEN 'notify_registered' ELSE 'done' END,
                  last_action = :lastAction, last_action_at = :now, updated_at = :now
            WHERE ${filter} AND status NOT IN (:finals)`,
          { ...repl, status, lastAction: clip(lastAction), now },
        );
      }
      return [...touched];
    });
  }

  async advanceRegistered(locationId: string, userIds: readonly string[], now: Date): Promise<string[]> {
    return this.leaveAppleStage(
      locationId,
      userIds,
      `stage = 'deliver', last_action = :lastAction, last_action_at = :now, updated_at = :now`,
      '',
      { lastAction: 'Registered with Apple: invite code received', now },
    );
  }

  async failAtApple(
    locationId: string,
    userIds: readonly string[],
    reason: string,
    now: Date,
  ): Promise<string[]> {
    return this.leaveAppleStage(
      locationId,
      userIds,
      `status = 'failed', reason = :reason, stage = 'done', last_action = :lastAction,
       last_action_at = :now, updated_at = :now`,
      'AND status NOT IN (:finals)',
      { reason: clip(reason), lastAction: 'Apple refused the registration', now, finals: FINAL_STATUSES },
    );
  }

  /**
   * Moves the usage rows of these users at the location that wait for Apple (`stage = 'apple'`) on, with
   * `set` (and the extra `where`); answers the invitations touched.
   */
  private async leaveAppleStage(
    locationId: string,
    userIds: readonly string[],
    set: string,
    where: string,
    replacements: Record<string, unknown>,
  ): Promise<string[]> {
    const loc = dbId(locationId);
    const users = dbIds(userIds);
    if (loc === null || users.length === 0) return [];
    return this.db.write(async (t) => {
      const touched = new Set<string>();
      for (const ids of chunked(users, IN_CHUNK)) {
        const rows = await select<{ invitation_id: unknown }>(
          this.sequelize,
          `SELECT DISTINCT invitation_id FROM invitation_usage
            WHERE location_id = :loc AND user_id IN (:ids) AND stage = 'apple'`,
          { loc, ids },
          t,
        );
        if (rows.length === 0) continue;
        for (const r of rows) touched.add(idString(r.invitation_id));
        await exec(
          this.sequelize,
          t,
          `UPDATE invitation_usage SET ${set}
            WHERE location_id = :loc AND user_id IN (:ids) AND stage = 'apple' ${where}`,
          { ...replacements, loc, ids },
        );
      }
      return [...touched];
    });
  }

  async retireUsage(locationId: string, userId: string, now: Date): Promise<number> {
    const loc = dbId(locationId);
    const user = dbId(userId);
    if (loc === null || user === null) return 0;
    return this.db.write(async (t) =>
      execCount(
        this.sequelize,
        t,
        `UPDATE invitation_usage SET status = 'pending', reason = NULL, stage = 'retired',
                last_action = :lastAction, last_action_at = :now, updated_at = :now
          WHERE location_id = :loc AND user_id = :user`,
        { loc, user, lastAction: 'Registration retired at Apple: resend to invite again', now },
      ),
    );
  }

  async unregisteredButAssociated(limit: number): Promise<{ usageId: string; managed: boolean }[]> {
    const rows = await select<{ id: unknown; managed: unknown }>(
      this.sequelize,
      `SELECT u.id, r.managed FROM invitation_usage u
         JOIN vpp_registrations r ON r.location_id = u.location_id AND r.user_id = u.user_id
        WHERE r.state = 'associated' AND u.status NOT IN (:finals) AND u.stage <> 'retired'
        ORDER BY u.id LIMIT ${Math.max(1, Math.trunc(limit))}`,
      { finals: FINAL_STATUSES },
    );
    return rows.map((r) => ({ usageId: idString(r.id), managed: toBool(r.managed) }));
  }

  // ---------- admin ----------

  async listUsage(invitationId: string, opts: UsageListOptions): Promise<Page<UsageItem>> {
    const inv = dbId(invitationId);
    if (inv === null) return { items: [], nextCursor: null };
    const limit = clampLimit(opts.limit);
    const where = ['u.invitation_id = :inv'];
    const replacements: Record<string, unknown> = { inv };
    if (opts.cursor !== null) {
      const after = dbId(decodeStringCursor(opts.cursor));
      if (after === null) throw invalidCursor();
      where.push('u.id > :after');
      replacements.after = after;
    }
    if (opts.status !== null) {
      where.push('u.status = :status');
      replacements.status = opts.status;
    }
    const q = opts.q?.trim() ?? '';
    if (q !== '') {
      replacements.pattern = containsPattern(q);
      where.push(
        `(LOWER(usr.username) LIKE :pattern ESCAPE '!' OR LOWER(usr.full_name) LIKE :pattern ESCAPE '!'
          OR LOWER(usr.email) LIKE :pattern ESCAPE '!')`,
      );
    }
    const rows = await select<UsageListRow>(
      this.sequelize,
      `SELECT u.id, u.invitation_id, u.user_id, u.status, u.reason, u.last_action, u.last_action_at, u.sent_at,
              u.registration_code, usr.username, usr.full_name, usr.email,
              r.state AS reg_state, r.invite_code, r.invitation_url, l.invitation_template
         FROM invitation_usage u
         JOIN users usr ON usr.id = u.user_id
         LEFT JOIN vpp_registrations r ON r.location_id = u.location_id AND r.user_id = u.user_id
         LEFT JOIN vpp_locations l ON l.id = u.location_id
        WHERE ${where.join(' AND ')}
        ORDER BY u.id LIMIT ${limit + 1}`,
      replacements,
    );
    const { items: page, nextCursor } = keysetPage(rows, limit, (r) => idString(r.id));
    const devices = opts.withDevices
      ? await this.devicesOf(page.map((r) => toInt(r.id)))
      : new Map<string, UsageDevice[]>();
    const items: UsageItem[] = page.map((r) => {
      const id = idString(r.id);
      return {
        id,
        invitationId: idString(r.invitation_id),
        userId: idString(r.user_id),
        username: r.username,
        fullName: r.full_name,
        email: r.email,
        status: asStatus(r.status),
        reason: r.reason,
        lastAction: r.last_action,
        lastActionAt: toDateOrNull(r.last_action_at),
        sentAt: toDateOrNull(r.sent_at),
        registrationCode: r.registration_code,
        invitationUrl: appleUrl(r.reg_state, r.invite_code, r.invitation_url, r.invitation_template),
        devices: devices.get(id) ?? [],
      };
    });
    return { items, nextCursor };
  }

  async notInScope(invitationId: string, userIds: readonly string[]): Promise<string[]> {
    const inv = dbId(invitationId);
    const unique = [...new Set(userIds)];
    if (inv === null) return unique;
    const found = new Set<string>();
    for (const ids of chunked(dbIds(unique), IN_CHUNK)) {
      const rows = await select<{ user_id: unknown }>(
        this.sequelize,
        'SELECT user_id FROM invitation_usage WHERE invitation_id = :inv AND user_id IN (:ids)',
        { inv, ids },
      );
      for (const r of rows) found.add(idString(r.user_id));
    }
    return unique.filter((id) => !found.has(id));
  }

  async markResend(
    invitationId: string,
    opts: { cohort: ResendCohort; userIds: readonly string[] | null },
    now: Date,
  ): Promise<number> {
    const inv = dbId(invitationId);
    if (inv === null) return 0;
    const base = ['invitation_id = :inv', 'status IN (:statuses)'];
    if (opts.cohort === 'never_sent') base.push('sent_at IS NULL');
    const parts: (number[] | null)[] =
      opts.userIds === null ? [null] : chunked(dbIds(opts.userIds), IN_CHUNK);
    if (opts.userIds !== null) base.push('user_id IN (:ids)');
    const where = base.join(' AND ');
    let total = 0;
    for (const ids of parts) {
      total += await this.db.write(async (t) => {
        const repl = { inv, statuses: COHORT_STATUSES[opts.cohort], now, ...(ids ? { ids } : {}) };
        const [row] = await select<{ n: unknown }>(
          this.sequelize,
          `SELECT COUNT(*) AS n FROM invitation_usage WHERE ${where}`,
          repl,
          t,
        );
        await exec(
          this.sequelize,
          t,
          `UPDATE invitation_usage SET stage = 'resend', last_action = :lastAction, last_action_at = :now,
                  updated_at = :now
            WHERE ${where} AND stage = 'handed'`,
          { ...repl, lastAction: 'Resend requested' },
        );
        await exec(
          this.sequelize,
          t,
          `UPDATE invitation_usage SET stage = 'register', last_action = :lastAction, last_action_at = :now,
                  updated_at = :now
            WHERE ${where} AND stage IN ('done', 'retired')`,
          { ...repl, lastAction: 'Resend requested: registering with Apple again' },
        );
        return toInt(row?.n ?? 0);
      });
    }
    return total;
  }

  // ---------- registration page ----------

  async findByCode(code: string): Promise<CodeTarget | null> {
    const rows = await select<{
      id: unknown;
      user_id: unknown;
      status: string;
      username: string;
      name: string;
      require_login: unknown;
      organization_name: string | null;
      state: string | null;
      invite_code: string | null;
      invitation_url: string | null;
      invitation_template: string | null;
    }>(
      this.sequelize,
      `SELECT u.id, u.user_id, u.status, usr.username, i.name, i.require_login, l.organization_name,
              r.state, r.invite_code, r.invitation_url, l.invitation_template
         FROM invitation_usage u
         JOIN vpp_invitations i ON i.id = u.invitation_id
         JOIN users usr ON usr.id = u.user_id
         LEFT JOIN vpp_locations l ON l.id = u.location_id
         LEFT JOIN vpp_registrations r ON r.location_id = u.location_id AND r.user_id = u.user_id
        WHERE u.registration_code = :code AND i.deleted_at IS NULL`,
      { code },
    );
    const r = rows[0];
    if (!r) return null;
    return {
      usageId: idString(r.id),
      userId: idString(r.user_id),
      username: r.username,
      invitationName: r.name,
      orgName: r.organization_name,
      requireLogin: toBool(r.require_login),
      status: asStatus(r.status),
      registrationState: asRegistrationState(r.state),
      invitationUrl: appleUrl(r.state, r.invite_code, r.invitation_url, r.invitation_template),
    };
  }

  async recordOpened(code: string, lastAction: string, now: Date): Promise<boolean> {
    return this.db.write(async (t) => {
      const rows = await select<{ id: unknown }>(
        this.sequelize,
        'SELECT id FROM invitation_usage WHERE registration_code = :code',
        { code },
        t,
      );
      const row = rows[0];
      if (!row) return false;
      await exec(
        this.sequelize,
        t,
        `UPDATE invitation_usage SET status = 'acknowledged', reason = NULL, last_action = :lastAction,
                last_action_at = :now, updated_at = :now
          WHERE id = :id AND status NOT IN (:finals)`,
        { id: toInt(row.id), lastAction: clip(lastAction), now, finals: FINAL_STATUSES },
      );
      return true;
    });
  }

  // ---------- channels' reports ----------

  async report(reports: readonly UsageReport[], now: Date): Promise<number> {
    const groups = new Map<string, { r: UsageReport; ids: number[] }>();
    for (const r of reports) {
      const key = dbId(r.usageId);
      if (key === null) continue;
      const g = JSON.stringify([
        r.status,
        r.reason ?? null,
        r.lastAction,
        r.at.getTime(),
        r.sentAt?.getTime(),
      ]);
      const group = groups.get(g) ?? { r, ids: [] };
      group.ids.push(key);
      groups.set(g, group);
    }
    if (groups.size === 0) return 0;
    return this.db.write(async (t) => {
      let n = 0;
      for (const { r, ids } of groups.values()) {
        for (const part of chunked(ids, IN_CHUNK)) {
          const sent = r.status === 'sent' ? ', sent_at = :sentAt' : '';
          n += await execCount(
            this.sequelize,
            t,
            `UPDATE invitation_usage SET status = :status, reason = :reason, last_action = :lastAction,
                    last_action_at = :at, updated_at = :now${sent}
              WHERE id IN (:ids) AND status IN (:from)`,
            {
              status: r.status,
              reason: r.status === 'failed' || r.status === 'skipped' ? clip(r.reason ?? r.status) : null,
              lastAction: clip(r.lastAction),
              at: r.at,
              sentAt: r.sentAt ?? r.at,
              now,
              ids: part,
              from: REPORT_FROM[r.status],
            },
          );
        }
      }
      return n;
    });
  }

  async setDevices(usageId: string, devices: readonly UsageDeviceReport[], now: Date): Promise<void> {
    const key = dbId(usageId);
    if (key === null) return;
    const unique = new Map(devices.map((d) => [d.enrollmentId, d]));
    await this.db.write(async (t) => {
      await exec(this.sequelize, t, 'DELETE FROM invitation_usage_devices WHERE usage_id = :key', { key });
      if (unique.size === 0) return;
      await this.m.UsageDevice.bulkCreate(
        [...unique.values()].map((d) => ({
          usageId: key,
          enrollmentId: d.enrollmentId,
          udid: d.udid,
          commandUuid: d.commandUuid,
          commandStatus: d.commandStatus,
          updatedAt: now,
        })),
        { transaction: t },
      );
    });
  }

  // ---------- internals ----------

  private async devicesOf(usageIds: readonly number[]): Promise<Map<string, UsageDevice[]>> {
    const out = new Map<string, UsageDevice[]>();
    for (const ids of chunked(usageIds, IN_CHUNK)) {
      const rows = await select<{
        usage_id: unknown;
        enrollment_id: string;
        udid: string;
        command_uuid: string | null;
        command_status: string | null;
      }>(
        this.sequelize,
        `SELECT usage_id, enrollment_id, udid, command_uuid, command_status FROM invitation_usage_devices
          WHERE usage_id IN (:ids) ORDER BY usage_id, udid, enrollment_id`,
        { ids },
      );
      for (const r of rows) {
        const id = idString(r.usage_id);
        const list = out.get(id) ?? [];
        list.push({
          udid: r.udid,
          enrollmentId: r.enrollment_id,
          commandUuid: r.command_uuid,
          commandStatus: r.command_status,
        });
        out.set(id, list);
      }
    }
    return out;
  }

  private async invitationIn(id: string, t?: Transaction, lock = false): Promise<Invitation | null> {
    const key = dbId(id);
    if (key === null) return null;
    const row = await this.m.Invitation.findByPk(key, {
      raw: true,
      ...(t ? { transaction: t } : {}),
      ...(t && lock && this.db.dialect !== 'sqlite' ? { lock: true } : {}),
    });
    return row ? toInvitation(row as unknown as InvitationRow) : null;
  }
}

function toInvitation(r: InvitationRow): Invitation {
  const scope = storedScope.parse(JSON.parse(r.scopeJson));
  const email = r.emailJson === null ? null : storedEmail.parse(JSON.parse(r.emailJson));
  const method = METHOD_SET.has(r.distributionMethod)
    ? (r.distributionMethod as DistributionMethod)
    : 'self_service_only';
  return {
    id: idString(r.id),
    name: r.name,
    locationId: idString(r.locationId),
    siteId: r.siteId === null || r.siteId === undefined ? null : idString(r.siteId),
    distributionMethod: method,
    autoRegisterManagedUsers: toBool(r.autoRegisterManagedUsers),
    requireLogin: toBool(r.requireLogin),
    email,
    scope,
    scopeGeneration: toInt(r.scopeGeneration),
    computedGeneration: toInt(r.computedGeneration),
    fanoutStartedAt: toDateOrNull(r.fanoutStartedAt),
    fanoutFinishedAt: toDateOrNull(r.fanoutFinishedAt),
    fanoutError: r.fanoutError,
    deletedAt: toDateOrNull(r.deletedAt),
    createdAt: toDate(r.createdAt),
    updatedAt: toDate(r.updatedAt),
  };
}
