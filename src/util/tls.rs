//! TLS set-up shared by everything that makes TLS connections: the HTTP
//! sink, the host source's HTTP checks, and the tests' clients.

use std::sync::Once;

/// rustls needs a process-wide crypto provider; ring is ours. Safe to call
/// any number of times, from anywhere.
pub fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Fails only if one is installed already, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
