/**
 * The `npm run simulate` command: flags, trust and credentials, the fleet run, progress and summary.
 * `runSimulator` is the whole command with its I/O passed in, so tests can run it in-process.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { z } from 'zod';
import { seededRng } from './device/device-spec.ts';
import { httpRequest } from './device/http-client.ts';
import type { SimulatedDevice } from './device/sim-device.ts';
import { Fleet } from './fleet.ts';
import type { FleetSummary } from './fleet.ts';
import { ProgressReporter } from './load/progress.ts';
import type { ProgressStream } from './load/progress.ts';
import { formatSummary } from './load/report.ts';
import type { ApnsGateway } from './apns/index.ts';
import type { AppleVppService } from './apple-vpp/service.ts';
import { PushWakeups } from './push-wakeups.ts';
import { readSimulatorPki, startAppleVpp, startGateway } from './services.ts';
import { AdminDirectoryClient } from './users/admin-directory-client.ts';
import { DEFAULT_PROBABILITIES, formatRange, parseRange, probabilityProblems } from './users/behaviour.ts';
import type { IntRange } from './users/behaviour.ts';
import { HttpInvitationActor, InProcessInvitationActor } from './users/invitation-actor.ts';
import type { InvitationActor } from './users/invitation-actor.ts';
import { UserPopulation } from './users/user-population.ts';
import { formatUsersSummary } from './users/user-summary.ts';
import type { UsersSummary } from './users/user-summary.ts';

export const USAGE = `Usage: npm run simulate -- [options]

Simulated macOS and iOS devices that enroll in the MDM server and answer its commands over HTTPS.
Device states are kept in --state-dir, so a second run reuses (does not re-enroll) the same devices.

Options:
  --devices N           number of devices (default 10); existing ones in --state-dir are reused first
  --macos-share F       fraction of Macs among new devices, 0..1 (default 0.4); the rest are iPhones and iPads (3:1)
  --server URL          the MDM server (default https://localhost:8443)
  --data-dir DIR        the server's data dir on this machine, to read admin-token and certs/ca.pem (default ./data)
  --ca PATH             CA certificate (PEM) to trust for the server (default <data-dir>/certs/ca.pem)
  --admin-token T       admin API token (default: the file <data-dir>/admin-token)
  --enroll-url URL      enroll with this URL instead of making an enrollment token through the admin API
  --state-dir DIR       where device states are kept (default ./.sim)
  --concurrency N       devices enrolling or connecting at once (default 16)
  --connect             after enrolling, run one command loop (Idle ... empty answer) on every enrolled channel
  --signature ALG       Mdm-Signature: sha256 (signed attributes, default), sha1 (no attributes, like many iOS
                        devices) or none (then use --tls-client-cert)
  --tls-client-cert     also present the device identity as the TLS client certificate
  --seed N              make new devices reproducibly from this seed
  --timeout MS          per request (default 30000)
  --json                print the summary as JSON instead of a table
  --stay                keep running after the run (until Ctrl-C); implied when a service below is started
  --exit                leave after the run even when services were started
  --apns MODE           start (default): run an APNs gateway on --apns-port; off: no pushes (use --connect);
                        or the URL of a gateway another simulator runs (its event stream delivers the pushes)
  --apns-port N         port of the APNs gateway this command starts (default 2197, the server's default)
  --apple-vpp MODE      start (default): run the simulated Apps and Books service on --vpp-port; off: don't
  --vpp-port N          port of the Apps and Books service (default 8444, the server's default)

Simulated users (off unless --users is given):
  --users N             simulated users (default 0: none); kept in <state-dir>/users.map.json, so usernames
                        (simuser0001, ...) and their devices stay the same across runs. With an admin token the
                        users are created on the server (POST /api/v1/users) and each enrolled device is
                        assigned to its user (PUT /api/v1/devices/{udid}/user)
  --devices-per-user R  devices per user, a range MIN-MAX or a number (default 1-3); devices left over stay
                        without a user, users beyond the devices get none
  --accept P            probability that a user accepts with their own Apple ID (<username>@icloud.example),
                        on the device where they saw the invitation first (default 0.8)
  --ignore P            probability that a user ignores it (default 0.1)
  --decline P           probability that a user opens the invitation page and declines (default 0.05)
  --wrong-apple-id P    probability that a user accepts with another Apple ID than their own (default 0.05)
                        (the four add up to at most 1; whatever is left also ignores)
  --accept-delay R      milliseconds from seeing an invitation to acting on it, MIN-MAX (default 200-2000);
                        also how long a device in Setup Assistant waits before polling again after a NotNow
  --not-now F           fraction of the users' devices in Setup Assistant at first, 0..1 (default 0.1): they
                        answer InviteToProgram with NotNow, then finish Setup Assistant and show the prompt
  --not-now-times R     how many NotNow answers such a device gives first (default 1-3)
  --self-service-interval MS
                        each device of a user polls Self Service (GET /selfservice/v1/invitations, identity
                        certificate as TLS client certificate) every MS milliseconds, +-20 % (default 5000;
                        0: off). A run that does not stay polls once at the end
  --accept-via MODE     http (default): the user opens the invitation URL and posts the Apple page's form,
                        as a browser; in-process: straight into the Apps and Books service this command
                        started (needs --apple-vpp start)
  The summary then adds what the users did: accepted, ignored, declined, wrong Apple ID, by channel (prompt =
  InviteToProgram, Self Service), time to accept p50/p99, devices prompted, NotNow answers. With --stay it is
  printed on Ctrl-C.

  -h, --help            show this help

Exit status: 0 when every device succeeded, 1 when any failed (or a user could not be created or assigned on
the server), 2 for bad options or setup.`;

const intString = (min: number, max: number) =>
  z
    .string()
    .regex(/^\d+$/, 'must be a whole number')
    .transform(Number)
    .pipe(z.number().int().min(min).max(max));

const httpUrl = z.string().refine((v) => {
  try {
    return ['https:', 'http:'].includes(new URL(v).protocol);
  } catch {
    return false;
  }
}, 'must be an http(s) URL');

const probability = z
  .string()
  .regex(/^\d*\.?\d+$/, 'must be a number between 0 and 1')
  .transform(Number)
  .pipe(z.number().min(0).max(1));

const range = (max: number) =>
  z.string().transform((v, ctx): IntRange => {
    const r = parseRange(v);
    if (r === null || r.max > max) {
      ctx.addIssue({ code: 'custom', message: `must be MIN-MAX or a number, whole, at most ${max}` });
      return z.NEVER;
    }
    return r;
  });

export const cliSchema = z.object({
  devices: intString(0, 1_000_000).default(10),
  macosShare: z
    .string()
    .regex(/^\d*\.?\d+$/, 'must be a number between 0 and 1')
    .transform(Number)
    .pipe(z.number().min(0).max(1))
    .default(0.4),
  server: httpUrl.default('https://localhost:8443'),
  dataDir: z.string().min(1).default('./data'),
  ca: z.string().min(1).optional(),
  adminToken: z.string().min(1).optional(),
  enrollUrl: httpUrl.optional(),
  stateDir: z.string().min(1).default('./.sim'),
  concurrency: intString(1, 10_000).default(16),
  connect: z.boolean().default(false),
  signature: z.enum(['sha256', 'sha1', 'none']).default('sha256'),
  tlsClientCert: z.boolean().default(false),
  seed: intString(0, 2 ** 32 - 1).optional(),
  timeout: intString(100, 600_000).default(30_000),
  json: z.boolean().default(false),
  stay: z.boolean().default(false),
  exit: z.boolean().default(false),
  apns: z.union([z.enum(['start', 'off']), httpUrl]).default('start'),
  apnsPort: intString(0, 65535).default(2197),
  appleVpp: z.enum(['start', 'off']).default('start'),
  vppPort: intString(0, 65535).default(8444),
  users: intString(0, 1_000_000).default(0),
  devicesPerUser: range(1000).default({ min: 1, max: 3 }),
  accept: probability.default(DEFAULT_PROBABILITIES.accept),
  ignore: probability.default(DEFAULT_PROBABILITIES.ignore),
  decline: probability.default(DEFAULT_PROBABILITIES.decline),
  wrongAppleId: probability.default(DEFAULT_PROBABILITIES.wrongAppleId),
  acceptDelay: range(3_600_000).default({ min: 200, max: 2000 }),
  notNow: probability.default(0.1),
  notNowTimes: range(100).default({ min: 1, max: 3 }),
  selfServiceInterval: intString(0, 86_400_000).default(5000),
  acceptVia: z.enum(['http', 'in-process']).default('http'),
  help: z.boolean().default(false),
});
export type CliOptions = z.infer<typeof cliSchema>;

export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

/** Parses and validates argv (without node and the script). Throws UsageError listing every problem. */
export function parseCli(argv: string[]): CliOptions {
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        devices: { type: 'string' },
        'macos-share': { type: 'string' },
        server: { type: 'string' },
        'data-dir': { type: 'string' },
        ca: { type: 'string' },
        'admin-token': { type: 'string' },
        'enroll-url': { type: 'string' },
        'state-dir': { type: 'string' },
        concurrency: { type: 'string' },
        connect: { type: 'boolean' },
        signature: { type: 'string' },
        'tls-client-cert': { type: 'boolean' },
        seed: { type: 'string' },
        timeout: { type: 'string' },
        json: { type: 'boolean' },
        stay: { type: 'boolean' },
        exit: { type: 'boolean' },
        apns: { type: 'string' },
        'apns-port': { type: 'string' },
        'apple-vpp': { type: 'string' },
        'vpp-port': { type: 'string' },
        users: { type: 'string' },
        'devices-per-user': { type: 'string' },
        accept: { type: 'string' },
        ignore: { type: 'string' },
        decline: { type: 'string' },
        'wrong-apple-id': { type: 'string' },
        'accept-delay': { type: 'string' },
        'not-now': { type: 'string' },
        'not-now-times': { type: 'string' },
        'self-service-interval': { type: 'string' },
        'accept-via': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  const camel = Object.fromEntries(
    Object.entries(values).map(([k, v]) => [k.replace(/-([a-z])/g, (_m, c: string) => c.toUpperCase()), v]),
  );
  const parsed = cliSchema.safeParse(camel);
  if (!parsed.success) {
    const flag = (p: PropertyKey[]) =>
      `--${String(p[0] ?? '').replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
    throw new UsageError(parsed.error.issues.map((i) => `${flag(i.path)}: ${i.message}`).join('\n'));
  }
  const o = parsed.data;
  if (o.signature === 'none' && !o.tlsClientCert) {
    throw new UsageError('--signature none: devices would send no identity; add --tls-client-cert');
  }
  const problems = probabilityProblems(o);
  if (o.notNowTimes.min < 1) problems.push('--not-now-times: at least 1');
  if (o.devicesPerUser.max < 1) problems.push('--devices-per-user: at least 1 device for some users');
  if (o.acceptVia === 'in-process' && o.appleVpp !== 'start') {
    problems.push(
      '--accept-via in-process: needs the Apps and Books service in this process (--apple-vpp start)',
    );
  }
  if (problems.length > 0) throw new UsageError(problems.join('\n'));
  return o;
}

export interface CliIo {
  stdout: ProgressStream;
  stderr: ProgressStream;
  cwd: string;
  /** resolves when the process is asked to stop (SIGINT/SIGTERM), for --stay */
  stopSignal?: () => Promise<void>;
}

async function readText(file: string, what: string, hint: string): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new UsageError(`cannot read ${what} ${file} (${code ?? (err as Error).message}); ${hint}`);
  }
}

const tokenAnswer = z.object({ enrollUrl: httpUrl });

/** Makes an enrollment token through the admin API and returns its enrollment URL. */
export async function createEnrollUrl(
  server: string,
  adminToken: string,
  ca: string,
  timeoutMs: number,
): Promise<string> {
  const res = await httpRequest({
    method: 'POST',
    url: `${server.replace(/\/+$/, '')}/api/v1/enrollment-tokens`,
    headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' },
    body: Buffer.from('{}'),
    ca,
    timeoutMs,
  });
  if (res.status !== 201) {
    throw new Error(
      `POST /api/v1/enrollment-tokens answered HTTP ${res.status}: ${res.body.toString('utf8').slice(0, 200)}`,
    );
  }
  let json: unknown;
  try {
    json = JSON.parse(res.body.toString('utf8'));
  } catch (err) {
    throw new Error('POST /api/v1/enrollment-tokens answered something that is not JSON', { cause: err });
  }
  const parsed = tokenAnswer.safeParse(json);
  if (!parsed.success) throw new Error('POST /api/v1/enrollment-tokens answered without an enrollUrl');
  return parsed.data.enrollUrl;
}

export interface RunResult {
  exitCode: number;
  summary: FleetSummary | null;
  /** what the simulated users did (null without --users) */
  users: UsersSummary | null;
}

/** The whole simulate command. Never throws for expected problems: they set the exit code. */
export async function runSimulator(argv: string[], io: CliIo): Promise<RunResult> {
  let o: CliOptions;
  try {
    o = parseCli(argv);
  } catch (err) {
    io.stderr.write(`${(err as Error).message}\n\n${USAGE}\n`);
    return { exitCode: 2, summary: null, users: null };
  }
  if (o.help) {
    io.stdout.write(`${USAGE}\n`);
    return { exitCode: 0, summary: null, users: null };
  }
  const dataDir = path.resolve(io.cwd, o.dataDir);
  const stateDir = path.resolve(io.cwd, o.stateDir);
  let ca: string;
  try {
    ca = await readText(
      o.ca ? path.resolve(io.cwd, o.ca) : path.join(dataDir, 'certs', 'ca.pem'),
      'the server CA',
      'start the server first (npm start) or pass --ca / --data-dir',
    );
  } catch (err) {
    io.stderr.write(`${(err as Error).message}\n`);
    return { exitCode: 2, summary: null, users: null };
  }

  const started = performance.now();
  const fleet = new Fleet({
    stateDir,
    ca,
    signature: o.signature,
    tlsClientCertificate: o.tlsClientCert,
    concurrency: o.concurrency,
    timeoutMs: o.timeout,
    ...(o.seed !== undefined ? { rng: seededRng(o.seed) } : {}),
  });
  const progress = new ProgressReporter(io.stderr);
  fleet.on('progress', (p) => progress.update(p));
  const stoppers: (() => Promise<void>)[] = [];
  let wakeups: PushWakeups | null = null;
  let population: UserPopulation | null = null;
  let adminToken: string | null = o.adminToken ?? null;
  const readAdminToken = async (): Promise<string> => {
    adminToken ??= (
      await readText(
        path.join(dataDir, 'admin-token'),
        'the admin token',
        'pass --admin-token, --data-dir or --enroll-url',
      )
    ).trim();
    return adminToken;
  };
  try {
    const pki = o.apns === 'start' || o.appleVpp === 'start' ? await readSimulatorPki(dataDir) : null;
    let gateway: ApnsGateway | null = null;
    let vppService: AppleVppService | null = null;
    if (pki && o.apns === 'start') {
      const started = await startGateway(pki, o.apnsPort);
      gateway = started.gateway;
      stoppers.push(() => started.gateway.stop());
      io.stderr.write(
        `APNs gateway: ${started.url} (the server's development default; elsewhere set MDM_APNS_URL=${started.url})\n`,
      );
    }
    if (pki && o.appleVpp === 'start') {
      const vpp = await startAppleVpp(pki, o.vppPort, stateDir);
      vppService = vpp.service;
      stoppers.push(() => vpp.service.stop());
      io.stderr.write(
        `Apps and Books service: ${vpp.url} (server default; elsewhere set MDM_VPP_URL=${vpp.url})\n` +
          `  service token of its demo location (POST /api/v1/locations): ${vpp.demoToken}\n`,
      );
    }
    const loaded = await fleet.load(o.devices);
    const created = await fleet.grow(o.devices, o.macosShare);
    io.stderr.write(`devices: ${loaded.length} loaded from ${stateDir}, ${created.length} new\n`);

    const toEnroll = fleet.devices.filter((d) => !d.enrolled);
    if (toEnroll.length > 0) {
      let enrollUrl = o.enrollUrl;
      if (enrollUrl === undefined) {
        enrollUrl = await createEnrollUrl(o.server, await readAdminToken(), ca, o.timeout);
      }
      await fleet.enrollAll(enrollUrl);
      progress.end();
    }
    let usersFailed = false;
    if (o.users > 0) {
      const actor: InvitationActor =
        o.acceptVia === 'in-process' && vppService
          ? new InProcessInvitationActor(vppService)
          : new HttpInvitationActor({
              ca: pki && pki.caPem !== ca ? [ca, pki.caPem] : ca,
              timeoutMs: o.timeout,
            });
      population = await startUsers(o, {
        stateDir,
        ca,
        actor,
        devices: fleet.devices,
        adminToken: readAdminToken,
        log: (line) => io.stderr.write(`${line}\n`),
        onFailures: () => {
          usersFailed = true;
        },
      });
    }
    if (o.apns !== 'off') {
      wakeups = new PushWakeups(fleet.devices, (err) =>
        io.stderr.write(`push wake-up: ${(err as Error).message}\n`),
      );
      if (gateway) wakeups.attachLocal(gateway);
      else await wakeups.attachRemote(o.apns, ca);
      io.stderr.write(
        `listening for pushes to ${wakeups.tokens.length} channels: devices connect when pushed\n`,
      );
    }
    if (o.connect) {
      await fleet.connectAll();
      progress.end();
    }
    const summary = fleet.summary();
    const staying = o.stay || (stoppers.length > 0 && !o.exit);
    let users: UsersSummary | null = null;
    if (population && !staying) {
      // a run that does not stay: one Self Service look, and the users finish what they started
      if (o.selfServiceInterval > 0) await population.pollAllOnce(o.concurrency);
      if (!(await population.settle(settleTimeout(o)))) io.stderr.write('users: some were still acting\n');
      await population.stop();
      users = population.summary();
    }
    io.stdout.write(
      o.json
        ? `${JSON.stringify(users ? { ...summary, users } : summary, null, 2)}\n`
        : `${formatSummary(summary, { wallMs: performance.now() - started })}\n` +
            (users ? `\n${formatUsersSummary(users)}\n` : ''),
    );
    if (staying) {
      io.stderr.write('staying up (Ctrl-C to stop)\n');
      await (io.stopSignal?.() ?? new Promise<void>(() => undefined));
      if (wakeups) io.stderr.write(`pushes: ${JSON.stringify(wakeups.stats)}\n`);
      if (population) {
        await population.stop();
        users = population.summary();
        io.stdout.write(
          o.json ? `${JSON.stringify({ users }, null, 2)}\n` : `\n${formatUsersSummary(users)}\n`,
        );
      }
    }
    const failed = summary.failures.length > 0 || usersFailed;
    return { exitCode: failed ? 1 : 0, summary, users };
  } catch (err) {
    progress.end();
    io.stderr.write(`${(err as Error).message}\n`);
    return { exitCode: err instanceof UsageError ? 2 : 1, summary: null, users: null };
  } finally {
    await population?.stop();
    await wakeups?.close();
    for (const stop of stoppers.reverse()) await stop().catch(() => undefined);
    fleet.close();
  }
}

