import { z } from 'zod';
import { listQuery } from '../admin/validate.ts';
import { URL_PLACEHOLDER } from '../mail/invitation-email.ts';
import { DISTRIBUTION_METHODS, USAGE_STATUSES } from './model.ts';

/** Request schemas of the invitation routes (request types are inferred from them), and stored JSON. */

const name = z.string().trim().min(1, 'must not be empty').max(255);
const id = z.string().min(1).max(64);
/** At most this many ids per scope field (like user groups). */
export const MAX_SCOPE_IDS = 100_000;
const ids = z
  .array(id)
  .max(MAX_SCOPE_IDS)
  .transform((list) => [...new Set(list)]);
const oneLine = (s: string) => !/[\r\n]/.test(s);

export const scopeBody = z
  .object({
    allUsers: z.boolean().default(false),
    userIds: ids.default([]),
    groupIds: ids.default([]),
    exclusions: z
      .object({ userIds: ids.default([]), groupIds: ids.default([]) })
      .strict()
      .default({ userIds: [], groupIds: [] }),
  })
  .strict();

export const emailBody = z
  .object({
    senderName: z.string().trim().max(255).refine(oneLine, 'must be one line'),
    senderAddress: z.email().max(254),
    subject: z.string().trim().min(1, 'must not be empty').max(255).refine(oneLine, 'must be one line'),
    message: z
      .string()
      .min(1, 'must not be empty')
      .max(100_000)
      .refine((m) => m.includes(URL_PLACEHOLDER), {
        message: `must contain ${URL_PLACEHOLDER} (replaced by the user's registration URL)`,
      }),
  })
  .strict();

export const distributionMethod = z.enum(DISTRIBUTION_METHODS);

const EMPTY_SCOPE = { allUsers: false, userIds: [], groupIds: [], exclusions: { userIds: [], groupIds: [] } };

export const invitationCreate = z
  .object({
    name,
    locationId: id,
    distributionMethod,
    autoRegisterManagedUsers: z.boolean().default(false),
    requireLogin: z.boolean().default(false),
    email: emailBody.nullable().optional(),
    scope: scopeBody.default(EMPTY_SCOPE),
  })
  .strict()
  .superRefine((body, ctx) => {
    if (body.distributionMethod === 'email' && !body.email) {
      ctx.addIssue({
        code: 'custom',
        path: ['email'],
        message: 'required for the email distribution method',
      });
    }
  });
export type InvitationCreateBody = z.output<typeof invitationCreate>;

/** `locationId`, `distributionMethod` and `autoRegisterManagedUsers` are accepted only unchanged. */
export const invitationPatch = z
  .object({
    name: name.optional(),
    locationId: id.optional(),
    distributionMethod: distributionMethod.optional(),
    autoRegisterManagedUsers: z.boolean().optional(),
    requireLogin: z.boolean().optional(),
    email: emailBody.nullable().optional(),
    scope: scopeBody.optional(),
  })
  .strict();
export type InvitationPatchBody = z.output<typeof invitationPatch>;

export const invitationListQuery = listQuery.extend({ locationId: id.optional() });

export const usageQuery = listQuery.extend({
  status: z.enum(USAGE_STATUSES).optional(),
  format: z.enum(['json', 'csv']).optional(),
});

export const resendBody = z
  .object({
    cohort: z.enum(['not_registered', 'never_sent', 'failed']).optional(),
    userIds: ids.refine((list) => list.length > 0, 'must not be empty').optional(),
  })
  .strict();
export type ResendBody = z.output<typeof resendBody>;

// ---- stored JSON (read back from the database) ----

export const storedScope = z.object({
  allUsers: z.boolean(),
  userIds: z.array(z.string()),
  groupIds: z.array(z.string()),
  exclusions: z.object({ userIds: z.array(z.string()), groupIds: z.array(z.string()) }),
});

export const storedEmail = z.object({
  senderName: z.string(),
  senderAddress: z.string(),
  subject: z.string(),
  message: z.string(),
});
