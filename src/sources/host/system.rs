//! The figures read through `sysinfo`: memory and swap, load and uptime.
//! One `System` lives as long as the source and each tick refreshes only
//! what the configured groups need.

use sysinfo::{MemoryRefreshKind, System};

use super::Group;
use super::proc::round;
use crate::config::BuildError;
use crate::event::{Map, Str, Value};

pub struct Figures {
    /// Boxed: sysinfo's tables are large beside the other sources.
    system: Box<System>,
    memory: bool,
}

impl Figures {
    pub fn new(groups: &[Group]) -> Result<Self, BuildError> {
        Ok(Figures {
            system: Box::new(
                System::new()
                    .map_err(|e| BuildError::new(format!("cannot read the machine's figures: {e}")))?,
            ),
            memory: groups.contains(&Group::Memory),
        })
    }

    /// Reads the figures again.
    pub fn refresh(&mut self) {
        if self.memory {
            self.system.refresh_memory_specifics(MemoryRefreshKind::nothing().with_ram().with_swap());
        }
    }

    /// Memory and swap, in bytes; `used` is what is not available.
    pub fn memory(&self) -> (Value, Value) {
        let s = &self.system;
        (usage(s.total_memory(), s.available_memory()), usage(s.total_swap(), s.free_swap()))
    }
}

/// The load averages over 1, 5 and 15 minutes (none when the kernel does
/// not say).
pub fn load() -> Value {
    let mut m = Map::with_capacity(3);
    if let Ok(l) = System::load_average() {
        for (name, v) in [("1m", l.one), ("5m", l.five), ("15m", l.fifteen)] {
            m.push(Str::from_static(name), Value::Float(v));
        }
    }
    Value::Object(m)
}

/// Seconds since boot and the boot time (Unix seconds); 0 when unknown.
pub fn uptime() -> (u64, u64) {
    (System::uptime().unwrap_or(0), System::boot_time().unwrap_or(0))
}

fn usage(total: u64, available: u64) -> Value {
    let used = total.saturating_sub(available);
    let mut m = Map::with_capacity(4);
    m.push(Str::from_static("total"), Value::from(total));
    m.push(Str::from_static("used"), Value::from(used));
    m.push(Str::from_static("available"), Value::from(available));
    let pct = if total == 0 { 0.0 } else { round(100.0 * used as f64 / total as f64) };
    m.push(Str::from_static("used_percent"), Value::Float(pct));
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refreshes_only_what_the_groups_need() {
        let mut f = Figures::new(&[Group::Load]).unwrap();
        f.refresh();
        assert_eq!(f.system.total_memory(), 0, "no memory without the memory group");

        let mut f = Figures::new(&[Group::Memory]).unwrap();
        f.refresh();
        let (memory, _) = f.memory();
        let total = memory.as_object().and_then(|m| m.get("total")).cloned();
        assert!(total.is_some_and(|t| t != Value::from(0u64)), "{memory:?}");
        assert!(f.system.processes().is_empty(), "no process table");
    }
}
