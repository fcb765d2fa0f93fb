import { AsyncLocalStorage } from 'node:async_hooks';
import path from 'node:path';
import type { Logger } from 'pino';
import { Sequelize, Transaction, UniqueConstraintError, type Options } from 'sequelize';

export type Dialect = 'sqlite' | 'postgres' | 'mariadb';

export interface WriteOptions {
  /**
   * Also retry the whole transaction when it fails on a unique constraint (Postgres and MariaDB only).
   * For read-then-insert code whose insert can race with the same insert elsewhere: the retry then
   * finds the row and updates it.
   */
  retryOnConflict?: boolean;
}

export interface Database {
  readonly sequelize: Sequelize;
  readonly dialect: Dialect;
  /**
   * Runs `fn` in a write transaction, committed when it resolves, rolled back when it throws.
   * SQLite: every write of the process goes through one queue (one writer at a time, `BEGIN IMMEDIATE`).
   * Postgres/MariaDB: retried a few times on serialization failure or deadlock, so `fn` must not have
   * side effects outside the database. Pass `t` to every query inside; never call `write` inside `fn`.
   */
  write<T>(fn: (t: Transaction) => Promise<T>, opts?: WriteOptions): Promise<T>;
  close(): Promise<void>;
}

export interface OpenDatabaseOptions {
  logger?: Logger;
  /** Connections in the pool (Postgres/MariaDB). Default 10. */
  poolMax?: number;
  /** How long SQLite waits for a lock held by another process, in ms. Default 10 000. */
  sqliteBusyTimeoutMs?: number;
}

const MAX_ATTEMPTS = 8;
const MAX_CONFLICT_ATTEMPTS = 3;

/**
 * Opens a database from a URL: `sqlite:<path>` (absolute or relative to the working directory,
 * `sqlite::memory:` for tests), `postgres://` / `postgresql://` (query `options`, e.g.
 * `?options=-c%20search_path%3Dmdm`, and `sslmode`), or `mariadb://` / `mysql://` (query `ssl=true`).
 */
export async function openDatabase(url: string, opts: OpenDatabaseOptions = {}): Promise<Database> {
  const { dialect, options } = sequelizeOptions(url, opts);
  const logger = opts.logger;
  if (logger?.isLevelEnabled('debug')) {
    options.logging = (sql: string) => logger.debug({ sql }, 'sql');
  } else {
    options.logging = false;
  }
  const sequelize = new Sequelize(options);
  const closeWriter =
    dialect === 'sqlite' ? prepareSqliteConnections(sequelize, opts.sqliteBusyTimeoutMs ?? 10_000) : null;
  try {
    await sequelize.authenticate();
  } catch (err) {
    await sequelize.close().catch(() => undefined);
    throw new Error(`cannot open the ${dialect} database`, { cause: err });
  }
  if (dialect === 'sqlite') return new SqliteDatabase(sequelize, closeWriter ?? (async () => undefined));
  return new PooledDatabase(sequelize, dialect);
}

