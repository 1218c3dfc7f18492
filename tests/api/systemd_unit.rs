//! The shipped systemd unit lets the service start (SPEC §8): the real
//! binary runs under the unit's own `SystemCallFilter=` lines and serves a
//! signed IPN end to end.
//!
//! systemd does not run here, so the test builds an equivalent seccomp
//! filter itself (classic BPF via `prctl`, applied in the child's
//! `pre_exec`). **Approximation:** only the deny lists (`~@privileged
//! @resources …`) are reproduced, with the syscall lists of systemd's
//! groups (`systemd.exec(5)`, `systemd-analyze syscall-filter`) for
//! x86_64; the `@system-service` allow-list is not. A denied call fails
//! with the errno of `SystemCallErrorNumber=` when the unit sets one, and
//! kills the process when it does not, as systemd does.

use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};

use ipn_relay::config::Settings;
use serde_json::Value;

use crate::crash::{post_signed, serve_command, spawn_serve, write_config};

const UNIT: &str = include_str!("../../systemd/ipn-relay.service");

/// systemd's syscall groups, as far as the unit's deny lists need them.
fn group(name: &str) -> &'static [&'static str] {
    match name {
        "@resources" => &[
            "ioprio_set",
            "mbind",
            "migrate_pages",
            "move_pages",
            "nice",
            "sched_setaffinity",
            "sched_setattr",
            "sched_setparam",
            "sched_setscheduler",
            "set_mempolicy",
            "set_mempolicy_home_node",
            "setpriority",
            "setrlimit",
        ],
        "@privileged" => &[
            "@chown",
            "@clock",
            "@module",
            "@raw-io",
            "@reboot",
            "@swap",
            "_sysctl",
            "acct",
            "bpf",
            "capset",
            "chroot",
            "fanotify_init",
            "fanotify_mark",
            "nfsservctl",
            "open_by_handle_at",
            "pivot_root",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "setfsuid",
            "setfsuid32",
            "setgroups",
            "setgroups32",
            "sethostname",
            "setresuid",
            "setresuid32",
            "setreuid",
            "setreuid32",
            "setuid",
            "setuid32",
            "vhangup",
        ],
        "@chown" => &[
            "chown", "chown32", "fchown", "fchown32", "fchownat", "lchown", "lchown32",
        ],
        "@clock" => &[
            "adjtimex",
            "clock_adjtime",
            "clock_adjtime64",
            "clock_settime",
            "clock_settime64",
            "settimeofday",
        ],
        "@module" => &["delete_module", "finit_module", "init_module"],
        "@raw-io" => &[
            "ioperm",
            "iopl",
            "pciconfig_iobase",
            "pciconfig_read",
            "pciconfig_write",
            "s390_pci_mmio_read",
            "s390_pci_mmio_write",
        ],
        "@reboot" => &["kexec_file_load", "kexec_load", "reboot"],
        "@swap" => &["swapoff", "swapon"],
        g => panic!("syscall group {g} is not reproduced by this test: add it"),
    }
}

/// The x86_64 number of a syscall named in [`group`]; None if it does not
/// exist on x86_64 (32-bit and s390 variants).
fn nr(name: &str) -> Option<libc::c_long> {
    use libc::*;
    Some(match name {
        "ioprio_set" => SYS_ioprio_set,
        "mbind" => SYS_mbind,
        "migrate_pages" => SYS_migrate_pages,
        "move_pages" => SYS_move_pages,
        "sched_setaffinity" => SYS_sched_setaffinity,
        "sched_setattr" => SYS_sched_setattr,
        "sched_setparam" => SYS_sched_setparam,
        "sched_setscheduler" => SYS_sched_setscheduler,
        "set_mempolicy" => SYS_set_mempolicy,
        "set_mempolicy_home_node" => SYS_set_mempolicy_home_node,
        "setpriority" => SYS_setpriority,
        "setrlimit" => SYS_setrlimit,
        "_sysctl" => SYS__sysctl,
        "acct" => SYS_acct,
        "bpf" => SYS_bpf,
        "capset" => SYS_capset,
        "chroot" => SYS_chroot,
        "fanotify_init" => SYS_fanotify_init,
        "fanotify_mark" => SYS_fanotify_mark,
        "nfsservctl" => SYS_nfsservctl,
        "open_by_handle_at" => SYS_open_by_handle_at,
        "pivot_root" => SYS_pivot_root,
        "quotactl" => SYS_quotactl,
        "quotactl_fd" => SYS_quotactl_fd,
        "setdomainname" => SYS_setdomainname,
        "setfsuid" => SYS_setfsuid,
        "setgroups" => SYS_setgroups,
        "sethostname" => SYS_sethostname,
        "setresuid" => SYS_setresuid,
        "setreuid" => SYS_setreuid,
        "setuid" => SYS_setuid,
        "vhangup" => SYS_vhangup,
        "chown" => SYS_chown,
        "fchown" => SYS_fchown,
        "fchownat" => SYS_fchownat,
        "lchown" => SYS_lchown,
        "adjtimex" => SYS_adjtimex,
        "clock_adjtime" => SYS_clock_adjtime,
        "clock_settime" => SYS_clock_settime,
        "settimeofday" => SYS_settimeofday,
        "delete_module" => SYS_delete_module,
        "finit_module" => SYS_finit_module,
        "init_module" => SYS_init_module,
        "ioperm" => SYS_ioperm,
        "iopl" => SYS_iopl,
        "kexec_file_load" => SYS_kexec_file_load,
        "kexec_load" => SYS_kexec_load,
        "reboot" => SYS_reboot,
        "swapoff" => SYS_swapoff,
        "swapon" => SYS_swapon,
        "nice"
        | "setfsuid32"
        | "setgroups32"
        | "setresuid32"
        | "setreuid32"
        | "setuid32"
        | "chown32"
        | "fchown32"
        | "lchown32"
        | "clock_adjtime64"
        | "clock_settime64"
        | "pciconfig_iobase"
        | "pciconfig_read"
        | "pciconfig_write"
        | "s390_pci_mmio_read"
        | "s390_pci_mmio_write" => return None,
        n => panic!("no x86_64 number for {n}: add it"),
    })
}

