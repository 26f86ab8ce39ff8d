//! The command line: `provisioner run | migrate | sim | order submit | jobs | services | tenants |
//! replay | cancel | demo | reconcile | secrets gen-key | ui hash-password`.
//!
//! Each command is a thin wrapper: it loads settings, initialises tracing, and calls into the
//! module that does the work, so that the tests can call the same functions.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::config::Settings;

#[derive(Debug, Parser)]
#[command(
    name = "provisioner",
    version,
    about = "Turns billing orders into running OpenStack VMs, exactly once."
)]
pub struct Cli {
    /// TOML settings file, under the PROVISIONER_* environment variables.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the worker: intake, engine, event relay, admin consumer and the HTTP status API.
    Run,
    /// Create the database if missing, apply the migrations, and exit.
    Migrate,
    /// Run the OpenStack simulator (Keystone, Glance, Neutron, Nova, Cinder) on one listener.
    Sim(crate::sim::cli::SimArgs),
    /// Play billing: publish orders to `billing.orders`.
    Order {
        #[command(subcommand)]
        command: OrderCommand,
    },
    /// Read job status from the database.
    Jobs {
        #[command(subcommand)]
        command: JobsCommand,
    },
    /// Read service state from the database (what each create order made, and its actions).
    Services {
        #[command(subcommand)]
        command: ServicesCommand,
    },
    /// Read tenant state from the database (what each tenant order made, and its jobs).
    Tenants {
        #[command(subcommand)]
        command: TenantsCommand,
    },
    /// Ask the workers to replay a failed job (publishes an admin command).
    Replay(AdminArgs),
    /// Ask the workers to cancel a queued or in-progress job (publishes an admin command).
    Cancel(AdminArgs),
    /// Start the simulator and a worker, publish sample orders, and show what happens.
    Demo(DemoArgs),
    /// Compare the cloud with the database: orphans and drift (see docs/operations.md).
    Reconcile(ReconcileArgs),
    /// Secrets at rest.
    Secrets {
        #[command(subcommand)]
        command: SecretsCommand,
    },
    /// The operator web console (`/ui`).
    Ui {
        #[command(subcommand)]
        command: UiCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum UiCommand {
    /// Read a password on standard input and print its Argon2id hash for PROVISIONER_UI_USERS.
    HashPassword,
}

#[derive(Debug, Subcommand)]
pub enum SecretsCommand {
    /// Print a new random key for PROVISIONER_SECRETS_KEY (base64 of 32 bytes).
    GenKey,
}

#[derive(Debug, Subcommand)]
pub enum OrderCommand {
    /// Publish order files exactly as billing would (exchange billing.orders; key order.create,
    /// or order.<action> for an action order).
    Submit {
        /// Order JSON files; each is published as is, even if invalid.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Publish with this routing key instead of the one the body implies.
        #[arg(long)]
        routing_key: Option<String>,
    },
    /// Pre-flight: would this order pass? Checks the schema, the names (image, flavor, network,
    /// volume type, keypair) and the project's quota headroom, creating nothing. Exit code 0
    /// only when every check passes.
    Check {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// One job: state, step, attempts, resources, error and its history.
    Show {
        /// A job id or an order id.
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Jobs, newest first.
    List {
        #[arg(long)]
        state: Option<String>,
        /// create, suspend, unsuspend, resize or terminate.
        #[arg(long)]
        action: Option<String>,
        #[arg(long)]
        project: Option<String>,
        /// Only jobs created at or after this time (RFC 3339, or a duration like 15m, 2h, 1d).
        #[arg(long)]
        since: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ServicesCommand {
    /// One service (by its create order's id): state, resources and every job it had.
    Show {
        target_order_id: String,
        #[arg(long)]
        json: bool,
    },
    /// Services, newest first.
    List {
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        project: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum TenantsCommand {
    /// One tenant (by billing's tenant_ref): state, Keystone ids, quotas, and every job that
    /// named it.
    Show {
        tenant_ref: String,
        #[arg(long)]
        json: bool,
    },
    /// Tenants, newest first, each with its newest tenant job.
    List {
        /// provisioning, active, closing, closed or failed.
        #[arg(long)]
        state: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct AdminArgs {
    /// A job id or an order id.
    pub id: String,
    /// Why; recorded in the job's history.
    #[arg(long)]
    pub reason: Option<String>,
}

#[derive(Debug, Args)]
pub struct ReconcileArgs {
    /// Run one pass now and print the findings (without it: run the periodic loop until a
    /// signal, as a dedicated reconciler process).
    #[arg(long)]
    pub once: bool,
    /// Print the pass report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Orders to publish besides the scripted ones.
    #[arg(long, default_value_t = 0)]
    pub extra: u32,
}

/// Runs a command; the error, if any, is printed as one clear message and exit code 1.
pub fn main(cli: Cli) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A command's failure, printed as one line.
pub type CliResult = Result<ExitCode, Box<dyn std::error::Error + Send + Sync>>;

fn settings(cli: &Cli) -> Result<Settings, crate::config::ConfigError> {
    let settings = Settings::load(cli.config.as_deref())?;
    crate::telemetry::init(settings.log.format);
    warn_unknown_vars();
    Ok(settings)
}

fn warn_unknown_vars() {
    for var in Settings::unknown_env_vars(std::env::vars().map(|(k, _)| k)) {
        tracing::warn!(%var, "environment variable is not a setting (a typo?); ignored");
    }
}

async fn dispatch(cli: Cli) -> CliResult {
    match &cli.command {
        Command::Sim(args) => crate::sim::cli::run(args.clone()).await,
        Command::Migrate => {
            let settings = settings(&cli)?;
            let store = crate::store::Store::connect(&settings.database).await?;
            store.close().await;
            tracing::info!(database = %settings.database.url, "migrations applied");
            Ok(ExitCode::SUCCESS)
        }
        Command::Run => {
            // Logs and, with an OTLP endpoint (OTEL_*), traces; a bad OTEL_* value stops here.
            let settings = Settings::load(cli.config.as_deref())?;
            let traces = crate::telemetry::TraceSettings::from_env()?;
            crate::telemetry::init_with_traces(settings.log.format, traces.as_ref())?;
            warn_unknown_vars();
            if let Some(t) = &traces {
                tracing::info!(endpoint = %t.endpoint, "exporting traces over OTLP/HTTP");
            }
            let ran = crate::startup::run_worker(settings).await;
            crate::telemetry::shutdown().await;
            ran
        }
        Command::Order { command: OrderCommand::Submit { files, routing_key } } => {
            let settings = settings(&cli)?;
            crate::ops::submit_orders(&settings, files, routing_key.as_deref()).await
        }
        Command::Order { command: OrderCommand::Check { file, json } } => {
            let settings = settings(&cli)?;
            crate::ops::preflight::check_command(&settings, file, *json).await
        }
        Command::Jobs { command } => {
            let settings = settings(&cli)?;
            crate::ops::jobs_command(&settings, command).await
        }
        Command::Services { command } => {
            let settings = settings(&cli)?;
            crate::ops::services_command(&settings, command).await
        }
        Command::Tenants { command } => {
            let settings = settings(&cli)?;
            crate::ops::tenants_command(&settings, command).await
        }
        Command::Replay(args) => {
            let settings = settings(&cli)?;
            crate::ops::send_admin(&settings, crate::messages::AdminCommandKind::Replay, args).await
        }
        Command::Cancel(args) => {
            let settings = settings(&cli)?;
            crate::ops::send_admin(&settings, crate::messages::AdminCommandKind::Cancel, args).await
        }
        Command::Reconcile(args) => {
            let settings = settings(&cli)?;
            crate::ops::reconcile::reconcile_command(&settings, args).await
        }
        Command::Secrets { command: SecretsCommand::GenKey } => {
            // The one place a key is printed: on purpose, to the operator's terminal.
            println!("{}", crate::secrets::SecretsKey::generate()?.expose());
            Ok(ExitCode::SUCCESS)
        }
        Command::Ui { command: UiCommand::HashPassword } => {
            use std::io::BufRead as _;
            eprintln!("password (one line on standard input):");
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line)?;
            let password = line.trim_end_matches(['\r', '\n']);
            if password.is_empty() {
                return Err("an empty password".into());
            }
            let hash = crate::http::ui::auth::hash_password(password)?;
            println!("{hash}");
            eprintln!(
                "PROVISIONER_UI_USERS entry: NAME:operator:{hash}  (or NAME:read-only:...; `;` between users)"
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo(args) => {
            // The demo's own output is the show: logs only for errors unless RUST_LOG says more.
            let settings = Settings::load(cli.config.as_deref())?;
            crate::telemetry::init_with_default(settings.log.format, crate::telemetry::DEMO_FILTER);
            crate::startup::demo(settings, args).await
        }
    }
}
