import {
  col,
  DataTypes,
  Op,
  QueryTypes,
  type Model,
  type ModelStatic,
  type Optional,
  type Sequelize,
} from 'sequelize';
import type { ClaimedJob, JobInfo, JobStore, NewJob, RescheduleOptions } from '../jobs/job-store.ts';
import { chunked } from './command-store.ts';
import type { Database } from './database.ts';
import { toDate, toDateOrNull, toInt } from './models.ts';
import { escapeLike, exec, idString } from './sql-kit.ts';

const IN_CHUNK = 500;

interface JobRow {
  id: number;
  kind: string;
  dedupeKey: string | null;
  payload: string;
  status: string;
  runAt: Date;
  attempts: number;
  lastError: string | null;
  leaseOwner: string | null;
  leaseUntil: Date | null;
  generation: number;
  claimedGeneration: number | null;
  createdAt: Date;
  updatedAt: Date;
}

type JobModel = ModelStatic<Model<JobRow, Optional<JobRow, 'id'>>>;

const cache = new WeakMap<Sequelize, JobModel>();

/** The model over `jobs` (migration `0004_vpp`; never `sync`ed). */
function jobModelOf(sequelize: Sequelize): JobModel {
  const existing = cache.get(sequelize);
  if (existing) return existing;
  const longText = sequelize.getDialect() === 'mariadb' ? DataTypes.TEXT('long') : DataTypes.TEXT;
  const date = (allowNull: boolean) => ({ type: DataTypes.DATE(3), allowNull });
  const model: JobModel = sequelize.define(
    'Job',
    {
      id: { type: DataTypes.BIGINT, primaryKey: true, autoIncrement: true },
      kind: { type: DataTypes.STRING, allowNull: false },
      dedupeKey: { type: DataTypes.STRING, allowNull: true },
      payload: { type: longText, allowNull: false },
      status: { type: DataTypes.STRING, allowNull: false },
      runAt: date(false),
      attempts: { type: DataTypes.INTEGER, allowNull: false },
      lastError: { type: DataTypes.STRING, allowNull: true },
      leaseOwner: { type: DataTypes.STRING, allowNull: true },
      leaseUntil: date(true),
      generation: { type: DataTypes.INTEGER, allowNull: false },
      claimedGeneration: { type: DataTypes.INTEGER, allowNull: true },
      createdAt: date(false),
      updatedAt: date(false),
    },
    { underscored: true, timestamps: false, freezeTableName: true, tableName: 'jobs' },
  );
  cache.set(sequelize, model);
  return model;
}

interface JobQueryRow {
  id: unknown;
  kind: string;
  dedupe_key: string | null;
  payload: string;
  status: string;
  run_at: unknown;
  attempts: unknown;
  last_error: string | null;
  lease_owner: string | null;
  lease_until: unknown;
  created_at: unknown;
}

function toInfo(r: JobQueryRow): JobInfo {
  return {
    id: idString(r.id),
    kind: r.kind,
    key: r.dedupe_key,
    status: r.status === 'failed' ? 'failed' : 'pending',
    runAt: toDate(r.run_at),
    attempts: toInt(r.attempts),
    lastError: r.last_error,
    leaseOwner: r.lease_owner,
    leaseUntil: toDateOrNull(r.lease_until),
  };
}

const COLUMNS = `id, kind, dedupe_key, payload, status, run_at, attempts, last_error, lease_owner, lease_until,
  created_at`;

/** `JobStore` on the `jobs` table (SQLite writes through `db.write`, like every write). */
export class SqlJobStore implements JobStore {
  private readonly Job: JobModel;

  constructor(private readonly db: Database) {
    this.Job = jobModelOf(db.sequelize);
  }

