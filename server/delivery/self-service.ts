/**
 * Self Service on a device: the invitations of the device's assigned user (both device methods), and
 * the user tapping one. The device is the one whose enrollment identity certificate the request
 * presents (bound at Authenticate); anything else is refused with 403 (never 401).
 */
import type { Device, DeviceStore } from '../checkin/store.ts';
import { NotFoundError } from '../errors.ts';
import type { UsageReport, UsageReporter } from '../invitations/channels.ts';
import type { Logger } from '../log.ts';
import { DeviceAuthError, type DeviceIdentity } from '../transport/device-identity.ts';
import { deviceLabel } from './eligibility.ts';
import type { DeliveryStore, SelfServiceItem } from './store.ts';

export interface SelfServiceInvitation {
  id: string;
  invitationId: string;
  name: string;
  locationName: string;
  status: 'pending' | 'registered';
  invitationUrl: string;
}

export function presentSelfServiceItem(item: SelfServiceItem): SelfServiceInvitation {
  return {
    id: item.usageId,
    invitationId: item.invitationId,
    name: item.invitationName,
    locationName: item.locationName,
    status: item.registered ? 'registered' : 'pending',
    invitationUrl: item.invitationUrl,
  };
}

export class SelfService {
  constructor(
    private readonly deps: {
      devices: Pick<DeviceStore, 'findDeviceByCert'>;
      store: Pick<DeliveryStore, 'selfServiceItems' | 'selfServiceItem'>;
      reporter: UsageReporter;
      log: Logger;
      now?: () => Date;
    },
  ) {}

  private now(): Date {
    return this.deps.now?.() ?? new Date();
  }

  /** The device that holds this identity (enrolled); 403 otherwise. */
  async device(identity: DeviceIdentity): Promise<Device> {
    const device = await this.deps.devices.findDeviceByCert(identity.fingerprint);
    if (!device)
      throw new DeviceAuthError('this certificate belongs to no enrolled device', 'unknown_device');
    if (!device.enrolled) throw new DeviceAuthError('the device is not enrolled', 'device_not_enrolled');
    return device;
  }

  /**
   * The pending and registered invitations of the device's user (none without a user). Listing one that
   * was not sent yet (or skipped for want of a device it could be sent to) makes it `sent`.
   */
  async list(identity: DeviceIdentity): Promise<SelfServiceInvitation[]> {
    const device = await this.device(identity);
    if (device.userId === null) return [];
    const items = await this.deps.store.selfServiceItems(device.userId);
    const now = this.now();
    const lastAction = `Listed in Self Service on ${deviceLabel(device)}`;
    const reports: UsageReport[] = items
      .filter((i) => !i.registered && (i.status === 'pending' || i.status === 'skipped'))
      .map((i) => ({ usageId: i.usageId, status: 'sent', lastAction, at: now }));
    if (reports.length > 0) await this.deps.reporter.report(reports);
    return items.map(presentSelfServiceItem);
  }

  /** The user taps the invitation: `acknowledged` (unless registered); the URL to open. 404 for another user's. */
  async accept(identity: DeviceIdentity, usageId: string): Promise<{ invitationUrl: string }> {
    const device = await this.device(identity);
    const item = device.userId === null ? null : await this.deps.store.selfServiceItem(usageId);
    if (!item || item.userId !== device.userId) throw new NotFoundError('invitation');
    if (!item.registered) {
      await this.deps.reporter.report([
        {
          usageId: item.usageId,
          status: 'acknowledged',
          lastAction: `Tapped in Self Service on ${deviceLabel(device)}`,
          at: this.now(),
        },
      ]);
    }
    this.deps.log.info({ udid: device.udid, usageId: item.usageId }, 'invitation tapped in Self Service');
    return { invitationUrl: item.invitationUrl };
  }
}
