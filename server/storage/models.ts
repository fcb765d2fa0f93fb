import { DataTypes, type Model, type ModelStatic, type Optional, type Sequelize } from 'sequelize';
import { longTextType } from './migrations.ts';

/**
 * Sequelize models over the tables created by `migrations.ts` (the migrations own the schema; these
 * never `sync`). Attributes are camelCase, columns snake_case (`underscored`). Timestamps are set by
 * the stores from the caller's `now`, so `timestamps` is off.
 */
export interface TokenRow {
  token: string;
  expiresAt: Date | null;
  maxUses: number | null;
  uses: number;
  siteId: string | null;
  createdAt: Date;
}

export interface DeviceRow {
  udid: string;
  platform: string;
  osVersion: string | null;
  buildVersion: string | null;
  model: string | null;
  productName: string | null;
  serialNumber: string | null;
  deviceName: string | null;
  userEnrollment: boolean;
  enrolled: boolean;
  enrolledAt: Date | null;
  checkedOutAt: Date | null;
  lastSeenAt: Date | null;
  userId: string | null;
  certFingerprint: string | null;
  createdAt: Date;
  updatedAt: Date;
}

export interface EnrollmentRow {
  id: string;
  udid: string;
  channel: string;
  appleUserId: string | null;
  userShortName: string | null;
  userLongName: string | null;
  topic: string | null;
  pushToken: string | null;
  pushMagic: string | null;
  unlockToken: Buffer | null;
  enabled: boolean;
  pushTokenDead: boolean;
  tokenUpdatedAt: Date | null;
  createdAt: Date;
  updatedAt: Date;
}

export interface CommandRow {
  commandUuid: string;
  requestType: string;
  bodyXml: string;
  createdAt: Date;
}

export type QueueStatus = 'queued' | 'sent' | 'not_now';

export interface QueueRow {
  seq: number;
  enrollmentId: string;
  commandUuid: string;
  udid: string;
  status: QueueStatus;
  queuedAt: Date;
  sentAt: Date | null;
}

export type ResultStatus = 'acknowledged' | 'error' | 'command_format_error' | 'withdrawn';

export interface ResultRow {
  enrollmentId: string;
  commandUuid: string;
  seq: number;
  udid: string;
  requestType: string;
  status: ResultStatus;
  queuedAt: Date;
  answeredAt: Date;
  resultXml: string | null;
}

export interface Models {
  Token: ModelStatic<Model<TokenRow, TokenRow>>;
  Device: ModelStatic<Model<DeviceRow, DeviceRow>>;
  Enrollment: ModelStatic<Model<EnrollmentRow, EnrollmentRow>>;
  Command: ModelStatic<Model<CommandRow, CommandRow>>;
  Queue: ModelStatic<Model<QueueRow, Optional<QueueRow, 'seq'>>>;
  Result: ModelStatic<Model<ResultRow, ResultRow>>;
}

const cache = new WeakMap<Sequelize, Models>();

const str = (allowNull = true) => ({ type: DataTypes.STRING, allowNull });
const date = (allowNull = true) => ({ type: DataTypes.DATE(3), allowNull });
const bool = () => ({ type: DataTypes.BOOLEAN, allowNull: false });

