//! The `ivr-bridge` binary: reads `.env`, parses flags, and runs the server.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
mod demo;
mod loadtest;
mod replay;

use demo::{DemoOptions, Providers};
use ivr_bridge::config::{self as settings, Config, LogFormat, Mode};
use ivr_bridge::Secret;
use replay::{ReplayOptions, UserSet};

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
    serve: Config,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve(Config),
    /// Play a recorded phone call through the real server on this machine and write a WAV of
    /// it. Uses local stand-ins for Deepgram and Mistral unless both API keys are set.
    Demo(DemoArgs),
    /// Play a recorded call (e.g. one saved with RECORD_DIR) against a server and compare the
    /// new conversation with the recorded one.
    #[command(after_help = replay::RULES)]
    Replay(ReplayArgs),
    /// Run many simulated Twilio calls against the server, in real time, with the local
    /// stand-ins as providers, and report forwarding delay, turn latency and the bridge's own
    /// share of it, barge-in reaction, and the server's CPU and memory per call.
    Loadtest(LoadtestArgs),
}

#[derive(Args)]
struct ReplayArgs {
    /// The recording: a .jsonl with its .json sidecar beside it.
    file: PathBuf,
    /// A running server's Media Stream URL (ws://host:port/media). Default: start ivr-bridge in
    /// this process (local stand-ins unless both API keys are set) and compare what it heard and
    /// said; with --url only the wire is compared.
    #[arg(long)]
    url: Option<String>,
    /// The in-process server's settings, as for `serve`. SILENCE_TIMEOUT_MS, TURN_DETECTION and
    /// GREETING default to the recording's own when it has them.
    #[command(flatten)]
    serve: Config,
}

