//! Which CPUs the load generator and the servers run on.
//!
//! Owns: reading this process's CPU set, splitting it (first CPU for the load side,
//! the rest for the server side) and applying a set with `sched_setaffinity`. Must not:
//! allocate inside [`CpuSet::apply`], which runs between `fork` and `exec`.

use std::io;

/// A set of CPUs, ready to apply.
#[derive(Clone, Copy)]
pub struct CpuSet {
    set: libc::cpu_set_t,
}

impl CpuSet {
    pub fn from_cpus(cpus: &[usize]) -> CpuSet {
        // SAFETY: cpu_set_t is plain data; CPU_ZERO/CPU_SET only touch it.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        unsafe { libc::CPU_ZERO(&mut set) };
        for &cpu in cpus {
            unsafe { libc::CPU_SET(cpu, &mut set) };
        }
        CpuSet { set }
    }

    /// Pin the calling process (or the child between fork and exec) to this set.
    pub fn apply(&self) -> io::Result<()> {
        // SAFETY: pid 0 is the calling thread; the set is a valid cpu_set_t.
        let rc = unsafe {
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &self.set)
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

/// The CPU layout of a run.
#[derive(Clone)]
pub struct Layout {
    /// Load generator, strace and the harness itself. `None`: not pinned.
    pub load: Option<CpuSet>,
    /// Every server. `None`: not pinned.
    pub server: Option<CpuSet>,
    /// How the split reads in a report, e.g. "load on CPU 0, servers on CPU 1".
    pub describe: String,
    /// CPUs a server may use.
    pub server_cpus: usize,
}

/// Split the CPUs this process may use: the first for the load side, the others for the
/// servers. With one CPU nothing is pinned.
pub fn layout() -> Layout {
    let cpus = allowed_cpus();
    if cpus.len() < 2 {
        return Layout {
            load: None,
            server: None,
            describe: "not pinned (fewer than 2 CPUs)".to_string(),
            server_cpus: cpus.len().max(1),
        };
    }
    let describe = format!(
        "load generator on CPU {}, servers on CPU {}",
        cpus[0],
        cpus[1..]
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    Layout {
        load: Some(CpuSet::from_cpus(&cpus[..1])),
        server: Some(CpuSet::from_cpus(&cpus[1..])),
        describe,
        server_cpus: cpus.len() - 1,
    }
}

/// The CPUs this process may run on.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: sched_getaffinity fills the zeroed set we pass.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return vec![0];
    }
    (0..libc::CPU_SETSIZE as usize)
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect()
}
