//! Owns the optional throttling (`--throttle s1`; off by default): IoT Hub's S1 limits for one
//! unit, as token buckets holding one second's worth, hub-wide as IoT Hub counts them:
//!
//! | operation | S1 limit | when exceeded |
//! |---|---|---|
//! | device-to-cloud sends | 100/s | traffic shaping: the PUBACK waits for capacity |
//! | twin reads (device/module GET) | 100/s | twin response status 429, `errorCode` 429001 |
//! | twin updates (reported PATCH) | 50/s | twin response status 429, `errorCode` 429001 |
//! | direct methods | 160 KB/s in 4 KB meters (40 small calls/s) | HTTP 429 `ThrottlingException` (429001) |

use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::error::{HubError, THROTTLED};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tier {
    S1,
}

impl FromStr for Tier {
    type Err = String;
    fn from_str(s: &str) -> Result<Tier, String> {
        match s.to_ascii_lowercase().as_str() {
            "s1" => Ok(Tier::S1),
            _ => Err(format!("{s:?}: the only throttling tier is s1")),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    DeviceToCloud,
    TwinRead,
    TwinUpdate,
    /// Counted in 4 KB meters of its payload (at least one).
    Method { payload_bytes: usize },
}

struct Bucket {
    per_second: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(per_second: f64) -> Bucket {
        Bucket { per_second, tokens: per_second, at: Instant::now() }
    }

    /// Takes `cost` now, or says how long until it could be taken.
    fn take(&mut self, cost: f64) -> Result<(), Duration> {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.at).as_secs_f64() * self.per_second).min(self.per_second);
        self.at = now;
        if self.tokens >= cost {
            self.tokens -= cost;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((cost - self.tokens) / self.per_second))
        }
    }
}

pub struct Throttle {
    /// Device-to-cloud, twin reads, twin updates, methods.
    buckets: Mutex<[Bucket; 4]>,
}

impl Throttle {
    pub fn new(tier: Tier) -> Throttle {
        match tier {
            Tier::S1 => Throttle { buckets: Mutex::new([Bucket::new(100.0), Bucket::new(100.0), Bucket::new(50.0), Bucket::new(40.0)]) },
        }
    }

    fn take(&self, op: Operation) -> Result<(), Duration> {
        let (index, cost) = match op {
            Operation::DeviceToCloud => (0, 1.0),
            Operation::TwinRead => (1, 1.0),
            Operation::TwinUpdate => (2, 1.0),
            Operation::Method { payload_bytes } => (3, payload_bytes.div_ceil(4096).max(1) as f64),
        };
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        buckets[index].take(cost)
    }

    /// 429001 when `op` is over the limit now.
    pub fn check(&self, op: Operation) -> Result<(), HubError> {
        self.take(op).map_err(|_| HubError::new(THROTTLED, "IoT Hub throttling: the S1 limit for this operation is exceeded"))
    }

    /// Waits until `op` fits (traffic shaping).
    pub async fn shape(&self, op: Operation) {
        while let Err(wait) = self.take(op) {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_of_burst_then_the_rate() {
        let t = Throttle::new(Tier::S1);
        let ok = (0..200).filter(|_| t.check(Operation::TwinUpdate).is_ok()).count();
        assert!((50..=51).contains(&ok), "{ok}");
        assert_eq!(t.check(Operation::TwinUpdate).unwrap_err().code, 429001);
        assert!(t.check(Operation::TwinRead).is_ok(), "buckets are separate");
        assert!(t.check(Operation::Method { payload_bytes: 40 * 4096 }).is_ok());
        assert!(t.check(Operation::Method { payload_bytes: 1 }).is_err(), "a 160 KB call used the second's meters");
        assert_eq!("S1".parse::<Tier>(), Ok(Tier::S1));
        assert!("s2".parse::<Tier>().is_err());
    }
}
