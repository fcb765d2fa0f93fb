import { DataTypes, QueryTypes, type QueryInterface, type Transaction } from 'sequelize';

/**
 * Column and table helpers for migrations, the same on SQLite, Postgres and MariaDB. On MariaDB, which
 * commits every DDL statement by itself, `table` and `index` skip what is already there, so a half-done
 * migration can simply run again (SQLite and Postgres run a migration in one transaction).
 */
export async function schemaKit(qi: QueryInterface, t: Transaction) {
  const dialect = qi.sequelize.getDialect();
  // SQLite allows AUTOINCREMENT only on an INTEGER PRIMARY KEY (64-bit there anyway).
  const idType = dialect === 'sqlite' ? DataTypes.INTEGER : DataTypes.BIGINT;
  const existing = async (sql: string) => {
    if (dialect !== 'mariadb') return new Set<string>();
    const rows = await qi.sequelize.query<{ name: string }>(sql, { type: QueryTypes.SELECT, transaction: t });
    return new Set(rows.map((r) => r.name));
  };
  const tables = await existing(
    'SELECT TABLE_NAME AS name FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE()',
  );
  const indexes = await existing(
    'SELECT DISTINCT INDEX_NAME AS name FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE()',
  );
  return {
    dialect,
    idType,
    key: { type: idType, primaryKey: true, autoIncrement: true, allowNull: false },
    /** `LONGTEXT` on MariaDB, where `TEXT` stops at 64 KB */
    longText: dialect === 'mariadb' ? DataTypes.TEXT('long') : DataTypes.TEXT,
    string: (length: number, allowNull: boolean) => ({ type: DataTypes.STRING(length), allowNull }),
    /** milliseconds everywhere (MariaDB's DATETIME drops them otherwise) */
    time: (allowNull: boolean) => ({ type: DataTypes.DATE(3), allowNull }),
    /** not null with default 0, or nullable without a default */
    int: (allowNull = false) => ({
      type: DataTypes.INTEGER,
      allowNull,
      ...(allowNull ? {} : { defaultValue: 0 }),
    }),
    flag: () => ({ type: DataTypes.BOOLEAN, allowNull: false, defaultValue: false }),
    async table(name: string, attributes: Parameters<QueryInterface['createTable']>[1]): Promise<void> {
      if (tables.has(name)) return;
      await qi.createTable(name, attributes, { transaction: t, charset: 'utf8mb4', collate: 'utf8mb4_bin' });
    },
    async index(tableName: string, name: string, fields: string[], unique = false): Promise<void> {
      if (indexes.has(name)) return;
      await qi.addIndex(tableName, fields, { name, unique, transaction: t });
    },
  };
}
