//! How `cargo xtask bench` measures a case: a child process timed (wall, and CPU from wait4's rusage), the summed
//! PSS of its process tree sampled every 20 ms, this process's I/O counters before and after, the output's size;
//! repeated runs reduced to medians; and the I/O floor (reading the input once, writing the output's bytes).

use std::fs;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;

/// One case's measurement (one run, or the medians of several).
#[derive(Serialize, Clone, Default)]
pub(crate) struct Measurement {
    pub tool: String,
    pub case: String,
    pub threads: Option<usize>,
    pub ok: bool,
    /// Median over the runs (`wall_min_secs`–`wall_max_secs`).
    pub wall_secs: f64,
    pub wall_min_secs: f64,
    pub wall_max_secs: f64,
    pub runs: usize,
    pub cpu_secs: f64,
    /// Peak of the summed proportional set size (PSS) of the process tree: pages shared between the processes of a
    /// multi-process peer count once (median over the runs).
    pub peak_pss_tree_bytes: u64,
    pub read_bytes: u64,
    pub write_bytes: u64,
    pub output_bytes: u64,
    pub perplexity: Option<f64>,
    pub log: String,
}

/// A fresh copy of `cmd` (program, arguments, environment, working folder), so that a case can run again.
pub(super) fn cmd_with_threads(cmd: &mut Command) -> Command {
    let mut c = Command::new(cmd.get_program());
    c.args(cmd.get_args());
    if let Some(dir) = cmd.get_current_dir() {
        c.current_dir(dir);
    }
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            c.env(k, v);
        }
    }
    c
}

/// `run` `repeat` times (stopping at the first failure); wall, CPU and memory are the medians, with the wall
/// time's min and max.
pub(super) fn measure_repeated(
    repeat: usize,
    out: &Path,
    mut run: impl FnMut() -> Result<Measurement>,
) -> Result<Measurement> {
    let mut all = run_interleaved(repeat, 1, |_| run())?;
    Ok(summarize(all.remove(0), out))
}

/// `repeat` rounds over `variants` ways of running one case (the binary under test and its baseline): round `r`
/// runs each variant once, in order, so that a slow phase of the machine falls on all of them alike. A variant
/// stops at its first failure. Returns every variant's runs.
pub(super) fn run_interleaved(
    repeat: usize,
    variants: usize,
    mut run: impl FnMut(usize) -> Result<Measurement>,
) -> Result<Vec<Vec<Measurement>>> {
    let mut all: Vec<Vec<Measurement>> = (0..variants).map(|_| Vec::new()).collect();
    for _ in 0..repeat {
        for (i, runs) in all.iter_mut().enumerate() {
            if runs.last().is_some_and(|m| !m.ok) {
                continue;
            }
            runs.push(run(i)?);
        }
    }
    Ok(all)
}

/// One variant's runs as one measurement: the last run's, with the medians of wall, CPU and memory, the wall
/// time's min and max, and the output's size (`out` as the last run left it).
pub(super) fn summarize(all: Vec<Measurement>, out: &Path) -> Measurement {
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let walls: Vec<f64> = all.iter().map(|m| m.wall_secs).collect();
    let mut m = all.last().cloned().expect("at least one run");
    m.runs = all.len();
    m.wall_secs = median(walls.clone());
    m.wall_min_secs = walls.iter().copied().fold(f64::INFINITY, f64::min);
    m.wall_max_secs = walls.iter().copied().fold(0.0, f64::max);
    m.cpu_secs = median(all.iter().map(|m| m.cpu_secs).collect());
    m.peak_pss_tree_bytes =
        median(all.iter().map(|m| m.peak_pss_tree_bytes as f64).collect()) as u64;
    m.output_bytes = dir_size(out).max(m.output_bytes);
    m
}

