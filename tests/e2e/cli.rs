//! `unbox`, the command-line client, run in-process (`unbox_cli::run_code` with captured
//! streams) against the real server: every command, its output in table and JSON form, its
//! error lines and exit codes, the saved login, and the hwid → import → device boot round trip
//! on a sysfs tree made here.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use sha2::Digest as _;
use unbox_cli::Io;
use unbox_tests::{TestApp, TestTenant, hash};

/// One run of `unbox`.
#[derive(Debug)]
struct Run {
    code: u8,
    stdout: String,
    stderr: String,
}

impl Run {
    #[track_caller]
    fn ok(self) -> Run {
        assert_eq!(
            self.code, 0,
            "stdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }

    #[track_caller]
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}): {}\nstderr: {}",
                self.stdout, self.stderr
            )
        })
    }

    /// Asserts a failure: this exit code, nothing on stdout, one `error:` line on stderr that
    /// holds `needle`.
    #[track_caller]
    fn fails(&self, code: u8, needle: &str) {
        assert_eq!(
            self.code, code,
            "stdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        assert!(self.stdout.is_empty(), "stdout: {}", self.stdout);
        assert_eq!(self.stderr.lines().count(), 1, "stderr: {}", self.stderr);
        assert!(
            self.stderr.starts_with("error: "),
            "stderr: {}",
            self.stderr
        );
        assert!(
            self.stderr.contains(needle),
            "{needle:?} not in stderr: {}",
            self.stderr
        );
    }
}

async fn unbox_full(args: &[&str], stdin: &str, progress: bool) -> Run {
    let (mut io, captured) = Io::capture(stdin.as_bytes().to_vec());
    io.progress = progress;
    let mut all = vec!["unbox"];
    all.extend_from_slice(args);
    let code = unbox_cli::run_code(all, &mut io).await;
    drop(io);
    Run {
        code,
        stdout: captured.stdout.text(),
        stderr: captured.stderr.text(),
    }
}

async fn unbox(args: &[&str]) -> Run {
    unbox_full(args, "", false).await
}

/// An admin of a tenant, with a login file of their own (never the user's).
struct Admin {
    server: String,
    client_id: String,
    client_secret: String,
    dir: tempfile::TempDir,
}

impl Admin {
    fn new(app: &TestApp, tenant: &TestTenant) -> Admin {
        Admin {
            server: app.base.clone(),
            client_id: tenant.client_id.clone(),
            client_secret: tenant.client_secret.clone(),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("config.json")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, contents: &str) -> String {
        let path = self.path(name);
        std::fs::write(&path, contents).unwrap();
        path.to_str().unwrap().to_owned()
    }

    /// `unbox --server … --client-id … --client-secret … --config … ARGS`.
    async fn run(&self, args: &[&str]) -> Run {
        self.run_stdin(args, "", false).await
    }

    async fn run_stdin(&self, args: &[&str], stdin: &str, progress: bool) -> Run {
        let config = self.config();
        let mut all = vec![
            "--server",
            &self.server,
            "--client-id",
            &self.client_id,
            "--client-secret",
            &self.client_secret,
            "--config",
            config.to_str().unwrap(),
        ];
        all.extend_from_slice(args);
        unbox_full(&all, stdin, progress).await
    }

    /// The device call side: only the server.
    async fn device(&self, args: &[&str]) -> Run {
        let config = self.config();
        let mut all = vec![
            "--server",
            &self.server,
            "--config",
            config.to_str().unwrap(),
        ];
        all.extend_from_slice(args);
        unbox(&all).await
    }
}

/// A machine's sysfs, as the kernel shows it.
struct Machine<'a> {
    vendor: &'a str,
    model: &'a str,
    serial: &'a str,
    uuid: &'a str,
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, format!("{text}\n")).unwrap();
}

/// A sysfs tree under `root`: DMI, four network interfaces of which one is permanent and
/// physical, two NVMe namespaces (one by EUI-64, one by NGUID) and a multipath controller path.
fn sysfs(root: &Path, m: &Machine<'_>) {
    let dmi = root.join("sys/class/dmi/id");
    write(&dmi.join("sys_vendor"), m.vendor);
    write(&dmi.join("product_name"), m.model);
    write(&dmi.join("product_serial"), m.serial);
    write(&dmi.join("product_uuid"), m.uuid);
    write(&dmi.join("board_serial"), "BOARD-77");
    write(&dmi.join("chassis_type"), "10");
    let net = root.join("sys/class/net");
    // The wired adapter: permanent, physical.
    write(&net.join("enp0s31f6/address"), "8C:16:45:AA:BB:01");
    write(&net.join("enp0s31f6/addr_assign_type"), "0");
    std::fs::create_dir_all(net.join("enp0s31f6/device")).unwrap();
    // Wi-Fi with a randomised address: not permanent.
    write(&net.join("wlp2s0/address"), "3a:11:22:33:44:55");
    write(&net.join("wlp2s0/addr_assign_type"), "1");
    std::fs::create_dir_all(net.join("wlp2s0/device")).unwrap();
    // A bridge: permanent-looking, but virtual (no device link).
    write(&net.join("docker0/address"), "02:42:ac:11:00:01");
    write(&net.join("docker0/addr_assign_type"), "0");
    write(&net.join("lo/address"), "00:00:00:00:00:00");
    write(&net.join("lo/addr_assign_type"), "0");
    let block = root.join("sys/block");
    write(&block.join("nvme0n1/eui"), "00 25 38 5a 91 b0 1c 52");
    write(&block.join("nvme0n1/wwid"), "eui.0025385a91b01c52");
    write(
        &block.join("nvme1n1/nguid"),
        "4c4c4544-0042-3510-8052-b2c04f4e3732",
    );
    write(&block.join("nvme1c1n1/eui"), "11 11 11 11 11 11 11 11");
    write(&block.join("sda/device/serial"), "WD-123");
}

