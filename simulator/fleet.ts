/**
 * A fleet of simulated devices: created or loaded from a state directory, enrolled and connected with
 * bounded concurrency over one shared keep-alive connection pool, with counts and latencies collected.
 */
import { EventEmitter } from 'node:events';
import https from 'node:https';
import { randomSpec } from './device/device-spec.ts';
import type { DeviceSpec, Platform, RandomSpecOptions, Rng } from './device/device-spec.ts';
import { listStates } from './device/device-state.ts';
import { DeviceRequestError, SimulatedDevice } from './device/sim-device.ts';
import type { ChannelName, DeviceEvent, SignatureMode, SimulatedDeviceOptions } from './device/sim-device.ts';
import type { CommandHandler } from './device/command-handlers.ts';
import { OperationStats } from './load/stats.ts';
import type { OperationSummary } from './load/stats.ts';

export interface FleetOptions {
  /** where device states are kept; null: in memory only */
  stateDir: string | null;
  /** CA certificate(s) (PEM) the devices trust for the server */
  ca: string | string[];
  signature?: SignatureMode;
  tlsClientCertificate?: boolean;
  /** operations in flight at once (default 16) */
  concurrency?: number;
  timeoutMs?: number;
  handlers?: ReadonlyMap<string, CommandHandler>;
  rng?: Rng;
}

export type FleetPhase = 'load' | 'create' | 'enroll' | 'connect';

export interface FleetProgress {
  phase: FleetPhase;
  done: number;
  failed: number;
  total: number;
}

export interface FleetFailure {
  udid: string;
  operation: 'enroll' | 'connect';
  channel?: ChannelName;
  reason: string;
}

export interface PhaseResult {
  attempted: number;
  ok: number;
  failed: number;
  wallMs: number;
}

export interface FleetSummary {
  devices: number;
  byPlatform: Record<Platform, number>;
  enrolled: number;
  enroll: OperationSummary;
  connect: OperationSummary;
  /** commands handled, by RequestType and status */
  commands: Record<string, Record<string, number>>;
  failures: FleetFailure[];
}

/** Runs `fn` over `items` with at most `concurrency` in flight; never rejects (fn handles its errors). */
export async function runPool<T>(
  items: readonly T[],
  concurrency: number,
  fn: (item: T) => Promise<void>,
): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const item = items[next++] as T;
      await fn(item);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(concurrency, items.length)) }, worker));
}

/** A short, groupable reason for a failure (no UDIDs or tokens in it). */
export function failureReason(err: unknown): string {
  if (err instanceof DeviceRequestError) {
    const text = err.responseText.split('\n')[0]?.trim().slice(0, 120) ?? '';
    return err.status === 0
      ? `${err.operation}: ${text}`
      : `${err.operation}: HTTP ${err.status}${text ? ` ${text}` : ''}`;
  }
  if (err instanceof Error) return `${err.name}: ${err.message.slice(0, 160)}`;
  return String(err);
}

export class Fleet extends EventEmitter<{ progress: [FleetProgress]; device: [DeviceEvent] }> {
  readonly devices: SimulatedDevice[] = [];
  readonly enrollStats = new OperationStats();
  readonly connectStats = new OperationStats();
  readonly failures: FleetFailure[] = [];
  private readonly commands = new Map<string, Map<string, number>>();
  private readonly agent: https.Agent;
  private readonly concurrency: number;

  constructor(private readonly options: FleetOptions) {
    super();
    this.concurrency = options.concurrency ?? 16;
    this.agent = new https.Agent({
      keepAlive: true,
      maxSockets: Math.max(4, this.concurrency * 2),
      maxFreeSockets: Math.max(4, this.concurrency * 2),
      ca: options.ca,
    });
  }

  private deviceOptions(): SimulatedDeviceOptions {
    const o = this.options;
    return {
      stateDir: o.stateDir,
      ca: o.ca,
      agent: this.agent,
      ...(o.signature ? { signature: o.signature } : {}),
      ...(o.tlsClientCertificate ? { tlsClientCertificate: true } : {}),
      ...(o.timeoutMs ? { timeoutMs: o.timeoutMs } : {}),
      ...(o.handlers ? { handlers: o.handlers } : {}),
    };
  }

  private adopt(device: SimulatedDevice): SimulatedDevice {
    device.on('event', (e) => {
      if (e.type === 'result') {
        const byStatus = this.commands.get(e.requestType) ?? new Map<string, number>();
        byStatus.set(e.status, (byStatus.get(e.status) ?? 0) + 1);
        this.commands.set(e.requestType, byStatus);
      }
      this.emit('device', e);
    });
    this.devices.push(device);
    return device;
  }

  /**
   * Loads the devices saved in the state directory (at most `limit`, in UDID order). Unreadable states are
   * reported as failures and skipped.
   */
  async load(limit = Number.POSITIVE_INFINITY): Promise<SimulatedDevice[]> {
    const dir = this.options.stateDir;
    if (dir === null) return [];
    const known = new Set(this.devices.map((d) => d.udid));
    const udids = (await listStates(dir)).filter((u) => !known.has(u)).slice(0, Math.max(0, limit));
    const loaded: SimulatedDevice[] = [];
    let done = 0;
    let failed = 0;
    if (udids.length > 0) this.emit('progress', { phase: 'load', done, failed, total: udids.length });
    await runPool(udids, this.concurrency * 4, async (udid) => {
      try {
        loaded.push(await SimulatedDevice.load(udid, this.deviceOptions()));
        done++;
      } catch (err) {
        failed++;
        this.failures.push({ udid, operation: 'enroll', reason: `state: ${failureReason(err)}` });
      }
      this.emit('progress', { phase: 'load', done, failed, total: udids.length });
    });
    loaded.sort((a, b) => a.udid.localeCompare(b.udid));
    return loaded.map((d) => this.adopt(d));
  }

