import { DataTypes, type Model, type ModelStatic, type Optional, type Sequelize } from 'sequelize';

/** Sequelize models over the directory tables of migration `0003_directory` (never `sync`ed). */
export interface SiteRow {
  id: number;
  name: string;
  createdAt: Date;
  updatedAt: Date;
}

export interface UserRow {
  id: number;
  username: string;
  usernameKey: string;
  fullName: string | null;
  email: string | null;
  managedAppleId: string | null;
  passwordHash: string | null;
  createdAt: Date;
  updatedAt: Date;
}

export interface UserSiteRow {
  userId: number;
  siteId: number;
}

export interface GroupRow {
  id: number;
  name: string;
  createdAt: Date;
  updatedAt: Date;
}

export interface GroupMemberRow {
  groupId: number;
  userId: number;
}

export type SiteModel = Model<SiteRow, Optional<SiteRow, 'id'>>;
export type UserModel = Model<UserRow, Optional<UserRow, 'id'>>;
export type GroupModel = Model<GroupRow, Optional<GroupRow, 'id'>>;

export interface DirectoryModels {
  Site: ModelStatic<SiteModel>;
  User: ModelStatic<UserModel>;
  UserSite: ModelStatic<Model<UserSiteRow, UserSiteRow>>;
  Group: ModelStatic<GroupModel>;
  GroupMember: ModelStatic<Model<GroupMemberRow, GroupMemberRow>>;
}

const cache = new WeakMap<Sequelize, DirectoryModels>();

const key = () => ({ type: DataTypes.BIGINT, primaryKey: true, autoIncrement: true });
const ref = () => ({ type: DataTypes.BIGINT, allowNull: false, primaryKey: true });
const str = (allowNull: boolean) => ({ type: DataTypes.STRING, allowNull });
const date = () => ({ type: DataTypes.DATE(3), allowNull: false });

/** The directory models bound to this Sequelize instance (defined once per instance). */
export function directoryModelsOf(sequelize: Sequelize): DirectoryModels {
  const existing = cache.get(sequelize);
  if (existing) return existing;
  const options = { underscored: true, timestamps: false, freezeTableName: true };
  const models: DirectoryModels = {
    Site: sequelize.define(
      'Site',
      { id: key(), name: str(false), createdAt: date(), updatedAt: date() },
      { ...options, tableName: 'sites' },
    ),
    User: sequelize.define(
      'User',
      {
        id: key(),
        username: str(false),
        usernameKey: str(false),
        fullName: str(true),
        email: str(true),
        managedAppleId: str(true),
        passwordHash: str(true),
        createdAt: date(),
        updatedAt: date(),
      },
      { ...options, tableName: 'users' },
    ),
    UserSite: sequelize.define(
      'UserSite',
      { userId: ref(), siteId: ref() },
      { ...options, tableName: 'user_sites' },
    ),
    Group: sequelize.define(
      'UserGroup',
      { id: key(), name: str(false), createdAt: date(), updatedAt: date() },
      { ...options, tableName: 'user_groups' },
    ),
    GroupMember: sequelize.define(
      'UserGroupMember',
      { groupId: ref(), userId: ref() },
      { ...options, tableName: 'user_group_members' },
    ),
  };
  cache.set(sequelize, models);
  return models;
}
