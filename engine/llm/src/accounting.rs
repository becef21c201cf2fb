//! Tokens and money: the price table, the record kept of every call, and totals per provider
//! and per day. Unknown is never 0: a model missing from the table, or a call whose tokens the
//! provider did not report, has an unknown cost, and totals say how many calls they leave out.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::ProviderKind;
use crate::types::Usage;

/// A call's cost in US dollars, `None` when it cannot be known.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Cost {
    pub usd: Option<f64>,
}

/// A model's list price in US dollars per million tokens.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Price {
    pub input_per_million: f64,
    pub output_per_million: f64,
}

/// List prices (USD per million tokens, input / output) of models people commonly pick, as the
/// providers published them; a model that is not here has an unknown price. Ollama and the
/// local model run on the person's own machine and cost nothing.
const PRICES: &[(ProviderKind, &str, f64, f64)] = &[
    (ProviderKind::OpenAi, "gpt-4o-mini", 0.15, 0.60),
    (ProviderKind::OpenAi, "gpt-4o", 2.50, 10.00),
    (ProviderKind::OpenAi, "gpt-4.1-mini", 0.40, 1.60),
    (ProviderKind::OpenAi, "gpt-4.1", 2.00, 8.00),
    (ProviderKind::Anthropic, "claude-3-5-haiku-latest", 0.80, 4.00),
    (ProviderKind::Anthropic, "claude-sonnet-4-0", 3.00, 15.00),
    (ProviderKind::Gemini, "gemini-2.0-flash", 0.10, 0.40),
    (ProviderKind::Mistral, "mistral-small-latest", 0.10, 0.30),
    (ProviderKind::Mistral, "mistral-large-latest", 2.00, 6.00),
    (ProviderKind::Groq, "llama-3.1-8b-instant", 0.05, 0.08),
    (ProviderKind::Groq, "llama-3.3-70b-versatile", 0.59, 0.79),
];

/// The price of `model` at `kind`, if known.
pub fn price(kind: ProviderKind, model: &str) -> Option<Price> {
    if matches!(kind, ProviderKind::Ollama | ProviderKind::Local) {
        return Some(Price { input_per_million: 0.0, output_per_million: 0.0 });
    }
    PRICES
        .iter()
        .find(|(k, m, _, _)| *k == kind && *m == model)
        .map(|&(_, _, input, output)| Price { input_per_million: input, output_per_million: output })
}

/// What `usage` cost at `price`: unknown if either is.
pub fn cost(price: Option<Price>, usage: Usage) -> Cost {
    let usd = match (price, usage.input_tokens, usage.output_tokens) {
        (Some(price), Some(input), Some(output)) => {
            Some((input as f64 * price.input_per_million + output as f64 * price.output_per_million) / 1e6)
        }
        _ => None,
    };
    Cost { usd }
}

/// One call as recorded on the device: never the prompt, the answer or the key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CallRecord {
    pub at: DateTime<Utc>,
    /// The configured provider name.
    pub provider: String,
    pub kind: ProviderKind,
    pub model: String,
    pub usage: Usage,
    pub cost: Cost,
    pub latency_ms: u64,
    /// `ok`, or the failure's stable code.
    pub outcome: String,
    /// The command or request this call served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation: Option<String>,
}

/// Sums of calls: tokens and cost over the calls that reported them, and how many did not.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    pub calls: u64,
    pub failed_calls: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Calls whose tokens were not reported (their tokens are not in the sums).
    pub tokens_unreported: u64,
    pub cost_usd: f64,
    /// Calls whose cost is unknown (their cost is not in `cost_usd`).
    pub cost_unknown: u64,
}

impl Totals {
    fn add(&mut self, record: &CallRecord) {
        self.calls += 1;
        if record.outcome != "ok" {
            self.failed_calls += 1;
        }
        match (record.usage.input_tokens, record.usage.output_tokens) {
            (Some(input), Some(output)) => {
                self.input_tokens += input;
                self.output_tokens += output;
            }
            _ if record.outcome == "ok" => self.tokens_unreported += 1,
            _ => {}
        }
        match record.cost.usd {
            Some(usd) => self.cost_usd += usd,
            None if record.outcome == "ok" => self.cost_unknown += 1,
            None => {}
        }
    }
}

/// Totals per provider name and per day (UTC, `YYYY-MM-DD`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct UsageSummary {
    pub by_provider: BTreeMap<String, Totals>,
    pub by_day: BTreeMap<String, Totals>,
    pub all: Totals,
}

impl UsageSummary {
    pub fn of<'a>(records: impl IntoIterator<Item = &'a CallRecord>) -> Self {
        let mut summary = UsageSummary::default();
        for record in records {
            summary.by_provider.entry(record.provider.clone()).or_default().add(record);
            summary.by_day.entry(record.at.format("%Y-%m-%d").to_string()).or_default().add(record);
            summary.all.add(record);
        }
        summary
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(input: Option<u64>, output: Option<u64>) -> Usage {
        Usage { input_tokens: input, output_tokens: output }
    }

    #[test]
    fn unknown_price_or_unreported_tokens_cost_unknown_never_zero() {
        let known = price(ProviderKind::OpenAi, "gpt-4o-mini");
        assert_eq!(cost(known, usage(Some(1_000_000), Some(1_000_000))).usd, Some(0.75));
        assert_eq!(cost(price(ProviderKind::OpenAi, "some-new-model"), usage(Some(10), Some(10))).usd, None);
        assert_eq!(cost(known, usage(None, Some(10))).usd, None);
        assert_eq!(cost(price(ProviderKind::Local, "any"), usage(Some(5), Some(5))).usd, Some(0.0));
    }

    #[test]
    fn totals_count_what_they_leave_out() {
        let at = DateTime::parse_from_rfc3339("2026-12-01T10:00:00Z").map(|t| t.with_timezone(&Utc)).unwrap();
        let record = |provider: &str, usage: Usage, usd: Option<f64>, outcome: &str| CallRecord {
            at,
            provider: provider.into(),
            kind: ProviderKind::OpenAi,
            model: "m".into(),
            usage,
            cost: Cost { usd },
            latency_ms: 1,
            outcome: outcome.into(),
            correlation: None,
        };
        let records = [
            record("a", usage(Some(10), Some(5)), Some(0.5), "ok"),
            record("a", usage(None, None), None, "ok"),
            record("b", usage(Some(1), Some(1)), None, "ok"),
            record("b", usage(None, None), None, "llm.rate_limited"),
        ];
        let summary = UsageSummary::of(&records);
        let a = &summary.by_provider["a"];
        assert_eq!((a.calls, a.input_tokens, a.output_tokens, a.tokens_unreported), (2, 10, 5, 1));
        assert_eq!((a.cost_usd, a.cost_unknown), (0.5, 1));
        let b = &summary.by_provider["b"];
        assert_eq!((b.calls, b.failed_calls, b.cost_unknown, b.tokens_unreported), (2, 1, 1, 0));
        assert_eq!(summary.by_day["2026-12-01"].calls, 4);
    }
}
