//! `unbox hwid`: this Linux machine's hardware identity, as the API's `identity` (JSON) or as an
//! Autopilot CSV file whose `Hardware Hash` is the Unbox-made hash (for `POST /v1/imports`).

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use crate::Ctx;
use crate::error::{CliError, CmdResult, exit};
use crate::hwid::{self, Options};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum HwidFormat {
    /// The `identity` object of the API (for `POST /v1/devices`, and the device call).
    #[default]
    Json,
    /// An Autopilot CSV file of one row, the hash column holding the Unbox-made hash.
    Csv,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Reads /sys/class/dmi/id (sys_vendor, product_name, product_serial, product_uuid: \
                        the serial and UUID need root), the permanent MAC addresses of physical network \
                        adapters (/sys/class/net/*: addr_assign_type 0 and a device link), NVMe ids \
                        (/sys/block/nvme*: nguid, eui, wwid or the controller serial), and the TPM \
                        endorsement key with tpm2-tools when /dev/tpmrm0 or /sys/class/tpm/tpm0 exists \
                        (without tpm2-tools it says so and goes on without the TPM).\n\n\
                        Exit status: 0 with an identity; 2 when the machine has no usable identity \
                        (neither a real serial number nor a TPM), with what is missing on stderr."
)]
pub struct HwidArgs {
    /// Read the sysfs tree under DIR (DIR/sys/class/dmi/id, …) instead of /: for a mounted disk
    /// image or a test. The TPM is then only read from --tpm-ek-modulus-file.
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = HwidFormat::Json)]
    format: HwidFormat,
    /// The TPM endorsement key's public part: the ek.pub of `tpm2_createek -G rsa -u ek.pub`
    /// (TPM2B_PUBLIC), or the RSA modulus as hex text or raw bytes.
    #[arg(long, value_name = "FILE")]
    tpm_ek_modulus_file: Option<PathBuf>,
    /// Do not read the TPM.
    #[arg(long, conflicts_with = "tpm_ek_modulus_file")]
    no_tpm: bool,
    /// CSV: add a Group Tag column with this tag.
    #[arg(long)]
    group_tag: Option<String>,
    /// CSV: add an Assigned User column with this user (userPrincipalName).
    #[arg(long)]
    assigned_user: Option<String>,
    /// Say on stderr what was read and what was skipped.
    #[arg(short, long)]
    verbose: bool,
}

impl HwidArgs {
    /// The reading options (shared with `device boot`).
    pub fn options(
        root: Option<PathBuf>,
        tpm_ek_modulus_file: Option<PathBuf>,
        no_tpm: bool,
    ) -> Options {
        Options {
            root,
            tpm_ek_modulus_file,
            no_tpm,
            tpm_tools_dir: None,
        }
    }
}

/// Reads the identity and fails (exit 2) when it has no strong key.
pub fn read_usable(
    ctx: &Ctx<'_>,
    options: &Options,
    verbose: bool,
) -> Result<hwid::Facts, CliError> {
    let mut warn = |line: &str| ctx.io.note(line);
    let facts = hwid::collect(options, &mut warn)?;
    if verbose {
        for note in &facts.notes {
            ctx.io.note(note);
        }
    }
    if !facts.is_usable() {
        let root = options.root.clone().unwrap_or_else(|| PathBuf::from("/"));
        return Err(facts.missing(&root));
    }
    Ok(facts)
}

pub fn run(args: HwidArgs, ctx: &mut Ctx<'_>) -> CmdResult {
    let options = HwidArgs::options(args.root, args.tpm_ek_modulus_file, args.no_tpm);
    let facts = read_usable(ctx, &options, args.verbose)?;
    match args.format {
        HwidFormat::Json => {
            // The struct itself, so that the fields keep the API's order.
            let out = ctx.io.out();
            serde_json::to_writer_pretty(&mut *out, &facts.identity)?;
            writeln!(out)?;
        }
        HwidFormat::Csv => {
            let hash = facts.unbox_hash()?;
            let mut header = vec![
                "Device Serial Number",
                "Windows Product ID",
                "Hardware Hash",
            ];
            let mut row = vec![facts.identity.serial_number.clone(), String::new(), hash];
            if let Some(tag) = args.group_tag {
                header.push("Group Tag");
                row.push(tag);
            }
            if let Some(user) = args.assigned_user {
                header.push("Assigned User");
                row.push(user);
            }
            let mut writer = csv::WriterBuilder::new()
                .terminator(csv::Terminator::CRLF)
                .from_writer(Vec::new());
            writer
                .write_record(&header)
                .and_then(|()| writer.write_record(&row))
                .map_err(|e| CliError::failure(format!("cannot write the CSV: {e}")))?;
            let bytes = writer
                .into_inner()
                .map_err(|e| CliError::failure(format!("cannot write the CSV: {e}")))?;
            ctx.io.out().write_all(&bytes)?;
        }
    }
    Ok(exit::OK)
}
