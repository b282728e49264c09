//! `oxport devices [--json]`: each runtime's version and every device, present or absent with the reason.

use std::process::ExitCode;

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Print JSON instead of the table.
    #[arg(long)]
    pub json: bool,
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let runtimes = oxport_runner::devices::probe_all();
    if args.json {
        let json = serde_json::json!({
            "runtimes": runtimes,
            "export_targets": oxport_runner::devices::EXPORT_TARGETS,
        });
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        print!("{}", oxport_runner::devices::table(&runtimes));
    }
    // Absent devices are normal; only a machine where neither runtime loads is an error.
    let any_runtime = runtimes.iter().any(|r| r.error.is_none());
    Ok(if any_runtime {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
