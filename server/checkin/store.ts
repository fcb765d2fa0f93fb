import type { ChannelType } from '../../shared/mdm/index.ts';

export type Platform = 'macos' | 'ios' | 'ipados';

/** A device as known from its Authenticate on. `udid` is the UDID, or the EnrollmentID for User Enrollment. */
export interface Device {
  udid: string;
  platform: Platform;
  osVersion: string | null;
  buildVersion: string | null;
  model: string | null; // macOS `Model`, iOS `ProductName`
  productName: string | null;
  serialNumber: string | null;
  deviceName: string | null;
  userEnrollment: boolean;
  enrolled: boolean;
  enrolledAt: Date | null;
  checkedOutAt: Date | null;
  lastSeenAt: Date | null;
  userId: string | null; // the directory user the device is assigned to (admin)
  certFingerprint: string | null; // SHA-256 hex of the identity certificate bound at Authenticate
  createdAt: Date;
  updatedAt: Date;
}

/** One MDM channel of a device: the device channel (id = UDID) or a user channel. */
export interface Enrollment {
  id: string;
  udid: string;
  channel: ChannelType;
  appleUserId: string | null; // Apple's UserID (user channels)
  userShortName: string | null;
  userLongName: string | null;
  topic: string | null;
  pushToken: string | null; // lowercase hex
  pushMagic: string | null;
  unlockToken: Uint8Array | null;
  enabled: boolean; // true from the first TokenUpdate until CheckOut / re-Authenticate
  pushTokenDead: boolean;
  tokenUpdatedAt: Date | null;
  createdAt: Date;
  updatedAt: Date;
}

export interface AuthenticateInput {
  udid: string;
  platform: Platform;
  osVersion: string | null;
  buildVersion: string | null;
  model: string | null;
  productName: string | null;
  serialNumber: string | null;
  deviceName: string | null;
  userEnrollment: boolean;
  topic: string | null;
  certFingerprint: string;
}

export interface TokenUpdateInput {
  enrollmentId: string;
  udid: string;
  channel: ChannelType;
  appleUserId: string | null;
  userShortName: string | null;
  userLongName: string | null;
  topic: string | null;
  pushToken: string;
  pushMagic: string;
  unlockToken: Uint8Array | null;
}

export interface DeviceStore {
  getDevice(udid: string): Promise<Device | null>;
  findDeviceByCert(fingerprint: string): Promise<Device | null>;
  /**
   * Authenticate: creates or updates the device, binds the certificate, marks it not enrolled, disables
   * all its enrollments and clears their command queues (all in one transaction).
   */
  authenticate(input: AuthenticateInput, now: Date): Promise<Device>;
  /** TokenUpdate: upserts the enrollment, enables it and (first time) marks the device enrolled. Returns whether this was the first for the device. */
  tokenUpdate(
    input: TokenUpdateInput,
    now: Date,
  ): Promise<{ firstForDevice: boolean; enrollment: Enrollment }>;
  /** CheckOut: disables every enrollment of the device and marks it not enrolled. */
  checkOut(udid: string, now: Date): Promise<void>;
  getEnrollment(id: string): Promise<Enrollment | null>;
  listEnrollments(udid: string): Promise<Enrollment[]>;
  /** Batched: records that these devices were seen at `now` (kept apart from queue writes). */
  touch(udids: string[], now: Date): Promise<void>;
  /** `siteId`: only devices whose assigned user belongs to that site (a site-limited API token's list). */
  listDevices(opts: {
    limit: number;
    cursor: string | null;
    q: string | null;
    siteId?: string | null;
  }): Promise<{ items: Device[]; nextCursor: string | null }>;
  assignUser(udid: string, userId: string | null): Promise<Device | null>;
}
