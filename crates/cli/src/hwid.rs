//! This Linux machine's hardware identity (reference/hardware-hash.md, "Linux identity"):
//! SMBIOS facts from `/sys/class/dmi/id`, permanent MAC addresses, NVMe ids, and the TPM
//! endorsement key's modulus, normalised as the API's `identity` and encodable as an
//! Unbox-made hardware hash.
//!
//! Decisions:
//! - MACs: every `/sys/class/net/*` but `lo` whose `addr_assign_type` is 0 (permanent) and
//!   that has a `device` link (a physical adapter: bridges, bonds, veths, tun/tap and other
//!   virtual interfaces have none). An address changed at run time (MAC randomisation) is not
//!   permanent and is left out.
//! - Disks: `/sys/block/nvme*n*` (controller paths `nvme0c0n1` skipped), one id each: `nguid`,
//!   else `eui`, else an `eui.`/`nguid.` `wwid`, else the controller's `device/serial`. Other
//!   disks are not read.
//! - Serial: `product_serial` only. `board_serial` is not substituted for a placeholder system
//!   serial, because a Windows hash of the same machine carries the system serial: the tuple
//!   must be the same under both systems. It is named in the error when nothing else is usable.
//! - TPM: `--tpm-ek-modulus-file`; else, on this machine (no `--root`) when `/dev/tpmrm0` or
//!   `/sys/class/tpm/tpm0` exists, tpm2-tools: `tpm2_readpublic` of the persistent EK
//!   (0x81010001), else `tpm2_createek -G rsa` (the default RSA-2048 EK template). Missing tools
//!   or a failure is said on stderr and the identity goes on without the TPM. Under `--root`
//!   the TPM is never read (a mounted tree's TPM is not this machine's): pass the file.

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};
use unbox_domain::hardware_hash::{self, HashSpec, OsType};
use unbox_domain::identity::{self, Identity};

use crate::error::CliError;

/// The persistent handle where the RSA endorsement key is usually kept.
const EK_HANDLE: &str = "0x81010001";

/// Where and how to read.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Read `sys/…` under this directory instead of `/`.
    pub root: Option<PathBuf>,
    /// The EK public key: a TPM2B_PUBLIC (`tpm2_createek -u`, `tpm2_readpublic -o`), the
    /// modulus as hex text, or the raw modulus bytes.
    pub tpm_ek_modulus_file: Option<PathBuf>,
    /// Never read a TPM.
    pub no_tpm: bool,
    /// Where tpm2-tools are (default: PATH).
    pub tpm_tools_dir: Option<PathBuf>,
}

/// What was read.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// Normalised.
    pub identity: Identity,
    pub tpm_ek_modulus: Option<Vec<u8>>,
    pub board_serial: Option<String>,
    pub chassis_type: Option<String>,
    /// Why the system serial is missing, when it is unreadable.
    pub serial_unreadable: Option<String>,
    /// There is no `sys/class/dmi/id` at all (no SMBIOS: some VMs, containers, ARM boards).
    pub dmi_missing: bool,
    /// Why there is no TPM digest.
    pub tpm_missing: String,
    /// What was read and skipped, for `--verbose`.
    pub notes: Vec<String>,
}

impl Facts {
    /// Whether the identity has a strong key (a real serial with a manufacturer, or a TPM).
    pub fn is_usable(&self) -> bool {
        self.identity.keys().has_strong_key()
    }

    /// The error for an identity with no strong key: what is missing, and why.
    pub fn missing(&self, root: &Path) -> CliError {
        let serial = &self.identity.serial_number;
        let mut why = Vec::new();
        if self.dmi_missing {
            why.push(format!(
                "there is no SMBIOS information ({} is missing)",
                root.join("sys/class/dmi/id").display()
            ));
        } else if let Some(reason) = &self.serial_unreadable {
            why.push(format!(
                "the system serial number cannot be read ({reason})"
            ));
        } else if identity::is_placeholder_serial(serial) {
            let mut text = if serial.is_empty() {
                "the system serial number (product_serial) is empty".to_owned()
            } else {
                format!("the system serial number {serial:?} is a placeholder, not an identity")
            };
            if let Some(board) = self
                .board_serial
                .as_deref()
                .filter(|b| !identity::is_placeholder_serial(b))
            {
                text.push_str(&format!(
                    " (the board serial {board:?} is not used: Autopilot identifies a machine by its system serial)"
                ));
            }
            why.push(text);
        } else if self.identity.manufacturer.is_empty() {
            why.push("the manufacturer (sys_vendor) is empty".to_owned());
        }
        why.push(format!("no TPM endorsement key ({})", self.tpm_missing));
        CliError::usage(format!(
            "no usable hardware identity under {}: {}. A machine is identified by its manufacturer, model and a real serial number, or by its TPM",
            root.display(),
            why.join(", and ")
        ))
    }

