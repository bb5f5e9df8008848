//! Azure Resource Manager REST calls made here (the compute crate has no network client):
//! a bearer token from the credential, retries through [`retry::call`] honouring
//! `Retry-After`, and long-running operations followed by polling their
//! `Azure-AsyncOperation` URL (never by sending the PUT again).
//!
//! Wire format: <https://learn.microsoft.com/rest/api/azure/> ("Track asynchronous Azure
//! operations", "Azure Resource Manager error codes").

use std::sync::Arc;
use std::time::Duration;

use azure_core::auth::TokenCredential;
use reqwest::Method;
use serde_json::Value;

use super::AzureConfig;
use crate::ProviderError;
use crate::error::parse_retry_after;
use crate::retry::{self, Idempotency};

/// OAuth scope of Azure Resource Manager.
pub(super) const SCOPE: &str = "https://management.azure.com/.default";

/// A response read whole.
pub(super) struct Answer {
    pub status: u16,
    pub retry_after: Option<Duration>,
    pub async_operation: Option<String>,
    pub location: Option<String>,
    pub body: Value,
}

pub(super) struct Arm {
    provider: String,
    http: reqwest::Client,
    endpoint: String,
    credential: Arc<dyn TokenCredential>,
    config: AzureConfig,
}

impl Arm {
    pub(super) fn new(config: &AzureConfig, credential: Arc<dyn TokenCredential>) -> Arm {
        Arm {
            provider: config.name.clone(),
            http: reqwest::Client::new(),
            endpoint: config.endpoint.trim_end_matches('/').to_owned(),
            credential,
            config: config.clone(),
        }
    }

    /// `https://management.azure.com/subscriptions/S/resourceGroups/G/providers/{path}`.
    pub(super) fn url(&self, path: &str, api_version: &str) -> String {
        format!(
            "{}/subscriptions/{}/resourceGroups/{}/providers/{path}?api-version={api_version}",
            self.endpoint, self.config.subscription_id, self.config.resource_group
        )
    }

    /// The ARM id of a resource of this resource group.
    pub(super) fn resource_id(&self, path: &str) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/{path}",
            self.config.subscription_id, self.config.resource_group
        )
    }

    async fn token(&self) -> Result<String, ProviderError> {
        self.credential
            .get_token(&[SCOPE])
            .await
            .map(|t| t.token.secret().to_owned())
            .map_err(|e| super::classify::classify_core(&self.provider, "get a token", &e))
    }

    async fn send_once(
        &self,
        operation: &'static str,
        method: &Method,
        url: &str,
        body: Option<&Value>,
    ) -> Result<Answer, ProviderError> {
        let token = self.token().await?;
        let mut request = self.http.request(method.clone(), url).bearer_auth(token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let connection = |e: reqwest::Error| ProviderError::Connection {
            provider: self.provider.clone(),
            operation,
            detail: e.to_string(),
        };
        let response = request.send().await.map_err(connection)?;
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let status = response.status().as_u16();
        let retry_after = header("retry-after").as_deref().and_then(parse_retry_after);
        let async_operation = header("azure-asyncoperation");
        let location = header("location");
        let text = response.text().await.map_err(connection)?;
        let answer = Answer {
            status,
            retry_after,
            async_operation,
            location,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
        };
        if status == 429 || status >= 500 {
            return Err(self.error(operation, &answer));
        }
        Ok(answer)
    }

    /// One call with timeout and retries; a non-2xx answer other than 404 (which callers
    /// read as "gone") is a classified error.
    pub(super) async fn call(
        &self,
        operation: &'static str,
        method: Method,
        url: &str,
        body: Option<&Value>,
    ) -> Result<Answer, ProviderError> {
        // ARM PUT and DELETE of a named resource are idempotent: all calls may be re-sent.
        let answer = retry::call(
            &self.config.retry,
            &self.provider,
            operation,
            Idempotency::Idempotent,
            || self.send_once(operation, &method, url, body),
        )
        .await?;
        if !(200..300).contains(&answer.status) && answer.status != 404 {
            return Err(self.error(operation, &answer));
        }
        Ok(answer)
    }

    /// PUT, then follow the operation to its end.
    pub(super) async fn put_and_wait(
        &self,
        operation: &'static str,
        url: &str,
        body: &Value,
    ) -> Result<(), ProviderError> {
        let answer = self.call(operation, Method::PUT, url, Some(body)).await?;
        if answer.status == 404 {
            return Err(self.error(operation, &answer));
        }
        match &answer.async_operation {
            Some(status_url) => self.wait(operation, status_url, answer.retry_after).await,
            None => Ok(()),
        }
    }

    /// DELETE, then follow the operation to its end; a resource already gone is not an error.
    pub(super) async fn delete_and_wait(
        &self,
        operation: &'static str,
        url: &str,
    ) -> Result<(), ProviderError> {
        let answer = self.call(operation, Method::DELETE, url, None).await?;
        if let Some(status_url) = &answer.async_operation {
            self.wait(operation, status_url, answer.retry_after).await?;
        } else if answer.status == 202
            && let Some(location) = &answer.location
        {
            self.wait_location(operation, location, answer.retry_after)
                .await?;
        }
        Ok(())
    }

    /// Polls an `Azure-AsyncOperation` URL until `Succeeded` (`Failed`/`Canceled` carry the
    /// operation's error), waiting what each answer's `Retry-After` says.
    pub(super) async fn wait(
        &self,
        operation: &'static str,
        status_url: &str,
        mut retry_after: Option<Duration>,
    ) -> Result<(), ProviderError> {
        let deadline = tokio::time::Instant::now() + self.config.operation_timeout;
        loop {
            tokio::time::sleep(retry_after.unwrap_or(self.config.poll_interval)).await;
            let answer = self.call(operation, Method::GET, status_url, None).await?;
            match answer.body["status"].as_str().unwrap_or_default() {
                "Succeeded" => return Ok(()),
                "Failed" | "Canceled" => {
                    let failed = Answer {
                        body: serde_json::json!({ "error": answer.body["error"].clone() }),
                        ..answer
                    };
                    return Err(self.error(operation, &failed));
                }
                _ => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ProviderError::Timeout {
                    provider: self.provider.clone(),
                    operation,
                    timeout: self.config.operation_timeout,
                });
            }
            retry_after = answer.retry_after;
        }
    }

    /// Polls a `Location` URL (202 while running, 200/204 when done).
    async fn wait_location(
        &self,
        operation: &'static str,
        location: &str,
        mut retry_after: Option<Duration>,
    ) -> Result<(), ProviderError> {
        let deadline = tokio::time::Instant::now() + self.config.operation_timeout;
        loop {
            tokio::time::sleep(retry_after.unwrap_or(self.config.poll_interval)).await;
            let answer = self.call(operation, Method::GET, location, None).await?;
            if answer.status != 202 {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ProviderError::Timeout {
                    provider: self.provider.clone(),
                    operation,
                    timeout: self.config.operation_timeout,
                });
            }
            retry_after = answer.retry_after;
        }
    }

    pub(super) fn error(&self, operation: &'static str, answer: &Answer) -> ProviderError {
        let error = &answer.body["error"];
        super::classify::classify(
            &self.provider,
            operation,
            answer.status,
            error["code"].as_str().unwrap_or_default(),
            error["message"].as_str().unwrap_or_default(),
            answer.retry_after,
        )
    }
}
