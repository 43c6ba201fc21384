//! The figures read from `/proc` and `statvfs` by hand: CPU time split by
//! kind (user, system, iowait, steal), whole-disk operation counts, free
//! blocks and inodes of filesystems and dropped packets of network
//! interfaces, which `sysinfo` does not give; and the process counts and
//! top processes, where `sysinfo` reads three files of every process each
//! interval (`status`, `stat`, `statm`) and one `stat` is enough here.

use std::collections::HashMap;
use std::time::Instant;

use globset::{Glob, GlobSet, GlobSetBuilder};

use super::system::{self, Figures};
use super::{Group, MountsConfig};
use crate::config::BuildError;
use crate::event::{Map, Str, Value};
use crate::util::sys::clock_ticks;

/// Filesystems that are not disks.
const PSEUDO: &[&str] = &[
    "proc",
    "sysfs",
    "tmpfs",
    "devtmpfs",
    "devpts",
    "cgroup",
    "cgroup2",
    "overlay",
    "squashfs",
    "mqueue",
    "debugfs",
    "tracefs",
    "securityfs",
    "pstore",
    "bpf",
    "autofs",
    "hugetlbfs",
    "configfs",
    "fusectl",
    "binfmt_misc",
    "nsfs",
    "ramfs",
    "rpc_pipefs",
    "efivarfs",
    "selinuxfs",
    "fuse.lxcfs",
    "fuse.gvfsd-fuse",
];

pub struct MountFilter {
    include: Option<GlobSet>,
    exclude: GlobSet,
}

impl MountFilter {
    pub fn new(c: &MountsConfig) -> Result<Self, BuildError> {
        let set = |globs: &[String]| -> Result<GlobSet, BuildError> {
            let mut b = GlobSetBuilder::new();
            for g in globs {
                b.add(Glob::new(g).map_err(|e| BuildError::new(format!("`mounts`: {e}")))?);
            }
            b.build().map_err(|e| BuildError::new(format!("`mounts`: {e}")))
        };
        Ok(MountFilter {
            include: if c.include.is_empty() { None } else { Some(set(&c.include)?) },
            exclude: set(&c.exclude)?,
        })
    }

    fn wants(&self, mount: &str, fstype: &str) -> bool {
        if self.exclude.is_match(mount) {
            return false;
        }
        match &self.include {
            Some(include) => include.is_match(mount),
            None => !PSEUDO.contains(&fstype),
        }
    }
}

/// Raw counters at one moment.
pub struct Sample {
    taken: Instant,
    /// `cpu`, `cpu0`...: user, nice, system, idle, iowait, irq, softirq, steal.
    cpu: Vec<(String, [u64; 8])>,
    /// Device: reads, sectors read, writes, sectors written.
    disks: Vec<(String, [u64; 4])>,
    /// Interface: rx bytes, packets, errors, drops; tx the same.
    net: Vec<(String, [u64; 8])>,
    /// Pid: start time, CPU ticks, resident pages, name (for top_processes).
    procs: HashMap<u32, (u64, u64, u64, String)>,
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn numbers<const N: usize>(fields: &[&str], at: &[usize]) -> [u64; N] {
    let mut out = [0u64; N];
    for (o, i) in out.iter_mut().zip(at) {
        *o = fields.get(*i).and_then(|f| f.parse().ok()).unwrap_or(0);
    }
    out
}

impl Sample {
    pub fn read(groups: &[Group], top: usize) -> Sample {
        let mut s = Sample {
            taken: Instant::now(),
            cpu: Vec::new(),
            disks: Vec::new(),
            net: Vec::new(),
            procs: HashMap::new(),
        };
        if top > 0 {
            s.procs = process_usage();
        }
        if groups.contains(&Group::Cpu) {
            for line in read("/proc/stat").lines().filter(|l| l.starts_with("cpu")) {
                let f: Vec<&str> = line.split_whitespace().collect();
                s.cpu.push((f[0].to_string(), numbers(&f, &[1, 2, 3, 4, 5, 6, 7, 8])));
            }
        }
        if groups.contains(&Group::Disk) {
            for line in read("/proc/diskstats").lines() {
                let f: Vec<&str> = line.split_whitespace().collect();
                let Some(name) = f.get(2) else { continue };
                // Whole devices only (they have /sys/block/<name>), not
                // partitions, loop or RAM devices.
                if name.starts_with("loop")
                    || name.starts_with("ram")
                    || !std::path::Path::new(&format!("/sys/block/{name}")).exists()
                {
                    continue;
                }
                s.disks.push((name.to_string(), numbers(&f, &[3, 5, 7, 9])));
            }
        }
        if groups.contains(&Group::Network) {
            for line in read("/proc/net/dev").lines().skip(2) {
                let Some((name, rest)) = line.split_once(':') else { continue };
                let f: Vec<&str> = rest.split_whitespace().collect();
                s.net.push((name.trim().to_string(), numbers(&f, &[0, 1, 2, 3, 8, 9, 10, 11])));
            }
        }
        s
    }

