//! Exit statuses from the kernel's process events connector (netlink,
//! `NETLINK_CONNECTOR`): the one place besides the parent that the kernel
//! tells how a process ended. Needs CAP_NET_ADMIN; without it, processes
//! still start and exit as seen in /proc, only without a status.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

const CN_IDX_PROC: u32 = 1;
const CN_VAL_PROC: u32 = 1;
const PROC_CN_MCAST_LISTEN: u32 = 1;
const PROC_EVENT_EXIT: u32 = 0x8000_0000;
/// Exit statuses kept for the scan to pick up.
const KEEP: usize = 8192;

/// Exit statuses by pid, as the kernel reported them (wait status).
#[derive(Default)]
pub struct Exits {
    codes: HashMap<u32, u32>,
    order: VecDeque<u32>,
}

impl Exits {
    fn record(&mut self, pid: u32, code: u32) {
        if self.codes.insert(pid, code).is_none() {
            self.order.push_back(pid);
        }
        while self.order.len() > KEEP {
            if let Some(old) = self.order.pop_front() {
                self.codes.remove(&old);
            }
        }
    }

    /// How `pid` ended: `(exit_code, signal)`, either may be absent.
    pub fn take(&mut self, pid: u32) -> Option<(Option<u32>, Option<u32>)> {
        let status = self.codes.remove(&pid)?;
        let signal = status & 0x7f;
        Some(if signal != 0 { (None, Some(signal)) } else { (Some((status >> 8) & 0xff), None) })
    }
}

/// Starts listening on a thread of its own; `None` (with the reason) when
/// the kernel refuses.
pub fn listen() -> Result<Arc<Mutex<Exits>>, String> {
    // SAFETY: plain socket calls with buffers of the sizes given.
    let fd = unsafe {
        libc::socket(libc::AF_NETLINK, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, libc::NETLINK_CONNECTOR)
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    let fail = |what: &str| {
        let e = std::io::Error::last_os_error();
        // SAFETY: the socket opened above.
        unsafe { libc::close(fd) };
        Err(format!("{what}: {e}"))
    };
    // SAFETY: a zeroed sockaddr_nl is valid; the fields set are plain integers.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as u16;
    addr.nl_pid = 0;
    addr.nl_groups = CN_IDX_PROC;
    let len = std::mem::size_of::<libc::sockaddr_nl>() as u32;
    // SAFETY: addr lives across the call and has the size given.
    if unsafe { libc::bind(fd, &addr as *const _ as *const libc::sockaddr, len) } != 0 {
        return fail("bind");
    }
    // nlmsghdr (16) + cn_msg (20) + the operation (4).
    let mut msg = [0u8; 40];
    msg[0..4].copy_from_slice(&40u32.to_ne_bytes());
    msg[4..6].copy_from_slice(&(libc::NLMSG_DONE as u16).to_ne_bytes());
    msg[12..16].copy_from_slice(&std::process::id().to_ne_bytes());
    msg[16..20].copy_from_slice(&CN_IDX_PROC.to_ne_bytes());
    msg[20..24].copy_from_slice(&CN_VAL_PROC.to_ne_bytes());
    msg[32..34].copy_from_slice(&4u16.to_ne_bytes());
    msg[36..40].copy_from_slice(&PROC_CN_MCAST_LISTEN.to_ne_bytes());
    // SAFETY: msg lives across the call.
    if unsafe { libc::send(fd, msg.as_ptr() as *const libc::c_void, msg.len(), 0) } < 0 {
        return fail("subscribe");
    }
    let exits = Arc::new(Mutex::new(Exits::default()));
    let sink = exits.clone();
    let spawned = std::thread::Builder::new().name("proc-events".into()).spawn(move || {
        let mut buf = vec![0u8; 8192];
        loop {
            // SAFETY: buf lives across the call and has the length given.
            let n = unsafe { libc::recv(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len(), 0) };
            if n < 0 {
                if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                // ENOBUFS: the kernel dropped events while we were slow; go on.
                if std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOBUFS) {
                    continue;
                }
                break;
            }
            parse(&buf[..n as usize], &sink);
        }
    });
    if spawned.is_err() {
        return fail("thread");
    }
    Ok(exits)
}

/// Reads the netlink messages of one datagram.
fn parse(mut data: &[u8], exits: &Mutex<Exits>) {
    let u32_at =
        |d: &[u8], at: usize| d.get(at..at + 4).map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
    while let Some(len) = u32_at(data, 0) {
        let len = len as usize;
        if len < 16 || len > data.len() {
            return;
        }
        let msg = &data[..len];
        // proc_event after nlmsghdr (16) and cn_msg (20): what, cpu,
        // timestamp (8), then for an exit: pid, tgid, exit_code, exit_signal.
        if u32_at(msg, 36) == Some(PROC_EVENT_EXIT)
            && let (Some(pid), Some(tgid), Some(code)) = (u32_at(msg, 52), u32_at(msg, 56), u32_at(msg, 60))
            && pid == tgid
            && let Ok(mut e) = exits.lock()
        {
            e.record(tgid, code);
        }
        // Messages are aligned to 4 bytes.
        data = &data[((len + 3) & !3).min(data.len())..];
    }
}
