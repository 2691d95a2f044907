//! The kernel-backend test VM: Debian's kernel under `qemu-system-x86_64 -accel tcg -cpu max` (KVM does not
//! work on these machines), booting an initramfs this harness builds: busybox, runc, iproute2's `ip`, `wg`,
//! wireguard-go, `nft` and the hook under test, with the shared libraries they link, the kernel modules
//! WireGuard and the hook's nftables table need (resolved as modprobe would, in load order), a busybox rootfs
//! for containers, and `tests/vm/init.sh` as /init. The guest reports on its serial console; `boot` returns
//! what it said.
//!
//! The kernel comes from Debian's linux-image-amd64, downloaded and unpacked (not installed) by
//! `tests/vm/fetch-kernel.sh` into /var/cache/wg-oci-hook-vm/kernel (or $WG_OCI_HOOK_VM_KERNEL).
//! `WG_OCI_HOOK_VM_SERIAL=FILE` keeps a copy of the guest's console (failures print it anyway).
//! `WG_OCI_HOOK_VM_HOOK=FILE` puts that hook binary in the guest instead of the test build's (a release build,
//! for timings that mean something: a debug build spends most of its time in unoptimised code under TCG);
//! `WG_OCI_HOOK_VM_BASELINE=FILE` adds another build, timed beside it on the kernel backend (before and after a
//! change, under the same load).

use crate::lab::HOOK_BIN;
use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const DEFAULT_KERNEL_DIR: &str = "/var/cache/wg-oci-hook-vm/kernel";
/// The whole guest run, boot to poweroff. TCG boots in about 5 s; the scenarios take about 2 minutes on 2 cores.
const VM_TIMEOUT: Duration = Duration::from_secs(420);
/// What the guest loads, with what they need (`module_load_order`; a module built into the kernel is skipped).
/// The nftables ones are what the hook's table (`firewall::Rules::table`) needs: nf_tables itself (meta,
/// payload, cmp, sets: `iif`, `oif`, `icmpv6 type { .. }`, and the netdev family the guest script counts
/// with), `ct state` and `ct original`, `fib saddr type` in the inet family, the inet nat chain type and
/// `redirect` (port maps). Their dependencies bring nfnetlink, nf_defrag_ipv4/6, libcrc32c and, by
/// libcrc32c's soft dependency, crc32c_generic.
const MODULES: &[&str] = &[
    "wireguard",
    "veth",
    "tun",
    "nf_tables",
    "nf_conntrack",
    "nft_ct",
    "nft_fib",
    "nft_fib_ipv4",
    "nft_fib_ipv6",
    "nft_fib_inet",
    "nf_nat",
    "nft_chain_nat",
    "nft_redir",
];
/// Host binaries the guest needs besides busybox, found through this PATH.
const GUEST_TOOLS: &[(&str, &str)] = &[
    ("runc", "runc"),
    ("ip", "iproute2"),
    ("wg", "wireguard-tools"),
    ("wireguard-go", "wireguard-go"),
    // The guest script reads tables with it, and makes the one a late failure needs (the hook itself loads its
    // table over netlink, with no program).
    ("nft", "nftables"),
    // Which netns holds the kernel device's UDP socket.
    ("ss", "iproute2"),
    // Microseconds for the timings (busybox's date has no %N).
    ("date", "coreutils"),
];
const SEARCH_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub struct VmRun {
    /// The serial console, whole.
    pub log: String,
    /// RESULT lines: name -> (passed, detail).
    pub results: BTreeMap<String, (bool, String)>,
    /// TIMING lines: backend -> milliseconds.
    pub timings: BTreeMap<String, Vec<f64>>,
    pub elapsed: Duration,
}

/// Builds the initramfs and boots the VM once. An Err carries everything needed to see why.
pub fn boot() -> Result<VmRun, String> {
    let kernel_dir = PathBuf::from(
        std::env::var_os("WG_OCI_HOOK_VM_KERNEL").unwrap_or_else(|| DEFAULT_KERNEL_DIR.into()),
    );
    let (vmlinuz, modules_dir) = find_kernel(&kernel_dir)?;
    let qemu = which("qemu-system-x86_64")
        .ok_or("qemu-system-x86_64 not found: install the Debian package qemu-system-x86")?;
    let work = tempdir()?;
    let result = (|| {
        let initrd = build_initramfs(&work, &modules_dir)?;
        run_qemu(&qemu, &vmlinuz, &initrd, &work)
    })();
    let _ = fs::remove_dir_all(&work);
    result
}

