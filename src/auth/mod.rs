//! Passwords, access tokens, API keys, and who a request acts for.

pub mod api_key;
mod extract;
mod jwt;
pub mod password;
mod principal;
mod sessions;

pub use crate::config::LimitTier;
pub use crate::domain::Scope;
pub use api_key::{ApiKeyVerifier, KeyStore, MintedSecret, StoredKey};
pub use extract::MaybeAuthUser;
pub use jwt::{Claims, IssuedToken, JwtKeys};
pub use principal::{AuthUser, KeyHolder, Principal, RefusedCredentials, TokenUser};
pub use sessions::{CredentialVersions, VersionLookup, VersionStore};
