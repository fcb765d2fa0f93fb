import { QueryTypes, type Sequelize, type Transaction } from 'sequelize';
import { encodeCursor } from './cursor.ts';
import { toInt } from './models.ts';

/**
 * Small helpers the stores share, the same on SQLite, PostgreSQL and MariaDB: API ids to database ids
 * and back, raw queries with named replacements, LIKE patterns and keyset pages.
 */

/** A database id from an API id: canonical decimal digits only (anything else names nothing). */
export function dbId(id: string): number | null {
  if (!/^[1-9][0-9]{0,15}$/.test(id)) return null;
  const n = Number(id);
  return Number.isSafeInteger(n) ? n : null;
}

/** The database ids of those API ids that name one, without duplicates, in first-seen order. */
export const dbIds = (ids: readonly string[]) => [
  ...new Set(ids.map(dbId).filter((n): n is number => n !== null)),
];

/** An API id from a database id (a number, bigint or numeric string, depending on the dialect). */
export const idString = (value: unknown) => String(toInt(value));

/** Runs a SELECT with `:name` replacements (in `t` when given). */
export function select<T extends object>(
  sequelize: Sequelize,
  sql: string,
  replacements: Record<string, unknown>,
  t?: Transaction,
): Promise<T[]> {
  return sequelize.query<T>(sql, {
    type: QueryTypes.SELECT,
    replacements,
    ...(t ? { transaction: t } : {}),
  });
}

/** Runs a statement with `:name` replacements in `t`, ignoring its result. */
export async function exec(
  sequelize: Sequelize,
  t: Transaction,
  sql: string,
  replacements: Record<string, unknown>,
): Promise<void> {
  await sequelize.query(sql, { transaction: t, replacements });
}

/**
 * Runs an UPDATE or DELETE in `t` and answers how many rows it affected. `BULKUPDATE` makes
 * sequelize answer the bare count on every dialect (SQLite `changes`, PostgreSQL `rowCount`, MariaDB
 * `affectedRows`).
 */
export async function execCount(
  sequelize: Sequelize,
  t: Transaction,
  sql: string,
  replacements: Record<string, unknown>,
): Promise<number> {
  const result: unknown = await sequelize.query(sql, {
    transaction: t,
    replacements,
    type: QueryTypes.BULKUPDATE,
  });
  return typeof result === 'number' ? result : Number(result ?? 0);
}

/** `s` with LIKE's wildcards escaped by `!` (to be used with `ESCAPE '!'`). */
export const escapeLike = (s: string) => s.replace(/[!%_]/g, (c) => `!${c}`);

/** A LIKE pattern for a case-insensitive substring search: match it against `LOWER(column)`, `ESCAPE '!'`. */
export const containsPattern = (q: string) => `%${escapeLike(q.toLowerCase())}%`;

/** Case-insensitive substring match of `q` over some columns, as a literal for a `where`. */
export function likeAny(sequelize: Sequelize, q: string, columns: readonly string[]) {
  const pattern = sequelize.escape(containsPattern(q));
  return sequelize.literal(`(${columns.map((c) => `LOWER(${c}) LIKE ${pattern} ESCAPE '!'`).join(' OR ')})`);
}

/** The most items a list answers at once. */
export const MAX_PAGE = 1000;

/** A requested page size as a whole number from 1 to `MAX_PAGE`. */
export const clampLimit = (limit: number) => Math.max(1, Math.min(MAX_PAGE, Math.trunc(limit)));

/**
 * Keyset page: `rows` were read with `limit + 1`, so more follow when there are more than `limit`;
 * the cursor is the last item's (unique) sort key.
 */
export function keysetPage<T>(
  rows: readonly T[],
  limit: number,
  key: (item: T) => string,
): { items: T[]; nextCursor: string | null } {
  const items = rows.slice(0, limit);
  const last = items[items.length - 1];
  return { items, nextCursor: rows.length > limit && last ? encodeCursor([key(last)]) : null };
}
