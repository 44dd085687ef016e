//! The `ironhub-emulator` binary: `--help`, bad flags (exit 2), and `serve` writing hub.json
//! once it accepts connections.

mod process_support;

use std::process::Command;

use process_support::BIN;

#[test]
fn help_documents_every_flag() {
    let out = Command::new(BIN).args(["serve", "--help"]).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for flag in ["--state-dir", "--hostname", "--mqtt-port", "--https-port", "--policy-key", "--ca-cert", "--memory-only", "hub.json"] {
        assert!(text.contains(flag), "--help lacks {flag}:\n{text}");
    }
    assert!(Command::new(BIN).arg("--help").output().unwrap().status.success());
}

#[test]
fn bad_flags_exit_2_with_a_message() {
    for args in [vec!["serve", "--no-such-flag"], vec!["serve"], vec!["serve", "--state-dir", "x", "--mqtt-port", "http"], vec!["serve", "--state-dir", "x", "--policy-key", "!!"]] {
        let out = Command::new(BIN).args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(!out.stderr.is_empty());
    }
}

#[test]
fn serve_writes_hub_json_and_answers() {
    let dir = std::env::temp_dir().join(format!("ironhub-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (mut child, info) = process_support::serve(&dir);
    let result = std::panic::catch_unwind(|| {
        assert_eq!(info["hostname"], "localhost");
        for port in ["mqttPort", "httpsPort"] {
            let port = info[port].as_u64().unwrap() as u16;
            assert_ne!(port, 0);
            assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(), "{port} accepts");
        }
        let cs = info["serviceConnectionString"].as_str().unwrap();
        assert!(cs.starts_with(&format!("HostName=localhost:{};SharedAccessKeyName=iothubowner;SharedAccessKey=", info["httpsPort"])));
        assert!(std::path::Path::new(info["caFile"].as_str().unwrap()).exists());
    });
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}
