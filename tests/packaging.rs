//! The agent as a systemd service: the notification protocol spoken to a
//! real socket, `run --dry-run`, packaging/install.sh in a scratch root, and
//! the configuration reference that is generated from the code.

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, free_port};

/// A socket standing in for systemd's notification socket.
struct Systemd {
    socket: UnixDatagram,
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Systemd {
    fn listen() -> Systemd {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).unwrap();
        Systemd { socket, path, _dir: dir }
    }

    /// The next message, or `None` after `within`.
    fn next(&self, within: Duration) -> Option<String> {
        self.socket.set_read_timeout(Some(within)).unwrap();
        let mut buf = [0u8; 4096];
        match self.socket.recv(&mut buf) {
            Ok(n) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                None
            }
            Err(e) => panic!("recv: {e}"),
        }
    }

    /// Waits for a message that starts with `want`; returns it and the
    /// messages before it.
    fn expect(&self, want: &str, within: Duration) -> (String, Vec<String>) {
        let deadline = Instant::now() + within;
        let mut before = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.next(left) {
                Some(m) if m.starts_with(want) => return (m, before),
                Some(m) => before.push(m),
                None => break,
            }
        }
        panic!("no {want} within {within:?}; got {before:?}");
    }
}

fn write_config(dir: &Path) -> PathBuf {
    let config = format!(
        "data_dir: {}\nsources:\n  gen:\n    type: generator\n    rate: 10\nsinks:\n  out:\n    type: file\n    inputs: [gen]\n    path: {}\n",
        dir.join("data").display(),
        dir.join("out.ndjson").display()
    );
    let path = dir.join("agent.yaml");
    std::fs::write(&path, config).unwrap();
    path
}

fn start(config: &Path, systemd: &Systemd, watchdog_pid: Option<u32>) -> std::process::Child {
    let mut cmd = Command::new(BIN);
    cmd.args(["run", "--config"])
        .arg(config)
        .env("NOTIFY_SOCKET", &systemd.path)
        // A 400 ms watchdog: a ping every 200 ms.
        .env("WATCHDOG_USEC", "400000")
        .env_remove("WATCHDOG_PID")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(pid) = watchdog_pid {
        cmd.env("WATCHDOG_PID", pid.to_string());
    }
    cmd.spawn().unwrap()
}

fn signal(child: &std::process::Child, signal: &str) {
    let ok = Command::new("kill").args(["-s", signal, &child.id().to_string()]).status().unwrap();
    assert!(ok.success());
}

/// READY=1 once the pipeline runs, WATCHDOG=1 at half the watchdog timeout,
/// RELOADING=1 then READY=1 around a SIGHUP, STOPPING=1 on SIGTERM.
#[test]
fn systemd_hears_ready_watchdog_reloading_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let systemd = Systemd::listen();
    let mut agent = start(&config, &systemd, None);

    let (_, before) = systemd.expect("READY=1", Duration::from_secs(30));
    assert!(before.is_empty(), "messages before READY=1: {before:?}");

    // Pings keep coming while it runs: 5 of them take about a second.
    let started = Instant::now();
    for _ in 0..5 {
        let (_, other) = systemd.expect("WATCHDOG=1", Duration::from_secs(5));
        assert!(other.is_empty(), "{other:?}");
    }
    assert!(started.elapsed() >= Duration::from_millis(600), "pings come too fast: {:?}", started.elapsed());

    signal(&agent, "HUP");
    let (reloading, _) = systemd.expect("RELOADING=1", Duration::from_secs(10));
    assert!(reloading.contains("\nMONOTONIC_USEC="), "{reloading:?}");
    systemd.expect("READY=1", Duration::from_secs(30));
    systemd.expect("WATCHDOG=1", Duration::from_secs(5));

    signal(&agent, "TERM");
    systemd.expect("STOPPING=1", Duration::from_secs(10));
    let status = agent.wait().unwrap();
    assert!(status.success(), "{status}");
}

/// `WATCHDOG_PID` naming another process: the watchdog is not ours to ping.
#[test]
fn no_watchdog_pings_for_another_process() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let systemd = Systemd::listen();
    let mut agent = start(&config, &systemd, Some(1));
    systemd.expect("READY=1", Duration::from_secs(30));
    // Three ping intervals without a ping.
    assert_eq!(systemd.next(Duration::from_millis(600)), None);
    signal(&agent, "TERM");
    systemd.expect("STOPPING=1", Duration::from_secs(10));
    assert!(agent.wait().unwrap().success());
}

