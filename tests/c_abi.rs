//! The C ABI, tested from C: builds the cdylib, compiles the programs under `tests/c/` (and the
//! C++ wrapper test and the C example) with `-Wall -Wextra -Werror -pedantic`, and runs each one
//! against an in-process emulator, plain, under AddressSanitizer with leak detection, and (for the
//! misuse, device and free-path programs) under valgrind memcheck, each with a timeout. Also: the Go binding's
//! test, the committed header is what cbindgen generates now, it compiles as C11 and C++ (included
//! twice), and pkg-config and CMake find the library.
//!
//! Needs on the machine: cc/c++ (gcc), valgrind, cmake, pkg-config, openssl (test certificates)
//! and Go; a missing tool fails the test that needs it rather than skipping it.
//!
//! The cdylib comes from `cargo build -p ironhub --lib --features capi`, which this harness runs itself (cargo
//! test alone does not refresh `target/<profile>/libironhub.so`); set `IRONHUB_SKIP_CDYLIB_BUILD=1`
//! to use the existing artifact as is.
//!
//! C programs talk to the harness through lines on stdout ("@@ verb args") answered on stdin; see
//! `tests/c/common.h` for the verbs.

#[path = "c/gen_header.rs"]
mod gen_header;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

const RUN_TIMEOUT: Duration = Duration::from_secs(300);

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `target/<profile>` of this test binary (`.../target/debug/deps/c_abi-*` → `.../target/debug`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent().and_then(Path::parent).expect("target/<profile>/deps layout").to_path_buf()
}

/// Builds (once per test process) the cdylib into this test's own target dir and returns its directory.
fn cdylib_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = profile_dir();
        if std::env::var_os("IRONHUB_SKIP_CDYLIB_BUILD").is_none() {
            let target_dir = dir.parent().expect("target dir");
            let profile = dir.file_name().and_then(|p| p.to_str()).unwrap_or("debug");
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let mut cmd = Command::new(cargo);
            cmd.args(["build", "-p", "ironhub", "--lib", "--features", "capi"]).env("CARGO_TARGET_DIR", target_dir).current_dir(repo());
            if profile == "release" {
                cmd.arg("--release");
            }
            let status = cmd.status().expect("run cargo build");
            assert!(status.success(), "cargo build -p ironhub --lib failed");
        }
        let lib = dir.join(if cfg!(target_os = "macos") { "libironhub.dylib" } else { "libironhub.so" });
        assert!(lib.exists(), "{} missing: run `cargo build -p ironhub --lib`", lib.display());
        dir
    })
}

/// Scratch directory for binaries of this test process.
fn out_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = profile_dir().join("c-tests").join(std::process::id().to_string());
        std::fs::create_dir_all(&d).expect("create c-tests dir");
        d
    })
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Flavor {
    Plain,
    Asan,
    /// The plain binary under valgrind memcheck. LeakSanitizer can miss a leaked handle when a
    /// stale copy of its address sits on the stack; memcheck reports it as "definitely lost".
    Valgrind,
}