fn machine(serial: &str) -> Machine<'_> {
    Machine {
        vendor: "Framework",
        model: "Laptop 13 (AMD Ryzen 7040Series)",
        serial,
        uuid: "4C4C4544-0042-3510-8052-B2C04F4E3732",
    }
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[tokio::test]
async fn hwid_reads_sysfs_and_says_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("laptop");
    sysfs(&root, &machine("FRAKDBCP0123"));

    let identity = unbox(&["hwid", "--root", s(&root)]).await.ok().json();
    assert_eq!(
        identity,
        json!({
            "manufacturer": "Framework",
            "model": "Laptop 13 (AMD Ryzen 7040Series)",
            "serialNumber": "FRAKDBCP0123",
            "smbiosUuid": "4c4c4544-0042-3510-8052-b2c04f4e3732",
            "macAddresses": ["8c:16:45:aa:bb:01"],
            "diskIds": ["0025385a91b01c52", "4c4c4544004235108052b2c04f4e3732"],
        })
    );

    // The CSV's hash is the Unbox-made hash of the same identity.
    let csv = unbox(&[
        "hwid",
        "--root",
        s(&root),
        "--format",
        "csv",
        "--group-tag",
        "Linux",
    ])
    .await
    .ok();
    let mut lines = csv.stdout.lines();
    assert_eq!(
        lines.next(),
        Some("Device Serial Number,Windows Product ID,Hardware Hash,Group Tag")
    );
    let row: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!((row[0], row[1], row[3]), ("FRAKDBCP0123", "", "Linux"));
    let decoded = unbox_domain::hardware_hash::decode(row[2]).unwrap();
    assert_eq!(
        decoded.os_type(),
        unbox_domain::hardware_hash::OsType::Linux
    );
    assert_eq!(
        serde_json::to_value(unbox_domain::identity::Identity::from_hash(&decoded)).unwrap(),
        identity
    );
    assert!(csv.stdout.ends_with("\r\n"));

    // --verbose says what was skipped, on stderr.
    let verbose = unbox(&["hwid", "--root", s(&root), "--verbose"]).await.ok();
    assert!(
        verbose
            .stderr
            .contains("wlp2s0: skipped (addr_assign_type 1"),
        "{}",
        verbose.stderr
    );
    assert!(
        verbose.stderr.contains("docker0: skipped (virtual"),
        "{}",
        verbose.stderr
    );
    assert!(verbose.stderr.contains("from eui"), "{}", verbose.stderr);

    // A white box: placeholder serial, no TPM.
    let white = dir.path().join("whitebox");
    sysfs(
        &white,
        &Machine {
            vendor: "To Be Filled By O.E.M.",
            model: "To Be Filled By O.E.M.",
            serial: "Default string",
            uuid: "03000200-0400-0500-0006-000700080009",
        },
    );
    let run = unbox(&["hwid", "--root", s(&white)]).await;
    run.fails(2, "no usable hardware identity");
    assert!(
        run.stderr.contains("\"Default string\" is a placeholder"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("board serial \"BOARD-77\" is not used"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("no TPM endorsement key (no TPM found)"),
        "{}",
        run.stderr
    );

    // A TPM in the tree is not read from a mounted tree: it says so.
    std::fs::create_dir_all(white.join("sys/class/tpm/tpm0")).unwrap();
    let run = unbox(&["hwid", "--root", s(&white)]).await;
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("pass --tpm-ek-modulus-file"),
        "{}",
        run.stderr
    );

    // With the EK's modulus (hex here) the white box is identified by its TPM.
    let modulus: Vec<u8> = (0..256u32)
        .map(|i| u8::try_from(i * 7 % 251).unwrap())
        .collect();
    let ek = dir.path().join("ek.hex");
    std::fs::write(&ek, hex::encode(&modulus)).unwrap();
    let identity = unbox(&["hwid", "--root", s(&white), "--tpm-ek-modulus-file", s(&ek)])
        .await
        .ok()
        .json();
    assert_eq!(
        identity["tpmEkSha256"],
        hex::encode(sha2::Sha256::digest(&modulus))
    );
    assert_eq!(identity["serialNumber"], "Default string");
    let csv = unbox(&[
        "hwid",
        "--root",
        s(&white),
        "--tpm-ek-modulus-file",
        s(&ek),
        "--format",
        "csv",
    ])
    .await
    .ok();
    let hash_text = csv
        .stdout
        .lines()
        .nth(1)
        .unwrap()
        .split(',')
        .nth(2)
        .unwrap()
        .to_owned();
    let decoded = unbox_domain::hardware_hash::decode(&hash_text).unwrap();
    assert_eq!(decoded.tpm_ek_sha256(), identity["tpmEkSha256"].as_str());

    // An EK file that is not one: exit 1.
    let bad = dir.path().join("bad.pub");
    std::fs::write(&bad, [1u8, 2, 3]).unwrap();
    unbox(&[
        "hwid",
        "--root",
        s(&white),
        "--tpm-ek-modulus-file",
        s(&bad),
    ])
    .await
    .fails(1, "is not a TPM EK public key");
}

