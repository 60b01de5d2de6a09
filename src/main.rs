//! `hecnn`: train HE-friendly CNNs, compile them to TFHE circuits, classify encrypted images.

mod cli;
mod commands;

use clap::Parser;

fn main() -> anyhow::Result<()> {
    let cli = cli::Cli::parse();
    match cli.command {
        cli::Command::Train(args) => commands::train::run(&args),
        cli::Command::Compile(args) => commands::compile::run(&args),
        cli::Command::Inspect(args) => commands::compile::inspect(&args),
        cli::Command::Eval(args) => commands::eval::run(&args),
        cli::Command::Predict(args) => commands::eval::predict(&args),
        cli::Command::Activations(args) => commands::activations::run(&args),
    }
}