/// `run --dry-run` builds the pipeline, asks each sink and exits: 0 when all
/// answer, 69 naming the one that does not, 78 for a bad config; it runs
/// nothing (the file sink's file is not made).
#[test]
fn dry_run_checks_the_sinks_and_exits() {
    let dir = tempfile::tempdir().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let up = listener.local_addr().unwrap().port();
    let down = free_port();
    let out_file = dir.path().join("out.ndjson");
    let config = |port: u16| {
        format!(
            "data_dir: {}\nsources:\n  gen:\n    type: generator\nsinks:\n  local:\n    type: file\n    inputs: [gen]\n    path: {}\n  collector:\n    type: http\n    inputs: [gen]\n    url: http://127.0.0.1:{port}/events\n",
            dir.path().join("data").display(),
            out_file.display()
        )
    };
    let path = dir.path().join("agent.yaml");
    let dry_run = |text: String| {
        std::fs::write(&path, text).unwrap();
        let out = Command::new(BIN).args(["run", "--dry-run", "--config"]).arg(&path).output().unwrap();
        let text =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.code(), text)
    };

    let (code, text) = dry_run(config(up));
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("sinks.collector: reachable"), "{text}");
    assert!(text.contains("sinks.local: reachable"), "{text}");

    let (code, text) = dry_run(config(down));
    assert_eq!(code, Some(69), "{text}");
    assert!(text.contains("sinks.collector: not reachable"), "{text}");

    let (code, text) = dry_run(config(up).replace("type: http", "type: htp"));
    assert_eq!(code, Some(78), "{text}");

    assert!(!out_file.exists(), "a dry run wrote events");
    drop(listener);
}

// === packaging/install.sh ===

/// Every path under `root` with what it is (file contents' length and mode,
/// link targets), sorted.
fn tree(root: &Path) -> Vec<String> {
    use std::os::unix::fs::MetadataExt as _;
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            if m.file_type().is_symlink() {
                out.push(format!("{rel} -> {}", std::fs::read_link(&p).unwrap().display()));
            } else if m.is_dir() {
                out.push(format!("{rel}/ {:o} {}:{}", m.mode() & 0o7777, m.uid(), m.gid()));
                stack.push(p);
            } else {
                out.push(format!("{rel} {:o} {}:{} {} bytes", m.mode() & 0o7777, m.uid(), m.gid(), m.len()));
            }
        }
    }
    out.sort();
    out
}

