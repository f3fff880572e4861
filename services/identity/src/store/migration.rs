//! Identity's schema. Migrations are append-only; each is named
//! `mYYYYMMDD_NNNNNN_<verb>_<noun>`.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(Debug)]
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(retail_kit::idempotency::migration::Migration),
            Box::new(CreateIdentityTables),
            Box::new(AddUserStores),
        ]
    }
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
    Username,
    Email,
    DisplayName,
    Kind,
    Roles,
    PartnerId,
    PasswordHash,
    Disabled,
    CreatedAt,
    UpdatedAt,
    LastLoginAt,
    PasswordChangedAt,
}

#[derive(DeriveIden)]
enum Sessions {
    Table,
    Id,
    UserId,
    CreatedAt,
    ExpiresAt,
    RevokedAt,
    RevokeReason,
}

#[derive(DeriveIden)]
enum RefreshTokens {
    Table,
    TokenHash,
    SessionId,
    IssuedAt,
    ExpiresAt,
    UsedAt,
}

#[derive(DeriveIden)]
enum ApiKeys {
    Table,
    Id,
    Prefix,
    SecretHash,
    DisplayName,
    PartnerId,
    Scopes,
    CreatedBy,
    CreatedAt,
    LastUsedAt,
    RevokedAt,
    ExpiresAt,
}

#[derive(DeriveIden)]
enum ServiceAccounts {
    Table,
    Id,
    ClientId,
    SecretHash,
    Scopes,
    CreatedAt,
}

#[derive(DeriveIden)]
enum SigningKeys {
    Table,
    Id,
    PrivateKey,
    PublicKey,
    CreatedAt,
    RetiredAt,
    ExpiresAt,
}

#[derive(DeriveIden)]
enum AuditEvents {
    Table,
    Id,
    Action,
    Actor,
    Target,
    DetailJson,
    CreatedAt,
}

#[derive(DeriveIden)]
enum LoginThrottle {
    Table,
    Subject,
    Failures,
    NextAttemptAt,
    LockedUntil,
    UpdatedAt,
}

#[derive(Debug)]
struct CreateIdentityTables;

