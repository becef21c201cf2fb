//! Accounts and sessions: `register`, `login`, `refresh`, `me`, `logout`, and [`Caller`], the extractor
//! every other route starts with.
//!
//! - Passwords are hashed with Argon2id (t=3, m=64 MiB, p=1) on a blocking thread, at most
//!   [`HASHING_AT_ONCE`] at a time (each takes 64 MiB). An unknown email costs the same hash as a
//!   known one, so timing does not tell which emails have accounts.
//! - Access tokens are JWTs (HS256, [`jsonwebtoken`]) for one account *and device*, valid for a
//!   short time (15 minutes by default), carrying the tier their rate limit follows. The HMAC
//!   secret lives in storage, so every instance sharing a backend accepts every token.
//! - Refresh tokens are 32 random bytes, stored only as their BLAKE3 hash. Each refresh rotates:
//!   the token presented is marked used and a new one of the same **family** (one login) is
//!   issued. A used token presented again means it leaked: the whole family is revoked, and
//!   with it every access token of the family ([`Caller`] checks).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use adiuva_model::ErrorCode;
use adiuva_model::api::BillingTier;
use adiuva_model::envelope::DeviceId;
use axum::Json;
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use chrono::{DateTime, Duration, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use ulid::Ulid;
use utoipa::ToSchema;

use crate::AppState;
use crate::error::{self, ApiError, Body, ErrorBody};
use crate::storage::records::{self, Account, RefreshToken, RevokedFamily};
use crate::storage::{Storage, StorageError};

/// Concurrent password hashes (64 MiB each).
pub const HASHING_AT_ONCE: usize = 2;
/// How long a refresh token lives.
const REFRESH_TTL: Duration = Duration::days(30);
const MIN_PASSWORD_CHARS: usize = 8;
const MAX_PASSWORD_BYTES: usize = 1024;

pub mod password {
    //! Argon2id password hashes in a self-describing text form:
    //! `argon2id$v=19$m=65536,t=3,p=1$SALT$HASH` (salt and hash in hex).

    /// The cost of new hashes: the brief's Argon2id parameters, never weakened for tests.
    const MEMORY_KIB: u32 = 64 * 1024;
    const ITERATIONS: u32 = 3;
    const PARALLELISM: u32 = 1;

    fn derive(password: &str, salt: &[u8], memory_kib: u32, iterations: u32, parallelism: u32) -> Option<[u8; 32]> {
        let params = argon2::Params::new(memory_kib, iterations, parallelism, Some(32)).ok()?;
        let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut hash = [0u8; 32];
        argon.hash_password_into(password.as_bytes(), salt, &mut hash).ok()?;
        Some(hash)
    }

    /// A new hash of `password` with a random salt; `None` only if the system has no randomness.
    pub fn hash(password: &str) -> Option<String> {
        let mut salt = [0u8; 16];
        getrandom::fill(&mut salt).ok()?;
        let hash = derive(password, &salt, MEMORY_KIB, ITERATIONS, PARALLELISM)?;
        Some(format!(
            "argon2id$v=19$m={MEMORY_KIB},t={ITERATIONS},p={PARALLELISM}${}${}",
            hex::encode(salt),
            hex::encode(hash)
        ))
    }

    /// Whether `password` matches `stored` (compared in constant time).
    pub fn verify(password: &str, stored: &str) -> bool {
        let parts: Vec<&str> = stored.split('$').collect();
        let [algorithm, "v=19", params, salt, expected] = parts[..] else { return false };
        if algorithm != "argon2id" {
            return false;
        }
        let mut cost = [0u32; 3];
        for (slot, (name, part)) in cost.iter_mut().zip(["m=", "t=", "p="].into_iter().zip(params.split(','))) {
            match part.strip_prefix(name).and_then(|n| n.parse().ok()) {
                Some(value) => *slot = value,
                None => return false,
            }
        }
        let (Ok(salt), Ok(expected)) = (hex::decode(salt), hex::decode(expected)) else { return false };
        let Some(hash) = derive(password, &salt, cost[0], cost[1], cost[2]) else { return false };
        super::same(&hash, &expected)
    }

    /// A hash to check unknown emails against, so they cost what known ones cost.
    pub const DECOY: &str = "argon2id$v=19$m=65536,t=3,p=1$00000000000000000000000000000000$0000000000000000000000000000000000000000000000000000000000000000";
}

/// Compares without stopping at the first difference.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

/// The access token's claims.
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    /// The account id.
    sub: String,
    email: String,
    /// The device the session belongs to (hex Ed25519 public key).
    dev: String,
    /// The session family (one login).
    fam: String,
    tier: BillingTier,
    seats: u32,
    iat: i64,
    exp: i64,
}

