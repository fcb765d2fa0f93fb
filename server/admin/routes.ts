import { Router } from 'express';
import { z } from 'zod';
import type { DeviceStore } from '../checkin/store.ts';
import type { CommandService } from '../commands/command-service.ts';
import { findNull, jsonToPlist, type Json } from '../commands/plist-json.ts';
import type { CommandStore } from '../commands/store.ts';
import type { DeviceAssigner } from '../directory/device-assigner.ts';
import type { EnrollmentService } from '../enrollment/enrollment-service.ts';
import { BadRequestError, NotFoundError } from '../errors.ts';
import { siteLimitOf } from './auth.ts';
import { presentCommand, presentDevice, presentToken } from './presenters.ts';
import { listQuery, parse } from './validate.ts';

export interface AdminDeps {
  devices: DeviceStore;
  commands: CommandStore;
  commandService: CommandService;
  enrollment: EnrollmentService;
  /** Assignment of devices to directory users (checks that the user exists). */
  deviceAssigner: DeviceAssigner;
}

const tokenBody = z
  .object({
    expiresAt: z.iso.datetime({ offset: true }).nullable().optional(),
    maxUses: z.number().int().min(1).nullable().optional(),
    siteId: z.string().min(1).nullable().optional(),
  })
  .strict();

const assignBody = z.object({ userId: z.string().min(1).nullable() }).strict();

const jsonValue: z.ZodType<Json> = z.lazy(() =>
  z.union([
    z.string(),
    z.number(),
    z.boolean(),
    z.null(),
    z.array(jsonValue),
    z.record(z.string(), jsonValue),
  ]),
);

const commandBody = z
  .object({
    requestType: z.string().regex(/^[A-Za-z][A-Za-z0-9.]*$/, { message: 'must be an MDM RequestType' }),
    enrollmentId: z.string().min(1).optional(),
  })
  .catchall(jsonValue);

/** The MDM core part of `/api/v1`: enrollment tokens, devices and their command queues. */
export function mdmAdminRoutes(deps: AdminDeps): Router {
  const r = Router();

  r.post('/enrollment-tokens', async (req, res) => {
    const body = parse(tokenBody, req.body ?? {});
    const token = await deps.enrollment.createToken({
      expiresAt: body.expiresAt ? new Date(body.expiresAt) : null,
      maxUses: body.maxUses ?? null,
      siteId: body.siteId ?? null,
    });
    res.status(201).json(presentToken(token, token.enrollUrl));
  });

  r.get('/devices', async (req, res) => {
    const q = parse(listQuery, req.query, 'query');
    const page = await deps.devices.listDevices({
      limit: q.limit,
      cursor: q.cursor ?? null,
      q: q.q ?? null,
      siteId: siteLimitOf(res),
    });
    const items = await Promise.all(
      page.items.map(async (d) => presentDevice(d, await deps.devices.listEnrollments(d.udid))),
    );
    res.json({ items, ...(page.nextCursor ? { nextCursor: page.nextCursor } : {}) });
  });

  r.get('/devices/:udid', async (req, res) => {
    const device = await deps.devices.getDevice(req.params.udid);
    if (!device) throw new NotFoundError('device');
    res.json(presentDevice(device, await deps.devices.listEnrollments(device.udid)));
  });

  r.put('/devices/:udid/user', async (req, res) => {
    const body = parse(assignBody, req.body ?? {});
    // Unknown device: 404; unknown user: 400 `unknown_ids` with details `{ userId: [id] }`.
    const device = await deps.deviceAssigner.assign(req.params.udid, body.userId);
    res.json(presentDevice(device, await deps.devices.listEnrollments(device.udid)));
  });

  r.post('/devices/:udid/commands', async (req, res) => {
    const body = parse(commandBody, req.body ?? {});
    const { requestType, enrollmentId, ...keys } = body;
    const nullAt = findNull(keys as Json, 'body');
    if (nullAt)
      throw new BadRequestError('invalid body', {
        [nullAt.replace(/^body\./, '')]: 'null has no plist form',
      });
    const command = {
      ...(jsonToPlist(keys as Json, 'body') as Record<string, never>),
      RequestType: requestType,
    };
    const { commandUuid } = await deps.commandService.enqueue({
      udid: req.params.udid,
      enrollmentId,
      command,
    });
    res.status(201).json({ commandUuid });
  });

  r.get('/devices/:udid/commands', async (req, res) => {
    const q = parse(listQuery, req.query, 'query');
    const device = await deps.devices.getDevice(req.params.udid);
    if (!device) throw new NotFoundError('device');
    const page = await deps.commands.listForDevice(device.udid, { limit: q.limit, cursor: q.cursor ?? null });
    res.json({
      items: page.items.map(presentCommand),
      ...(page.nextCursor ? { nextCursor: page.nextCursor } : {}),
    });
  });

  return r;
}
