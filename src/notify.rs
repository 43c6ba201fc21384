//! The systemd notification protocol (`Type=notify`, sd_notify(3)): the
//! agent says when it is ready, reloading and stopping, and pings the
//! watchdog (`WatchdogSec=`) so that systemd restarts an agent that hangs.
//!
//! The protocol is one datagram per message to the unix socket named by
//! `$NOTIFY_SOCKET`; a few lines of std do it, so no crate is needed. Outside
//! systemd (no `$NOTIFY_SOCKET`) every call does nothing.

use std::time::Duration;

/// Sends one message (`READY=1`, `STOPPING=1`, ...) to systemd, when the
/// agent runs under it. A failure is logged and otherwise ignored: systemd
/// going away must not stop the agent.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else { return };
    if let Err(e) = send(&path, state) {
        tracing::warn!(error = %e, socket = ?path, "cannot notify systemd");
    }
}

fn send(path: &std::ffi::OsStr, state: &str) -> std::io::Result<()> {
    let socket = std::os::unix::net::UnixDatagram::unbound()?;
    // `@name` is a socket in the abstract namespace (systemd uses one in
    // containers and for user services).
    if let Some(name) = path.as_encoded_bytes().strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        socket.send_to_addr(state.as_bytes(), &addr)?;
    } else {
        socket.send_to(state.as_bytes(), path)?;
    }
    Ok(())
}

/// `READY=1`: the pipeline runs.
pub fn ready() {
    notify("READY=1");
}

/// `STOPPING=1`: the agent drains and exits.
pub fn stopping() {
    notify("STOPPING=1");
}

/// Runs a reload between `RELOADING=1` (with the monotonic time that
/// systemd 253 and later want, to tell this reload from an earlier one) and
/// `READY=1`, so that `systemctl reload` and `systemctl status` show it.
pub async fn reloading<T>(reload: impl std::future::Future<Output = T>) -> T {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `now` is a valid timespec to write to.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    let usec = now.tv_sec as u64 * 1_000_000 + now.tv_nsec as u64 / 1_000;
    notify(&format!("RELOADING=1\nMONOTONIC_USEC={usec}"));
    let result = reload.await;
    ready();
    result
}

/// How often to ping the watchdog: half of `$WATCHDOG_USEC` (as systemd
/// advises, so that one late ping is not fatal), when the watchdog is on
/// and meant for this process (`$WATCHDOG_PID` unset or ours; a child
/// started by the agent must not take it for itself).
pub fn watchdog_interval() -> Option<Duration> {
    interval_from(
        std::env::var("WATCHDOG_USEC").ok().as_deref(),
        std::env::var("WATCHDOG_PID").ok().as_deref(),
        std::process::id(),
    )
}

fn interval_from(usec: Option<&str>, pid: Option<&str>, ours: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|&u| u > 0)?;
    if pid.is_some_and(|p| p.trim().parse::<u32>().ok() != Some(ours)) {
        return None;
    }
    Some(Duration::from_micros(usec / 2))
}

/// The watchdog pinger, while it lives.
pub struct Watchdog(tokio::task::JoinHandle<()>);

impl Watchdog {
    /// Starts pinging the watchdog on the current tokio runtime, if systemd
    /// asked for it. The pinger is a task like any other, so its pings prove
    /// that the runtime still schedules work: if the workers hang, the pings
    /// stop and systemd restarts the agent.
    pub fn start() -> Option<Watchdog> {
        let every = watchdog_interval()?;
        tracing::info!(every = %humantime::format_duration(every), "pinging the systemd watchdog");
        Some(Watchdog(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            // A late tick is sent once, not as a burst that would hide the delay.
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                notify("WATCHDOG=1");
            }
        })))
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_interval_is_half_the_timeout_for_this_process_only() {
        assert_eq!(interval_from(Some("2000000"), None, 7), Some(Duration::from_secs(1)));
        assert_eq!(interval_from(Some("2000000"), Some("7"), 7), Some(Duration::from_secs(1)));
        assert_eq!(interval_from(Some("2000000"), Some("8"), 7), None);
        assert_eq!(interval_from(None, Some("7"), 7), None);
        assert_eq!(interval_from(Some("0"), None, 7), None);
        assert_eq!(interval_from(Some("soon"), None, 7), None);
    }

    #[test]
    fn messages_reach_a_path_or_an_abstract_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        send(path.as_os_str(), "READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("hostwatch-notify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = std::os::unix::net::UnixDatagram::bind_addr(&addr).unwrap();
        send(std::ffi::OsStr::new(&format!("@{name}")), "STOPPING=1").unwrap();
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");
    }
}
