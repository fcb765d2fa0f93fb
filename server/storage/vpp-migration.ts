import type { Migration } from './migrations.ts';
import { schemaKit } from './schema-kit.ts';

/**
 * `0004_vpp`: the generic durable job queue (`jobs`) and Apple's Apps and Books data: locations (one
 * per service token), registrations (one row per user and location) and the ids of the notifications
 * already applied. On MariaDB, which commits every DDL statement by itself, each step is skipped when
 * already there, so a half-done run can simply run again (SQLite and Postgres run it in one transaction).
 */
export const vppMigration: Migration = {
  id: '0004_vpp',
  async up(qi, t) {
    const { idType, key, longText, string, time, int, flag, table, index } = await schemaKit(qi, t);

    // Durable background work of every kind. A keyed job exists once while pending: enqueueing the key
    // again bumps `generation` (and may move `run_at` earlier); a claim copies it to
    // `claimed_generation`, so a request that arrives while the job runs makes it run once more. The
    // lease (`lease_owner`, `lease_until`) is taken by one conditional UPDATE; a dead instance's lease
    // runs out and another instance takes the job. Failed jobs stay (status `failed`, key cleared).
    await table('jobs', {
      id: key,
      kind: string(64, false),
      dedupe_key: string(255, true),
      payload: { type: longText, allowNull: false },
      status: string(16, false),
      run_at: time(false),
      attempts: int(false),
      last_error: string(500, true),
      lease_owner: string(64, true),
      lease_until: time(true),
      generation: int(false),
      claimed_generation: int(true),
      created_at: time(false),
      updated_at: time(false),
    });
    await index('jobs', 'jobs_key', ['dedupe_key'], true);
    await index('jobs', 'jobs_due', ['status', 'run_at']);
    await index('jobs', 'jobs_lease', ['lease_owner']);

    // One row per service token (Apple location). The sToken is sealed (SecretBox, associated data
    // `location:<id>`); the notification token only as its SHA-256.
    await table('vpp_locations', {
      id: key,
      name: string(255, false),
      s_token_sealed: { type: longText, allowNull: false },
      organization_name: string(255, false),
      location_name: string(255, true),
      country_code: string(8, true),
      token_expiration: time(true),
      apple_uid: string(64, true),
      // A site used by a location cannot be deleted (see docs/api-notes.md, Sites).
      site_id: {
        type: idType,
        allowNull: true,
        references: { model: 'sites', key: 'id' },
        onDelete: 'RESTRICT',
      },
      auto_register_managed_users: flag(),
      status: string(32, false),
      status_message: string(500, true),
      notification_token_hash: string(64, true),
      invitation_template: string(1000, true),
      version_id: string(255, true),
      last_synced_at: time(true),
      last_sync_error: string(500, true),
      created_at: time(false),
      updated_at: time(false),
    });
    await index('vpp_locations', 'vpp_locations_apple_uid', ['apple_uid'], true);
    await index('vpp_locations', 'vpp_locations_site', ['site_id']);

    // One row per (user, location). `state` is internal (pending → creating → created → registered →
    // associated; lookup after 9716; failed; retired); the API shows a coarser status.
    await table('vpp_registrations', {
      id: key,
      location_id: {
        type: idType,
        allowNull: false,
        references: { model: 'vpp_locations', key: 'id' },
        onDelete: 'CASCADE',
      },
      user_id: {
        type: idType,
        allowNull: false,
        references: { model: 'users', key: 'id' },
        onDelete: 'CASCADE',
      },
      client_user_id: string(64, false),
      state: string(16, false),
      managed: flag(),
      invite_code: string(255, true),
      invitation_url: string(1000, true),
      id_hash: string(255, true),
      event_id: string(255, true),
      error_number: int(true),
      error_message: string(500, true),
      requested_at: time(false),
      sent_at: time(true),
      registered_at: time(true),
      associated_at: time(true),
      retired_at: time(true),
      created_at: time(false),
      updated_at: time(false),
    });
    await index('vpp_registrations', 'vpp_registrations_location_user', ['location_id', 'user_id'], true);
    await index('vpp_registrations', 'vpp_registrations_client_user', ['client_user_id'], true);
    await index('vpp_registrations', 'vpp_registrations_state', ['location_id', 'state', 'id']);
    await index('vpp_registrations', 'vpp_registrations_event', ['location_id', 'event_id']);
    await index('vpp_registrations', 'vpp_registrations_user', ['user_id']);

    // Notifications already applied (Apple retries with the same id): kept 30 days.
    await table('vpp_notifications', {
      notification_id: { ...string(255, false), primaryKey: true },
      location_id: {
        type: idType,
        allowNull: false,
        references: { model: 'vpp_locations', key: 'id' },
        onDelete: 'CASCADE',
      },
      notification_type: string(64, false),
      received_at: time(false),
    });
    await index('vpp_notifications', 'vpp_notifications_received', ['received_at']);
  },
};
