//! `hecnn`: train HE-friendly CNNs, compile them to TFHE circuits, classify encrypted images.

mod calibration;
mod cli;
mod commands;
mod measure;
mod pipeline;
mod plot;
mod progress;

use std::process::ExitCode;

/// Runs the command; an error is printed as its chain of causes, without the backtrace
/// `anyhow` would add under `RUST_BACKTRACE=1` (a user's mistake is not a crash).
fn main() -> ExitCode {
    match run(cli::Cli::parse_noting_sources()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("Error: {error}");
            let mut causes = error.chain().skip(1).peekable();
            if causes.peek().is_some() {
                eprintln!("\nCaused by:");
                for cause in causes {
                    eprintln!("    {cause}");
                }
            }
            ExitCode::FAILURE
        }
    }
}

fn run(cli: cli::Cli) -> anyhow::Result<()> {
    match cli.command {
        cli::Command::Demo(args) => commands::demo::run(&args),
        cli::Command::Train(args) => commands::train::run(&args),
        cli::Command::Import(args) => commands::import::run(&args),
        cli::Command::Compile(args) => commands::compile::run(&args),
        cli::Command::Inspect(args) => commands::compile::inspect(&args),
        cli::Command::Eval(args) => commands::eval::run(&args),
        cli::Command::Predict(args) => commands::eval::predict(&args),
        cli::Command::Activations(args) => commands::activations::run(&args),
        cli::Command::Keygen(args) => commands::encrypted::keygen(&args),
        cli::Command::Encrypt(args) => commands::encrypted::encrypt(&args),
        cli::Command::Run(args) => commands::encrypted::run(&args),
        cli::Command::Decrypt(args) => commands::encrypted::decrypt(&args),
        cli::Command::Bench(args) => commands::bench::run(&args),
        cli::Command::Serve(args) => commands::service::serve(&args),
        cli::Command::Worker(args) => commands::cluster::worker(&args),
        cli::Command::Classify(args) => commands::service::classify(&args),
        cli::Command::Experiment(cli::Experiment::Activations(args)) => {
            commands::experiment::activations(&args)
        }
        cli::Command::Experiment(cli::Experiment::Frontier(args)) => {
            commands::experiment::frontier(&args)
        }
    }
}
