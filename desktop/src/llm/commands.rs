//! `adiuva llm …` and `adiuva ask`: parsing and printing, over a [`Service`].

use std::io::Write;
use std::path::PathBuf;

use adiuva_llm::{Completion, StreamEvent};
use clap::Subcommand;
use zeroize::Zeroizing;

use super::{AskRequest, NewProvider, ProviderList, UsageReport};
use crate::service::Service;

/// Where `llm add` takes the API key from when the terminal is not asked.
const API_KEY_ENV: &str = "ADIUVA_API_KEY";

#[derive(Subcommand, Debug)]
pub enum LlmCommand {
    /// Add a provider (or replace the one of that name). The API key comes from ADIUVA_API_KEY
    /// or is asked for, never from an argument (which shell history and `ps` would keep).
    Add {
        name: String,
        #[arg(long, value_parser = ["openai", "anthropic", "gemini", "mistral", "groq", "ollama", "local"])]
        kind: String,
        #[arg(long)]
        model: String,
        /// Another endpoint than the provider's own (a proxy, a remote Ollama).
        #[arg(long)]
        base_url: Option<String>,
        /// A local model's GGUF file.
        #[arg(long)]
        model_path: Option<PathBuf>,
    },
    /// The providers and the fallback chain.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove a provider (and its key).
    Remove { name: String },
    /// Set the fallback chain: the providers to try, in order.
    SetDefault {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Make a short call to a provider to check its settings and key.
    Test { name: String },
    /// The models a provider offers.
    Models { name: String },
    /// Tokens, cost and calls, per provider and per day.
    Usage {
        #[arg(long)]
        json: bool,
    },
}

pub fn run(service: &mut dyn Service, command: LlmCommand) -> anyhow::Result<()> {
    match command {
        LlmCommand::Add { name, kind, model, base_url, model_path } => {
            let api_key = match adiuva_llm::ProviderKind::parse(&kind) {
                Some(kind) if kind.needs_key() => Some(api_key(&name)?),
                _ => None,
            };
            let added = service.llm_add(NewProvider {
                name,
                kind,
                model,
                base_url,
                model_path,
                api_key: api_key.map(|key| key.to_string()),
            })?;
            let place = match added.key {
                super::KeyPlace::None => "",
                super::KeyPlace::OsKeyring => ", its key in the OS keyring",
                super::KeyPlace::DeviceSettings => ", its key sealed in this device's settings",
            };
            println!("added {} ({} {}){place}", added.name, added.kind, added.model);
        }
        LlmCommand::List { json } => print_list(&service.llm_list()?, json)?,
        LlmCommand::Remove { name } => {
            service.llm_remove(&name)?;
            println!("removed {name}");
        }
        LlmCommand::SetDefault { names } => print_list(&service.llm_set_default(names)?, false)?,
        LlmCommand::Test { name } => {
            let report = service.llm_test(&name)?;
            println!(
                "{} ({}) answered in {} ms: {}",
                report.provider,
                report.model,
                report.latency_ms,
                report.reply.trim()
            );
        }
        LlmCommand::Models { name } => {
            for model in service.llm_models(&name)? {
                println!("{model}");
            }
        }
        LlmCommand::Usage { json } => print_usage(&service.llm_usage()?, json)?,
    }
    Ok(())
}

fn api_key(name: &str) -> anyhow::Result<Zeroizing<String>> {
    if let Ok(key) = std::env::var(API_KEY_ENV)
        && !key.is_empty()
    {
        return Ok(Zeroizing::new(key));
    }
    Ok(Zeroizing::new(rpassword::prompt_password(format!("API key for {name}: "))?))
}

/// `adiuva ask`: the answer, streamed token by token with `--stream`.
pub fn ask(service: &mut dyn Service, request: AskRequest, json: bool) -> anyhow::Result<()> {
    let streaming = request.stream && !json;
    let mut stdout = std::io::stdout();
    let mut on_event = |event: &StreamEvent| {
        if !streaming {
            return;
        }
        match event {
            StreamEvent::Token { text } => {
                let _ = write!(stdout, "{text}");
                let _ = stdout.flush();
            }
            StreamEvent::Restarted { from, to, reason, .. } => {
                eprintln!("\n[{from} broke off ({reason}); starting over on {to}]")
            }
            _ => {}
        }
    };
    let completion = service.ask(request, &mut on_event)?;
    if json {
        serde_json::to_writer_pretty(&mut stdout, &completion)?;
        writeln!(stdout)?;
        return Ok(());
    }
    if streaming {
        writeln!(stdout)?;
    } else {
        writeln!(stdout, "{}", completion.text)?;
    }
    eprintln!("{}", footer(&completion));
    Ok(())
}

/// Who answered, what it cost, and why others did not.
fn footer(completion: &Completion) -> String {
    let tokens = |n: Option<u64>| n.map_or("?".to_owned(), |n| n.to_string());
    let cost = completion.cost.usd.map_or("unknown".to_owned(), |usd| format!("${usd:.6}"));
    let mut footer = format!(
        "— {} ({}), {} ms, {} tokens in, {} out, cost {cost}",
        completion.provider,
        completion.model,
        completion.latency_ms,
        tokens(completion.usage.input_tokens),
        tokens(completion.usage.output_tokens)
    );
    for attempt in &completion.fallbacks {
        footer.push_str(&format!("\n  fell back: {attempt}"));
    }
    footer
}

fn print_list(list: &ProviderList, json: bool) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, list)?;
        writeln!(out)?;
        return Ok(());
    }
    if list.providers.is_empty() {
        writeln!(out, "no providers (adiuva llm add)")?;
        return Ok(());
    }
    writeln!(out, "{:<16}  {:<9}  {:<28}  {:<15}  {:<5}  ENDPOINT", "NAME", "KIND", "MODEL", "KEY", "CHAIN")?;
    for provider in &list.providers {
        let key = match provider.key {
            super::KeyPlace::None => "none",
            super::KeyPlace::OsKeyring => "os keyring",
            super::KeyPlace::DeviceSettings => "device settings",
        };
        let chain = provider.position.map_or("-".to_owned(), |p| (p + 1).to_string());
        let endpoint = provider
            .model_path
            .as_ref()
            .map(|p| p.display().to_string())
            .or_else(|| provider.base_url.clone())
            .unwrap_or_default();
        writeln!(
            out,
            "{:<16}  {:<9}  {:<28}  {:<15}  {:<5}  {endpoint}",
            provider.name, provider.kind, provider.model, key, chain
        )?;
    }
    Ok(())
}