#[tokio::test]
async fn hwid_csv_import_and_device_boot_round_trip() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap("Contoso", "contoso.com").await;
    let admin = Admin::new(&app, &tenant);
    let root = admin.path("laptop");
    sysfs(&root, &machine("FRAKDBCP0001"));

    // The machine's CSV, imported: complete, exit 0.
    let csv = unbox(&[
        "hwid",
        "--root",
        s(&root),
        "--format",
        "csv",
        "--group-tag",
        "Linux",
    ])
    .await
    .ok();
    let file = admin.write("machine.csv", &csv.stdout);
    let run = admin
        .run(&["import", &file, "--poll-interval", "20"])
        .await
        .ok();
    assert!(
        run.stdout
            .contains(": complete: 1 rows, 1 succeeded, 0 failed"),
        "{}",
        run.stdout
    );
    let devices = admin
        .run(&["devices", "list", "--serial", "FRAKDBCP0001", "-o", "json"])
        .await
        .ok()
        .json();
    let device = &devices["items"][0];
    assert_eq!(device["deviceOSType"], "Linux");
    assert_eq!(device["groupTag"], "Linux");
    assert_eq!(device["manufacturer"], "Framework");
    let device_id = device["id"].as_str().unwrap().to_owned();

    // No profile yet: the device is registered but gets nothing (exit 3).
    admin
        .device(&["device", "boot", "--root", s(&root)])
        .await
        .fails(3, "NoProfileAssigned");

    // A profile for all devices, from YAML.
    let yaml = admin.write(
        "linux.yaml",
        "displayName: Linux fleet\ndeviceNameTemplate: LNX-%SERIAL%\noobe:\n  hideEula: true\n  userType: standard\n",
    );
    let profile = admin
        .run(&["profiles", "create", &yaml, "-o", "json"])
        .await
        .ok()
        .json();
    let profile_id = profile["id"].as_str().unwrap().to_owned();
    admin
        .run(&["profiles", "assign", &profile_id, "--all-devices"])
        .await
        .ok();

    // The device boots: verified profile, four phases, a succeeded deployment.
    let boot = admin
        .device(&["device", "boot", "--root", s(&root)])
        .await
        .ok();
    assert!(
        boot.stdout.contains("Profile \"Linux fleet\" for device"),
        "{}",
        boot.stdout
    );
    assert!(
        boot.stdout.contains("signature verified (EdDSA"),
        "{}",
        boot.stdout
    );
    assert!(boot.stdout.contains("Device name:"), "{}", boot.stdout);
    assert!(boot.stdout.contains("contoso.com"), "{}", boot.stdout);
    for phase in ["profileApplied", "deviceSetup", "accountSetup", "completed"] {
        assert!(
            boot.stdout
                .contains(&format!("Reported {phase}: succeeded")),
            "{}",
            boot.stdout
        );
    }
    assert!(
        boot.stdout.trim_end().ends_with(": succeeded"),
        "{}",
        boot.stdout
    );

    // The same boot in JSON: the verified document.
    let boot = admin
        .device(&["device", "boot", "--root", s(&root), "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(boot["deploymentStatus"], "succeeded");
    assert_eq!(boot["signedBy"]["alg"], "EdDSA");
    assert_eq!(
        boot["response"]["profile"]["ZtdRegistrationId"],
        device_id.as_str()
    );
    assert_eq!(
        boot["response"]["profile"]["CloudAssignedOobeConfig"],
        8 + 256 + 2 + 16
    );
    assert_eq!(boot["events"].as_array().unwrap().len(), 4);

    // A third boot fails at device setup, as a broken machine would.
    admin
        .device(&[
            "device",
            "boot",
            "--root",
            s(&root),
            "--fail-phase",
            "deviceSetup",
        ])
        .await
        .ok();

    // The timeline and the report.
    let timeline = admin.run(&["deployments", "show", &device_id]).await.ok();
    assert!(
        timeline
            .stdout
            .contains("of profile \"Linux fleet\": succeeded"),
        "{}",
        timeline.stdout
    );
    assert!(
        timeline.stdout.contains("failed (event)"),
        "{}",
        timeline.stdout
    );
    assert!(timeline.stdout.contains("completed"), "{}", timeline.stdout);
    let timeline = admin
        .run(&["deployments", "show", &device_id, "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(timeline["items"].as_array().unwrap().len(), 3);
    let succeeded = admin
        .run(&[
            "deployments",
            "list",
            "--status",
            "succeeded",
            "--since",
            "1h",
            "-o",
            "json",
        ])
        .await
        .ok()
        .json();
    assert_eq!(succeeded["items"].as_array().unwrap().len(), 2);
    assert_eq!(succeeded["summary"]["succeeded"], 2);
    let report = admin.run(&["deployments", "list"]).await.ok();
    assert!(report.stdout.starts_with("ID "), "{}", report.stdout);
    assert!(
        report
            .stdout
            .contains("3 deployments: 0 in progress, 2 succeeded, 1 failed"),
        "{}",
        report.stdout
    );
    let bad = admin
        .run(&["deployments", "list", "--since", "yesterday"])
        .await;
    assert_eq!(bad.code, 2, "{}", bad.stderr);

    // A machine that is not registered: exit 3.
    let stranger = admin.path("stranger");
    sysfs(&stranger, &machine("FRAKDBCP9999"));
    admin
        .device(&["device", "boot", "--root", s(&stranger)])
        .await
        .fails(3, "DeviceNotRegistered");
}

#[tokio::test]
async fn a_device_with_a_key_proves_it_at_boot() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap("Contoso", "contoso.com").await;
    let admin = Admin::new(&app, &tenant);
    let profile = app
        .create_profile(
            &tenant,
            json!({"displayName": "Kiosk", "deploymentMode": "selfDeploying"}),
        )
        .await;
    app.assign(&tenant, &profile, json!({"kind": "allDevices"}), "include")
        .await;

    for (serial, key_type) in [("KIOSK-P256", "p256"), ("KIOSK-ED", "ed25519")] {
        let root = admin.path(serial);
        sysfs(&root, &machine(serial));
        let key = admin.path(&format!("{serial}.pem"));
        let keygen = unbox(&["device", "keygen", "--out", s(&key), "--type", key_type])
            .await
            .ok();
        let jwk = keygen.json();
        assert!(jwk.get("d").is_none(), "only the public key is printed");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&key).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // The key file is not replaced without --force.
        unbox(&["device", "keygen", "--out", s(&key)])
            .await
            .fails(2, "--force");
        assert_eq!(
            unbox(&["device", "public-key", "--key", s(&key)])
                .await
                .ok()
                .json(),
            jwk
        );
        let jwk_file = admin.write(&format!("{serial}.jwk"), &keygen.stdout);

        // Registered by identity, with the key.
        let identity = unbox(&["hwid", "--root", s(&root)]).await.ok();
        let identity_file = admin.write(&format!("{serial}.json"), &identity.stdout);
        let registered = admin
            .run(&[
                "devices",
                "register",
                "--identity",
                &identity_file,
                "--public-key",
                &jwk_file,
                "--group-tag",
                "Kiosk",
            ])
            .await
            .ok();
        assert!(
            registered.stdout.contains("Registered device"),
            "{}",
            registered.stdout
        );
        assert!(
            registered.stdout.contains("Device key:"),
            "{}",
            registered.stdout
        );

        // Without the key: refused (exit 4).
        admin
            .device(&["device", "boot", "--root", s(&root)])
            .await
            .fails(4, "ProofRequired");
        // With it: served.
        let boot = admin
            .device(&[
                "device",
                "boot",
                "--root",
                s(&root),
                "--key",
                s(&key),
                "-o",
                "json",
            ])
            .await
            .ok()
            .json();
        assert_eq!(boot["deploymentStatus"], "succeeded");
        assert_eq!(
            boot["response"]["profile"]["DeploymentProfileName"],
            "Kiosk"
        );
    }
    // Another device's key: refused.
    admin
        .device(&[
            "device",
            "boot",
            "--root",
            s(&admin.path("KIOSK-ED")),
            "--key",
            s(&admin.path("KIOSK-P256.pem")),
        ])
        .await
        .fails(4, "InvalidProof");
    // A garbage key file: exit 1.
    let garbage = admin.write(
        "garbage.pem",
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    );
    admin
        .device(&[
            "device",
            "boot",
            "--root",
            s(&admin.path("KIOSK-ED")),
            "--key",
            &garbage,
        ])
        .await
        .fails(1, "not an Ed25519 or P-256 private key");

    // Pinned keys: a JWKS without the server's key, or with another key under its kid, does
    // not verify the profile (exit 1).
    let jwks: Value = app
        .client
        .get(format!("{}/.well-known/jwks.json", app.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kid = jwks["keys"][0]["kid"].as_str().unwrap().to_owned();
    let other = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    let x = {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(other.verifying_key().as_bytes())
    };
    let strangers = admin.write(
        "strangers.json",
        &json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": x, "kid": "someone-else"}]})
            .to_string(),
    );
    let impostor = admin.write(
        "impostor.json",
        &json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid}]}).to_string(),
    );
    let pinned = admin.write("pinned.json", &jwks.to_string());
    let root = admin.path("KIOSK-ED");
    let key = admin.path("KIOSK-ED.pem");
    let boot = |jwks: String| {
        let root = s(&root).to_owned();
        let key = s(&key).to_owned();
        let admin = &admin;
        async move {
            admin
                .device(&[
                    "device",
                    "boot",
                    "--root",
                    &root,
                    "--key",
                    &key,
                    "--jwks",
                    &jwks,
                    "--no-events",
                ])
                .await
        }
    };
    boot(strangers)
        .await
        .fails(1, "which the server's JWKS does not hold");
    boot(impostor).await.fails(1, "signature does not verify");
    let run = boot(pinned).await.ok();
    assert!(run.stdout.contains("signature verified"), "{}", run.stdout);
    assert!(!run.stdout.contains("Reported"), "{}", run.stdout);
}