    /// The Unbox-made hardware hash of this identity (record 1 with OS type `L`).
    pub fn unbox_hash(&self) -> Result<String, CliError> {
        let id = &self.identity;
        let macs = id
            .mac_addresses
            .iter()
            .filter_map(|m| mac_bytes(m))
            .collect();
        let tpm_ek_sha256 = match (&self.tpm_ek_modulus, &id.tpm_ek_sha256) {
            (None, Some(digest)) => hex::decode(digest)
                .ok()
                .and_then(|d| <[u8; 32]>::try_from(d).ok()),
            _ => None,
        };
        let spec = HashSpec {
            manufacturer: id.manufacturer.clone(),
            model: id.model.clone(),
            serial: id.serial_number.clone(),
            smbios_uuid: id
                .smbios_uuid
                .as_deref()
                .and_then(|u| uuid::Uuid::parse_str(u).ok()),
            macs,
            disk_ids: id.disk_ids.clone(),
            tpm_ek_modulus: self.tpm_ek_modulus.clone(),
            tpm_ek_sha256,
            os_type: OsType::Linux,
            ..HashSpec::default()
        };
        hardware_hash::build(&spec).map_err(|e| {
            CliError::usage(format!(
                "cannot encode the identity as a hardware hash: {e}"
            ))
        })
    }
}

fn mac_bytes(mac: &str) -> Option<[u8; 6]> {
    let bytes: Vec<u8> = mac
        .split(':')
        .map(|p| u8::from_str_radix(p, 16).ok())
        .collect::<Option<_>>()?;
    bytes.try_into().ok()
}

