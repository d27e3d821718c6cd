//! The `ivr-bridge` binary: reads `.env`, parses flags, and runs the server.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ivr_bridge::config::{Config, ServeArgs};

/// Exit code for a bad command line or configuration.
const EXIT_USAGE: u8 = 2;

#[derive(Parser)]
#[command(
    name = "ivr-bridge",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Settings for `serve`, which is also what runs with no subcommand.
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve(ServeArgs),
}

fn main() -> ExitCode {
    if let Err(err) = dotenvy::dotenv() {
        if !err.not_found() {
            eprintln!("error: .env cannot be read: {err}");
            return ExitCode::from(EXIT_USAGE);
        }
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) if !err.use_stderr() => err.exit(),
        Err(err) => {
            let rendered = err.to_string();
            let line = rendered.lines().next().unwrap_or("invalid arguments");
            eprintln!("{line}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let args = match cli.command {
        Some(Command::Serve(args)) => args,
        None => cli.serve,
    };
    let config = match Config::from_args(args) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    init_tracing();
    match run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    let filter = ivr_bridge::telemetry::filter(ivr_bridge::telemetry::DEFAULT_FILTER);
    tracing_subscriber::fmt().with_env_filter(filter).init();
}

#[tokio::main]
async fn run(config: Config) -> anyhow::Result<()> {
    let address = std::net::SocketAddr::from(([0, 0, 0, 0], config.port));
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|err| anyhow::anyhow!("cannot listen on {address}: {err}"))?;
    tracing::info!(%address, "ivr-bridge listening; point the Twilio number's webhook at POST /");
    ivr_bridge::serve(listener, config, shutdown_signal()).await?;
    tracing::info!("server stopped");
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown signal received: no new calls, finishing the server");
}