    /// The `host.metrics` data: figures now, rates since `prev`.
    pub fn metrics(
        &self,
        prev: &Sample,
        figures: &Figures,
        groups: &[Group],
        mounts: &MountFilter,
        top: usize,
    ) -> Map {
        let seconds = self.taken.duration_since(prev.taken).as_secs_f64().max(1e-3);
        let mut m = Map::with_capacity(groups.len() + 1);
        if top > 0 {
            m.push(Str::from_static("top_processes"), self.top(prev, seconds, top));
        }
        let k = Str::from_static;
        for g in groups {
            match g {
                Group::Cpu => m.push(k("cpu"), self.cpu(prev)),
                Group::Load => m.push(k("load"), system::load()),
                Group::Memory => {
                    let (mem, swap) = figures.memory();
                    m.push(k("memory"), mem);
                    m.push(k("swap"), swap);
                }
                Group::Filesystem => m.push(k("filesystem"), filesystems(mounts)),
                Group::Disk => m.push(k("disk"), rates(&self.disks, &prev.disks, seconds, DISK_NAMES, 512)),
                Group::Network => m.push(k("network"), rates(&self.net, &prev.net, seconds, NET_NAMES, 1)),
                Group::Processes => m.push(k("processes"), processes()),
                Group::Uptime => {
                    let (up, boot) = system::uptime();
                    m.push(k("uptime_seconds"), Value::from(up));
                    m.push(k("boot_time"), Value::from(boot));
                }
            }
        }
        m
    }

    fn cpu(&self, prev: &Sample) -> Value {
        const NAMES: [&str; 5] = ["user", "system", "iowait", "steal", "idle"];
        let before: HashMap<&str, &[u64; 8]> = prev.cpu.iter().map(|(n, v)| (n.as_str(), v)).collect();
        let mut out = Map::with_capacity(2);
        let mut cores = Vec::new();
        for (name, now) in &self.cpu {
            let Some(then) = before.get(name.as_str()) else { continue };
            let d: Vec<f64> = now.iter().zip(then.iter()).map(|(a, b)| a.saturating_sub(*b) as f64).collect();
            let total: f64 = d.iter().sum::<f64>().max(1.0);
            // user + nice; system + irq + softirq.
            let parts = [d[0] + d[1], d[2] + d[5] + d[6], d[4], d[7], d[3]];
            let mut core = Map::with_capacity(6);
            for (n, v) in NAMES.iter().zip(parts) {
                core.push(Str::from_static(n), Value::Float(round(100.0 * v / total)));
            }
            core.push(Str::from_static("used"), Value::Float(round(100.0 * (total - d[3] - d[4]) / total)));
            if name == "cpu" {
                out.push(Str::from_static("total"), Value::Object(core));
            } else {
                cores.push(Value::Object(core));
            }
        }
        out.push(Str::from_static("cores"), Value::Array(cores));
        Value::Object(out)
    }
}

impl Sample {
    /// The `top` processes by CPU (since the last sample) and by memory.
    fn top(&self, prev: &Sample, seconds: f64, top: usize) -> Value {
        let ticks = clock_ticks();
        let page = 4096u64;
        let mut rows: Vec<(u32, f64, u64, &str)> = self
            .procs
            .iter()
            .map(|(pid, (start, cpu, rss, name))| {
                let before = prev.procs.get(pid).filter(|p| p.0 == *start).map_or(*cpu, |p| p.1);
                let pct = 100.0 * cpu.saturating_sub(before) as f64 / ticks / seconds;
                (*pid, pct, rss * page, name.as_str())
            })
            .collect();
        let row = |r: &(u32, f64, u64, &str)| {
            let mut m = Map::with_capacity(4);
            m.push(Str::from_static("pid"), Value::from(u64::from(r.0)));
            m.push(Str::from_static("name"), Value::from(r.3.to_string()));
            m.push(Str::from_static("cpu_percent"), Value::Float(round(r.1)));
            m.push(Str::from_static("rss_bytes"), Value::from(r.2));
            Value::Object(m)
        };
        rows.sort_by(|a, b| b.1.total_cmp(&a.1).then(b.2.cmp(&a.2)));
        let by_cpu = Value::Array(rows.iter().take(top).map(row).collect());
        rows.sort_by_key(|r| std::cmp::Reverse(r.2));
        let by_memory = Value::Array(rows.iter().take(top).map(row).collect());
        let mut m = Map::with_capacity(2);
        m.push(Str::from_static("by_cpu"), by_cpu);
        m.push(Str::from_static("by_memory"), by_memory);
        Value::Object(m)
    }
}

/// Start time, CPU ticks (user + system), resident pages and name of every process.
fn process_usage() -> HashMap<u32, (u64, u64, u64, String)> {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else { return out };
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(s) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        let (Some(open), Some(close)) = (s.find('('), s.rfind(')')) else { continue };
        let name = s[open + 1..close].to_string();
        let f: Vec<&str> = s[close + 1..].split_whitespace().collect();
        let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        // After the name: state(0) ... utime(11) stime(12) ... starttime(19) vsize(20) rss(21).
        out.insert(pid, (n(19), n(11) + n(12), n(21), name));
    }
    out
}

