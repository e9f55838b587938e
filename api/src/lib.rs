//! The HTTP surface of Keyless CA and its command line.
//!
//! - [`cli`]: the `keyless` commands (`serve`, `ca init`, `config check`, `trusted-root`, `ctlog serve`, `dev token`);
//! - [`check`]: `keyless config check`, explaining a configuration and a token without issuing;
//! - [`server`]: start-up wiring (config → CA → OIDC) and serving with graceful shutdown;
//! - [`routes`]: Fulcio's REST API (v2 and legacy v1) with protojson-compatible JSON, decoding into
//!   requests for [`issuance`], which decides, issues and records whatever the front door;
//! - [`conn`]: serving connections under limits slow or greedy clients cannot exhaust;
//! - [`redact`]: bounding and redacting client text before it is answered, logged or recorded;
//! - [`error`]: the one mapping from every error to an HTTP status and client message;
//! - [`dev`]: the insecure development issuer used by `serve --dev` and `dev token`;
//! - [`trust`]: the Sigstore trusted root and client trust config for a deployment;
//! - [`protect`]: request ids, load shedding, timeouts, header limits, CORS, rate limits;
//! - [`instrument`]: metrics around the signer and the CT log;
//! - [`tls`]: native TLS with certificate reloading;
//! - [`audit_cli`] and [`review`]: `keyless audit …` and its read-only review page.

#![forbid(unsafe_code)]

pub mod audit_cli;
pub mod check;
pub mod cli;
pub mod conn;
pub mod dev;
pub mod error;
pub mod instrument;
pub mod issuance;
pub mod metrics;
pub mod protect;
pub mod redact;
pub mod review;
pub mod routes;
pub mod server;
pub mod tls;
pub mod trust;
mod wire;

/// The signing-request decoders the routes use, public for the fuzz tests.
pub use wire::{decode_v1, decode_v2};