#[derive(Args)]
struct LoadtestArgs {
    /// Simultaneous calls.
    #[arg(long, default_value_t = 100)]
    calls: u32,
    /// Seconds over which the calls start, evenly spread.
    #[arg(long, default_value_t = 10.0)]
    ramp_s: f64,
    /// Times each call plays its recording back to back in one stream (turns per call =
    /// utterances × plays).
    #[arg(long, default_value_t = 1)]
    plays: u32,
    /// Recording most calls play (a .jsonl with its .json sidecar).
    #[arg(long, default_value = crate::loadtest::DEFAULT_FIXTURE)]
    fixture: PathBuf,
    /// Recording the barge-in share of calls play.
    #[arg(long, default_value = crate::loadtest::DEFAULT_BARGE_IN_FIXTURE)]
    barge_in_fixture: PathBuf,
    /// Share of calls (0 to 1) that play the barge-in recording.
    #[arg(long, default_value_t = 0.2)]
    barge_in_share: f64,
    /// LLM stand-in: ms to the first streamed token.
    #[arg(long, default_value_t = 200)]
    llm_first_token_ms: u64,
    /// LLM stand-in: ms to the whole reply.
    #[arg(long, default_value_t = 1500)]
    llm_total_ms: u64,
    /// TTS stand-in: ms to the first audio byte.
    #[arg(long, default_value_t = 150)]
    tts_first_byte_ms: u64,
    /// The server's SILENCE_TIMEOUT_MS (the child server's; say what a --url server uses).
    /// 1000 like the demo, so the barge-in recording interrupts a reply that is playing.
    #[arg(long, default_value_t = 1000)]
    silence_timeout_ms: u64,
    /// The server's TURN_DETECTION: timer or deepgram.
    #[arg(long, default_value = "timer", value_parser = ["timer", "deepgram"])]
    turn_detection: String,
    /// Test a server already running at this /media URL (ws://host:port/media) instead of
    /// starting one. Start it with the stand-in URLs this command prints (use --stand-ins-port
    /// so they are known in advance).
    #[arg(long)]
    url: Option<String>,
    /// The --url server's process id, to measure its CPU and memory.
    #[arg(long, requires = "url")]
    server_pid: Option<u32>,
    /// Ports of the stand-ins: STT on this one, TTS on +1, LLM on +2 (0: any free ports).
    #[arg(long, default_value_t = 0)]
    stand_ins_port: u16,
    /// Skip the memory-per-idle-call phase (N silent calls before the active ones).
    #[arg(long)]
    no_idle: bool,
    /// Pin the server (the child it starts, or --server-pid) to these cores, e.g. `1` or
    /// `0,2-3`.
    #[arg(long, value_name = "LIST")]
    server_cpus: Option<crate::loadtest::cpus::CpuList>,
    /// Pin the load generator (callers, stand-ins, collector) to these cores; it then runs one
    /// worker thread per core.
    #[arg(long, value_name = "LIST")]
    generator_cpus: Option<crate::loadtest::cpus::CpuList>,
    /// Keep the load generator's core polling its sockets instead of sleeping between events
    /// (needs --generator-cpus with one core, which it then keeps fully busy): the generator is
    /// never late by a wake-up, and the server's sends to the stand-ins stop paying to wake a
    /// sleeping process on the other core, which a real provider never costs it.
    #[arg(long)]
    busy_poll: bool,
    /// Soak: run this many calls in all, --calls at a time, one batch after another, and report
    /// whether the server's memory and open files come back afterwards.
    #[arg(long, value_name = "TOTAL")]
    soak: Option<u32>,
    /// Soak: seconds to wait after the warm-up call and after the last batch before reading the
    /// server's memory and open files (its idle provider connections close after 90 s).
    #[arg(long, value_name = "S", default_value_t = 2.0)]
    soak_settle_s: f64,
    /// Measure forwarding on one frame in about N (by hash; 0: 1 up to 200 calls, then one in
    /// calls/200). Send lateness is always measured on every frame.
    #[arg(long, value_name = "N", default_value_t = 0)]
    frame_sample: u64,
    /// Print the report as JSON on stdout (progress goes to stderr).
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct DemoArgs {
    /// Recorded call to play: a .jsonl with its .json sidecar beside it [default:
    /// fixtures/calls/demo.jsonl, with --relay fixtures/relay/demo.jsonl]
    #[arg(long)]
    fixture: Option<PathBuf>,
    /// Where to write the two-channel WAV of the call.
    #[arg(long, default_value = demo::DEFAULT_OUT)]
    out: PathBuf,
    /// The server's settings, as for `serve`.
    #[command(flatten)]
    serve: Config,
}

fn main() -> ExitCode {
    if let Err(err) = dotenvy::dotenv() {
        if !err.not_found() {
            eprintln!("error: .env cannot be read: {err}");
            return ExitCode::from(EXIT_USAGE);
        }
    }
    forget_blank_settings();
    let parsed = Cli::command()
        .try_get_matches()
        .and_then(|matches| Cli::from_arg_matches(&matches).map(|cli| (cli, matches)));
    let (cli, matches) = match parsed {
        Ok(parsed) => parsed,
        Err(err) if !err.use_stderr() => err.exit(),
        Err(err) => {
            eprintln!("error: {}", settings::one_line(&err));
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let args = match cli.command {
        Some(Command::Serve(args)) => args,
        Some(Command::Demo(args)) => {
            let user_set = |id: &str| {
                matches
                    .subcommand_matches("demo")
                    .and_then(|m| m.value_source(id))
                    .is_some_and(|source| source != clap::parser::ValueSource::DefaultValue)
            };
            return run_demo(args, user_set("silence_timeout"), user_set("greeting"));
        }
        Some(Command::Replay(args)) => {
            let user_set = |id: &str| {
                matches
                    .subcommand_matches("replay")
                    .and_then(|m| m.value_source(id))
                    .is_some_and(|source| source != clap::parser::ValueSource::DefaultValue)
            };
            let set = UserSet {
                silence_timeout: user_set("silence_timeout"),
                turn_detection: user_set("turn_detection"),
                greeting: user_set("greeting"),
            };
            return run_replay(args, set);
        }
        Some(Command::Loadtest(args)) => return run_loadtest(args),
        None => cli.serve,
    };
    let mut args = args;
    ask_for_missing_keys(&mut args);
    let log_format = args.log.log_format;
    let config = match args.validated() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    init_tracing(log_format);
    match run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            ExitCode::FAILURE
        }
    }
}

/// When a required key is missing and a person is at the terminal, asks for it once without
/// echoing it, for this run only (the prototype's convenience, kept safe). Without a terminal
/// (services, CI) nothing is asked and configuration fails with its usual one-line error.
fn ask_for_missing_keys(args: &mut Config) {
    use std::io::IsTerminal;
    if !std::io::stdin().is_terminal() {
        return;
    }
    let transcribing = args.server.transcribe || args.server.mode == Mode::Transcribe;
    let relaying = args.server.relay || args.server.mode == Mode::Relay;
    for (var, key) in [
        ("DEEPGRAM_API_KEY", &mut args.keys.deepgram_api_key),
        ("MISTRAL_API_KEY", &mut args.keys.mistral_api_key),
    ] {
        let unneeded = match var {
            "MISTRAL_API_KEY" => transcribing,
            _ => relaying,
        };
        if key.as_ref().is_some_and(|k| !k.is_empty()) || unneeded {
            continue;
        }
        let prompt = format!("{var} is not set. Paste it (not shown, used for this run only): ");
        match rpassword::prompt_password(prompt) {
            Ok(value) if !value.trim().is_empty() => {
                eprintln!("To keep it, put {var}=... in .env (see .env.example).");
                *key = Some(Secret::new(value.trim()));
            }
            _ => return,
        }
    }
}

/// `ivr-bridge loadtest`: runs the calls, prints the table (or JSON).
fn run_loadtest(args: LoadtestArgs) -> ExitCode {
    use crate::loadtest::{self, Options};
    use ivr_sim::standin::Delays;
    use std::time::Duration;
    let bad_times = !(args.ramp_s >= 0.0 && args.soak_settle_s >= 0.0 && args.soak_settle_s < 1e6);
    if args.calls == 0 || !(0.0..=1.0).contains(&args.barge_in_share) || bad_times {
        eprintln!(
            "error: --calls must be at least 1, --barge-in-share within 0..1, --ramp-s and \
--soak-settle-s >= 0"
        );
        return ExitCode::from(EXIT_USAGE);
    }
    if let Err(err) = check_loadtest_args(&args) {
        eprintln!("error: {err}");
        return ExitCode::from(EXIT_USAGE);
    }
    if let Some(cpus) = &args.generator_cpus {
        // Before the runtime exists, so every thread it starts inherits the pinning.
        if let Err(err) = cpus.pin(std::process::id()) {
            eprintln!("error: {err}");
            return ExitCode::FAILURE;
        }
    }
    let options = Options {
        calls: args.calls,
        ramp: Duration::from_secs_f64(args.ramp_s),
        plays: args.plays.max(1),
        fixture: args.fixture,
        barge_in_fixture: args.barge_in_fixture,
        barge_in_share: args.barge_in_share,
        delays: Delays {
            llm_first_token: Duration::from_millis(args.llm_first_token_ms),
            llm_total: Duration::from_millis(args.llm_total_ms),
            tts_first_byte: Duration::from_millis(args.tts_first_byte_ms),
        },
        silence_timeout: Duration::from_millis(args.silence_timeout_ms),
        turn_detection: args.turn_detection,
        url: args.url,
        server_pid: args.server_pid,
        stand_ins_port: args.stand_ins_port,
        idle: !args.no_idle,
        server_cpus: args.server_cpus,
        soak: args.soak,
        soak_settle: Duration::from_secs_f64(args.soak_settle_s),
        frame_sample: match args.frame_sample {
            0 => u64::from(args.calls / 200).max(1),
            n => n,
        },
        busy_poll: args.busy_poll,
    };
    tracing_subscriber::fmt()
        .with_env_filter(ivr_bridge::telemetry::filter("error"))
        .with_writer(std::io::stderr)
        .init();
    // One core: one thread, no hand-offs between workers.
    let one_core = args
        .generator_cpus
        .as_ref()
        .is_some_and(|cpus| cpus.count() == 1);
    let runtime = if one_core {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Runtime::new()
    };
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let mut note = |line: &str| eprintln!("loadtest: {line}");
    match runtime.block_on(loadtest::run(options, &mut note)) {
        Ok(report) if args.json => match serde_json::to_string_pretty(&report) {
            Ok(json) => {
                println!("{json}");
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("error: {err}");
                ExitCode::FAILURE
            }
        },
        Ok(report) => {
            print!("{}", report.table());
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

/// The load test's checks beyond each flag's own: cores that exist here, a server to pin, call
/// tags that fit (16 bits per call index, idle callers after the measured ones).
fn check_loadtest_args(args: &LoadtestArgs) -> Result<(), String> {
    for cpus in [&args.server_cpus, &args.generator_cpus]
        .into_iter()
        .flatten()
    {
        cpus.check_available().map_err(|e| e.to_string())?;
    }
    if args.busy_poll && args.generator_cpus.as_ref().is_none_or(|c| c.count() != 1) {
        return Err(
            "--busy-poll needs --generator-cpus with one core (the core it keeps busy)".into(),
        );
    }
    if args.server_cpus.is_some() && args.url.is_some() && args.server_pid.is_none() {
        return Err("--server-cpus with --url needs --server-pid (the process to pin)".into());
    }
    let total = args.soak.unwrap_or(args.calls);
    if args.soak == Some(0) {
        return Err("--soak must be at least 1".into());
    }
    if u64::from(total) + u64::from(args.calls) + 2 > u64::from(u16::MAX) {
        return Err(format!(
            "at most {} calls in one run (each call's audio carries a 16-bit tag)",
            u16::MAX / 2
        ));
    }
    Ok(())
}

/// `ivr-bridge demo`: stand-ins unless both keys are set; the demo's own silence timeout and
/// greeting unless the user set them.
fn run_demo(mut args: DemoArgs, silence_set: bool, greeting_set: bool) -> ExitCode {
    // `demo --relay`: the call is a ConversationRelay session, text both ways (MODE in the
    // environment does not choose: `demo` alone is always the Media Stream call).
    let relay = args.serve.server.relay;
    let providers = choose_providers(&mut args.serve);
    let flux = args.serve.turns.turn_detection == ivr_bridge::config::TurnDetection::Flux;
    let silence_note = if flux {
        "when Deepgram Flux says the turn is over (EndOfTurn, TURN_DETECTION=flux); no silence \
timer"
            .to_owned()
    } else if silence_set {
        format!(
            "after {} ms of silence (SILENCE_TIMEOUT_MS)",
            args.serve.turns.silence_timeout.as_millis()
        )
    } else {
        args.serve.turns.silence_timeout = demo::DEMO_SILENCE_TIMEOUT;
        format!(
            "after {} ms of silence: the demo's default, shorter than the server's 2000 ms so \
replies fit between the recorded questions (SILENCE_TIMEOUT_MS overrides)",
            demo::DEMO_SILENCE_TIMEOUT.as_millis()
        )
    };
    if !greeting_set {
        args.serve.assistant.greeting = demo::DEMO_GREETING.to_owned();
    }
    let config = match tool_config(args.serve) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let default_fixture = if relay {
        demo::relay::DEFAULT_RELAY_FIXTURE
    } else {
        demo::DEFAULT_FIXTURE
    };
    let options = DemoOptions {
        fixture: args.fixture.unwrap_or_else(|| default_fixture.into()),
        out: args.out,
        config,
        providers,
        silence_note,
    };
    match demo_main(options, relay) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Stand-ins unless both keys are set (then the real providers).
fn choose_providers(args: &mut Config) -> Providers {
    let has = |key: &Option<Secret>| key.as_ref().is_some_and(|k| !k.is_empty());
    if has(&args.keys.deepgram_api_key) && has(&args.keys.mistral_api_key) {
        return Providers::Real;
    }
    let stand_in = Some(Secret::new(ivr_sim::standin::STAND_IN_KEY));
    args.keys.deepgram_api_key = stand_in.clone();
    args.keys.mistral_api_key = stand_in;
    Providers::StandIns
}

#[tokio::main]
async fn demo_main(options: DemoOptions, relay: bool) -> Result<(), demo::DemoError> {
    let mut stdout = std::io::stdout();
    if relay {
        return demo::relay::run(options, &mut stdout).await;
    }
    demo::run(options, &mut stdout).await
}

/// Exit code of a replay that could not run (1 means it ran and differed).
const EXIT_REPLAY_FAILED: u8 = 3;

/// The in-process server's settings for `demo` and `replay`: always the assistant (a call is
/// played and answered, whatever MODE the environment sets); a bad value is one line and exit 2.
/// Starts the tools' log output once the settings are good.
fn tool_config(mut serve: Config) -> Result<Config, ExitCode> {
    serve.server.mode = Mode::Converse;
    serve.server.transcribe = false;
    serve.server.relay = false;
    let config = serve.validated().map_err(|err| {
        eprintln!("error: {err}");
        ExitCode::from(EXIT_USAGE)
    })?;
    init_tool_tracing();
    Ok(config)
}

/// `ivr-bridge replay`: exit 0 when the call goes as recorded, 1 when it differs.
fn run_replay(mut args: ReplayArgs, user_set: UserSet) -> ExitCode {
    let providers = choose_providers(&mut args.serve);
    args.serve.record.record_dir = None;
    let config = match tool_config(args.serve) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let options = ReplayOptions {
        file: args.file,
        url: args.url,
        config,
        providers,
        user_set,
    };
    match replay_main(options) {
        Ok(verdict) if verdict.differences == 0 => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(EXIT_REPLAY_FAILED)
        }
    }
}

#[tokio::main]
async fn replay_main(options: ReplayOptions) -> Result<replay::Verdict, replay::ReplayError> {
    let mut stdout = std::io::stdout();
    replay::run(options, &mut stdout).await
}

/// `demo` and `replay` tell the call themselves on stdout; the server's own log shows only
/// errors (on stderr) unless `RUST_LOG` asks for more.
fn init_tool_tracing() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(ivr_bridge::telemetry::filter("error"))
        .init();
}

fn init_tracing(format: LogFormat) {
    let filter = ivr_bridge::telemetry::filter(ivr_bridge::telemetry::DEFAULT_FILTER);
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Runs the server on its runtime until a shutdown signal.
fn run(config: Config) -> anyhow::Result<()> {
    server_runtime()?.block_on(serve(config))
}

/// The server's runtime. With one worker thread (`TOKIO_WORKER_THREADS=1`, or a machine that
/// offers one core), everything runs on the main thread: tokio's multi-threaded runtime would
/// still accept on the main thread and hand every connection to the worker, and pay for
/// work-stealing bookkeeping on every wake-up with nobody to steal from.
fn server_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    let workers = std::env::var("TOKIO_WORKER_THREADS")
        .ok()
        .and_then(|n| n.trim().parse::<usize>().ok())
        .or_else(|| std::thread::available_parallelism().ok().map(usize::from));
    let runtime = if workers == Some(1) {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Runtime::new()
    };
    runtime.map_err(|err| anyhow::anyhow!("cannot start the runtime: {err}"))
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let address = std::net::SocketAddr::from(([0, 0, 0, 0], config.server.port));
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|err| anyhow::anyhow!("cannot listen on {address}: {err}"))?;
    tracing::info!(%address, "ivr-bridge listening; point the Twilio number's webhook at POST /");
    ivr_bridge::serve(listener, config, shutdown_signal()).await?;
    tracing::info!("server stopped");
    Ok(())
}

/// A setting given as an empty variable (`PUBLIC_URL=` in `.env`) counts as not given, as it
/// always has: such variables are dropped before clap reads the environment. Runs first, while
/// the process has one thread.
fn forget_blank_settings() {
    for var in Config::variables() {
        if std::env::var_os(&var).is_some_and(|value| value.to_string_lossy().trim().is_empty()) {
            std::env::remove_var(&var);
        }
    }
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