pub(super) fn round(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// Each reported mount point: size, used, free, %, inodes used %.
fn filesystems(filter: &MountFilter) -> Value {
    let mut out = Map::new();
    let mut seen = std::collections::HashSet::new();
    for line in read("/proc/self/mounts").lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(device), Some(mount), Some(fstype)) = (f.first(), f.get(1), f.get(2)) else { continue };
        // Octal escapes of spaces and the like in mount points.
        let mount = mount.replace("\\040", " ").replace("\\011", "\t");
        if !filter.wants(&mount, fstype) || !seen.insert(mount.clone()) {
            continue;
        }
        let Some(st) = statvfs(&mount) else { continue };
        let frsize = if st.f_frsize > 0 { st.f_frsize } else { st.f_bsize };
        let size = st.f_blocks * frsize;
        let free = st.f_bfree * frsize;
        let avail = st.f_bavail * frsize;
        let used = size.saturating_sub(free);
        // As df counts it: of what users may fill (used + available).
        let pct = if used + avail == 0 { 0.0 } else { round(100.0 * used as f64 / (used + avail) as f64) };
        let inodes_pct = if st.f_files == 0 {
            0.0
        } else {
            round(100.0 * (st.f_files - st.f_ffree) as f64 / st.f_files as f64)
        };
        let mut m = Map::with_capacity(8);
        m.push(Str::from_static("device"), Value::from(device.to_string()));
        m.push(Str::from_static("fstype"), Value::from(fstype.to_string()));
        m.push(Str::from_static("size"), Value::from(size));
        m.push(Str::from_static("used"), Value::from(used));
        m.push(Str::from_static("available"), Value::from(avail));
        m.push(Str::from_static("used_percent"), Value::Float(pct));
        m.push(Str::from_static("inodes_used_percent"), Value::Float(inodes_pct));
        out.push(Str::from(mount), Value::Object(m));
    }
    Value::Object(out)
}

fn statvfs(path: &str) -> Option<libc::statvfs> {
    let c = std::ffi::CString::new(path).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: a NUL-terminated path and a buffer of the right type, which
    // the call fills when it returns 0.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    // SAFETY: initialised by the successful call.
    (rc == 0).then(|| unsafe { st.assume_init() })
}

const DISK_NAMES: &[&str] =
    &["reads_per_second", "read_bytes_per_second", "writes_per_second", "write_bytes_per_second"];
const NET_NAMES: &[&str] = &[
    "rx_bytes_per_second",
    "rx_packets_per_second",
    "rx_errors_per_second",
    "rx_drops_per_second",
    "tx_bytes_per_second",
    "tx_packets_per_second",
    "tx_errors_per_second",
    "tx_drops_per_second",
];

/// Per-second rates of counters between two samples. Disk sector counts
/// (every odd counter) become bytes with `sector` (512); a counter that went
/// back (a device replaced) counts as 0.
fn rates<const N: usize>(
    now: &[(String, [u64; N])],
    prev: &[(String, [u64; N])],
    seconds: f64,
    names: &[&'static str],
    sector: u64,
) -> Value {
    let before: HashMap<&str, &[u64; N]> = prev.iter().map(|(n, v)| (n.as_str(), v)).collect();
    let mut out = Map::with_capacity(now.len());
    for (name, v) in now {
        let Some(then) = before.get(name.as_str()) else { continue };
        let mut m = Map::with_capacity(N);
        for (i, label) in names.iter().enumerate() {
            let scale = if sector > 1 && i % 2 == 1 { sector } else { 1 };
            let d = v[i].saturating_sub(then[i]) * scale;
            m.push(Str::from_static(label), Value::Float(round(d as f64 / seconds)));
        }
        out.push(Str::from(name.clone()), Value::Object(m));
    }
    Value::Object(out)
}

/// Process counts by state, from each /proc/<pid>/stat.
fn processes() -> Value {
    let (mut total, mut running, mut sleeping, mut zombie, mut blocked) = (0u64, 0u64, 0u64, 0u64, 0u64);
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let name = entry.file_name();
            if !name.to_str().is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit())) {
                continue;
            }
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
            let state = stat.rsplit(')').next().and_then(|r| r.split_whitespace().next()).unwrap_or("");
            total += 1;
            match state {
                "R" => running += 1,
                "S" | "I" => sleeping += 1,
                "D" => blocked += 1,
                "Z" => zombie += 1,
                _ => {}
            }
        }
    }
    let mut m = Map::with_capacity(5);
    for (k, v) in [
        ("total", total),
        ("running", running),
        ("sleeping", sleeping),
        ("blocked", blocked),
        ("zombie", zombie),
    ] {
        m.push(Str::from_static(k), Value::from(v));
    }
    Value::Object(m)
}