/// Compiles C (`.c`) or C++ (`.cpp`) sources into an executable linked against the cdylib (one
/// file per flavor, so tests running in parallel never overwrite each other's binary).
fn compile(name: &str, sources: &[&Path], flavor: Flavor) -> PathBuf {
    let libdir = cdylib_dir();
    let is_cpp = sources.iter().any(|s| s.extension().is_some_and(|e| e == "cpp"));
    let exe = out_dir().join(format!("{name}-{flavor:?}"));
    let mut cmd = Command::new(if is_cpp { "c++" } else { "cc" });
    cmd.arg(if is_cpp { "-std=c++17" } else { "-std=c11" });
    cmd.args(["-Wall", "-Wextra", "-Werror", "-pedantic", "-g", "-pthread"]);
    cmd.arg("-I").arg(repo().join("include"));
    cmd.arg("-I").arg(repo().join("tests/c"));
    cmd.arg("-I").arg(repo().join("bindings/cpp"));
    if flavor == Flavor::Asan {
        cmd.args(["-fsanitize=address", "-fno-omit-frame-pointer"]);
    }
    cmd.args(sources);
    cmd.arg("-o").arg(&exe);
    cmd.arg("-L").arg(libdir).arg("-lironhub");
    cmd.arg(format!("-Wl,-rpath,{}", libdir.display()));
    let out = cmd.output().expect("run the C compiler");
    assert!(
        out.status.success(),
        "compiling {name} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    exe
}

fn c_source(file: &str) -> PathBuf {
    repo().join("tests/c").join(file)
}

/// Kills the child if it outlives `timeout`; returns the flag telling whether it did.
fn watchdog(child: Arc<Mutex<Child>>, timeout: Duration) -> Arc<Mutex<bool>> {
    let fired = Arc::new(Mutex::new(false));
    let f = fired.clone();
    std::thread::spawn(move || {
        let start = Instant::now();
        while start.elapsed() < timeout {
            std::thread::sleep(Duration::from_millis(100));
            if child.lock().unwrap().try_wait().ok().flatten().is_some() {
                return;
            }
        }
        *f.lock().unwrap() = true;
        let _ = child.lock().unwrap().kill();
    });
    fired
}

/// Runs a compiled test program with `env`, answering its harness requests, and asserts it
/// exits 0 within the timeout. Returns its stdout (minus requests).
fn run_program(exe: &Path, args: &[&str], env: &[(String, String)], flavor: Flavor) -> String {
    let mut cmd = if flavor == Flavor::Valgrind {
        let mut v = Command::new("valgrind");
        v.args(["--quiet", "--leak-check=full", "--errors-for-leak-kinds=definite,indirect", "--error-exitcode=23"]);
        // ring's hand-written assembly (AES-GCM, ChaCha) reads bytes memcheck believes
        // uninitialised: a known false positive. ASan covers memory errors; valgrind is here for leaks.
        v.arg("--undef-value-errors=no");
        v.arg(format!("--suppressions={}", c_source("valgrind.supp").display()));
        v.arg(exe);
        v
    } else {
        Command::new(exe)
    };
    cmd.args(args);
    cmd.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    if flavor == Flavor::Asan {
        // Leak detection on; exit code 23 tells an ASan finding from a failed CHECK.
        cmd.env("ASAN_OPTIONS", "detect_leaks=1:exitcode=23:abort_on_error=0");
        cmd.env("LSAN_OPTIONS", format!("suppressions={}", c_source("lsan.supp").display()));
    }
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {}: {e}", exe.display()));
    let stdout = child.stdout.take().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut s);
        s
    });
    let child = Arc::new(Mutex::new(child));
    let fired = watchdog(child.clone(), RUN_TIMEOUT);

    let mut output = String::new();
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        if let Some(request) = line.strip_prefix("@@ ") {
            let reply = match service::handle(request) {
                Ok(r) => r,
                Err(e) => format!("ERR {e}"),
            };
            if writeln!(stdin, "{reply}").and_then(|_| stdin.flush()).is_err() {
                break;
            }
        } else {
            output.push_str(&line);
            output.push('\n');
        }
    }
    let status = loop {
        if let Some(s) = child.lock().unwrap().try_wait().expect("wait") {
            break s;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = err_reader.join().unwrap_or_default();
    assert!(
        !*fired.lock().unwrap(),
        "{} timed out after {RUN_TIMEOUT:?}\nstdout:\n{output}\nstderr:\n{stderr}",
        exe.display()
    );
    assert!(status.success(), "{} failed ({status})\nstdout:\n{output}\nstderr:\n{stderr}", exe.display());
    output
}

#[path = "common/fault_proxy.rs"]
#[allow(dead_code)]
mod fault_proxy;

#[path = "c/service.rs"]
mod service;

/// Compiles and runs a test program in one flavor with a fresh identity set.
fn check_program(name: &str, sources: &[&Path], flavor: Flavor) -> String {
    let exe = compile(name, sources, flavor);
    let env = service::environment(&format!("{name}-{}", flavor_tag(flavor)));
    run_program(&exe, &[], &env, flavor)
}

fn flavor_tag(f: Flavor) -> &'static str {
    match f {
        Flavor::Plain => "plain",
        Flavor::Asan => "asan",
        Flavor::Valgrind => "valgrind",
    }
}

