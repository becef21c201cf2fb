//! Request rate limits (GCRA, [`governor`]): per account at its tier's requests per minute
//! (a team's per seat), and per client address for the routes without a token (register,
//! login, refresh), so passwords cannot be tried at speed.
//!
//! A limit allows its whole minute's worth at once, then one more request each 60/N seconds;
//! a refused request gets 429 with `Retry-After` in whole seconds. The state is per instance:
//! several instances behind a load balancer each apply the limit to what reaches them.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use ulid::Ulid;

use crate::error::{self, ApiError};

pub struct Limits {
    clock: DefaultClock,
    /// Each account's limiter, with the rate it was made for (a tier change makes a new one).
    accounts: Mutex<HashMap<Ulid, (u32, Arc<DefaultDirectRateLimiter>)>>,
    anonymous: DefaultKeyedRateLimiter<IpAddr>,
}

fn per_minute(rate: u32) -> Quota {
    Quota::per_minute(NonZeroU32::new(rate).unwrap_or(NonZeroU32::MIN))
}

impl Limits {
    /// `anonymous_per_minute`: the limit per client address on routes without a token.
    pub fn new(anonymous_per_minute: u32) -> Self {
        Self {
            clock: DefaultClock::default(),
            accounts: Mutex::new(HashMap::new()),
            anonymous: RateLimiter::keyed(per_minute(anonymous_per_minute)),
        }
    }

    pub fn check_account(&self, account: Ulid, rate: u32) -> Result<(), ApiError> {
        let limiter = {
            let mut accounts = self.accounts.lock().unwrap_or_else(|p| p.into_inner());
            let entry =
                accounts.entry(account).or_insert_with(|| (rate, Arc::new(RateLimiter::direct(per_minute(rate)))));
            if entry.0 != rate {
                *entry = (rate, Arc::new(RateLimiter::direct(per_minute(rate))));
            }
            entry.1.clone()
        };
        limiter.check().map_err(|until| self.refused(until.wait_time_from(self.clock.now())))
    }

    pub fn check_anonymous(&self, address: IpAddr) -> Result<(), ApiError> {
        self.anonymous.check_key(&address).map_err(|until| self.refused(until.wait_time_from(self.clock.now())))
    }

    fn refused(&self, wait: std::time::Duration) -> ApiError {
        // Whole seconds, rounded up, at least one: a client that waits that long gets through.
        error::rate_limited((wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1))
    }
}