  async enqueue(jobs: readonly NewJob[], now: Date): Promise<void> {
    if (jobs.length === 0) return;
    const row = (j: NewJob, key: string | null) => ({
      kind: j.kind,
      dedupeKey: key,
      payload: j.payload,
      status: 'pending',
      runAt: j.runAt,
      attempts: 0,
      lastError: null,
      leaseOwner: null,
      leaseUntil: null,
      generation: 0,
      claimedGeneration: null,
      createdAt: now,
      updatedAt: now,
    });
    // Keyed jobs in key order (fewer lock conflicts between instances), the last of a key in one call wins.
    const keyed = new Map<string, NewJob>();
    for (const j of jobs) if (j.key !== null) keyed.set(j.key, j);
    const plain = jobs.filter((j) => j.key === null);
    const sortedKeys = [...keyed.keys()].sort();
    await this.db.write(async (t) => {
      for (const part of chunked(plain, IN_CHUNK)) {
        await this.Job.bulkCreate(
          part.map((j) => row(j, null)),
          { transaction: t },
        );
      }
      for (const part of chunked(sortedKeys, IN_CHUNK)) {
        const list = part.map((k) => keyed.get(k)).filter((j): j is NewJob => j !== undefined);
        await this.Job.bulkCreate(
          list.map((j) => row(j, j.key)),
          { transaction: t, ignoreDuplicates: true },
        );
        // One more request on every row of these keys, new or not; a pending job runs no later than asked.
        const byRunAt = new Map<number, string[]>();
        for (const j of list) {
          if (j.key === null) continue;
          const group = byRunAt.get(j.runAt.getTime()) ?? [];
          group.push(j.key);
          byRunAt.set(j.runAt.getTime(), group);
        }
        for (const [runAt, keys] of byRunAt) {
          await exec(
            this.db.sequelize,
            t,
            `UPDATE jobs SET generation = generation + 1,
                    run_at = CASE WHEN run_at > :runAt THEN :runAt ELSE run_at END, updated_at = :now
              WHERE dedupe_key IN (:keys)`,
            { runAt: new Date(runAt), now, keys },
          );
        }
      }
    });
  }

  async claim(
    owner: string,
    kinds: readonly string[],
    now: Date,
    limit: number,
    leaseMs: number,
  ): Promise<ClaimedJob[]> {
    if (kinds.length === 0 || limit <= 0) return [];
    // A read-only probe first: an idle queue costs no write (every instance polls it).
    const due = await this.db.sequelize.query<{ id: unknown }>(
      `SELECT id FROM jobs
        WHERE status = 'pending' AND run_at <= :now AND kind IN (:kinds)
          AND (lease_until IS NULL OR lease_until <= :now)
        ORDER BY run_at, id
        LIMIT :limit`,
      { type: QueryTypes.SELECT, replacements: { now, kinds: [...kinds], limit } },
    );
    if (due.length === 0) return [];
    const ids = due.map((r) => toInt(r.id)).sort((a, b) => a - b);
    const leaseUntil = new Date(now.getTime() + leaseMs);
    return this.db.write(async (t) => {
      // The conditional UPDATE is the claim: a job another instance claimed meanwhile no longer matches.
      await exec(
        this.db.sequelize,
        t,
        `UPDATE jobs SET lease_owner = :owner, lease_until = :leaseUntil, claimed_generation = generation
          WHERE id IN (:ids) AND status = 'pending' AND run_at <= :now
            AND (lease_until IS NULL OR lease_until <= :now)`,
        { owner, leaseUntil, ids, now },
      );
      const rows = await this.db.sequelize.query<JobQueryRow>(
        `SELECT ${COLUMNS} FROM jobs WHERE lease_owner = :owner AND id IN (:ids) ORDER BY run_at, id`,
        { type: QueryTypes.SELECT, replacements: { owner, ids }, transaction: t },
      );
      return rows.map((r) => ({
        id: idString(r.id),
        kind: r.kind,
        key: r.dedupe_key,
        payload: r.payload,
        attempts: toInt(r.attempts),
        lastError: r.last_error,
        createdAt: toDate(r.created_at),
      }));
    });
  }

  async extendLease(owner: string, id: string, leaseUntil: Date): Promise<boolean> {
    return this.db.write(async (t) => {
      const [n] = await this.Job.update(
        { leaseUntil },
        { where: { id: Number(id), leaseOwner: owner }, transaction: t },
      );
      return n > 0;
    });
  }