#[tokio::test]
async fn login_saves_a_private_file_and_reuses_its_token() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap("Contoso", "contoso.com").await;
    let admin = Admin::new(&app, &tenant);
    let config = admin.config();
    let config_arg = s(&config).to_owned();
    app.register(&tenant, &hash("LOGIN-1", true, 0), json!({}))
        .await;

    // A wrong secret: exit 4, nothing saved.
    unbox(&[
        "login",
        "--server",
        &app.base,
        "--client-id",
        &tenant.client_id,
        "--client-secret",
        "wrong",
        "--config",
        &config_arg,
    ])
    .await
    .fails(4, "Invalid client");
    assert!(!config.exists());

    // The secret from stdin.
    let run = unbox_full(
        &[
            "login",
            "--server",
            &format!("{}/", app.base),
            "--client-id",
            &tenant.client_id,
            "--client-secret-stdin",
            "--config",
            &config_arg,
        ],
        &format!("{}\n", tenant.client_secret),
        false,
    )
    .await
    .ok();
    assert!(run.stdout.starts_with("Logged in to "), "{}", run.stdout);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&config).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the login file is private");
    }
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    assert_eq!(saved["server"], app.base.as_str(), "trailing slash dropped");
    assert_eq!(saved["clientId"], tenant.client_id.as_str());
    assert_eq!(saved["clientSecret"], tenant.client_secret.as_str());
    let token = saved["token"]["accessToken"].as_str().unwrap().to_owned();

    // Commands use the saved login, and its token while it is valid.
    let list = unbox(&["devices", "list", "--config", &config_arg, "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(list["items"][0]["serialNumber"], "LOGIN-1");
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    assert_eq!(
        saved["token"]["accessToken"],
        token.as_str(),
        "the token was reused"
    );

    // A token the server refuses is replaced once, transparently.
    let mut broken = saved.clone();
    broken["token"]["accessToken"] = json!("not-a-token");
    std::fs::write(&config, broken.to_string()).unwrap();
    unbox(&["devices", "list", "--config", &config_arg])
        .await
        .ok();
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    assert_ne!(saved["token"]["accessToken"], "not-a-token");

    // The saved login is not used for another server.
    unbox(&[
        "devices",
        "list",
        "--config",
        &config_arg,
        "--server",
        "http://127.0.0.1:9",
    ])
    .await
    .fails(4, "not logged in");

    // Logout removes the file; then there is no server to talk to (exit 2).
    let run = unbox(&["logout", "--config", &config_arg]).await.ok();
    assert!(run.stdout.contains("Logged out"), "{}", run.stdout);
    assert!(!config.exists());
    unbox(&["devices", "list", "--config", &config_arg])
        .await
        .fails(2, "no server");
    unbox(&[
        "devices",
        "list",
        "--config",
        &config_arg,
        "--server",
        &app.base,
    ])
    .await
    .fails(4, "not logged in");
    let run = unbox(&["logout", "--config", &config_arg]).await.ok();
    assert!(run.stdout.contains("Not logged in"), "{}", run.stdout);
}

#[tokio::test]
async fn errors_are_one_line_with_documented_exit_codes() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap("Contoso", "contoso.com").await;
    let admin = Admin::new(&app, &tenant);
    let machine = hash("ERR-1", true, 0);
    let device = app.register(&tenant, &machine, json!({})).await;

    // 404 → 3.
    admin
        .run(&["devices", "show", "0193a1b2-0000-7000-8000-000000000000"])
        .await
        .fails(3, "Not Found");
    // 422 with field errors → 2.
    let run = admin
        .run(&[
            "devices",
            "update",
            &device,
            "--display-name",
            "not a computer name!",
        ])
        .await;
    run.fails(2, "displayName: must be a computer name");
    // 409 → 5, naming the existing device.
    admin
        .run(&["devices", "register", "--hardware-hash", &machine])
        .await
        .fails(5, "ZtdDeviceAlreadyAssigned");
    let run = admin
        .run(&["devices", "register", "--hardware-hash", &machine])
        .await;
    assert!(run.stderr.contains(&device), "{}", run.stderr);
    // 412 → 5.
    admin
        .run(&[
            "devices",
            "update",
            &device,
            "--group-tag",
            "x",
            "--if-match",
            "\"0\"",
        ])
        .await
        .fails(5, "Precondition Failed");
    // A bad hash → 2.
    admin
        .run(&["devices", "register", "--hardware-hash", "bm90IGEgaGFzaA=="])
        .await
        .fails(2, "InvalidZtdHardwareHash");
    // 403 (a client without the scope) → 4.
    let reader = app
        .post(
            "/v1/clients",
            &tenant.token,
            json!({"displayName": "reader", "scopes": ["devices.read"]}),
        )
        .await;
    assert_eq!(reader.status, 201, "{}", reader.text);
    let run = unbox(&[
        "--server",
        &app.base,
        "--client-id",
        reader.body["id"].as_str().unwrap(),
        "--client-secret",
        reader.body["clientSecret"].as_str().unwrap(),
        "--config",
        s(&admin.config()),
        "profiles",
        "list",
    ])
    .await;
    run.fails(4, "InsufficientScope");
    // Half the credentials → 2; nothing listening → 1.
    unbox(&[
        "--server",
        &app.base,
        "--client-id",
        "x",
        "devices",
        "list",
        "--config",
        s(&admin.config()),
    ])
    .await
    .fails(2, "--client-id needs --client-secret");
    unbox(&[
        "--server",
        "http://127.0.0.1:9",
        "--client-id",
        "x",
        "--client-secret",
        "y",
        "devices",
        "list",
        "--config",
        s(&admin.config()),
    ])
    .await
    .fails(1, "cannot reach http://127.0.0.1:9");
    // Usage errors from the parser → 2, on stderr.
    let run = admin.run(&["devices", "show", "not-a-uuid"]).await;
    assert_eq!(run.code, 2);
    assert!(run.stdout.is_empty());
    assert!(
        run.stderr.contains("invalid value 'not-a-uuid'"),
        "{}",
        run.stderr
    );
    admin
        .run(&["profiles", "assign", &device, "--all-devices", "--exclude"])
        .await
        .fails(2, "excluding all devices means nothing");
    admin
        .run(&["devices", "update", &device])
        .await
        .fails(2, "nothing to update");
    // Local files that cannot be read → 1.
    admin
        .run(&["profiles", "create", "/no/such/profile.yaml"])
        .await
        .fails(1, "cannot read /no/such/profile.yaml");
    let broken = admin.write("broken.yaml", "displayName: [unclosed\n");
    admin
        .run(&["profiles", "create", &broken])
        .await
        .fails(1, "is not YAML");
    // Help goes to stdout with exit 0.
    let help = unbox(&["--help"]).await.ok();
    assert!(help.stdout.contains("Exit status:"), "{}", help.stdout);
}

