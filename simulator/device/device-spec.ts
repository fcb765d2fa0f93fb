/**
 * What a simulated device is: the hardware and OS facts it reports (Apple's values, realistic shapes) and
 * the few behaviours the simulation needs (console user, User Enrollment, Setup Assistant, store account).
 */
import { z } from 'zod';
import { SHARED_IPAD_USER_ID } from '../../shared/mdm/index.ts';

export const PLATFORMS = ['macos', 'ios', 'ipados'] as const;
export type Platform = (typeof PLATFORMS)[number];

const uuidUpper = z.string().regex(/^[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}$/);

export const consoleUserSchema = z.object({
  /** the macOS user's GeneratedUID (`UserID` in check-in messages) */
  userId: uuidUpper,
  shortName: z.string().min(1).max(255),
  longName: z.string().min(1).max(255),
});
export type ConsoleUser = z.infer<typeof consoleUserSchema>;

export const storeAccountSchema = z.object({
  /** `iTunesStoreAccountIsActive` */
  active: z.boolean(),
  /** `iTunesStoreAccountHash`, when an account is signed in */
  appleIdHash: z.string().min(1).optional(),
});
export type StoreAccount = z.infer<typeof storeAccountSchema>;

export const deviceSpecSchema = z.object({
  /** Hardware UDID: `00008110-001A2B3C4D5E6F70` (iOS, 8-16 hex) or an uppercase UUID (macOS). */
  udid: z.string().regex(/^[0-9A-Fa-f-]{24,64}$/),
  platform: z.enum(PLATFORMS),
  osVersion: z.string().regex(/^\d+(\.\d+){0,2}$/),
  buildVersion: z.string().regex(/^[0-9A-Za-z]{4,12}$/),
  /** `ProductName`, e.g. `iPhone14,2`, `iPad13,1`, `MacBookPro18,3` */
  productName: z.string().min(1),
  /** macOS `Model` (same as ProductName on Macs) */
  model: z.string().min(1).optional(),
  /** macOS `ModelName`, e.g. `MacBook Pro` */
  modelName: z.string().min(1).optional(),
  serialNumber: z.string().regex(/^[0-9A-Z]{8,14}$/),
  deviceName: z.string().min(1),
  /**
   * macOS: the user logged in at the console; Shared iPad: the signed-in user, with `userId` =
   * SHARED_IPAD_USER_ID and `shortName` their Managed Apple ID. Either gets a user channel.
   */
  consoleUser: consoleUserSchema.optional(),
  /** User Enrollment (BYOD): the device reports `EnrollmentID`/`EnrollmentUserID` instead of its UDID */
  userEnrollment: z.boolean().optional(),
  /** the anonymous IDs a User Enrollment reports; made on first use when absent */
  enrollmentId: z.string().min(1).optional(),
  enrollmentUserId: z.string().min(1).optional(),
  /** while true the device answers NotNow to commands that need a user (InviteToProgram) */
  setupAssistant: z.boolean().optional(),
  storeAccount: storeAccountSchema,
});
export type DeviceSpec = z.infer<typeof deviceSpecSchema>;

/** A source of numbers in [0, 1), like Math.random. */
export type Rng = () => number;

