import { z } from 'zod';
import { encodePlist } from '../plist/index.ts';
import type { PlistDict, PlistValue } from '../plist/index.ts';
import { ProtocolError } from './protocol-error.ts';
import { invalidMessage } from './zod-issues.ts';

/*
 * What a device sends to ServerURL: its status (and the result of the last command), or Idle.
 */

export const COMMAND_STATUSES = ['Idle', 'Acknowledged', 'Error', 'CommandFormatError', 'NotNow'] as const;
export type CommandStatus = (typeof COMMAND_STATUSES)[number];

export interface ErrorChainItem {
  ErrorCode: number;
  ErrorDomain: string;
  LocalizedDescription?: string;
  USEnglishDescription?: string;
}

export interface CommandReport {
  UDID?: string;
  EnrollmentID?: string;
  EnrollmentUserID?: string;
  UserID?: string;
  UserShortName?: string;
  UserLongName?: string;
  Status: CommandStatus;
  CommandUUID?: string;
  ErrorChain?: ErrorChainItem[];
  /** The whole body as decoded, command-specific result keys included. */
  raw: PlistDict;
}

const text = z.string();
const nonEmpty = z.string().min(1);

const errorChainItemSchema = z.looseObject({
  ErrorCode: z.number(),
  ErrorDomain: text,
  LocalizedDescription: text.optional(),
  USEnglishDescription: text.optional(),
});

/** The keys every report may carry; the rest stays in `raw`. */
const reportSchema = z.object({
  UDID: nonEmpty.optional(),
  EnrollmentID: nonEmpty.optional(),
  EnrollmentUserID: nonEmpty.optional(),
  UserID: nonEmpty.optional(),
  UserShortName: text.optional(),
  UserLongName: text.optional(),
  Status: z.enum(COMMAND_STATUSES),
  CommandUUID: nonEmpty.optional(),
  ErrorChain: z.array(errorChainItemSchema).optional(),
});

/**
 * Validates a decoded command report. Throws ProtocolError `invalid_message` (with `field`) for an
 * unknown or missing Status, a missing CommandUUID (required unless Status is Idle), a key of the
 * wrong type, or a report that names no device (neither UDID nor EnrollmentID).
 */
export function parseCommandReport(dict: PlistDict): CommandReport {
  const result = reportSchema.safeParse(dict);
  if (!result.success) throw invalidMessage('command report', result.error);
  const report = result.data;
  if (report.UDID === undefined && report.EnrollmentID === undefined) {
    throw new ProtocolError(
      'invalid_message',
      'command report: neither UDID nor EnrollmentID names the device',
      {
        field: 'UDID',
      },
    );
  }
  if (report.Status !== 'Idle' && report.CommandUUID === undefined) {
    throw new ProtocolError(
      'invalid_message',
      `command report: Status ${report.Status} without CommandUUID`,
      {
        field: 'CommandUUID',
      },
    );
  }
  return { ...report, raw: dict };
}

/** A report as a device sends it (for the simulator); no validation, so it can send bad ones. */
export function encodeCommandReport(report: Record<string, PlistValue> & { Status: CommandStatus }): string {
  return encodePlist(report);
}