/// Issues and checks access tokens.
pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    pub access_ttl: std::time::Duration,
    /// Read grants' keys: derived from the same secret under their own context, so a grant is
    /// never an access token and an access token never a grant.
    pub(crate) grant_encoding: EncodingKey,
    pub(crate) grant_decoding: DecodingKey,
    pub read_grant_ttl: std::time::Duration,
    /// Access tokens already verified, by the BLAKE3 hash of their text, with their expiry:
    /// checking a token's signature and parsing its claims was a tenth of a blob upload's CPU.
    verified: Mutex<HashMap<[u8; 32], (Caller, i64)>>,
}

/// Most tokens remembered as verified (a few hundred bytes each); past it, the expired ones are
/// forgotten, and all of them if none had expired.
const VERIFIED_TOKENS: usize = 4096;

impl Tokens {
    /// The token secret from storage, made on first use.
    pub async fn load(
        storage: &dyn Storage,
        access_ttl: std::time::Duration,
        read_grant_ttl: std::time::Duration,
    ) -> Result<Self, StorageError> {
        let secret = match storage.get(records::TOKEN_SECRET_KEY).await? {
            Some(secret) => secret,
            None => {
                let mut fresh = [0u8; 32];
                getrandom::fill(&mut fresh).map_err(|e| StorageError::Io {
                    what: "drawing the token secret",
                    source: std::io::Error::other(e.to_string()),
                })?;
                // Another instance may have made one at the same moment: theirs wins if so.
                storage.compare_and_swap(records::TOKEN_SECRET_KEY, None, Some(&fresh[..])).await?;
                storage
                    .get(records::TOKEN_SECRET_KEY)
                    .await?
                    .ok_or_else(|| StorageError::Corrupt { what: "the token secret vanished".into() })?
            }
        };
        Ok(Self::from_secret(&secret, access_ttl, read_grant_ttl))
    }

    /// The tokens of the token secret `secret`.
    pub fn from_secret(secret: &[u8], access_ttl: std::time::Duration, read_grant_ttl: std::time::Duration) -> Self {
        let grant_key = blake3::derive_key(crate::grants::GRANT_KEY_CONTEXT, secret);
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation: validation(),
            access_ttl,
            grant_encoding: EncodingKey::from_secret(&grant_key),
            grant_decoding: DecodingKey::from_secret(&grant_key),
            read_grant_ttl,
            verified: Mutex::new(HashMap::new()),
        }
    }

    fn issue(&self, account: &Account, device: &DeviceId, family: Ulid) -> Result<String, ApiError> {
        let now = Utc::now().timestamp();
        let claims = Claims {
            sub: account.id.to_string(),
            email: account.email.clone(),
            dev: device.to_string(),
            fam: family.to_string(),
            tier: account.tier,
            seats: account.seats,
            iat: now,
            exp: now + self.access_ttl.as_secs() as i64,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|_| ApiError::internal("could not sign an access token"))
    }

    /// The account and device an access token (the text after `Bearer `) is for, if it is valid
    /// and unexpired; whether its session was revoked is for the caller to check.
    ///
    /// A token verified before is taken from memory while it is unexpired: the secret never
    /// changes while the server runs, so the same text verifies the same way.
    pub fn caller(&self, token: &str) -> Result<Caller, ApiError> {
        let key = *blake3::hash(token.as_bytes()).as_bytes();
        let now = Utc::now().timestamp();
        if let Some((caller, _)) = self.remembered().get(&key).filter(|(_, exp)| now < *exp) {
            return Ok(caller.clone());
        }
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|error| match error.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    ErrorCode::RelayTokenExpired,
                    "the access token has expired",
                ),
                _ => error::unauthorized("the access token is not valid"),
            })?;
        let invalid = || error::unauthorized("the access token is not valid");
        let caller = Caller {
            account: claims.sub.parse().map_err(|_| invalid())?,
            email: claims.email,
            device: claims.dev.parse().map_err(|_| invalid())?,
            tier: claims.tier,
            seats: claims.seats,
            family: claims.fam.parse().map_err(|_| invalid())?,
        };
        let mut verified = self.remembered();
        if verified.len() >= VERIFIED_TOKENS {
            verified.retain(|_, (_, exp)| now < *exp);
            if verified.len() >= VERIFIED_TOKENS {
                verified.clear();
            }
        }
        verified.insert(key, (caller.clone(), claims.exp));
        Ok(caller)
    }

    fn remembered(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], (Caller, i64)>> {
        self.verified.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// How tokens and read grants are checked: HS256 only, no leeway on expiry, `exp` and `sub`
/// required.
pub(crate) fn validation() -> Validation {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = 0;
    validation.set_required_spec_claims(&["exp", "sub"]);
    validation
}

/// The account and device a request is made for, from its bearer token; rate-limited by the
/// account's tier.
#[derive(Clone, Debug)]
pub struct Caller {
    pub account: Ulid,
    pub email: String,
    pub device: DeviceId,
    pub tier: BillingTier,
    pub seats: u32,
    /// The session family (one login) the token belongs to.
    pub family: Ulid,
}

impl Caller {
    pub fn account_name(&self) -> String {
        self.account.to_string()
    }

    pub fn requests_per_minute(&self) -> u32 {
        requests_per_minute(self.tier, self.seats)
    }
}

pub fn requests_per_minute(tier: BillingTier, seats: u32) -> u32 {
    match tier {
        BillingTier::Team => tier.requests_per_minute().saturating_mul(seats.max(1)),
        other => other.requests_per_minute(),
    }
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, ApiError> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .ok_or_else(|| error::unauthorized("a bearer access token is required"))?;
        let caller = state.tokens.caller(token)?;
        if state.storage.get(&records::family_key(caller.family)).await?.is_some() {
            return Err(error::unauthorized("this session was revoked"));
        }
        state.limits.check_account(caller.account, caller.requests_per_minute())?;
        Ok(caller)
    }
}

