//! TLS for every HTTP client of the process: rustls with ring. reqwest is built without
//! a provider of its own and the AWS SDK's client is told to use ring, so the release
//! build compiles one crypto library (aws-lc, the SDK's default, is a long C build).

/// Make ring the process's rustls provider. Called before any HTTP client is built
/// (the binary's start, and each client's constructor); later calls do nothing.
pub fn install() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Err only when a provider is already installed, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// The AWS SDK's HTTPS client, on rustls with ring: what the SDK's default client
/// does with aws-lc (its timeouts and sleep, and the proxy from `HTTPS_PROXY`,
/// `HTTP_PROXY`, `ALL_PROXY` and `NO_PROXY`), with the crypto changed.
pub fn aws_http_client() -> aws_sdk_s3::config::SharedHttpClient {
    use aws_smithy_http_client::proxy::ProxyConfig;
    use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
    use aws_smithy_http_client::{Builder, ConnectorBuilder};
    install();
    Builder::new().build_with_connector_fn(|settings, components| {
        let mut connector =
            ConnectorBuilder::default().tls_provider(Provider::Rustls(CryptoMode::Ring));
        connector.set_connector_settings(settings.cloned());
        if let Some(c) = components {
            connector.set_sleep_impl(c.sleep_impl());
        }
        connector.set_proxy_config(Some(ProxyConfig::from_env()));
        connector.build()
    })
}
