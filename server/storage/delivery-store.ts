import { UniqueConstraintError, type Sequelize, type Transaction } from 'sequelize';
import type { ChannelType } from '../../shared/mdm/index.ts';
import type { Platform } from '../checkin/store.ts';
import type { CommandStatus } from '../commands/store.ts';
import {
  deviceLabel,
  type PromptChannel,
  type PromptDevice,
  type PromptUser,
} from '../delivery/eligibility.ts';
import {
  ACTIVE_PROMPT_STATES,
  PROMPT_STATES,
  type ClaimResult,
  type DeliveryStore,
  type DeliveryUsage,
  type NewPrompt,
  type OrphanedPrompt,
  type PromptClaim,
  type PromptRecord,
  type PromptResult,
  type PromptState,
  type PromptWork,
  type SelfServiceItem,
  type UserLocation,
} from '../delivery/store.ts';
import {
  FINAL_STATUSES,
  USAGE_STAGES,
  USAGE_STATUSES,
  type UsageStage,
  type UsageStatus,
} from '../invitations/model.ts';
import { invitationUrlFrom } from '../vpp/apple-client.ts';
import { chunked } from './command-store.ts';
import type { Database } from './database.ts';
import { toBool, toDate, toDateOrNull, toInt } from './models.ts';
import { dbId, dbIds, exec, execCount, idString, select } from './sql-kit.ts';

const IN_CHUNK = 500;
const MAX_TEXT = 500;
const CLAIM_ATTEMPTS = 5;

const PLATFORMS: readonly Platform[] = ['macos', 'ios', 'ipados'];
const CHANNELS: readonly ChannelType[] = [
  'device',
  'user',
  'shared_ipad_user',
  'user_enrollment_device',
  'user_enrollment_user',
];
const COMMAND_STATUSES: readonly CommandStatus[] = [
  'queued',
  'sent',
  'acknowledged',
  'error',
  'command_format_error',
  'not_now',
  'withdrawn',
];
const SELF_SERVICE_METHODS = ['prompt_and_self_service', 'self_service_only'];
/** Stages in which a channel has the usage (or had it and it registered). */
const HANDED_STAGES: readonly UsageStage[] = ['handed', 'resend', 'notify_registered'];

const clip = (s: string | null | undefined) => (s === null || s === undefined ? null : s.slice(0, MAX_TEXT));
const oneOf = <T extends string>(list: readonly T[], value: unknown, fallback: T): T =>
  list.find((v) => v === value) ?? fallback;
const asStatus = (s: unknown): UsageStatus => oneOf(USAGE_STATUSES, s, 'pending');
const asStage = (s: unknown): UsageStage => oneOf(USAGE_STAGES, s, 'register');

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

interface PromptRow {
  id: unknown;
  user_id: unknown;
  location_id: unknown;
  udid: string;
  enrollment_id: string | null;
  command_uuid: string | null;
  invite_code: string | null;
  state: string;
  command_status: string | null;
  reason: string | null;
  revision: unknown;
  queued_at: unknown;
  answered_at: unknown;
  updated_at: unknown;
  device_name: string | null;
  product_name: string | null;
  model: string | null;
  platform: string | null;
}

const PROMPT_COLUMNS = `p.id, p.user_id, p.location_id, p.udid, p.enrollment_id, p.command_uuid, p.invite_code, p.state,
  p.command_status, p.reason, p.revision, p.queued_at, p.answered_at, p.updated_at,
  d.device_name, d.product_name, d.model, d.platform`;
const PROMPT_FROM = 'device_prompts p LEFT JOIN devices d ON d.udid = p.udid';

