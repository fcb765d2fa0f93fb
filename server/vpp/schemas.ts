import { z } from 'zod';

/** Request schemas of the Apps and Books admin routes (request types are inferred from them). */

const name = z.string().trim().min(1, 'must not be empty').max(255);
const id = z.string().min(1).max(64);
const serviceToken = z.string().trim().min(1, 'must not be empty').max(16_384);

export const locationCreate = z
  .object({
    name,
    serviceToken,
    siteId: id.nullable().optional(),
    autoRegisterManagedUsers: z.boolean().optional(),
  })
  .strict();

export const locationPatch = z
  .object({
    name: name.optional(),
    siteId: id.nullable().optional(),
    autoRegisterManagedUsers: z.boolean().optional(),
    serviceToken: serviceToken.optional(),
  })
  .strict();

export const forceQuery = z.object({
  force: z
    .enum(['true', 'false', '1', '0'])
    .transform((v) => v === 'true' || v === '1')
    .optional(),
});

export const registerBody = z.object({ managed: z.boolean().optional() }).strict();

export const locationListQuery = z.object({
  limit: z.coerce.number().int().min(1).max(1000).default(100),
  cursor: z.string().min(1).max(1000).optional(),
  q: z.string().max(200).optional(),
});
