//! The step runner the examples share: each step is printed, bounded in time, and its error
//! names the step.

use std::future::Future;
use std::time::Duration;

/// Every step is bounded: a hang is reported as a failure, not waited out.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(30);

pub async fn step<T, F>(what: &str, fut: F) -> Result<T, String>
where
    F: Future<Output = Result<T, String>>,
{
    println!("- {what} ...");
    match tokio::time::timeout(STEP_TIMEOUT, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!("{what}: no answer within {} s", STEP_TIMEOUT.as_secs())),
    }
}

pub fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}
