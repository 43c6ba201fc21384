//! Sniff mode's capture: an AF_PACKET socket with a classic BPF filter for
//! the service's TCP ports, and a TPACKET_V3 ring the kernel fills in
//! blocks, so that one wakeup hands over many packets and no packet is
//! copied to reach us. The socket is `SOCK_DGRAM`: packets start at the IP
//! header whatever the link (Ethernet, loopback, tunnels, `any`).

use std::ffi::CString;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};

use super::flows::Segment;

/// The size of one ring block: a packet (at most 64 KiB on a GSO path) must
/// fit in one.
const BLOCK: usize = 1 << 20;

/// Why capture cannot start, worded for the operator.
fn open_error(what: &str, e: io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => format!(
            "{what}: {e}. Capturing packets needs the CAP_NET_RAW capability: run hostwatch as \
             root, or grant it (AmbientCapabilities=CAP_NET_RAW in the systemd unit, or \
             `setcap cap_net_raw+ep` on the binary), or use `mode: proxy`"
        ),
        _ => format!("{what}: {e}"),
    }
}

fn check(ret: libc::c_int, what: &str) -> Result<(), String> {
    if ret < 0 { Err(open_error(what, io::Error::last_os_error())) } else { Ok(()) }
}

fn setsockopt<T>(
    fd: &OwnedFd,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
    what: &str,
) -> Result<(), String> {
    // SAFETY: `value` is a valid T for the length given.
    let ret = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    check(ret, what)
}

/// The interface index of `name`; 0 for `any`.
fn index_of(name: &str) -> Result<u32, String> {
    if name == "any" {
        return Ok(0);
    }
    let c = CString::new(name).map_err(|_| format!("interface `{name}`: not a name"))?;
    // SAFETY: a valid C string.
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => Err(format!("no network interface `{name}`")),
        i => Ok(i),
    }
}

// === the filter ===

/// A jump target while the program is written.
#[derive(Clone, Copy)]
enum To {
    Next,
    Accept,
    Drop,
    Label(usize),
}

struct Program {
    code: Vec<(u16, u32, To, To)>,
    labels: Vec<usize>,
}

impl Program {
    fn new() -> Self {
        Program { code: Vec::new(), labels: Vec::new() }
    }

    fn label(&mut self) -> usize {
        self.labels.push(usize::MAX);
        self.labels.len() - 1
    }

    fn here(&mut self, label: usize) {
        self.labels[label] = self.code.len();
    }

    fn op(&mut self, code: u32, k: u32) {
        self.code.push((code as u16, k, To::Next, To::Next));
    }

    fn jump(&mut self, code: u32, k: u32, yes: To, no: To) {
        self.code.push(((libc::BPF_JMP | code | libc::BPF_K) as u16, k, yes, no));
    }

    /// A = this ancillary value of the packet.
    fn ancillary(&mut self, what: libc::c_int) {
        self.op(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, (libc::SKF_AD_OFF + what) as u32);
    }

    /// Accepts if A is one of `ports`, else goes on to `no`.
    fn ports(&mut self, ports: &[u16], no: To) {
        for (i, p) in ports.iter().enumerate() {
            let last = i + 1 == ports.len();
            self.jump(libc::BPF_JEQ, u32::from(*p), To::Accept, if last { no } else { To::Next });
        }
    }

    fn assemble(self) -> Result<Vec<libc::sock_filter>, String> {
        let accept = self.code.len();
        let drop = accept + 1;
        let mut out = Vec::with_capacity(self.code.len() + 2);
        for (i, (code, k, yes, no)) in self.code.iter().enumerate() {
            let offset = |to: To| -> Result<u8, String> {
                let target = match to {
                    To::Next => i + 1,
                    To::Accept => accept,
                    To::Drop => drop,
                    To::Label(l) => self.labels[l],
                };
                u8::try_from(target - i - 1).map_err(|_| "too many ports for one packet filter".to_string())
            };
            out.push(libc::sock_filter { code: *code, jt: offset(*yes)?, jf: offset(*no)?, k: *k });
        }
        // The whole packet, or nothing.
        out.push(libc::sock_filter { code: (libc::BPF_RET | libc::BPF_K) as u16, jt: 0, jf: 0, k: u32::MAX });
        out.push(libc::sock_filter { code: (libc::BPF_RET | libc::BPF_K) as u16, jt: 0, jf: 0, k: 0 });
        Ok(out)
    }
}

