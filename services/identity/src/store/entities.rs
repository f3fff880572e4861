//! sea-orm entities of identity's tables. Ids are UUIDv7 strings, so ordering by id is
//! ordering by creation, which keyset pagination relies on.

pub mod user {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "users")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        #[sea_orm(unique)]
        pub username: String,
        pub email: Option<String>,
        pub display_name: String,
        /// `staff` or `partner_user`.
        pub kind: String,
        /// Space-separated role names (staff only).
        pub roles: String,
        pub partner_id: Option<String>,
        /// argon2id PHC string.
        pub password_hash: String,
        pub disabled: bool,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
        pub last_login_at: Option<DateTimeUtc>,
        pub password_changed_at: DateTimeUtc,
        /// Space-separated store codes (staff only): the stores the user is
        /// confined to in per-store views.
        pub stores: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod session {
    //! A login session: the family of refresh tokens descended from one login.
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "sessions")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub user_id: String,
        pub created_at: DateTimeUtc,
        pub expires_at: DateTimeUtc,
        pub revoked_at: Option<DateTimeUtc>,
        /// Why: `logout`, `reuse_detected`, `password_changed`, `disabled`.
        pub revoke_reason: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod refresh_token {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "refresh_tokens")]
    pub struct Model {
        /// SHA-256 of the token; the token itself is never stored.
        #[sea_orm(primary_key, auto_increment = false)]
        pub token_hash: String,
        pub session_id: String,
        pub issued_at: DateTimeUtc,
        pub expires_at: DateTimeUtc,
        /// Set when exchanged; a second exchange is a reuse.
        pub used_at: Option<DateTimeUtc>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod api_key {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "api_keys")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        #[sea_orm(unique)]
        pub prefix: String,
        /// SHA-256 of the full key.
        pub secret_hash: String,
        pub display_name: String,
        pub partner_id: String,
        /// Space-separated scopes.
        pub scopes: String,
        pub created_by: String,
        pub created_at: DateTimeUtc,
        pub last_used_at: Option<DateTimeUtc>,
        pub revoked_at: Option<DateTimeUtc>,
        pub expires_at: Option<DateTimeUtc>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod service_account {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "service_accounts")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        #[sea_orm(unique)]
        pub client_id: String,
        /// SHA-256 of the client secret.
        pub secret_hash: String,
        pub scopes: String,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod signing_key {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "signing_keys")]
    pub struct Model {
        /// The `kid` of the tokens it signs.
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        /// PKCS#8 DER of the Ed25519 private key.
        pub private_key: Vec<u8>,
        /// Raw 32-byte public key.
        pub public_key: Vec<u8>,
        pub created_at: DateTimeUtc,
        /// Stops signing from here.
        pub retired_at: Option<DateTimeUtc>,
        /// Stops verifying from here: retirement plus the longest token lifetime.
        pub expires_at: Option<DateTimeUtc>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod audit_event {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "audit_events")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub action: String,
        pub actor: String,
        pub target: String,
        pub detail_json: String,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod login_throttle {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "login_throttle")]
    pub struct Model {
        /// `user:<username>` or `api_key:<prefix>`.
        #[sea_orm(primary_key, auto_increment = false)]
        pub subject: String,
        pub failures: i32,
        pub next_attempt_at: Option<DateTimeUtc>,
        pub locked_until: Option<DateTimeUtc>,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