function toPrompt(r: PromptRow): PromptRecord & { revision: number } {
  return {
    id: idString(r.id),
    userId: idString(r.user_id),
    locationId: idString(r.location_id),
    udid: r.udid,
    enrollmentId: r.enrollment_id,
    commandUuid: r.command_uuid,
    inviteCode: r.invite_code,
    state: oneOf(PROMPT_STATES, r.state, 'withdrawn'),
    commandStatus: r.command_status === null ? null : oneOf(COMMAND_STATUSES, r.command_status, 'queued'),
    reason: r.reason,
    revision: toInt(r.revision),
    queuedAt: toDateOrNull(r.queued_at),
    answeredAt: toDateOrNull(r.answered_at),
    updatedAt: toDate(r.updated_at),
    deviceLabel: deviceLabel({
      udid: r.udid,
      deviceName: r.device_name,
      productName: r.product_name,
      model: r.model,
      ...(r.platform ? { platform: r.platform } : {}),
    }),
  };
}

const strip = ({ revision: _revision, ...p }: PromptRecord & { revision: number }): PromptRecord => p;

/** Thrown inside a claim when a row changed under it: the whole claim runs again. */
class ClaimConflict extends Error {}

/** `DeliveryStore` with sequelize on SQLite, Postgres and MariaDB. */
export class SqlDeliveryStore implements DeliveryStore {
  private readonly sequelize: Sequelize;

  constructor(private readonly db: Database) {
    this.sequelize = db.sequelize;
  }

  /** A numeric id column as text (to compare with `devices.user_id`, a string). */
  private asText(expr: string): string {
    return this.db.dialect === 'mariadb' ? `CAST(${expr} AS CHAR)` : `CAST(${expr} AS TEXT)`;
  }

  // ---------- devices and users ----------

  async devicesOfUsers(userIds: readonly string[]): Promise<PromptDevice[]> {
    const ids = [...new Set(userIds)];
    const out: PromptDevice[] = [];
    for (const part of chunked(ids, IN_CHUNK)) {
      const rows = await select<DeviceRowSql>(
        this.sequelize,
        `SELECT udid, platform, os_version, user_enrollment, enrolled, device_name, product_name, model, user_id
           FROM devices WHERE user_id IN (:part) ORDER BY udid`,
        { part },
      );
      out.push(...(await this.withChannels(rows)));
    }
    return out;
  }

  async promptDevice(udid: string): Promise<PromptDevice | null> {
    const rows = await select<DeviceRowSql>(
      this.sequelize,
      `SELECT udid, platform, os_version, user_enrollment, enrolled, device_name, product_name, model, user_id
         FROM devices WHERE udid = :udid`,
      { udid },
    );
    return (await this.withChannels(rows))[0] ?? null;
  }

  private async withChannels(rows: DeviceRowSql[]): Promise<PromptDevice[]> {
    if (rows.length === 0) return [];
    const channels = new Map<string, PromptChannel[]>();
    for (const part of chunked(
      rows.map((r) => r.udid),
      IN_CHUNK,
    )) {
      const list = await select<{
        id: string;
        udid: string;
        channel: string;
        user_short_name: string | null;
        enabled: unknown;
        token_updated_at: unknown;
      }>(
        this.sequelize,
        `SELECT id, udid, channel, user_short_name, enabled, token_updated_at FROM enrollments
          WHERE udid IN (:part) ORDER BY id`,
        { part },
      );
      for (const c of list) {
        const channel = CHANNELS.find((x) => x === c.channel);
        if (!channel) continue;
        const of = channels.get(c.udid) ?? [];
        of.push({
          id: c.id,
          channel,
          userShortName: c.user_short_name,
          enabled: toBool(c.enabled),
          tokenUpdatedAt: toDateOrNull(c.token_updated_at),
        });
        channels.set(c.udid, of);
      }
    }
    return rows.map((r) => ({
      udid: r.udid,
      platform: oneOf(PLATFORMS, r.platform, 'ios'),
      osVersion: r.os_version,
      userEnrollment: toBool(r.user_enrollment),
      enrolled: toBool(r.enrolled),
      deviceName: r.device_name,
      productName: r.product_name,
      model: r.model,
      userId: r.user_id,
      channels: channels.get(r.udid) ?? [],
    }));
  }

