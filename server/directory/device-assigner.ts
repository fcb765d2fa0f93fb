import type { Device, DeviceStore } from '../checkin/store.ts';
import { NotFoundError } from '../errors.ts';
import type { EventBus } from '../events.ts';
import type { Logger } from '../log.ts';
import { UnknownIdsError } from './errors.ts';
import type { DeviceAssignmentStore, UserStore } from './store.ts';

/**
 * Assigns devices to directory users: by the admin (`PUT /devices/{udid}/user`), and automatically
 * when a Mac's user channel checks in with a `UserShortName` equal to a known username while the
 * device has no user yet.
 */
export class DeviceAssigner {
  constructor(
    private readonly deps: {
      devices: Pick<DeviceStore, 'getDevice' | 'getEnrollment'>;
      users: Pick<UserStore, 'findByUsername'>;
      assignments: DeviceAssignmentStore;
      log: Logger;
      /** `device.assigned` is emitted after each assignment */
      events?: Pick<EventBus, 'emit'>;
      now?: () => Date;
    },
  ) {}

  private now(): Date {
    return this.deps.now?.() ?? new Date();
  }

  /** Assigns the device to the user, or unassigns it (`null`). Unknown device: 404; unknown user: 400. */
  async assign(udid: string, userId: string | null): Promise<Device> {
    const result = await this.deps.assignments.assign(udid, userId, { onlyIfUnassigned: false }, this.now());
    if (result === 'device_not_found') throw new NotFoundError('device');
    if (result === 'user_not_found') throw new UnknownIdsError({ userId: [userId ?? ''] });
    const device = await this.deps.devices.getDevice(udid);
    if (!device) throw new NotFoundError('device');
    this.deps.events?.emit('device.assigned', { udid, userId: device.userId });
    return device;
  }

  /**
   * After a TokenUpdate: a macOS user channel whose short name is a known username assigns the device
   * to that user, unless the device already has one. Returns the user id it assigned, else null.
   */
  async onTokenUpdated(event: { enrollmentId: string; udid: string }): Promise<string | null> {
    if (event.enrollmentId === event.udid) return null; // a device channel: no query
    const enrollment = await this.deps.devices.getEnrollment(event.enrollmentId);
    if (!enrollment || enrollment.channel !== 'user' || !enrollment.userShortName) return null;
    const device = await this.deps.devices.getDevice(enrollment.udid);
    if (!device || device.platform !== 'macos' || device.userId !== null) return null;
    const user = await this.deps.users.findByUsername(enrollment.userShortName);
    if (!user) return null;
    const result = await this.deps.assignments.assign(
      device.udid,
      user.id,
      { onlyIfUnassigned: true },
      this.now(),
    );
    if (result !== 'assigned') return null;
    this.deps.log.info({ udid: device.udid, userId: user.id }, 'device assigned by macOS user short name');
    this.deps.events?.emit('device.assigned', { udid: device.udid, userId: user.id });
    return user.id;
  }

  /** Subscribes `onTokenUpdated` to the events (the composition root calls this once). */
  listen(events: EventBus): () => void {
    return events.on('enrollment.token_updated', (event) => {
      this.onTokenUpdated(event).catch((err: unknown) =>
        this.deps.log.error({ err, udid: event.udid }, 'assigning the device by user short name failed'),
      );
    });
  }
}
