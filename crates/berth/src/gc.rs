//! `berth gc`: one garbage collection from the command line, with progress
//! on stderr and the report on stdout.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use berth_core::{GcOptions, GcReport};

use crate::config::Loaded;

/// Parses `90s`, `30m`, `2h`, `7d` or a number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (num, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (use e.g. 90s, 30m, 2h or 7d)"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(format!("{s:?} has an unknown unit (use s, m, h or d)")),
    };
    Ok(Duration::from_secs(secs))
}

pub use berth_core::gc_summary as summary;

/// Runs one collection against the configured database and storage.
pub async fn run(cfg: &Loaded, o: &GcOptions, json: bool) -> anyhow::Result<()> {
    if o.min_age < Duration::from_secs(60) && !o.dry_run {
        eprintln!(
            "warning: --min-age under a minute: a push that checked for a blob, or uploaded one, just before \
             it is removed will fail and need a retry (nothing a client was told is stored is ever removed)"
        );
    }
    let (registry, _db) = crate::open_registry(cfg).await?;
    let tty = std::io::stderr().is_terminal();
    let progress = move |r: &GcReport| {
        let line = format!("gc [{}] {}", r.phase, summary(r));
        if tty {
            eprint!("\r\x1b[2K{line}");
            let _ = std::io::stderr().flush();
        } else if r.phase == "done" {
            eprintln!("{line}");
        }
    };
    let report = registry.collect_garbage(o, &progress).await?;
    if tty {
        eprintln!();
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{}", summary(&report));
    }
    Ok(())
}

/// Runs one scrub; true if everything checked out.
pub async fn fsck(cfg: &Loaded, json: bool) -> anyhow::Result<bool> {
    let (registry, _db) = crate::open_registry(cfg).await?;
    let tty = std::io::stderr().is_terminal();
    let progress = move |r: &berth_core::scrub::ScrubReport| {
        if tty {
            eprint!("\r\x1b[2Kfsck {}", berth_core::scrub::summary(r));
            let _ = std::io::stderr().flush();
        }
    };
    let report = registry.scrub(&progress).await?;
    if tty {
        eprintln!();
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for line in report
            .corrupt
            .iter()
            .map(|l| ("corrupt", l))
            .chain(report.missing.iter().map(|l| ("missing", l)))
            .chain(report.dangling.iter().map(|l| ("dangling", l)))
        {
            println!("{}: {}", line.0, line.1);
        }
        println!("{}", berth_core::scrub::summary(&report));
    }
    Ok(report.clean())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse_duration("7d").unwrap(), Duration::from_secs(7 * 86_400));
        assert_eq!(parse_duration("120").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
        assert!(parse_duration("3w").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("soon").unwrap_err().contains("not a duration"));
    }
}