  async promptUsers(userIds: readonly string[]): Promise<PromptUser[]> {
    const out: PromptUser[] = [];
    for (const part of chunked(dbIds(userIds), IN_CHUNK)) {
      const rows = await select<{
        id: unknown;
        username: string;
        email: string | null;
        managed_apple_id: string | null;
      }>(this.sequelize, 'SELECT id, username, email, managed_apple_id FROM users WHERE id IN (:part)', {
        part,
      });
      for (const r of rows) {
        out.push({
          userId: idString(r.id),
          username: r.username,
          email: r.email,
          managedAppleId: r.managed_apple_id,
        });
      }
    }
    return out;
  }

  // ---------- prompts ----------

  async promptsOf(pairs: readonly UserLocation[]): Promise<PromptRecord[]> {
    return (await this.promptRowsOf(pairs)).map(strip);
  }

  private async promptRowsOf(
    pairs: readonly UserLocation[],
    t?: Transaction,
  ): Promise<(PromptRecord & { revision: number })[]> {
    const out: (PromptRecord & { revision: number })[] = [];
    for (const [locationId, userIds] of byLocation(pairs)) {
      const loc = dbId(locationId);
      if (loc === null) continue;
      for (const part of chunked(dbIds(userIds), IN_CHUNK)) {
        const rows = await select<PromptRow>(
          this.sequelize,
          `SELECT ${PROMPT_COLUMNS} FROM ${PROMPT_FROM}
            WHERE p.location_id = :loc AND p.user_id IN (:part) ORDER BY p.id`,
          { loc, part },
          t,
        );
        out.push(...rows.map(toPrompt));
      }
    }
    return out;
  }

  async promptsOnDevice(udid: string): Promise<PromptRecord[]> {
    const rows = await select<PromptRow>(
      this.sequelize,
      `SELECT ${PROMPT_COLUMNS} FROM ${PROMPT_FROM} WHERE p.udid = :udid ORDER BY p.id`,
      { udid },
    );
    return rows.map((r) => strip(toPrompt(r)));
  }