fn find_kernel(dir: &Path) -> Result<(PathBuf, PathBuf), String> {
    let hint = "run tests/vm/fetch-kernel.sh (make test does) to download and unpack Debian's linux-image-amd64";
    let vmlinuz = fs::read_dir(dir.join("boot"))
        .map_err(|e| format!("{}/boot: {e}: {hint}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .ok_or_else(|| format!("no vmlinuz-* in {}/boot: {hint}", dir.display()))?;
    let version = vmlinuz
        .file_name()
        .unwrap()
        .to_string_lossy()
        .trim_start_matches("vmlinuz-")
        .to_owned();
    let modules = dir.join("lib/modules").join(&version);
    if !modules.join("modules.dep").exists() {
        return Err(format!("{}/modules.dep missing: {hint}", modules.display()));
    }
    Ok((vmlinuz, modules))
}

fn tempdir() -> Result<PathBuf, String> {
    let dir = std::env::temp_dir().join(format!(
        "wgvm-{}-{:x}",
        std::process::id(),
        Instant::now().elapsed().as_nanos()
    ));
    fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir)
}

fn which(tool: &str) -> Option<PathBuf> {
    SEARCH_PATH
        .split(':')
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.is_file())
}

fn io<T>(what: impl std::fmt::Display, r: std::io::Result<T>) -> Result<T, String> {
    r.map_err(|e| format!("{what}: {e}"))
}

/// A module's name from its path in modules.dep or modules.builtin
/// (`kernel/arch/x86/crypto/crc32c-intel.ko.xz` -> `crc32c_intel`: the kernel reads `-` as `_`).
fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    file.split('.').next().unwrap_or(file).replace('-', "_")
}

/// The modules and everything they need, in load order: what modprobe would load (the guest has only insmod),
/// from modules.dep, the `pre:` soft dependencies in modules.softdep (names or modules.alias aliases) and
/// modules.builtin (built-in modules need no loading).
fn module_load_order(modules_dir: &Path) -> Result<Vec<PathBuf>, String> {
    let read = |file: &str| io(file, fs::read_to_string(modules_dir.join(file)));
    let dep = read("modules.dep")?;
    // Optional: without modules.builtin a module missing from modules.dep is an error, as it should be.
    let builtin = read("modules.builtin").unwrap_or_default();
    let softdep = read("modules.softdep").unwrap_or_default();
    let alias = read("modules.alias").unwrap_or_default();
    let deps: BTreeMap<&str, Vec<&str>> = dep
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(m, d)| (m, d.split_whitespace().collect()))
        .collect();
    let by_name: BTreeMap<String, &str> = deps.keys().map(|p| (module_name(p), *p)).collect();
    let is_builtin = |name: &str| builtin.lines().any(|l| module_name(l.trim()) == name);
    // `softdep libcrc32c pre: crc32c`: libcrc32c's init fails (ENOENT) unless a crc32c is loaded first.
    // `crc32c` is an alias of crc32c_intel and crc32c_generic: of several, the generic one, which runs on
    // any CPU. A soft dependency that is built in, or missing, is left out.
    let soft_target = |name: &str| -> Option<&str> {
        if let Some(module) = by_name.get(&module_name(name)) {
            return Some(module);
        }
        let targets: Vec<String> = alias
            .lines()
            .filter_map(|l| match l.split_whitespace().collect::<Vec<_>>()[..] {
                ["alias", a, target] if a == name => Some(module_name(target)),
                _ => None,
            })
            .collect();
        let pick = targets
            .iter()
            .find(|t| t.ends_with("_generic"))
            .or(targets.first())?;
        by_name.get(pick).copied()
    };
    let mut pre: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for line in softdep.lines() {
        let mut words = line.split_whitespace();
        let (Some("softdep"), Some(module)) = (words.next(), words.next()) else {
            continue;
        };
        let mut in_pre = false;
        for word in words {
            match word {
                "pre:" => in_pre = true,
                "post:" => in_pre = false,
                name if in_pre => pre
                    .entry(module_name(module))
                    .or_default()
                    .extend(soft_target(name)),
                _ => {}
            }
        }
    }
    let needs = |m: &str| -> Vec<&str> {
        let soft = pre.get(&module_name(m)).into_iter().flatten();
        soft.chain(deps.get(m).into_iter().flatten())
            .copied()
            .collect()
    };
    fn visit<'a>(m: &'a str, needs: &dyn Fn(&str) -> Vec<&'a str>, out: &mut Vec<&'a str>) {
        if out.contains(&m) {
            return;
        }
        for d in needs(m) {
            visit(d, needs, out);
        }
        out.push(m);
    }
    let mut order = Vec::new();
    for name in MODULES {
        match by_name.get(*name) {
            Some(module) => visit(module, &needs, &mut order),
            None if is_builtin(name) => {}
            None => {
                return Err(format!(
                    "module {name} is neither in modules.dep nor in modules.builtin of {}",
                    modules_dir.display()
                ))
            }
        }
    }
    Ok(order.into_iter().map(|m| modules_dir.join(m)).collect())
}