/// A sysfs attribute's text, trimmed of whitespace and NULs. `Ok(None)` when absent.
fn read_attr(path: &Path) -> Result<Option<String>, std::io::Error> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let text = text.trim_matches(|c: char| c.is_whitespace() || c == '\0');
            Ok((!text.is_empty()).then(|| text.to_owned()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn describe(error: &std::io::Error) -> String {
    if error.kind() == std::io::ErrorKind::PermissionDenied {
        "permission denied: run as root".to_owned()
    } else {
        error.to_string()
    }
}

/// Sorted names of a directory's entries; none when it does not exist.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// `nvme0n1` yes, `nvme0c0n1` (a controller path of a multipath namespace) no.
fn is_nvme_namespace(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("nvme") else {
        return false;
    };
    let rest = rest.trim_start_matches(|c: char| c.is_ascii_digit());
    rest.starts_with('n')
}

/// True for an id of only zeros (absent ids read as zeros on some firmware).
fn all_zero(text: &str) -> bool {
    let hex: String = text.chars().filter(char::is_ascii_hexdigit).collect();
    !hex.is_empty() && hex.chars().all(|c| c == '0')
}

/// Reads the identity.
pub fn collect(options: &Options, warn: &mut dyn FnMut(&str)) -> Result<Facts, CliError> {
    let root = options.root.clone().unwrap_or_else(|| PathBuf::from("/"));
    if options.root.is_some() && !root.join("sys").is_dir() {
        return Err(CliError::usage(format!(
            "{} holds no sysfs tree: expected {}",
            root.display(),
            root.join("sys/class/dmi/id").display()
        )));
    }
    let mut facts = Facts::default();
    let dmi = root.join("sys/class/dmi/id");
    facts.dmi_missing = !dmi.is_dir();
    let dmi_attr = |name: &str, facts: &mut Facts| -> Option<String> {
        match read_attr(&dmi.join(name)) {
            Ok(value) => {
                facts.notes.push(format!(
                    "dmi {name}: {}",
                    value.as_deref().unwrap_or("(absent)")
                ));
                value
            }
            Err(e) => {
                let reason = describe(&e);
                facts
                    .notes
                    .push(format!("dmi {name}: unreadable ({reason})"));
                if name == "product_serial" {
                    facts.serial_unreadable = Some(reason);
                }
                None
            }
        }
    };
    let manufacturer = dmi_attr("sys_vendor", &mut facts).unwrap_or_default();
    let model = dmi_attr("product_name", &mut facts).unwrap_or_default();
    let serial = dmi_attr("product_serial", &mut facts).unwrap_or_default();
    let uuid_text = dmi_attr("product_uuid", &mut facts);
    facts.board_serial = dmi_attr("board_serial", &mut facts);
    facts.chassis_type = dmi_attr("chassis_type", &mut facts);

    let smbios_uuid = match uuid_text.as_deref().map(identity::normalize_uuid) {
        None => None,
        Some(Ok(uuid)) => uuid,
        Some(Err(e)) => {
            warn(&format!("note: the SMBIOS UUID is left out: {e}"));
            None
        }
    };

    let macs = read_macs(&root, &mut facts.notes);
    let disks = read_disks(&root, &mut facts.notes);

    let modulus = read_tpm(options, &root, &mut facts, warn)?;
    let tpm_ek_sha256 = modulus.as_ref().map(|m| hex::encode(Sha256::digest(m)));
    facts.tpm_ek_modulus = modulus;

    let raw = Identity {
        manufacturer,
        model,
        serial_number: serial,
        smbios_uuid,
        mac_addresses: macs,
        disk_ids: disks,
        tpm_ek_sha256,
    };
    facts.identity = raw.normalized().map_err(|e| {
        CliError::usage(format!(
            "the identity read under {} is not valid: {e}",
            root.display()
        ))
    })?;
    Ok(facts)
}

fn read_macs(root: &Path, notes: &mut Vec<String>) -> Vec<String> {
    let net = root.join("sys/class/net");
    let mut macs = Vec::new();
    for name in entries(&net) {
        if name == "lo" {
            continue;
        }
        let dir = net.join(&name);
        let assign = read_attr(&dir.join("addr_assign_type")).ok().flatten();
        if assign.as_deref() != Some("0") {
            notes.push(format!(
                "net {name}: skipped (addr_assign_type {}, not permanent)",
                assign.as_deref().unwrap_or("absent")
            ));
            continue;
        }
        if std::fs::symlink_metadata(dir.join("device")).is_err() {
            notes.push(format!("net {name}: skipped (virtual: no device link)"));
            continue;
        }
        match read_attr(&dir.join("address")).ok().flatten() {
            Some(address) => match identity::normalize_mac(&address) {
                Some(mac) if mac != "00:00:00:00:00:00" => {
                    notes.push(format!("net {name}: {mac}"));
                    macs.push(mac);
                }
                _ => notes.push(format!("net {name}: skipped (address {address:?})")),
            },
            None => notes.push(format!("net {name}: skipped (no address)")),
        }
    }
    macs
}

fn read_disks(root: &Path, notes: &mut Vec<String>) -> Vec<String> {
    let block = root.join("sys/block");
    let mut disks = Vec::new();
    for name in entries(&block) {
        if !is_nvme_namespace(&name) {
            continue;
        }
        let dir = block.join(&name);
        let read = |attr: &str| {
            read_attr(&dir.join(attr))
                .ok()
                .flatten()
                .filter(|v| !all_zero(v))
        };
        let wwid = read("wwid").filter(|w| {
            let w = w.to_ascii_lowercase();
            w.starts_with("eui.") || w.starts_with("nguid.")
        });
        let found = [
            ("nguid", read("nguid")),
            ("eui", read("eui")),
            ("wwid", wwid),
            ("device/serial", read("device/serial")),
        ]
        .into_iter()
        .find_map(|(attr, value)| {
            value.and_then(|v| identity::normalize_disk_id(&v).map(|id| (attr, id)))
        });
        match found {
            Some((attr, id)) => {
                notes.push(format!("disk {name}: {id} (from {attr})"));
                disks.push(id);
            }
            None => notes.push(format!(
                "disk {name}: skipped (no nguid, eui, wwid or serial)"
            )),
        }
    }
    disks
}

/// The EK modulus, when there is one to read.
fn read_tpm(
    options: &Options,
    root: &Path,
    facts: &mut Facts,
    warn: &mut dyn FnMut(&str),
) -> Result<Option<Vec<u8>>, CliError> {
    if options.no_tpm {
        "--no-tpm".clone_into(&mut facts.tpm_missing);
        return Ok(None);
    }
    if let Some(path) = &options.tpm_ek_modulus_file {
        let bytes = std::fs::read(path).map_err(|e| {
            CliError::failure(format!(
                "cannot read the TPM EK file {}: {e}",
                path.display()
            ))
        })?;
        let modulus = parse_ek_public(&bytes).map_err(|e| {
            CliError::failure(format!(
                "{} is not a TPM EK public key: {e}",
                path.display()
            ))
        })?;
        facts.notes.push(format!(
            "tpm: EK modulus of {} bytes from {}",
            modulus.len(),
            path.display()
        ));
        return Ok(Some(modulus));
    }
    let present = root.join("dev/tpmrm0").exists() || root.join("sys/class/tpm/tpm0").exists();
    if !present {
        "no TPM found".clone_into(&mut facts.tpm_missing);
        facts.notes.push("tpm: none found".to_owned());
        return Ok(None);
    }
    if options.root.is_some() {
        facts.tpm_missing = format!(
            "a TPM is present under {}, but a mounted tree's TPM is not read: pass --tpm-ek-modulus-file",
            root.display()
        );
        warn(&format!("note: {}", facts.tpm_missing));
        return Ok(None);
    }
    match read_ek_with_tools(options.tpm_tools_dir.as_deref()) {
        Ok(modulus) => {
            facts.notes.push(format!(
                "tpm: EK modulus of {} bytes from tpm2-tools",
                modulus.len()
            ));
            Ok(Some(modulus))
        }
        Err(reason) => {
            warn(&format!(
                "note: a TPM is present but its endorsement key was not read: {reason}; continuing without the TPM"
            ));
            facts.tpm_missing = reason;
            Ok(None)
        }
    }
}

fn tool(dir: Option<&Path>, name: &str) -> PathBuf {
    dir.map_or_else(|| PathBuf::from(name), |d| d.join(name))
}

/// Runs one tpm2-tools command; Err says why it did not work.
fn run_tool(program: &Path, args: &[&std::ffi::OsStr]) -> Result<(), String> {
    let name = program
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let output = Command::new(program).args(args).output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            format!("{name} is not installed (tpm2-tools; Debian and Ubuntu: apt-get install tpm2-tools)")
        } else {
            format!("{name} cannot run: {e}")
        }
    })?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let first = stderr
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("no message");
    Err(format!("{name} failed ({}): {first}", output.status))
}

