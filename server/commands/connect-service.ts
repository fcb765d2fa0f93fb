import { encodePlist } from '../../shared/plist/index.ts';
import type { CommandReport } from '../../shared/mdm/index.ts';
import { resolveEnrollment } from '../../shared/mdm/index.ts';
import type { CheckinService } from '../checkin/checkin-service.ts';
import type { DeviceStore } from '../checkin/store.ts';
import type { EventBus } from '../events.ts';
import type { Logger } from '../log.ts';
import type { DeviceIdentity } from '../transport/device-identity.ts';
import { DeviceAuthError } from '../transport/device-identity.ts';
import type { CommandStore } from './store.ts';

const STATUS: Record<
  'Acknowledged' | 'Error' | 'CommandFormatError',
  'acknowledged' | 'error' | 'command_format_error'
> = {
  Acknowledged: 'acknowledged',
  Error: 'error',
  CommandFormatError: 'command_format_error',
};

/**
 * `PUT /mdm/connect`: stores the device's report and answers the next command (or nothing).
 * After a NotNow the command is skipped while the device keeps reporting; its next Idle gets it again.
 */
export class ConnectService {
  constructor(
    private readonly deps: {
      devices: DeviceStore;
      commands: CommandStore;
      checkin: CheckinService;
      events: EventBus;
      log: Logger;
      seen: (udid: string) => void;
      now?: () => Date;
    },
  ) {}

  /** Returns the plist body of the next command, or null for an empty 200. */
  async handle(report: CommandReport, identity: DeviceIdentity): Promise<string | null> {
    const ref = resolveEnrollment(report);
    await this.deps.checkin.requireBoundDevice(ref.deviceId, identity);
    const enrollment = await this.deps.devices.getEnrollment(ref.id);
    if (!enrollment || !enrollment.enabled) {
      throw new DeviceAuthError(
        'this channel is not enrolled: send TokenUpdate first',
        'enrollment_inactive',
      );
    }
    this.deps.seen(ref.deviceId);
    const now = this.deps.now?.() ?? new Date();
    const { Status: status, CommandUUID: uuid } = report;
    if (status === 'Idle') {
      return this.nextBody(ref.id, true, now);
    }
    if (uuid === undefined) return this.nextBody(ref.id, false, now); // parseCommandReport requires it; kept for types
    if (status === 'NotNow') {
      await this.deps.commands.markNotNow(ref.id, uuid, now);
      this.emitResult(ref.deviceId, ref.id, uuid, 'not_now', report);
    } else {
      const stored = await this.deps.commands.complete(
        {
          enrollmentId: ref.id,
          commandUuid: uuid,
          status: STATUS[status],
          resultXml: encodePlist(report.raw),
        },
        now,
      );
      if (stored) this.emitResult(ref.deviceId, ref.id, uuid, STATUS[status], report);
      else
        this.deps.log.debug(
          { enrollmentId: ref.id, commandUuid: uuid },
          'duplicate or unknown result ignored',
        );
    }
    return this.nextBody(ref.id, false, now);
  }

  private async nextBody(enrollmentId: string, includeNotNow: boolean, now: Date): Promise<string | null> {
    const next = await this.deps.commands.next(enrollmentId, includeNotNow, now);
    return next ? next.bodyXml : null;
  }

  private emitResult(
    udid: string,
    enrollmentId: string,
    commandUuid: string,
    status: 'acknowledged' | 'error' | 'command_format_error' | 'not_now',
    report: CommandReport,
  ): void {
    this.deps.log.info({ udid, enrollmentId, commandUuid, status }, 'command result');
    this.deps.events.emit('command.result', { udid, enrollmentId, commandUuid, status, report: report.raw });
  }
}
