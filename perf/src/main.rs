//! `caasiope-perf [--out DIR] [--tool auto|perf|callgrind] -- COMMAND [ARGS…]`
//!
//! Profiles COMMAND and writes into DIR (default `target/perf`): `summary.txt` (ranked
//! functions), and with perf also `stacks.folded` and `flamegraph.svg`; with callgrind,
//! `callgrind.out` and `callgrind_annotate.txt`.

use std::{
    fs::File,
    io::{BufReader, BufWriter, Write},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context, bail};

fn usage() -> ! {
    eprintln!("error: usage: caasiope-perf [--out DIR] [--tool auto|perf|callgrind] -- COMMAND [ARGS...]");
    std::process::exit(2);
}

fn perf_works() -> bool {
    Command::new("perf")
        .args(["record", "-q", "-e", "cpu-clock", "-o", "/dev/null", "--", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn run_perf(out: &Path, cmd: &[String]) -> anyhow::Result<()> {
    let data = out.join("perf.data");
    let status = Command::new("perf")
        .args(["record", "-F", "499", "-e", "cpu-clock", "--call-graph", "dwarf,16384", "-o"])
        .arg(&data)
        .arg("--")
        .args(cmd)
        .status()
        .context("running perf record")?;
    if !status.success() {
        bail!("perf record exited with {status}");
    }
    let script = Command::new("perf").arg("script").arg("-i").arg(&data).output().context("perf script")?;
    if !script.status.success() {
        bail!("perf script failed: {}", String::from_utf8_lossy(&script.stderr));
    }
    let folded_path = out.join("stacks.folded");
    {
        let mut folder = inferno::collapse::perf::Folder::from(inferno::collapse::perf::Options::default());
        let writer = BufWriter::new(File::create(&folded_path)?);
        inferno::collapse::Collapse::collapse(&mut folder, &script.stdout[..], writer)
            .context("collapsing perf stacks")?;
    }
    let mut options = inferno::flamegraph::Options::default();
    options.title = format!("caasiope: {}", cmd.join(" "));
    inferno::flamegraph::from_reader(
        &mut options,
        BufReader::new(File::open(&folded_path)?),
        BufWriter::new(File::create(out.join("flamegraph.svg"))?),
    )
    .context("drawing the flamegraph")?;
    let ranking = caasiope_perf::rank_folded(BufReader::new(File::open(&folded_path)?));
    std::fs::write(out.join("summary.txt"), ranking.report(40))?;
    Ok(())
}

fn run_callgrind(out: &Path, cmd: &[String]) -> anyhow::Result<()> {
    let data = out.join("callgrind.out");
    let status = Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", data.display()))
        .args(cmd)
        .status()
        .context("running valgrind (apt install valgrind)")?;
    if !status.success() {
        bail!("valgrind exited with {status}");
    }
    let annotate = Command::new("callgrind_annotate").arg(&data).output().context("callgrind_annotate")?;
    std::fs::write(out.join("callgrind_annotate.txt"), &annotate.stdout)?;
    // The annotate output is already ranked by instructions; its head is the summary.
    let text = String::from_utf8_lossy(&annotate.stdout);
    let mut summary = File::create(out.join("summary.txt"))?;
    for line in text.lines().take(60) {
        writeln!(summary, "{line}")?;
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut out = PathBuf::from("target/perf");
    let mut tool = "auto".to_owned();
    let mut cmd = Vec::new();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--out" => out = args.next().map(PathBuf::from).unwrap_or_else(|| usage()),
            "--tool" => tool = args.next().unwrap_or_else(|| usage()),
            "--" => {
                cmd = args.by_ref().collect();
                break;
            }
            _ => usage(),
        }
    }
    if cmd.is_empty() {
        usage();
    }
    std::fs::create_dir_all(&out)?;
    let tool = match tool.as_str() {
        "auto" if perf_works() => "perf",
        "auto" => "callgrind",
        "perf" | "callgrind" => tool.as_str(),
        _ => usage(),
    };
    eprintln!("caasiope-perf: profiling with {tool} into {}", out.display());
    match tool {
        "perf" => run_perf(&out, &cmd)?,
        _ => run_callgrind(&out, &cmd)?,
    }
    eprintln!("caasiope-perf: wrote {}", out.join("summary.txt").display());
    Ok(())
}