/// Keeps TCP segments to or from `ports`, over IPv4 (unfragmented or first
/// fragment) and IPv6 (TCP right after the fixed header). On loopback every
/// packet passes twice, going out and coming in: the outgoing copy of
/// interface `lo` is dropped.
fn filter(ports: &[u16], loopback: u32) -> Result<Vec<libc::sock_filter>, String> {
    let mut p = Program::new();
    let (proto, v4, v6) = (p.label(), p.label(), p.label());
    let ld = |size| libc::BPF_LD | size | libc::BPF_ABS;
    p.ancillary(libc::SKF_AD_PKTTYPE);
    p.jump(libc::BPF_JEQ, u32::from(libc::PACKET_OUTGOING), To::Next, To::Label(proto));
    p.ancillary(libc::SKF_AD_IFINDEX);
    p.jump(libc::BPF_JEQ, loopback, To::Drop, To::Label(proto));
    p.here(proto);
    p.ancillary(libc::SKF_AD_PROTOCOL);
    p.jump(libc::BPF_JEQ, libc::ETH_P_IP as u32, To::Label(v4), To::Next);
    p.jump(libc::BPF_JEQ, libc::ETH_P_IPV6 as u32, To::Label(v6), To::Drop);
    p.here(v4);
    p.op(ld(libc::BPF_B), 9);
    p.jump(libc::BPF_JEQ, libc::IPPROTO_TCP as u32, To::Next, To::Drop);
    p.op(ld(libc::BPF_H), 6);
    p.jump(libc::BPF_JSET, 0x1fff, To::Drop, To::Next);
    p.op(libc::BPF_LDX | libc::BPF_B | libc::BPF_MSH, 0);
    p.op(libc::BPF_LD | libc::BPF_H | libc::BPF_IND, 0);
    p.ports(ports, To::Next);
    p.op(libc::BPF_LD | libc::BPF_H | libc::BPF_IND, 2);
    p.ports(ports, To::Drop);
    p.here(v6);
    p.op(ld(libc::BPF_B), 6);
    p.jump(libc::BPF_JEQ, libc::IPPROTO_TCP as u32, To::Next, To::Drop);
    p.op(ld(libc::BPF_H), 40);
    p.ports(ports, To::Next);
    p.op(ld(libc::BPF_H), 42);
    p.ports(ports, To::Drop);
    p.assemble()
}

// === impl Ring ===

/// The capture socket and its ring.
pub struct Ring {
    fd: OwnedFd,
    map: *mut u8,
    size: usize,
    blocks: usize,
    next: usize,
}

// SAFETY: the mapping belongs to the socket, which the ring owns; one
// thread uses it at a time.
unsafe impl Send for Ring {}

/// A captured packet.
pub struct Packet<'a> {
    /// Microseconds since the epoch.
    pub time: i64,
    /// From the IP header on, as much as was captured.
    pub data: &'a [u8],
    /// The packet's length on the wire (from the IP header on).
    pub len: u32,
}