fn print_usage(report: &UsageReport, json: bool) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, report)?;
        writeln!(out)?;
        return Ok(());
    }
    let line = |out: &mut std::io::StdoutLock, label: &str, totals: &adiuva_llm::Totals| -> std::io::Result<()> {
        let unknown = match (totals.cost_unknown, totals.tokens_unreported) {
            (0, 0) => String::new(),
            (cost, tokens) => format!("  ({cost} calls of unknown cost, {tokens} with unreported tokens)"),
        };
        writeln!(
            out,
            "{label:<16}  {:>6}  {:>6}  {:>10}  {:>10}  {:>12}{unknown}",
            totals.calls,
            totals.failed_calls,
            totals.input_tokens,
            totals.output_tokens,
            format!("${:.6}", totals.cost_usd)
        )
    };
    writeln!(
        out,
        "{:<16}  {:>6}  {:>6}  {:>10}  {:>10}  {:>12}",
        "", "CALLS", "FAILED", "TOKENS IN", "TOKENS OUT", "COST"
    )?;
    for (provider, totals) in &report.summary.by_provider {
        line(&mut out, provider, totals)?;
    }
    for (day, totals) in &report.summary.by_day {
        line(&mut out, day, totals)?;
    }
    line(&mut out, "all", &report.summary.all)?;
    Ok(())
}
