//! Passwords, access tokens, and the authenticated-user extractors.

mod extract;
mod jwt;
pub mod password;

pub use extract::{AuthUser, MaybeAuthUser};
pub use jwt::{Claims, IssuedToken, JwtKeys};