impl Ring {
    /// Opens the capture on `interface` (`any` for all) for TCP `ports`,
    /// with a ring of about `size` bytes.
    pub fn open(interface: &str, ports: &[u16], size: usize) -> Result<Ring, String> {
        let ifindex = index_of(interface)?;
        let loopback = index_of("lo").unwrap_or(0);
        // Protocol 0 until bound: nothing arrives before the filter is on.
        // SAFETY: plain socket call.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        check(raw, "cannot open a packet socket")?;
        // SAFETY: a new descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut code = filter(ports, loopback)?;
        let prog = libc::sock_fprog { len: code.len() as u16, filter: code.as_mut_ptr() };
        setsockopt(&fd, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &prog, "cannot attach the packet filter")?;
        let version = libc::tpacket_versions::TPACKET_V3 as libc::c_int;
        setsockopt(&fd, libc::SOL_PACKET, libc::PACKET_VERSION, &version, "TPACKET_V3 not supported")?;
        let blocks = (size / BLOCK).max(2);
        let req = libc::tpacket_req3 {
            tp_block_size: BLOCK as u32,
            tp_block_nr: blocks as u32,
            tp_frame_size: 2048,
            tp_frame_nr: (BLOCK / 2048 * blocks) as u32,
            // A block goes to us when full or after this many ms.
            tp_retire_blk_tov: 20,
            tp_sizeof_priv: 0,
            tp_feature_req_word: 0,
        };
        setsockopt(&fd, libc::SOL_PACKET, libc::PACKET_RX_RING, &req, "cannot set up the capture ring")?;
        let size = BLOCK * blocks;
        // SAFETY: maps the ring just set up on this socket.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(open_error("cannot map the capture ring", io::Error::last_os_error()));
        }
        let ring = Ring { fd, map: map.cast(), size, blocks, next: 0 };
        // SAFETY: sockaddr_ll is plain data.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        addr.sll_ifindex = ifindex as i32;
        // SAFETY: a valid sockaddr_ll of the right length.
        let ret = unsafe {
            libc::bind(
                ring.fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        check(ret, &format!("cannot capture on `{interface}`"))?;
        Ok(ring)
    }

    fn block_status(&self, i: usize) -> &AtomicU32 {
        // SAFETY: block `i` lies in the mapping; its first word after
        // `version` and `offset_to_priv` is the status the kernel and we
        // hand the block over with; u32-aligned.
        unsafe { &*(self.map.add(i * BLOCK + 8).cast::<AtomicU32>()) }
    }

    /// Hands every packet of the next full block to `each`, waiting up to
    /// `wait_ms` for one. False if none came.
    pub fn next_block(&mut self, wait_ms: i32, mut each: impl FnMut(Packet)) -> bool {
        let i = self.next;
        if self.block_status(i).load(Ordering::Acquire) & libc::TP_STATUS_USER == 0 {
            let mut pfd =
                libc::pollfd { fd: self.fd.as_raw_fd(), events: libc::POLLIN | libc::POLLERR, revents: 0 };
            // SAFETY: one valid pollfd.
            unsafe { libc::poll(&mut pfd, 1, wait_ms) };
            if self.block_status(i).load(Ordering::Acquire) & libc::TP_STATUS_USER == 0 {
                return false;
            }
        }
        // SAFETY: the block is ours until its status goes back to the
        // kernel; the kernel wrote the descriptor and the packets in it.
        unsafe {
            let block = self.map.add(i * BLOCK);
            let desc = &*(block.cast::<libc::tpacket_block_desc>());
            let h = desc.hdr.bh1;
            let mut at = h.offset_to_first_pkt as usize;
            for _ in 0..h.num_pkts {
                if at + std::mem::size_of::<libc::tpacket3_hdr>() > BLOCK {
                    break;
                }
                let p = &*(block.add(at).cast::<libc::tpacket3_hdr>());
                let start = at + p.tp_net as usize;
                let len = p.tp_snaplen as usize;
                if start + len <= BLOCK {
                    each(Packet {
                        time: i64::from(p.tp_sec) * 1_000_000 + i64::from(p.tp_nsec / 1000),
                        data: std::slice::from_raw_parts(block.add(start), len),
                        len: p.tp_len,
                    });
                }
                if p.tp_next_offset == 0 {
                    break;
                }
                at += p.tp_next_offset as usize;
            }
        }
        self.block_status(i).store(libc::TP_STATUS_KERNEL, Ordering::Release);
        self.next = (i + 1) % self.blocks;
        true
    }

    /// Packets the kernel passed and dropped (ring full) since last asked.
    pub fn stats(&self) -> (u64, u64) {
        // SAFETY: plain data filled by the kernel.
        let mut s: libc::tpacket_stats_v3 = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::tpacket_stats_v3>() as libc::socklen_t;
        // SAFETY: a buffer of the length given.
        let ret = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&mut s as *mut libc::tpacket_stats_v3).cast(),
                &mut len,
            )
        };
        if ret < 0 { (0, 0) } else { (u64::from(s.tp_packets), u64::from(s.tp_drops)) }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `open`.
        unsafe { libc::munmap(self.map.cast(), self.size) };
    }
}

// === drops ===

/// Packets the kernel dropped, told to the operator at most once a
/// minute: each warning counts the drops since the one before.
#[derive(Default)]
pub struct DropWarning {
    last: Option<std::time::Instant>,
    pending: u64,
}

impl DropWarning {
    const EVERY: std::time::Duration = std::time::Duration::from_secs(60);

    /// `drops` more were counted at `now`: the number to warn of, if a
    /// warning is due.
    pub fn note(&mut self, drops: u64, now: std::time::Instant) -> Option<u64> {
        self.pending += drops;
        if self.pending == 0 || self.last.is_some_and(|t| now.duration_since(t) < Self::EVERY) {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.pending))
    }
}

