//! The registry's rules: what a push, a pull, a delete or a referrers query
//! does, in which order things become durable, and who may do what.
//!
//! Layering: http calls core; core calls db and storage; nothing calls up.
//! Core never sees HTTP types: bodies arrive as [`ByteStream`], answers leave
//! as plain values and [`Error`]s carrying an OCI [`ErrorCode`].

mod cache;
pub mod cron;
mod error;
mod gc;
pub mod jobs;
pub mod policy;
pub mod proxy;
mod registry;
pub mod remote;
pub mod replication;
pub mod retention;
pub mod scrub;
pub mod sealed;
pub mod shared;
pub mod vanity;
pub mod webhook;

pub mod auth;
pub use auth::{Access, Action, AllowAll, Authorizer, Credentials, Principal, Resource};
pub use berth_oci::ErrorCode;
pub use berth_storage::ByteStream;
pub use error::{Error, Result};
pub use gc::{summary as gc_summary, GcOptions, GcReport};
pub use registry::{BlobRead, Event, EventKind, Limits, ManifestPut, ManifestRead, Page, Registry};
