import { expect } from 'chai';
import type { IdBatches } from '../../../server/directory/store.ts';
import type { ScopeDefinition } from '../../../server/invitations/model.ts';
import {
  computeScope,
  limitExplicitUsersToSite,
  normaliseScope,
  resolveScope,
  sameScope,
  type ScopeSources,
} from '../../../server/invitations/scope.ts';

/** A small directory: users 1..12, groups, two sites. */
const USERS = Array.from({ length: 12 }, (_, i) => String(i + 1));
const GROUPS: Record<string, string[]> = {
  staff: ['1', '2', '3', '4'],
  teachers: ['3', '4', '5', '6'],
  interns: ['7', '8'],
  empty: [],
};
const SITES: Record<string, string[]> = {
  north: ['1', '3', '5', '7', '9', '11'],
  south: ['2', '4', '6', '8', '10', '12'],
};

function scope(
  partial: Partial<ScopeDefinition> & { exclude?: Partial<ScopeDefinition['exclusions']> },
): ScopeDefinition {
  return {
    allUsers: partial.allUsers ?? false,
    userIds: partial.userIds ?? [],
    groupIds: partial.groupIds ?? [],
    exclusions: { userIds: partial.exclude?.userIds ?? [], groupIds: partial.exclude?.groupIds ?? [] },
  };
}

const members = (groups: readonly string[]) => groups.flatMap((g) => GROUPS[g] ?? []);

/** Batches of `size` ids, ascending (like the directory's streams). */
async function* batches(ids: readonly string[], size: number): IdBatches {
  const sorted = [...new Set(ids)].sort((a, b) => Number(a) - Number(b));
  for (let i = 0; i < sorted.length; i += size) yield sorted.slice(i, i + size);
}

function sources(size: number): ScopeSources {
  return {
    allUserIds: () => batches(USERS, size),
    listUserIdsInSite: (siteId) => batches(SITES[siteId] ?? [], size),
    listMemberIds: (groupIds) => batches(members(groupIds), size),
  };
}

interface Row {
  name: string;
  def: ScopeDefinition;
  site: string | null;
  expected: string[];
}

const TABLE: Row[] = [
  { name: 'nobody', def: scope({}), site: null, expected: [] },
  { name: 'all users', def: scope({ allUsers: true }), site: null, expected: USERS },
  {
    name: 'explicit users, sorted numerically',
    def: scope({ userIds: ['10', '2', '1'] }),
    site: null,
    expected: ['1', '2', '10'],
  },
  { name: 'a group', def: scope({ groupIds: ['staff'] }), site: null, expected: ['1', '2', '3', '4'] },
  {
    name: 'overlapping groups count each user once',
    def: scope({ groupIds: ['staff', 'teachers'] }),
    site: null,
    expected: ['1', '2', '3', '4', '5', '6'],
  },
  {
    name: 'users and groups together, overlapping',
    def: scope({ userIds: ['4', '12'], groupIds: ['interns'] }),
    site: null,
    expected: ['4', '7', '8', '12'],
  },
  { name: 'an empty group', def: scope({ groupIds: ['empty'] }), site: null, expected: [] },
  {
    name: 'all users minus excluded users',
    def: scope({ allUsers: true, exclude: { userIds: ['1', '12'] } }),
    site: null,
    expected: USERS.filter((u) => u !== '1' && u !== '12'),
  },
  {
    name: 'all users minus an excluded group',
    def: scope({ allUsers: true, exclude: { groupIds: ['staff'] } }),
    site: null,
    expected: ['5', '6', '7', '8', '9', '10', '11', '12'],
  },
  {
    name: 'exclusions win over explicit users and groups',
    def: scope({
      userIds: ['1', '9'],
      groupIds: ['teachers'],
      exclude: { userIds: ['9'], groupIds: ['staff'] },
    }),
    site: null,
    expected: ['5', '6'],
  },
  {
    name: 'overlapping excluded groups',
    def: scope({ allUsers: true, exclude: { groupIds: ['staff', 'teachers'] } }),
    site: null,
    expected: ['7', '8', '9', '10', '11', '12'],
  },
  {
    name: 'allUsers ignores explicit users and groups',
    def: scope({ allUsers: true, userIds: ['1'], groupIds: ['staff'] }),
    site: null,
    expected: USERS,
  },
  { name: 'all users of a site', def: scope({ allUsers: true }), site: 'north', expected: SITES.north ?? [] },
  {
    name: 'group members outside the site are left out',
    def: scope({ groupIds: ['staff', 'teachers'] }),
    site: 'south',
    expected: ['2', '4', '6'],
  },
  {
    name: 'explicit users outside the site are left out',
    def: scope({ userIds: ['1', '2', '3'] }),
    site: 'north',
    expected: ['1', '3'],
  },
  {
    name: 'site and exclusions together',
    def: scope({ allUsers: true, exclude: { userIds: ['2'], groupIds: ['interns'] } }),
    site: 'south',
    expected: ['4', '6', '10', '12'],
  },
];

