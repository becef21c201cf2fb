//! The language model routes: providers, the fallback chain, usage, and `ask`. A model's answer
//! is awaited without holding the workspace: the workspace is taken only to build the call's
//! router and, afterwards, to keep the record of its calls.

use std::sync::Arc;

use adiuva_llm::{Completion, StreamEvent};
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tracing::Instrument;
use utoipa::ToSchema;

use super::Shared;
use super::guard::{ApiError, Body, Correlation, ErrorBody, ErrorDetail, Segments};
use crate::llm::{self, AskRequest, NewProvider, ProviderInfo, ProviderList, TestReport, UsageReport};
use crate::service::Service;

type SharedState = State<Arc<Shared>>;

#[utoipa::path(post, path = "/v1/llm/providers", tag = "llm", request_body = NewProvider,
    responses((status = 201, description = "The provider, as stored (never its key)", body = ProviderInfo),
              (status = 400, description = "Invalid input", body = ErrorBody)))]
pub async fn add_provider(
    State(shared): SharedState,
    correlation: Correlation,
    Body(new): Body<NewProvider>,
) -> Result<(StatusCode, Json<ProviderInfo>), ApiError> {
    let added = shared.call(correlation, move |service| service.llm_add(new)).await?;
    Ok((StatusCode::CREATED, Json(added)))
}

#[utoipa::path(get, path = "/v1/llm/providers", tag = "llm",
    responses((status = 200, description = "The providers and the fallback chain", body = ProviderList)))]
pub async fn list_providers(
    State(shared): SharedState,
    correlation: Correlation,
) -> Result<Json<ProviderList>, ApiError> {
    Ok(Json(shared.call(correlation, |service| service.llm_list()).await?))
}

#[utoipa::path(delete, path = "/v1/llm/providers/{name}", tag = "llm",
    params(("name" = String, Path, description = "The provider's name")),
    responses((status = 200, description = "The providers left", body = ProviderList),
              (status = 404, description = "No such provider", body = ErrorBody)))]
pub async fn remove_provider(
    State(shared): SharedState,
    correlation: Correlation,
    Segments(name): Segments<String>,
) -> Result<Json<ProviderList>, ApiError> {
    Ok(Json(shared.call(correlation, move |service| service.llm_remove(&name)).await?))
}

/// The fallback chain, in order.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Chain {
    pub names: Vec<String>,
}

#[utoipa::path(put, path = "/v1/llm/chain", tag = "llm", request_body = Chain,
    responses((status = 200, description = "The providers and the new chain", body = ProviderList),
              (status = 404, description = "A name is no provider", body = ErrorBody)))]
pub async fn set_chain(
    State(shared): SharedState,
    correlation: Correlation,
    Body(chain): Body<Chain>,
) -> Result<Json<ProviderList>, ApiError> {
    Ok(Json(shared.call(correlation, move |service| service.llm_set_default(chain.names)).await?))
}

#[utoipa::path(post, path = "/v1/llm/providers/{name}/test", tag = "llm",
    params(("name" = String, Path, description = "The provider's name")),
    responses((status = 200, description = "The provider answered", body = TestReport),
              (status = 502, description = "The provider failed (its reason in the error)", body = ErrorBody)))]
pub async fn test_provider(
    State(shared): SharedState,
    correlation: Correlation,
    Segments(name): Segments<String>,
) -> Result<Json<TestReport>, ApiError> {
    let only = name.clone();
    let prepared =
        shared.call(correlation, move |service| llm::prepare(service.workspace, Some(&only), correlation.0)).await?;
    let report = llm::test_with(&prepared).await;
    shared.call(correlation, move |service| llm::finish(service.workspace, &prepared)).await?;
    Ok(Json(report.map_err(crate::service::Error::from)?))
}

#[utoipa::path(get, path = "/v1/llm/providers/{name}/models", tag = "llm",
    params(("name" = String, Path, description = "The provider's name")),
    responses((status = 200, description = "The models the provider offers", body = Vec<String>),
              (status = 502, description = "The provider failed", body = ErrorBody)))]
pub async fn provider_models(
    State(shared): SharedState,
    correlation: Correlation,
    Segments(name): Segments<String>,
) -> Result<Json<Vec<String>>, ApiError> {
    let only = name.clone();
    let prepared =
        shared.call(correlation, move |service| llm::prepare(service.workspace, Some(&only), correlation.0)).await?;
    Ok(Json(llm::models_with(&prepared, &name).await.map_err(crate::service::Error::from)?))
}

#[utoipa::path(get, path = "/v1/llm/usage", tag = "llm",
    responses((status = 200, description = "Calls, tokens and cost per provider and per day, and the latest calls", body = UsageReport)))]
pub async fn usage(State(shared): SharedState, correlation: Correlation) -> Result<Json<UsageReport>, ApiError> {
    Ok(Json(shared.call(correlation, |service| service.llm_usage()).await?))
}

/// One line of `ask`'s answer: a stream event (when streaming), then `done` or `error`.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct AskLine {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub event: Option<StreamEvent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub done: Option<Completion>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetail>,
}

#[utoipa::path(post, path = "/v1/ask", tag = "llm", request_body = AskRequest,
    responses((status = 200, content_type = "application/x-ndjson", body = AskLine,
               description = "Stream events while the answer comes (when `stream`), then one `done` (the whole answer, with usage, cost and every fallback's reason) or `error` line"),
              (status = 400, description = "Invalid input", body = ErrorBody)))]
pub async fn ask(
    State(shared): SharedState,
    correlation: Correlation,
    Body(request): Body<AskRequest>,
) -> Result<Response, ApiError> {
    llm::check_prompt(&request)?;
    let only = request.provider.clone();
    let prepared = shared
        .call(correlation, move |service| llm::prepare(service.workspace, only.as_deref(), correlation.0))
        .await?;
    let (lines, mut answer) = mpsc::unbounded_channel::<Bytes>();
    let line = |line: AskLine| {
        let mut bytes = serde_json::to_vec(&line).unwrap_or_default();
        bytes.push(b'\n');
        Bytes::from(bytes)
    };
    tokio::spawn(
        async move {
            let events = lines.clone();
            let mut on_event = move |event: &StreamEvent| {
                let _ = events.send(line(AskLine { event: Some(event.clone()), done: None, error: None }));
            };
            let outcome = llm::ask_with(&prepared, request, &mut on_event).await;
            // The record is kept even if the client went away.
            let kept = shared.call(correlation, move |service| llm::finish(service.workspace, &prepared)).await;
            let last = match (outcome, kept) {
                (Ok(completion), Ok(())) => AskLine { event: None, done: Some(completion), error: None },
                (Err(error), _) => AskLine {
                    event: None,
                    done: None,
                    error: Some(ApiError::from(crate::service::Error::from(error)).body().error),
                },
                (_, Err(error)) => AskLine { event: None, done: None, error: Some(error.body().error) },
            };
            let _ = lines.send(line(last));
        }
        .instrument(tracing::Span::current()),
    );
    let stream = futures_util::stream::poll_fn(move |context| {
        answer.poll_recv(context).map(|line| line.map(Ok::<_, std::convert::Infallible>))
    });
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], axum::body::Body::from_stream(stream)).into_response())
}