/** A small deterministic generator (mulberry32) for reproducible fleets and tests. */
export function seededRng(seed: number): Rng {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function pick<T>(rng: Rng, items: readonly T[]): T {
  const item = items[Math.floor(rng() * items.length)];
  if (item === undefined) throw new RangeError('pick from an empty list');
  return item;
}

function chars(rng: Rng, alphabet: string, n: number): string {
  let out = '';
  for (let i = 0; i < n; i++) out += alphabet[Math.floor(rng() * alphabet.length)] ?? alphabet[0];
  return out;
}

const HEX = '0123456789ABCDEF';
/** Apple serial numbers avoid O and I */
const SERIAL = '0123456789ABCDEFGHJKLMNPQRSTUVWXYZ';

function uuid(rng: Rng): string {
  const h = chars(rng, HEX, 32).split('');
  h[12] = '4';
  h[16] = HEX[8 + Math.floor(rng() * 4)] ?? '8';
  const s = h.join('');
  return `${s.slice(0, 8)}-${s.slice(8, 12)}-${s.slice(12, 16)}-${s.slice(16, 20)}-${s.slice(20)}`;
}

interface Hardware {
  productName: string;
  /** chip id: the first part of a modern iOS UDID */
  chip?: string;
  modelName: string;
}

const IPHONES: readonly Hardware[] = [
  { productName: 'iPhone12,1', chip: '00008030', modelName: 'iPhone' },
  { productName: 'iPhone13,2', chip: '00008101', modelName: 'iPhone' },
  { productName: 'iPhone14,2', chip: '00008110', modelName: 'iPhone' },
  { productName: 'iPhone14,5', chip: '00008110', modelName: 'iPhone' },
  { productName: 'iPhone15,2', chip: '00008120', modelName: 'iPhone' },
  { productName: 'iPhone16,1', chip: '00008130', modelName: 'iPhone' },
];

const IPADS: readonly Hardware[] = [
  { productName: 'iPad13,1', chip: '00008101', modelName: 'iPad' },
  { productName: 'iPad13,18', chip: '00008101', modelName: 'iPad' },
  { productName: 'iPad14,1', chip: '00008110', modelName: 'iPad' },
  { productName: 'iPad13,8', chip: '00008103', modelName: 'iPad' },
];

const MACS: readonly Hardware[] = [
  { productName: 'MacBookPro18,3', modelName: 'MacBook Pro' },
  { productName: 'MacBookAir10,1', modelName: 'MacBook Air' },
  { productName: 'Mac14,2', modelName: 'MacBook Air' },
  { productName: 'Mac14,3', modelName: 'Mac mini' },
  { productName: 'Mac15,3', modelName: 'MacBook Pro' },
  { productName: 'iMac21,1', modelName: 'iMac' },
];

const IOS_VERSIONS: ReadonlyArray<readonly [string, string]> = [
  ['16.7.8', '20H343'],
  ['17.4.1', '21E236'],
  ['17.5', '21F79'],
  ['17.5.1', '21F90'],
  ['17.6.1', '21G93'],
  ['18.0', '22A3354'],
];

const MACOS_VERSIONS: ReadonlyArray<readonly [string, string]> = [
  ['13.6.7', '22G720'],
  ['14.4.1', '23E224'],
  ['14.5', '23F79'],
  ['14.6.1', '23G93'],
  ['15.0', '24A335'],
];

const FIRST_NAMES = [
  'Alice',
  'Bruno',
  'Chloé',
  'Dmitri',
  'Emma',
  'Farid',
  'Grace',
  'Hiro',
  'Ines',
  'Jonas',
  'Kira',
  'Liam',
];
const LAST_NAMES = [
  'Martin',
  'Okafor',
  'Schmidt',
  'Tanaka',
  'Dubois',
  'Rossi',
  'Nguyen',
  'Silva',
  'Berg',
  'Haddad',
];

export interface RandomSpecOptions {
  /** macOS: give the Mac a console user (default true) */
  consoleUser?: boolean;
  userEnrollment?: boolean;
  setupAssistant?: boolean;
  /** iPadOS: a Shared iPad with a signed-in Managed Apple ID (user channel) */
  sharedIpad?: boolean;
  /** probability that a store account is signed in (default 0.8) */
  storeAccountShare?: number;
}

/** A device with realistic, random values for the platform. */
export function randomSpec(
  kind: Platform,
  rng: Rng = Math.random,
  options: RandomSpecOptions = {},
): DeviceSpec {
  const first = pick(rng, FIRST_NAMES);
  const last = pick(rng, LAST_NAMES);
  const active = rng() < (options.storeAccountShare ?? 0.8);
  const storeAccount: StoreAccount = active
    ? { active, appleIdHash: Buffer.from(chars(rng, HEX, 40), 'hex').toString('base64') }
    : { active };
  const extras = {
    ...(options.userEnrollment ? { userEnrollment: true } : {}),
    ...(options.setupAssistant ? { setupAssistant: true } : {}),
  };
  if (kind === 'macos') {
    const hw = pick(rng, MACS);
    const [osVersion, buildVersion] = pick(rng, MACOS_VERSIONS);
    const shortName = `${first}${last[0] ?? ''}`
      .normalize('NFD')
      .replace(/[^A-Za-z]/g, '')
      .toLowerCase();
    return {
      udid: uuid(rng),
      platform: 'macos',
      osVersion,
      buildVersion,
      productName: hw.productName,
      model: hw.productName,
      modelName: hw.modelName,
      serialNumber: `C02${chars(rng, SERIAL, 9)}`,
      deviceName: `${first}’s ${hw.modelName}`,
      ...(options.consoleUser === false
        ? {}
        : { consoleUser: { userId: uuid(rng), shortName, longName: `${first} ${last}` } }),
      ...extras,
      storeAccount,
    };
  }
  const hw = pick(rng, kind === 'ios' ? IPHONES : IPADS);
  const [osVersion, buildVersion] = pick(rng, IOS_VERSIONS);
  const sharedUser =
    kind === 'ipados' && options.sharedIpad
      ? {
          consoleUser: {
            userId: SHARED_IPAD_USER_ID,
            shortName: `${first
              .normalize('NFD')
              .replace(/[^A-Za-z]/g, '')
              .toLowerCase()}.${last.toLowerCase()}@appleid.school.example`,
            longName: `${first} ${last}`,
          },
        }
      : {};
  return {
    udid: `${hw.chip ?? '00008110'}-000${chars(rng, HEX, 13)}`,
    platform: kind,
    osVersion,
    buildVersion,
    productName: hw.productName,
    serialNumber: `${pick(rng, ['D', 'F', 'G', 'H'])}${chars(rng, SERIAL, 11)}`,
    deviceName: `${first}’s ${hw.modelName}`,
    ...sharedUser,
    ...extras,
    storeAccount,
  };
}

/** A random uppercase UUID from the given generator. */
export function randomUuid(rng: Rng = Math.random): string {
  return uuid(rng);
}

/** A Shared iPad: its user channel is the signed-in Managed Apple ID. */
export function isSharedIpad(spec: DeviceSpec): boolean {
  return spec.platform === 'ipados' && spec.consoleUser?.userId === SHARED_IPAD_USER_ID;
}
