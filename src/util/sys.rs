//! Figures of the system that more than one source reads: the kernel's
//! clock tick (the unit of CPU times in `/proc`) and the user names of uids.

use std::collections::HashMap;

/// Clock ticks per second, the unit of CPU times in `/proc`.
pub fn clock_ticks() -> f64 {
    // SAFETY: sysconf only reads a system constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// User names by uid, from /etc/passwd.
pub fn read_users() -> HashMap<u32, String> {
    std::fs::read_to_string("/etc/passwd")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let uid = f.nth(1)?.parse().ok()?;
            Some((uid, name.to_string()))
        })
        .collect()
}
