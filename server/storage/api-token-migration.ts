import type { Migration } from './migrations.ts';
import { schemaKit } from './schema-kit.ts';

/**
 * `0008_api_tokens`: admin API tokens made through `/api/v1/api-tokens`, optionally limited to one
 * site. Only the SHA-256 (hex) of a token is kept; deleting a site revokes its tokens (cascade).
 */
export const apiTokenMigration: Migration = {
  id: '0008_api_tokens',
  async up(qi, t) {
    const { idType, key, string, time, table, index } = await schemaKit(qi, t);
    await table('api_tokens', {
      id: key,
      name: string(255, false),
      token_hash: string(64, false),
      site_id: {
        type: idType,
        allowNull: true,
        references: { model: 'sites', key: 'id' },
        onDelete: 'CASCADE',
      },
      expires_at: time(true),
      created_at: time(false),
    });
    await index('api_tokens', 'api_tokens_hash', ['token_hash'], true);
    await index('api_tokens', 'api_tokens_site', ['site_id']);
  },
};