/// The EK modulus via tpm2-tools: the persistent EK, else a fresh one from the default
/// template (the same key: it is derived from the TPM's endorsement seed).
pub fn read_ek_with_tools(tools_dir: Option<&Path>) -> Result<Vec<u8>, String> {
    let dir = tempfile::tempdir().map_err(|e| format!("cannot make a temporary directory: {e}"))?;
    let public = dir.path().join("ek.pub");
    let context = dir.path().join("ek.ctx");
    let persistent = run_tool(
        &tool(tools_dir, "tpm2_readpublic"),
        &[
            "-c".as_ref(),
            EK_HANDLE.as_ref(),
            "-o".as_ref(),
            public.as_os_str(),
        ],
    );
    if persistent.is_err() {
        run_tool(
            &tool(tools_dir, "tpm2_createek"),
            &[
                "-c".as_ref(),
                context.as_os_str(),
                "-G".as_ref(),
                "rsa".as_ref(),
                "-u".as_ref(),
                public.as_os_str(),
            ],
        )?;
    }
    let bytes =
        std::fs::read(&public).map_err(|e| format!("cannot read the EK public key: {e}"))?;
    parse_ek_public(&bytes)
}

/// The RSA modulus of an EK public key given as a TPM2B_PUBLIC or TPMT_PUBLIC (tpm2-tools'
/// `tss` and `tpmt` formats), the modulus as hex text, or the raw modulus bytes.
pub fn parse_ek_public(bytes: &[u8]) -> Result<Vec<u8>, String> {
    if let Ok(text) = std::str::from_utf8(bytes) {
        let hex_text: String = text
            .chars()
            .filter(|c| !c.is_whitespace() && *c != ':')
            .collect();
        if !hex_text.is_empty() && hex_text.chars().all(|c| c.is_ascii_hexdigit()) {
            let modulus = hex::decode(&hex_text).map_err(|e| format!("bad hex: {e}"))?;
            return check_modulus(modulus);
        }
    }
    let tpmt = match bytes {
        [hi, lo, rest @ ..] if usize::from(u16::from_be_bytes([*hi, *lo])) == rest.len() => rest,
        _ => bytes,
    };
    match parse_tpmt_public(tpmt) {
        Ok(modulus) => check_modulus(modulus),
        Err(_) if matches!(bytes.len(), 256 | 384 | 512) => Ok(bytes.to_vec()),
        Err(reason) => Err(reason),
    }
}

fn check_modulus(modulus: Vec<u8>) -> Result<Vec<u8>, String> {
    if (128..=1024).contains(&modulus.len()) {
        Ok(modulus)
    } else {
        Err(format!(
            "an RSA modulus of {} bytes is not an endorsement key's (expected 256 for RSA-2048)",
            modulus.len()
        ))
    }
}

