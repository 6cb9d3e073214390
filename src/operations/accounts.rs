//! Registration, login, and changes to one's own account.

use std::net::IpAddr;

use secrecy::SecretString;

use super::{api_keys, audit, users::NO_USER};
use crate::{
    App,
    auth::{AuthUser, IssuedToken},
    db::{Session, UserUpdate},
    domain::{Email, NewUser, Tier, User, UserPatch},
    error::{Error, Result},
    traffic::login::{Attempt, LoginLimits},
};

/// Registers a user: validates every field at once, hashes the password (on the blocking
/// pool), and lets the data layer place the user on a shard and claim the email in the
/// directory. A taken email is a `Conflict`, on whichever shard it lives.
///
/// First of all, the attempt is charged to the email and to `client`'s address
/// (`src/traffic/login.rs`): registration hashes a password, and its 409 tells whether an
/// email is registered, so it is limited like a login.
pub async fn register(
    app: &App,
    session: &Session,
    client: IpAddr,
    email: &str,
    name: &str,
    password: &str,
) -> Result<User> {
    let result = async {
        let account = Email::parse(email).ok();
        LoginLimits::new(&app.limiter, &app.config)
            .admit(
                Attempt::Register,
                account.as_ref().map(Email::as_str),
                client,
            )
            .await?;
        let new = NewUser::parse(email, name, password)?;
        let hash = app.hasher.hash(&new.password.0).await?;
        let user = app.db.directory().register(session, &new, &hash).await?;
        // A "not found" for this new id may be cached (someone asked for it before): drop it.
        app.cache.user_created(session, user.id).await;
        Ok(user)
    }
    .await;
    let subject = result.as_ref().ok().map(|user| user.id);
    audit::record("account.register", None, subject, &result);
    result
}

/// Checks an email and password and issues an access token. Unknown email, malformed email
/// and wrong password get the same `Unauthorized`, in about the same time: a decoy hash is
/// checked when there is no user (see [`Hasher::verify`](crate::auth::password::Hasher::verify)), so neither the answer nor its
/// timing tells an attacker which emails are registered.
///
/// Before any of that, the try is charged to the account and to `client`'s address
/// (`src/traffic/login.rs`); past either budget, a 429 and no password check. Unknown emails
/// are charged like known ones, so the 429 tells nothing either.
pub async fn login(
    app: &App,
    session: &Session,
    client: IpAddr,
    email: &str,
    password: SecretString,
) -> Result<IssuedToken> {
    const REFUSED: Error = Error::Unauthorized("the email or password is wrong");
    let mut account = None;
    let result = async {
        let email = Email::parse(email).ok();
        LoginLimits::new(&app.limiter, &app.config)
            .admit(Attempt::Login, email.as_ref().map(Email::as_str), client)
            .await?;
        let user = match email {
            Some(email) => app.db.directory().credentials(session, &email).await?,
            None => None,
        };
        account = user.as_ref().map(|found| found.id);
        let (stored, tier, id, version) = match user {
            Some(found) => (
                Some(found.password_hash),
                found.tier,
                found.id,
                found.credentials_version,
            ),
            None => (None, Tier::Free, 0, 0),
        };
        if !app.hasher.verify(&password, stored).await? {
            return Err(REFUSED);
        }
        Ok(app.jwt.issue(id, tier, version)?)
    }
    .await;
    let actor = account
        .filter(|_| result.is_ok())
        .map(|id| AuthUser { id, key_id: None });
    audit::record("account.login", actor, account, &result);
    result
}

/// Changes account `id`: the user themself only (checked before the input, so a stranger
/// learns nothing from validation messages); a new password is hashed, a new email is
/// re-claimed in the directory by the data layer.
pub async fn update(
    app: &App,
    session: &Session,
    me: AuthUser,
    id: i64,
    email: Option<&str>,
    name: Option<&str>,
    password: Option<&str>,
) -> Result<User> {
    let result = async {
        if me.id != id {
            return Err(Error::Forbidden(
                "only the user themself may change their account",
            ));
        }
        let patch = UserPatch::parse(email, name, password)?;
        let password_hash = match &patch.password {
            Some(p) => Some(app.hasher.hash(&p.0).await?),
            None => None,
        };
        let update = UserUpdate {
            email: patch.email,
            name: patch.name,
            password_hash,
        };
        let user = app
            .db
            .directory()
            .update_user(session, id, update)
            .await?
            .ok_or(NO_USER)?;
        app.cache.user_changed(session, id).await;
        if patch.password.is_some() {
            app.credential_versions.forget(id).await;
        }
        Ok(user)
    }
    .await;
    audit::record("account.update", Some(me), Some(id), &result);
    result
}

/// Deletes account `id` and, with it, the user's posts and API keys: the user themself only.
pub async fn delete(app: &App, session: &Session, me: AuthUser, id: i64) -> Result<()> {
    let result = async {
        if me.id != id {
            return Err(Error::Forbidden(
                "only the user themself may delete their account",
            ));
        }
        let posts = app
            .db
            .directory()
            .delete_user(session, id)
            .await?
            .ok_or(NO_USER)?;
        app.cache.user_deleted(session, id, &posts).await;
        app.credential_versions.forget(id).await;
        api_keys::revoke_all_of(app, id).await;
        Ok(())
    }
    .await;
    audit::record("account.delete", Some(me), Some(id), &result);
    result
}

/// The [`VersionStore`](crate::auth::VersionStore) token checks ask on a cache miss: the
/// user's shard primary (a replica behind a password change would still say the old version).
pub struct ShardVersions(pub std::sync::Arc<crate::db::Db>);

impl crate::auth::VersionStore for ShardVersions {
    fn version(&self, id: i64) -> crate::auth::VersionLookup<'_> {
        Box::pin(async move {
            Ok(self
                .0
                .users()
                .credentials_version(&Session::background(), id)
                .await?)
        })
    }
}
