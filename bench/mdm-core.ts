/**
 * MDM core benchmark: enrollment, check-in and connect rates with simulated devices against a server
 * running as its own process on SQLite. Usage: `npm run bench -- mdm-core [--devices 300] [--concurrency 32]`.
 */
import https from 'node:https';
import { parseArgs } from 'node:util';
import { Fleet, runPool } from '../simulator/fleet.ts';
import { OperationStats, type OperationSummary } from '../simulator/load/stats.ts';
import { startServerProcess } from './server-process.ts';

function adminCall(url: string, token: string, ca: string, method: string, route: string, body?: unknown) {
  return new Promise<{ status: number; json: unknown }>((resolve, reject) => {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const req = https.request(
      new URL(`/api/v1${route}`, url),
      {
        method,
        ca,
        headers: {
          authorization: `Bearer ${token}`,
          ...(payload
            ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) }
            : {}),
        },
      },
      (res) => {
        let text = '';
        res.on('data', (c: Buffer) => (text += c.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, json: text ? JSON.parse(text) : null }));
      },
    );
    req.on('error', reject);
    req.end(payload);
  });
}

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
  try {
    const token = await adminCall(server.url, server.adminToken, server.ca, 'POST', '/enrollment-tokens', {});
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
      await adminCall(server.url, server.adminToken, server.ca, 'POST', `/devices/${d.udid}/commands`, {
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
