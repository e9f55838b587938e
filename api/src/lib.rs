//! Keyless CA's HTTP surface: Fulcio's REST API in front of the issuance service.
//!
//! - [`routes`]: the routes and [`routes::app`], the whole API as served (tests drive it in
//!   process); signing routes only decode ([`wire`]), call [`keyless_service::Service::issue`] and
//!   encode;
//! - [`wire`]: Fulcio's JSON shapes with protojson's input rules;
//! - [`error`]: the one mapping from every error to an HTTP status and client message;
//! - [`protect`]: request ids, the whole body read before a request takes a slot, load shedding,
//!   timeouts, header limits, CORS;
//! - [`conn`]: serving connections under limits slow or greedy clients cannot exhaust;
//! - [`tls`]: native TLS with certificate reloading;
//! - [`dev`]: the insecure development issuer used by `serve --dev` and `dev token`.

#![forbid(unsafe_code)]

pub mod conn;
pub mod dev;
pub mod error;
pub mod protect;
pub mod routes;
pub mod tls;
pub mod wire;

pub use crate::routes::{AppState, app};
pub use crate::wire::{decode_v1, decode_v2};
