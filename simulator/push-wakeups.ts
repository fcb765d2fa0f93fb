/**
 * Devices never poll: a push to one of a device's tokens makes that channel connect. The fleet's tokens
 * are subscribed at an APNs gateway, in this process (`attachLocal`) or in another one over its event
 * stream (`attachRemote`).
 */
import type { ApnsGateway, ApnsPush } from './apns/index.ts';
import { subscribeRemote } from './apns/index.ts';
import type { ChannelName, SimulatedDevice } from './device/sim-device.ts';

export interface WakeupStats {
  pushes: number;
  connects: number;
  failures: number;
  commands: number;
}

export class PushWakeups {
  private readonly byToken = new Map<string, { device: SimulatedDevice; channel: ChannelName }>();
  private readonly closers: (() => Promise<void> | void)[] = [];
  readonly stats: WakeupStats = { pushes: 0, connects: 0, failures: 0, commands: 0 };

  constructor(
    devices: readonly SimulatedDevice[],
    private readonly onError: (err: unknown, device: SimulatedDevice) => void = () => undefined,
  ) {
    for (const device of devices) this.add(device);
  }

  /** Registers every enrolled channel of a device (call again after it enrolls). */
  add(device: SimulatedDevice): string[] {
    if (!device.enrolled) return [];
    const tokens: string[] = [];
    for (const channel of device.channels) {
      const { token } = device.pushInfo(channel);
      this.byToken.set(token, { device, channel });
      tokens.push(token);
    }
    return tokens;
  }

  get tokens(): string[] {
    return [...this.byToken.keys()];
  }

  /** A push arrived: the channel connects and runs its command loop. */
  readonly onPush = (push: ApnsPush): void => {
    this.stats.pushes++;
    const target = this.byToken.get(push.token);
    if (!target) return;
    target.device.connect(target.channel).then(
      (r) => {
        this.stats.connects++;
        this.stats.commands += r.commands.length;
      },
      (err: unknown) => {
        this.stats.failures++;
        this.onError(err, target.device);
      },
    );
  };

  attachLocal(gateway: ApnsGateway): void {
    for (const token of this.byToken.keys()) this.closers.push(gateway.subscribe(token, this.onPush));
  }

  async attachRemote(url: string, ca: string): Promise<void> {
    const sub = subscribeRemote(url, this.tokens, this.onPush, { ca });
    this.closers.push(() => sub.close());
    await sub.ready;
  }

  async close(): Promise<void> {
    await Promise.all(this.closers.splice(0).map((c) => c()));
  }
}