// ---------------------------------------------------------------------------------------------
// header

#[test]
fn committed_header_is_fresh() {
    let generated = gen_header::generate_header(repo(), env!("CARGO_PKG_VERSION")).expect("cbindgen");
    let committed = std::fs::read_to_string(repo().join("include/ironhub.h")).expect("read include/ironhub.h");
    assert!(generated == committed, "include/ironhub.h is stale: run `cargo build -p ironhub` and commit the header");
}

#[test]
fn header_compiles_as_c11_and_cpp_twice_included() {
    for (file, flavor) in [("test_header.c", Flavor::Plain), ("test_header.cpp", Flavor::Plain)] {
        let exe = compile(file, &[&c_source(file)], flavor);
        let out = run_program(&exe, &[], &[], flavor);
        assert!(out.contains(&format!("version {}", env!("CARGO_PKG_VERSION"))), "{out}");
    }
}

#[test]
fn version_matches_cargo() {
    let v = unsafe { std::ffi::CStr::from_ptr(ironhub::ffi::result::ironhub_version()) };
    assert_eq!(v.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
}

// ---------------------------------------------------------------------------------------------
// C programs

#[test]
fn c_offline_misuse_plain() {
    check_program("test_offline", &[&c_source("test_offline.c")], Flavor::Plain);
}

#[test]
fn c_offline_misuse_asan() {
    check_program("test_offline", &[&c_source("test_offline.c")], Flavor::Asan);
}

#[test]
fn c_offline_misuse_valgrind() {
    check_program("test_offline", &[&c_source("test_offline.c")], Flavor::Valgrind);
}

#[test]
fn c_device_plain() {
    check_program("test_device", &[&c_source("test_device.c")], Flavor::Plain);
}

#[test]
fn c_device_asan() {
    check_program("test_device", &[&c_source("test_device.c")], Flavor::Asan);
}

#[test]
fn c_device_valgrind() {
    check_program("test_device", &[&c_source("test_device.c")], Flavor::Valgrind);
}

#[test]
fn c_callbacks_concurrent_with_sends_plain() {
    check_program("test_threads", &[&c_source("test_threads.c")], Flavor::Plain);
}

#[test]
fn c_callbacks_concurrent_with_sends_asan() {
    check_program("test_threads", &[&c_source("test_threads.c")], Flavor::Asan);
}

#[test]
fn c_module_and_edge_plain() {
    check_program("test_module", &[&c_source("test_module.c")], Flavor::Plain);
}

#[test]
fn c_module_and_edge_asan() {
    check_program("test_module", &[&c_source("test_module.c")], Flavor::Asan);
}

#[test]
fn c_provisioning_and_upload_plain() {
    check_program("test_provisioning", &[&c_source("test_provisioning.c")], Flavor::Plain);
}

#[test]
fn c_provisioning_and_upload_asan() {
    check_program("test_provisioning", &[&c_source("test_provisioning.c")], Flavor::Asan);
}

/// The queue bounds set from C: a burst of 3,000 async sends under a raised bound all complete OK,
/// each recorded once by the hub; with the link held, exactly the bound of 100 is accepted and the
/// next send is refused at once (issue 9).
#[test]
fn c_queue_bounds_plain() {
    check_program("test_queue_bounds", &[&c_source("test_queue_bounds.c")], Flavor::Plain);
}

#[test]
fn c_queue_bounds_asan() {
    check_program("test_queue_bounds", &[&c_source("test_queue_bounds.c")], Flavor::Asan);
}

#[path = "common/real_proxies.rs"]
#[allow(dead_code)]
mod real_proxies;

/// `ironhub_options_set_proxy` through a real tinyproxy (Basic auth): the program sends through
/// it and sees a wrong password refused; the proxy's log shows the tunnel to the MQTT port.
#[test]
fn c_proxy_plain() {
    const PASSWORD: &str = "c-pr0xy-s3cret";
    let proxy = real_proxies::RealProxy::tinyproxy(Some(("alice", PASSWORD)), None);
    let exe = compile("test_proxy", &[&c_source("test_proxy.c")], Flavor::Plain);
    let mut env = service::environment("proxy-plain");
    env.push(("IRONHUB_TEST_PROXY_PORT".into(), proxy.port.to_string()));
    env.push(("IRONHUB_TEST_PROXY_PASSWORD".into(), PASSWORD.into()));
    run_program(&exe, &[], &env, Flavor::Plain);
    let mqtt_port = env.iter().find(|(k, _)| k == "IRONHUB_TEST_MQTT_PORT").unwrap().1.parse().unwrap();
    proxy.assert_tunnelled_to(mqtt_port);
}

#[test]
fn validation_table_through_the_c_abi() {
    let text = std::fs::read_to_string(repo().join("tests/validation_cases.json")).unwrap();
    let table: serde_json::Value = serde_json::from_str(&text).unwrap();
    let cases = table["cases"].as_array().unwrap();
    let tsv: String = cases
        .iter()
        .map(|c| format!("{}\t{}\n", c["rule"].as_str().unwrap(), c["value"].as_str().unwrap()))
        .collect();
    let file = out_dir().join("validation_cases.tsv");
    std::fs::write(&file, tsv).unwrap();
    let exe = compile("test_validation", &[&c_source("test_validation.c")], Flavor::Asan);
    let out = run_program(&exe, &[file.to_str().unwrap()], &[], Flavor::Asan);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), cases.len(), "{out}");
    let mut failures = Vec::new();
    for (case, line) in cases.iter().zip(&lines) {
        let expect = match case["expect"].as_str().unwrap() {
            "ok" => "IRONHUB_OK",
            "invalid_argument" => "IRONHUB_ERROR_INVALID_ARGUMENT",
            other => panic!("unknown kind {other}"),
        };
        let got = line.split(' ').nth(1).unwrap_or("");
        let contains = case["contains"].as_str().is_none_or(|s| line.contains(s));
        if got != expect || !contains {
            failures.push(format!("{case}: got {line}"));
        }
    }
    assert!(failures.is_empty(), "C disagrees with the table:\n{}", failures.join("\n"));
}

