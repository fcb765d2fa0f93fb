import { DataTypes, QueryTypes } from 'sequelize';
import type { Migration } from './migrations.ts';
import { schemaKit } from './schema-kit.ts';

/**
 * `0007_email`: the email channel's messages (`invitation_emails`) and the registration page's shared
 * state, so that several instances behave as one: CSRF synchronizer tokens
 * (`registration_csrf_tokens`), the login throttle's attempts (`registration_login_attempts`) and the
 * one-row lock that serialises its check-and-count (`registration_throttle_lock`). On MariaDB, which
 * commits every DDL statement by itself, each step is skipped when already there.
 */
export const emailMigration: Migration = {
  id: '0007_email',
  async up(qi, t) {
    const { idType, key, string, time, int, table, index } = await schemaKit(qi, t);

    // One row per email to send: a usage's first invitation (`seq` 1) and one per resend. It goes with
    // its usage (cascade). `message_id` is made once, so every try of a message carries the same one.
    await table('invitation_emails', {
      id: key,
      usage_id: {
        type: idType,
        allowNull: false,
        references: { model: 'invitation_usage', key: 'id' },
        onDelete: 'CASCADE',
      },
      invitation_id: { type: idType, allowNull: false },
      seq: int(),
      kind: string(16, false),
      invite_code: string(255, false),
      to_address: string(320, false),
      to_name: string(255, true),
      registration_url: string(1024, false),
      message_id: string(255, false),
      status: string(16, false),
      attempts: int(),
      last_error: string(500, true),
      smtp_response: string(500, true),
      sending_at: time(true),
      sent_at: time(true),
      created_at: time(false),
      updated_at: time(false),
    });
    await index('invitation_emails', 'invitation_emails_usage_seq', ['usage_id', 'seq'], true);

    // CSRF synchronizer tokens: SHA-256 (hex) of the token and of its binding; deleted when used.
    await table('registration_csrf_tokens', {
      token_hash: { ...string(64, false), primaryKey: true },
      binding_hash: string(64, false),
      expires_at: time(false),
    });
    await index('registration_csrf_tokens', 'registration_csrf_tokens_expiry', ['expires_at']);

    // Login attempts, per key (SHA-256 hex of `c:<code>` or `a:<address>`), counted over the window.
    await table('registration_login_attempts', {
      id: key,
      key_hash: string(64, false),
      attempted_at: time(false),
    });
    await index('registration_login_attempts', 'registration_login_attempts_key', [
      'key_hash',
      'attempted_at',
    ]);
    await index('registration_login_attempts', 'registration_login_attempts_time', ['attempted_at']);

    await table('registration_throttle_lock', {
      id: { type: DataTypes.INTEGER, primaryKey: true, allowNull: false },
      n: { type: DataTypes.BIGINT, allowNull: false, defaultValue: 0 },
    });
    const rows = await qi.sequelize.query<{ n: unknown }>(
      'SELECT COUNT(*) AS n FROM registration_throttle_lock WHERE id = 1',
      { type: QueryTypes.SELECT, transaction: t },
    );
    if (Number(rows[0]?.n ?? 0) === 0) {
      await qi.bulkInsert('registration_throttle_lock', [{ id: 1, n: 0 }], { transaction: t });
    }
  },
};