  /** Adds one new device with the given spec. */
  async add(spec: DeviceSpec): Promise<SimulatedDevice> {
    return this.adopt(await SimulatedDevice.create(spec, this.deviceOptions()));
  }

  /**
   * Adds new devices until the fleet has `count`: about `macosShare` of all of them Macs (with a console
   * user), the rest iPhones and iPads (3:1).
   */
  async grow(
    count: number,
    macosShare: number,
    specOptions: RandomSpecOptions = {},
  ): Promise<SimulatedDevice[]> {
    const rng = this.options.rng ?? Math.random;
    const missing = count - this.devices.length;
    if (missing <= 0) return [];
    const macTarget = Math.round(count * macosShare);
    let macs = this.devices.filter((d) => d.spec.platform === 'macos').length;
    const kinds: Platform[] = [];
    for (let i = 0; i < missing; i++) {
      const remaining = missing - i;
      const macsNeeded = Math.max(0, macTarget - macs);
      if (macsNeeded >= remaining || (macsNeeded > 0 && rng() < macsNeeded / remaining)) {
        kinds.push('macos');
        macs++;
      } else {
        kinds.push(rng() < 0.75 ? 'ios' : 'ipados');
      }
    }
    const specs = kinds.map((kind) => randomSpec(kind, rng, specOptions));
    const created: SimulatedDevice[] = new Array<SimulatedDevice>(specs.length);
    let done = 0;
    this.emit('progress', { phase: 'create', done, failed: 0, total: specs.length });
    await runPool(
      specs.map((spec, i) => ({ spec, i })),
      this.concurrency * 4,
      async ({ spec, i }) => {
        created[i] = await SimulatedDevice.create(spec, this.deviceOptions());
        done++;
        this.emit('progress', { phase: 'create', done, failed: 0, total: specs.length });
      },
    );
    return created.map((d) => this.adopt(d));
  }

  /** Enrolls the devices that are not enrolled yet (or the given ones). */
  async enrollAll(
    enrollUrl: string,
    devices: readonly SimulatedDevice[] = this.devices,
  ): Promise<PhaseResult> {
    const todo = devices.filter((d) => !d.enrolled);
    const started = performance.now();
    let done = 0;
    let failed = 0;
    this.emit('progress', { phase: 'enroll', done, failed, total: todo.length });
    await runPool(todo, this.concurrency, async (device) => {
      const t0 = performance.now();
      try {
        await device.enroll(enrollUrl);
        this.enrollStats.record(t0, performance.now() - t0);
        done++;
      } catch (err) {
        const reason = failureReason(err);
        this.enrollStats.fail(reason, t0, performance.now() - t0);
        this.failures.push({ udid: device.udid, operation: 'enroll', reason });
        failed++;
      }
      this.emit('progress', { phase: 'enroll', done, failed, total: todo.length });
    });
    return { attempted: todo.length, ok: done, failed, wallMs: performance.now() - started };
  }

  /** One connect (command loop) on every enrolled channel of every enrolled device (or the given ones). */
  async connectAll(devices: readonly SimulatedDevice[] = this.devices): Promise<PhaseResult> {
    const todo: Array<{ device: SimulatedDevice; channel: ChannelName }> = [];
    for (const device of devices) {
      if (!device.enrolled) continue;
      for (const channel of device.channels) todo.push({ device, channel });
    }
    const started = performance.now();
    let done = 0;
    let failed = 0;
    this.emit('progress', { phase: 'connect', done, failed, total: todo.length });
    await runPool(todo, this.concurrency, async ({ device, channel }) => {
      const t0 = performance.now();
      try {
        await device.connect(channel);
        this.connectStats.record(t0, performance.now() - t0);
        done++;
      } catch (err) {
        const reason = failureReason(err);
        this.connectStats.fail(reason, t0, performance.now() - t0);
        this.failures.push({ udid: device.udid, operation: 'connect', channel, reason });
        failed++;
      }
      this.emit('progress', { phase: 'connect', done, failed, total: todo.length });
    });
    return { attempted: todo.length, ok: done, failed, wallMs: performance.now() - started };
  }

  byPlatform(): Record<Platform, number> {
    const out: Record<Platform, number> = { macos: 0, ios: 0, ipados: 0 };
    for (const d of this.devices) out[d.spec.platform]++;
    return out;
  }

  summary(): FleetSummary {
    const commands: Record<string, Record<string, number>> = {};
    for (const [type, byStatus] of this.commands) commands[type] = Object.fromEntries(byStatus);
    return {
      devices: this.devices.length,
      byPlatform: this.byPlatform(),
      enrolled: this.devices.filter((d) => d.enrolled).length,
      enroll: this.enrollStats.summary(),
      connect: this.connectStats.summary(),
      commands,
      failures: [...this.failures],
    };
  }

  close(): void {
    for (const d of this.devices) d.close();
    this.agent.destroy();
  }
}