/// Issue 8's re-entrancy through C: every operation from inside every callback, on several clients,
/// while a canary client keeps sending; free from a callback; free with completions queued.
#[test]
fn c_reentrancy_plain() {
    let out = check_program("test_reentrancy", &[&c_source("test_reentrancy.c")], Flavor::Plain);
    assert!(out.contains("reentrancy ok"), "{out}");
}

#[test]
fn c_reentrancy_asan() {
    check_program("test_reentrancy", &[&c_source("test_reentrancy.c")], Flavor::Asan);
}

/// Free from inside callbacks, with completions queued, during a callback, and the sends a drop
/// cancels (connection_retry off): plain, under ASan, and under valgrind.
#[test]
fn c_free_paths_plain() {
    let out = check_program("test_free_paths", &[&c_source("test_free_paths.c")], Flavor::Plain);
    assert!(out.contains("free paths ok"), "{out}");
}

#[test]
fn c_free_paths_asan() {
    check_program("test_free_paths", &[&c_source("test_free_paths.c")], Flavor::Asan);
}

#[test]
fn c_free_paths_valgrind() {
    let out = check_program("test_free_paths", &[&c_source("test_free_paths.c")], Flavor::Valgrind);
    assert!(out.contains("free paths ok"), "{out}");
}

#[test]
fn cpp_wrapper() {
    check_program("test_cpp_wrapper", &[&c_source("test_cpp_wrapper.cpp")], Flavor::Plain);
}

#[test]
fn c_example_telemetry_loop() {
    let src = repo().join("bindings/c/examples/telemetry_loop.c");
    let out = check_program("telemetry_loop", &[&src], Flavor::Plain);
    assert!(out.contains("sent 3 messages"), "{out}");
}

#[test]
fn readme_ten_line_example_compiles() {
    let readme = std::fs::read_to_string(repo().join("bindings/c/README.md")).expect("read bindings/c/README.md");
    let code = readme
        .split("```c\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a ```c block in bindings/c/README.md");
    let src = out_dir().join("readme_example.c");
    std::fs::write(&src, code).unwrap();
    let exe = compile("readme_example", &[&src], Flavor::Plain);
    // Without IOTHUB_DEVICE_CONNECTION_STRING it must fail cleanly (NULL argument), not crash.
    let status = Command::new(&exe).env_remove("IOTHUB_DEVICE_CONNECTION_STRING").status().unwrap();
    assert_eq!(status.code(), Some(1));
}

