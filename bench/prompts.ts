/**
 * Device prompts benchmark: an invitation (`prompt_and_self_service`) to every user → every assigned
 * device acknowledged its `InviteToProgram`. The server runs as its own process (SQLite); the APNs
 * gateway, the Apps and Books service and the devices (which connect when a push reaches them) run here.
 * Usage: `npm run bench -- prompts [--users 1000] [--devices 2000] [--macos-share 0.5] [--concurrency 32]`.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { ensureDevPki } from '../certs/dev-pki.ts';
import { ApnsGateway } from '../simulator/apns/gateway.ts';
import { AppleVppService } from '../simulator/apple-vpp/service.ts';
import { randomSpec, seededRng, type DeviceSpec } from '../simulator/device/device-spec.ts';
import { Fleet, runPool } from '../simulator/fleet.ts';
import { summarize } from '../simulator/load/stats.ts';
import { PushWakeups } from '../simulator/push-wakeups.ts';
import { adminApi } from './admin-api.ts';
import { startServerProcess } from './server-process.ts';

const seconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

export async function benchPrompts(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      users: { type: 'string', default: '1000' },
      devices: { type: 'string', default: '2000' },
      'macos-share': { type: 'string', default: '0.5' },
      concurrency: { type: 'string', default: '32' },
      'event-delay': { type: 'string', default: '100' },
      port: { type: 'string', default: '18644' },
      'timeout-minutes': { type: 'string', default: '30' },
    },
  });
  const userCount = Number(values.users);
  const deviceCount = Number(values.devices);
  const macShare = Number(values['macos-share']);
  const concurrency = Number(values.concurrency);
  if (
    ![userCount, deviceCount, concurrency].every((n) => Number.isInteger(n) && n > 0) ||
    deviceCount < userCount
  ) {
    throw new Error(
      '--users, --devices and --concurrency must be positive integers, with at least one device per user',
    );
  }
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'mdm-bench-prompts-'));
  const pki = await ensureDevPki(path.join(dataDir, 'certs'), { hostnames: ['127.0.0.1'] });
  const gateway = new ApnsGateway({
    port: 0,
    tlsCertPem: pki.simulatorCertPem,
    tlsKeyPem: pki.simulatorKeyPem,
    clientCaPems: [pki.caCertPem],
  });
  const { url: apnsUrl } = await gateway.start();
  const service = new AppleVppService({
    port: 0,
    tlsCertPem: pki.simulatorCertPem,
    tlsKeyPem: pki.simulatorKeyPem,
    notificationCaPems: [pki.caCertPem],
    eventDelayMs: Number(values['event-delay']),
  });
  const { url: vppUrl } = await service.start();
  const server = await startServerProcess(
    Number(values.port),
    { MDM_APNS_URL: apnsUrl, MDM_VPP_URL: vppUrl },
    { dataDir },
  );
  const fleet = new Fleet({ stateDir: null, ca: server.ca, concurrency });
  let wakeups: PushWakeups | null = null;
  try {
    const api = adminApi(server.url, server.ca, server.adminToken);
    const sToken = service.mintServiceToken({ orgName: 'Bench Org', locationName: 'Bench Location' });
    const loc = await api('POST', '/locations', { name: 'bench', serviceToken: sToken });
    if (loc.status !== 201) throw new Error(`POST /locations: ${loc.status} ${JSON.stringify(loc.json)}`);
    const locationId = (loc.json as { id: string }).id;

    // users, and their devices: the devices are spread over the users (round robin); a user's Macs have
    // the user at the console (so they also assign themselves), the other devices are iPhones and iPads
    const t = performance.now();
    const usernames = Array.from({ length: userCount }, (_, i) => `bench.user${i}`);
    const userIds: string[] = new Array<string>(userCount);
    await runPool(
      usernames.map((u, i) => ({ u, i })),
      16,
      async ({ u, i }) => {
        const res = await api('POST', '/users', { username: u });
        if (res.status !== 201) throw new Error(`POST /users: ${res.status}`);
        userIds[i] = (res.json as { id: string }).id;
      },
    );
    const usersMs = performance.now() - t;
    const rng = seededRng(11);
    const owner: number[] = [];
    const macTarget = Math.round(deviceCount * macShare);
    let macs = 0;
    for (let k = 0; k < deviceCount; k++) {
      const i = k % userCount;
      const remaining = deviceCount - k;
      const mac =
        macTarget - macs >= remaining || (macs < macTarget && rng() < (macTarget - macs) / remaining);
      const username = usernames[i] ?? '';
      let spec: DeviceSpec;
      if (mac) {
        macs++;
        spec = randomSpec('macos', rng);
        if (spec.consoleUser) spec.consoleUser = { ...spec.consoleUser, shortName: username };
      } else {
        spec = randomSpec(rng() < 0.75 ? 'ios' : 'ipados', rng);
      }
      await fleet.add(spec);
      owner.push(i);
    }
    const token = await api('POST', '/enrollment-tokens', {});
    const enroll = await fleet.enrollAll((token.json as { enrollUrl: string }).enrollUrl);
    if (enroll.failed > 0)
      throw new Error(`${enroll.failed} enrollments failed: ${JSON.stringify(fleet.failures.slice(0, 3))}`);
    const tAssign = performance.now();
    await runPool(
      fleet.devices.map((d, k) => ({ d, k })),
      16,
      async ({ d, k }) => {
        const res = await api('PUT', `/devices/${encodeURIComponent(d.enrollmentId())}/user`, {
          userId: userIds[owner[k] ?? 0],
        });
        if (res.status !== 200) throw new Error(`PUT /devices/{udid}/user: ${res.status}`);
      },
    );
    const assignMs = performance.now() - tAssign;

    // every device connects when a push reaches one of its channels
    wakeups = new PushWakeups(fleet.devices);
    wakeups.attachLocal(gateway);
    const ackAt = new Map<string, number>();
    let notAcked = 0;
    fleet.on('device', (e) => {
      if (e.type !== 'result' || e.requestType !== 'InviteToProgram') return;
      if (e.status === 'Acknowledged') {
        if (!ackAt.has(e.udid)) ackAt.set(e.udid, performance.now());
      } else notAcked++;
    });

    const pushedAt: number[] = [];
    gateway.on('accepted', () => pushedAt.push(performance.now()));
    let sentMs: number | null = null;
    const t0 = performance.now();
    const created = await api('POST', '/vpp-invitations', {
      name: 'Bench prompts',
      locationId,
      distributionMethod: 'prompt_and_self_service',
      scope: { allUsers: true, userIds: [], groupIds: [], exclusions: { userIds: [], groupIds: [] } },
    });
    const savedMs = performance.now() - t0;
    if (created.status !== 201)
      throw new Error(`POST /vpp-invitations: ${created.status} ${JSON.stringify(created.json)}`);
    const invitationId = (created.json as { id: string }).id;
    const deadline = Date.now() + Number(values['timeout-minutes']) * 60_000;
    let usageAckMs: number | null = null;
    let counts: Record<string, number> = {};
    while (Date.now() < deadline) {
      if (usageAckMs === null) {
        const inv = await api('GET', `/vpp-invitations/${invitationId}`);
        counts = (inv.json as { counts: Record<string, number> }).counts;
        const prompted = (counts['sent'] ?? 0) + (counts['acknowledged'] ?? 0);
        if (sentMs === null && prompted === userCount) sentMs = performance.now() - t0;
        if ((counts['acknowledged'] ?? 0) === userCount) usageAckMs = performance.now() - t0;
      }
      if (ackAt.size === deviceCount && usageAckMs !== null) break;
      await new Promise((r) => setTimeout(r, 250));
    }
    const times = [...ackAt.values()].map((at) => at - t0);
    const s = summarize(times);
    const gw = gateway.stats();
    const lines = [
      `users: ${userCount}, devices: ${deviceCount} (${macs} macOS: prompt on the user channel), concurrency: ${concurrency}, Apple event delay: ${values['event-delay']} ms`,
      `setup: ${userCount} users in ${seconds(usersMs)}, ${enroll.ok} enrollments in ${seconds(enroll.wallMs)} (${((enroll.ok * 1000) / enroll.wallMs).toFixed(1)}/s), ${deviceCount} assignments in ${seconds(assignMs)}`,
      '',
      '| from saving the invitation to | time |',
      '|---|---|',
      `| its \`201\` | ${seconds(savedMs)} |`,
      `| the first push reaching the gateway | ${pushedAt[0] === undefined ? '-' : seconds(pushedAt[0] - t0)} |`,
      `| the usage showing every user \`sent\` (every prompt queued and pushed; polled every 250 ms) | ${sentMs === null ? '-' : seconds(sentMs)} |`,
      `| the last push reaching the gateway | ${pushedAt.length === 0 ? '-' : seconds((pushedAt[pushedAt.length - 1] ?? t0) - t0)} |`,
      `| the first device acknowledging | ${seconds(s.minMs)} |`,
      `| half the devices acknowledging (p50) | ${seconds(s.p50Ms)} |`,
      `| 90 % of the devices (p90) | ${seconds(s.p90Ms)} |`,
      `| 99 % of the devices (p99) | ${seconds(s.p99Ms)} |`,
      `| **every device acknowledging** (${ackAt.size}/${deviceCount}) | **${seconds(s.maxMs)}** |`,
      `| the usage showing every user \`acknowledged\` | ${usageAckMs === null ? `not reached (${JSON.stringify(counts)})` : seconds(usageAckMs)} |`,
      '',
      `pushes: ${gw.accepted} accepted by the gateway; device connects: ${wakeups.stats.connects}, commands handled: ${wakeups.stats.commands}; InviteToProgram answers other than Acknowledged: ${notAcked}`,
    ];
    console.log(lines.join('\n'));
    if (ackAt.size !== deviceCount) process.exitCode = 1;
  } finally {
    await wakeups?.close();
    fleet.close();
    await server.stop();
    await service.stop();
    await gateway.stop();
    await rm(dataDir, { recursive: true, force: true });
  }
}
