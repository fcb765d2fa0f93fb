import { QueryTypes, UniqueConstraintError, type Transaction } from 'sequelize';
import type {
  CommandRecord,
  CommandStatus,
  CommandStore,
  QueuedCommand,
  QueueStatus,
  ResultInput,
  WithdrawnCommand,
} from '../commands/store.ts';
import { decodeTimeSeqCursor, encodeCursor } from './cursor.ts';
import type { Database } from './database.ts';
import { modelsOf, toDate, toDateOrNull, toInt, type Models, type ResultRow } from './models.ts';
import { clampLimit, select } from './sql-kit.ts';

const IN_CHUNK = 500;
/** Bulk inserts of command bodies stay well under MariaDB's default `max_allowed_packet` (16 MB). */
const MAX_INSERT_BYTES = 4 * 1024 * 1024;

export function chunked<T>(items: readonly T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

interface QueueJoinRow {
  seq: unknown;
  enrollment_id: string;
  command_uuid: string;
  udid: string;
  request_type: string;
  status: string;
  queued_at: unknown;
}

/**
 * Moves the queued commands of a device (or of some enrollments) to `command_results` as `withdrawn`,
 * so that admins still see what happened to them, and empties their part of the hot table.
 */
export async function withdrawQueued(
  db: Database,
  t: Transaction,
  scope: { udid: string } | { enrollmentIds: readonly string[] },
  now: Date,
): Promise<number> {
  return (await withdrawQueuedRows(db, t, scope, now)).length;
}

/** As `withdrawQueued`, also by command UUIDs (any enrollment); answers the rows withdrawn. */
export async function withdrawQueuedRows(
  db: Database,
  t: Transaction,
  scope: { udid: string } | { enrollmentIds: readonly string[] } | { commandUuids: readonly string[] },
  now: Date,
): Promise<WithdrawnCommand[]> {
  const m = modelsOf(db.sequelize);
  const batches =
    'udid' in scope
      ? [{ clause: 'q.udid = :key', key: scope.udid as string | string[] }]
      : 'enrollmentIds' in scope
        ? chunked([...new Set(scope.enrollmentIds)], IN_CHUNK).map((ids) => ({
            clause: 'q.enrollment_id IN (:key)',
            key: ids as string | string[],
          }))
        : chunked([...new Set(scope.commandUuids)], IN_CHUNK).map((ids) => ({
            clause: 'q.command_uuid IN (:key)',
            key: ids as string | string[],
          }));
  const withdrawn: WithdrawnCommand[] = [];
  // By command: lock the rows (in one order), so that a concurrent `complete` of one of them either
  // finishes first (the row is gone here) or waits and then finds nothing: never both.
  const lock =
    'commandUuids' in scope
      ? db.dialect === 'postgres'
        ? ' ORDER BY q.seq FOR UPDATE OF q'
        : db.dialect === 'mariadb'
          ? ' ORDER BY q.seq FOR UPDATE'
          : ''
      : '';
  for (const batch of batches) {
    const rows = await db.sequelize.query<QueueJoinRow>(
      `SELECT q.seq, q.enrollment_id, q.command_uuid, q.udid, c.request_type, q.status, q.queued_at
         FROM command_queue q JOIN commands c ON c.command_uuid = q.command_uuid
        WHERE ${batch.clause}${lock}`,
      { transaction: t, type: QueryTypes.SELECT, replacements: { key: batch.key } },
    );
    if (rows.length === 0) continue;
    const results: ResultRow[] = rows.map((r) => ({
      enrollmentId: r.enrollment_id,
      commandUuid: r.command_uuid,
      seq: toInt(r.seq),
      udid: r.udid,
      requestType: r.request_type,
      status: 'withdrawn',
      queuedAt: toDate(r.queued_at),
      answeredAt: now,
      resultXml: null,
    }));
    // A result that raced in first (a concurrent complete) wins: ignore duplicates.
    for (const part of chunked(results, IN_CHUNK)) {
      await m.Result.bulkCreate(part, { transaction: t, ignoreDuplicates: true });
    }
    for (const part of chunked(results, IN_CHUNK)) {
      await m.Queue.destroy({ where: { seq: part.map((r) => r.seq) }, transaction: t });
    }
    for (const r of rows) withdrawn.push({ enrollmentId: r.enrollment_id, commandUuid: r.command_uuid });
  }
  return withdrawn;
}

export class SqlCommandStore implements CommandStore {
  private readonly m: Models;

  constructor(private readonly db: Database) {
    this.m = modelsOf(db.sequelize);
  }

  async enqueue(
    commands: {
      enrollmentId: string;
      udid: string;
      commandUuid: string;
      requestType: string;
      bodyXml: string;
    }[],
    now: Date,
  ): Promise<void> {
    if (commands.length === 0) return;
    const distinct = new Map<
      string,
      { commandUuid: string; requestType: string; bodyXml: string; createdAt: Date }
    >();
    for (const c of commands) {
      if (!distinct.has(c.commandUuid)) {
        distinct.set(c.commandUuid, {
          commandUuid: c.commandUuid,
          requestType: c.requestType,
          bodyXml: c.bodyXml,
          createdAt: now,
        });
      }
    }
    const bodies = bySize([...distinct.values()]);
    const queued = commands.map((c) => ({
      enrollmentId: c.enrollmentId,
      commandUuid: c.commandUuid,
      udid: c.udid,
      status: 'queued' as const,
      queuedAt: now,
      sentAt: null,
    }));
    await this.db.write(async (t) => {
      // The same command may already be stored (queued earlier for other enrollments).
      for (const part of bodies)
        await this.m.Command.bulkCreate(part, { transaction: t, ignoreDuplicates: true });
      for (const part of chunked(queued, IN_CHUNK)) await this.m.Queue.bulkCreate(part, { transaction: t });
    });
  }

  async next(enrollmentId: string, includeNotNow: boolean, now: Date): Promise<QueuedCommand | null> {
    const statuses = includeNotNow ? ['queued', 'sent', 'not_now'] : ['queued', 'sent'];
    // Nothing to send is the common answer: find it out without taking the write path.
    const any = await this.db.sequelize.query(
      'SELECT seq FROM command_queue WHERE enrollment_id = :enrollmentId AND status IN (:statuses) LIMIT 1',
      { type: QueryTypes.SELECT, replacements: { enrollmentId, statuses } },
    );
    if (any.length === 0) return null;
    return this.db.write(async (t) => {
      if (includeNotNow) {
        await this.m.Queue.update(
          { status: 'queued' },
          { where: { enrollmentId, status: 'not_now' }, transaction: t },
        );
      }
      const rows = await this.db.sequelize.query<{
        seq: unknown;
        command_uuid: string;
        request_type: string;
        body_xml: string;
      }>(
        `SELECT q.seq, q.command_uuid, c.request_type, c.body_xml
           FROM command_queue q JOIN commands c ON c.command_uuid = q.command_uuid
          WHERE q.enrollment_id = :enrollmentId AND q.status IN ('queued', 'sent')
          ORDER BY q.queued_at, q.seq
          LIMIT 1`,
        { transaction: t, type: QueryTypes.SELECT, replacements: { enrollmentId } },
      );
      const row = rows[0];
      if (!row) return null;
      await this.m.Queue.update(
        { status: 'sent', sentAt: now },
        { where: { seq: toInt(row.seq) }, transaction: t },
      );
      return { commandUuid: row.command_uuid, requestType: row.request_type, bodyXml: row.body_xml };
    });
  }

  async queueStatuses(commandUuids: readonly string[]): Promise<QueueStatus[]> {
    const out: QueueStatus[] = [];
    for (const part of chunked([...new Set(commandUuids)], IN_CHUNK)) {
      const rows = await select<{ enrollment_id: string; command_uuid: string; status: string }>(
        this.db.sequelize,
        'SELECT enrollment_id, command_uuid, status FROM command_queue WHERE command_uuid IN (:part)',
        { part },
      );
      for (const r of rows) {
        if (r.status === 'queued' || r.status === 'sent' || r.status === 'not_now') {
          out.push({ enrollmentId: r.enrollment_id, commandUuid: r.command_uuid, status: r.status });
        }
      }
    }
    return out;
  }

  async markNotNow(enrollmentId: string, commandUuid: string, _now: Date): Promise<void> {
    await this.db.write((t) =>
      this.m.Queue.update({ status: 'not_now' }, { where: { enrollmentId, commandUuid }, transaction: t }),
    );
  }

  async complete(result: ResultInput, now: Date): Promise<boolean> {
    const { enrollmentId, commandUuid } = result;
    try {
      return await this.db.write(async (t) => {
        // Locks the queue row (Postgres/MariaDB): a concurrent duplicate waits here, then finds nothing.
        const queued = await this.m.Queue.findOne({
          where: { enrollmentId, commandUuid },
          transaction: t,
          lock: true,
        });
        if (!queued) return false;
        const answered = await this.m.Result.findOne({
          where: { enrollmentId, commandUuid },
          attributes: ['seq'],
          transaction: t,
        });
        if (answered) return false;
        const command = await this.m.Command.findByPk(commandUuid, {
          attributes: ['requestType'],
          transaction: t,
        });
        const q = queued.get({ plain: true });
        const seq = toInt(q.seq);
        const deleted = await this.m.Queue.destroy({ where: { seq }, transaction: t });
        if (deleted !== 1) return false;
        await this.m.Result.create(
          {
            enrollmentId,
            commandUuid,
            seq,
            udid: q.udid,
            requestType: command?.get({ plain: true }).requestType ?? 'Unknown',
            status: result.status,
            queuedAt: toDate(q.queuedAt),
            answeredAt: now,
            resultXml: result.resultXml,
          },
          { transaction: t },
        );
        return true;
      });
    } catch (err) {
      // The primary key of command_results is the last word on duplicates.
      if (err instanceof UniqueConstraintError) return false;
      throw err;
    }
  }

  async clearQueue(enrollmentIds: string[]): Promise<void> {
    if (enrollmentIds.length === 0) return;
    const now = new Date();
    await this.db.write((t) => withdrawQueued(this.db, t, { enrollmentIds }, now));
  }

  async withdraw(commandUuids: readonly string[], now: Date): Promise<WithdrawnCommand[]> {
    if (commandUuids.length === 0) return [];
    return this.db.write((t) => withdrawQueuedRows(this.db, t, { commandUuids }, now));
  }

  async listForDevice(
    udid: string,
    opts: { limit: number; cursor: string | null },
  ): Promise<{ items: CommandRecord[]; nextCursor: string | null }> {
    const limit = clampLimit(opts.limit);
    const after = opts.cursor === null ? null : decodeTimeSeqCursor(opts.cursor);
    const keyset = (alias: string) =>
      after ? `AND (${alias}.queued_at < :time OR (${alias}.queued_at = :time AND ${alias}.seq < :seq))` : '';
    const replacements = { udid, time: after?.time ?? null, seq: after?.seq ?? null, n: limit + 1 };
    // Two index range scans on (udid, queued_at, seq), merged here; each brings at most limit + 1 rows.
    // The queue is read first: a command answered in between then shows up twice (deduplicated below,
    // the result wins) rather than not at all.
    const queued = await this.db.sequelize.query<QueueJoinRow>(
      `SELECT q.seq, q.enrollment_id, q.command_uuid, q.udid, c.request_type, q.status, q.queued_at
         FROM command_queue q JOIN commands c ON c.command_uuid = q.command_uuid
        WHERE q.udid = :udid ${keyset('q')}
        ORDER BY q.queued_at DESC, q.seq DESC
        LIMIT :n`,
      { type: QueryTypes.SELECT, replacements },
    );
    const answered = await this.db.sequelize.query<
      QueueJoinRow & { answered_at: unknown; result_xml: string | null }
    >(
      `SELECT r.seq, r.enrollment_id, r.command_uuid, r.udid, r.request_type, r.status, r.queued_at,
              r.answered_at, r.result_xml
         FROM command_results r
        WHERE r.udid = :udid ${keyset('r')}
        ORDER BY r.queued_at DESC, r.seq DESC
        LIMIT :n`,
      { type: QueryTypes.SELECT, replacements },
    );
    const answeredKeys = new Set(answered.map((r) => `${r.enrollment_id}\n${r.command_uuid}`));
    const merged = [
      ...queued
        .filter((r) => !answeredKeys.has(`${r.enrollment_id}\n${r.command_uuid}`))
        .map((r) => ({ ...toRecord(r, null, null), seq: toInt(r.seq) })),
      ...answered.map((r) => ({ ...toRecord(r, r.answered_at, r.result_xml), seq: toInt(r.seq) })),
    ].sort((a, b) => b.queuedAt.getTime() - a.queuedAt.getTime() || b.seq - a.seq);
    const page = merged.slice(0, limit);
    const last = page[page.length - 1];
    const nextCursor =
      merged.length > limit && last ? encodeCursor([last.queuedAt.getTime(), last.seq]) : null;
    return { items: page.map(({ seq: _seq, ...record }) => record), nextCursor };
  }
}

const STATUSES: readonly CommandStatus[] = [
  'queued',
  'sent',
  'acknowledged',
  'error',
  'command_format_error',
  'not_now',
  'withdrawn',
];

function toStatus(value: string): CommandStatus {
  const status = STATUSES.find((s) => s === value);
  if (!status) throw new Error(`unknown command status in the database: ${value}`);
  return status;
}

function toRecord(r: QueueJoinRow, answeredAt: unknown, resultXml: string | null): CommandRecord {
  return {
    commandUuid: r.command_uuid,
    enrollmentId: r.enrollment_id,
    udid: r.udid,
    requestType: r.request_type,
    status: toStatus(r.status),
    queuedAt: toDate(r.queued_at),
    answeredAt: toDateOrNull(answeredAt),
    resultXml,
  };
}

function bySize<T extends { bodyXml: string }>(items: readonly T[]): T[][] {
  const out: T[][] = [];
  let current: T[] = [];
  let bytes = 0;
  for (const item of items) {
    const size = Buffer.byteLength(item.bodyXml, 'utf8');
    if (current.length > 0 && (bytes + size > MAX_INSERT_BYTES || current.length >= IN_CHUNK)) {
      out.push(current);
      current = [];
      bytes = 0;
    }
    current.push(item);
    bytes += size;
  }
  if (current.length > 0) out.push(current);
  return out;
}