/** The models bound to this Sequelize instance (defined once per instance). */
export function modelsOf(sequelize: Sequelize): Models {
  const existing = cache.get(sequelize);
  if (existing) return existing;
  const longText = longTextType(sequelize.getDialect());
  const options = { underscored: true, timestamps: false, freezeTableName: true };
  const models: Models = {
    Token: sequelize.define<Model<TokenRow, TokenRow>>(
      'Token',
      {
        token: { ...str(false), primaryKey: true },
        expiresAt: date(),
        maxUses: { type: DataTypes.INTEGER, allowNull: true },
        uses: { type: DataTypes.INTEGER, allowNull: false },
        siteId: str(),
        createdAt: date(false),
      },
      { ...options, tableName: 'enrollment_tokens' },
    ),
    Device: sequelize.define<Model<DeviceRow, DeviceRow>>(
      'Device',
      {
        udid: { ...str(false), primaryKey: true },
        platform: str(false),
        osVersion: str(),
        buildVersion: str(),
        model: str(),
        productName: str(),
        serialNumber: str(),
        deviceName: str(),
        userEnrollment: bool(),
        enrolled: bool(),
        enrolledAt: date(),
        checkedOutAt: date(),
        lastSeenAt: date(),
        userId: str(),
        certFingerprint: str(),
        createdAt: date(false),
        updatedAt: date(false),
      },
      { ...options, tableName: 'devices' },
    ),
    Enrollment: sequelize.define<Model<EnrollmentRow, EnrollmentRow>>(
      'Enrollment',
      {
        id: { ...str(false), primaryKey: true },
        udid: str(false),
        channel: str(false),
        appleUserId: str(),
        userShortName: str(),
        userLongName: str(),
        topic: str(),
        pushToken: str(),
        pushMagic: str(),
        unlockToken: { type: DataTypes.BLOB, allowNull: true },
        enabled: bool(),
        pushTokenDead: bool(),
        tokenUpdatedAt: date(),
        createdAt: date(false),
        updatedAt: date(false),
      },
      { ...options, tableName: 'enrollments' },
    ),
    Command: sequelize.define<Model<CommandRow, CommandRow>>(
      'Command',
      {
        commandUuid: { ...str(false), primaryKey: true },
        requestType: str(false),
        bodyXml: { type: longText, allowNull: false },
        createdAt: date(false),
      },
      { ...options, tableName: 'commands' },
    ),
    Queue: sequelize.define<Model<QueueRow, Optional<QueueRow, 'seq'>>>(
      'Queue',
      {
        seq: { type: DataTypes.BIGINT, primaryKey: true, autoIncrement: true },
        enrollmentId: str(false),
        commandUuid: str(false),
        udid: str(false),
        status: str(false),
        queuedAt: date(false),
        sentAt: date(),
      },
      { ...options, tableName: 'command_queue' },
    ),
    Result: sequelize.define<Model<ResultRow, ResultRow>>(
      'Result',
      {
        enrollmentId: { ...str(false), primaryKey: true },
        commandUuid: { ...str(false), primaryKey: true },
        seq: { type: DataTypes.BIGINT, allowNull: false },
        udid: str(false),
        requestType: str(false),
        status: str(false),
        queuedAt: date(false),
        answeredAt: date(false),
        resultXml: { type: longText, allowNull: true },
      },
      { ...options, tableName: 'command_results' },
    ),
  };
  cache.set(sequelize, models);
  return models;
}

/** A date as returned by any of the three drivers (Date, ISO text, SQLite's `... +00:00` text, epoch ms). */
export function toDate(value: unknown): Date {
  if (value instanceof Date) return value;
  if (typeof value === 'number') return new Date(value);
  if (typeof value === 'string') {
    // MariaDB DATETIME text has no zone: the session zone is UTC (sequelize sets `time_zone = '+00:00'`).
    const text = /^\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(\.\d+)?$/.test(value) ? `${value}Z` : value;
    const d = new Date(text);
    if (!Number.isNaN(d.getTime())) return d;
  }
  throw new Error(`not a date: ${String(value)}`);
}

export function toDateOrNull(value: unknown): Date | null {
  return value === null || value === undefined ? null : toDate(value);
}

export function toBool(value: unknown): boolean {
  return value === true || value === 1 || value === '1' || value === 't' || value === 'true';
}

/** `BIGINT` comes back as a string from Postgres. */
export function toInt(value: unknown): number {
  const n = typeof value === 'number' ? value : Number(value);
  if (!Number.isSafeInteger(n)) throw new Error(`not an integer: ${String(value)}`);
  return n;
}

export function toIntOrNull(value: unknown): number | null {
  return value === null || value === undefined ? null : toInt(value);
}
