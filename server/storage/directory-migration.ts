import { DataTypes, QueryTypes, type QueryInterface } from 'sequelize';
import type { Migration } from './migrations.ts';

/**
 * `0003_directory`: sites, users, their site memberships, user groups and their members. Ids are
 * auto-increment integers (exposed as strings). On MariaDB, which commits every DDL statement by
 * itself, each step is skipped when already there, so a half-done run can simply run again (SQLite and
 * Postgres run it in one transaction).
 */
export const directoryMigration: Migration = {
  id: '0003_directory',
  async up(qi, t) {
    const dialect = qi.sequelize.getDialect();
    // SQLite allows AUTOINCREMENT only on an INTEGER PRIMARY KEY (64-bit there anyway).
    const idType = dialect === 'sqlite' ? DataTypes.INTEGER : DataTypes.BIGINT;
    const key = { type: idType, primaryKey: true, autoIncrement: true, allowNull: false };
    const ref = (table: string, onDelete: 'CASCADE' | 'RESTRICT') => ({
      type: idType,
      allowNull: false,
      references: { model: table, key: 'id' },
      onDelete,
    });
    const string = (length: number, allowNull: boolean) => ({ type: DataTypes.STRING(length), allowNull });
    const time = () => ({ type: DataTypes.DATE(3), allowNull: false });
    const existing = async (sql: string) => {
      if (dialect !== 'mariadb') return new Set<string>();
      const rows = await qi.sequelize.query<{ name: string }>(sql, {
        type: QueryTypes.SELECT,
        transaction: t,
      });
      return new Set(rows.map((r) => r.name));
    };
    const tables = await existing(
      'SELECT TABLE_NAME AS name FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE()',
    );
    const table = async (name: string, attributes: Parameters<QueryInterface['createTable']>[1]) => {
      if (tables.has(name)) return;
      await qi.createTable(name, attributes, {
        transaction: t,
        charset: 'utf8mb4',
        collate: 'utf8mb4_bin',
      });
    };

    await table('sites', {
      id: key,
      name: string(255, false),
      created_at: time(),
      updated_at: time(),
    });
    await table('users', {
      id: key,
      username: string(255, false),
      // lower-cased username: unique, so usernames differ by more than case; the login lookup key
      username_key: string(255, false),
      full_name: string(255, true),
      email: string(254, true),
      managed_apple_id: string(254, true),
      password_hash: string(255, true),
      created_at: time(),
      updated_at: time(),
    });
    // A site cannot be deleted while users belong to it (RESTRICT); a user takes its memberships along.
    await table('user_sites', {
      user_id: { ...ref('users', 'CASCADE'), primaryKey: true },
      site_id: { ...ref('sites', 'RESTRICT'), primaryKey: true },
    });
    await table('user_groups', {
      id: key,
      name: string(255, false),
      created_at: time(),
      updated_at: time(),
    });
    await table('user_group_members', {
      group_id: { ...ref('user_groups', 'CASCADE'), primaryKey: true },
      user_id: { ...ref('users', 'CASCADE'), primaryKey: true },
    });

    const indexes = await existing(
      'SELECT DISTINCT INDEX_NAME AS name FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE()',
    );
    const index = async (tableName: string, name: string, fields: string[], unique = false) => {
      if (indexes.has(name)) return;
      await qi.addIndex(tableName, fields, { name, unique, transaction: t });
    };
    await index('sites', 'sites_name', ['name'], true);
    await index('users', 'users_username_key', ['username_key'], true);
    await index('users', 'users_email', ['email']);
    await index('users', 'users_managed_apple_id', ['managed_apple_id']);
    await index('user_sites', 'user_sites_site', ['site_id', 'user_id']);
    await index('user_groups', 'user_groups_name', ['name'], true);
    await index('user_group_members', 'user_group_members_user', ['user_id', 'group_id']);
  },
};
