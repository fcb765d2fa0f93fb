/**
 * MDM core benchmark: enrollment, check-in and connect rates with simulated devices against a server
 * running as its own process on SQLite. Usage: `npm run bench -- mdm-core [--devices 300] [--concurrency 32]`.
 */
import { parseArgs } from 'node:util';
import { Fleet, runPool } from '../simulator/fleet.ts';
import { OperationStats, type OperationSummary } from '../simulator/load/stats.ts';
import { adminApi } from './admin-api.ts';
import { startServerProcess } from './server-process.ts';

const row = (name: string, s: OperationSummary, unit: string) =>
  `| ${name} | ${s.ok} | ${s.failed} | ${s.ratePerSecond.toFixed(1)} ${unit}/s | ${s.latency.p50Ms.toFixed(1)} | ${s.latency.p99Ms.toFixed(1)} |`;

export async function benchMdmCore(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      devices: { type: 'string', default: '300' },
      concurrency: { type: 'string', default: '32' },
      port: { type: 'string', default: '18643' },
      'macos-share': { type: 'string', default: '0.4' },
    },
  });
  const devices = Number(values.devices);
  const concurrency = Number(values.concurrency);
  if (!Number.isInteger(devices) || devices < 1 || !Number.isInteger(concurrency) || concurrency < 1) {
    throw new Error('--devices and --concurrency must be positive integers');
  }
  const server = await startServerProcess(Number(values.port));
  const api = adminApi(server.url, server.ca, server.adminToken);
  try {
    const token = await api('POST', '/enrollment-tokens', {});
    const enrollUrl = (token.json as { enrollUrl: string }).enrollUrl;
    const fleet = new Fleet({ stateDir: null, ca: server.ca, concurrency });
    await fleet.grow(devices, Number(values['macos-share']));
    await fleet.enrollAll(enrollUrl);

    // Check-in: every channel sends TokenUpdate again (a signed check-in message, parsed, verified, stored).
    const checkin = new OperationStats();
    const channels = fleet.devices.flatMap((d) => d.channels.map((c) => ({ d, c })));
    await runPool(channels, concurrency, async ({ d, c }) => {
      const t0 = performance.now();
      try {
        await d.tokenUpdate(c);
        checkin.record(t0, performance.now() - t0);
      } catch {
        checkin.fail('tokenUpdate', t0, performance.now() - t0);
      }
    });

    // Connect with an empty queue: one signed Idle, a zero-length answer.
    const emptyStart = fleet.connectStats.ok;
    await fleet.connectAll();
    const empty = fleet.connectStats.summary();

    // Connect with one queued command per device: Idle → command, result → empty answer.
    await runPool(fleet.devices, 16, async (d) => {
      await api('POST', `/devices/${d.udid}/commands`, {
        requestType: 'DeviceInformation',
        Queries: ['UDID', 'OSVersion', 'iTunesStoreAccountHash'],
      });
    });
    const withCommand = new OperationStats();
    await runPool(fleet.devices, concurrency, async (d) => {
      const t0 = performance.now();
      try {
        const r = await d.connect('device');
        if (r.commands.length !== 1) throw new Error('expected one command');
        withCommand.record(t0, performance.now() - t0);
      } catch {
        withCommand.fail('connect', t0, performance.now() - t0);
      }
    });
    fleet.close();

    const lines = [
      `devices: ${devices} (${fleet.devices.filter((d) => d.spec.platform === 'macos').length} macOS), channels: ${channels.length}, concurrency: ${concurrency}, empty-queue connects before: ${emptyStart}`,
      '',
      '| operation | ok | failed | rate | p50 ms | p99 ms |',
      '|---|---|---|---|---|---|',
      row('enroll (profile + Authenticate + TokenUpdate(s))', fleet.enrollStats.summary(), 'devices'),
      row('check-in (signed TokenUpdate)', checkin.summary(), 'messages'),
      row('connect, empty queue (1 request)', empty, 'connects'),
      row('connect with one command (2 requests)', withCommand.summary(), 'connects'),
    ];
    console.log(lines.join('\n'));
  } finally {
    await server.stop();
  }
}