/// Login and registration details. Never logged.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    #[schema(example = "person@example.com")]
    pub email: String,
    /// At least 8 characters.
    pub password: String,
    /// The device's Ed25519 public key (64 hex digits): the session is this device's.
    #[schema(value_type = String)]
    pub device_id: DeviceId,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    pub refresh_token: String,
}

/// A session: tokens for one account and device.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct Session {
    pub access_token: String,
    /// Single use: each refresh returns a new one.
    pub refresh_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds the access token is valid for.
    pub expires_in: u64,
    pub account: AccountView,
}

/// An account as its owner sees it.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct AccountView {
    pub id: String,
    pub email: String,
    /// `free`, `pro`, `power` or `team`.
    pub tier: String,
    pub seats: u32,
    pub created_at: DateTime<Utc>,
    /// Bytes of blobs stored, counted against the quota.
    pub usage_bytes: u64,
    /// The tier's storage quota in bytes; absent when unlimited.
    pub quota_bytes: Option<u64>,
    pub requests_per_minute: u32,
}

fn tier_name(tier: BillingTier) -> String {
    serde_json::to_value(tier).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

async fn view(state: &AppState, account: &Account) -> Result<AccountView, ApiError> {
    Ok(AccountView {
        id: account.id.to_string(),
        email: account.email.clone(),
        tier: tier_name(account.tier),
        seats: account.seats,
        created_at: account.created_at,
        usage_bytes: state.storage.usage(&account.id.to_string()).await?,
        quota_bytes: account.tier.storage_quota_bytes(),
        requests_per_minute: requests_per_minute(account.tier, account.seats),
    })
}

/// Emails are compared lowercased and trimmed.
pub fn normalize_email(email: &str) -> Result<String, ApiError> {
    let email = email.trim().to_lowercase();
    let valid = email.len() <= 254
        && email.split_once('@').is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty())
        && !email.chars().any(|c| c.is_control() || c.is_whitespace());
    if valid { Ok(email) } else { Err(ApiError::invalid("not a valid email address")) }
}

/// A password as registering takes it: 8 to 1024 bytes, at least 8 characters.
pub fn check_password(password: &str) -> Result<(), ApiError> {
    if password.chars().count() < MIN_PASSWORD_CHARS || password.len() > MAX_PASSWORD_BYTES {
        return Err(ApiError::invalid("a password has 8 to 1024 bytes' worth of characters (at least 8 characters)"));
    }
    Ok(())
}

