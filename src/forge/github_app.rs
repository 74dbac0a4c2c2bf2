//! GitHub App authentication: an RS256 JWT signed with the App's private key (valid ten
//! minutes, issued a minute in the past for clock drift) buys an installation token for
//! a repository's installation; tokens are cached and renewed five minutes before they
//! expire. The App's hook deliveries are read and redelivered with the JWT too.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use super::ForgeError;
use crate::issue::RepoId;

/// The App's credentials and its cache of installation tokens.
pub struct AppAuth {
    api_url: String,
    app_id: u64,
    key: EncodingKey,
    http: reqwest::blocking::Client,
    /// `owner/name` → (token, expiry in Unix seconds).
    tokens: Mutex<HashMap<String, (String, i64)>>,
}

fn creds(message: String) -> ForgeError {
    ForgeError::Credentials {
        reference: "github.app_id".into(),
        message,
    }
}

impl AppAuth {
    /// The App of `github.app_id`, or `None` when it is unset.
    pub fn from_config(config: &crate::config::Config) -> Result<Option<Self>, ForgeError> {
        let g = &config.github;
        let Some(app_id) = g.app_id else {
            return Ok(None);
        };
        let pem = match (&g.app_private_key, &g.app_private_key_env) {
            (Some(path), _) => std::fs::read_to_string(path).map_err(|e| {
                creds(format!(
                    "cannot read the App's private key {}: {e}\n  fix: point github.app_private_key at the .pem file GitHub gave you",
                    path.display()
                ))
            })?,
            (None, Some(var)) => std::env::var(var).map_err(|_| {
                creds(format!(
                    "the App's private key is to be in ${var}, which is not set\n  fix: export {var} with the PEM, or set github.app_private_key to its file"
                ))
            })?,
            (None, None) => {
                return Err(creds(
                    "github.app_id is set, and no private key is\n  fix: set github.app_private_key (a .pem file) or github.app_private_key_env".into(),
                ));
            }
        };
        let key = EncodingKey::from_rsa_pem(pem.as_bytes()).map_err(|e| {
            creds(format!(
                "the App's private key is not an RSA PEM key: {e}\n  fix: use the .pem GitHub generated for the App"
            ))
        })?;
        crate::tls::install();
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(30))
            .user_agent("autotriage")
            .build()
            .map_err(|e| creds(format!("cannot make an HTTP client: {e}")))?;
        Ok(Some(Self {
            api_url: g.api_url.trim_end_matches('/').to_string(),
            app_id,
            key,
            http,
            tokens: Mutex::new(HashMap::new()),
        }))
    }

    /// A JWT for the App (ten minutes).
    pub fn jwt(&self) -> Result<String, ForgeError> {
        let now = chrono::Utc::now().timestamp();
        jsonwebtoken::encode(
            &Header::new(Algorithm::RS256),
            &json!({"iat": now - 60, "exp": now + 540, "iss": self.app_id.to_string()}),
            &self.key,
        )
        .map_err(|e| creds(format!("cannot sign the App's JWT: {e}")))
    }

    fn call(&self, method: &str, path: &str, what: &str) -> Result<Value, ForgeError> {
        let url = format!("{}{path}", self.api_url);
        let req = match method {
            "POST" => self.http.post(&url).json(&json!({})),
            _ => self.http.get(&url),
        };
        let resp = req
            .bearer_auth(self.jwt()?)
            .header("Accept", "application/vnd.github+json")
            .send()
            .map_err(|e| ForgeError::Network {
                reference: what.into(),
                message: format!("{method} {url} failed: {e}\n  fix: try again"),
            })?;
        let status = resp.status().as_u16();
        let text = resp.text().unwrap_or_default();
        if !(200..300).contains(&status) {
            return Err(ForgeError::Http {
                reference: what.into(),
                status,
                message: format!(
                    "GitHub answered {status} to the App ({}): check github.app_id and the key",
                    text.chars().take(200).collect::<String>()
                ),
            });
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// The App's bot login, `<slug>[bot]`.
    pub fn bot_login(&self) -> Result<String, ForgeError> {
        let v = self.call("GET", "/app", "the App")?;
        let slug = v["slug"]
            .as_str()
            .ok_or_else(|| creds("GitHub's /app answer has no slug".into()))?;
        Ok(format!("{slug}[bot]"))
    }

    /// An installation token for `repo`, from the cache while it has 45 of its 60
    /// minutes left: a job takes its token when it starts, and a fix can run long.
    pub fn installation_token(&self, repo: &RepoId) -> Result<String, ForgeError> {
        let key = format!("{}/{}", repo.owner, repo.name);
        let now = chrono::Utc::now().timestamp();
        if let Ok(cache) = self.tokens.lock()
            && let Some((t, exp)) = cache.get(&key)
            && *exp - now > 2700
        {
            return Ok(t.clone());
        }
        let what = format!("{key} installation");
        let inst = self.call(
            "GET",
            &format!("/repos/{}/{}/installation", repo.owner, repo.name),
            &what,
        )?;
        let id = inst["id"]
            .as_u64()
            .ok_or_else(|| creds(format!("the App is not installed on {key}")))?;
        let v = self.call(
            "POST",
            &format!("/app/installations/{id}/access_tokens"),
            &what,
        )?;
        let token = v["token"]
            .as_str()
            .ok_or_else(|| creds("GitHub's access token answer has no token".into()))?
            .to_string();
        let exp = v["expires_at"]
            .as_str()
            .and_then(|e| chrono::DateTime::parse_from_rfc3339(e).ok())
            .map_or(now + 3600, |e| e.timestamp());
        if let Ok(mut cache) = self.tokens.lock() {
            cache.insert(key, (token.clone(), exp));
        }
        Ok(token)
    }

    /// The App webhook's most recent deliveries (newest first, one page of 100).
    pub fn deliveries(&self) -> Result<Vec<Value>, ForgeError> {
        let page = self.call(
            "GET",
            "/app/hook/deliveries?per_page=100",
            "the App's deliveries",
        )?;
        Ok(page.as_array().cloned().unwrap_or_default())
    }

    /// Ask GitHub to deliver `delivery` (its numeric id) again.
    pub fn redeliver(&self, delivery: u64) -> Result<(), ForgeError> {
        self.call(
            "POST",
            &format!("/app/hook/deliveries/{delivery}/attempts"),
            "a redelivery",
        )
        .map(|_| ())
    }
}
