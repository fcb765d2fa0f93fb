import {
  DataTypes,
  QueryTypes,
  type Model,
  type ModelStatic,
  type Optional,
  type Sequelize,
  type Transaction,
} from 'sequelize';
import type {
  ClaimedPush,
  PushCertificateRecord,
  PushCertificateStore,
  PushQueueStats,
  PushQueueStore,
  PushSettlement,
} from '../push/store.ts';
import { chunked } from './command-store.ts';
import type { Database } from './database.ts';
import { toBool, toDate, toDateOrNull, toInt } from './models.ts';
import { exec, idString } from './sql-kit.ts';

const IN_CHUNK = 500;
/** `last_error` is a VARCHAR(255). */
const MAX_ERROR = 255;

interface PushCertificateRow {
  id: number;
  topic: string;
  certPem: string;
  keySealed: string;
  notAfter: Date;
  uploadedAt: Date;
  active: boolean;
}

interface PushRequestRow {
  enrollmentId: string;
  generation: number;
  claimedGeneration: number | null;
  dueAt: Date;
  attempts: number;
  lastError: string | null;
  claimedBy: string | null;
  leaseUntil: Date | null;
  createdAt: Date;
  updatedAt: Date;
}

interface PushModels {
  Certificate: ModelStatic<Model<PushCertificateRow, Optional<PushCertificateRow, 'id'>>>;
  Request: ModelStatic<Model<PushRequestRow, PushRequestRow>>;
}

const cache = new WeakMap<Sequelize, PushModels>();

/** Models over the tables of migration `0002_push` (never `sync`ed). */
function pushModelsOf(sequelize: Sequelize): PushModels {
  const existing = cache.get(sequelize);
  if (existing) return existing;
  const longText = sequelize.getDialect() === 'mariadb' ? DataTypes.TEXT('long') : DataTypes.TEXT;
  const options = { underscored: true, timestamps: false, freezeTableName: true };
  const date = (allowNull: boolean) => ({ type: DataTypes.DATE(3), allowNull });
  const models: PushModels = {
    Certificate: sequelize.define(
      'PushCertificate',
      {
        id: { type: DataTypes.BIGINT, primaryKey: true, autoIncrement: true },
        topic: { type: DataTypes.STRING, allowNull: false },
        certPem: { type: longText, allowNull: false },
        keySealed: { type: longText, allowNull: false },
        notAfter: date(false),
        uploadedAt: date(false),
        active: { type: DataTypes.BOOLEAN, allowNull: false },
      },
      { ...options, tableName: 'push_certificates' },
    ),
    Request: sequelize.define(
      'PushRequest',
      {
        enrollmentId: { type: DataTypes.STRING, primaryKey: true },
        generation: { type: DataTypes.INTEGER, allowNull: false },
        claimedGeneration: { type: DataTypes.INTEGER, allowNull: true },
        dueAt: date(false),
        attempts: { type: DataTypes.INTEGER, allowNull: false },
        lastError: { type: DataTypes.STRING, allowNull: true },
        claimedBy: { type: DataTypes.STRING, allowNull: true },
        leaseUntil: date(true),
        createdAt: date(false),
        updatedAt: date(false),
      },
      { ...options, tableName: 'push_requests' },
    ),
  };
  cache.set(sequelize, models);
  return models;
}

interface CertificateQueryRow {
  id: unknown;
  topic: string;
  cert_pem: string;
  key_sealed: string;
  not_after: unknown;
  uploaded_at: unknown;
}

function toCertificate(r: CertificateQueryRow): PushCertificateRecord {
  return {
    id: idString(r.id),
    topic: r.topic,
    certPem: r.cert_pem,
    keySealed: r.key_sealed,
    notAfter: toDate(r.not_after),
    uploadedAt: toDate(r.uploaded_at),
  };
}

const ACTIVE_CERTIFICATE = `SELECT id, topic, cert_pem, key_sealed, not_after, uploaded_at
  FROM push_certificates WHERE active = :yes ORDER BY id DESC LIMIT 1`;

export class SqlPushCertificateStore implements PushCertificateStore {
  private readonly m: PushModels;

  constructor(private readonly db: Database) {
    this.m = pushModelsOf(db.sequelize);
  }

