import type { AuthenticateMessage, CheckinMessage, TokenUpdateMessage } from '../../shared/mdm/index.ts';
import { resolveEnrollment } from '../../shared/mdm/index.ts';
import { AppError } from '../errors.ts';
import type { EventBus } from '../events.ts';
import type { Logger } from '../log.ts';
import type { DeviceIdentity } from '../transport/device-identity.ts';
import { DeviceAuthError } from '../transport/device-identity.ts';
import { platformOf } from './platform.ts';
import type { Device, DeviceStore } from './store.ts';

export interface CheckinAnswer {
  status: number;
  body?: string;
}

/** Unsupported check-in messages: we advertise no capability that makes devices send them. */
export class UnsupportedCheckinError extends AppError {
  constructor(messageType: string) {
    super(400, 'unsupported_message_type', `check-in message ${messageType} is not supported`);
  }
}

/** Handles `PUT /mdm/checkin` messages once the body is parsed and the sender identified. */
export class CheckinService {
  constructor(
    private readonly deps: { devices: DeviceStore; events: EventBus; log: Logger; now?: () => Date },
  ) {}

  private now(): Date {
    return this.deps.now?.() ?? new Date();
  }

  async handle(msg: CheckinMessage, identity: DeviceIdentity): Promise<CheckinAnswer> {
    switch (msg.MessageType) {
      case 'Authenticate':
        return this.authenticate(msg, identity);
      case 'TokenUpdate':
        return this.tokenUpdate(msg, identity);
      case 'CheckOut': {
        const ref = resolveEnrollment(msg);
        await this.requireBoundDevice(ref.deviceId, identity);
        await this.deps.devices.checkOut(ref.deviceId, this.now());
        this.deps.log.info({ udid: ref.deviceId }, 'device checked out');
        this.deps.events.emit('device.checked_out', { udid: ref.deviceId });
        return { status: 200 };
      }
      case 'UserAuthenticate': {
        const ref = resolveEnrollment(msg);
        await this.requireBoundDevice(ref.deviceId, identity);
        return { status: 410 };
      }
      default:
        throw new UnsupportedCheckinError(msg.MessageType);
    }
  }

  private async authenticate(msg: AuthenticateMessage, identity: DeviceIdentity): Promise<CheckinAnswer> {
    const ref = resolveEnrollment(msg);
    if (ref.channel !== 'device' && ref.channel !== 'user_enrollment_device') {
      throw new AppError(400, 'invalid_message', 'Authenticate comes from the device channel only');
    }
    const holder = await this.deps.devices.findDeviceByCert(identity.fingerprint);
    if (holder && holder.udid !== ref.deviceId) {
      throw new DeviceAuthError(
        'this identity certificate is bound to another device',
        'certificate_bound_elsewhere',
      );
    }
    const device = await this.deps.devices.authenticate(
      {
        udid: ref.deviceId,
        platform: platformOf(msg),
        osVersion: msg.OSVersion ?? null,
        buildVersion: msg.BuildVersion ?? null,
        model: msg.Model ?? msg.ProductName ?? null,
        productName: msg.ProductName ?? null,
        serialNumber: msg.SerialNumber ?? null,
        deviceName: msg.DeviceName ?? null,
        userEnrollment: ref.channel === 'user_enrollment_device',
        topic: msg.Topic,
        certFingerprint: identity.fingerprint,
      },
      this.now(),
    );
    this.deps.log.info({ udid: device.udid, platform: device.platform }, 'device authenticated');
    this.deps.events.emit('device.authenticated', { udid: device.udid });
    return { status: 200 };
  }

  private async tokenUpdate(msg: TokenUpdateMessage, identity: DeviceIdentity): Promise<CheckinAnswer> {
    const ref = resolveEnrollment(msg);
    await this.requireBoundDevice(ref.deviceId, identity);
    const { firstForDevice, enrollment } = await this.deps.devices.tokenUpdate(
      {
        enrollmentId: ref.id,
        udid: ref.deviceId,
        channel: ref.channel,
        appleUserId: msg.UserID ?? null,
        userShortName: msg.UserShortName ?? null,
        userLongName: msg.UserLongName ?? null,
        topic: msg.Topic ?? null,
        pushToken: Buffer.from(msg.Token).toString('hex'),
        pushMagic: msg.PushMagic,
        unlockToken: msg.UnlockToken ?? null,
      },
      this.now(),
    );
    this.deps.log.info(
      { udid: ref.deviceId, enrollmentId: enrollment.id, first: firstForDevice },
      'token update',
    );
    this.deps.events.emit('enrollment.token_updated', {
      enrollmentId: enrollment.id,
      udid: ref.deviceId,
      first: firstForDevice,
    });
    if (firstForDevice) this.deps.events.emit('device.enrolled', { udid: ref.deviceId });
    return { status: 200 };
  }

  /** Every message after Authenticate must come with the certificate bound to that device. */
  async requireBoundDevice(udid: string, identity: DeviceIdentity): Promise<Device> {
    const device = await this.deps.devices.getDevice(udid);
    if (!device || device.certFingerprint === null) {
      throw new DeviceAuthError('unknown device: Authenticate first', 'unknown_device');
    }
    if (device.certFingerprint !== identity.fingerprint) {
      throw new DeviceAuthError(
        'identity certificate is not the one bound to this device',
        'certificate_mismatch',
      );
    }
    return device;
  }
}
