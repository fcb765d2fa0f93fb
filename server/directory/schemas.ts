import { z } from 'zod';
import { listQuery } from '../admin/validate.ts';
import { MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH } from './password.ts';

/** Request schemas of the directory's admin routes (request types are inferred from them). */

const name = z.string().trim().min(1, 'must not be empty').max(255);
const noControlCharacters = (s: string) => !/\p{Cc}/u.test(s);
const username = name.refine(noControlCharacters, 'must not contain control characters');
/** Optional text: an empty string means none. */
const optionalText = z
  .string()
  .trim()
  .max(255)
  .transform((s) => (s === '' ? null : s))
  .nullable();
const email = z.email().max(254).nullable();
const password = z
  .string()
  .min(MIN_PASSWORD_LENGTH, `must be at least ${MIN_PASSWORD_LENGTH} characters`)
  .max(MAX_PASSWORD_LENGTH);
const id = z.string().min(1).max(64);
const ids = (max: number) =>
  z
    .array(id)
    .max(max)
    .transform((list) => [...new Set(list)]);

export const siteCreate = z.object({ name }).strict();
export const sitePatch = z.object({ name: name.optional() }).strict();

export const userCreate = z
  .object({
    username,
    fullName: optionalText.optional(),
    email: email.optional(),
    managedAppleId: email.optional(),
    siteIds: ids(1000).optional(),
    password: password.optional(),
  })
  .strict();

export const userPatch = z
  .object({
    username: username.optional(),
    fullName: optionalText.optional(),
    email: email.optional(),
    managedAppleId: email.optional(),
    siteIds: ids(1000).optional(),
    password: password.nullable().optional(),
  })
  .strict();

export const passwordBody = z.object({ password }).strict();

const MAX_GROUP_IDS = 100_000;

export const groupCreate = z.object({ name, userIds: ids(MAX_GROUP_IDS).default([]) }).strict();

export const groupPatch = z
  .object({
    name: name.optional(),
    userIds: ids(MAX_GROUP_IDS).optional(),
    addUserIds: ids(MAX_GROUP_IDS).optional(),
    removeUserIds: ids(MAX_GROUP_IDS).optional(),
  })
  .strict()
  .superRefine((body, ctx) => {
    if (body.userIds !== undefined && (body.addUserIds !== undefined || body.removeUserIds !== undefined)) {
      ctx.addIssue({
        code: 'custom',
        path: ['userIds'],
        message: 'replaces the membership: not together with addUserIds or removeUserIds',
      });
    }
    const removed = new Set(body.removeUserIds ?? []);
    const both = (body.addUserIds ?? []).filter((u) => removed.has(u));
    if (both.length > 0) {
      ctx.addIssue({
        code: 'custom',
        path: ['addUserIds'],
        message: `also in removeUserIds: ${both.slice(0, 10).join(', ')}`,
      });
    }
  });

export const userListQuery = listQuery.extend({ siteId: id.optional(), groupId: id.optional() });
