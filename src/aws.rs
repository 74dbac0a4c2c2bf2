//! What the AWS team backends share: one way to load the SDK configuration.

/// The standard AWS chain (profile, environment, SSO…), with `region` and
/// `endpoint_url` overriding it, and the SDK's standard retry (5 attempts, which covers
/// throttling). Loaded on the caller's runtime.
pub fn load_config(
    runtime: &tokio::runtime::Runtime,
    region: Option<&str>,
    endpoint_url: Option<&str>,
) -> aws_config::SdkConfig {
    runtime.block_on(async {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(5));
        if let Some(r) = region {
            loader = loader.region(aws_config::Region::new(r.to_string()));
        }
        if let Some(u) = endpoint_url {
            loader = loader.endpoint_url(u);
        }
        loader.load().await
    })
}

/// Whether an SDK error (its `Debug` text) says no credentials could be loaded: the
/// chain found none, or a provider in it (SSO, the instance metadata) failed.
pub fn credentials_missing(debug: &str) -> bool {
    debug.contains("CredentialsNotLoaded")
        || debug.contains("NoCredentials")
        || debug.contains("ProviderError")
}
