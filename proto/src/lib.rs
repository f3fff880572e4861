//! The retail suite's contracts: generated messages, clients and servers for every
//! `retail.*.v1` package, and the encoded descriptor set for server reflection.
//!
//! Services meet only through these types; no service depends on another's crate.

#![allow(clippy::doc_lazy_continuation, clippy::large_enum_variant)]

/// The encoded `FileDescriptorSet` of every retail proto and its imports.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/retail_descriptor.bin"));

pub mod retail {
    pub mod analytics {
        pub mod v1 {
            tonic::include_proto!("retail.analytics.v1");
        }
    }
    pub mod catalog {
        pub mod v1 {
            tonic::include_proto!("retail.catalog.v1");
        }
    }
    pub mod common {
        pub mod v1 {
            tonic::include_proto!("retail.common.v1");
        }
    }
    pub mod events {
        pub mod v1 {
            tonic::include_proto!("retail.events.v1");
        }
    }
    pub mod identity {
        pub mod v1 {
            tonic::include_proto!("retail.identity.v1");
        }
    }
    pub mod membership {
        pub mod v1 {
            tonic::include_proto!("retail.membership.v1");
        }
    }
    pub mod orders {
        pub mod v1 {
            tonic::include_proto!("retail.orders.v1");
        }
    }
    pub mod partner {
        pub mod v1 {
            tonic::include_proto!("retail.partner.v1");
        }
    }
}

pub use retail::analytics::v1 as analytics;
pub use retail::catalog::v1 as catalog;
pub use retail::common::v1 as common;
pub use retail::events::v1 as events;
pub use retail::identity::v1 as identity;
pub use retail::membership::v1 as membership;
pub use retail::orders::v1 as orders;
pub use retail::partner::v1 as partner;