impl MigrationName for CreateIdentityTables {
    fn name(&self) -> &str {
        "m20261122_000002_create_identity_tables"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateIdentityTables {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(Users::Table)
                .if_not_exists()
                .col(string_len(Users::Id, 36).primary_key())
                .col(string_len(Users::Username, 64).unique_key())
                .col(string_len_null(Users::Email, 254).unique_key())
                .col(string_len(Users::DisplayName, 200))
                .col(string_len(Users::Kind, 16))
                .col(string_len(Users::Roles, 200))
                .col(string_len_null(Users::PartnerId, 64))
                .col(string_len(Users::PasswordHash, 255))
                .col(boolean(Users::Disabled))
                .col(timestamp_with_time_zone(Users::CreatedAt))
                .col(timestamp_with_time_zone(Users::UpdatedAt))
                .col(timestamp_with_time_zone_null(Users::LastLoginAt))
                .col(timestamp_with_time_zone(Users::PasswordChangedAt))
                .check(Expr::col(Users::Kind).is_in(["staff", "partner_user"]))
                // A partner user always belongs to a partner: isolation depends on it.
                .check(
                    Expr::col(Users::Kind)
                        .ne("partner_user")
                        .or(Expr::col(Users::PartnerId).is_not_null()),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_users_partner_id")
                .table(Users::Table)
                .col(Users::PartnerId)
                .if_not_exists()
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(Sessions::Table)
                .if_not_exists()
                .col(string_len(Sessions::Id, 36).primary_key())
                .col(string_len(Sessions::UserId, 36))
                .col(timestamp_with_time_zone(Sessions::CreatedAt))
                .col(timestamp_with_time_zone(Sessions::ExpiresAt))
                .col(timestamp_with_time_zone_null(Sessions::RevokedAt))
                .col(string_len_null(Sessions::RevokeReason, 32))
                .foreign_key(
                    ForeignKey::create()
                        .from(Sessions::Table, Sessions::UserId)
                        .to(Users::Table, Users::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_sessions_user_id")
                .table(Sessions::Table)
                .col(Sessions::UserId)
                .if_not_exists()
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(RefreshTokens::Table)
                .if_not_exists()
                .col(string_len(RefreshTokens::TokenHash, 64).primary_key())
                .col(string_len(RefreshTokens::SessionId, 36))
                .col(timestamp_with_time_zone(RefreshTokens::IssuedAt))
                .col(timestamp_with_time_zone(RefreshTokens::ExpiresAt))
                .col(timestamp_with_time_zone_null(RefreshTokens::UsedAt))
                .foreign_key(
                    ForeignKey::create()
                        .from(RefreshTokens::Table, RefreshTokens::SessionId)
                        .to(Sessions::Table, Sessions::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_refresh_tokens_session_id")
                .table(RefreshTokens::Table)
                .col(RefreshTokens::SessionId)
                .if_not_exists()
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(ApiKeys::Table)
                .if_not_exists()
                .col(string_len(ApiKeys::Id, 36).primary_key())
                .col(string_len(ApiKeys::Prefix, 16).unique_key())
                .col(string_len(ApiKeys::SecretHash, 64))
                .col(string_len(ApiKeys::DisplayName, 200))
                .col(string_len(ApiKeys::PartnerId, 64))
                .col(string_len(ApiKeys::Scopes, 1000))
                .col(string_len(ApiKeys::CreatedBy, 64))
                .col(timestamp_with_time_zone(ApiKeys::CreatedAt))
                .col(timestamp_with_time_zone_null(ApiKeys::LastUsedAt))
                .col(timestamp_with_time_zone_null(ApiKeys::RevokedAt))
                .col(timestamp_with_time_zone_null(ApiKeys::ExpiresAt))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_api_keys_partner_id")
                .table(ApiKeys::Table)
                .col(ApiKeys::PartnerId)
                .if_not_exists()
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(ServiceAccounts::Table)
                .if_not_exists()
                .col(string_len(ServiceAccounts::Id, 36).primary_key())
                .col(string_len(ServiceAccounts::ClientId, 64).unique_key())
                .col(string_len(ServiceAccounts::SecretHash, 64))
                .col(string_len(ServiceAccounts::Scopes, 1000))
                .col(timestamp_with_time_zone(ServiceAccounts::CreatedAt))
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(SigningKeys::Table)
                .if_not_exists()
                .col(string_len(SigningKeys::Id, 36).primary_key())
                .col(blob(SigningKeys::PrivateKey))
                .col(blob(SigningKeys::PublicKey))
                .col(timestamp_with_time_zone(SigningKeys::CreatedAt))
                .col(timestamp_with_time_zone_null(SigningKeys::RetiredAt))
                .col(timestamp_with_time_zone_null(SigningKeys::ExpiresAt))
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(AuditEvents::Table)
                .if_not_exists()
                .col(string_len(AuditEvents::Id, 36).primary_key())
                .col(string_len(AuditEvents::Action, 64))
                .col(string_len(AuditEvents::Actor, 64))
                .col(string_len(AuditEvents::Target, 128))
                .col(text(AuditEvents::DetailJson))
                .col(timestamp_with_time_zone(AuditEvents::CreatedAt))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_audit_events_action")
                .table(AuditEvents::Table)
                .col(AuditEvents::Action)
                .col(AuditEvents::Id)
                .if_not_exists()
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(LoginThrottle::Table)
                .if_not_exists()
                .col(string_len(LoginThrottle::Subject, 160).primary_key())
                .col(integer(LoginThrottle::Failures))
                .col(timestamp_with_time_zone_null(LoginThrottle::NextAttemptAt))
                .col(timestamp_with_time_zone_null(LoginThrottle::LockedUntil))
                .col(timestamp_with_time_zone(LoginThrottle::UpdatedAt))
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            LoginThrottle::Table.into_iden(),
            AuditEvents::Table.into_iden(),
            SigningKeys::Table.into_iden(),
            ServiceAccounts::Table.into_iden(),
            ApiKeys::Table.into_iden(),
            RefreshTokens::Table.into_iden(),
            Sessions::Table.into_iden(),
            Users::Table.into_iden(),
        ] {
            m.drop_table(Table::drop().table(table).if_exists().to_owned()).await?;
        }
        Ok(())
    }
}

/// The stores a staff user is confined to in per-store views.
#[derive(Debug)]
pub struct AddUserStores;

impl MigrationName for AddUserStores {
    fn name(&self) -> &str {
        "m20261204_000001_add_user_stores"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for AddUserStores {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Users::Table)
                    .add_column(ColumnDef::new(Alias::new("stores")).text().not_null().default(""))
                    .to_owned(),
            )
            .await
    }
}
