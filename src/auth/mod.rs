//! Passwords, access tokens, API keys, and who a request acts for.

mod extract;
mod jwt;
pub mod password;
mod principal;

pub use crate::config::LimitTier;
pub use extract::{AuthUser, MaybeAuthUser};
pub use jwt::{Claims, IssuedToken, JwtKeys};
pub use principal::{KeyHolder, Principal, Scope};