/// Copies a binary and every shared library `ldd` names to the same paths under `root`.
fn copy_with_libs(binary: &Path, root: &Path, dest: &str) -> Result<(), String> {
    copy_file(binary, &root.join(dest.trim_start_matches('/')))?;
    let out = io("ldd", Command::new("ldd").arg(binary).output())?;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(path) = path.filter(|p| p.starts_with('/')) {
            let target = root.join(path.trim_start_matches('/'));
            if !target.exists() {
                copy_file(Path::new(path), &target)?;
            }
        }
    }
    Ok(())
}

fn copy_file(from: &Path, to: &Path) -> Result<(), String> {
    if let Some(parent) = to.parent() {
        io(parent.display(), fs::create_dir_all(parent))?;
    }
    io(
        format!("copying {} to {}", from.display(), to.display()),
        fs::copy(from, to),
    )
    .map(drop)
}

fn build_initramfs(work: &Path, modules_dir: &Path) -> Result<PathBuf, String> {
    let root = work.join("root");
    for dir in [
        "bin", "proc", "sys", "dev", "tmp", "run", "etc", "modules", "rootfs",
    ] {
        io(dir, fs::create_dir_all(root.join(dir)))?;
    }
    copy_file(Path::new("/bin/busybox"), &root.join("bin/busybox"))?;
    let hook = std::env::var_os("WG_OCI_HOOK_VM_HOOK")
        .map_or_else(|| PathBuf::from(HOOK_BIN), PathBuf::from);
    copy_with_libs(&hook, &root, "/bin/wg-oci-hook")?;
    if let Some(baseline) = std::env::var_os("WG_OCI_HOOK_VM_BASELINE") {
        copy_with_libs(Path::new(&baseline), &root, "/bin/wg-oci-hook-baseline")?;
    }
    for (tool, package) in GUEST_TOOLS {
        let path = which(tool)
            .ok_or_else(|| format!("{tool} not found: install the Debian package {package}"))?;
        // /usr/bin, ahead of busybox in PATH: `busybox --install` replaces what it finds in /bin.
        copy_with_libs(&path, &root, &format!("/usr/bin/{tool}"))?;
    }
    let mut order = String::new();
    for (i, module) in module_load_order(modules_dir)?.iter().enumerate() {
        let name = format!("{i:02}-{}", module.file_name().unwrap().to_string_lossy());
        let (name, data) = match name.strip_suffix(".xz") {
            Some(plain) => {
                let out = io("xz", Command::new("xz").arg("-dc").arg(module).output())?;
                (plain.to_owned(), out.stdout)
            }
            None => (name.clone(), io(module.display(), fs::read(module))?),
        };
        io(&name, fs::write(root.join("modules").join(&name), data))?;
        order.push_str(&name);
        order.push('\n');
    }
    io(
        "modules/order",
        fs::write(root.join("modules/order"), order),
    )?;

    // The containers' root file system: busybox and its applets.
    let rootfs = root.join("rootfs");
    for dir in ["bin", "etc", "proc", "sys", "dev", "tmp", "t"] {
        io(dir, fs::create_dir_all(rootfs.join(dir)))?;
    }
    copy_file(Path::new("/bin/busybox"), &rootfs.join("bin/busybox"))?;
    for applet in [
        "sh", "ip", "ping", "ping6", "nc", "printf", "tail", "cat", "echo", "sleep", "grep",
    ] {
        io(
            applet,
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)),
        )?;
    }

    let init = root.join("init");
    copy_file(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vm/init.sh"),
        &init,
    )?;
    io(
        "chmod init",
        fs::set_permissions(&init, fs::Permissions::from_mode(0o755)),
    )?;

    let initrd = work.join("initrd.gz");
    let status = io(
        "cpio",
        Command::new("sh")
            .arg("-c")
            .arg(format!(
                "find . -print0 | cpio --null -o -H newc -R 0:0 --quiet | gzip -1 > {}",
                initrd.display()
            ))
            .current_dir(&root)
            .status(),
    )?;
    if !status.success() {
        return Err(format!(
            "building the initramfs failed ({status}): is cpio installed?"
        ));
    }
    Ok(initrd)
}

