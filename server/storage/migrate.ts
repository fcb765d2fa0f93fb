import type { Logger } from 'pino';
import { DataTypes, QueryTypes, type Transaction } from 'sequelize';
import type { Database } from './database.ts';
import { migrations as allMigrations, type Migration } from './migrations.ts';

const LOCK_TIMEOUT_S = 120;

/**
 * Applies the pending migrations in order and returns their ids. Safe when several processes start
 * at once: Postgres takes a transaction-scoped advisory lock, MariaDB a named lock (`GET_LOCK`), and
 * SQLite holds its write lock (`BEGIN IMMEDIATE`, through the write queue) for the whole run.
 */
export async function migrate(
  db: Database,
  logger?: Logger,
  migrations: readonly Migration[] = allMigrations,
): Promise<string[]> {
  const ids = new Set<string>();
  for (const m of migrations) {
    if (ids.has(m.id)) throw new Error(`duplicate migration id ${m.id}`);
    ids.add(m.id);
  }
  const sequelize = db.sequelize;
  switch (db.dialect) {
    case 'sqlite':
      return db.write((t) => applyPending(db, t, migrations, logger));
    case 'postgres':
      return sequelize.transaction(async (t) => {
        await sequelize.query(
          "SELECT pg_advisory_xact_lock(hashtext(COALESCE(current_schema(), '') || '.schema_migrations'))",
          { transaction: t, type: QueryTypes.SELECT },
        );
        return applyPending(db, t, migrations, logger);
      });
    case 'mariadb':
      return sequelize.transaction(async (t) => {
        const lockName = "LEFT(CONCAT('mdm_migrate.', COALESCE(DATABASE(), '')), 64)";
        const rows = await sequelize.query<{ locked: number | null }>(
          `SELECT GET_LOCK(${lockName}, ${LOCK_TIMEOUT_S}) AS locked`,
          { transaction: t, type: QueryTypes.SELECT },
        );
        if (Number(rows[0]?.locked) !== 1) {
          throw new Error(`could not take the migration lock within ${LOCK_TIMEOUT_S} s`);
        }
        try {
          return await applyPending(db, t, migrations, logger);
        } finally {
          await sequelize.query(`SELECT RELEASE_LOCK(${lockName})`, {
            transaction: t,
            type: QueryTypes.SELECT,
          });
        }
      });
  }
}

async function applyPending(
  db: Database,
  t: Transaction,
  migrations: readonly Migration[],
  logger: Logger | undefined,
): Promise<string[]> {
  const qi = db.sequelize.getQueryInterface();
  await qi.createTable(
    'schema_migrations',
    {
      id: { type: DataTypes.STRING(255), allowNull: false, primaryKey: true },
      applied_at: { type: DataTypes.DATE(3), allowNull: false },
    },
    { transaction: t, charset: 'utf8mb4', collate: 'utf8mb4_bin' },
  );
  const rows = await db.sequelize.query<{ id: string }>('SELECT id FROM schema_migrations', {
    transaction: t,
    type: QueryTypes.SELECT,
  });
  const done = new Set(rows.map((r) => r.id));
  const known = new Set(migrations.map((m) => m.id));
  const unknown = [...done].filter((id) => !known.has(id));
  if (unknown.length > 0) {
    logger?.warn({ unknown }, 'the database has migrations this version does not know (newer version ran?)');
  }
  const applied: string[] = [];
  for (const m of migrations) {
    if (done.has(m.id)) continue;
    const started = Date.now();
    try {
      await m.up(qi, t);
    } catch (err) {
      throw new Error(`migration ${m.id} failed`, { cause: err });
    }
    await db.sequelize.query('INSERT INTO schema_migrations (id, applied_at) VALUES (:id, :now)', {
      transaction: t,
      replacements: { id: m.id, now: new Date() },
    });
    applied.push(m.id);
    logger?.info({ migration: m.id, ms: Date.now() - started }, 'migration applied');
  }
  return applied;
}
