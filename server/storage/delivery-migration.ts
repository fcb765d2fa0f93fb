import { DataTypes } from 'sequelize';
import type { Migration } from './migrations.ts';
import { schemaKit } from './schema-kit.ts';

/**
 * `0006_device_delivery`: the `InviteToProgram` prompts sent to devices (`device_prompts`, one row per
 * user, location and device: the device's current prompt for that registration, or why it got none)
 * and an index on `command_queue.command_uuid` (commands are withdrawn by UUID across enrollments).
 * On MariaDB, which commits every DDL statement by itself, each step is skipped when already there.
 */
export const deliveryMigration: Migration = {
  id: '0006_device_delivery',
  async up(qi, t) {
    const { idType, string, time, table, index } = await schemaKit(qi, t);

    // One row per (user, location, device). `state`: `skipped` (no prompt: `reason` says why), `queued`
    // and `not_now` (a command waits in the queue: "active"), `acknowledged`, `failed` (`reason`), or
    // `withdrawn`. `command_status` is the command's status as the usage shows it. `invite_code` is the
    // one the prompt carries (a new code means a new prompt). `revision` guards concurrent changes.
    // No foreign keys: a prompt outlives its usage rows (two invitations of a location share it) and a
    // deleted user or device is found by the reconcile job, which withdraws the command first.
    await table('device_prompts', {
      id: { type: idType, primaryKey: true, autoIncrement: true, allowNull: false },
      user_id: { type: idType, allowNull: false },
      location_id: { type: idType, allowNull: false },
      udid: string(255, false),
      enrollment_id: string(255, true),
      command_uuid: string(128, true),
      invite_code: string(255, true),
      state: string(16, false),
      command_status: string(32, true),
      reason: string(500, true),
      revision: { type: DataTypes.INTEGER, allowNull: false, defaultValue: 0 },
      queued_at: time(true),
      answered_at: time(true),
      created_at: time(false),
      updated_at: time(false),
    });
    await index('device_prompts', 'device_prompts_key', ['user_id', 'location_id', 'udid'], true);
    // Unique: one prompt per command (NULLs, the skipped rows, never collide on any of the three).
    await index('device_prompts', 'device_prompts_command', ['command_uuid'], true);
    await index('device_prompts', 'device_prompts_udid', ['udid']);
    await index('device_prompts', 'device_prompts_state', ['state', 'updated_at']);
    // Withdrawing by command UUID, and the reconcile's look at the queue, go by this.
    await index('command_queue', 'command_queue_command', ['command_uuid']);
  },
};