#[test]
fn go_binding() {
    let go = ["go", "/usr/local/go/bin/go"]
        .into_iter()
        .find(|g| Command::new(g).arg("version").output().is_ok_and(|o| o.status.success()))
        .expect("Go toolchain (go) not found");
    let exe = out_dir().join("go-ironhub.test");
    let libdir = cdylib_dir();
    let built = Command::new(go)
        .args(["test", "-c", "-o"])
        .arg(&exe)
        .current_dir(repo().join("bindings/go"))
        .env("CGO_ENABLED", "1")
        .env("CGO_CFLAGS", format!("-I{}", repo().join("include").display()))
        .env("CGO_LDFLAGS", format!("-L{0} -Wl,-rpath,{0}", libdir.display()))
        .output()
        .expect("run go test -c");
    assert!(built.status.success(), "go test -c failed:\n{}", String::from_utf8_lossy(&built.stderr));
    let mut env = service::environment("go");
    env.push(("IRONHUB_TEST_VERSION".into(), env!("CARGO_PKG_VERSION").into()));
    let cases = repo().join("tests/validation_cases.json");
    env.push(("IRONHUB_VALIDATION_CASES".into(), cases.display().to_string()));
    let out = run_program(&exe, &["-test.v", "-test.timeout=240s"], &env, Flavor::Plain);
    for test in ["TestAgainstEmulator", "TestFactories", "TestValidationTable"] {
        assert!(out.contains(&format!("--- PASS: {test}")), "{test} did not pass:\n{out}");
    }
}

// ---------------------------------------------------------------------------------------------
// packaging

#[test]
fn pkg_config_file_links_the_example() {
    let dir = cdylib_dir();
    let pc = Command::new("pkg-config")
        .args(["--cflags", "--libs", "ironhub"])
        .env("PKG_CONFIG_PATH", dir)
        .output()
        .expect("run pkg-config");
    assert!(pc.status.success(), "pkg-config: {}", String::from_utf8_lossy(&pc.stderr));
    let flags = String::from_utf8(pc.stdout).unwrap();
    assert!(flags.contains("-lironhub") && flags.contains(&repo().join("include").display().to_string()), "{flags}");
    let exe = out_dir().join("pkgconfig-header-test");
    let status = Command::new("cc")
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror"])
        .arg(c_source("test_header.c"))
        .arg("-o")
        .arg(&exe)
        .args(flags.split_whitespace())
        .arg(format!("-Wl,-rpath,{}", dir.display()))
        .status()
        .expect("cc");
    assert!(status.success());
    let run = Command::new(&exe).output().unwrap();
    assert!(run.status.success() && String::from_utf8_lossy(&run.stdout).contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn cmake_find_package_builds_against_the_library() {
    let build = out_dir().join("cmake-build");
    let _ = std::fs::remove_dir_all(&build);
    let configure = Command::new("cmake")
        .arg("-S")
        .arg(c_source("cmake"))
        .arg("-B")
        .arg(&build)
        .arg(format!("-Dironhub_DIR={}", repo().join("cmake").display()))
        .arg(format!("-DIRONHUB_LIB_DIR={}", cdylib_dir().display()))
        .arg(format!("-DIRONHUB_TEST_SOURCE={}", c_source("test_header.c").display()))
        .output()
        .expect("run cmake");
    assert!(
        configure.status.success(),
        "{}{}",
        String::from_utf8_lossy(&configure.stdout),
        String::from_utf8_lossy(&configure.stderr)
    );
    let built = Command::new("cmake").arg("--build").arg(&build).output().expect("cmake --build");
    assert!(
        built.status.success(),
        "{}{}",
        String::from_utf8_lossy(&built.stdout),
        String::from_utf8_lossy(&built.stderr)
    );
    let out = Command::new(build.join("ironhub_cmake_test")).output().expect("run cmake-built program");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
}
