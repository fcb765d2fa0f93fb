import type { Logger } from '../log.ts';
import type { DeviceStore } from './store.ts';

/**
 * Collects "device seen" marks and writes them in one statement per interval, so that `lastSeenAt`
 * never contends with queue writes on the request path.
 */
export class SeenBatcher {
  private pending = new Set<string>();
  private timer: NodeJS.Timeout | null = null;
  private flushing: Promise<void> = Promise.resolve();

  constructor(
    private readonly devices: DeviceStore,
    private readonly log: Logger,
    private readonly intervalMs = 2000,
  ) {}

  start(): void {
    this.timer ??= setInterval(() => void this.flush(), this.intervalMs);
    this.timer.unref();
  }

  seen(udid: string): void {
    this.pending.add(udid);
  }

  async flush(): Promise<void> {
    if (this.pending.size === 0) return this.flushing;
    const udids = [...this.pending];
    this.pending = new Set();
    this.flushing = this.flushing
      .then(() => this.devices.touch(udids, new Date()))
      .catch((err: unknown) => this.log.warn({ err }, 'could not record lastSeenAt'));
    return this.flushing;
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.flush();
  }
}