fn expand(name: &str, out: &mut Vec<libc::c_long>) {
    if name.starts_with('@') {
        for n in group(name) {
            expand(n, out);
        }
    } else if let Some(n) = nr(name) {
        out.push(n);
    }
}

/// The unit's denied syscalls and the seccomp action systemd takes on them.
fn unit_filter(unit: &str) -> (Vec<libc::c_long>, u32) {
    let mut denied = Vec::new();
    let mut action = libc::SECCOMP_RET_KILL_PROCESS;
    for line in unit.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("SystemCallFilter=") {
            // An allow-list (`@system-service`) is not reproduced, see above.
            if let Some(deny) = v.strip_prefix('~') {
                for name in deny.split_whitespace() {
                    expand(name, &mut denied);
                }
            }
        } else if let Some(v) = line.strip_prefix("SystemCallErrorNumber=") {
            let errno = match v.trim() {
                "EPERM" => libc::EPERM,
                "EACCES" => libc::EACCES,
                "ENOSYS" => libc::ENOSYS,
                e => panic!("errno {e} is not reproduced by this test: add it"),
            };
            action = libc::SECCOMP_RET_ERRNO | errno as u32;
        }
    }
    denied.sort_unstable();
    denied.dedup();
    (denied, action)
}

/// Classic BPF: foreign architecture → kill (`SystemCallArchitectures=native`),
/// a denied number → `action`, anything else allowed.
fn bpf(denied: &[libc::c_long], action: u32) -> Vec<libc::sock_filter> {
    const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
    let stmt = |code: u32, k: u32| libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let jeq = |k: u32, jt: u8, jf: u8| libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt,
        jf,
        k,
    };
    let load = |offset: u32| stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, offset);
    let ret = |k: u32| stmt(libc::BPF_RET | libc::BPF_K, k);
    // struct seccomp_data { int nr; __u32 arch; … }
    let mut prog = vec![
        load(4),
        jeq(AUDIT_ARCH_X86_64, 1, 0),
        ret(libc::SECCOMP_RET_KILL_PROCESS),
        load(0),
    ];
    for &n in denied {
        prog.push(jeq(n as u32, 0, 1));
        prog.push(ret(action));
    }
    prog.push(ret(libc::SECCOMP_RET_ALLOW));
    prog
}

#[cfg(target_arch = "x86_64")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_under_the_units_syscall_filter() {
    let (denied, action) = unit_filter(UNIT);
    assert!(
        denied.contains(&libc::SYS_setpriority),
        "the unit denies @resources"
    );
    let prog = bpf(&denied, action);

    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let settings = Settings::load(&config, &|_| None).unwrap();
    let mut cmd = serve_command(&config);
    // SAFETY: only prctl between fork and exec; `prog` was built before the
    // fork and is only read.
    unsafe {
        cmd.pre_exec(move || {
            let fprog = libc::sock_fprog {
                len: prog.len() as u16,
                filter: prog.as_ptr() as *mut libc::sock_filter,
            };
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(
                    libc::PR_SET_SECCOMP,
                    libc::SECCOMP_MODE_FILTER,
                    &fprog as *const libc::sock_fprog,
                ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let (mut child, port) = spawn_serve(cmd);
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();

    let body =
        serde_json::to_vec(&crate::helpers::generic("ev_unit", "pay_unit", "Succeed")).unwrap();
    let acked = post_signed(&client, &base, &settings, body).await;
    // The processor (which calls setpriority at start) must run too.
    let mut completed = false;
    if let Some(v) = &acked {
        let id = v["request_id"].as_str().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !completed && Instant::now() < deadline {
            let r = client
                .get(format!("{base}/v1/async/status/{id}"))
                .send()
                .await;
            if let Ok(r) = r {
                let v: Value = r.json().await.unwrap_or(Value::Null);
                completed = v["status"] == "completed";
            } else {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // On failure, say how the process ended (SIGSYS = killed by seccomp).
    let mut exited = child.try_wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    while exited.is_none() && !(acked.is_some() && completed) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        exited = child.try_wait().unwrap();
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        exited.is_none(),
        "the service died under the unit's SystemCallFilter: {exited:?} (signal {:?})",
        exited.and_then(|s| std::os::unix::process::ExitStatusExt::signal(&s))
    );
    assert!(acked.is_some(), "the signed IPN was not acknowledged");
    assert!(completed, "the acknowledged IPN was not processed");
}
