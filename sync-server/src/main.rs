//! `adiuva-server`: parses its configuration, opens the storage and serves (or runs an admin
//! command). Logs are JSON lines on stderr, one span per request carrying its request id.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use adiuva_model::api::BillingTier;
use adiuva_server::storage::records::{self, Account};
use adiuva_server::storage::{Cloud, CloudConfig, Embedded, Storage};
use adiuva_server::{Config, serve};
use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use tracing::info;

#[derive(Parser)]
#[command(name = "adiuva-server", version, about = "The Adiuva blind relay")]
struct Cli {
    /// The data directory of the embedded backend (sled + blob segments).
    #[arg(long, env = "ADIUVA_SERVER_DATA", required_unless_present = "postgres")]
    data: Option<PathBuf>,
    /// The cloud backend instead: metadata in this PostgreSQL database (`postgresql://...`),
    /// blobs in the S3 bucket below. Several instances may share them.
    #[arg(
        long,
        env = "ADIUVA_SERVER_POSTGRES",
        hide_env_values = true,
        requires = "s3_endpoint",
        conflicts_with = "data"
    )]
    postgres: Option<String>,
    /// The S3 endpoint (path-style addressing, region us-east-1).
    #[arg(long, env = "ADIUVA_SERVER_S3_ENDPOINT", requires = "postgres")]
    s3_endpoint: Option<String>,
    #[arg(long, env = "ADIUVA_SERVER_S3_BUCKET", default_value = "adiuva-relay")]
    s3_bucket: String,
    #[arg(long, env = "ADIUVA_SERVER_S3_ACCESS_KEY", default_value = "")]
    s3_access_key: String,
    #[arg(long, env = "ADIUVA_SERVER_S3_SECRET_KEY", hide_env_values = true, default_value = "")]
    s3_secret_key: String,
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Seconds an access token is valid.
    #[arg(long, default_value_t = 900)]
    access_token_ttl: u64,
    /// Seconds a read grant (an audit's proof of the recovery phrase) is valid.
    #[arg(long, default_value_t = 600)]
    read_grant_ttl: u64,
    /// Requests per minute per client address on register, login and refresh.
    #[arg(long, default_value_t = 60)]
    anonymous_per_minute: u32,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Administration of the stored data (with the server stopped, for the embedded backend).
    Admin {
        #[command(subcommand)]
        command: Admin,
    },
}

#[derive(Subcommand)]
enum Admin {
    /// Sets an account's tier (and, for a team, its seats).
    SetTier {
        email: String,
        tier: Tier,
        #[arg(long, default_value_t = 1)]
        seats: u32,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Tier {
    Free,
    Pro,
    Power,
    Team,
}

impl From<Tier> for BillingTier {
    fn from(tier: Tier) -> Self {
        match tier {
            Tier::Free => BillingTier::Free,
            Tier::Pro => BillingTier::Pro,
            Tier::Power => BillingTier::Power,
            Tier::Team => BillingTier::Team,
        }
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .json()
        .with_current_span(true)
        .with_span_list(false)
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ADIUVA_SERVER_LOG").unwrap_or_else(|_| "info".into()),
        )
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let storage = open_storage(&cli).await?;
    match cli.command {
        Some(Command::Admin { command: Admin::SetTier { email, tier, seats } }) => {
            set_tier(storage.as_ref(), &email, tier.into(), seats).await
        }
        None => {
            let listener = tokio::net::TcpListener::bind(cli.listen)
                .await
                .with_context(|| format!("listening on {}", cli.listen))?;
            let config = Config {
                access_token_ttl: Duration::from_secs(cli.access_token_ttl),
                read_grant_ttl: Duration::from_secs(cli.read_grant_ttl),
                anonymous_per_minute: cli.anonymous_per_minute,
            };
            // The test harness and service managers read the bound address from this line.
            println!("listening on {}", listener.local_addr()?);
            serve(listener, storage, config, stop_signal()).await
        }
    }
}

async fn open_storage(cli: &Cli) -> anyhow::Result<Arc<dyn Storage>> {
    if let (Some(postgres_url), Some(s3_endpoint)) = (&cli.postgres, &cli.s3_endpoint) {
        let config = CloudConfig {
            postgres_url: postgres_url.clone(),
            s3_endpoint: s3_endpoint.clone(),
            s3_bucket: cli.s3_bucket.clone(),
            s3_access_key: cli.s3_access_key.clone(),
            s3_secret_key: cli.s3_secret_key.clone(),
        };
        return Ok(Arc::new(Cloud::open(&config).await.context("opening PostgreSQL and S3")?));
    }
    let Some(data) = &cli.data else { bail!("give --data DIR, or --postgres and --s3-endpoint") };
    Ok(Arc::new(Embedded::open(data).with_context(|| format!("opening the data directory {}", data.display()))?))
}

async fn set_tier(storage: &dyn Storage, email: &str, tier: BillingTier, seats: u32) -> anyhow::Result<()> {
    let email = email.trim().to_lowercase();
    let key = records::account_key(&email);
    loop {
        let Some(bytes) = storage.get(&key).await? else { bail!("no account has the email {email}") };
        let account: Account = records::decode(&bytes, "an account")?;
        let updated = Account { tier, seats: seats.max(1), ..account };
        if storage.compare_and_swap(&key, Some(&bytes), Some(&records::encode(&updated))).await? {
            info!(tier = ?tier, seats = updated.seats, "tier set; it applies from the account's next token");
            println!("{email}: {} ({} seat(s))", serde_json::to_string(&tier)?.trim_matches('"'), updated.seats);
            return Ok(());
        }
    }
}

async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut terminate), Ok(mut interrupt)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = terminate.recv() => info!("SIGTERM: stopping"),
        _ = interrupt.recv() => info!("SIGINT: stopping"),
    }
}