// === packets ===

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// The TCP segment in an IP packet; `None` for anything else or a packet
/// cut before the TCP header ends.
pub fn decode<'a>(p: &Packet<'a>) -> Option<Segment<'a>> {
    let d = p.data;
    let (src, dst, tcp_at, ip_end) = match d.first()? >> 4 {
        4 if d.len() >= 20 => {
            let ihl = usize::from(d[0] & 0x0f) * 4;
            if d[9] != libc::IPPROTO_TCP as u8 || ihl < 20 {
                return None;
            }
            // A GSO packet larger than 64 KiB carries 0 here.
            let total = match be16(d, 2) {
                0 => p.len as usize,
                n => usize::from(n),
            };
            let src = IpAddr::V4(Ipv4Addr::new(d[12], d[13], d[14], d[15]));
            let dst = IpAddr::V4(Ipv4Addr::new(d[16], d[17], d[18], d[19]));
            (src, dst, ihl, total)
        }
        6 if d.len() >= 40 => {
            if d[6] != libc::IPPROTO_TCP as u8 {
                return None;
            }
            let total = match be16(d, 4) {
                0 => p.len as usize,
                n => 40 + usize::from(n),
            };
            let a = |at: usize| -> [u8; 16] { d[at..at + 16].try_into().unwrap_or([0; 16]) };
            (IpAddr::V6(Ipv6Addr::from(a(8))), IpAddr::V6(Ipv6Addr::from(a(24))), 40, total)
        }
        _ => return None,
    };
    let tcp = d.get(tcp_at..)?;
    if tcp.len() < 20 {
        return None;
    }
    let offset = usize::from(tcp[12] >> 4) * 4;
    if offset < 20 || tcp.len() < offset {
        return None;
    }
    // Ethernet pads short frames: the IP length says where data ends.
    let end = ip_end.max(tcp_at + offset);
    let payload = &d[(tcp_at + offset).min(d.len())..end.min(d.len())];
    Some(Segment {
        time: p.time,
        src: SocketAddr::new(src, be16(tcp, 0)),
        dst: SocketAddr::new(dst, be16(tcp, 2)),
        seq: be32(tcp, 4),
        ack: be32(tcp, 8),
        flags: tcp[13],
        payload,
        cut: end.saturating_sub(d.len()) as u32,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_are_told_at_most_once_a_minute_with_their_count() {
        let t0 = std::time::Instant::now();
        let at = |s: u64| t0 + std::time::Duration::from_secs(s);
        let mut w = DropWarning::default();
        assert_eq!(w.note(0, at(0)), None);
        assert_eq!(w.note(5, at(1)), Some(5));
        assert_eq!(w.note(7, at(2)), None);
        assert_eq!(w.note(0, at(30)), None);
        assert_eq!(w.note(1, at(60)), None);
        assert_eq!(w.note(0, at(61)), Some(8));
        assert_eq!(w.note(0, at(200)), None);
        assert_eq!(w.note(2, at(201)), Some(2));
    }

    #[test]
    fn the_filter_assembles_and_reports_too_many_ports() {
        assert!(filter(&[80, 8080], 1).is_ok());
        let many: Vec<u16> = (1..=200).collect();
        assert!(filter(&many, 1).is_err());
    }

    #[test]
    fn decodes_ipv4_and_ipv6_segments_and_ignores_padding() {
        let mut v4 = vec![0x45, 0, 0, 44, 0, 0, 0x40, 0, 64, 6, 0, 0, 127, 0, 0, 1, 127, 0, 0, 2];
        v4.extend_from_slice(&[0x1f, 0x90, 0x00, 0x50, 0, 0, 0, 7, 0, 0, 0, 9, 0x50, 0x18, 0, 0, 0, 0, 0, 0]);
        v4.extend_from_slice(b"GET ");
        v4.extend_from_slice(&[0; 6]); // link padding
        let s = decode(&Packet { time: 1, data: &v4, len: v4.len() as u32 }).unwrap();
        assert_eq!((s.src.to_string().as_str(), s.dst.port(), s.seq, s.ack), ("127.0.0.1:8080", 80, 7, 9));
        assert_eq!((s.payload, s.cut, s.flags), (&b"GET "[..], 0, 0x18));

        let mut v6 = vec![0x60, 0, 0, 0, 0, 22, 6, 64];
        v6.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        v6.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        v6.extend_from_slice(&[
            0, 80, 0x1f, 0x90, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0, 0, 0, 0, 0, 0, b'a',
        ]);
        let s = decode(&Packet { time: 1, data: &v6, len: 100 }).unwrap();
        assert_eq!((s.src.port(), s.payload, s.cut), (80, &b"a"[..], 1));
        assert!(decode(&Packet { time: 1, data: &v6[..30], len: 100 }).is_none());
    }
}
