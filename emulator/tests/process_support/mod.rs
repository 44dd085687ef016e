//! Runs the `ironhub-emulator` binary as users do: `serve` on free ports in a state directory,
//! ready once `hub.json` appears (it is written last, when both listeners accept).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_ironhub-emulator");

/// Starts `serve` in `dir` (an old `hub.json` removed first) and returns the process with the
/// contents of the `hub.json` it wrote; fails the test if none appears within 30 s.
pub fn serve(dir: &Path) -> (Child, Value) {
    let _ = std::fs::remove_file(dir.join("hub.json"));
    // IRONHUB_EMULATOR_UNDER_TEST: another build of the emulator, to measure two side by side.
    let bin = std::env::var_os("IRONHUB_EMULATOR_UNDER_TEST").unwrap_or_else(|| BIN.into());
    let child = Command::new(bin)
        .args(["serve", "--state-dir", dir.to_str().unwrap(), "--mqtt-port", "0", "--https-port", "0"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let info = loop {
        if let Ok(bytes) = std::fs::read(dir.join("hub.json")) {
            break serde_json::from_slice(&bytes).unwrap();
        }
        assert!(Instant::now() < deadline, "hub.json never appeared");
        std::thread::sleep(Duration::from_millis(20));
    };
    (child, info)
}