impl AppState {
    /// Runs an Argon2id operation on a blocking thread, at most [`HASHING_AT_ONCE`] at a time.
    async fn hashing<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Result<T, ApiError> {
        let _permit = self.hashing.acquire().await.map_err(|_| ApiError::internal("the server is stopping"))?;
        tokio::task::spawn_blocking(work).await.map_err(|_| ApiError::internal("password hashing failed"))
    }

    pub async fn account(&self, email: &str) -> Result<Option<Account>, ApiError> {
        match self.storage.get(&records::account_key(email)).await? {
            Some(bytes) => Ok(Some(records::decode(&bytes, "an account")?)),
            None => Ok(None),
        }
    }

    /// A new session (a new family) for `account` on `device`.
    async fn open_session(&self, account: &Account, device: DeviceId) -> Result<Session, ApiError> {
        self.issue_session(account, device, Ulid::new()).await
    }

    async fn issue_session(&self, account: &Account, device: DeviceId, family: Ulid) -> Result<Session, ApiError> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|_| ApiError::internal("no randomness for a refresh token"))?;
        let refresh_token = hex::encode(secret);
        let record = RefreshToken {
            account: account.id,
            email: account.email.clone(),
            device,
            family,
            expires_at: Utc::now() + REFRESH_TTL,
            used: false,
        };
        self.storage.put(&records::refresh_key(&token_hash(&refresh_token)), &records::encode(&record)).await?;
        Ok(Session {
            access_token: self.tokens.issue(account, &device, family)?,
            refresh_token,
            token_type: "Bearer".into(),
            expires_in: self.tokens.access_ttl.as_secs(),
            account: view(self, account).await?,
        })
    }
}

fn token_hash(token: &str) -> String {
    blake3::hash(token.as_bytes()).to_hex().to_string()
}

fn anonymous_limit(state: &AppState, ConnectInfo(peer): Peer) -> Result<(), ApiError> {
    state.limits.check_anonymous(peer.ip())
}

type Peer = ConnectInfo<SocketAddr>;

#[utoipa::path(post, path = "/api/v1/auth/register", tag = "auth", request_body = Credentials, security(()),
    responses((status = 201, description = "The account was created; a session for the device", body = Session),
              (status = 400, description = "Malformed body, invalid email or too short a password", body = ErrorBody),
              (status = 415, description = "Body not sent as `application/json`", body = ErrorBody),
              (status = 409, description = "An account with that email exists (`relay.account_exists`)", body = ErrorBody),
              (status = 413, description = "Body too large", body = ErrorBody),
              (status = 429, description = "Too many attempts from this address", body = ErrorBody)))]
pub async fn register(
    State(state): State<Arc<AppState>>,
    peer: Peer,
    Body(credentials): Body<Credentials>,
) -> Result<(StatusCode, Json<Session>), ApiError> {
    anonymous_limit(&state, peer)?;
    let email = normalize_email(&credentials.email)?;
    check_password(&credentials.password)?;
    if state.account(&email).await?.is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::RelayAccountExists,
            "an account with that email exists",
        ));
    }
    let password = credentials.password;
    let password_hash = state
        .hashing(move || password::hash(&password))
        .await?
        .ok_or_else(|| ApiError::internal("no randomness for a password salt"))?;
    let account = Account {
        id: Ulid::new(),
        email: email.clone(),
        password_hash,
        tier: BillingTier::default(),
        seats: 1,
        created_at: Utc::now(),
    };
    if !state.storage.compare_and_swap(&records::account_key(&email), None, Some(&records::encode(&account))).await? {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::RelayAccountExists,
            "an account with that email exists",
        ));
    }
    Ok((StatusCode::CREATED, Json(state.open_session(&account, credentials.device_id).await?)))
}

#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth", request_body = Credentials, security(()),
    responses((status = 200, description = "A new session for the device", body = Session),
              (status = 400, description = "Malformed body", body = ErrorBody),
              (status = 413, description = "Body larger than the route accepts", body = ErrorBody),
              (status = 415, description = "Body not sent as `application/json`", body = ErrorBody),
              (status = 401, description = "Wrong email or password (`relay.bad_credentials`)", body = ErrorBody),
              (status = 429, description = "Too many attempts from this address", body = ErrorBody)))]
