import { DataTypes, type QueryInterface, type Transaction } from 'sequelize';
import { apiTokenMigration } from './api-token-migration.ts';
import { deliveryMigration } from './delivery-migration.ts';
import { directoryMigration } from './directory-migration.ts';
import { emailMigration } from './email-migration.ts';
import { invitationMigration } from './invitation-migration.ts';
import { pushMigration } from './push-migration.ts';
import { vppMigration } from './vpp-migration.ts';

/**
 * One schema change. `up` runs inside the migration lock and, on SQLite and Postgres, inside one
 * transaction with recording it (MariaDB commits each DDL statement by itself). Pass `{ transaction: t }`
 * to every QueryInterface call. Never edit a migration once released: add a new one at the end.
 */
export interface Migration {
  id: string;
  up(qi: QueryInterface, t: Transaction): Promise<void>;
}

/** MariaDB: exact (binary) comparison and ordering of strings, like the other two databases. */
function tableOptions(t: Transaction) {
  return { transaction: t, charset: 'utf8mb4', collate: 'utf8mb4_bin' };
}

/** Text of any size: `LONGTEXT` (4 GB) on MariaDB, where `TEXT` stops at 64 KB; `TEXT` elsewhere. */
export function longTextType(dialect: string) {
  return dialect === 'mariadb' ? DataTypes.TEXT('long') : DataTypes.TEXT;
}

const id = (length = 255) => ({ type: DataTypes.STRING(length), allowNull: false });
const text = (length = 255) => ({ type: DataTypes.STRING(length), allowNull: true });
const time = (allowNull: boolean) => ({ type: DataTypes.DATE(3), allowNull });
const flag = () => ({ type: DataTypes.BOOLEAN, allowNull: false, defaultValue: false });

const mdmCore: Migration = {
  id: '0001_mdm_core',
  async up(qi, t) {
    // SQLite allows AUTOINCREMENT only on an INTEGER PRIMARY KEY (which is 64-bit there anyway).
    const seqType = qi.sequelize.getDialect() === 'sqlite' ? DataTypes.INTEGER : DataTypes.BIGINT;
    const longText = longTextType(qi.sequelize.getDialect());

    await qi.createTable(
      'enrollment_tokens',
      {
        token: { ...id(), primaryKey: true },
        expires_at: time(true),
        max_uses: { type: DataTypes.INTEGER, allowNull: true },
        uses: { type: DataTypes.INTEGER, allowNull: false, defaultValue: 0 },
        site_id: text(),
        created_at: time(false),
      },
      tableOptions(t),
    );

    await qi.createTable(
      'devices',
      {
        udid: { ...id(), primaryKey: true },
        platform: id(16),
        os_version: text(64),
        build_version: text(64),
        model: text(),
        product_name: text(),
        serial_number: text(),
        device_name: text(),
        user_enrollment: flag(),
        enrolled: flag(),
        enrolled_at: time(true),
        checked_out_at: time(true),
        last_seen_at: time(true),
        user_id: text(),
        cert_fingerprint: text(64),
        created_at: time(false),
        updated_at: time(false),
      },
      tableOptions(t),
    );
    // Unique: a certificate identifies one device (NULLs do not collide on any of the three).
    await qi.addIndex('devices', ['cert_fingerprint'], {
      name: 'devices_cert',
      unique: true,
      transaction: t,
    });
    await qi.addIndex('devices', ['user_id'], { name: 'devices_user', transaction: t });

    await qi.createTable(
      'enrollments',
      {
        id: { ...id(), primaryKey: true },
        udid: { ...id(), references: { model: 'devices', key: 'udid' }, onDelete: 'CASCADE' },
        channel: id(32),
        apple_user_id: text(),
        user_short_name: text(),
        user_long_name: text(),
        topic: text(),
        push_token: text(),
        push_magic: text(),
        unlock_token: { type: DataTypes.BLOB, allowNull: true },
        enabled: flag(),
        push_token_dead: flag(),
        token_updated_at: time(true),
        created_at: time(false),
        updated_at: time(false),
      },
      tableOptions(t),
    );
    await qi.addIndex('enrollments', ['udid'], { name: 'enrollments_udid', transaction: t });

    await qi.createTable(
      'commands',
      {
        command_uuid: { ...id(128), primaryKey: true },
        request_type: id(128),
        body_xml: { type: longText, allowNull: false },
        created_at: time(false),
      },
      tableOptions(t),
    );

    // The hot table: only unanswered commands. `seq` orders commands queued at the same instant and
    // is carried over to command_results so that both tables page with one cursor.
    await qi.createTable(
      'command_queue',
      {
        seq: { type: seqType, primaryKey: true, autoIncrement: true, allowNull: false },
        enrollment_id: id(),
        command_uuid: { ...id(128), references: { model: 'commands', key: 'command_uuid' } },
        udid: id(),
        status: id(16),
        queued_at: time(false),
        sent_at: time(true),
      },
      tableOptions(t),
    );
    await qi.addIndex('command_queue', ['enrollment_id', 'command_uuid'], {
      name: 'command_queue_key',
      unique: true,
      transaction: t,
    });
    await qi.addIndex('command_queue', ['enrollment_id', 'status', 'queued_at', 'seq'], {
      name: 'command_queue_next',
      transaction: t,
    });
    await qi.addIndex('command_queue', ['udid', 'queued_at', 'seq'], {
      name: 'command_queue_udid',
      transaction: t,
    });

    // The cold table: answered (or withdrawn) commands.
    await qi.createTable(
      'command_results',
      {
        enrollment_id: { ...id(), primaryKey: true },
        command_uuid: { ...id(128), primaryKey: true },
        seq: { type: DataTypes.BIGINT, allowNull: false },
        udid: id(),
        request_type: id(128),
        status: id(32),
        queued_at: time(false),
        answered_at: time(false),
        result_xml: { type: longText, allowNull: true },
      },
      tableOptions(t),
    );
    await qi.addIndex('command_results', ['udid', 'queued_at', 'seq'], {
      name: 'command_results_udid',
      transaction: t,
    });
  },
};

/** Every migration, in the order they apply. Append only. */
export const migrations: readonly Migration[] = [
  mdmCore,
  pushMigration,
  directoryMigration,
  vppMigration,
  invitationMigration,
  deliveryMigration,
  emailMigration,
  apiTokenMigration,
];
