import type { Migration } from './migrations.ts';
import { schemaKit } from './schema-kit.ts';

/**
 * `0005_invitations`: volume-purchasing invitations (`vpp_invitations`), one usage row per user in
 * scope (`invitation_usage`) and the devices a device channel prompted (`invitation_usage_devices`).
 * On MariaDB, which commits every DDL statement by itself, each step is skipped when already there, so
 * a half-done run can simply run again (SQLite and Postgres run it in one transaction).
 */
export const invitationMigration: Migration = {
  id: '0005_invitations',
  async up(qi, t) {
    const { idType, key, longText, string, time, int, flag, table, index } = await schemaKit(qi, t);

    // One row per invitation. `location_id` has no foreign key: deleting a location marks its
    // invitations deleted and the fan-out job withdraws their usage before removing them (a cascade
    // would drop the rows before the channels heard of it). `site_id` is the location's, copied.
    // Scope and email are JSON. `scope_generation` is bumped by whatever can change who is in scope;
    // `computed_generation` says which generation the usage rows reflect.
    await table('vpp_invitations', {
      id: key,
      name: string(255, false),
      location_id: { type: idType, allowNull: false },
      site_id: { type: idType, allowNull: true },
      distribution_method: string(32, false),
      auto_register_managed_users: flag(),
      require_login: flag(),
      email_json: { type: longText, allowNull: true },
      scope_json: { type: longText, allowNull: false },
      scope_generation: int(),
      computed_generation: int(),
      fanout_started_at: time(true),
      fanout_finished_at: time(true),
      fanout_error: string(500, true),
      deleted_at: time(true),
      created_at: time(false),
      updated_at: time(false),
    });
    await index('vpp_invitations', 'vpp_invitations_location', ['location_id']);

    // One row per (invitation, user in scope): the usage. `id` is the per-user invitation ID;
    // `registration_code` (256 bits, base64url) is the `/register/{code}` link. `stage` is the
    // fan-out's internal progress (see server/invitations/model.ts). `location_id` is the invitation's,
    // copied so that Apple's word about a (user, location) reaches every invitation of the location.
    // A user deleted from the directory leaves the usage (cascade).
    await table('invitation_usage', {
      id: key,
      invitation_id: {
        type: idType,
        allowNull: false,
        references: { model: 'vpp_invitations', key: 'id' },
        onDelete: 'CASCADE',
      },
      location_id: { type: idType, allowNull: false },
      user_id: {
        type: idType,
        allowNull: false,
        references: { model: 'users', key: 'id' },
        onDelete: 'CASCADE',
      },
      status: string(16, false),
      stage: string(24, false),
      reason: string(500, true),
      last_action: string(500, true),
      last_action_at: time(true),
      sent_at: time(true),
      registration_code: string(64, false),
      created_at: time(false),
      updated_at: time(false),
    });
    await index('invitation_usage', 'invitation_usage_invitation_user', ['invitation_id', 'user_id'], true);
    await index('invitation_usage', 'invitation_usage_code', ['registration_code'], true);
    await index('invitation_usage', 'invitation_usage_status', ['invitation_id', 'status', 'id']);
    await index('invitation_usage', 'invitation_usage_stage', ['invitation_id', 'stage', 'id']);
    await index('invitation_usage', 'invitation_usage_user', ['user_id', 'location_id']);

    // The devices a device channel prompted for a usage (issue: prompt and Self Service).
    await table('invitation_usage_devices', {
      usage_id: {
        type: idType,
        allowNull: false,
        primaryKey: true,
        references: { model: 'invitation_usage', key: 'id' },
        onDelete: 'CASCADE',
      },
      enrollment_id: { ...string(255, false), primaryKey: true },
      udid: string(255, false),
      command_uuid: string(128, true),
      command_status: string(32, true),
      updated_at: time(false),
    });
    await index('invitation_usage_devices', 'invitation_usage_devices_enrollment', ['enrollment_id']);
    await index('invitation_usage_devices', 'invitation_usage_devices_command', ['command_uuid']);
  },
};