  async complete(owner: string, id: string, now: Date): Promise<boolean> {
    return this.db.write(async (t) => {
      const removed = await this.Job.destroy({
        where: {
          [Op.and]: [
            { id: Number(id), leaseOwner: owner },
            this.db.sequelize.where(col('generation'), Op.eq, col('claimed_generation')),
          ],
        },
        transaction: t,
      });
      if (removed > 0) return true;
      // Requested again while it ran: due now, as a fresh job.
      const [n] = await this.Job.update(
        {
          leaseOwner: null,
          leaseUntil: null,
          claimedGeneration: null,
          attempts: 0,
          lastError: null,
          runAt: now,
          updatedAt: now,
        },
        { where: { id: Number(id), leaseOwner: owner }, transaction: t },
      );
      return n > 0;
    });
  }

  async reschedule(owner: string, id: string, opts: RescheduleOptions, now: Date): Promise<boolean> {
    return this.db.write(async (t) => {
      const values = {
        leaseOwner: null,
        leaseUntil: null,
        claimedGeneration: null,
        attempts: opts.attempts,
        lastError: opts.error,
        updatedAt: now,
      };
      const [n] = await this.Job.update(
        { ...values, runAt: opts.runAt },
        {
          where: opts.wakeable
            ? {
                [Op.and]: [
                  { id: Number(id), leaseOwner: owner },
                  this.db.sequelize.where(col('generation'), Op.eq, col('claimed_generation')),
                ],
              }
            : { id: Number(id), leaseOwner: owner },
          transaction: t,
        },
      );
      if (n > 0 || !opts.wakeable) return n > 0;
      // Requested again while it ran: sooner.
      const earlier = opts.runAt.getTime() < now.getTime() ? opts.runAt : now;
      const [m] = await this.Job.update(
        { ...values, runAt: earlier },
        { where: { id: Number(id), leaseOwner: owner }, transaction: t },
      );
      return m > 0;
    });
  }

  async fail(owner: string, id: string, error: string, attempts: number, now: Date): Promise<boolean> {
    return this.db.write(async (t) => {
      const [n] = await this.Job.update(
        {
          status: 'failed',
          dedupeKey: null,
          leaseOwner: null,
          leaseUntil: null,
          claimedGeneration: null,
          attempts,
          lastError: error,
          updatedAt: now,
        },
        { where: { id: Number(id), leaseOwner: owner }, transaction: t },
      );
      return n > 0;
    });
  }

  async wakeKeys(prefix: string, now: Date): Promise<number> {
    const pattern = `${escapeLike(prefix)}%`;
    const rows = await this.db.sequelize.query<{ id: unknown }>(
      `SELECT id FROM jobs WHERE dedupe_key LIKE :pattern ESCAPE '!' AND status = 'pending' AND run_at > :now`,
      { type: QueryTypes.SELECT, replacements: { pattern, now } },
    );
    if (rows.length === 0) return 0;
    const ids = rows.map((r) => toInt(r.id)).sort((a, b) => a - b);
    await this.db.write(async (t) => {
      await exec(
        this.db.sequelize,
        t,
        `UPDATE jobs SET run_at = :now, updated_at = :now
          WHERE id IN (:ids) AND status = 'pending' AND lease_owner IS NULL`,
        { now, ids },
      );
    });
    return ids.length;
  }

  async nextRunAt(kinds: readonly string[]): Promise<Date | null> {
    if (kinds.length === 0) return null;
    const [row] = await this.db.sequelize.query<{ next: unknown }>(
      `SELECT MIN(run_at) AS next FROM jobs
        WHERE status = 'pending' AND kind IN (:kinds) AND lease_owner IS NULL`,
      { type: QueryTypes.SELECT, replacements: { kinds: [...kinds] } },
    );
    return toDateOrNull(row?.next ?? null);
  }

  async getByKey(key: string): Promise<JobInfo | null> {
    const rows = await this.db.sequelize.query<JobQueryRow>(
      `SELECT ${COLUMNS} FROM jobs WHERE dedupe_key = :key`,
      {
        type: QueryTypes.SELECT,
        replacements: { key },
      },
    );
    const row = rows[0];
    return row ? toInfo(row) : null;
  }

  async list(kind: string, limit: number): Promise<JobInfo[]> {
    const rows = await this.db.sequelize.query<JobQueryRow>(
      `SELECT ${COLUMNS} FROM jobs WHERE kind = :kind ORDER BY id LIMIT :limit`,
      { type: QueryTypes.SELECT, replacements: { kind, limit } },
    );
    return rows.map(toInfo);
  }
}
