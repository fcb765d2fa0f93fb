import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { openDatabase } from '../../server/storage/database.ts';

/**
 * The databases a storage suite runs against: always SQLite (a file in a temporary directory), plus
 * Postgres when `MDM_TEST_POSTGRES_URL` is set (a fresh schema per `url()` call, through the
 * `search_path` connection option) and MariaDB when `MDM_TEST_MARIADB_URL` is set (a fresh database
 * per `url()` call). `cleanup` drops everything its `url()` calls created.
 */
export interface TestDatabase {
  name: 'sqlite' | 'postgres' | 'mariadb';
  /** A fresh, empty database (each call makes a new one). */
  url: () => Promise<string>;
  cleanup?: () => Promise<void>;
}

const warned = new Set<string>();

function warnOnce(message: string): void {
  if (warned.has(message)) return;
  warned.add(message);
  console.warn(message);
}

function randomName(): string {
  return `t_${randomBytes(6).toString('hex')}`;
}

export function testDatabases(purpose = 'store'): TestDatabase[] {
  const list: TestDatabase[] = [sqlite()];
  const pg = process.env['MDM_TEST_POSTGRES_URL'];
  if (pg) list.push(postgres(pg));
  else warnOnce(`skipping Postgres ${purpose} tests: MDM_TEST_POSTGRES_URL not set`);
  const maria = process.env['MDM_TEST_MARIADB_URL'];
  if (maria) list.push(mariadb(maria));
  else warnOnce(`skipping MariaDB ${purpose} tests: MDM_TEST_MARIADB_URL not set`);
  return list;
}

function sqlite(): TestDatabase {
  const dirs: string[] = [];
  return {
    name: 'sqlite',
    async url() {
      const dir = await mkdtemp(path.join(os.tmpdir(), 'mdm-test-'));
      dirs.push(dir);
      return `sqlite:${path.join(dir, 'mdm.sqlite')}`;
    },
    async cleanup() {
      await Promise.all(dirs.splice(0).map((dir) => rm(dir, { recursive: true, force: true })));
    },
  };
}

function postgres(base: string): TestDatabase {
  const schemas: string[] = [];
  return {
    name: 'postgres',
    async url() {
      const schema = randomName();
      const admin = await openDatabase(base);
      try {
        await admin.sequelize.query(`CREATE SCHEMA "${schema}"`);
      } finally {
        await admin.close();
      }
      schemas.push(schema);
      const url = new URL(base);
      url.searchParams.set('options', `-c search_path=${schema}`);
      return url.toString();
    },
    async cleanup() {
      const drop = schemas.splice(0);
      if (drop.length === 0) return;
      const admin = await openDatabase(base);
      try {
        for (const schema of drop) await admin.sequelize.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
      } finally {
        await admin.close();
      }
    },
  };
}

function mariadb(base: string): TestDatabase {
  const databases: string[] = [];
  return {
    name: 'mariadb',
    async url() {
      const name = randomName();
      const admin = await openDatabase(base);
      try {
        await admin.sequelize.query(`CREATE DATABASE \`${name}\``);
      } finally {
        await admin.close();
      }
      databases.push(name);
      const url = new URL(base);
      url.pathname = `/${name}`;
      return url.toString();
    },
    async cleanup() {
      const drop = databases.splice(0);
      if (drop.length === 0) return;
      const admin = await openDatabase(base);
      try {
        for (const name of drop) await admin.sequelize.query(`DROP DATABASE IF EXISTS \`${name}\``);
      } finally {
        await admin.close();
      }
    },
  };
}
