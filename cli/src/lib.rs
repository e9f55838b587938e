//! The `keyless` commands.
//!
//! - [`cli`]: argument parsing and dispatch (`serve`, `ca init`, `config check`, `trusted-root`,
//!   `ctlog serve`, `audit …`, `dev token`);
//! - [`serve`]: the process: building the CA, log, record and service from a configuration,
//!   serving the API, reloading issuers, and shutting down in order;
//! - [`check`]: `keyless config check`, explaining a configuration and a token without issuing;
//! - [`trust`]: the Sigstore trusted root and client trust config for a deployment;
//! - [`audit_cli`]: `keyless audit …`;
//! - [`metrics`]: the Prometheus recorder and its listener.

#![forbid(unsafe_code)]

pub mod audit_cli;
pub mod check;
pub mod cli;
pub mod metrics;
pub mod serve;
pub mod trust;
