//! Shared harness for the end-to-end tests.
//!
//! Every test builds its own [`TestEnv`] (a temporary directory with a config file, a
//! SQLite store and a master key), drives the real `portcullis` binary through its CLI,
//! starts a real server with [`TestEnv::start_server`] and talks to it with real
//! third-party peers: `radclient` (freeradius-utils) as the NAS and `oathtool` as the
//! authenticator app. Raw datagrams, for what radclient cannot show (byte-identical
//! retransmissions, attribute order), go through [`raw::RawClient`]; the web pages, through
//! the raw HTTP client and the form and cookie helpers of [`web`].
//!
//! PAM tests run `pamtester` (and a real `sshd` driven by `expect`) under `pam_wrapper`
//! against `libpam_portcullis.so` and a server with a `[pam]` socket ([`pam::PamFixture`]).
//!
//! A missing peer or binary makes the test fail with a message saying what to install or
//! build: these tests never skip.

pub mod env;
pub mod fakes;
pub mod freeradius;
pub mod http;
pub mod netns;
pub mod pam;
pub mod pam_radius;
pub mod postgres;
pub mod process;
pub mod radclient;
pub mod raw;
pub mod server;
pub mod slapd;
pub mod store_suite;
pub mod tools;
pub mod totp;
pub mod web;
pub mod webdriver;

pub use env::{ClientSpec, FactorInfo, LoginFixture, Mode, TestEnv, TotpOptions};
pub use pam::{describe, pam_module_path, require_root, PamFixture};
pub use radclient::{radclient, radclient_command, radclient_waiting, RadReply};
pub use raw::RawClient;
pub use server::Server;
pub use tools::{portcullis_bin, require_tool};
pub use totp::{oathtool_totp, oathtool_totp_at, random_base32_secret, wrong_totp, Algorithm};
