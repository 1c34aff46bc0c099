//! How a pool or a worker reaches the server: a URL and connect options,
//! or a client the user already holds. Shared by both builders so that
//! connecting (and its error) is written once.

use async_nats::{Client, ConnectOptions};

use crate::BuildError;

/// The server a builder connects to; see the builders' `url`,
/// `connect_options` and `client`.
#[derive(Default)]
pub(crate) struct Connection {
    url: Option<String>,
    options: Option<ConnectOptions>,
    client: Option<Client>,
}

/// Where a builder connects when told nothing.
const DEFAULT_URL: &str = "nats://127.0.0.1:4222";

impl Connection {
    pub(crate) fn set_url(&mut self, url: String) {
        self.url = Some(url);
    }

    pub(crate) fn set_options(&mut self, options: ConnectOptions) {
        self.options = Some(options);
    }

    pub(crate) fn set_client(&mut self, client: Client) {
        self.client = Some(client);
    }

    /// The server's URL (for `Debug` and errors).
    pub(crate) fn url(&self) -> &str {
        self.url.as_deref().unwrap_or(DEFAULT_URL)
    }

    /// The client given, or a new connection with the options given.
    ///
    /// # Errors
    ///
    /// [`BuildError::Connect`] naming the URL.
    pub(crate) async fn connect(self) -> Result<Client, BuildError> {
        if let Some(client) = self.client {
            return Ok(client);
        }
        let url = self.url().to_owned();
        self.options
            .unwrap_or_default()
            .connect(url.as_str())
            .await
            .map_err(|e| BuildError::Connect(format!("{url}: {e}")))
    }
}
