import { DataTypes, type Model, type ModelStatic, type Optional, type Sequelize } from 'sequelize';

/** Sequelize models over the tables of migration `0005_invitations` (never `sync`ed). */
export interface InvitationRow {
  id: number;
  name: string;
  locationId: number;
  siteId: number | null;
  distributionMethod: string;
  autoRegisterManagedUsers: boolean;
  requireLogin: boolean;
  emailJson: string | null;
  scopeJson: string;
  scopeGeneration: number;
  computedGeneration: number;
  fanoutStartedAt: Date | null;
  fanoutFinishedAt: Date | null;
  fanoutError: string | null;
  deletedAt: Date | null;
  createdAt: Date;
  updatedAt: Date;
}

export interface UsageRow {
  id: number;
  invitationId: number;
  locationId: number;
  userId: number;
  status: string;
  stage: string;
  reason: string | null;
  lastAction: string | null;
  lastActionAt: Date | null;
  sentAt: Date | null;
  registrationCode: string;
  createdAt: Date;
  updatedAt: Date;
}

export interface UsageDeviceRow {
  usageId: number;
  enrollmentId: string;
  udid: string;
  commandUuid: string | null;
  commandStatus: string | null;
  updatedAt: Date;
}

export type InvitationModel = Model<InvitationRow, Optional<InvitationRow, 'id'>>;
export type UsageModel = Model<UsageRow, Optional<UsageRow, 'id'>>;

export interface InvitationModels {
  Invitation: ModelStatic<InvitationModel>;
  Usage: ModelStatic<UsageModel>;
  UsageDevice: ModelStatic<Model<UsageDeviceRow, UsageDeviceRow>>;
}

const cache = new WeakMap<Sequelize, InvitationModels>();

export function invitationModelsOf(sequelize: Sequelize): InvitationModels {
  const existing = cache.get(sequelize);
  if (existing) return existing;
  const longText = sequelize.getDialect() === 'mariadb' ? DataTypes.TEXT('long') : DataTypes.TEXT;
  const options = { underscored: true, timestamps: false, freezeTableName: true };
  const str = (allowNull = true) => ({ type: DataTypes.STRING, allowNull });
  const date = (allowNull = true) => ({ type: DataTypes.DATE(3), allowNull });
  const bool = () => ({ type: DataTypes.BOOLEAN, allowNull: false });
  const bigint = (allowNull: boolean) => ({ type: DataTypes.BIGINT, allowNull });
  const int = () => ({ type: DataTypes.INTEGER, allowNull: false });
  const models: InvitationModels = {
    Invitation: sequelize.define<InvitationModel>(
      'VppInvitation',
      {
        id: { type: DataTypes.BIGINT, primaryKey: true, autoIncrement: true },
        name: str(false),
        locationId: bigint(false),
        siteId: bigint(true),
        distributionMethod: str(false),
        autoRegisterManagedUsers: bool(),
        requireLogin: bool(),
        emailJson: { type: longText, allowNull: true },
        scopeJson: { type: longText, allowNull: false },
        scopeGeneration: int(),
        computedGeneration: int(),
        fanoutStartedAt: date(),
        fanoutFinishedAt: date(),
        fanoutError: str(),
        deletedAt: date(),
        createdAt: date(false),
        updatedAt: date(false),
      },
      { ...options, tableName: 'vpp_invitations' },
    ),
    Usage: sequelize.define<UsageModel>(
      'InvitationUsage',
      {
        id: { type: DataTypes.BIGINT, primaryKey: true, autoIncrement: true },
        invitationId: bigint(false),
        locationId: bigint(false),
        userId: bigint(false),
        status: str(false),
        stage: str(false),
        reason: str(),
        lastAction: str(),
        lastActionAt: date(),
        sentAt: date(),
        registrationCode: str(false),
        createdAt: date(false),
        updatedAt: date(false),
      },
      { ...options, tableName: 'invitation_usage' },
    ),
    UsageDevice: sequelize.define<Model<UsageDeviceRow, UsageDeviceRow>>(
      'InvitationUsageDevice',
      {
        usageId: { type: DataTypes.BIGINT, primaryKey: true },
        enrollmentId: { type: DataTypes.STRING, primaryKey: true },
        udid: str(false),
        commandUuid: str(),
        commandStatus: str(),
        updatedAt: date(false),
      },
      { ...options, tableName: 'invitation_usage_devices' },
    ),
  };
  cache.set(sequelize, models);
  return models;
}