pub async fn login(
    State(state): State<Arc<AppState>>,
    peer: Peer,
    Body(credentials): Body<Credentials>,
) -> Result<Json<Session>, ApiError> {
    anonymous_limit(&state, peer)?;
    let refused = || ApiError::new(StatusCode::UNAUTHORIZED, ErrorCode::RelayBadCredentials, "wrong email or password");
    let email = normalize_email(&credentials.email).map_err(|_| refused())?;
    let account = state.account(&email).await?;
    let stored = account.as_ref().map_or(password::DECOY.to_owned(), |a| a.password_hash.clone());
    let password = credentials.password;
    let matches = state.hashing(move || password::verify(&password, &stored)).await?;
    match account {
        Some(account) if matches => Ok(Json(state.open_session(&account, credentials.device_id).await?)),
        _ => Err(refused()),
    }
}

#[utoipa::path(post, path = "/api/v1/auth/refresh", tag = "auth", request_body = RefreshRequest, security(()),
    responses((status = 200, description = "A new access token and the next refresh token of the same session", body = Session),
              (status = 400, description = "Malformed body", body = ErrorBody),
              (status = 413, description = "Body larger than the route accepts", body = ErrorBody),
              (status = 415, description = "Body not sent as `application/json`", body = ErrorBody),
              (status = 401, description = "Unknown, expired or revoked refresh token (`relay.refresh_invalid`), or a reused one, which revokes its session (`relay.refresh_reused`)", body = ErrorBody),
              (status = 429, description = "Too many attempts from this address", body = ErrorBody)))]
pub async fn refresh(
    State(state): State<Arc<AppState>>,
    peer: Peer,
    Body(request): Body<RefreshRequest>,
) -> Result<Json<Session>, ApiError> {
    anonymous_limit(&state, peer)?;
    let invalid =
        || ApiError::new(StatusCode::UNAUTHORIZED, ErrorCode::RelayRefreshInvalid, "the refresh token is not valid");
    let key = records::refresh_key(&token_hash(&request.refresh_token));
    let Some(bytes) = state.storage.get(&key).await? else { return Err(invalid()) };
    let record: RefreshToken = records::decode(&bytes, "a refresh token")?;
    let family_key = records::family_key(record.family);
    if state.storage.get(&family_key).await?.is_some() || record.expires_at <= Utc::now() {
        return Err(invalid());
    }
    let used = RefreshToken { used: true, ..record.clone() };
    // Of two refreshes racing with one token, one rotates and the other is reuse.
    if record.used || !state.storage.compare_and_swap(&key, Some(&bytes), Some(&records::encode(&used))).await? {
        let revoked = RevokedFamily { revoked_at: Utc::now() };
        state.storage.put(&family_key, &records::encode(&revoked)).await?;
        tracing::warn!(family = %record.family, "a refresh token was reused: its session is revoked");
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::RelayRefreshReused,
            "this refresh token was already used: the session is revoked; log in again",
        ));
    }
    let account = state.account(&record.email).await?.ok_or_else(invalid)?;
    Ok(Json(state.issue_session(&account, record.device, record.family).await?))
}

#[utoipa::path(get, path = "/api/v1/auth/me", tag = "auth",
    responses((status = 200, description = "The caller's account, usage and limits", body = AccountView),
              (status = 401, description = "Missing, expired or invalid access token", body = ErrorBody),
              (status = 429, description = "Rate limit of the tier reached", body = ErrorBody)))]
pub async fn me(State(state): State<Arc<AppState>>, caller: Caller) -> Result<Json<AccountView>, ApiError> {
    let account = state
        .account(&caller.email)
        .await?
        .filter(|account| account.id == caller.account)
        .ok_or_else(|| error::unauthorized("the account no longer exists"))?;
    Ok(Json(view(&state, &account).await?))
}

#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth",
    responses((status = 204, description = "The caller's session is revoked: its access tokens and its refresh token are refused from now on"),
              (status = 401, description = "Missing, expired or invalid access token", body = ErrorBody),
              (status = 429, description = "Rate limit of the tier reached", body = ErrorBody)))]
pub async fn logout(State(state): State<Arc<AppState>>, caller: Caller) -> Result<StatusCode, ApiError> {
    let revoked = RevokedFamily { revoked_at: Utc::now() };
    state.storage.put(&records::family_key(caller.family), &records::encode(&revoked)).await?;
    Ok(StatusCode::NO_CONTENT)
}