describe('invitation scope', () => {
  describe('computeScope (pure, over id sets)', () => {
    for (const row of TABLE) {
      it(row.name, () => {
        const got = computeScope(row.def, {
          allUserIds: USERS,
          groupMemberIds: members(row.def.groupIds),
          excludedGroupMemberIds: members(row.def.exclusions.groupIds),
          siteUserIds: row.site === null ? null : new Set(SITES[row.site]),
        });
        expect(got).to.deep.equal(row.expected);
      });
    }
  });

  describe('resolveScope (streamed from the directory in batches)', () => {
    for (const size of [1, 3, 1000]) {
      for (const row of TABLE) {
        it(`${row.name} (batches of ${size})`, async () => {
          expect(await resolveScope(row.def, row.site, sources(size), { batchSize: size })).to.deep.equal(
            row.expected,
          );
        });
      }
    }

    it('leaves out explicit users that no longer exist', async () => {
      const got = await resolveScope(scope({ userIds: ['1', '99', '2'] }), null, sources(2), {
        batchSize: 2,
        missingUsers: async (ids) => ids.filter((id) => !USERS.includes(id)),
      });
      expect(got).to.deep.equal(['1', '2']);
    });

    it('reads 20,000 users in batches without a query per user', async () => {
      const many = Array.from({ length: 20_000 }, (_, i) => String(i + 1));
      let calls = 0;
      const src: ScopeSources = {
        async *allUserIds(size = 1000) {
          for (let i = 0; i < many.length; i += size) {
            calls++;
            yield many.slice(i, i + size);
          }
        },
        listUserIdsInSite: () => batches([], 1000),
        listMemberIds: () => batches([], 1000),
      };
      const got = await resolveScope(scope({ allUsers: true, exclude: { userIds: ['5'] } }), null, src);
      expect(got).to.have.length(19_999);
      expect(calls).to.equal(20);
    });
  });

  describe('helpers', () => {
    it('limits explicit users to the site, keeping groups and exclusions', () => {
      const def = scope({ userIds: ['1', '2', '3'], groupIds: ['staff'], exclude: { userIds: ['2'] } });
      expect(limitExplicitUsersToSite(def, new Set(SITES.north))).to.deep.equal(
        scope({ userIds: ['1', '3'], groupIds: ['staff'], exclude: { userIds: ['2'] } }),
      );
      expect(limitExplicitUsersToSite(def, null)).to.equal(def);
    });

    it('normalises and compares scopes regardless of order and duplicates', () => {
      const a = scope({ userIds: ['10', '2', '2'], groupIds: ['3', '1'] });
      expect(normaliseScope(a)).to.deep.equal(scope({ userIds: ['2', '10'], groupIds: ['1', '3'] }));
      expect(sameScope(a, scope({ userIds: ['2', '10'], groupIds: ['1', '3'] }))).to.equal(true);
      expect(sameScope(a, scope({ userIds: ['2'], groupIds: ['1', '3'] }))).to.equal(false);
      expect(sameScope(a, { ...a, allUsers: true })).to.equal(false);
    });
  });
});