fn install_sh(root: &Path, args: &[&str]) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/install.sh");
    let out = Command::new(&script).arg("--destdir").arg(root).args(args).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "install.sh {args:?}: {}\n{text}", out.status);
    text
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// install.sh into a scratch root twice (the second run changes nothing),
/// then --uninstall: the root is as it was. The root starts like a real
/// one: its user database (root, adm) and the directories a system has.
#[test]
fn install_sh_installs_twice_and_uninstalls_without_leftovers() {
    if !is_root() {
        eprintln!("skipped: install.sh makes a user and sets owners, which needs root");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    // (systemctl makes multi-user.target.wants/ on enable and removes it,
    // empty, on disable.)
    for d in ["etc/systemd/system", "etc/tmpfiles.d", "usr/bin", "usr/share/doc", "var/lib"] {
        std::fs::create_dir_all(r.join(d)).unwrap();
    }
    let db = [
        ("passwd", "root:x:0:0:root:/root:/bin/sh\n"),
        ("group", "root:x:0:\nadm:x:4:\n"),
        ("shadow", "root:*:19000:0:99999:7:::\n"),
        ("gshadow", "root:*::\nadm:*::\n"),
    ];
    for (name, text) in db {
        std::fs::write(r.join("etc").join(name), text).unwrap();
        // What useradd leaves as backups; a real system has them.
        std::fs::write(r.join("etc").join(format!("{name}-")), text).unwrap();
    }
    let before = tree(r);

    let binary = ["--prefix", "/usr", "--binary", BIN];
    install_sh(r, &binary);
    let installed = tree(r);
    let second = install_sh(r, &binary);
    assert!(second.contains("kept /etc/hostwatch/agent.yaml"), "{second}");
    // The second run is an upgrade in place: nothing new, nothing changed
    // (the backups of the user database aside).
    let without_backups =
        |t: &[String]| -> Vec<String> { t.iter().filter(|l| !l.contains("- ")).cloned().collect() };
    assert_eq!(without_backups(&tree(r)), without_backups(&installed));

    let read = |p: &str| std::fs::read_to_string(r.join(p)).unwrap();
    let passwd = read("etc/passwd");
    let user = passwd.lines().find(|l| l.starts_with("hostwatch:")).expect("the hostwatch user");
    let fields: Vec<&str> = user.split(':').collect();
    assert_eq!(fields[5], "/var/lib/hostwatch", "{user}");
    assert!(fields[6].ends_with("nologin"), "{user}");
    let (uid, gid) = (fields[2], fields[3]);
    assert!(read("etc/group").lines().any(|l| l.starts_with("adm:") && l.ends_with(":hostwatch")), "adm");
    for want in [
        "usr/bin/hostwatch 755 0:0".to_string(),
        "etc/systemd/system/hostwatch.service 644 0:0".to_string(),
        "etc/systemd/system/multi-user.target.wants/hostwatch.service -> /etc/systemd/system/hostwatch.service"
            .to_string(),
        "etc/tmpfiles.d/hostwatch.conf 644 0:0".to_string(),
        format!("etc/hostwatch/ 750 0:{gid}"),
        format!("etc/hostwatch/agent.yaml 640 0:{gid}"),
        format!("var/lib/hostwatch/ 750 {uid}:{gid}"),
    ] {
        assert!(installed.iter().any(|l| l.starts_with(&want)), "no {want} in\n{}", installed.join("\n"));
    }
    let unit = read("etc/systemd/system/hostwatch.service");
    assert!(unit.contains("ExecStart=/usr/bin/hostwatch run --config /etc/hostwatch/agent.yaml"), "{unit}");
    assert_eq!(
        read("etc/hostwatch/agent.yaml"),
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/agent.yaml")).unwrap()
    );
    // The installed binary and config work together.
    let out = Command::new(r.join("usr/bin/hostwatch")).arg("--version").output().unwrap();
    assert!(out.status.success());

    install_sh(r, &["--uninstall"]);
    assert_eq!(without_backups(&tree(r)), without_backups(&before));
    for (name, text) in db {
        assert_eq!(read(&format!("etc/{name}")), text, "etc/{name}");
    }
}

/// An operator's config and the agent's state survive --uninstall; --purge
/// takes them.
#[test]
fn install_sh_uninstall_keeps_a_changed_config_and_purge_does_not() {
    if !is_root() {
        eprintln!("skipped: install.sh needs root");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    std::fs::create_dir_all(r.join("etc")).unwrap();
    std::fs::write(r.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::write(r.join("etc/group"), "root:x:0:\nadm:x:4:\n").unwrap();
    std::fs::write(r.join("etc/shadow"), "root:*:19000:0:99999:7:::\n").unwrap();
    std::fs::write(r.join("etc/gshadow"), "root:*::\nadm:*::\n").unwrap();
    install_sh(r, &["--binary", BIN]);
    assert!(r.join("usr/local/bin/hostwatch").exists());
    std::fs::write(r.join("etc/hostwatch/agent.yaml"), "# mine\n").unwrap();
    std::fs::write(r.join("var/lib/hostwatch/checkpoint"), "x").unwrap();
    let out = install_sh(r, &["--uninstall"]);
    assert!(out.contains("kept /etc/hostwatch/agent.yaml"), "{out}");
    assert_eq!(std::fs::read_to_string(r.join("etc/hostwatch/agent.yaml")).unwrap(), "# mine\n");
    assert!(r.join("var/lib/hostwatch/checkpoint").exists());
    assert!(!r.join("usr/local/bin/hostwatch").exists());
    install_sh(r, &["--uninstall", "--purge"]);
    assert!(!r.join("etc/hostwatch").exists());
    assert!(!r.join("var/lib/hostwatch").exists());
}

// === the configuration reference ===

/// docs/reference.md is what `hostwatch reference` makes from the code.
#[test]
fn the_committed_reference_is_up_to_date() {
    let out = Command::new(BIN).arg("reference").output().unwrap();
    assert!(out.status.success());
    let generated = String::from_utf8(out.stdout).unwrap();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/reference.md");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if generated != committed {
        let line = generated.lines().zip(committed.lines()).position(|(a, b)| a != b);
        let line = line.unwrap_or_else(|| generated.lines().count().min(committed.lines().count()));
        panic!(
            "docs/reference.md is out of date (first difference at line {}); regenerate it with\n\n    cargo run -q -- reference > docs/reference.md\n",
            line + 1
        );
    }
}

/// Every component type has its section, and every option says what it
/// is for and what its default is.
#[test]
fn the_reference_documents_every_type_and_option() {
    let out = Command::new(BIN).arg("reference").output().unwrap();
    let reference = String::from_utf8(out.stdout).unwrap();
    let list = Command::new(BIN).arg("example").output().unwrap();
    let list = String::from_utf8(list.stdout).unwrap();
    for line in list.lines().skip(1) {
        let mut words = line.split_whitespace();
        let kind = words.next().unwrap();
        for ty in words.map(|w| w.trim_end_matches(',')) {
            assert!(reference.contains(&format!("### {kind}: `{ty}`")), "no section for {kind} `{ty}`");
        }
    }
    let missing: Vec<&str> = reference
        .lines()
        .filter(|l| {
            ["**undocumented**", "not documented**", "**type not found:**"].iter().any(|m| l.contains(m))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "options without their documentation or default (a `///` doc with `Default: ...`), or of a type\n\
         the schema does not describe:\n{}",
        missing.join("\n")
    );
}
