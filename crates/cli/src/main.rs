//! `unbox`: the command-line client for admins, partners and devices. Everything is in the
//! library (`unbox_cli::run`); this only runs it on the process's arguments and streams.

use std::process::ExitCode;

fn main() -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let mut io = unbox_cli::Io::std();
        unbox_cli::run(std::env::args_os(), &mut io).await
    })
}
