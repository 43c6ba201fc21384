//! Network interfaces: `net.interface.up` / `net.interface.down` when an
//! interface's operational state or its addresses change. The state comes
//! from `/sys/class/net/<name>/operstate`, the addresses from getifaddrs.

use std::collections::{BTreeMap, BTreeSet};

use crate::event::{Map, Str, Value};

#[derive(Clone, PartialEq, Eq)]
struct Interface {
    state: String,
    addresses: BTreeSet<String>,
}

#[derive(Default)]
pub struct Interfaces {
    known: Option<BTreeMap<String, Interface>>,
}

impl Interfaces {
    /// Looks again; the events for what changed since the last look (the
    /// first look only learns).
    pub fn check(&mut self) -> Vec<(&'static str, Map)> {
        let now = read();
        let mut events = Vec::new();
        if let Some(before) = &self.known {
            for (name, i) in &now {
                let old = before.get(name);
                if old == Some(i) {
                    continue;
                }
                let state_changed = old.is_none_or(|o| o.state != i.state);
                let change = if state_changed { "state" } else { "addresses" };
                events.push((
                    if i.state == "up" { "net.interface.up" } else { "net.interface.down" },
                    data(name, i, old, change),
                ));
            }
            for (name, old) in before {
                if !now.contains_key(name) {
                    let gone = Interface { state: "removed".to_string(), addresses: BTreeSet::new() };
                    events.push(("net.interface.down", data(name, &gone, Some(old), "removed")));
                }
            }
        }
        self.known = Some(now);
        events
    }
}

fn data(name: &str, i: &Interface, old: Option<&Interface>, change: &'static str) -> Map {
    let list = |set: &BTreeSet<String>| Value::Array(set.iter().map(|a| Value::from(a.clone())).collect());
    let mut m = Map::with_capacity(6);
    m.push(Str::from_static("interface"), Value::from(name.to_string()));
    m.push(Str::from_static("state"), Value::from(i.state.clone()));
    m.push(Str::from_static("change"), Value::from(change));
    m.push(Str::from_static("addresses"), list(&i.addresses));
    if let Some(o) = old {
        m.push(Str::from_static("previous_state"), Value::from(o.state.clone()));
        m.push(Str::from_static("previous_addresses"), list(&o.addresses));
    }
    m
}

fn read() -> BTreeMap<String, Interface> {
    let mut out = BTreeMap::new();
    if let Ok(dir) = std::fs::read_dir("/sys/class/net") {
        for entry in dir.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let state = std::fs::read_to_string(entry.path().join("operstate"))
                .unwrap_or_default()
                .trim()
                .to_string();
            out.insert(name, Interface { state, addresses: BTreeSet::new() });
        }
    }
    for (name, addr) in addresses() {
        if let Some(i) = out.get_mut(&name) {
            i.addresses.insert(addr);
        }
    }
    out
}

/// Every interface address, as `name` and `address/prefix`.
fn addresses() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return out;
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: a node of the list getifaddrs returned, alive until freeifaddrs.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: a NUL-terminated name, and addresses of the family they say.
        let name = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) }.to_string_lossy().into_owned();
        let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
        let addr = match family {
            libc::AF_INET => {
                let a = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                let prefix = if ifa.ifa_netmask.is_null() {
                    32
                } else {
                    let m = unsafe { &*(ifa.ifa_netmask as *const libc::sockaddr_in) };
                    u32::from_be(m.sin_addr.s_addr).count_ones()
                };
                format!("{}/{prefix}", std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)))
            }
            libc::AF_INET6 => {
                let a = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                let prefix = if ifa.ifa_netmask.is_null() {
                    128
                } else {
                    let m = unsafe { &*(ifa.ifa_netmask as *const libc::sockaddr_in6) };
                    m.sin6_addr.s6_addr.iter().map(|b| b.count_ones()).sum()
                };
                format!("{}/{prefix}", std::net::Ipv6Addr::from(a.sin6_addr.s6_addr))
            }
            _ => continue,
        };
        out.push((name, addr));
    }
    // SAFETY: the list from getifaddrs, freed once.
    unsafe { libc::freeifaddrs(head) };
    out
}
