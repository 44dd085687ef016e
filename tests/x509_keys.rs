//! X.509 identities end to end against the emulator over TLS: private keys encrypted the ways the
//! `openssl` CLI writes them (PKCS#8 PBES2 and the legacy `Proc-Type: 4,ENCRYPTED` PEM, RSA and EC),
//! the errors for a wrong, missing or corrupted key, and CA-signed devices whose certificate file
//! holds leaf + intermediate up to a root registered through the hub's `/certificates` API, and
//! file upload by X.509 devices (the client certificate on the HTTPS calls, no token), and DPS
//! registration through a group enrollment with the same chains.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use ironhub::{Client, ErrorKind, Message, X509};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use serde_json::json;
use sha2::Digest;

const PASS: &str = "correct-horse-42";

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ironhub-x509-keys-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `openssl` with `command_line` split at spaces (no argument here has one).
fn openssl(dir: &Path, command_line: &str) {
    let args: Vec<&str> = command_line.split_whitespace().collect();
    let out = Command::new("openssl").args(&args).current_dir(dir).output().expect("the openssl CLI runs");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn sha256_hex(pem_file: &Path) -> String {
    let pem = std::fs::read(pem_file).unwrap();
    let der = rustls_pemfile::certs(&mut pem.as_slice()).next().unwrap().unwrap();
    sha2::Sha256::digest(der.as_ref()).iter().map(|b| format!("{b:02X}")).collect()
}

async fn self_signed_device(env: &common::Env, device_id: &str, cert_file: &Path) {
    let body = json!({"deviceId": device_id, "authentication": {"type": "selfSigned",
        "x509Thumbprint": {"primaryThumbprint": sha256_hex(cert_file)}}});
    let (status, answer) = env.service.request("PUT", &format!("/devices/{device_id}"), Some(&body)).await.unwrap();
    assert_eq!(status, 200, "{answer}");
}

fn x509_client(
    env: &common::Env,
    device_id: &str,
    cert: &Path,
    key: &Path,
    pass: Option<&str>,
) -> ironhub::Result<Client> {
    Client::create_from_x509_certificate(
        X509::new(cert, key, pass.map(str::to_owned)),
        "localhost",
        device_id,
        None,
        env.options(),
    )
}

/// The key files of the tests, written by the openssl CLI as a user would write them.
struct Keys {
    dir: PathBuf,
}

impl Keys {
    fn generate(dir: PathBuf) -> Keys {
        let pass = format!("pass:{PASS}");
        // PKCS#8 ENCRYPTED PRIVATE KEY, RSA (OpenSSL 3: PBES2, PBKDF2-HMAC-SHA256, DES-EDE3-CBC).
        openssl(
            &dir,
            &format!(
                "req -x509 -newkey rsa:2048 -keyout rsa_pkcs8.pem -passout {pass} -out rsa.crt -subj /CN=keys -days 2"
            ),
        );
        // PKCS#8 ENCRYPTED PRIVATE KEY, EC P-256 with AES-256-CBC.
        openssl(
            &dir,
            &format!("genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -aes256 -pass {pass} -out ec_pkcs8.pem"),
        );
        openssl(&dir, &format!("req -x509 -new -key ec_pkcs8.pem -passin {pass} -out ec.crt -subj /CN=keys -days 2"));
        // PKCS#8 with AES-128-CBC and PBKDF2-HMAC-SHA1.
        let topk8 = format!("pkcs8 -topk8 -in rsa_pkcs8.pem -passin {pass} -passout {pass}");
        openssl(&dir, &format!("{topk8} -v2 aes128 -v2prf hmacWithSHA1 -out rsa_pkcs8_sha1.pem"));
        // PKCS#8 with scrypt as the key derivation.
        openssl(&dir, &format!("{topk8} -scrypt -out rsa_pkcs8_scrypt.pem"));
        // PKCS#8 with a PKCS#12 PBES1 scheme, which is not supported: a clear error.
        openssl(&dir, &format!("{topk8} -v1 PBE-SHA1-3DES -out rsa_pkcs8_pbes1.pem"));
        // Legacy OpenSSL PEM: Proc-Type: 4,ENCRYPTED + DEK-Info.
        for (cipher, out) in [
            ("-aes128", "rsa_legacy_aes128.pem"),
            ("-aes256", "rsa_legacy_aes256.pem"),
            ("-des3", "rsa_legacy_des3.pem"),
        ] {
            openssl(
                &dir,
                &format!("rsa -in rsa_pkcs8.pem -passin {pass} {cipher} -traditional -passout {pass} -out {out}"),
            );
        }
        openssl(&dir, &format!("ec -in ec_pkcs8.pem -passin {pass} -des3 -passout {pass} -out ec_legacy_des3.pem"));
        openssl(&dir, &format!("ec -in ec_pkcs8.pem -passin {pass} -aes192 -passout {pass} -out ec_legacy_aes192.pem"));
        // Unencrypted PKCS#1 and SEC1 still load without a pass phrase.
        openssl(&dir, &format!("rsa -in rsa_pkcs8.pem -passin {pass} -traditional -out rsa_plain.pem"));
        openssl(&dir, &format!("ec -in ec_pkcs8.pem -passin {pass} -out ec_plain.pem"));
        Keys { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// (key file, certificate file, whether the key is encrypted)
    fn cases(&self) -> Vec<(PathBuf, PathBuf, bool)> {
        let rsa = [
            "rsa_pkcs8.pem",
            "rsa_pkcs8_sha1.pem",
            "rsa_pkcs8_scrypt.pem",
            "rsa_legacy_aes128.pem",
            "rsa_legacy_aes256.pem",
            "rsa_legacy_des3.pem",
        ];
        let ec = ["ec_pkcs8.pem", "ec_legacy_des3.pem", "ec_legacy_aes192.pem"];
        let mut cases: Vec<_> = rsa.iter().map(|k| (self.path(k), self.path("rsa.crt"), true)).collect();
        cases.extend(ec.iter().map(|k| (self.path(k), self.path("ec.crt"), true)));
        cases.push((self.path("rsa_plain.pem"), self.path("rsa.crt"), false));
        cases.push((self.path("ec_plain.pem"), self.path("ec.crt"), false));
        cases
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_keys_connect() {
    let env = common::start().await;
    let keys = Keys::generate(temp_dir("ok"));
    for (i, (key, cert, encrypted)) in keys.cases().into_iter().enumerate() {
        let device_id = format!("keydev{i}");
        self_signed_device(&env, &device_id, &cert).await;
        let pass = encrypted.then_some(PASS);
        let client =
            x509_client(&env, &device_id, &cert, &key, pass).unwrap_or_else(|e| panic!("{}: {e}", key.display()));
        client.send_message(&Message::new(format!("signed with {}", key.display()))).await.expect("send");
        assert_eq!(env.wait_events(&device_id, 1).await.len(), 1, "{}", key.display());
        client.shutdown().await.unwrap();
    }
    let _ = std::fs::remove_dir_all(&keys.dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_missing_or_corrupted_keys_are_clear_errors() {
    let env = common::start().await;
    let keys = Keys::generate(temp_dir("bad"));
    let wrong = "not-the-pass-phrase";
    for (key, cert, encrypted) in keys.cases().into_iter().filter(|c| c.2) {
        assert!(encrypted);
        let name = key.file_name().unwrap().to_str().unwrap().to_owned();
        for (pass, expected) in
            [(Some(wrong), "wrong pass phrase"), (None, "no pass phrase"), (Some(""), "no pass phrase")]
        {
            let err = x509_client(&env, "nobody", &cert, &key, pass)
                .err()
                .unwrap_or_else(|| panic!("{name} {pass:?} loaded"));
            let text = err.to_string();
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{text}");
            assert!(text.contains(&name) && text.contains(expected), "{name} {pass:?}: {text}");
            assert!(!text.contains(wrong) && !text.contains(PASS), "the pass phrase leaked: {text}");
        }
    }
    // A key whose encrypted body was damaged: a clear error, never a panic.
    for name in ["rsa_pkcs8.pem", "rsa_legacy_aes128.pem", "ec_legacy_des3.pem"] {
        let pem = std::fs::read_to_string(keys.path(name)).unwrap();
        let mut lines: Vec<String> = pem.lines().map(str::to_owned).collect();
        let middle = lines.len() / 2;
        lines[middle] = lines[middle].chars().rev().collect();
        let damaged = keys.path(&format!("damaged_{name}"));
        std::fs::write(&damaged, lines.join("\n")).unwrap();
        let err = x509_client(&env, "nobody", &keys.path("rsa.crt"), &damaged, Some(PASS))
            .err()
            .unwrap_or_else(|| panic!("damaged {name} loaded"));
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
        assert!(err.to_string().contains("damaged_"), "{err}");
        assert!(!err.to_string().contains(PASS), "{err}");
    }
    let err = x509_client(&env, "nobody", &keys.path("rsa.crt"), &keys.path("rsa_pkcs8_pbes1.pem"), Some(PASS))
        .err()
        .unwrap();
    assert!(
        err.to_string().contains("rsa_pkcs8_pbes1.pem") && err.to_string().contains("unsupported encryption"),
        "{err}"
    );
    // A curve rustls cannot sign with: the error says so instead of blaming the pass phrase alone.
    let pass = format!("pass:{PASS}");
    openssl(
        &keys.dir,
        &format!("genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-521 -aes256 -pass {pass} -out p521.pem"),
    );
    let err = x509_client(&env, "nobody", &keys.path("ec.crt"), &keys.path("p521.pem"), Some(PASS)).err().unwrap();
    assert!(err.to_string().contains("p521.pem") && err.to_string().contains("key type"), "{err}");
    // A key that does not match the certificate.
    let err = x509_client(&env, "nobody", &keys.path("rsa.crt"), &keys.path("ec_pkcs8.pem"), Some(PASS)).err().unwrap();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    let _ = std::fs::remove_dir_all(&keys.dir);
}

/// A CA (root or intermediate) made with rcgen; `issuer` signs it, else it is self-signed.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(cn: &str, issuer: Option<&Ca>) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        let cert = match issuer {
            Some(i) => params.signed_by(&key, &i.cert, &i.key).unwrap(),
            None => params.self_signed(&key).unwrap(),
        };
        Ca { cert, key }
    }

    /// A root and an intermediate it signed: `{name} root`, `{name} intermediate`.
    fn chain(name: &str) -> (Ca, Ca) {
        let root = Ca::new(&format!("{name} root"), None);
        let intermediate = Ca::new(&format!("{name} intermediate"), Some(&root));
        (root, intermediate)
    }

    /// A device certificate for `cn`, valid now unless `expired`; its key is written encrypted
    /// (PKCS#8, openssl) so chains and encrypted keys are exercised together.
    fn issue(&self, dir: &Path, cn: &str, expired: bool, chain: &[&Ca]) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let leaf = params.signed_by(&key, &self.cert, &self.key).unwrap();
        let stem = format!("{cn}-{}", if expired { "expired" } else { "valid" });
        let (cert_file, plain_key, key_file) =
            (dir.join(format!("{stem}.crt")), dir.join(format!("{stem}.plain")), dir.join(format!("{stem}.key")));
        let mut pem = leaf.pem();
        for ca in chain {
            pem.push_str(&ca.cert.pem());
        }
        std::fs::write(&cert_file, pem).unwrap();
        std::fs::write(&plain_key, key.serialize_pem()).unwrap();
        let pass = format!("pass:{PASS}");
        let (plain, encrypted) = (plain_key.display(), key_file.display());
        openssl(dir, &format!("pkcs8 -topk8 -in {plain} -v2 aes256 -passout {pass} -out {encrypted}"));
        (cert_file, key_file)
    }
}

async fn register_root(env: &common::Env, name: &str, ca: &Ca, verified: bool) {
    let body = json!({"properties": {"certificate": ca.cert.pem(), "isVerified": verified}});
    let (status, answer) = env.service.request("PUT", &format!("/certificates/{name}"), Some(&body)).await.unwrap();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["properties"]["isVerified"], verified);
}

async fn connect_result(env: &common::Env, device_id: &str, files: &(PathBuf, PathBuf)) -> ironhub::Result<()> {
    let client = x509_client(env, device_id, &files.0, &files.1, Some(PASS))?;
    let result = client.send_message(&Message::new("from a CA-signed device")).await;
    let _ = client.shutdown().await;
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_signed_devices_with_an_intermediate() {
    let env = common::start().await;
    let dir = temp_dir("chain");
    let (root, intermediate) = Ca::chain("ironhub test");
    let (stranger_root, stranger_intermediate) = Ca::chain("someone else's");
    register_root(&env, "test-root", &root, true).await;
    register_root(&env, "unverified-root", &stranger_root, false).await;
    for id in ["cadev", "cadev-expired", "cadev-stranger"] {
        let body = json!({"deviceId": id, "authentication": {"type": "certificateAuthority"}});
        let (status, answer) = env.service.request("PUT", &format!("/devices/{id}"), Some(&body)).await.unwrap();
        assert_eq!(status, 200, "{answer}");
    }

    // Leaf + intermediate in the certificate file: the hub completes the chain to its root.
    let good = intermediate.issue(&dir, "cadev", false, &[&intermediate]);
    connect_result(&env, "cadev", &good).await.expect("a CA-signed device connects");
    assert_eq!(env.wait_events("cadev", 1).await.len(), 1);

    let refused = |r: ironhub::Result<()>, why: &str| {
        let err = r.expect_err(why);
        assert_eq!(err.kind(), ErrorKind::Credential, "{why}: {err}");
    };
    // Without the intermediate the chain does not reach the root.
    let leaf_only = intermediate.issue(&dir, "cadev", false, &[]);
    refused(connect_result(&env, "cadev", &leaf_only).await, "leaf without its intermediate");
    // An expired leaf.
    let expired = intermediate.issue(&dir, "cadev-expired", true, &[&intermediate]);
    refused(connect_result(&env, "cadev-expired", &expired).await, "expired leaf");
    // A CN that is not the device id.
    refused(connect_result(&env, "cadev-expired", &good).await, "CN of another device");
    // A chain to a root the hub has but never verified.
    let stranger = stranger_intermediate.issue(&dir, "cadev-stranger", false, &[&stranger_intermediate]);
    refused(connect_result(&env, "cadev-stranger", &stranger).await, "root not verified");
    // Updating a certificate needs its ETag (If-Match), as IoT Hub's certificate API does.
    let (_, current) = env.service.request("GET", "/certificates/unverified-root", None).await.unwrap();
    assert_eq!(current["properties"]["subject"], "CN=someone else's root");
    let (status, _) = env
        .service
        .request(
            "PUT",
            "/certificates/unverified-root",
            Some(&json!({"properties": {"certificate": stranger_root.cert.pem(), "isVerified": true}})),
        )
        .await
        .unwrap();
    assert_eq!(status, 412, "an update without If-Match is refused");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The same through the C ABI (`ironhub_client_create_from_x509_certificate` with a pass phrase):
/// an encrypted key connects; a wrong one is `IRONHUB_ERROR_INVALID_ARGUMENT` with a last-error
/// message naming the file and never the pass phrase.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_keys_through_the_c_abi() {
    use ironhub::ffi::client::{
        ironhub_client_connect, ironhub_client_create_from_x509_certificate, ironhub_client_free,
    };
    use ironhub::ffi::options::{
        ironhub_options_free, ironhub_options_new, ironhub_options_set_connection_retry, ironhub_options_set_mqtt_port,
        ironhub_options_set_server_verification_cert,
    };
    use ironhub::ffi::result::{ironhub_last_error_message, ironhub_result};
    use std::ffi::{c_char, CStr, CString};

    let env = common::start().await;
    let keys = Keys::generate(temp_dir("capi"));
    self_signed_device(&env, "capidev", &keys.path("rsa.crt")).await;
    let (ca_pem, mqtt_port) = (CString::new(env.emu.ca_pem()).unwrap(), env.emu.mqtt_port());
    let c = |s: &str| CString::new(s).unwrap();
    let (cert, key) =
        (c(keys.path("rsa.crt").to_str().unwrap()), c(keys.path("rsa_legacy_aes256.pem").to_str().unwrap()));
    let (host, device) = (c("localhost"), c("capidev"));
    tokio::task::spawn_blocking(move || {
        let opts = ironhub_options_new();
        assert_eq!(ironhub_options_set_server_verification_cert(opts, ca_pem.as_ptr()), ironhub_result::IRONHUB_OK);
        assert_eq!(ironhub_options_set_mqtt_port(opts, mqtt_port), ironhub_result::IRONHUB_OK);
        assert_eq!(ironhub_options_set_connection_retry(opts, false), ironhub_result::IRONHUB_OK);
        let create = |pass: Option<&CString>| {
            let mut client = std::ptr::null_mut();
            let pass = pass.map_or(std::ptr::null(), |p| p.as_ptr());
            let rc = ironhub_client_create_from_x509_certificate(
                cert.as_ptr(),
                key.as_ptr(),
                pass,
                host.as_ptr(),
                device.as_ptr(),
                std::ptr::null(),
                opts,
                &mut client,
            );
            (rc, client)
        };
        let last_error = || {
            let mut buf = [0 as c_char; 512];
            ironhub_last_error_message(buf.as_mut_ptr(), buf.len());
            // SAFETY: ironhub_last_error_message NUL-terminates within `buf`.
            unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned()
        };

        let (rc, client) = create(Some(&c(PASS)));
        assert_eq!(rc, ironhub_result::IRONHUB_OK, "{}", last_error());
        assert_eq!(ironhub_client_connect(client), ironhub_result::IRONHUB_OK, "{}", last_error());
        assert_eq!(ironhub_client_free(client), ironhub_result::IRONHUB_OK);

        for pass in [Some(c("wrong-one")), None] {
            let (rc, client) = create(pass.as_ref());
            assert_eq!(rc, ironhub_result::IRONHUB_ERROR_INVALID_ARGUMENT);
            assert!(client.is_null());
            let message = last_error();
            assert!(message.contains("rsa_legacy_aes256.pem") && message.contains("pass phrase"), "{message}");
            assert!(!message.contains("wrong-one") && !message.contains(PASS), "{message}");
        }
        ironhub_options_free(opts);
    })
    .await
    .unwrap();
    let _ = std::fs::remove_dir_all(&keys.dir);
}

/// File upload by X.509 devices: the hub calls carry no token, only the client certificate of the
/// TLS connection; a self-signed device and a CA-signed one upload, a stranger's certificate is a
/// credential error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x509_devices_upload_files() {
    let env = common::start().await;
    let keys = Keys::generate(temp_dir("upload"));
    self_signed_device(&env, "upload-self", &keys.path("ec.crt")).await;
    let client =
        x509_client(&env, "upload-self", &keys.path("ec.crt"), &keys.path("ec_legacy_des3.pem"), Some(PASS)).unwrap();
    let info = client
        .upload_blob_from_bytes("x509.bin", &b"uploaded with a certificate"[..], Default::default())
        .await
        .expect("upload");
    assert_eq!(env.emu.files().blob(&info.blob_name).unwrap(), &b"uploaded with a certificate"[..]);
    let notes = env.emu.files().notifications(Some("upload-self"));
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert_eq!(notes[0]["correlationId"], info.correlation_id.as_str());

    let (root, intermediate) = Ca::chain("upload");
    register_root(&env, "upload-root", &root, true).await;
    let body = json!({"deviceId": "upload-ca", "authentication": {"type": "certificateAuthority"}});
    assert_eq!(env.service.request("PUT", "/devices/upload-ca", Some(&body)).await.unwrap().0, 200);
    let (cert, key) = intermediate.issue(&keys.dir, "upload-ca", false, &[&intermediate]);
    let ca_client = x509_client(&env, "upload-ca", &cert, &key, Some(PASS)).unwrap();
    let storage = ca_client.get_storage_info_for_blob("chain.txt").await.expect("storage info for a CA-signed device");
    assert_eq!(storage.blob_name, "upload-ca/chain.txt");
    ca_client.notify_blob_upload_status(&storage.correlation_id, true, 200, "ok").await.expect("notification");

    // The self-signed certificate is not upload-ca's.
    let stranger =
        x509_client(&env, "upload-ca", &keys.path("ec.crt"), &keys.path("ec_pkcs8.pem"), Some(PASS)).unwrap();
    let err = stranger.get_storage_info_for_blob("nope.txt").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Credential, "{err}");
    let _ = std::fs::remove_dir_all(&keys.dir);
}

/// DPS with the same material: a group enrollment on the root, a device whose certificate file
/// holds leaf + intermediate and whose key is encrypted registers, then connects to the hub.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provisioning_with_a_chain_and_an_encrypted_key() {
    use ironhub::provisioning::ProvisioningClient;
    use ironhub_emulator::dps::enrollments::Kind;

    let env = common::start().await;
    let dir = temp_dir("dps");
    let (root, intermediate) = Ca::chain("dps");
    let signing = json!({"primary": {"certificate": root.cert.pem()}});
    let group = json!({"attestation": {"type": "x509", "x509": {"signingCertificates": signing}}});
    env.emu.dps().put_enrollment(Kind::Group, "dps-chain-group", &group, None).unwrap();
    let (cert, key) = intermediate.issue(&dir, "dps-chained", false, &[&intermediate]);
    let x509 = X509::new(&cert, &key, Some(PASS.to_owned()));
    let dps = ProvisioningClient::create_from_x509_certificate(
        env.emu.hostname(),
        "dps-chained",
        &env.emu.id_scope(),
        x509.clone(),
        env.options(),
    )
    .unwrap();
    let result = dps.register().await.expect("registration through the group");
    assert_eq!(result.assignment().unwrap().1, "dps-chained");
    let device = result.device_client_from_x509_certificate(x509, env.options()).unwrap();
    device.send_message(&Message::new("provisioned with a chain")).await.expect("send after provisioning");
    device.shutdown().await.unwrap();

    // Without the intermediate the group's root is out of reach.
    let (leaf_only, key) = intermediate.issue(&dir, "dps-leaf-only", false, &[]);
    let dps = ProvisioningClient::create_from_x509_certificate(
        env.emu.hostname(),
        "dps-leaf-only",
        &env.emu.id_scope(),
        X509::new(&leaf_only, &key, Some(PASS.to_owned())),
        env.options(),
    )
    .unwrap();
    assert!(dps.register().await.is_err(), "a chain that does not reach the group's root registers");
    let _ = std::fs::remove_dir_all(&dir);
}
