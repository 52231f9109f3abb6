//! `unbox partner`: what OEMs and resellers do with a partner client's credentials.

use clap::{Args, Subcommand};
use uuid::Uuid;

use super::imports::{UploadArgs, upload_and_wait};
use crate::Ctx;
use crate::error::CmdResult;

#[derive(Debug, Subcommand)]
pub enum PartnerCommand {
    /// Register devices into a customer's tenant that authorized you: upload an Autopilot CSV
    /// file or a JSON batch and wait for the result.
    #[command(
        after_help = "Use a partner client's credentials (--client-id/--client-secret, or a saved \
                            login). A tenant that has not authorized your organisation answers 403 \
                            (exit 4).\n\n\
                            Exit status: 0 when the job is complete, 6 when it finished with failed \
                            rows; the other codes as for every command."
    )]
    Import(PartnerImportArgs),
}

#[derive(Debug, Args)]
pub struct PartnerImportArgs {
    /// The customer's tenant id.
    #[arg(long, value_name = "ID")]
    tenant: Uuid,
    #[command(flatten)]
    upload: UploadArgs,
}

impl PartnerCommand {
    pub async fn run(self, ctx: &mut Ctx<'_>) -> CmdResult {
        match self {
            Self::Import(args) => {
                let mut api = ctx.api()?;
                upload_and_wait(
                    ctx,
                    &mut api,
                    &format!("/v1/partner/tenants/{}/imports", args.tenant),
                    "/v1/partner/imports",
                    &args.upload,
                )
                .await
            }
        }
    }
}
