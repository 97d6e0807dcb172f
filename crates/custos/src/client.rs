//! A small client of Custos's HTTP API for the commands that work against a running server
//! (`custos support`, `custos demo`, `custos audit search|export|proof|tail`): signs in, then sends JSON and reads the answers; a
//! refusal becomes a [`Refused`] error carrying the API's status and message.

use std::time::Duration;

use crate::out::outln;
use anyhow::Context;
use reqwest::Method;
use reqwest::blocking::{Client as Http, Response};
use serde_json::Value as Json;

/// The API said no (4xx or 5xx): its status and OData error message.
#[derive(Debug, thiserror::Error)]
#[error("{method} {path}: {status}: {message}")]
pub(crate) struct Refused {
    pub(crate) method: Method,
    pub(crate) path: String,
    pub(crate) status: u16,
    pub(crate) message: String,
}

/// A signed-in client.
pub(crate) struct Client {
    pub(crate) base: String,
    http: Http,
    token: String,
}

/// An answer: status, headers and JSON body (null when empty or not JSON).
pub(crate) struct Answer {
    pub(crate) headers: reqwest::header::HeaderMap,
    pub(crate) json: Json,
}

impl Answer {
    /// The id in an `OData-EntityId` header (a create's answer).
    pub(crate) fn entity_id(&self) -> anyhow::Result<String> {
        let header = self
            .headers
            .get("odata-entityid")
            .and_then(|v| v.to_str().ok())
            .context("the answer has no OData-EntityId")?;
        Ok(header
            .rsplit_once('(')
            .map(|(_, id)| id.trim_end_matches(')').to_string())
            .unwrap_or_default())
    }
}

fn http(user_agent: &str) -> anyhow::Result<Http> {
    Http::builder()
        .user_agent(user_agent)
        .timeout(Duration::from_secs(120))
        .build()
        .context("building the HTTP client")
}

impl Client {
    /// Signs in with a user's name and password (`grant_type=password`).
    pub(crate) fn sign_in(
        base: &str,
        user: &str,
        password: &str,
        user_agent: &str,
    ) -> anyhow::Result<Client> {
        Client::token(
            base,
            user_agent,
            &[
                ("grant_type", "password"),
                ("username", user),
                ("password", password),
            ],
        )
    }

    /// Signs in as an application (`grant_type=client_credentials`).
    pub(crate) fn sign_in_app(
        base: &str,
        client_id: &str,
        secret: &str,
        user_agent: &str,
    ) -> anyhow::Result<Client> {
        Client::token(
            base,
            user_agent,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", client_id),
                ("client_secret", secret),
            ],
        )
    }

    fn token(base: &str, user_agent: &str, form: &[(&str, &str)]) -> anyhow::Result<Client> {
        let base = base.trim_end_matches('/').to_string();
        let http = http(user_agent)?;
        let response = http
            .post(format!("{base}/oauth2/token"))
            .form(form)
            .send()
            .with_context(|| format!("reaching {base}"))?;
        let status = response.status();
        let body: Json = response.json().unwrap_or(Json::Null);
        let token = body["access_token"].as_str().ok_or_else(|| Refused {
            method: Method::POST,
            path: "/oauth2/token".into(),
            status: status.as_u16(),
            message: body["error_description"]
                .as_str()
                .unwrap_or("sign-in refused")
                .to_string(),
        })?;
        Ok(Client {
            base,
            http,
            token: token.to_string(),
        })
    }

    /// Sends a request; returns the answer's headers and bytes, or a refusal as an error.
    fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Json>,
    ) -> anyhow::Result<(reqwest::header::HeaderMap, bytes::Bytes)> {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response: Response = request.send().with_context(|| format!("{method} {path}"))?;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response
            .bytes()
            .with_context(|| format!("{method} {path}"))?;
        if !status.is_success() {
            let json: Json = serde_json::from_slice(&bytes).unwrap_or(Json::Null);
            let message = json["error"]["message"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
            return Err(Refused {
                method,
                path: path.to_string(),
                status: status.as_u16(),
                message,
            }
            .into());
        }
        Ok((headers, bytes))
    }

    /// Sends a request and reads its JSON answer; a refusal is an error.
    pub(crate) fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Json>,
    ) -> anyhow::Result<Answer> {
        let (headers, bytes) = self.send(method, path, body)?;
        let json: Json = serde_json::from_slice(&bytes).unwrap_or(Json::Null);
        Ok(Answer { headers, json })
    }

    /// `GET path`, its bytes (a file).
    pub(crate) fn download(&self, path: &str) -> anyhow::Result<bytes::Bytes> {
        Ok(self.send(Method::GET, path, None)?.1)
    }

    /// `GET path`, its text.
    pub(crate) fn get_text(&self, path: &str) -> anyhow::Result<String> {
        let bytes = self.download(path)?;
        String::from_utf8(bytes.to_vec()).with_context(|| format!("GET {path}: not UTF-8 text"))
    }

    /// `GET path`, its JSON.
    pub(crate) fn get(&self, path: &str) -> anyhow::Result<Json> {
        Ok(self.call(Method::GET, path, None)?.json)
    }

    /// `POST path` with a JSON body.
    pub(crate) fn post(&self, path: &str, body: &Json) -> anyhow::Result<Answer> {
        self.call(Method::POST, path, Some(body))
    }
}

/// Every byte but RFC 3986's unreserved characters.
const RESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Percent-encodes a path segment or query value.
pub(crate) fn encode(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, RESERVED).to_string()
}

/// Prints records as a table: the given columns, or the first few fields of the first record;
/// "(none)" for an empty list whose columns are not known.
pub(crate) fn print_table(rows: &[Json], columns: Option<&[String]>) {
    if rows.is_empty() && columns.is_none() {
        outln!("(none)");
        return;
    }
    let columns: Vec<String> = match columns {
        Some(columns) => columns.to_vec(),
        None => rows
            .first()
            .and_then(Json::as_object)
            .map(|first| {
                first
                    .keys()
                    .filter(|k| !k.starts_with('@'))
                    .take(6)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default(),
    };
    // Cells as a person should see them: a recorded value cannot move the cursor or erase
    // the row above it (custos_audit::visible).
    let cell = |row: &Json, column: &str| -> String {
        match &row[column] {
            Json::Null => String::new(),
            Json::String(s) => custos_audit::visible(s),
            other => other.to_string(),
        }
    };
    let widths: Vec<usize> = columns
        .iter()
        .map(|c| {
            rows.iter()
                .map(|r| cell(r, c).chars().count())
                .chain([c.chars().count()])
                .max()
                .unwrap_or(0)
                .min(40)
        })
        .collect();
    let line = |values: Vec<String>| {
        let padded: Vec<String> = values
            .iter()
            .zip(&widths)
            .map(|(v, w)| {
                let v: String = v.chars().take(*w).collect();
                format!("{v:<w$}")
            })
            .collect();
        outln!("{}", padded.join("  ").trim_end());
    };
    line(columns.clone());
    for row in rows {
        line(columns.iter().map(|c| cell(row, c)).collect());
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_unreserved_characters_are_left_as_they_are() {
        assert_eq!(
            super::encode("a b/é~-_.'(x)&="),
            "a%20b%2F%C3%A9~-_.%27%28x%29%26%3D"
        );
    }
}
