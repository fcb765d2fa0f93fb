import { randomUUID } from 'node:crypto';
import { encodeCommand, type CommandPayload } from '../../shared/mdm/index.ts';
import type { DeviceStore } from '../checkin/store.ts';
import { BadRequestError, NotFoundError } from '../errors.ts';
import type { EventBus } from '../events.ts';
import type { Logger } from '../log.ts';
import type { Pusher } from './pusher.ts';
import type { CommandStore } from './store.ts';

export interface EnqueueRequest {
  udid: string;
  /** A channel of the device; the device channel when absent. */
  enrollmentId?: string | undefined;
  command: CommandPayload;
}

/** Queues commands for devices and asks for the push that makes them connect. */
export class CommandService {
  constructor(
    private readonly deps: {
      devices: DeviceStore;
      commands: CommandStore;
      pusher: Pusher;
      events: EventBus;
      log: Logger;
      now?: () => Date;
    },
  ) {}

  async enqueue(req: EnqueueRequest): Promise<{ commandUuid: string }> {
    const device = await this.deps.devices.getDevice(req.udid);
    if (!device) throw new NotFoundError('device');
    const enrollmentId = req.enrollmentId ?? device.udid;
    const enrollment = await this.deps.devices.getEnrollment(enrollmentId);
    if (!enrollment || enrollment.udid !== device.udid) {
      throw new BadRequestError('unknown enrollmentId for this device', {
        enrollmentId: `no channel ${enrollmentId} on device ${device.udid}`,
      });
    }
    const commandUuid = randomUUID().toUpperCase();
    const now = this.deps.now?.() ?? new Date();
    await this.deps.commands.enqueue(
      [
        {
          enrollmentId,
          udid: device.udid,
          commandUuid,
          requestType: req.command.RequestType,
          bodyXml: encodeCommand(commandUuid, req.command),
        },
      ],
      now,
    );
    this.deps.log.info(
      { udid: device.udid, enrollmentId, commandUuid, requestType: req.command.RequestType },
      'command queued',
    );
    this.deps.events.emit('command.queued', {
      udid: device.udid,
      enrollmentIds: [enrollmentId],
      commandUuid,
      requestType: req.command.RequestType,
    });
    if (enrollment.enabled) await this.deps.pusher.pushEnrollments([enrollmentId]);
    return { commandUuid };
  }
}