/// A cursor over big-endian TPM structures.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize, what: &str) -> Result<&[u8], String> {
        if self.0.len() < n {
            return Err(format!("truncated at {what}"));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn u16(&mut self, what: &str) -> Result<u16, String> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, what: &str) -> Result<u32, String> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn sized(&mut self, what: &str) -> Result<Vec<u8>, String> {
        let n = usize::from(self.u16(what)?);
        Ok(self.take(n, what)?.to_vec())
    }
}

const TPM_ALG_RSA: u16 = 0x0001;
const TPM_ALG_NULL: u16 = 0x0010;
const TPM_ALG_RSAES: u16 = 0x0015;

/// TPMT_PUBLIC of an RSA key → its modulus (`unique.rsa`).
fn parse_tpmt_public(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let mut r = Reader(bytes);
    let kind = r.u16("type")?;
    if kind != TPM_ALG_RSA {
        return Err(format!(
            "the key's type is 0x{kind:04x}, not RSA (0x0001): Autopilot uses the RSA endorsement key"
        ));
    }
    r.u16("nameAlg")?;
    r.u32("objectAttributes")?;
    r.sized("authPolicy")?;
    let symmetric = r.u16("symmetric")?;
    if symmetric != TPM_ALG_NULL {
        r.u16("symmetric keyBits")?;
        r.u16("symmetric mode")?;
    }
    let scheme = r.u16("scheme")?;
    if scheme != TPM_ALG_NULL && scheme != TPM_ALG_RSAES {
        r.u16("scheme hashAlg")?;
    }
    r.u16("keyBits")?;
    r.u32("exponent")?;
    let modulus = r.sized("unique")?;
    if modulus.is_empty() {
        return Err("the key has no modulus".to_owned());
    }
    Ok(modulus)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// A TPM2B_PUBLIC as `tpm2_createek -G rsa -u ek.pub` writes it (default EK template).
    pub fn tpm2b_public(modulus: &[u8]) -> Vec<u8> {
        let mut t = Vec::new();
        t.extend_from_slice(&TPM_ALG_RSA.to_be_bytes());
        t.extend_from_slice(&0x000bu16.to_be_bytes()); // sha256
        t.extend_from_slice(&0x000300b2u32.to_be_bytes());
        t.extend_from_slice(&32u16.to_be_bytes());
        t.extend_from_slice(&[0x83; 32]);
        t.extend_from_slice(&0x0006u16.to_be_bytes()); // AES
        t.extend_from_slice(&128u16.to_be_bytes());
        t.extend_from_slice(&0x0043u16.to_be_bytes()); // CFB
        t.extend_from_slice(&TPM_ALG_NULL.to_be_bytes());
        t.extend_from_slice(&2048u16.to_be_bytes());
        t.extend_from_slice(&0u32.to_be_bytes());
        t.extend_from_slice(&u16::try_from(modulus.len()).unwrap().to_be_bytes());
        t.extend_from_slice(modulus);
        let mut out = u16::try_from(t.len()).unwrap().to_be_bytes().to_vec();
        out.extend(t);
        out
    }

    #[test]
    fn ek_public_forms() {
        let modulus: Vec<u8> = (0..=255u8).collect();
        let tss = tpm2b_public(&modulus);
        assert_eq!(parse_ek_public(&tss).unwrap(), modulus);
        assert_eq!(parse_ek_public(&tss[2..]).unwrap(), modulus, "tpmt form");
        assert_eq!(
            parse_ek_public(hex::encode(&modulus).as_bytes()).unwrap(),
            modulus
        );
        let spaced = format!("{}\n", hex::encode_upper(&modulus));
        assert_eq!(parse_ek_public(spaced.as_bytes()).unwrap(), modulus);
        let raw: Vec<u8> = (0..256).map(|i| u8::try_from(255 - i).unwrap()).collect();
        assert_eq!(parse_ek_public(&raw).unwrap(), raw);
        assert!(parse_ek_public(b"abc").is_err());
        assert!(parse_ek_public(&tss[..40]).is_err());
    }

    #[test]
    fn nvme_namespaces() {
        assert!(is_nvme_namespace("nvme0n1"));
        assert!(is_nvme_namespace("nvme12n3"));
        assert!(!is_nvme_namespace("nvme0c0n1"));
        assert!(!is_nvme_namespace("sda"));
        assert!(all_zero("00000000-0000-0000-0000-000000000000"));
        assert!(!all_zero("eui.0025385a91b01c52"));
    }

    #[test]
    fn missing_tools_are_reported() {
        let empty = tempfile::tempdir().unwrap();
        let reason = read_ek_with_tools(Some(empty.path())).unwrap_err();
        assert!(
            reason.contains("tpm2_createek is not installed"),
            "{reason}"
        );
        assert!(reason.contains("apt-get install tpm2-tools"), "{reason}");
    }
}
