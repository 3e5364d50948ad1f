//! Per-connection limits: queries running at once, and requests per minute.

use std::num::NonZeroU32;
use std::sync::Arc;

use dashmap::DashMap;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::GatewayError;

/// Past this many tracked connections, idle entries are dropped.
const PRUNE_ABOVE: usize = 10_000;

pub struct ConnectionLimits {
    max_concurrent: Option<usize>,
    /// Sharded, so requests of different connections do not wait on one lock.
    running: DashMap<i64, Arc<Semaphore>>,
    rate: Option<DefaultKeyedRateLimiter<i64>>,
}

/// Held while a query runs, including while its result streams.
pub struct Admission {
    _permit: Option<OwnedSemaphorePermit>,
}

impl ConnectionLimits {
    /// `0` means unlimited for either limit.
    pub fn new(max_concurrent: usize, per_minute: u32) -> Self {
        Self {
            max_concurrent: (max_concurrent > 0).then_some(max_concurrent),
            running: DashMap::new(),
            rate: NonZeroU32::new(per_minute).map(|n| RateLimiter::keyed(Quota::per_minute(n))),
        }
    }

    pub fn admit(&self, connection_id: i64) -> Result<Admission, GatewayError> {
        if let Some(rate) = &self.rate
            && rate.check_key(&connection_id).is_err()
        {
            return Err(GatewayError::RateLimited);
        }
        let Some(max) = self.max_concurrent else {
            return Ok(Admission { _permit: None });
        };
        let existing = self.running.get(&connection_id).map(|s| s.clone());
        let semaphore = match existing {
            Some(semaphore) => semaphore,
            None => {
                if self.running.len() > PRUNE_ABOVE {
                    self.running.retain(|_, s| s.available_permits() < max);
                    if let Some(rate) = &self.rate {
                        rate.retain_recent();
                    }
                }
                self.running
                    .entry(connection_id)
                    .or_insert_with(|| Arc::new(Semaphore::new(max)))
                    .clone()
            }
        };
        let permit = semaphore
            .try_acquire_owned()
            .map_err(|_| GatewayError::TooManyQueries(max))?;
        Ok(Admission {
            _permit: Some(permit),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrency_is_per_connection_and_released_on_drop() {
        let limits = ConnectionLimits::new(2, 0);
        let a = limits.admit(1).unwrap();
        let _b = limits.admit(1).unwrap();
        assert!(matches!(
            limits.admit(1),
            Err(GatewayError::TooManyQueries(2))
        ));
        assert!(
            limits.admit(2).is_ok(),
            "another connection is not affected"
        );
        drop(a);
        assert!(limits.admit(1).is_ok());
    }

    #[test]
    fn rate_is_per_connection() {
        let limits = ConnectionLimits::new(0, 3);
        for _ in 0..3 {
            assert!(limits.admit(7).is_ok());
        }
        assert!(matches!(limits.admit(7), Err(GatewayError::RateLimited)));
        assert!(limits.admit(8).is_ok());
    }
}