  async activeId(): Promise<string | null> {
    const rows = await this.db.sequelize.query<{ id: unknown }>(
      'SELECT id FROM push_certificates WHERE active = :yes ORDER BY id DESC LIMIT 1',
      { type: QueryTypes.SELECT, replacements: { yes: true } },
    );
    const row = rows[0];
    return row ? idString(row.id) : null;
  }

  async getActive(): Promise<PushCertificateRecord | null> {
    const rows = await this.db.sequelize.query<CertificateQueryRow>(ACTIVE_CERTIFICATE, {
      type: QueryTypes.SELECT,
      replacements: { yes: true },
    });
    const row = rows[0];
    return row ? toCertificate(row) : null;
  }

  async replace(
    input: Omit<PushCertificateRecord, 'id'>,
    check: (current: PushCertificateRecord | null) => void,
  ): Promise<PushCertificateRecord> {
    return this.db.write(async (t) => {
      const rows = await this.db.sequelize.query<CertificateQueryRow>(ACTIVE_CERTIFICATE, {
        type: QueryTypes.SELECT,
        replacements: { yes: true },
        transaction: t,
      });
      const current = rows[0];
      check(current ? toCertificate(current) : null);
      await this.m.Certificate.update({ active: false }, { where: { active: true }, transaction: t });
      const created = await this.m.Certificate.create({ ...input, active: true }, { transaction: t });
      return { ...input, id: idString(created.get('id')) };
    });
  }
}

interface ClaimQueryRow {
  enrollment_id: string;
  attempts: unknown;
  push_token: string | null;
  push_magic: string | null;
  enabled: unknown;
  push_token_dead: unknown;
  last_pushed_at: unknown;
}

const sortedUnique = (ids: readonly string[]) => [...new Set(ids)].sort();

export class SqlPushQueueStore implements PushQueueStore {
  private readonly m: PushModels;

  constructor(private readonly db: Database) {
    this.m = pushModelsOf(db.sequelize);
  }

  async request(enrollmentIds: readonly string[], now: Date): Promise<void> {
    const ids = sortedUnique(enrollmentIds);
    if (ids.length === 0) return;
    await this.db.write(async (t) => {
      for (const part of chunked(ids, IN_CHUNK)) {
        await this.m.Request.bulkCreate(
          part.map((enrollmentId) => ({
            enrollmentId,
            generation: 0,
            claimedGeneration: null,
            dueAt: now,
            attempts: 0,
            lastError: null,
            claimedBy: null,
            leaseUntil: null,
            createdAt: now,
            updatedAt: now,
          })),
          { transaction: t, ignoreDuplicates: true },
        );
        // One more request on every row, new or not: a row claimed before this stays for one more push.
        await exec(
          this.db.sequelize,
          t,
          `UPDATE push_requests SET generation = generation + 1, updated_at = :now
            WHERE enrollment_id IN (:ids)`,
          { now, ids: part },
        );
      }
    });
  }

  async claim(owner: string, now: Date, limit: number, leaseMs: number): Promise<ClaimedPush[]> {
    // Another instance may take every probed row first: probe again (those rows are leased now).
    for (let attempt = 0; attempt < 3; attempt++) {
      const claimed = await this.claimOnce(owner, now, limit, leaseMs);
      if (claimed === null) return [];
      if (claimed.length > 0) return claimed;
    }
    return [];
  }

