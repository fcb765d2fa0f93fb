/**
 * Invitation fan-out benchmark: save an invitation for every user → all users registered with the
 * simulated Apps and Books service and handed to a (counting) delivery channel. The server runs in this
 * process on SQLite (so that a test channel can be plugged in), the simulated service too.
 * Usage: `npm run bench -- invitations [--users 10000] [--event-delay 5] [--log warn]`.
 */
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { QueryTypes } from 'sequelize';
import { ensureDevPki } from '../certs/dev-pki.ts';
import { loadConfig } from '../server/config.ts';
import type {
  DeliveryChannel,
  DeliveryOutcome,
  InvitationForDelivery,
  UsageForDelivery,
} from '../server/invitations/channels.ts';
import { createLogger } from '../server/log.ts';
import { startServer } from '../server/server.ts';
import { toInt } from '../server/storage/models.ts';
import { AppleVppService } from '../simulator/apple-vpp/service.ts';
import { adminApi } from './admin-api.ts';

/** Counts what it is handed and answers `sent`. */
class CountingChannel implements DeliveryChannel {
  readonly method = 'self_service_only' as const;
  readonly users = new Set<string>();
  lastAt = 0;

  async deliver(_inv: InvitationForDelivery, items: readonly UsageForDelivery[]): Promise<DeliveryOutcome[]> {
    for (const i of items) this.users.add(i.userId);
    this.lastAt = Date.now();
    return items.map((i) => ({ usageId: i.usageId, status: 'sent' }));
  }

  resend(inv: InvitationForDelivery, items: readonly UsageForDelivery[]): Promise<DeliveryOutcome[]> {
    return this.deliver(inv, items);
  }

  async withdraw(): Promise<void> {}
}

export async function benchInvitations(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      users: { type: 'string', default: '10000' },
      'event-delay': { type: 'string', default: '5' },
      log: { type: 'string', default: 'warn' },
    },
  });
  const count = Number(values.users);
  const eventDelayMs = Number(values['event-delay']);
  if (!Number.isInteger(count) || count < 1) throw new Error('--users must be a positive integer');
  const level = values.log === 'info' || values.log === 'debug' ? values.log : 'warn';

  const dataDir = await fs.mkdtemp(path.join(os.tmpdir(), 'mdm-bench-inv-'));
  const pki = await ensureDevPki(path.join(dataDir, 'certs'), { hostnames: ['127.0.0.1'] });
  const service = new AppleVppService({
    port: 0,
    tlsCertPem: pki.simulatorCertPem,
    tlsKeyPem: pki.simulatorKeyPem,
    notificationCaPems: [pki.caCertPem],
    eventDelayMs,
  });
  await service.start();
  const config = loadConfig({
    MDM_PORT: '0',
    MDM_HOST: '127.0.0.1',
    MDM_PUBLIC_URL: 'https://127.0.0.1:0',
    MDM_DATA_DIR: dataDir,
    MDM_VPP_URL: service.url,
    MDM_LOG_LEVEL: level,
  });
  const server = await startServer(config, createLogger(level));
  try {
    const ca = await fs.readFile(server.caCertPath, 'utf8');
    const api = adminApi(server.url, ca, server.adminToken);
    const sToken = service.mintServiceToken({ orgName: 'Bench Org' });
    const loc = await api('POST', '/locations', { name: 'bench', serviceToken: sToken });
    if (loc.status !== 201) throw new Error(`POST /locations: ${loc.status} ${JSON.stringify(loc.json)}`);
    const locationId = (loc.json as { id: string }).id;

    // The directory: one multi-row insert per 1,000 users.
    const db = server.db;
    const now = new Date();
    for (let i = 0; i < count; i += 1000) {
      const rows = Array.from({ length: Math.min(1000, count - i) }, (_, j) => ({
        username: `bench-${i + j}`,
        username_key: `bench-${i + j}`,
        email: `bench-${i + j}@example.com`,
        created_at: now,
        updated_at: now,
      }));
      await db.write((t) => db.sequelize.getQueryInterface().bulkInsert('users', rows, { transaction: t }));
    }
    const channel = new CountingChannel();
    server.invitations.channels.register(channel);
    const creates = () => service.stats().requests.byRoute['POST /users/create'] ?? 0;
    const createsBefore = creates();

    const t0 = Date.now();
    const res = await api('POST', '/vpp-invitations', {
      name: 'Everyone',
      locationId,
      distributionMethod: 'self_service_only',
      scope: { allUsers: true },
    });
    const tSaved = Date.now();
    if (res.status !== 201)
      throw new Error(`POST /vpp-invitations: ${res.status} ${JSON.stringify(res.json)}`);
    const invitationId = (res.json as { id: string }).id;
    let tApple = 0;
    const deadline = t0 + 30 * 60_000;
    for (;;) {
      // (the location's summary: `users(sToken)` would clone every record on each look)
      if (!tApple && (service.location(sToken)?.users.registered ?? 0) >= count) tApple = Date.now();
      if (tApple && channel.users.size >= count) break;
      if (Date.now() > deadline) throw new Error('timed out');
      await new Promise((r) => setTimeout(r, 25));
    }
    const tHanded = Math.max(channel.lastAt, tApple);
    // The last batch's outcomes are recorded right after the channel answers.
    let counts: Record<string, number> = {};
    for (;;) {
      const inv = await api('GET', `/vpp-invitations/${invitationId}`);
      counts = (inv.json as { counts: Record<string, number> }).counts;
      if ((counts.sent ?? 0) >= count || Date.now() > deadline) break;
      await new Promise((r) => setTimeout(r, 25));
    }
    const tRecorded = Date.now();
    const [registered] = await db.sequelize.query<{ n: unknown }>(
      "SELECT COUNT(*) AS n FROM vpp_registrations WHERE location_id = :loc AND state = 'registered'",
      { type: QueryTypes.SELECT, replacements: { loc: Number(locationId) } },
    );
    const s = (ms: number) => `${(ms / 1000).toFixed(2)} s`;
    console.log(
      `\nInvitation fan-out, ${count} users, SQLite, simulated Apple service (event delay ${eventDelayMs} ms)\n`,
    );
    console.log('| step | time from save |');
    console.log('|---|---|');
    console.log(
      `| POST /vpp-invitations answered (scope applied: ${count} usage rows) | ${s(tSaved - t0)} |`,
    );
    console.log(`| all users registered at Apple (\`Registered\`, invite code) | ${s(tApple - t0)} |`);
    console.log(`| all users registered and handed to the channel | ${s(tHanded - t0)} |`);
    console.log(`| every usage \`sent\` (the channel's outcomes recorded) | ${s(tRecorded - t0)} |`);
    console.log('');
    console.log(
      `users/create calls: ${creates() - createsBefore}; registrations stored: ${toInt(registered?.n ?? 0)}; ` +
        `usage counts: ${JSON.stringify(counts)}; ` +
        `throughput: ${Math.round(count / ((tHanded - t0) / 1000))} users/s; ` +
        `load average ${os
          .loadavg()
          .map((l) => l.toFixed(1))
          .join(' ')}`,
    );
  } finally {
    await server.close();
    await service.stop();
    await fs.rm(dataDir, { recursive: true, force: true });
  }
}
