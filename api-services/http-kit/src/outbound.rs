//! The client a process uses for its own outbound calls (the gateway's JWKS fetches, span export).

/// A client for a process's own outbound calls (JWKS, span export): http or https with the system's CA
/// certificates.
pub type HttpsClient<B> = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    B,
>;

pub fn https_client<B>() -> Result<HttpsClient<B>, String>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
{
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .map_err(|e| format!("loading the system's CA certificates: {e}"))?
        .https_or_http()
        .enable_http1()
        .build();
    Ok(hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build(https))
}