  /** Null when nothing is due; an empty list when other instances claimed every row probed. */
  private async claimOnce(
    owner: string,
    now: Date,
    limit: number,
    leaseMs: number,
  ): Promise<ClaimedPush[] | null> {
    // A read-only probe first: an idle queue costs no write (every instance polls it).
    const due = await this.db.sequelize.query<{ enrollment_id: string }>(
      `SELECT enrollment_id FROM push_requests
        WHERE due_at <= :now AND (lease_until IS NULL OR lease_until <= :now)
        ORDER BY due_at
        LIMIT :limit`,
      { type: QueryTypes.SELECT, replacements: { now, limit } },
    );
    if (due.length === 0) return null;
    const ids = sortedUnique(due.map((r) => r.enrollment_id));
    const leaseUntil = new Date(now.getTime() + leaseMs);
    return this.db.write(async (t) => {
      // The conditional UPDATE is the claim: a row another instance claimed meanwhile no longer matches.
      await exec(
        this.db.sequelize,
        t,
        `UPDATE push_requests
            SET claimed_by = :owner, lease_until = :leaseUntil, claimed_generation = generation
          WHERE enrollment_id IN (:ids) AND due_at <= :now AND (lease_until IS NULL OR lease_until <= :now)`,
        { owner, leaseUntil, ids, now },
      );
      const rows = await this.db.sequelize.query<ClaimQueryRow>(
        `SELECT r.enrollment_id, r.attempts, e.push_token, e.push_magic, e.enabled, e.push_token_dead,
                e.last_pushed_at
           FROM push_requests r LEFT JOIN enrollments e ON e.id = r.enrollment_id
          WHERE r.claimed_by = :owner`,
        { type: QueryTypes.SELECT, replacements: { owner }, transaction: t },
      );
      return rows.map((r) => ({
        enrollmentId: r.enrollment_id,
        attempts: toInt(r.attempts),
        pushToken: r.push_token,
        pushMagic: r.push_magic,
        enabled: r.enabled !== null && toBool(r.enabled),
        pushTokenDead: toBool(r.push_token_dead),
        lastPushedAt: toDateOrNull(r.last_pushed_at),
      }));
    });
  }

  async settle(owner: string, s: PushSettlement, now: Date): Promise<void> {
    await this.db.write(async (t) => {
      // Done: the row goes unless it was requested again after the claim; then it stays for one more push.
      const finish = async (ids: readonly string[], dueAt: Date) => {
        for (const part of chunked(sortedUnique(ids), IN_CHUNK)) {
          await exec(
            this.db.sequelize,
            t,
            `DELETE FROM push_requests
              WHERE claimed_by = :owner AND enrollment_id IN (:ids) AND generation = claimed_generation`,
            { owner, ids: part },
          );
          await exec(
            this.db.sequelize,
            t,
            `UPDATE push_requests
                SET claimed_by = NULL, lease_until = NULL, claimed_generation = NULL, attempts = 0,
                    last_error = NULL, due_at = :dueAt, updated_at = :now
              WHERE claimed_by = :owner AND enrollment_id IN (:ids)`,
            { owner, ids: part, dueAt, now },
          );
        }
      };
      await finish(s.sent, s.followUpAt);
      await finish([...s.dead.map((d) => d.enrollmentId), ...s.dropped], now);
      for (const d of s.deferred) {
        await exec(
          this.db.sequelize,
          t,
          `UPDATE push_requests
              SET claimed_by = NULL, lease_until = NULL, claimed_generation = NULL, due_at = :dueAt,
                  updated_at = :now
            WHERE claimed_by = :owner AND enrollment_id = :id`,
          { owner, id: d.enrollmentId, dueAt: d.dueAt, now },
        );
      }
      // Failures of a batch share a few (attempts, due, error) values: one UPDATE per group.
      const groups = new Map<string, { attempts: number; dueAt: Date; error: string; ids: string[] }>();
      for (const f of s.failed) {
        const error = f.error.slice(0, MAX_ERROR);
        const key = `${f.attempts}\n${f.dueAt.getTime()}\n${error}`;
        const group = groups.get(key) ?? { attempts: f.attempts, dueAt: f.dueAt, error, ids: [] };
        group.ids.push(f.enrollmentId);
        groups.set(key, group);
      }
      for (const g of groups.values()) {
        for (const part of chunked(sortedUnique(g.ids), IN_CHUNK)) {
          await exec(
            this.db.sequelize,
            t,
            `UPDATE push_requests
                SET claimed_by = NULL, lease_until = NULL, claimed_generation = NULL, attempts = :attempts,
                    last_error = :error, due_at = :dueAt, updated_at = :now
              WHERE claimed_by = :owner AND enrollment_id IN (:ids)`,
            { owner, ids: part, attempts: g.attempts, error: g.error, dueAt: g.dueAt, now },
          );
        }
      }
      await this.recordPushedIn(t, s.sent, now);
      await this.markDeadIn(t, s.dead);
    });
  }

  async recordPushed(enrollmentIds: readonly string[], at: Date): Promise<void> {
    if (enrollmentIds.length === 0) return;
    await this.db.write((t) => this.recordPushedIn(t, enrollmentIds, at));
  }

