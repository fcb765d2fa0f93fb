import { DataTypes, QueryTypes, type QueryInterface } from 'sequelize';
import type { Migration } from './migrations.ts';

/**
 * `0002_push`: uploaded APNs push certificates, the durable push queue (`push_requests`, one row per
 * enrollment), `enrollments.last_pushed_at`, and an index on `command_queue (status, queued_at)` for the
 * slow sweep that re-pushes enrollments whose commands stay unanswered. On MariaDB, which commits every
 * DDL statement by itself, each step is skipped when already there, so a half-done run can run again.
 */
export const pushMigration: Migration = {
  id: '0002_push',
  async up(qi, t) {
    const dialect = qi.sequelize.getDialect();
    const idType = dialect === 'sqlite' ? DataTypes.INTEGER : DataTypes.BIGINT;
    // as longTextType in migrations.ts (not imported: that module imports this one)
    const longText = dialect === 'mariadb' ? DataTypes.TEXT('long') : DataTypes.TEXT;
    const time = (allowNull: boolean) => ({ type: DataTypes.DATE(3), allowNull });
    const int = (allowNull: boolean) => ({
      type: DataTypes.INTEGER,
      allowNull,
      ...(allowNull ? {} : { defaultValue: 0 }),
    });
    const names = async (sql: string) => {
      if (dialect !== 'mariadb') return new Set<string>();
      const rows = await qi.sequelize.query<{ name: string }>(sql, {
        type: QueryTypes.SELECT,
        transaction: t,
      });
      return new Set(rows.map((r) => r.name));
    };
    const tables = await names(
      'SELECT TABLE_NAME AS name FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE()',
    );
    const indexes = await names(
      'SELECT DISTINCT INDEX_NAME AS name FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE()',
    );
    const enrollmentColumns = await names(
      `SELECT COLUMN_NAME AS name FROM information_schema.COLUMNS
        WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'enrollments'`,
    );
    const table = async (name: string, attributes: Parameters<QueryInterface['createTable']>[1]) => {
      if (tables.has(name)) return;
      await qi.createTable(name, attributes, { transaction: t, charset: 'utf8mb4', collate: 'utf8mb4_bin' });
    };
    const index = async (tableName: string, name: string, fields: string[]) => {
      if (indexes.has(name)) return;
      await qi.addIndex(tableName, fields, { name, transaction: t });
    };

    // Every uploaded certificate is kept; the active one is the highest id with `active` set.
    await table('push_certificates', {
      id: { type: idType, primaryKey: true, autoIncrement: true, allowNull: false },
      topic: { type: DataTypes.STRING(255), allowNull: false },
      cert_pem: { type: longText, allowNull: false },
      // the private key, sealed with MDM_SECRET_KEY (SecretBox)
      key_sealed: { type: longText, allowNull: false },
      not_after: time(false),
      uploaded_at: time(false),
      active: { type: DataTypes.BOOLEAN, allowNull: false, defaultValue: false },
    });
    await index('push_certificates', 'push_certificates_active', ['active', 'id']);

    // One row per enrollment that needs a push: many requests coalesce into it. `generation` counts the
    // requests; a claim copies it to `claimed_generation`, so a request that arrives while the push is in
    // flight keeps the row for one more push. The lease (`claimed_by`, `lease_until`) lets several
    // instances share the work: a row is claimed by one conditional UPDATE.
    await table('push_requests', {
      enrollment_id: { type: DataTypes.STRING(255), allowNull: false, primaryKey: true },
      generation: int(false),
      claimed_generation: int(true),
      due_at: time(false),
      attempts: int(false),
      last_error: { type: DataTypes.STRING(255), allowNull: true },
      claimed_by: { type: DataTypes.STRING(64), allowNull: true },
      lease_until: time(true),
      created_at: time(false),
      updated_at: time(false),
    });
    await index('push_requests', 'push_requests_due', ['due_at']);
    await index('push_requests', 'push_requests_claim', ['claimed_by']);

    if (!enrollmentColumns.has('last_pushed_at')) {
      // Raw SQL: sequelize's addColumn names the table "public"."enrollments" on Postgres, which misses a
      // schema chosen through search_path. The types are those createTable gives DATE(3).
      const type =
        dialect === 'postgres'
          ? 'TIMESTAMP WITH TIME ZONE'
          : dialect === 'mariadb'
            ? 'DATETIME(3)'
            : 'DATETIME';
      await qi.sequelize.query(`ALTER TABLE enrollments ADD COLUMN last_pushed_at ${type} NULL`, {
        transaction: t,
      });
    }
    // The sweep reads old unanswered commands by status and age: a range scan, not a full scan.
    await index('command_queue', 'command_queue_sweep', ['status', 'queued_at']);
  },
};