/** How long a run that does not stay waits for its users to finish (a NotNow chain, then the accept). */
function settleTimeout(o: CliOptions): number {
  return (o.notNowTimes.max + 2) * o.acceptDelay.max + 2 * o.timeout;
}

interface StartUsersDeps {
  stateDir: string;
  ca: string;
  actor: InvitationActor;
  devices: readonly SimulatedDevice[];
  /** throws when there is none */
  adminToken: () => Promise<string>;
  log: (line: string) => void;
  onFailures: () => void;
}

/**
 * The users of the run: the user map dealt over the fleet, the users and assignments made on the server
 * (when an admin token is at hand), then each user started with their Self Service clients.
 */
async function startUsers(o: CliOptions, deps: StartUsersDeps): Promise<UserPopulation> {
  const population = await UserPopulation.load({
    stateDir: deps.stateDir,
    users: o.users,
    devicesPerUser: o.devicesPerUser,
    probabilities: { accept: o.accept, ignore: o.ignore, decline: o.decline, wrongAppleId: o.wrongAppleId },
    acceptDelayMs: o.acceptDelay,
    notNowShare: o.notNow,
    notNowTimes: o.notNowTimes,
    selfServiceIntervalMs: o.selfServiceInterval,
    actor: deps.actor,
    ca: deps.ca,
    timeoutMs: o.timeout,
    ...(o.seed !== undefined ? { rng: seededRng((o.seed ^ 0x5eed5eed) >>> 0) } : {}),
  });
  const dealt = await population.deal(deps.devices);
  deps.log(
    `users: ${dealt.users}, ${dealt.devicesAssigned} devices dealt (${formatRange(o.devicesPerUser)} each)` +
      (dealt.devicesUnassigned > 0 ? `, ${dealt.devicesUnassigned} without a user` : '') +
      (dealt.usersWithoutDevices > 0 ? `, ${dealt.usersWithoutDevices} users without a device` : ''),
  );
  let token: string | null = null;
  try {
    token = await deps.adminToken();
  } catch (err) {
    deps.log(`users: not created on the server (${(err as Error).message})`);
  }
  if (token !== null) {
    const admin = new AdminDirectoryClient({
      server: o.server,
      adminToken: token,
      ca: deps.ca,
      timeoutMs: o.timeout,
    });
    const r = await population.provision(admin, deps.devices, o.concurrency);
    deps.log(
      `users on the server: ${r.created} created, ${r.existing} already there; ${r.assigned} devices assigned` +
        (r.failures.length > 0 ? `; ${r.failures.length} failed, e.g. ${r.failures[0]}` : ''),
    );
    if (r.failures.length > 0) deps.onFailures();
  }
  await population.start(deps.devices);
  deps.log(
    `users: listening for prompts` +
      (o.selfServiceInterval > 0
        ? `, Self Service every ${o.selfServiceInterval} ms`
        : ', Self Service off') +
      `, accepting via ${o.acceptVia}`,
  );
  return population;
}