  async markTokensDead(
    items: readonly { enrollmentId: string; pushToken: string }[],
    _now: Date,
  ): Promise<void> {
    if (items.length === 0) return;
    await this.db.write((t) => this.markDeadIn(t, items));
  }

  async sweepCandidates(olderThan: Date, pushedBefore: Date, limit: number): Promise<string[]> {
    // Range scan of command_queue_sweep (status, queued_at); each hit is a primary-key lookup.
    const rows = await this.db.sequelize.query<{ enrollment_id: string }>(
      `SELECT DISTINCT q.enrollment_id
         FROM command_queue q
         JOIN enrollments e ON e.id = q.enrollment_id
         LEFT JOIN push_requests r ON r.enrollment_id = q.enrollment_id
        WHERE q.status IN ('queued', 'sent', 'not_now') AND q.queued_at < :olderThan
          AND e.enabled = :yes AND e.push_token_dead = :no AND e.push_token IS NOT NULL
          AND (e.last_pushed_at IS NULL OR e.last_pushed_at < :pushedBefore)
          AND r.enrollment_id IS NULL
        LIMIT :limit`,
      {
        type: QueryTypes.SELECT,
        replacements: { olderThan, pushedBefore, limit, yes: true, no: false },
      },
    );
    return rows.map((r) => r.enrollment_id);
  }

  async withUnanswered(enrollmentIds: readonly string[]): Promise<string[]> {
    const out: string[] = [];
    for (const part of chunked(sortedUnique(enrollmentIds), IN_CHUNK)) {
      const rows = await this.db.sequelize.query<{ enrollment_id: string }>(
        `SELECT DISTINCT enrollment_id FROM command_queue
          WHERE enrollment_id IN (:ids) AND status IN ('queued', 'sent', 'not_now')`,
        { type: QueryTypes.SELECT, replacements: { ids: part } },
      );
      out.push(...rows.map((r) => r.enrollment_id));
    }
    return out;
  }

  async stats(now: Date): Promise<PushQueueStats> {
    const [all] = await this.db.sequelize.query<{ pending: unknown; retrying: unknown }>(
      `SELECT COUNT(*) AS pending, COALESCE(SUM(CASE WHEN attempts > 0 THEN 1 ELSE 0 END), 0) AS retrying
         FROM push_requests`,
      { type: QueryTypes.SELECT },
    );
    const [due] = await this.db.sequelize.query<{ due: unknown; oldest: unknown }>(
      `SELECT COUNT(*) AS due, MIN(due_at) AS oldest FROM push_requests
        WHERE due_at <= :now AND (lease_until IS NULL OR lease_until <= :now)`,
      { type: QueryTypes.SELECT, replacements: { now } },
    );
    return {
      pending: toInt(all?.pending ?? 0),
      retrying: toInt(all?.retrying ?? 0),
      due: toInt(due?.due ?? 0),
      oldestDueAt: toDateOrNull(due?.oldest ?? null),
    };
  }

  private async recordPushedIn(t: Transaction, enrollmentIds: readonly string[], at: Date): Promise<void> {
    for (const part of chunked(sortedUnique(enrollmentIds), IN_CHUNK)) {
      await exec(this.db.sequelize, t, 'UPDATE enrollments SET last_pushed_at = :at WHERE id IN (:ids)', {
        at,
        ids: part,
      });
    }
  }

  private async markDeadIn(
    t: Transaction,
    items: readonly { enrollmentId: string; pushToken: string }[],
  ): Promise<void> {
    // Only while the enrollment still has the token APNs refused: a TokenUpdate may have replaced it.
    // Bound, not inlined: a failing statement's text (in an error log) then holds no push token. (Bound
    // dates would not take the text format SQLite rows use, so updated_at is left alone.)
    for (const d of [...items].sort((a, b) => (a.enrollmentId < b.enrollmentId ? -1 : 1))) {
      await this.db.sequelize.query(
        'UPDATE enrollments SET push_token_dead = $yes WHERE id = $id AND push_token = $token',
        { transaction: t, bind: { yes: true, id: d.enrollmentId, token: d.pushToken } },
      );
    }
  }
}