fn run_qemu(qemu: &Path, vmlinuz: &Path, initrd: &Path, work: &Path) -> Result<VmRun, String> {
    let serial = work.join("serial.log");
    let start = Instant::now();
    let mut child = io(
        "qemu",
        Command::new(qemu)
            .args(["-accel", "tcg", "-cpu", "max", "-m", "1024", "-smp", "1"])
            .args([
                "-display",
                "none",
                "-monitor",
                "none",
                "-no-reboot",
                "-nic",
                "none",
            ])
            .arg("-serial")
            .arg(format!("file:{}", serial.display()))
            .arg("-kernel")
            .arg(vmlinuz)
            .arg("-initrd")
            .arg(initrd)
            .args(["-append", "console=ttyS0 panic=-1 rdinit=/init loglevel=4"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn(),
    )?;
    let status = loop {
        if let Some(status) = io("waiting for qemu", child.try_wait())? {
            break Some(status);
        }
        if start.elapsed() > VM_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let elapsed = start.elapsed();
    let mut qemu_err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut qemu_err);
    }
    let log = fs::read_to_string(&serial).unwrap_or_default();
    // The console of a passing run, for reading: WG_OCI_HOOK_VM_SERIAL=/some/file.
    if let Some(copy) = std::env::var_os("WG_OCI_HOOK_VM_SERIAL") {
        io(
            format!("writing the console to {}", Path::new(&copy).display()),
            fs::write(&copy, &log),
        )?;
    }
    let mut run = VmRun {
        log,
        results: BTreeMap::new(),
        timings: BTreeMap::new(),
        elapsed,
    };
    for line in run.log.lines() {
        let mut words = line.trim_end_matches('\r').splitn(5, ' ');
        match (words.next(), words.next(), words.next(), words.next()) {
            (Some("WGVM"), Some("RESULT"), Some(name), Some(verdict)) => {
                let detail = words.next().unwrap_or("").to_owned();
                let passed = verdict == "PASS";
                // A name reported twice keeps its worst verdict.
                let entry = run
                    .results
                    .entry(name.to_owned())
                    .or_insert((passed, detail.clone()));
                if !passed {
                    *entry = (false, detail);
                }
            }
            (Some("WGVM"), Some("TIMING"), Some(backend), Some(ms)) => {
                if let Ok(ms) = ms.parse::<f64>() {
                    run.timings.entry(backend.to_owned()).or_default().push(ms);
                }
            }
            _ => {}
        }
    }
    let done = run.log.lines().any(|l| l.trim_end() == "WGVM DONE");
    match status {
        None => Err(format!("the VM did not finish within {VM_TIMEOUT:?}\n--- serial ---\n{}", run.log)),
        Some(_) if !done => Err(format!(
            "the VM stopped before its last check ({:?})\n--- qemu ---\n{qemu_err}\n--- serial ---\n{}",
            status,
            run.log
        )),
        Some(_) => Ok(run),
    }
}