#[tokio::test]
async fn devices_list_filter_page_show_update_explain_delete() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap("Contoso", "contoso.com").await;
    let admin = Admin::new(&app, &tenant);
    let a = app
        .register(
            &tenant,
            &hash("DEV-A", true, 0),
            json!({"groupTag": "Sales", "userPrincipalName": "ann@contoso.com"}),
        )
        .await;
    let b = app
        .register(
            &tenant,
            &hash("DEV-B", true, 0),
            json!({"groupTag": "Finance"}),
        )
        .await;
    let _c = app
        .register(&tenant, &hash("DEV-C", false, 0), json!({}))
        .await;

    // Table: a header and a row per device.
    let run = admin.run(&["devices", "list"]).await.ok();
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(lines[0].starts_with("ID"), "{}", run.stdout);
    assert!(lines[0].contains("SERIAL"), "{}", run.stdout);
    assert_eq!(lines.len(), 4, "{}", run.stdout);
    assert!(run.stderr.is_empty(), "{}", run.stderr);

    // Pages: --limit stops and says how to go on; --cursor goes on; --all reads every page.
    let run = admin.run(&["devices", "list", "--limit", "2"]).await.ok();
    assert_eq!(run.stdout.lines().count(), 3);
    assert!(run.stderr.contains("--cursor"), "{}", run.stderr);
    let first = admin
        .run(&["devices", "list", "--limit", "2", "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(first["items"].as_array().unwrap().len(), 2);
    let cursor = first["nextCursor"].as_str().unwrap();
    let rest = admin
        .run(&["devices", "list", "--cursor", cursor, "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(rest["items"].as_array().unwrap().len(), 1);
    assert!(rest["nextCursor"].is_null());
    let all = admin
        .run(&["devices", "list", "--all", "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(all["items"].as_array().unwrap().len(), 3);

    // Filters.
    let only = |list: &Value| -> Vec<String> {
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["serialNumber"].as_str().unwrap().to_owned())
            .collect()
    };
    for (args, expected) in [
        (vec!["--group-tag", "sales"], vec!["DEV-A"]),
        (vec!["--serial", "DEV-B"], vec!["DEV-B"]),
        (vec!["--user", "ann@contoso.com"], vec!["DEV-A"]),
        (vec!["--q", "DEV-C"], vec!["DEV-C"]),
    ] {
        let mut all = vec!["devices", "list", "-o", "json"];
        all.extend(args.iter());
        assert_eq!(
            only(&admin.run(&all).await.ok().json()),
            expected,
            "{args:?}"
        );
    }
    // Show, in both forms.
    let run = admin.run(&["devices", "show", &a]).await.ok();
    assert!(run.stdout.contains("Serial number:"), "{}", run.stdout);
    assert!(run.stdout.contains("DEV-A"), "{}", run.stdout);
    let shown = admin
        .run(&["devices", "show", &a, "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(shown["groupTag"], "Sales");

    // Update: only the fields given; an empty value clears one.
    let updated = admin
        .run(&[
            "devices",
            "update",
            &a,
            "--group-tag",
            "Finance",
            "--display-name",
            "ANN-LAPTOP",
            "--extension-attribute",
            "1=Blue",
            "-o",
            "json",
        ])
        .await
        .ok()
        .json();
    assert_eq!(updated["groupTag"], "Finance");
    assert_eq!(updated["displayName"], "ANN-LAPTOP");
    assert_eq!(
        updated["extensionAttributes"]["extensionAttribute1"],
        "Blue"
    );
    assert_eq!(updated["userPrincipalName"], "ann@contoso.com", "untouched");
    let updated = admin
        .run(&["devices", "update", &a, "--user", "", "-o", "json"])
        .await
        .ok()
        .json();
    assert!(updated["userPrincipalName"].is_null());

    // Explain: a group profile beats the all-devices one.
    let group = admin
        .run(&[
            "groups",
            "create",
            "--name",
            "Finance laptops",
            "-o",
            "json",
        ])
        .await
        .ok()
        .json();
    let group_id = group["id"].as_str().unwrap();
    admin
        .run(&["groups", "members", "add", group_id, &a])
        .await
        .ok();
    let everyone = app
        .create_profile(&tenant, json!({"displayName": "Everyone"}))
        .await;
    let finance = app
        .create_profile(&tenant, json!({"displayName": "Finance"}))
        .await;
    admin
        .run(&["profiles", "assign", &everyone, "--all-devices"])
        .await
        .ok();
    admin
        .run(&["profiles", "assign", &finance, "--group", group_id])
        .await
        .ok();
    let run = admin.run(&["devices", "explain", &a]).await.ok();
    assert!(
        run.stdout.contains("gets profile \"Finance\""),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("tier: group"), "{}", run.stdout);
    assert!(run.stdout.contains("Finance laptops"), "{}", run.stdout);
    assert!(run.stdout.contains("static member"), "{}", run.stdout);
    assert!(run.stdout.contains("lower tier"), "{}", run.stdout);
    assert!(run.stdout.contains("won"), "{}", run.stdout);
    let explained = admin
        .run(&["devices", "explain", &a, "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(explained["winner"]["profileId"], finance.as_str());
    let run = admin.run(&["devices", "explain", &b]).await.ok();
    assert!(
        run.stdout.contains("gets profile \"Everyone\""),
        "{}",
        run.stdout
    );

    // Delete; then it is gone.
    let run = admin.run(&["devices", "delete", &b]).await.ok();
    assert_eq!(run.stdout.trim(), format!("Deleted device {b}"));
    admin
        .run(&["devices", "show", &b])
        .await
        .fails(3, "Not Found");
    let gone = admin
        .run(&["devices", "delete", &a, "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(gone["deleted"], true);
}

#[tokio::test]
async fn profiles_and_groups() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap("Contoso", "contoso.com").await;
    let admin = Admin::new(&app, &tenant);
    let dev1 = app
        .register(
            &tenant,
            &hash("GRP-1", true, 0),
            json!({"groupTag": "F1-lab"}),
        )
        .await;
    let dev2 = app
        .register(&tenant, &hash("GRP-2", true, 0), json!({}))
        .await;

    // Profiles from YAML and JSON.
    let yaml = admin.write(
        "sales.yml",
        "displayName: Sales Autopilot\ndescription: for sales\ndeviceNameTemplate: SALES-%SERIAL%\n\
         oobe:\n  hideEula: true\n  hidePrivacySettings: true\n  userType: standard\n\
         enrollmentStatusPage:\n  enabled: true\n  timeoutMinutes: 90\n",
    );
    let run = admin.run(&["profiles", "create", &yaml]).await.ok();
    assert!(run.stdout.starts_with("Created profile "), "{}", run.stdout);
    assert!(
        run.stdout.contains("hide EULA, hide privacy settings"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("on, timeout 90 min"), "{}", run.stdout);
    let sales = run
        .stdout
        .lines()
        .next()
        .unwrap()
        .trim_start_matches("Created profile ")
        .to_owned();
    let json_file = admin.write(
        "kiosk.json",
        &json!({"displayName": "Kiosk", "deploymentMode": "selfDeploying"}).to_string(),
    );
    let kiosk = admin
        .run(&["profiles", "create", &json_file, "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(kiosk["deploymentMode"], "selfDeploying");
    let kiosk_id = kiosk["id"].as_str().unwrap().to_owned();
    let list = admin.run(&["profiles", "list"]).await.ok();
    assert!(list.stdout.contains("Sales Autopilot"), "{}", list.stdout);
    assert!(list.stdout.contains("selfDeploying"), "{}", list.stdout);

    // Update: `show -o json` output edited and sent back (read-only fields ignored), and YAML.
    let mut shown = admin
        .run(&["profiles", "show", &kiosk_id, "-o", "json"])
        .await
        .ok()
        .json();
    shown["description"] = json!("lobby screens");
    let edited = admin.write("kiosk-edited.json", &shown.to_string());
    let updated = admin
        .run(&["profiles", "update", &kiosk_id, &edited, "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(updated["description"], "lobby screens");
    let renamed = admin.write("rename.yaml", "displayName: Lobby kiosk\n");
    let updated = admin
        .run(&["profiles", "update", &kiosk_id, &renamed, "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(updated["displayName"], "Lobby kiosk");
    assert_eq!(updated["description"], "lobby screens", "a merge patch");
    // From stdin.
    let updated = admin
        .run_stdin(
            &["profiles", "update", &kiosk_id, "-", "-o", "json"],
            "locale: en-GB\n",
            false,
        )
        .await
        .ok()
        .json();
    assert_eq!(updated["locale"], "en-GB");
    // The server refuses a bad value: exit 2.
    let bad = admin.write("bad.yaml", "deploymentMode: sideways\n");
    assert_eq!(
        admin
            .run(&["profiles", "update", &kiosk_id, &bad])
            .await
            .code,
        2
    );

    // Groups: static with members, dynamic with a rule that begins with a hyphen.
    let run = admin
        .run(&[
            "groups",
            "create",
            "--name",
            "Lab",
            "--description",
            "lab machines",
        ])
        .await
        .ok();
    let lab = run
        .stdout
        .lines()
        .next()
        .unwrap()
        .trim_start_matches("Created group ")
        .to_owned();
    let run = admin
        .run(&["groups", "members", "add", &lab, &dev1, &dev2])
        .await
        .ok();
    assert!(run.stdout.contains("Added 2 device(s)"), "{}", run.stdout);
    let run = admin
        .run(&["groups", "members", "add", &lab, &dev1])
        .await
        .ok();
    assert!(run.stdout.contains("(1 already members)"), "{}", run.stdout);
    let members = admin
        .run(&["groups", "members", "list", &lab, "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(members["items"].as_array().unwrap().len(), 2);
    assert!(members["processingStatus"].is_object());
    let run = admin.run(&["groups", "members", "list", &lab]).await.ok();
    assert!(run.stdout.contains("GRP-1"), "{}", run.stdout);
    assert!(run.stderr.contains("membership: "), "{}", run.stderr);
    admin
        .run(&["groups", "members", "remove", &lab, &dev2])
        .await
        .ok();
    let members = admin
        .run(&["groups", "members", "list", &lab, "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(members["items"].as_array().unwrap().len(), 1);

    let rule = r#"-not (device.devicePhysicalIds -any (_ -eq "[OrderID]:F1-lab"))"#;
    let dynamic = admin
        .run(&[
            "groups",
            "create",
            "--name",
            "Not the lab",
            "--rule",
            rule,
            "-o",
            "json",
        ])
        .await
        .ok()
        .json();
    assert_eq!(dynamic["membershipType"], "dynamic");
    assert_eq!(dynamic["membershipRule"], rule);
    let dynamic_id = dynamic["id"].as_str().unwrap().to_owned();
    admin
        .run(&["groups", "members", "add", &dynamic_id, &dev1])
        .await
        .fails(2, "DynamicGroupMembership");
    let updated = admin
        .run(&["groups", "update", &dynamic_id, "--pause", "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(updated["membershipRuleProcessingState"], "paused");
    let list = admin.run(&["groups", "list"]).await.ok();
    assert!(list.stdout.contains("Not the lab"), "{}", list.stdout);
    assert!(list.stdout.contains("dynamic"), "{}", list.stdout);
    let run = admin.run(&["groups", "show", &lab]).await.ok();
    assert!(run.stdout.contains("lab machines"), "{}", run.stdout);
    // An invalid rule is refused: exit 2.
    admin
        .run(&[
            "groups",
            "create",
            "--name",
            "Broken",
            "--rule",
            "device.nope -eq 1",
        ])
        .await
        .fails(2, "InvalidMembershipRule");

    // Validate and evaluate on the server.
    let run = admin
        .run(&["groups", "validate-rule", "--rule", rule])
        .await
        .ok();
    assert!(
        run.stdout.starts_with("The rule is valid"),
        "{}",
        run.stdout
    );
    let run = admin
        .run(&[
            "groups",
            "validate-rule",
            "--rule",
            "(device.invalidProperty -eq \"Value\")",
        ])
        .await;
    assert_eq!(run.code, 2);
    assert!(
        run.stdout
            .contains("error at 1..23 `device.invalidProperty`"),
        "{}",
        run.stdout
    );
    let validation = admin
        .run(&[
            "groups",
            "validate-rule",
            "--rule",
            "device.deviceModel -eq",
            "-o",
            "json",
        ])
        .await;
    assert_eq!(validation.code, 2);
    assert_eq!(validation.json()["valid"], false);
    let run = admin
        .run(&["groups", "evaluate", "--rule", rule, "--device-id", &dev1])
        .await
        .ok();
    assert!(
        run.stdout.starts_with("The rule is false"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("devicePhysicalIds"), "{}", run.stdout);
    let what_if = admin.write("what-if.json", r#"{"deviceModel": "Surface Laptop 6"}"#);
    let result = admin
        .run(&[
            "groups",
            "evaluate",
            "--rule",
            r#"device.deviceModel -startsWith "Surface""#,
            "--device",
            &what_if,
            "-o",
            "json",
        ])
        .await
        .ok()
        .json();
    assert_eq!(result["membershipRuleEvaluationResult"], true);
    admin
        .run(&[
            "groups",
            "evaluate",
            "--rule",
            "device.x -eq",
            "--device",
            &what_if,
        ])
        .await
        .fails(2, "InvalidMembershipRule");

    // Assignments: to a group, a device, excluded; listed; removed.
    let run = admin
        .run(&["profiles", "assign", &sales, "--group", &lab])
        .await
        .ok();
    assert!(
        run.stdout.contains(&format!("to group {lab}")),
        "{}",
        run.stdout
    );
    let direct = admin
        .run(&[
            "profiles", "assign", &kiosk_id, "--device", &dev2, "-o", "json",
        ])
        .await
        .ok()
        .json();
    let excluded = admin
        .run(&[
            "profiles",
            "assign",
            &sales,
            "--device",
            &dev1,
            "--exclude",
            "-o",
            "json",
        ])
        .await
        .ok()
        .json();
    assert_eq!(excluded["mode"], "exclude");
    let run = admin.run(&["profiles", "assignments", &sales]).await.ok();
    assert_eq!(run.stdout.lines().count(), 3, "{}", run.stdout);
    assert!(run.stdout.contains("exclude"), "{}", run.stdout);
    let run = admin.run(&["profiles", "show", &sales]).await.ok();
    assert!(run.stdout.contains("Assignments:"), "{}", run.stdout);
    assert!(
        run.stdout.contains(&format!("group {lab}")),
        "{}",
        run.stdout
    );
    admin
        .run(&[
            "profiles",
            "unassign",
            &kiosk_id,
            direct["id"].as_str().unwrap(),
        ])
        .await
        .ok();
    let list = admin
        .run(&["profiles", "assignments", &kiosk_id, "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(list["items"].as_array().unwrap().len(), 0);
    admin.run(&["profiles", "devices", &sales]).await.ok();

    // The offline configuration file.
    let out = admin.path("AutopilotConfigurationFile.json");
    let run = admin
        .run(&[
            "profiles",
            "offline-configuration",
            &sales,
            "--out",
            s(&out),
        ])
        .await
        .ok();
    assert!(run.stdout.contains("Wrote "), "{}", run.stdout);
    let file: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(file["CloudAssignedTenantDomain"], "contoso.com");
    assert_eq!(file["Comment_File"], "Profile Sales Autopilot");
    let printed = admin
        .run(&["profiles", "offline-configuration", &sales, "--out", "-"])
        .await
        .ok()
        .json();
    assert_eq!(printed, file);

    // Deletions.
    admin.run(&["profiles", "delete", &kiosk_id]).await.ok();
    admin
        .run(&["profiles", "show", &kiosk_id])
        .await
        .fails(3, "Not Found");
    admin.run(&["groups", "delete", &dynamic_id]).await.ok();
    admin
        .run(&["groups", "show", &dynamic_id])
        .await
        .fails(3, "Not Found");
}

const HEADER: &str = "Device Serial Number,Windows Product ID,Hardware Hash";

#[tokio::test]
async fn imports_report_failed_rows_and_keep_stdout_clean() {
    let app = TestApp::spawn().await;
    let tenant = app.bootstrap("Contoso", "contoso.com").await;
    let admin = Admin::new(&app, &tenant);
    app.register(&tenant, &hash("IMP-DUP", true, 0), json!({}))
        .await;

    // A dry run of a good file: complete, nothing registered.
    let good = admin.write(
        "good.csv",
        &format!(
            "{HEADER}\r\nIMP-1,,{}\r\nIMP-2,,{}\r\n",
            hash("IMP-1", true, 0),
            hash("IMP-2", true, 0)
        ),
    );
    let run = admin
        .run(&["import", &good, "--dry-run", "--poll-interval", "20"])
        .await
        .ok();
    assert!(
        run.stdout
            .contains("complete (dry run: nothing registered): 2 rows"),
        "{}",
        run.stdout
    );
    let list = admin
        .run(&["devices", "list", "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(list["items"].as_array().unwrap().len(), 1);

    // Failed rows: exit 6, and the rows in a table.
    let mixed = admin.write(
        "mixed.csv",
        &format!(
            "{HEADER}\r\nIMP-3,,{}\r\nIMP-BAD,,not-a-hash\r\nIMP-DUP,,{}\r\n",
            hash("IMP-3", true, 0),
            hash("IMP-DUP", true, 1)
        ),
    );
    let run = admin
        .run(&["import", &mixed, "--poll-interval", "20"])
        .await;
    assert_eq!(run.code, 6, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .contains(": partial: 3 rows, 1 succeeded, 2 failed"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("Failed rows:"), "{}", run.stdout);
    assert!(
        run.stdout.contains("InvalidZtdHardwareHash"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("ZtdDeviceAlreadyAssigned"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("806"), "{}", run.stdout);

    // JSON: the final job only on stdout, while the progress bar draws on stderr.
    let batch = admin.write(
        "batch.json",
        &json!({"devices": [
            {"hardwareHash": hash("IMP-J1", true, 0), "groupTag": "Json"},
            {"hardwareHash": hash("IMP-J2", true, 0)},
        ]})
        .to_string(),
    );
    let run = admin
        .run_stdin(
            &[
                "import",
                &batch,
                "--poll-interval",
                "20",
                "--idempotency-key",
                "batch-1",
                "-o",
                "json",
            ],
            "",
            true,
        )
        .await
        .ok();
    let job = run.json();
    assert_eq!(job["status"], "complete");
    assert_eq!(job["format"], "json");
    assert_eq!(job["succeeded"], 2);
    assert!(
        run.stderr.contains("rows"),
        "the progress bar: {:?}",
        run.stderr
    );
    // The same key and file: the same job.
    let again = admin
        .run(&[
            "import",
            &batch,
            "--poll-interval",
            "20",
            "--idempotency-key",
            "batch-1",
            "-o",
            "json",
        ])
        .await
        .ok()
        .json();
    assert_eq!(again["id"], job["id"]);

    // The jobs and their rows.
    let jobs = admin
        .run(&["imports", "list", "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(jobs["items"].as_array().unwrap().len(), 3);
    let mixed_job = jobs["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["status"] == "partial")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let run = admin.run(&["imports", "show", &mixed_job]).await.ok();
    assert!(run.stdout.contains("Status:"), "{}", run.stdout);
    assert!(run.stdout.contains("partial"), "{}", run.stdout);
    let failed = admin
        .run(&["imports", "items", &mixed_job, "--failed", "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(failed["items"].as_array().unwrap().len(), 2);
    let items = admin.run(&["imports", "items", &mixed_job]).await.ok();
    assert_eq!(items.stdout.lines().count(), 4, "{}", items.stdout);
    let run = admin.run(&["imports", "list"]).await.ok();
    assert!(run.stdout.contains("partial"), "{}", run.stdout);

    // --no-wait: the accepted job.
    let run = admin.run(&["import", &good, "--no-wait"]).await.ok();
    assert!(run.stdout.contains("accepted"), "{}", run.stdout);
    // A file that is not a registration CSV: the server refuses it (exit 2).
    let junk = admin.write("junk.csv", "hello,world\r\n1,2\r\n");
    admin
        .run(&["import", &junk])
        .await
        .fails(2, "NotARegistrationCsv");
    // A file that is not there: exit 1.
    admin
        .run(&["import", "/no/such.csv"])
        .await
        .fails(1, "cannot read /no/such.csv");
}

#[tokio::test]
async fn partners_import_into_tenants_that_authorized_them() {
    let app = TestApp::spawn().await;
    let contoso = app.bootstrap("Contoso", "contoso.com").await;
    let fabrikam = app.bootstrap("Fabrikam", "fabrikam.com").await;
    let oem = unbox_server::startup::create_partner(&app.pool, "Dell OEM")
        .await
        .unwrap();
    let r = app
        .post(
            "/v1/partner-authorizations",
            &contoso.token,
            json!({"partnerId": oem.partner_id}),
        )
        .await;
    assert!(r.status.is_success(), "{}", r.text);
    let partner = Admin {
        server: app.base.clone(),
        client_id: oem.client_id.to_string(),
        client_secret: oem.client_secret.clone(),
        dir: tempfile::tempdir().unwrap(),
    };
    let file = partner.write(
        "order.csv",
        &format!(
            "{HEADER},Group Tag\r\nOEM-1,,{},Order-42\r\n",
            hash("OEM-1", true, 0)
        ),
    );
    let run = partner
        .run(&[
            "partner",
            "import",
            "--tenant",
            &contoso.id,
            &file,
            "--poll-interval",
            "20",
        ])
        .await
        .ok();
    assert!(
        run.stdout.contains(": complete: 1 rows, 1 succeeded"),
        "{}",
        run.stdout
    );
    let admin = Admin::new(&app, &contoso);
    let list = admin
        .run(&["devices", "list", "--group-tag", "Order-42", "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(list["items"][0]["serialNumber"], "OEM-1");

    // A tenant that did not authorize the partner: 403, exit 4.
    partner
        .run(&["partner", "import", "--tenant", &fabrikam.id, &file])
        .await
        .fails(4, "PartnerNotAuthorized");
    // A partner's credentials are not a tenant's: exit 4.
    partner
        .run(&["devices", "list"])
        .await
        .fails(4, "TenantTokenRequired");
}

#[tokio::test]
async fn https_with_a_private_ca() {
    use std::time::Duration;

    use unbox_server::auth::tokens::{LocalKey, TokenService};
    use unbox_server::device::tls::{Tls, TlsFiles};
    use unbox_server::state::{AppState, Services, Settings};

    let app = TestApp::spawn().await;
    let tenant = app.bootstrap("Contoso", "contoso.com").await;
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let cert_file = dir.path().join("cert.pem");
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(dir.path().join("key.pem"), key.serialize_pem()).unwrap();

    // The same database, served over HTTPS.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!(
        "https://127.0.0.1:{}",
        listener.local_addr().unwrap().port()
    );
    let settings = Settings {
        data_dir: dir.path().to_owned(),
        ..Settings::default()
    };
    let signing = LocalKey::load_or_generate(&dir.path().join("signing-key.pem")).unwrap();
    let state = AppState::from(Services {
        pool: app.pool.clone(),
        tokens: TokenService::new(base.clone(), Duration::from_secs(3600), signing, None),
        metrics: unbox_server::telemetry::metrics_handle(),
        rules: std::sync::Arc::default(),
        device: unbox_server::device::DeviceRuntime::new(settings.device.clone()),
        settings: std::sync::Arc::new(settings),
    });
    let tls = Tls::new(TlsFiles {
        cert: cert_file.clone(),
        key: dir.path().join("key.pem"),
    })
    .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(unbox_server::startup::serve_tls(
        listener,
        tls,
        state,
        async move {
            let _ = stopped.await;
        },
    ));

    let config = dir.path().join("config.json");
    let args = |ca: Option<&Path>| {
        let mut args = vec![
            "--server".to_owned(),
            base.clone(),
            "--client-id".to_owned(),
            tenant.client_id.clone(),
            "--client-secret".to_owned(),
            tenant.client_secret.clone(),
            "--config".to_owned(),
            s(&config).to_owned(),
        ];
        if let Some(ca) = ca {
            args.push("--ca-cert".to_owned());
            args.push(s(ca).to_owned());
        }
        args.extend(["profiles".to_owned(), "list".to_owned()]);
        args
    };
    // With the CA: served. (The server may take a moment to start; poll with a deadline.)
    let trusted = args(Some(&cert_file));
    let trusted: Vec<&str> = trusted.iter().map(String::as_str).collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let run = unbox(&trusted).await;
        if run.code == 0 {
            assert!(run.stdout.starts_with("ID "), "{}", run.stdout);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{}", run.stderr);
        tokio::task::yield_now().await;
    }
    // Without it: the certificate is not trusted (exit 1).
    let plain = args(None);
    let plain: Vec<&str> = plain.iter().map(String::as_str).collect();
    let run = unbox(&plain).await;
    run.fails(1, "cannot reach https://127.0.0.1");
    assert!(run.stderr.contains("certificate"), "{}", run.stderr);
    // login keeps the CA for the commands that follow.
    let mut login = args(Some(&cert_file));
    login.truncate(login.len() - 2);
    login.push("login".to_owned());
    let login: Vec<&str> = login.iter().map(String::as_str).collect();
    unbox(&login).await.ok();
    unbox(&["--config", s(&config), "profiles", "list"])
        .await
        .ok();
    let _ = stop.send(());
}