/// Run `cmd`, sampling the PSS of its whole process tree until it exits.
pub(super) fn measure(mut cmd: Command, out: &Path, log_path: &Path) -> Result<Measurement> {
    let log = fs::File::create(log_path)?;
    cmd.stdout(log.try_clone()?)
        .stderr(log)
        .stdin(Stdio::null());
    let io_before = self_io();
    let start = Instant::now();
    let child = cmd.spawn().with_context(|| format!("starting {cmd:?}"))?;
    let pid = child.id() as i32;
    let mut peak = 0u64;
    let mut last_note = Instant::now();
    let (status, rusage) = loop {
        let mut status = 0i32;
        // SAFETY: plain wait4 on our own child with valid out-pointers.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut ru) };
        if r == pid {
            break (status, ru);
        }
        if r < 0 {
            bail!("wait4 failed: {}", std::io::Error::last_os_error());
        }
        peak = peak.max(tree_pss(pid));
        if last_note.elapsed() > Duration::from_secs(15) {
            eprintln!(
                "bench:   … {:.0} s, PSS {:.2} GB",
                start.elapsed().as_secs_f64(),
                peak as f64 / 1e9
            );
            last_note = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let wall_secs = start.elapsed().as_secs_f64();
    let io_after = self_io();
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    // A process too short-lived to be sampled: its ru_maxrss (KiB; RSS of the largest single process) stands in.
    if peak == 0 {
        peak = rusage.ru_maxrss as u64 * 1024;
    }
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    let log_text = fs::read_to_string(log_path).unwrap_or_default();
    let tail: String = log_text
        .lines()
        .rev()
        .take(15)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("\n");
    Ok(Measurement {
        ok,
        wall_secs,
        cpu_secs: tv(rusage.ru_utime) + tv(rusage.ru_stime),
        wall_min_secs: wall_secs,
        wall_max_secs: wall_secs,
        runs: 1,
        peak_pss_tree_bytes: peak,
        read_bytes: io_after.0.saturating_sub(io_before.0),
        write_bytes: io_after.1.saturating_sub(io_before.1),
        output_bytes: dir_size(out),
        log: tail,
        ..Default::default()
    })
}

/// (read_bytes + rchar-from-page-cache not counted, write_bytes) of this process including reaped children.
fn self_io() -> (u64, u64) {
    let text = fs::read_to_string("/proc/self/io").unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| {
                l.strip_prefix(name)
                    .and_then(|v| v.trim().parse::<u64>().ok())
            })
            .unwrap_or(0)
    };
    (field("rchar:"), field("wchar:"))
}

/// Summed PSS (`/proc/PID/smaps_rollup`) of `root` and its descendants: a page shared by N of them counts 1/N in
/// each, so a multi-process peer's shared model pages count once (the summed RSS once reported 47 GB on a 24 GB
/// machine).
fn tree_pss(root: i32) -> u64 {
    let mut parent_of = Vec::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(stat) = fs::read_to_string(e.path().join("stat")) else {
                continue;
            };
            // The command name may hold spaces and parentheses: fields start after the last ')'.
            let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
                continue;
            };
            let mut it = rest.split_whitespace();
            let _state = it.next();
            let Some(ppid) = it.next().and_then(|p| p.parse::<i32>().ok()) else {
                continue;
            };
            parent_of.push((pid, ppid));
        }
    }
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        let p = tree[i];
        tree.extend(parent_of.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    tree.iter()
        .filter_map(|pid| fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok())
        .filter_map(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Pss:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .sum()
}

pub(super) fn dir_size(p: &Path) -> u64 {
    let Ok(meta) = fs::metadata(p) else { return 0 };
    if meta.is_file() {
        return meta.len();
    }
    fs::read_dir(p)
        .map(|rd| rd.flatten().map(|e| dir_size(&e.path())).sum())
        .unwrap_or(0)
}

/// Seconds to read every file of the input once (page cache as it is; the caller warms it first, as the cases find it).
pub(super) fn time_read_dir(dir: &Path) -> Result<f64> {
    let start = Instant::now();
    let mut buf = vec![0u8; 1 << 20];
    for e in fs::read_dir(dir)?.flatten() {
        if e.path().is_file() {
            let mut f = fs::File::open(e.path())?;
            while f.read(&mut buf)? > 0 {}
        }
    }
    Ok(start.elapsed().as_secs_f64())
}

/// Seconds to write `bytes` to a fresh file (no fsync, like the exporters).
pub(super) fn time_write(dir: &Path, bytes: u64) -> Result<f64> {
    let path = dir.join("io-floor.tmp");
    let buf = vec![0x5au8; 1 << 20];
    let start = Instant::now();
    let mut f = std::io::BufWriter::new(fs::File::create(&path)?);
    let mut left = bytes;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        f.write_all(&buf[..n])?;
        left -= n as u64;
    }
    f.flush()?;
    drop(f);
    let secs = start.elapsed().as_secs_f64();
    fs::remove_file(&path)?;
    Ok(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_interleave_the_variants_and_a_failed_variant_stops() {
        let mut order = Vec::new();
        let all = run_interleaved(3, 2, |i| {
            order.push(i);
            Ok(Measurement {
                // The second variant fails on its second run.
                ok: !(i == 1 && order.iter().filter(|&&v| v == 1).count() == 2),
                wall_secs: order.len() as f64,
                ..Default::default()
            })
        })
        .unwrap();
        assert_eq!(order, [0, 1, 0, 1, 0]);
        assert_eq!(all[0].len(), 3);
        assert_eq!(all[1].len(), 2);
        let m = summarize(all[0].clone(), Path::new("/nonexistent"));
        assert_eq!(
            (m.runs, m.wall_secs, m.wall_min_secs, m.wall_max_secs),
            (3, 3.0, 1.0, 5.0)
        );
    }
}