function sequelizeOptions(url: string, opts: OpenDatabaseOptions): { dialect: Dialect; options: Options } {
  const define = { underscored: true, timestamps: false, freezeTableName: true };
  if (url.startsWith('sqlite:')) {
    let file = url.slice('sqlite:'.length);
    if (file.startsWith('//')) file = file.slice(2);
    if (file === '') throw new Error('sqlite URL needs a path, e.g. sqlite:./data/mdm.sqlite');
    const storage = file === ':memory:' ? ':memory:' : path.resolve(file);
    return { dialect: 'sqlite', options: { dialect: 'sqlite', storage, define } };
  }
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch (err) {
    throw new Error('invalid database URL', { cause: err });
  }
  const protocol = parsed.protocol.replace(/:$/, '');
  const database = decodeURIComponent(parsed.pathname.replace(/^\//, ''));
  if (database === '') throw new Error('the database URL must name a database');
  const common: Options = {
    host: parsed.hostname,
    database,
    username: decodeURIComponent(parsed.username),
    password: parsed.password === '' ? undefined : decodeURIComponent(parsed.password),
    pool: { max: opts.poolMax ?? 10, min: 0, idle: 10_000, acquire: 30_000 },
    define,
  };
  if (protocol === 'postgres' || protocol === 'postgresql') {
    const dialectOptions: Record<string, unknown> = {};
    const pgOptions = parsed.searchParams.get('options');
    if (pgOptions) dialectOptions['options'] = pgOptions;
    const sslmode = parsed.searchParams.get('sslmode');
    if (sslmode === 'require') dialectOptions['ssl'] = { rejectUnauthorized: false };
    if (sslmode === 'verify-ca' || sslmode === 'verify-full')
      dialectOptions['ssl'] = { rejectUnauthorized: true };
    return {
      dialect: 'postgres',
      options: { ...common, dialect: 'postgres', port: Number(parsed.port || 5432), dialectOptions },
    };
  }
  if (protocol === 'mariadb' || protocol === 'mysql') {
    const dialectOptions: Record<string, unknown> = { connectTimeout: 10_000 };
    if (parsed.searchParams.get('ssl') === 'true') dialectOptions['ssl'] = true;
    return {
      dialect: 'mariadb',
      options: { ...common, dialect: 'mariadb', port: Number(parsed.port || 3306), dialectOptions },
    };
  }
  throw new Error(`unsupported database URL scheme ${protocol}: use sqlite:, postgres:// or mariadb://`);
}

interface SqliteConnection {
  run(sql: string, callback: (err: Error | null) => void): unknown;
  close(callback?: (err: Error | null) => void): unknown;
  /** set by sequelize while a transaction owns the connection */
  uuid?: string;
}

interface PatchableConnectionManager {
  connections: Record<string, SqliteConnection>;
  getConnection(options?: { uuid?: string }): Promise<SqliteConnection>;
  releaseConnection(connection: SqliteConnection, force?: boolean): unknown;
}

/**
 * Sequelize's SQLite dialect opens a separate connection per transaction and does not run the
 * `afterConnect` hook for them, so the per-connection pragmas are applied here, to every connection.
 */
function prepareSqliteConnections(sequelize: Sequelize, busyTimeoutMs: number): () => Promise<void> {
  const manager = sequelize.connectionManager as unknown as PatchableConnectionManager;
  const open = manager.getConnection.bind(manager);
  const release = manager.releaseConnection.bind(manager);
  // Sequelize opens (and afterwards closes) a new SQLite connection for every transaction, which costs
  // milliseconds per write. Writes are serialised by SqliteDatabase, so one persistent connection
  // serves every transaction; a transaction that starts while it is busy gets its own, as before.
  let writer: SqliteConnection | null = null;
  let writerBusy = false;
  const original = async (options?: { uuid?: string }): Promise<SqliteConnection> => {
    const uuid = options?.uuid;
    if (uuid === undefined || uuid === 'default' || writerBusy) return open(options);
    if (!writer) {
      writer = await open({ uuid: 'persistent-writer' });
      delete manager.connections['persistent-writer'];
    }
    writerBusy = true;
    manager.connections[uuid] = writer;
    return writer;
  };
  manager.releaseConnection = (connection: SqliteConnection, force?: boolean) => {
    if (connection === writer) {
      if (connection.uuid) delete manager.connections[connection.uuid];
      delete connection.uuid;
      writerBusy = false;
      return undefined;
    }
    return release(connection, force);
  };
  const prepared = new WeakSet<SqliteConnection>();
  let walSet = false;
  manager.getConnection = async (options?: { uuid?: string }) => {
    const connection = await original(options);
    if (!prepared.has(connection)) {
      prepared.add(connection);
      const pragmas = [
        `PRAGMA busy_timeout = ${Math.trunc(busyTimeoutMs)}`,
        'PRAGMA foreign_keys = ON',
        'PRAGMA synchronous = NORMAL',
      ];
      if (!walSet) {
        // After busy_timeout: switching to WAL needs a lock another process may hold for a moment.
        walSet = true;
        pragmas.push('PRAGMA journal_mode = WAL');
      }
      for (const sql of pragmas) {
        await new Promise<void>((resolve, reject) =>
          connection.run(sql, (err) => (err ? reject(err) : resolve())),
        );
      }
    }
    return connection;
  };
  return async () => {
    const w = writer;
    writer = null;
    if (w) await new Promise<void>((resolve) => w.close(() => resolve()));
  };
}

const inWrite = new AsyncLocalStorage<true>();

function assertNotNested(): void {
  if (inWrite.getStore()) {
    throw new Error('write() called inside write(): pass the transaction to the inner queries instead');
  }
}

class SqliteDatabase implements Database {
  readonly dialect = 'sqlite' as const;
  private tail: Promise<unknown> = Promise.resolve();
  private closed = false;

  constructor(
    readonly sequelize: Sequelize,
    private readonly closeWriter: () => Promise<void>,
  ) {}

  write<T>(fn: (t: Transaction) => Promise<T>): Promise<T> {
    try {
      assertNotNested();
    } catch (err) {
      return Promise.reject(err);
    }
    if (this.closed) return Promise.reject(new Error('database is closed'));
    const run = () =>
      inWrite.run(true, () =>
        this.sequelize.transaction({ type: Transaction.TYPES.IMMEDIATE }, (t) => fn(t)),
      );
    const result = this.tail.then(run, run);
    this.tail = result.catch(() => undefined);
    return result;
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.tail;
    await this.closeWriter();
    await this.sequelize.close();
  }
}

class PooledDatabase implements Database {
  constructor(
    readonly sequelize: Sequelize,
    readonly dialect: 'postgres' | 'mariadb',
  ) {}

  async write<T>(fn: (t: Transaction) => Promise<T>, opts: WriteOptions = {}): Promise<T> {
    assertNotNested();
    for (let attempt = 1; ; attempt++) {
      try {
        return await inWrite.run(true, () => this.sequelize.transaction((t) => fn(t)));
      } catch (err) {
        const retry =
          (isTransient(err) && attempt < MAX_ATTEMPTS) ||
          (opts.retryOnConflict === true &&
            err instanceof UniqueConstraintError &&
            attempt < MAX_CONFLICT_ATTEMPTS);
        if (!retry) throw err;
        await new Promise((resolve) => setTimeout(resolve, Math.random() * Math.min(200, 5 * 2 ** attempt)));
      }
    }
  }

  async close(): Promise<void> {
    await this.sequelize.close();
  }
}

/** Serialization failure and deadlock (Postgres 40001/40P01; MariaDB 1213, 1020 and SQLSTATE 40001). */
function isTransient(err: unknown): boolean {
  let current: unknown = err;
  for (let depth = 0; depth < 5 && typeof current === 'object' && current !== null; depth++) {
    const e = current as {
      code?: unknown;
      errno?: unknown;
      sqlState?: unknown;
      parent?: unknown;
      cause?: unknown;
    };
    if (e.code === '40001' || e.code === '40P01' || e.code === 'ER_LOCK_DEADLOCK') return true;
    if (e.errno === 1213 || e.errno === 1020 || e.sqlState === '40001') return true;
    current = e.parent ?? e.cause;
  }
  return false;
}
