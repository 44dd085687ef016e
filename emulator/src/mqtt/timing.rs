//! Owns the emulator's response timing: an optional fixed latency plus random jitter added before
//! every hub → device answer (twin responses, direct-method requests, C2D and input deliveries),
//! so tests surface races that instant answers hide. Zero by default.

use std::time::Duration;

use rand::Rng;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timing {
    /// Added to every answer.
    pub latency: Duration,
    /// Up to this much more, uniformly at random, per answer.
    pub jitter: Duration,
}

impl Timing {
    pub fn is_instant(&self) -> bool {
        self.latency.is_zero() && self.jitter.is_zero()
    }

    /// The delay of one answer: `latency + U[0, jitter]`.
    pub fn delay(&self) -> Duration {
        let jitter_ms = self.jitter.as_millis() as u64;
        let extra = if jitter_ms == 0 { 0 } else { rand::thread_rng().gen_range(0..=jitter_ms) };
        self.latency + Duration::from_millis(extra)
    }

    /// Waits one answer's delay (nothing when instant).
    pub async fn pause(&self) {
        if !self.is_instant() {
            tokio::time::sleep(self.delay()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_is_latency_plus_bounded_jitter() {
        let t = Timing { latency: Duration::from_millis(50), jitter: Duration::from_millis(20) };
        for _ in 0..200 {
            let d = t.delay();
            assert!(d >= Duration::from_millis(50) && d <= Duration::from_millis(70), "{d:?}");
        }
        assert!(Timing::default().is_instant());
        assert_eq!(Timing::default().delay(), Duration::ZERO);
    }
}