  async claim(claims: readonly PromptClaim[], now: Date): Promise<ClaimResult> {
    const unique = new Map<string, PromptClaim>();
    for (const c of claims) unique.set(`${c.userId}:${c.locationId}:${c.udid}`, c);
    if (unique.size === 0) return { queued: [], kept: [], replaced: [] };
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.db.write((t) => this.claimIn(t, [...unique.values()], now), {
          retryOnConflict: true,
        });
      } catch (err) {
        if (
          !(err instanceof ClaimConflict || err instanceof UniqueConstraintError) ||
          attempt >= CLAIM_ATTEMPTS
        ) {
          throw err;
        }
      }
    }
  }

  private async claimIn(t: Transaction, claims: readonly PromptClaim[], now: Date): Promise<ClaimResult> {
    const existing = new Map<string, PromptRecord & { revision: number }>();
    for (const p of await this.promptRowsOf(claims, t))
      existing.set(`${p.userId}:${p.locationId}:${p.udid}`, p);
    const result: ClaimResult = { queued: [], kept: [], replaced: [] };
    const inserts: Record<string, unknown>[] = [];
    for (const c of claims) {
      const row = existing.get(`${c.userId}:${c.locationId}:${c.udid}`);
      const base = { user_id: dbId(c.userId), location_id: dbId(c.locationId), udid: c.udid };
      if (base.user_id === null || base.location_id === null) continue;
      if (c.kind === 'skip') {
        if (!row) {
          inserts.push({ ...base, state: 'skipped', reason: clip(c.reason) });
        } else if (row.state === 'skipped' && row.reason !== c.reason) {
          await this.update(t, row, { state: 'skipped', reason: clip(c.reason) }, now);
        }
        // a row that holds (or held) a prompt keeps it: the usage's devices show what happened
        continue;
      }
      const active = row !== undefined && ACTIVE_PROMPT_STATES.includes(row.state);
      if (row && active && row.inviteCode === c.inviteCode && row.enrollmentId === c.enrollmentId) {
        result.kept.push(strip(row));
        continue;
      }
      const prompt = {
        enrollment_id: c.enrollmentId,
        command_uuid: c.newCommandUuid,
        invite_code: c.inviteCode,
        state: 'queued',
        command_status: 'queued',
        reason: null,
        queued_at: now,
        answered_at: null,
      };
      if (row) {
        if (active && row.commandUuid !== null) result.replaced.push(row.commandUuid);
        await this.update(t, row, prompt, now);
      } else {
        inserts.push({ ...base, ...prompt });
      }
      const queued: NewPrompt = {
        userId: c.userId,
        locationId: c.locationId,
        udid: c.udid,
        enrollmentId: c.enrollmentId,
        commandUuid: c.newCommandUuid,
      };
      result.queued.push(queued);
    }
    for (const part of chunked(inserts, IN_CHUNK)) {
      await this.sequelize.getQueryInterface().bulkInsert(
        'device_prompts',
        part.map((r) => ({
          enrollment_id: null,
          command_uuid: null,
          invite_code: null,
          command_status: null,
          reason: null,
          queued_at: null,
          answered_at: null,
          ...r,
          revision: 0,
          created_at: now,
          updated_at: now,
        })),
        { transaction: t },
      );
    }
    return result;
  }

  /** Changes one row if nobody changed it since it was read (else the claim runs again). */
  private async update(
    t: Transaction,
    row: { id: string; revision: number },
    values: Record<string, unknown>,
    now: Date,
  ): Promise<void> {
    const sets = Object.keys(values).map((k) => `${k} = :v_${k}`);
    const replacements: Record<string, unknown> = { id: dbId(row.id), revision: row.revision, now };
    for (const [k, v] of Object.entries(values)) replacements[`v_${k}`] = v;
    const n = await execCount(
      this.sequelize,
      t,
      `UPDATE device_prompts SET ${sets.join(', ')}, revision = revision + 1, updated_at = :now
        WHERE id = :id AND revision = :revision`,
      replacements,
    );
    if (n !== 1) throw new ClaimConflict(`device prompt ${row.id} changed meanwhile`);
  }

  async applyResults(results: readonly PromptResult[], now: Date): Promise<PromptRecord[]> {
    const byUuid = new Map<string, PromptResult>();
    for (const r of results) {
      const known = byUuid.get(r.commandUuid);
      // a final answer wins over a NotNow of the same batch
      if (!known || known.state === 'not_now') byUuid.set(r.commandUuid, r);
    }
    if (byUuid.size === 0) return [];
    // Most answers are not to prompts: find the active prompts first, without taking the write path.
    const todo: { row: PromptRecord & { revision: number }; r: PromptResult; from: PromptState[] }[] = [];
    for (const part of chunked([...byUuid.keys()], IN_CHUNK)) {
      const rows = await select<PromptRow>(
        this.sequelize,
        `SELECT ${PROMPT_COLUMNS} FROM ${PROMPT_FROM} WHERE p.command_uuid IN (:part) AND p.state IN (:active)`,
        { part, active: ACTIVE_PROMPT_STATES },
      );
      for (const row of rows.map(toPrompt)) {
        const r = row.commandUuid === null ? undefined : byUuid.get(row.commandUuid);
        if (!r || r.enrollmentId !== row.enrollmentId) continue;
        const from: PromptState[] = r.state === 'not_now' ? ['queued'] : [...ACTIVE_PROMPT_STATES];
        if (from.includes(row.state)) todo.push({ row, r, from });
      }
    }
    if (todo.length === 0) return [];
    // The change itself is conditional on the state: a concurrent answer or withdrawal wins once.
    return this.db.write(async (t) => {
      const changed: PromptRecord[] = [];
      for (const { row, r, from } of todo) {
        const n = await execCount(
          this.sequelize,
          t,
          `UPDATE device_prompts SET state = :state, command_status = :commandStatus, reason = :reason,
                  answered_at = :answeredAt, revision = revision + 1, updated_at = :now
            WHERE id = :id AND command_uuid = :uuid AND state IN (:from)`,
          {
            id: dbId(row.id),
            uuid: r.commandUuid,
            state: r.state,
            commandStatus: r.commandStatus,
            reason: clip(r.reason),
            answeredAt: r.state === 'not_now' ? null : now,
            now,
            from,
          },
        );
        if (n === 1) {
          changed.push({
            ...strip(row),
            state: r.state,
            commandStatus: r.commandStatus,
            reason: clip(r.reason),
            answeredAt: r.state === 'not_now' ? null : now,
            updatedAt: now,
          });
        }
      }
      return changed;
    });
  }

  async markWithdrawn(commandUuids: readonly string[], reason: string, now: Date): Promise<PromptRecord[]> {
    const uuids = [...new Set(commandUuids)];
    if (uuids.length === 0) return [];
    return this.db.write(async (t) => {
      const changed: PromptRecord[] = [];
      for (const part of chunked(uuids, IN_CHUNK)) {
        const rows = await select<PromptRow>(
          this.sequelize,
          `SELECT ${PROMPT_COLUMNS} FROM ${PROMPT_FROM}
            WHERE p.command_uuid IN (:part) AND p.state IN (:active)`,
          { part, active: ACTIVE_PROMPT_STATES },
          t,
        );
        if (rows.length === 0) continue;
        const ids = rows.map((r) => toInt(r.id));
        await exec(
          this.sequelize,
          t,
          `UPDATE device_prompts SET state = 'withdrawn', command_status = 'withdrawn', reason = :reason,
                  answered_at = :now, revision = revision + 1, updated_at = :now
            WHERE id IN (:ids) AND command_uuid IN (:part) AND state IN (:active)`,
          { ids, part, reason: clip(reason), now, active: ACTIVE_PROMPT_STATES },
        );
        for (const row of rows) {
          changed.push({
            ...strip(toPrompt(row)),
            state: 'withdrawn',
            commandStatus: 'withdrawn',
            reason: clip(reason),
            answeredAt: now,
            updatedAt: now,
          });
        }
      }
      return changed;
    });
  }

  // ---------- invitations ----------

  async usagesOf(pairs: readonly UserLocation[], methods: readonly string[]): Promise<DeliveryUsage[]> {
    if (methods.length === 0) return [];
    const out: DeliveryUsage[] = [];
    for (const [locationId, userIds] of byLocation(pairs)) {
      const loc = dbId(locationId);
      if (loc === null) continue;
      for (const part of chunked(dbIds(userIds), IN_CHUNK)) {
        const rows = await select<{
          id: unknown;
          invitation_id: unknown;
          user_id: unknown;
          location_id: unknown;
          status: string;
          stage: string;
        }>(
          this.sequelize,
          `SELECT u.id, u.invitation_id, u.user_id, u.location_id, u.status, u.stage
             FROM invitation_usage u JOIN vpp_invitations i ON i.id = u.invitation_id
            WHERE u.location_id = :loc AND u.user_id IN (:part) AND i.deleted_at IS NULL
              AND i.distribution_method IN (:methods)
            ORDER BY u.id`,
          { loc, part, methods },
        );
        for (const r of rows) {
          out.push({
            usageId: idString(r.id),
            invitationId: idString(r.invitation_id),
            userId: idString(r.user_id),
            locationId: idString(r.location_id),
            status: asStatus(r.status),
            stage: asStage(r.stage),
          });
        }
      }
    }
    return out;
  }

  async promptWorkForUser(userId: string): Promise<PromptWork[]> {
    const user = dbId(userId);
    if (user === null) return [];
    const rows = await select<{
      id: unknown;
      location_id: unknown;
      status: string;
      state: string | null;
      invite_code: string | null;
      invitation_url: string | null;
      invitation_template: string | null;
    }>(
      this.sequelize,
      `SELECT u.id, u.location_id, u.status, r.state, r.invite_code, r.invitation_url, l.invitation_template
         FROM invitation_usage u
         JOIN vpp_invitations i ON i.id = u.invitation_id
         JOIN vpp_registrations r ON r.location_id = u.location_id AND r.user_id = u.user_id
         LEFT JOIN vpp_locations l ON l.id = u.location_id
        WHERE u.user_id = :user AND i.deleted_at IS NULL AND i.distribution_method = 'prompt_and_self_service'
          AND u.stage = 'handed' AND u.status NOT IN (:finals) AND r.state = 'registered'
        ORDER BY u.id`,
      { user, finals: FINAL_STATUSES },
    );
    const work = new Map<string, PromptWork>();
    for (const r of rows) {
      const url = appleUrl(r.state, r.invite_code, r.invitation_url, r.invitation_template);
      if (url === null || r.invite_code === null) continue;
      const locationId = idString(r.location_id);
      const w = work.get(locationId) ?? {
        userId,
        locationId,
        inviteCode: r.invite_code,
        invitationUrl: url,
        usages: [],
      };
      w.usages.push({ usageId: idString(r.id), status: asStatus(r.status) });
      work.set(locationId, w);
    }
    return [...work.values()];
  }

  async selfServiceItems(userId: string): Promise<SelfServiceItem[]> {
    const user = dbId(userId);
    if (user === null) return [];
    return this.selfService('u.user_id = :user', { user });
  }

  async selfServiceItem(usageId: string): Promise<SelfServiceItem | null> {
    const id = dbId(usageId);
    if (id === null) return null;
    return (await this.selfService('u.id = :id', { id }))[0] ?? null;
  }

  private async selfService(
    filter: string,
    replacements: Record<string, unknown>,
  ): Promise<SelfServiceItem[]> {
    const rows = await select<{
      id: unknown;
      invitation_id: unknown;
      user_id: unknown;
      status: string;
      name: string;
      location_name: string | null;
      location_label: string | null;
      state: string | null;
      invite_code: string | null;
      invitation_url: string | null;
      invitation_template: string | null;
    }>(
      this.sequelize,
      `SELECT u.id, u.invitation_id, u.user_id, u.status, i.name, l.location_name, l.name AS location_label,
              r.state, r.invite_code, r.invitation_url, l.invitation_template
         FROM invitation_usage u
         JOIN vpp_invitations i ON i.id = u.invitation_id
         JOIN vpp_registrations r ON r.location_id = u.location_id AND r.user_id = u.user_id
         LEFT JOIN vpp_locations l ON l.id = u.location_id
        WHERE ${filter} AND i.deleted_at IS NULL AND i.distribution_method IN (:methods)
          AND (u.stage IN (:handed) OR (u.stage = 'done' AND u.status = 'registered'))
          AND u.status <> 'auto_registered' AND r.state IN ('registered', 'associated')
        ORDER BY u.id`,
      { ...replacements, methods: SELF_SERVICE_METHODS, handed: HANDED_STAGES },
    );
    const out: SelfServiceItem[] = [];
    for (const r of rows) {
      const url = appleUrl(r.state, r.invite_code, r.invitation_url, r.invitation_template);
      if (url === null) continue;
      const status = asStatus(r.status);
      out.push({
        usageId: idString(r.id),
        invitationId: idString(r.invitation_id),
        invitationName: r.name,
        locationName: r.location_name ?? r.location_label ?? '',
        userId: idString(r.user_id),
        status,
        registered: status === 'registered' || r.state === 'associated',
        invitationUrl: url,
      });
    }
    return out;
  }

  // ---------- reconcile ----------

  async orphanedPrompts(before: Date, limit: number, udid?: string): Promise<OrphanedPrompt[]> {
    const rows = await select<PromptRow & { result_status: string | null; result_xml: string | null }>(
      this.sequelize,
      `SELECT ${PROMPT_COLUMNS}, r.status AS result_status, r.result_xml
         FROM ${PROMPT_FROM}
         LEFT JOIN command_queue q ON q.command_uuid = p.command_uuid AND q.enrollment_id = p.enrollment_id
         LEFT JOIN command_results r ON r.enrollment_id = p.enrollment_id AND r.command_uuid = p.command_uuid
        WHERE p.state IN (:active) AND p.updated_at < :before AND q.seq IS NULL
          ${udid === undefined ? '' : 'AND p.udid = :udid'}
        ORDER BY p.id LIMIT ${positive(limit)}`,
      { active: ACTIVE_PROMPT_STATES, before, udid: udid ?? null },
    );
    return rows.map((r) => ({
      prompt: strip(toPrompt(r)),
      result: r.result_status === null ? null : { status: r.result_status, resultXml: r.result_xml },
    }));
  }

  async activePromptsOfAssociated(limit: number): Promise<PromptRecord[]> {
    const rows = await select<PromptRow>(
      this.sequelize,
      `SELECT ${PROMPT_COLUMNS}
         FROM ${PROMPT_FROM}
         JOIN vpp_registrations reg ON reg.location_id = p.location_id AND reg.user_id = p.user_id
        WHERE p.state IN (:active) AND reg.state = 'associated'
        ORDER BY p.id LIMIT ${positive(limit)}`,
      { active: ACTIVE_PROMPT_STATES },
    );
    return rows.map((r) => strip(toPrompt(r)));
  }

  async devicesWithStrayPrompts(limit: number): Promise<string[]> {
    const rows = await select<{ udid: string }>(
      this.sequelize,
      `SELECT DISTINCT p.udid FROM device_prompts p LEFT JOIN devices d ON d.udid = p.udid
        WHERE p.state IN (:active)
          AND (d.udid IS NULL OR d.user_id IS NULL OR d.user_id <> ${this.asText('p.user_id')})
        LIMIT ${positive(limit)}`,
      { active: ACTIVE_PROMPT_STATES },
    );
    return rows.map((r) => r.udid);
  }

  async devicesMissingPrompts(limit: number): Promise<string[]> {
    const rows = await select<{ udid: string }>(
      this.sequelize,
      `SELECT DISTINCT d.udid
         FROM invitation_usage u
         JOIN vpp_invitations i ON i.id = u.invitation_id
         JOIN vpp_registrations r ON r.location_id = u.location_id AND r.user_id = u.user_id
         JOIN devices d ON d.user_id = ${this.asText('u.user_id')}
        WHERE i.deleted_at IS NULL AND i.distribution_method = 'prompt_and_self_service'
          AND u.stage = 'handed' AND u.status NOT IN (:finals) AND r.state = 'registered' AND d.enrolled = :yes
          AND NOT EXISTS (SELECT 1 FROM device_prompts p
                           WHERE p.user_id = u.user_id AND p.location_id = u.location_id AND p.udid = d.udid)
        LIMIT ${positive(limit)}`,
      { finals: FINAL_STATUSES, yes: true },
    );
    return rows.map((r) => r.udid);
  }

  // ---------- internals ----------
}

interface DeviceRowSql {
  udid: string;
  platform: string;
  os_version: string | null;
  user_enrollment: unknown;
  enrolled: unknown;
  device_name: string | null;
  product_name: string | null;
  model: string | null;
  user_id: string | null;
}

function byLocation(pairs: readonly UserLocation[]): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const p of pairs) {
    const list = out.get(p.locationId) ?? [];
    list.push(p.userId);
    out.set(p.locationId, list);
  }
  return out;
}

const positive = (n: number) => Math.max(1, Math.trunc(n));
